//! Consumer groups: each group's state on each topic it reads, one [`Subscription`] per
//! partition of the topic.
//!
//! Groups belong to the broker process as a whole, like the store and unlike a claim: members of
//! one group hold different logical brokers (a claim is exclusive) and share the group's one
//! state, as Kafka's group coordinator serves a group's members whatever broker they read from.
//!
//! Like the store, groups know nothing of sockets or envelopes, and change only through the
//! commands. Changes made in a pass are stored at the end of it, after the store has committed
//! the pass's appends ([`Groups::commit`]), by the groups' [`Ledger`], chosen at start-up:
//! nowhere ([`Unkept`], in memory only); one file per group state that changed, replaced whole,
//! and flushed under the store's `--fsync` policy ([`DiskLedger`]; every policy but `never`
//! flushes them); or in states shared with other broker processes ([`SharedLedger`]). A state
//! that cannot be stored is put back as it was at the start of the pass, and the replies that
//! reported its changes become errors, so that nothing acknowledged to a client is lost.

mod disk;
mod ledger;
mod shared;
mod subscription;

use crate::quiet::Shown;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use protocol::{validate_group_name, InvalidGroupName};
use thiserror::Error;

pub use disk::{Saved, SavedPartition};
pub use ledger::{DiskLedger, Ledger, Stored, Unkept};
pub use shared::{Change, Loaded, SaveError, SharedLedger, SharedPartition, SharedStates};
pub use subscription::{NotDelivered, Subscription};

use crate::store::{DamageReport, DamagedFile, Fsync, SetAside, Store, StoreConfig};

/// How long a delivered message waits for its acknowledgement unless configured otherwise.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a group request was refused. A refused request changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GroupError {
    /// The name breaks the naming rules.
    #[error("{0:?} is not a valid group name: {1}")]
    InvalidGroupName(String, InvalidGroupName),
    /// The group has no state on the topic (or on any topic, when none is named).
    #[error(
        "group {group:?} has no state on {}: no member has joined it there and it was not reset \
         there",
        topic.as_ref().map_or_else(|| "any topic".to_owned(), |t| format!("topic {t:?}"))
    )]
    UnknownGroup {
        /// The group.
        group: String,
        /// The topic, if one was named.
        topic: Option<String>,
    },
    /// The claim is not a member of the group on the topic.
    #[error(
        "claim {claim} has not joined group {group:?} on topic {topic:?}; send join_group under \
         this claim first"
    )]
    UnknownMember {
        /// The claim token.
        claim: u64,
        /// The group.
        group: String,
        /// The topic.
        topic: String,
    },
    /// The group has members on a topic whose state a deletion would forget.
    #[error(
        "group {group:?} has {members} members on topic {topic:?}; they must release their \
         claims before the group's state there is deleted"
    )]
    Active {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// How many live members it has there.
        members: usize,
    },
    /// An acknowledged offset was never delivered to the group.
    #[error(
        "offset {offset} of topic {topic:?} was never delivered to group {group:?} (it has been \
         delivered the offsets below {delivered}); nothing was acknowledged"
    )]
    NotPending {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The first offset of the request that was never delivered.
        offset: u64,
        /// The group's delivered offset.
        delivered: u64,
    },
}

/// Checks a group name.
///
/// # Errors
/// [`GroupError::InvalidGroupName`] with the rule it breaks.
pub fn check_name(group: &str) -> Result<(), GroupError> {
    validate_group_name(group).map_err(|e| GroupError::InvalidGroupName(group.to_owned(), e))
}

/// Why the stored group states could not be read back.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The directory or a file could not be read.
    #[error("cannot read the group states in {}: {source}", dir.display())]
    Io {
        /// The groups directory.
        dir: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Files in the groups directory hold no valid group state; nothing was changed. Without
    /// such a file its group starts on that topic as a new group would.
    #[error("{0}")]
    Damaged(DamageReport),
}

/// A group state whose changes of this pass could not be stored, and were undone: on one
/// partition, or on every one.
#[derive(Debug)]
pub struct GroupCommitFailure {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition whose changes were not stored (those of the others were); `None`: the
    /// whole state's were not (a file not written, or a partition made in the pass).
    pub partition: Option<u32>,
    /// What went wrong.
    pub error: io::Error,
    /// Whether the same request may succeed later: the states shared with other broker
    /// processes could not be reached (a state error), rather than a file not written.
    pub transient: bool,
    /// Whether another broker process stored the partition's state first, and this process
    /// took it as stored: the pass's changes to it were dropped, and the requests that made
    /// them may be made again on it (it is this process's again, at the stored revision).
    pub reloaded: bool,
}

/// A group and a topic: what names one group state.
pub type Key = (String, String);

/// A group's state on a topic: one [`Subscription`] per partition, partition 0 first. Every
/// partition has the same members. A file stores it, and rolls it back, as a whole; shared
/// states store and roll back each partition on its own.
pub type TopicState = Vec<Subscription>;

/// Every group's state on every topic it reads.
#[derive(Debug)]
pub struct Groups {
    /// States by group, then topic, ordered so that listings come out sorted.
    groups: BTreeMap<String, BTreeMap<String, TopicState>>,
    /// The groups with a state on each topic, so that deleting a topic finds them at once.
    by_topic: HashMap<String, BTreeSet<String>>,
    /// How long a delivered message waits for its acknowledgement.
    ack_timeout: Duration,
    /// Where the states are kept: nowhere, in files, or shared with other broker processes.
    ledger: Box<dyn Ledger>,
    /// The states changed in this pass, in the order of their first change.
    changed: Vec<Key>,
    /// Each changed state as it was at the start of the pass; `None` for one made in the pass.
    undo: HashMap<Key, Option<TopicState>>,
    /// The partition each state's next group fetch looks at first, so that fetches take the
    /// partitions in turn. Not stored.
    cursors: HashMap<Key, u32>,
}

impl Groups {
    /// No groups, kept in memory only.
    pub fn in_memory(ack_timeout: Duration) -> Groups {
        Groups {
            groups: BTreeMap::new(),
            by_topic: HashMap::new(),
            ack_timeout,
            ledger: Box::new(Unkept),
            changed: Vec::new(),
            undo: HashMap::new(),
            cursors: HashMap::new(),
        }
    }

    /// Keeps every state in `states` too, shared with other broker processes: a join loads
    /// the state stored there when another process changed it, and each commit stores the
    /// states the pass changed. For a broker without a data directory.
    pub fn share(&mut self, states: Box<dyn SharedStates>) {
        self.keep_in(Box::new(SharedLedger::new(states)));
    }

    /// Keeps every state in `ledger` from now on.
    pub fn keep_in(&mut self, ledger: Box<dyn Ledger>) {
        self.ledger = ledger;
    }

    /// Takes the partitions of the state of `group` on `topic` (a topic of `partitions`)
    /// stored by another process, those that changed there since this process last saw them.
    fn refresh(&mut self, group: &str, topic: &str, partitions: u32) {
        let have = self.state(group, topic).map_or(0, <[Subscription]>::len);
        let taken = self.ledger.refresh(group, topic, partitions, have);
        self.adopt(group, topic, taken);
    }

    /// Takes in the states stored by other broker processes that `group` and `topic` select
    /// (every one when neither is given) and that this process has not read yet, so that a
    /// listing through it shows them too. States it holds are not read again (they may be
    /// behind: a listing answers from this process's copy).
    pub fn take_in_listed(&mut self, group: Option<&str>, topic: Option<&str>) {
        for ((listed_group, listed_topic), partitions) in self.ledger.listed(group) {
            if topic.is_some_and(|topic| topic != listed_topic) {
                continue;
            }
            if self.state(&listed_group, &listed_topic).is_none() {
                self.refresh(&listed_group, &listed_topic, partitions);
            }
        }
    }

    /// Replaces the partitions `taken` of the state of `group` on `topic` with theirs, as
    /// another broker process stored them, keeping the members here; partitions that follow on
    /// from the last one held are added. Their pending messages get a fresh ack timeout.
    fn adopt(&mut self, group: &str, topic: &str, taken: Vec<(u32, SharedPartition)>) {
        if taken.is_empty() {
            return;
        }
        let deadline = Instant::now() + self.ack_timeout;
        let made = |part: SharedPartition| match part.placed {
            true => Subscription::restored(part.delivered, part.pending, deadline),
            false => Subscription::unplaced(part.delivered),
        };
        let Some(states) = self.state_mut(group, topic) else {
            let states: TopicState = (0u32..)
                .zip(taken)
                .take_while(|(at, (partition, _))| at == partition)
                .map(|(_, (_, part))| made(part))
                .collect();
            if !states.is_empty() {
                self.insert(group.to_owned(), topic.to_owned(), states);
            }
            return;
        };
        for (partition, part) in taken {
            let (at, held) = (partition as usize, states.len());
            if at < held {
                states[at].roll_back_to(made(part));
            } else if at == held {
                let mut state = made(part);
                if let Some(first) = states.first() {
                    state.join_all(first);
                }
                states.push(state);
            }
            // Past a gap: it comes at the next fetch or join, as a new one.
        }
    }

    /// Opens the group states of the store `config` describes: none, in memory, when it names no
    /// data directory; otherwise every state stored there. Pending messages get a fresh ack
    /// timeout from `now`, so that members that processed them before a restart can still
    /// acknowledge them. States of topics that no longer exist (whose deletion a crash
    /// interrupted) are removed; states are fitted to what their topic holds now.
    ///
    /// Every file is checked before anything is changed. A file in the groups directory that
    /// holds no valid state, or is not named after the group and topic it holds, refuses the
    /// opening; under `config.repair` it is set aside instead (into the folder the store's
    /// opening used, if it set anything aside), and so are the states of topics that are not
    /// there, since their topic may have been set aside.
    ///
    /// # Errors
    /// [`OpenError::Damaged`] naming every damaged file, having changed nothing; or
    /// [`OpenError::Io`] when the directory cannot be read or a file cannot be changed.
    pub fn open(
        ack_timeout: Duration,
        config: &StoreConfig,
        store: &Store,
        now: Instant,
    ) -> Result<Groups, OpenError> {
        let mut groups = Groups::in_memory(ack_timeout);
        let Some(data_dir) = &config.data_dir else { return Ok(groups) };
        let dir = disk::groups_dir(data_dir);
        let io_error = |source| OpenError::Io { dir: dir.clone(), source };
        let stored = disk::read_all(&dir).map_err(io_error)?;
        let sync = config.fsync != Fsync::Never;
        groups.keep_in(Box::new(DiskLedger::new(dir.clone(), stored.is_some(), sync)));
        let stored = stored.unwrap_or_default();

        // Everything is checked before anything is changed.
        let mut damaged: Vec<DamagedFile> = stored
            .unknown
            .into_iter()
            .map(|path| DamagedFile {
                path,
                problem: "is not a group state file (<group>.<topic>-<hash>.group), and only \
                          those belong in groups/"
                    .to_owned(),
            })
            .collect();
        let mut states = Vec::new();
        let mut old_format = 0;
        for (file, bytes) in stored.files {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            match disk::decode(&bytes) {
                Err(reason) => damaged
                    .push(DamagedFile { path: file, problem: format!("is damaged: {reason}") }),
                Ok((saved, _)) if disk::file_name(&saved.group, &saved.topic) != name => {
                    let problem = format!(
                        "holds the state of group {:?} on topic {:?}, whose file would be {}",
                        saved.group,
                        saved.topic,
                        disk::file_name(&saved.group, &saved.topic)
                    );
                    damaged.push(DamagedFile { path: file, problem });
                }
                Ok((saved, old)) => {
                    old_format += usize::from(old);
                    states.push((file, saved));
                }
            }
        }
        if old_format > 0 {
            tracing::info!(
                "{old_format} group state files have no format header (written by an older \
                 broker): read as format 0; each is written in format {} when its state next \
                 changes",
                crate::store::format::GROUP.version
            );
        }
        let mut aside = config.repair.then(|| {
            SetAside::new(data_dir, store.set_aside_dir().map(std::path::Path::to_path_buf))
        });
        if !damaged.is_empty() {
            let Some(aside) = &mut aside else {
                return Err(OpenError::Damaged(DamageReport {
                    data_dir: data_dir.clone(),
                    files: damaged,
                }));
            };
            for file in &damaged {
                aside.move_aside(&file.path, file).map_err(io_error)?;
            }
        }

        for (file, saved) in states {
            let Ok(partitions) = store.partitions(&saved.topic) else {
                if let Some(aside) = &mut aside {
                    // The topic may have been set aside as damaged: keep its groups' states.
                    let problem = format!(
                        "holds the state of group {:?} on topic {:?}, which is not there",
                        saved.group, saved.topic
                    );
                    aside
                        .move_aside(&file, &DamagedFile { path: file.clone(), problem })
                        .map_err(io_error)?;
                    continue;
                }
                tracing::warn!(
                    group = %Shown(&saved.group),
                    topic = %Shown(&saved.topic),
                    "the topic is gone; removing the group's state on it"
                );
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                disk::remove(&dir, name).map_err(io_error)?;
                continue;
            };
            let mut states = restored(&saved, now + ack_timeout);
            let key = (saved.group, saved.topic);
            // A topic never loses partitions; a state naming more than it has keeps those it has.
            states.truncate(partitions as usize);
            for (partition, state) in (0u32..).zip(states.iter_mut()) {
                let Ok((first, end)) = store.offsets(&key.1, partition) else { continue };
                if state.needs_fit(first, end) {
                    groups.record(&key.0, &key.1);
                    let dropped = state.fit(first, end);
                    tracing::warn!(
                        group = %Shown(&key.0),
                        topic = %Shown(&key.1),
                        partition,
                        "the partition holds offsets {first}..{end} only; {dropped} pending \
                         messages given up, delivered offset now {}",
                        state.delivered()
                    );
                }
                tracing::info!(
                    group = %Shown(&key.0),
                    topic = %Shown(&key.1),
                    partition,
                    pending = state.pending(),
                    "recovered group: committed offset {}, delivered offset {}",
                    state.committed(),
                    state.delivered()
                );
            }
            groups.insert(key.0, key.1, states);
        }
        Ok(groups)
    }

    /// How long a delivered message waits for its acknowledgement.
    pub fn ack_timeout(&self) -> Duration {
        self.ack_timeout
    }

    /// When the first pending message of `group` on `topic`, in any partition, comes due, if
    /// one is pending.
    pub fn next_due(&self, group: &str, topic: &str) -> Option<Instant> {
        self.state(group, topic)?.iter().filter_map(Subscription::next_due).min()
    }

    /// `group`'s state on `topic`, every partition's, if it has one.
    pub fn state(&self, group: &str, topic: &str) -> Option<&[Subscription]> {
        self.groups.get(group).and_then(|topics| topics.get(topic)).map(Vec::as_slice)
    }

    /// `group`'s state on `partition` of `topic`, if it has one.
    pub fn get(&self, group: &str, topic: &str, partition: u32) -> Option<&Subscription> {
        self.state(group, topic)?.get(partition as usize)
    }

    /// Changes `group`'s state on `partition` of `topic`, if it has one, and returns what
    /// `change` returns. The change is stored at the next commit.
    pub fn update<T>(
        &mut self,
        group: &str,
        topic: &str,
        partition: u32,
        change: impl FnOnce(&mut Subscription) -> T,
    ) -> Option<T> {
        self.get(group, topic, partition)?;
        self.record(group, topic);
        self.state_mut(group, topic)?.get_mut(partition as usize).map(change)
    }

    /// Makes sure `group` has a state on `topic` with a partition for each of `starts`: the
    /// state is created when there is none, and partitions the topic gained are added, each
    /// starting at its offset in `starts`, with the members of the others. Returns whether the
    /// state was created. The change is stored at the next commit.
    pub fn ensure(&mut self, group: &str, topic: &str, starts: &[u64]) -> bool {
        self.ensure_with(group, topic, starts, Subscription::new)
    }

    /// As [`Groups::ensure`], but the partitions made have no committed offset
    /// ([`Subscription::unplaced`]): for a reset of one partition, which says nothing of the
    /// others.
    pub fn ensure_unplaced(&mut self, group: &str, topic: &str, starts: &[u64]) -> bool {
        self.ensure_with(group, topic, starts, Subscription::unplaced)
    }

    /// [`Groups::ensure`], each partition made by `make` from its start.
    fn ensure_with(
        &mut self,
        group: &str,
        topic: &str,
        starts: &[u64],
        make: fn(u64) -> Subscription,
    ) -> bool {
        let have = self.state(group, topic).map(<[Subscription]>::len);
        if have.is_some_and(|have| have >= starts.len()) {
            return false;
        }
        self.record(group, topic);
        let Some(states) = self.state_mut(group, topic) else {
            let states = starts.iter().map(|&start| make(start)).collect();
            self.insert(group.to_owned(), topic.to_owned(), states);
            return true;
        };
        for &start in &starts[states.len()..] {
            let mut state = make(start);
            if let Some(first) = states.first() {
                state.join_all(first);
            }
            states.push(state);
        }
        false
    }

    /// Fits every group's state on `partition` of `topic` to its oldest offset `first` now,
    /// after retention removed its oldest messages: pending offsets that went count as given
    /// up, so `list_groups` shows them gone at once ([`Subscription::trim`]: a delivered offset
    /// past this process's end stays). The changed states are stored at the next commit.
    pub fn fit_topic(&mut self, topic: &str, partition: u32, first: u64) {
        let Some(names) = self.by_topic.get(topic) else { return };
        let due: Vec<String> = names
            .iter()
            .filter(|group| self.get(group, topic, partition).is_some_and(|s| s.needs_trim(first)))
            .cloned()
            .collect();
        for group in due {
            let dropped =
                self.update(&group, topic, partition, |state| state.trim(first)).unwrap_or(0);
            if dropped > 0 {
                tracing::warn!(
                    group = %Shown(&group),
                    topic = %Shown(topic),
                    partition,
                    "{dropped} pending messages were removed by retention before they were \
                     acknowledged; skipped"
                );
            }
        }
    }

    /// The offset `group` was last reset to on `partition` of `topic`, if member `claim` has not
    /// been told of it yet; from now on it has been. Nothing is to be written: who was told is
    /// not stored.
    pub fn take_reset(
        &mut self,
        group: &str,
        topic: &str,
        partition: u32,
        claim: u64,
    ) -> Option<u64> {
        self.state_mut(group, topic)?.get_mut(partition as usize)?.take_reset(claim)
    }

    /// Notes that member `claim` was handed messages of `partition` of `topic` for `group`, for
    /// ordered delivery. Not stored.
    pub fn hand_to(&mut self, group: &str, topic: &str, partition: u32, claim: u64) {
        if let Some(state) =
            self.state_mut(group, topic).and_then(|states| states.get_mut(partition as usize))
        {
            state.hand_to(claim);
        }
    }

    /// Makes `offsets` of `partition` of `topic` for `group`, if still pending, due at `now`:
    /// the reply that delivered them could not be sent. Deadlines are not stored, so nothing is
    /// to be written.
    pub fn give_back(
        &mut self,
        group: &str,
        topic: &str,
        partition: u32,
        offsets: &[u64],
        now: Instant,
    ) {
        if let Some(state) =
            self.state_mut(group, topic).and_then(|states| states.get_mut(partition as usize))
        {
            state.give_back(offsets, now);
        }
    }

    /// The partition the next group fetch of `group` on `topic` looks at first, and moves the
    /// turn on to the one after `served`, among `partitions`.
    pub fn next_turn(&self, group: &str, topic: &str) -> u32 {
        self.cursors.get(&(group.to_owned(), topic.to_owned())).copied().unwrap_or(0)
    }

    /// Gives the next turn to the partition after `served` (of `partitions`).
    pub fn served(&mut self, group: &str, topic: &str, served: u32, partitions: u32) {
        let next = (served + 1) % partitions.max(1);
        self.cursors.insert((group.to_owned(), topic.to_owned()), next);
    }

    /// Makes claim `claim` (holding logical broker `broker`) a member of `group` on `topic`, on
    /// every partition, creating the group's state there (or the partitions it lacks), each
    /// partition starting at its offset in `starts`; a partition without a committed offset
    /// gets one at its offset in `places` (the join's `start`). Members whose claims `is_live`
    /// says have ended are forgotten first. Returns whether the state was created, and how many
    /// members it has.
    pub fn join(
        &mut self,
        group: &str,
        topic: &str,
        member: (u64, u32),
        starts: &[u64],
        places: &[u64],
        is_live: impl Fn(u64) -> bool,
    ) -> (bool, usize) {
        self.refresh(group, topic, u32::try_from(starts.len()).unwrap_or(u32::MAX));
        let created = self.ensure(group, topic, starts);
        if self.state(group, topic).is_some_and(|states| states.iter().any(|s| !s.placed())) {
            self.record(group, topic);
        }
        let Some(states) = self.state_mut(group, topic) else {
            return (created, 0);
        };
        for (state, &place) in states.iter_mut().zip(places) {
            state.place(place);
        }
        for state in states.iter_mut() {
            state.prune_members(&is_live);
            state.join(member.0, member.1);
        }
        (created, states.first().map_or(0, |state| state.member_brokers(|_| true).len()))
    }

    /// Moves `group`'s committed offset on `partition` of `topic` to `offset`. The group must
    /// have a state there ([`Groups::ensure`]).
    pub fn reset(&mut self, group: &str, topic: &str, partition: u32, offset: u64) {
        self.update(group, topic, partition, |state| state.reset(offset));
    }

    /// Forgets every group's state on `topic`, and removes their files, for a deleted topic.
    pub fn drop_topic(&mut self, topic: &str) {
        let Some(names) = self.by_topic.remove(topic) else { return };
        let names: Vec<String> = names.into_iter().collect();
        for group in &names {
            if let Some(topics) = self.groups.get_mut(group) {
                topics.remove(topic);
                if topics.is_empty() {
                    self.groups.remove(group);
                }
            }
            self.undo.remove(&(group.clone(), topic.to_owned()));
            self.cursors.remove(&(group.clone(), topic.to_owned()));
            tracing::info!(group = %Shown(group), topic = %Shown(topic), "forgot the group's state with its topic");
        }
        self.ledger.forget(topic, &names);
    }

    /// Forgets `group`'s state on `topic` (on every topic when `None`), files included, unless
    /// it has members there whose claims `is_live` says go on: then nothing changes. With
    /// `partition`, `(index, start)`, only that partition's committed offset is forgotten, its
    /// next read put at `start` ([`Subscription::forget`]); the state goes whole once no
    /// partition has one.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`] when there is no such state, [`GroupError::Active`] when it
    /// has live members.
    pub fn delete(
        &mut self,
        group: &str,
        topic: Option<&str>,
        partition: Option<(u32, u64)>,
        is_live: impl Fn(u64) -> bool,
    ) -> Result<(), GroupError> {
        let topics: Vec<String> = match topic {
            Some(topic) => self.state(group, topic).map(|_| vec![topic.to_owned()]),
            None => self.groups.get(group).map(|topics| topics.keys().cloned().collect()),
        }
        .unwrap_or_default();
        if topics.is_empty() {
            return Err(GroupError::UnknownGroup {
                group: group.to_owned(),
                topic: topic.map(str::to_owned),
            });
        }
        for topic in &topics {
            let members =
                self.get(group, topic, 0).map_or(0, |state| state.member_brokers(&is_live).len());
            if members > 0 {
                return Err(GroupError::Active {
                    group: group.to_owned(),
                    topic: topic.clone(),
                    members,
                });
            }
        }
        if let (Some(topic), Some((partition, start))) = (topic, partition) {
            let others_placed = self.state(group, topic).is_some_and(|states| {
                (0u32..).zip(states).any(|(index, state)| index != partition && state.placed())
            });
            if others_placed {
                self.update(group, topic, partition, |state| state.forget(start));
                tracing::info!(group = %Shown(group), topic = %Shown(topic), partition, "deleted the group's offset on the partition");
                return Ok(());
            }
        }
        let names = [group.to_owned()];
        for topic in &topics {
            self.remove(group, topic);
            let key = (group.to_owned(), topic.clone());
            self.undo.remove(&key);
            self.cursors.remove(&key);
            self.ledger.forget(topic, &names);
            tracing::info!(group = %Shown(group), topic = %Shown(topic), "deleted the group's state");
        }
        Ok(())
    }

    /// The group states `group` and `topic` select (all when both are `None`), ordered by
    /// group, then topic, then partition, each with its group, topic and partition; partitions
    /// without a committed offset are left out.
    pub fn list<'g>(
        &'g self,
        group: Option<&str>,
        topic: Option<&str>,
    ) -> Vec<(&'g str, &'g str, u32, &'g Subscription)> {
        self.list_topics(group, topic)
            .into_iter()
            .flat_map(|(group, topic, states)| {
                (0u32..).zip(states).map(move |(partition, state)| (group, topic, partition, state))
            })
            .filter(|(_, _, _, state)| state.placed())
            .collect()
    }

    /// The group states `group` and `topic` select, each with every partition's.
    fn list_topics<'g>(
        &'g self,
        group: Option<&str>,
        topic: Option<&str>,
    ) -> Vec<(&'g str, &'g str, &'g TopicState)> {
        let of_group = |name: &'g String, topics: &'g BTreeMap<String, TopicState>| {
            topics.iter().map(move |(t, state)| (name.as_str(), t.as_str(), state))
        };
        match (group, topic) {
            (Some(group), Some(topic)) => self
                .groups
                .get_key_value(group)
                .and_then(|(name, topics)| {
                    topics.get_key_value(topic).map(|(t, state)| (name.as_str(), t.as_str(), state))
                })
                .into_iter()
                .collect(),
            (Some(group), None) => self
                .groups
                .get_key_value(group)
                .into_iter()
                .flat_map(|(name, topics)| of_group(name, topics))
                .collect(),
            (None, Some(topic)) => self
                .by_topic
                .get(topic)
                .into_iter()
                .flatten()
                .filter_map(|group| {
                    let (name, topics) = self.groups.get_key_value(group)?;
                    let (t, state) = topics.get_key_value(topic)?;
                    Some((name.as_str(), t.as_str(), state))
                })
                .collect(),
            (None, None) => {
                self.groups.iter().flat_map(|(name, topics)| of_group(name, topics)).collect()
            }
        }
    }

    /// Stores every group state changed since the last commit, each partition whose stored
    /// part changed (a file holds them all). Returns those that could not be stored: each such
    /// partition (or the whole state) is put back as it was at the start of the pass, or taken
    /// as another process stored it, and what replies reported of its changes must become
    /// errors or be made again.
    pub fn commit(&mut self) -> Vec<GroupCommitFailure> {
        let changed = std::mem::take(&mut self.changed);
        let mut undo = std::mem::take(&mut self.undo);
        if changed.is_empty() {
            return Vec::new();
        }
        let states = changed
            .into_iter()
            .filter_map(|key| {
                let now = self.state(&key.0, &key.1);
                let earlier = undo.get(&key).and_then(Option::as_ref);
                let partitions = changed_partitions(earlier, now);
                let saved = now.map(|states| saved(&key, states));
                (saved.is_none() || !partitions.is_empty()).then_some((key, saved, partitions))
            })
            .collect();
        let stored = self.ledger.store(states);
        let mut reloaded = Vec::with_capacity(stored.reloaded.len());
        for (key, partition, part) in stored.reloaded {
            tracing::debug!(
                group = %Shown(&key.0),
                topic = %Shown(&key.1),
                partition,
                "another broker process changed the group's state; took it as stored: \
                 delivered offset {}, {} pending",
                part.delivered,
                part.pending.len()
            );
            reloaded.push((key.clone(), partition));
            self.adopt(&key.0, &key.1, vec![(partition, part)]);
        }
        // The failures of each state, in the order they came.
        type Failed = Vec<(Option<u32>, io::Error)>;
        let mut by_state: Vec<(Key, Failed)> = Vec::new();
        for (key, partition, error) in stored.failed {
            match by_state.iter_mut().find(|(k, _)| *k == key) {
                Some((_, failed)) => failed.push((partition, error)),
                None => by_state.push((key, vec![(partition, error)])),
            }
        }
        let mut failures = Vec::new();
        for (key, failed) in by_state {
            let earlier = undo.remove(&key);
            let before = earlier.as_ref().and_then(Option::as_ref);
            // A partition made in this pass has nothing to go back to on its own.
            let whole = failed.iter().any(|(partition, _)| match partition {
                None => true,
                Some(partition) => {
                    !reloaded.contains(&(key.clone(), *partition))
                        && before.is_none_or(|before| *partition as usize >= before.len())
                }
            });
            if whole {
                let Some((_, error)) = failed.into_iter().next() else { continue };
                match stored.transient {
                    true => {
                        tracing::warn!(group = %Shown(&key.0), topic = %Shown(&key.1), %error, "group state not stored; its replies refused")
                    }
                    false => {
                        tracing::error!(group = %Shown(&key.0), topic = %Shown(&key.1), %error, "group state not stored; undone")
                    }
                }
                if let Some(earlier) = earlier {
                    self.undo(&key, earlier);
                }
                self.ledger.lost(&key);
                failures.push(GroupCommitFailure {
                    group: key.0,
                    topic: key.1,
                    partition: None,
                    error,
                    transient: stored.transient,
                    reloaded: false,
                });
                continue;
            }
            for (partition, error) in failed {
                let Some(partition) = partition else { continue };
                let reloaded = reloaded.contains(&(key.clone(), partition));
                if !reloaded {
                    // Whether the requests of a reloaded one are made again or refused is the
                    // server's to say.
                    tracing::warn!(group = %Shown(&key.0), topic = %Shown(&key.1), partition, %error, "group state not stored; its replies refused");
                    let earlier = before.and_then(|before| before.get(partition as usize));
                    let held = self
                        .state_mut(&key.0, &key.1)
                        .and_then(|states| states.get_mut(partition as usize));
                    if let (Some(held), Some(earlier)) = (held, earlier) {
                        held.roll_back_to(earlier.clone());
                    }
                }
                failures.push(GroupCommitFailure {
                    group: key.0.clone(),
                    topic: key.1.clone(),
                    partition: Some(partition),
                    error,
                    transient: stored.transient,
                    reloaded,
                });
            }
        }
        failures
    }

    /// How many group states there are, over all groups and topics.
    pub fn len(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    /// Whether there is no group state at all.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// `group`'s state on `topic`, every partition's, to change.
    fn state_mut(&mut self, group: &str, topic: &str) -> Option<&mut TopicState> {
        self.groups.get_mut(group).and_then(|topics| topics.get_mut(topic))
    }

    /// Notes that `group`'s state on `topic` changes in this pass, keeping what it was before
    /// the first change, for a broker that stores its groups.
    fn record(&mut self, group: &str, topic: &str) {
        if !self.ledger.stores() {
            return;
        }
        let key = (group.to_owned(), topic.to_owned());
        if self.undo.contains_key(&key) {
            return;
        }
        let before = self.groups.get(group).and_then(|topics| topics.get(topic)).cloned();
        self.undo.insert(key.clone(), before);
        self.changed.push(key);
    }

    /// Adds a state, indexing it by topic.
    fn insert(&mut self, group: String, topic: String, state: TopicState) {
        self.by_topic.entry(topic.clone()).or_default().insert(group.clone());
        self.groups.entry(group).or_default().insert(topic, state);
    }

    /// Puts a group's state on a topic back as it was before a pass that could not store it:
    /// `earlier`, or no state at all when the pass made it.
    fn undo(&mut self, key: &Key, earlier: Option<TopicState>) {
        match earlier {
            Some(earlier) => {
                if let Some(states) = self.state_mut(&key.0, &key.1) {
                    roll_back(states, earlier);
                }
            }
            None => self.remove(&key.0, &key.1),
        }
    }

    /// Removes a state and its index entry (not its file).
    fn remove(&mut self, group: &str, topic: &str) {
        if let Some(topics) = self.groups.get_mut(group) {
            topics.remove(topic);
            if topics.is_empty() {
                self.groups.remove(group);
            }
        }
        if let Some(groups) = self.by_topic.get_mut(topic) {
            groups.remove(group);
            if groups.is_empty() {
                self.by_topic.remove(topic);
            }
        }
    }
}

/// What is stored of `key`'s state `states`.
fn saved(key: &Key, states: &[Subscription]) -> Saved {
    let partitions = states
        .iter()
        .map(|state| SavedPartition {
            delivered: state.delivered(),
            pending: state.pending_offsets().collect(),
        })
        .collect();
    let mut saved = Saved::new(key.0.clone(), key.1.clone(), partitions);
    let unplaced: Vec<u32> = (0u32..)
        .zip(states)
        .filter(|(_, state)| !state.placed())
        .map(|(partition, _)| partition)
        .collect();
    saved.unplaced = (!unplaced.is_empty()).then(|| Box::new(unplaced));
    saved
}

/// The partitions of a state, `now`, whose stored part (delivered offset, pending offsets,
/// whether placed) differs from the one at the start of the pass, `earlier` (every one when it
/// was made in the pass). Deadlines and members are not stored.
fn changed_partitions(earlier: Option<&TopicState>, now: Option<&[Subscription]>) -> Vec<u32> {
    let same = |a: &Subscription, b: &Subscription| {
        a.delivered() == b.delivered()
            && a.placed() == b.placed()
            && a.pending_offsets().eq(b.pending_offsets())
    };
    (0u32..)
        .zip(now.unwrap_or_default())
        .filter(|(partition, state)| {
            let before = earlier.and_then(|earlier| earlier.get(*partition as usize));
            before.is_none_or(|before| !same(before, state))
        })
        .map(|(partition, _)| partition)
        .collect()
}

/// A state read back from storage, every partition's pending messages waiting for their
/// acknowledgement until `deadline`.
fn restored(saved: &Saved, deadline: Instant) -> TopicState {
    (0u32..)
        .zip(saved.partitions())
        .map(|(partition, (delivered, pending))| {
            if saved.unplaced.as_ref().is_some_and(|u| u.binary_search(&partition).is_ok()) {
                Subscription::unplaced(delivered)
            } else {
                Subscription::restored(delivered, pending.iter().copied(), deadline)
            }
        })
        .collect()
}

/// Puts back the offsets and pending sets of `earlier`, partition by partition, keeping the
/// members: partitions added since are dropped, and come back at the next fetch.
fn roll_back(states: &mut TopicState, earlier: TopicState) {
    let members = states.first().cloned();
    states.truncate(earlier.len());
    for (index, earlier) in earlier.into_iter().enumerate() {
        match states.get_mut(index) {
            Some(state) => state.roll_back_to(earlier),
            None => {
                let mut state = earlier;
                if let Some(members) = &members {
                    state.join_all(members);
                }
                states.push(state);
            }
        }
    }
}

#[cfg(test)]
mod tests;
