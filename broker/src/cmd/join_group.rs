//! `join_group`: make a claim a member of a group on a topic, creating the group's state there.

use crate::quiet::Shown;
use protocol::{GroupStart, Response};

use super::{group_topic, refuse, Context, Outcome};
use crate::broker::Broker;
use crate::group::Subscription;

/// Makes `claim` a member of `group` on `topic`, renewing the claim. A group with no state on
/// the topic starts at `start`.
pub fn apply<'a>(
    broker: &mut Broker,
    claim: u64,
    group: &'a str,
    topic: &'a str,
    start: GroupStart,
    cx: &Context<'_>,
) -> Outcome<'a> {
    let id = match broker.brokers.renew(claim, cx.now, cx.now) {
        Ok(id) => id,
        Err(error) => return refuse(error),
    };
    let (first, end) = match group_topic(&*broker.store, group, topic) {
        Ok(range) => range,
        Err(refusal) => return Outcome::Reply(refusal),
    };
    let offset = match start {
        GroupStart::Earliest => first,
        GroupStart::Latest => end,
    };
    let brokers = &broker.brokers;
    let (created, members) = broker
        .groups
        .join(group, topic, (claim, id), offset, |token| brokers.broker_of(token).is_some());
    if created {
        tracing::info!(group = %Shown(group), topic = %Shown(topic), "new group starts at offset {offset}");
    }
    Outcome::Reply(Response::Joined {
        group,
        topic,
        committed_offset: broker.groups.get(group, topic).map_or(offset, Subscription::committed),
        end_offset: end,
        members: u32::try_from(members).unwrap_or(u32::MAX),
        partitions: broker.store.partitions(topic).unwrap_or(1),
        created,
        ack_timeout_ms: broker.groups.ack_timeout().as_millis() as u64,
    })
}
