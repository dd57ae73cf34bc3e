//! What each request does to the broker's state: one file per request, dispatched by one match.
//!
//! A command never touches the socket. It returns an [`Outcome`]: a reply to send now, or a
//! reply the server should hold back until something happens or a deadline passes.

pub mod ack;
pub mod append;
pub mod claim;
pub mod create_partitions;
pub mod create_topic;
pub mod delete_group;
pub mod delete_topic;
pub mod fetch;
pub mod group_fetch;
pub mod join_group;
pub mod list_groups;
pub mod list_topics;
pub mod release;
pub mod renew;
pub mod reset_group;
pub mod status;

use std::time::{Duration, Instant};

use protocol::{excerpt, validate_topic_name, ErrorCode, Request, Response, MAX_WAIT_MS};

use crate::broker::Broker;
use crate::group::{self, GroupError};
use crate::logical::ClaimError;
use crate::store::{Store, StoreError};
use crate::waiting::{HeldFetch, HeldGroupFetch, WaitingClaim};

/// What the request's sender is, for the command to use.
#[derive(Debug, Clone, Copy)]
pub struct Context<'p> {
    /// The time of this pass of the serve loop.
    pub now: Instant,
    /// The same time as milliseconds since the Unix epoch, for message timestamps.
    pub now_ms: u64,
    /// The peer's address, shown as a claim's holder when it gives no name.
    pub peer: &'p str,
}

/// What the server is to do with a request once applied.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Send this reply.
    Reply(Response<'a>),
    /// Hold the request until a logical broker frees up or its deadline passes: the waiting
    /// claim, routed nowhere yet (the server gives it the request's envelope).
    WaitForClaim(WaitingClaim<()>),
    /// Hold the fetch until its topic grows or its deadline passes.
    HoldFetch(HeldFetch<()>),
    /// Hold the group fetch until something is there for the group or `until` passes.
    HoldGroupFetch(HeldGroupFetch<()>),
}

/// Applies `request` to `broker`.
pub fn apply<'a>(request: Request<'a>, broker: &'a mut Broker, cx: &Context<'_>) -> Outcome<'a> {
    match request {
        Request::Status => status::apply(broker, cx),
        Request::Claim { broker: wanted, wait_ms, client } => {
            claim::apply(broker, wanted, wait_ms, client.unwrap_or(cx.peer), cx)
        }
        Request::Renew { claim } => renew::apply(broker, claim, cx),
        Request::Release { claim } => release::apply(broker, claim),
        Request::ListTopics { claim } => list_topics::apply(broker, claim, cx),
        Request::Fetch(fetch) => fetch::apply(broker, fetch, cx),
        Request::Append(append) => append::apply(broker, append, cx),
        Request::CreateTopic { topic, partitions, retention } => {
            let partitions = partitions.unwrap_or(broker.default_partitions);
            create_topic::apply(broker, topic, partitions, retention)
        }
        Request::CreatePartitions { topic, partitions } => {
            create_partitions::apply(broker, topic, partitions)
        }
        Request::DeleteTopic { topic } => delete_topic::apply(broker, topic),
        Request::JoinGroup { claim, group, topic, start } => {
            join_group::apply(broker, claim, group, topic, start, cx)
        }
        Request::GroupFetch(fetch) => group_fetch::apply(broker, fetch, cx),
        Request::Ack { group, topic, partition, offsets } => {
            ack::apply(broker, group, topic, partition, &offsets)
        }
        Request::ListGroups { group, topic } => list_groups::apply(broker, group, topic),
        Request::DeleteGroup { group, topic, partition } => {
            delete_group::apply(broker, group, topic, partition)
        }
        Request::ResetGroup { group, topic, partition, to } => {
            reset_group::apply(broker, group, topic, partition, to)
        }
    }
}

/// The moment a wait of `wait_ms` (capped at [`MAX_WAIT_MS`]) asked at `now` ends.
pub fn deadline(now: Instant, wait_ms: u64) -> Instant {
    now + Duration::from_millis(wait_ms.min(MAX_WAIT_MS))
}

impl From<StoreError> for Response<'_> {
    fn from(error: StoreError) -> Self {
        let code = match &error {
            StoreError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            StoreError::TopicExists(_) => ErrorCode::TopicExists,
            // The name may be as long as a frame: the reason quotes only its start.
            StoreError::InvalidTopicName(name, rule) => {
                let reason = format!("{} is not a valid topic name: {rule}", excerpt(name));
                return Response::error(ErrorCode::InvalidTopicName, reason);
            }
            StoreError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            StoreError::StorageFull { .. } => ErrorCode::StorageFull,
            StoreError::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            StoreError::UnknownPartition { partitions, .. } => {
                return Response::Error {
                    code: ErrorCode::UnknownPartition,
                    reason: error.to_string().into(),
                    range: None,
                    partitions: Some(*partitions),
                };
            }
            StoreError::Io(_) => ErrorCode::InternalError,
            StoreError::Unavailable(_) | StoreError::Unconfirmed(_) => ErrorCode::StoreUnavailable,
            StoreError::OffsetOutOfRange { first, next, .. } => {
                return Response::Error {
                    code: ErrorCode::OffsetOutOfRange,
                    reason: error.to_string().into(),
                    range: Some((*first, *next)),
                    partitions: None,
                };
            }
        };
        Response::error(code, error.to_string())
    }
}

impl From<ClaimError> for Response<'_> {
    fn from(error: ClaimError) -> Self {
        let code = match error {
            ClaimError::NoneAvailable(_) => ErrorCode::NoBrokerAvailable,
            ClaimError::Busy(_) => ErrorCode::BrokerBusy,
            ClaimError::UnknownBroker { .. } => ErrorCode::UnknownBroker,
            ClaimError::UnknownClaim(_) => ErrorCode::UnknownClaim,
            ClaimError::Ledger(_) => ErrorCode::StoreUnavailable,
        };
        Response::error(code, error.to_string())
    }
}

impl From<GroupError> for Response<'_> {
    fn from(error: GroupError) -> Self {
        let code = match &error {
            // The name may be as long as a frame: the reason quotes only its start.
            GroupError::InvalidGroupName(name, rule) => {
                let reason = format!("{} is not a valid group name: {rule}", excerpt(name));
                return Response::error(ErrorCode::InvalidGroupName, reason);
            }
            GroupError::UnknownGroup { .. } => ErrorCode::UnknownGroup,
            GroupError::UnknownMember { .. } => ErrorCode::UnknownMember,
            GroupError::NotPending { .. } => ErrorCode::NotPending,
            GroupError::Active { .. } => ErrorCode::GroupActive,
        };
        Response::error(code, error.to_string())
    }
}

/// Checks a group and a topic name, in that order, as every group request does.
///
/// # Errors
/// The refusal to send: `invalid_group_name` or `invalid_topic_name`.
fn check_names(group: &str, topic: &str) -> Result<(), Response<'static>> {
    group::check_name(group)?;
    validate_topic_name(topic)
        .map_err(|error| StoreError::InvalidTopicName(topic.to_owned(), error).into())
}

/// Checks a group request's names, as [`check_names`] does, and returns how many partitions
/// its topic has.
///
/// # Errors
/// The refusal to send: an invalid name or an unknown topic.
fn group_topic(store: &Store, group: &str, topic: &str) -> Result<u32, Response<'static>> {
    check_names(group, topic)?;
    Ok(store.partitions(topic)?)
}

/// The offsets every partition of `topic` holds now, partition 0 first: the first kept and
/// the next.
///
/// # Errors
/// The refusal to send: an unknown topic.
fn partition_offsets(
    store: &Store,
    topic: &str,
    partitions: u32,
) -> Result<Vec<(u64, u64)>, Response<'static>> {
    (0..partitions).map(|partition| Ok(store.offsets(topic, partition)?)).collect()
}

/// A refusal, as an outcome.
fn refuse<'a>(error: impl Into<Response<'a>>) -> Outcome<'a> {
    Outcome::Reply(error.into())
}

#[cfg(test)]
mod tests;
