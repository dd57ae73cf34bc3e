//! Where a store on disk keeps its files, and the file operations it needs.
//!
//! ```text
//! DATA_DIR/topics/<dir>/topic.meta                    the topic's name, partitions, retention
//! DATA_DIR/topics/<dir>/<base offset, 20 digits>.log  a segment of partition 0 (`segment`)
//! DATA_DIR/topics/<dir>/<base offset, 20 digits>.idx  a sealed segment's index (`index`)
//! DATA_DIR/topics/<dir>/<p>/<base offset>.log|.idx    partition p >= 1's segments and indexes
//! DATA_DIR/deleting/<dir>/                            a topic being deleted; cleared at start-up
//! DATA_DIR/damaged/<n>/...                            what `--repair` set aside (see `damaged`)
//! ```
//!
//! Partition 0 keeps its segments in the topic's directory itself, so that a directory written
//! before topics had partitions (a `topic.meta` of format 1 or 0, read as one partition) is a
//! valid topic of one partition with no file moved. Partition `p` >= 1 keeps them in the
//! directory `<p>` (decimal, no leading zero) inside it. Growing a topic makes the new
//! partitions' directories first, then replaces `topic.meta` with the new count: a crash in
//! between leaves empty partition directories past the count, which start-up removes.
//!
//! Everything under `topics/` is a topic: the broker's own bookkeeping (deletions in progress,
//! files set aside) lives in folders beside it, so no topic name, whatever it looks like, can be
//! taken for it.
//!
//! `<dir>` is made from the topic name so that any valid name maps to a safe directory name:
//! the name's ASCII letters, digits, `-`, `_` and `.` in lower case (others become `_`), at most
//! 48 of them, then `-` and a 64-bit FNV-1a hash of the exact name in hex. So no name can reach
//! outside `topics/`, and names differing only in case or in characters a file system rejects
//! still get directories of their own. The real name is read back from `topic.meta`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use protocol::Retention;
use serde::{Deserialize, Serialize};

use super::format::{self, Header, META};
use crate::files::{self, sync_dir};

/// The file in each topic directory that names the topic.
pub const META_FILE: &str = "topic.meta";
/// The file a topic's meta is written to before it is renamed to [`META_FILE`].
pub const META_WRITING_FILE: &str = "topic.meta.new";

/// The grown meta of a topic whose `topic.meta.new` is not published yet, while it is
/// written: see [`grow_topic_dir`].
pub const META_GROWING_FILE: &str = "topic.meta.grow";
/// The extension of segment files.
const SEGMENT_EXTENSION: &str = "log";
/// The prefix an older broker gave a topic directory it was deleting, in `topics/` itself.
/// Such leftovers are told from topics by their `topic.meta` (see `recovery`).
pub const OLD_DELETING_PREFIX: &str = ".deleting-";

/// The directory holding every topic's directory.
pub fn topics_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("topics")
}

/// The directory holding the directories of topics being deleted.
pub fn deleting_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("deleting")
}

/// The directory name of topic `name`.
pub fn topic_dir_name(name: &str) -> String {
    format!("{}-{:016x}", files::readable(name, &['.'], 48), files::fnv1a(name.as_bytes()))
}

/// A segment file's name: its base offset, zero-padded so that names sort as offsets do.
pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.{SEGMENT_EXTENSION}")
}

/// What `topic.meta` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The topic's name.
    pub name: String,
    /// How many partitions it has (format 2; 1 when the file, of format 1 or 0, has none).
    #[serde(default = "one_partition")]
    pub partitions: u32,
    /// Retention overrides, as given to `create_topic`.
    pub retention_messages: Option<u64>,
    /// As above.
    pub retention_bytes: Option<u64>,
    /// As above.
    pub retention_ms: Option<u64>,
}

impl Meta {
    /// The meta of topic `name` of `partitions` partitions with these overrides.
    pub fn new(name: &str, retention: Retention, partitions: u32) -> Meta {
        Meta {
            name: name.to_owned(),
            partitions,
            retention_messages: retention.messages,
            retention_bytes: retention.bytes,
            retention_ms: retention.ms,
        }
    }

    /// The overrides.
    pub fn retention(&self) -> Retention {
        Retention {
            messages: self.retention_messages,
            bytes: self.retention_bytes,
            ms: self.retention_ms,
        }
    }
}

/// A topic of a `topic.meta` that names no count of partitions has one.
fn one_partition() -> u32 {
    1
}

/// The directory of partition `partition` of the topic in `dir`: `dir` itself for partition 0.
pub fn partition_dir(dir: &Path, partition: u32) -> PathBuf {
    match partition {
        0 => dir.to_path_buf(),
        p => dir.join(p.to_string()),
    }
}

/// The partition a directory inside a topic's directory holds, by its name: `<p>`, decimal
/// with no leading zero, from 1.
pub fn partition_of(name: &str) -> Option<u32> {
    let p: u32 = name.parse().ok()?;
    (p >= 1 && p.to_string() == name).then_some(p)
}

/// Makes the directories of partitions `from..meta.partitions` in topic directory `dir` (the
/// ones past partition 0, which is `dir` itself).
fn make_partition_dirs(dir: &Path, from: u32, to: u32) -> io::Result<()> {
    for p in from.max(1)..to {
        fs::create_dir(partition_dir(dir, p))?;
    }
    Ok(())
}

/// Creates the directory of a new topic with its partitions' directories and its meta file,
/// durably: once this returns, the topic exists after a crash.
///
/// # Errors
/// Any failed file operation; the directory is then removed again if it was made.
pub fn create_topic_dir(data_dir: &Path, meta: &Meta) -> io::Result<PathBuf> {
    let topics = topics_dir(data_dir);
    let dir = topics.join(topic_dir_name(&meta.name));
    fs::create_dir(&dir)?;
    let written = make_partition_dirs(&dir, 1, meta.partitions)
        .and_then(|()| meta_bytes(meta))
        .and_then(|bytes| files::replace(&dir, META_FILE, META_WRITING_FILE, &bytes, true))
        .and_then(|()| sync_dir(&dir))
        .and_then(|()| sync_dir(&topics));
    if let Err(error) = written {
        let _ = fs::remove_dir_all(&dir);
        return Err(error);
    }
    Ok(dir)
}

/// Creates the directory of a new topic with its meta file written as `topic.meta.new`,
/// without waiting for the disk: [`publish_meta`] makes it the topic's `topic.meta`, durably.
/// Until then a crash leaves a directory without `topic.meta`, which start-up removes.
///
/// # Errors
/// Any failed file operation; the directory is then removed again if it was made.
pub fn create_topic_dir_unpublished(data_dir: &Path, meta: &Meta) -> io::Result<PathBuf> {
    let dir = topics_dir(data_dir).join(topic_dir_name(&meta.name));
    fs::create_dir(&dir)?;
    let written = make_partition_dirs(&dir, 1, meta.partitions)
        .and_then(|()| meta_bytes(meta))
        .and_then(|bytes| fs::write(dir.join(META_WRITING_FILE), bytes));
    if let Err(error) = written {
        let _ = fs::remove_dir_all(&dir);
        return Err(error);
    }
    Ok(dir)
}

/// Grows the topic in directory `dir` from `from` partitions to `meta.partitions`: makes the
/// new partitions' directories, durably, then replaces its meta file with `meta`, durably
/// (unless `unpublished`: the topic's first flush has not published it yet, and will publish
/// this one). A crash in between leaves empty partition directories past the count in
/// `topic.meta`, which start-up removes.
///
/// # Errors
/// Any failed file operation; the directories made are then removed again.
pub fn grow_topic_dir(dir: &Path, meta: &Meta, from: u32, unpublished: bool) -> io::Result<()> {
    // The new directories are empty: flushing the topic's directory, which holds their
    // entries, makes them durable, with one flush however many there are.
    let written = make_partition_dirs(dir, from, meta.partitions)
        .and_then(|()| sync_dir(dir))
        .and_then(|()| meta_bytes(meta))
        .and_then(|bytes| match unpublished {
            true => replace_unpublished(dir, &bytes),
            false => files::replace(dir, META_FILE, META_WRITING_FILE, &bytes, true)
                .and_then(|()| sync_dir(dir)),
        });
    if let Err(error) = written {
        for p in from.max(1)..meta.partitions {
            let _ = fs::remove_dir_all(partition_dir(dir, p));
        }
        return Err(error);
    }
    Ok(())
}

/// Makes `bytes` the `topic.meta.new` of topic directory `dir`, durably, while the flush of
/// the topic's first commit may be publishing the one there ([`publish_meta`]) at the same
/// moment. The new file takes the old one's name by a rename, so whichever the flush renames
/// is whole; and when the flush published the old one first, the new one is published here.
fn replace_unpublished(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    files::replace(dir, META_WRITING_FILE, META_GROWING_FILE, bytes, true)?;
    if !dir.join(META_FILE).exists() {
        return Ok(());
    }
    match fs::rename(dir.join(META_WRITING_FILE), dir.join(META_FILE)) {
        // The flush published the new one meanwhile.
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        renamed => renamed?,
    }
    sync_dir(dir)
}

/// Makes the `topic.meta.new` of topic directory `dir`, which [`create_topic_dir_unpublished`]
/// wrote, durable (unless `flushed`: the caller flushed it already) and then its `topic.meta`;
/// the directory entries are left to the caller's next flush of `dir` and its parent. Does
/// nothing when it was published already, or when the directory is gone (the topic was
/// deleted since).
///
/// # Errors
/// Any failed file operation.
pub fn publish_meta(dir: &Path, flushed: bool) -> io::Result<()> {
    let writing = dir.join(META_WRITING_FILE);
    match File::open(&writing) {
        Ok(file) if !flushed => file.sync_data()?,
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    }
    match fs::rename(writing, dir.join(META_FILE)) {
        // A growth of the topic published it meanwhile (see [`replace_unpublished`]).
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        renamed => renamed,
    }
}

fn meta_bytes(meta: &Meta) -> io::Result<Vec<u8>> {
    let mut bytes = format::header(META).to_vec();
    rmp_serde::encode::write_named(&mut bytes, meta).map_err(io::Error::other)?;
    Ok(bytes)
}

/// Why a topic directory's meta file cannot be used.
#[derive(Debug)]
pub enum MetaError {
    /// There is no meta file.
    Missing,
    /// It cannot be read.
    Unreadable(io::Error),
    /// It holds no valid meta; what is wrong, for people.
    Invalid(String),
}

/// Reads a topic directory's meta file and checks it: it must name a valid topic. Also says
/// whether the file is of format 0 (the MessagePack map alone, as brokers before headers wrote
/// it), which is read as well.
///
/// # Errors
/// A missing, unreadable or invalid file, or one of a format version this broker does not know.
pub fn read_meta(dir: &Path) -> Result<(Meta, bool), MetaError> {
    let bytes = match fs::read(dir.join(META_FILE)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(MetaError::Missing),
        Err(error) => return Err(MetaError::Unreadable(error)),
    };
    let (body, old) = match format::read_header(&bytes, META) {
        Header::Known(_) => (&bytes[format::HEADER_LEN..], false),
        Header::None | Header::Torn => (&bytes[..], true),
        Header::Unknown(version) => {
            return Err(MetaError::Invalid(format!(
                "is of format version {version}, which this broker does not read"
            )))
        }
    };
    let meta: Meta = rmp_serde::from_slice(body).map_err(|e| {
        MetaError::Invalid(format!("does not hold a topic's name and retention ({e})"))
    })?;
    if meta.partitions == 0 || meta.partitions > protocol::MAX_PARTITIONS {
        return Err(MetaError::Invalid(format!(
            "gives the topic {} partitions, where a topic has from 1 to {}",
            meta.partitions,
            protocol::MAX_PARTITIONS
        )));
    }
    protocol::validate_topic_name(&meta.name).map_err(|e| {
        MetaError::Invalid(format!("names {:?}, which is not a valid topic name: {e}", meta.name))
    })?;
    Ok((meta, old))
}

/// Removes a topic's directory. It is first moved, in one step, out of `topics/` into
/// `deleting/`, so that a crash part-way through leaves no half-deleted topic behind, only a
/// directory that start-up clears away.
///
/// # Errors
/// The move failed; the topic is then untouched.
pub fn remove_topic_dir(data_dir: &Path, dir: &Path) -> io::Result<()> {
    let deleting = deleting_dir(data_dir);
    if !deleting.is_dir() {
        fs::create_dir(&deleting)?;
        // So that the files moved into it cannot be left nowhere by a crash, using room unseen.
        sync_dir(data_dir)?;
    }
    let doomed = deleting.join(dir.file_name().unwrap_or_default());
    if doomed.exists() {
        // An earlier deletion of a topic of the same name whose files could not all go.
        fs::remove_dir_all(&doomed)?;
    }
    fs::rename(dir, &doomed)?;
    sync_dir(&topics_dir(data_dir))?;
    if let Err(error) = fs::remove_dir_all(&doomed) {
        tracing::warn!(%error, dir = %doomed.display(), "could not remove a deleted topic's files");
    }
    Ok(())
}

/// What a file in a topic directory is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicFile {
    /// `topic.meta`.
    Meta,
    /// `topic.meta.new`: a meta file whose writing was interrupted.
    MetaWriting,
    /// A segment, with its base offset.
    Segment(u64),
    /// A sealed segment's index, with the segment's base offset.
    Index(u64),
    /// An index whose writing was interrupted, with the segment's base offset.
    IndexWriting(u64),
    /// Nothing the broker writes.
    Unknown,
}

/// What the file named `name` in a topic directory is.
pub fn topic_file(name: &str) -> TopicFile {
    if name == META_FILE {
        return TopicFile::Meta;
    }
    if name == META_WRITING_FILE || name == META_GROWING_FILE {
        return TopicFile::MetaWriting;
    }
    // Exactly as `segment_file_name` and `index::file_name` write them: 20 digits, then
    // `.log`, `.idx` or `.idx.new`.
    let base = |digits: &str| {
        (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten()
    };
    type Kind = fn(u64) -> TopicFile;
    let kinds: [(&str, Kind); 3] = [
        (".log", TopicFile::Segment),
        (".idx", TopicFile::Index),
        (".idx.new", TopicFile::IndexWriting),
    ];
    for (suffix, kind) in kinds {
        if let Some(base) = name.strip_suffix(suffix).and_then(base) {
            return kind(base);
        }
    }
    TopicFile::Unknown
}

/// Opens (creating if needed) segment file `base_offset` of topic directory `dir` to append.
///
/// # Errors
/// The file cannot be opened.
pub fn open_segment(dir: &Path, base_offset: u64) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(dir.join(segment_file_name(base_offset)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_are_safe_and_distinct() {
        let names = ["orders", "Orders", "../etc", "a/b", "a\\b", ".", "..", "Hola mundo", "ñandú"];
        let dirs: Vec<String> = names.iter().map(|n| topic_dir_name(n)).collect();
        for dir in &dirs {
            assert!(!dir.contains('/') && !dir.contains('\\'), "{dir}");
            assert!(dir != "." && dir != "..");
            assert!(dir.len() <= 48 + 17);
            assert_eq!(dir, &dir.to_lowercase());
        }
        let unique: std::collections::HashSet<_> = dirs.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert!(topic_dir_name("Hola mundo").starts_with("hola_mundo-"));
        assert_eq!(topic_dir_name(&"x".repeat(249)).len(), 48 + 17);
    }

    /// A topic directory made unpublished, as an append makes one, with `partitions`.
    fn unpublished_topic(data_dir: &Path, partitions: u32) -> PathBuf {
        fs::create_dir_all(topics_dir(data_dir)).unwrap();
        let meta = Meta::new("t", Retention::default(), partitions);
        create_topic_dir_unpublished(data_dir, &meta).unwrap()
    }

    #[test]
    fn a_topic_grown_before_its_first_flush_publishes_is_published_grown_whichever_comes_first() {
        let grown = Meta::new("t", Retention::default(), 3);
        // The flush publishes the first meta before the growth replaces it.
        let data_dir = tempfile::tempdir().unwrap();
        let dir = unpublished_topic(data_dir.path(), 1);
        publish_meta(&dir, false).unwrap();
        grow_topic_dir(&dir, &grown, 1, true).unwrap();
        assert_eq!(read_meta(&dir).unwrap().0.partitions, 3);
        assert!(!dir.join(META_WRITING_FILE).exists() && !dir.join(META_GROWING_FILE).exists());
        // The growth comes first: the flush publishes the grown meta.
        let data_dir = tempfile::tempdir().unwrap();
        let dir = unpublished_topic(data_dir.path(), 1);
        grow_topic_dir(&dir, &grown, 1, true).unwrap();
        assert!(matches!(read_meta(&dir), Err(MetaError::Missing)));
        publish_meta(&dir, false).unwrap();
        assert_eq!(read_meta(&dir).unwrap().0.partitions, 3);
        // A flush that finds its file published by a growth meanwhile has nothing to do.
        publish_meta(&dir, true).unwrap();
        assert_eq!(topic_file(META_GROWING_FILE), TopicFile::MetaWriting);
    }

    #[test]
    fn segment_names_sort_as_offsets() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(topic_file(&segment_file_name(7)), TopicFile::Segment(7));
        assert_eq!(topic_file("00000000000000000007.idx"), TopicFile::Index(7));
        assert_eq!(topic_file("00000000000000000007.idx.new"), TopicFile::IndexWriting(7));
        assert_eq!(topic_file("7.idx"), TopicFile::Unknown);
    }
}
