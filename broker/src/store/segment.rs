//! A segment: one contiguous run of records and the index of where each one starts.
//!
//! Records are laid out back to back in one buffer, so a million messages cost a handful of
//! allocations rather than a million, and a read borrows keys and values straight out of it.
//!
//! # Format
//! ```text
//! record = body_len:u32le crc:u32le body
//! body   = timestamp_ms:u64le key_len:u32le key value
//! ```
//! `crc` is the CRC-32C of `body`; `key_len` is `u32::MAX` when the message has no key; the value
//! is whatever follows the key up to `body_len`. A record's offset is not stored: it is the
//! segment's base offset plus the record's position in the index.

use protocol::Message;

/// Bytes before the body: its length and its checksum.
pub const RECORD_PREFIX: usize = 8;
/// Bytes of the body before the key: the timestamp and the key length.
const BODY_HEADER: usize = 12;
/// `key_len` of a message with no key.
const NO_KEY: u32 = u32::MAX;

/// A run of consecutive records starting at `base_offset`.
#[derive(Debug)]
pub struct Segment {
    /// The offset of the first record.
    base_offset: u64,
    /// The records, back to back.
    data: Vec<u8>,
    /// Where each record starts in `data`; record `i` has offset `base_offset + i`.
    index: Vec<u32>,
    /// The timestamp of the newest record, for retention by time.
    last_timestamp: u64,
    /// Bytes of keys and values, without framing.
    payload_bytes: u64,
    /// How many bytes of `data` are written to the segment's file (for a store on disk).
    persisted: usize,
}

/// Where and why a segment's bytes stop being valid records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The byte position of the first invalid record.
    pub at_byte: usize,
    /// The offset that record would have had.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: &'static str,
    /// Where the first whole, valid record after it starts, if one does: then the damage is not
    /// a torn tail (an interrupted last write) and cutting there would lose whole records.
    pub whole_record_after: Option<WholeRecordAfter>,
}

/// What lies after a damaged record, as far as a search for whole records can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WholeRecordAfter {
    /// A whole, valid record starts at this byte.
    At(usize),
    /// The search gave up before the end, over its budget of checksummed bytes; there may be.
    Unknown,
}

/// Bytes the search for whole records after a damage may checksum, per byte it searches, and
/// at least. A crafted tail (say, values full of plausible record lengths) could otherwise make
/// the search quadratic; past the budget the damage counts as having whole records after it,
/// which refuses to start rather than lose anything.
const SEARCH_BUDGET_PER_BYTE: usize = 16;
/// As above.
const SEARCH_BUDGET_MIN: usize = 64 << 20;

impl Segment {
    /// An empty segment whose first record will get `base_offset`, with room for `capacity`
    /// bytes of records before it reports itself full.
    pub fn new(base_offset: u64, capacity: usize) -> Segment {
        Segment {
            base_offset,
            data: Vec::with_capacity(capacity),
            index: Vec::new(),
            last_timestamp: 0,
            payload_bytes: 0,
            persisted: 0,
        }
    }

    /// Rebuilds a segment from the bytes of its file, checking every record. Stops at the first
    /// record that is cut short or fails its checksum and says where; the segment then holds
    /// the records before it. `capacity` is as for [`Segment::new`].
    pub fn recover(
        base_offset: u64,
        mut data: Vec<u8>,
        capacity: usize,
    ) -> (Segment, Option<Damage>) {
        let mut index = Vec::new();
        let (mut at, mut last_timestamp, mut payload_bytes) = (0, 0, 0);
        let damage = loop {
            if at == data.len() {
                break None;
            }
            match check_record(&data, at) {
                Ok(body_len) => {
                    let body = &data[at + RECORD_PREFIX..at + RECORD_PREFIX + body_len];
                    index.push(at as u32);
                    last_timestamp = read_u64(body, 0);
                    payload_bytes += (body_len - BODY_HEADER) as u64;
                    at += RECORD_PREFIX + body_len;
                }
                Err(reason) => {
                    let offset = base_offset + index.len() as u64;
                    let whole_record_after = find_whole_record(&data, at + 1);
                    break Some(Damage { at_byte: at, offset, reason, whole_record_after });
                }
            }
        };
        data.truncate(at);
        // Exactly: `fits` measures against the capacity, so extra room would let the segment
        // grow past its configured size.
        data.reserve_exact(capacity.saturating_sub(data.len()));
        let persisted = data.len();
        let segment =
            Segment { base_offset, data, index, last_timestamp, payload_bytes, persisted };
        (segment, damage)
    }

    /// The bytes a record of this key and value takes.
    pub fn record_len(key: Option<&[u8]>, value: &[u8]) -> usize {
        RECORD_PREFIX + BODY_HEADER + key.map_or(0, <[u8]>::len) + value.len()
    }

    /// Whether a record of `len` bytes still fits without growing the buffer. An empty segment
    /// takes any record, so that one larger than the usual capacity still gets stored.
    pub fn fits(&self, len: usize) -> bool {
        self.index.is_empty() || self.data.len() + len <= self.data.capacity()
    }

    /// Appends a record and returns its offset.
    pub fn push(&mut self, timestamp: u64, key: Option<&[u8]>, value: &[u8]) -> u64 {
        let start = self.data.len();
        let key_len = key.map_or(NO_KEY, |k| k.len() as u32);
        let body_len = Self::record_len(key, value) - RECORD_PREFIX;
        // The fixed fields go in with one copy; the checksum is filled in once the body is in.
        let mut head = [0; RECORD_PREFIX + BODY_HEADER];
        head[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
        head[8..16].copy_from_slice(&timestamp.to_le_bytes());
        head[16..].copy_from_slice(&key_len.to_le_bytes());
        self.data.extend_from_slice(&head);
        self.data.extend_from_slice(key.unwrap_or_default());
        self.data.extend_from_slice(value);
        let body_start = start + RECORD_PREFIX;
        let crc = crc32c::crc32c(&self.data[body_start..]);
        self.data[start + 4..body_start].copy_from_slice(&crc.to_le_bytes());
        self.index.push(start as u32);
        self.last_timestamp = timestamp;
        self.payload_bytes += (key.map_or(0, <[u8]>::len) + value.len()) as u64;
        self.base_offset + self.index.len() as u64 - 1
    }

    /// The offset of the first record.
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// The offset the next record will get.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.index.len() as u64
    }

    /// The timestamp of the newest record (0 when empty).
    pub fn last_timestamp(&self) -> u64 {
        self.last_timestamp
    }

    /// Bytes of keys and values held.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Bytes of records held, framing included.
    pub fn len_bytes(&self) -> usize {
        self.data.len()
    }

    /// The records not yet written to the segment's file.
    pub fn unpersisted(&self) -> &[u8] {
        &self.data[self.persisted..]
    }

    /// Notes that every record so far is written to the file.
    pub fn mark_persisted(&mut self) {
        self.persisted = self.data.len();
    }

    /// Drops the records from `offset` on (an append that could not be made durable). Returns
    /// how many messages and payload bytes went.
    pub fn truncate(&mut self, offset: u64) -> (u64, u64) {
        let keep = offset.saturating_sub(self.base_offset) as usize;
        if keep >= self.index.len() {
            return (0, 0);
        }
        let dropped: u64 = (self.base_offset + keep as u64..self.next_offset())
            .map(|at| {
                let message = self.get(at);
                (message.key.map_or(0, <[u8]>::len) + message.value.len()) as u64
            })
            .sum();
        let count = (self.index.len() - keep) as u64;
        self.data.truncate(self.index[keep] as usize);
        self.index.truncate(keep);
        self.persisted = self.persisted.min(self.data.len());
        self.payload_bytes -= dropped;
        self.last_timestamp =
            self.index.last().map_or(0, |_| self.get(self.next_offset() - 1).timestamp);
        (count, dropped)
    }

    /// The record at `offset`, which must lie in this segment.
    pub fn get(&self, offset: u64) -> Message<'_> {
        let start = self.index[(offset - self.base_offset) as usize] as usize;
        let body_len = read_u32(&self.data, start) as usize;
        let body = &self.data[start + RECORD_PREFIX..start + RECORD_PREFIX + body_len];
        let timestamp = read_u64(body, 0);
        let key_len = read_u32(body, 8);
        let (key, value) = if key_len == NO_KEY {
            (None, &body[BODY_HEADER..])
        } else {
            let (key, value) = body[BODY_HEADER..].split_at(key_len as usize);
            (Some(key), value)
        };
        Message { offset, timestamp, key, value }
    }
}

/// Checks the record starting at byte `at` of `data` and returns its body's length.
fn check_record(data: &[u8], at: usize) -> Result<usize, &'static str> {
    if data.len() - at < RECORD_PREFIX + BODY_HEADER {
        return Err("the record is cut short");
    }
    let body_len = read_u32(data, at) as usize;
    let body_start = at + RECORD_PREFIX;
    if body_len < BODY_HEADER || data.len() - body_start < body_len {
        return Err("the record is cut short");
    }
    let body = &data[body_start..body_start + body_len];
    if crc32c::crc32c(body) != read_u32(data, at + 4) {
        return Err("the record fails its checksum");
    }
    let key_len = read_u32(body, 8);
    if key_len != NO_KEY && key_len as usize > body_len - BODY_HEADER {
        return Err("the record's key is longer than the record");
    }
    Ok(body_len)
}

/// Looks for a whole, valid record starting anywhere from byte `from` of `data` on.
fn find_whole_record(data: &[u8], from: usize) -> Option<WholeRecordAfter> {
    let searched = data.len().saturating_sub(from);
    let mut budget = searched.saturating_mul(SEARCH_BUDGET_PER_BYTE).max(SEARCH_BUDGET_MIN);
    for at in from..data.len() {
        if data.len() - at < RECORD_PREFIX + BODY_HEADER {
            return None;
        }
        // The cheap tests first: most positions do not even hold a length that fits.
        let body_len = read_u32(data, at) as usize;
        if body_len < BODY_HEADER || data.len() - at - RECORD_PREFIX < body_len {
            continue;
        }
        if budget < body_len {
            return Some(WholeRecordAfter::Unknown);
        }
        budget -= body_len;
        if check_record(data, at).is_ok() {
            return Some(WholeRecordAfter::At(at));
        }
    }
    None
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let mut segment = Segment::new(10, 1024);
        assert_eq!(segment.push(1, None, b"one"), 10);
        assert_eq!(segment.push(2, Some(b"k"), b""), 11);
        assert_eq!(segment.push(3, Some(b""), b"three"), 12);
        assert_eq!(segment.get(10), Message { offset: 10, timestamp: 1, key: None, value: b"one" });
        assert_eq!(
            segment.get(11),
            Message { offset: 11, timestamp: 2, key: Some(b"k"), value: b"" }
        );
        assert_eq!(
            segment.get(12),
            Message { offset: 12, timestamp: 3, key: Some(b""), value: b"three" }
        );
        assert_eq!(segment.next_offset(), 13);
        assert_eq!(segment.payload_bytes(), 3 + 1 + 5);
        assert_eq!(segment.last_timestamp(), 3);
    }

    #[test]
    fn a_record_larger_than_the_capacity_fits_an_empty_segment_only() {
        let mut segment = Segment::new(0, 16);
        let big = Segment::record_len(None, &[7; 100]);
        assert!(segment.fits(big));
        segment.push(0, None, &[7; 100]);
        assert!(!segment.fits(Segment::record_len(None, b"x")));
    }

    #[test]
    fn recovery_keeps_whole_records_and_reports_the_first_bad_one() {
        let mut segment = Segment::new(5, 256);
        segment.push(1, None, b"one");
        segment.push(2, Some(b"k"), b"two");
        let whole = segment.data.clone();
        let (recovered, damage) = Segment::recover(5, whole.clone(), 256);
        assert_eq!(damage, None);
        assert_eq!(recovered.next_offset(), 7);
        assert_eq!(recovered.get(6).value, b"two");
        assert_eq!(recovered.payload_bytes(), segment.payload_bytes());

        // A torn tail: the last record cut in the middle.
        let (torn, damage) = Segment::recover(5, whole[..whole.len() - 2].to_vec(), 256);
        assert_eq!(torn.next_offset(), 6);
        assert_eq!(
            damage.as_ref().map(|d| (d.offset, d.reason)),
            Some((6, "the record is cut short"))
        );
        assert!(torn.unpersisted().is_empty());

        assert_eq!(damage.and_then(|d| d.whole_record_after), None);

        // A flipped byte in the first record's value: the second record is whole after it.
        let mut flipped = whole.clone();
        flipped[RECORD_PREFIX + BODY_HEADER] ^= 0x20;
        let (kept, damage) = Segment::recover(5, flipped, 256);
        assert_eq!(kept.next_offset(), 5);
        let second = Segment::record_len(None, b"one");
        assert_eq!(
            damage.map(|d| (d.at_byte, d.reason, d.whole_record_after)),
            Some((0, "the record fails its checksum", Some(WholeRecordAfter::At(second))))
        );

        // Garbage after the last whole record, as a crash may leave: no whole record follows.
        let mut tail = whole.clone();
        tail.extend_from_slice(&[0; 100]);
        tail.extend_from_slice(&[0xff; 100]);
        let (kept, damage) = Segment::recover(5, tail, 256);
        assert_eq!(kept.next_offset(), 7);
        assert_eq!(damage.map(|d| (d.at_byte, d.whole_record_after)), Some((whole.len(), None)));
    }

    #[test]
    fn the_search_after_a_damage_is_bounded_on_a_crafted_tail() {
        let mut segment = Segment::new(0, 64);
        segment.push(1, None, b"whole");
        let mut data = segment.data.clone();
        // Lengths of 1 MiB that fit, at every fourth byte, for 8 MiB: checking each would take
        // terabytes of checksums.
        for _ in 0..(8 << 20) / 4 {
            data.extend_from_slice(&(1u32 << 20).to_le_bytes());
        }
        let started = std::time::Instant::now();
        let (kept, damage) = Segment::recover(0, data, 0);
        assert_eq!(kept.next_offset(), 1);
        assert_eq!(damage.and_then(|d| d.whole_record_after), Some(WholeRecordAfter::Unknown));
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn truncation_drops_the_tail_only() {
        let mut segment = Segment::new(0, 256);
        segment.push(1, None, b"aa");
        segment.push(2, None, b"bbb");
        segment.mark_persisted();
        segment.push(3, None, b"c");
        assert_eq!(segment.truncate(1), (2, 4));
        assert_eq!(segment.next_offset(), 1);
        assert_eq!(segment.payload_bytes(), 2);
        assert_eq!(segment.last_timestamp(), 1);
        assert_eq!(segment.unpersisted(), b"");
        assert_eq!(segment.push(4, None, b"d"), 1);
    }

    #[test]
    fn the_checksum_covers_the_body() {
        let mut segment = Segment::new(0, 64);
        segment.push(5, Some(b"k"), b"v");
        let stored = read_u32(&segment.data, 4);
        assert_eq!(stored, crc32c::crc32c(&segment.data[RECORD_PREFIX..]));
    }
}
