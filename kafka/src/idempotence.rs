//! Idempotent producers (`enable.idempotence=true`): each gets its own producer id from
//! `InitProducerId`, and a batch is appended only if its sequence number is the next one for
//! its producer on its topic's partition, as Kafka checks. A retried batch (one whose sequence
//! was appended already, among the last [`RECENT`]) is answered with the offset it got the
//! first time and stored no second time; one out of order is refused.
//!
//! The state is the gateway's, in memory: a restarted gateway answers a producer it does not
//! know `UNKNOWN_PRODUCER_ID`, and the producer starts again with a new id, as with a Kafka
//! broker that expired it. At most [`MAX_PRODUCERS`] producer-partition pairs are kept, the
//! least recently used going first.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};

use kafka_protocol::ResponseError;

/// How many of a producer's last batches on a partition a retry is recognised among: Kafka's
/// `max.in.flight.requests.per.connection` limit for idempotence.
pub const RECENT: usize = 5;

/// The most producer-partition pairs kept.
pub const MAX_PRODUCERS: usize = 100_000;

/// The first producer id handed out.
const FIRST_ID: i64 = 1_000;

/// What a producer's batch is, against what was appended before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The next in sequence (or not from an idempotent producer): append it.
    Fresh,
    /// Appended already, at this first offset: answer it so, and append nothing.
    Duplicate(i64),
    /// Refused with this Kafka error code.
    Refused(i16),
}

/// One producer's sequence on one partition of a topic.
#[derive(Debug)]
struct Sequence {
    /// The producer's epoch.
    epoch: i16,
    /// The sequence number the next batch must start at.
    next: i32,
    /// The last batches appended: first sequence, record count, first offset.
    recent: VecDeque<(i32, i32, i64)>,
    /// When it was last used, as a count of checks.
    used: u64,
}

/// A producer id, a topic and a partition of it.
type Key = (i64, String, u32);

/// The producers the gateway gave ids to, and their sequences.
#[derive(Debug, Default)]
pub struct Producers {
    /// The next producer id to give.
    next_id: AtomicI64,
    /// The sequences by producer id, topic and partition, and the count of checks so far.
    sequences: Mutex<(HashMap<Key, Sequence>, u64)>,
}

impl Producers {
    /// A new producer's id.
    pub fn new_id(&self) -> i64 {
        FIRST_ID + self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// Checks a batch of `count` records from producer `id` in `epoch`, its first record at
    /// `sequence`, on `place` (a topic and a partition). A producer id below 0 is no idempotent
    /// producer: `Fresh`.
    pub fn check(
        &self,
        id: i64,
        epoch: i16,
        sequence: i32,
        count: i32,
        (topic, partition): (&str, u32),
    ) -> Check {
        if id < 0 {
            return Check::Fresh;
        }
        if id < FIRST_ID || id >= FIRST_ID + self.next_id.load(Ordering::SeqCst) {
            return Check::Refused(ResponseError::UnknownProducerId.code());
        }
        let mut sequences = self.sequences.lock().unwrap_or_else(PoisonError::into_inner);
        sequences.1 += 1;
        let tick = sequences.1;
        let Some(known) = sequences.0.get_mut(&(id, topic.to_owned(), partition)) else {
            return Check::Fresh;
        };
        known.used = tick;
        if epoch < known.epoch {
            return Check::Refused(ResponseError::InvalidProducerEpoch.code());
        }
        if epoch > known.epoch {
            return if sequence == 0 {
                Check::Fresh
            } else {
                Check::Refused(ResponseError::OutOfOrderSequenceNumber.code())
            };
        }
        if let Some((_, _, offset)) =
            known.recent.iter().find(|(first, n, _)| *first == sequence && *n == count)
        {
            return Check::Duplicate(*offset);
        }
        if sequence == known.next {
            Check::Fresh
        } else {
            Check::Refused(ResponseError::OutOfOrderSequenceNumber.code())
        }
    }

    /// Notes that the batch [`Producers::check`] found fresh was appended at `offset`.
    pub fn appended(
        &self,
        id: i64,
        epoch: i16,
        sequence: i32,
        count: i32,
        (topic, partition): (&str, u32),
        offset: i64,
    ) {
        if id < 0 {
            return;
        }
        let mut sequences = self.sequences.lock().unwrap_or_else(PoisonError::into_inner);
        sequences.1 += 1;
        let tick = sequences.1;
        let key = (id, topic.to_owned(), partition);
        if !sequences.0.contains_key(&key) && sequences.0.len() >= MAX_PRODUCERS {
            let oldest = sequences.0.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                sequences.0.remove(&oldest);
            }
        }
        let known = sequences.0.entry(key).or_insert_with(|| Sequence {
            epoch,
            next: 0,
            recent: VecDeque::new(),
            used: tick,
        });
        if epoch != known.epoch {
            known.epoch = epoch;
            known.recent.clear();
        }
        known.next = sequence.wrapping_add(count);
        known.used = tick;
        known.recent.push_back((sequence, count, offset));
        if known.recent.len() > RECENT {
            known.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_batch_gets_its_first_offset_and_a_gap_is_refused() {
        let producers = Producers::default();
        let id = producers.new_id();
        assert_eq!(producers.check(id, 0, 0, 3, ("t", 0)), Check::Fresh);
        producers.appended(id, 0, 0, 3, ("t", 0), 100);
        assert_eq!(producers.check(id, 0, 0, 3, ("t", 0)), Check::Duplicate(100));
        assert_eq!(producers.check(id, 0, 3, 2, ("t", 0)), Check::Fresh);
        producers.appended(id, 0, 3, 2, ("t", 0), 103);
        assert_eq!(producers.check(id, 0, 3, 2, ("t", 0)), Check::Duplicate(103));
        assert_eq!(producers.check(id, 0, 9, 1, ("t", 0)), Check::Refused(45));
        // Another topic, and another partition, has its own sequence.
        assert_eq!(producers.check(id, 0, 0, 1, ("u", 0)), Check::Fresh);
        assert_eq!(producers.check(id, 0, 0, 1, ("t", 1)), Check::Fresh);
        producers.appended(id, 0, 0, 1, ("t", 1), 7);
        assert_eq!(producers.check(id, 0, 0, 1, ("t", 1)), Check::Duplicate(7));
        assert_eq!(producers.check(id, 0, 5, 1, ("t", 0)), Check::Fresh);
        // An id never given, and an old epoch.
        assert_eq!(producers.check(id + 1, 0, 0, 1, ("t", 0)), Check::Refused(59));
        producers.appended(id, 1, 0, 1, ("t", 0), 105);
        assert_eq!(producers.check(id, 0, 5, 1, ("t", 0)), Check::Refused(47));
        // Not an idempotent producer.
        assert_eq!(producers.check(-1, -1, -1, 1, ("t", 0)), Check::Fresh);
    }
}
