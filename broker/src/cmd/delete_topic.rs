//! `delete_topic`: remove a topic and its messages.

use protocol::Response;

use super::{refuse, Outcome};
use crate::broker::Broker;

/// Deletes `topic` and every group's state on it; the server then answers fetches held on it
/// with `unknown_topic`.
pub fn apply<'a>(broker: &mut Broker, topic: &'a str) -> Outcome<'a> {
    match broker.store.delete(topic) {
        Ok(()) => {
            broker.groups.drop_topic(topic);
            broker.keyless.forget(topic);
            broker.remembered.forget_topic(topic);
            Outcome::Reply(Response::Deleted { topic })
        }
        Err(error) => refuse(error),
    }
}
