//! The one rule for moving a consumer group's committed offset, shared by `consumer
//! group-reset` and the web console: a group being read is not moved under its members unless
//! asked to be.

use protocol::{ErrorCode, ResetTo};

use crate::{Client, ClientError, Result};

/// Moves `group`'s committed offset on `topic` (on `partition`, or on every partition when
/// `None`) and returns it (partition 0's when every partition moved). Unless `force`, first asks the
/// broker for the group's members on the topic and refuses while it has any, as Kafka's tool
/// refuses to reset an active group: a reset under them changes what they read next.
///
/// # Errors
/// [`ClientError::GroupActive`]; the broker refused (no such topic, an offset out of range) or
/// did not answer.
pub fn reset_unless_active(
    client: &mut Client,
    group: &str,
    topic: &str,
    partition: Option<u32>,
    to: ResetTo,
    force: bool,
) -> Result<u64> {
    if !force {
        let mut members: Vec<u32> = match client.list_groups(Some(group), Some(topic)) {
            // One record per partition, each naming the members.
            Ok(groups) => groups.into_iter().flat_map(|g| g.members).collect(),
            // No state yet: nobody reads it.
            Err(e) if e.broker_code() == Some(ErrorCode::UnknownGroup) => Vec::new(),
            Err(e) => return Err(e),
        };
        members.sort_unstable();
        members.dedup();
        if !members.is_empty() {
            return Err(ClientError::GroupActive {
                group: group.to_owned(),
                topic: topic.to_owned(),
                members,
            });
        }
    }
    client.reset_group(group, topic, partition, to)
}
