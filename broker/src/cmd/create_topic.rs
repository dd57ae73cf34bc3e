//! `create_topic`: make an empty topic.

use protocol::{Response, Retention};

use super::{refuse, Outcome};
use crate::broker::Broker;

/// Creates `topic`, empty, with its own retention limits.
pub fn apply<'a>(broker: &mut Broker, topic: &'a str, retention: Retention) -> Outcome<'a> {
    match broker.store.create(topic, retention) {
        Ok(()) => Outcome::Reply(Response::Created { topic }),
        Err(error) => refuse(error),
    }
}
