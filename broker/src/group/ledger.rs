//! Where group states are kept beyond this process's memory: the door [`Ledger`], with the
//! ledger of a broker that keeps them nowhere ([`Unkept`]) and that of a broker with a data
//! directory ([`DiskLedger`]). The third, states shared with other broker processes, is
//! [`super::SharedLedger`].
//!
//! [`super::Groups`] holds the states and their rules; a ledger only stores what a pass changed
//! and says which could not be stored. So whether states live in memory, in files or in a
//! shared key-value bucket is a type chosen at start-up, not a branch in every method.

use std::io;
use std::path::PathBuf;

use crate::files;
use crate::quiet::Shown;

use super::disk::{self, Saved};
use super::shared::SharedPartition;
use super::Key;

/// Where the group states changed in a pass are stored, and read back from when another
/// broker process may have changed them.
pub trait Ledger: std::fmt::Debug + Send {
    /// Whether states are stored at all. When not, a pass's changes are not tracked: there is
    /// nothing to undo.
    fn stores(&self) -> bool {
        true
    }

    /// The partitions of the state of `group` on `topic` (a topic of `partitions`) that
    /// another broker process stored since this process last saw them, as stored, of which
    /// this process holds the first `have`: beyond those, only partitions that follow on
    /// without a gap. Waits for the answer (bounded).
    fn refresh(
        &mut self,
        _group: &str,
        _topic: &str,
        _partitions: u32,
        _have: usize,
    ) -> Vec<(u32, SharedPartition)> {
        Vec::new()
    }

    /// The group and topic of every state stored by any broker process that `group` selects
    /// (every one when `None`), each with how many partitions have entries of their own: for
    /// a listing through a process that never read them. Waits for the answer (bounded); none
    /// when states are not shared.
    fn listed(&mut self, _group: Option<&str>) -> Vec<(Key, u32)> {
        Vec::new()
    }

    /// Stores the states a pass changed, each as it is now (`None`: it is gone, its topic
    /// deleted in the pass, and there is nothing to store), with the partitions whose stored
    /// part changed. Says which could not be stored.
    fn store(&mut self, states: Vec<(Key, Option<Saved>, Vec<u32>)>) -> Stored;

    /// Notes that this process's copy of `key`'s state was put back to what it was before a
    /// pass, though some of the pass's changes to it may have been stored: the copy is not
    /// the one stored, whatever revisions it saw.
    fn lost(&mut self, _key: &Key) {}

    /// Forgets the states of `groups` on `topic`, which was deleted.
    fn forget(&mut self, topic: &str, groups: &[String]);
}

/// What became of the states a pass changed.
#[derive(Debug, Default)]
pub struct Stored {
    /// The states not stored, each with the partition not stored (`None`: the whole state),
    /// and why: the pass's changes to it are undone and their replies refused.
    pub failed: Vec<(Key, Option<u32>, io::Error)>,
    /// The partitions another broker process changed at the same time, as it stored them:
    /// they replace this process's (their replies are refused or made again too, being in
    /// `failed`).
    pub reloaded: Vec<(Key, u32, SharedPartition)>,
    /// Whether the same requests may succeed later (shared states that could not be reached),
    /// rather than a file not written.
    pub transient: bool,
}

/// The ledger of a broker that keeps its groups in memory only: nothing is stored, nothing
/// can fail.
#[derive(Debug, Default)]
pub struct Unkept;

impl Ledger for Unkept {
    fn stores(&self) -> bool {
        false
    }

    fn store(&mut self, _states: Vec<(Key, Option<Saved>, Vec<u32>)>) -> Stored {
        Stored::default()
    }

    fn forget(&mut self, _topic: &str, _groups: &[String]) {}
}

/// The ledger of a broker with a data directory: one file per state in `DATA_DIR/groups/`
/// (see `disk`), replaced whole, flushed unless `--fsync never`.
#[derive(Debug)]
pub struct DiskLedger {
    /// The groups directory.
    dir: PathBuf,
    /// Whether the directory exists: it is made when the first state is stored, so that a
    /// broker whose clients use no groups keeps nothing but its topics.
    exists: bool,
    /// Whether files are flushed to disk before the commit ends.
    sync: bool,
}

impl DiskLedger {
    /// The states in `dir`, which `exists` or not yet, flushed when `sync`.
    pub fn new(dir: PathBuf, exists: bool, sync: bool) -> DiskLedger {
        DiskLedger { dir, exists, sync }
    }
}

impl Ledger for DiskLedger {
    fn store(&mut self, states: Vec<(Key, Option<Saved>, Vec<u32>)>) -> Stored {
        let mut written = Vec::new();
        let mut failed = Vec::new();
        if !self.exists && !states.is_empty() {
            match disk::create_dir(&self.dir, self.sync) {
                Ok(()) => self.exists = true,
                Err(error) => {
                    let reason = format!("cannot make {}: {error}", self.dir.display());
                    failed.extend(states.iter().map(|(key, _, _)| {
                        (key.clone(), None, io::Error::new(error.kind(), reason.clone()))
                    }));
                }
            }
        }
        // A file holds the whole state: it is written whole, whatever partitions changed.
        for (key, saved, _) in states.into_iter().filter(|_| self.exists) {
            // A state gone with its topic in the same pass: its file went with it.
            let Some(saved) = saved else { continue };
            let name = disk::file_name(&key.0, &key.1);
            match disk::replace(&self.dir, &name, &disk::encode(&saved), self.sync) {
                Ok(()) => written.push(key),
                Err(error) => failed.push((key, None, error)),
            }
        }
        if self.sync && !written.is_empty() {
            if let Err(error) = files::sync_dir(&self.dir) {
                // The renames may not last: none of the pass's writes can be counted on.
                let reason = error.to_string();
                failed.extend(
                    written
                        .into_iter()
                        .map(|key| (key, None, io::Error::new(error.kind(), reason.clone()))),
                );
            }
        }
        Stored { failed, reloaded: Vec::new(), transient: false }
    }

    fn forget(&mut self, topic: &str, groups: &[String]) {
        for group in groups {
            if let Err(error) = disk::remove(&self.dir, &disk::file_name(group, topic)) {
                tracing::warn!(group = %Shown(group), topic = %Shown(topic), %error, "cannot remove a group's state file");
            }
        }
        if self.sync && self.exists && !groups.is_empty() {
            if let Err(error) = files::sync_dir(&self.dir) {
                tracing::warn!(%error, "cannot flush the groups directory");
            }
        }
    }
}
