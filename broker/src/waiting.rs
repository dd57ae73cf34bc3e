//! Replies the broker holds back: claims waiting for a logical broker to free up, fetches
//! waiting for messages (long polls, like Kafka's fetch wait or Redis' `XREAD BLOCK`), and group
//! fetches waiting for something to deliver (like `XREADGROUP BLOCK`).
//!
//! A ROUTER socket can answer a request whenever it likes, so holding a reply costs one entry
//! here and nothing else. The envelope type is generic: the server stores ZeroMQ routing frames,
//! the tests store numbers.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// A claim waiting for a logical broker.
#[derive(Debug)]
pub struct WaitingClaim<E> {
    /// Where the reply goes.
    pub envelope: E,
    /// The logical broker wanted, or `None` for any.
    pub broker: Option<u32>,
    /// Who asked, for `status`.
    pub holder: String,
    /// When to give up and answer that none is free.
    pub deadline: Instant,
}

impl<E> WaitingClaim<E> {
    /// The same, its reply going to `envelope`: a command decides to hold a request, the
    /// server knows where its reply goes.
    pub fn routed<F>(self, envelope: F) -> WaitingClaim<F> {
        let WaitingClaim { envelope: _, broker, holder, deadline } = self;
        WaitingClaim { envelope, broker, holder, deadline }
    }
}

/// A fetch waiting for a message at the end of its partition.
#[derive(Debug)]
pub struct HeldFetch<E> {
    /// Where the reply goes.
    pub envelope: E,
    /// The claim it reads under.
    pub claim: u64,
    /// The topic read.
    pub topic: String,
    /// The partition read.
    pub partition: u32,
    /// The offset wanted: the partition's next offset when the fetch was held.
    pub offset: u64,
    /// At most this many messages.
    pub max_messages: u32,
    /// At most this many bytes, but at least one message.
    pub max_bytes: u32,
    /// Whether the reply carries record batches.
    pub batches: bool,
    /// When to answer with no messages.
    pub deadline: Instant,
}

impl<E> HeldFetch<E> {
    /// The same, its reply going to `envelope`: a command decides to hold a request, the
    /// server knows where its reply goes.
    pub fn routed<F>(self, envelope: F) -> HeldFetch<F> {
        let HeldFetch {
            envelope: _,
            claim,
            topic,
            partition,
            offset,
            max_messages,
            max_bytes,
            batches,
            deadline,
        } = self;
        HeldFetch {
            envelope,
            claim,
            topic,
            partition,
            offset,
            max_messages,
            max_bytes,
            batches,
            deadline,
        }
    }
}

/// A group fetch waiting for something to deliver to its member.
#[derive(Debug)]
pub struct HeldGroupFetch<E> {
    /// Where the reply goes.
    pub envelope: E,
    /// The member's claim.
    pub claim: u64,
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// At most this many messages.
    pub max_messages: u32,
    /// At most this many bytes, but at least one message.
    pub max_bytes: u32,
    /// Whether the member asked for ordered delivery.
    pub ordered: bool,
    /// When to look again even if the topic does not grow (a pending message of the group
    /// comes due then), or `until` if sooner.
    pub wake: Instant,
    /// When to answer with nothing.
    pub until: Instant,
}

impl<E> HeldGroupFetch<E> {
    /// The same, its reply going to `envelope`: a command decides to hold a request, the
    /// server knows where its reply goes.
    pub fn routed<F>(self, envelope: F) -> HeldGroupFetch<F> {
        let HeldGroupFetch {
            envelope: _,
            claim,
            group,
            topic,
            max_messages,
            max_bytes,
            ordered,
            wake,
            until,
        } = self;
        HeldGroupFetch {
            envelope,
            claim,
            group,
            topic,
            max_messages,
            max_bytes,
            ordered,
            wake,
            until,
        }
    }
}

/// Every held reply.
#[derive(Debug)]
pub struct Waiting<E> {
    /// Waiting claims, first come first served.
    claims: VecDeque<WaitingClaim<E>>,
    /// Held fetches by topic, so an append finds its waiters without looking at the others.
    fetches: HashMap<String, Vec<HeldFetch<E>>>,
    /// Held group fetches by topic, oldest first within each.
    group_fetches: HashMap<String, Vec<HeldGroupFetch<E>>>,
    /// The earliest deadline of all, or a time before it; `None` when nothing waits.
    next_deadline: Option<Instant>,
}

impl<E> Default for Waiting<E> {
    fn default() -> Self {
        Waiting {
            claims: VecDeque::new(),
            fetches: HashMap::new(),
            group_fetches: HashMap::new(),
            next_deadline: None,
        }
    }
}

impl<E> Waiting<E> {
    /// Queues a claim behind those already waiting.
    pub fn push_claim(&mut self, claim: WaitingClaim<E>) {
        self.note_deadline(claim.deadline);
        self.claims.push_back(claim);
    }

    /// Holds a fetch until its topic grows or its deadline passes.
    pub fn push_fetch(&mut self, fetch: HeldFetch<E>) {
        self.note_deadline(fetch.deadline);
        self.fetches.entry(fetch.topic.clone()).or_default().push(fetch);
    }

    /// Holds a group fetch until its topic grows or it wakes.
    pub fn push_group_fetch(&mut self, fetch: HeldGroupFetch<E>) {
        self.note_deadline(fetch.wake);
        self.group_fetches.entry(fetch.topic.clone()).or_default().push(fetch);
    }

    /// Takes the longest-waiting claim that `can_claim` says can be served now.
    pub fn take_claim(
        &mut self,
        can_claim: impl Fn(Option<u32>) -> bool,
    ) -> Option<WaitingClaim<E>> {
        let at = self.claims.iter().position(|c| can_claim(c.broker))?;
        self.claims.remove(at)
    }

    /// Takes every fetch held on partition `partition` of `topic`, or on any of its partitions
    /// when `partition` is `None` (the topic went away).
    pub fn take_fetches(&mut self, topic: &str, partition: Option<u32>) -> Vec<HeldFetch<E>> {
        let Some(partition) = partition else {
            return self.fetches.remove(topic).unwrap_or_default();
        };
        let Some(held) = self.fetches.get_mut(topic) else { return Vec::new() };
        let (taken, kept): (Vec<_>, Vec<_>) =
            std::mem::take(held).into_iter().partition(|f| f.partition == partition);
        if kept.is_empty() {
            self.fetches.remove(topic);
        } else {
            *held = kept;
        }
        taken
    }

    /// Takes every group fetch held on `topic`, oldest first.
    pub fn take_group_fetches(&mut self, topic: &str) -> Vec<HeldGroupFetch<E>> {
        self.group_fetches.remove(topic).unwrap_or_default()
    }

    /// Takes every group fetch whose wake time is `now` or earlier, oldest first per topic.
    pub fn take_woken_group_fetches(&mut self, now: Instant) -> Vec<HeldGroupFetch<E>> {
        if self.next_deadline.is_none_or(|d| d > now) {
            return Vec::new();
        }
        let woken = take_where(&mut self.group_fetches, |f| f.wake <= now);
        self.recompute_next_deadline();
        woken
    }

    /// Takes every held group fetch, for shutdown.
    pub fn take_all_group_fetches(&mut self) -> Vec<HeldGroupFetch<E>> {
        let held = self.group_fetches.drain().flat_map(|(_, held)| held).collect();
        self.recompute_next_deadline();
        held
    }

    /// Takes every claim and fetch whose deadline is `now` or earlier.
    pub fn take_expired(&mut self, now: Instant) -> (Vec<WaitingClaim<E>>, Vec<HeldFetch<E>>) {
        if self.next_deadline.is_none_or(|d| d > now) {
            return (Vec::new(), Vec::new());
        }
        let (expired, kept): (Vec<_>, Vec<_>) =
            self.claims.drain(..).partition(|c| c.deadline <= now);
        self.claims = kept.into();
        let fetches = take_where(&mut self.fetches, |f| f.deadline <= now);
        self.recompute_next_deadline();
        (expired, fetches)
    }

    /// Takes every claim and fetch, for shutdown; group fetches are taken apart.
    pub fn take_all(&mut self) -> (Vec<WaitingClaim<E>>, Vec<HeldFetch<E>>) {
        let fetches = self.fetches.drain().flat_map(|(_, held)| held).collect();
        let claims = self.claims.drain(..).collect();
        self.recompute_next_deadline();
        (claims, fetches)
    }

    /// The logical broker each waiting claim wants (`None`: any), for the metrics.
    pub fn claims_wanted(&self) -> impl Iterator<Item = Option<u32>> + '_ {
        self.claims.iter().map(|claim| claim.broker)
    }

    /// The earliest deadline, if anything waits (possibly a little early, never late).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_deadline
    }

    /// Whether any fetch or group fetch is held on `topic`.
    pub fn holds_fetches_on(&self, topic: &str) -> bool {
        self.fetches.contains_key(topic) || self.group_fetches.contains_key(topic)
    }

    /// How many fetches are held.
    pub fn held_fetches(&self) -> usize {
        self.fetches.values().map(Vec::len).sum()
    }

    /// How many group fetches are held.
    pub fn held_group_fetches(&self) -> usize {
        self.group_fetches.values().map(Vec::len).sum()
    }

    /// Sets the earliest deadline from what is held now.
    fn recompute_next_deadline(&mut self) {
        self.next_deadline = self
            .claims
            .iter()
            .map(|c| c.deadline)
            .chain(self.fetches.values().flatten().map(|f| f.deadline))
            .chain(self.group_fetches.values().flatten().map(|f| f.wake))
            .min();
    }

    fn note_deadline(&mut self, deadline: Instant) {
        self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
    }
}

/// Takes out of `held` (by topic) every entry that `is_due`, keeping the order of the others
/// within each topic and dropping topics left with none.
fn take_where<T>(held: &mut HashMap<String, Vec<T>>, is_due: impl Fn(&T) -> bool) -> Vec<T> {
    let mut taken = Vec::new();
    held.retain(|_, entries| {
        let (due, kept): (Vec<T>, Vec<T>) = entries.drain(..).partition(|e| is_due(e));
        taken.extend(due);
        *entries = kept;
        !entries.is_empty()
    });
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn claim(envelope: u32, broker: Option<u32>, deadline: Instant) -> WaitingClaim<u32> {
        WaitingClaim { envelope, broker, holder: String::new(), deadline }
    }

    fn fetch(envelope: u32, topic: &str, deadline: Instant) -> HeldFetch<u32> {
        HeldFetch {
            envelope,
            claim: 1,
            topic: topic.into(),
            partition: 0,
            offset: 0,
            max_messages: 1,
            max_bytes: 1,
            batches: false,
            deadline,
        }
    }

    #[test]
    fn claims_are_served_first_come_first_served_among_those_that_fit() {
        let later = Instant::now() + Duration::from_secs(5);
        let mut waiting = Waiting::default();
        waiting.push_claim(claim(1, Some(2), later));
        waiting.push_claim(claim(2, None, later));
        waiting.push_claim(claim(3, None, later));
        // Broker 1 frees: the first waiter wants 2, so the second is served.
        let served = waiting.take_claim(|wanted| wanted.is_none_or(|id| id == 1));
        assert_eq!(served.map(|c| c.envelope), Some(2));
        let served = waiting.take_claim(|_| true);
        assert_eq!(served.map(|c| c.envelope), Some(1));
    }

    #[test]
    fn fetches_are_found_by_topic_and_partition() {
        let later = Instant::now() + Duration::from_secs(5);
        let mut waiting = Waiting::default();
        waiting.push_fetch(fetch(1, "a", later));
        waiting.push_fetch(fetch(2, "b", later));
        waiting.push_fetch(fetch(3, "a", later));
        waiting.push_fetch(HeldFetch { partition: 2, ..fetch(4, "a", later) });
        waiting.push_fetch(HeldFetch { partition: 2, ..fetch(5, "b", later) });
        let mut envelopes: Vec<u32> =
            waiting.take_fetches("a", Some(0)).iter().map(|f| f.envelope).collect();
        envelopes.sort();
        assert_eq!(envelopes, [1, 3]);
        assert_eq!(waiting.held_fetches(), 3);
        assert!(waiting.take_fetches("a", Some(1)).is_empty());
        // A topic that went away answers the fetches of every partition.
        let all: Vec<u32> = waiting.take_fetches("b", None).iter().map(|f| f.envelope).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(waiting.take_fetches("a", Some(2))[0].envelope, 4);
        assert_eq!(waiting.held_fetches(), 0);
    }

    fn group_fetch(envelope: u32, topic: &str, wake: Instant) -> HeldGroupFetch<u32> {
        HeldGroupFetch {
            envelope,
            claim: 1,
            group: "g".into(),
            topic: topic.into(),
            max_messages: 1,
            max_bytes: 1,
            ordered: false,
            wake,
            until: wake + Duration::from_secs(60),
        }
    }

    #[test]
    fn group_fetches_are_found_by_topic_or_woken_in_time() {
        let now = Instant::now();
        let soon = now + Duration::from_millis(10);
        let later = now + Duration::from_secs(5);
        let mut waiting = Waiting::default();
        waiting.push_group_fetch(group_fetch(1, "a", later));
        waiting.push_group_fetch(group_fetch(2, "b", soon));
        waiting.push_group_fetch(group_fetch(3, "a", soon));
        assert!(waiting.holds_fetches_on("b") && !waiting.holds_fetches_on("c"));
        assert_eq!(waiting.next_deadline(), Some(soon));
        assert!(waiting.take_woken_group_fetches(now).is_empty());
        let mut woken: Vec<u32> =
            waiting.take_woken_group_fetches(soon).iter().map(|f| f.envelope).collect();
        woken.sort();
        assert_eq!(woken, [2, 3]);
        assert_eq!(waiting.next_deadline(), Some(later));
        assert!(!waiting.holds_fetches_on("b"));
        let on_a: Vec<u32> = waiting.take_group_fetches("a").iter().map(|f| f.envelope).collect();
        assert_eq!(on_a, [1]);
        assert_eq!(waiting.held_group_fetches(), 0);
        waiting.push_group_fetch(group_fetch(4, "c", later));
        assert_eq!(waiting.take_all_group_fetches().len(), 1);
        assert_eq!(waiting.next_deadline(), None);
    }

    #[test]
    fn deadlines_expire_what_is_due_only() {
        let now = Instant::now();
        let soon = now + Duration::from_millis(10);
        let later = now + Duration::from_secs(5);
        let mut waiting = Waiting::default();
        waiting.push_claim(claim(1, None, later));
        waiting.push_claim(claim(2, None, soon));
        waiting.push_fetch(fetch(3, "a", soon));
        waiting.push_fetch(fetch(4, "a", later));
        assert_eq!(waiting.next_deadline(), Some(soon));
        assert!(waiting.take_expired(now).0.is_empty());
        let (claims, fetches) = waiting.take_expired(soon);
        assert_eq!(claims.iter().map(|c| c.envelope).collect::<Vec<_>>(), [2]);
        assert_eq!(fetches.iter().map(|f| f.envelope).collect::<Vec<_>>(), [3]);
        assert_eq!(waiting.next_deadline(), Some(later));
        let (claims, fetches) = waiting.take_all();
        assert_eq!((claims.len(), fetches.len()), (1, 1));
        assert_eq!(waiting.next_deadline(), None);
    }
}
