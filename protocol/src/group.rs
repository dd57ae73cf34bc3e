//! Consumer groups on the wire: group names, where a new group starts, where a reset moves it,
//! and the group record `list_groups` returns.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::name::{check_name, NameRule, MAX_NAME_BYTES};

/// The longest group name, in bytes of UTF-8 (the same limit as topic names).
pub const MAX_GROUP_NAME_BYTES: usize = MAX_NAME_BYTES;

/// Why a string is not a valid group name: the rule of [`check_name`] it breaks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("group name {0}")]
pub struct InvalidGroupName(pub NameRule);

/// Checks a group name. The rules are those of topic names: 1 to 249 bytes of UTF-8, no
/// control characters, no leading or trailing white space.
///
/// # Errors
/// Returns the first rule the name breaks.
pub fn validate_group_name(name: &str) -> Result<(), InvalidGroupName> {
    check_name(name).map_err(InvalidGroupName)
}

/// Where a group that does not exist yet on a topic starts reading it (Kafka's
/// `auto.offset.reset`): the `start` field of `join_group`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupStart {
    /// `earliest`: at the topic's first kept message.
    #[default]
    Earliest,
    /// `latest`: at the topic's next offset, so only messages appended from then on.
    Latest,
}

impl GroupStart {
    /// The value sent in the `start` field.
    pub fn name(self) -> &'static str {
        match self {
            GroupStart::Earliest => "earliest",
            GroupStart::Latest => "latest",
        }
    }

    /// The start named `name`, if any.
    pub fn from_name(name: &str) -> Option<GroupStart> {
        match name {
            "earliest" => Some(GroupStart::Earliest),
            "latest" => Some(GroupStart::Latest),
            _ => None,
        }
    }
}

/// Where `reset_group` moves a group's committed offset: the `to` field, and `offset` with
/// `to` = `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// `earliest`: the topic's first kept offset.
    Earliest,
    /// `latest`: the topic's next offset.
    Latest,
    /// `offset`: this offset, which must lie from the first kept to the next offset.
    Offset(u64),
}

impl ResetTo {
    /// The value sent in the `to` field.
    pub fn name(self) -> &'static str {
        match self {
            ResetTo::Earliest => "earliest",
            ResetTo::Latest => "latest",
            ResetTo::Offset(_) => "offset",
        }
    }
}

/// One group's state on one partition of a topic, as `list_groups` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The group's name.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// Every offset below this one is acknowledged: where the group resumes after a restart.
    pub committed_offset: u64,
    /// The next offset never delivered to the group.
    pub delivered_offset: u64,
    /// The topic's next offset.
    pub end_offset: u64,
    /// Messages delivered and not yet acknowledged.
    pub pending: u64,
    /// The logical brokers whose claims have joined the group on this topic, in order.
    pub members: Vec<u32>,
    /// The partition of the topic these offsets are of.
    pub partition: u32,
}

impl GroupInfo {
    /// How many messages the group has yet to acknowledge: the end offset less the committed.
    pub fn lag(&self) -> u64 {
        self.end_offset.saturating_sub(self.committed_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_follow_the_topic_name_rules() {
        for name in ["preparers", "Hola mundo", "a.b-c_d", "über"] {
            assert_eq!(validate_group_name(name), Ok(()), "{name}");
        }
        let refused = |name: &str| validate_group_name(name).map_err(|e| e.to_string());
        assert_eq!(refused(""), Err("group name is empty".into()));
        assert_eq!(
            refused(&"g".repeat(250)),
            Err("group name is 250 bytes long; the limit is 249".into())
        );
        assert_eq!(refused("a\nb"), Err("group name contains the control character '\\n'".into()));
        assert_eq!(refused("g "), Err("group name starts or ends with white space".into()));
    }

    #[test]
    fn starts_round_trip_by_name() {
        for start in [GroupStart::Earliest, GroupStart::Latest] {
            assert_eq!(GroupStart::from_name(start.name()), Some(start));
        }
        assert_eq!(GroupStart::from_name("beginning"), None);
    }
}
