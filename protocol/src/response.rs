//! Replies the broker sends to clients.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, GroupInfo};

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
    /// `messages topic messages next_offset end_offset`: what a fetch found.
    Messages {
        /// The topic read.
        topic: &'a str,
        /// The messages, in offset order; empty when none was there in time.
        messages: Vec<Message<'a>>,
        /// The offset to fetch from next.
        next_offset: u64,
        /// The topic's next offset when the reply was made (its high-water mark).
        end_offset: u64,
    },
    /// `appended topic first_offset last_offset`: the offsets given to the messages.
    Appended {
        /// The topic appended to.
        topic: &'a str,
        /// The first message's offset.
        first_offset: u64,
        /// The last message's offset; the messages hold every offset in between.
        last_offset: u64,
    },
    /// `created topic`.
    Created {
        /// The topic created.
        topic: &'a str,
    },
    /// `deleted topic`.
    Deleted {
        /// The topic deleted.
        topic: &'a str,
    },
    /// `joined group topic committed_offset end_offset members created ack_timeout_ms`: the
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
    },
    /// `delivered group topic messages redelivered committed_offset end_offset [reset_offset]`:
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
    },
    /// `acked group topic acked committed_offset`: the acknowledgements are recorded.
    Acked {
        /// The group.
        group: &'a str,
        /// The topic.
        topic: &'a str,
        /// How many of the offsets were waiting for an acknowledgement (the others had one).
        acked: u64,
        /// The group's committed offset on the topic now.
        committed_offset: u64,
    },
    /// `groups groups`: groups on topics, ordered by group, then topic.
    Groups {
        /// One entry per group and topic.
        groups: Vec<GroupInfo>,
    },
    /// `reset group topic committed_offset`: the group's committed offset was moved.
    Reset {
        /// The group.
        group: &'a str,
        /// The topic.
        topic: &'a str,
        /// The committed offset now.
        committed_offset: u64,
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
    },
}

impl<'a> Response<'a> {
    /// An error reply with no offset range.
    pub fn error(code: ErrorCode, reason: impl Into<Cow<'a, str>>) -> Self {
        Response::Error { code, reason: reason.into(), range: None }
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
            Response::Appended { .. } => "appended",
            Response::Created { .. } => "created",
            Response::Deleted { .. } => "deleted",
            Response::Joined { .. } => "joined",
            Response::Delivered { .. } => "delivered",
            Response::Acked { .. } => "acked",
            Response::Groups { .. } => "groups",
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
    /// How many messages it holds now.
    pub messages: u64,
    /// The oldest offset still kept.
    pub first_offset: u64,
    /// The offset the next appended message will get.
    pub next_offset: u64,
    /// How many bytes of keys and values it holds.
    pub bytes: u64,
    /// How many bytes its files take on disk; absent when it is kept in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
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
}
