//! `create_topic`: make an empty topic.

use protocol::Response;

use super::{refuse, Outcome};
use crate::broker::Broker;

/// Creates `topic`, empty.
pub fn apply<'a>(broker: &mut Broker, topic: &'a str) -> Outcome<'a> {
    match broker.store.create(topic) {
        Ok(()) => Outcome::Reply(Response::Created { topic }),
        Err(error) => refuse(error),
    }
}
