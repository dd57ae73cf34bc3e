//! The header every file of the store (and of the groups) begins with: a magic number naming what the file is, and
//! its format version.
//!
//! # Format
//! ```text
//! header = magic:6 bytes  version:u16le
//! ```
//! Segment files written before there was a header begin with their first record instead; they
//! are told apart by their first bytes, which as a record length would exceed the largest
//! segment (1 GiB), and read as format 0. A `topic.meta` of format 0 is a MessagePack map,
//! whose first byte (`0x80`..`0x8f`, `0xde`, `0xdf`) is no `B`.

/// Bytes of the header.
pub const HEADER_LEN: usize = 8;

/// A kind of file: the magic number that names it, the format version this broker writes, and
/// the oldest version with a header it still reads. Each kind has its own version, so that a
/// change of one (the segments' record layout, say) leaves the others' files as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The magic number.
    pub magic: [u8; 6],
    /// The version written.
    pub version: u16,
    /// The oldest version read; versions from this one to `version` are read.
    pub oldest: u16,
}

/// A segment file of a topic's log.
/// Version 3 stores each append as one batch whose messages may have headers; version 2
/// (batches without headers) and versions 1 and 0 (record by record) are read.
pub const SEGMENT: Kind = Kind { magic: *b"BRKLOG", version: 3, oldest: 1 };
/// A topic's `topic.meta`.
pub const META: Kind = Kind { magic: *b"BRKTOP", version: 2, oldest: 1 };
/// A segment's index file.
/// Version 2 names each entry's offset, as batches hold any number of messages.
pub const INDEX: Kind = Kind { magic: *b"BRKIDX", version: 2, oldest: 1 };
/// A consumer group's state file (`group::disk`).
pub const GROUP: Kind = Kind { magic: *b"BRKGRP", version: 2, oldest: 1 };

/// The header of a file of this kind in the version this broker writes.
pub fn header(kind: Kind) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..6].copy_from_slice(&kind.magic);
    header[6..].copy_from_slice(&kind.version.to_le_bytes());
    header
}

/// What a file's first bytes say about its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The header of a version this broker reads (the one it writes, or an older one).
    Known(u16),
    /// This kind's magic number with a version this broker does not read: newer than it
    /// writes, or older than the oldest it reads.
    Unknown(u16),
    /// Fewer bytes than a header, all of them the start of the current one: a header whose
    /// writing was cut short.
    Torn,
    /// No header: a file written before there was one (format 0).
    None,
}

/// Reads the header of a file of `kind` from its first bytes.
pub fn read_header(bytes: &[u8], kind: Kind) -> Header {
    if bytes.len() < HEADER_LEN {
        return if header(kind).starts_with(bytes) { Header::Torn } else { Header::None };
    }
    if bytes[..6] != kind.magic {
        return Header::None;
    }
    match u16::from_le_bytes([bytes[6], bytes[7]]) {
        version if (kind.oldest..=kind.version).contains(&version) => Header::Known(version),
        other => Header::Unknown(other),
    }
}

/// The little-endian `u32` at `at` in `bytes`.
///
/// # Panics
/// When `bytes` holds fewer than `at + 4` bytes: callers check the length they read first.
pub fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// The little-endian `u64` at `at` in `bytes`.
///
/// # Panics
/// When `bytes` holds fewer than `at + 8` bytes: callers check the length they read first.
pub fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_from_old_files_and_cut_ones() {
        let current = header(SEGMENT);
        assert_eq!(read_header(&current, SEGMENT), Header::Known(SEGMENT.version));
        assert_eq!(read_header(&current, INDEX), Header::None);
        assert_eq!(read_header(&current[..3], SEGMENT), Header::Torn);
        assert_eq!(read_header(&[], SEGMENT), Header::Torn);
        let mut later = current;
        later[6] = 9;
        assert_eq!(read_header(&later, SEGMENT), Header::Unknown(9));
        // A record of an old segment: a small length, then a checksum.
        assert_eq!(read_header(&[20, 0, 0, 0, 1, 2, 3, 4, 5], SEGMENT), Header::None);
    }

    #[test]
    fn each_kind_reads_its_own_range_of_versions() {
        let kind = Kind { magic: *b"BRKTST", version: 3, oldest: 2 };
        let with = |version: u16| {
            let mut bytes = header(kind);
            bytes[6..].copy_from_slice(&version.to_le_bytes());
            read_header(&bytes, kind)
        };
        assert_eq!(with(1), Header::Unknown(1), "older than the oldest read");
        assert_eq!(with(2), Header::Known(2));
        assert_eq!(with(3), Header::Known(3));
        assert_eq!(with(4), Header::Unknown(4), "newer than written");
        for kind in [SEGMENT, META, INDEX, GROUP] {
            assert!(kind.oldest <= kind.version, "{kind:?}");
        }
        let magics = [SEGMENT.magic, META.magic, INDEX.magic, GROUP.magic];
        assert!(magics.iter().enumerate().all(|(i, m)| !magics[i + 1..].contains(m)));
    }
}
