//! The MessagePack encoding of requests and replies.
//!
//! On the wire both are one flat MessagePack map with string keys (PROTOCOL.md, "Encoding").
//! Decoding goes through a struct of optional fields, one per key any message may carry, so that
//! keys may come in any order, unknown keys are ignored, and nothing is buffered or copied:
//! strings and byte strings are borrowed from the frame. Each message's required fields are then
//! checked, giving errors that name the field.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    Append, BrokerStatus, ErrorCode, Fetch, GroupFetch, GroupInfo, GroupStart, Message, NewMessage,
    Request, ResetTo, Response, Retention, TopicInfo, DEFAULT_FETCH_BYTES, DEFAULT_FETCH_MESSAGES,
    VERSION,
};

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The frame is not a MessagePack map of the expected fields.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The frame's `v` is a version this crate does not speak.
    #[error("protocol version {0} is not supported; this side speaks version {VERSION}")]
    UnsupportedVersion(u32),
    /// The frame's `op` (or `reply`) names nothing this version knows.
    #[error("unknown request `{0}`")]
    UnknownRequest(String),
}

impl DecodeError {
    /// The status code an error reply to this frame carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Malformed(_) => ErrorCode::Malformed,
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::UnknownRequest(_) => ErrorCode::UnknownRequest,
        }
    }
}

/// Every field a request frame may carry.
#[derive(Default, Serialize, Deserialize)]
struct WireRequest<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<u32>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    op: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claim: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    broker: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wait_ms: Option<u64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    client: Option<&'a str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_messages: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_bytes: Option<u32>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    messages: Option<Cow<'a, [NewMessage<'a>]>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention_messages: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention_ms: Option<u64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    start: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offsets: Option<Cow<'a, [u64]>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
}

/// Every field a reply frame may carry.
#[derive(Default, Serialize, Deserialize)]
struct WireResponse<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    reply: Option<&'a str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    reason: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    brokers: Option<Vec<BrokerStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    broker: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claim: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topics: Option<Vec<TopicInfo>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<Message<'a>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_offset: Option<u64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    committed_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    members: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ack_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redelivered: Option<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acked: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<GroupInfo>>,
}

/// Appends the encoding of `request` to `out`.
pub fn encode_request(request: &Request<'_>, out: &mut Vec<u8>) {
    let mut wire = WireRequest { v: Some(VERSION), op: Some(request.op()), ..Default::default() };
    match request {
        Request::Status => {}
        Request::Claim { broker, wait_ms, client } => {
            wire.broker = *broker;
            wire.wait_ms = Some(*wait_ms);
            wire.client = *client;
        }
        Request::Renew { claim } | Request::Release { claim } | Request::ListTopics { claim } => {
            wire.claim = Some(*claim);
        }
        Request::Fetch(fetch) => {
            wire.claim = Some(fetch.claim);
            wire.topic = Some(fetch.topic);
            wire.offset = Some(fetch.offset);
            wire.max_messages = Some(fetch.max_messages);
            wire.max_bytes = Some(fetch.max_bytes);
            wire.wait_ms = Some(fetch.wait_ms);
        }
        Request::Append(append) => {
            wire.topic = Some(append.topic);
            wire.messages = Some(Cow::Borrowed(&append.messages));
        }
        Request::CreateTopic { topic, retention } => {
            wire.topic = Some(topic);
            wire.retention_messages = retention.messages;
            wire.retention_bytes = retention.bytes;
            wire.retention_ms = retention.ms;
        }
        Request::DeleteTopic { topic } => wire.topic = Some(topic),
        Request::JoinGroup { claim, group, topic, start } => {
            wire.claim = Some(*claim);
            wire.group = Some(group);
            wire.topic = Some(topic);
            wire.start = Some(start.name());
        }
        Request::GroupFetch(fetch) => {
            wire.claim = Some(fetch.claim);
            wire.group = Some(fetch.group);
            wire.topic = Some(fetch.topic);
            wire.max_messages = Some(fetch.max_messages);
            wire.max_bytes = Some(fetch.max_bytes);
            wire.wait_ms = Some(fetch.wait_ms);
        }
        Request::Ack { group, topic, offsets } => {
            wire.group = Some(group);
            wire.topic = Some(topic);
            wire.offsets = Some(Cow::Borrowed(offsets));
        }
        Request::ListGroups { group, topic } => {
            wire.group = *group;
            wire.topic = *topic;
        }
        Request::ResetGroup { group, topic, to } => {
            wire.group = Some(group);
            wire.topic = Some(topic);
            wire.to = Some(to.name());
            if let ResetTo::Offset(offset) = to {
                wire.offset = Some(*offset);
            }
        }
    }
    write(&wire, out);
}

/// Decodes one request frame, borrowing its strings and byte strings.
///
/// # Errors
/// [`DecodeError::Malformed`] when the frame is not a map or a field is missing or mistyped,
/// [`DecodeError::UnsupportedVersion`] for another `v`, [`DecodeError::UnknownRequest`] for an
/// `op` this version does not know.
pub fn decode_request(frame: &[u8]) -> Result<Request<'_>, DecodeError> {
    let wire: WireRequest<'_> = read(frame)?;
    check_version(wire.v)?;
    let op = wire.op.ok_or_else(|| missing("request", "op"))?;
    let need = |value: Option<u64>, field: &'static str| value.ok_or_else(|| missing(op, field));
    let topic = || wire.topic.ok_or_else(|| missing(op, "topic"));
    let group = || wire.group.ok_or_else(|| missing(op, "group"));
    let request = match op {
        "status" => Request::Status,
        "claim" => Request::Claim {
            broker: wire.broker,
            wait_ms: wire.wait_ms.unwrap_or(0),
            client: wire.client,
        },
        "renew" => Request::Renew { claim: need(wire.claim, "claim")? },
        "release" => Request::Release { claim: need(wire.claim, "claim")? },
        "list_topics" => Request::ListTopics { claim: need(wire.claim, "claim")? },
        "fetch" => Request::Fetch(Fetch {
            claim: need(wire.claim, "claim")?,
            topic: topic()?,
            offset: need(wire.offset, "offset")?,
            max_messages: wire.max_messages.unwrap_or(DEFAULT_FETCH_MESSAGES),
            max_bytes: wire.max_bytes.unwrap_or(DEFAULT_FETCH_BYTES),
            wait_ms: wire.wait_ms.unwrap_or(0),
        }),
        "append" => {
            let topic = topic()?;
            let messages = wire.messages.ok_or_else(|| missing(op, "messages"))?.into_owned();
            if messages.is_empty() {
                return Err(DecodeError::Malformed("append needs at least one message".into()));
            }
            Request::Append(Append { topic, messages })
        }
        "create_topic" => Request::CreateTopic {
            topic: topic()?,
            retention: Retention {
                messages: wire.retention_messages,
                bytes: wire.retention_bytes,
                ms: wire.retention_ms,
            },
        },
        "delete_topic" => Request::DeleteTopic { topic: topic()? },
        "join_group" => Request::JoinGroup {
            claim: need(wire.claim, "claim")?,
            group: group()?,
            topic: topic()?,
            start: match wire.start {
                None => GroupStart::default(),
                Some(name) => GroupStart::from_name(name).ok_or_else(|| {
                    DecodeError::Malformed(format!(
                        "join_group's `start` is `earliest` or `latest`, not {name:?}"
                    ))
                })?,
            },
        },
        "group_fetch" => Request::GroupFetch(GroupFetch {
            claim: need(wire.claim, "claim")?,
            group: group()?,
            topic: topic()?,
            max_messages: wire.max_messages.unwrap_or(DEFAULT_FETCH_MESSAGES),
            max_bytes: wire.max_bytes.unwrap_or(DEFAULT_FETCH_BYTES),
            wait_ms: wire.wait_ms.unwrap_or(0),
        }),
        "ack" => {
            let (group, topic) = (group()?, topic()?);
            let offsets = wire.offsets.ok_or_else(|| missing(op, "offsets"))?.into_owned();
            if offsets.is_empty() {
                return Err(DecodeError::Malformed("ack needs at least one offset".into()));
            }
            Request::Ack { group, topic, offsets }
        }
        "list_groups" => Request::ListGroups { group: wire.group, topic: wire.topic },
        "reset_group" => Request::ResetGroup {
            group: group()?,
            topic: topic()?,
            to: match wire.to.ok_or_else(|| missing(op, "to"))? {
                "earliest" => ResetTo::Earliest,
                "latest" => ResetTo::Latest,
                "offset" => ResetTo::Offset(need(wire.offset, "offset")?),
                other => {
                    return Err(DecodeError::Malformed(format!(
                        "reset_group's `to` is `earliest`, `latest` or `offset`, not {other:?}"
                    )))
                }
            },
        },
        other => return Err(DecodeError::UnknownRequest(other.to_owned())),
    };
    Ok(request)
}

/// Appends the encoding of `response` to `out`. Takes the reply by value so that its lists move
/// into the encoder instead of being copied.
pub fn encode_response(response: Response<'_>, out: &mut Vec<u8>) {
    let mut wire = WireResponse {
        v: Some(VERSION),
        code: Some(200),
        reply: Some(response.name()),
        ..Default::default()
    };
    match response {
        Response::Status { brokers } => wire.brokers = Some(brokers),
        Response::Claimed { broker, claim, lease_ms } => {
            wire.broker = Some(broker);
            wire.claim = Some(claim);
            wire.lease_ms = Some(lease_ms);
        }
        Response::Renewed { broker, lease_ms } => {
            wire.broker = Some(broker);
            wire.lease_ms = Some(lease_ms);
        }
        Response::Released { broker } => wire.broker = Some(broker),
        Response::Topics { topics } => wire.topics = Some(topics),
        Response::Messages { topic, messages, next_offset, end_offset } => {
            wire.topic = Some(topic);
            wire.messages = Some(messages);
            wire.next_offset = Some(next_offset);
            wire.end_offset = Some(end_offset);
        }
        Response::Appended { topic, first_offset, last_offset } => {
            wire.topic = Some(topic);
            wire.first_offset = Some(first_offset);
            wire.last_offset = Some(last_offset);
        }
        Response::Created { topic } | Response::Deleted { topic } => wire.topic = Some(topic),
        Response::Joined {
            group,
            topic,
            committed_offset,
            end_offset,
            members,
            created,
            ack_timeout_ms,
        } => {
            wire.group = Some(group);
            wire.topic = Some(topic);
            wire.committed_offset = Some(committed_offset);
            wire.end_offset = Some(end_offset);
            wire.members = Some(members);
            wire.created = Some(created);
            wire.ack_timeout_ms = Some(ack_timeout_ms);
        }
        Response::Delivered {
            group,
            topic,
            messages,
            redelivered,
            committed_offset,
            end_offset,
        } => {
            wire.group = Some(group);
            wire.topic = Some(topic);
            wire.messages = Some(messages);
            wire.redelivered = Some(redelivered);
            wire.committed_offset = Some(committed_offset);
            wire.end_offset = Some(end_offset);
        }
        Response::Acked { group, topic, acked, committed_offset } => {
            wire.group = Some(group);
            wire.topic = Some(topic);
            wire.acked = Some(acked);
            wire.committed_offset = Some(committed_offset);
        }
        Response::Groups { groups } => wire.groups = Some(groups),
        Response::Reset { group, topic, committed_offset } => {
            wire.group = Some(group);
            wire.topic = Some(topic);
            wire.committed_offset = Some(committed_offset);
        }
        Response::Error { code, reason, range } => {
            wire.code = Some(code.code());
            wire.error = Some(code.name());
            wire.reason = Some(reason);
            if let Some((first, next)) = range {
                wire.first_offset = Some(first);
                wire.next_offset = Some(next);
            }
        }
    }
    write(&wire, out);
}

/// Decodes one reply frame, borrowing its strings and byte strings.
///
/// # Errors
/// As [`decode_request`]; an unknown `reply` name is [`DecodeError::UnknownRequest`].
pub fn decode_response(frame: &[u8]) -> Result<Response<'_>, DecodeError> {
    let wire: WireResponse<'_> = read(frame)?;
    check_version(wire.v)?;
    let name = wire.reply.ok_or_else(|| missing("reply", "reply"))?;
    let need = |value: Option<u64>, field: &'static str| value.ok_or_else(|| missing(name, field));
    let broker = || wire.broker.ok_or_else(|| missing(name, "broker"));
    let topic = || wire.topic.ok_or_else(|| missing(name, "topic"));
    let group = || wire.group.ok_or_else(|| missing(name, "group"));
    let committed = || need(wire.committed_offset, "committed_offset");
    let response = match name {
        "status" => Response::Status { brokers: wire.brokers.unwrap_or_default() },
        "claimed" => Response::Claimed {
            broker: broker()?,
            claim: need(wire.claim, "claim")?,
            lease_ms: need(wire.lease_ms, "lease_ms")?,
        },
        "renewed" => {
            Response::Renewed { broker: broker()?, lease_ms: need(wire.lease_ms, "lease_ms")? }
        }
        "released" => Response::Released { broker: broker()? },
        "topics" => Response::Topics { topics: wire.topics.unwrap_or_default() },
        "messages" => Response::Messages {
            topic: topic()?,
            messages: wire.messages.unwrap_or_default(),
            next_offset: need(wire.next_offset, "next_offset")?,
            end_offset: need(wire.end_offset, "end_offset")?,
        },
        "appended" => Response::Appended {
            topic: topic()?,
            first_offset: need(wire.first_offset, "first_offset")?,
            last_offset: need(wire.last_offset, "last_offset")?,
        },
        "created" => Response::Created { topic: topic()? },
        "deleted" => Response::Deleted { topic: topic()? },
        "joined" => Response::Joined {
            group: group()?,
            topic: topic()?,
            committed_offset: committed()?,
            end_offset: need(wire.end_offset, "end_offset")?,
            members: wire.members.ok_or_else(|| missing(name, "members"))?,
            created: wire.created.ok_or_else(|| missing(name, "created"))?,
            ack_timeout_ms: need(wire.ack_timeout_ms, "ack_timeout_ms")?,
        },
        "delivered" => Response::Delivered {
            group: group()?,
            topic: topic()?,
            messages: wire.messages.unwrap_or_default(),
            redelivered: wire.redelivered.unwrap_or_default(),
            committed_offset: committed()?,
            end_offset: need(wire.end_offset, "end_offset")?,
        },
        "acked" => Response::Acked {
            group: group()?,
            topic: topic()?,
            acked: need(wire.acked, "acked")?,
            committed_offset: committed()?,
        },
        "groups" => Response::Groups { groups: wire.groups.unwrap_or_default() },
        "reset" => {
            Response::Reset { group: group()?, topic: topic()?, committed_offset: committed()? }
        }
        "error" => {
            let number = wire.code.ok_or_else(|| missing(name, "code"))?;
            let code = ErrorCode::from_code(number)
                .ok_or_else(|| DecodeError::Malformed(format!("unknown error code {number}")))?;
            let range = wire.first_offset.zip(wire.next_offset);
            Response::Error { code, reason: wire.reason.unwrap_or_default(), range }
        }
        other => return Err(DecodeError::UnknownRequest(other.to_owned())),
    };
    Ok(response)
}

fn write<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail, and every type encoded here is a plain struct of strings,
    // numbers and byte strings that MessagePack can represent.
    if let Err(e) = rmp_serde::encode::write_named(out, value) {
        unreachable!("encoding to memory failed: {e}");
    }
}

fn read<'a, T: Deserialize<'a>>(frame: &'a [u8]) -> Result<T, DecodeError> {
    match frame.first() {
        Some(0x80..=0x8f | 0xde | 0xdf) => {}
        Some(_) => return Err(DecodeError::Malformed("the frame is not a MessagePack map".into())),
        None => return Err(DecodeError::Malformed("the frame is empty".into())),
    }
    rmp_serde::from_slice(frame).map_err(|e| DecodeError::Malformed(e.to_string()))
}

fn check_version(v: Option<u32>) -> Result<(), DecodeError> {
    match v {
        Some(VERSION) => Ok(()),
        Some(other) => Err(DecodeError::UnsupportedVersion(other)),
        None => Err(missing("frame", "v")),
    }
}

fn missing(what: &str, field: &str) -> DecodeError {
    DecodeError::Malformed(format!("{what} needs the field `{field}`"))
}
