//! `ack`: acknowledge messages delivered to a group; needs no claim.

use protocol::Response;

use super::{check_names, refuse, Outcome};
use crate::broker::Broker;
use crate::group::{GroupError, NotDelivered};
use crate::store::StoreError;

/// Acknowledges `offsets` of `partition` of `topic` for `group`, all or none.
pub fn apply<'a>(
    broker: &mut Broker,
    group: &'a str,
    topic: &'a str,
    partition: u32,
    offsets: &[u64],
) -> Outcome<'a> {
    if let Err(refusal) = check_names(group, topic) {
        return Outcome::Reply(refusal);
    }
    let Some(states) = broker.groups.state(group, topic) else {
        return refuse(GroupError::UnknownGroup {
            group: group.to_owned(),
            topic: Some(topic.to_owned()),
        });
    };
    let Some(state) = states.get(partition as usize) else {
        // The group reads every partition the topic has had since it last fetched; one beyond
        // those is one the topic lacks, or one no message of was ever delivered to the group.
        let partitions = broker.store.partitions(topic).unwrap_or(0);
        if partition < partitions {
            let delivered = 0;
            let offset = offsets.iter().copied().min().unwrap_or(0);
            return refuse(GroupError::NotPending {
                group: group.to_owned(),
                topic: topic.to_owned(),
                offset,
                delivered,
            });
        }
        return refuse(StoreError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
            partitions,
        });
    };
    if let Err(NotDelivered { offset, delivered }) = state.check_ack(offsets) {
        return refuse(GroupError::NotPending {
            group: group.to_owned(),
            topic: topic.to_owned(),
            offset,
            delivered,
        });
    }
    let acked = if state.count_pending(offsets) > 0 {
        // Checked above: every offset was delivered, so the acknowledgement cannot be refused.
        broker
            .groups
            .update(group, topic, partition, |s| s.ack(offsets))
            .and_then(Result::ok)
            .unwrap_or(0)
    } else {
        0
    };
    let committed_offset = broker.groups.get(group, topic, partition).map_or(0, |s| s.committed());
    Outcome::Reply(Response::Acked { group, topic, acked, committed_offset, partition })
}
