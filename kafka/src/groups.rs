//! Kafka's group membership (`JoinGroup`, `SyncGroup`, `Heartbeat`, `LeaveGroup`), kept in the
//! gateway's memory: which Kafka consumers are in a group, its generation, its leader and the
//! assignment the leader made. Committed offsets are not kept here: `OffsetCommit` stores them
//! in the broker's own group state (`apis`), where `consumer groups` sees them.
//!
//! The rules are Kafka's, pared down: a join starts a rebalance that waits (at most
//! [`MAX_REBALANCE`]) for every known member to join again; members learn of a rebalance from
//! their heartbeat (`REBALANCE_IN_PROGRESS`); the first member is the leader and assigns; a
//! member silent for its session timeout is dropped, which starts a rebalance that the others
//! learn of from their next heartbeat (a consumer killed without a `LeaveGroup` is replaced
//! within its session timeout and the rebalance), and a group without members is forgotten
//! with everything it held. [`Coordinator::expire`] does this for every group; the gateway
//! calls it once a second, and each heartbeat does it for its own group.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;

/// The longest a join waits for the other members to join again, whatever rebalance timeout
/// the client asked for (librdkafka asks for `max.poll.interval.ms`, five minutes): a member
/// that is alive learns of the rebalance from its next heartbeat, seconds later.
pub const MAX_REBALANCE: Duration = Duration::from_secs(10);

/// The most protocol metadata one member may bring to its `JoinGroup` (names and bytes):
/// a subscription of librdkafka, kafka-python or aiokafka takes a few hundred bytes.
pub const MAX_MEMBER_METADATA: usize = 1024 * 1024;

/// The most protocol metadata all members of all groups may hold at once; a join past it is
/// answered `COORDINATOR_NOT_AVAILABLE`, which clients retry, until members leave or expire.
pub const MAX_HELD_METADATA: usize = 64 * 1024 * 1024;

/// The session timeouts a member may ask for: Kafka's `group.min.session.timeout.ms` and
/// `group.max.session.timeout.ms` (6 s and 30 minutes); others get `INVALID_SESSION_TIMEOUT`.
pub const SESSION_TIMEOUTS: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(6)..=Duration::from_secs(1800);

/// One member of a group.
#[derive(Debug)]
struct Member {
    /// The protocols it supports (name, metadata), in its order of preference.
    protocols: Vec<(String, Bytes)>,
    /// Whether it has joined the rebalance in progress.
    rejoined: bool,
    /// When it was last heard from.
    seen: Instant,
    /// How long it may be silent before it is dropped.
    session: Duration,
    /// Its client's `client.id` and address, for `DescribeGroups`.
    client: (String, String),
}

/// One group's membership.
#[derive(Debug, Default)]
struct Group {
    /// The generation, raised by every completed rebalance.
    generation: i32,
    /// Whether a rebalance is in progress, and until when it waits for members.
    rebalancing: Option<Instant>,
    /// The members, by member id.
    members: BTreeMap<String, Member>,
    /// The leader of the present generation.
    leader: String,
    /// The protocol chosen for the present generation.
    protocol: String,
    /// The leader's assignment for the present generation, by member id, once synced.
    assignments: Option<HashMap<String, Bytes>>,
}

/// What a completed join tells a member.
#[derive(Debug, Default)]
pub struct Joined {
    /// The error code, 0 when the join succeeded.
    pub error: i16,
    /// The new generation.
    pub generation: i32,
    /// The protocol chosen.
    pub protocol: String,
    /// The leader's member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol; for the leader only.
    pub members: Vec<(String, Bytes)>,
}

/// Every group's membership, shared by all connections.
#[derive(Debug, Default)]
pub struct Coordinator {
    /// The groups by name.
    groups: Mutex<HashMap<String, Group>>,
    /// Signalled whenever a group's rebalance completes or its assignment is synced.
    changed: Condvar,
    /// The number of the next member id handed out.
    next_member: Mutex<u64>,
}

impl Coordinator {
    /// Locks the groups; a poisoned lock (a thread that panicked holding it) is taken over.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `JoinGroup`: joins `member_id` (a new member when empty) and waits for the rebalance.
    pub fn join(
        &self,
        group_id: &str,
        member_id: &str,
        protocols: Vec<(String, Bytes)>,
        session: Duration,
        rebalance: Duration,
    ) -> Joined {
        let member_id = if member_id.is_empty() {
            let mut next = self.next_member.lock().unwrap_or_else(|e| e.into_inner());
            *next += 1;
            format!("{group_id}-member-{next}")
        } else {
            member_id.to_owned()
        };
        let size: usize = protocols.iter().map(|(name, meta)| name.len() + meta.len()).sum();
        let mut groups = self.lock();
        if size > MAX_MEMBER_METADATA {
            return Joined { error: ResponseError::InvalidRequest.code(), ..Joined::default() };
        }
        let held: usize = groups
            .values()
            .flat_map(|g| g.members.iter())
            .filter(|(id, _)| **id != member_id)
            .flat_map(|(_, m)| m.protocols.iter().map(|(name, meta)| name.len() + meta.len()))
            .sum();
        if held + size > MAX_HELD_METADATA {
            tracing::warn!(
                "refusing a JoinGroup: members hold {held} bytes of metadata, the most is \
                 {MAX_HELD_METADATA}"
            );
            return Joined {
                error: ResponseError::CoordinatorNotAvailable.code(),
                ..Joined::default()
            };
        }
        let group = groups.entry(group_id.to_owned()).or_default();
        let now = Instant::now();
        group.members.retain(|id, m| *id == member_id || now < m.seen + m.session);
        let deadline = now + rebalance.min(MAX_REBALANCE);
        if group.rebalancing.is_none() {
            group.rebalancing = Some(deadline);
            for m in group.members.values_mut() {
                m.rejoined = false;
            }
        }
        group.members.insert(
            member_id.clone(),
            Member { protocols, rejoined: true, seen: now, session, client: Default::default() },
        );
        let start = group.generation;
        loop {
            let group = groups.entry(group_id.to_owned()).or_default();
            if group.generation != start {
                break;
            }
            let due = group.rebalancing.unwrap_or(now);
            if group.members.values().all(|m| m.rejoined) || Instant::now() >= due {
                complete(group);
                self.changed.notify_all();
                break;
            }
            let wait = due.saturating_duration_since(Instant::now());
            groups = self
                .changed
                .wait_timeout(groups, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let group = groups.entry(group_id.to_owned()).or_default();
        if !group.members.contains_key(&member_id) {
            return Joined { error: ResponseError::UnknownMemberId.code(), ..Joined::default() };
        }
        let members = if group.leader == member_id {
            group
                .members
                .iter()
                .map(|(id, m)| {
                    let metadata = m
                        .protocols
                        .iter()
                        .find(|(name, _)| *name == group.protocol)
                        .map(|(_, meta)| meta.clone())
                        .unwrap_or_default();
                    (id.clone(), metadata)
                })
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            error: 0,
            generation: group.generation,
            protocol: group.protocol.clone(),
            leader: group.leader.clone(),
            member_id,
            members,
        }
    }

    /// `SyncGroup`: the leader hands in the assignment; every member gets its own part, waiting
    /// for the leader's (at most [`MAX_REBALANCE`]). The error code or the assignment.
    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes, i16> {
        let deadline = Instant::now() + MAX_REBALANCE;
        let mut groups = self.lock();
        loop {
            let Some(group) = groups.get_mut(group_id) else {
                return Err(ResponseError::UnknownMemberId.code());
            };
            check_member(group, generation, member_id)?;
            if let Some(member) = group.members.get_mut(member_id) {
                member.seen = Instant::now();
            }
            if group.leader == member_id && group.assignments.is_none() {
                group.assignments = Some(assignments.iter().cloned().collect());
                self.changed.notify_all();
            }
            if let Some(all) = &group.assignments {
                return Ok(all.get(member_id).cloned().unwrap_or_default());
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Err(ResponseError::RebalanceInProgress.code());
            }
            groups = self
                .changed
                .wait_timeout(groups, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// `Heartbeat`: 0, or the error that tells the member to join again.
    pub fn heartbeat(&self, group_id: &str, generation: i32, member_id: &str) -> i16 {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        if expire(group, Instant::now()) {
            self.changed.notify_all();
        }
        match check_member(group, generation, member_id) {
            Ok(()) => {
                if let Some(member) = group.members.get_mut(member_id) {
                    member.seen = Instant::now();
                }
                0
            }
            Err(code) => code,
        }
    }

    /// `LeaveGroup`: removes the members; those left join again.
    pub fn leave(&self, group_id: &str, member_ids: &[String]) -> Vec<i16> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return member_ids.iter().map(|_| ResponseError::UnknownMemberId.code()).collect();
        };
        let codes = member_ids
            .iter()
            .map(|id| match group.members.remove(id) {
                Some(_) => 0,
                None => ResponseError::UnknownMemberId.code(),
            })
            .collect();
        if group.members.is_empty() {
            groups.remove(group_id);
        } else if group.rebalancing.is_none() {
            group.rebalancing = Some(Instant::now() + MAX_REBALANCE);
            for m in group.members.values_mut() {
                m.rejoined = false;
            }
        }
        self.changed.notify_all();
        codes
    }
}

/// A group as `DescribeGroups` shows it.
#[derive(Debug, Default)]
pub struct Described {
    /// Kafka's name of its state: `Stable`, `PreparingRebalance`, `CompletingRebalance`.
    pub state: &'static str,
    /// The protocol (assignor) chosen.
    pub protocol: String,
    /// Each member: id, `client.id`, address, metadata and assignment.
    pub members: Vec<DescribedMember>,
}

/// A member as `DescribeGroups` shows it.
#[derive(Debug, Default)]
pub struct DescribedMember {
    /// Its member id.
    pub id: String,
    /// Its client's `client.id`.
    pub client_id: String,
    /// Its client's address.
    pub host: String,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Its part of the leader's assignment, once synced.
    pub assignment: Bytes,
}

impl Coordinator {
    /// Notes the `client.id` and address of `member_id`'s client.
    pub fn set_client(&self, group_id: &str, member_id: &str, client_id: &str, host: &str) {
        let mut groups = self.lock();
        if let Some(member) = groups.get_mut(group_id).and_then(|g| g.members.get_mut(member_id)) {
            member.client = (client_id.to_owned(), host.to_owned());
        }
    }

    /// The protocol metadata of `group_id`'s members (a few, each once), whose subscriptions
    /// name the topics a rights probe uses ([`crate::rights`]).
    pub fn subscriptions(&self, group_id: &str) -> Vec<Bytes> {
        let groups = self.lock();
        let mut all: Vec<Bytes> = Vec::new();
        for member in groups.get(group_id).map(|g| g.members.values()).into_iter().flatten() {
            for (_, metadata) in &member.protocols {
                if all.len() < crate::rights::MAX_PROBED_TOPICS && !all.contains(metadata) {
                    all.push(metadata.clone());
                }
            }
        }
        all
    }

    /// The topics `group_id`'s members subscribe to, each once, or `None` when it has no
    /// members: those whose offsets `OffsetDelete` must not remove (Kafka's
    /// `GROUP_SUBSCRIBED_TO_TOPIC`).
    pub fn subscribed_topics(&self, group_id: &str) -> Option<Vec<String>> {
        let groups = self.lock();
        let group = groups.get(group_id).filter(|g| !g.members.is_empty())?;
        let mut topics: Vec<String> = group
            .members
            .values()
            .flat_map(|member| &member.protocols)
            .flat_map(|(_, metadata)| crate::rights::subscribed_topics(metadata))
            .collect();
        topics.sort_unstable();
        topics.dedup();
        Some(topics)
    }

    /// Every group with members, and Kafka's name of its state.
    pub fn list(&self) -> Vec<(String, &'static str)> {
        self.lock().iter().map(|(name, group)| (name.clone(), state(group))).collect()
    }

    /// `group_id` with its members, if it has any.
    pub fn describe(&self, group_id: &str) -> Option<Described> {
        let groups = self.lock();
        let group = groups.get(group_id)?;
        let members = group
            .members
            .iter()
            .map(|(id, m)| DescribedMember {
                id: id.clone(),
                client_id: m.client.0.clone(),
                host: m.client.1.clone(),
                metadata: m
                    .protocols
                    .iter()
                    .find(|(name, _)| *name == group.protocol)
                    .map(|(_, meta)| meta.clone())
                    .unwrap_or_default(),
                assignment: group
                    .assignments
                    .as_ref()
                    .and_then(|all| all.get(id).cloned())
                    .unwrap_or_default(),
            })
            .collect();
        Some(Described { state: state(group), protocol: group.protocol.clone(), members })
    }

    /// Whether an `OffsetCommit` from `member_id` in `generation` may move `group_id`'s
    /// offsets, as Kafka decides: a commit outside any group (generation -1, no member id) only
    /// while the group has no members; otherwise only from a member of the present generation,
    /// so a member fenced by a rebalance cannot move the offset its successor reads from.
    ///
    /// # Errors
    /// `UNKNOWN_MEMBER_ID` or `ILLEGAL_GENERATION`.
    pub fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
    ) -> Result<(), i16> {
        let groups = self.lock();
        let Some(group) = groups.get(group_id).filter(|g| !g.members.is_empty()) else {
            if generation < 0 && member_id.is_empty() {
                return Ok(());
            }
            return Err(ResponseError::UnknownMemberId.code());
        };
        if !group.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId.code());
        }
        if generation != group.generation {
            return Err(ResponseError::IllegalGeneration.code());
        }
        Ok(())
    }

    /// Drops every member silent for longer than its session timeout, starting a rebalance in
    /// its group, and forgets the groups left without members.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut groups = self.lock();
        let mut changed = false;
        for group in groups.values_mut() {
            changed |= expire(group, now);
        }
        groups.retain(|_, g| !g.members.is_empty());
        if changed {
            self.changed.notify_all();
        }
    }

    /// How many groups are kept, for tests of what dead members leave behind.
    pub fn group_count(&self) -> usize {
        self.lock().len()
    }
}

/// Drops `group`'s members silent past their session timeout, save those that joined the
/// rebalance in progress and wait in their `JoinGroup`; starts a rebalance when one went and
/// others are left. Whether any went.
fn expire(group: &mut Group, now: Instant) -> bool {
    let waiting = group.rebalancing.is_some();
    let before = group.members.len();
    group.members.retain(|_, m| (waiting && m.rejoined) || now < m.seen + m.session);
    if group.members.len() == before {
        return false;
    }
    if !group.members.is_empty() && group.rebalancing.is_none() {
        group.rebalancing = Some(now + MAX_REBALANCE);
        for m in group.members.values_mut() {
            m.rejoined = false;
        }
    }
    true
}

/// Kafka's name of `group`'s state.
fn state(group: &Group) -> &'static str {
    match (&group.rebalancing, &group.assignments) {
        (Some(_), _) => "PreparingRebalance",
        (None, None) => "CompletingRebalance",
        (None, Some(_)) => "Stable",
    }
}

/// Whether `member_id` is a member of `group` in `generation`, with no rebalance under way.
fn check_member(group: &Group, generation: i32, member_id: &str) -> Result<(), i16> {
    if !group.members.contains_key(member_id) {
        return Err(ResponseError::UnknownMemberId.code());
    }
    if group.rebalancing.is_some() {
        return Err(ResponseError::RebalanceInProgress.code());
    }
    if generation != group.generation {
        return Err(ResponseError::IllegalGeneration.code());
    }
    Ok(())
}

/// Ends `group`'s rebalance: drops the members that did not join again, raises the
/// generation, keeps or picks the leader and the protocol.
fn complete(group: &mut Group) {
    group.members.retain(|_, m| m.rejoined);
    group.generation += 1;
    crate::metrics::METRICS.rebalanced();
    group.rebalancing = None;
    group.assignments = None;
    if !group.members.contains_key(&group.leader) {
        group.leader = group.members.keys().next().cloned().unwrap_or_default();
    }
    let leader = group.members.get(&group.leader);
    group.protocol = leader
        .and_then(|l| {
            l.protocols.iter().map(|(name, _)| name).find(|name| {
                group.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
        })
        .cloned()
        .unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocols() -> Vec<(String, Bytes)> {
        vec![("range".to_owned(), Bytes::from_static(b"meta"))]
    }

    #[test]
    fn a_lone_member_joins_leads_syncs_and_heartbeats() {
        let coordinator = Coordinator::default();
        let long = Duration::from_secs(30);
        let joined = coordinator.join("g", "", protocols(), long, long);
        assert_eq!(joined.error, 0);
        assert_eq!(joined.generation, 1);
        assert_eq!(joined.leader, joined.member_id);
        assert_eq!(joined.members.len(), 1);
        let mine = vec![(joined.member_id.clone(), Bytes::from_static(b"p0"))];
        assert_eq!(
            coordinator.sync("g", 1, &joined.member_id, mine),
            Ok(Bytes::from_static(b"p0"))
        );
        assert_eq!(coordinator.heartbeat("g", 1, &joined.member_id), 0);
        assert_eq!(coordinator.heartbeat("g", 0, &joined.member_id), 22);
        assert_eq!(coordinator.leave("g", std::slice::from_ref(&joined.member_id)), vec![0]);
        assert_eq!(coordinator.heartbeat("g", 1, &joined.member_id), 25);
    }

    #[test]
    fn a_second_member_makes_the_first_join_again() {
        let coordinator = std::sync::Arc::new(Coordinator::default());
        let long = Duration::from_secs(30);
        let first = coordinator.join("g", "", protocols(), long, long);
        let other = std::sync::Arc::clone(&coordinator);
        let second = std::thread::spawn(move || other.join("g", "", protocols(), long, long));
        // The first member learns of the rebalance from its heartbeat, then joins again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while coordinator.heartbeat("g", 1, &first.member_id) != 27 {
            assert!(Instant::now() < deadline, "no rebalance came");
            std::thread::yield_now();
        }
        let again = coordinator.join("g", &first.member_id, protocols(), long, long);
        let second = second.join().expect("second join");
        assert_eq!((again.generation, second.generation), (2, 2));
        assert_eq!(again.leader, first.member_id);
        assert_eq!(again.members.len(), 2);
        assert!(second.members.is_empty());
    }

    #[test]
    fn a_silent_member_is_dropped_and_the_survivor_told_to_join_again() {
        let coordinator = std::sync::Arc::new(Coordinator::default());
        let long = Duration::from_secs(30);
        let short = Duration::from_millis(300);
        let first = coordinator.join("g", "", protocols(), long, long);
        let other = std::sync::Arc::clone(&coordinator);
        let dying = std::thread::spawn(move || other.join("g", "", protocols(), short, long));
        let deadline = Instant::now() + Duration::from_secs(5);
        while coordinator.heartbeat("g", 1, &first.member_id) != 27 {
            assert!(Instant::now() < deadline, "no rebalance came");
            std::thread::yield_now();
        }
        let again = coordinator.join("g", &first.member_id, protocols(), long, long);
        let dying = dying.join().expect("second join");
        assert_eq!((again.generation, again.members.len()), (2, 2));
        // The second member never heartbeats: past its session timeout, the first is told to
        // join again, by its heartbeat alone, and leads a group of one.
        let deadline = Instant::now() + Duration::from_secs(5);
        while coordinator.heartbeat("g", 2, &first.member_id) != 27 {
            assert!(Instant::now() < deadline, "the silent member was never dropped");
            std::thread::sleep(Duration::from_millis(20));
        }
        let alone = coordinator.join("g", &first.member_id, protocols(), long, long);
        assert_eq!((alone.generation, alone.members.len()), (3, 1));
        assert_eq!(coordinator.heartbeat("g", 3, &dying.member_id), 25);
    }

    #[test]
    fn metadata_is_bounded_per_member_and_in_all() {
        let coordinator = Coordinator::default();
        let long = Duration::from_secs(30);
        let big = |n| vec![("range".to_owned(), Bytes::from(vec![0u8; n]))];
        let refused = coordinator.join("g", "", big(MAX_MEMBER_METADATA + 1), long, long);
        assert_eq!(refused.error, ResponseError::InvalidRequest.code());
        assert_eq!(coordinator.group_count(), 0, "a refused join keeps nothing");
        let mut joined = 0;
        for i in 0..100 {
            let most = big(MAX_MEMBER_METADATA - "range".len());
            let answer = coordinator.join(&format!("g{i}"), "", most, long, long);
            if answer.error != 0 {
                assert_eq!(answer.error, ResponseError::CoordinatorNotAvailable.code());
                break;
            }
            joined += 1;
        }
        assert_eq!(joined, MAX_HELD_METADATA / MAX_MEMBER_METADATA);
    }

    #[test]
    fn groups_whose_members_all_went_silent_are_forgotten() {
        let coordinator = Coordinator::default();
        let short = Duration::from_millis(50);
        for i in 0..10 {
            let joined = coordinator.join(&format!("g{i}"), "", protocols(), short, short);
            assert_eq!(joined.error, 0);
        }
        assert_eq!(coordinator.group_count(), 10);
        let deadline = Instant::now() + Duration::from_secs(5);
        while coordinator.group_count() > 0 {
            assert!(Instant::now() < deadline, "groups kept past their members' sessions");
            std::thread::sleep(Duration::from_millis(20));
            coordinator.expire();
        }
    }
}
