//! `delete_group`: forget a group's state on one topic or on all; needs no claim.

use protocol::{validate_topic_name, Response};

use super::{refuse, Outcome};
use crate::broker::Broker;
use crate::group;
use crate::store::StoreError;

/// Forgets `group`'s state on `topic` (on every topic when `None`), unless it has members
/// there: then nothing changes.
pub fn apply<'a>(broker: &mut Broker, group: &'a str, topic: Option<&'a str>) -> Outcome<'a> {
    if let Err(error) = group::check_name(group) {
        return refuse(error);
    }
    if let Some(name) = topic {
        if let Err(error) = validate_topic_name(name) {
            return refuse(StoreError::InvalidTopicName(name.to_owned(), error));
        }
    }
    let live = |claim| broker.brokers.broker_of(claim).is_some();
    match broker.groups.delete(group, topic, live) {
        Ok(()) => Outcome::Reply(Response::GroupDeleted { group, topic }),
        Err(error) => refuse(error),
    }
}
