//! The consumer groups' states kept in the JetStream's key-value bucket `broker_groups`, so
//! that a member may move from one broker process to another and go on where its group was.
//!
//! The key of a group's state on a topic is `g.<hex of the group>.<hex of the topic>` (key
//! names allow fewer characters than group and topic names); its value is the state as the
//! group files hold it (`group::Saved`: delivered offset and pending offsets), in MessagePack,
//! after a format version.
//!
//! # Format
//! ```text
//! value = 0xc1 version:u8 body       (version 1)
//! body  = MessagePack map {"group": str, "topic": str, "delivered": uint64, "pending": [uint64]}
//! ```
//! `0xc1` is the one byte MessagePack never uses, so a value written before states had a
//! version (the body alone, which starts with a map's marker) is told apart from a versioned
//! one: it is read as format 0, and written in the present format the next time its state
//! changes. A version this broker does not know (written by a newer one) is refused with an
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

use super::runtime::{Command, Connection};
use crate::group::{SaveError, Saved, SharedStates};

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

/// The key of `group`'s state on `topic`.
fn key(group: &str, topic: &str) -> String {
    format!("{}{}", key_prefix(group), hex(topic))
}

/// What every key of `group`'s states starts with: `g.<hex of the group>.`.
fn key_prefix(group: &str) -> String {
    format!("g.{}.", hex(group))
}

/// `text`'s bytes in lowercase hex.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The group and topic a key names; `None` for a key not made by [`key`].
fn names_of(key: &str) -> Option<(String, String)> {
    let unhex = |hex: &str| -> Option<String> {
        if hex.len() % 2 != 0 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
            .collect();
        String::from_utf8(bytes?).ok()
    };
    let mut parts = key.strip_prefix("g.")?.split('.');
    let (group, topic) = (parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((unhex(group)?, unhex(topic)?))
}

/// The first byte of a versioned state: one MessagePack never uses, so no unversioned state
/// (a MessagePack map) starts with it.
const MARK: u8 = 0xc1;

/// The format version of the states this broker writes: 2 may hold partitions beyond the first
/// (`Saved::more`), which a broker of version 1 would drop.
const VERSION: u8 = 2;

/// The bytes stored for `saved`: its format version, then its body.
///
/// # Errors
/// It cannot be encoded (never, for strings and numbers written to memory).
fn encode(saved: &Saved) -> Result<Vec<u8>, String> {
    let mut bytes = vec![MARK, VERSION];
    rmp_serde::encode::write_named(&mut bytes, saved)
        .map_err(|e| format!("cannot encode a group state: {e}"))?;
    Ok(bytes)
}

/// A stored state of `group` on `topic`, read back: of the present format, or of format 0 (no
/// version, as brokers before versions wrote them).
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

impl SharedStates for NatsGroups {
    fn load(&mut self, group: &str, topic: &str) -> Result<Option<(Saved, u64)>, String> {
        let (reply, answer) = mpsc::channel();
        if !self.send(Command::GroupLoad { key: key(group, topic), reply }) {
            return Err("the connection to NATS has stopped".into());
        }
        let stored = answer
            .recv_timeout(GROUPS_TIMEOUT)
            .unwrap_or_else(|_| Err("JetStream did not answer in time".into()))?;
        let Some((bytes, revision)) = stored else { return Ok(None) };
        Ok(Some((decode(&bytes, group, topic)?, revision)))
    }

    fn save(&mut self, states: Vec<(Saved, Option<u64>)>) -> Vec<Result<u64, SaveError>> {
        let count = states.len();
        let failed = |reason: String| vec![Err(SaveError::Failed(reason)); count];
        let mut encoded = Vec::with_capacity(count);
        for (saved, revision) in &states {
            match encode(saved) {
                Ok(bytes) => {
                    encoded.push((key(&saved.group, &saved.topic), bytes.into(), *revision))
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
            .zip(&states)
            .map(|(result, (saved, _))| match result {
                Ok(revision) => Ok(revision),
                Err(NotSaved::Stored(None)) => Err(SaveError::Conflict(None)),
                Err(NotSaved::Stored(Some((bytes, revision)))) => {
                    match decode(&bytes, &saved.group, &saved.topic) {
                        Ok(stored) => Err(SaveError::Conflict(Some((stored, revision)))),
                        Err(reason) => Err(SaveError::Failed(reason)),
                    }
                }
                Err(NotSaved::Failed(reason)) => Err(SaveError::Failed(reason)),
            })
            .collect()
    }

    fn remove(&mut self, group: &str, topic: &str) {
        self.send(Command::GroupRemove { key: key(group, topic) });
    }

    fn list(&mut self, group: Option<&str>) -> Result<Vec<(String, String)>, String> {
        let (reply, answer) = mpsc::channel();
        let prefix = group.map(key_prefix);
        if !self.send(Command::GroupKeys { prefix, reply }) {
            return Err("the connection to NATS has stopped".into());
        }
        let keys = answer
            .recv_timeout(GROUPS_TIMEOUT)
            .unwrap_or_else(|_| Err("JetStream did not answer in time".into()))?;
        Ok(keys.iter().filter_map(|key| names_of(key)).collect())
    }
}

/// How long listing the groups bucket's keys may take on the runtime: inside
/// [`GROUPS_TIMEOUT`], which the serving thread waits for the answer.
const LIST_TIMEOUT: Duration = Duration::from_millis(1500);

/// The key-value bucket of the consumer groups' states, shared by every broker process.
const GROUPS_BUCKET: &str = "broker_groups";

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

    /// A group state's bytes and revision, if one is stored under `key`.
    pub async fn load(
        &mut self,
        conn: &Connection,
        key: &str,
    ) -> Result<Option<(Bytes, u64)>, String> {
        let bucket = self.bucket(conn).await?;
        let entry =
            bucket.entry(key).await.map_err(|e| format!("cannot read a group state: {e}"))?;
        Ok(entry
            .filter(|e| e.operation == jetstream::kv::Operation::Put)
            .map(|e| (e.value, e.revision)))
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

    /// Removes the group state under `key`, if there is one.
    pub async fn remove(&mut self, conn: &Connection, key: &str) {
        if let Ok(bucket) = self.bucket(conn).await {
            if let Err(error) = bucket.purge(key).await {
                tracing::warn!(%error, "cannot remove a group state from JetStream");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_group_and_topic_and_other_keys_nothing() {
        for (group, topic) in [("g", "t"), ("readers", "orders.eu"), ("grüppe", "a b")] {
            let key = key(group, topic);
            assert!(key.starts_with(&key_prefix(group)));
            assert_eq!(names_of(&key), Some((group.to_owned(), topic.to_owned())));
        }
        for other in ["g.67", "g.67.7.7", "h.67.74", "g.6.74", "g.zz.74", "g.ff.74"] {
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
    fn states_are_written_with_their_version_and_read_back() {
        let bytes = encode(&saved()).unwrap();
        assert_eq!(bytes[..2], [0xc1, 2]);
        assert_eq!(decode(&bytes, "g", "t"), Ok(saved()));
        assert!(decode(&bytes, "g", "other").unwrap_err().contains("another group or topic"));
    }

    #[test]
    fn states_of_version_1_read_as_one_partition() {
        let one = Saved { more: Vec::new(), ..saved() };
        let mut bytes = vec![MARK, 1];
        bytes.extend(rmp_serde::to_vec_named(&one).unwrap());
        assert_eq!(decode(&bytes, "g", "t"), Ok(one));
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
        let mut newer = encode(&saved()).unwrap();
        newer[1] = 3;
        let error = decode(&newer, "g", "t").unwrap_err();
        assert!(error.contains("format version 3") && error.contains("newer"), "{error}");
        assert!(decode(&[MARK], "g", "t").unwrap_err().contains("cut short"));
        assert!(decode(&[MARK, 1, 0xc1], "g", "t").unwrap_err().contains("does not decode"));
        assert!(decode(b"", "g", "t").is_err());
    }

    #[test]
    fn keys_hold_only_what_key_names_allow_and_tell_groups_and_topics_apart() {
        let k = key("pre.parers", "orders >1");
        assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'), "{k}");
        assert_ne!(key("ab", "c"), key("a", "bc"));
    }
}
