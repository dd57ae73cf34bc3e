//! A segment: one contiguous run of batches (or, in files of older formats, records) and the
//! index of where they start.
//!
//! A batch of format 3 is laid out as the wire's record batch (`protocol::batch`, PROTOCOL.md
//! "Record batches"), whose readers and writers of entries, headers and varints it uses, so
//! that a fetch asking for batches is answered with the bytes as kept.
//!
//! Each append's messages to a partition are stored as one batch: a header written once (base
//! offset, count, timestamp, checksum) and then each message's key and value behind two short
//! lengths, so that a message costs 2 bytes besides its own in memory and on disk, and one
//! checksum covers the whole append. Batches are laid out back to back in one buffer, so a
//! million messages cost a handful of allocations rather than a million, and a read borrows
//! keys and values straight out of it. Once a segment is sealed (full, and written to its file),
//! the buffer is its file, mapped: its batches then cost page cache, not the broker's memory. An
//! index of where batches start, one at least every [`INDEX_STRIDE`] messages, finds a
//! message's batch.
//!
//! # Format
//! ```text
//! segment = header("BRKLOG", 3) batch*
//! batch   = body_len:u32le crc:u32le body
//! body    = base_offset:u64le count:u32le timestamp_ms:u64le flags:u8 entry{count}
//! entry   = key_len:varint value_len:varint [headers_len:varint] key value [headers]
//! headers = (name_len:varint name value_len:varint value)*
//! ```
//! `crc` is the CRC-32C of `body`; `key_len` is 0 when the message has no key, else the key's
//! length plus 1; varints are LEB128 (7 bits a byte, lowest first). `flags` bit 0 says that
//! every entry of the batch has `headers_len` and its headers (the bytes of the message's
//! headers, `headers_len` of them, maybe none); no other bit is set. So a batch without
//! headers costs one byte more than in format 2, and no byte more a message. A header's
//! `name` is UTF-8; its `value_len` is 0 for a null value, else the value's length plus 1.
//! Every message of a batch has its timestamp; their offsets run from `base_offset` on. A
//! batch is whole or not at all: a batch cut short or failing its checksum, or whose headers do
//! not read back, is dropped with every message in it.
//!
//! Files of format 2 (before headers) are read, never appended to: their batches are as above
//! without `flags`, and their entries without headers.
//!
//! Files of formats 1 and 0 (before batches) are read, never appended to:
//! ```text
//! segment = header("BRKLOG", 1) record*      (format 0, before headers: record*)
//! record  = body_len:u32le crc:u32le body
//! body    = timestamp_ms:u64le key_len:u32le key value
//! ```
//! `key_len` is `u32::MAX` when the message has no key; the value is whatever follows the key up
//! to `body_len`. A record's offset is its position in the segment after the base offset.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use memmap2::{Mmap, UncheckedAdvice};
use protocol::batch::{
    self, headers_len, headers_size, put_headers, read_headers, varint_len, Entries, Piece, HEAD,
    MAX_VARINT,
};
use protocol::{Message, NewMessage};

use super::format::{self, read_u32, read_u64, Header, HEADER_LEN, SEGMENT};
use super::index::{self, Entry, Index};
use super::Budget;
use crate::files;

/// Bytes before a batch's (or a record's) body: its length and its checksum.
pub const RECORD_PREFIX: usize = 8;
/// Bytes of a record's body before the key, in formats 1 and 0: the timestamp and the key
/// length.
const BODY_HEADER: usize = 12;
/// Bytes of a batch's body before its entries: base offset, count, timestamp and flags.
const BATCH_HEADER: usize = 21;
/// The same in format 2, without flags.
const BATCH_HEADER_2: usize = 20;
/// The flag of a batch whose entries carry headers.
const HAS_HEADERS: u8 = 1;
/// The most bytes one batch takes: its length is a `u32`, and a segment's positions too. An
/// append larger than this (which only a `--max-message-bytes` of hundreds of MiB allows) is
/// stored as several batches.
pub const MAX_BATCH_BYTES: usize = 1 << 30;

/// What measuring a batch found, for writing it without measuring again: whether its entries
/// carry headers, and the bytes it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Whether every entry carries its headers ([`HAS_HEADERS`]).
    pub headers: bool,
    /// The batch's bytes, its record prefix included.
    pub len: usize,
}

/// `key_len` of a message with no key, in formats 1 and 0.
const NO_KEY: u32 = u32::MAX;
/// The index holds where a batch starts at least every this many messages (every this-many-th
/// record, in formats 1 and 0): a read finds its first message by stepping over fewer than
/// `INDEX_STRIDE` messages' batches or records from there, and the index of a 20 GB log of
/// 100-byte messages takes at most 40 MB rather than 1.6 GB.
pub const INDEX_STRIDE: u64 = 32;

/// Where a segment's records are: in memory while it takes appends, or, once sealed and
/// written, in its file, mapped, so that they cost page cache the kernel can reclaim rather
/// than the broker's own memory; or, for a sealed segment start-up knew from its file's name
/// and length alone, in a file not opened yet.
#[derive(Debug)]
enum Records {
    /// In a buffer of the broker's own.
    Owned(Vec<u8>),
    /// The first this-many bytes of the segment's file, mapped read-only.
    Mapped(Mmap, usize),
    /// In a file opened on first use.
    Closed(Box<Closed>),
}

/// A sealed segment's file that start-up did not open: its offsets come from its name and the
/// next segment's, its size from the directory. The first read (or retention by time) opens it
/// through its index file, and it is a mapped segment from then on.
#[derive(Debug)]
struct Closed {
    /// The segment file.
    path: PathBuf,
    /// Its length when start-up listed it.
    len: usize,
    /// The segment once opened: as its index describes it, or, when the index is missing or
    /// does not fit, as checking its records found it (then only the records before any
    /// damage). Failing to open the file at all is not kept: the next use tries again.
    opened: OnceLock<Segment>,
}

impl Records {
    fn bytes(&self) -> &[u8] {
        match self {
            Records::Owned(data) => data,
            Records::Mapped(map, len) => map.get(..*len).unwrap_or_default(),
            Records::Closed(closed) => closed.opened.get().map(Segment::bytes).unwrap_or_default(),
        }
    }

    /// The buffer, copying a mapped file's bytes into one first (a sealed segment is never
    /// appended to or cut, so this is only a safe way out of the unexpected).
    fn owned(&mut self) -> &mut Vec<u8> {
        if let Records::Mapped(..) | Records::Closed(..) = self {
            *self = Records::Owned(self.bytes().to_vec());
        }
        match self {
            Records::Owned(data) => data,
            Records::Mapped(..) | Records::Closed(..) => {
                unreachable!("the records were just copied")
            }
        }
    }
}

impl Closed {
    /// The segment, opening its file if no use did yet; `None` when it cannot be opened (said
    /// in a log line), which the next use tries again. `count` is how many records its name
    /// and the next segment's say it holds.
    fn open(&self, base_offset: u64, count: u64) -> Option<&Segment> {
        if let Some(segment) = self.opened.get() {
            return Some(segment);
        }
        match open_closed(&self.path, base_offset, count) {
            Ok(segment) => Some(self.opened.get_or_init(|| segment)),
            Err(error) => {
                tracing::error!(%error, file = %self.path.display(), "cannot open a segment");
                None
            }
        }
    }
}

/// Opens the sealed segment file at `path`, whose name and the next segment's say it holds
/// `count` records from `base_offset`: through its index file when that checks out and fits
/// the file and the count, else by checking its records (and then writing its index again,
/// when they are all there). A segment that does not hold the `count` records whole is
/// returned with those before the first missing one, and said in a log line naming the file;
/// reads past them fail.
fn open_closed(path: &Path, base_offset: u64, count: u64) -> io::Result<Segment> {
    let map = map_file(path)?;
    let index_path = path.with_file_name(index::file_name(base_offset));
    let indexed = match fs::read(&index_path) {
        Ok(bytes) => Index::decode(&bytes).map_err(str::to_owned).and_then(|index| {
            if index.count == count {
                Ok(index)
            } else {
                Err(format!(
                    "it counts {} records where the segment files' names say {count}",
                    index.count
                ))
            }
        }),
        Err(error) => Err(error.to_string()),
    };
    let why = match indexed {
        Ok(index) => match Segment::from_index(base_offset, map, &index) {
            Some(segment) => return Ok(segment),
            None => "it does not fit its segment file".to_owned(),
        },
        Err(why) => why,
    };
    tracing::warn!(file = %index_path.display(), "{why}; checked the segment instead");
    let (segment, damage) = Segment::recover_mapped(base_offset, map_file(path)?);
    match damage {
        Some(damage) => tracing::error!(
            file = %path.display(),
            "damaged at byte {} (offset {}): {}; the records before it are served",
            damage.at_byte,
            damage.offset,
            damage.reason
        ),
        None if segment.count != count => tracing::error!(
            file = %path.display(),
            "holds {} records where the segment files' names say {count}; the records it holds \
             are served",
            segment.count
        ),
        None => {
            let dir = path.parent().unwrap_or(Path::new("."));
            let bytes = segment.index().encode();
            let writing = index::writing_name(base_offset);
            let name = index::file_name(base_offset);
            if let Err(error) = files::replace(dir, &name, &writing, &bytes, false) {
                tracing::warn!(%error, file = %index_path.display(), "cannot write an index");
            }
        }
    }
    Ok(segment)
}

/// A run of consecutive records starting at `base_offset`.
#[derive(Debug)]
pub struct Segment {
    /// The offset of the first record.
    base_offset: u64,
    /// The file's bytes: its header, then the records back to back.
    data: Records,
    /// Where the first record starts: after the header, or at 0 in a file of format 0.
    start: usize,
    /// The format of its records: 2 (batches), or 1 or 0 (a record per message), read only.
    version: u16,
    /// The bytes of records the segment takes before it reports itself full.
    capacity: usize,
    /// Where batches (or records) start in `data`, at least every [`INDEX_STRIDE`] messages:
    /// a message is found by stepping from the last entry at or before its offset.
    index: Vec<Entry>,
    /// How many records the segment holds.
    count: u64,
    /// The timestamp of the newest record, for retention by time.
    last_timestamp: u64,
    /// Bytes of keys and values, without framing.
    payload_bytes: u64,
    /// How many bytes of `data` are written to the segment's file (for a store on disk).
    persisted: usize,
    /// Whether a read touched the mapped file since its pages were last let go (see
    /// [`Segment::release_pages`]).
    touched: AtomicBool,
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

/// Maps the whole of a segment file read-only.
///
/// # Errors
/// The file cannot be opened or mapped.
pub fn map_file(path: &Path) -> io::Result<Mmap> {
    let file = File::open(path)?;
    // SAFETY: the mapping is read-only, and the broker never changes a segment file's bytes
    // once they are written (a sealed file is only ever deleted whole, which leaves the mapping
    // valid). Only another process cutting the file under the broker could break it; the data
    // directory is the broker's alone, as ARCHITECTURE.md says.
    unsafe { Mmap::map(&file) }
}

impl Segment {
    /// An empty segment whose first record will get `base_offset`, with room for `capacity`
    /// bytes of records before it reports itself full.
    pub fn new(base_offset: u64, capacity: usize) -> Segment {
        Segment::new_in(base_offset, capacity, Vec::with_capacity(capacity.max(HEADER_LEN)))
    }

    /// An empty segment as [`Segment::new`] makes, in `data` (empty; its room is taken as is).
    pub fn new_in(base_offset: u64, capacity: usize, mut data: Vec<u8>) -> Segment {
        data.clear();
        data.extend_from_slice(&format::header(SEGMENT));
        Segment {
            base_offset,
            data: Records::Owned(data),
            start: HEADER_LEN,
            version: SEGMENT.version,
            capacity,
            index: Vec::new(),
            count: 0,
            last_timestamp: 0,
            payload_bytes: 0,
            persisted: 0,
            touched: AtomicBool::new(false),
        }
    }

    /// Rebuilds a segment from the bytes of its file, checking every record. Stops at the first
    /// record that is cut short or fails its checksum and says where; the segment then holds
    /// the records before it. `capacity` is as for [`Segment::new`].
    pub fn recover(base_offset: u64, data: Vec<u8>, capacity: usize) -> (Segment, Option<Damage>) {
        if format::read_header(&data, SEGMENT) == Header::Torn {
            // The file was made, and its first write cut short within the header: nothing of
            // it was ever acknowledged. Start it again; the file is cut to nothing.
            let mut segment = Segment::new(base_offset, capacity);
            segment.persisted = 0;
            let damage = (!data.is_empty()).then_some(Damage {
                at_byte: 0,
                offset: base_offset,
                reason: "the segment's header is cut short",
                whole_record_after: None,
            });
            return (segment, damage);
        }
        Segment::check(base_offset, Records::Owned(data), capacity)
    }

    /// As [`Segment::recover`], for a sealed segment whose file is mapped: its records stay in
    /// the file, and the segment takes no more.
    pub fn recover_mapped(base_offset: u64, map: Mmap) -> (Segment, Option<Damage>) {
        let len = map.len();
        let (segment, damage) = Segment::check(base_offset, Records::Mapped(map, len), 0);
        // Checking it read every page: let them go again.
        segment.touched.store(true, Ordering::Relaxed);
        segment.release_pages();
        (segment, damage)
    }

    /// A sealed segment whose file is mapped, as its index file describes it, without reading
    /// its records. `None` when the index does not fit the file (another length, another
    /// format, positions out of order or out of the file): then the segment must be checked.
    pub fn from_index(base_offset: u64, map: Mmap, index: &Index) -> Option<Segment> {
        let len = map.len();
        let (start, version) = match format::read_header(&map, SEGMENT) {
            Header::Known(version) => (HEADER_LEN, version),
            Header::None => (0, 0),
            Header::Unknown(_) | Header::Torn => return None,
        };
        let entries = &index.entries;
        // Records of formats 1 and 0 are found by counting from an entry at every stride-th.
        let strided = version >= 2
            || (entries.len() as u64 == index.count.div_ceil(INDEX_STRIDE)
                && (0u64..).zip(entries).all(|(i, e)| u64::from(e.offset) == i * INDEX_STRIDE));
        let fits = index.segment_len == len as u64
            && u64::from(index.stride) == INDEX_STRIDE
            && strided
            && (index.count == 0 || !entries.is_empty())
            && entries.first().is_none_or(|e| e.at as usize == start && e.offset == 0)
            && entries.windows(2).all(|w| w[0].at < w[1].at && w[0].offset < w[1].offset)
            && entries
                .last()
                .is_none_or(|e| (e.at as usize) < len && u64::from(e.offset) < index.count);
        let segment = fits.then(|| Segment {
            base_offset,
            data: Records::Mapped(map, len),
            start,
            version,
            capacity: 0,
            index: entries.clone(),
            count: index.count,
            last_timestamp: index.last_timestamp,
            payload_bytes: index.payload_bytes,
            persisted: len,
            // Reading the header faulted in the pages around it (the kernel maps several at a
            // fault): let them go, or a thousand segments would hold tens of MB resident.
            touched: AtomicBool::new(true),
        })?;
        segment.release_pages();
        Some(segment)
    }

    /// A sealed segment of `count` records from `base_offset` in the file at `path`, `len` bytes
    /// long, that has an index file: nothing of either is read until a read needs them, but
    /// for the index's fixed fields, which give `payload`, its bytes of keys and values. Its
    /// count comes from the segment files' names; without `payload`, its payload bytes are
    /// estimated from its length (as a file of format 2 of batches of many messages, 2 bytes
    /// of framing a message). Its last timestamp is read when retention by time asks for it.
    pub fn closed(
        base_offset: u64,
        count: u64,
        path: PathBuf,
        len: usize,
        payload: Option<u64>,
    ) -> Segment {
        let framing = count.saturating_mul(2);
        let estimate = (len as u64).saturating_sub(HEADER_LEN as u64 + framing);
        Segment {
            base_offset,
            data: Records::Closed(Box::new(Closed { path, len, opened: OnceLock::new() })),
            start: HEADER_LEN,
            version: SEGMENT.version,
            capacity: 0,
            index: Vec::new(),
            count,
            last_timestamp: 0,
            payload_bytes: payload.unwrap_or(estimate),
            persisted: len,
            touched: AtomicBool::new(false),
        }
    }

    /// The segment whose records reads use: this one, or, for one start-up left closed, the
    /// segment its file holds, opened now if no use opened it before. `None` when the file
    /// cannot be opened.
    fn opened(&self) -> Option<&Segment> {
        match &self.data {
            Records::Closed(closed) => closed.open(self.base_offset, self.count),
            Records::Owned(_) | Records::Mapped(..) => Some(self),
        }
    }

    /// The file's bytes as far as they are in memory or mapped.
    fn bytes(&self) -> &[u8] {
        self.data.bytes()
    }

    /// What the segment's index file says, for a sealed segment (one start-up left closed
    /// says it once a read opened it: until then it has no positions).
    pub fn index(&self) -> Index {
        if let Records::Closed(closed) = &self.data {
            if let Some(segment) = closed.opened.get() {
                return segment.index();
            }
        }
        Index {
            segment_len: self.len_bytes() as u64,
            count: self.count,
            payload_bytes: self.payload_bytes,
            last_timestamp: self.last_timestamp,
            stride: INDEX_STRIDE as u32,
            entries: self.index.clone(),
        }
    }

    fn check(base_offset: u64, data: Records, capacity: usize) -> (Segment, Option<Damage>) {
        let mut segment = Segment { data, ..Segment::new(base_offset, 0) };
        let bytes = segment.data.bytes();
        let (mut at, version) = match format::read_header(bytes, SEGMENT) {
            Header::Known(version) => (HEADER_LEN, version),
            Header::None => (0, 0),
            Header::Unknown(version) => {
                // Nothing of it can be read: it holds no records this broker knows of, and
                // --repair (keeping a copy) starts it again from nothing.
                let mut segment = Segment::new(base_offset, capacity);
                segment.persisted = 0;
                let damage = Damage {
                    at_byte: 0,
                    offset: base_offset,
                    reason: if version > SEGMENT.version {
                        "the segment is of a newer format version than this broker reads"
                    } else {
                        "the segment is of an unknown format version"
                    },
                    whole_record_after: Some(WholeRecordAfter::Unknown),
                };
                return (segment, Some(damage));
            }
            // Handled by `recover`; a mapped file is never shorter than its header.
            Header::Torn => (0, SEGMENT.version),
        };
        segment.start = at;
        segment.version = version;
        let damage = loop {
            if at == bytes.len() {
                break None;
            }
            let expected = base_offset + segment.count;
            match check_unit(bytes, at, version, Some(expected)) {
                Ok(unit) => {
                    if needs_entry(&segment.index, segment.count) {
                        segment.index.push(entry(segment.count, at));
                    }
                    segment.count += unit.count;
                    segment.last_timestamp = unit.timestamp;
                    segment.payload_bytes += unit.payload;
                    at = unit.next;
                }
                Err(reason) => {
                    let whole_record_after = find_whole_record(bytes, at + 1, version);
                    break Some(Damage {
                        at_byte: at,
                        offset: expected,
                        reason,
                        whole_record_after,
                    });
                }
            }
        };
        match &mut segment.data {
            Records::Owned(data) => {
                data.truncate(at);
                data.reserve_exact(capacity.saturating_sub(data.len()));
            }
            Records::Mapped(_, len) => *len = at,
            // Checking is given bytes or a mapping, never a file not opened.
            Records::Closed(_) => {}
        }
        segment.capacity = capacity;
        segment.persisted = at;
        (segment, damage)
    }

    /// The bytes one batch of these messages takes.
    pub fn batch_len(messages: &[NewMessage<'_>]) -> usize {
        let headers = any_headers(messages);
        RECORD_PREFIX + BATCH_HEADER + messages.iter().map(|m| entry_len(m, headers)).sum::<usize>()
    }

    /// How many of `messages`, from the first, one batch holds (all of them, unless they
    /// would take it past [`MAX_BATCH_BYTES`]; at least one, however large), and the shape of
    /// that batch: one pass over the messages, whose result [`Segment::push_shaped`] takes
    /// rather than measuring them again.
    pub fn batch_prefix(messages: &[NewMessage<'_>]) -> (usize, Shape) {
        let mut len = RECORD_PREFIX + BATCH_HEADER;
        let mut taken = 0;
        // As if every message had headers when one has: the prefix may then be a little shorter
        // than it could be, never longer.
        let headers = any_headers(messages);
        for message in messages {
            let entry = entry_len(message, headers);
            if taken > 0 && len + entry > MAX_BATCH_BYTES {
                break;
            }
            len += entry;
            taken += 1;
        }
        (taken, Shape { headers, len })
    }

    /// Whether a batch of `len` bytes still fits within the capacity. An empty segment takes
    /// any batch, so that one larger than the usual capacity still gets stored; a sealed one,
    /// or one of an older format, takes none.
    pub fn fits(&self, len: usize) -> bool {
        match self.data {
            Records::Mapped(..) | Records::Closed(..) => false,
            Records::Owned(_) if self.version != SEGMENT.version => false,
            Records::Owned(_) => self.count == 0 || self.len_bytes() + len <= self.capacity,
        }
    }

    /// Appends `messages` (at least one) as one batch stamped `timestamp`, and returns the
    /// offset of the first.
    pub fn push_batch(&mut self, timestamp: u64, messages: &[NewMessage<'_>]) -> u64 {
        let headers = any_headers(messages);
        let len = Self::batch_len(messages);
        self.push_shaped(timestamp, messages, Shape { headers, len }).0
    }

    /// Appends `messages` (at least one) as one batch stamped `timestamp`, of the `shape`
    /// [`Segment::batch_prefix`] gave them; returns the offset of the first and the bytes of
    /// keys and values (and headers) they hold.
    pub fn push_shaped(
        &mut self,
        timestamp: u64,
        messages: &[NewMessage<'_>],
        shape: Shape,
    ) -> (u64, u64) {
        let Shape { headers, len } = shape;
        let base = self.next_offset();
        let indexed = needs_entry(&self.index, self.count);
        let data = self.data.owned();
        let start = data.len();
        data.reserve(len);
        // The fixed fields go in with one copy; the checksum is filled in once the body is in.
        let mut head = [0; RECORD_PREFIX + BATCH_HEADER];
        head[..4].copy_from_slice(&((len - RECORD_PREFIX) as u32).to_le_bytes());
        head[8..16].copy_from_slice(&base.to_le_bytes());
        head[16..20].copy_from_slice(&(messages.len() as u32).to_le_bytes());
        head[20..28].copy_from_slice(&timestamp.to_le_bytes());
        head[28] = if headers { HAS_HEADERS } else { 0 };
        data.extend_from_slice(&head);
        let mut payload = 0;
        for message in messages {
            // An entry's lengths go in with one copy, as the batch's fixed fields do.
            let mut lengths = [0; 3 * MAX_VARINT];
            let key = message.key.map_or(0, |k| k.len() as u64 + 1);
            let mut at = put_varint_at(&mut lengths, 0, key);
            at = put_varint_at(&mut lengths, at, message.value.len() as u64);
            if headers {
                at = put_varint_at(&mut lengths, at, headers_len(&message.headers) as u64);
            }
            data.extend_from_slice(&lengths[..at]);
            data.extend_from_slice(message.key.unwrap_or_default());
            data.extend_from_slice(message.value);
            if headers {
                put_headers(data, &message.headers);
            }
            payload += message.size() as u64;
        }
        let body_start = start + RECORD_PREFIX;
        let crc = crc32c::crc32c(&data[body_start..]);
        data[start + 4..body_start].copy_from_slice(&crc.to_le_bytes());
        if indexed {
            self.index.push(entry(self.count, start));
        }
        self.count += messages.len() as u64;
        self.last_timestamp = timestamp;
        self.payload_bytes += payload;
        (base, payload)
    }

    /// Appends one message as a batch of its own and returns its offset.
    #[cfg(test)]
    pub fn push(&mut self, timestamp: u64, key: Option<&[u8]>, value: &[u8]) -> u64 {
        self.push_batch(timestamp, &[NewMessage::new(key, value)])
    }

    /// The offset of the first record.
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// The offset the next record will get.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.count
    }

    /// The timestamp of the newest record (0 when empty). A segment start-up left closed is
    /// opened to know it; `u64::MAX` while its file cannot be opened, so that retention by time
    /// keeps it until it can tell.
    pub fn last_timestamp(&self) -> u64 {
        self.opened().map_or(u64::MAX, |segment| segment.last_timestamp)
    }

    /// Bytes of keys and values held.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Bytes of the file: its header and its records.
    pub fn len_bytes(&self) -> usize {
        match &self.data {
            Records::Closed(closed) => closed.len,
            Records::Owned(_) | Records::Mapped(..) => self.data.bytes().len(),
        }
    }

    /// Whether the file begins with a format header (format 1 or 2), rather than being of
    /// format 0; as far as is known: a segment not opened yet counts as having one.
    pub fn has_header(&self) -> bool {
        match &self.data {
            Records::Closed(closed) => closed.opened.get().is_none_or(Segment::has_header),
            Records::Owned(_) | Records::Mapped(..) => self.start == HEADER_LEN,
        }
    }

    /// The format of its records: 2 (batches), 1 or 0; as far as is known: a segment not
    /// opened yet counts as of the format written.
    pub fn version(&self) -> u16 {
        match &self.data {
            Records::Closed(closed) => {
                closed.opened.get().map_or(SEGMENT.version, Segment::version)
            }
            Records::Owned(_) | Records::Mapped(..) => self.version,
        }
    }

    /// Bytes of the file that were there when it was opened or last written.
    pub fn persisted_len(&self) -> usize {
        self.persisted
    }

    /// Bytes of the broker's own memory the records take: none once sealed.
    pub fn memory_bytes(&self) -> usize {
        match &self.data {
            Records::Owned(data) => data.capacity(),
            Records::Mapped(..) | Records::Closed(..) => 0,
        }
    }

    /// Whether the records are in the segment's file, rather than in memory.
    pub fn is_sealed(&self) -> bool {
        matches!(self.data, Records::Mapped(..) | Records::Closed(..))
    }

    /// The records not yet written to the segment's file.
    pub fn unpersisted(&self) -> &[u8] {
        self.data.bytes().get(self.persisted..).unwrap_or_default()
    }

    /// Notes that every record so far is written to the file.
    pub fn mark_persisted(&mut self) {
        self.persisted = self.len_bytes();
    }

    /// Seals a segment whose records are all written to its file at `path`: from now on they
    /// are read from the file, mapped, and the memory that held them is freed. Does nothing to
    /// a sealed segment or one with unwritten records.
    ///
    /// # Errors
    /// The file cannot be mapped, or holds fewer bytes than were written to it; the segment is
    /// then left as it was, in memory.
    pub fn seal(&mut self, path: &Path) -> io::Result<()> {
        if self.is_sealed() || !self.unpersisted().is_empty() {
            return Ok(());
        }
        let len = self.len_bytes();
        if len == 0 {
            return Ok(());
        }
        let map = map_file(path)?;
        // Only the length is compared: comparing the bytes would read the whole file back
        // into the page cache and the broker's resident set for nothing, as the broker has
        // just written and flushed them.
        if map.len() != len {
            return Err(io::Error::other(format!(
                "{} does not hold the {len} bytes written to it",
                path.display()
            )));
        }
        self.data = Records::Mapped(map, len);
        Ok(())
    }

    /// Drops the messages from `offset` on (an append that could not be made durable), a
    /// whole batch at a time: `offset` is where a batch starts, as every commit covers whole
    /// appends. Returns how many messages and payload bytes went.
    pub fn truncate(&mut self, offset: u64) -> (u64, u64) {
        let keep = offset.saturating_sub(self.base_offset);
        if keep >= self.count {
            return (0, 0);
        }
        let Some((cut, first)) = self.position(self.base_offset + keep) else { return (0, 0) };
        let keep = first - self.base_offset;
        let dropped: u64 = {
            let mut gone = Vec::new();
            // What cannot be read back counts as nothing: the bytes go all the same.
            let _ = self.read(first, self.next_offset(), &mut gone, |_| true);
            gone.iter().map(|m| m.size() as u64).sum()
        };
        let count = self.count - keep;
        self.data.owned().truncate(cut);
        self.index.truncate(self.index.partition_point(|e| u64::from(e.offset) < keep));
        self.count = keep;
        self.persisted = self.persisted.min(cut);
        self.payload_bytes = self.payload_bytes.saturating_sub(dropped);
        self.last_timestamp = match self.count {
            0 => 0,
            _ => self.get(self.next_offset() - 1).map_or(0, |m| m.timestamp),
        };
        (count, dropped)
    }

    /// The message at `offset`, if it lies in this segment.
    pub fn get(&self, offset: u64) -> Option<Message<'_>> {
        let mut out = Vec::with_capacity(1);
        self.read(offset, offset.checked_add(1)?, &mut out, |_| true).ok()?;
        out.pop()
    }

    /// Pushes onto `out` the messages from `from` up to `end` (both within this segment) for
    /// as long as `take` accepts them. Returns `Ok(false)` when `take` refused one. A read
    /// starting inside a batch steps over the batch's messages before `from` by their lengths.
    ///
    /// # Errors
    /// The offset of a message whose batch (or record) does not read back whole or fails its
    /// checksum (its file was damaged after it was sealed), or is missing from its file; the
    /// messages before it are in `out`.
    pub fn read<'a>(
        &'a self,
        from: u64,
        end: u64,
        out: &mut Vec<Message<'a>>,
        mut take: impl FnMut(&Message<'a>) -> bool,
    ) -> Result<bool, u64> {
        let end = end.min(self.next_offset());
        if from >= end {
            return Ok(true);
        }
        // A segment opened now holds what its file holds, which may be fewer records than its
        // name says: a record it lacks is not found, as a damaged one is not.
        let segment = self.opened().ok_or(from)?;
        let (mut at, mut first) = segment.position(from).ok_or(from)?;
        let version = segment.version;
        if segment.version < 2 {
            for offset in from..end {
                let (message, next) = segment.record(at, offset).ok_or(offset)?;
                if !take(&message) {
                    return Ok(false);
                }
                out.push(message);
                at = next;
            }
            return Ok(true);
        }
        let mut offset = from;
        while offset < end {
            let batch = segment.batch(at).filter(|b| b.base == first).ok_or(offset)?;
            let mut entries = entries_of(batch.body, version).ok_or(offset)?;
            for this in first..first + batch.count {
                let (key, value, headers) = entries.next().ok_or(offset)?;
                if this < offset {
                    continue;
                }
                if this >= end {
                    return Ok(true);
                }
                let headers = read_headers(headers).ok_or(this)?;
                let timestamp = batch.timestamp;
                let message = Message { offset: this, timestamp, key, value, headers };
                if !take(&message) {
                    return Ok(false);
                }
                out.push(message);
                offset = this + 1;
            }
            first += batch.count;
            offset = offset.max(first);
            at = batch.next;
        }
        Ok(true)
    }

    /// Pushes onto `out` the batches holding the messages from `from` up to `end` (both within
    /// this segment) for as long as `budget` takes them: the messages [`Segment::read`] would
    /// give, as the batches that hold them. A batch taken whole is copied as it is kept; one
    /// the range or the budget cuts goes with only the messages taken, its entries copied as
    /// they are under a head of its own. Only each message's lengths are read, for the
    /// budget. Records and batches of older formats are made into batches anew. Returns
    /// `Ok(false)` when the budget refused a message.
    ///
    /// # Errors
    /// As [`Segment::read`]: the offset of a message that does not read back; the batches
    /// before it are in `out`.
    pub fn read_batches<'a>(
        &'a self,
        from: u64,
        end: u64,
        budget: &mut Budget,
        out: &mut Vec<Piece<'a>>,
    ) -> Result<bool, u64> {
        let end = end.min(self.next_offset());
        if from >= end {
            return Ok(true);
        }
        let segment = self.opened().ok_or(from)?;
        if segment.version < 3 {
            let mut messages = Vec::new();
            let read = segment.read(from, end, &mut messages, |message| budget.take(message));
            out.extend(batch::pieces_of(&messages));
            return read;
        }
        let (mut at, mut first) = segment.position(from).ok_or(from)?;
        let mut offset = from;
        while offset < end {
            let batch = segment.batch(at).filter(|b| b.base == first).ok_or(offset)?;
            let mut taking = Taking::from(&batch, offset, end);
            let read = taking.read(budget);
            out.extend(taking.piece(&segment.data.bytes()[at..]));
            match read {
                Ok(Stop::Budget) => return Ok(false),
                Ok(Stop::End) => return Ok(true),
                Ok(Stop::Batch) => {}
                Err(bad) => return Err(bad),
            }
            first += batch.count;
            offset = first;
            at = batch.next;
        }
        Ok(true)
    }

    /// Notes that a read is about to touch the segment's pages (opening a segment start-up
    /// left closed).
    pub fn touch(&self) {
        if let Some(segment) = self.opened().filter(|segment| segment.is_sealed()) {
            segment.touched.store(true, Ordering::Relaxed);
        }
    }

    /// Lets go of the pages of a sealed segment's mapping that reads touched, so that they
    /// leave the broker's resident set (they stay in the page cache, for the kernel to keep or
    /// reclaim). Does nothing when no read touched it since the last time.
    pub fn release_pages(&self) {
        let segment = match &self.data {
            Records::Closed(closed) => match closed.opened.get() {
                Some(segment) => segment,
                None => return,
            },
            Records::Owned(_) | Records::Mapped(..) => self,
        };
        let Records::Mapped(map, _) = &segment.data else { return };
        if !segment.touched.swap(false, Ordering::Relaxed) {
            return;
        }
        // SAFETY: the mapping is a shared, read-only mapping of a file whose bytes never change
        // (see `map_file`): after MADV_DONTNEED a page is read in again from the same file,
        // with the same bytes, so any message still borrowing from it reads what it read.
        if let Err(error) = unsafe { map.unchecked_advise(UncheckedAdvice::DontNeed) } {
            tracing::debug!(%error, "cannot let go of a segment's pages");
        }
    }

    /// Where the batch (or record) holding `offset` starts, and the offset of its first
    /// message, stepping from the last index entry at or before it.
    fn position(&self, offset: u64) -> Option<(usize, u64)> {
        let i = offset.checked_sub(self.base_offset).filter(|&i| i < self.count)?;
        let nearest = self.index.partition_point(|e| u64::from(e.offset) <= i).checked_sub(1)?;
        let entry = self.index.get(nearest)?;
        let (mut at, mut first) = (entry.at as usize, u64::from(entry.offset));
        let bytes = self.data.bytes();
        loop {
            let count = match self.version {
                2.. => u64::from(bytes.get(at + 16..at + 20).map(|b| read_u32(b, 0))?),
                _ => 1,
            };
            if i < first + count {
                return Some((at, self.base_offset + first));
            }
            let body_len = bytes.get(at..at + 4).map(|b| read_u32(b, 0))? as usize;
            at = at.checked_add(RECORD_PREFIX + body_len)?;
            first += count;
        }
    }

    /// The batch starting at byte `at`: `None` when the bytes there are no whole batch. Nothing
    /// read from a file is trusted to be in bounds, and a sealed segment's batches, which
    /// opening trusted to its index rather than checked, are checked against their checksums
    /// as they are read.
    fn batch(&self, at: usize) -> Option<Batch<'_>> {
        let bytes = self.data.bytes();
        let body_len = bytes.get(at..at + 4).map(|b| read_u32(b, 0))? as usize;
        let next = at.checked_add(RECORD_PREFIX)?.checked_add(body_len)?;
        let body = bytes.get(at + RECORD_PREFIX..next).filter(|b| b.len() >= BATCH_HEADER_2)?;
        if self.is_sealed() && crc32c::crc32c(body) != read_u32(bytes, at + 4) {
            return None;
        }
        Some(Batch {
            base: read_u64(body, 0),
            count: u64::from(read_u32(body, 8)),
            timestamp: read_u64(body, 12),
            body,
            next,
        })
    }

    /// The record (of format 1 or 0) starting at byte `at`, which has offset `offset`, and
    /// where the next starts. `None` when the bytes there are no whole record, as for
    /// [`Segment::batch`].
    fn record(&self, at: usize, offset: u64) -> Option<(Message<'_>, usize)> {
        let bytes = self.data.bytes();
        let body_len = bytes.get(at..at + 4).map(|b| read_u32(b, 0))? as usize;
        let next = at.checked_add(RECORD_PREFIX)?.checked_add(body_len)?;
        let body = bytes.get(at + RECORD_PREFIX..next).filter(|b| b.len() >= BODY_HEADER)?;
        if self.is_sealed() && crc32c::crc32c(body) != read_u32(bytes, at + 4) {
            return None;
        }
        let timestamp = read_u64(body, 0);
        let key_len = read_u32(body, 8);
        let rest = &body[BODY_HEADER..];
        let (key, value) = if key_len == NO_KEY {
            (None, rest)
        } else {
            let key_len = key_len as usize;
            (Some(rest.get(..key_len)?), rest.get(key_len..)?)
        };
        Some((Message { offset, timestamp, key, value, headers: Vec::new() }, next))
    }
}

/// A batch as read from a segment's bytes.
struct Batch<'a> {
    /// The offset of its first message.
    base: u64,
    /// How many messages it holds.
    count: u64,
    /// The timestamp of all of them.
    timestamp: u64,
    /// Its body: the fixed fields, then the entries.
    body: &'a [u8],
    /// Where the next batch starts.
    next: usize,
}

/// The messages a read takes from one batch (of format 3), found by their lengths.
struct Taking<'b, 'a> {
    /// The batch.
    batch: &'b Batch<'a>,
    /// The first offset wanted, and the offset the read ends before.
    range: (u64, u64),
    /// What it took so far, if anything.
    taken: Option<Taken>,
}

/// The messages taken from a batch.
#[derive(Clone, Copy)]
struct Taken {
    /// The offset of the first, and where its entry starts in the body.
    first: (u64, usize),
    /// The offset after the last, and where the entry after it starts.
    next: (u64, usize),
    /// The bytes they count against a budget.
    size: usize,
}

/// Why a read stopped in a batch.
enum Stop {
    /// It took what it wanted from this batch and goes on with the next.
    Batch,
    /// It reached the offset it ends before.
    End,
    /// The budget refused a message.
    Budget,
}

impl<'b, 'a> Taking<'b, 'a> {
    /// A read of `batch` wanting the messages from `from` up to `end`.
    fn from(batch: &'b Batch<'a>, from: u64, end: u64) -> Taking<'b, 'a> {
        Taking { batch, range: (from, end), taken: None }
    }

    /// Takes the batch's messages in the range for as long as `budget` takes them.
    fn read(&mut self, budget: &mut Budget) -> Result<Stop, u64> {
        let Batch { base, count, body, .. } = *self.batch;
        let (from, end) = self.range;
        let mut entries = entries_of(body, 3).ok_or(from.max(base))?;
        for offset in base..base + count {
            let at = entries.position();
            let (key, value, headers) = entries.next().ok_or(offset.max(from))?;
            if offset < from {
                continue;
            }
            if offset >= end {
                return Ok(Stop::End);
            }
            // The message's size as `Message::size` counts it, from the lengths alone: the
            // batch's checksum stands for its bytes.
            let size =
                key.map_or(0, <[u8]>::len) + value.len() + headers_size(headers).ok_or(offset)?;
            if !budget.take_bytes(size) {
                return Ok(Stop::Budget);
            }
            let (first, taken) = self.taken.map_or(((offset, at), 0), |t| (t.first, t.size));
            let next = (offset + 1, entries.position());
            self.taken = Some(Taken { first, next, size: taken + size });
        }
        Ok(if base + count >= end { Stop::End } else { Stop::Batch })
    }

    /// The piece of what was taken, from `bytes`, the segment's bytes from the batch on: the
    /// batch as kept when all of it was, else the messages taken under a head of their own.
    fn piece(&self, bytes: &'a [u8]) -> Option<Piece<'a>> {
        let Taken { first: (first, from), next: (next, to), size } = self.taken?;
        let Batch { base, count, timestamp, body, .. } = *self.batch;
        if first == base && next == base + count {
            let head = bytes.get(..HEAD)?.try_into().ok()?;
            return Some(Piece::whole(head, body.get(BATCH_HEADER..)?, size));
        }
        let flags = body[BATCH_HEADER_2];
        let count = u32::try_from(next - first).ok()?;
        Some(Piece::cut((first, count), timestamp, flags, body.get(from..to)?, size))
    }
}

/// The entries of the body of a batch of format `version`; `None` when its flags are not ones
/// this broker writes.
fn entries_of(body: &[u8], version: u16) -> Option<Entries<'_>> {
    if version < 3 {
        return Some(Entries::new(body, BATCH_HEADER_2, false));
    }
    match *body.get(BATCH_HEADER_2)? {
        0 => Some(Entries::new(body, BATCH_HEADER, false)),
        HAS_HEADERS => Some(Entries::new(body, BATCH_HEADER, true)),
        _ => None,
    }
}

/// Whether any of `messages` has headers: then its batch carries them for each message.
fn any_headers(messages: &[NewMessage<'_>]) -> bool {
    messages.iter().any(|m| !m.headers.is_empty())
}

/// The bytes a message's entry takes in a batch, with headers or without.
#[inline]
fn entry_len(message: &NewMessage<'_>, headers: bool) -> usize {
    let key = message.key.map_or(0, |k| k.len() as u64 + 1);
    let lengths = varint_len(key) + varint_len(message.value.len() as u64);
    let key_value = message.key.map_or(0, <[u8]>::len) + message.value.len();
    match headers {
        true => {
            let len = headers_len(&message.headers);
            lengths + varint_len(len as u64) + key_value + len
        }
        false => lengths + key_value,
    }
}

/// Bytes of a batch's body before its entries in format `version` (2 or later).
fn batch_header(version: u16) -> usize {
    if version < 3 {
        BATCH_HEADER_2
    } else {
        BATCH_HEADER
    }
}

/// Writes `n` as a varint into `out` at `at` (which has room for [`MAX_VARINT`] bytes there)
/// and returns where it ends.
fn put_varint_at(out: &mut [u8], mut at: usize, mut n: u64) -> usize {
    while n >= 0x80 {
        out[at] = (n as u8) | 0x80;
        n >>= 7;
        at += 1;
    }
    out[at] = n as u8;
    at + 1
}

/// Whether a batch or record starting after `count` messages gets an index entry: the first,
/// and then one at least every [`INDEX_STRIDE`] messages.
fn needs_entry(index: &[Entry], count: u64) -> bool {
    index.last().is_none_or(|e| count >= u64::from(e.offset) + INDEX_STRIDE)
}

/// The index entry of a batch or record starting at byte `at` after `count` messages.
fn entry(count: u64, at: usize) -> Entry {
    // A segment is at most 4 GiB (as its positions are u32), and holds fewer messages than
    // bytes.
    Entry { offset: count as u32, at: at as u32 }
}

/// What checking a batch (or record) found: how many messages it holds, their timestamp and
/// bytes of keys and values, and where the next starts.
struct Unit {
    count: u64,
    timestamp: u64,
    payload: u64,
    next: usize,
}

/// Checks the batch (format 2) or record (formats 1 and 0) starting at byte `at` of `data`. A
/// batch must begin at offset `expected`, when known.
fn check_unit(
    data: &[u8],
    at: usize,
    version: u16,
    expected: Option<u64>,
) -> Result<Unit, &'static str> {
    if version < 2 {
        let body_len = check_record(data, at)?;
        let body = &data[at + RECORD_PREFIX..at + RECORD_PREFIX + body_len];
        return Ok(Unit {
            count: 1,
            timestamp: read_u64(body, 0),
            payload: (body_len - BODY_HEADER) as u64,
            next: at + RECORD_PREFIX + body_len,
        });
    }
    if data.len() - at < RECORD_PREFIX + batch_header(version) {
        return Err("the batch is cut short");
    }
    let body_len = read_u32(data, at) as usize;
    let body_start = at + RECORD_PREFIX;
    if body_len < batch_header(version) || data.len() - body_start < body_len {
        return Err("the batch is cut short");
    }
    let body = &data[body_start..body_start + body_len];
    if crc32c::crc32c(body) != read_u32(data, at + 4) {
        return Err("the batch fails its checksum");
    }
    let count = u64::from(read_u32(body, 8));
    if count == 0 {
        return Err("the batch holds no message");
    }
    if expected.is_some_and(|expected| read_u64(body, 0) != expected) {
        return Err("the batch's first offset does not follow on from the batch before it");
    }
    let mut entries =
        entries_of(body, version).ok_or("the batch has flags this broker never sets")?;
    let mut payload = 0;
    for _ in 0..count {
        let (key, value, headers) = entries.next().ok_or("the batch's messages overrun it")?;
        let headers = read_headers(headers).ok_or("a message's headers do not read back")?;
        payload +=
            (key.map_or(0, <[u8]>::len) + value.len() + protocol::headers_size(&headers)) as u64;
    }
    if entries.position() != body.len() {
        return Err("the batch holds bytes after its messages");
    }
    Ok(Unit { count, timestamp: read_u64(body, 12), payload, next: body_start + body_len })
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

/// Looks for a whole, valid batch (or record, in formats 1 and 0) starting anywhere from byte
/// `from` of `data` on.
fn find_whole_record(data: &[u8], from: usize, version: u16) -> Option<WholeRecordAfter> {
    let searched = data.len().saturating_sub(from);
    let mut budget = searched.saturating_mul(SEARCH_BUDGET_PER_BYTE).max(SEARCH_BUDGET_MIN);
    let smallest = RECORD_PREFIX + if version < 2 { BODY_HEADER } else { batch_header(version) };
    for at in from..data.len() {
        if data.len() - at < smallest {
            return None;
        }
        // The cheap tests first: most positions do not even hold a length that fits.
        let body_len = read_u32(data, at) as usize;
        if body_len < smallest - RECORD_PREFIX || data.len() - at - RECORD_PREFIX < body_len {
            continue;
        }
        if budget < body_len {
            return Some(WholeRecordAfter::Unknown);
        }
        budget -= body_len;
        if check_unit(data, at, version, None).is_ok() {
            return Some(WholeRecordAfter::At(at));
        }
    }
    None
}

/// The bytes of records of format 1 (without the header), as a broker before batches wrote
/// them, of `messages` (whose offsets they do not hold).
#[cfg(test)]
pub(crate) fn old_records(messages: &[Message<'_>]) -> Vec<u8> {
    let mut data = Vec::new();
    for &Message { timestamp, key, value, .. } in messages {
        let mut body = timestamp.to_le_bytes().to_vec();
        body.extend_from_slice(&key.map_or(NO_KEY, |k| k.len() as u32).to_le_bytes());
        body.extend_from_slice(key.unwrap_or_default());
        body.extend_from_slice(value);
        data.extend_from_slice(&(body.len() as u32).to_le_bytes());
        data.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        data.extend_from_slice(&body);
    }
    data
}

/// A segment file of format 3 without headers in any batch, as a broker before headers wrote
/// it (format 2): each batch without its flags byte.
#[cfg(test)]
pub(crate) fn as_format_2(file: &[u8]) -> Vec<u8> {
    let mut out = file[..HEADER_LEN].to_vec();
    out[6..8].copy_from_slice(&2u16.to_le_bytes());
    let mut at = HEADER_LEN;
    while at < file.len() {
        let body_len = read_u32(file, at) as usize;
        let body = &file[at + RECORD_PREFIX..at + RECORD_PREFIX + body_len];
        assert_eq!(body[BATCH_HEADER_2], 0, "a batch with headers has no format 2");
        let mut old = body[..BATCH_HEADER_2].to_vec();
        old.extend_from_slice(&body[BATCH_HEADER..]);
        out.extend_from_slice(&(old.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&old).to_le_bytes());
        out.extend_from_slice(&old);
        at += RECORD_PREFIX + body_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Header as MessageHeader;

    #[test]
    fn headers_read_back_in_order_and_a_batch_without_them_costs_one_byte() {
        let mut segment = Segment::new(0, 4096);
        let headers = vec![
            MessageHeader { key: "trace", value: Some(b"abc") },
            MessageHeader { key: "trace", value: None },
            MessageHeader { key: "", value: Some(b"") },
        ];
        let with =
            [NewMessage { key: Some(b"k"), value: b"one", headers: headers.clone() }, new(b"two")];
        segment.push_batch(5, &with);
        let plain_start = segment.len_bytes();
        segment.push_batch(6, &[new(b"three")]);
        // Format 2's batch: 8 + 20 bytes of header, 2 of lengths, 5 of value; one byte more.
        assert_eq!(segment.len_bytes() - plain_start, 8 + 20 + 2 + 5 + 1);
        let mut out = Vec::new();
        assert_eq!(segment.read(0, 3, &mut out, |_| true), Ok(true));
        assert_eq!(out[0].headers, headers);
        assert!(out[1].headers.is_empty() && out[2].headers.is_empty());
        assert_eq!(
            (out[0].value, out[1].value, out[2].value),
            (&b"one"[..], &b"two"[..], &b"three"[..])
        );
        assert_eq!(segment.payload_bytes(), 1 + 3 + (5 + 3) + 5 + 3 + 5);
        let (again, damage) = Segment::recover(0, segment.data.bytes().to_vec(), 4096);
        assert_eq!(damage, None);
        assert_eq!(again.payload_bytes(), segment.payload_bytes());
        assert_eq!(again.get(0).unwrap().headers, headers);
    }

    #[test]
    fn a_header_region_that_does_not_read_back_is_a_damaged_batch() {
        let mut segment = Segment::new(0, 4096);
        let headers = vec![MessageHeader { key: "name", value: Some(b"v") }];
        segment.push_batch(5, &[NewMessage { key: None, value: b"one", headers }]);
        let mut bytes = segment.data.bytes().to_vec();
        // A header name that is not UTF-8, under a checksum that matches: no panic, a damaged
        // batch.
        let at = bytes.windows(4).position(|w| w == b"name").unwrap();
        bytes[at] = 0xff;
        let crc = crc32c::crc32c(&bytes[HEADER_LEN + RECORD_PREFIX..]);
        bytes[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&crc.to_le_bytes());
        let (kept, damage) = Segment::recover(0, bytes.clone(), 4096);
        assert_eq!(kept.next_offset(), 0);
        assert_eq!(damage.map(|d| d.reason), Some("a message's headers do not read back"));
        // A headers length past the entry, and a flag this broker never sets, likewise.
        let flags = HEADER_LEN + RECORD_PREFIX + BATCH_HEADER_2;
        bytes[at] = b'n';
        bytes[flags] = 3;
        let crc = crc32c::crc32c(&bytes[HEADER_LEN + RECORD_PREFIX..]);
        bytes[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&crc.to_le_bytes());
        let (_, damage) = Segment::recover(0, bytes.clone(), 4096);
        assert_eq!(damage.map(|d| d.reason), Some("the batch has flags this broker never sets"));
        bytes[flags] = HAS_HEADERS;
        bytes[flags + 3] = 0x7f;
        let crc = crc32c::crc32c(&bytes[HEADER_LEN + RECORD_PREFIX..]);
        bytes[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&crc.to_le_bytes());
        let (_, damage) = Segment::recover(0, bytes, 4096);
        assert_eq!(damage.map(|d| d.reason), Some("the batch's messages overrun it"));
    }

    #[test]
    fn a_segment_of_format_2_is_read_and_never_appended_to() {
        let mut segment = Segment::new(3, 4096);
        segment.push_batch(1, &[NewMessage::new(Some(b"k"), b"one"), new(b"two")]);
        segment.push_batch(2, &[new(b"three")]);
        let old = as_format_2(segment.data.bytes());
        assert_eq!(old.len(), segment.len_bytes() - 2);
        let (back, damage) = Segment::recover(3, old, 4096);
        assert_eq!((damage, back.version()), (None, 2));
        let mut out = Vec::new();
        assert_eq!(back.read(4, 6, &mut out, |_| true), Ok(true));
        let got: Vec<_> = out.iter().map(|m| (m.offset, m.timestamp, m.key, m.value)).collect();
        assert_eq!(got, [(4, 1, None, &b"two"[..]), (5, 2, None, &b"three"[..])]);
        assert!(out.iter().all(|m| m.headers.is_empty()));
        assert!(!back.fits(1), "appends go to a new segment");
    }

    #[test]
    fn records_read_back_as_written() {
        let mut segment = Segment::new(10, 1024);
        assert_eq!(segment.push(1, None, b"one"), 10);
        assert_eq!(segment.push(2, Some(b"k"), b""), 11);
        assert_eq!(segment.push(3, Some(b""), b"three"), 12);
        assert_eq!(
            segment.get(10).unwrap(),
            Message { offset: 10, timestamp: 1, key: None, value: b"one", headers: Vec::new() }
        );
        assert_eq!(
            segment.get(11).unwrap(),
            Message { offset: 11, timestamp: 2, key: Some(b"k"), value: b"", headers: Vec::new() }
        );
        assert_eq!(
            segment.get(12).unwrap(),
            Message {
                offset: 12,
                timestamp: 3,
                key: Some(b""),
                value: b"three",
                headers: Vec::new()
            }
        );
        assert_eq!(segment.next_offset(), 13);
        assert_eq!(segment.payload_bytes(), 3 + 1 + 5);
        assert_eq!(segment.last_timestamp(), 3);
    }

    fn new(value: &[u8]) -> NewMessage<'_> {
        NewMessage::new(None, value)
    }

    #[test]
    fn a_batch_larger_than_the_capacity_fits_an_empty_segment_only() {
        let mut segment = Segment::new(0, 16);
        let big = [7; 100];
        assert!(segment.fits(Segment::batch_len(&[new(&big), new(b"x")])));
        segment.push_batch(0, &[new(&big), new(b"x")]);
        assert!(!segment.fits(Segment::batch_len(&[new(b"x")])));
    }

    #[test]
    fn an_append_is_one_batch_and_reads_start_and_end_inside_batches() {
        let mut segment = Segment::new(100, 1 << 16);
        let first: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; usize::from(i) * 60]).collect();
        let batch: Vec<NewMessage<'_>> = first.iter().map(|v| new(v)).collect();
        assert_eq!(segment.push_batch(7, &batch), 100);
        let keyed = [NewMessage::new(Some(b"k"), b"a"), NewMessage::new(Some(b""), b""), new(b"c")];
        assert_eq!(segment.push_batch(8, &keyed), 105);
        assert_eq!(segment.next_offset(), 108);
        // Two batches: one header each, and 2 or 3 bytes of lengths a message.
        let lengths = 2 + 2 + 2 + 3 + 3 + 2 + 2 + 2;
        assert_eq!(
            segment.len_bytes(),
            HEADER_LEN + 2 * (RECORD_PREFIX + BATCH_HEADER) + lengths + 600 + 2 + 1
        );
        assert_eq!(segment.index.len(), 1, "one entry covers fewer than the stride's messages");

        let mut out = Vec::new();
        assert_eq!(segment.read(103, 107, &mut out, |_| true), Ok(true));
        let got: Vec<_> = out.iter().map(|m| (m.offset, m.timestamp, m.key, m.value)).collect();
        assert_eq!(
            got,
            vec![
                (103, 7, None, &first[3][..]),
                (104, 7, None, &first[4][..]),
                (105, 8, Some(&b"k"[..]), &b"a"[..]),
                (106, 8, Some(&b""[..]), &b""[..]),
            ]
        );
        // A budget that stops inside a batch.
        let mut out = Vec::new();
        let mut left = 2;
        let taken = segment.read(101, 108, &mut out, |_| {
            left -= 1;
            left >= 0
        });
        assert_eq!((taken, out.len(), out[1].offset), (Ok(false), 2, 102));
        assert_eq!(segment.get(107).map(|m| m.value), Some(&b"c"[..]));
        assert_eq!(segment.get(108), None);
        assert_eq!(segment.get(99), None);

        // Recovered from its bytes, it reads the same.
        let (again, damage) = Segment::recover(100, segment.data.bytes().to_vec(), 1 << 16);
        assert_eq!(damage, None);
        assert_eq!((again.next_offset(), again.payload_bytes()), (108, segment.payload_bytes()));
        assert_eq!(again.get(104).map(|m| m.value.len()), Some(240));
    }

    #[test]
    fn a_torn_batch_at_the_tail_is_dropped_whole() {
        let mut segment = Segment::new(0, 4096);
        segment.push_batch(1, &[new(b"one"), new(b"two")]);
        let whole = segment.data.bytes().to_vec();
        segment.push_batch(2, &[new(b"three"), new(b"four"), new(b"five")]);
        let bytes = segment.data.bytes().to_vec();
        for cut in whole.len() + 1..bytes.len() {
            let (kept, damage) = Segment::recover(0, bytes[..cut].to_vec(), 4096);
            assert_eq!(
                (kept.next_offset(), kept.persisted_len()),
                (2, whole.len()),
                "cut at {cut}"
            );
            let damage = damage.unwrap();
            assert_eq!((damage.offset, damage.reason), (2, "the batch is cut short"));
            assert_eq!(damage.whole_record_after, None);
        }
        // A batch whose base offset does not follow on is damage, not a batch to serve.
        let mut other = Segment::new(0, 4096);
        other.push_batch(1, &[new(b"one"), new(b"two")]);
        let mut skipped = Segment::new(5, 4096);
        skipped.push_batch(2, &[new(b"three")]);
        let mut bytes = other.data.bytes().to_vec();
        bytes.extend_from_slice(&skipped.data.bytes()[HEADER_LEN..]);
        let (kept, damage) = Segment::recover(0, bytes, 4096);
        assert_eq!(kept.next_offset(), 2);
        assert_eq!(
            damage.map(|d| d.reason),
            Some("the batch's first offset does not follow on from the batch before it")
        );
    }

    #[test]
    fn a_segment_of_format_1_is_read_and_never_appended_to() {
        let records = old_records(&[
            Message { offset: 0, timestamp: 1, key: None, value: b"one", headers: Vec::new() },
            Message {
                offset: 0,
                timestamp: 2,
                key: Some(b"k"),
                value: b"two",
                headers: Vec::new(),
            },
            Message { offset: 0, timestamp: 3, key: None, value: b"", headers: Vec::new() },
        ]);
        let mut file = format::header(SEGMENT).to_vec();
        file[6] = 1;
        file.extend_from_slice(&records);
        for (bytes, header) in [(file, true), (records, false)] {
            let (segment, damage) = Segment::recover(9, bytes, 4096);
            assert_eq!(damage, None);
            assert_eq!((segment.version(), segment.has_header()), (u16::from(header), header));
            assert_eq!((segment.next_offset(), segment.payload_bytes()), (12, 3 + 1 + 3));
            let mut out = Vec::new();
            assert_eq!(segment.read(10, 12, &mut out, |_| true), Ok(true));
            assert_eq!(
                out[0],
                Message {
                    offset: 10,
                    timestamp: 2,
                    key: Some(b"k"),
                    value: b"two",
                    headers: Vec::new()
                }
            );
            assert_eq!(
                out[1],
                Message { offset: 11, timestamp: 3, key: None, value: b"", headers: Vec::new() }
            );
            assert!(!segment.fits(1), "appends go to a new segment");
        }
    }

    #[test]
    fn recovery_keeps_whole_records_and_reports_the_first_bad_one() {
        let mut segment = Segment::new(5, 256);
        segment.push(1, None, b"one");
        segment.push(2, Some(b"k"), b"two");
        let whole = segment.data.bytes().to_vec();
        let (recovered, damage) = Segment::recover(5, whole.clone(), 256);
        assert_eq!(damage, None);
        assert_eq!(recovered.next_offset(), 7);
        assert_eq!(recovered.get(6).unwrap().value, b"two");
        assert_eq!(recovered.payload_bytes(), segment.payload_bytes());

        // A torn tail: the last batch cut in the middle.
        let (torn, damage) = Segment::recover(5, whole[..whole.len() - 2].to_vec(), 256);
        assert_eq!(torn.next_offset(), 6);
        assert_eq!(
            damage.as_ref().map(|d| (d.offset, d.reason)),
            Some((6, "the batch is cut short"))
        );
        assert!(torn.unpersisted().is_empty());

        assert_eq!(damage.and_then(|d| d.whole_record_after), None);

        // A flipped byte in the first batch's value: the second batch is whole after it.
        let mut flipped = whole.clone();
        flipped[HEADER_LEN + RECORD_PREFIX + BATCH_HEADER + 2] ^= 0x20;
        let (kept, damage) = Segment::recover(5, flipped, 256);
        assert_eq!(kept.next_offset(), 5);
        let second = HEADER_LEN + Segment::batch_len(&[new(b"one")]);
        assert_eq!(
            damage.map(|d| (d.at_byte, d.reason, d.whole_record_after)),
            Some((HEADER_LEN, "the batch fails its checksum", Some(WholeRecordAfter::At(second))))
        );

        // A header cut short: nothing of the file was ever whole.
        let (torn, damage) = Segment::recover(5, whole[..3].to_vec(), 256);
        assert_eq!((torn.next_offset(), torn.persisted_len()), (5, 0));
        assert_eq!(damage.map(|d| d.whole_record_after), Some(None));

        // A header of a later version: refused, never read as records.
        let mut later = whole.clone();
        later[6] = 4;
        let (_, damage) = Segment::recover(5, later, 256);
        assert_eq!(
            damage.map(|d| d.reason),
            Some("the segment is of a newer format version than this broker reads")
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
        let mut data = segment.data.bytes().to_vec();
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
    fn every_record_is_found_through_the_sparse_index_and_cut_anywhere() {
        let mut segment = Segment::new(100, 1 << 16);
        let values: Vec<Vec<u8>> =
            (0..INDEX_STRIDE * 3 + 5).map(|i| vec![i as u8; i as usize % 7]).collect();
        for value in &values {
            segment.push(1, None, value);
        }
        assert_eq!(segment.index.len(), 4);
        for (i, value) in values.iter().enumerate() {
            assert_eq!(segment.get(100 + i as u64).unwrap().value, &value[..]);
        }
        assert_eq!(segment.get(99), None);
        assert_eq!(segment.get(100 + values.len() as u64), None);
        let keep = INDEX_STRIDE + 1;
        segment.truncate(100 + keep);
        assert_eq!((segment.next_offset(), segment.index.len()), (100 + keep, 2));
        assert_eq!(segment.push(2, None, b"after"), 100 + keep);
        assert_eq!(segment.get(100 + keep).unwrap().value, b"after");
        assert_eq!(segment.get(100 + keep - 1).unwrap().value, &values[keep as usize - 1][..]);
    }

    #[test]
    fn a_sealed_segment_reads_from_its_file_and_frees_its_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let mut segment = Segment::new(0, 4096);
        for i in 0..100u32 {
            segment.push(u64::from(i), Some(b"k"), &i.to_le_bytes());
        }
        std::fs::write(&path, segment.unpersisted()).unwrap();
        assert!(segment.seal(&path).is_ok());
        assert!(!segment.is_sealed(), "unwritten records keep a segment in memory");
        segment.mark_persisted();
        segment.seal(&path).unwrap();
        assert!(segment.is_sealed());
        assert_eq!(segment.memory_bytes(), 0);
        let mut out = Vec::new();
        assert_eq!(segment.read(10, 100, &mut out, |_| true), Ok(true));
        assert_eq!(out.len(), 90);
        assert_eq!(
            out[5],
            Message {
                offset: 15,
                timestamp: 15,
                key: Some(b"k"),
                value: &15u32.to_le_bytes(),
                headers: Vec::new()
            }
        );

        // A file that no longer holds what was written is not mapped.
        let mut other = Segment::new(0, 4096);
        other.push(1, None, b"x");
        other.mark_persisted();
        std::fs::write(&path, b"y").unwrap();
        assert!(other.seal(&path).is_err());
        assert!(!other.is_sealed());
    }

    #[test]
    fn reads_stop_safely_at_bytes_that_are_no_record() {
        let mut segment = Segment::new(0, 4096);
        segment.push(1, None, b"one");
        segment.push(2, None, b"two");
        // As if the file under a sealed segment had changed: the second record claims a body
        // far past the end.
        let second = HEADER_LEN + Segment::batch_len(&[new(b"one")]);
        segment.data.owned()[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut out = Vec::new();
        assert_eq!(segment.read(0, 2, &mut out, |_| true), Err(1));
        assert_eq!(out.len(), 1);
        assert_eq!(segment.get(1), None);
    }

    #[test]
    fn the_checksum_covers_the_body() {
        let mut segment = Segment::new(0, 64);
        segment.push(5, Some(b"k"), b"v");
        let bytes = &segment.data.bytes()[HEADER_LEN..];
        assert_eq!(read_u32(bytes, 4), crc32c::crc32c(&bytes[RECORD_PREFIX..]));
    }
}
