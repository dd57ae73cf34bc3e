//! `reset_group`: move a group's committed offset on a topic; needs no claim.

use protocol::{ResetTo, Response};

use super::{group_topic, refuse, Outcome};
use crate::broker::Broker;
use crate::store::StoreError;

/// Moves `group`'s committed offset on `topic` to `to`, creating its state there if needed.
pub fn apply<'a>(broker: &mut Broker, group: &'a str, topic: &'a str, to: ResetTo) -> Outcome<'a> {
    let (first, end) = match group_topic(&*broker.store, group, topic) {
        Ok(range) => range,
        Err(refusal) => return Outcome::Reply(refusal),
    };
    let offset = match to {
        ResetTo::Earliest => first,
        ResetTo::Latest => end,
        ResetTo::Offset(offset) if (first..=end).contains(&offset) => offset,
        ResetTo::Offset(offset) => {
            return refuse(StoreError::OffsetOutOfRange {
                topic: topic.to_owned(),
                offset,
                first,
                next: end,
            })
        }
    };
    broker.groups.reset(group, topic, offset);
    Outcome::Reply(Response::Reset { group, topic, committed_offset: offset, partition: None })
}
