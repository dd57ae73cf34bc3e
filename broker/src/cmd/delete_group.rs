//! `delete_group`: forget a group's state on one topic or on all, or its committed offset on
//! one partition; needs no claim.

use protocol::{validate_topic_name, Response};

use super::{refuse, Outcome};
use crate::broker::Broker;
use crate::group;
use crate::store::StoreError;

/// Forgets `group`'s state on `topic` (on every topic when `None`), or only its committed
/// offset on `partition` of `topic`, unless it has members there: then nothing changes.
pub fn apply<'a>(
    broker: &mut Broker,
    group: &'a str,
    topic: Option<&'a str>,
    partition: Option<u32>,
) -> Outcome<'a> {
    if let Err(error) = group::check_name(group) {
        return refuse(error);
    }
    if let Some(name) = topic {
        if let Err(error) = validate_topic_name(name) {
            return refuse(StoreError::InvalidTopicName(name.to_owned(), error));
        }
    }
    let forgotten = match (topic, partition) {
        (Some(topic), Some(partition)) => {
            if broker.groups.state(group, topic).is_none() {
                return refuse(group::GroupError::UnknownGroup {
                    group: group.to_owned(),
                    topic: Some(topic.to_owned()),
                });
            }
            match broker.store.offsets(topic, partition) {
                Ok((first, _)) => Some((partition, first)),
                Err(error) => return refuse(error),
            }
        }
        _ => None,
    };
    let live = |claim| broker.brokers.broker_of(claim).is_some();
    match broker.groups.delete(group, topic, forgotten, live) {
        Ok(()) => Outcome::Reply(Response::GroupDeleted { group, topic, partition }),
        Err(error) => refuse(error),
    }
}
