//! The consumer groups' states kept in the JetStream's key-value bucket `broker_groups`, so
//! that a member may move from one broker process to another and go on where its group was.
//!
//! The key of a group's state on a topic is `g.<hex of the group>.<hex of the topic>` (key
//! names allow fewer characters than group and topic names); its value is the state as the
//! group files hold it (`group::Saved`: delivered offset and pending offsets), in MessagePack.

use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::mpsc as tmpsc;

use super::runtime::{Command, NotSaved};
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
    pub(super) fn new(commands: Option<tmpsc::UnboundedSender<Command>>) -> NatsGroups {
        NatsGroups { commands }
    }

    /// Sends `command` to the runtime; whether it went.
    fn send(&self, command: Command) -> bool {
        self.commands.as_ref().is_some_and(|c| c.send(command).is_ok())
    }
}

/// The key of `group`'s state on `topic`.
fn key(group: &str, topic: &str) -> String {
    let hex = |text: &str| text.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    format!("g.{}.{}", hex(group), hex(topic))
}

/// A stored state of `group` on `topic`, read back.
fn decode(bytes: &[u8], group: &str, topic: &str) -> Result<Saved, String> {
    let saved: Saved = rmp_serde::from_slice(bytes)
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
            match rmp_serde::to_vec_named(saved) {
                Ok(bytes) => {
                    encoded.push((key(&saved.group, &saved.topic), bytes.into(), *revision))
                }
                Err(error) => return failed(format!("cannot encode a group state: {error}")),
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
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn keys_hold_only_what_key_names_allow_and_tell_groups_and_topics_apart() {
        let k = key("pre.parers", "orders >1");
        assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'), "{k}");
        assert_ne!(key("ab", "c"), key("a", "bc"));
    }
}
