//! Idempotent appends on a broker that stores alone (in memory or `--data-dir`): the appends
//! of idempotent producers it stored lately, by producer, topic and sequence, so that one sent
//! again is answered with the offsets it got the first time and stored no second time
//! (PROTOCOL.md, "Idempotent appends"). A store shared with other broker processes recognises
//! resends itself ([`crate::store::Log::recognises_resends`]) and needs none of this.
//!
//! An append is remembered from the moment it is staged: until its commit settles it is
//! *in progress*, and a resend then is refused `317 in_progress` rather than staged a second
//! time; once the commit settles it is remembered with its placements, or forgotten if the
//! commit dropped it (a resend is then stored). The one door is [`Remembered`]; its invariant:
//! an append is never staged while the same producer, topic and sequence is in progress or
//! stored within the window, so the store holds it at most once.
//!
//! Memory is bounded: at most [`MAX_REMEMBERED`] appends, each for at most [`WINDOW`] (the
//! oldest go first), whatever producers send.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use protocol::{Placement, Sequenced};

use crate::store::{CommitFailure, Ticket};

/// How long an append stays remembered: JetStream's default duplicate window, so that both
/// kinds of store promise the same.
pub const WINDOW: Duration = Duration::from_secs(120);

/// The most appends remembered at once (each costs about 100 bytes).
pub const MAX_REMEMBERED: usize = 100_000;

/// A topic, and a producer's mark on an append to it.
type Key = (String, Sequenced);

/// An append staged: its key, the partition of its first message, and where its messages
/// went.
type Staged = (Key, u32, Vec<Placement>);

/// What is known of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Staged, its commit not settled.
    InProgress,
    /// Stored: the partition of its first message, and where its messages went.
    Stored(u32, Vec<Placement>),
}

/// What an idempotent append is, against those remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not remembered: stage it.
    New,
    /// Staged already, its commit not settled: refuse it `317`.
    InProgress,
    /// Stored already: answer it so, storing nothing.
    Stored(u32, Vec<Placement>),
}

/// The idempotent appends remembered; see the module's text.
#[derive(Debug, Default)]
pub struct Remembered {
    /// What is known of each, and when it was staged.
    appends: HashMap<Key, (State, Instant)>,
    /// The keys in the order they were staged, for forgetting the oldest.
    order: VecDeque<(Instant, Key)>,
    /// Those staged since the last commit started.
    staged: Vec<Staged>,
    /// Those of each commit in flight.
    committing: Vec<(Ticket, Vec<Staged>)>,
}

impl Remembered {
    /// What `sequenced`'s append to `topic` is, at `now`.
    pub fn seen(&self, topic: &str, sequenced: Sequenced, now: Instant) -> Seen {
        match self.appends.get(&(topic.to_owned(), sequenced)) {
            Some((State::InProgress, _)) => Seen::InProgress,
            Some((State::Stored(first, placed), at)) if now.duration_since(*at) < WINDOW => {
                Seen::Stored(*first, placed.clone())
            }
            _ => Seen::New,
        }
    }

    /// Remembers `sequenced`'s append to `topic`, staged at `now`, its first message in
    /// partition `first`, its messages `placed`; in progress until the next commit settles.
    pub fn stage(
        &mut self,
        topic: &str,
        sequenced: Sequenced,
        first: u32,
        placed: Vec<Placement>,
        now: Instant,
    ) {
        self.forget_old(now);
        let key = (topic.to_owned(), sequenced);
        self.appends.insert(key.clone(), (State::InProgress, now));
        self.order.push_back((now, key.clone()));
        self.staged.push((key, first, placed));
    }

    /// The appends staged since the last commit belong to the one just started, `ticket`.
    pub fn committing(&mut self, ticket: Ticket) {
        if !self.staged.is_empty() {
            self.committing.push((ticket, std::mem::take(&mut self.staged)));
        }
    }

    /// Commit `ticket` settled, dropping the appends of the topics in `failures`: those are
    /// forgotten (a resend is stored), the others remembered as stored.
    pub fn settle(&mut self, ticket: Ticket, failures: &[CommitFailure]) {
        let Some(at) = self.committing.iter().position(|(t, _)| *t == ticket) else { return };
        let (_, appends) = self.committing.swap_remove(at);
        for (key, first, placed) in appends {
            let dropped = failures.iter().any(|f| f.topic == key.0);
            match self.appends.get_mut(&key) {
                Some(entry) if !dropped => entry.0 = State::Stored(first, placed),
                Some(_) => {
                    self.appends.remove(&key);
                }
                None => {}
            }
        }
    }

    /// Forgets every append to `topic`, deleted: one sent again makes the topic anew.
    pub fn forget_topic(&mut self, topic: &str) {
        self.appends.retain(|(t, _), _| t != topic);
    }

    /// How many appends are remembered. For tests and metrics.
    pub fn remembered(&self) -> usize {
        self.appends.len()
    }

    /// Forgets the appends staged more than [`WINDOW`] before `now`, and the oldest beyond
    /// [`MAX_REMEMBERED`] less one (room for the one being staged).
    fn forget_old(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front() {
            let old = now.duration_since(*at) >= WINDOW;
            if !old && self.order.len() < MAX_REMEMBERED {
                break;
            }
            // An entry staged again later (after its first commit dropped it) is the later
            // one's: only the entry of this staging goes.
            if self.appends.get(key).is_some_and(|(_, staged)| staged == at) {
                self.appends.remove(key);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn mark(sequence: u64) -> Sequenced {
        Sequenced { producer: 7, sequence }
    }

    fn placed(first_offset: u64) -> Vec<Placement> {
        vec![Placement { partition: 0, first_offset, last_offset: first_offset + 1 }]
    }

    #[test]
    fn an_append_is_in_progress_until_its_commit_settles_then_stored() {
        let mut remembered = Remembered::default();
        let now = Instant::now();
        assert_eq!(remembered.seen("t", mark(1), now), Seen::New);
        remembered.stage("t", mark(1), 0, placed(10), now);
        assert_eq!(remembered.seen("t", mark(1), now), Seen::InProgress);
        remembered.committing(Ticket(3));
        assert_eq!(remembered.seen("t", mark(1), now), Seen::InProgress);
        remembered.settle(Ticket(3), &[]);
        assert_eq!(remembered.seen("t", mark(1), now), Seen::Stored(0, placed(10)));
        // Another sequence, topic or producer is another append.
        assert_eq!(remembered.seen("t", mark(2), now), Seen::New);
        assert_eq!(remembered.seen("u", mark(1), now), Seen::New);
        let other = Sequenced { producer: 8, sequence: 1 };
        assert_eq!(remembered.seen("t", other, now), Seen::New);
    }

    #[test]
    fn an_append_its_commit_dropped_is_forgotten_and_may_be_stored_again() {
        let mut remembered = Remembered::default();
        let now = Instant::now();
        remembered.stage("t", mark(1), 0, placed(10), now);
        remembered.stage("u", mark(1), 0, placed(0), now);
        remembered.committing(Ticket(1));
        let failure = CommitFailure {
            topic: "t".into(),
            partition: 0,
            error: StoreError::Unavailable("down".into()),
        };
        remembered.settle(Ticket(1), &[failure]);
        assert_eq!(remembered.seen("t", mark(1), now), Seen::New);
        assert_eq!(remembered.seen("u", mark(1), now), Seen::Stored(0, placed(0)));
        // Staged again, it is the new staging that is remembered.
        remembered.stage("t", mark(1), 0, placed(12), now);
        remembered.committing(Ticket(2));
        remembered.settle(Ticket(2), &[]);
        assert_eq!(remembered.seen("t", mark(1), now), Seen::Stored(0, placed(12)));
    }

    #[test]
    fn appends_are_forgotten_after_the_window_and_beyond_the_bound() {
        let mut remembered = Remembered::default();
        let start = Instant::now();
        remembered.stage("t", mark(0), 0, placed(0), start);
        remembered.committing(Ticket(1));
        remembered.settle(Ticket(1), &[]);
        let later = start + WINDOW;
        assert_eq!(remembered.seen("t", mark(0), later), Seen::New, "past the window");
        for sequence in 1..=MAX_REMEMBERED as u64 + 10 {
            remembered.stage("t", mark(sequence), 0, placed(sequence), later);
        }
        assert_eq!(remembered.remembered(), MAX_REMEMBERED);
        assert_eq!(remembered.seen("t", mark(10), later), Seen::New, "the oldest went first");
        assert_eq!(remembered.seen("t", mark(11), later), Seen::InProgress);
    }

    #[test]
    fn a_deleted_topic_forgets_its_appends() {
        let mut remembered = Remembered::default();
        let now = Instant::now();
        remembered.stage("t", mark(1), 0, placed(0), now);
        remembered.committing(Ticket(1));
        remembered.settle(Ticket(1), &[]);
        remembered.forget_topic("t");
        assert_eq!(remembered.seen("t", mark(1), now), Seen::New);
    }
}
