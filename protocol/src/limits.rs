//! The limits of a request's fields that the codec enforces (PROTOCOL.md, "Limits"), and how
//! refusals quote what a client sent without echoing all of it.
//!
//! Topic and group names have rules of their own ([`crate::validate_topic_name`],
//! [`crate::validate_group_name`]), checked by the broker; the size of a message depends on the
//! broker's configuration ([`crate::DEFAULT_MAX_MESSAGE_BYTES`]).

/// The longest `client` name of a `claim`, in bytes of UTF-8.
pub const MAX_CLIENT_NAME_BYTES: usize = 256;

/// The most messages one `append` may carry (the clients' own batches stop there too).
pub const MAX_APPEND_MESSAGES: usize = 100_000;

/// The longest `origin` a request may carry, in bytes: a door's word on the address of the end
/// user it makes the request for (PROTOCOL.md, "Who a door speaks for"). An IPv6 address with
/// its port takes at most 47.
pub const MAX_ORIGIN_BYTES: usize = 64;

/// Whether `origin` may be carried as a request's `origin`: 1 to [`MAX_ORIGIN_BYTES`] bytes,
/// each a printable ASCII character other than space, so that a log line shows it as it came
/// and it cannot pass for another field of the line. Anything else is dropped, not refused.
pub fn is_valid_origin(origin: &[u8]) -> bool {
    (1..=MAX_ORIGIN_BYTES).contains(&origin.len()) && origin.iter().all(|b| b.is_ascii_graphic())
}

/// The most headers one message may carry (Kafka sets none; applications send a few). With the
/// frame's own bound it keeps what one `append` can make the broker decode and hold in check.
pub const MAX_MESSAGE_HEADERS: usize = 100;

/// The longest key of a message's header, in bytes of UTF-8.
pub const MAX_HEADER_KEY_BYTES: usize = 256;

/// The most offsets one `ack` may carry.
pub const MAX_ACK_OFFSETS: usize = 100_000;

/// The most entries of one map: a frame's body or a record inside it. Every map of this
/// version has fewer than 20 known keys; the bound keeps the check for unknown keys met twice
/// cheap (each is compared with the unknown keys before it).
pub const MAX_MAP_ENTRIES: usize = 64;

/// The most bytes of a client's string quoted in a refusal's `reason`.
pub const MAX_QUOTED_BYTES: usize = 64;

/// `text` as a refusal quotes it: in full when it is at most [`MAX_QUOTED_BYTES`] long,
/// otherwise its first bytes (cut at a character boundary), `...` and its length.
pub fn excerpt(text: &str) -> String {
    let start = cut(text);
    if start.len() == text.len() {
        return format!("{text:?}");
    }
    format!("{start:?}... ({} bytes)", text.len())
}

/// The first [`MAX_QUOTED_BYTES`] of `text` at most, cut at a character boundary.
pub fn cut(text: &str) -> &str {
    let mut end = text.len().min(MAX_QUOTED_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_cut_between_characters() {
        assert_eq!(excerpt("earliest"), "\"earliest\"");
        let long = "é".repeat(1000);
        let quoted = excerpt(&long);
        assert!(quoted.len() < 2 * MAX_QUOTED_BYTES, "{quoted}");
        assert!(quoted.ends_with("... (2000 bytes)"), "{quoted}");
        assert_eq!(cut(&long).len(), MAX_QUOTED_BYTES);
        assert_eq!(cut("a\u{e9}").len(), 3);
    }
}
