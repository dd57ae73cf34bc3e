//! Logs a stranger cannot turn into a weapon: repeated warnings said at most once a second, and
//! client-supplied strings shown only in part.
//!
//! A client that makes the broker warn on every request (replies it never reads, malformed
//! envelopes) must not be able to fill the disk with log lines, and a client's name or topic
//! must not be able to fill a line with megabytes or with control characters.

use std::fmt;
use std::time::{Duration, Instant};

/// How often one kind of warning may be logged.
pub const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// The most characters of a client-supplied string a log line shows.
pub const SHOWN_CHARS: usize = 80;

/// One kind of repeated warning: logged at most once per [`WARN_INTERVAL`], with the count of
/// those held back since the last line.
#[derive(Debug, Default)]
pub struct Throttle {
    /// When the next line may be logged; `None` before the first.
    next: Option<Instant>,
    /// Occurrences not logged since the last line.
    suppressed: u64,
}

impl Throttle {
    /// Counts one occurrence at `now`. Returns `Some(suppressed)` when it should be logged,
    /// with how many were held back since the last line, and `None` when it is held back.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|next| now < next) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + WARN_INTERVAL);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// How many occurrences were held back since the last line, counted as said.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// Shows a client-supplied string in a log line: at most [`SHOWN_CHARS`] characters, control
/// and bidirectional characters escaped, and the full length said when it was cut.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(SHOWN_CHARS) {
            if c.is_control() || is_bidi_control(c) {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        if chars.next().is_some() {
            write!(f, "…({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

/// Characters that reorder the text around them on a terminal.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_says_one_line_a_second_with_the_count_held_back() {
        let mut throttle = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(throttle.admit(t0), Some(0));
        for i in 1..=999 {
            assert_eq!(throttle.admit(t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(throttle.admit(t0 + WARN_INTERVAL), Some(999));
        assert_eq!(throttle.admit(t0 + WARN_INTERVAL), None);
    }

    #[test]
    fn long_and_hostile_strings_are_shown_in_part() {
        assert_eq!(Shown("orders").to_string(), "orders");
        let long = "x".repeat(100_000);
        let shown = Shown(&long).to_string();
        assert_eq!(shown, format!("{}…(100000 bytes)", "x".repeat(80)));
        assert_eq!(Shown("a\x1b[2Jb\u{202e}c").to_string(), "a\\u{1b}[2Jb\\u{202e}c");
    }
}
