//! A sink connector's task: reads its topics as a member of the consumer group `connect-NAME`,
//! hands each batch to its destination, and acknowledges the batch only once the destination
//! has it (written, or for a record that cannot be, on the dead-letter topic). So every record
//! reaches the destination at least once; a sink that writes by key (`insert.mode=upsert`)
//! makes a record read twice the same row.

use std::time::{Duration, Instant};

use client::{Client, ClientError};
use protocol::{ErrorCode, GroupFetch, GroupStart, NewMessage, DEFAULT_FETCH_BYTES};
use regex::Regex;
use serde_json::json;

use crate::config::{group_name, ConfigError, ConnectorConfig};
use crate::task::{backoff, Control, Record, Rejected, TaskError};

/// How often a sink with `topics.regex` looks for new topics that match.
const TOPIC_REFRESH: Duration = Duration::from_secs(5);

/// How often a sink looks again for a topic it names that does not exist yet.
const TOPIC_RETRY: Duration = Duration::from_secs(1);

/// How long the broker may hold a group fetch when nothing is there.
const FETCH_WAIT: Duration = Duration::from_secs(1);

/// The longest wait between tries of the broker.
const MAX_BROKER_BACKOFF: Duration = Duration::from_secs(2);

/// Which topics a sink reads: `topics` or `topics.regex`.
#[derive(Debug, Clone)]
pub enum Topics {
    /// `topics`: these.
    Named(Vec<String>),
    /// `topics.regex`: every topic whose whole name matches.
    Matching(Regex),
}

/// What every sink connector's config says about reading and errors.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// The topics.
    pub topics: Topics,
    /// `errors.tolerance=all`: a record that cannot be written goes to the dead-letter topic
    /// (or is logged and dropped without one) instead of failing the task.
    pub tolerate: bool,
    /// `errors.deadletterqueue.topic.name`.
    pub dead_letters: Option<String>,
}

impl SinkSettings {
    /// Reads the keys every sink has.
    ///
    /// # Errors
    /// Neither or both of `topics` and `topics.regex`, a bad name or pattern, a bad tolerance.
    pub fn from_config(config: &ConnectorConfig) -> Result<SinkSettings, ConfigError> {
        let named = config.list("topics");
        let regex = config.get("topics.regex").map(str::trim).filter(|r| !r.is_empty());
        let topics = match (named.is_empty(), regex) {
            (false, Some(_)) => {
                return Err(config.error("topics.regex", "give topics or topics.regex, not both"))
            }
            (true, None) => {
                return Err(config.error("topics", "missing: a sink needs topics or topics.regex"))
            }
            (true, Some(pattern)) => Topics::Matching(
                Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| config.error("topics.regex", format!("not a pattern: {e}")))?,
            ),
            (false, None) => {
                for topic in &named {
                    protocol::validate_topic_name(topic)
                        .map_err(|e| config.error("topics", format!("{topic:?}: {e}")))?;
                }
                Topics::Named(named)
            }
        };
        let tolerate = config.choice("errors.tolerance", "none", &["none", "all"])? == "all";
        let dead_letters = config
            .get("errors.deadletterqueue.topic.name")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if let Some(topic) = &dead_letters {
            protocol::validate_topic_name(topic).map_err(|e| {
                config.error("errors.deadletterqueue.topic.name", format!("{topic:?}: {e}"))
            })?;
            if !tolerate {
                return Err(config.error(
                    "errors.deadletterqueue.topic.name",
                    "set, but errors.tolerance is none: a bad record stops the connector and \
                     never reaches it (set errors.tolerance=all)",
                ));
            }
        }
        Ok(SinkSettings { topics, tolerate, dead_letters })
    }
}

/// Where a sink's records go.
pub trait Destination {
    /// Writes `records` of `topic`, all or none of those it can write; returns those it
    /// cannot write when `tolerate`.
    ///
    /// # Errors
    /// [`TaskError::Retriable`] when nothing was written and trying again may work;
    /// [`TaskError::Fatal`] when the task cannot go on.
    fn put(
        &mut self,
        topic: &str,
        records: &[Record],
        tolerate: bool,
    ) -> Result<Vec<Rejected>, TaskError>;

    /// How often a retriable failure is tried again before the task fails (`max.retries`),
    /// and the longest wait between tries (`retry.backoff.ms`).
    fn retries(&self) -> (u32, Duration);

    /// At most this many records per batch.
    fn batch_size(&self) -> u32;
}

/// One sink connector's task at work.
pub struct SinkTask<'a> {
    /// The connector's name.
    pub name: &'a str,
    /// Its settings.
    pub settings: &'a SinkSettings,
    /// The connection to the broker.
    pub client: Client,
    /// Pause, stop, status.
    pub control: &'a Control,
}

/// A member's claim and the topics it has joined.
struct Membership {
    /// The claim token.
    token: u64,
    /// The topics joined, in the order they are read.
    topics: Vec<String>,
    /// When the topics were last looked at.
    refreshed: Instant,
    /// Whether every topic named was there to join.
    complete: bool,
}

impl SinkTask<'_> {
    /// Runs until stopped or failed.
    pub fn run(mut self, destination: &mut dyn Destination) {
        let group = group_name(self.name);
        let mut member: Option<Membership> = None;
        let mut next = 0usize;
        let mut broker_failures = 0u32;
        self.control.running();
        while !self.control.stopping() {
            if self.control.paused() {
                // A paused connector holds no logical broker.
                self.leave(&mut member);
                self.control.hold_while_paused();
                continue;
            }
            let joined = match member.take() {
                Some(m) if !self.stale(&m) => m,
                old => match self.join(&group, old) {
                    Ok(Some(m)) => m,
                    Ok(None) => continue,
                    Err(e) => {
                        self.broker_trouble(&e, &mut broker_failures);
                        continue;
                    }
                },
            };
            if joined.topics.is_empty() {
                if matches!(self.settings.topics, Topics::Matching(_)) {
                    self.control.waiting(self.name, "no topic matches topics.regex yet".into());
                }
                self.control.shutdown.pause(TOPIC_RETRY);
                member = Some(joined);
                continue;
            }
            let topic = joined.topics[next % joined.topics.len()].clone();
            next = next.wrapping_add(1);
            let wait = FETCH_WAIT.min(self.client.max_hold()) / joined.topics.len() as u32;
            let fetch = GroupFetch {
                claim: joined.token,
                group: &group,
                topic: &topic,
                max_messages: destination.batch_size(),
                max_bytes: DEFAULT_FETCH_BYTES,
                wait_ms: wait.as_millis() as u64,
                // A partition's records reach the destination in order, as from Kafka.
                ordered: true,
            };
            let mut partition = 0;
            let records = self.client.group_fetch(fetch, |delivery| {
                partition = delivery.partition;
                Ok(delivery
                    .messages
                    .into_iter()
                    .map(|m| Record {
                        offset: m.offset,
                        timestamp: m.timestamp,
                        key: m.key.map(<[u8]>::to_vec),
                        value: m.value.to_vec(),
                    })
                    .collect::<Vec<_>>())
            });
            let records = match records {
                Ok(records) => {
                    broker_failures = 0;
                    member = Some(joined);
                    records
                }
                Err(ClientError::Interrupted) => {
                    // Stopping: the claim is given back below.
                    member = Some(joined);
                    break;
                }
                // The broker restarted, or the lease ran out: claim again, and join.
                Err(e) if e.broker_code() == Some(ErrorCode::UnknownClaim) => continue,
                Err(e)
                    if matches!(
                        e.broker_code(),
                        Some(ErrorCode::UnknownMember | ErrorCode::UnknownTopic)
                    ) =>
                {
                    // The topic went (deleted, or the broker lost it): join again.
                    member = Some(Membership { complete: false, ..joined });
                    continue;
                }
                Err(e) => {
                    member = Some(joined);
                    self.broker_trouble(&e, &mut broker_failures);
                    continue;
                }
            };
            if records.is_empty() {
                continue;
            }
            if !self.deliver((&group, partition), &topic, &records, destination) {
                break;
            }
        }
        self.leave(&mut member);
    }

    /// Whether `m` should join again: a topic was missing, or `topics.regex` is due a look.
    fn stale(&self, m: &Membership) -> bool {
        let age = m.refreshed.elapsed();
        (!m.complete && age >= TOPIC_RETRY)
            || (matches!(self.settings.topics, Topics::Matching(_)) && age >= TOPIC_REFRESH)
    }

    /// Says the broker is not answering (or refused), and waits a little before the next try.
    fn broker_trouble(&mut self, e: &ClientError, failures: &mut u32) {
        if matches!(e, ClientError::Interrupted) {
            return;
        }
        self.control.waiting(self.name, format!("broker: {e}; trying again"));
        self.control.shutdown.pause(backoff(*failures, MAX_BROKER_BACKOFF));
        *failures = failures.saturating_add(1);
    }

    /// Claims a logical broker (unless `old` holds one) and joins the group on every topic
    /// there is; `None` when a wait was cut short.
    fn join(
        &mut self,
        group: &str,
        old: Option<Membership>,
    ) -> Result<Option<Membership>, ClientError> {
        let token = match old {
            Some(m) => m.token,
            None => {
                let name = Some(group);
                loop {
                    if self.control.stopping() {
                        return Ok(None);
                    }
                    match self.client.claim(None, self.client.max_hold(), name) {
                        Ok(claimed) => break claimed.token,
                        Err(e)
                            if matches!(
                                e.broker_code(),
                                Some(ErrorCode::NoBrokerAvailable | ErrorCode::BrokerBusy)
                            ) =>
                        {
                            self.control.waiting(
                                self.name,
                                "every logical broker is claimed; waiting for one".into(),
                            );
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        let wanted: Vec<String> = match &self.settings.topics {
            Topics::Named(topics) => topics.clone(),
            Topics::Matching(regex) => {
                let mut names: Vec<String> = self
                    .client
                    .list_topics(token)?
                    .into_iter()
                    .map(|t| t.name)
                    .filter(|n| regex.is_match(n))
                    .collect();
                // The dead-letter topic is never read back into the sink.
                names.retain(|n| Some(n) != self.settings.dead_letters.as_ref());
                names
            }
        };
        let mut topics = Vec::new();
        let mut missing = Vec::new();
        for topic in wanted {
            match self.client.join_group(token, group, &topic, GroupStart::Earliest) {
                Ok(_) => topics.push(topic),
                Err(e) if e.broker_code() == Some(ErrorCode::UnknownTopic) => missing.push(topic),
                Err(e) => return Err(e),
            }
        }
        if missing.is_empty() {
            self.control.running();
        } else {
            let names = missing.join(", ");
            self.control.waiting(self.name, format!("waiting for topic {names} to exist"));
        }
        let complete = missing.is_empty();
        Ok(Some(Membership { token, topics, refreshed: Instant::now(), complete }))
    }

    /// Gives the logical broker back.
    fn leave(&mut self, member: &mut Option<Membership>) {
        if let Some(m) = member.take() {
            let _ = self.client.release(m.token);
        }
    }

    /// Writes a batch (trying again while the destination is down), sends what it rejects to
    /// the dead-letter topic, and acknowledges the batch; false when the task must end.
    fn deliver(
        &mut self,
        (group, partition): (&str, u32),
        topic: &str,
        records: &[Record],
        destination: &mut dyn Destination,
    ) -> bool {
        let (max_retries, max_backoff) = destination.retries();
        let mut attempt = 0u32;
        let rejected = loop {
            match destination.put(topic, records, self.settings.tolerate) {
                Ok(rejected) => break rejected,
                Err(TaskError::Fatal(why)) => {
                    self.control.fail(self.name, why);
                    return false;
                }
                Err(TaskError::Retriable(why)) => {
                    if attempt >= max_retries {
                        self.control.fail(
                            self.name,
                            format!("{why} (gave up after {max_retries} retries: max.retries)"),
                        );
                        return false;
                    }
                    attempt += 1;
                    let wait = backoff(attempt, max_backoff.max(Duration::from_millis(1)));
                    self.control.waiting(
                        self.name,
                        format!("destination: {why}; retry {attempt} of {max_retries} in {wait:?}"),
                    );
                    self.control.shutdown.pause(wait);
                    if self.control.stopping() {
                        // Nothing written, nothing acknowledged: the records come again.
                        return false;
                    }
                }
            }
        };
        let mut rejected = rejected;
        rejected.sort_by_key(|r| r.offset);
        if !rejected.is_empty() && !self.dead_letter(topic, records, &rejected) {
            return false;
        }
        let written = records.len() - rejected.len();
        self.control.update(|s| {
            s.written += written as u64;
            s.rejected += rejected.len() as u64;
            s.waiting = None;
        });
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        self.acknowledge(group, topic, partition, &offsets)
    }

    /// Sends rejected records to the dead-letter topic, each as a JSON object with the record
    /// and the reason (or logs them when there is none); false when stopped first.
    fn dead_letter(&mut self, topic: &str, records: &[Record], rejected: &[Rejected]) -> bool {
        let Some(dead) = self.settings.dead_letters.clone() else {
            for r in rejected {
                eprintln!(
                    "connector {}: dropped offset {} of {topic}: {}",
                    self.name, r.offset, r.reason
                );
            }
            return true;
        };
        let mut values = Vec::with_capacity(rejected.len());
        let mut keys = Vec::with_capacity(rejected.len());
        for r in rejected {
            let Some(record) = records.iter().find(|x| x.offset == r.offset) else { continue };
            let mut letter = json!({
                "connector": self.name,
                "topic": topic,
                "partition": 0,
                "offset": record.offset,
                "timestamp": record.timestamp,
                "reason": r.reason,
            });
            match std::str::from_utf8(&record.value) {
                Ok(text) => letter["value"] = json!(text),
                Err(_) => {
                    use base64::Engine as _;
                    letter["value_base64"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(&record.value));
                }
            }
            values.push(serde_json::to_vec(&letter).unwrap_or_default());
            keys.push(record.key.clone());
        }
        let mut attempt = 0;
        loop {
            let messages: Vec<NewMessage<'_>> =
                keys.iter().zip(&values).map(|(k, v)| NewMessage::new(k.as_deref(), v)).collect();
            match self.client.append(&dead, None, messages) {
                Ok(_) => return true,
                Err(e) => {
                    if self.control.stopping() {
                        return false;
                    }
                    self.control
                        .waiting(self.name, format!("dead-letter topic {dead}: {e}; trying again"));
                    self.control.shutdown.pause(backoff(attempt, MAX_BROKER_BACKOFF));
                    attempt += 1;
                }
            }
        }
    }

    /// Acknowledges `offsets`, trying until the broker answers; false when stopped first (the
    /// records come again, and are written again).
    fn acknowledge(&mut self, group: &str, topic: &str, partition: u32, offsets: &[u64]) -> bool {
        let mut attempt = 0;
        loop {
            match self.client.ack(group, topic, partition, offsets) {
                Ok(_) => return true,
                // Retention took them, or a reset moved the group: nothing left to acknowledge.
                Err(e)
                    if matches!(
                        e.broker_code(),
                        Some(ErrorCode::NotPending | ErrorCode::UnknownGroup)
                    ) =>
                {
                    return true
                }
                Err(e) => {
                    if self.control.stopping() && attempt > 3 {
                        return false;
                    }
                    self.control.waiting(self.name, format!("acknowledging: {e}; trying again"));
                    self.control.shutdown.pause(backoff(attempt, MAX_BROKER_BACKOFF));
                    attempt += 1;
                }
            }
        }
    }
}
