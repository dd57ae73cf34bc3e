//! Status codes carried by error replies.

use std::fmt;

/// Why the broker refused a request: the `code` and `error` fields of an error reply.
///
/// Codes follow two classes (PROTOCOL.md, "Status codes"): `3xx` means the request was well
/// formed but the broker's present state refuses it, so the same request may succeed later;
/// `5xx` means the request itself is wrong and will fail again unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `300 no_broker_available`: every logical broker is claimed.
    NoBrokerAvailable,
    /// `301 broker_busy`: the logical broker asked for by id is claimed by someone else.
    BrokerBusy,
    /// `302 unknown_claim`: the claim token is not one the broker holds (never given, released
    /// or expired).
    UnknownClaim,
    /// `303 unknown_topic`: no topic of that name exists.
    UnknownTopic,
    /// `304 offset_out_of_range`: the offset is below the first kept or above the next offset.
    OffsetOutOfRange,
    /// `305 topic_exists`: `create_topic` named a topic that exists.
    TopicExists,
    /// `306 unknown_broker`: no logical broker has that id.
    UnknownBroker,
    /// `307 shutting_down`: the broker is stopping and takes no more work.
    ShuttingDown,
    /// `308 unknown_group`: the group has no state on that topic (never joined nor reset).
    UnknownGroup,
    /// `309 unknown_member`: the claim has not joined the group on that topic.
    UnknownMember,
    /// `310 not_pending`: an offset acknowledged is not one the group was delivered.
    NotPending,
    /// `311 overloaded`: replies the client has not read hold more memory than the broker
    /// allows it (or all clients together); read them, or try again later.
    Overloaded,
    /// `312 forbidden`: the user the connection logged in as lacks the permission the request
    /// needs, or the claim it uses belongs to another user (PROTOCOL.md, "Security").
    Forbidden,
    /// `313 storage_full`: the append would take the store past its ceiling (`--max-memory`,
    /// `--max-disk`); nothing was appended. Retention, or deleted topics, make room again.
    StorageFull,
    /// `314 store_unavailable`: the store the broker shares with other broker processes (a
    /// NATS JetStream) could not be reached, or did not confirm in time, or another broker
    /// process changed the same group's state at the same moment; the reason says whether
    /// nothing was done or whether an append may have been stored all the same. The same
    /// request may succeed when sent again.
    StoreUnavailable,
    /// `315 unknown_partition`: the topic has no partition of that number; the reply says how
    /// many it has. A topic may grow, so the same request may succeed later.
    UnknownPartition,
    /// `316 group_active`: `delete_group` named a group with members on a topic it would
    /// forget; they must leave (release their claims) first.
    GroupActive,
    /// `317 in_progress`: an append of the same idempotent producer and sequence is still
    /// being stored; nothing was done. Sent again once it settled, the same append is answered
    /// with its offsets, or stored if it was not.
    InProgress,
    /// `500 malformed`: the frame is not a request (bad envelope, not MessagePack, a key twice
    /// or not UTF-8, a map of too many entries, a missing or mistyped field).
    Malformed,
    /// `501 unknown_request`: the `op` names no request this version knows.
    UnknownRequest,
    /// `502 internal_error`: the broker failed to carry out a valid request (a failed write).
    InternalError,
    /// `505 unsupported_version`: the frame's `v` is not a version the broker speaks.
    UnsupportedVersion,
    /// `513 message_too_large`: a message's key and value exceed the broker's limit.
    MessageTooLarge,
    /// `514 invalid_topic_name`: the topic name breaks the naming rules.
    InvalidTopicName,
    /// `515 invalid_group_name`: the group name breaks the naming rules.
    InvalidGroupName,
    /// `516 limit_exceeded`: a field of the request is longer than its limit (a `client` name,
    /// the messages of an `append`, the offsets of an `ack`; PROTOCOL.md, "Limits").
    LimitExceeded,
    /// `517 invalid_partitions`: a partition count of 0 or above [`crate::MAX_PARTITIONS`], or,
    /// to grow a topic, not more than it has.
    InvalidPartitions,
}

impl ErrorCode {
    /// Every code, in the order of the table in PROTOCOL.md.
    pub const ALL: [ErrorCode; 27] = [
        ErrorCode::NoBrokerAvailable,
        ErrorCode::BrokerBusy,
        ErrorCode::UnknownClaim,
        ErrorCode::UnknownTopic,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::TopicExists,
        ErrorCode::UnknownBroker,
        ErrorCode::ShuttingDown,
        ErrorCode::UnknownGroup,
        ErrorCode::UnknownMember,
        ErrorCode::NotPending,
        ErrorCode::Overloaded,
        ErrorCode::Forbidden,
        ErrorCode::StorageFull,
        ErrorCode::StoreUnavailable,
        ErrorCode::UnknownPartition,
        ErrorCode::GroupActive,
        ErrorCode::InProgress,
        ErrorCode::Malformed,
        ErrorCode::UnknownRequest,
        ErrorCode::InternalError,
        ErrorCode::UnsupportedVersion,
        ErrorCode::MessageTooLarge,
        ErrorCode::InvalidTopicName,
        ErrorCode::InvalidGroupName,
        ErrorCode::LimitExceeded,
        ErrorCode::InvalidPartitions,
    ];

    /// The numeric status code sent as `code`.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::NoBrokerAvailable => 300,
            ErrorCode::BrokerBusy => 301,
            ErrorCode::UnknownClaim => 302,
            ErrorCode::UnknownTopic => 303,
            ErrorCode::OffsetOutOfRange => 304,
            ErrorCode::TopicExists => 305,
            ErrorCode::UnknownBroker => 306,
            ErrorCode::ShuttingDown => 307,
            ErrorCode::UnknownGroup => 308,
            ErrorCode::UnknownMember => 309,
            ErrorCode::NotPending => 310,
            ErrorCode::Overloaded => 311,
            ErrorCode::Forbidden => 312,
            ErrorCode::StorageFull => 313,
            ErrorCode::StoreUnavailable => 314,
            ErrorCode::UnknownPartition => 315,
            ErrorCode::GroupActive => 316,
            ErrorCode::InProgress => 317,
            ErrorCode::Malformed => 500,
            ErrorCode::UnknownRequest => 501,
            ErrorCode::InternalError => 502,
            ErrorCode::UnsupportedVersion => 505,
            ErrorCode::MessageTooLarge => 513,
            ErrorCode::InvalidTopicName => 514,
            ErrorCode::InvalidGroupName => 515,
            ErrorCode::LimitExceeded => 516,
            ErrorCode::InvalidPartitions => 517,
        }
    }

    /// The stable name sent as `error`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NoBrokerAvailable => "no_broker_available",
            ErrorCode::BrokerBusy => "broker_busy",
            ErrorCode::UnknownClaim => "unknown_claim",
            ErrorCode::UnknownTopic => "unknown_topic",
            ErrorCode::OffsetOutOfRange => "offset_out_of_range",
            ErrorCode::TopicExists => "topic_exists",
            ErrorCode::UnknownBroker => "unknown_broker",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::UnknownGroup => "unknown_group",
            ErrorCode::UnknownMember => "unknown_member",
            ErrorCode::NotPending => "not_pending",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::UnknownPartition => "unknown_partition",
            ErrorCode::GroupActive => "group_active",
            ErrorCode::InProgress => "in_progress",
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::InvalidTopicName => "invalid_topic_name",
            ErrorCode::InvalidGroupName => "invalid_group_name",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::InvalidPartitions => "invalid_partitions",
        }
    }

    /// The code with this numeric value, if any.
    pub fn from_code(code: u16) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Whether the same request may succeed later (a `3xx` code).
    pub fn is_transient(self) -> bool {
        self.code() < 500
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_and_names_are_unique_and_round_trip() {
        let codes: HashSet<u16> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        let names: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
        }
        assert_eq!(ErrorCode::from_code(200), None);
    }
}
