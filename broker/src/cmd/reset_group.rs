//! `reset_group`: move a group's committed offset on a topic; needs no claim.

use protocol::{ResetTo, Response};

use super::{group_topic, partition_offsets, refuse, Outcome};
use crate::broker::Broker;
use crate::store::StoreError;

/// Moves `group`'s committed offset on `partition` of `topic` (on every partition when `None`)
/// to `to`, creating its state there if needed (the other partitions without a committed
/// offset, when one is named). Every partition is checked before any moves.
pub fn apply<'a>(
    broker: &mut Broker,
    group: &'a str,
    topic: &'a str,
    partition: Option<u32>,
    to: ResetTo,
) -> Outcome<'a> {
    let offsets = match group_topic(&*broker.store, group, topic)
        .and_then(|partitions| partition_offsets(&*broker.store, topic, partitions))
    {
        Ok(offsets) => offsets,
        Err(refusal) => return Outcome::Reply(refusal),
    };
    let count = u32::try_from(offsets.len()).unwrap_or(u32::MAX);
    let chosen: Vec<u32> = match partition {
        Some(partition) if partition < count => vec![partition],
        Some(partition) => {
            return refuse(StoreError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: count,
            })
        }
        None => (0..count).collect(),
    };
    let mut targets = Vec::with_capacity(chosen.len());
    for partition in chosen {
        let (first, end) = offsets[partition as usize];
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
        targets.push((partition, offset));
    }
    let starts: Vec<u64> = offsets.iter().map(|&(first, _)| first).collect();
    if partition.is_some() {
        broker.groups.ensure_unplaced(group, topic, &starts);
    } else {
        broker.groups.ensure(group, topic, &starts);
    }
    for &(partition, offset) in &targets {
        broker.groups.reset(group, topic, partition, offset);
    }
    let committed_offset = targets.first().map_or(0, |&(_, offset)| offset);
    Outcome::Reply(Response::Reset { group, topic, committed_offset, partition })
}
