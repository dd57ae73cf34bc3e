//! The topic store: every topic's log, shared by all logical brokers, in memory or on disk.
//!
//! The store knows nothing of sockets, claims or envelopes, so it is tested on its own. Each
//! message is stored once; every logical broker serves the same store, which is how an append
//! reaches all of them in the same order and their offsets agree.
//!
//! Appends become readable, and may be acknowledged, only when the store commits: the server
//! commits once per pass of its loop, after handling every request of the pass, so one write
//! and at most one flush per topic cover all of the pass's appends (group commit). A store on
//! disk holds only each topic's newest segment in memory; older ones are sealed and read from
//! their files, mapped (see `segment`), and described by index files so that opening need not
//! read them (see `index` and `recovery`).

mod budget;
pub mod damaged;
mod disk;
mod file;
mod format;
mod index;
mod log;
mod memory;
mod recovery;
mod segment;
mod topic;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::quiet::Shown;
use protocol::{validate_topic_name, InvalidTopicName, Message, NewMessage, Retention, TopicInfo};
use thiserror::Error;

pub use budget::Budget;
pub use damaged::{DamageReport, DamagedFile, SetAside};
pub use file::FileLog;
pub use log::{Log, Store};
pub use memory::{default_max_memory, MemoryLog};
pub use topic::Topic;

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
    #[error("offset {offset} is outside {first}..={next}, the offsets topic {topic:?} can serve")]
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
    /// A file operation failed.
    #[error("storage failed: {0}")]
    Io(IoFailure),
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

/// A topic whose appends of this pass could not be made durable, and were dropped.
#[derive(Debug)]
pub struct CommitFailure {
    /// The topic.
    pub topic: String,
    /// What went wrong.
    pub error: io::Error,
}

/// Every topic, by name: the engine both [`MemoryLog`] and [`FileLog`] are made of. Its topics
/// are in memory or on disk as its configuration says; callers see it only through [`Log`].
#[derive(Debug)]
pub struct Topics {
    /// The topics, ordered by name so that listings come out sorted.
    topics: BTreeMap<String, Topic>,
    /// How the store was set up.
    config: StoreConfig,
    /// Topics appended to since the last commit.
    dirty: Vec<String>,
    /// When the files were last flushed, for [`Fsync::Interval`].
    last_sync: Instant,
    /// When retention was last checked on every topic.
    last_retention_check: Instant,
    /// Topics that retention shortened in the last commit.
    trimmed: Vec<String>,
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

impl Topics {
    /// An empty store kept in memory only.
    pub fn in_memory(config: StoreConfig) -> Topics {
        let now = Instant::now();
        Topics {
            topics: BTreeMap::new(),
            config: StoreConfig { data_dir: None, ..config },
            dirty: Vec::new(),
            last_sync: now,
            last_retention_check: now,
            trimmed: Vec::new(),
            set_aside: None,
            checked_bytes: 0,
        }
    }

    /// Opens the store `config` describes: in memory when it names no data directory,
    /// otherwise every topic found there, each checked record by record (see `recovery`). A
    /// newest segment with a torn tail (an interrupted last write) is cut back to its last whole
    /// record and the cut logged; a damaged file refuses the opening, unless `config.repair`
    /// sets it aside.
    ///
    /// # Errors
    /// [`OpenError::Damaged`] naming every damaged file, having changed nothing; or a
    /// [`StoreError::Io`] when the directory cannot be read or written.
    pub fn open(config: StoreConfig) -> Result<Topics, OpenError> {
        let Some(data_dir) = config.data_dir.clone() else {
            return Ok(Topics::in_memory(config));
        };
        let aside = config.repair.then(|| SetAside::new(&data_dir, None));
        let recovered = recovery::recover(&data_dir, config.segment_bytes, aside)?;
        let mut store = Topics { config, ..Topics::in_memory(StoreConfig::default()) };
        store.config.data_dir = Some(data_dir);
        store.topics.extend(recovered.topics);
        store.set_aside = recovered.set_aside;
        store.checked_bytes = recovered.checked_bytes;
        Ok(store)
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

    /// Appends `messages` to `topic`, creating it if needed, all stamped `timestamp`, and
    /// returns the first and last offsets given. They become readable at the next
    /// [`Topics::commit`], which may still drop them.
    ///
    /// # Errors
    /// An invalid name or an oversized message refuses the whole batch; so does a failure to
    /// create a new topic's directory.
    pub fn append(
        &mut self,
        topic: &str,
        messages: &[NewMessage<'_>],
        timestamp: u64,
    ) -> Result<(u64, u64)> {
        check_name(topic)?;
        let limit = self.config.max_message_bytes;
        if let Some((index, size)) =
            messages.iter().map(NewMessage::size).enumerate().find(|&(_, size)| size > limit)
        {
            return Err(StoreError::MessageTooLarge { index, size, limit });
        }
        if let Some(limit) = self.config.max_bytes {
            let needed: u64 =
                messages.iter().map(|m| segment::Segment::record_len(m.key, m.value) as u64).sum();
            let held: u64 = self.topics.values().map(Topic::stored_bytes).sum();
            if held.saturating_add(needed) > limit {
                return Err(StoreError::StorageFull { held, needed, limit });
            }
        }
        if !self.topics.contains_key(topic) {
            self.create(topic, Retention::default())?;
        }
        let log = self.topics.get_mut(topic).ok_or_else(|| unknown(topic))?;
        if !log.is_dirty() {
            self.dirty.push(topic.to_owned());
        }
        let segment_bytes = self.config.segment_bytes;
        let mut last = None;
        for message in messages {
            last = Some(log.append(timestamp, message.key, message.value, segment_bytes));
        }
        // The batch is not empty (the protocol refuses empty appends), so `last` is set.
        let last = last.unwrap_or_default();
        Ok((last + 1 - messages.len() as u64, last))
    }

    /// Makes every append since the last commit readable and, for a store on disk, durable
    /// under the flush policy; then applies retention. Returns the topics whose appends could
    /// not be written: those appends were dropped and must be refused.
    pub fn commit(&mut self, now: Instant, now_ms: u64) -> Vec<CommitFailure> {
        let sync_each = self.config.fsync == Fsync::Always;
        let mut failures = Vec::new();
        self.trimmed.clear();
        for name in std::mem::take(&mut self.dirty) {
            let Some(topic) = self.topics.get_mut(&name) else { continue };
            match topic.commit(sync_each) {
                Ok(()) => {
                    if topic.trim(&self.config.retention, now_ms) > 0 {
                        self.trimmed.push(name);
                    }
                }
                Err(error) => {
                    tracing::error!(topic = %Shown(&name), %error, "appends could not be written; refused");
                    failures.push(CommitFailure { topic: name, error });
                }
            }
        }
        if let Fsync::Interval(interval) = self.config.fsync {
            if now.duration_since(self.last_sync) >= interval {
                self.last_sync = now;
                for (name, topic) in &mut self.topics {
                    if let Err(error) = topic.sync() {
                        tracing::error!(topic = %Shown(name), %error, "periodic flush failed");
                    }
                }
            }
        }
        if now.duration_since(self.last_retention_check) >= RETENTION_CHECK {
            self.last_retention_check = now;
            for (name, topic) in &mut self.topics {
                if topic.trim(&self.config.retention, now_ms) > 0 && !self.trimmed.contains(name) {
                    self.trimmed.push(name.clone());
                }
            }
        }
        failures
    }

    /// The topics whose oldest messages retention removed in the last [`Topics::commit`].
    pub fn trimmed(&self) -> &[String] {
        &self.trimmed
    }

    /// The next moment a commit has timed work to do even with no append: a periodic flush
    /// under [`Fsync::Interval`], or retention by time. `None` when there is none.
    pub fn next_deadline(&self) -> Option<Instant> {
        let flush = match self.config.fsync {
            Fsync::Interval(interval) if self.config.data_dir.is_some() => {
                Some(self.last_sync + interval)
            }
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

    /// Flushes every topic's files, for a clean stop under any flush policy.
    pub fn close(&mut self) {
        for (name, topic) in &mut self.topics {
            if let Err(error) = topic.sync() {
                tracing::error!(topic = %Shown(name), %error, "final flush failed");
            }
        }
    }

    /// Reads as many messages of `topic` from `offset` into `out` as `budget` takes (always at
    /// least one message when one exists). Returns the topic's next offset.
    ///
    /// # Errors
    /// An invalid name, an unknown topic, or an offset below the first held or past the next.
    pub fn read<'a>(
        &'a self,
        topic: &str,
        offset: u64,
        mut budget: Budget,
        out: &mut Vec<Message<'a>>,
    ) -> Result<u64> {
        check_name(topic)?;
        let log = self.topic(topic)?;
        let (first, next) = (log.first_offset(), log.next_offset());
        if offset < first || offset > next {
            return Err(StoreError::OffsetOutOfRange {
                topic: topic.to_owned(),
                offset,
                first,
                next,
            });
        }
        // Room for what is there, up to the limit, at once rather than by doubling.
        out.reserve(budget.messages_left().min((next - offset) as usize));
        log.read(offset, &mut budget, out).map_err(io_error)?;
        Ok(next)
    }

    /// Creates an empty topic with its own retention limits (durably, on disk).
    ///
    /// # Errors
    /// An invalid name, a topic of that name exists, or its directory cannot be made.
    pub fn create(&mut self, topic: &str, retention: Retention) -> Result<()> {
        check_name(topic)?;
        if self.topics.contains_key(topic) {
            return Err(StoreError::TopicExists(topic.to_owned()));
        }
        let log = match &self.config.data_dir {
            Some(data_dir) => {
                let dir = disk::create_topic_dir(data_dir, &disk::Meta::new(topic, retention))
                    .map_err(io_error)?;
                Topic::on_disk(dir, retention)
            }
            None => Topic::in_memory(retention),
        };
        self.topics.insert(topic.to_owned(), log);
        Ok(())
    }

    /// Removes a topic, its messages and its files.
    ///
    /// # Errors
    /// An invalid name, an unknown topic, or its directory cannot be removed.
    pub fn delete(&mut self, topic: &str) -> Result<()> {
        check_name(topic)?;
        let log = self.topic(topic)?;
        if let (Some(dir), Some(data_dir)) = (log.dir(), &self.config.data_dir) {
            disk::remove_topic_dir(data_dir, dir).map_err(io_error)?;
        }
        self.topics.remove(topic);
        Ok(())
    }

    /// One topic's log.
    ///
    /// # Errors
    /// An unknown topic.
    pub fn topic(&self, topic: &str) -> Result<&Topic> {
        self.topics.get(topic).ok_or_else(|| unknown(topic))
    }

    /// A topic's first offset held and next offset to be given.
    ///
    /// # Errors
    /// An unknown topic.
    pub fn offsets(&self, topic: &str) -> Result<(u64, u64)> {
        let log = self.topic(topic)?;
        Ok((log.first_offset(), log.next_offset()))
    }

    /// Every topic with its offsets, ordered by name.
    pub fn list(&self) -> Vec<TopicInfo> {
        self.topics
            .iter()
            .map(|(name, log)| TopicInfo {
                name: name.clone(),
                messages: log.messages(),
                first_offset: log.first_offset(),
                next_offset: log.next_offset(),
                bytes: log.payload_bytes(),
                disk_bytes: log.disk_bytes(),
            })
            .collect()
    }

    /// What the store holds, in sum.
    pub fn totals(&self) -> Totals {
        let on_disk = self.config.data_dir.is_some();
        let mut totals = Totals {
            topics: self.topics.len() as u64,
            disk_bytes: on_disk.then_some(0),
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

fn check_name(topic: &str) -> Result<()> {
    validate_topic_name(topic).map_err(|e| StoreError::InvalidTopicName(topic.to_owned(), e))
}

fn unknown(topic: &str) -> StoreError {
    StoreError::UnknownTopic(topic.to_owned())
}

fn io_error(error: io::Error) -> StoreError {
    StoreError::Io(IoFailure::new(error))
}

#[cfg(test)]
mod tests;
