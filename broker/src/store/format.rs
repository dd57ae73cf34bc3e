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
/// The magic number of a segment file.
pub const SEGMENT_MAGIC: [u8; 6] = *b"BRKLOG";
/// The magic number of a topic's `topic.meta`.
pub const META_MAGIC: [u8; 6] = *b"BRKTOP";
/// The magic number of a segment's index file.
pub const INDEX_MAGIC: [u8; 6] = *b"BRKIDX";
/// The magic number of a consumer group's state file (`group::disk`).
pub const GROUP_MAGIC: [u8; 6] = *b"BRKGRP";
/// The format version this broker writes.
pub const VERSION: u16 = 1;

/// The header of a file of this kind in the current version.
pub fn header(magic: [u8; 6]) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..6].copy_from_slice(&magic);
    header[6..].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// What a file's first bytes say about its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The header of the current version.
    Current,
    /// This kind's magic number with a version this broker does not know.
    Unknown(u16),
    /// Fewer bytes than a header, all of them the start of the current one: a header whose
    /// writing was cut short.
    Torn,
    /// No header: a file written before there was one (format 0).
    None,
}

/// Reads the header of a file of the kind `magic` names from its first bytes.
pub fn read_header(bytes: &[u8], magic: [u8; 6]) -> Header {
    let current = header(magic);
    if bytes.len() < HEADER_LEN {
        return if current.starts_with(bytes) { Header::Torn } else { Header::None };
    }
    if bytes[..6] != magic {
        return Header::None;
    }
    match u16::from_le_bytes([bytes[6], bytes[7]]) {
        VERSION => Header::Current,
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
        let current = header(SEGMENT_MAGIC);
        assert_eq!(read_header(&current, SEGMENT_MAGIC), Header::Current);
        assert_eq!(read_header(&current, INDEX_MAGIC), Header::None);
        assert_eq!(read_header(&current[..3], SEGMENT_MAGIC), Header::Torn);
        assert_eq!(read_header(&[], SEGMENT_MAGIC), Header::Torn);
        let mut later = current;
        later[6] = 9;
        assert_eq!(read_header(&later, SEGMENT_MAGIC), Header::Unknown(9));
        // A record of an old segment: a small length, then a checksum.
        assert_eq!(read_header(&[20, 0, 0, 0, 1, 2, 3, 4, 5], SEGMENT_MAGIC), Header::None);
    }
}
