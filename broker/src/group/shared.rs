//! Group states shared with other broker processes (`--store nats://...`): the [`Ledger`] that
//! stores them with compare-and-set in a key-value store all the processes reach, behind the
//! door [`SharedStates`] (the NATS one is `nats::NatsGroups`).
//!
//! Each process remembers the revision of every state it last stored or read; a revision it
//! does not know means another process changed the state since, and the state stored there
//! wins: this process takes it, and refuses the replies of a pass made on its old copy.

use std::collections::HashMap;
use std::io;

use crate::quiet::Shown;

use super::disk::Saved;
use super::ledger::{Ledger, Stored};
use super::Key;

/// A key-value store of group states shared by several broker processes, with a revision on
/// each state: the door to states changed through other processes.
pub trait SharedStates: std::fmt::Debug + Send {
    /// The state stored for `group` on `topic` and its revision, if one is stored. Waits for
    /// the answer (bounded).
    ///
    /// # Errors
    /// The shared states cannot be reached.
    fn load(&mut self, group: &str, topic: &str) -> Result<Option<(Saved, u64)>, String>;

    /// Stores `states`, all at once, each only if its stored revision is still the one given
    /// (compare-and-set; `None`: only if none is stored); for each, its new revision or why
    /// it was not stored. Waits for the answers (bounded).
    fn save(&mut self, states: Vec<(Saved, Option<u64>)>) -> Vec<Result<u64, SaveError>>;

    /// Removes the state of `group` on `topic`, without waiting.
    fn remove(&mut self, group: &str, topic: &str);

    /// The group and topic of every state stored, of `group` only when given. Waits for the
    /// answer (bounded).
    ///
    /// # Errors
    /// The shared states cannot be reached.
    fn list(&mut self, group: Option<&str>) -> Result<Vec<Key>, String>;
}

/// Why a shared group state was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveError {
    /// Another broker process stored the state since this one last read or stored it: the
    /// state stored now and its revision, or `None` when none is stored any more.
    Conflict(Option<(Saved, u64)>),
    /// The shared states could not be reached, or did not answer in time.
    Failed(String),
}

/// The [`Ledger`] of a broker process whose group states are shared with others.
#[derive(Debug)]
pub struct SharedLedger {
    /// Where they are kept.
    states: Box<dyn SharedStates>,
    /// The revision of each state this process last stored or loaded: another one means that
    /// another process changed it since.
    seen: HashMap<Key, u64>,
}

impl SharedLedger {
    /// States kept in `states`.
    pub fn new(states: Box<dyn SharedStates>) -> SharedLedger {
        SharedLedger { states, seen: HashMap::new() }
    }
}

impl Ledger for SharedLedger {
    fn listed(&mut self, group: Option<&str>) -> Vec<Key> {
        self.states.list(group).unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot list the groups' shared states; listing this process's");
            Vec::new()
        })
    }

    fn refresh(&mut self, group: &str, topic: &str) -> Option<Saved> {
        let key = (group.to_owned(), topic.to_owned());
        match self.states.load(group, topic) {
            Ok(Some((saved, revision))) if self.seen.get(&key) != Some(&revision) => {
                self.seen.insert(key, revision);
                tracing::info!(
                    group = %Shown(group),
                    topic = %Shown(topic),
                    "took the group's state as stored: delivered offset {}, {} pending",
                    saved.delivered,
                    saved.pending.len()
                );
                Some(saved)
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(group = %Shown(group), topic = %Shown(topic), %error, "cannot read the group's shared state; going on with this process's");
                None
            }
        }
    }

    /// Stores the pass's changed states in one batch, each only if no other broker process
    /// stored it since this one last read or stored it. A state another process changed
    /// meanwhile is reloaded as it stored it (this pass's changes to it are dropped: they were
    /// made on an old copy); one that could not be stored is undone. Either way the pass's
    /// replies about it are refused, with a state error, so that the client asks again.
    fn store(&mut self, states: Vec<(Key, Option<Saved>)>) -> Stored {
        let mut keys = Vec::new();
        let mut batch = Vec::new();
        for (key, saved) in states {
            let Some(saved) = saved else { continue };
            batch.push((saved, self.seen.get(&key).copied()));
            keys.push(key);
        }
        let mut stored = Stored { transient: true, ..Stored::default() };
        if batch.is_empty() {
            return stored;
        }
        let results = self.states.save(batch);
        for (at, key) in keys.into_iter().enumerate() {
            match results.get(at) {
                Some(Ok(revision)) => {
                    self.seen.insert(key, *revision);
                }
                Some(Err(SaveError::Conflict(now))) => {
                    let reason = "another broker process changed it at the same time; it was \
                                  read again, try again";
                    match now {
                        Some((saved, revision)) => {
                            self.seen.insert(key.clone(), *revision);
                            stored.reloaded.push((key.clone(), saved.clone()));
                        }
                        None => {
                            self.seen.remove(&key);
                        }
                    }
                    stored.failed.push((key, io::Error::other(reason)));
                }
                Some(Err(SaveError::Failed(error))) => {
                    stored.failed.push((key, io::Error::other(error.clone())))
                }
                None => {
                    stored.failed.push((key, io::Error::other("no answer from the shared states")))
                }
            }
        }
        stored
    }

    fn forget(&mut self, topic: &str, groups: &[String]) {
        for group in groups {
            self.states.remove(group, topic);
            self.seen.remove(&(group.clone(), topic.to_owned()));
        }
    }
}
