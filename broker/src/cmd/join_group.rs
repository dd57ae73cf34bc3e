//! `join_group`: make a claim a member of a group on a topic, creating the group's state there.

use crate::quiet::Shown;
use protocol::{GroupStart, Response};

use super::{group_topic, partition_offsets, refuse, Context, Outcome};
use crate::broker::Broker;
use crate::group::Subscription;

/// Makes `claim` a member of `group` on every partition of `topic`, renewing the claim. A group
/// with no state on the topic starts each partition at `start`, as does a partition of its
/// state without a committed offset; partitions the topic gained since the group last read it
/// start at their first offset, so that nothing appended to them is missed.
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
    let offsets = match group_topic(&*broker.store, group, topic)
        .and_then(|partitions| partition_offsets(&*broker.store, topic, partitions))
    {
        Ok(offsets) => offsets,
        Err(refusal) => return Outcome::Reply(refusal),
    };
    let new = broker.groups.state(group, topic).is_none();
    let starts: Vec<u64> = offsets
        .iter()
        .map(|&(first, end)| if new && start == GroupStart::Latest { end } else { first })
        .collect();
    let places: Vec<u64> = offsets
        .iter()
        .map(|&(first, end)| if start == GroupStart::Latest { end } else { first })
        .collect();
    let brokers = &broker.brokers;
    let (created, members) =
        broker.groups.join(group, topic, (claim, id), &starts, &places, |token| {
            brokers.broker_of(token).is_some()
        });
    if created {
        tracing::info!(
            group = %Shown(group),
            topic = %Shown(topic),
            partitions = starts.len(),
            "new group starts at the {} offset of each partition",
            start.name()
        );
    }
    let (first_start, end) =
        (starts.first().copied().unwrap_or(0), offsets.first().map_or(0, |o| o.1));
    Outcome::Reply(Response::Joined {
        group,
        topic,
        committed_offset: broker
            .groups
            .get(group, topic, 0)
            .map_or(first_start, Subscription::committed),
        end_offset: end,
        members: u32::try_from(members).unwrap_or(u32::MAX),
        created,
        ack_timeout_ms: broker.groups.ack_timeout().as_millis() as u64,
        partitions: u32::try_from(offsets.len()).unwrap_or(u32::MAX),
    })
}
