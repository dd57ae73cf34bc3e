//! Record batches: the layout in which the broker keeps an append's messages to a partition, and
//! in which a `batches` reply carries them (PROTOCOL.md, "Record batches").
//!
//! ```text
//! batch   = body_len:u32le crc:u32le body
//! body    = base_offset:u64le count:u32le timestamp_ms:u64le flags:u8 entry{count}
//! entry   = key_len:varint value_len:varint [headers_len:varint] key value [headers]
//! headers = (name_len:varint name value_len:varint value)*
//! ```
//!
//! The sending side writes [`Piece`]s: a batch as stored (its bytes copied whole), part of a
//! stored batch (its entries copied whole under a new header and checksum), or messages that
//! were not kept as a batch, encoded here. The reading side takes the byte string apart with
//! [`read`], checking every length and checksum before it hands out a message.

use std::borrow::Cow;

use thiserror::Error;

use crate::{Header, Message, MAX_FETCH_MESSAGES};

/// Bytes before a batch's body: its length and its checksum.
pub const PREFIX: usize = 8;
/// Bytes of a body before its entries: base offset, count, timestamp and flags.
pub const HEADER: usize = 21;
/// Bytes of a batch before its entries.
pub const HEAD: usize = PREFIX + HEADER;
/// The flag of a batch whose entries carry headers.
pub const HAS_HEADERS: u8 = 1;
/// The most bytes a varint takes: ten of 7 bits hold 64.
pub const MAX_VARINT: usize = 10;

/// One batch of a `batches` reply, ready to be written: its head (length, checksum, base
/// offset, count, timestamp, flags) and its entries, borrowed where they are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece<'a> {
    /// The batch's first [`HEAD`] bytes.
    head: [u8; HEAD],
    /// Its entries, as they are laid out after the head.
    entries: Cow<'a, [u8]>,
    /// The bytes of its messages' keys, values and headers, as a fetch's `max_bytes` counts
    /// them (known to whoever made the piece, for its reader's accounts).
    size: usize,
}

impl<'a> Piece<'a> {
    /// A batch as it is kept: `head` its first [`HEAD`] bytes and `entries` the rest, which
    /// the keeper has checked already (its length and checksum agree); its messages take
    /// `size` bytes ([`crate::Message::size`]).
    pub fn whole(head: [u8; HEAD], entries: &'a [u8], size: usize) -> Piece<'a> {
        Piece { head, entries: Cow::Borrowed(entries), size }
    }

    /// Messages `base` to `base + count` of a kept batch, stamped `timestamp`, whose entries
    /// (with headers when `flags` has [`HAS_HEADERS`]) are `entries` and whose messages take
    /// `size` bytes: the part of a batch that a reply's first or last offset cuts, under a head
    /// and checksum of its own.
    pub fn cut(
        (base, count): (u64, u32),
        timestamp: u64,
        flags: u8,
        entries: &'a [u8],
        size: usize,
    ) -> Piece<'a> {
        Piece::headed((base, count), timestamp, flags, Cow::Borrowed(entries), size)
    }

    /// `messages` encoded as one batch: they must have consecutive offsets and one timestamp
    /// (see [`pieces_of`], which cuts any run of messages into such batches).
    fn encode(messages: &[Message<'_>]) -> Piece<'static> {
        let headers = messages.iter().any(|m| !m.headers.is_empty());
        let mut entries = Vec::with_capacity(messages.iter().map(|m| m.size() + 8).sum());
        for message in messages {
            put_entry(&mut entries, message, headers);
        }
        let (base, timestamp) = messages.first().map_or((0, 0), |m| (m.offset, m.timestamp));
        let flags = if headers { HAS_HEADERS } else { 0 };
        let size = messages.iter().map(Message::size).sum();
        let count = messages.len() as u32;
        Piece::headed((base, count), timestamp, flags, Cow::Owned(entries), size)
    }

    /// A head for `entries`, its checksum computed.
    fn headed(
        (base, count): (u64, u32),
        timestamp: u64,
        flags: u8,
        entries: Cow<'a, [u8]>,
        size: usize,
    ) -> Piece<'a> {
        let mut head = [0; HEAD];
        head[0..4].copy_from_slice(&((HEADER + entries.len()) as u32).to_le_bytes());
        head[8..16].copy_from_slice(&base.to_le_bytes());
        head[16..20].copy_from_slice(&count.to_le_bytes());
        head[20..28].copy_from_slice(&timestamp.to_le_bytes());
        head[28] = flags;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head[PREFIX..]), &entries);
        head[4..8].copy_from_slice(&crc.to_le_bytes());
        Piece { head, entries, size }
    }

    /// The offset of its first message.
    pub fn base_offset(&self) -> u64 {
        u64::from_le_bytes(self.head[8..16].try_into().unwrap_or_default())
    }

    /// How many messages it holds.
    pub fn count(&self) -> u32 {
        u32::from_le_bytes(self.head[16..20].try_into().unwrap_or_default())
    }

    /// The bytes of its messages' keys, values and headers.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The bytes it takes on the wire.
    pub fn len(&self) -> usize {
        HEAD + self.entries.len()
    }

    /// Whether it takes no bytes: never, as a batch has a head.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends its bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.entries);
    }
}

/// The batches of a `batches` reply: the pieces a broker writes, or the bytes a client read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batches<'a> {
    /// Batches to write, in offset order.
    Pieces(Vec<Piece<'a>>),
    /// Batches as read from a reply (or prepared whole), not yet taken apart: see [`read`].
    Bytes(&'a [u8]),
}

impl Batches<'_> {
    /// The bytes they take, written back to back.
    pub fn len(&self) -> usize {
        match self {
            Batches::Pieces(pieces) => pieces.iter().map(Piece::len).sum(),
            Batches::Bytes(bytes) => bytes.len(),
        }
    }

    /// How many messages the pieces to write hold, and their bytes ([`Piece::size`]); none for
    /// bytes read, which are not taken apart here.
    pub fn counts(&self) -> (u64, u64) {
        match self {
            Batches::Pieces(pieces) => pieces.iter().fold((0, 0), |(n, bytes), piece| {
                (n + u64::from(piece.count()), bytes + piece.size() as u64)
            }),
            Batches::Bytes(_) => (0, 0),
        }
    }

    /// Whether they hold no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends them to `out`, back to back.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Batches::Pieces(pieces) => pieces.iter().for_each(|piece| piece.write(out)),
            Batches::Bytes(bytes) => out.extend_from_slice(bytes),
        }
    }
}

/// `messages` (consecutive offsets) as batches: one for each run of messages with one
/// timestamp. For messages a store does not keep as batches (files of older formats).
pub fn pieces_of(messages: &[Message<'_>]) -> Vec<Piece<'static>> {
    messages.chunk_by(|a, b| a.timestamp == b.timestamp).map(Piece::encode).collect()
}

/// What is wrong with a `batches` reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// A batch of its byte string does not read back.
    #[error("damaged batches: the batch at byte {at}: {what}")]
    Batch {
        /// Where in the byte string the batch starts.
        at: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The batches read back, but the reply around them disagrees with them.
    #[error("damaged batches reply: {0}")]
    Reply(&'static str),
}

impl BatchError {
    /// What is wrong.
    pub fn what(&self) -> &'static str {
        match self {
            BatchError::Batch { what, .. } | BatchError::Reply(what) => what,
        }
    }
}

/// Takes the `batches` byte string of a reply to a fetch from `offset` apart, pushing its
/// messages onto `out` in offset order, their keys, values and headers borrowed from `bytes`.
///
/// # Errors
/// A batch cut short, failing its checksum, with an unknown flag, no message, entries that do
/// not fill its body, headers that do not read back, or a base offset other than the one the
/// previous batch (or `offset`) leads to; more messages than a fetch may return
/// ([`MAX_FETCH_MESSAGES`]), so that a reply of tiny entries cannot make its reader hold many
/// times its size. Nothing is pushed then.
pub fn read<'a>(
    bytes: &'a [u8],
    offset: u64,
    out: &mut Vec<Message<'a>>,
) -> Result<(), BatchError> {
    let before = out.len();
    let mut at = 0;
    let mut next = offset;
    while at < bytes.len() {
        let fail = |what| BatchError::Batch { at, what };
        let room = (MAX_FETCH_MESSAGES as usize).saturating_sub(out.len() - before);
        let read = read_batch(&bytes[at..], next, room, out).map_err(fail);
        match read {
            Ok((len, count)) => {
                at += len;
                next += count;
            }
            Err(error) => {
                out.truncate(before);
                return Err(error);
            }
        }
    }
    Ok(())
}

/// Reads the batch at the start of `bytes`, whose first offset must be `offset`: the bytes it
/// took and its count.
fn read_batch<'a>(
    bytes: &'a [u8],
    offset: u64,
    room: usize,
    out: &mut Vec<Message<'a>>,
) -> Result<(usize, u64), &'static str> {
    let prefix = bytes.get(..PREFIX).ok_or("cut short in its length")?;
    let body_len = u32_at(prefix, 0) as usize;
    let body = bytes.get(PREFIX..PREFIX + body_len).ok_or("cut short in its body")?;
    if body_len < HEADER {
        return Err("a body shorter than its header");
    }
    if crc32c::crc32c(body) != u32_at(prefix, 4) {
        return Err("its checksum does not match");
    }
    let base = u64_at(body, 0);
    let count = u32_at(body, 8);
    let timestamp = u64_at(body, 12);
    let headers = match body[20] {
        0 => false,
        HAS_HEADERS => true,
        _ => return Err("a flag this version does not know"),
    };
    if base != offset {
        return Err("a base offset that does not follow the previous batch");
    }
    if count == 0 {
        return Err("no message");
    }
    if count as usize > room {
        return Err("more messages than a fetch may return");
    }
    let mut entries = Entries::new(body, HEADER, headers);
    for i in 0..u64::from(count) {
        let (key, value, header_bytes) = entries.next().ok_or("an entry cut short")?;
        let headers = read_headers(header_bytes).ok_or("headers that do not read back")?;
        let offset = base.checked_add(i).ok_or("offsets past the largest")?;
        out.push(Message { offset, timestamp, key, value, headers });
    }
    if entries.position() != body.len() {
        return Err("bytes after its last entry");
    }
    Ok((PREFIX + body_len, u64::from(count)))
}

/// The entries of a batch's body, read one by one: each message's key, value and headers'
/// bytes. Shared by the broker's store, which keeps batches in this layout, and by readers of
/// a `batches` reply.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    /// The batch's body.
    body: &'a [u8],
    /// Where the next entry starts in it.
    at: usize,
    /// Whether each entry carries headers.
    headers: bool,
}

impl<'a> Entries<'a> {
    /// The entries of `body` from byte `at` on (after the batch's header), with their headers
    /// when `headers`.
    pub fn new(body: &'a [u8], at: usize, headers: bool) -> Entries<'a> {
        Entries { body, at, headers }
    }

    /// Where the next entry starts in the body.
    pub fn position(&self) -> usize {
        self.at
    }

    /// The next entry's key, value and headers' bytes; `None` when the bytes hold no whole
    /// entry.
    #[allow(clippy::type_complexity, clippy::should_implement_trait)]
    #[inline]
    pub fn next(&mut self) -> Option<(Option<&'a [u8]>, &'a [u8], &'a [u8])> {
        let key = read_varint(self.body, &mut self.at)?;
        let value_len = usize::try_from(read_varint(self.body, &mut self.at)?).ok()?;
        let headers_len = match self.headers {
            true => usize::try_from(read_varint(self.body, &mut self.at)?).ok()?,
            false => 0,
        };
        let key_len = usize::try_from(key.saturating_sub(1)).ok()?;
        let key_end = self.at.checked_add(key_len)?;
        let value_end = key_end.checked_add(value_len)?;
        let end = value_end.checked_add(headers_len)?;
        let key_bytes = self.body.get(self.at..key_end)?;
        let value = self.body.get(key_end..value_end)?;
        let headers = self.body.get(value_end..end)?;
        self.at = end;
        Some(((key > 0).then_some(key_bytes), value, headers))
    }
}

/// The headers an entry holds in `bytes`, which they must fill exactly; `None` when they do
/// not read back whole (a name cut short or not UTF-8).
pub fn read_headers(bytes: &[u8]) -> Option<Vec<Header<'_>>> {
    let mut headers = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let name_len = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
        let name_end = at.checked_add(name_len)?;
        let name = std::str::from_utf8(bytes.get(at..name_end)?).ok()?;
        at = name_end;
        let value = match read_varint(bytes, &mut at)? {
            0 => None,
            n => {
                let end = at.checked_add(usize::try_from(n - 1).ok()?)?;
                let value = bytes.get(at..end)?;
                at = end;
                Some(value)
            }
        };
        headers.push(Header { key: name, value });
    }
    Some(headers)
}

/// Appends `message`'s entry (with its headers' length and headers when `headers`).
fn put_entry(out: &mut Vec<u8>, message: &Message<'_>, headers: bool) {
    put_varint(out, message.key.map_or(0, |k| k.len() as u64 + 1));
    put_varint(out, message.value.len() as u64);
    if headers {
        put_varint(out, headers_len(&message.headers) as u64);
    }
    out.extend_from_slice(message.key.unwrap_or_default());
    out.extend_from_slice(message.value);
    if headers {
        put_headers(out, &message.headers);
    }
}

/// The bytes the headers held in `bytes` count in a message's size (their names and values,
/// as [`Message::size`] counts them), found by their lengths alone; `None` when they do not
/// fill `bytes` exactly.
pub fn headers_size(bytes: &[u8]) -> Option<usize> {
    let (mut at, mut size) = (0, 0usize);
    while at < bytes.len() {
        let name = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
        at = at.checked_add(name)?;
        let value = usize::try_from(read_varint(bytes, &mut at)?).ok()?.saturating_sub(1);
        at = at.checked_add(value)?;
        size = size.checked_add(name)?.checked_add(value)?;
    }
    (at == bytes.len()).then_some(size)
}

/// The bytes a message's headers take in its entry.
pub fn headers_len(headers: &[Header<'_>]) -> usize {
    headers
        .iter()
        .map(|h| {
            let value = h.value.map_or(0, |v| v.len() as u64 + 1);
            varint_len(h.key.len() as u64)
                + h.key.len()
                + varint_len(value)
                + h.value.map_or(0, <[u8]>::len)
        })
        .sum()
}

/// Appends a message's headers as its entry holds them.
pub fn put_headers(out: &mut Vec<u8>, headers: &[Header<'_>]) {
    for header in headers {
        put_varint(out, header.key.len() as u64);
        out.extend_from_slice(header.key.as_bytes());
        put_varint(out, header.value.map_or(0, |v| v.len() as u64 + 1));
        out.extend_from_slice(header.value.unwrap_or_default());
    }
}

/// Bytes of `n` as a varint.
#[inline]
pub fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends `n` as a varint (LEB128: 7 bits a byte, lowest first, the high bit set on all but
/// the last).
pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The varint at `at` in `bytes`; `at` moves past it. `None` when cut short or longer than
/// [`MAX_VARINT`] bytes, or past 64 bits.
#[inline]
pub fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    // Most lengths take one byte.
    let first = *bytes.get(*at)?;
    if first < 0x80 {
        *at += 1;
        return Some(u64::from(first));
    }
    let mut n = 0u64;
    for i in 0..MAX_VARINT {
        let byte = *bytes.get(*at + i)?;
        let bits = u64::from(byte & 0x7f);
        if i == MAX_VARINT - 1 && bits > 1 {
            return None;
        }
        n |= bits << (7 * i);
        if byte & 0x80 == 0 {
            *at += i + 1;
            return Some(n);
        }
    }
    None
}

/// The little-endian `u32` at `at` of `bytes`, which holds it.
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default())
}

/// The little-endian `u64` at `at` of `bytes`, which holds it.
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md's worked example, "A `batches` reply".
    const EXAMPLE: &[u8] = &[
        0x1e, 0x00, 0x00, 0x00, 0xbc, 0x06, 0x8f, 0x81, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, 0x00, 0x02,
        0x02, 0x6b, 0x68, 0x69, 0x00, 0x02, 0x79, 0x6f,
    ];

    fn message<'a>(offset: u64, key: Option<&'a [u8]>, value: &'a [u8]) -> Message<'a> {
        Message { offset, timestamp: 1_700_000_000_000, key, value, headers: Vec::new() }
    }

    fn written(pieces: &[Piece<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        Batches::Pieces(pieces.to_vec()).write(&mut out);
        out
    }

    #[test]
    fn the_documents_example_reads_and_is_written_byte_for_byte() {
        let mut out = Vec::new();
        read(EXAMPLE, 5, &mut out).unwrap();
        let expected = vec![message(5, Some(b"k"), b"hi"), message(6, None, b"yo")];
        assert_eq!(out, expected);
        assert_eq!(written(&pieces_of(&expected)), EXAMPLE);
    }

    #[test]
    fn a_cut_batch_reads_as_the_messages_it_keeps() {
        // Entries of the example from its second message on.
        let cut = Piece::cut((6, 1), 1_700_000_000_000, 0, &EXAMPLE[HEAD + 5..], 2);
        let (bytes, mut out) = (written(&[cut]), Vec::new());
        read(&bytes, 6, &mut out).unwrap();
        assert_eq!(out, vec![message(6, None, b"yo")]);
    }

    #[test]
    fn headers_null_and_empty_values_and_runs_of_timestamps_go_and_come_back() {
        let mut a = message(10, None, b"a");
        a.headers = vec![Header { key: "h", value: None }, Header { key: "", value: Some(b"") }];
        let b = message(11, Some(b""), b"b");
        let mut c = message(12, None, b"c");
        c.timestamp += 1;
        let messages = vec![a, b, c];
        let pieces = pieces_of(&messages);
        assert_eq!(pieces.len(), 2, "one batch per timestamp");
        let (bytes, mut out) = (written(&pieces), Vec::new());
        read(&bytes, 10, &mut out).unwrap();
        assert_eq!(out, messages);
    }

    #[test]
    fn damaged_batches_are_refused_whole() {
        let refused = |bytes: &[u8], offset: u64| {
            let mut out = vec![message(0, None, b"kept")];
            let error = read(bytes, offset, &mut out).unwrap_err();
            assert_eq!(out.len(), 1, "nothing pushed for {error}");
            error.what()
        };
        let mut flipped = EXAMPLE.to_vec();
        flipped[33] ^= 1;
        assert_eq!(refused(&flipped, 5), "its checksum does not match");
        assert_eq!(refused(&EXAMPLE[..EXAMPLE.len() - 1], 5), "cut short in its body");
        assert_eq!(refused(&EXAMPLE[..3], 5), "cut short in its length");
        assert_eq!(refused(EXAMPLE, 4), "a base offset that does not follow the previous batch");
        let flagged = Piece::cut((5, 2), 1_700_000_000_000, 2, &EXAMPLE[HEAD..], 0);
        assert_eq!(refused(&written(&[flagged]), 5), "a flag this version does not know");
        let mut longer = EXAMPLE[HEAD..].to_vec();
        longer.push(0);
        let trailing = Piece::cut((5, 2), 1_700_000_000_000, 0, &longer, 0);
        assert_eq!(refused(&written(&[trailing]), 5), "bytes after its last entry");
        let short = Piece::cut((5, 3), 1_700_000_000_000, 0, &EXAMPLE[HEAD..], 0);
        assert_eq!(refused(&written(&[short]), 5), "an entry cut short");
        let empty = Piece::cut((5, 0), 1_700_000_000_000, 0, &[], 0);
        assert_eq!(refused(&written(&[empty]), 5), "no message");
        // Ten thousand empty messages are as many as a fetch returns; one more is too many.
        let tiny = [0u8, 0].repeat(MAX_FETCH_MESSAGES as usize + 1);
        let most = Piece::cut((5, MAX_FETCH_MESSAGES), 0, 0, &tiny[2..], 0);
        let bytes = written(&[most]);
        assert_eq!(read(&bytes, 5, &mut Vec::new()), Ok(()));
        let over = Piece::cut((5, MAX_FETCH_MESSAGES + 1), 0, 0, &tiny, 0);
        assert_eq!(refused(&written(&[over]), 5), "more messages than a fetch may return");
        let bad_name = Piece::cut((5, 1), 0, HAS_HEADERS, &[0, 0, 3, 1, 0xff, 0], 0);
        assert_eq!(refused(&written(&[bad_name]), 5), "headers that do not read back");
        // A second batch must follow the first.
        let mut two = EXAMPLE.to_vec();
        two.extend_from_slice(EXAMPLE);
        assert_eq!(refused(&two, 5), "a base offset that does not follow the previous batch");
    }

    #[test]
    fn no_byte_changed_cut_or_made_up_makes_the_reader_panic_or_take_part_of_a_reply() {
        let mut a = message(10, Some(b"key"), &[7; 200]);
        a.headers = vec![Header { key: "h", value: None }, Header { key: "x", value: Some(b"y") }];
        let mut b = message(11, None, b"b");
        b.timestamp += 1;
        let bytes = written(&pieces_of(&[a, b]));
        let outcome = |bytes: &[u8]| {
            let mut out = Vec::new();
            let read = read(bytes, 10, &mut out);
            assert!(read.is_ok() || out.is_empty(), "a refused reply left {} messages", out.len());
            read.is_ok()
        };
        assert!(outcome(&bytes));
        for len in 0..bytes.len() {
            outcome(&bytes[..len]);
        }
        // Every byte changed in eight ways; only a checksum's own change could go unseen, and
        // then the batch is refused for its checksum all the same.
        for at in 0..bytes.len() {
            for flip in [1, 2, 4, 8, 16, 32, 64, 128] {
                let mut changed = bytes.clone();
                changed[at] ^= flip;
                assert!(!outcome(&changed), "byte {at} changed by {flip} went unseen");
            }
        }
        // Made-up bytes behind a length that fits them, their checksum right: a reader that
        // trusted lengths inside a body would run past it.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = HEADER + (seed % 64) as usize;
            let mut body: Vec<u8> = (0..len).map(|i| (seed >> (i % 57)) as u8).collect();
            body[..8].copy_from_slice(&10u64.to_le_bytes());
            body[8..12].copy_from_slice(&((seed % 5) as u32).to_le_bytes());
            body[20] = (seed % 2) as u8;
            let mut made = Vec::new();
            made.extend_from_slice(&(len as u32).to_le_bytes());
            made.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
            made.extend_from_slice(&body);
            outcome(&made);
        }
    }

    #[test]
    fn varints_longer_than_ten_bytes_or_past_64_bits_are_refused() {
        let mut at = 0;
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut at),
            Some(u64::MAX)
        );
        assert_eq!(read_varint(&[0xff; 10], &mut 0), None);
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], &mut 0),
            None
        );
        assert_eq!(read_varint(&[0x80], &mut 0), None);
    }
}
