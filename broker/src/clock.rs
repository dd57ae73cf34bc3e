//! The wall clock, as message timestamps and retention by age count it.

use std::time::{SystemTime, UNIX_EPOCH};

/// The time now in milliseconds since the Unix epoch; 0 on a clock set before 1970.
pub fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
