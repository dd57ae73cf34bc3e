//! How much one read may return: a count of messages and of key and value bytes, shared by
//! `fetch`, group delivery and the store's read.

use protocol::{Message, MAX_FETCH_BYTES, MAX_FETCH_MESSAGES};

/// What is left of a read's limits. The first message always fits, however large, so that a
/// reader can never be stuck behind a message larger than it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Messages taken so far.
    taken: usize,
    /// Key and value bytes taken so far.
    bytes: usize,
    /// At most this many messages.
    max_messages: usize,
    /// At most this many key and value bytes, but for the first message.
    max_bytes: usize,
}

impl Budget {
    /// At most `max_messages` messages of at most `max_bytes` bytes in all (but for the first).
    pub fn new(max_messages: usize, max_bytes: usize) -> Budget {
        Budget { taken: 0, bytes: 0, max_messages, max_bytes }
    }

    /// The budget of a fetch asking for `max_messages` and `max_bytes`, within the protocol's
    /// limits: at least one message, at most [`MAX_FETCH_MESSAGES`] and [`MAX_FETCH_BYTES`].
    pub fn of_fetch(max_messages: u32, max_bytes: u32) -> Budget {
        Budget::new(
            max_messages.clamp(1, MAX_FETCH_MESSAGES) as usize,
            max_bytes.min(MAX_FETCH_BYTES) as usize,
        )
    }

    /// How many more messages may be taken.
    pub fn messages_left(&self) -> usize {
        self.max_messages.saturating_sub(self.taken)
    }

    /// Takes `message` if it fits in what is left; `false` (taking nothing) if it does not.
    pub fn take(&mut self, message: &Message<'_>) -> bool {
        self.take_bytes(message.size())
    }

    /// Takes a message of `size` bytes ([`Message::size`]) as [`Budget::take`] does.
    #[inline]
    pub fn take_bytes(&mut self, size: usize) -> bool {
        let fits = self.taken < self.max_messages
            && (self.taken == 0 || self.bytes.saturating_add(size) <= self.max_bytes);
        if fits {
            self.taken += 1;
            self.bytes = self.bytes.saturating_add(size);
        }
        fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static ZEROS: [u8; 64] = [0; 64];

    fn message(len: usize) -> Message<'static> {
        Message { offset: 0, timestamp: 0, key: None, value: &ZEROS[..len], headers: Vec::new() }
    }

    #[test]
    fn the_first_message_always_fits_and_the_rest_within_the_limits() {
        let mut budget = Budget::new(3, 10);
        assert!(budget.take(&message(50)));
        assert!(!budget.take(&message(1)));
        let mut budget = Budget::new(3, 10);
        assert!(budget.take(&message(4)));
        assert!(budget.take(&message(6)));
        assert!(!budget.take(&message(1)));
        let mut budget = Budget::new(2, 100);
        assert!(budget.take(&message(1)) && budget.take(&message(1)));
        assert_eq!(budget.messages_left(), 0);
        assert!(!budget.take(&message(1)));
    }

    #[test]
    fn a_fetch_budget_keeps_to_the_protocol_limits() {
        assert_eq!(Budget::of_fetch(0, 5), Budget::new(1, 5));
        assert_eq!(
            Budget::of_fetch(u32::MAX, u32::MAX),
            Budget::new(MAX_FETCH_MESSAGES as usize, MAX_FETCH_BYTES as usize)
        );
    }
}
