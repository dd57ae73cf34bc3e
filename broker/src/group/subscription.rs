//! One group's state on one topic: what it has been delivered, what is pending, who its members
//! are. Pure bookkeeping of offsets and times: it never reads the topic, touches a file or sees a
//! socket, so every rule of delivery and acknowledgement is tested here on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Why an acknowledgement was refused. A refused acknowledgement changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotDelivered {
    /// The first offset of the request the group was never delivered.
    pub offset: u64,
    /// The group's delivered offset: every offset below it was delivered.
    pub delivered: u64,
}

/// A group's state on a topic.
///
/// The offsets below `delivered` are each either pending or acknowledged, so the state is the
/// delivered offset plus the pending set, and the committed offset follows from them: the lowest
/// pending offset, or `delivered` when none is pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The next offset never delivered to the group.
    delivered: u64,
    /// Delivered, unacknowledged offsets, each with the moment its ack timeout runs out.
    pending: BTreeMap<u64, Instant>,
    /// Whether the group has a committed offset here. A partition has none when its state was
    /// made for a reset of another partition, or its offset was deleted (Kafka's
    /// `--delete-offsets`): then `list_groups` leaves it out, a Kafka consumer's
    /// `auto.offset.reset` places it, and the next join starts it at the join's `start`.
    /// Anything delivered, acknowledged or reset here gives it one.
    placed: bool,
    /// The same deliveries ordered by deadline, so that due ones are found without looking at
    /// the others.
    deadlines: BTreeSet<(Instant, u64)>,
    /// The claims that joined, each with the logical broker it holds. Not part of what is
    /// stored: claims end with the broker.
    members: BTreeMap<u64, u32>,
    /// The members not yet told of the last reset, with the offset it went to. Not stored
    /// either: the members it is for end with the broker.
    resets_untold: BTreeMap<u64, u64>,
    /// The member the last messages were delivered to, for ordered delivery: while messages
    /// it was handed are pending and not due, no other member is served from this state. Not
    /// stored: after a restart nobody is known to hold them, so they wait for their timeout.
    holder: Option<u64>,
}

impl Subscription {
    /// A new group state that starts reading at `start`.
    pub fn new(start: u64) -> Subscription {
        Subscription {
            delivered: start,
            pending: BTreeMap::new(),
            placed: true,
            deadlines: BTreeSet::new(),
            members: BTreeMap::new(),
            resets_untold: BTreeMap::new(),
            holder: None,
        }
    }

    /// A state with no committed offset yet (see [`Subscription::placed`]), which reads
    /// from `start` should a member read it before a join places it.
    pub fn unplaced(start: u64) -> Subscription {
        Subscription { placed: false, ..Subscription::new(start) }
    }

    /// Whether the group has a committed offset here; see [`Subscription::unplaced`].
    pub fn placed(&self) -> bool {
        self.placed
    }

    /// Forgets the committed offset, what was pending with it, and puts the next read at
    /// `start`: the partition is as if the group had never read it. Members stay.
    pub fn forget(&mut self, start: u64) {
        self.delivered = start;
        self.pending.clear();
        self.deadlines.clear();
        self.placed = false;
    }

    /// Gives a state without a committed offset one at `start` (a join's), and leaves any
    /// other as it is.
    pub fn place(&mut self, start: u64) {
        if !self.placed {
            self.delivered = start;
            self.placed = true;
        }
    }

    /// A state read back from storage: delivered up to `delivered`, with `pending` offsets
    /// (below `delivered`) that all wait for their acknowledgement until `deadline`.
    pub fn restored(
        delivered: u64,
        pending: impl IntoIterator<Item = u64>,
        deadline: Instant,
    ) -> Subscription {
        let mut state = Subscription::new(delivered);
        for offset in pending.into_iter().filter(|&o| o < delivered) {
            state.pending.insert(offset, deadline);
            state.deadlines.insert((deadline, offset));
        }
        state
    }

    /// Every offset below this one is acknowledged: where the group resumes.
    pub fn committed(&self) -> u64 {
        self.pending.first_key_value().map_or(self.delivered, |(&offset, _)| offset)
    }

    /// The next offset never delivered to the group.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// How many messages are delivered and not acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The pending offsets, in order.
    pub fn pending_offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending.keys().copied()
    }

    /// When the first pending message's ack timeout runs out, if any is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// Up to `limit` pending offsets whose ack timeout has run out by `now`, lowest first.
    pub fn due(&self, now: Instant, limit: usize) -> Vec<u64> {
        let mut due: Vec<u64> = self
            .deadlines
            .iter()
            .take_while(|&&(deadline, _)| deadline <= now)
            .map(|&(_, offset)| offset)
            .collect();
        due.sort_unstable();
        due.truncate(limit);
        due
    }

    /// Records that `offsets` went to a member, each pending until `deadline`; returns those
    /// that had been delivered before. `offsets` are due ones, then new ones from the delivered
    /// offset on, consecutive; an offset that is neither (acknowledged meanwhile) is skipped.
    pub fn deliver(&mut self, offsets: &[u64], deadline: Instant) -> Vec<u64> {
        let mut redelivered = Vec::new();
        self.placed |= !offsets.is_empty();
        for &offset in offsets {
            if offset < self.delivered {
                // One that is not pending was acknowledged meanwhile: it stays acknowledged.
                let Some(slot) = self.pending.get_mut(&offset) else { continue };
                let before = std::mem::replace(slot, deadline);
                self.deadlines.remove(&(before, offset));
                redelivered.push(offset);
            } else {
                // New deliveries are consecutive from the delivered offset; were one to skip
                // ahead, the offsets skipped would count as acknowledged, never as pending.
                self.pending.insert(offset, deadline);
                self.delivered = offset.saturating_add(1);
            }
            self.deadlines.insert((deadline, offset));
        }
        redelivered
    }

    /// Notes that member `claim` was handed the messages just delivered.
    pub fn hand_to(&mut self, claim: u64) {
        self.holder = Some(claim);
    }

    /// Whether another member than `claim` holds messages of this state that are pending and
    /// not yet due: then an ordered delivery to `claim` must wait, so that the messages are
    /// processed in order. Messages whose ack timeout ran out hold nothing back.
    pub fn held_by_other(&self, claim: u64, now: Instant) -> bool {
        self.holder != Some(claim) && self.deadlines.last().is_some_and(|&(due, _)| due > now)
    }

    /// Makes those of `offsets` that are still pending due at `now`: their delivery reached
    /// nobody (the member was gone), so they may go to another member at once.
    pub fn give_back(&mut self, offsets: &[u64], now: Instant) {
        for offset in offsets {
            if let Some(deadline) = self.pending.get_mut(offset) {
                if *deadline > now {
                    self.deadlines.remove(&(*deadline, *offset));
                    *deadline = now;
                    self.deadlines.insert((now, *offset));
                }
            }
        }
    }

    /// Checks that every offset of an acknowledgement was delivered to the group.
    ///
    /// # Errors
    /// The first offset that was not.
    pub fn check_ack(&self, offsets: &[u64]) -> Result<(), NotDelivered> {
        match offsets.iter().find(|&&offset| offset >= self.delivered) {
            Some(&offset) => Err(NotDelivered { offset, delivered: self.delivered }),
            None => Ok(()),
        }
    }

    /// How many of `offsets` are pending: what [`Subscription::ack`] would acknowledge.
    pub fn count_pending(&self, offsets: &[u64]) -> u64 {
        let distinct: BTreeSet<u64> = offsets.iter().copied().collect();
        distinct.iter().filter(|offset| self.pending.contains_key(offset)).count() as u64
    }

    /// Acknowledges `offsets`, all or none; returns how many were pending. Offsets acknowledged
    /// before are accepted again and change nothing.
    ///
    /// # Errors
    /// An offset the group was never delivered; nothing is acknowledged then.
    pub fn ack(&mut self, offsets: &[u64]) -> Result<u64, NotDelivered> {
        self.check_ack(offsets)?;
        let mut acked = 0;
        for offset in offsets {
            if let Some(deadline) = self.pending.remove(offset) {
                self.deadlines.remove(&(deadline, *offset));
                acked += 1;
            }
        }
        Ok(acked)
    }

    /// Moves the committed and delivered offsets to `offset`, forgetting what was pending.
    pub fn reset(&mut self, offset: u64) {
        self.delivered = offset;
        self.placed = true;
        self.pending.clear();
        self.deadlines.clear();
        self.resets_untold = self.members.keys().map(|&claim| (claim, offset)).collect();
    }

    /// The offset of the last reset, if member `claim` has not been told of it yet; from now
    /// on it has been.
    pub fn take_reset(&mut self, claim: u64) -> Option<u64> {
        self.resets_untold.remove(&claim)
    }

    /// Whether [`Subscription::fit`] would change anything for a topic holding `first..end`.
    pub fn needs_fit(&self, first: u64, end: u64) -> bool {
        self.delivered > end || self.delivered < first || self.committed() < first
    }

    /// Fits the state to a topic that now holds offsets `first..end`: pending messages that
    /// retention removed count as acknowledged (they can never be delivered again), and a
    /// delivered offset past the end (the topic lost its tail) comes back to it. Returns how
    /// many pending messages were given up.
    pub fn fit(&mut self, first: u64, end: u64) -> u64 {
        let mut dropped = 0;
        if self.delivered > end {
            for (offset, deadline) in self.pending.split_off(&end) {
                self.deadlines.remove(&(deadline, offset));
                dropped += 1;
            }
            self.delivered = end;
        }
        let kept = self.pending.split_off(&first);
        for (offset, deadline) in std::mem::replace(&mut self.pending, kept) {
            self.deadlines.remove(&(deadline, offset));
            dropped += 1;
        }
        self.delivered = self.delivered.max(first);
        dropped
    }

    /// Whether [`Subscription::trim`] would change anything for a partition whose oldest
    /// offset is `first`.
    pub fn needs_trim(&self, first: u64) -> bool {
        self.delivered < first || self.committed() < first
    }

    /// Fits the state to a partition whose oldest offset is now `first`, as [`Subscription::fit`]
    /// does, but never moves the delivered offset back: for a running broker, whose view of a
    /// partition's end may be behind what the group was handed (with the store on a JetStream,
    /// another broker process delivers what it appended before this process's copy has it),
    /// and whose partitions lose no tail while it runs. Returns how many pending messages were
    /// given up.
    pub fn trim(&mut self, first: u64) -> u64 {
        let end = self.delivered.max(first);
        self.fit(first, end)
    }

    /// Adds claim `claim`, which holds logical broker `broker`, to the members; `true` if it was
    /// not one already.
    pub fn join(&mut self, claim: u64, broker: u32) -> bool {
        self.members.insert(claim, broker).is_none()
    }

    /// Whether claim `claim` has joined.
    pub fn is_member(&self, claim: u64) -> bool {
        self.members.contains_key(&claim)
    }

    /// Forgets the members whose claim `is_live` says has ended.
    pub fn prune_members(&mut self, is_live: impl Fn(u64) -> bool) {
        self.members.retain(|&claim, _| is_live(claim));
        self.resets_untold.retain(|&claim, _| is_live(claim));
    }

    /// The logical brokers of the members whose claim `is_live`, ascending.
    pub fn member_brokers(&self, is_live: impl Fn(u64) -> bool) -> Vec<u32> {
        let mut brokers: Vec<u32> = self
            .members
            .iter()
            .filter(|&(&claim, _)| is_live(claim))
            .map(|(_, &broker)| broker)
            .collect();
        brokers.sort_unstable();
        brokers
    }

    /// Puts back the delivered offset and pending set of `earlier`, keeping the members: for a
    /// pass whose changes could not be stored.
    pub fn roll_back_to(&mut self, earlier: Subscription) {
        let members = std::mem::take(&mut self.members);
        *self = Subscription { members, ..earlier };
    }

    /// Copies the members of `other` (another partition's state of the same group and topic),
    /// for a partition the topic gained.
    pub fn join_all(&mut self, other: &Subscription) {
        self.members.clone_from(&other.members);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// Delivers the next `count` new offsets, as a group fetch would.
    fn deliver_new(state: &mut Subscription, count: u64, now: Instant) -> Vec<u64> {
        let offsets: Vec<u64> = (state.delivered()..state.delivered() + count).collect();
        state.deliver(&offsets, now + TIMEOUT);
        offsets
    }

    #[test]
    fn a_new_group_starts_where_it_is_told() {
        let state = Subscription::new(7);
        assert_eq!((state.committed(), state.delivered(), state.pending()), (7, 7, 0));
        assert_eq!(state.next_due(), None);
    }

    #[test]
    fn the_committed_offset_is_the_end_of_the_prefix_acknowledged_without_gaps() {
        let now = Instant::now();
        let mut state = Subscription::new(0);
        deliver_new(&mut state, 5, now);
        assert_eq!((state.committed(), state.delivered(), state.pending()), (0, 5, 5));
        assert_eq!(state.ack(&[1, 2]), Ok(2));
        assert_eq!(state.committed(), 0, "offset 0 is still pending");
        assert_eq!(state.ack(&[0]), Ok(1));
        assert_eq!(state.committed(), 3);
        assert_eq!(state.ack(&[4, 3]), Ok(2));
        assert_eq!((state.committed(), state.pending()), (5, 0));
    }

    #[test]
    fn acknowledging_again_is_accepted_and_changes_nothing() {
        let now = Instant::now();
        let mut state = Subscription::new(0);
        deliver_new(&mut state, 3, now);
        assert_eq!(state.ack(&[1]), Ok(1));
        let before = state.clone();
        assert_eq!(state.count_pending(&[1, 1]), 0);
        assert_eq!(state.ack(&[1, 1]), Ok(0));
        assert_eq!(state, before);
    }

    #[test]
    fn an_ack_of_an_offset_never_delivered_is_refused_whole() {
        let now = Instant::now();
        let mut state = Subscription::new(0);
        deliver_new(&mut state, 3, now);
        let before = state.clone();
        assert_eq!(state.ack(&[0, 3]), Err(NotDelivered { offset: 3, delivered: 3 }));
        assert_eq!(state, before, "offset 0 must not be acknowledged either");
        assert_eq!(state.ack(&[u64::MAX]), Err(NotDelivered { offset: u64::MAX, delivered: 3 }));
    }

    #[test]
    fn unacknowledged_messages_come_due_after_the_timeout_lowest_first() {
        let start = Instant::now();
        let mut state = Subscription::new(10);
        deliver_new(&mut state, 2, start);
        let later = start + Duration::from_secs(1);
        deliver_new(&mut state, 2, later);
        assert!(state.due(start + TIMEOUT - Duration::from_millis(1), 10).is_empty());
        assert_eq!(state.next_due(), Some(start + TIMEOUT));
        assert_eq!(state.due(start + TIMEOUT, 10), [10, 11]);
        assert_eq!(state.due(later + TIMEOUT, 10), [10, 11, 12, 13]);
        assert_eq!(state.due(later + TIMEOUT, 3), [10, 11, 12]);
        state.ack(&[11]).unwrap();
        assert_eq!(state.due(later + TIMEOUT, 10), [10, 12, 13]);
    }

    #[test]
    fn redelivery_restarts_the_timeout_and_is_reported() {
        let start = Instant::now();
        let mut state = Subscription::new(0);
        deliver_new(&mut state, 2, start);
        let due_at = start + TIMEOUT;
        let due = state.due(due_at, 10);
        assert_eq!(state.deliver(&[due[0], due[1], 2], due_at + TIMEOUT), [0, 1]);
        assert_eq!(state.delivered(), 3);
        assert!(state.due(due_at, 10).is_empty());
        assert_eq!(state.next_due(), Some(due_at + TIMEOUT));
        // A late ack from the first member still counts.
        assert_eq!(state.ack(&[0, 1, 2]), Ok(3));
        assert_eq!(state.committed(), 3);
    }

    #[test]
    fn a_delivery_that_reached_nobody_is_due_at_once() {
        let start = Instant::now();
        let mut state = Subscription::new(0);
        deliver_new(&mut state, 3, start);
        state.ack(&[1]).unwrap();
        let later = start + Duration::from_millis(5);
        state.give_back(&[0, 1, 2], later);
        assert_eq!(state.due(later, 10), [0, 2]);
        assert_eq!(state.next_due(), Some(later));
        assert_eq!(state.pending(), 2);
    }

    #[test]
    fn a_message_acknowledged_meanwhile_is_not_made_pending_again() {
        let start = Instant::now();
        let mut state = Subscription::new(0);
        deliver_new(&mut state, 1, start);
        state.ack(&[0]).unwrap();
        assert!(state.deliver(&[0], start + TIMEOUT).is_empty());
        assert_eq!((state.pending(), state.committed()), (0, 1));
    }

    #[test]
    fn a_delivery_that_skips_ahead_counts_the_gap_as_acknowledged() {
        let now = Instant::now();
        let mut state = Subscription::new(3);
        state.deliver(&[5], now + TIMEOUT);
        assert_eq!((state.committed(), state.delivered(), state.pending()), (5, 6, 1));
        assert_eq!(state.ack(&[3, 4]), Ok(0));
    }

    #[test]
    fn reset_forgets_what_was_pending() {
        let now = Instant::now();
        let mut state = Subscription::new(0);
        deliver_new(&mut state, 4, now);
        state.reset(2);
        assert_eq!((state.committed(), state.delivered(), state.pending()), (2, 2, 0));
        assert_eq!(state.next_due(), None);
        assert_eq!(state.ack(&[1]), Ok(0), "below the new committed offset: acknowledged");
        assert_eq!(state.ack(&[2]), Err(NotDelivered { offset: 2, delivered: 2 }));
        state.reset(9);
        assert_eq!(state.committed(), 9);
    }

    #[test]
    fn retention_skips_pending_messages_it_removed() {
        let now = Instant::now();
        let mut state = Subscription::new(0);
        deliver_new(&mut state, 5, now);
        state.ack(&[3]).unwrap();
        assert!(!state.needs_fit(0, 5));
        assert!(state.needs_fit(2, 5));
        assert_eq!(state.fit(2, 5), 2);
        assert_eq!((state.committed(), state.delivered(), state.pending()), (2, 5, 2));
        assert_eq!(state.due(now + TIMEOUT, 10), [2, 4]);
        // Past everything delivered: the group starts at the first kept offset.
        let mut behind = Subscription::new(1);
        assert_eq!(behind.fit(8, 12), 0);
        assert_eq!((behind.committed(), behind.delivered()), (8, 8));
    }

    #[test]
    fn a_topic_that_lost_its_tail_brings_the_delivered_offset_back() {
        let now = Instant::now();
        let mut state = Subscription::new(0);
        deliver_new(&mut state, 6, now);
        assert!(state.needs_fit(0, 4));
        assert_eq!(state.fit(0, 4), 2);
        assert_eq!((state.delivered(), state.pending()), (4, 4));
        assert_eq!(state.due(now + TIMEOUT, 10), [0, 1, 2, 3]);
    }

    #[test]
    fn members_are_claims_and_leave_with_them() {
        let mut state = Subscription::new(0);
        assert!(state.join(100, 2));
        assert!(state.join(200, 1));
        assert!(!state.join(100, 2), "joining twice changes nothing");
        assert!(state.is_member(100) && !state.is_member(300));
        assert_eq!(state.member_brokers(|_| true), [1, 2]);
        assert_eq!(state.member_brokers(|claim| claim == 100), [2]);
        state.prune_members(|claim| claim == 200);
        assert!(!state.is_member(100));
        assert_eq!(state.member_brokers(|_| true), [1]);
    }

    #[test]
    fn restored_state_holds_what_was_stored() {
        let deadline = Instant::now() + TIMEOUT;
        let state = Subscription::restored(6, [2, 4, 9], deadline);
        assert_eq!((state.committed(), state.delivered(), state.pending()), (2, 6, 2));
        assert_eq!(state.pending_offsets().collect::<Vec<_>>(), [2, 4]);
        assert_eq!(state.next_due(), Some(deadline));
    }

    #[test]
    fn rolling_back_keeps_the_members() {
        let now = Instant::now();
        let mut state = Subscription::new(0);
        let earlier = state.clone();
        state.join(7, 1);
        deliver_new(&mut state, 3, now);
        state.roll_back_to(earlier);
        assert_eq!((state.delivered(), state.pending()), (0, 0));
        assert!(state.is_member(7));
    }

    #[test]
    fn an_ordered_state_is_held_by_the_member_with_messages_not_due() {
        let now = Instant::now();
        let mut state = Subscription::new(0);
        assert!(!state.held_by_other(1, now), "nothing pending holds nothing back");
        deliver_new(&mut state, 2, now);
        state.hand_to(1);
        assert!(!state.held_by_other(1, now), "its holder may take more");
        assert!(state.held_by_other(2, now), "another member waits");
        assert!(!state.held_by_other(2, now + TIMEOUT), "once due, anyone may take them");
        state.ack(&[0, 1]).unwrap();
        assert!(!state.held_by_other(2, now), "acknowledged, they hold nothing back");
        let restored = Subscription::restored(5, [3], now + TIMEOUT);
        assert!(restored.held_by_other(1, now), "after a restart nobody is known to hold them");
    }
}
