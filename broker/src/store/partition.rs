//! A partition: one log of a topic, its segments, oldest first, the offsets they span, its
//! retention, and its [`Storage`]: nothing more in memory, its files on disk.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use protocol::batch::Piece;
use protocol::{Message, NewMessage, Retention};

use super::disk;
use super::segment::Segment;
use super::storage::{Files, InMemory, Storage};
use super::{flush, spare, Budget};

/// What a read of a partition fills: its messages one by one, or the record batches that
/// hold them (a `batches` reply, see `Segment::read_batches`).
pub trait Reading<'a> {
    /// How many items it holds.
    fn held(&self) -> usize;
    /// Makes room for about `messages` more messages.
    fn reserve_for(&mut self, messages: usize);
    /// Reads `segment` from `range.0` up to `range.1` for as long as `budget` takes the
    /// messages, as `Segment::read` does.
    ///
    /// # Errors
    /// As `Segment::read`.
    fn read(
        &mut self,
        segment: &'a Segment,
        range: (u64, u64),
        budget: &mut Budget,
    ) -> Result<bool, u64>;
    /// Takes `messages`, read from elsewhere than a segment.
    fn take_messages(&mut self, messages: Vec<Message<'a>>);
}

impl<'a> Reading<'a> for Vec<Message<'a>> {
    fn held(&self) -> usize {
        self.len()
    }
    fn reserve_for(&mut self, messages: usize) {
        self.reserve(messages);
    }
    fn read(
        &mut self,
        segment: &'a Segment,
        (from, end): (u64, u64),
        budget: &mut Budget,
    ) -> Result<bool, u64> {
        segment.read(from, end, self, |message| budget.take(message))
    }
    fn take_messages(&mut self, mut messages: Vec<Message<'a>>) {
        self.append(&mut messages);
    }
}

impl<'a> Reading<'a> for Vec<Piece<'a>> {
    fn held(&self) -> usize {
        self.len()
    }
    fn reserve_for(&mut self, _: usize) {
        // A few batches, whatever the count of messages.
    }
    fn read(
        &mut self,
        segment: &'a Segment,
        (from, end): (u64, u64),
        budget: &mut Budget,
    ) -> Result<bool, u64> {
        segment.read_batches(from, end, budget, self)
    }
    fn take_messages(&mut self, messages: Vec<Message<'a>>) {
        self.extend(protocol::batch::pieces_of(&messages));
    }
}

/// One partition's log, its records kept beyond memory as `S` says.
#[derive(Debug)]
pub struct Partition<S: Storage = InMemory> {
    /// The segments, oldest first.
    segments: VecDeque<Segment>,
    /// The offset the next appended message gets. Kept apart from the segments so that it
    /// survives retention removing every message.
    end: u64,
    /// Messages below this offset are durable under the store's flush policy and may be read;
    /// those from here to `end` were appended since, and their commit has not settled.
    committed: u64,
    /// The offset `end` had when the last commit started: messages from here to `end` were
    /// appended in the present pass.
    staged: u64,
    /// Commits started and not yet settled, oldest first.
    pending: VecDeque<Pending>,
    /// Made by an explicit creation whose first commit has not started: that commit makes its
    /// directory durable, and the creation is acknowledged when it settles.
    creation_staged: bool,
    /// Committed messages held.
    messages: u64,
    /// Bytes of keys and values of the committed messages held.
    payload_bytes: u64,
    /// Messages, and their bytes of keys and values, appended since the last commit.
    uncommitted: (u64, u64),
    /// Limits set for this topic, over the store's defaults.
    retention: Retention,
    /// Where its records are kept besides its segments.
    storage: S,
}

/// One started commit of a topic, waiting to settle.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The commit's ticket.
    ticket: u64,
    /// The topic's end when it started: what becomes readable when it settles.
    end: u64,
    /// Messages, and their bytes of keys and values, it covers.
    added: (u64, u64),
}

impl Partition<InMemory> {
    /// An empty topic kept in memory.
    pub fn in_memory(retention: Retention) -> Partition {
        Partition::new(InMemory, retention)
    }
}

impl Partition<Files> {
    /// A topic on disk in `dir` rebuilt from its recovered segments, oldest first, whose
    /// offsets follow on from one another (as `recovery` checks).
    pub fn from_segments(
        dir: PathBuf,
        retention: Retention,
        segments: Vec<Segment>,
    ) -> Partition<Files> {
        let bytes = segments.iter().map(|s| s.len_bytes() as u64).sum();
        let mut topic = Partition::new(Files::recovered(dir, bytes), retention);
        for segment in segments {
            topic.end = segment.next_offset();
            topic.messages += segment.next_offset() - segment.base_offset();
            topic.payload_bytes += segment.payload_bytes();
            topic.segments.push_back(segment);
        }
        topic.committed = topic.end;
        topic.staged = topic.end;
        topic
    }
}

impl<S: Storage> Partition<S> {
    /// An empty topic kept in `storage`.
    pub fn new(storage: S, retention: Retention) -> Partition<S> {
        Partition {
            segments: VecDeque::new(),
            end: 0,
            committed: 0,
            staged: 0,
            pending: VecDeque::new(),
            creation_staged: false,
            messages: 0,
            payload_bytes: 0,
            uncommitted: (0, 0),
            retention,
            storage,
        }
    }

    /// An empty topic kept in `storage` whose next message gets offset `next`: the copy of a
    /// topic held elsewhere, whose oldest messages are gone.
    pub fn starting_at(storage: S, next: u64, retention: Retention) -> Partition<S> {
        Partition { end: next, committed: next, staged: next, ..Partition::new(storage, retention) }
    }

    /// The same topic with its storage boxed, so that topics of different storages share a map.
    pub fn boxed(self) -> Partition<Box<dyn Storage>>
    where
        S: 'static,
    {
        Partition {
            segments: self.segments,
            end: self.end,
            committed: self.committed,
            staged: self.staged,
            pending: self.pending,
            creation_staged: self.creation_staged,
            messages: self.messages,
            payload_bytes: self.payload_bytes,
            uncommitted: self.uncommitted,
            retention: self.retention,
            storage: Box::new(self.storage),
        }
    }

    /// Appends one message stamped `timestamp`, as a batch of its own, and returns its offset.
    /// It becomes readable when the store commits.
    pub fn append(
        &mut self,
        timestamp: u64,
        key: Option<&[u8]>,
        value: &[u8],
        segment_bytes: usize,
    ) -> u64 {
        self.append_batch(timestamp, &[NewMessage::new(key, value)], segment_bytes)
    }

    /// Appends `messages` stamped `timestamp` as one batch, and returns the offset of the
    /// first; they become readable when the store commits. A batch is never split: one that
    /// would take the newest segment past `segment_bytes` starts a new segment (which it may
    /// take past `segment_bytes` alone), so that a batch is whole or gone after a crash. Only
    /// messages of more than [`super::segment::MAX_BATCH_BYTES`] in all are stored as several
    /// batches, as a batch's length is a `u32`.
    pub fn append_batch(
        &mut self,
        timestamp: u64,
        messages: &[NewMessage<'_>],
        segment_bytes: usize,
    ) -> u64 {
        let first = self.end;
        let mut rest = messages;
        while !rest.is_empty() {
            let (taken, shape) = Segment::batch_prefix(rest);
            let (batch, after) = rest.split_at(taken.clamp(1, rest.len()));
            let segment = match self.segments.back_mut() {
                Some(segment) if segment.fits(shape.len) => segment,
                full => {
                    let capacity = segment_bytes.max(shape.len);
                    // A partition that filled a segment is busy: its next one comes ready.
                    let spare = full.and_then(|_| spare::take(capacity));
                    self.segments.push_back(match spare {
                        Some(buffer) => Segment::new_in(self.end, capacity, buffer),
                        None => Segment::new(self.end, capacity),
                    });
                    self.segments.back_mut().expect("a segment was just added")
                }
            };
            let (_, payload) = segment.push_shaped(timestamp, batch, shape);
            self.end += batch.len() as u64;
            self.uncommitted.0 += batch.len() as u64;
            self.uncommitted.1 += payload;
            rest = after;
        }
        first
    }

    /// Limits set for this topic, over the store's defaults.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Whether messages were appended since the last commit started, or the topic was made
    /// since and its creation waits for that commit.
    pub fn is_dirty(&self) -> bool {
        self.staged != self.end || self.creation_staged
    }

    /// Has the next commit cover this new topic's creation, though nothing is appended.
    pub fn stage_creation(&mut self) {
        self.creation_staged = true;
    }

    /// The oldest offset still held (equal to [`Partition::next_offset`] when empty).
    pub fn first_offset(&self) -> u64 {
        self.segments.front().map_or(self.end, Segment::base_offset).min(self.committed)
    }

    /// The offset after the last readable message: what a reader sees as the end.
    pub fn next_offset(&self) -> u64 {
        self.committed
    }

    /// Committed messages held.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Bytes of keys and values of the committed messages held.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Bytes of records held, framing and file headers included, appends not yet committed
    /// too: what `--max-memory` and `--max-disk` count.
    pub fn stored_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len_bytes() as u64).sum()
    }

    /// Bytes of the broker's own memory its records take: every segment's, for a topic in
    /// memory; the newest segment's only (the older ones are read from their files), on disk.
    pub fn memory_bytes(&self) -> usize {
        self.segments.iter().map(Segment::memory_bytes).sum()
    }

    /// Bytes of its segment files, for a topic on disk.
    pub fn disk_bytes(&self) -> Option<u64> {
        self.storage.disk_bytes()
    }

    /// The topic's directory, for a topic on disk.
    pub fn dir(&self) -> Option<&Path> {
        self.storage.dir()
    }

    /// Where its records are kept.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Reads this partition of topic `name` as [`super::Log::read`] does: as many messages
    /// from `offset` into `out` as `budget` takes (always at least one message when one
    /// exists). Returns the partition's next offset.
    ///
    /// # Errors
    /// An offset below the first held or past the next; a damaged sealed segment.
    pub fn read_checked<'a, R: Reading<'a>>(
        &'a self,
        name: &str,
        offset: u64,
        mut budget: Budget,
        out: &mut R,
    ) -> super::Result<u64> {
        let (first, next) = (self.first_offset(), self.next_offset());
        super::check_range(name, offset, first, next)?;
        // Room for what is there, up to the limit, at once rather than by doubling.
        out.reserve_for(budget.messages_left().min((next - offset) as usize));
        self.read(offset, &mut budget, out).map_err(super::io_error)?;
        Ok(next)
    }

    /// Pushes onto `out` the readable messages from `offset` on, as many as `budget` takes (always
    /// the first one if there is one). `offset` must lie in `first_offset()..=next_offset()`.
    ///
    /// # Errors
    /// The first message to read is in a sealed segment file damaged since it was sealed: the
    /// error names the file and the offset. Damage after the first message ends the read
    /// before it instead, so that the next read reports it.
    pub fn read<'a, R: Reading<'a>>(
        &'a self,
        offset: u64,
        budget: &mut Budget,
        out: &mut R,
    ) -> io::Result<()> {
        // Segments are sorted by base offset: find the one holding `offset`.
        let start = self.segments.partition_point(|s| s.next_offset() <= offset);
        // A reader that has moved on from a sealed segment lets go of its pages (a reader still
        // in it only faults them in again from the page cache).
        if let Some(behind) = start.checked_sub(1).and_then(|i| self.segments.get(i)) {
            behind.release_pages();
        }
        let before = out.held();
        for segment in self.segments.range(start..) {
            segment.touch();
            let from = offset.max(segment.base_offset());
            match out.read(segment, (from, self.committed), budget) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(_) if out.held() > before => return Ok(()),
                Err(bad) => {
                    let file = self.dir().map_or_else(PathBuf::new, |dir| {
                        dir.join(disk::segment_file_name(segment.base_offset()))
                    });
                    tracing::error!(file = %file.display(), offset = bad, "a sealed segment is damaged");
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} is damaged: the record at offset {bad} fails its checksum or is \
                             cut short",
                            file.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Makes the messages appended since the last commit durable and readable: writes them to
    /// the topic's files and, when `sync`, flushes those to disk. The commit settles at once.
    ///
    /// # Errors
    /// A write or flush failed. The messages of this commit are then dropped again, from
    /// memory and from the files, so that nothing unacknowledged is ever served.
    pub fn commit(&mut self, sync: bool) -> io::Result<()> {
        self.prepare(sync)?;
        self.settle(0);
        Ok(())
    }

    /// The first half of [`Partition::commit`]: writes the messages appended since the last
    /// commit and, when `sync`, flushes them, so that [`Partition::settle`] with ticket 0 makes
    /// them readable, or [`Partition::fail`] drops them (another partition of the topic failed).
    ///
    /// # Errors
    /// As [`Partition::commit`]; the messages are then dropped.
    pub fn prepare(&mut self, sync: bool) -> io::Result<()> {
        self.write(0, false)?;
        if sync {
            if let Err(error) = self.storage.sync_all_written() {
                self.roll_back();
                return Err(error);
            }
        }
        Ok(())
    }

    /// Makes the messages appended since the last commit readable, written to the topic's files
    /// without any flush, nor any for the segments it seals: for a copy of a topic held
    /// elsewhere, which is flushed as a whole at a clean stop and read again from there after
    /// a crash.
    ///
    /// # Errors
    /// A write failed; the messages of this commit are dropped again.
    pub fn commit_unflushed(&mut self) -> io::Result<()> {
        self.write(0, true)?;
        self.storage.skip_flush();
        self.settle(0);
        Ok(())
    }

    /// Starts commit `ticket` of the messages appended since the last one: writes them to the
    /// topic's files (into the page cache; no flush). When `deferred`, a segment file written
    /// whole is left for the flush of [`Partition::take_flush`]; otherwise it is flushed here,
    /// before the next segment's file is started, so that a sealed segment's index never
    /// describes records that are not on disk. The messages become readable when
    /// [`Partition::settle`] is called with the ticket.
    ///
    /// # Errors
    /// A write failed. The messages of every commit not settled are then dropped, from memory
    /// and from the files: none of them may be acknowledged.
    pub fn write(&mut self, ticket: u64, deferred: bool) -> io::Result<()> {
        if let Err(error) = self.storage.write(&mut self.segments, deferred) {
            self.roll_back();
            return Err(error);
        }
        self.pending.push_back(Pending { ticket, end: self.end, added: self.uncommitted });
        self.staged = self.end;
        self.creation_staged = false;
        self.uncommitted = (0, 0);
        Ok(())
    }

    /// Pushes onto `job` what must be flushed for the commits written so far to be durable:
    /// the active segment's file, the files of segments written whole since, the directory if
    /// a file was created in it, and the directory itself until its first flush settled, if an
    /// append made it.
    pub fn take_flush(&mut self, job: &mut flush::Job) {
        self.storage.take_flush(job);
    }

    /// Settles commit `ticket`: its messages become readable, and every full segment they
    /// complete is sealed. Returns false when this topic holds no such commit (a failure
    /// dropped it, or the topic was made anew since): its appends must be refused.
    pub fn settle(&mut self, ticket: u64) -> bool {
        while self.pending.front().is_some_and(|p| p.ticket < ticket) {
            self.pending.pop_front();
        }
        let Some(done) = self.pending.front().copied().filter(|p| p.ticket == ticket) else {
            return false;
        };
        self.pending.pop_front();
        self.committed = done.end;
        self.messages += done.added.0;
        self.payload_bytes += done.added.1;
        self.storage.settled(&mut self.segments, self.committed);
        true
    }

    /// Drops every message not yet settled, in memory and on disk, after a failed write or
    /// flush: none of them was acknowledged.
    pub fn fail(&mut self) {
        self.roll_back();
    }

    /// Flushes what was written since the last flush (for a periodic flush policy).
    ///
    /// # Errors
    /// The flush failed.
    pub fn sync(&mut self) -> io::Result<()> {
        self.storage.sync()
    }

    /// Drops the messages from the committed end on, in memory and on disk.
    fn roll_back(&mut self) {
        let keep = self.committed;
        self.uncommitted = (0, 0);
        self.pending.clear();
        self.staged = keep;
        while self.segments.back().is_some_and(|s| s.base_offset() >= keep) {
            let Some(segment) = self.segments.pop_back() else { break };
            self.storage.remove_segment(segment.base_offset(), segment.len_bytes());
        }
        if let Some(segment) = self.segments.back_mut() {
            let before = segment.len_bytes();
            segment.truncate(keep);
            self.storage.truncate_segment(segment.base_offset(), before, segment.len_bytes());
        }
        self.end = keep;
    }

    /// Removes the oldest segment, unless it is the newest or holds messages not yet
    /// committed: for a copy of a stream that keeps only what its cache has room for (the
    /// stream still holds the messages). Returns the bytes of keys and values it held.
    pub fn drop_oldest(&mut self) -> Option<u64> {
        self.drop_oldest_before(u64::MAX)
    }

    /// [`Partition::drop_oldest`], only when the oldest segment ends at or before `offset`.
    pub fn drop_oldest_before(&mut self, offset: u64) -> Option<u64> {
        let oldest = self.segments.front()?;
        let end = oldest.next_offset();
        if self.segments.len() < 2 || end > self.committed || end > offset {
            return None;
        }
        let segment = self.segments.pop_front()?;
        self.messages -= segment.next_offset() - segment.base_offset();
        self.payload_bytes -= segment.payload_bytes();
        self.storage.remove_segment(segment.base_offset(), segment.len_bytes());
        Some(segment.payload_bytes())
    }

    /// Whether this topic sets a retention time of its own.
    pub fn retains_by_time(&self) -> bool {
        self.retention.ms.is_some()
    }

    /// Removes whole segments from the front while, without the oldest one, the topic still
    /// holds what `retention` (this topic's limits over `defaults`) asks to keep, or while the
    /// oldest is past its time. Never the newest segment. Returns how many messages went.
    pub fn trim(&mut self, defaults: &Retention, now_ms: u64) -> u64 {
        let limits = Retention {
            messages: self.retention.messages.or(defaults.messages),
            bytes: self.retention.bytes.or(defaults.bytes),
            ms: self.retention.ms.or(defaults.ms),
        };
        if limits == Retention::default() {
            return 0;
        }
        let mut removed = 0;
        // Only segments every message of which settled: the others may still be dropped.
        while self.segments.len() > 1 && self.segments[0].next_offset() <= self.committed {
            let oldest = &self.segments[0];
            let count = oldest.next_offset() - oldest.base_offset();
            let expendable = limits.messages.is_some_and(|n| self.messages - count >= n)
                || limits.bytes.is_some_and(|n| self.payload_bytes - oldest.payload_bytes() >= n)
                || limits.ms.is_some_and(|ms| oldest.last_timestamp().saturating_add(ms) < now_ms);
            if !expendable {
                break;
            }
            let Some(segment) = self.segments.pop_front() else { break };
            self.messages -= count;
            self.payload_bytes -= segment.payload_bytes();
            self.storage.remove_segment(segment.base_offset(), segment.len_bytes());
            removed += count;
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT_BYTES: usize = 4096;

    fn values(
        topic: &Partition,
        offset: u64,
        max_messages: usize,
        max_bytes: usize,
    ) -> Vec<String> {
        let mut out: Vec<protocol::Message> = Vec::new();
        topic.read(offset, &mut Budget::new(max_messages, max_bytes), &mut out).unwrap();
        out.iter().map(|m| format!("{}={}", m.offset, String::from_utf8_lossy(m.value))).collect()
    }

    fn append_committed(topic: &mut Partition, value: &[u8]) -> u64 {
        let offset = topic.append(0, None, value, SEGMENT_BYTES);
        topic.commit(false).unwrap();
        offset
    }

    #[test]
    fn offsets_count_up_from_zero() {
        let mut topic = Partition::in_memory(Retention::default());
        assert_eq!((topic.first_offset(), topic.next_offset()), (0, 0));
        for (i, value) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(append_committed(&mut topic, value.as_bytes()), i as u64);
        }
        assert_eq!(values(&topic, 0, 10, 1000), ["0=a", "1=b", "2=c"]);
        assert_eq!(values(&topic, 1, 1, 1000), ["1=b"]);
        assert_eq!(values(&topic, 3, 10, 1000), Vec::<String>::new());
        assert_eq!(topic.messages(), 3);
        assert_eq!(topic.payload_bytes(), 3);
    }

    #[test]
    fn appended_messages_are_invisible_until_committed() {
        let mut topic = Partition::in_memory(Retention::default());
        topic.append(0, None, b"a", SEGMENT_BYTES);
        assert!(topic.is_dirty());
        assert_eq!(topic.next_offset(), 0);
        assert!(values(&topic, 0, 10, 100).is_empty());
        topic.commit(true).unwrap();
        assert_eq!(values(&topic, 0, 10, 100), ["0=a"]);
    }

    #[test]
    fn max_bytes_limits_a_read_but_never_below_one_message() {
        let mut topic = Partition::in_memory(Retention::default());
        append_committed(&mut topic, &[b'x'; 10]);
        append_committed(&mut topic, &[b'y'; 10]);
        assert_eq!(values(&topic, 0, 10, 5).len(), 1);
        assert_eq!(values(&topic, 0, 10, 19).len(), 1);
        assert_eq!(values(&topic, 0, 10, 20).len(), 2);
    }

    #[test]
    fn reads_cross_segment_boundaries() {
        let mut topic = Partition::in_memory(Retention::default());
        let value = vec![b'v'; SEGMENT_BYTES / 3];
        for _ in 0..7 {
            append_committed(&mut topic, &value);
        }
        assert!(topic.segments.len() >= 3);
        let mut out: Vec<protocol::Message> = Vec::new();
        topic.read(1, &mut Budget::new(100, usize::MAX), &mut out).unwrap();
        assert_eq!(out.iter().map(|m| m.offset).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn retention_by_count_removes_whole_old_segments_and_keeps_offsets() {
        let mut topic =
            Partition::in_memory(Retention { messages: Some(2), ..Retention::default() });
        let value = vec![b'v'; SEGMENT_BYTES / 2];
        for _ in 0..6 {
            append_committed(&mut topic, &value);
        }
        assert_eq!(topic.trim(&Retention::default(), 0), 4);
        assert_eq!((topic.first_offset(), topic.next_offset(), topic.messages()), (4, 6, 2));
        assert_eq!(append_committed(&mut topic, b"x"), 6);
    }

    #[test]
    fn retention_by_time_and_bytes() {
        let mut topic = Partition::in_memory(Retention::default());
        let value = vec![b'v'; SEGMENT_BYTES / 2];
        for timestamp in [100, 200, 300] {
            topic.append(timestamp, None, &value, SEGMENT_BYTES);
            topic.commit(false).unwrap();
        }
        let by_time = Retention { ms: Some(50), ..Retention::default() };
        assert_eq!(topic.trim(&by_time, 260), 2);
        assert_eq!(topic.first_offset(), 2);
        for _ in 0..3 {
            append_committed(&mut topic, &value);
        }
        let by_bytes = Retention { bytes: Some(value.len() as u64), ..Retention::default() };
        assert_eq!(topic.trim(&by_bytes, 0), 3);
        assert_eq!(topic.messages(), 1);
    }
}
