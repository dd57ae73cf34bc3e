//! Where a topic's records are kept besides its segments in memory: nowhere ([`InMemory`]) or in
//! a directory of segment files ([`Files`]), behind the trait [`Storage`]; and where a whole
//! store keeps its topics ([`Medium`]: [`InMemory`], or a data directory, [`DataDir`]).
//!
//! This is what differs between the log in memory and the log in files, as nats-server keeps
//! `memstore.go` and `filestore.go` behind one `StreamStore`: a type chosen when the store is
//! opened, so that [`super::Topic`] and [`super::Topics`] hold the rules once and never ask
//! whether they have files.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocol::Retention;

use super::segment::Segment;
use super::{disk, flush, index};
use crate::files;

/// How one topic keeps its records beyond the segments in memory. Every method is called by
/// [`super::Topic`] at the moment its rules say; a storage only carries it out.
pub trait Storage: fmt::Debug + Send {
    /// Writes every segment's unwritten records. A segment written whole is flushed before the
    /// next is started, or, when `deferred`, kept for the next flush handed out.
    ///
    /// # Errors
    /// A write failed; the caller drops the records not settled.
    fn write(&mut self, segments: &mut VecDeque<Segment>, deferred: bool) -> io::Result<()>;

    /// Flushes what was written, and the directory if a file was created in it.
    ///
    /// # Errors
    /// A flush failed.
    fn sync_all_written(&mut self) -> io::Result<()>;

    /// Drops what is waiting to be flushed without flushing it: for a copy of a topic held
    /// elsewhere, flushed as a whole at a clean stop.
    fn skip_flush(&mut self);

    /// Pushes onto `job` what must be flushed for the commits written so far to be durable.
    fn take_flush(&mut self, job: &mut flush::Job);

    /// A commit settled: the records below `committed` are durable; seals the full segments
    /// they complete.
    fn settled(&mut self, segments: &mut VecDeque<Segment>, committed: u64);

    /// Flushes what was written since the last flush, if anything was.
    ///
    /// # Errors
    /// The flush failed.
    fn sync(&mut self) -> io::Result<()>;

    /// Removes the records of segment `base` (`len` bytes), gone to retention or a rollback.
    fn remove_segment(&mut self, base: u64, len: usize);

    /// Cuts the records of segment `base` from `before` bytes back to `len`, after a failed
    /// commit.
    fn truncate_segment(&mut self, base: u64, before: usize, len: usize);

    /// Bytes of its files; `None` for a topic with none.
    fn disk_bytes(&self) -> Option<u64>;

    /// Its directory; `None` for a topic with none.
    fn dir(&self) -> Option<&Path>;
}

/// A store, or a topic, kept in memory only: it has nothing to write, flush or remove.
#[derive(Debug, Clone, Copy, Default)]
pub struct InMemory;

impl Storage for InMemory {
    fn write(&mut self, _segments: &mut VecDeque<Segment>, _deferred: bool) -> io::Result<()> {
        Ok(())
    }
    fn sync_all_written(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn skip_flush(&mut self) {}
    fn take_flush(&mut self, _job: &mut flush::Job) {}
    fn settled(&mut self, _segments: &mut VecDeque<Segment>, _committed: u64) {}
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn remove_segment(&mut self, _base: u64, _len: usize) {}
    fn truncate_segment(&mut self, _base: u64, _before: usize, _len: usize) {}
    fn disk_bytes(&self) -> Option<u64> {
        None
    }
    fn dir(&self) -> Option<&Path> {
        None
    }
}

/// A storage chosen at run time: the copies of a JetStream store are in memory or in files,
/// and fall back to memory when their directory cannot be made.
impl<S: Storage + ?Sized> Storage for Box<S> {
    fn write(&mut self, segments: &mut VecDeque<Segment>, deferred: bool) -> io::Result<()> {
        (**self).write(segments, deferred)
    }
    fn sync_all_written(&mut self) -> io::Result<()> {
        (**self).sync_all_written()
    }
    fn skip_flush(&mut self) {
        (**self).skip_flush()
    }
    fn take_flush(&mut self, job: &mut flush::Job) {
        (**self).take_flush(job)
    }
    fn settled(&mut self, segments: &mut VecDeque<Segment>, committed: u64) {
        (**self).settled(segments, committed)
    }
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
    fn remove_segment(&mut self, base: u64, len: usize) {
        (**self).remove_segment(base, len)
    }
    fn truncate_segment(&mut self, base: u64, before: usize, len: usize) {
        (**self).truncate_segment(base, before, len)
    }
    fn disk_bytes(&self) -> Option<u64> {
        (**self).disk_bytes()
    }
    fn dir(&self) -> Option<&Path> {
        (**self).dir()
    }
}

/// Where a whole store keeps its topics: how a new topic's [`Storage`] is made and a deleted
/// one's removed.
pub trait Medium: fmt::Debug + Send {
    /// How each of its topics is kept.
    type Storage: Storage;

    /// Whether it is a disk: totals count the bytes of its files, and a periodic flush has
    /// work to do.
    const ON_DISK: bool;

    /// The storage of each partition of a new topic of `partitions` partitions, partition 0's
    /// first. When `published`, its place is durable at once; otherwise the flush of its
    /// partition 0's first commit makes it so (an append does not wait for the disk).
    ///
    /// # Errors
    /// Its place cannot be made; nothing of it is left.
    fn create(
        &self,
        topic: &str,
        retention: Retention,
        partitions: u32,
        published: bool,
    ) -> io::Result<Vec<Self::Storage>>;

    /// The storage of partitions `from..to` of a topic whose partition 0 is kept in `zero`,
    /// durably made before this returns, and the topic's count of partitions made `to`.
    ///
    /// # Errors
    /// They cannot be made; the topic is then as it was.
    fn grow(
        &self,
        topic: &str,
        retention: Retention,
        zero: &Self::Storage,
        from: u32,
        to: u32,
    ) -> io::Result<Vec<Self::Storage>>;

    /// Removes a deleted topic's records, every partition's, given its partition 0's storage.
    ///
    /// # Errors
    /// They cannot be removed.
    fn remove(&self, zero: &Self::Storage) -> io::Result<()>;
}

impl Medium for InMemory {
    type Storage = InMemory;
    const ON_DISK: bool = false;

    fn create(
        &self,
        _topic: &str,
        _retention: Retention,
        partitions: u32,
        _published: bool,
    ) -> io::Result<Vec<InMemory>> {
        Ok(vec![InMemory; partitions as usize])
    }

    fn grow(
        &self,
        _topic: &str,
        _retention: Retention,
        _zero: &InMemory,
        from: u32,
        to: u32,
    ) -> io::Result<Vec<InMemory>> {
        Ok(vec![InMemory; to.saturating_sub(from) as usize])
    }

    fn remove(&self, _zero: &InMemory) -> io::Result<()> {
        Ok(())
    }
}

/// A data directory: each topic a directory of segment files under `topics/` (see `disk`).
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl Medium for DataDir {
    type Storage = Files;
    const ON_DISK: bool = true;

    fn create(
        &self,
        topic: &str,
        retention: Retention,
        partitions: u32,
        published: bool,
    ) -> io::Result<Vec<Files>> {
        let meta = disk::Meta::new(topic, retention, partitions);
        let dir = if published {
            disk::create_topic_dir(&self.0, &meta)?
        } else {
            disk::create_topic_dir_unpublished(&self.0, &meta)?
        };
        let mut zero = Files::new(dir.clone());
        zero.unpublished = !published;
        let mut all = vec![zero];
        all.extend((1..partitions).map(|p| Files::new(disk::partition_dir(&dir, p))));
        Ok(all)
    }

    fn grow(
        &self,
        topic: &str,
        retention: Retention,
        zero: &Files,
        from: u32,
        to: u32,
    ) -> io::Result<Vec<Files>> {
        let meta = disk::Meta::new(topic, retention, to);
        disk::grow_topic_dir(&zero.dir, &meta, from, zero.unpublished)?;
        Ok((from..to).map(|p| Files::new(disk::partition_dir(&zero.dir, p))).collect())
    }

    fn remove(&self, zero: &Files) -> io::Result<()> {
        disk::remove_topic_dir(&self.0, &zero.dir)
    }
}

/// A topic's directory and the segment file being appended to.
#[derive(Debug)]
pub struct Files {
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

impl Files {
    /// The files of a topic in `dir`, with no segment file yet.
    pub fn new(dir: PathBuf) -> Files {
        Files::recovered(dir, 0)
    }

    /// The files of a topic in `dir` whose segment files hold `bytes`, as opening found them.
    pub fn recovered(dir: PathBuf, bytes: u64) -> Files {
        Files {
            dir,
            active: None,
            retired: Vec::new(),
            new_file: false,
            deferred: false,
            bytes,
            unsynced: false,
            unpublished: false,
        }
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

    /// Flushes the active segment's file.
    fn sync_active(&mut self) -> io::Result<()> {
        if let Some((_, file)) = &self.active {
            file.sync_data()?;
        }
        self.unsynced = false;
        Ok(())
    }
}

impl Storage for Files {
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

    fn sync_all_written(&mut self) -> io::Result<()> {
        for file in std::mem::take(&mut self.retired) {
            file.sync_data()?;
        }
        if self.unsynced {
            self.sync_active()?;
        }
        if std::mem::take(&mut self.new_file) {
            files::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn skip_flush(&mut self) {
        self.retired.clear();
        self.new_file = false;
        self.unsynced = false;
    }

    /// The active segment's file, the files of segments written whole since, the directory if
    /// a file was created in it, and the directory itself until its first flush settled, if
    /// an append made it.
    fn take_flush(&mut self, job: &mut flush::Job) {
        if self.unpublished {
            job.creations.push(self.dir.clone());
        }
        job.files.append(&mut self.retired);
        if let Some((_, file)) = &self.active {
            job.files.push(Arc::clone(file));
        }
        if std::mem::take(&mut self.new_file) {
            job.dirs.push(self.dir.clone());
        }
        self.unsynced = false;
    }

    fn settled(&mut self, segments: &mut VecDeque<Segment>, committed: u64) {
        // A flush covering the topic settled: its directory and topic.meta are durable.
        self.unpublished = false;
        self.seal(segments, committed);
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.sync_active()
        } else {
            Ok(())
        }
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

    fn disk_bytes(&self) -> Option<u64> {
        Some(self.bytes)
    }

    fn dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}
