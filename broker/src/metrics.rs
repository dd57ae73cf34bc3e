//! The broker's metrics: plain counters the serving thread bumps, a snapshot it publishes at
//! most once every [`PUBLISH_EVERY`], and the page `--metrics-listen` renders from it.
//!
//! The serving thread never waits for a scrape: a scrape takes the last snapshot (a lock held
//! for the clone of an `Arc`) and renders it on the operations port's own thread. Publishing
//! copies the counters and reads the gauges (topics, groups, claims) once a second at most,
//! and only after a pass did something, so an idle broker is not woken for it. What other
//! threads observe (the flush thread's flushes, the ZAP handler's logins) goes into process-wide
//! atomics, [`FLUSH_SECONDS`] and [`LOGINS`].
//!
//! Series per topic and per group state stop at [`MAX_SERIES`] each (the first by name), so
//! that the page's size stays bounded whatever clients create; `broker_series_dropped` counts
//! those left out.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ops::exposition::Kind;
use ops::{AtomicHistogram, Exposition, Histogram};
use protocol::{NewMessage, Request, Response};

use crate::broker::Broker;
use crate::store::{Settled, StoreError, Ticket};

/// How often at most the serving thread publishes a snapshot: the age a scrape may see.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The most topics, and the most group states, given series of their own.
pub const MAX_SERIES: usize = 1000;

/// How long `/readyz` waits for JetStream's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Commits whose latency is being timed at most; past it, commits go untimed.
const MAX_TIMED_COMMITS: usize = 4096;

/// Flushes of the store's flush thread (`--fsync always`).
pub static FLUSH_SECONDS: AtomicHistogram = AtomicHistogram::new();

/// Logins the ZAP handler answered: accepted, refused (with those whose handshake failed
/// before ZAP, which the serving thread sees), and refused unchecked (too many waiting).
pub static LOGINS: Logins = Logins {
    accepted: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    unchecked: AtomicU64::new(0),
};

/// How a login came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// Accepted.
    Accepted,
    /// Refused: wrong credentials, or a handshake that failed before ZAP.
    Refused,
    /// Refused without a check: too many logins were waiting (`auth::admission`).
    Unchecked,
}

/// Login counts, bumped on the ZAP handler's thread.
#[derive(Debug)]
pub struct Logins {
    /// Logins accepted.
    accepted: AtomicU64,
    /// Logins refused.
    refused: AtomicU64,
    /// Logins refused unchecked.
    unchecked: AtomicU64,
}

impl Logins {
    /// Counts one login.
    pub fn count(&self, login: Login) {
        let counter = match login {
            Login::Accepted => &self.accepted,
            Login::Refused => &self.refused,
            Login::Unchecked => &self.unchecked,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts since start: (accepted, refused, refused unchecked).
    pub fn snapshot(&self) -> (u64, u64, u64) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        (load(&self.accepted), load(&self.refused), load(&self.unchecked))
    }
}

/// The request kinds, in the order of [`kind_of`]; a request that did not decode is `unknown`.
const KINDS: [&str; 17] = [
    "status",
    "claim",
    "renew",
    "release",
    "list_topics",
    "fetch",
    "append",
    "create_topic",
    "delete_topic",
    "join_group",
    "group_fetch",
    "ack",
    "list_groups",
    "reset_group",
    "create_partitions",
    "delete_group",
    "unknown",
];

/// The index of `request`'s kind in [`KINDS`].
fn kind_of(request: &Request<'_>) -> usize {
    match request {
        Request::Status => 0,
        Request::Claim { .. } => 1,
        Request::Renew { .. } => 2,
        Request::Release { .. } => 3,
        Request::ListTopics { .. } => 4,
        Request::Fetch(_) => 5,
        Request::Append(_) => 6,
        Request::CreateTopic { .. } => 7,
        Request::DeleteTopic { .. } => 8,
        Request::JoinGroup { .. } => 9,
        Request::GroupFetch(_) => 10,
        Request::Ack { .. } => 11,
        Request::ListGroups { .. } => 12,
        Request::ResetGroup { .. } => 13,
        Request::CreatePartitions { .. } => 14,
        Request::DeleteGroup { .. } => 15,
    }
}

/// The counters the serving thread keeps: plain numbers, no atomics, no locks.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Requests by kind, in the order of [`KINDS`].
    requests: [u64; KINDS.len()],
    /// Refusals by request kind and error name.
    refusals: BTreeMap<(&'static str, &'static str), u64>,
    /// Messages appended (acknowledged or not yet), and their bytes of keys and values, as
    /// `Stats` counts them.
    appended: (u64, u64),
    /// Messages sent in fetch and group fetch replies, and their bytes of keys and values.
    fetched: (u64, u64),
    /// Connections accepted and closed.
    connections: (u64, u64),
    /// Appends a commit could not make durable, by error.
    store_errors: BTreeMap<&'static str, u64>,
    /// From the start of a commit with appends to its settling.
    commit: Histogram,
    /// Group requests made again on a state another broker process stored first.
    made_again: u64,
}

/// The serving thread's meter: its counters, the commits being timed, and, with
/// `--metrics-listen`, where it publishes.
#[derive(Debug, Default)]
pub struct Meter {
    /// The counters.
    counters: Counters,
    /// Messages appended when the last commit started, to tell whether the next carries any.
    appended_before: u64,
    /// Commits with appends in flight, and when each started.
    timing: VecDeque<(Ticket, Instant)>,
    /// Where snapshots go; `None` without `--metrics-listen`.
    published: Option<Arc<Published>>,
    /// When the next snapshot may be published.
    due: Option<Instant>,
    /// Whether a pass ran since the last snapshot.
    dirty: bool,
}

impl Meter {
    /// Counts a decoded request.
    pub fn request(&mut self, request: &Request<'_>) {
        self.counters.requests[kind_of(request)] += 1;
    }

    /// Counts a reply to a request of kind `op`: a refusal by its error, the messages of a
    /// fetch. Requests that did not decode are counted here, as `unknown`.
    pub fn replied(&mut self, op: &'static str, response: &Response<'_>) {
        match response {
            Response::Error { code, .. } => {
                if op == "unknown" {
                    self.counters.requests[KINDS.len() - 1] += 1;
                }
                *self.counters.refusals.entry((op, code.name())).or_default() += 1;
            }
            Response::Messages { messages, .. } | Response::Delivered { messages, .. } => {
                let bytes: usize = messages.iter().map(|m| m.size()).sum();
                self.counters.fetched.0 += messages.len() as u64;
                self.counters.fetched.1 += bytes as u64;
            }
            Response::Batches { batches, .. } => {
                let (messages, bytes) = batches.counts();
                self.counters.fetched.0 += messages;
                self.counters.fetched.1 += bytes;
            }
            _ => {}
        }
    }

    /// Counts a request of kind `op` refused with `code` after its reply was made: a group
    /// change the groups' commit could not store.
    pub fn refused(&mut self, op: &'static str, code: protocol::ErrorCode) {
        *self.counters.refusals.entry((op, code.name())).or_default() += 1;
    }

    /// Counts `count` group requests made again on a state another broker process stored
    /// first, rather than refused.
    pub fn made_again(&mut self, count: usize) {
        self.counters.made_again += count as u64;
    }

    /// Counts a connection accepted (`true`) or closed.
    pub fn connection(&mut self, accepted: bool) {
        if accepted {
            self.counters.connections.0 += 1;
        } else {
            self.counters.connections.1 += 1;
        }
    }

    /// Notes the start of the pass's commit, timed when it carries appends: when `appended`,
    /// the messages appended since the broker started, grew since the last one.
    pub fn committing(&mut self, ticket: Ticket, now: Instant, appended: u64) {
        let carries = appended != std::mem::replace(&mut self.appended_before, appended);
        if carries && self.timing.len() < MAX_TIMED_COMMITS {
            self.timing.push_back((ticket, now));
        }
    }

    /// Times a settled commit and counts the appends it could not make durable.
    pub fn settled(&mut self, commit: &Settled) {
        // Commits on different partitions of a shared store may settle out of order.
        if let Some(at) = self.timing.iter().position(|(ticket, _)| *ticket == commit.ticket) {
            if let Some((_, started)) = self.timing.remove(at) {
                self.counters.commit.observe(started.elapsed());
            }
        }
        for failure in &commit.failures {
            let error = match failure.error {
                StoreError::Io(_) => "io",
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Unconfirmed(_) => "unconfirmed",
                _ => "other",
            };
            *self.counters.store_errors.entry(error).or_default() += 1;
        }
    }

    /// A meter that publishes to `published`, if given.
    pub fn new(published: Option<Arc<Published>>) -> Meter {
        Meter { published, ..Meter::default() }
    }

    /// When the serving thread must wake to publish what its last passes did: at once when
    /// nothing was published yet, so that a broker nobody uses is ready too.
    pub fn next_publish(&self) -> Option<Instant> {
        self.published.as_ref()?;
        match self.due {
            None => Some(Instant::now()),
            Some(due) => self.dirty.then_some(due),
        }
    }

    /// Publishes a snapshot of `broker` if one is due, at the end of a pass. `waiting` are
    /// the logical brokers the waiting claims want (`None`: any), `unread` the reply bytes
    /// queued.
    pub fn publish(
        &mut self,
        broker: &Broker,
        waiting: impl Iterator<Item = Option<u32>>,
        unread: usize,
        now: Instant,
    ) {
        let Some(published) = &self.published else { return };
        self.dirty = true;
        if self.due.is_some_and(|due| now < due) {
            return;
        }
        let snapshot = snapshot(&self.counters, broker, waiting, unread, now);
        *published.snapshot.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Arc::new(snapshot));
        self.due = Some(now + PUBLISH_EVERY);
        self.dirty = false;
    }
}

/// Bytes of keys and values of `messages`.
pub fn payload_bytes(messages: &[NewMessage<'_>]) -> u64 {
    messages.iter().map(|m| m.size()).sum::<usize>() as u64
}

/// What `broker` shows now, with `counters`.
fn snapshot(
    counters: &Counters,
    broker: &Broker,
    waiting: impl Iterator<Item = Option<u32>>,
    unread: usize,
    now: Instant,
) -> Snapshot {
    let Broker { store, groups, brokers, stats, .. } = broker;
    let topics = store.list();
    let mut states = Vec::new();
    for (group, topic, partition, state) in groups.list(None, None).into_iter().take(MAX_SERIES) {
        let end = store.offsets(topic, partition).map_or(state.delivered(), |(_, next)| next);
        states.push(GroupState {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            committed: state.committed(),
            lag: end.saturating_sub(state.committed()),
            pending: state.pending() as u64,
        });
    }
    let mut claims_waiting = BTreeMap::new();
    for wanted in waiting {
        *claims_waiting.entry(wanted).or_default() += 1;
    }
    let mut counters = counters.clone();
    counters.appended = (stats.appended, stats.appended_bytes);
    Snapshot {
        counters,
        dropped: topics.len().saturating_sub(MAX_SERIES) + groups.len().saturating_sub(MAX_SERIES),
        topic_count: topics.len(),
        topics: topics.into_iter().take(MAX_SERIES).collect(),
        states,
        claims: brokers.status(now, store.totals()).iter().map(|b| (b.id, !b.available)).collect(),
        claims_waiting,
        unread,
        cache: store.cache(),
    }
}

/// A group's state on one partition of a topic, as published.
#[derive(Debug)]
struct GroupState {
    /// The group.
    group: String,
    /// The topic.
    topic: String,
    /// The partition.
    partition: u32,
    /// Every offset below it is acknowledged.
    committed: u64,
    /// Messages not yet acknowledged: the topic's end less the committed offset.
    lag: u64,
    /// Messages delivered and not yet acknowledged.
    pending: u64,
}

/// What the serving thread published last.
#[derive(Debug)]
struct Snapshot {
    /// The counters.
    counters: Counters,
    /// Topics and group states left without series of their own.
    dropped: usize,
    /// Topics in all.
    topic_count: usize,
    /// The first [`MAX_SERIES`] topics.
    topics: Vec<protocol::TopicInfo>,
    /// What a broker process on a JetStream holds of its messages and reads back.
    cache: Option<crate::store::Cache>,
    /// The first [`MAX_SERIES`] group states.
    states: Vec<GroupState>,
    /// Each logical broker and whether it is claimed.
    claims: Vec<(u32, bool)>,
    /// Waiting claims by the logical broker they want.
    claims_waiting: BTreeMap<Option<u32>, u64>,
    /// Reply bytes queued and not yet taken by their peers.
    unread: usize,
}

/// The broker's side of the operations port: the last snapshot, and how to ask JetStream.
#[derive(Debug, Default)]
pub struct Published {
    /// The last snapshot; `None` until the serving loop's first pass.
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    /// With `--store nats`: the servers `/readyz` asks whether JetStream answers.
    nats: Vec<String>,
}

impl Published {
    /// The port's state for a broker whose store is on the NATS `servers` (none: its own).
    pub fn new(nats: Vec<String>) -> Published {
        Published { snapshot: Mutex::new(None), nats }
    }
}

impl ops::http::Endpoint for Published {
    fn metrics(&self, page: &mut Exposition) {
        let snapshot = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(snapshot) = snapshot {
            render(&snapshot, page);
        }
        page.histogram(
            "broker_flush_seconds",
            "Flushes of appended records to disk by the flush thread (--fsync always).",
            &FLUSH_SECONDS.snapshot(),
        );
        page.family("broker_logins_total", Kind::Counter, "Logins (PLAIN or CURVE) by result.");
        let results = [
            ("accepted", &LOGINS.accepted),
            ("refused", &LOGINS.refused),
            ("refused_unchecked", &LOGINS.unchecked),
        ];
        for (result, counter) in results {
            let value = counter.load(Ordering::Relaxed) as f64;
            page.sample("broker_logins_total", &[("result", result)], value);
        }
    }

    fn ready(&self) -> Result<(), String> {
        if self.snapshot.lock().unwrap_or_else(PoisonError::into_inner).is_none() {
            return Err("the store is not open yet".into());
        }
        if self.nats.is_empty() {
            return Ok(());
        }
        let mut last = String::new();
        for server in &self.nats {
            match jetstream_answers(server) {
                Ok(()) => return Ok(()),
                Err(why) => last = format!("JetStream at {server}: {why}"),
            }
        }
        Err(last)
    }
}

/// A family of gauges with a sample per item: its name, help, and the item's value.
type Family<T> = (&'static str, &'static str, fn(&T) -> u64);

/// A family of per-partition series: its name, its help, and each topic's values by partition.
type PartitionFamily = (&'static str, &'static str, fn(&protocol::TopicInfo) -> &[u64]);

/// Writes `snapshot` as the broker's families.
fn render(snapshot: &Snapshot, page: &mut Exposition) {
    let c = &snapshot.counters;
    page.family("broker_requests_total", Kind::Counter, "Requests received, by kind.");
    for (kind, count) in KINDS.iter().zip(c.requests) {
        page.sample("broker_requests_total", &[("op", kind)], count as f64);
    }
    page.family("broker_refusals_total", Kind::Counter, "Requests refused, by kind and error.");
    for ((op, code), count) in &c.refusals {
        page.sample("broker_refusals_total", &[("op", op), ("code", code)], *count as f64);
    }
    page.counter(
        "broker_group_requests_made_again_total",
        "Group requests made again on a state another broker process stored first, rather than \
         refused.",
        c.made_again,
    );
    page.counter("broker_appended_messages_total", "Messages appended.", c.appended.0);
    page.counter("broker_appended_bytes_total", "Bytes of keys and values appended.", c.appended.1);
    page.counter("broker_fetched_messages_total", "Messages sent to readers.", c.fetched.0);
    page.counter(
        "broker_fetched_bytes_total",
        "Bytes of keys and values sent to readers.",
        c.fetched.1,
    );
    page.counter(
        "broker_connections_accepted_total",
        "Client connections accepted.",
        c.connections.0,
    );
    page.gauge(
        "broker_connections",
        "Client connections open.",
        c.connections.0.saturating_sub(c.connections.1) as f64,
    );
    page.gauge(
        "broker_unread_reply_bytes",
        "Bytes of replies queued to clients and not yet taken by them.",
        snapshot.unread as f64,
    );
    page.histogram(
        "broker_commit_seconds",
        "From the start of a commit of appends to its acknowledgement being possible.",
        &c.commit,
    );
    page.family(
        "broker_store_errors_total",
        Kind::Counter,
        "Topics whose appends of a commit could not be made durable, by error (unavailable and \
         unconfirmed: JetStream).",
    );
    for error in ["io", "unavailable", "unconfirmed", "other"] {
        let count = c.store_errors.get(error).copied().unwrap_or(0);
        page.sample("broker_store_errors_total", &[("error", error)], count as f64);
    }
    page.gauge("broker_topics", "Topics in the store.", snapshot.topic_count as f64);
    if let Some(cache) = &snapshot.cache {
        page.gauge(
            "broker_cache_bytes",
            "Bytes of messages held (with --store: the copies of the newest and what was read back).",
            cache.bytes as f64,
        );
        page.gauge(
            "broker_cache_limit_bytes",
            "The most it may hold (--cache-bytes).",
            cache.limit as f64,
        );
        page.counter(
            "broker_read_backs_total",
            "Reads back from JetStream of messages older than the copies.",
            cache.read_backs,
        );
        page.counter(
            "broker_read_back_bytes_total",
            "Bytes of stored batches read back from JetStream.",
            cache.read_back_bytes,
        );
    }
    page.gauge(
        "broker_series_dropped",
        "Topics and group states past the cap of 1000 each, left without series of their own.",
        snapshot.dropped as f64,
    );
    let partition_families: [PartitionFamily; 2] = [
        ("broker_topic_end_offset", "The offset the partition's next message gets.", |t| {
            &t.next_offsets
        }),
        ("broker_topic_first_offset", "The partition's oldest offset still kept.", |t| {
            &t.first_offsets
        }),
    ];
    for (name, help, offsets) in partition_families {
        page.family(name, Kind::Gauge, help);
        for topic in &snapshot.topics {
            for (partition, offset) in offsets(topic).iter().enumerate() {
                let partition = partition.to_string();
                let labels = [("topic", topic.name.as_str()), ("partition", partition.as_str())];
                page.sample(name, &labels, *offset as f64);
            }
        }
    }
    let topic_families: [Family<protocol::TopicInfo>; 2] = [
        ("broker_topic_messages", "Messages the topic holds.", |t| t.messages),
        ("broker_topic_size_bytes", "Bytes of keys and values the topic holds.", |t| t.bytes),
    ];
    for (name, help, value) in topic_families {
        page.family(name, Kind::Gauge, help);
        for topic in &snapshot.topics {
            page.sample(name, &[("topic", &topic.name)], value(topic) as f64);
        }
    }
    let group_families: [Family<GroupState>; 3] = [
        (
            "broker_group_committed_offset",
            "Every offset below it is acknowledged by the group.",
            |s| s.committed,
        ),
        ("broker_group_lag", "Messages the group has yet to acknowledge.", |s| s.lag),
        ("broker_group_pending", "Messages delivered to the group, not yet acknowledged.", |s| {
            s.pending
        }),
    ];
    for (name, help, value) in group_families {
        page.family(name, Kind::Gauge, help);
        for state in &snapshot.states {
            let partition = state.partition.to_string();
            let labels = [
                ("group", state.group.as_str()),
                ("topic", state.topic.as_str()),
                ("partition", partition.as_str()),
            ];
            page.sample(name, &labels, value(state) as f64);
        }
    }
    page.family("broker_claims", Kind::Gauge, "Claims held, by logical broker (0 or 1).");
    for (id, held) in &snapshot.claims {
        page.sample("broker_claims", &[("broker", &id.to_string())], u8::from(*held).into());
    }
    page.family(
        "broker_claims_waiting",
        Kind::Gauge,
        "Claims waiting for a logical broker, by the one they want (`any`).",
    );
    for (wanted, count) in &snapshot.claims_waiting {
        let broker = wanted.map_or_else(|| "any".to_owned(), |id| id.to_string());
        page.sample("broker_claims_waiting", &[("broker", &broker)], *count as f64);
    }
}

/// Asks the NATS server at `server` (`nats://HOST:PORT`) for JetStream's account information,
/// in its text protocol, as a client with nothing to set up: whether JetStream answers now.
fn jetstream_answers(server: &str) -> Result<(), String> {
    let address = server.trim_start_matches("nats://");
    let address =
        address.to_socket_addrs().map_err(|e| e.to_string())?.next().ok_or("no address")?;
    let stream = TcpStream::connect_timeout(&address, PROBE_TIMEOUT).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    writer
        .write_all(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"broker-readyz\"}\r\n\
              SUB _READYZ.info 1\r\nPUB $JS.API.INFO _READYZ.info 0\r\n\r\n",
        )
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream).take(64 * 1024);
    let mut line = String::new();
    let mut answer_follows = false;
    while Instant::now() < deadline {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Err("closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("no answer: {e}")),
        }
        if answer_follows {
            return match line.contains("\"error\"") {
                true => Err(format!("answered {}", line.trim_end())),
                false => Ok(()),
            };
        }
        if line.starts_with("PING") {
            writer.write_all(b"PONG\r\n").map_err(|e| e.to_string())?;
        } else if line.starts_with("-ERR") {
            return Err(line.trim_end().to_owned());
        } else if line.starts_with("MSG _READYZ.info") {
            answer_follows = true;
        }
    }
    Err("no answer in time".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_for_each_request_and_one_for_those_that_did_not_decode() {
        let mut meter = Meter::default();
        meter.request(&Request::Status);
        meter.replied("unknown", &Response::error(protocol::ErrorCode::Malformed, "x"));
        meter.replied("append", &Response::error(protocol::ErrorCode::StorageFull, "x"));
        assert_eq!(meter.counters.requests[0], 1);
        assert_eq!(meter.counters.requests[KINDS.len() - 1], 1);
        assert_eq!(meter.counters.refusals[&("append", "storage_full")], 1);
    }

    #[test]
    fn only_commits_that_carry_appends_are_timed_and_each_once() {
        let mut meter = Meter::default();
        let now = Instant::now();
        let settled = |ticket| Settled {
            ticket: Ticket(ticket),
            failures: Vec::new(),
            readable: Vec::new(),
            renumbered: Vec::new(),
        };
        meter.committing(Ticket(1), now, 0);
        meter.committing(Ticket(2), now, 5);
        meter.committing(Ticket(3), now, 5);
        meter.committing(Ticket(4), now, 7);
        for ticket in 1..=4 {
            meter.settled(&settled(ticket));
        }
        meter.settled(&settled(4));
        assert_eq!(meter.counters.commit.count(), 2);
        assert!(meter.timing.is_empty());
    }
}
