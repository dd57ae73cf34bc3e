//! Opening a store on disk: each topic's newest segment, and any sealed one without an index
//! file, read back and checked record by record (the other sealed segments are known from their
//! names and lengths, and opened when first read), the broker's own leftovers cleared away, and
//! damaged files refused (or, under `--repair`, set aside).
//!
//! Opening first reads everything and changes nothing. If it finds a damaged file it refuses to
//! open, naming every such file; only when nothing is damaged (or `--repair` asks to set the
//! damaged files aside) does it touch the disk: it clears `deleting/`, removes what an
//! interrupted `create_topic`, a topic's first append not yet flushed or an older broker's
//! interrupted deletion left in `topics/`, cuts torn tails, and sets aside what is damaged.
//!
//! A **torn tail** is what a crash in the middle of a write leaves at the end of a topic's newest
//! segment: an incomplete record, or bytes that are no record, with no whole valid record after
//! them. It is cut off and the cut logged; under `--fsync always` nothing acknowledged is in it.
//! Damage that whole, valid records follow is no torn tail: cutting there would lose them, so it
//! counts as a damaged file.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::damaged::{DamageReport, DamagedFile, SetAside};
use super::disk::{self, Meta, MetaError, TopicFile};
use super::index;
use super::partition::Partition;
use super::segment::{self, Segment, WholeRecordAfter};
use super::storage::Files;
use super::topic::Topic;
use super::{IoFailure, OpenError, StoreError};
use crate::files;

/// What opening a data directory gave.
#[derive(Debug)]
pub struct Recovered {
    /// The topics, by name.
    pub topics: Vec<(String, Topic<Files>)>,
    /// Where `--repair` set files aside, if it set any aside.
    pub set_aside: Option<PathBuf>,
    /// Bytes of segment files read and checked (the others were known from their indexes).
    pub checked_bytes: u64,
}

/// A damaged file and what `--repair` does about it.
#[derive(Debug)]
struct Finding {
    /// The file and its problem, as reported.
    file: DamagedFile,
    /// What `--repair` does.
    fix: Fix,
    /// Whether the file itself is damaged (and so named in the refusal), rather than set aside
    /// only along with one that is.
    reported: bool,
}

/// What `--repair` does about a damaged file.
#[derive(Debug)]
enum Fix {
    /// Moves this file or directory (the damaged file's, or the file itself) aside.
    Move(PathBuf),
    /// Copies the file aside whole, then cuts it to this many bytes.
    CopyAndCut(u64),
    /// Makes this directory, empty: a partition's directory that is missing.
    MakeDir(PathBuf),
}

/// A topic directory read back, before anything on disk is changed.
#[derive(Debug)]
struct ScannedTopic {
    /// Its meta.
    meta: Meta,
    /// Its partitions, partition `p` at index `p`.
    partitions: Vec<Scanned>,
}

/// A partition's directory read back, before anything on disk is changed.
#[derive(Debug)]
struct Scanned {
    /// The directory.
    dir: PathBuf,
    /// Its segments, oldest first, each with its file and the bytes the file holds.
    segments: Vec<(Segment, PathBuf, u64)>,
    /// How many of the oldest segments `--repair` sets aside.
    set_aside: usize,
    /// The newest segment's damage, when it is a torn tail: where and why.
    torn: Option<(u64, &'static str)>,
    /// The base offsets of the sealed segments that had no index that could be used: they
    /// were checked, and get one.
    unindexed: Vec<u64>,
}

/// Everything found in a data directory.
#[derive(Debug, Default)]
struct Plan {
    /// The topics.
    topics: Vec<ScannedTopic>,
    /// The damaged files.
    findings: Vec<Finding>,
    /// The broker's own leftovers to remove, each with what it is.
    leftovers: Vec<(PathBuf, &'static str)>,
    /// Bytes of segment files read and checked.
    checked_bytes: u64,
    /// How many `topic.meta` files are of format 0.
    old_metas: usize,
}

/// Opens the topics of `data_dir`, as the module explains. `set_aside` is where `--repair`
/// sets damaged files aside; `None` refuses them.
///
/// # Errors
/// [`OpenError::Damaged`] naming every damaged file, without `--repair`; [`StoreError::Io`]
/// when a file cannot be read or changed.
pub fn recover(
    data_dir: &Path,
    segment_bytes: usize,
    mut set_aside: Option<SetAside>,
) -> Result<Recovered, OpenError> {
    let io_error = |what: &str, path: &Path, e: io::Error| {
        StoreError::Io(IoFailure::doing(format!("cannot {what} {}", path.display()), e))
    };
    let plan = scan(data_dir, segment_bytes)?;
    let damaged: Vec<DamagedFile> =
        plan.findings.iter().filter(|f| f.reported).map(|f| f.file.clone()).collect();
    if !damaged.is_empty() && set_aside.is_none() {
        return Err(OpenError::Damaged(DamageReport {
            data_dir: data_dir.to_path_buf(),
            files: damaged,
        }));
    }

    clear_deletions(data_dir)?;
    for (path, what) in &plan.leftovers {
        let removed = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
        removed.map_err(|e| io_error("remove", path, e))?;
        tracing::info!(path = %path.display(), "removed {what}");
    }
    if let Some(aside) = &mut set_aside {
        for finding in &plan.findings {
            match &finding.fix {
                Fix::Move(path) => {
                    aside
                        .move_aside(path, &finding.file)
                        .map_err(|e| io_error("set aside", path, e))?;
                }
                Fix::CopyAndCut(len) => {
                    let path = &finding.file.path;
                    aside.copy_aside(&finding.file).map_err(|e| io_error("copy", path, e))?;
                    cut(path, *len).map_err(|e| io_error("cut", path, e))?;
                    tracing::warn!(file = %path.display(), "cut to its first {len} bytes");
                }
                Fix::MakeDir(path) => {
                    fs::create_dir(path)
                        .and_then(|()| path.parent().map_or(Ok(()), files::sync_dir))
                        .map_err(|e| io_error("make", path, e))?;
                    tracing::warn!(dir = %path.display(), "made the missing partition's directory, empty");
                }
            }
        }
    }
    let topics_dir = disk::topics_dir(data_dir);
    fs::create_dir_all(&topics_dir).map_err(|e| io_error("make", &topics_dir, e))?;

    let mut topics = Vec::new();
    let (mut old_format, mut indexed) = (0, 0);
    for ScannedTopic { meta, partitions } in plan.topics {
        let mut logs = Vec::with_capacity(partitions.len());
        for (partition, scanned) in (0u32..).zip(partitions) {
            let Scanned { dir, segments, set_aside: skip, torn, unindexed } = scanned;
            let mut kept = Vec::new();
            let mut dropped = 0;
            let count = segments.len();
            for (i, (segment, path, read_len)) in segments.into_iter().enumerate().skip(skip) {
                let len = segment.persisted_len() as u64;
                if torn.is_some() && read_len != len {
                    cut(&path, len).map_err(|e| io_error("cut", &path, e))?;
                    dropped = read_len - len;
                }
                old_format += usize::from(!segment.has_header());
                if i + 1 < count && unindexed.contains(&segment.base_offset()) {
                    write_index(&dir, &segment).map_err(|e| io_error("index", &path, e))?;
                    indexed += 1;
                }
                kept.push(segment);
            }
            let log = Partition::from_segments(dir, meta.retention(), kept);
            if let Some((offset, reason)) = torn {
                tracing::warn!(
                    topic = meta.name,
                    partition,
                    "dropped {dropped} bytes from offset {offset} on: {reason}; kept offsets {}..{}",
                    log.first_offset(),
                    log.next_offset(),
                );
            }
            tracing::info!(
                topic = meta.name,
                partition,
                messages = log.messages(),
                "recovered offsets {}..{}",
                log.first_offset(),
                log.next_offset()
            );
            logs.push(log);
        }
        topics.push((meta.name, Topic::new(logs)));
    }
    if plan.old_metas > 0 {
        tracing::info!(
            "{} topic.meta files have no format header (written by an older broker): read as \
             format 0",
            plan.old_metas
        );
    }
    if old_format > 0 {
        tracing::info!(
            "{old_format} segment files have no format header (written by an older broker): read \
             as format 0; new segments are written in format {}",
            super::format::SEGMENT.version
        );
    }
    if indexed > 0 {
        tracing::info!(
            "checked {indexed} sealed segments that had no usable index, and indexed them"
        );
    }
    Ok(Recovered {
        topics,
        set_aside: set_aside.and_then(|a| a.run().map(Path::to_path_buf)),
        checked_bytes: plan.checked_bytes,
    })
}

/// Writes a sealed segment's index file in topic directory `dir`, durably.
fn write_index(dir: &Path, segment: &Segment) -> io::Result<()> {
    let base = segment.base_offset();
    let bytes = segment.index().encode();
    files::replace(dir, &index::file_name(base), &index::writing_name(base), &bytes, true)?;
    files::sync_dir(dir)
}

/// Reads every topic directory of `data_dir` and checks it, changing nothing.
fn scan(data_dir: &Path, segment_bytes: usize) -> Result<Plan, StoreError> {
    let mut plan = Plan::default();
    let topics = disk::topics_dir(data_dir);
    for (path, is_dir, _) in entries(&topics)? {
        if is_dir {
            scan_topic(&mut plan, path, segment_bytes)?;
        } else {
            let problem = "is not a topic directory, and only those belong in topics/".to_owned();
            plan.findings.push(damaged(&path, problem, &path));
        }
    }
    Ok(plan)
}

/// Reads one directory of `topics/` into `plan`.
fn scan_topic(plan: &mut Plan, dir: PathBuf, segment_bytes: usize) -> Result<(), StoreError> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let files = entries(&dir)?;
    let meta_path = dir.join(disk::META_FILE);
    let meta = match disk::read_meta(&dir) {
        Ok((meta, old)) => {
            plan.old_metas += usize::from(old);
            meta
        }
        Err(MetaError::Missing) => {
            let kind = |path: &Path| file_name(path).map_or(TopicFile::Unknown, disk::topic_file);
            let segments_only = |path: &Path| {
                entries(path).is_ok_and(|inside| {
                    inside.iter().all(|(path, is_dir, _)| {
                        !is_dir
                            && matches!(
                                kind(path),
                                TopicFile::Segment(_)
                                    | TopicFile::Index(_)
                                    | TopicFile::IndexWriting(_)
                            )
                    })
                })
            };
            // A creation makes the partitions' directories before it writes the meta file.
            let partition_dir = |path: &Path, is_dir: bool, empty: bool| {
                is_dir
                    && file_name(path).and_then(disk::partition_of).is_some()
                    && (!empty || entries(path).is_ok_and(|inside| inside.is_empty()))
                    && segments_only(path)
            };
            let only_meta_writing = files.iter().all(|(path, is_dir, _)| {
                partition_dir(path, *is_dir, true)
                    || (!is_dir && kind(path) == TopicFile::MetaWriting)
            });
            // An append under --fsync always makes its topic's directory and writes segments
            // there before the flush that publishes topic.meta; until that flush completed,
            // nothing in the directory was acknowledged.
            let first_flush_interrupted = files
                .iter()
                .any(|(path, is_dir, _)| !is_dir && kind(path) == TopicFile::MetaWriting)
                && files.iter().all(|(path, is_dir, _)| {
                    partition_dir(path, *is_dir, false)
                        || !is_dir
                            && matches!(
                                kind(path),
                                TopicFile::MetaWriting
                                    | TopicFile::Segment(_)
                                    | TopicFile::Index(_)
                                    | TopicFile::IndexWriting(_)
                            )
                });
            if only_meta_writing {
                plan.leftovers.push((dir, "a topic directory whose creation was interrupted"));
            } else if first_flush_interrupted {
                plan.leftovers.push((
                    dir,
                    "a topic directory whose first append was interrupted before it was flushed \
                     (nothing in it was acknowledged)",
                ));
            } else {
                let mut problem = "has no topic.meta, so which topic its files belong to is \
                                   unknown"
                    .to_owned();
                if name.starts_with(disk::OLD_DELETING_PREFIX) {
                    problem.push_str(" (an older broker version may have been deleting it)");
                }
                plan.findings.push(damaged(&dir, problem, &dir));
            }
            return Ok(());
        }
        Err(MetaError::Unreadable(e)) => {
            return Err(StoreError::Io(IoFailure::doing(
                format!("cannot read {}", meta_path.display()),
                e,
            )));
        }
        Err(MetaError::Invalid(why)) => {
            let problem = format!(
                "is damaged: it {why}; without it the topic's name is unknown, so --repair sets \
                 aside the whole directory {name}"
            );
            plan.findings.push(damaged(&meta_path, problem, &dir));
            return Ok(());
        }
    };
    let expected = disk::topic_dir_name(&meta.name);
    if expected != name {
        if name.strip_prefix(disk::OLD_DELETING_PREFIX) == Some(expected.as_str()) {
            plan.leftovers.push((dir, "a topic deletion an older broker version left unfinished"));
        } else {
            let problem = format!(
                "names topic {:?}, whose directory would be {expected}, not {name}",
                meta.name
            );
            plan.findings.push(damaged(&meta_path, problem, &dir));
        }
        return Ok(());
    }

    // Partition 0's files are the topic directory's own; partition p >= 1's are in `<p>/`.
    let mut own = Vec::new();
    let mut found = BTreeMap::new();
    for (path, is_dir, len) in files {
        match file_name(&path).and_then(disk::partition_of).filter(|_| is_dir) {
            Some(p) if p < meta.partitions => {
                found.insert(p, path);
            }
            Some(_) if entries(&path)?.is_empty() => plan.leftovers.push((
                path,
                "an empty partition directory past the topic's count, which an interrupted \
                 growth of the topic left",
            )),
            Some(_) => {
                let problem = format!(
                    "is a partition directory past the {} partitions topic.meta gives the topic \
                     {:?}, and holds files",
                    meta.partitions, meta.name
                );
                plan.findings.push(damaged(&path, problem, &path));
            }
            None => own.push((path, is_dir, len)),
        }
    }
    let mut partitions = vec![scan_log(plan, dir.clone(), own, true, segment_bytes)?];
    for p in 1..meta.partitions {
        let path = disk::partition_dir(&dir, p);
        if found.remove(&p).is_none() {
            let problem = format!(
                "is missing: topic.meta gives the topic {:?} {} partitions, and partition {p} \
                 keeps its segments there; --repair makes it anew, empty",
                meta.name, meta.partitions
            );
            plan.findings.push(Finding {
                file: DamagedFile { path: path.clone(), problem },
                fix: Fix::MakeDir(path.clone()),
                reported: true,
            });
            partitions.push(Scanned::empty(path));
            continue;
        }
        let files = entries(&path)?;
        partitions.push(scan_log(plan, path, files, false, segment_bytes)?);
    }
    plan.topics.push(ScannedTopic { meta, partitions });
    Ok(())
}

impl Scanned {
    /// A partition directory with nothing in it yet.
    fn empty(dir: PathBuf) -> Scanned {
        Scanned { dir, segments: Vec::new(), set_aside: 0, torn: None, unindexed: Vec::new() }
    }
}

/// Reads `files`, those of one partition's directory `dir` (the topic's own directory when
/// `is_topic_dir`, where `topic.meta` belongs too), into `plan` (the findings and leftovers),
/// and returns its segments.
fn scan_log(
    plan: &mut Plan,
    dir: PathBuf,
    files: Vec<(PathBuf, bool, u64)>,
    is_topic_dir: bool,
    segment_bytes: usize,
) -> Result<Scanned, StoreError> {
    let mut bases = Vec::new();
    let mut indexes = BTreeMap::new();
    for (path, is_dir, len) in files {
        let kind = file_name(&path).map_or(TopicFile::Unknown, disk::topic_file);
        match kind {
            TopicFile::Meta if !is_dir && is_topic_dir => {}
            TopicFile::MetaWriting if !is_dir && is_topic_dir => {
                plan.leftovers.push((path, "a meta file written and never made topic.meta"));
            }
            TopicFile::Segment(base) if !is_dir => bases.push((base, path, len)),
            TopicFile::Index(base) if !is_dir => {
                indexes.insert(base, path);
            }
            TopicFile::IndexWriting(_) if !is_dir => {
                plan.leftovers.push((path, "an index file whose writing was interrupted"));
            }
            _ => {
                let problem = "is not a file the broker keeps in a topic directory (topic.meta, \
                     segments named after their 20-digit base offset with .log, and their \
                     indexes with .idx)"
                    .to_owned();
                plan.findings.push(damaged(&path, problem, &path));
            }
        }
    }
    bases.sort();
    for (base, path) in &indexes {
        if bases.binary_search_by_key(base, |(b, _, _)| *b).is_err() {
            plan.leftovers.push((path.clone(), "an index file whose segment is gone"));
        }
    }

    let mut scanned = Scanned::empty(dir);
    let mut previous: Option<(u64, bool)> = None;
    for (i, (base, path, len)) in bases.iter().cloned().enumerate() {
        let next_base = bases.get(i + 1).map(|(next, _, _)| *next);
        let unreadable =
            |e| StoreError::Io(IoFailure::doing(format!("cannot read {}", path.display()), e));
        // The newest segment takes the appends to come, in memory; the older ones are sealed,
        // and stay in their files. A sealed segment with an index file is not even opened: its
        // offsets run to the next segment's base, and a read opens it through its index (which
        // was written after its records were flushed). One without is read and checked.
        let (read_len, (segment, damage)) = match next_base {
            None => {
                let bytes = fs::read(&path).map_err(unreadable)?;
                plan.checked_bytes += bytes.len() as u64;
                (bytes.len() as u64, Segment::recover(base, bytes, segment_bytes))
            }
            Some(next) if indexes.contains_key(&base) => {
                let size = usize::try_from(len).unwrap_or(usize::MAX);
                let count = next.saturating_sub(base);
                // Its bytes of keys and values, as its index's fixed fields say: batches of
                // any size leave them unknowable from the file's length alone.
                let payload =
                    indexes.get(&base).and_then(|index| index::payload(index, len, count));
                (len, (Segment::closed(base, count, path.clone(), size, payload), None))
            }
            Some(_) => {
                scanned.unindexed.push(base);
                plan.checked_bytes += len;
                let map = segment::map_file(&path).map_err(unreadable)?;
                (map.len() as u64, Segment::recover_mapped(base, map))
            }
        };
        let newest = next_base.is_none();
        if let Some((end, false)) = previous.filter(|&(end, _)| end != base) {
            let problem = format!(
                "starts at offset {base}, but the segment before it ends at offset {end}, so the \
                 topic's offsets would not follow on; --repair sets aside the segments before it"
            );
            plan.findings.push(damaged(&path, problem, &path));
            scanned.set_aside = i;
        }
        previous = Some((segment.next_offset(), damage.is_some()));
        if let Some(damage) = damage {
            let at = format!(
                "is damaged at byte {} (offset {}): {}",
                damage.at_byte, damage.offset, damage.reason
            );
            match (newest, damage.whole_record_after) {
                (false, _) => {
                    let problem = format!(
                        "{at}; newer segments follow it, so cutting it would lose them; \
                         --repair sets it aside with the segments before it"
                    );
                    plan.findings.push(damaged(&path, problem, &path));
                    scanned.set_aside = i + 1;
                }
                (true, None) => scanned.torn = Some((damage.offset, damage.reason)),
                (true, Some(after)) => {
                    let follows = match after {
                        WholeRecordAfter::At(byte) => {
                            format!("a whole batch follows at byte {byte}")
                        }
                        WholeRecordAfter::Unknown => {
                            "whole batches may follow it (the search for them gave up)".to_owned()
                        }
                    };
                    let problem = format!(
                        "{at}, and {follows}: this is no torn last write, and cutting the file \
                         there would lose the batches after it; --repair keeps a copy of the \
                         file and cuts it at byte {}",
                        damage.at_byte
                    );
                    plan.findings.push(Finding {
                        file: DamagedFile { path: path.clone(), problem },
                        fix: Fix::CopyAndCut(segment.persisted_len() as u64),
                        reported: true,
                    });
                }
            }
        }
        scanned.segments.push((segment, path, read_len));
    }
    // The segments set aside only because they are older than a damaged one.
    let reported: Vec<PathBuf> = plan.findings.iter().map(|f| f.file.path.clone()).collect();
    for (_, path, _) in &scanned.segments[..scanned.set_aside] {
        if !reported.contains(path) {
            plan.findings.push(Finding {
                file: DamagedFile {
                    path: path.clone(),
                    problem: "is older than a damaged segment of its partition; set aside with \
                              it so that the partition's offsets follow on"
                        .to_owned(),
                },
                fix: Fix::Move(path.clone()),
                reported: false,
            });
        }
    }
    Ok(scanned)
}

/// A damaged file that `--repair` moves aside by moving `target` (the file or its directory).
fn damaged(path: &Path, problem: String, target: &Path) -> Finding {
    Finding {
        file: DamagedFile { path: path.to_path_buf(), problem },
        fix: Fix::Move(target.to_path_buf()),
        reported: true,
    }
}

/// The entries of `dir` (none when it does not exist), each with whether it is a directory and
/// its length, sorted by name. Symbolic links are taken for what they point to.
fn entries(dir: &Path) -> Result<Vec<(PathBuf, bool, u64)>, StoreError> {
    let read = |e: io::Error| {
        StoreError::Io(IoFailure::doing(format!("cannot read {}", dir.display()), e))
    };
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(read(error)),
    };
    let mut entries = Vec::new();
    for entry in listing {
        let path = entry.map_err(read)?.path();
        let metadata = fs::metadata(&path).map_err(|e| {
            StoreError::Io(IoFailure::doing(format!("cannot read {}", path.display()), e))
        })?;
        entries.push((path, metadata.is_dir(), metadata.len()));
    }
    entries.sort();
    Ok(entries)
}

/// Removes every deletion in progress a crash interrupted: everything in `deleting/` is the
/// broker's.
fn clear_deletions(data_dir: &Path) -> Result<(), StoreError> {
    let deleting = disk::deleting_dir(data_dir);
    for (path, is_dir, _) in entries(&deleting)? {
        let removed = if is_dir { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        removed.map_err(|e| {
            StoreError::Io(IoFailure::doing(format!("cannot remove {}", path.display()), e))
        })?;
        tracing::info!(path = %path.display(), "removed a deleted topic's files");
    }
    Ok(())
}

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

fn cut(path: &Path, len: u64) -> io::Result<()> {
    let file = File::options().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}
