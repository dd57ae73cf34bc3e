//! The consumer groups' states kept in the JetStream's key-value bucket `broker_groups`, so
//! that a member may move from one broker process to another and go on where its group was.
//!
//! Each partition of a group's state on a topic has a key of its own,
//! `o.<hex of the group>.<hex of the topic>.<partition>` (key names allow fewer characters
//! than group and topic names), holding its delivered offset, its pending offsets and whether
//! the group has a committed offset there, so that processes serving one group's members from
//! different partitions never change the same key. Brokers before that kept the whole state
//! in one record, `g.<hex of the group>.<hex of the topic>` (`group::Saved`, every partition);
//! such a record is still read, a partition's own key wins over its part of the record, and
//! the first store of a partition creates its own key. The record is never written again, and
//! goes when its state is deleted.
//!
//! # Format
//! ```text
//! value = 0xc1 version:u8 body
//! own key (version 1):
//!   body = MessagePack map {"group": str, "topic": str, "partition": uint32,
//!                           "delivered": uint64, "pending": [uint64], "unplaced": bool}
//! record (versions 1 and 2):
//!   body = MessagePack map {"group": str, "topic": str, "delivered": uint64, "pending": [uint64],
//!                           "more": [{"delivered": uint64, "pending": [uint64]}],
//!                           "unplaced": [uint32]}
//! ```
//! `unplaced` is left out when false (the group has a committed offset there). `0xc1` is the
//! one byte MessagePack never uses, so a record written before states had a version (the body
//! alone, which starts with a map's marker) is told apart from a versioned one: it is read as
//! format 0. A version this broker does not know (written by a newer one) is refused with an
//! error that says so, never read as if it were known.
//!
//! [`NatsGroups`] is the serving thread's side, the door `group` knows; [`GroupsBucket`] is
//! the runtime's.

use std::sync::mpsc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc as tmpsc;

use serde::{Deserialize, Serialize};

use super::runtime::{Command, Connection};
use crate::group::{Change, Key, Loaded, SaveError, Saved, SharedPartition, SharedStates};

/// How long reading or storing group states may take before it counts as failed.
const GROUPS_TIMEOUT: Duration = Duration::from_secs(2);

/// The [`SharedStates`] of a broker process on a JetStream.
#[derive(Debug)]
pub struct NatsGroups {
    /// Commands to the store's runtime, which holds the connection.
    commands: Option<tmpsc::UnboundedSender<Command>>,
}

impl NatsGroups {
    /// Group states through the runtime that `commands` reaches.
    pub fn new(commands: Option<tmpsc::UnboundedSender<Command>>) -> NatsGroups {
        NatsGroups { commands }
    }

    /// Sends `command` to the runtime; whether it went.
    fn send(&self, command: Command) -> bool {
        self.commands.as_ref().is_some_and(|c| c.send(command).is_ok())
    }
}

/// The key of the whole record of `group`'s state on `topic` (the older layout).
fn key(group: &str, topic: &str) -> String {
    format!("g.{}.{}", hex(group), hex(topic))
}

/// The key of `partition` of `group`'s state on `topic`.
fn own_key(group: &str, topic: &str, partition: u32) -> String {
    format!("{}{partition}", own_prefix(group, topic))
}

/// What the own keys of every partition of `group`'s state on `topic` start with.
fn own_prefix(group: &str, topic: &str) -> String {
    format!("o.{}.{}.", hex(group), hex(topic))
}

/// `text`'s bytes in lowercase hex.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The group and topic a key names, and the partition when it is an own key; `None` for a key
/// not made by [`key`] or [`own_key`].
fn names_of(key: &str) -> Option<(String, String, Option<u32>)> {
    let unhex = |hex: &str| -> Option<String> {
        if !hex.len().is_multiple_of(2) {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
            .collect();
        String::from_utf8(bytes?).ok()
    };
    let (own, rest) = match (key.strip_prefix("g."), key.strip_prefix("o.")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return None,
    };
    let mut parts = rest.split('.');
    let (group, topic) = (parts.next()?, parts.next()?);
    let partition = match own {
        true => {
            let digits = parts.next()?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(digits.parse().ok()?)
        }
        false => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((unhex(group)?, unhex(topic)?, partition))
}

/// The first byte of a versioned state: one MessagePack never uses, so no unversioned state
/// (a MessagePack map) starts with it.
const MARK: u8 = 0xc1;

/// The latest format version of the whole records, which this broker reads and no longer
/// writes: 2 may hold partitions beyond the first (`Saved::more`), which a broker of version 1
/// would drop.
const VERSION: u8 = 2;

/// The format version of the partitions' own keys this broker writes.
const OWN_VERSION: u8 = 1;

/// What a partition's own key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Own {
    /// The group's name.
    group: String,
    /// The topic's name.
    topic: String,
    /// The partition.
    partition: u32,
    /// The next offset never delivered to the group.
    delivered: u64,
    /// The offsets delivered and not acknowledged, ascending.
    pending: Vec<u64>,
    /// Whether the group has no committed offset there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    unplaced: bool,
}

/// The bytes stored under the own key of `partition` of `key`'s state: its format version,
/// then its body.
///
/// # Errors
/// It cannot be encoded (never, for strings and numbers written to memory).
fn encode_own(key: &Key, partition: u32, state: &SharedPartition) -> Result<Vec<u8>, String> {
    let own = Own {
        group: key.0.clone(),
        topic: key.1.clone(),
        partition,
        delivered: state.delivered,
        pending: state.pending.clone(),
        unplaced: !state.placed,
    };
    let mut bytes = vec![MARK, OWN_VERSION];
    rmp_serde::encode::write_named(&mut bytes, &own)
        .map_err(|e| format!("cannot encode a group state: {e}"))?;
    Ok(bytes)
}

/// The state of `partition` of `group`'s state on `topic` read back from its own key.
///
/// # Errors
/// The value does not decode, names another group, topic or partition, or is of a format
/// version this broker does not read.
fn decode_own(
    bytes: &[u8],
    group: &str,
    topic: &str,
    partition: u32,
) -> Result<SharedPartition, String> {
    let body = match bytes {
        [MARK, OWN_VERSION, body @ ..] => body,
        [MARK, version, ..] => {
            let by = if *version > OWN_VERSION { ": a newer broker wrote it" } else { "" };
            return Err(format!(
                "a stored partition's group state is of format version {version}, which this \
                 broker does not read (it reads version {OWN_VERSION}){by}"
            ));
        }
        _ => return Err("a stored partition's group state has no format version".into()),
    };
    let own: Own = rmp_serde::from_slice(body)
        .map_err(|e| format!("a stored group state does not decode: {e}"))?;
    if own.group != group || own.topic != topic || own.partition != partition {
        return Err("a stored group state names another group, topic or partition".into());
    }
    Ok(SharedPartition { delivered: own.delivered, pending: own.pending, placed: !own.unplaced })
}

/// A stored whole record of `group` on `topic`, read back: of format 1 or 2, or of format 0
/// (no version, as brokers before versions wrote them).
///
/// # Errors
/// The value does not decode, names another group or topic, or is of a format version this
/// broker does not read.
fn decode(bytes: &[u8], group: &str, topic: &str) -> Result<Saved, String> {
    let body = match bytes {
        [MARK, 1 | VERSION, body @ ..] => body,
        [MARK, version, ..] => {
            let by = if *version > VERSION { ": a newer broker wrote it" } else { "" };
            return Err(format!(
                "a stored group state is of format version {version}, which this broker does \
                 not read (it reads versions 1 and {VERSION}, and states stored without one){by}"
            ));
        }
        [MARK] => return Err("a stored group state is cut short in its version".into()),
        unversioned => unversioned,
    };
    let saved: Saved = rmp_serde::from_slice(body)
        .map_err(|e| format!("a stored group state does not decode: {e}"))?;
    if saved.group != group || saved.topic != topic {
        return Err("a stored group state names another group or topic".into());
    }
    Ok(saved)
}

impl NatsGroups {
    /// The entries under `keys`, read at once: each one's bytes and revision, if stored.
    fn entries(&self, keys: Vec<String>) -> Result<Entries, String> {
        let (reply, answer) = mpsc::channel();
        if !self.send(Command::GroupLoad { keys, reply }) {
            return Err("the connection to NATS has stopped".into());
        }
        answer
            .recv_timeout(GROUPS_TIMEOUT)
            .unwrap_or_else(|_| Err("JetStream did not answer in time".into()))
    }
}

impl SharedStates for NatsGroups {
    fn load(&mut self, group: &str, topic: &str, partitions: u32) -> Result<Loaded, String> {
        let keys = std::iter::once(key(group, topic))
            .chain((0..partitions).map(|partition| own_key(group, topic, partition)))
            .collect();
        let mut entries = self.entries(keys)?.into_iter();
        let record = match entries.next().flatten() {
            Some((bytes, revision)) => Some((decode(&bytes, group, topic)?, revision)),
            None => None,
        };
        let partitions = (0u32..)
            .zip(entries)
            .map(|(partition, entry)| match entry {
                Some((bytes, revision)) => {
                    Ok(Some((decode_own(&bytes, group, topic, partition)?, revision)))
                }
                None => Ok(None),
            })
            .collect::<Result<_, String>>()?;
        Ok(Loaded { record, partitions })
    }

    fn save(&mut self, changes: Vec<Change>) -> Vec<Result<u64, SaveError>> {
        let count = changes.len();
        let failed = |reason: String| vec![Err(SaveError::Failed(reason)); count];
        let mut encoded = Vec::with_capacity(count);
        for (key, partition, state, revision) in &changes {
            match encode_own(key, *partition, state) {
                Ok(bytes) => {
                    encoded.push((own_key(&key.0, &key.1, *partition), bytes.into(), *revision))
                }
                Err(error) => return failed(error),
            }
        }
        let (reply, answer) = mpsc::channel();
        if !self.send(Command::GroupSave { states: encoded, reply }) {
            return failed("the connection to NATS has stopped".into());
        }
        let Ok(results) = answer.recv_timeout(GROUPS_TIMEOUT) else {
            return failed("JetStream did not answer in time".into());
        };
        results
            .into_iter()
            .zip(&changes)
            .map(|(result, (key, partition, _, _))| match result {
                Ok(revision) => Ok(revision),
                Err(NotSaved::Stored(None)) => Err(SaveError::Conflict(None)),
                Err(NotSaved::Stored(Some((bytes, revision)))) => {
                    match decode_own(&bytes, &key.0, &key.1, *partition) {
                        Ok(stored) => Err(SaveError::Conflict(Some((stored, revision)))),
                        Err(reason) => Err(SaveError::Failed(reason)),
                    }
                }
                Err(NotSaved::Failed(reason)) => Err(SaveError::Failed(reason)),
            })
            .collect()
    }

    fn remove(&mut self, group: &str, topic: &str) {
        let (key, under) = (key(group, topic), own_prefix(group, topic));
        self.send(Command::GroupRemove { key, under });
    }

    fn list(&mut self, group: Option<&str>) -> Result<Vec<(Key, u32)>, String> {
        let (reply, answer) = mpsc::channel();
        if !self.send(Command::GroupKeys { prefix: None, reply }) {
            return Err("the connection to NATS has stopped".into());
        }
        let keys = answer
            .recv_timeout(GROUPS_TIMEOUT)
            .unwrap_or_else(|_| Err("JetStream did not answer in time".into()))?;
        let mut listed: Vec<(Key, u32)> = Vec::new();
        for (named, topic, partition) in keys.iter().filter_map(|key| names_of(key)) {
            if group.is_some_and(|group| group != named) {
                continue;
            }
            let count = partition.map_or(0, |partition| partition.saturating_add(1));
            match listed.iter_mut().find(|((g, t), _)| *g == named && *t == topic) {
                Some((_, most)) => *most = (*most).max(count),
                None => listed.push(((named, topic), count)),
            }
        }
        Ok(listed)
    }
}

/// How long listing the groups bucket's keys may take on the runtime: inside
/// [`GROUPS_TIMEOUT`], which the serving thread waits for the answer.
const LIST_TIMEOUT: Duration = Duration::from_millis(1500);

/// The key-value bucket of the consumer groups' states, shared by every broker process.
const GROUPS_BUCKET: &str = "broker_groups";

/// The bytes and revision of each entry read, if one is stored, in the order asked.
pub type Entries = Vec<Option<(Bytes, u64)>>;

/// Why a group state was not stored.
#[derive(Debug)]
pub enum NotSaved {
    /// Its revision was not the one given: the state stored now and its revision, if any.
    Stored(Option<(Bytes, u64)>),
    /// JetStream could not be reached or refused.
    Failed(String),
}

/// The groups bucket on the runtime.
#[derive(Default)]
pub struct GroupsBucket {
    /// The bucket, once opened.
    bucket: Option<jetstream::kv::Store>,
}

impl GroupsBucket {
    /// The groups bucket, opened or created on first use.
    pub async fn bucket(&mut self, conn: &Connection) -> Result<jetstream::kv::Store, String> {
        let config = jetstream::kv::Config {
            bucket: GROUPS_BUCKET.into(),
            history: 1,
            num_replicas: conn.setup.replicas,
            ..Default::default()
        };
        conn.bucket(&mut self.bucket, config).await
    }

    /// The keys of the states stored, those that start with `prefix` when given.
    pub async fn keys(
        &mut self,
        conn: &Connection,
        prefix: Option<&str>,
    ) -> Result<Vec<String>, String> {
        let bucket = self.bucket(conn).await?;
        let listing = async {
            let mut keys = bucket.keys().await.map_err(|e| e.to_string())?;
            let mut found = Vec::new();
            while let Some(key) = keys.next().await {
                let key = key.map_err(|e| e.to_string())?;
                if prefix.is_none_or(|prefix| key.starts_with(prefix)) {
                    found.push(key);
                }
            }
            Ok::<_, String>(found)
        };
        tokio::time::timeout(LIST_TIMEOUT, listing)
            .await
            .map_err(|_| "JetStream did not list the group states in time".to_owned())?
            .map_err(|e| format!("cannot list the group states: {e}"))
    }

    /// The bytes and revision of each entry under `keys`, if one is stored, read at once.
    pub async fn load(&mut self, conn: &Connection, keys: &[String]) -> Result<Entries, String> {
        let bucket = self.bucket(conn).await?;
        let reads = keys.iter().map(|key| {
            let bucket = bucket.clone();
            async move {
                let entry = bucket
                    .entry(key)
                    .await
                    .map_err(|e| format!("cannot read a group state: {e}"))?;
                Ok::<_, String>(
                    entry
                        .filter(|e| e.operation == jetstream::kv::Operation::Put)
                        .map(|e| (e.value, e.revision)),
                )
            }
        });
        futures_util::future::join_all(reads).await.into_iter().collect()
    }

    /// Stores group states, all at once, each only if its stored revision is the one given
    /// (compare-and-set); each one's new revision, or the state stored instead, or why not.
    pub async fn save(
        &mut self,
        conn: &Connection,
        states: Vec<(String, Bytes, Option<u64>)>,
    ) -> Vec<Result<u64, NotSaved>> {
        let bucket = match self.bucket(conn).await {
            Ok(bucket) => bucket,
            Err(error) => {
                return states.iter().map(|_| Err(NotSaved::Failed(error.clone()))).collect()
            }
        };
        let saves = states.into_iter().map(|(key, value, revision)| {
            let bucket = bucket.clone();
            async move {
                let stored = match revision {
                    Some(revision) => bucket.update(&key, value, revision).await.map_err(|e| {
                        let moved = e.kind() == jetstream::kv::UpdateErrorKind::WrongLastRevision;
                        (moved, e.to_string())
                    }),
                    None => bucket.create(&key, value).await.map_err(|e| {
                        let moved = e.kind() == jetstream::kv::CreateErrorKind::AlreadyExists;
                        (moved, e.to_string())
                    }),
                };
                match stored {
                    Ok(revision) => Ok(revision),
                    Err((true, _)) => match bucket.entry(&key).await {
                        Ok(entry) => Err(NotSaved::Stored(
                            entry
                                .filter(|e| e.operation == jetstream::kv::Operation::Put)
                                .map(|e| (e.value, e.revision)),
                        )),
                        Err(error) => Err(NotSaved::Failed(format!(
                            "cannot read a group state changed elsewhere: {error}"
                        ))),
                    },
                    Err((false, error)) => {
                        Err(NotSaved::Failed(format!("cannot store a group state: {error}")))
                    }
                }
            }
        });
        futures_util::future::join_all(saves).await
    }

    /// Removes the group state under `key`, if there is one, and those under every key that
    /// starts with `under`.
    pub async fn remove(&mut self, conn: &Connection, key: &str, under: &str) {
        let owned = match self.keys(conn, Some(under)).await {
            Ok(owned) => owned,
            Err(error) => {
                tracing::warn!(%error, "cannot list a group's partitions to remove them");
                Vec::new()
            }
        };
        if let Ok(bucket) = self.bucket(conn).await {
            for key in std::iter::once(key.to_owned()).chain(owned) {
                if let Err(error) = bucket.purge(&key).await {
                    tracing::warn!(%error, "cannot remove a group state from JetStream");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes brokers before partitions had keys of their own stored for `saved`, a whole
    /// record: its format version, then its body.
    pub(crate) fn encode(saved: &Saved) -> Vec<u8> {
        let mut bytes = vec![MARK, VERSION];
        rmp_serde::encode::write_named(&mut bytes, saved).unwrap();
        bytes
    }

    #[test]
    fn a_key_names_its_group_topic_and_partition_and_other_keys_nothing() {
        for (group, topic) in [("g", "t"), ("readers", "orders.eu"), ("grüppe", "a b")] {
            let names = (group.to_owned(), topic.to_owned());
            assert_eq!(
                names_of(&key(group, topic)),
                Some((names.0.clone(), names.1.clone(), None))
            );
            let own = own_key(group, topic, 17);
            assert!(own.starts_with(&own_prefix(group, topic)));
            assert_eq!(names_of(&own), Some((names.0, names.1, Some(17))));
        }
        for other in [
            "g.67",
            "g.67.7.7",
            "h.67.74",
            "g.6.74",
            "g.zz.74",
            "g.ff.74",
            "o.67.74",
            "o.67.74.",
            "o.67.74.x",
            "o.67.74.1.2",
            "o.67.74.-1",
            "o.67.74.99999999999",
        ] {
            assert_eq!(names_of(other), None, "{other}");
        }
    }

    fn saved() -> Saved {
        Saved {
            group: "g".into(),
            topic: "t".into(),
            delivered: 9,
            pending: vec![3, 5],
            more: vec![crate::group::SavedPartition { delivered: 2, pending: vec![1] }],
            unplaced: None,
        }
    }

    #[test]
    fn records_of_versions_2_and_1_still_read() {
        let bytes = encode(&saved());
        assert_eq!(bytes[..2], [0xc1, 2]);
        assert_eq!(decode(&bytes, "g", "t"), Ok(saved()));
        assert!(decode(&bytes, "g", "other").unwrap_err().contains("another group or topic"));
        let one = Saved { more: Vec::new(), ..saved() };
        let mut bytes = vec![MARK, 1];
        bytes.extend(rmp_serde::to_vec_named(&one).unwrap());
        assert_eq!(decode(&bytes, "g", "t"), Ok(one));
    }

    #[test]
    fn a_partitions_own_state_is_written_with_its_version_and_read_back() {
        let key = ("g".to_owned(), "t".to_owned());
        for placed in [true, false] {
            let state = SharedPartition { delivered: 9, pending: vec![3, 5], placed };
            let bytes = encode_own(&key, 4, &state).unwrap();
            assert_eq!(bytes[..2], [0xc1, 1]);
            assert_eq!(decode_own(&bytes, "g", "t", 4), Ok(state));
            let other = decode_own(&bytes, "g", "t", 3).unwrap_err();
            assert!(other.contains("another group, topic or partition"), "{other}");
        }
        let state = SharedPartition { delivered: 1, pending: Vec::new(), placed: true };
        let mut newer = encode_own(&key, 0, &state).unwrap();
        newer[1] = 2;
        let error = decode_own(&newer, "g", "t", 0).unwrap_err();
        assert!(error.contains("format version 2") && error.contains("newer"), "{error}");
        assert!(decode_own(&encode(&saved()), "g", "t", 0).is_err(), "a record is no own key");
        assert!(decode_own(b"", "g", "t", 0).is_err());
    }

    #[test]
    fn states_written_before_versions_still_read() {
        // What brokers before versions stored: the MessagePack map alone.
        let unversioned = rmp_serde::to_vec_named(&saved()).unwrap();
        assert_ne!(unversioned[0], MARK);
        assert_eq!(decode(&unversioned, "g", "t"), Ok(saved()));
    }

    #[test]
    fn a_newer_version_is_refused_not_misread() {
        let mut newer = encode(&saved());
        newer[1] = 3;
        let error = decode(&newer, "g", "t").unwrap_err();
        assert!(error.contains("format version 3") && error.contains("newer"), "{error}");
        assert!(decode(&[MARK], "g", "t").unwrap_err().contains("cut short"));
        assert!(decode(&[MARK, 1, 0xc1], "g", "t").unwrap_err().contains("does not decode"));
        assert!(decode(b"", "g", "t").is_err());
    }

    #[test]
    fn keys_hold_only_what_key_names_allow_and_tell_groups_and_topics_apart() {
        for k in [key("pre.parers", "orders >1"), own_key("pre.parers", "orders >1", 12)] {
            assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'), "{k}");
        }
        assert_ne!(key("ab", "c"), key("a", "bc"));
        assert_ne!(own_key("ab", "c", 1), own_key("a", "bc", 1));
        assert!(!own_key("g", "t", 12).starts_with(&own_prefix("g", "t1")));
    }
}
