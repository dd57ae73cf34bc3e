//! The store's one door: the [`Log`] trait the server, the commands and the groups use, whatever
//! keeps the messages (memory, files, later a replicated engine).

use std::os::fd::RawFd;
use std::path::Path;
use std::time::Instant;

use protocol::batch::Piece;
use protocol::{Message, NewMessage, Retention, Sequenced, TopicInfo};

use super::{
    Budget, Cache, CommitFailure, FileLog, MemoryLog, OpenError, Result, Settled, StoreConfig,
    Ticket, Totals,
};
use crate::nats::NatsLog;

/// A store of topics, each an ordered log of messages numbered by offset.
///
/// Appends are staged: they become readable, and may be acknowledged, only once the commit
/// covering them has settled. The server starts a commit once per pass of its loop, after
/// handling every request of the pass ([`Log::commit`] returns its [`Ticket`] at once), and
/// answers the pass's appends when [`Log::settled`] reports the ticket, which may be in the
/// same pass or a later one. Nothing here says where or how a commit is made durable: on a
/// local disk, by a flush thread, or by a remote engine acknowledging it; what the caller relies
/// on is only that commits appending to the same partition settle in the order they were
/// started (the stores in memory and on disk settle every commit in that order; the NATS one
/// settles a commit as soon as those before it on the same partitions did, so that a slow
/// partition holds up only its own), and that a settled commit names every append it covered
/// that did not become durable. While a commit is in flight the
/// caller goes on serving: reads see only what settled.
pub trait Log: std::fmt::Debug + Send {
    /// Appends `messages` to partition `partition` of `topic`, creating the topic if needed
    /// (with [`StoreConfig::partitions`] partitions), all stamped `timestamp`, and returns the
    /// first and last offsets given. They become readable at the next [`Log::commit`], which
    /// may still drop them.
    ///
    /// # Errors
    /// An invalid name, an oversized message or a partition the topic does not have (or would
    /// not have, made now) refuses the whole batch, changing nothing; so does a failure to
    /// create a new topic.
    fn append(
        &mut self,
        topic: &str,
        partition: u32,
        messages: &[NewMessage<'_>],
        timestamp: u64,
    ) -> Result<(u64, u64)>;

    /// Appends each part, `(partition, messages)`, of one request to `topic` as
    /// [`Log::append`] does, all or nothing: every part is checked before any is staged.
    /// Returns each part's first and last offsets, in order.
    ///
    /// # Errors
    /// As [`Log::append`], for any part; nothing is then appended.
    fn append_parts(
        &mut self,
        topic: &str,
        parts: &[(u32, &[NewMessage<'_>])],
        timestamp: u64,
    ) -> Result<Vec<(u64, u64)>>;

    /// Appends the parts of an idempotent producer's append, marked `sequenced`, as
    /// [`Log::append_parts`] does. A store that [recognises resends](Log::recognises_resends)
    /// stores it at most once, and gives a resend the offsets its first sending got when the
    /// commit settles; the others store it as any append (the broker remembers it for them).
    ///
    /// # Errors
    /// As [`Log::append_parts`].
    fn append_sequenced(
        &mut self,
        topic: &str,
        parts: &[(u32, &[NewMessage<'_>])],
        timestamp: u64,
        _sequenced: Sequenced,
    ) -> Result<Vec<(u64, u64)>> {
        self.append_parts(topic, parts, timestamp)
    }

    /// Whether the store itself recognises an idempotent append sent again, through this
    /// broker process or another sharing the store ([`Log::append_sequenced`]); `false` for the
    /// stores a broker process holds alone, for which the broker remembers them.
    fn recognises_resends(&self) -> bool {
        false
    }

    /// Starts the commit of every append since the last one (making them durable under the
    /// store's flush policy, then readable), and applies retention. Returns at once; the commit
    /// settles when [`Log::settled`] reports its ticket.
    fn commit(&mut self, now: Instant, now_ms: u64) -> Ticket;

    /// The commits that settled since the last call, without waiting: in the order they were
    /// started, but for commits without a partition in common, which may come in any order. A store shared with other broker processes also reports, under `Ticket(0)`
    /// (never given to a commit), topics that grew through them.
    fn settled(&mut self) -> Vec<Settled>;

    /// Waits until every commit started has settled, and returns those not yet reported.
    fn wait_settled(&mut self) -> Vec<Settled>;

    /// A descriptor that becomes readable when a commit settles, for the serve loop to poll
    /// beside its socket; `None` when every commit settles within [`Log::commit`].
    fn wake_fd(&self) -> Option<RawFd>;

    /// Commits, and waits until it settled: the topics whose appends were dropped. For
    /// start-up (preloading) and tests; the serve loop never waits.
    fn commit_and_wait(&mut self, now: Instant, now_ms: u64) -> Vec<CommitFailure> {
        self.commit(now, now_ms);
        self.wait_settled().into_iter().flat_map(|settled| settled.failures).collect()
    }

    /// Reads as many messages of partition `partition` of `topic` from `offset` into `out` as
    /// `budget` takes (always at least one message when one exists). Returns the partition's
    /// next offset.
    ///
    /// # Errors
    /// An invalid name, an unknown topic or partition, or an offset below the first held or
    /// past the next.
    fn read<'a>(
        &'a self,
        topic: &str,
        partition: u32,
        offset: u64,
        budget: Budget,
        out: &mut Vec<Message<'a>>,
    ) -> Result<u64>;

    /// Reads as [`Log::read`] does, the same messages, as the record batches that hold them
    /// (a `batches` reply, PROTOCOL.md "Record batches"): a batch taken whole is copied as it
    /// is kept, and of each message only its lengths are read, for the budget.
    ///
    /// # Errors
    /// As [`Log::read`].
    fn read_batches<'a>(
        &'a self,
        topic: &str,
        partition: u32,
        offset: u64,
        budget: Budget,
        out: &mut Vec<Piece<'a>>,
    ) -> Result<u64>;

    /// Whether a read of partition `partition` of `topic` at `offset` finds nothing until the
    /// store has read the messages there back from where they are kept (a broker process on
    /// a JetStream holds only the recent part of each partition): it asks for them, and the
    /// partition is readable again ([`Settled::readable`]) when they come, or when reading
    /// them failed (the read then says why). `false` for the stores that hold every message
    /// they serve.
    fn loading(&self, _topic: &str, _partition: u32, _offset: u64) -> bool {
        false
    }

    /// What the store holds of its messages and reads back ([`Log::loading`]); `None` for the
    /// stores that hold every message they serve.
    fn cache(&self) -> Option<Cache> {
        None
    }

    /// A partition's first offset held and the next offset to be given (equal when it is
    /// empty).
    ///
    /// # Errors
    /// An unknown topic or partition.
    fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64)>;

    /// How many partitions a topic has.
    ///
    /// # Errors
    /// An unknown topic.
    fn partitions(&self, topic: &str) -> Result<u32>;

    /// Creates an empty topic of `partitions` partitions with its own retention limits
    /// (durably, for a durable store).
    ///
    /// # Errors
    /// An invalid name or count of partitions (0, or over [`protocol::MAX_PARTITIONS`]), a
    /// topic of that name exists, or it cannot be stored.
    fn create(&mut self, topic: &str, partitions: u32, retention: Retention) -> Result<()>;

    /// Grows a topic to `partitions` partitions in all, the new ones empty (durably, for a
    /// durable store, before it returns).
    ///
    /// # Errors
    /// An invalid name, an unknown topic, a count not above the topic's or over
    /// [`protocol::MAX_PARTITIONS`], or it cannot be stored; the topic is then as it was.
    fn grow(&mut self, topic: &str, partitions: u32) -> Result<()>;

    /// Removes a topic and its messages.
    ///
    /// # Errors
    /// An invalid name, an unknown topic, or its messages cannot be removed.
    fn delete(&mut self, topic: &str) -> Result<()>;

    /// Every topic with its offsets, ordered by name.
    fn list(&self) -> Vec<TopicInfo>;

    /// What the store holds, in sum.
    fn totals(&self) -> Totals;

    /// The partitions, (topic, partition), whose oldest messages retention removed since the
    /// last call.
    fn take_trimmed(&mut self) -> Vec<(String, u32)>;

    /// The next moment a commit has timed work to do even with no append (a periodic flush,
    /// retention by time). `None` when there is none.
    fn next_deadline(&self) -> Option<Instant>;

    /// Makes everything committed durable, for a clean stop under any flush policy.
    fn close(&mut self);

    /// Where opening set damaged files aside, if it set any aside (a durable store only).
    fn set_aside_dir(&self) -> Option<&Path> {
        None
    }

    /// Bytes of stored messages opening read and checked (a durable store only).
    fn checked_bytes(&self) -> u64 {
        0
    }
}

/// The store as the broker holds it: any [`Log`].
pub type Store = dyn Log;

impl dyn Log {
    /// Opens the store `config` describes: a [`NatsLog`] when it names a NATS JetStream, a
    /// [`MemoryLog`] when it names no data directory, otherwise a [`FileLog`] over it.
    ///
    /// # Errors
    /// As [`FileLog::open`] and [`NatsLog::open`].
    pub fn open(config: StoreConfig) -> Result<Box<Store>, OpenError> {
        if let Some(nats) = config.nats.clone() {
            return Ok(Box::new(NatsLog::open(config, &nats)?));
        }
        Ok(match config.data_dir {
            None => Box::new(MemoryLog::new(config)),
            Some(_) => Box::new(FileLog::open(config)?),
        })
    }

    /// An empty store kept in memory only.
    pub fn in_memory(config: StoreConfig) -> Box<Store> {
        Box::new(MemoryLog::new(config))
    }
}

/// A boxed log is a log, so that a `Box<Store>` goes wherever a `&Store` or `&mut Store` does.
impl<L: Log + ?Sized> Log for Box<L> {
    fn append(
        &mut self,
        topic: &str,
        partition: u32,
        messages: &[NewMessage<'_>],
        timestamp: u64,
    ) -> Result<(u64, u64)> {
        (**self).append(topic, partition, messages, timestamp)
    }
    fn append_parts(
        &mut self,
        topic: &str,
        parts: &[(u32, &[NewMessage<'_>])],
        timestamp: u64,
    ) -> Result<Vec<(u64, u64)>> {
        (**self).append_parts(topic, parts, timestamp)
    }
    fn append_sequenced(
        &mut self,
        topic: &str,
        parts: &[(u32, &[NewMessage<'_>])],
        timestamp: u64,
        sequenced: Sequenced,
    ) -> Result<Vec<(u64, u64)>> {
        (**self).append_sequenced(topic, parts, timestamp, sequenced)
    }
    fn recognises_resends(&self) -> bool {
        (**self).recognises_resends()
    }
    fn commit(&mut self, now: Instant, now_ms: u64) -> Ticket {
        (**self).commit(now, now_ms)
    }
    fn settled(&mut self) -> Vec<Settled> {
        (**self).settled()
    }
    fn wait_settled(&mut self) -> Vec<Settled> {
        (**self).wait_settled()
    }
    fn wake_fd(&self) -> Option<RawFd> {
        (**self).wake_fd()
    }
    fn read<'a>(
        &'a self,
        topic: &str,
        partition: u32,
        offset: u64,
        budget: Budget,
        out: &mut Vec<Message<'a>>,
    ) -> Result<u64> {
        (**self).read(topic, partition, offset, budget, out)
    }
    fn read_batches<'a>(
        &'a self,
        topic: &str,
        partition: u32,
        offset: u64,
        budget: Budget,
        out: &mut Vec<Piece<'a>>,
    ) -> Result<u64> {
        (**self).read_batches(topic, partition, offset, budget, out)
    }
    fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        (**self).offsets(topic, partition)
    }
    fn partitions(&self, topic: &str) -> Result<u32> {
        (**self).partitions(topic)
    }
    fn create(&mut self, topic: &str, partitions: u32, retention: Retention) -> Result<()> {
        (**self).create(topic, partitions, retention)
    }
    fn grow(&mut self, topic: &str, partitions: u32) -> Result<()> {
        (**self).grow(topic, partitions)
    }
    fn delete(&mut self, topic: &str) -> Result<()> {
        (**self).delete(topic)
    }
    fn list(&self) -> Vec<TopicInfo> {
        (**self).list()
    }
    fn totals(&self) -> Totals {
        (**self).totals()
    }
    fn take_trimmed(&mut self) -> Vec<(String, u32)> {
        (**self).take_trimmed()
    }
    fn next_deadline(&self) -> Option<Instant> {
        (**self).next_deadline()
    }
    fn loading(&self, topic: &str, partition: u32, offset: u64) -> bool {
        (**self).loading(topic, partition, offset)
    }
    fn cache(&self) -> Option<Cache> {
        (**self).cache()
    }
    fn close(&mut self) {
        (**self).close()
    }
    fn set_aside_dir(&self) -> Option<&Path> {
        (**self).set_aside_dir()
    }
    fn checked_bytes(&self) -> u64 {
        (**self).checked_bytes()
    }
}

/// Implements [`Log`] for a wrapper of [`super::Topics`] by handing each call to it.
macro_rules! delegate_log {
    ($type:ty) => {
        impl $crate::store::Log for $type {
            fn append(
                &mut self,
                topic: &str,
                partition: u32,
                messages: &[protocol::NewMessage<'_>],
                timestamp: u64,
            ) -> $crate::store::Result<(u64, u64)> {
                self.0.append(topic, partition, messages, timestamp)
            }
            fn append_parts(
                &mut self,
                topic: &str,
                parts: &[(u32, &[protocol::NewMessage<'_>])],
                timestamp: u64,
            ) -> $crate::store::Result<Vec<(u64, u64)>> {
                self.0.append_parts(topic, parts, timestamp)
            }
            fn commit(&mut self, now: std::time::Instant, now_ms: u64) -> $crate::store::Ticket {
                self.0.commit(now, now_ms)
            }
            fn settled(&mut self) -> Vec<$crate::store::Settled> {
                self.0.settled()
            }
            fn wait_settled(&mut self) -> Vec<$crate::store::Settled> {
                self.0.wait_settled()
            }
            fn wake_fd(&self) -> Option<std::os::fd::RawFd> {
                self.0.wake_fd()
            }
            fn read<'a>(
                &'a self,
                topic: &str,
                partition: u32,
                offset: u64,
                budget: $crate::store::Budget,
                out: &mut Vec<protocol::Message<'a>>,
            ) -> $crate::store::Result<u64> {
                self.0.read(topic, partition, offset, budget, out)
            }
            fn read_batches<'a>(
                &'a self,
                topic: &str,
                partition: u32,
                offset: u64,
                budget: $crate::store::Budget,
                out: &mut Vec<protocol::batch::Piece<'a>>,
            ) -> $crate::store::Result<u64> {
                self.0.read(topic, partition, offset, budget, out)
            }
            fn offsets(&self, topic: &str, partition: u32) -> $crate::store::Result<(u64, u64)> {
                self.0.offsets(topic, partition)
            }
            fn partitions(&self, topic: &str) -> $crate::store::Result<u32> {
                self.0.partitions(topic)
            }
            fn create(
                &mut self,
                topic: &str,
                partitions: u32,
                retention: protocol::Retention,
            ) -> $crate::store::Result<()> {
                self.0.create(topic, partitions, retention)
            }
            fn grow(&mut self, topic: &str, partitions: u32) -> $crate::store::Result<()> {
                self.0.grow(topic, partitions)
            }
            fn delete(&mut self, topic: &str) -> $crate::store::Result<()> {
                self.0.delete(topic)
            }
            fn list(&self) -> Vec<protocol::TopicInfo> {
                self.0.list()
            }
            fn totals(&self) -> $crate::store::Totals {
                self.0.totals()
            }
            fn take_trimmed(&mut self) -> Vec<(String, u32)> {
                self.0.take_trimmed()
            }
            fn next_deadline(&self) -> Option<std::time::Instant> {
                self.0.next_deadline()
            }
            fn close(&mut self) {
                self.0.close()
            }
            fn set_aside_dir(&self) -> Option<&std::path::Path> {
                self.0.set_aside_dir()
            }
            fn checked_bytes(&self) -> u64 {
                self.0.checked_bytes()
            }
        }
    };
}
pub(crate) use delegate_log;
