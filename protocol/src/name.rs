//! The rule topic and group names both follow, checked in one place.

use std::fmt;

/// The longest name, in bytes of UTF-8 (Kafka's limit for topics).
pub const MAX_NAME_BYTES: usize = 249;

/// Which part of the naming rule a string breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameRule {
    /// The name is the empty string.
    Empty,
    /// The name is longer than [`MAX_NAME_BYTES`]; it is this many bytes long.
    TooLong(usize),
    /// The name holds a control character (a newline, a NUL, ...).
    ControlCharacter(char),
    /// The name starts or ends with white space, which no one can see in a listing.
    OuterWhitespace,
}

impl fmt::Display for NameRule {
    /// The rule broken, as the end of a sentence whose start says what was named.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameRule::Empty => write!(f, "is empty"),
            NameRule::TooLong(len) => {
                write!(f, "is {len} bytes long; the limit is {MAX_NAME_BYTES}")
            }
            NameRule::ControlCharacter(c) => write!(f, "contains the control character {c:?}"),
            NameRule::OuterWhitespace => write!(f, "starts or ends with white space"),
        }
    }
}

/// Checks a name: 1 to 249 bytes of UTF-8, no control characters, no leading or trailing white
/// space. Spaces inside and any other Unicode are allowed (`Hola mundo` is a name).
///
/// # Errors
/// Returns the first rule the name breaks.
pub fn check_name(name: &str) -> Result<(), NameRule> {
    if name.is_empty() {
        return Err(NameRule::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameRule::TooLong(name.len()));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(NameRule::ControlCharacter(c));
    }
    if name.trim() != name {
        return Err(NameRule::OuterWhitespace);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_people_write() {
        for name in ["orders", "Hola mundo", "a.b-c_d", "über", "x", &"x".repeat(249)] {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_what_cannot_be_shown_or_stored() {
        assert_eq!(check_name(""), Err(NameRule::Empty));
        assert_eq!(check_name(&"x".repeat(250)), Err(NameRule::TooLong(250)));
        assert_eq!(check_name("a\nb"), Err(NameRule::ControlCharacter('\n')));
        assert_eq!(check_name(" a"), Err(NameRule::OuterWhitespace));
        assert_eq!(check_name("a\t"), Err(NameRule::ControlCharacter('\t')));
    }
}
