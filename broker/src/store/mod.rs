//! The topic store: every topic's log, shared by all logical brokers, in memory or on disk.
//!
//! The store knows nothing of sockets, claims or envelopes, so it is tested on its own. Each
//! message is stored once; every logical broker serves the same store, which is how an append
//! reaches all of them in the same order and their offsets agree.
//!
//! Appends become readable, and may be acknowledged, only when the commit covering them has
//! settled: the server starts a commit once per pass of its loop, after handling every request
//! of the pass, so one write per partition and one flush cover all of the pass's appends (group
//! commit). Under `--fsync always` on disk the flush is made by a thread of the store's own
//! (see `flush`) and the commit settles in a later pass; otherwise it settles at once. A store on
//! disk holds only each topic's newest segment in memory; older ones are sealed and read from
//! their files, mapped (see `segment`), and described by index files so that opening need not
//! read them (see `index` and `recovery`).

mod budget;
pub mod damaged;
pub(crate) mod disk;
mod file;
pub(crate) mod flush;
pub mod format;
mod index;
mod log;
mod memory;
mod partition;
pub(crate) mod recovery;
mod segment;
mod spare;
mod storage;
mod topic;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::nats::NatsConfig;
use crate::quiet::Shown;
use protocol::{validate_topic_name, InvalidTopicName, NewMessage, Retention, TopicInfo};
use thiserror::Error;

pub use budget::Budget;
pub use damaged::{DamageReport, DamagedFile, SetAside};
pub use file::FileLog;
pub use log::{Log, Store};
pub use memory::{default_max_memory, MemoryLog};
pub use partition::{Partition, Reading};
pub use storage::{DataDir, Files, InMemory, Medium, Storage};
pub use topic::{info_of, unknown_partition, Topic};

/// How many bytes of records a segment holds before a new one is started, unless configured.
pub const DEFAULT_SEGMENT_BYTES: usize = 4 << 20;

/// How often retention by time is checked on topics nobody appends to.
const RETENTION_CHECK: Duration = Duration::from_secs(1);

/// When appended messages are flushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// Before they are acknowledged: an acknowledged message survives a power cut.
    #[default]
    Always,
    /// At most this long after they are written: a power cut loses at most that much, a crash
    /// of the broker alone loses nothing (like Redis' `appendfsync everysec`).
    Interval(Duration),
    /// When the operating system decides: a crash of the broker loses nothing, a power cut may
    /// (like Kafka's default).
    Never,
}

/// How a store is set up.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Where the files go; `None` keeps everything in memory only.
    pub data_dir: Option<PathBuf>,
    /// When appends are flushed, for a store on disk.
    pub fsync: Fsync,
    /// The most bytes of key and value one message may have.
    pub max_message_bytes: usize,
    /// How many bytes of records a segment holds before the next is started.
    pub segment_bytes: usize,
    /// Retention for topics that set none of their own.
    pub retention: Retention,
    /// Whether opening sets damaged files aside into `DATA_DIR/damaged/` and starts without
    /// them (`--repair`), rather than refuse to start.
    pub repair: bool,
    /// The most bytes of records the store may hold (`--max-memory` in memory, `--max-disk`
    /// on disk, where they are the bytes of the segment files); `None` for no ceiling.
    pub max_bytes: Option<u64>,
    /// Keep the topics in a NATS JetStream instead (`--store nats://...`); the data directory
    /// is then unused.
    pub nats: Option<NatsConfig>,
    /// How many partitions a topic made by its first append gets (`--partitions`, Kafka's
    /// `num.partitions`); from 1 to [`protocol::MAX_PARTITIONS`].
    pub partitions: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: None,
            fsync: Fsync::default(),
            max_message_bytes: protocol::DEFAULT_MAX_MESSAGE_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            retention: Retention::default(),
            repair: false,
            max_bytes: None,
            nats: None,
            partitions: 1,
        }
    }
}

/// Why the store refused an operation. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// No topic has this name.
    #[error("no topic is named {0:?}")]
    UnknownTopic(String),
    /// The topic exists already.
    #[error("a topic named {0:?} exists already")]
    TopicExists(String),
    /// The name breaks the naming rules.
    #[error("{0:?} is not a valid topic name: {1}")]
    InvalidTopicName(String, InvalidTopicName),
    /// A message is over the size limit.
    #[error("message {index} of the batch is {size} bytes; the limit is {limit}")]
    MessageTooLarge {
        /// Its position in the batch, from 0.
        index: usize,
        /// Its key and value bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The batch would take the store past its ceiling.
    #[error(
        "the store is full: it holds {held} bytes and this append needs {needed} more, over the \
         ceiling of {limit} bytes; retention or deleting topics makes room"
    )]
    StorageFull {
        /// Bytes of records the store holds, appends of this pass included.
        held: u64,
        /// Bytes of records the batch takes.
        needed: u64,
        /// The ceiling.
        limit: u64,
    },
    /// The offset is outside what the topic holds.
    #[error(
        "offset {offset} is not in topic {topic:?}, which can be read from offset {first} to its \
         end at {next}"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The offset asked for.
        offset: u64,
        /// The oldest offset held.
        first: u64,
        /// The next offset to be given.
        next: u64,
    },
    /// The topic has no such partition.
    #[error(
        "topic {topic:?} has no partition {partition}: it has {partitions} partitions, numbered \
         from 0"
    )]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },
    /// A count of partitions that cannot be: 0, over [`protocol::MAX_PARTITIONS`], or (to grow
    /// a topic) not more than it has; what is wrong, for people.
    #[error("{0}")]
    InvalidPartitions(String),
    /// A file operation failed.
    #[error("storage failed: {0}")]
    Io(IoFailure),
    /// The store shared with other broker processes (a NATS JetStream) could not be reached,
    /// and nothing was done: the same request may succeed once it is back. The stores in
    /// memory and on disk never give it.
    #[error("the shared store cannot be reached: {0}")]
    Unavailable(String),
    /// The store shared with other broker processes did not confirm in time that it stored
    /// an append: its messages may have been stored or not. Only a commit gives it.
    #[error("the shared store did not confirm in time: {0}")]
    Unconfirmed(String),
}

/// A failed file operation: the `io::Error` itself, and what the store was doing when the error
/// alone does not say (which file). Its text is `<doing>: <error>`, or the error's alone.
///
/// The error is not also given as [`std::error::Error::source`]: the text holds it already, and
/// a chain printed whole would say it twice.
#[derive(Debug, Clone)]
pub struct IoFailure {
    /// What the store was doing, e.g. `cannot read <path>`, when the error does not say.
    doing: Option<String>,
    /// The error, shared so that the [`StoreError`] holding it can be cloned.
    error: Arc<io::Error>,
}

impl IoFailure {
    /// `error`, which says all there is to say.
    pub fn new(error: io::Error) -> IoFailure {
        IoFailure { doing: None, error: Arc::new(error) }
    }

    /// `error`, which happened while the store was `doing` this.
    pub fn doing(doing: String, error: io::Error) -> IoFailure {
        IoFailure { doing: Some(doing), error: Arc::new(error) }
    }

    /// The error itself.
    pub fn error(&self) -> &io::Error {
        &self.error
    }
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.doing {
            Some(doing) => write!(f, "{doing}: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// `io::Error` has no equality: two failures are equal when they were doing the same, and their
/// errors are of one kind and say the same.
impl PartialEq for IoFailure {
    fn eq(&self, other: &IoFailure) -> bool {
        self.doing == other.doing
            && self.error.kind() == other.error.kind()
            && self.error.to_string() == other.error.to_string()
    }
}

impl Eq for IoFailure {}

/// Why a store could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpenError {
    /// The data directory holds damaged files, and opening it changed nothing.
    #[error("{0}")]
    Damaged(DamageReport),
    /// A file could not be read or changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A commit started by [`Log::commit`]: it names the pass's appends until they settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// What became of one commit: the appends it covered are now durable and readable, except
/// those of the topics it names as failures, which were dropped.
#[derive(Debug)]
pub struct Settled {
    /// The commit.
    pub ticket: Ticket,
    /// The partitions whose appends of the commit were dropped: they must be refused.
    pub failures: Vec<CommitFailure>,
    /// The partitions, (topic, partition), whose new messages became readable.
    pub readable: Vec<(String, u32)>,
    /// Appends whose offsets the commit decided, unlike those [`Log::append`] gave: a log
    /// shared with other broker processes learns them only from the engine's acknowledgement.
    pub renumbered: Vec<Renumbered>,
}

/// An append whose offsets were decided by its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renumbered {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The first offset [`Log::append`] returned for it, which names it within the commit.
    pub given: u64,
    /// The offset its first message got.
    pub first: u64,
    /// The offset its last message got.
    pub last: u64,
}

/// A partition whose appends of a commit could not be made durable, and were dropped.
#[derive(Debug)]
pub struct CommitFailure {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// What went wrong: [`StoreError::Io`] for a failed write or flush, after which nothing
    /// of the appends is kept; [`StoreError::Unavailable`] or [`StoreError::Unconfirmed`] from
    /// a store shared with other broker processes.
    pub error: StoreError,
}

/// Every topic, by name: the engine both [`MemoryLog`] (`Topics<InMemory>`) and [`FileLog`]
/// (`Topics<DataDir>`) are made of. Its topics are kept in memory or on disk as its [`Medium`]
/// says; callers see it only through [`Log`].
#[derive(Debug)]
pub struct Topics<M: Medium> {
    /// Where the topics are kept.
    medium: M,
    /// The topics, ordered by name so that listings come out sorted.
    topics: BTreeMap<String, Topic<M::Storage>>,
    /// How the store was set up.
    config: StoreConfig,
    /// Partitions, (topic, partition), appended to since the last commit.
    dirty: Vec<(String, u32)>,
    /// The ticket the next commit gets.
    next_ticket: u64,
    /// Commits started and not yet settled, oldest first, with the partitions each wrote to
    /// (none for a commit with nothing to flush, which settles with the one before it).
    in_flight: VecDeque<(Ticket, Vec<(String, u32)>)>,
    /// Commits settled and not yet reported by [`Topics::settled`].
    settled: Vec<Settled>,
    /// The flush thread, under [`Fsync::Always`] on disk.
    flusher: Option<flush::Flusher>,
    /// When the files were last flushed, for [`Fsync::Interval`].
    last_sync: Instant,
    /// When retention was last checked on every topic.
    last_retention_check: Instant,
    /// Partitions that retention shortened in the last commit.
    trimmed: Vec<(String, u32)>,
    /// Failures of the writes of commits in flight, reported when they settle.
    early_failures: Vec<(Ticket, Vec<CommitFailure>)>,
    /// Where opening set damaged files aside, under `--repair`.
    set_aside: Option<PathBuf>,
    /// Bytes of segment files opening read and checked.
    checked_bytes: u64,
}

/// What the store holds, in sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Topics.
    pub topics: u64,
    /// Messages over all topics.
    pub messages: u64,
    /// Bytes of keys and values over all topics.
    pub bytes: u64,
    /// Bytes of files on disk, for a store on disk.
    pub disk_bytes: Option<u64>,
}

/// What a store that holds only part of its messages (a broker process on a JetStream) holds
/// and reads back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cache {
    /// Bytes of records held now: the copies of the newest messages and what was read back.
    pub bytes: u64,
    /// The most it may hold (`--cache-bytes`).
    pub limit: u64,
    /// Reads back made since the start.
    pub read_backs: u64,
    /// Bytes of stored batches read back since the start.
    pub read_back_bytes: u64,
}

impl Topics<InMemory> {
    /// An empty store kept in memory only.
    pub fn in_memory(config: StoreConfig) -> Topics<InMemory> {
        Topics::empty(InMemory, StoreConfig { data_dir: None, ..config })
    }
}

impl Topics<DataDir> {
    /// Opens the data directory `config` names: every topic found there, each checked record
    /// by record (see `recovery`). A newest segment with a torn tail (an interrupted last
    /// write) is cut back to its last whole record and the cut logged; a damaged file refuses
    /// the opening, unless `config.repair` sets it aside.
    ///
    /// # Errors
    /// [`OpenError::Damaged`] naming every damaged file, having changed nothing; or a
    /// [`StoreError::Io`] when the directory cannot be read or written, or when `config` names
    /// no data directory.
    pub fn open(config: StoreConfig) -> Result<Topics<DataDir>, OpenError> {
        let Some(data_dir) = config.data_dir.clone() else {
            let error = io::Error::other("a file-backed log needs a data directory");
            return Err(io_error(error).into());
        };
        let aside = config.repair.then(|| SetAside::new(&data_dir, None));
        let recovered = recovery::recover(&data_dir, config.segment_bytes, aside)?;
        let flusher = match config.fsync {
            Fsync::Always => Some(flush::Flusher::start(&data_dir).map_err(|e| {
                StoreError::Io(IoFailure::doing("cannot start the flush thread".into(), e))
            })?),
            _ => None,
        };
        let mut store = Topics::empty(DataDir(data_dir), config);
        store.flusher = flusher;
        store.topics.extend(recovered.topics);
        store.set_aside = recovered.set_aside;
        store.checked_bytes = recovered.checked_bytes;
        Ok(store)
    }
}

impl<M: Medium> Topics<M> {
    /// An empty store keeping its topics in `medium`.
    fn empty(medium: M, config: StoreConfig) -> Topics<M> {
        let now = Instant::now();
        Topics {
            medium,
            topics: BTreeMap::new(),
            config,
            dirty: Vec::new(),
            next_ticket: 1,
            in_flight: VecDeque::new(),
            settled: Vec::new(),
            flusher: None,
            last_sync: now,
            last_retention_check: now,
            trimmed: Vec::new(),
            early_failures: Vec::new(),
            set_aside: None,
            checked_bytes: 0,
        }
    }

    /// Bytes of segment files opening read and checked: the newest segment of each topic, and
    /// any sealed one without a usable index.
    pub fn checked_bytes(&self) -> u64 {
        self.checked_bytes
    }

    /// Where opening set damaged files aside (`DATA_DIR/damaged/<n>/`), if it set any aside.
    pub fn set_aside_dir(&self) -> Option<&Path> {
        self.set_aside.as_deref()
    }

    /// Appends `messages` to partition `partition` of `topic`, creating the topic (with
    /// [`StoreConfig::partitions`]) if needed, all stamped `timestamp`, and returns the first
    /// and last offsets given. They become readable at the next [`Topics::commit`], which may
    /// still drop them.
    ///
    /// # Errors
    /// An invalid name, an oversized message or a partition the topic does not have (or would
    /// not have, made now) refuses the whole batch; so does a failure to create a new topic's
    /// directory.
    pub fn append(
        &mut self,
        topic: &str,
        partition: u32,
        messages: &[NewMessage<'_>],
        timestamp: u64,
    ) -> Result<(u64, u64)> {
        let offsets = self.append_parts(topic, &[(partition, messages)], timestamp)?;
        Ok(offsets.first().copied().unwrap_or_default())
    }

    /// Appends each part, `(partition, messages)`, of one request to `topic` as
    /// [`Topics::append`] does, all or nothing: every part is checked, and the store's ceiling
    /// against them all, before anything changes.
    ///
    /// # Errors
    /// As [`Topics::append`], for any part.
    pub fn append_parts(
        &mut self,
        topic: &str,
        parts: &[(u32, &[NewMessage<'_>])],
        timestamp: u64,
    ) -> Result<Vec<(u64, u64)>> {
        let count = self.topics.get(topic).map_or(self.config.partitions, Topic::count);
        for &(partition, messages) in parts {
            check_batch(topic, messages, self.config.max_message_bytes)?;
            if partition >= count {
                return Err(topic::unknown_partition(topic, partition, count));
            }
        }
        if let Some(limit) = self.config.max_bytes {
            let needed: u64 =
                parts.iter().map(|(_, m)| segment::Segment::batch_len(m) as u64).sum();
            let held: u64 = self.topics.values().map(Topic::stored_bytes).sum();
            if held.saturating_add(needed) > limit {
                return Err(StoreError::StorageFull { held, needed, limit });
            }
        }
        if !self.topics.contains_key(topic) {
            self.create_for_append(topic)?;
        }
        let segment_bytes = self.config.segment_bytes;
        let mut offsets = Vec::with_capacity(parts.len());
        for &(partition, messages) in parts {
            let key = (topic.to_owned(), partition);
            let log = log_mut(&mut self.topics, &key).ok_or_else(|| unknown(topic))?;
            if !log.is_dirty() {
                self.dirty.push(key);
            }
            let first = log.append_batch(timestamp, messages, segment_bytes);
            // A part is not empty (the protocol refuses empty appends).
            offsets.push((first, (first + messages.len() as u64).saturating_sub(1)));
        }
        Ok(offsets)
    }

    /// Starts the commit of every append since the last one, and applies retention. Under
    /// [`Fsync::Always`] on disk the appends are written here and flushed by the flush thread:
    /// the commit settles when [`Topics::settled`] reports it. Otherwise (in memory, or a flush
    /// policy that does not wait for the disk) it settles at once.
    pub fn commit(&mut self, now: Instant, now_ms: u64) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        let dirty = std::mem::take(&mut self.dirty);
        if let Some(flusher) = &self.flusher {
            let mut failures = Vec::new();
            let mut job = flush::Job {
                ticket: ticket.0,
                files: Vec::new(),
                dirs: Vec::new(),
                creations: Vec::new(),
            };
            let mut written = Vec::with_capacity(dirty.len());
            for name in dirty {
                let Some(log) = log_mut(&mut self.topics, &name) else { continue };
                match log.write(ticket.0, true) {
                    Ok(()) => {
                        log.take_flush(&mut job);
                        written.push(name);
                    }
                    Err(error) => failures.push(failed(name, error)),
                }
            }
            share_failures(&mut self.topics, &mut written, &mut failures);
            let sent = !written.is_empty()
                && match flusher.send(job) {
                    Ok(()) => true,
                    Err(error) => {
                        for name in std::mem::take(&mut written) {
                            if let Some(log) = log_mut(&mut self.topics, &name) {
                                log.fail();
                            }
                            let error = io::Error::new(error.kind(), error.to_string());
                            failures.push(failed(name, error));
                        }
                        false
                    }
                };
            if !sent && self.in_flight.is_empty() {
                self.settled.push(Settled {
                    ticket,
                    failures,
                    readable: Vec::new(),
                    renumbered: Vec::new(),
                });
            } else {
                // Commits settle in order: one with nothing to flush settles with the one
                // before it. Failures of the writes are reported with the rest of the commit.
                self.in_flight.push_back((ticket, written));
                self.ready_failures(ticket, failures);
            }
        } else {
            let sync_each = self.config.fsync == Fsync::Always;
            let mut settled = Settled {
                ticket,
                failures: Vec::new(),
                readable: Vec::new(),
                renumbered: Vec::new(),
            };
            let mut prepared = Vec::with_capacity(dirty.len());
            for name in dirty {
                let Some(log) = log_mut(&mut self.topics, &name) else { continue };
                match log.prepare(sync_each) {
                    Ok(()) => prepared.push(name),
                    Err(error) => settled.failures.push(failed(name, error)),
                }
            }
            let refused = share_failures(&mut self.topics, &mut prepared, &mut settled.failures);
            for name in prepared {
                if let Some(log) = log_mut(&mut self.topics, &name) {
                    log.settle(0);
                    settled.readable.push(name);
                }
            }
            debug_assert!(refused.iter().all(|t| !settled.readable.iter().any(|(r, _)| r == t)));
            self.trim(&settled.readable, now_ms);
            self.settled.push(settled);
        }
        if let Fsync::Interval(interval) = self.config.fsync {
            if now.duration_since(self.last_sync) >= interval {
                self.last_sync = now;
                for (name, topic) in &mut self.topics {
                    for log in topic.partitions_mut() {
                        if let Err(error) = log.sync() {
                            tracing::error!(topic = %Shown(name), %error, "periodic flush failed");
                        }
                    }
                }
            }
        }
        if now.duration_since(self.last_retention_check) >= RETENTION_CHECK {
            self.last_retention_check = now;
            for (name, topic) in &mut self.topics {
                for (partition, log) in (0..).zip(topic.partitions_mut()) {
                    let trimmed = log.trim(&self.config.retention, now_ms) > 0;
                    let key = (name.clone(), partition);
                    if trimmed && !self.trimmed.contains(&key) {
                        self.trimmed.push(key);
                    }
                }
            }
        }
        ticket
    }

    /// Keeps the failures of the writes of commit `ticket`, whose flush is in flight, to
    /// report with it.
    fn ready_failures(&mut self, ticket: Ticket, failures: Vec<CommitFailure>) {
        if !failures.is_empty() {
            self.early_failures.push((ticket, failures));
        }
    }

    /// Applies retention to `partitions`, which have just grown, noting those it shortened.
    fn trim(&mut self, partitions: &[(String, u32)], now_ms: u64) {
        for name in partitions {
            let retention = self.config.retention;
            let Some(log) = log_mut(&mut self.topics, name) else { continue };
            if log.trim(&retention, now_ms) > 0 && !self.trimmed.contains(name) {
                self.trimmed.push(name.clone());
            }
        }
    }

    /// The commits that settled since the last call, oldest first, without waiting.
    pub fn settled(&mut self) -> Vec<Settled> {
        if let Some(flusher) = &self.flusher {
            let done = flusher.take();
            for done in done {
                self.apply(done);
            }
        }
        std::mem::take(&mut self.settled)
    }

    /// Waits until every commit started has settled, and returns those not yet reported.
    pub fn wait_settled(&mut self) -> Vec<Settled> {
        while !self.in_flight.is_empty() {
            let Some(done) = self.flusher.as_ref().and_then(flush::Flusher::wait) else {
                // The flush thread is gone: nothing in flight will ever be durable.
                let error = Arc::new(io::Error::other("the flush thread has stopped"));
                let tickets = self.in_flight.iter().map(|(ticket, _)| ticket.0).collect();
                self.apply(flush::Done { tickets, error: Some(error) });
                break;
            };
            self.apply(done);
        }
        self.settled()
    }

    /// Settles the commits the flush thread reports on.
    fn apply(&mut self, done: flush::Done) {
        let now_ms = crate::clock::epoch_ms();
        for ticket in done.tickets {
            self.settle_unflushed();
            let Some((front, topics)) = self.in_flight.pop_front() else { break };
            debug_assert_eq!(front.0, ticket, "the flush thread reports in order");
            let mut settled = Settled {
                ticket: front,
                failures: Vec::new(),
                readable: Vec::new(),
                renumbered: Vec::new(),
            };
            if let Some(at) = self.early_failures.iter().position(|(t, _)| *t == front) {
                settled.failures = self.early_failures.swap_remove(at).1;
            }
            for name in topics {
                let Some(log) = log_mut(&mut self.topics, &name) else {
                    let error = io::Error::other("the topic was deleted before they were flushed");
                    settled.failures.push(failed(name, error));
                    continue;
                };
                if let Some(error) = &done.error {
                    log.fail();
                    settled
                        .failures
                        .push(failed(name, io::Error::new(error.kind(), error.to_string())));
                } else if log.settle(front.0) {
                    settled.readable.push(name);
                } else {
                    let error = io::Error::other("an earlier write or flush of the topic failed");
                    settled.failures.push(failed(name, error));
                }
            }
            self.trim(&settled.readable, now_ms);
            self.settled.push(settled);
        }
        self.settle_unflushed();
    }

    /// Settles the commits at the front of those in flight that had nothing to flush.
    fn settle_unflushed(&mut self) {
        while let Some((ticket, _)) = self.in_flight.front().filter(|(_, t)| t.is_empty()) {
            let ticket = *ticket;
            self.in_flight.pop_front();
            let failures = match self.early_failures.iter().position(|(t, _)| *t == ticket) {
                Some(at) => self.early_failures.swap_remove(at).1,
                None => Vec::new(),
            };
            self.settled.push(Settled {
                ticket,
                failures,
                readable: Vec::new(),
                renumbered: Vec::new(),
            });
        }
    }

    /// Commits, and waits until it settled: the topics whose appends were dropped.
    pub fn commit_and_wait(&mut self, now: Instant, now_ms: u64) -> Vec<CommitFailure> {
        self.commit(now, now_ms);
        self.wait_settled().into_iter().flat_map(|settled| settled.failures).collect()
    }

    /// The descriptor to poll beside the socket: readable when a commit settled.
    pub fn wake_fd(&self) -> Option<RawFd> {
        self.flusher.as_ref().map(flush::Flusher::fd)
    }

    /// The partitions whose oldest messages retention removed since the last call.
    pub fn take_trimmed(&mut self) -> Vec<(String, u32)> {
        std::mem::take(&mut self.trimmed)
    }

    /// The next moment a commit has timed work to do even with no append: a periodic flush
    /// under [`Fsync::Interval`], or retention by time. `None` when there is none.
    pub fn next_deadline(&self) -> Option<Instant> {
        let flush = match self.config.fsync {
            Fsync::Interval(interval) if M::ON_DISK => Some(self.last_sync + interval),
            _ => None,
        };
        let timed =
            self.config.retention.ms.is_some() || self.topics.values().any(Topic::retains_by_time);
        let retention = timed.then(|| self.last_retention_check + RETENTION_CHECK);
        match (flush, retention) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Flushes every topic's files, for a clean stop under any flush policy. Commits still in
    /// flight settle first; call [`Topics::wait_settled`] before to hear of them.
    pub fn close(&mut self) {
        let unheard = self.wait_settled();
        if !unheard.is_empty() {
            tracing::debug!(commits = unheard.len(), "commits settled at close, unreported");
        }
        for (name, topic) in &mut self.topics {
            for log in topic.partitions_mut() {
                if let Err(error) = log.sync() {
                    tracing::error!(topic = %Shown(name), %error, "final flush failed");
                }
            }
        }
    }

    /// Reads as many messages of partition `partition` of `topic` from `offset` into `out` as
    /// `budget` takes (always at least one message when one exists). Returns the partition's
    /// next offset.
    ///
    /// # Errors
    /// An invalid name, an unknown topic or partition, or an offset below the first held or
    /// past the next.
    pub fn read<'a, R: Reading<'a>>(
        &'a self,
        topic: &str,
        partition: u32,
        offset: u64,
        budget: Budget,
        out: &mut R,
    ) -> Result<u64> {
        check_name(topic)?;
        self.topic(topic)?.partition(topic, partition)?.read_checked(topic, offset, budget, out)
    }

    /// Creates an empty topic of `partitions` partitions with its own retention limits,
    /// durably on disk by the time the next [`Topics::commit`] settles. Under `--fsync always`
    /// the serving thread does not wait for the disk: the directories are made and the meta
    /// file written, and the flush thread publishes them with the next commit, as for a topic
    /// made by its first append; a `created` reply waits for that commit (the outbox gates it
    /// on the commit's ticket, and the commit's failure for this topic refuses it). A flush per
    /// creation on the serving thread made 1,000 creations hold other clients' `status` for
    /// 0.5-0.9 s at p50.
    ///
    /// # Errors
    /// An invalid name or count of partitions, a topic of that name exists, or its directory
    /// cannot be made.
    pub fn create(&mut self, topic: &str, partitions: u32, retention: Retention) -> Result<()> {
        check_name(topic)?;
        check_partitions(partitions)?;
        if self.topics.contains_key(topic) {
            return Err(StoreError::TopicExists(topic.to_owned()));
        }
        let deferred = self.flusher.is_some();
        let storages =
            self.medium.create(topic, retention, partitions, !deferred).map_err(io_error)?;
        let mut log =
            Topic::new(storages.into_iter().map(|s| Partition::new(s, retention)).collect());
        if deferred {
            // Partition 0's directory is the topic's: its first flush publishes the topic.
            log.partitions_mut()[0].stage_creation();
            self.dirty.push((topic.to_owned(), 0));
        }
        self.topics.insert(topic.to_owned(), log);
        Ok(())
    }

    /// Creates `topic` for its first append, with [`StoreConfig::partitions`]. Under `--fsync
    /// always` the serving thread does not wait for the disk: the directories are made and
    /// the meta file written, and the flush of the append's commit makes them durable before
    /// the append is acknowledged.
    ///
    /// # Errors
    /// As [`Topics::create`].
    fn create_for_append(&mut self, topic: &str) -> Result<()> {
        let partitions = self.config.partitions;
        if self.flusher.is_none() {
            return self.create(topic, partitions, Retention::default());
        }
        check_partitions(partitions)?;
        let retention = Retention::default();
        let storages = self.medium.create(topic, retention, partitions, false).map_err(io_error)?;
        let mut log =
            Topic::new(storages.into_iter().map(|s| Partition::new(s, retention)).collect());
        // Partition 0's first flush publishes the topic, whichever partition the append is to.
        log.partitions_mut()[0].stage_creation();
        self.dirty.push((topic.to_owned(), 0));
        self.topics.insert(topic.to_owned(), log);
        Ok(())
    }

    /// Grows `topic` to `partitions` partitions in all, the new ones empty. On disk their
    /// directories are made, then the topic's meta file names the new count, durably, before
    /// this returns: growing is rare, and the serving thread waits for it.
    ///
    /// # Errors
    /// An invalid name, an unknown topic, a count not above the topic's or over
    /// [`protocol::MAX_PARTITIONS`], or the files cannot be made (nothing then changes).
    pub fn grow(&mut self, topic: &str, partitions: u32) -> Result<()> {
        check_name(topic)?;
        let log = self.topics.get_mut(topic).ok_or_else(|| unknown(topic))?;
        check_growth(topic, log.count(), partitions)?;
        let retention = log.retention();
        let zero = log.partitions()[0].storage();
        let storages =
            self.medium.grow(topic, retention, zero, log.count(), partitions).map_err(io_error)?;
        log.extend(storages.into_iter().map(|s| Partition::new(s, retention)).collect());
        Ok(())
    }

    /// Removes a topic, its messages and its files.
    ///
    /// # Errors
    /// An invalid name, an unknown topic, or its directory cannot be removed.
    pub fn delete(&mut self, topic: &str) -> Result<()> {
        check_name(topic)?;
        let log = self.topic(topic)?;
        self.medium.remove(log.partitions()[0].storage()).map_err(io_error)?;
        self.topics.remove(topic);
        Ok(())
    }

    /// One topic.
    ///
    /// # Errors
    /// An unknown topic.
    pub fn topic(&self, topic: &str) -> Result<&Topic<M::Storage>> {
        self.topics.get(topic).ok_or_else(|| unknown(topic))
    }

    /// A partition's first offset held and next offset to be given.
    ///
    /// # Errors
    /// An unknown topic or partition.
    pub fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        let log = self.topic(topic)?.partition(topic, partition)?;
        Ok((log.first_offset(), log.next_offset()))
    }

    /// How many partitions a topic has.
    ///
    /// # Errors
    /// An unknown topic.
    pub fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.topic(topic)?.count())
    }

    /// Every topic with its offsets, ordered by name.
    pub fn list(&self) -> Vec<TopicInfo> {
        self.topics.iter().map(|(name, log)| log.info(name, &self.config.retention)).collect()
    }

    /// What the store holds, in sum.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals {
            topics: self.topics.len() as u64,
            disk_bytes: M::ON_DISK.then_some(0),
            ..Totals::default()
        };
        for log in self.topics.values() {
            totals.messages += log.messages();
            totals.bytes += log.payload_bytes();
            if let (Some(sum), Some(bytes)) = (&mut totals.disk_bytes, log.disk_bytes()) {
                *sum += bytes;
            }
        }
        totals
    }
}

/// Drops, from the partitions `written` in a commit, those of every topic another partition of
/// which failed in it (already in `failures`), adding them there: one request's appends to
/// several partitions are refused together, so none of them may become readable. Returns the
/// topics that failed.
fn share_failures<S: Storage>(
    topics: &mut BTreeMap<String, Topic<S>>,
    written: &mut Vec<(String, u32)>,
    failures: &mut Vec<CommitFailure>,
) -> Vec<String> {
    let mut refused: Vec<String> = failures.iter().map(|f| f.topic.clone()).collect();
    refused.dedup();
    if refused.is_empty() {
        return refused;
    }
    written.retain(|name| {
        if !refused.contains(&name.0) {
            return true;
        }
        if let Some(log) = log_mut(topics, name) {
            log.fail();
        }
        let error = io::Error::other("another partition of the topic could not be written");
        failures.push(failed(name.clone(), error));
        false
    });
    refused
}

/// The log of (topic, partition) `name` in `topics`, if there is one.
fn log_mut<'a, S: Storage>(
    topics: &'a mut BTreeMap<String, Topic<S>>,
    (topic, partition): &(String, u32),
) -> Option<&'a mut Partition<S>> {
    topics.get_mut(topic)?.partition_mut(topic, *partition).ok()
}

/// Checks what an append asks before anything changes, for every store: the topic's name, and
/// each message's size against `max_message_bytes`.
///
/// # Errors
/// [`StoreError::InvalidTopicName`], or [`StoreError::MessageTooLarge`] naming the first
/// message over the limit.
pub(crate) fn check_batch(
    topic: &str,
    messages: &[NewMessage<'_>],
    max_message_bytes: usize,
) -> Result<()> {
    check_name(topic)?;
    let limit = max_message_bytes;
    match messages.iter().map(NewMessage::size).enumerate().find(|&(_, size)| size > limit) {
        Some((index, size)) => Err(StoreError::MessageTooLarge { index, size, limit }),
        None => Ok(()),
    }
}

/// Refuses a count of partitions a topic cannot be made with: 0, or over
/// [`protocol::MAX_PARTITIONS`].
///
/// # Errors
/// [`StoreError::InvalidPartitions`], saying why.
pub(crate) fn check_partitions(partitions: u32) -> Result<()> {
    if partitions == 0 || partitions > protocol::MAX_PARTITIONS {
        return Err(StoreError::InvalidPartitions(format!(
            "a topic has from 1 to {} partitions, not {partitions}",
            protocol::MAX_PARTITIONS
        )));
    }
    Ok(())
}

/// Refuses to grow `topic`, which has `now` partitions, to `partitions`: a topic's partitions
/// never shrink, and growing to as many as it has is no growth.
///
/// # Errors
/// [`StoreError::InvalidPartitions`], saying why.
pub(crate) fn check_growth(topic: &str, now: u32, partitions: u32) -> Result<()> {
    check_partitions(partitions)?;
    if partitions <= now {
        return Err(StoreError::InvalidPartitions(format!(
            "topic {} has {now} partitions; it can grow to more, never shrink, so {partitions} \
             is refused",
            protocol::excerpt(topic)
        )));
    }
    Ok(())
}

pub(crate) fn check_name(topic: &str) -> Result<()> {
    validate_topic_name(topic).map_err(|e| StoreError::InvalidTopicName(topic.to_owned(), e))
}

/// Refuses a read of `topic` from `offset` outside `first..=next`, what the topic holds.
pub(crate) fn check_range(topic: &str, offset: u64, first: u64, next: u64) -> Result<()> {
    if offset < first || offset > next {
        return Err(StoreError::OffsetOutOfRange { topic: topic.to_owned(), offset, first, next });
    }
    Ok(())
}

pub(crate) fn unknown(topic: &str) -> StoreError {
    StoreError::UnknownTopic(topic.to_owned())
}

/// A failure of the appends to (topic, partition) `name`, logged.
fn failed((topic, partition): (String, u32), error: io::Error) -> CommitFailure {
    tracing::error!(topic = %Shown(&topic), partition, %error, "appends could not be written; refused");
    CommitFailure { topic, partition, error: io_error(error) }
}

fn io_error(error: io::Error) -> StoreError {
    StoreError::Io(IoFailure::new(error))
}

#[cfg(test)]
mod tests;
