//! `list_groups`: groups with their offsets on each partition of each topic; needs no claim.

use protocol::{validate_topic_name, GroupInfo, Response};

use super::{refuse, Outcome};
use crate::broker::Broker;
use crate::group::{self, GroupError};
use crate::store::StoreError;

/// Lists the group states `group` and `topic` select (every one when neither is given), one
/// record per partition.
pub fn apply<'a>(broker: &mut Broker, group: Option<&str>, topic: Option<&str>) -> Outcome<'a> {
    if let Some(Err(error)) = group.map(group::check_name) {
        return refuse(error);
    }
    if let Some(name) = topic {
        if let Err(error) = validate_topic_name(name) {
            return refuse(StoreError::InvalidTopicName(name.to_owned(), error));
        }
    }
    // Groups stored through other broker processes and never read here are listed too.
    broker.groups.take_in_listed(group, topic);
    let states = broker.groups.list(group, topic);
    if let (Some(group), true) = (group, states.is_empty()) {
        return refuse(GroupError::UnknownGroup {
            group: group.to_owned(),
            topic: topic.map(str::to_owned),
        });
    }
    let live = |claim| broker.brokers.broker_of(claim).is_some();
    let groups = states
        .into_iter()
        .map(|(group, topic, partition, state)| GroupInfo {
            group: group.to_owned(),
            topic: topic.to_owned(),
            committed_offset: state.committed(),
            delivered_offset: state.delivered(),
            end_offset: broker
                .store
                .offsets(topic, partition)
                .map_or(state.delivered(), |(_, next)| next),
            pending: state.pending() as u64,
            members: state.member_brokers(live),
            partition,
        })
        .collect();
    Outcome::Reply(Response::Groups { groups })
}
