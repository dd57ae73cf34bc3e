//! The consumer groups' states kept in the JetStream's key-value bucket `broker_groups`, so
//! that a member may move from one broker process to another and go on where its group was.
//!
//! The key of a group's state on a topic is `g.<hex of the group>.<hex of the topic>` (key
//! names allow fewer characters than group and topic names); its value is the state as the
//! group files hold it (`group::Saved`: delivered offset and pending offsets), in MessagePack.

use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::mpsc as tmpsc;

use super::runtime::Command;
use crate::group::{GroupLedger, Saved};

/// How long reading or storing group states may take before it counts as failed.
const GROUPS_TIMEOUT: Duration = Duration::from_secs(2);

/// The [`GroupLedger`] of a broker process on a JetStream.
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

impl GroupLedger for NatsGroups {
    fn load(&mut self, group: &str, topic: &str) -> Result<Option<(Saved, u64)>, String> {
        let (reply, answer) = mpsc::channel();
        if !self.send(Command::GroupLoad { key: key(group, topic), reply }) {
            return Err("the connection to NATS has stopped".into());
        }
        let stored = answer
            .recv_timeout(GROUPS_TIMEOUT)
            .unwrap_or_else(|_| Err("JetStream did not answer in time".into()))?;
        let Some((bytes, revision)) = stored else { return Ok(None) };
        let saved: Saved = rmp_serde::from_slice(&bytes)
            .map_err(|e| format!("a stored group state does not decode: {e}"))?;
        if saved.group != group || saved.topic != topic {
            return Err("a stored group state names another group or topic".into());
        }
        Ok(Some((saved, revision)))
    }

    fn save(&mut self, states: Vec<Saved>) -> Vec<Result<u64, String>> {
        let count = states.len();
        let mut encoded = Vec::with_capacity(count);
        for saved in &states {
            match rmp_serde::to_vec_named(saved) {
                Ok(bytes) => encoded.push((key(&saved.group, &saved.topic), bytes.into())),
                Err(error) => {
                    return vec![Err(format!("cannot encode a group state: {error}")); count]
                }
            }
        }
        let (reply, answer) = mpsc::channel();
        if !self.send(Command::GroupSave { states: encoded, reply }) {
            return vec![Err("the connection to NATS has stopped".into()); count];
        }
        answer
            .recv_timeout(GROUPS_TIMEOUT)
            .unwrap_or_else(|_| vec![Err("JetStream did not answer in time".into()); count])
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
