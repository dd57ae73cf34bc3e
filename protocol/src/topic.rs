//! Topic names: what the broker accepts as one.

use thiserror::Error;

/// The longest topic name, in bytes of UTF-8 (Kafka's limit too).
pub const MAX_TOPIC_NAME_BYTES: usize = 249;

/// Why a string is not a valid topic name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidTopicName {
    /// The name is the empty string.
    #[error("topic name is empty")]
    Empty,
    /// The name is longer than [`MAX_TOPIC_NAME_BYTES`].
    #[error("topic name is {0} bytes long; the limit is {MAX_TOPIC_NAME_BYTES}")]
    TooLong(usize),
    /// The name holds a control character (a newline, a NUL, ...).
    #[error("topic name contains the control character {0:?}")]
    ControlCharacter(char),
    /// The name starts or ends with white space, which no one can see in a listing.
    #[error("topic name starts or ends with white space")]
    OuterWhitespace,
}

/// Checks a topic name: 1 to 249 bytes of UTF-8, no control characters, no leading or trailing
/// white space. Spaces inside and any other Unicode are allowed (`Hola mundo` is a topic).
///
/// # Errors
/// Returns the first rule the name breaks.
pub fn validate_topic_name(name: &str) -> Result<(), InvalidTopicName> {
    if name.is_empty() {
        return Err(InvalidTopicName::Empty);
    }
    if name.len() > MAX_TOPIC_NAME_BYTES {
        return Err(InvalidTopicName::TooLong(name.len()));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(InvalidTopicName::ControlCharacter(c));
    }
    if name.trim() != name {
        return Err(InvalidTopicName::OuterWhitespace);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_people_write() {
        for name in ["orders", "Hola mundo", "a.b-c_d", "über", "x"] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_what_cannot_be_shown_or_stored() {
        assert_eq!(validate_topic_name(""), Err(InvalidTopicName::Empty));
        assert_eq!(validate_topic_name(&"x".repeat(250)), Err(InvalidTopicName::TooLong(250)));
        assert_eq!(validate_topic_name("a\nb"), Err(InvalidTopicName::ControlCharacter('\n')));
        assert_eq!(validate_topic_name(" a"), Err(InvalidTopicName::OuterWhitespace));
        assert_eq!(validate_topic_name("a\t"), Err(InvalidTopicName::ControlCharacter('\t')));
    }
}
