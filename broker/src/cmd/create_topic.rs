//! `create_topic`: make an empty topic of one or more partitions.

use protocol::{Response, Retention};

use super::{refuse, Outcome};
use crate::broker::Broker;

/// Creates `topic`, empty, with `partitions` partitions and its own retention limits.
pub fn apply<'a>(
    broker: &mut Broker,
    topic: &'a str,
    partitions: u32,
    retention: Retention,
) -> Outcome<'a> {
    match broker.store.create(topic, partitions, retention) {
        Ok(()) => Outcome::Reply(Response::Created { topic, partitions }),
        Err(error) => refuse(error),
    }
}
