//! Replies the broker sends to clients.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::batch::Batches;
use crate::{headers_size, ErrorCode, GroupInfo, Header};

/// One reply: the `reply` field of a reply frame and the fields that go with it.
///
/// Every request gets exactly one reply, either the success named in PROTOCOL.md for it or
/// [`Response::Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    /// `status brokers`: one entry per logical broker, by id.
    Status {
        /// Each logical broker's state.
        brokers: Vec<BrokerStatus>,
    },
    /// `claimed broker claim lease_ms`: the caller now holds logical broker `broker`.
    Claimed {
        /// The logical broker's id.
        broker: u32,
        /// The token to send with every request under this claim.
        claim: u64,
        /// How long the claim lasts without a request or a `renew`.
        lease_ms: u64,
    },
    /// `renewed broker lease_ms`: the lease starts again from now.
    Renewed {
        /// The logical broker's id.
        broker: u32,
        /// How long the claim now lasts.
        lease_ms: u64,
    },
    /// `released broker`: the logical broker is free again.
    Released {
        /// The logical broker's id.
        broker: u32,
    },
    /// `topics topics`: every topic, ordered by name.
    Topics {
        /// One entry per topic.
        topics: Vec<TopicInfo>,
    },
    /// `messages topic partition messages next_offset end_offset`: what a fetch found.
    Messages {
        /// The topic read.
        topic: &'a str,
        /// The partition read.
        partition: u32,
        /// The messages, in offset order; empty when none was there in time.
        messages: Vec<Message<'a>>,
        /// The offset to fetch from next.
        next_offset: u64,
        /// The topic's next offset when the reply was made (its high-water mark).
        end_offset: u64,
    },
    /// `batches topic partition batches next_offset end_offset`: what a fetch asking for
    /// record batches found, as [`Response::Messages`] but as batches (PROTOCOL.md, "Record
    /// batches").
    Batches {
        /// The topic read.
        topic: &'a str,
        /// The partition read.
        partition: u32,
        /// The messages, as record batches in offset order; empty when none was there in time.
        batches: Batches<'a>,
        /// The offset to fetch from next.
        next_offset: u64,
        /// The topic's next offset when the reply was made (its high-water mark).
        end_offset: u64,
    },
    /// `appended topic partition first_offset last_offset [placed]`: where the messages went.
    Appended {
        /// The topic appended to.
        topic: &'a str,
        /// The partition of the first message.
        partition: u32,
        /// The first message's offset in `partition`.
        first_offset: u64,
        /// The offset of the last message that went to `partition`; the messages there hold
        /// every offset in between.
        last_offset: u64,
        /// When the messages went to several partitions: each one's offsets, by partition.
        /// Empty when they all went to `partition`.
        placed: Vec<Placement>,
    },
    /// `created topic partitions`.
    Created {
        /// The topic created.
        topic: &'a str,
        /// How many partitions it has.
        partitions: u32,
    },
    /// `partitions_created topic partitions`: the topic has more partitions.
    PartitionsCreated {
        /// The topic grown.
        topic: &'a str,
        /// How many partitions it has now.
        partitions: u32,
    },
    /// `deleted topic`.
    Deleted {
        /// The topic deleted.
        topic: &'a str,
    },
    /// `joined group topic committed_offset end_offset members created ack_timeout_ms partitions`: the
    /// claim is now a member of the group on the topic.
    Joined {
        /// The group.
        group: &'a str,
        /// The topic.
        topic: &'a str,
        /// The group's committed offset on the topic.
        committed_offset: u64,
        /// The topic's next offset.
        end_offset: u64,
        /// How many members the group has on the topic, this one included.
        members: u32,
        /// Whether this join created the group on the topic.
        created: bool,
        /// How long a delivered message waits for its acknowledgement before it is delivered
        /// again.
        ack_timeout_ms: u64,
        /// How many partitions the topic has; the offsets above are partition 0's.
        partitions: u32,
    },
    /// `delivered group topic messages redelivered committed_offset end_offset [reset_offset] partition`:
    /// what a group fetch handed to this member.
    Delivered {
        /// The group.
        group: &'a str,
        /// The topic.
        topic: &'a str,
        /// The messages, in offset order; empty when nothing was there in time.
        messages: Vec<Message<'a>>,
        /// The offsets among `messages` that had been delivered before and not acknowledged.
        redelivered: Vec<u64>,
        /// The group's committed offset on the topic.
        committed_offset: u64,
        /// The topic's next offset.
        end_offset: u64,
        /// Where the group was reset to, when it was reset since this member's previous group
        /// fetch: what it reads next does not follow on from what it read before.
        reset_offset: Option<u64>,
        /// The partition every message is of; the offsets above are this partition's.
        partition: u32,
    },
    /// `acked group topic acked committed_offset partition`: the acknowledgements are recorded.
    Acked {
        /// The group.
        group: &'a str,
        /// The topic.
        topic: &'a str,
        /// How many of the offsets were waiting for an acknowledgement (the others had one).
        acked: u64,
        /// The group's committed offset on the topic now.
        committed_offset: u64,
        /// The partition acknowledged.
        partition: u32,
    },
    /// `group_deleted group [topic] [partition]`: the group's state is gone.
    GroupDeleted {
        /// The group.
        group: &'a str,
        /// The one topic whose state went, when the request named one.
        topic: Option<&'a str>,
        /// The one partition whose committed offset went, when the request named one.
        partition: Option<u32>,
    },
    /// `groups groups`: groups on topics, ordered by group, then topic.
    Groups {
        /// One entry per group and topic.
        groups: Vec<GroupInfo>,
    },
    /// `reset group topic committed_offset [partition]`: the group's committed offset was
    /// moved.
    Reset {
        /// The group.
        group: &'a str,
        /// The topic.
        topic: &'a str,
        /// The committed offset now: of `partition`, or of partition 0 when every partition
        /// was reset.
        committed_offset: u64,
        /// The one partition reset; `None` when every partition was.
        partition: Option<u32>,
    },
    /// `error code error reason [first_offset next_offset]`: the request was refused and
    /// changed nothing.
    Error {
        /// Why, as a stable code.
        code: ErrorCode,
        /// Why, as a sentence for people.
        reason: Cow<'a, str>,
        /// For `offset_out_of_range`: the topic's first kept offset and next offset.
        range: Option<(u64, u64)>,
        /// For `unknown_partition`: how many partitions the topic has.
        partitions: Option<u32>,
    },
}

impl<'a> Response<'a> {
    /// An error reply with no offset range.
    pub fn error(code: ErrorCode, reason: impl Into<Cow<'a, str>>) -> Self {
        Response::Error { code, reason: reason.into(), range: None, partitions: None }
    }

    /// The reply's name as sent in the `reply` field.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Status { .. } => "status",
            Response::Claimed { .. } => "claimed",
            Response::Renewed { .. } => "renewed",
            Response::Released { .. } => "released",
            Response::Topics { .. } => "topics",
            Response::Messages { .. } => "messages",
            Response::Batches { .. } => "batches",
            Response::Appended { .. } => "appended",
            Response::Created { .. } => "created",
            Response::PartitionsCreated { .. } => "partitions_created",
            Response::Deleted { .. } => "deleted",
            Response::Joined { .. } => "joined",
            Response::Delivered { .. } => "delivered",
            Response::Acked { .. } => "acked",
            Response::Groups { .. } => "groups",
            Response::GroupDeleted { .. } => "group_deleted",
            Response::Reset { .. } => "reset",
            Response::Error { .. } => "error",
        }
    }
}

/// One logical broker as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerStatus {
    /// The logical broker's id, from 1.
    pub id: u32,
    /// Whether a claim would get it now.
    pub available: bool,
    /// Who holds it (the name the claimant gave, or its peer address), when claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// How long the present claim has left, when claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_remaining_ms: Option<u64>,
    /// How many topics it serves.
    pub topics: u64,
    /// How many messages those topics hold.
    pub messages: u64,
    /// How many bytes of keys and values those messages hold.
    pub bytes: u64,
    /// How many bytes the store takes on disk; absent when it is kept in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
}

/// One topic as `list_topics` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// How many messages it holds now, in all its partitions.
    pub messages: u64,
    /// Partition 0's oldest offset still kept.
    pub first_offset: u64,
    /// The offset the next message appended to partition 0 will get.
    pub next_offset: u64,
    /// How many bytes of keys and values it holds, in all its partitions.
    pub bytes: u64,
    /// How many bytes its files take on disk; absent when it is kept in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// How many partitions it has.
    pub partitions: u32,
    /// Each partition's oldest offset still kept, by partition.
    pub first_offsets: Vec<u64>,
    /// Each partition's next offset, by partition.
    pub next_offsets: Vec<u64>,
    /// The retention limit by count that applies to each partition (the topic's own, or the
    /// broker's); absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_messages: Option<u64>,
    /// The retention limit by bytes that applies to each partition; absent when none does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    /// The retention limit by age, in milliseconds; absent when none applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
}

impl TopicInfo {
    /// Partition `partition`'s first kept and next offsets, if it has that partition.
    pub fn offsets(&self, partition: u32) -> Option<(u64, u64)> {
        let index = usize::try_from(partition).ok()?;
        Some((*self.first_offsets.get(index)?, *self.next_offsets.get(index)?))
    }
}

/// Where the messages of an `append` that reached several partitions went in one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The partition.
    pub partition: u32,
    /// The offset of the first of the append's messages that went there.
    pub first_offset: u64,
    /// The offset of the last of them.
    pub last_offset: u64,
}

/// A stored message as a fetch returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message<'a> {
    /// Its place in the topic: 0, 1, 2, ...
    pub offset: u64,
    /// When the broker appended it, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// The key the producer gave, if any.
    #[serde(borrow, default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a [u8]>,
    /// The payload.
    #[serde(borrow, with = "serde_bytes")]
    pub value: &'a [u8],
    /// Its headers, in the order the producer gave them; empty when it gave none.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header<'a>>,
}

impl Message<'_> {
    /// The bytes this message counts against a fetch's `max_bytes`: key plus value plus the
    /// keys and values of its headers.
    #[inline]
    pub fn size(&self) -> usize {
        self.key.map_or(0, <[u8]>::len) + self.value.len() + headers_size(&self.headers)
    }
}
