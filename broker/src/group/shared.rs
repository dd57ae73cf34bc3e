//! Group states shared with other broker processes (`--store nats://...`): the [`Ledger`] that
//! stores them with compare-and-set in a key-value store all the processes reach, behind the
//! door [`SharedStates`] (the NATS one is `nats::NatsGroups`).
//!
//! Each partition of a group's state on a topic is kept on its own ([`SharedPartition`], with
//! a revision of its own), so that processes serving members of one group from different
//! partitions never change the same entry. Each process remembers the revision of every
//! partition's state it last stored or read; a revision it does not know means another process
//! changed it since, and the state stored there wins: this process takes it, and refuses (or
//! makes again) the replies of a pass made on its old copy of that partition only.

use std::collections::HashMap;
use std::io;

use crate::quiet::Shown;

use super::disk::Saved;
use super::ledger::{Ledger, Stored};
use super::Key;

/// One partition's part of a group's state as it is shared: what its own entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPartition {
    /// The next offset never delivered to the group.
    pub delivered: u64,
    /// The offsets delivered and not acknowledged, ascending.
    pub pending: Vec<u64>,
    /// Whether the group has a committed offset there (see `Subscription::placed`).
    pub placed: bool,
}

/// What is stored of a group's state on a topic, read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The state as one record holding every partition (the layout before partitions had
    /// entries of their own), with its revision, if one is stored.
    pub record: Option<(Saved, u64)>,
    /// The entry of each partition asked for, partition 0 first: its state and revision, if
    /// stored. It wins over the record's part.
    pub partitions: Vec<Option<(SharedPartition, u64)>>,
}

/// One partition's change to store: its group and topic, the partition, its state now and the
/// revision it replaces (`None`: only if none is stored).
pub type Change = (Key, u32, SharedPartition, Option<u64>);

/// A key-value store of group states shared by several broker processes, an entry with a
/// revision for each partition of each group's state on a topic: the door to states changed
/// through other processes.
pub trait SharedStates: std::fmt::Debug + Send {
    /// What is stored of `group`'s state on `topic`, with the entries of its first
    /// `partitions` partitions. Waits for the answer (bounded).
    ///
    /// # Errors
    /// The shared states cannot be reached, or one does not decode.
    fn load(&mut self, group: &str, topic: &str, partitions: u32) -> Result<Loaded, String>;

    /// Stores `changes`, all at once, each only if its partition's stored revision is still
    /// the one given (compare-and-set); for each, its new revision or why it was not stored.
    /// Waits for the answers (bounded).
    fn save(&mut self, changes: Vec<Change>) -> Vec<Result<u64, SaveError>>;

    /// Removes the state of `group` on `topic`, every partition's, without waiting.
    fn remove(&mut self, group: &str, topic: &str);

    /// The group and topic of every state stored, of `group` only when given, each with how
    /// many partitions have entries of their own at most (one past the highest). Waits for the
    /// answer (bounded).
    ///
    /// # Errors
    /// The shared states cannot be reached.
    fn list(&mut self, group: Option<&str>) -> Result<Vec<(Key, u32)>, String>;
}

/// Why a partition's shared state was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveError {
    /// Another broker process stored the partition's state since this one last read or
    /// stored it: the state stored now and its revision, or `None` when none is stored any
    /// more.
    Conflict(Option<(SharedPartition, u64)>),
    /// The shared states could not be reached, or did not answer in time.
    Failed(String),
}

/// The [`Ledger`] of a broker process whose group states are shared with others.
#[derive(Debug)]
pub struct SharedLedger {
    /// Where they are kept.
    states: Box<dyn SharedStates>,
    /// The revision of each partition's entry this process last stored or loaded: another one
    /// means that another process changed it since.
    seen: HashMap<(Key, u32), u64>,
    /// The revision of each whole record (the older layout) this process last loaded.
    records: HashMap<Key, u64>,
}

impl SharedLedger {
    /// States kept in `states`.
    pub fn new(states: Box<dyn SharedStates>) -> SharedLedger {
        SharedLedger { states, seen: HashMap::new(), records: HashMap::new() }
    }

    /// Forgets the revisions seen of every partition of `key`'s state.
    fn unsee(&mut self, key: &Key) {
        self.seen.retain(|(seen, _), _| seen != key);
        self.records.remove(key);
    }
}

/// Partition `partition` of the whole record `saved`, if it has one.
fn part_of(saved: &Saved, partition: u32) -> Option<SharedPartition> {
    let (delivered, pending) = saved.partitions().nth(partition as usize)?;
    let placed = saved.unplaced.as_ref().is_none_or(|u| u.binary_search(&partition).is_err());
    Some(SharedPartition { delivered, pending: pending.to_vec(), placed })
}

impl Ledger for SharedLedger {
    fn listed(&mut self, group: Option<&str>) -> Vec<(Key, u32)> {
        self.states.list(group).unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot list the groups' shared states; listing this process's");
            Vec::new()
        })
    }

    /// The partitions whose entry (or, without one, whose part of the whole record) another
    /// process stored since this one last saw it. Beyond the `have` partitions this process
    /// holds, only those that follow on from them without a gap are taken.
    fn refresh(
        &mut self,
        group: &str,
        topic: &str,
        partitions: u32,
        have: usize,
    ) -> Vec<(u32, SharedPartition)> {
        let key = (group.to_owned(), topic.to_owned());
        let loaded = match self.states.load(group, topic, partitions) {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::warn!(group = %Shown(group), topic = %Shown(topic), %error, "cannot read the group's shared state; going on with this process's");
                return Vec::new();
            }
        };
        let record_new = match &loaded.record {
            Some((_, revision)) => self.records.get(&key) != Some(revision),
            None => false,
        };
        if let Some((_, revision)) = &loaded.record {
            self.records.insert(key.clone(), *revision);
        }
        let count = loaded.record.as_ref().map_or(0, |(saved, _)| saved.more.len() + 1);
        let count = count.max(loaded.partitions.len());
        let mut taken = Vec::new();
        for partition in 0..count {
            let at = u32::try_from(partition).unwrap_or(u32::MAX);
            let own = loaded.partitions.get(partition).and_then(Option::as_ref);
            let beyond = partition >= have;
            let stored = match own {
                Some((state, revision)) => (beyond
                    || self.seen.get(&(key.clone(), at)) != Some(revision))
                .then(|| (state.clone(), Some(*revision))),
                // A partition without an entry of its own has not been stored since partitions
                // had entries: the whole record's part is the one stored.
                None => loaded
                    .record
                    .as_ref()
                    .and_then(|(saved, _)| part_of(saved, at))
                    .filter(|_| record_new || beyond)
                    .map(|state| (state, None)),
            };
            let Some((state, revision)) = stored else {
                if beyond {
                    // A gap: the partitions after it are not taken either.
                    break;
                }
                continue;
            };
            if let Some(revision) = revision {
                self.seen.insert((key.clone(), at), revision);
            }
            taken.push((at, state));
        }
        if !taken.is_empty() {
            tracing::info!(
                group = %Shown(group),
                topic = %Shown(topic),
                partitions = taken.len(),
                "took the group's state as stored by another broker process"
            );
        }
        taken
    }

    /// Stores each partition the pass changed in one batch, each only if no other broker
    /// process stored it since this one last read or stored it. A partition another process
    /// changed meanwhile is reloaded as it stored it (this pass's changes to it are dropped:
    /// they were made on an old copy); one that could not be stored is undone. Either way the
    /// pass's replies about that partition are refused or made again.
    fn store(&mut self, states: Vec<(Key, Option<Saved>, Vec<u32>)>) -> Stored {
        let mut batch = Vec::new();
        for (key, saved, changed) in states {
            let Some(saved) = saved else { continue };
            for partition in changed {
                let Some(state) = part_of(&saved, partition) else { continue };
                let revision = self.seen.get(&(key.clone(), partition)).copied();
                batch.push((key.clone(), partition, state, revision));
            }
        }
        let mut stored = Stored { transient: true, ..Stored::default() };
        if batch.is_empty() {
            return stored;
        }
        let places: Vec<(Key, u32)> =
            batch.iter().map(|(key, partition, _, _)| (key.clone(), *partition)).collect();
        let results = self.states.save(batch);
        for (at, (key, partition)) in places.into_iter().enumerate() {
            let failed = |error: io::Error| (key.clone(), Some(partition), error);
            match results.get(at) {
                Some(Ok(revision)) => {
                    self.seen.insert((key, partition), *revision);
                }
                Some(Err(SaveError::Conflict(now))) => {
                    let reason = "another broker process changed it at the same time; it was \
                                  read again, try again";
                    match now {
                        Some((state, revision)) => {
                            self.seen.insert((key.clone(), partition), *revision);
                            stored.reloaded.push((key.clone(), partition, state.clone()));
                        }
                        None => {
                            self.seen.remove(&(key.clone(), partition));
                        }
                    }
                    stored.failed.push(failed(io::Error::other(reason)));
                }
                Some(Err(SaveError::Failed(error))) => {
                    stored.failed.push(failed(io::Error::other(error.clone())))
                }
                None => {
                    stored.failed.push(failed(io::Error::other("no answer from the shared states")))
                }
            }
        }
        stored
    }

    fn lost(&mut self, key: &Key) {
        self.unsee(key);
    }

    fn forget(&mut self, topic: &str, groups: &[String]) {
        for group in groups {
            self.states.remove(group, topic);
            self.unsee(&(group.clone(), topic.to_owned()));
        }
    }
}
