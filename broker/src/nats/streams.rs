//! The topics' streams, on the runtime's thread: each topic is one stream with one subject
//! (`record`). A commit's appends are published all at once, each message with a
//! de-duplication id, and settled when JetStream acknowledged them all and this process's
//! follower of each topic read them back; every stream is followed by an ordered consumer
//! whose messages go to the serving thread's copies, whichever broker process appended them.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::context::{Publish, PublishErrorKind};
use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use protocol::Retention;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::record;
use super::runtime::{Connection, Event, Events};
use crate::store::{IoFailure, StoreError};

/// How long JetStream has to acknowledge a commit's appends, retry included, before they are
/// refused: within the client's default 5 s timeout, so that the client hears the refusal.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a commit waits for the topic's follower to have read its own appends back, so that
/// they are readable on this broker when they are acknowledged.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a follower waits for a message before it asks the stream whether it missed some
/// (its consumer lost when JetStream restarted or moved its leader), and starts again if so.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How long a follower waits before it starts again after its consumer failed.
const FOLLOW_RETRY: Duration = Duration::from_millis(250);

/// The most messages one [`Event::Messages`] carries.
const EVENT_BATCH: usize = 4096;

/// One append request of a commit: its topic and the payloads of its messages.
#[derive(Debug)]
pub struct Staged {
    /// The topic.
    pub topic: String,
    /// Each message, encoded as `record` says.
    pub payloads: Vec<Bytes>,
}

/// Why a create or a delete was refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The topic exists (create).
    Exists,
    /// There is no such topic (delete).
    Unknown,
    /// JetStream answered with an error.
    Failed(String),
    /// JetStream could not be reached, or did not answer in time.
    Unreachable(String),
}

impl Refusal {
    /// A request that failed while `doing` this: [`Refusal::Failed`] when JetStream
    /// `answered` with an error, else [`Refusal::Unreachable`].
    fn of(answered: bool, doing: &str, error: impl std::fmt::Display) -> Refusal {
        match answered {
            true => Refusal::Failed(format!("{doing}: {error}")),
            false => Refusal::Unreachable(format!("{doing}: {error}")),
        }
    }

    /// What the serving thread makes of it for an append of a commit.
    pub fn into_failure(self) -> StoreError {
        match self {
            Refusal::Unreachable(reason) => StoreError::Unavailable(reason),
            Refusal::Failed(reason) => StoreError::Io(IoFailure::new(io::Error::other(reason))),
            Refusal::Exists | Refusal::Unknown => {
                StoreError::Io(IoFailure::new(io::Error::other("the topic's stream changed")))
            }
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Exists => f.write_str("the topic's stream exists"),
            Refusal::Unknown => f.write_str("the topic has no stream"),
            Refusal::Failed(reason) | Refusal::Unreachable(reason) => f.write_str(reason),
        }
    }
}

/// The topics followed, on the runtime.
pub struct Streams {
    /// The topics followed, each by a task reading its stream into the serving thread's copy.
    followed: HashMap<String, Followed>,
    /// This process's name in de-duplication ids.
    instance: String,
    /// The copies kept from an earlier run (`--copy-dir`), by topic, until their stream is
    /// followed: the offset each copy's next message gets, and the payload of its last
    /// message as its stream held it.
    resume: HashMap<String, (u64, Bytes)>,
}

/// A topic being followed.
struct Followed {
    /// The stream sequence of the last message handed to the serving thread.
    forwarded: watch::Receiver<u64>,
    /// The task reading the stream.
    task: JoinHandle<()>,
}

impl Streams {
    /// No topic followed yet; `instance` names this process in de-duplication ids, and
    /// `resume` holds the copies kept from an earlier run.
    pub fn new(instance: String, resume: HashMap<String, (u64, Bytes)>) -> Streams {
        Streams { followed: HashMap::new(), instance, resume }
    }

    /// Stops following every stream, at a stop.
    pub fn stop(&mut self) {
        for (_, followed) in self.followed.drain() {
            followed.task.abort();
        }
    }

    /// Follows every topic's stream JetStream holds.
    pub async fn follow_existing(&mut self, conn: &Connection) -> Result<(), String> {
        let mut names = conn.js.stream_names();
        let mut topics = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| format!("cannot list JetStream's streams: {e}"))?;
            topics.extend(record::topic_of(&name));
        }
        for topic in topics {
            if let Err(error) = self.follow(conn, &topic, None).await {
                tracing::warn!(%topic, %error, "cannot follow a topic's stream");
            }
        }
        Ok(())
    }

    /// Publishes a commit's appends and reports them with [`Event::Committed`]: each one's
    /// offsets, or why it was refused; all unconfirmed when JetStream took too long.
    pub async fn commit(&mut self, conn: &Connection, ticket: u64, appends: Vec<Staged>) {
        let published = self.publish_commit(conn, ticket, &appends);
        let results =
            match tokio::time::timeout(COMMIT_TIMEOUT + READ_BACK_TIMEOUT, published).await {
                Ok(results) => results,
                Err(_) => {
                    let reason = "JetStream did not acknowledge the messages in time";
                    let unconfirmed = StoreError::Unconfirmed(reason.to_owned());
                    appends.iter().map(|_| Err(unconfirmed.clone())).collect()
                }
            };
        conn.events.send(Event::Committed { ticket, results });
    }

    /// Publishes `appends`, all at once, waits for every acknowledgement (retrying, with the
    /// same de-duplication ids, those that failed while time is left), then for the topics'
    /// followers to have read them back. Returns each append's offsets or why it was refused.
    async fn publish_commit(
        &mut self,
        conn: &Connection,
        ticket: u64,
        appends: &[Staged],
    ) -> Vec<Result<(u64, u64), StoreError>> {
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        // Publishes made while disconnected would wait in the client and be stored after it
        // reconnects, after their refusal: none is made.
        if conn.client.connection_state() != async_nats::connection::State::Connected {
            let down = StoreError::Unavailable("NATS is not reachable".to_owned());
            return appends.iter().map(|_| Err(down.clone())).collect();
        }
        let mut refused: HashMap<&str, Refusal> = HashMap::new();
        for staged in appends {
            if self.followed.contains_key(&staged.topic) || refused.contains_key(&*staged.topic) {
                continue;
            }
            if let Err(error) = self.follow(conn, &staged.topic, Some(conn.setup.retention)).await {
                refused.insert(&staged.topic, error);
            }
        }
        // Every message of the commit, with its id, and its stream sequence once acknowledged.
        let mut sent: Vec<Vec<Sent>> = appends
            .iter()
            .enumerate()
            .map(|(at, staged)| {
                let subject = record::subject(&staged.topic);
                staged
                    .payloads
                    .iter()
                    .enumerate()
                    .map(|(n, payload)| Sent {
                        subject: subject.clone(),
                        id: format!("{}-{ticket}-{at}-{n}", self.instance),
                        payload: payload.clone(),
                        outcome: Err("not sent".into()),
                        maybe_stored: false,
                    })
                    .collect()
            })
            .collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let todo: Vec<&mut Sent> = sent
                .iter_mut()
                .zip(appends)
                .filter(|(_, staged)| !refused.contains_key(&*staged.topic))
                .flat_map(|(messages, _)| messages.iter_mut())
                .filter(|m| m.outcome.is_err())
                .collect();
            if todo.is_empty() {
                break;
            }
            self.publish_all(conn, todo, deadline).await;
            let left = sent.iter().flatten().any(|m| m.outcome.is_err());
            if !left || attempt >= 2 || Instant::now() >= deadline {
                break;
            }
            tracing::warn!(ticket, "retrying the appends JetStream did not acknowledge");
        }
        let mut results = Vec::with_capacity(appends.len());
        let mut newest: HashMap<&str, u64> = HashMap::new();
        for (staged, messages) in appends.iter().zip(&sent) {
            if let Some(refusal) = refused.get(&*staged.topic) {
                results.push(Err(refusal.clone().into_failure()));
                continue;
            }
            match outcome(messages) {
                Ok((first, last)) => {
                    let top = newest.entry(&staged.topic).or_default();
                    *top = (*top).max(last);
                    results.push(Ok((first.saturating_sub(1), last.saturating_sub(1))));
                }
                Err(error) => results.push(Err(error)),
            }
        }
        // The acknowledgement waits for the messages to be readable here too.
        for (topic, seq) in newest {
            let Some(followed) = self.followed.get_mut(topic) else { continue };
            let read =
                tokio::time::timeout(READ_BACK_TIMEOUT, followed.forwarded.wait_for(|s| *s >= seq));
            if !matches!(read.await, Ok(Ok(_))) {
                tracing::warn!(%topic, seq, "acknowledged appends not read back yet");
            }
        }
        results
    }

    /// Publishes `messages` asynchronously and waits for all their acknowledgements at once,
    /// until `deadline`, noting each outcome.
    async fn publish_all(&self, conn: &Connection, messages: Vec<&mut Sent>, deadline: Instant) {
        let mut acks = Vec::with_capacity(messages.len());
        for message in &messages {
            let publish = Publish::build().payload(message.payload.clone()).message_id(&message.id);
            acks.push(conn.js.send_publish(message.subject.clone(), publish).await);
        }
        // Each outcome: the sequence, or why not and whether the message may be stored.
        let waits = acks.into_iter().map(|ack| async move {
            match ack {
                Ok(future) => future.await.map(|a| a.sequence).map_err(|e| {
                    let maybe_stored = e.kind() != PublishErrorKind::StreamNotFound;
                    (e.to_string(), maybe_stored)
                }),
                Err(error) => Err((error.to_string(), false)),
            }
        });
        let outcomes =
            tokio::time::timeout_at(deadline, futures_util::future::join_all(waits)).await;
        match outcomes {
            Ok(outcomes) => {
                for (message, outcome) in messages.into_iter().zip(outcomes) {
                    message.outcome = outcome.map_err(|(e, maybe_stored)| {
                        message.maybe_stored |= maybe_stored;
                        format!("JetStream refused: {e}")
                    });
                }
            }
            Err(_) => {
                for message in messages {
                    message.outcome = Err("JetStream did not acknowledge in time".into());
                    message.maybe_stored = true;
                }
            }
        }
    }

    /// Starts following `topic`'s stream, creating it with `create`'s limits when it does not
    /// exist and `create` is given. Tells the serving thread of it before any of its messages.
    async fn follow(
        &mut self,
        conn: &Connection,
        topic: &str,
        create: Option<Retention>,
    ) -> Result<(), Refusal> {
        if self.followed.contains_key(topic) {
            return Ok(());
        }
        let name = record::stream_name(topic);
        let mut stream = match conn.js.get_stream(&name).await {
            Ok(stream) => stream,
            Err(error) if is_not_found(&error) && create.is_some() => {
                let config = stream_config(topic, conn.setup.replicas, create.unwrap_or_default());
                conn.js.get_or_create_stream(config).await.map_err(|e| {
                    let answered =
                        matches!(e.kind(), jetstream::context::CreateStreamErrorKind::JetStream(_));
                    Refusal::of(answered, "cannot create the topic's stream in JetStream", e)
                })?
            }
            Err(error) => {
                let answered =
                    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(_));
                let doing = "cannot find the topic's stream in JetStream";
                return Err(Refusal::of(answered, doing, error));
            }
        };
        let info = stream
            .info()
            .await
            .map_err(|e| Refusal::of(false, "cannot read the topic's stream in JetStream", e))?;
        let state = &info.state;
        let next = state.last_sequence;
        let first = if state.messages == 0 { next } else { state.first_sequence.saturating_sub(1) };
        let retention = retention_of(&info.config);
        let resumed = match self.resume.remove(topic) {
            // The copy's last message (offset `end - 1`, sequence `end`) is still in the stream.
            Some((end, last)) if end > first && end <= next => {
                match stream.get_raw_message(end).await {
                    Ok(message) if message.payload == last => Some(end),
                    _ => None,
                }
            }
            _ => None,
        };
        let event = Event::Topic { topic: topic.to_owned(), first, next, retention, resumed };
        conn.events.send(event);
        let (forwarded_tx, forwarded) = watch::channel(next);
        let task = tokio::spawn(read_stream(
            conn.js.clone(),
            name,
            topic.to_owned(),
            resumed.unwrap_or(first) + 1,
            conn.events.clone(),
            forwarded_tx,
        ));
        self.followed.insert(topic.to_owned(), Followed { forwarded, task });
        Ok(())
    }

    /// Creates `topic`'s stream and follows it.
    pub async fn create(
        &mut self,
        conn: &Connection,
        topic: &str,
        retention: Retention,
    ) -> Result<(), Refusal> {
        match conn.js.get_stream(record::stream_name(topic)).await {
            Ok(_) => return Err(Refusal::Exists),
            Err(error) if is_not_found(&error) => {}
            Err(error) => {
                let answered =
                    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(_));
                return Err(Refusal::of(answered, "cannot look the topic up in JetStream", error));
            }
        }
        if let Err(error) =
            conn.js.create_stream(stream_config(topic, conn.setup.replicas, retention)).await
        {
            return Err(match error.kind() {
                jetstream::context::CreateStreamErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::STREAM_NAME_EXIST =>
                {
                    Refusal::Exists
                }
                jetstream::context::CreateStreamErrorKind::JetStream(_) => {
                    Refusal::of(true, "cannot create the topic's stream in JetStream", error)
                }
                _ => Refusal::of(false, "cannot create the topic's stream in JetStream", error),
            });
        }
        self.followed.remove(topic).inspect(|f| f.task.abort());
        self.follow(conn, topic, None).await
    }

    /// Deletes `topic`'s stream and stops following it.
    pub async fn delete(&mut self, conn: &Connection, topic: &str) -> Result<(), Refusal> {
        if let Some(followed) = self.followed.remove(topic) {
            followed.task.abort();
        }
        match conn.js.delete_stream(record::stream_name(topic)).await {
            Ok(_) => Ok(()),
            Err(error) => Err(match error.kind() {
                jetstream::context::DeleteStreamErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Refusal::Unknown
                }
                jetstream::context::DeleteStreamErrorKind::JetStream(_) => {
                    Refusal::of(true, "cannot delete the topic's stream in JetStream", error)
                }
                _ => Refusal::of(false, "cannot delete the topic's stream in JetStream", error),
            }),
        }
    }

    /// Follows or forgets a topic another broker process created or deleted, as JetStream's
    /// advisory on `subject` says.
    pub async fn advised(&mut self, conn: &Connection, subject: &str) {
        let Some((stream, topic, action)) = advisory(subject) else { return };
        match action {
            "CREATED" => {
                if let Err(error) = self.follow(conn, &topic, None).await {
                    tracing::warn!(%topic, %error, "cannot follow a new topic's stream");
                }
            }
            "DELETED" => {
                // A topic deleted and created again since is kept.
                if conn.js.get_stream(stream).await.is_ok() {
                    return;
                }
                if let Some(followed) = self.followed.remove(&topic) {
                    followed.task.abort();
                }
                conn.events.send(Event::Deleted { topic });
            }
            _ => {}
        }
    }

    /// Publishes each payload with its id, for tests of the de-duplication.
    #[cfg(test)]
    pub async fn publish_raw(
        &mut self,
        conn: &Connection,
        topic: &str,
        messages: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<(u64, bool)>, String> {
        self.follow(conn, topic, Some(Retention::default())).await.map_err(|e| e.to_string())?;
        let mut acks = Vec::new();
        for (id, payload) in messages {
            let publish = Publish::build().payload(payload.into()).message_id(id);
            let ack = conn.js.send_publish(record::subject(topic), publish).await;
            let ack = ack.map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
            acks.push((ack.sequence, ack.duplicate));
        }
        Ok(acks)
    }
}

/// The configuration of `topic`'s stream, its limits `retention`, kept on `replicas` servers.
fn stream_config(topic: &str, replicas: usize, retention: Retention) -> Config {
    let limit = |n: Option<u64>| n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    Config {
        name: record::stream_name(topic),
        subjects: vec![record::subject(topic)],
        max_messages: limit(retention.messages),
        max_bytes: limit(retention.bytes),
        max_age: retention.ms.map_or(Duration::ZERO, Duration::from_millis),
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        num_replicas: replicas,
        ..Config::default()
    }
}

/// A topic's limits, as its stream's configuration holds them.
fn retention_of(config: &Config) -> Retention {
    Retention {
        messages: u64::try_from(config.max_messages).ok(),
        bytes: u64::try_from(config.max_bytes).ok(),
        ms: (!config.max_age.is_zero()).then_some(config.max_age.as_millis() as u64),
    }
}

/// The stream, its topic and the action (`CREATED`, `DELETED`, ...) a stream advisory's
/// subject names; `None` for one about a stream that is not a topic's.
fn advisory(subject: &str) -> Option<(&str, String, &str)> {
    let mut tokens = subject.rsplit('.');
    let (stream, action) = (tokens.next()?, tokens.next()?);
    Some((stream, record::topic_of(stream)?, action))
}

/// What became of one append of a commit, from its messages: the stream sequences of its
/// first and last message; [`StoreError::Unavailable`] when nothing of it can be stored (no
/// message acknowledged, no publish gone out unanswered); otherwise
/// [`StoreError::Unconfirmed`].
fn outcome(messages: &[Sent]) -> Result<(u64, u64), StoreError> {
    let seqs: Result<Vec<u64>, String> = messages.iter().map(|m| m.outcome.clone()).collect();
    match seqs {
        Ok(seqs) => match (seqs.iter().min(), seqs.iter().max()) {
            (Some(&first), Some(&last)) => Ok((first, last)),
            _ => Ok((1, 0)),
        },
        Err(error) if messages.iter().all(|m| m.outcome.is_err() && !m.maybe_stored) => {
            Err(StoreError::Unavailable(error))
        }
        Err(error) => Err(StoreError::Unconfirmed(error)),
    }
}

/// One message of a commit.
struct Sent {
    /// Its topic's subject.
    subject: String,
    /// Its de-duplication id, the same on a retry.
    id: String,
    /// Its payload.
    payload: Bytes,
    /// Its stream sequence once acknowledged, or why not.
    outcome: Result<u64, String>,
    /// Whether a publish of it went out whose fate is unknown (its acknowledgement did not
    /// come): it may be stored though not acknowledged. Not so for a publish JetStream
    /// answered had no stream to go to (no leader, during an election), or one never sent.
    maybe_stored: bool,
}

/// Whether `error` says the stream does not exist.
fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == ErrorCode::STREAM_NOT_FOUND
    )
}

/// Reads `stream` from sequence `from` on with an ordered consumer, forever, handing its
/// messages to the serving thread in batches and noting the last one in `forwarded`. A failed
/// consumer (JetStream restarting, a leader moving) is made again from where it stopped.
async fn read_stream(
    js: Context,
    stream: String,
    topic: String,
    mut from: u64,
    events: Events,
    forwarded: watch::Sender<u64>,
) {
    loop {
        if let Err(error) = read_from(&js, &stream, &topic, &mut from, &events, &forwarded).await {
            tracing::debug!(%topic, %error, "following the topic's stream again");
        }
        tokio::time::sleep(FOLLOW_RETRY).await;
    }
}

/// One consumer's life in [`read_stream`]: returns why it ended.
async fn read_from(
    js: &Context,
    stream: &str,
    topic: &str,
    from: &mut u64,
    events: &Events,
    forwarded: &watch::Sender<u64>,
) -> Result<(), String> {
    let mut stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let config = OrderedConfig {
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: (*from).max(1) },
        ..OrderedConfig::default()
    };
    let consumer = stream.create_consumer(config).await.map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    loop {
        let first = match tokio::time::timeout(IDLE_CHECK, messages.next()).await {
            Ok(first) => first.ok_or("the consumer ended")?,
            Err(_) => {
                let info = stream.info().await.map_err(|e| e.to_string())?;
                if info.state.last_sequence >= *from {
                    return Err("the consumer fell behind its stream".into());
                }
                continue;
            }
        };
        let mut batch = Vec::new();
        let mut failure = None;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Ok(message) => {
                    let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
                    batch.push((seq.saturating_sub(1), message.payload.clone()));
                }
                Err(error) => {
                    failure = Some(error.to_string());
                    break;
                }
            }
            if batch.len() < EVENT_BATCH {
                next = messages.next().now_or_never().flatten();
            }
        }
        if let Some(&(offset, _)) = batch.last() {
            *from = offset + 2;
            events.send(Event::Messages { topic: topic.to_owned(), messages: batch });
            forwarded.send_replace(offset + 1);
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(outcome: Result<u64, &str>, maybe_stored: bool) -> Sent {
        Sent {
            subject: "topic.74".into(),
            id: "i-1-0-0".into(),
            payload: Bytes::new(),
            outcome: outcome.map_err(str::to_owned),
            maybe_stored,
        }
    }

    #[test]
    fn an_append_is_stored_when_every_message_is_acknowledged() {
        let acked = [sent(Ok(7), false), sent(Ok(5), false), sent(Ok(6), true)];
        assert_eq!(outcome(&acked), Ok((5, 7)));
    }

    #[test]
    fn an_append_nothing_of_which_went_out_is_unavailable_else_unconfirmed() {
        let never_sent = [sent(Err("no stream"), false), sent(Err("no stream"), false)];
        assert!(matches!(outcome(&never_sent), Err(StoreError::Unavailable(_))));
        // One publish went out unanswered: it may be stored.
        let unanswered = [sent(Err("no stream"), false), sent(Err("timeout"), true)];
        assert!(matches!(outcome(&unanswered), Err(StoreError::Unconfirmed(_))));
        // One was stored and one not: the append is neither wholly stored nor wholly lost.
        let half = [sent(Ok(3), false), sent(Err("no stream"), false)];
        assert!(matches!(outcome(&half), Err(StoreError::Unconfirmed(_))));
    }

    #[test]
    fn a_topics_limits_go_into_its_stream_and_back() {
        for retention in [
            Retention::default(),
            Retention { messages: Some(10), bytes: Some(1 << 20), ms: Some(60_000) },
            Retention { messages: None, bytes: Some(0), ms: None },
        ] {
            let config = stream_config("orders", 3, retention);
            assert_eq!(retention_of(&config), retention);
            assert_eq!((config.num_replicas, config.discard), (3, DiscardPolicy::Old));
            assert_eq!(config.subjects, [record::subject("orders")]);
        }
        // Past what JetStream can hold: as many as it can.
        let huge =
            stream_config("t", 1, Retention { messages: Some(u64::MAX), ..Retention::default() });
        assert_eq!(huge.max_messages, i64::MAX);
    }

    #[test]
    fn advisories_name_a_topics_stream_or_nothing() {
        let stream = record::stream_name("orders");
        let subject = format!("$JS.EVENT.ADVISORY.STREAM.CREATED.{stream}");
        assert_eq!(advisory(&subject), Some((stream.as_str(), "orders".to_owned(), "CREATED")));
        assert_eq!(advisory("$JS.EVENT.ADVISORY.STREAM.DELETED.KV_broker_claims"), None);
        assert_eq!(advisory("nodots"), None);
    }

    #[test]
    fn refusals_become_the_errors_a_commit_reports() {
        let unreachable = Refusal::of(false, "cannot create", "timed out");
        assert!(
            matches!(unreachable.into_failure(), StoreError::Unavailable(r) if r == "cannot create: timed out")
        );
        let failed = Refusal::of(true, "cannot create", "no space");
        assert!(matches!(failed.into_failure(), StoreError::Io(_)));
        assert!(matches!(Refusal::Exists.into_failure(), StoreError::Io(_)));
        assert_eq!(Refusal::Unknown.to_string(), "the topic has no stream");
    }
}
