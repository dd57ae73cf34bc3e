//! Topic names: what the broker accepts as one.

use thiserror::Error;

use crate::name::{check_name, NameRule, MAX_NAME_BYTES};

/// The longest topic name, in bytes of UTF-8 (Kafka's limit too).
pub const MAX_TOPIC_NAME_BYTES: usize = MAX_NAME_BYTES;

/// Why a string is not a valid topic name: the rule of [`check_name`] it breaks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("topic name {0}")]
pub struct InvalidTopicName(pub NameRule);

/// Checks a topic name: 1 to 249 bytes of UTF-8, no control characters, no leading or trailing
/// white space. Spaces inside and any other Unicode are allowed (`Hola mundo` is a topic).
///
/// # Errors
/// Returns the first rule the name breaks.
pub fn validate_topic_name(name: &str) -> Result<(), InvalidTopicName> {
    check_name(name).map_err(InvalidTopicName)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_cannot_be_shown_or_stored() {
        let refused = |name: &str| validate_topic_name(name).map_err(|e| e.to_string());
        assert_eq!(refused(""), Err("topic name is empty".into()));
        assert_eq!(
            refused(&"x".repeat(250)),
            Err("topic name is 250 bytes long; the limit is 249".into())
        );
        assert_eq!(refused("a\nb"), Err("topic name contains the control character '\\n'".into()));
        assert_eq!(refused(" a"), Err("topic name starts or ends with white space".into()));
    }
}
