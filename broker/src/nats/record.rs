//! How a topic and its messages are laid out in JetStream: stream and subject names, and the
//! bytes of one stored message.
//!
//! Each partition of a topic is a stream of its own, so that its batches are ordered by their
//! stream sequences: partition 0 is `TOPIC_<hex of the name>` (subject `topic.<hex>`), as topics
//! were before they had partitions, and partition `p` >= 1 is `TOPIC_<hex>_<p>` (subject
//! `topic.<hex>.<p>`). The count of partitions is in partition 0's stream metadata, under
//! [`PARTITIONS_KEY`]; a stream without it holds a topic of one partition.
//!
//! # Format
//! One JetStream message holds one batch: the messages of one append to one partition (an
//! append larger than [`CHUNK_BYTES`] is cut, between messages, into several batches). Its
//! payload is
//!
//! | bytes | what |
//! |---|---|
//! | 1 | format version, `2`, or `3` when the batch's messages have headers |
//! | 8 | base offset: the offset of the batch's first message, little-endian |
//! | 4 | count of messages, little-endian |
//! | 8 | timestamp of every message, milliseconds since the epoch, little-endian |
//! | then, per message: | |
//! | 4 | key length + 1, little-endian (`0`: no key) |
//! | n | the key |
//! | 4 | value length, little-endian |
//! | n | the value |
//! | 4 | in format `3` only: length of the message's headers, little-endian |
//! | n | in format `3` only: its headers, each a name (4 bytes of length, then its UTF-8), then a value (4 bytes of length + 1, `0` for null, then its bytes) |
//!
//! A batch without headers is written in format `2`, byte for byte as before headers.
//!
//! A message's offset is the base offset plus its place in the batch; the stream sequence of
//! a batch says only its order. Batches follow each other without gaps: each base offset is
//! the previous batch's base plus its count (the publisher makes sure of it, see `streams`).
//!
//! Streams written before batches hold one message per JetStream message (format `1`):
//!
//! | bytes | what |
//! |---|---|
//! | 1 | format version, `1` |
//! | 8 | timestamp, milliseconds since the epoch, little-endian |
//! | 1 | `1` when a key follows, else `0` |
//! | 4 | key length, little-endian (present only with a key) |
//! | n | the key (present only with a key) |
//! | rest | the value |
//!
//! and its offset is its stream sequence − 1. Both are read; only `2` is written, so a stream
//! of the old format goes on with batches whose base offsets continue where it ends.

use protocol::{Header, NewMessage};

/// The first byte of a payload holding one message, the format streams were written in
/// before batches.
const SINGLE: u8 = 1;

/// The first byte of a payload holding a batch without headers.
const BATCH: u8 = 2;

/// The first byte of a payload holding a batch whose messages have headers.
const BATCH_HEADERS: u8 = 3;

/// The size of a batch's header: version, base offset, count, timestamp.
const BATCH_HEADER: usize = 21;

/// The most bytes of messages one batch holds before an append is cut into another: well
/// under the 1 MiB JetStream takes in one message by default. A message larger than this is
/// a batch of its own.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// The prefix of every stream that holds a topic.
pub const STREAM_PREFIX: &str = "TOPIC_";

/// The key of partition 0's stream metadata that holds the topic's count of partitions.
pub const PARTITIONS_KEY: &str = "partitions";

/// The topic's name hex-encoded, since stream names may not hold `.`, spaces, `*`, `>` or path
/// separators, which topic names may.
fn hex(topic: &str) -> String {
    let mut hex = String::with_capacity(2 * topic.len());
    for byte in topic.bytes() {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// The stream that holds partition `partition` of `topic`.
pub fn stream_name(topic: &str, partition: u32) -> String {
    match partition {
        0 => format!("{STREAM_PREFIX}{}", hex(topic)),
        p => format!("{STREAM_PREFIX}{}_{p}", hex(topic)),
    }
}

/// The subject appends to partition `partition` of `topic` are published on (its stream's one
/// subject).
pub fn subject(topic: &str, partition: u32) -> String {
    match partition {
        0 => format!("topic.{}", hex(topic)),
        p => format!("topic.{}.{p}", hex(topic)),
    }
}

/// The topic and partition a stream holds; `None` for a stream that is not a topic's.
pub fn partition_of(stream: &str) -> Option<(String, u32)> {
    let rest = stream.strip_prefix(STREAM_PREFIX)?;
    let (hex, partition) = match rest.split_once('_') {
        None => (rest, 0),
        Some((hex, p)) => {
            let partition: u32 = p.parse().ok()?;
            if partition == 0 || partition.to_string() != p {
                return None;
            }
            (hex, partition)
        }
    };
    Some((topic_of_hex(hex)?, partition))
}

/// The topic whose name is hex-encoded in `hex`.
fn topic_of_hex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) || hex.is_empty() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|at| hex.get(at..at + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The payload of one message in the format before batches ([`SINGLE`]): for tests, and to
/// compare a copy's last message with its stream's.
pub fn encode(timestamp: u64, key: Option<&[u8]>, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + key.map_or(0, <[u8]>::len) + value.len());
    out.push(SINGLE);
    out.extend_from_slice(&timestamp.to_le_bytes());
    match key {
        Some(key) => {
            out.push(1);
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
        }
        None => out.push(0),
    }
    out.extend_from_slice(value);
    out
}

/// The batches of one append's messages, each at most about [`CHUNK_BYTES`], with base
/// offset 0: the publisher sets each one's ([`set_base`]) when it knows where it goes.
pub fn encode_batches(timestamp: u64, messages: &[NewMessage<'_>]) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut count: u32 = 0;
    let with_headers = messages.iter().any(|m| !m.headers.is_empty());
    for message in messages {
        let (key, value) = (message.key, message.value);
        let headers = match with_headers {
            true => 4 + 8 * message.headers.len(),
            false => 0,
        };
        let size = 8 + message.size() + headers;
        if count > 0 && out.len() + size > CHUNK_BYTES {
            out[9..13].copy_from_slice(&count.to_le_bytes());
            batches.push(std::mem::take(&mut out));
            count = 0;
        }
        if count == 0 {
            out.reserve(BATCH_HEADER + size);
            out.push(if with_headers { BATCH_HEADERS } else { BATCH });
            out.extend_from_slice(&0u64.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&timestamp.to_le_bytes());
        }
        let key_len = key.map_or(0, |k| k.len() as u32 + 1);
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(key.unwrap_or_default());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
        if with_headers {
            let at = out.len();
            out.extend_from_slice(&0u32.to_le_bytes());
            for header in &message.headers {
                out.extend_from_slice(&(header.key.len() as u32).to_le_bytes());
                out.extend_from_slice(header.key.as_bytes());
                let value_len = header.value.map_or(0, |v| v.len() as u32 + 1);
                out.extend_from_slice(&value_len.to_le_bytes());
                out.extend_from_slice(header.value.unwrap_or_default());
            }
            let len = (out.len() - at - 4) as u32;
            out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
        count += 1;
    }
    if count > 0 {
        out[9..13].copy_from_slice(&count.to_le_bytes());
        batches.push(out);
    }
    batches
}

/// Sets the base offset of a batch [`encode_batches`] made.
pub fn set_base(batch: &mut [u8], base: u64) {
    if let Some(at) = batch.get_mut(1..9) {
        at.copy_from_slice(&base.to_le_bytes());
    }
}

/// The count of messages of a batch [`encode_batches`] made (0 for anything else).
pub fn count_of(batch: &[u8]) -> u64 {
    match batch.first() {
        Some(&BATCH | &BATCH_HEADERS) => batch.get(9..13).map_or(0, |c| u64::from(u32_at(c))),
        _ => 0,
    }
}

/// The offsets a stored message at stream sequence `seq` holds, from the first to the one
/// after its last: `None` for one this broker did not write. Reads only the header.
pub fn span(seq: u64, payload: &[u8]) -> Option<(u64, u64)> {
    match *payload.first()? {
        SINGLE => Some((seq.saturating_sub(1), seq)),
        BATCH | BATCH_HEADERS => {
            let base = u64::from_le_bytes(payload.get(1..9)?.try_into().ok()?);
            let count = u64::from(u32_at(payload.get(9..13)?));
            Some((base, base.checked_add(count)?))
        }
        _ => None,
    }
}

fn u32_at(bytes: &[u8]) -> u32 {
    bytes.get(..4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes)
}

/// A message read back: its timestamp, key, value and headers.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// The key, if it has one.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
    /// Its headers, in order.
    pub headers: Vec<Header<'a>>,
}

impl<'a> Decoded<'a> {
    /// The message as an append gives it, to add to a copy.
    pub fn message(&self) -> NewMessage<'a> {
        NewMessage { key: self.key, value: self.value, headers: self.headers.clone() }
    }
}

/// Reads back the stored message at stream sequence `seq`: its first message's offset and
/// its messages; `None` for one this broker did not write (another writer on the subject, or
/// damage), which the caller skips rather than trust. A batch is taken whole or not at all.
pub fn decode_stored(seq: u64, payload: &[u8]) -> Option<(u64, Vec<Decoded<'_>>)> {
    let (&version, rest) = payload.split_first()?;
    match version {
        SINGLE => Some((seq.saturating_sub(1), vec![decode_single(rest)?])),
        BATCH | BATCH_HEADERS => {
            let base = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
            let count = u32_at(rest.get(8..12)?) as usize;
            let timestamp = u64::from_le_bytes(rest.get(12..20)?.try_into().ok()?);
            let mut rest = rest.get(20..)?;
            // Each message takes at least 8 bytes: a count past that is damage.
            let mut messages = Vec::with_capacity(count.min(rest.len() / 8));
            for _ in 0..count {
                let key_len = u32_at(rest.get(..4)?) as usize;
                let (key, after) = match key_len {
                    0 => (None, rest.get(4..)?),
                    n => (Some(rest.get(4..4 + n - 1)?), rest.get(4 + n - 1..)?),
                };
                let value_len = u32_at(after.get(..4)?) as usize;
                let value = after.get(4..4usize.checked_add(value_len)?)?;
                rest = after.get(4 + value_len..)?;
                let mut headers = Vec::new();
                if version == BATCH_HEADERS {
                    let len = u32_at(rest.get(..4)?) as usize;
                    headers = decode_headers(rest.get(4..4usize.checked_add(len)?)?)?;
                    rest = rest.get(4 + len..)?;
                }
                messages.push(Decoded { timestamp, key, value, headers });
            }
            if !rest.is_empty() {
                return None;
            }
            base.checked_add(count as u64)?;
            Some((base, messages))
        }
        _ => None,
    }
}

/// Reads back one message of the format before batches, past its version byte.
fn decode_single(rest: &[u8]) -> Option<Decoded<'_>> {
    let timestamp = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let (&has_key, rest) = rest.get(8..)?.split_first()?;
    match has_key {
        0 => Some(Decoded { timestamp, key: None, value: rest, headers: Vec::new() }),
        1 => {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let key = rest.get(4..4usize.checked_add(len)?)?;
            let value = rest.get(4 + len..)?;
            Some(Decoded { timestamp, key: Some(key), value, headers: Vec::new() })
        }
        _ => None,
    }
}

/// Reads back a message's headers, as [`encode_batches`] writes them; `None` when they are cut
/// short or a name is not UTF-8.
fn decode_headers(mut bytes: &[u8]) -> Option<Vec<Header<'_>>> {
    let mut headers = Vec::new();
    while !bytes.is_empty() {
        let key_len = u32_at(bytes.get(..4)?) as usize;
        let key = std::str::from_utf8(bytes.get(4..4usize.checked_add(key_len)?)?).ok()?;
        bytes = bytes.get(4 + key_len..)?;
        let value_len = u32_at(bytes.get(..4)?) as usize;
        bytes = bytes.get(4..)?;
        let value = match value_len.checked_sub(1) {
            None => None,
            Some(len) => {
                let value = bytes.get(..len)?;
                bytes = bytes.get(len..)?;
                Some(value)
            }
        };
        headers.push(Header { key, value });
    }
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_there_and_back() {
        for topic in ["orders", "Hola mundo", "a.b>*/c", "über"] {
            for partition in [0, 1, 7, 9_999] {
                let stream = stream_name(topic, partition);
                assert!(stream.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{stream}");
                assert_eq!(partition_of(&stream), Some((topic.to_owned(), partition)));
                assert!(!subject(topic, partition).contains(' '));
            }
        }
        // Partition 0 keeps the names topics had before they had partitions.
        assert_eq!(stream_name("orders", 0), "TOPIC_6f7264657273");
        assert_eq!(subject("orders", 0), "topic.6f7264657273");
        assert_eq!(stream_name("orders", 3), "TOPIC_6f7264657273_3");
        assert_eq!(subject("orders", 3), "topic.6f7264657273.3");
        assert_eq!(partition_of("KV_claims"), None);
        assert_eq!(partition_of("TOPIC_6"), None);
        assert_eq!(partition_of("TOPIC_zz"), None);
        assert_eq!(partition_of("TOPIC_6f_0"), None);
        assert_eq!(partition_of("TOPIC_6f_01"), None);
        assert_eq!(partition_of("TOPIC_6f_x"), None);
    }

    #[test]
    fn payloads_of_the_old_format_are_still_read_and_garbage_is_refused() {
        let one = |payload| decode_stored(8, payload).map(|(base, mut m)| (base, m.remove(0)));
        let with_key = encode(7, Some(b"k"), b"value");
        assert_eq!(
            one(&with_key),
            Some((7, Decoded { timestamp: 7, key: Some(b"k"), value: b"value", headers: vec![] }))
        );
        assert_eq!(span(8, &with_key), Some((7, 8)));
        let without = encode(8, None, b"");
        let empty = Decoded { timestamp: 8, key: None, value: b"", headers: vec![] };
        assert_eq!(one(&without), Some((7, empty)));
        for cut in 0..with_key.len() - 5 {
            assert_eq!(decode_stored(8, &with_key[..cut]), None, "cut at {cut}");
        }
        let mut long_key = with_key.clone();
        long_key[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_stored(8, &long_key), None);
        assert_eq!(decode_stored(8, b"\x03........"), None);
        assert_eq!(span(8, b"\x03........"), None);
    }

    #[test]
    fn batches_go_there_and_back_whole_or_not_at_all() {
        let big = vec![7u8; CHUNK_BYTES / 3];
        let messages: Vec<(Option<&[u8]>, &[u8])> =
            vec![(Some(b"k"), b"one"), (None, b""), (Some(b""), &big), (None, &big), (None, &big)];
        let news: Vec<NewMessage<'_>> =
            messages.iter().map(|&(k, v)| NewMessage::new(k, v)).collect();
        let mut batches = encode_batches(42, &news);
        assert_eq!(batches.len(), 2, "cut before the batch grows past CHUNK_BYTES");
        assert_eq!(batches.iter().map(|b| count_of(b)).collect::<Vec<_>>(), [4, 1]);
        set_base(&mut batches[0], 10);
        set_base(&mut batches[1], 14);
        assert_eq!(span(99, &batches[0]), Some((10, 14)));
        assert_eq!(span(100, &batches[1]), Some((14, 15)));
        let (base, first) = decode_stored(99, &batches[0]).unwrap();
        let (next, second) = decode_stored(100, &batches[1]).unwrap();
        assert_eq!((base, next), (10, 14));
        let back: Vec<(Option<&[u8]>, &[u8])> =
            first.iter().chain(&second).map(|d| (d.key, d.value)).collect();
        assert_eq!(back, messages);
        assert!(first.iter().chain(&second).all(|d| d.timestamp == 42));
        // A batch cut anywhere, or with bytes past its last message, is refused whole.
        let small = &encode_batches(
            1,
            &[NewMessage::new(Some(&b"key"[..]), &b"value"[..]), NewMessage::new(None, b"v")],
        )[0];
        for cut in 0..small.len() {
            assert_eq!(decode_stored(1, &small[..cut]), None, "cut at {cut}");
        }
        let mut longer = small.clone();
        longer.push(0);
        assert_eq!(decode_stored(1, &longer), None);
        let mut lying = small.clone();
        lying[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_stored(1, &lying), None);
        assert!(encode_batches(1, &[]).is_empty());
    }

    #[test]
    fn headers_go_there_and_back_and_a_batch_without_them_is_as_before() {
        let plain = [NewMessage::new(Some(b"k"), b"v")];
        let before = encode_batches(5, &plain);
        assert_eq!(before[0][0], BATCH, "no headers: the format before headers");
        let headers = vec![
            Header { key: "trace", value: Some(b"abc") },
            Header { key: "trace", value: None },
            Header { key: "", value: Some(b"") },
        ];
        let with = [
            NewMessage { key: None, value: b"one", headers: headers.clone() },
            NewMessage::new(Some(b"k"), b"two"),
        ];
        let batches = encode_batches(5, &with);
        assert_eq!((batches.len(), batches[0][0]), (1, BATCH_HEADERS));
        assert_eq!(span(1, &batches[0]), Some((0, 2)));
        let (_, back) = decode_stored(1, &batches[0]).unwrap();
        assert_eq!(back.iter().map(Decoded::message).collect::<Vec<_>>(), with);
        // Cut anywhere, or a header name that is not UTF-8: refused whole.
        for cut in 0..batches[0].len() {
            assert_eq!(decode_stored(1, &batches[0][..cut]), None, "cut at {cut}");
        }
        let mut bad = batches[0].clone();
        let at = bad.windows(5).position(|w| w == b"trace").unwrap();
        bad[at] = 0xff;
        assert_eq!(decode_stored(1, &bad), None);
    }
}
