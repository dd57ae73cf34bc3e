//! Wire types of the broker's request/reply protocol and their MessagePack encoding.
//!
//! A client sends one frame holding a [`Request`]; the broker answers with one frame holding a
//! [`Response`]. [`codec`] turns both into bytes and back. `PROTOCOL.md` beside this crate is the
//! normative description; every type here quotes the part of it that it implements.
//!
//! This crate knows nothing of sockets: it is shared by the broker, the clients and their tests.

pub mod batch;
pub mod codec;
pub mod endpoint;
pub mod error;
pub mod fields;
pub mod group;
pub mod limits;
mod msgpack;
pub mod name;
pub mod partition;
pub mod request;
pub mod response;
pub mod topic;

pub use codec::{
    decode_request, decode_request_with_id, decode_response, encode_request,
    encode_request_with_id, encode_request_with_origin, encode_response, encode_response_with_id,
    frame_id, frame_origin, DecodeError,
};
pub use error::ErrorCode;
pub use group::{
    validate_group_name, GroupInfo, GroupStart, InvalidGroupName, ResetTo, MAX_GROUP_NAME_BYTES,
};
pub use limits::{
    excerpt, is_valid_origin, MAX_ACK_OFFSETS, MAX_APPEND_MESSAGES, MAX_CLIENT_NAME_BYTES,
    MAX_HEADER_KEY_BYTES, MAX_MAP_ENTRIES, MAX_MESSAGE_HEADERS, MAX_ORIGIN_BYTES,
};
pub use partition::{murmur2, partition_for_key, MAX_PARTITIONS};
pub use request::{
    headers_size, Append, Fetch, GroupFetch, Header, NewMessage, Request, Retention, Sequenced,
};
pub use response::{BrokerStatus, Message, Placement, Response, TopicInfo};
pub use topic::{validate_topic_name, InvalidTopicName, MAX_TOPIC_NAME_BYTES};

/// The protocol version this crate speaks; carried in every frame as `v`.
pub const VERSION: u32 = 1;

/// Where the broker listens and the clients connect unless told otherwise.
pub const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:5555";

/// The largest message value plus key the broker accepts unless configured otherwise (1 MiB,
/// Kafka's default `message.max.bytes` is of the same order).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

/// How many messages a fetch returns when the request does not say.
pub const DEFAULT_FETCH_MESSAGES: u32 = 500;

/// How many bytes of values and keys a fetch returns when the request does not say.
pub const DEFAULT_FETCH_BYTES: u32 = 1 << 20;

/// The most messages one fetch can return, whatever the request asks for.
pub const MAX_FETCH_MESSAGES: u32 = 10_000;

/// The most bytes of values and keys one fetch returns, whatever the request asks for.
pub const MAX_FETCH_BYTES: u32 = 16 << 20;

/// The longest a fetch or a claim may ask the broker to hold its reply, in milliseconds.
pub const MAX_WAIT_MS: u64 = 60_000;
