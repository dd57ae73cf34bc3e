//! Where a broker with a data directory keeps its groups' states, and the file operations on
//! them.
//!
//! ```text
//! DATA_DIR/groups/<stem>.group        one group's state on one topic
//! DATA_DIR/groups/<stem>.group.new    the next state while it is written; gone once renamed
//! ```
//!
//! `<stem>` is made from the group and topic names so that any valid pair maps to a safe file
//! name: their ASCII letters, digits, `-` and `_` in lower case (others become `_`), at most 24
//! of each, joined by `.`, then `-` and a 64-bit FNV-1a hash of the exact names. The real names
//! are read back from the file.
//!
//! # Format
//! ```text
//! file   = header crc:u32le body
//! header = "BRKGRP" version:u16le            (store::format; version 2)
//! body   = MessagePack map {"group": str, "topic": str, "delivered": uint64, "pending": [uint64],
//!                           "more": [{"delivered": uint64, "pending": [uint64]}],
//!                           "unplaced": [uint32]}
//! ```
//! `delivered` and `pending` are partition 0's; `more` holds partitions 1, 2, ... in order, and
//! is left out for a topic of one partition. Format 1 (before partitions) is the same map without
//! `more`, so it reads as one partition; version 2 marks files an older broker must not read as
//! one partition. `unplaced` lists, ascending, the partitions on which the group has no committed
//! offset (their state was made for a reset of another partition, or their offset was deleted);
//! it is left out when there are none, so a file without it reads as every partition placed, and
//! a broker that does not know it reads those partitions as placed at their delivered offset.
//! `crc` is the CRC-32C of `body`. Files without the header, as brokers before it wrote them
//! (`crc body` alone), are read as format 0 (start-up counts them in a line) and rewritten in
//! format 1 the next time their state changes. `pending` is ascending and below `delivered`; everything
//! below `delivered` that is not pending is acknowledged. A state is written whole to the `.new`
//! file and renamed over the old one, so a crash leaves the old state or the new one, never a
//! mix; start-up removes a `.new` file left behind. Any other file in `groups/`, or a state file
//! that does not decode or is not named after the group and topic it holds, is damaged: start-up
//! refuses it, and `--repair` sets it aside (see `store::damaged`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use protocol::{validate_group_name, validate_topic_name};
use serde::{Deserialize, Serialize};

use crate::files::{self, sync_dir};
use crate::store::format::{self, Header, GROUP, HEADER_LEN};

/// The extension of a group state file.
const EXTENSION: &str = "group";
/// The extension a state file has while it is written.
const WRITING_EXTENSION: &str = "new";
/// Bytes of the checksum before the body.
const CRC: usize = 4;

/// One group's state on one topic as it is stored: partition 0's fields, then the others'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The group's name.
    pub group: String,
    /// The topic's name.
    pub topic: String,
    /// The next offset of partition 0 never delivered to the group.
    pub delivered: u64,
    /// The offsets of partition 0 delivered and not acknowledged, ascending.
    pub pending: Vec<u64>,
    /// Partitions 1, 2, ... in order; empty for a topic of one partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<SavedPartition>,
    /// The partitions without a committed offset, ascending; `None` when every one has one.
    /// Boxed, so that a state stays small where it is passed by value (a conflict's stored
    /// state, `SaveError::Conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unplaced: Option<Box<Vec<u32>>>,
}

/// One partition's part of a stored group state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPartition {
    /// The next offset never delivered to the group.
    pub delivered: u64,
    /// The offsets delivered and not acknowledged, ascending.
    pub pending: Vec<u64>,
}

impl Saved {
    /// The state of `group` on `topic` whose partitions, in order, are `partitions`.
    pub fn new(group: String, topic: String, mut partitions: Vec<SavedPartition>) -> Saved {
        let more = if partitions.is_empty() { Vec::new() } else { partitions.split_off(1) };
        let first =
            partitions.pop().unwrap_or(SavedPartition { delivered: 0, pending: Vec::new() });
        let (delivered, pending) = (first.delivered, first.pending);
        Saved { group, topic, delivered, pending, more, unplaced: None }
    }

    /// Every partition's state, partition 0 first.
    pub fn partitions(&self) -> impl Iterator<Item = (u64, &[u64])> {
        std::iter::once((self.delivered, self.pending.as_slice()))
            .chain(self.more.iter().map(|p| (p.delivered, p.pending.as_slice())))
    }
}

/// The directory holding every group state file.
pub fn groups_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("groups")
}

/// The file name of `group`'s state on `topic`.
pub fn file_name(group: &str, topic: &str) -> String {
    let hash = files::fnv1a(group.as_bytes().iter().chain(&[0]).chain(topic.as_bytes()));
    let (group, topic) = (files::readable(group, &[], 24), files::readable(topic, &[], 24));
    format!("{group}.{topic}-{hash:016x}.{EXTENSION}")
}

/// The bytes of a state file holding `saved`.
pub fn encode(saved: &Saved) -> Vec<u8> {
    let mut bytes = format::header(GROUP).to_vec();
    bytes.extend_from_slice(&[0; CRC]);
    // Writing plain strings and numbers to memory cannot fail.
    if let Err(error) = rmp_serde::encode::write_named(&mut bytes, saved) {
        unreachable!("encoding a group state to memory failed: {error}");
    }
    let crc = crc32c::crc32c(&bytes[HEADER_LEN + CRC..]);
    bytes[HEADER_LEN..HEADER_LEN + CRC].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Reads a state file's bytes back, checking them. Also says whether the file is of format 0
/// (no header, as brokers before it wrote them), which is read as well.
///
/// # Errors
/// What is wrong with them, for people; a format version this broker does not know.
pub fn decode(bytes: &[u8]) -> Result<(Saved, bool), String> {
    match format::read_header(bytes, GROUP) {
        Header::Known(_) => decode_body(&bytes[HEADER_LEN..]).map(|saved| (saved, false)),
        // A cut header is damage: the checksum check says so.
        Header::None | Header::Torn => decode_body(bytes).map(|saved| (saved, true)),
        Header::Unknown(version) => {
            Err(format!("it is of format version {version}, which this broker does not read"))
        }
    }
}

/// Reads the checksum and the body after the header.
fn decode_body(bytes: &[u8]) -> Result<Saved, String> {
    let (crc, body) = bytes.split_at_checked(CRC).ok_or("the file is too short")?;
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != stored {
        return Err("the checksum does not match".into());
    }
    let saved: Saved = rmp_serde::from_slice(body).map_err(|e| e.to_string())?;
    validate_group_name(&saved.group).map_err(|e| e.to_string())?;
    validate_topic_name(&saved.topic).map_err(|e| e.to_string())?;
    if saved.more.len() >= protocol::MAX_PARTITIONS as usize {
        return Err(format!("it holds {} partitions", saved.more.len() + 1));
    }
    let count = saved.more.len() + 1;
    let unplaced = saved.unplaced.as_deref().map_or(&[][..], Vec::as_slice);
    if !unplaced.windows(2).all(|pair| pair[0] < pair[1])
        || unplaced.last().is_some_and(|&last| last as usize >= count)
    {
        return Err(format!(
            "its partitions without a committed offset are not ascending partitions of its {count}"
        ));
    }
    for (partition, (delivered, pending)) in saved.partitions().enumerate() {
        if !pending.windows(2).all(|pair| pair[0] < pair[1]) {
            return Err(format!(
                "the pending offsets of partition {partition} are not in ascending order"
            ));
        }
        if pending.last().is_some_and(|&last| last >= delivered) {
            return Err(format!(
                "a pending offset of partition {partition} is not below its delivered offset"
            ));
        }
    }
    Ok(saved)
}

/// Replaces file `name` in `dir` with `bytes` in one step: written beside it, flushed when
/// `sync`, then renamed over it. The directory itself is flushed by the caller, once for every
/// file of a commit.
///
/// # Errors
/// Any failed file operation; the old file is then as it was.
pub fn replace(dir: &Path, name: &str, bytes: &[u8], sync: bool) -> io::Result<()> {
    files::replace(dir, name, &format!("{name}.{WRITING_EXTENSION}"), bytes, sync)
}

/// Removes file `name` of `dir`, if it is there.
///
/// # Errors
/// The file is there and cannot be removed.
pub fn remove(dir: &Path, name: &str) -> io::Result<()> {
    match fs::remove_file(dir.join(name)) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// A state file's path and its bytes.
pub type StoredFile = (PathBuf, Vec<u8>);

/// What the groups directory holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The state files, each with its bytes, ordered by path.
    pub files: Vec<StoredFile>,
    /// Entries that are no state file (nor one being written), ordered by path.
    pub unknown: Vec<PathBuf>,
}

/// The state files of `dir`, each with its bytes, removing files a crash left half written
/// (`*.group.new`), and the entries that are neither. `None` when there is no such directory: no
/// group state was ever stored.
///
/// # Errors
/// The directory or a file cannot be read.
pub fn read_all(dir: &Path) -> io::Result<Option<Stored>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let writing_suffix = format!(".{EXTENSION}.{WRITING_EXTENSION}");
    let mut stored = Stored::default();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let is_file = fs::metadata(&path)?.is_file();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if is_file && name.ends_with(&writing_suffix) {
            fs::remove_file(&path)?;
        } else if is_file && path.extension().is_some_and(|e| e == EXTENSION) {
            let bytes = fs::read(&path)?;
            stored.files.push((path, bytes));
        } else {
            stored.unknown.push(path);
        }
    }
    stored.files.sort();
    stored.unknown.sort();
    Ok(Some(stored))
}

/// Makes the groups directory `dir`, for the first state stored; flushes its parent's entries
/// when `sync`, so that the directory lasts.
///
/// # Errors
/// The directory cannot be made, or its parent cannot be flushed.
pub fn create_dir(dir: &Path, sync: bool) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    match dir.parent() {
        Some(parent) if sync => sync_dir(parent),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved() -> Saved {
        Saved {
            group: "g".into(),
            topic: "t".into(),
            delivered: 9,
            pending: vec![3, 5],
            more: Vec::new(),
            unplaced: None,
        }
    }

    #[test]
    fn every_partition_round_trips_and_each_is_checked() {
        let partitions = vec![
            SavedPartition { delivered: 9, pending: vec![3, 5] },
            SavedPartition { delivered: 0, pending: vec![] },
            SavedPartition { delivered: 4, pending: vec![1] },
        ];
        let saved = Saved::new("g".into(), "t".into(), partitions);
        assert_eq!(saved.partitions().count(), 3);
        assert_eq!(decode(&encode(&saved)), Ok((saved.clone(), false)));
        let bad = Saved {
            more: vec![SavedPartition { delivered: 2, pending: vec![1, 1] }],
            ..saved.clone()
        };
        let error = decode(&encode(&bad)).unwrap_err();
        assert!(error.contains("partition 1") && error.contains("ascending"), "{error}");
        let bad = Saved {
            more: vec![SavedPartition { delivered: 2, pending: vec![7] }],
            ..saved.clone()
        };
        assert!(decode(&encode(&bad)).unwrap_err().contains("partition 1"));
        // Partitions without a committed offset round trip, and must be partitions it has.
        let unplaced = Saved { unplaced: Some(Box::new(vec![1, 2])), ..saved.clone() };
        assert_eq!(decode(&encode(&unplaced)), Ok((unplaced.clone(), false)));
        for bad in [vec![3], vec![2, 1], vec![1, 1]] {
            let bad = Saved { unplaced: Some(Box::new(bad)), ..saved.clone() };
            assert!(decode(&encode(&bad)).unwrap_err().contains("without a committed offset"));
        }
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        let pairs = [
            ("g", "t"),
            ("G", "t"),
            ("g", "T"),
            ("../etc", "passwd"),
            ("a/b", "c"),
            ("a", "b/c"),
            ("ab", "c"),
            ("a", "bc"),
            ("ñandú", "Hola mundo"),
        ];
        let names: Vec<String> = pairs.iter().map(|(g, t)| file_name(g, t)).collect();
        for name in &names {
            assert!(
                !name.contains('/') && !name.contains('\\') && !name.starts_with('.'),
                "{name}"
            );
            assert!(name.ends_with(".group"));
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), pairs.len());
        assert!(file_name("preparers", "orders").starts_with("preparers.orders-"));
        assert!(file_name(&"g".repeat(249), &"t".repeat(249)).len() < 80);
    }

    #[test]
    fn states_round_trip_and_damage_is_caught() {
        let bytes = encode(&saved());
        assert!(bytes.starts_with(b"BRKGRP\x02\x00"));
        assert_eq!(decode(&bytes), Ok((saved(), false)));
        // Format 0: the checksum and the body alone.
        assert_eq!(decode(&bytes[HEADER_LEN..]), Ok((saved(), true)));
        // Format 1, before partitions: the same map without `more`, one partition.
        let mut one = bytes.clone();
        one[6] = 1;
        assert_eq!(decode(&one), Ok((saved(), false)));
        let mut later = bytes.clone();
        later[6] = 3;
        assert!(decode(&later).unwrap_err().contains("format version 3"));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decode(&flipped).unwrap_err().contains("checksum"));
        assert!(decode(&bytes[..2]).unwrap_err().contains("too short"));
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let unordered = Saved { pending: vec![5, 3], ..saved() };
        assert!(decode(&encode(&unordered)).unwrap_err().contains("ascending"));
        let beyond = Saved { pending: vec![9], ..saved() };
        assert!(decode(&encode(&beyond)).unwrap_err().contains("below"));
        let nameless = Saved { group: String::new(), ..saved() };
        assert!(decode(&encode(&nameless)).is_err());
    }

    #[test]
    fn replacing_leaves_one_whole_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("groups");
        assert_eq!(read_all(&dir).unwrap(), None);
        create_dir(&dir, true).unwrap();
        let dir = tempfile::TempDir::new_in(&dir).unwrap();
        let name = file_name("g", "t");
        replace(dir.path(), &name, &encode(&saved()), true).unwrap();
        let next = Saved { delivered: 12, ..saved() };
        replace(dir.path(), &name, &encode(&next), false).unwrap();
        // A half-written state left by a crash is cleared away at start-up.
        fs::write(dir.path().join(format!("{name}.new")), b"half").unwrap();
        let files = read_all(dir.path()).unwrap().unwrap().files;
        assert_eq!(files.len(), 1);
        assert_eq!(decode(&files[0].1), Ok((next, false)));
        assert!(!dir.path().join(format!("{name}.new")).exists());
        remove(dir.path(), &name).unwrap();
        remove(dir.path(), &name).unwrap();
        assert_eq!(read_all(dir.path()).unwrap(), Some(Stored::default()));
    }
}
