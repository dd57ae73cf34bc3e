//! A topic: its segments, oldest first, the offsets they span, its retention, and, for a store
//! on disk, its files.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocol::{Message, Retention};

use super::segment::Segment;
use super::{disk, index};
use super::{flush, Budget};
use crate::files;

/// One topic's log.
#[derive(Debug)]
pub struct Topic {
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
    /// Committed messages held.
    messages: u64,
    /// Bytes of keys and values of the committed messages held.
    payload_bytes: u64,
    /// Messages, and their bytes of keys and values, appended since the last commit.
    uncommitted: (u64, u64),
    /// Limits set for this topic, over the store's defaults.
    retention: Retention,
    /// The topic's files, for a store on disk.
    files: Option<Files>,
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

/// A topic's directory and the segment file being appended to.
#[derive(Debug)]
struct Files {
    /// The topic's directory.
    dir: PathBuf,
    /// The newest segment's base offset and its file, open to append. Shared with the flush
    /// thread while a flush of it runs.
    active: Option<(u64, Arc<File>)>,
    /// Files of segments written whole since the last flush was handed out, to flush with it.
    retired: Vec<Arc<File>>,
    /// Whether a file was created in the directory since the last flush was handed out.
    new_file: bool,
    /// Whether flushes are made by the store's flush thread (the last write said so): then an
    /// index is written without a flush of its own (see [`Files::seal`]).
    deferred: bool,
    /// Bytes in the topic's segment files.
    bytes: u64,
    /// Whether something was written since the last sync.
    unsynced: bool,
    /// Whether the directory was made by an append without waiting for the disk, its
    /// `topic.meta` still `topic.meta.new`: the flush of its first commit publishes it
    /// (`disk::publish_meta`).
    unpublished: bool,
}

impl Topic {
    /// An empty topic kept in memory.
    pub fn in_memory(retention: Retention) -> Topic {
        Topic {
            segments: VecDeque::new(),
            end: 0,
            committed: 0,
            staged: 0,
            pending: VecDeque::new(),
            messages: 0,
            payload_bytes: 0,
            uncommitted: (0, 0),
            retention,
            files: None,
        }
    }

    /// An empty topic kept in memory whose next message gets offset `next`: the copy of a
    /// topic held elsewhere, whose oldest messages are gone.
    pub fn in_memory_from(next: u64, retention: Retention) -> Topic {
        Topic { end: next, committed: next, staged: next, ..Topic::in_memory(retention) }
    }

    /// An empty topic whose files go in `dir`.
    pub fn on_disk(dir: PathBuf, retention: Retention) -> Topic {
        let files = Files {
            dir,
            active: None,
            retired: Vec::new(),
            new_file: false,
            deferred: false,
            bytes: 0,
            unsynced: false,
            unpublished: false,
        };
        Topic { files: Some(files), ..Topic::in_memory(retention) }
    }

    /// An empty topic whose directory `dir` an append made without waiting for the disk
    /// (`disk::create_topic_dir_unpublished`): the flush of its first commit publishes its
    /// `topic.meta`.
    pub fn on_disk_unpublished(dir: PathBuf, retention: Retention) -> Topic {
        let mut topic = Topic::on_disk(dir, retention);
        if let Some(files) = &mut topic.files {
            files.unpublished = true;
        }
        topic
    }

    /// An empty topic whose files go in `dir` and whose next message gets offset `next`: the
    /// copy of a topic held elsewhere, kept on disk.
    pub fn on_disk_from(dir: PathBuf, next: u64, retention: Retention) -> Topic {
        Topic { end: next, committed: next, staged: next, ..Topic::on_disk(dir, retention) }
    }

    /// A topic on disk in `dir` rebuilt from its recovered segments, oldest first, whose
    /// offsets follow on from one another (as `recovery` checks).
    pub fn from_segments(dir: PathBuf, retention: Retention, segments: Vec<Segment>) -> Topic {
        let mut topic = Topic::on_disk(dir, retention);
        for segment in segments {
            topic.end = segment.next_offset();
            topic.messages += segment.next_offset() - segment.base_offset();
            topic.payload_bytes += segment.payload_bytes();
            if let Some(files) = &mut topic.files {
                files.bytes += segment.len_bytes() as u64;
            }
            topic.segments.push_back(segment);
        }
        topic.committed = topic.end;
        topic.staged = topic.end;
        topic
    }

    /// Appends one message stamped `timestamp` and returns its offset. It becomes readable when
    /// the store commits.
    pub fn append(
        &mut self,
        timestamp: u64,
        key: Option<&[u8]>,
        value: &[u8],
        segment_bytes: usize,
    ) -> u64 {
        let len = Segment::record_len(key, value);
        let segment = match self.segments.back_mut() {
            Some(segment) if segment.fits(len) => segment,
            _ => {
                self.segments.push_back(Segment::new(self.end, segment_bytes.max(len)));
                self.segments.back_mut().expect("a segment was just added")
            }
        };
        let offset = segment.push(timestamp, key, value);
        self.end = offset + 1;
        self.uncommitted.0 += 1;
        self.uncommitted.1 += (key.map_or(0, <[u8]>::len) + value.len()) as u64;
        offset
    }

    /// Limits set for this topic, over the store's defaults.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Whether messages were appended since the last commit started.
    pub fn is_dirty(&self) -> bool {
        self.staged != self.end
    }

    /// The oldest offset still held (equal to [`Topic::next_offset`] when empty).
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
        self.files.as_ref().map(|f| f.bytes)
    }

    /// The topic's directory, for a topic on disk.
    pub fn dir(&self) -> Option<&Path> {
        self.files.as_ref().map(|f| f.dir.as_path())
    }

    /// Pushes onto `out` the readable messages from `offset` on, as many as `budget` takes (always
    /// the first one if there is one). `offset` must lie in `first_offset()..=next_offset()`.
    ///
    /// # Errors
    /// The first message to read is in a sealed segment file damaged since it was sealed: the
    /// error names the file and the offset. Damage after the first message ends the read
    /// before it instead, so that the next read reports it.
    pub fn read<'a>(
        &'a self,
        offset: u64,
        budget: &mut Budget,
        out: &mut Vec<Message<'a>>,
    ) -> io::Result<()> {
        // Segments are sorted by base offset: find the one holding `offset`.
        let start = self.segments.partition_point(|s| s.next_offset() <= offset);
        // A reader that has moved on from a sealed segment lets go of its pages (a reader still
        // in it only faults them in again from the page cache).
        if let Some(behind) = start.checked_sub(1).and_then(|i| self.segments.get(i)) {
            behind.release_pages();
        }
        let before = out.len();
        for segment in self.segments.range(start..) {
            segment.touch();
            let from = offset.max(segment.base_offset());
            match segment.read(from, self.committed, out, |message| budget.take(message)) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(_) if out.len() > before => return Ok(()),
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
        self.write(0, false)?;
        if let Some(files) = self.files.as_mut().filter(|_| sync) {
            if let Err(error) = files.sync_all_written() {
                self.roll_back();
                return Err(error);
            }
        }
        self.settle(0);
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
        if let Some(files) = &mut self.files {
            files.retired.clear();
            files.new_file = false;
            files.unsynced = false;
        }
        self.settle(0);
        Ok(())
    }

    /// Starts commit `ticket` of the messages appended since the last one: writes them to the
    /// topic's files (into the page cache; no flush). When `deferred`, a segment file written
    /// whole is left for the flush of [`Topic::take_flush`]; otherwise it is flushed here,
    /// before the next segment's file is started, so that a sealed segment's index never
    /// describes records that are not on disk. The messages become readable when
    /// [`Topic::settle`] is called with the ticket.
    ///
    /// # Errors
    /// A write failed. The messages of every commit not settled are then dropped, from memory
    /// and from the files: none of them may be acknowledged.
    pub fn write(&mut self, ticket: u64, deferred: bool) -> io::Result<()> {
        if let Some(files) = &mut self.files {
            if let Err(error) = files.write(&mut self.segments, deferred) {
                self.roll_back();
                return Err(error);
            }
        }
        self.pending.push_back(Pending { ticket, end: self.end, added: self.uncommitted });
        self.staged = self.end;
        self.uncommitted = (0, 0);
        Ok(())
    }

    /// Pushes onto `job` what must be flushed for the commits written so far to be durable:
    /// the active segment's file, the files of segments written whole since, the directory if
    /// a file was created in it, and the directory itself until its first flush settled, if an
    /// append made it.
    pub fn take_flush(&mut self, job: &mut flush::Job) {
        let Some(topic_files) = &mut self.files else { return };
        let (files, dirs) = (&mut job.files, &mut job.dirs);
        if topic_files.unpublished {
            job.creations.push(topic_files.dir.clone());
        }
        files.append(&mut topic_files.retired);
        if let Some((_, file)) = &topic_files.active {
            files.push(Arc::clone(file));
        }
        if std::mem::take(&mut topic_files.new_file) {
            dirs.push(topic_files.dir.clone());
        }
        topic_files.unsynced = false;
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
        if let Some(files) = &mut self.files {
            // A flush covering the topic settled: its directory and topic.meta are durable.
            files.unpublished = false;
            files.seal(&mut self.segments, self.committed);
        }
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
        match &mut self.files {
            Some(files) if files.unsynced => files.sync(),
            _ => Ok(()),
        }
    }

    /// Drops the messages from the committed end on, in memory and on disk.
    fn roll_back(&mut self) {
        let keep = self.committed;
        self.uncommitted = (0, 0);
        self.pending.clear();
        self.staged = keep;
        while self.segments.back().is_some_and(|s| s.base_offset() >= keep) {
            let Some(segment) = self.segments.pop_back() else { break };
            if let Some(files) = &mut self.files {
                files.remove_segment(segment.base_offset(), segment.len_bytes());
            }
        }
        if let Some(segment) = self.segments.back_mut() {
            let before = segment.len_bytes();
            segment.truncate(keep);
            if let Some(files) = &mut self.files {
                files.truncate_segment(segment.base_offset(), before, segment.len_bytes());
            }
        }
        self.end = keep;
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
            if let Some(files) = &mut self.files {
                files.remove_segment(segment.base_offset(), segment.len_bytes());
            }
            removed += count;
        }
        removed
    }
}

impl Files {
    /// Writes every segment's unwritten records to its file. A file written whole is flushed
    /// before the next is started, or, when `deferred`, kept for the next flush handed out.
    fn write(&mut self, segments: &mut VecDeque<Segment>, deferred: bool) -> io::Result<()> {
        self.deferred = deferred;
        for segment in segments.iter_mut().filter(|s| !s.unpersisted().is_empty()) {
            let mut file = &**self.file_for(segment.base_offset(), deferred)?;
            file.write_all(segment.unpersisted())?;
            self.bytes += segment.unpersisted().len() as u64;
            self.unsynced = true;
            segment.mark_persisted();
        }
        Ok(())
    }

    /// Flushes what was written, and the directory if a file was created in it.
    fn sync_all_written(&mut self) -> io::Result<()> {
        for file in std::mem::take(&mut self.retired) {
            file.sync_data()?;
        }
        if self.unsynced {
            self.sync()?;
        }
        if std::mem::take(&mut self.new_file) {
            files::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Seals every full segment whose messages all settled (below `committed`; never the
    /// newest): its records are read from its file from now on. A segment that cannot be
    /// sealed stays in memory, which costs memory but loses nothing.
    fn seal(&mut self, segments: &mut VecDeque<Segment>, committed: u64) {
        let Some(newest) = segments.len().checked_sub(1) else { return };
        let full = segments.range(..newest).take_while(|s| s.next_offset() <= committed).count();
        for segment in segments.range_mut(..full).rev() {
            if segment.is_sealed() {
                break;
            }
            let base = segment.base_offset();
            let path = self.dir.join(disk::segment_file_name(base));
            if let Err(error) = segment.seal(&path) {
                tracing::warn!(%error, file = %path.display(), "cannot seal a segment; kept in memory");
                continue;
            }
            // The segment's records were flushed when the next segment was started, or by the
            // flush that settled them, so the index never describes records not on disk.
            let bytes = segment.index().encode();
            let (name, writing) = (index::file_name(base), index::writing_name(base));
            let written = if self.deferred {
                // The serving thread does not wait for the disk: the index goes to the page
                // cache, and the directory's entry to the topic's next flush. A power cut
                // before then leaves no index, or one that does not check out, and start-up
                // checks the segment and writes it again: an index is never trusted unchecked.
                self.new_file = true;
                files::replace(&self.dir, &name, &writing, &bytes, false)
            } else {
                files::replace(&self.dir, &name, &writing, &bytes, true)
                    .and_then(|()| files::sync_dir(&self.dir))
            };
            if let Err(error) = written {
                tracing::warn!(
                    %error,
                    file = %path.display(),
                    "cannot write a sealed segment's index; start-up will check the segment"
                );
            }
        }
    }

    /// The open file of segment `base`, opening it if it is not the active one. The one before
    /// is complete: it is flushed now, or kept for the next flush when `deferred`.
    fn file_for(&mut self, base: u64, deferred: bool) -> io::Result<&Arc<File>> {
        if self.active.as_ref().is_none_or(|(active, _)| *active != base) {
            if let Some((_, previous)) = self.active.take() {
                if deferred {
                    self.retired.push(previous);
                } else {
                    previous.sync_data()?;
                }
            }
            self.new_file |= !self.dir.join(disk::segment_file_name(base)).exists();
            self.active = Some((base, Arc::new(disk::open_segment(&self.dir, base)?)));
        }
        Ok(&self.active.as_ref().expect("the active file was just set").1)
    }

    fn sync(&mut self) -> io::Result<()> {
        if let Some((_, file)) = &self.active {
            file.sync_data()?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Deletes a segment's file and its index.
    fn remove_segment(&mut self, base: u64, len: usize) {
        if self.active.as_ref().is_some_and(|(active, _)| *active == base) {
            self.active = None;
        }
        let index = self.dir.join(index::file_name(base));
        match fs::remove_file(&index) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(%error, file = %index.display(), "cannot remove an index"),
        }
        let path = self.dir.join(disk::segment_file_name(base));
        match fs::remove_file(&path) {
            Ok(()) => self.bytes = self.bytes.saturating_sub(len as u64),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(%error, file = %path.display(), "cannot remove segment"),
        }
    }

    /// Cuts a segment's file back to `len` bytes after a failed commit.
    fn truncate_segment(&mut self, base: u64, before: usize, len: usize) {
        self.active = None;
        let path = self.dir.join(disk::segment_file_name(base));
        let cut = File::options().write(true).open(&path).and_then(|f| f.set_len(len as u64));
        match cut {
            Ok(()) => self.bytes = self.bytes.saturating_sub((before - len) as u64),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => tracing::error!(
                %error,
                file = %path.display(),
                "cannot cut back a segment after a failed write; start-up will check it"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT_BYTES: usize = 4096;

    fn values(topic: &Topic, offset: u64, max_messages: usize, max_bytes: usize) -> Vec<String> {
        let mut out = Vec::new();
        topic.read(offset, &mut Budget::new(max_messages, max_bytes), &mut out).unwrap();
        out.iter().map(|m| format!("{}={}", m.offset, String::from_utf8_lossy(m.value))).collect()
    }

    fn append_committed(topic: &mut Topic, value: &[u8]) -> u64 {
        let offset = topic.append(0, None, value, SEGMENT_BYTES);
        topic.commit(false).unwrap();
        offset
    }

    #[test]
    fn offsets_count_up_from_zero() {
        let mut topic = Topic::in_memory(Retention::default());
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
        let mut topic = Topic::in_memory(Retention::default());
        topic.append(0, None, b"a", SEGMENT_BYTES);
        assert!(topic.is_dirty());
        assert_eq!(topic.next_offset(), 0);
        assert!(values(&topic, 0, 10, 100).is_empty());
        topic.commit(true).unwrap();
        assert_eq!(values(&topic, 0, 10, 100), ["0=a"]);
    }

    #[test]
    fn max_bytes_limits_a_read_but_never_below_one_message() {
        let mut topic = Topic::in_memory(Retention::default());
        append_committed(&mut topic, &[b'x'; 10]);
        append_committed(&mut topic, &[b'y'; 10]);
        assert_eq!(values(&topic, 0, 10, 5).len(), 1);
        assert_eq!(values(&topic, 0, 10, 19).len(), 1);
        assert_eq!(values(&topic, 0, 10, 20).len(), 2);
    }

    #[test]
    fn reads_cross_segment_boundaries() {
        let mut topic = Topic::in_memory(Retention::default());
        let value = vec![b'v'; SEGMENT_BYTES / 3];
        for _ in 0..7 {
            append_committed(&mut topic, &value);
        }
        assert!(topic.segments.len() >= 3);
        let mut out = Vec::new();
        topic.read(1, &mut Budget::new(100, usize::MAX), &mut out).unwrap();
        assert_eq!(out.iter().map(|m| m.offset).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn retention_by_count_removes_whole_old_segments_and_keeps_offsets() {
        let mut topic = Topic::in_memory(Retention { messages: Some(2), ..Retention::default() });
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
        let mut topic = Topic::in_memory(Retention::default());
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
