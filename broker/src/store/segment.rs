//! A segment: one contiguous run of records and the index of where each one starts.
//!
//! Records are laid out back to back in one buffer, so a million messages cost a handful of
//! allocations rather than a million, and a read borrows keys and values straight out of it. Once
//! a segment is sealed (full, and written to its file), the buffer is its file, mapped: its
//! records then cost page cache, not the broker's memory. An index of where every
//! [`INDEX_STRIDE`]-th record starts finds a record's bytes.
//!
//! # Format
//! ```text
//! segment = header("BRKLOG", 1) record*      (format 0, before headers: record*)
//! record  = body_len:u32le crc:u32le body
//! body   = timestamp_ms:u64le key_len:u32le key value
//! ```
//! `crc` is the CRC-32C of `body`; `key_len` is `u32::MAX` when the message has no key; the value
//! is whatever follows the key up to `body_len`. A record's offset is not stored: it is the
//! segment's base offset plus the record's position in the index.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use memmap2::{Mmap, UncheckedAdvice};
use protocol::Message;

use super::format::{self, read_u32, read_u64, Header, HEADER_LEN, SEGMENT};
use super::index::{self, Index};
use crate::files;

/// Bytes before the body: its length and its checksum.
pub const RECORD_PREFIX: usize = 8;
/// Bytes of the body before the key: the timestamp and the key length.
const BODY_HEADER: usize = 12;
/// `key_len` of a message with no key.
const NO_KEY: u32 = u32::MAX;
/// The index holds where every this-many-th record starts: a read finds its first record by
/// stepping over at most `INDEX_STRIDE - 1` records from there, and the index of a 20 GB log
/// of 100-byte messages takes 20 MB rather than 640.
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
    /// The bytes of records the segment takes before it reports itself full.
    capacity: usize,
    /// Where every [`INDEX_STRIDE`]-th record starts in `data`: record `i` (offset
    /// `base_offset + i`) is found by stepping from entry `i / INDEX_STRIDE`.
    index: Vec<u32>,
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
        let mut data = Vec::with_capacity(capacity.max(HEADER_LEN));
        data.extend_from_slice(&format::header(SEGMENT));
        Segment {
            base_offset,
            data: Records::Owned(data),
            start: HEADER_LEN,
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
        let start = match format::read_header(&map, SEGMENT) {
            Header::Known(_) => HEADER_LEN,
            Header::None => 0,
            Header::Unknown(_) | Header::Torn => return None,
        };
        let fits = index.segment_len == len as u64
            && u64::from(index.stride) == INDEX_STRIDE
            && index.positions.len() as u64 == index.count.div_ceil(INDEX_STRIDE)
            && index.positions.first().is_none_or(|&p| p as usize == start)
            && index.positions.windows(2).all(|w| w[0] < w[1])
            && index.positions.last().is_none_or(|&p| (p as usize) < len);
        let segment = fits.then(|| Segment {
            base_offset,
            data: Records::Mapped(map, len),
            start,
            capacity: 0,
            index: index.positions.clone(),
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
    /// long, that has an index file: nothing of either is read until a read needs them. Its
    /// count comes from the segment files' names, and its payload bytes from its length (as a
    /// file of format 1: a file of format 0 has 8 bytes fewer of framing). Its last timestamp
    /// is read when retention by time asks for it.
    pub fn closed(base_offset: u64, count: u64, path: PathBuf, len: usize) -> Segment {
        let framing = count.saturating_mul((RECORD_PREFIX + BODY_HEADER) as u64);
        Segment {
            base_offset,
            data: Records::Closed(Box::new(Closed { path, len, opened: OnceLock::new() })),
            start: HEADER_LEN,
            capacity: 0,
            index: Vec::new(),
            count,
            last_timestamp: 0,
            payload_bytes: (len as u64).saturating_sub(HEADER_LEN as u64 + framing),
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
            positions: self.index.clone(),
        }
    }

    fn check(base_offset: u64, data: Records, capacity: usize) -> (Segment, Option<Damage>) {
        let mut segment = Segment { data, ..Segment::new(base_offset, 0) };
        let bytes = segment.data.bytes();
        let mut at = match format::read_header(bytes, SEGMENT) {
            Header::Known(_) => HEADER_LEN,
            Header::None => 0,
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
            Header::Torn => 0,
        };
        segment.start = at;
        let damage = loop {
            if at == bytes.len() {
                break None;
            }
            match check_record(bytes, at) {
                Ok(body_len) => {
                    let body = &bytes[at + RECORD_PREFIX..at + RECORD_PREFIX + body_len];
                    if segment.count % INDEX_STRIDE == 0 {
                        segment.index.push(at as u32);
                    }
                    segment.count += 1;
                    segment.last_timestamp = read_u64(body, 0);
                    segment.payload_bytes += (body_len - BODY_HEADER) as u64;
                    at += RECORD_PREFIX + body_len;
                }
                Err(reason) => {
                    let offset = base_offset + segment.count;
                    let whole_record_after = find_whole_record(bytes, at + 1);
                    break Some(Damage { at_byte: at, offset, reason, whole_record_after });
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

    /// The bytes a record of this key and value takes.
    pub fn record_len(key: Option<&[u8]>, value: &[u8]) -> usize {
        RECORD_PREFIX + BODY_HEADER + key.map_or(0, <[u8]>::len) + value.len()
    }

    /// Whether a record of `len` bytes still fits within the capacity. An empty segment takes
    /// any record, so that one larger than the usual capacity still gets stored; a sealed one
    /// takes none.
    pub fn fits(&self, len: usize) -> bool {
        match self.data {
            Records::Mapped(..) | Records::Closed(..) => false,
            Records::Owned(_) => self.count == 0 || self.len_bytes() + len <= self.capacity,
        }
    }

    /// Appends a record and returns its offset.
    pub fn push(&mut self, timestamp: u64, key: Option<&[u8]>, value: &[u8]) -> u64 {
        let data = self.data.owned();
        let start = data.len();
        let key_len = key.map_or(NO_KEY, |k| k.len() as u32);
        let body_len = Self::record_len(key, value) - RECORD_PREFIX;
        // The fixed fields go in with one copy; the checksum is filled in once the body is in.
        let mut head = [0; RECORD_PREFIX + BODY_HEADER];
        head[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
        head[8..16].copy_from_slice(&timestamp.to_le_bytes());
        head[16..].copy_from_slice(&key_len.to_le_bytes());
        data.extend_from_slice(&head);
        data.extend_from_slice(key.unwrap_or_default());
        data.extend_from_slice(value);
        let body_start = start + RECORD_PREFIX;
        let crc = crc32c::crc32c(&data[body_start..]);
        data[start + 4..body_start].copy_from_slice(&crc.to_le_bytes());
        if self.count % INDEX_STRIDE == 0 {
            self.index.push(start as u32);
        }
        self.count += 1;
        self.last_timestamp = timestamp;
        self.payload_bytes += (key.map_or(0, <[u8]>::len) + value.len()) as u64;
        self.base_offset + self.count - 1
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

    /// Whether the file begins with a format header (format 1), rather than being of format 0;
    /// as far as is known: a segment not opened yet counts as having one.
    pub fn has_header(&self) -> bool {
        match &self.data {
            Records::Closed(closed) => closed.opened.get().is_none_or(Segment::has_header),
            Records::Owned(_) | Records::Mapped(..) => self.start == HEADER_LEN,
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

    /// Drops the records from `offset` on (an append that could not be made durable). Returns
    /// how many messages and payload bytes went.
    pub fn truncate(&mut self, offset: u64) -> (u64, u64) {
        let keep = offset.saturating_sub(self.base_offset);
        if keep >= self.count {
            return (0, 0);
        }
        let Some(cut) = self.position(self.base_offset + keep) else { return (0, 0) };
        let mut dropped = 0;
        let mut at = cut;
        for offset in self.base_offset + keep..self.next_offset() {
            let Some((message, next)) = self.record(at, offset) else { break };
            dropped += (message.key.map_or(0, <[u8]>::len) + message.value.len()) as u64;
            at = next;
        }
        let count = self.count - keep;
        self.data.owned().truncate(cut);
        self.index.truncate(keep.div_ceil(INDEX_STRIDE) as usize);
        self.count = keep;
        self.persisted = self.persisted.min(cut);
        self.payload_bytes -= dropped;
        self.last_timestamp = match self.count {
            0 => 0,
            _ => self.get(self.next_offset() - 1).map_or(0, |m| m.timestamp),
        };
        (count, dropped)
    }

    /// The record at `offset`, if it lies in this segment.
    pub fn get(&self, offset: u64) -> Option<Message<'_>> {
        let segment = self.opened()?;
        let at = segment.position(offset)?;
        segment.record(at, offset).map(|(message, _)| message)
    }

    /// Pushes onto `out` the records from `from` up to `end` (both within this segment) for as
    /// long as `take` accepts them. Returns `Ok(false)` when `take` refused one.
    ///
    /// # Errors
    /// The offset of a record that does not read back whole or fails its checksum (its file
    /// was damaged after it was sealed), or is missing from its file; the records before it are
    /// in `out`.
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
        let mut at = segment.position(from).ok_or(from)?;
        for offset in from..end {
            let (message, next) = segment.record(at, offset).ok_or(offset)?;
            if !take(&message) {
                return Ok(false);
            }
            out.push(message);
            at = next;
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

    /// Where the record at `offset` starts, stepping from the nearest index entry before it.
    fn position(&self, offset: u64) -> Option<usize> {
        let i = offset.checked_sub(self.base_offset).filter(|&i| i < self.count)?;
        let mut at = *self.index.get((i / INDEX_STRIDE) as usize)? as usize;
        let bytes = self.data.bytes();
        for _ in 0..i % INDEX_STRIDE {
            let body_len = bytes.get(at..at + 4).map(|b| read_u32(b, 0))? as usize;
            at = at.checked_add(RECORD_PREFIX + body_len)?;
        }
        Some(at)
    }

    /// The record starting at byte `at`, which has offset `offset`, and where the next starts.
    /// `None` when the bytes there are no whole record: nothing read from a file is trusted to
    /// be in bounds, and a sealed segment's records, which opening trusted to its index rather
    /// than checked, are checked against their checksums as they are read.
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
        Some((Message { offset, timestamp, key, value }, next))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let mut segment = Segment::new(10, 1024);
        assert_eq!(segment.push(1, None, b"one"), 10);
        assert_eq!(segment.push(2, Some(b"k"), b""), 11);
        assert_eq!(segment.push(3, Some(b""), b"three"), 12);
        assert_eq!(
            segment.get(10).unwrap(),
            Message { offset: 10, timestamp: 1, key: None, value: b"one" }
        );
        assert_eq!(
            segment.get(11).unwrap(),
            Message { offset: 11, timestamp: 2, key: Some(b"k"), value: b"" }
        );
        assert_eq!(
            segment.get(12).unwrap(),
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
        let whole = segment.data.bytes().to_vec();
        let (recovered, damage) = Segment::recover(5, whole.clone(), 256);
        assert_eq!(damage, None);
        assert_eq!(recovered.next_offset(), 7);
        assert_eq!(recovered.get(6).unwrap().value, b"two");
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
        flipped[HEADER_LEN + RECORD_PREFIX + BODY_HEADER] ^= 0x20;
        let (kept, damage) = Segment::recover(5, flipped, 256);
        assert_eq!(kept.next_offset(), 5);
        let second = HEADER_LEN + Segment::record_len(None, b"one");
        assert_eq!(
            damage.map(|d| (d.at_byte, d.reason, d.whole_record_after)),
            Some((HEADER_LEN, "the record fails its checksum", Some(WholeRecordAfter::At(second))))
        );

        // A file of format 0, before headers: the same records without the header.
        let (old, damage) = Segment::recover(5, whole[HEADER_LEN..].to_vec(), 256);
        assert_eq!(damage, None);
        assert!(!old.has_header());
        assert_eq!(old.get(6).unwrap().value, b"two");

        // A header cut short: nothing of the file was ever whole.
        let (torn, damage) = Segment::recover(5, whole[..3].to_vec(), 256);
        assert_eq!((torn.next_offset(), torn.persisted_len()), (5, 0));
        assert_eq!(damage.map(|d| d.whole_record_after), Some(None));

        // A header of a later version: refused, never read as records.
        let mut later = whole.clone();
        later[6] = 2;
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
            Message { offset: 15, timestamp: 15, key: Some(b"k"), value: &15u32.to_le_bytes() }
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
        let second = HEADER_LEN + Segment::record_len(None, b"one");
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
