//! A sealed segment's index file: what opening needs to know of the segment without reading
//! it, written when the segment is sealed.
//!
//! # Format
//! ```text
//! index   = header("BRKIDX", 1) segment_len:u64le count:u64le payload_bytes:u64le
//!           last_timestamp:u64le stride:u32le entries:u32le position:u32le{entries} crc:u32le
//! ```
//! `segment_len` is the length of the segment file it describes, `position` where every
//! `stride`-th record starts in that file, and `crc` the CRC-32C of every byte before it. An
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
    /// Every how many records a position is kept.
    pub stride: u32,
    /// Where every `stride`-th record starts in the segment file.
    pub positions: Vec<u32>,
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

impl Index {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + FIXED + 4 * self.positions.len() + 4);
        bytes.extend_from_slice(&format::header(INDEX));
        for field in [self.segment_len, self.count, self.payload_bytes, self.last_timestamp] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        bytes.extend_from_slice(&self.stride.to_le_bytes());
        bytes.extend_from_slice(&(self.positions.len() as u32).to_le_bytes());
        for position in &self.positions {
            bytes.extend_from_slice(&position.to_le_bytes());
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Reads an index file's bytes.
    ///
    /// # Errors
    /// What is wrong with them, for people.
    pub fn decode(bytes: &[u8]) -> Result<Index, &'static str> {
        if !matches!(format::read_header(bytes, INDEX), Header::Known(_)) {
            return Err("it does not begin with the header of an index file of version 1");
        }
        let Some(body_len) = bytes.len().checked_sub(4).filter(|&n| n >= HEADER_LEN + FIXED) else {
            return Err("it is cut short");
        };
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body) != read_u32(crc, 0) {
            return Err("it fails its checksum");
        }
        let fields = &body[HEADER_LEN..];
        let entries = read_u32(fields, 36) as usize;
        let positions = &fields[FIXED..];
        if positions.len() != entries.saturating_mul(4) {
            return Err("its number of positions does not match its length");
        }
        Ok(Index {
            segment_len: read_u64(fields, 0),
            count: read_u64(fields, 8),
            payload_bytes: read_u64(fields, 16),
            last_timestamp: read_u64(fields, 24),
            stride: read_u32(fields, 32),
            positions: positions.chunks_exact(4).map(|c| read_u32(c, 0)).collect(),
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
            positions: vec![8, 1000, 2000],
        };
        let bytes = index.encode();
        assert_eq!(Index::decode(&bytes), Ok(index));
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 1;
            assert!(Index::decode(&flipped).is_err(), "a flip at byte {at} went unseen");
        }
        for len in 0..bytes.len() {
            assert!(Index::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
    }
}
