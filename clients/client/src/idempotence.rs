//! An idempotent producer's marks (PROTOCOL.md, "Idempotent appends"): a random producer id
//! and a new sequence for each append, which make an append safe to send again after its reply
//! was lost, or after a refusal that cannot say whether it was stored.
//!
//! The one door is [`Idempotence`]: [`Idempotence::next`] marks a new append, and the caller
//! sends every copy of that append (the same messages, to the same `partition`) with that one
//! mark, through [`crate::Client::append_sequenced`]; [`crate::Pipeline`] does so for each of
//! its batches, whose encoded frame it keeps. Its invariant: no two appends marked by one
//! `Idempotence` share a sequence, and no two producers share an id but by a chance of one in
//! 2^64 per pair. The broker then stores each mark at most once per topic, and answers a copy
//! with the offsets the first one got, as long as it remembers the mark (at least two minutes):
//! callers send copies only within their timeout, and never past [`COPY_WINDOW`].

use std::cell::Cell;
use std::io;
use std::time::Duration;

use protocol::Sequenced;

use crate::{ClientError, Result};

/// How long after an append's first sending a copy of it may still be sent, whatever the
/// timeout: the broker remembers a mark for at least two minutes, and a copy needs time to
/// arrive. A copy sent later could be stored a second time.
pub const COPY_WINDOW: Duration = Duration::from_secs(100);

/// A producer id drawn from the operating system's random source, and the next sequence.
///
/// Sequences count from 0 over every topic the producer appends to: the protocol asks only
/// that they do not repeat within a topic, so one counter serves them all.
#[derive(Debug)]
pub struct Idempotence {
    /// The producer's id, for as long as it runs.
    producer: u64,
    /// The sequence of the next append. A `Cell`, so that callers holding the producer's
    /// settings by shared reference can mark appends.
    next: Cell<u64>,
}

impl Idempotence {
    /// A producer with an id of its own, drawn at random so that two producers never share
    /// one (the broker would take one's appends for the other's copies).
    ///
    /// # Errors
    /// [`ClientError::Io`] when the operating system gives no random bytes.
    pub fn new() -> Result<Idempotence> {
        let producer = getrandom::u64().map_err(|e| ClientError::Io {
            what: "cannot draw a random producer id",
            source: io::Error::other(e),
        })?;
        Ok(Idempotence::with_id(producer))
    }

    /// A producer with the id `producer`, for tests that must know it.
    pub fn with_id(producer: u64) -> Idempotence {
        Idempotence { producer, next: Cell::new(0) }
    }

    /// The producer's id.
    pub fn producer(&self) -> u64 {
        self.producer
    }

    /// The mark of a new append: this producer's id and a sequence no append of it had.
    pub fn next(&self) -> Sequenced {
        let sequence = self.next.get();
        self.next.set(sequence.wrapping_add(1));
        Sequenced { producer: self.producer, sequence }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_append_gets_a_new_sequence_of_the_one_producer() {
        let idempotence = Idempotence::with_id(7);
        let marks: Vec<Sequenced> = (0..3).map(|_| idempotence.next()).collect();
        assert_eq!(
            marks,
            [0, 1, 2].map(|sequence| Sequenced { producer: 7, sequence }),
            "{marks:?}"
        );
    }

    #[test]
    fn two_producers_draw_different_ids() {
        let (a, b) = (Idempotence::new().unwrap(), Idempotence::new().unwrap());
        assert_ne!(a.producer(), b.producer());
        assert_eq!(a.next().sequence, 0);
    }
}
