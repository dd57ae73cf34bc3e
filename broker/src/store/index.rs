//! A sealed segment's index file: what opening needs to know of the segment without reading
//! it, written when the segment is sealed.
//!
//! # Format
//! ```text
//! index   = header("BRKIDX", 2) segment_len:u64le count:u64le payload_bytes:u64le
//!           last_timestamp:u64le stride:u32le entries:u32le entry{entries} crc:u32le
//! entry   = offset:u32le position:u32le                     (version 1: position:u32le)
//! ```
//! `segment_len` is the length of the segment file it describes; each entry says where a
//! record (of a segment of format 1 or 0) or a batch (format 2) starts in that file, and the
//! offset of its first message, counted from the segment's base. Entries are at least `stride`
//! messages apart, so that a read steps over fewer than `stride` messages' records, or a few
//! batches, to find its first. An index of version 1 has an entry at every `stride`-th record,
//! whose offsets are therefore implied. `crc` is the CRC-32C of every byte before it. An
//! index that does not check out, or whose segment file is not `segment_len` bytes long, is never
//! trusted: the segment is read and checked instead, and the index written anew.

use super::format::{self, read_u32, read_u64, Header, HEADER_LEN, INDEX};

/// The extension of index files.
pub const EXTENSION: &str = "idx";

/// What an index file says about its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// Bytes of the segment file.
    pub segment_len: u64,
    /// Records in it.
    pub count: u64,
    /// Bytes of keys and values in it.
    pub payload_bytes: u64,
    /// The timestamp of its newest record.
    pub last_timestamp: u64,
    /// Every how many messages, at least, an entry is kept.
    pub stride: u32,
    /// Where records or batches start in the segment file, in order.
    pub entries: Vec<Entry>,
}

/// Where a record or a batch starts in a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The offset of its first message, counted from the segment's base offset.
    pub offset: u32,
    /// The byte of the segment file it starts at.
    pub at: u32,
}

/// Bytes of the fixed fields after the header.
const FIXED: usize = 8 * 4 + 4 + 4;

/// An index file's name: its segment's base offset, as the segment's own name has it.
pub fn file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.{EXTENSION}")
}

/// The name an index file is written under before it is renamed to [`file_name`].
pub fn writing_name(base_offset: u64) -> String {
    format!("{base_offset:020}.{EXTENSION}.new")
}

/// The bytes of keys and values the segment of the index file at `path` holds, as the index's
/// fixed fields say, reading those alone: `None` when the file cannot be read, or does not
/// describe a segment of `segment_len` bytes and `count` records. Not checked against the
/// index's checksum: it serves for totals and retention by size until the segment is opened,
/// and is never more than the segment's length.
pub fn payload(path: &std::path::Path, segment_len: u64, count: u64) -> Option<u64> {
    use std::io::Read;
    let mut head = [0; HEADER_LEN + 24];
    std::fs::File::open(path).and_then(|mut file| file.read_exact(&mut head)).ok()?;
    let fields = &head[HEADER_LEN..];
    let fits = matches!(format::read_header(&head, INDEX), Header::Known(_))
        && read_u64(fields, 0) == segment_len
        && read_u64(fields, 8) == count;
    fits.then(|| read_u64(fields, 16)).filter(|&payload| payload <= segment_len)
}

impl Index {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + FIXED + 8 * self.entries.len() + 4);
        bytes.extend_from_slice(&format::header(INDEX));
        for field in [self.segment_len, self.count, self.payload_bytes, self.last_timestamp] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        bytes.extend_from_slice(&self.stride.to_le_bytes());
        bytes.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for entry in &self.entries {
            bytes.extend_from_slice(&entry.offset.to_le_bytes());
            bytes.extend_from_slice(&entry.at.to_le_bytes());
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// The file's bytes in version 1, as a broker before batches wrote it: positions only,
    /// one at every `stride`-th record.
    #[cfg(test)]
    pub fn encode_version_1(&self) -> Vec<u8> {
        let mut old = format::header(INDEX).to_vec();
        old[6] = 1;
        for field in [self.segment_len, self.count, self.payload_bytes, self.last_timestamp] {
            old.extend_from_slice(&field.to_le_bytes());
        }
        old.extend_from_slice(&self.stride.to_le_bytes());
        old.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for entry in &self.entries {
            old.extend_from_slice(&entry.at.to_le_bytes());
        }
        let crc = crc32c::crc32c(&old);
        old.extend_from_slice(&crc.to_le_bytes());
        old
    }

    /// Reads an index file's bytes.
    ///
    /// # Errors
    /// What is wrong with them, for people.
    pub fn decode(bytes: &[u8]) -> Result<Index, &'static str> {
        let Header::Known(version) = format::read_header(bytes, INDEX) else {
            return Err("it does not begin with the header of an index file of version 1 or 2");
        };
        let Some(body_len) = bytes.len().checked_sub(4).filter(|&n| n >= HEADER_LEN + FIXED) else {
            return Err("it is cut short");
        };
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body) != read_u32(crc, 0) {
            return Err("it fails its checksum");
        }
        let fields = &body[HEADER_LEN..];
        let stride = read_u32(fields, 32);
        let entries = read_u32(fields, 36) as usize;
        let raw = &fields[FIXED..];
        let width = if version == 1 { 4 } else { 8 };
        if raw.len() != entries.saturating_mul(width) {
            return Err("its number of positions does not match its length");
        }
        let entries = if version == 1 {
            // One at every `stride`-th record: the offsets are implied.
            (0u32..)
                .zip(raw.chunks_exact(4))
                .map(|(i, c)| Entry { offset: i.saturating_mul(stride), at: read_u32(c, 0) })
                .collect()
        } else {
            raw.chunks_exact(8)
                .map(|c| Entry { offset: read_u32(c, 0), at: read_u32(c, 4) })
                .collect()
        };
        Ok(Index {
            segment_len: read_u64(fields, 0),
            count: read_u64(fields, 8),
            payload_bytes: read_u64(fields, 16),
            last_timestamp: read_u64(fields, 24),
            stride,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_reads_back_and_any_damage_is_caught() {
        let index = Index {
            segment_len: 4096,
            count: 70,
            payload_bytes: 7000,
            last_timestamp: 12,
            stride: 32,
            entries: vec![
                Entry { offset: 0, at: 8 },
                Entry { offset: 32, at: 1000 },
                Entry { offset: 64, at: 2000 },
            ],
        };
        let bytes = index.encode();
        assert_eq!(Index::decode(&bytes), Ok(index.clone()));
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 1;
            assert!(Index::decode(&flipped).is_err(), "a flip at byte {at} went unseen");
        }
        for len in 0..bytes.len() {
            assert!(Index::decode(&bytes[..len]).is_err(), "cut at {len}");
        }

        // An index of version 1, as a broker before batches wrote it: positions only, one at
        // every `stride`-th record.
        let old = index.encode_version_1();
        assert_eq!(Index::decode(&old), Ok(index));
    }
}
