//! Requests a client sends to the broker.

use serde::{Deserialize, Serialize};

use crate::{GroupStart, ResetTo};

/// One request, the `op` field of a request frame and the fields that go with it.
///
/// PROTOCOL.md, "Requests", gives each variant's fields, types and replies; the line quoted on
/// each variant is its row of the summary table there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// `status` → `status`: describe every logical broker. Needs no claim.
    Status,
    /// `claim [broker] [wait_ms] [client]` → `claimed`: take a free logical broker, or the one named.
    Claim {
        /// The logical broker wanted; `None` takes any free one.
        broker: Option<u32>,
        /// How long to wait for one to free up; 0 answers at once.
        wait_ms: u64,
        /// A name for the claimant that `status` shows as the holder (like Kafka's `client.id`);
        /// at most [`crate::MAX_CLIENT_NAME_BYTES`]. An empty name decodes as `None`.
        client: Option<&'a str>,
    },
    /// `renew claim` → `renewed`: extend a claim's lease.
    Renew {
        /// The claim token from `claimed`.
        claim: u64,
    },
    /// `release claim` → `released`: give the logical broker back.
    Release {
        /// The claim token from `claimed`.
        claim: u64,
    },
    /// `list_topics [claim]` → `topics`: every topic with its offsets.
    ListTopics {
        /// A claim token from `claimed`, renewed by the listing; none is needed.
        claim: Option<u64>,
    },
    /// `fetch claim topic offset [max_messages] [max_bytes] [wait_ms] [partition] [batches]` →
    /// `messages` (`batches` when asked): read messages of a topic.
    Fetch(Fetch<'a>),
    /// `append topic messages [partition] [producer] [sequence]` → `appended`: add messages to a topic, creating it if needed.
    Append(Append<'a>),
    /// `create_topic topic [retention_messages] [retention_bytes] [retention_ms] [partitions]` →
    /// `created`.
    CreateTopic {
        /// The name of the new topic.
        topic: &'a str,
        /// How many partitions it has: 1 to [`crate::MAX_PARTITIONS`]; `None` (not sent) for
        /// the broker's default (`broker --partitions`).
        partitions: Option<u32>,
        /// Limits that override the broker's retention for this topic.
        retention: Retention,
    },
    /// `create_partitions topic partitions` → `partitions_created`: grow a topic to more
    /// partitions.
    CreatePartitions {
        /// The topic to grow.
        topic: &'a str,
        /// How many partitions it has afterwards, in all: more than now, at most
        /// [`crate::MAX_PARTITIONS`].
        partitions: u32,
    },
    /// `delete_topic topic` → `deleted`: remove a topic and its messages.
    DeleteTopic {
        /// The name of the topic to remove.
        topic: &'a str,
    },
    /// `join_group claim group topic [start]` → `joined`: become a member of a group on a topic.
    JoinGroup {
        /// The claim token from `claimed`: the member is the claim.
        claim: u64,
        /// The group's name.
        group: &'a str,
        /// The topic the group reads.
        topic: &'a str,
        /// Where the group starts if this join creates it.
        start: GroupStart,
    },
    /// `group_fetch claim group topic [max_messages] [max_bytes] [wait_ms] [ordered]` → `delivered`.
    GroupFetch(GroupFetch<'a>),
    /// `ack group topic offsets [partition]` → `acked`: acknowledge messages delivered to a
    /// group.
    Ack {
        /// The group's name.
        group: &'a str,
        /// The topic.
        topic: &'a str,
        /// The partition the offsets are of (0 when not sent).
        partition: u32,
        /// The offsets acknowledged; at least one, at most [`crate::MAX_ACK_OFFSETS`].
        offsets: Vec<u64>,
    },
    /// `delete_group group [topic] [partition]` → `group_deleted`: forget a group's committed
    /// offsets.
    DeleteGroup {
        /// The group's name.
        group: &'a str,
        /// Only its state on this topic; `None` forgets every topic's.
        topic: Option<&'a str>,
        /// Only its committed offset on this partition of `topic`; `None` forgets every
        /// partition's.
        partition: Option<u32>,
    },
    /// `list_groups [group] [topic]` → `groups`: groups with their offsets.
    ListGroups {
        /// Only this group.
        group: Option<&'a str>,
        /// Only groups on this topic.
        topic: Option<&'a str>,
    },
    /// `reset_group group topic to [offset] [partition]` → `reset`: move a group's committed
    /// offset.
    ResetGroup {
        /// The group's name.
        group: &'a str,
        /// The topic.
        topic: &'a str,
        /// The one partition to reset; `None` resets every partition of the topic.
        partition: Option<u32>,
        /// Where to.
        to: ResetTo,
    },
}

impl Request<'_> {
    /// The request's name as sent in the `op` field.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Claim { .. } => "claim",
            Request::Renew { .. } => "renew",
            Request::Release { .. } => "release",
            Request::ListTopics { .. } => "list_topics",
            Request::Fetch(_) => "fetch",
            Request::Append(_) => "append",
            Request::CreateTopic { .. } => "create_topic",
            Request::CreatePartitions { .. } => "create_partitions",
            Request::DeleteTopic { .. } => "delete_topic",
            Request::JoinGroup { .. } => "join_group",
            Request::GroupFetch(_) => "group_fetch",
            Request::Ack { .. } => "ack",
            Request::ListGroups { .. } => "list_groups",
            Request::DeleteGroup { .. } => "delete_group",
            Request::ResetGroup { .. } => "reset_group",
        }
    }

    /// The claim token the request carries, if it is one made under a claim.
    pub fn claim(&self) -> Option<u64> {
        match self {
            Request::Renew { claim }
            | Request::Release { claim }
            | Request::JoinGroup { claim, .. } => Some(*claim),
            Request::ListTopics { claim } => *claim,
            Request::Fetch(fetch) => Some(fetch.claim),
            Request::GroupFetch(fetch) => Some(fetch.claim),
            _ => None,
        }
    }
}

/// `fetch`: read messages of a topic from an offset, under a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch<'a> {
    /// The claim token from `claimed`.
    pub claim: u64,
    /// The topic to read.
    pub topic: &'a str,
    /// The partition to read (0 when not sent).
    pub partition: u32,
    /// The first offset wanted.
    pub offset: u64,
    /// At most this many messages (clamped to [`crate::MAX_FETCH_MESSAGES`]).
    pub max_messages: u32,
    /// At most this many bytes of keys and values, but always at least one message.
    pub max_bytes: u32,
    /// When no message is there yet, hold the reply this long for one to arrive.
    pub wait_ms: u64,
    /// Whether the reply may carry the messages as record batches (the reply `batches`, see
    /// [`crate::batch`]) rather than one record each (`messages`).
    pub batches: bool,
}

/// `group_fetch`: take the next messages of a topic for a group member, under its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFetch<'a> {
    /// The claim token of a member of the group (see `join_group`).
    pub claim: u64,
    /// The group's name.
    pub group: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// At most this many messages (clamped to [`crate::MAX_FETCH_MESSAGES`]).
    pub max_messages: u32,
    /// At most this many bytes of keys and values, but always at least one message.
    pub max_bytes: u32,
    /// When nothing is there for the group, hold the reply this long for something to come.
    pub wait_ms: u64,
    /// Hand out no message of a partition while another member holds unacknowledged messages
    /// of it, so that each partition is read in order by one member at a time.
    pub ordered: bool,
}

/// How much of a topic the broker keeps; `None` leaves a limit to the broker's default.
///
/// Old messages go a whole segment at a time, as soon as any one limit lets the oldest segment
/// go (the strictest limit wins), like Kafka's `retention.bytes` and `retention.ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at least this many of the newest messages, and not many more.
    pub messages: Option<u64>,
    /// Keep at least this many bytes of the newest keys and values, and not many more.
    pub bytes: Option<u64>,
    /// Keep messages at least this many milliseconds after they were appended.
    pub ms: Option<u64>,
}

/// `append`: add messages to the end of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append<'a> {
    /// The topic to append to; created if it does not exist.
    pub topic: &'a str,
    /// The partition to append to; `None` lets the broker place each message (by its key's
    /// hash, as Kafka's default partitioner does, or, without a key, on one partition per
    /// append taken in turn).
    pub partition: Option<u32>,
    /// The messages, in order; at least one, at most [`crate::MAX_APPEND_MESSAGES`].
    pub messages: Vec<NewMessage<'a>>,
    /// The idempotent producer that sent it and the append's number among its appends to the
    /// topic: an append sent again with the same pair is stored at most once.
    pub sequenced: Option<Sequenced>,
}

/// An idempotent producer's mark on an append (PROTOCOL.md, "Idempotent appends"): the
/// broker stores an append at most once per producer, topic and sequence, and answers one
/// sent again with the offsets it got the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sequenced {
    /// The producer's id, chosen at random by the producer (64 bits, so that two never meet).
    pub producer: u64,
    /// The append's number among the producer's appends to the topic: a new one for each
    /// append, the same for an append sent again.
    pub sequence: u64,
}

impl Sequenced {
    /// The partition the keyless messages of an append so marked go to among `partitions`,
    /// when it names none: the same through every broker process, so that an append sent
    /// again through another goes where the first went; the next partition for each sequence.
    pub fn keyless_partition(self, partitions: u32) -> u32 {
        let turn = self.producer.wrapping_add(self.sequence) % u64::from(partitions.max(1));
        u32::try_from(turn).unwrap_or_default()
    }
}

/// A message as a producer sends it: the broker adds its offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage<'a> {
    /// An optional key, as in Kafka; stored and returned untouched.
    #[serde(borrow, default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a [u8]>,
    /// The payload.
    #[serde(borrow, with = "serde_bytes")]
    pub value: &'a [u8],
    /// Its headers, in order; empty for most messages, and then not sent.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header<'a>>,
}

impl<'a> NewMessage<'a> {
    /// A message of this key and value, without headers.
    pub const fn new(key: Option<&'a [u8]>, value: &'a [u8]) -> NewMessage<'a> {
        NewMessage { key, value, headers: Vec::new() }
    }

    /// The bytes this message counts against the size limit: key plus value plus the keys and
    /// values of its headers.
    #[inline]
    pub fn size(&self) -> usize {
        self.key.map_or(0, <[u8]>::len) + self.value.len() + headers_size(&self.headers)
    }
}

/// One header of a message, as Kafka's record headers: a key of UTF-8 and a value that may be
/// absent (Kafka's null). A message's headers are a list, not a map: a key may come more than
/// once, and their order is kept. Through serde it is the pair `[key, value]`, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// The header's name.
    pub key: &'a str,
    /// Its value; `None` is Kafka's null, not an empty value.
    pub value: Option<&'a [u8]>,
}

impl Serialize for Header<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.key, self.value.map(serde_bytes::Bytes::new)).serialize(serializer)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Header<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (key, value): (&'a str, Option<&'a serde_bytes::Bytes>) =
            Deserialize::deserialize(deserializer)?;
        Ok(Header { key, value: value.map(|v| &**v) })
    }
}

/// The bytes `headers` count in a message's size: their keys and values.
#[inline]
pub fn headers_size(headers: &[Header<'_>]) -> usize {
    headers.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len)).sum()
}
