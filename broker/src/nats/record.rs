//! How a topic and its messages are laid out in JetStream: stream and subject names, and the
//! bytes of one stored message.
//!
//! Each partition of a topic is a stream of its own, so that a message's offset is its stream
//! sequence − 1: partition 0 is `TOPIC_<hex of the name>` (subject `topic.<hex>`), as topics
//! were before they had partitions, and partition `p` >= 1 is `TOPIC_<hex>_<p>` (subject
//! `topic.<hex>.<p>`). The count of partitions is in partition 0's stream metadata, under
//! [`PARTITIONS_KEY`]; a stream without it holds a topic of one partition.
//!
//! # Format
//! One JetStream message holds one broker message; its payload is
//!
//! | bytes | what |
//! |---|---|
//! | 1 | format version, `1` |
//! | 8 | timestamp, milliseconds since the epoch, little-endian |
//! | 1 | `1` when a key follows, else `0` |
//! | 4 | key length, little-endian (present only with a key) |
//! | n | the key (present only with a key) |
//! | rest | the value |

/// The first byte of every payload this version writes.
const VERSION: u8 = 1;

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
    if hex.len() % 2 != 0 || hex.is_empty() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|at| hex.get(at..at + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The payload of one message.
pub fn encode(timestamp: u64, key: Option<&[u8]>, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + key.map_or(0, <[u8]>::len) + value.len());
    out.push(VERSION);
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

/// A message read back: its timestamp, key and value.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// The key, if it has one.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
}

/// Reads a payload back; `None` for one this version did not write (another writer on the
/// subject, or damage), which the caller skips rather than trust.
pub fn decode(payload: &[u8]) -> Option<Decoded<'_>> {
    let (&version, rest) = payload.split_first()?;
    if version != VERSION {
        return None;
    }
    let timestamp = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let (&has_key, rest) = rest.get(8..)?.split_first()?;
    match has_key {
        0 => Some(Decoded { timestamp, key: None, value: rest }),
        1 => {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let key = rest.get(4..4usize.checked_add(len)?)?;
            let value = rest.get(4 + len..)?;
            Some(Decoded { timestamp, key: Some(key), value })
        }
        _ => None,
    }
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
    fn payloads_go_there_and_back_and_garbage_is_refused() {
        let with_key = encode(7, Some(b"k"), b"value");
        assert_eq!(
            decode(&with_key),
            Some(Decoded { timestamp: 7, key: Some(b"k"), value: b"value" })
        );
        let without = encode(8, None, b"");
        assert_eq!(decode(&without), Some(Decoded { timestamp: 8, key: None, value: b"" }));
        for cut in 0..with_key.len() - 5 {
            assert_eq!(decode(&with_key[..cut]), None, "cut at {cut}");
        }
        let mut long_key = with_key.clone();
        long_key[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&long_key), None);
        assert_eq!(decode(b"\x02........"), None);
    }
}
