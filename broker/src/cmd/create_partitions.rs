//! `create_partitions`: grow a topic to more partitions; it never shrinks.

use protocol::Response;

use super::{refuse, Outcome};
use crate::broker::Broker;

/// Grows `topic` to `partitions` partitions in all, the new ones empty. Durable before it is
/// answered: the store makes the new partitions' places and notes the count before it returns.
pub fn apply<'a>(broker: &mut Broker, topic: &'a str, partitions: u32) -> Outcome<'a> {
    match broker.store.grow(topic, partitions) {
        Ok(()) => Outcome::Reply(Response::PartitionsCreated { topic, partitions }),
        Err(error) => refuse(error),
    }
}
