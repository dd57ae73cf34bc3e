//! Each Kafka API this door answers, as calls to the broker through the native protocol.
//!
//! A topic's partitions are its Kafka partitions, one for one, and the gateway is the one Kafka
//! broker (node [`NODE_ID`]) that leads them all, whatever the number of logical brokers behind
//! it. Offsets, keys and values are the broker's own, partition by partition; timestamps are
//! the broker's append times (sent as the records' timestamps, with the batch's CreateTime
//! flag, which is all the crate's encoder writes).

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, RequestKind, ResponseKind,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use client::{Client, ClientError};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, FindCoordinatorResponse, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use std::collections::HashMap;
use std::sync::Mutex;

use crate::rights::GroupRights;
use client::security::Credentials;
use protocol::{
    Append, ErrorCode, Fetch, NewMessage, Request, ResetTo, Response, Retention, TopicInfo,
    MAX_PARTITIONS,
};

use crate::claim::SharedClaim;
use crate::error::FrameError;
use crate::groups::Coordinator;
use crate::idempotence::Check;
use crate::pool::Pool;

/// The Kafka node id of the gateway, the one Kafka broker it shows.
pub const NODE_ID: i32 = 1;

/// The cluster id `Metadata` reports.
const CLUSTER_ID: &str = "zeromq-broker";

/// The APIs this door answers and the versions of each, as `ApiVersions` lists them. Produce
/// starts at 3, the first version whose records are record batches v2; Fetch ends at 12 and
/// Metadata at 12, the last versions that name topics rather than topic ids.
const APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 4),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::CreateTopics, 0, 4),
    (ApiKey::DeleteTopics, 0, 5),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
];

/// The versions of `api` this door speaks, `None` when it does not answer it at all.
pub fn supported(api: ApiKey) -> Option<RangeInclusive<i16>> {
    APIS.iter().find(|(key, ..)| *key == api).map(|(_, min, max)| *min..=*max)
}

/// A short name of `api` for log lines.
pub fn name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::OffsetDelete => "OffsetDelete",
        _ => "an API this door does not answer",
    }
}

/// The `ApiVersions` answer: every API of [`APIS`] with its versions.
pub fn api_versions() -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = APIS
        .iter()
        .map(|(key, min, max)| {
            let mut version = ApiVersion::default();
            version.api_key = *key as i16;
            version.min_version = *min;
            version.max_version = *max;
            version
        })
        .collect();
    response
}

/// What every connection shares: where the gateway is reached, and its claim.
#[derive(Debug)]
pub struct Door {
    /// The broker's native endpoints, for the connections of authenticated users.
    pub endpoints: client::Endpoints,
    /// Whether Kafka clients must log in with SASL/PLAIN, as the broker's users.
    pub sasl: bool,
    /// The claims of logged-in users, one per user: a claim belongs to its user.
    pub user_claims: Mutex<HashMap<String, Arc<SharedClaim>>>,
    /// The host `Metadata` gives for the gateway.
    pub host: String,
    /// The port `Metadata` gives for the gateway.
    pub port: i32,
    /// The claim all connections read through.
    pub claim: Arc<SharedClaim>,
    /// Kafka group membership.
    pub coordinator: Arc<Coordinator>,
    /// Failed logins, logged throttled.
    pub refused_logins: crate::limits::Throttle,
    /// Failed logins by client address, which throttle that address's next checks.
    pub login_backoff: crate::backoff::LoginBackoff,
    /// The native clients of connections without a login; `None` on a gateway that asks for
    /// logins.
    pub pool: Option<Arc<Pool>>,
    /// The native clients of each logged-in user.
    pub user_pools: Mutex<HashMap<String, Arc<Pool>>>,
    /// What the connections may hold, decompressed batches included.
    pub limits: Arc<crate::limits::Limits>,
    /// The idempotent producers and their sequences.
    pub producers: crate::idempotence::Producers,
    /// Whether the broker knows partitions, once asked ([`Call::partitioned`]).
    pub partitioned: std::sync::OnceLock<bool>,
}

impl Door {
    /// The claim `user`'s connections share.
    fn claim_for(&self, user: &str) -> Arc<SharedClaim> {
        let mut claims = self.user_claims.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(claims.entry(user.to_owned()).or_default())
    }

    /// The pool of `user`'s native clients, into which `client`, logged in as `user`, goes.
    fn pool_for(&self, user: &str, client: Client) -> Arc<Pool> {
        let mut pools = self.user_pools.lock().unwrap_or_else(|e| e.into_inner());
        match pools.get(user) {
            Some(pool) => {
                pool.adopt(client);
                Arc::clone(pool)
            }
            None => {
                let pool = Arc::new(Pool::new(client));
                pools.insert(user.to_owned(), Arc::clone(&pool));
                pool
            }
        }
    }
}

/// One Kafka connection: its login state and, once it may make requests, its side of the broker.
pub struct Session {
    /// What all connections share.
    door: Arc<Door>,
    /// The connection's side of the broker; `None` until a SASL login when the gateway asks for
    /// one, so that a connection that never logs in costs the broker nothing.
    native: Option<Native>,
    /// Whether a `SaslHandshake` for PLAIN came.
    handshake: bool,
    /// Whether that handshake was version 0, after which the login comes as a bare frame of
    /// SASL bytes rather than a `SaslAuthenticate` request.
    raw_token_next: bool,
    /// Whether the connection has logged in with SASL.
    authenticated: bool,
    /// Whether the connection is to be closed after the response just made, and why (a failed
    /// login, no native client to be had).
    closing: Option<FrameError>,
    /// The peer's address, which `DescribeGroups` shows for its members.
    peer: String,
}

/// A connection's side of the broker: the pool of native clients it borrows from, one for each
/// request, and the claim it reads through.
pub struct Native {
    /// What all connections share.
    door: Arc<Door>,
    /// Clients without credentials, or logged in as the SASL user.
    pool: Arc<Pool>,
    /// The claim this connection reads through: the gateway's, or its user's.
    claim: Arc<SharedClaim>,
    /// With logins, the groups the user was found to have `consume` on.
    rights: Option<GroupRights>,
}

/// One request's side of the broker: a borrowed client, the claim it reads through.
struct Call<'a> {
    /// What all connections share.
    door: &'a Door,
    /// The client lent for this request.
    client: &'a mut Client,
    /// The claim this connection reads through.
    claim: &'a SharedClaim,
    /// With logins, the connection's group rights; without, every group may be used.
    rights: Option<&'a mut GroupRights>,
    /// The request's `client.id` and the peer's address.
    who: (&'a str, &'a str),
}

impl Session {
    /// A session of the connection from `peer`; without logins, its requests borrow from the
    /// door's pool.
    pub fn new(door: Arc<Door>, peer: String) -> Session {
        let native = match (&door.pool, door.sasl) {
            (Some(pool), false) => {
                Some(Native::new(&door, Arc::clone(pool), Arc::clone(&door.claim)))
            }
            _ => None,
        };
        Session {
            door,
            native,
            handshake: false,
            raw_token_next: false,
            authenticated: false,
            closing: None,
            peer,
        }
    }

    /// Whether a request of `api` may be answered now: with `--sasl-plain`, only `ApiVersions`
    /// and the SASL requests come before a login.
    pub fn admits(&self, api: ApiKey) -> bool {
        !self.door.sasl
            || self.authenticated
            || matches!(api, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)
    }

    /// Why the connection must be closed once the last response is sent, if it must.
    pub fn closing(&mut self) -> Option<FrameError> {
        self.closing.take()
    }

    /// Answers `request` from the client named `client_id`; `None` for a produce with
    /// `acks=0`, which Kafka never answers, and for a request [`Session::admits`] refuses.
    /// `version` is the request's, which the response must be encodable at: fields that
    /// version lacks are left at their defaults.
    pub fn answer(
        &mut self,
        request: RequestKind,
        version: i16,
        client_id: Option<&str>,
    ) -> Option<ResponseKind> {
        match request {
            RequestKind::ApiVersions(_) => Some(ResponseKind::ApiVersions(api_versions())),
            RequestKind::SaslHandshake(request) => {
                let response = self.sasl_handshake(&request);
                self.raw_token_next = version == 0 && self.handshake;
                Some(ResponseKind::SaslHandshake(response))
            }
            RequestKind::SaslAuthenticate(request) => {
                Some(ResponseKind::SaslAuthenticate(self.sasl_authenticate(&request)))
            }
            other => {
                let who = (client_id.unwrap_or_default(), self.peer.as_str());
                match self.native.as_mut()?.answer(other, version, who) {
                    Ok(response) => response,
                    Err(reason) => {
                        self.closing = Some(FrameError::Busy(reason));
                        None
                    }
                }
            }
        }
    }

    /// `SaslHandshake`: PLAIN, when the gateway asks for logins.
    fn sasl_handshake(&mut self, request: &SaslHandshakeRequest) -> SaslHandshakeResponse {
        let mut response = SaslHandshakeResponse::default();
        if self.door.sasl {
            response.mechanisms = vec![StrBytes::from_static_str("PLAIN")];
        }
        if self.door.sasl && request.mechanism.as_str() == "PLAIN" {
            self.handshake = true;
        } else {
            response.error_code = ResponseError::UnsupportedSaslMechanism.code();
        }
        response
    }

    /// Whether the next frame is a bare SASL token (after a `SaslHandshake` v0), not a request.
    pub fn expects_raw_token(&self) -> bool {
        self.raw_token_next
    }

    /// The bare SASL token that follows a `SaslHandshake` v0: the same PLAIN login as
    /// `SaslAuthenticate` carries. Whether it succeeded; Kafka answers a success with an empty
    /// frame and closes the connection on a failure.
    pub fn raw_authenticate(&mut self, token: &[u8]) -> bool {
        self.raw_token_next = false;
        self.closing = Some(FrameError::LoginFailed);
        if !self.handshake || self.authenticated {
            return false;
        }
        self.login(token).is_ok()
    }

    /// `SaslAuthenticate`: a PLAIN login, answered `SASL_AUTHENTICATION_FAILED` (and the
    /// connection closed, as Kafka does) when it fails.
    fn sasl_authenticate(&mut self, request: &SaslAuthenticateRequest) -> SaslAuthenticateResponse {
        let mut response = SaslAuthenticateResponse::default();
        self.closing = Some(FrameError::LoginFailed);
        if !self.handshake || self.authenticated || self.raw_token_next {
            response.error_code = ResponseError::IllegalSaslState.code();
            return response;
        }
        if let Err(message) = self.login(&request.auth_bytes) {
            response.error_code = ResponseError::SaslAuthenticationFailed.code();
            response.error_message = Some(StrBytes::from_string(message));
        }
        response
    }

    /// A PLAIN login (`authzid NUL user NUL password`), checked by the broker itself: the
    /// gateway connects as that user, and the connection's requests go through that login from
    /// then on, with that user's permissions. What to tell the client when it fails.
    fn login(&mut self, auth_bytes: &[u8]) -> Result<(), String> {
        let mut parts = auth_bytes.split(|b| *b == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("a PLAIN login is authzid NUL user NUL password".into());
        };
        let (Ok(user), Ok(password)) = (std::str::from_utf8(user), std::str::from_utf8(password))
        else {
            return Err("user and password must be UTF-8".into());
        };
        if !authzid.is_empty() && authzid != user.as_bytes() {
            return Err("a user may act only as itself".into());
        }
        let credentials =
            Credentials::Plain { user: user.to_owned(), password: password.to_owned() };
        let address = self.peer.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
        if let Some(ip) = address {
            self.door.login_backoff.wait_turn(ip);
        }
        let login = Client::connect_to(self.door.endpoints.clone(), BROKER_TIMEOUT, credentials)
            .and_then(|mut client| {
                client.set_origin(Some(&self.peer));
                client.status().map(|_| client)
            });
        match (&login, address) {
            (Ok(_), Some(ip)) => self.door.login_backoff.succeeded(ip),
            (Err(_), Some(ip)) => {
                self.door.login_backoff.failed(ip);
                std::thread::sleep(crate::backoff::FAILED_DELAY);
            }
            (_, None) => {}
        }
        // The name as the Kafka client gave it, cut short and escaped, for the log.
        let shown = protocol::limits::cut(user).escape_debug();
        match login {
            Ok(client) => {
                // On the `audit` target with the Kafka client's address: the broker checks the
                // login in its handshake, before a request could name whom the gateway speaks
                // for. A login costs a password check, and failures are spaced per address.
                tracing::info!(
                    target: "audit",
                    user = %shown,
                    source = %self.peer,
                    "SASL login accepted"
                );
                let claim = self.door.claim_for(user);
                let pool = self.door.pool_for(user, client);
                self.native = Some(Native::new(&self.door, pool, claim));
                self.authenticated = true;
                self.closing = None;
                Ok(())
            }
            Err(e) => {
                if let Some(suppressed) = self.door.refused_logins.admit() {
                    tracing::warn!(
                        target: "audit",
                        user = %shown,
                        source = %self.peer,
                        suppressed,
                        "SASL login refused for a Kafka client as \"{shown}\": {e}"
                    );
                }
                Err("authentication failed".into())
            }
        }
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        if let Ok(mut client) = self.pool.take() {
            self.claim.leave(&mut client);
            self.pool.give(client);
        }
    }
}

impl Native {
    /// A connection's side of the broker, counted in as a user of `claim`.
    fn new(door: &Arc<Door>, pool: Arc<Pool>, claim: Arc<SharedClaim>) -> Native {
        claim.enter();
        let rights = door.sasl.then(GroupRights::default);
        Native { door: Arc::clone(door), pool, claim, rights }
    }

    /// Answers a request other than `ApiVersions` and the SASL ones with a client borrowed
    /// for it.
    ///
    /// # Errors
    /// Why no client could be had.
    fn answer(
        &mut self,
        request: RequestKind,
        version: i16,
        who: (&str, &str),
    ) -> Result<Option<ResponseKind>, String> {
        let mut client = self.pool.take()?;
        // The broker's audit log names the Kafka client behind each request (its `origin`).
        client.set_origin(Some(who.1));
        let mut call = Call {
            door: &self.door,
            client: &mut client,
            claim: &self.claim,
            who,
            rights: self.rights.as_mut(),
        };
        let response = call.answer(request, version);
        self.pool.give(client);
        Ok(response)
    }
}

impl Call<'_> {
    /// Answers a request other than `ApiVersions` and the SASL ones.
    fn answer(&mut self, request: RequestKind, version: i16) -> Option<ResponseKind> {
        Some(match request {
            RequestKind::Metadata(request) => {
                ResponseKind::Metadata(self.metadata(&request, version))
            }
            RequestKind::Produce(request) => {
                let response = self.produce(&request);
                if request.acks == 0 {
                    return None;
                }
                ResponseKind::Produce(response)
            }
            RequestKind::InitProducerId(request) => {
                ResponseKind::InitProducerId(init_producer_id(&request, &self.door.producers))
            }
            RequestKind::ListOffsets(request) => {
                ResponseKind::ListOffsets(self.list_offsets(&request))
            }
            RequestKind::Fetch(request) => ResponseKind::Fetch(self.fetch(&request, version)),
            RequestKind::FindCoordinator(_) => {
                ResponseKind::FindCoordinator(self.find_coordinator())
            }
            RequestKind::JoinGroup(request) => {
                ResponseKind::JoinGroup(self.join_group(&request, version))
            }
            RequestKind::SyncGroup(request) => ResponseKind::SyncGroup(self.sync_group(&request)),
            RequestKind::Heartbeat(request) => {
                let mut response = HeartbeatResponse::default();
                response.error_code = match self.may_use_group(&request.group_id.0, &[]) {
                    0 => self.door.coordinator.heartbeat(
                        &request.group_id.0,
                        request.generation_id,
                        &request.member_id,
                    ),
                    refused => refused,
                };
                ResponseKind::Heartbeat(response)
            }
            RequestKind::LeaveGroup(request) => {
                ResponseKind::LeaveGroup(self.leave_group(&request, version))
            }
            RequestKind::OffsetCommit(request) => {
                ResponseKind::OffsetCommit(self.offset_commit(&request))
            }
            RequestKind::CreateTopics(request) => {
                ResponseKind::CreateTopics(self.create_topics(&request, version))
            }
            RequestKind::DeleteTopics(request) => {
                ResponseKind::DeleteTopics(self.delete_topics(&request))
            }
            RequestKind::CreatePartitions(request) => {
                ResponseKind::CreatePartitions(self.create_partitions(&request))
            }
            RequestKind::OffsetFetch(request) => {
                ResponseKind::OffsetFetch(self.offset_fetch(&request))
            }
            RequestKind::ListGroups(request) => {
                ResponseKind::ListGroups(self.list_groups(&request, version))
            }
            RequestKind::DescribeGroups(request) => {
                ResponseKind::DescribeGroups(self.describe_groups(&request))
            }
            RequestKind::DeleteGroups(request) => {
                ResponseKind::DeleteGroups(self.delete_groups(&request))
            }
            RequestKind::OffsetDelete(request) => {
                ResponseKind::OffsetDelete(self.offset_delete(&request))
            }
            // `frame::decode` lets through only the APIs of `APIS`.
            _ => return None,
        })
    }

    /// `CreateTopics`: each topic made with a native `create_topic`, with `num_partitions`
    /// partitions (-1 is Kafka's "the broker's default": the broker's `--partitions`) and one
    /// replica; 0 or more than [`MAX_PARTITIONS`] partitions is `INVALID_PARTITIONS`.
    /// `retention.ms` and `retention.bytes` become its retention, and any other setting gets
    /// `INVALID_CONFIG`. A topic that exists gets `TOPIC_ALREADY_EXISTS` whatever else it asks
    /// for, as Kafka checks existence first: setup code that ignores "already exists" then
    /// goes on.
    fn create_topics(
        &mut self,
        request: &CreateTopicsRequest,
        version: i16,
    ) -> CreateTopicsResponse {
        let mut response = CreateTopicsResponse::default();
        for topic in &request.topics {
            let mut result = CreatableTopicResult::default();
            result.name = topic.name.clone();
            let (code, message) = match creatable(topic) {
                Err(code) => match self.topics() {
                    Ok(all) if all.iter().any(|t| t.name == topic.name.0.as_str()) => {
                        (ResponseError::TopicAlreadyExists.code(), None)
                    }
                    _ => (code, None),
                },
                Ok(_) if request.validate_only => (0, None),
                Ok((partitions, retention)) => {
                    match self.client.create_topic(topic.name.0.as_str(), partitions, retention) {
                        Ok(_) => (0, None),
                        Err(e) => refusal(&e),
                    }
                }
            };
            result.error_code = code;
            if version >= 1 {
                result.error_message = message;
            }
            response.topics.push(result);
        }
        response
    }

    /// `DeleteTopics`: each topic removed with a native `delete_topic`.
    fn delete_topics(&mut self, request: &DeleteTopicsRequest) -> DeleteTopicsResponse {
        let mut response = DeleteTopicsResponse::default();
        for name in &request.topic_names {
            let mut result = DeletableTopicResult::default();
            result.name = Some(name.clone());
            let delete = Request::DeleteTopic { topic: name.0.as_str() };
            result.error_code = match self.client.call(&delete, |_| Ok(())) {
                Ok(()) => 0,
                Err(e) => kafka_code(&e),
            };
            response.responses.push(result);
        }
        response
    }

    /// `CreatePartitions`: each topic grown with a native `create_partitions` to `count`
    /// partitions in all. A count of 0 or above [`MAX_PARTITIONS`], or not above the topic's
    /// (a topic never shrinks), is `INVALID_PARTITIONS`; replica assignments may name only the
    /// gateway, one for each new partition (`INVALID_REPLICA_ASSIGNMENT` otherwise); a topic
    /// named twice in one request is `INVALID_REQUEST`, as Kafka answers it. Each refusal
    /// leaves its topic as it was.
    fn create_partitions(&mut self, request: &CreatePartitionsRequest) -> CreatePartitionsResponse {
        let mut response = CreatePartitionsResponse::default();
        for topic in &request.topics {
            let name = topic.name.0.as_str();
            let invalid = |code: ResponseError, message: String| {
                (code.code(), Some(StrBytes::from_string(message)))
            };
            let count =
                u32::try_from(topic.count).ok().filter(|c| (1..=MAX_PARTITIONS).contains(c));
            let assignments = topic.assignments.as_ref().filter(|all| !all.is_empty());
            let assigned = assignments.map(|all| {
                let ours = all.iter().all(|a| a.broker_ids == [BrokerId(NODE_ID)]);
                (all.len(), ours)
            });
            let (code, message) = match (count, assigned) {
                _ if request.topics.iter().filter(|t| t.name == topic.name).count() > 1 => {
                    invalid(ResponseError::InvalidRequest, format!("{name} is named twice"))
                }
                (None, _) => invalid(
                    ResponseError::InvalidPartitions,
                    format!("{} partitions: a topic has 1 to {MAX_PARTITIONS}", topic.count),
                ),
                (Some(_), Some((_, false))) => invalid(
                    ResponseError::InvalidReplicaAssignment,
                    format!("node {NODE_ID} is the only broker"),
                ),
                (Some(count), Some((assignments, true))) => match self.existing_count(name) {
                    Ok(now) if usize::try_from(count.saturating_sub(now)) != Ok(assignments) => {
                        invalid(
                            ResponseError::InvalidReplicaAssignment,
                            format!("{name} has {now} partitions: assign each new one"),
                        )
                    }
                    Ok(_) => self.grown(name, count, request.validate_only),
                    Err(e) => refusal(&e),
                },
                (Some(count), None) => self.grown(name, count, request.validate_only),
            };
            let mut result = CreatePartitionsTopicResult::default();
            result.name = topic.name.clone();
            result.error_code = code;
            result.error_message = message;
            response.results.push(result);
        }
        response
    }

    /// Grows `topic` to `count` partitions in all, or with `validate_only` only checks that it
    /// could: the Kafka error code and message.
    fn grown(&mut self, topic: &str, count: u32, validate_only: bool) -> (i16, Option<StrBytes>) {
        if !validate_only {
            return match self.client.create_partitions(topic, count) {
                Ok(_) => (0, None),
                Err(e) => refusal(&e),
            };
        }
        match self.existing_count(topic) {
            Ok(now) if count > now => (0, None),
            Ok(now) => (
                ResponseError::InvalidPartitions.code(),
                Some(StrBytes::from_string(format!(
                    "{topic} has {now} partitions, and a topic never shrinks"
                ))),
            ),
            Err(e) => refusal(&e),
        }
    }

    /// How many partitions `topic` has, from `list_topics` (which needs no claim); it never
    /// creates the topic.
    ///
    /// # Errors
    /// `unknown_topic` when it does not exist, and what `list_topics` may fail with.
    fn existing_count(&mut self, topic: &str) -> client::Result<u32> {
        let found = self.client.topics()?.into_iter().find(|t| t.name == topic);
        found.map(|t| t.partitions).ok_or_else(|| ClientError::Broker {
            code: ErrorCode::UnknownTopic,
            reason: format!("no topic {topic}"),
            range: None,
        })
    }

    /// Whether the broker knows partitions, asked once per gateway: a broker from before them
    /// answers `create_partitions` with `501 unknown_request`, and ignores the `partition` of
    /// an `append` or a `fetch` (it has partition 0 alone), so in front of it every topic has
    /// one partition and [`Call::partition_count`] must not send its probe, which such a
    /// broker would append. The topic named is no valid name, so nothing is ever grown.
    ///
    /// # Errors
    /// A failed exchange.
    fn partitioned(&mut self) -> client::Result<bool> {
        if let Some(known) = self.door.partitioned.get() {
            return Ok(*known);
        }
        let ask = Request::CreatePartitions { topic: "", partitions: 0 };
        let known = match self.client.call(&ask, |_| Ok(())) {
            Err(e) if e.broker_code() == Some(ErrorCode::UnknownRequest) => false,
            Ok(()) | Err(ClientError::Broker { .. }) => true,
            Err(e) => return Err(e),
        };
        if !known {
            tracing::warn!("the broker knows no partitions: every topic shows one, partition 0");
        }
        Ok(*self.door.partitioned.get_or_init(|| known))
    }

    /// A Kafka partition index as the broker's, or `UNKNOWN_TOPIC_OR_PARTITION` for a negative
    /// one, or one other than 0 in front of a broker without partitions (which would read or
    /// write partition 0 instead).
    fn partition_index(&mut self, index: i32) -> Result<u32, i16> {
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        match u32::try_from(index) {
            Ok(0) => Ok(0),
            Ok(index) => match self.partitioned() {
                Ok(true) => Ok(index),
                Ok(false) => Err(unknown),
                Err(e) => Err(kafka_code(&e)),
            },
            Err(_) => Err(unknown),
        }
    }

    /// How many partitions `topic` has, learnt by appending to it, for a user who may produce
    /// on a topic that does not exist but may not create it ([`Call::produced_topic`]): an
    /// `append` to partition [`MAX_PARTITIONS`], which no topic has, is refused
    /// `315 unknown_partition` with the topic's count (PROTOCOL.md, section 7) and appends
    /// nothing, but like any append it creates a topic that does not exist.
    ///
    /// # Errors
    /// The broker's refusal (`forbidden` for a user who may not produce on the topic) or a
    /// failed exchange.
    fn partition_count(&mut self, topic: &str) -> client::Result<u32> {
        if !self.partitioned()? {
            return Ok(1);
        }
        let probe = Request::Append(Append {
            sequenced: None,
            topic,
            partition: Some(MAX_PARTITIONS),
            messages: vec![NewMessage::new(None, b"")],
        });
        let mut frame = Vec::new();
        protocol::encode_request(&probe, &mut frame);
        let reply = self.client.round_trip(&frame)?;
        match protocol::decode_response(&reply).map_err(ClientError::Decode)? {
            Response::Error {
                code: ErrorCode::UnknownPartition, partitions: Some(count), ..
            } => Ok(count),
            Response::Error { code, reason, range, .. } => {
                Err(ClientError::Broker { code, reason: reason.into_owned(), range })
            }
            other => Err(ClientError::UnexpectedReply { request: "append", reply: other.name() }),
        }
    }

    /// `FindCoordinator`: the gateway coordinates every group.
    fn find_coordinator(&self) -> FindCoordinatorResponse {
        let mut response = FindCoordinatorResponse::default();
        response.node_id = BrokerId(NODE_ID);
        response.host = StrBytes::from_string(self.door.host.clone());
        response.port = self.door.port;
        response
    }

    /// `JoinGroup`, through the [`Coordinator`].
    fn join_group(&mut self, request: &JoinGroupRequest, version: i16) -> JoinGroupResponse {
        let protocols = request
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_owned(), p.metadata.clone()))
            .collect();
        let millis = |ms: i32| Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0));
        let rebalance = if version >= 1 { request.rebalance_timeout_ms } else { 0 };
        let session = millis(request.session_timeout_ms);
        if !crate::groups::SESSION_TIMEOUTS.contains(&session) {
            let mut response = JoinGroupResponse::default();
            response.error_code = ResponseError::InvalidSessionTimeout.code();
            response.member_id = request.member_id.clone();
            return response;
        }
        let offered: Vec<Bytes> = request.protocols.iter().map(|p| p.metadata.clone()).collect();
        let refused = self.may_use_group(&request.group_id.0, &offered);
        if refused != 0 {
            let mut response = JoinGroupResponse::default();
            response.error_code = refused;
            response.member_id = request.member_id.clone();
            return response;
        }
        let joined = self.door.coordinator.join(
            &request.group_id.0,
            &request.member_id,
            protocols,
            millis(request.session_timeout_ms),
            millis(rebalance.max(request.session_timeout_ms)),
        );
        if joined.error == 0 {
            let (client_id, host) = self.who;
            self.door.coordinator.set_client(
                &request.group_id.0,
                &joined.member_id,
                client_id,
                host,
            );
        }
        let mut response = JoinGroupResponse::default();
        response.error_code = joined.error;
        response.generation_id = joined.generation;
        if version >= 7 {
            response.protocol_type = Some(request.protocol_type.clone());
        }
        response.protocol_name = Some(StrBytes::from_string(joined.protocol));
        response.leader = StrBytes::from_string(joined.leader);
        response.member_id = StrBytes::from_string(joined.member_id);
        response.members = joined
            .members
            .into_iter()
            .map(|(id, metadata)| {
                let mut member = JoinGroupResponseMember::default();
                member.member_id = StrBytes::from_string(id);
                member.metadata = metadata;
                member
            })
            .collect();
        response
    }

    /// Whether this connection's user may take part in `group` (always, without logins): 0, or
    /// the Kafka error to answer. The topics probed are those `offered` subscribes to (a
    /// `JoinGroup`'s protocols) and those of the group's members.
    fn may_use_group(&mut self, group: &str, offered: &[Bytes]) -> i16 {
        self.may_use_group_with(group, offered, Vec::new())
    }

    /// [`Call::may_use_group`], probing with the topics `named` (a request's) first. Without
    /// any topic from a request or from the members, those the broker lists for the group are
    /// used (it lists them only to a user with some right on the group).
    fn may_use_group_with(&mut self, group: &str, offered: &[Bytes], named: Vec<String>) -> i16 {
        let Some(rights) = self.rights.as_deref_mut() else {
            return 0;
        };
        if rights.granted(group) {
            return 0;
        }
        let members = self.door.coordinator.subscriptions(group);
        let mut topics = named;
        topics.extend(offered.iter().chain(&members).flat_map(crate::rights::subscribed_topics));
        if topics.is_empty() {
            if let Ok(states) = self.client.list_groups(Some(group), None) {
                topics = states.into_iter().map(|s| s.topic).collect();
            }
        }
        rights.check(self.client, group, topics)
    }

    /// `SyncGroup`, through the [`Coordinator`].
    fn sync_group(&mut self, request: &SyncGroupRequest) -> SyncGroupResponse {
        let refused = self.may_use_group(&request.group_id.0, &[]);
        if refused != 0 {
            let mut response = SyncGroupResponse::default();
            response.error_code = refused;
            return response;
        }
        let assignments = request
            .assignments
            .iter()
            .map(|a| (a.member_id.as_str().to_owned(), a.assignment.clone()))
            .collect();
        let mut response = SyncGroupResponse::default();
        match self.door.coordinator.sync(
            &request.group_id.0,
            request.generation_id,
            &request.member_id,
            assignments,
        ) {
            Ok(assignment) => response.assignment = assignment,
            Err(code) => response.error_code = code,
        }
        response
    }

    /// `LeaveGroup`, through the [`Coordinator`]: one member before version 3, a list after.
    fn leave_group(&mut self, request: &LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let ids: Vec<String> = if version >= 3 {
            request.members.iter().map(|m| m.member_id.as_str().to_owned()).collect()
        } else {
            vec![request.member_id.as_str().to_owned()]
        };
        let codes = match self.may_use_group(&request.group_id.0, &[]) {
            0 => self.door.coordinator.leave(&request.group_id.0, &ids),
            refused => vec![refused; ids.len()],
        };
        let mut response = LeaveGroupResponse::default();
        if version >= 3 {
            response.members = ids
                .into_iter()
                .zip(&codes)
                .map(|(id, code)| {
                    let mut member = MemberResponse::default();
                    member.member_id = StrBytes::from_string(id);
                    member.error_code = *code;
                    member
                })
                .collect();
        } else {
            response.error_code = codes.first().copied().unwrap_or(0);
        }
        response
    }

    /// `OffsetCommit`: each partition's offset stored as the broker group's committed offset on
    /// that partition (`reset_group ... offset` with `partition`), the state `consumer groups`
    /// shows.
    fn offset_commit(&mut self, request: &OffsetCommitRequest) -> OffsetCommitResponse {
        let group = request.group_id.0.as_str();
        let mut response = OffsetCommitResponse::default();
        let fenced = self.door.coordinator.check_commit(
            group,
            request.generation_id_or_member_epoch,
            &request.member_id,
        );
        for topic in &request.topics {
            let mut answer = OffsetCommitResponseTopic::default();
            answer.name = topic.name.clone();
            for partition in &topic.partitions {
                let mut part = OffsetCommitResponsePartition::default();
                part.partition_index = partition.partition_index;
                let index = self.partition_index(partition.partition_index);
                part.error_code = match (index, u64::try_from(partition.committed_offset)) {
                    _ if fenced.is_err() => fenced.err().unwrap_or(0),
                    (Ok(index), Ok(offset)) => {
                        let to = ResetTo::Offset(offset);
                        match self.client.reset_group(group, &topic.name.0, Some(index), to) {
                            Ok(_) => 0,
                            // `reset_group` needs `admin` on the group, not on the topic.
                            Err(e) if e.broker_code() == Some(ErrorCode::Forbidden) => {
                                ResponseError::GroupAuthorizationFailed.code()
                            }
                            Err(e) => kafka_code(&e),
                        }
                    }
                    (Ok(_), Err(_)) => ResponseError::OffsetOutOfRange.code(),
                    (Err(code), _) => code,
                };
                answer.partitions.push(part);
            }
            response.topics.push(answer);
        }
        response
    }

    /// `ListGroups`: the groups with Kafka members in the gateway, and the broker's groups
    /// (with committed offsets, read through either door) as `Empty`.
    fn list_groups(&mut self, request: &ListGroupsRequest, version: i16) -> ListGroupsResponse {
        let mut response = ListGroupsResponse::default();
        let mut groups: Vec<(String, &'static str)> = self.door.coordinator.list();
        if self.rights.is_some() {
            // The broker narrows its own listing to the user's groups; the gateway's groups
            // are narrowed to those the user may consume, with at most `MAX_LISTING_PROBES`
            // groups probed (past them, groups not granted before are left out).
            let mut probed = 0;
            groups.retain(|(name, _)| {
                let granted = self.rights.as_deref().is_some_and(|r| r.granted(name));
                if granted || probed == crate::rights::MAX_LISTING_PROBES {
                    return granted;
                }
                probed += 1;
                self.may_use_group(name, &[]) == 0
            });
        }
        match self.client.list_groups(None, None) {
            Ok(states) => {
                for state in states {
                    if !groups.iter().any(|(name, _)| *name == state.group) {
                        groups.push((state.group, "Empty"));
                    }
                }
            }
            Err(e) => response.error_code = kafka_code(&e),
        }
        groups.sort();
        let wanted = &request.states_filter;
        response.groups = groups
            .into_iter()
            .filter(|(_, state)| {
                version < 4 || wanted.is_empty() || wanted.iter().any(|w| w.as_str() == *state)
            })
            .map(|(name, state)| {
                let mut listed = ListedGroup::default();
                listed.group_id = GroupId(StrBytes::from_string(name));
                listed.protocol_type = StrBytes::from_static_str("consumer");
                if version >= 4 {
                    listed.group_state = StrBytes::from_static_str(state);
                }
                listed
            })
            .collect();
        response
    }

    /// `DescribeGroups`: a group's Kafka members with their clients, metadata and assignment;
    /// a group of the broker's without Kafka members is `Empty`, one unknown `Dead`, as Kafka
    /// says of a group it does not know.
    fn describe_groups(&mut self, request: &DescribeGroupsRequest) -> DescribeGroupsResponse {
        let mut response = DescribeGroupsResponse::default();
        for name in &request.groups {
            let mut group = DescribedGroup::default();
            group.group_id = name.clone();
            group.protocol_type = StrBytes::from_static_str("consumer");
            group.authorized_operations = i32::MIN;
            let refused = self.may_use_group(name.0.as_str(), &[]);
            if refused != 0 {
                group.error_code = refused;
                group.group_state = StrBytes::from_static_str("Dead");
                response.groups.push(group);
                continue;
            }
            match self.door.coordinator.describe(name.0.as_str()) {
                Some(described) => {
                    group.group_state = StrBytes::from_static_str(described.state);
                    group.protocol_data = StrBytes::from_string(described.protocol);
                    group.members = described
                        .members
                        .into_iter()
                        .map(|m| {
                            let mut member = DescribedGroupMember::default();
                            member.member_id = StrBytes::from_string(m.id);
                            member.client_id = StrBytes::from_string(m.client_id);
                            member.client_host = StrBytes::from_string(m.host);
                            member.member_metadata = m.metadata;
                            member.member_assignment = m.assignment;
                            member
                        })
                        .collect();
                }
                None => {
                    let state = match self.client.list_groups(Some(name.0.as_str()), None) {
                        Ok(states) if !states.is_empty() => "Empty",
                        Ok(_) => "Dead",
                        Err(e) if e.broker_code() == Some(ErrorCode::UnknownGroup) => "Dead",
                        Err(e) => {
                            group.error_code = kafka_code(&e);
                            "Dead"
                        }
                    };
                    group.group_state = StrBytes::from_static_str(state);
                }
            }
            response.groups.push(group);
        }
        response
    }

    /// `DeleteGroups` (`kafka-consumer-groups --delete`): each group's committed offsets go,
    /// by the native `delete_group`, unless it has members: Kafka members of the gateway's
    /// coordinator, or native ones (`316 group_active`), both `NON_EMPTY_GROUP`. A group with no
    /// state is `GROUP_ID_NOT_FOUND`; one the user may not administer,
    /// `GROUP_AUTHORIZATION_FAILED`.
    fn delete_groups(&mut self, request: &DeleteGroupsRequest) -> DeleteGroupsResponse {
        let mut response = DeleteGroupsResponse::default();
        for name in &request.groups_names {
            let group = name.0.as_str();
            let has_members =
                self.door.coordinator.describe(group).is_some_and(|g| !g.members.is_empty());
            let error = if has_members {
                ResponseError::NonEmptyGroup.code()
            } else {
                match self.client.delete_group(group, None) {
                    Ok(()) => 0,
                    Err(e) => match e.broker_code() {
                        Some(ErrorCode::UnknownGroup) => ResponseError::GroupIdNotFound.code(),
                        Some(ErrorCode::GroupActive) => ResponseError::NonEmptyGroup.code(),
                        Some(ErrorCode::Forbidden) => {
                            ResponseError::GroupAuthorizationFailed.code()
                        }
                        Some(ErrorCode::InvalidGroupName) => ResponseError::InvalidGroupId.code(),
                        _ => kafka_code(&e),
                    },
                }
            };
            let mut result = DeletableGroupResult::default();
            result.group_id = name.clone();
            result.error_code = error;
            response.results.push(result);
        }
        response
    }

    /// `OffsetDelete` (`kafka-consumer-groups --delete-offsets`, the Java `AdminClient`'s
    /// `deleteConsumerGroupOffsets`, kafka-python's `delete_group_offsets`): the group's committed offsets on the
    /// partitions named go, as Kafka's coordinator removes them, by the native `delete_group`
    /// of the topic when every partition of it is named, else of each partition. A group with
    /// neither Kafka members nor state is `GROUP_ID_NOT_FOUND`; a partition the topic lacks,
    /// or of a topic that does not exist, `UNKNOWN_TOPIC_OR_PARTITION`; one of a topic the
    /// group's Kafka members subscribe to, or its native members read (`316 group_active`),
    /// `GROUP_SUBSCRIBED_TO_TOPIC`, and its offset stays. A partition without a committed offset
    /// is no error, as on Kafka. A user without `admin` on the group gets
    /// `GROUP_AUTHORIZATION_FAILED` for the whole request, before anything else is said.
    fn offset_delete(&mut self, request: &OffsetDeleteRequest) -> OffsetDeleteResponse {
        let group = request.group_id.0.as_str();
        let mut response = OffsetDeleteResponse::default();
        if self.rights.is_some() {
            // Who may change a group's offsets (`admin` on it) is the broker's to say, before
            // anything of the group is told, as Kafka checks first: a `delete_group` naming no
            // valid topic asks it and changes nothing, whatever the answer.
            let probe = Request::DeleteGroup { group, topic: Some(""), partition: None };
            if let Err(e) = self.client.call(&probe, |_| Ok(())) {
                if e.broker_code() == Some(ErrorCode::Forbidden) {
                    response.error_code = ResponseError::GroupAuthorizationFailed.code();
                    return response;
                }
            }
        }
        let subscribed = self.door.coordinator.subscribed_topics(group);
        let known = match self.client.list_groups(Some(group), None) {
            Ok(states) => !states.is_empty(),
            Err(e) if e.broker_code() == Some(ErrorCode::UnknownGroup) => false,
            Err(e) => {
                response.error_code = group_refusal(&e);
                return response;
            }
        };
        if subscribed.is_none() && !known {
            response.error_code = ResponseError::GroupIdNotFound.code();
            return response;
        }
        let topics = match self.client.topics() {
            Ok(topics) => topics,
            Err(e) => {
                response.error_code = kafka_code(&e);
                return response;
            }
        };
        let subscribed = subscribed.unwrap_or_default();
        for topic in &request.topics {
            let name = topic.name.0.as_str();
            let count = topics.iter().find(|t| t.name == name).map(|t| t.partitions);
            let mut codes: Vec<(i32, i16)> = topic
                .partitions
                .iter()
                .map(|p| {
                    let index = p.partition_index;
                    let code = match (count, u32::try_from(index)) {
                        (Some(count), Ok(index)) if index < count => {
                            if subscribed.iter().any(|t| t == name) {
                                ResponseError::GroupSubscribedToTopic.code()
                            } else {
                                0
                            }
                        }
                        _ => ResponseError::UnknownTopicOrPartition.code(),
                    };
                    (index, code)
                })
                .collect();
            // Each partition once, all below the topic's count.
            let mut chosen: Vec<u32> = codes
                .iter()
                .filter(|(_, code)| *code == 0)
                .filter_map(|(index, _)| u32::try_from(*index).ok())
                .collect();
            chosen.sort_unstable();
            chosen.dedup();
            let every = count.is_some_and(|count| chosen.len() == count as usize);
            let outcomes: Vec<(Option<u32>, client::Result<()>)> = if every {
                vec![(None, self.client.delete_group(group, Some(name)))]
            } else {
                chosen
                    .into_iter()
                    .map(|p| (Some(p), self.client.delete_group_partition(group, name, p)))
                    .collect()
            };
            // The refusals: of the whole topic (`None`), or by partition.
            let mut refused: HashMap<Option<u32>, i16> = HashMap::new();
            for (partition, outcome) in outcomes {
                let code = match outcome {
                    Ok(()) => 0,
                    // Nothing committed there: nothing to remove, as on Kafka.
                    Err(e) if e.broker_code() == Some(ErrorCode::UnknownGroup) => 0,
                    Err(e) if e.broker_code() == Some(ErrorCode::GroupActive) => {
                        ResponseError::GroupSubscribedToTopic.code()
                    }
                    Err(e) if e.broker_code() == Some(ErrorCode::Forbidden) => {
                        response.error_code = ResponseError::GroupAuthorizationFailed.code();
                        response.topics.clear();
                        return response;
                    }
                    Err(e) => kafka_code(&e),
                };
                if code != 0 {
                    refused.insert(partition, code);
                }
            }
            for (index, slot) in &mut codes {
                let own = u32::try_from(*index).ok().and_then(|p| refused.get(&Some(p)));
                if let (0, Some(code)) = (*slot, refused.get(&None).or(own)) {
                    *slot = *code;
                }
            }
            let mut answer = OffsetDeleteResponseTopic::default();
            answer.name = topic.name.clone();
            answer.partitions = codes
                .into_iter()
                .map(|(index, code)| {
                    let mut part = OffsetDeleteResponsePartition::default();
                    part.partition_index = index;
                    part.error_code = code;
                    part
                })
                .collect();
            response.topics.push(answer);
        }
        response
    }

    /// `OffsetFetch`: the broker group's committed offsets, partition by partition; -1 (none)
    /// where the group has no state on the partition. Without topics named, every partition the
    /// group has state on.
    fn offset_fetch(&mut self, request: &OffsetFetchRequest) -> OffsetFetchResponse {
        let group = request.group_id.0.as_str();
        let named = request.topics.iter().flatten().map(|t| t.name.0.as_str().to_owned()).collect();
        let refused = self.may_use_group_with(group, &[], named);
        if refused != 0 {
            let mut response = OffsetFetchResponse::default();
            response.error_code = refused;
            return response;
        }
        let states = match self.client.list_groups(Some(group), None) {
            Ok(states) => states,
            Err(e) if e.broker_code() == Some(ErrorCode::UnknownGroup) => Vec::new(),
            Err(e) => {
                let mut response = OffsetFetchResponse::default();
                response.error_code = kafka_code(&e);
                return response;
            }
        };
        let wanted: Vec<(TopicName, Vec<i32>)> = match &request.topics {
            Some(topics) => {
                topics.iter().map(|t| (t.name.clone(), t.partition_indexes.clone())).collect()
            }
            None => {
                let mut all: Vec<(TopicName, Vec<i32>)> = Vec::new();
                for state in &states {
                    let index = i32::try_from(state.partition).unwrap_or(i32::MAX);
                    match all.last_mut() {
                        Some((name, partitions)) if name.0.as_str() == state.topic => {
                            partitions.push(index);
                        }
                        _ => {
                            all.push((TopicName(StrBytes::from(state.topic.clone())), vec![index]))
                        }
                    }
                }
                all
            }
        };
        let mut response = OffsetFetchResponse::default();
        for (name, partitions) in wanted {
            let mut answer = OffsetFetchResponseTopic::default();
            for index in partitions {
                let mut part = OffsetFetchResponsePartition::default();
                part.partition_index = index;
                part.committed_offset = states
                    .iter()
                    .find(|s| {
                        s.topic == name.0.as_str() && i64::from(s.partition) == i64::from(index)
                    })
                    .map_or(-1, |state| offset(state.committed_offset));
                answer.partitions.push(part);
            }
            answer.name = name;
            response.topics.push(answer);
        }
        response
    }

    /// Every topic, from `list_topics` under the shared claim.
    fn topics(&mut self) -> client::Result<Vec<TopicInfo>> {
        self.claim.with(&mut *self.client, |client, token| client.list_topics(token))
    }

    /// `Metadata`: the gateway as the one broker, and the topics asked for (every topic when
    /// none is named), each with every partition it has, all led by the gateway.
    ///
    /// A request that names its topics and allows their creation (a producer's, as Kafka's
    /// `auto.create.topics.enable` does) is answered by creating each one that does not exist
    /// and learning each one's partition count ([`Call::produced_topic`]), neither of which
    /// needs a claim: producing through this
    /// door never waits for a logical broker. Any other is answered from `list_topics` under
    /// the shared claim; when no logical broker is free, its topics get
    /// `LEADER_NOT_AVAILABLE`, which Kafka clients retry.
    fn metadata(&mut self, request: &MetadataRequest, version: i16) -> MetadataResponse {
        let mut response = MetadataResponse::default();
        let mut broker = MetadataResponseBroker::default();
        broker.node_id = BrokerId(NODE_ID);
        broker.host = StrBytes::from_string(self.door.host.clone());
        broker.port = self.door.port;
        response.brokers = vec![broker];
        if version >= 2 {
            response.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
        }
        if version >= 1 {
            response.controller_id = BrokerId(NODE_ID);
        }
        let names = requested_names(request);
        // Each topic's partition count or Kafka error code, once known.
        let mut counts: Vec<Option<Result<u32, i16>>> = vec![None; names.len()];
        if request.topics.is_some() && request.allow_auto_topic_creation {
            for (name, count) in names.iter().zip(&mut counts) {
                match self.produced_topic(name) {
                    // A user who may not produce on the topic: what `list_topics` shows it.
                    Err(e) if e.broker_code() == Some(ErrorCode::Forbidden) => {}
                    other => *count = Some(other.map_err(|e| kafka_code(&e))),
                }
            }
        }
        let listed = if request.topics.is_some() && counts.iter().all(Option::is_some) {
            Ok(Vec::new())
        } else {
            self.topics().map_err(|e| kafka_code(&e))
        };
        let names = match (&request.topics, &listed) {
            (None, Ok(known)) => known.iter().map(|t| t.name.clone()).collect(),
            _ => names,
        };
        counts.resize(names.len(), None);
        response.topics = names
            .into_iter()
            .zip(counts)
            .map(|(name, count)| {
                let count = count.unwrap_or_else(|| match &listed {
                    Ok(known) => known
                        .iter()
                        .find(|t| t.name == name)
                        .map(|t| t.partitions)
                        .ok_or(ResponseError::UnknownTopicOrPartition.code()),
                    Err(code) => Err(*code),
                });
                match count {
                    Ok(partitions) => topic_metadata(name, 0, partitions),
                    Err(code) => topic_metadata(name, code, 0),
                }
            })
            .collect();
        response
    }

    /// How many partitions `topic` has, for a producer's `Metadata`, the topic created when it
    /// does not exist: from `list_topics`, and for a missing topic by `create_topic` without a
    /// count, which gives it the broker's `--partitions` (Kafka's `num.partitions`, what its
    /// `auto.create.topics.enable` gives). Neither needs a claim. A user who may produce on the
    /// topic but not administer it can make it only by appending, as a native producer does:
    /// then the probe of [`Call::partition_count`] makes it.
    ///
    /// # Errors
    /// The broker's refusal, `forbidden` among them for a user who may not produce on the
    /// topic.
    fn produced_topic(&mut self, topic: &str) -> client::Result<u32> {
        match self.existing_count(topic) {
            Err(e) if e.broker_code() == Some(ErrorCode::UnknownTopic) => {
                match self.client.create_topic(topic, None, Retention::default()) {
                    // Created at the same moment by someone else, with their count.
                    Err(e) if e.broker_code() == Some(ErrorCode::TopicExists) => {
                        self.existing_count(topic)
                    }
                    Err(e) if e.broker_code() == Some(ErrorCode::Forbidden) => {
                        self.partition_count(topic)
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// `Produce`: each partition's record batches appended as one native `append` to that
    /// partition, all or nothing; a partition the topic lacks is `UNKNOWN_TOPIC_OR_PARTITION`
    /// and stores nothing. Compressed batches are decompressed here, since the broker stores
    /// messages, not batches, and fetches answer them uncompressed.
    fn produce(&mut self, request: &ProduceRequest) -> ProduceResponse {
        let mut response = ProduceResponse::default();
        for topic in &request.topic_data {
            let mut answer = TopicProduceResponse::default();
            answer.name = topic.name.clone();
            for partition in &topic.partition_data {
                let mut part = PartitionProduceResponse::default();
                part.index = partition.index;
                part.base_offset = -1;
                part.log_append_time_ms = -1;
                part.log_start_offset = -1;
                let result = match self.partition_index(partition.index) {
                    Ok(index) => self.append(&topic.name.0, index, partition.records.clone()),
                    Err(code) => Err(code),
                };
                match result {
                    Ok(base) => part.base_offset = base,
                    Err(code) => part.error_code = code,
                }
                answer.partition_responses.push(part);
            }
            response.responses.push(answer);
        }
        response
    }

    /// Appends the records of `records` to `topic`'s `partition`; the first offset, or a Kafka
    /// error code.
    ///
    /// Compressed batches are decompressed first, their bytes reserved from the request budget
    /// as they come (at most a frame's share, [`Limits::max_frame_bytes`], for one request),
    /// and given back once appended.
    ///
    /// [`Limits::max_frame_bytes`]: crate::limits::Limits::max_frame_bytes
    fn append(
        &mut self,
        topic: &StrBytes,
        partition: u32,
        records: Option<Bytes>,
    ) -> Result<i64, i16> {
        let records = records.unwrap_or_default();
        let (id, epoch, sequence, count) =
            crate::batch::producer(&records).unwrap_or((-1, -1, -1, 0));
        let producers = &self.door.producers;
        let place = (topic.as_str(), partition);
        match producers.check(id, epoch, sequence, count, place) {
            Check::Fresh => {}
            Check::Duplicate(offset) => return Ok(offset),
            Check::Refused(code) => return Err(code),
        }
        let limits = &self.door.limits;
        let mut held = limits.nothing();
        let deadline = std::time::Instant::now() + limits.request_read_timeout;
        let share = limits.max_frame_bytes();
        let mut room = |bytes: usize| {
            if held.bytes() + bytes > share {
                return Err(ResponseError::RecordListTooLarge.code());
            }
            if !limits.grow(&mut held, bytes, deadline) {
                return Err(ResponseError::RequestTimedOut.code());
            }
            Ok(())
        };
        let inflated = crate::batch::inflate(&records, &mut room)?;
        let messages = crate::batch::messages_in(&records, &inflated, &mut room)?;
        match self.client.append(topic.as_str(), Some(partition), messages) {
            Ok(appended) => {
                let first = i64::try_from(appended.first_offset)
                    .map_err(|_| ResponseError::UnknownServerError.code())?;
                producers.appended(id, epoch, sequence, count, place, first);
                Ok(first)
            }
            Err(e) => Err(kafka_code(&e)),
        }
    }

    /// `ListOffsets`: the earliest (-2) and latest (-1) offsets of each partition asked for,
    /// and for a timestamp (≥ 0) the first offset of the partition whose message was appended
    /// at or after it (-1 when none was), as Kafka answers `offsets_for_times`.
    fn list_offsets(&mut self, request: &ListOffsetsRequest) -> ListOffsetsResponse {
        let topics = self.topics();
        let mut response = ListOffsetsResponse::default();
        for topic in &request.topics {
            let mut answer = ListOffsetsTopicResponse::default();
            answer.name = topic.name.clone();
            for partition in &topic.partitions {
                let mut part = ListOffsetsPartitionResponse::default();
                part.partition_index = partition.partition_index;
                part.timestamp = -1;
                part.offset = -1;
                let unknown = ResponseError::UnknownTopicOrPartition.code();
                let index = u32::try_from(partition.partition_index).map_err(|_| unknown);
                let info = match &topics {
                    Err(e) => Err(kafka_code(e)),
                    Ok(all) => all.iter().find(|t| t.name == topic.name.0.as_str()).ok_or(unknown),
                };
                let found = info.and_then(|info| {
                    let index = index?;
                    Ok((&info.name, index, info.offsets(index).ok_or(unknown)?))
                });
                match (found, partition.timestamp) {
                    (Err(code), _) => part.error_code = code,
                    (Ok((_, _, (first, _))), -2) => part.offset = offset(first),
                    (Ok((_, _, (_, next))), -1) => part.offset = offset(next),
                    (Ok((name, index, range)), time) => match u64::try_from(time) {
                        Ok(time) => match self.offset_for_time(name, index, range, time) {
                            Ok(Some((found, stamp))) => {
                                part.offset = offset(found);
                                part.timestamp = offset(stamp);
                            }
                            Ok(None) => {}
                            Err(e) => part.error_code = kafka_code(&e),
                        },
                        Err(_) => part.error_code = ResponseError::InvalidRequest.code(),
                    },
                }
                answer.partitions.push(part);
            }
            response.topics.push(answer);
        }
        response
    }

    /// The first message of `topic`'s `partition`, whose offsets run over `range` (first kept,
    /// next), appended at or after `time` (ms since the epoch), with its timestamp; `None` when
    /// every message is older.
    ///
    /// A binary search over offsets with one-message native fetches, about log2(messages)
    /// of them: the broker stamps messages in append order from its clock, so timestamps
    /// rise with offsets (save when the clock is set back, when the answer is one of the
    /// offsets around the jump). The native protocol needs no new request for it.
    fn offset_for_time(
        &mut self,
        topic: &str,
        partition: u32,
        range: (u64, u64),
        time: u64,
    ) -> client::Result<Option<(u64, u64)>> {
        let (mut low, mut high) = range;
        let mut found = None;
        while low < high {
            let middle = low + (high - low) / 2;
            let stamp = self.claim.with(&mut *self.client, |client, token| {
                let fetch = Fetch {
                    claim: token,
                    topic,
                    partition,
                    offset: middle,
                    max_messages: 1,
                    max_bytes: 0,
                    wait_ms: 0,
                    batches: false,
                };
                client.fetch(fetch, |batch| {
                    Ok(batch.messages.first().map(|m| (m.offset, m.timestamp)))
                })
            })?;
            // Retention may have removed messages since `list_topics`: search above them.
            let Some((at, stamp)) = stamp else { break };
            if stamp >= time {
                found = Some((at, stamp));
                high = middle;
            } else {
                low = at + 1;
            }
        }
        Ok(found)
    }

    /// `Fetch`: each partition read with a native `fetch`. When none has anything, the
    /// request waits up to `max_wait_ms` on the broker's held replies (a long poll, as the
    /// native `fetch` does): a single partition's fetch is held the whole wait; with several,
    /// each is held in turn for a slice ([`hold_slice`]) and the others are read again after
    /// it, so that a message on any of them is answered within a slice, at a cost of a few
    /// dozen native fetches a second while nothing comes.
    fn fetch(&mut self, request: &FetchRequest, version: i16) -> FetchResponse {
        let max_wait = u64::try_from(request.max_wait_ms.max(0))
            .unwrap_or(0)
            .min(u64::try_from(self.client.max_hold().as_millis()).unwrap_or(u64::MAX));
        let partitions: Vec<(TopicName, i32, i64, i32)> = request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.topic.clone(), p.partition, p.fetch_offset, p.partition_max_bytes))
            })
            .collect();
        let mut datas: Vec<PartitionData> =
            partitions.iter().map(|p| self.fetch_partition(p, 0, version)).collect();
        let empty =
            |datas: &[PartitionData]| datas.iter().all(|d| d.error_code == 0 && !has_records(d));
        let deadline = Instant::now() + Duration::from_millis(max_wait);
        let slice = hold_slice(partitions.len(), max_wait);
        let mut turn = 0;
        while empty(&datas) && !partitions.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let left = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
            if left == 0 {
                break;
            }
            let held = turn % partitions.len();
            datas[held] = self.fetch_partition(&partitions[held], slice.min(left), version);
            if partitions.len() == 1 || !empty(&datas) {
                break;
            }
            for (i, partition) in partitions.iter().enumerate().filter(|(i, _)| *i != held) {
                datas[i] = self.fetch_partition(partition, 0, version);
            }
            turn += 1;
        }
        let mut response = FetchResponse::default();
        for ((topic, ..), data) in partitions.into_iter().zip(datas) {
            match response.responses.last_mut() {
                Some(last) if last.topic == topic => last.partitions.push(data),
                _ => {
                    let mut answer = FetchableTopicResponse::default();
                    answer.topic = topic;
                    answer.partitions.push(data);
                    response.responses.push(answer);
                }
            }
        }
        response
    }

    /// One partition of a `Fetch`, waiting up to `wait_ms` when nothing is there.
    fn fetch_partition(
        &mut self,
        (topic, partition, fetch_offset, max_bytes): &(TopicName, i32, i64, i32),
        wait_ms: u64,
        version: i16,
    ) -> PartitionData {
        let mut data = PartitionData::default();
        data.partition_index = *partition;
        data.high_watermark = -1;
        let index = match self.partition_index(*partition) {
            Ok(index) => index,
            Err(code) => {
                data.error_code = code;
                return data;
            }
        };
        let Ok(start) = u64::try_from(*fetch_offset) else {
            data.error_code = ResponseError::OffsetOutOfRange.code();
            return data;
        };
        let max_bytes = u32::try_from(*max_bytes).unwrap_or(0);
        let name = topic.0.as_str();
        let result = self.claim.with(&mut *self.client, |client, token| {
            let fetch = Fetch {
                claim: token,
                topic: name,
                partition: index,
                offset: start,
                max_messages: 10_000,
                max_bytes,
                wait_ms,
                batches: false,
            };
            client.fetch(fetch, |batch| {
                // No messages: an empty record set, never a null one, which librdkafka
                // refuses as a bad message.
                Ok((crate::batch::encode(&batch.messages), batch.end_offset))
            })
        });
        match result {
            Ok((records, end)) => {
                data.high_watermark = offset(end);
                data.last_stable_offset = offset(end);
                data.records = Some(records);
            }
            Err(e) => {
                if let ClientError::Broker { range: Some((first, next)), .. } = &e {
                    if version >= 5 {
                        data.log_start_offset = offset(*first);
                    }
                    data.high_watermark = offset(*next);
                }
                data.error_code = kafka_code(&e);
            }
        }
        data
    }
}

/// `InitProducerId`: a producer id of its own, epoch 0, whose batches' sequence numbers
/// [`crate::idempotence::Producers`] checks, so that a retried batch is not stored twice.
///
/// A transactional producer (one with a `transactional.id`) is refused at once with
/// [`TRANSACTIONS_REFUSED`]: the door has no transactions, and a client that waited for one
/// would time out after a minute with nothing said.
fn init_producer_id(
    request: &InitProducerIdRequest,
    producers: &crate::idempotence::Producers,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    if let Some(id) = request.transactional_id.as_ref().filter(|id| !id.is_empty()) {
        tracing::info!(
            "refusing the transactional producer {:?}: the Kafka door has no transactions",
            id.as_str()
        );
        response.error_code = TRANSACTIONS_REFUSED.code();
        response.producer_id = ProducerId(-1);
        response.producer_epoch = -1;
        return response;
    }
    response.producer_id = ProducerId(producers.new_id());
    response.producer_epoch = 0;
    response
}

/// The answer to a transactional producer's `InitProducerId`.
pub const TRANSACTIONS_REFUSED: ResponseError = ResponseError::TransactionalIdAuthorizationFailed;

/// The partition count and retention a `CreateTopics` entry asks for, or why it cannot be
/// made. Replica assignments are refused, as before partitions: the gateway is the one node.
fn creatable(topic: &CreatableTopic) -> Result<(Option<u32>, Retention), i16> {
    let partitions = match topic.num_partitions {
        -1 => None,
        n => Some(
            u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_PARTITIONS).contains(n))
                .ok_or(ResponseError::InvalidPartitions.code())?,
        ),
    };
    if !topic.assignments.is_empty() {
        return Err(ResponseError::InvalidPartitions.code());
    }
    if !matches!(topic.replication_factor, -1 | 1) {
        return Err(ResponseError::InvalidReplicationFactor.code());
    }
    let mut retention = Retention::default();
    for config in &topic.configs {
        let value = config.value.as_ref().map(|v| v.as_str().parse::<i64>());
        let limit = match value {
            Some(Ok(-1)) => None,
            Some(Ok(n)) => Some(u64::try_from(n).map_err(|_| ResponseError::InvalidConfig.code())?),
            _ => return Err(ResponseError::InvalidConfig.code()),
        };
        match config.name.as_str() {
            "retention.ms" => retention.ms = limit,
            "retention.bytes" => retention.bytes = limit,
            _ => return Err(ResponseError::InvalidConfig.code()),
        }
    }
    Ok((partitions, retention))
}

/// How long one partition's fetch is held, in milliseconds, when a `Fetch` of `partitions`
/// partitions waits up to `max_wait` for a message: the whole wait for one partition; for
/// several, [`SLICE_PER_PARTITION_MS`] per partition but at least [`MIN_SLICE_MS`], so that
/// an idle consumer costs about 1000 / `SLICE_PER_PARTITION_MS` native fetches a second
/// however many partitions it reads.
fn hold_slice(partitions: usize, max_wait: u64) -> u64 {
    if partitions <= 1 {
        return max_wait;
    }
    let count = u64::try_from(partitions).unwrap_or(u64::MAX);
    count.saturating_mul(SLICE_PER_PARTITION_MS).max(MIN_SLICE_MS).min(max_wait)
}

/// The hold of one partition's fetch, per partition of a `Fetch` that waits on several.
const SLICE_PER_PARTITION_MS: u64 = 20;

/// The shortest hold of one partition's fetch when a `Fetch` waits on several: a message on
/// another partition waits at most this long (or a little more with many partitions).
const MIN_SLICE_MS: u64 = 100;

/// Whether a fetched partition carries any record.
fn has_records(data: &PartitionData) -> bool {
    data.records.as_ref().is_some_and(|r| !r.is_empty())
}

/// The names a `Metadata` request asks for.
fn requested_names(request: &MetadataRequest) -> Vec<String> {
    request
        .topics
        .iter()
        .flatten()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str().to_owned()))
        .collect()
}

/// A topic's `Metadata`: its `partitions`, all led by the gateway, or `code`. Public for the
/// null sink `scripts/bench.sh --kafka` measures the door against, which shows topics alike.
pub fn topic_metadata(name: String, code: i16, partitions: u32) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(TopicName(StrBytes::from_string(name)));
    topic.error_code = code;
    if code == 0 {
        topic.partitions = (0..partitions.min(MAX_PARTITIONS))
            .map(|index| {
                let mut partition = MetadataResponsePartition::default();
                partition.partition_index = i32::try_from(index).unwrap_or(i32::MAX);
                partition.leader_id = BrokerId(NODE_ID);
                partition.replica_nodes = vec![BrokerId(NODE_ID)];
                partition.isr_nodes = vec![BrokerId(NODE_ID)];
                partition
            })
            .collect();
    }
    topic
}

/// A failed native call as a Kafka error code and the broker's sentence, for the responses
/// that carry an error message.
/// The Kafka error code of a refused group request: `forbidden` is the group's
/// (`GROUP_AUTHORIZATION_FAILED`), since group requests need rights on the group.
fn group_refusal(error: &ClientError) -> i16 {
    match error.broker_code() {
        Some(ErrorCode::Forbidden) => ResponseError::GroupAuthorizationFailed.code(),
        _ => kafka_code(error),
    }
}

fn refusal(error: &ClientError) -> (i16, Option<StrBytes>) {
    let message = match error {
        ClientError::Broker { reason, .. } => reason.clone(),
        other => other.to_string(),
    };
    (kafka_code(error), Some(StrBytes::from_string(message)))
}

/// A broker offset as Kafka's signed one.
fn offset(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The Kafka error code for a failed native call.
pub fn kafka_code(error: &ClientError) -> i16 {
    let code = match error.broker_code() {
        Some(ErrorCode::UnknownTopic | ErrorCode::UnknownPartition) => {
            ResponseError::UnknownTopicOrPartition
        }
        Some(ErrorCode::InvalidPartitions) => ResponseError::InvalidPartitions,
        Some(ErrorCode::OffsetOutOfRange) => ResponseError::OffsetOutOfRange,
        Some(ErrorCode::MessageTooLarge) => ResponseError::MessageTooLarge,
        Some(ErrorCode::InvalidTopicName) => ResponseError::InvalidTopicException,
        Some(ErrorCode::Forbidden) => ResponseError::TopicAuthorizationFailed,
        Some(ErrorCode::TopicExists) => ResponseError::TopicAlreadyExists,
        Some(ErrorCode::LimitExceeded) => ResponseError::RecordListTooLarge,
        Some(ErrorCode::NoBrokerAvailable | ErrorCode::BrokerBusy) => {
            ResponseError::LeaderNotAvailable
        }
        Some(ErrorCode::Overloaded) => ResponseError::ThrottlingQuotaExceeded,
        Some(ErrorCode::ShuttingDown) => ResponseError::NotLeaderOrFollower,
        // A JetStream the broker cannot reach: Kafka's retriable "the log cannot be reached";
        // a producer retries it (an unconfirmed append may then be stored twice).
        Some(ErrorCode::StoreUnavailable) => ResponseError::KafkaStorageError,
        Some(_) => ResponseError::UnknownServerError,
        None => match error {
            ClientError::Unreachable { .. } | ClientError::Unconfirmed { .. } => {
                ResponseError::RequestTimedOut
            }
            _ => ResponseError::UnknownServerError,
        },
    };
    code.code()
}

/// How long a native call may wait on the broker before the Kafka request gets
/// `REQUEST_TIMED_OUT`.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::messages as decode_records;
    use bytes::BytesMut;

    /// An uncompressed batch of `count` records, then its attributes set to `compression`
    /// and its record count to `claimed`, with the CRC made right again.
    fn batch(count: usize, compression: i16, claimed: i32) -> Bytes {
        let values: Vec<String> = (0..count).map(|i| format!("v{i}")).collect();
        let messages: Vec<protocol::Message<'_>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| protocol::Message {
                offset: i as u64,
                timestamp: 1_000,
                key: Some(b"k"),
                value: v.as_bytes(),
                headers: Vec::new(),
            })
            .collect();
        let mut bytes = BytesMut::from(&crate::batch::encode(&messages)[..]);
        // Byte layout of a v2 batch: base offset 8, length 4, leader epoch 4, magic 1, CRC 4,
        // then what the CRC covers: attributes 2 at 21, ..., record count 4 at 57.
        let attributes = i16::from_be_bytes([bytes[21], bytes[22]]) & !0x7 | compression;
        bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
        bytes[57..61].copy_from_slice(&claimed.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes.freeze()
    }

    #[test]
    fn an_unreachable_store_is_a_retriable_kafka_error() {
        let refused = |code| ClientError::Broker { code, reason: String::new(), range: None };
        let code = kafka_code(&refused(ErrorCode::StoreUnavailable));
        assert_eq!(code, ResponseError::KafkaStorageError.code());
        assert!(ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable()));
        assert_eq!(
            kafka_code(&refused(ErrorCode::InternalError)),
            ResponseError::UnknownServerError.code()
        );
    }

    #[test]
    fn metadata_lists_every_partition_led_by_the_gateway() {
        let topic = topic_metadata("t".into(), 0, 3);
        let indexes: Vec<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
        assert_eq!(indexes, vec![0, 1, 2]);
        assert!(topic.partitions.iter().all(|p| p.leader_id == BrokerId(NODE_ID)));
        let refused = topic_metadata("t".into(), ResponseError::UnknownTopicOrPartition.code(), 3);
        assert!(refused.partitions.is_empty());
    }

    #[test]
    fn create_topics_takes_1_to_10000_partitions_and_minus_one_for_the_broker_s_default() {
        let asking = |n: i32| {
            let mut topic = CreatableTopic::default();
            topic.num_partitions = n;
            topic.replication_factor = -1;
            creatable(&topic).map(|(partitions, _)| partitions)
        };
        assert_eq!(asking(-1), Ok(None));
        assert_eq!(asking(1), Ok(Some(1)));
        assert_eq!(asking(3), Ok(Some(3)));
        assert_eq!(asking(10_000), Ok(Some(10_000)));
        let invalid = Err(ResponseError::InvalidPartitions.code());
        for n in [0, -2, 10_001, i32::MAX, i32::MIN] {
            assert_eq!(asking(n), invalid, "{n}");
        }
    }

    #[test]
    fn a_fetch_of_several_partitions_holds_each_for_a_slice() {
        assert_eq!(hold_slice(0, 500), 500);
        assert_eq!(hold_slice(1, 500), 500);
        assert_eq!(hold_slice(3, 500), MIN_SLICE_MS);
        assert_eq!(hold_slice(10, 500), 10 * SLICE_PER_PARTITION_MS);
        assert_eq!(hold_slice(1_000, 500), 500);
        assert_eq!(hold_slice(3, 40), 40);
    }

    #[test]
    fn partition_errors_become_kafka_s() {
        let refused = |code| ClientError::Broker { code, reason: String::new(), range: None };
        assert_eq!(
            kafka_code(&refused(ErrorCode::UnknownPartition)),
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(
            kafka_code(&refused(ErrorCode::InvalidPartitions)),
            ResponseError::InvalidPartitions.code()
        );
    }

    #[test]
    fn an_uncompressed_batch_decodes_to_its_records() {
        let bytes = batch(3, 0, 3);
        let records = decode_records(&bytes).expect("decodes");
        let values: Vec<_> = records.iter().map(|r| r.value).collect();
        assert_eq!(values, vec![&b"v0"[..], b"v1", b"v2"]);
        assert_eq!(records[0].key, Some(&b"k"[..]));
    }

    #[test]
    fn a_compressed_batch_gets_unsupported_compression_type() {
        for codec in 1..=4 {
            assert_eq!(
                decode_records(&batch(2, codec, 2)).map(|_| ()),
                Err(ResponseError::UnsupportedCompressionType.code())
            );
        }
    }

    #[test]
    fn a_forged_record_count_is_corrupt_not_an_allocation() {
        assert_eq!(
            decode_records(&batch(1, 0, i32::MAX)).map(|_| ()),
            Err(ResponseError::CorruptMessage.code())
        );
        assert_eq!(
            decode_records(&batch(1, 0, -1)).map(|_| ()),
            Err(ResponseError::CorruptMessage.code())
        );
    }

    #[test]
    fn a_bad_crc_or_garbage_is_corrupt() {
        let mut bytes = BytesMut::from(&batch(2, 0, 2)[..]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert_eq!(decode_records(&bytes).map(|_| ()), Err(ResponseError::CorruptMessage.code()));
        assert_eq!(
            decode_records(b"garbage").map(|_| ()),
            Err(ResponseError::CorruptMessage.code())
        );
    }

    /// PROTOCOL.md's table of the Kafka door's APIs, as (name, key, low, high) rows.
    fn documented() -> Vec<(String, i16, i16, i16)> {
        let spec = include_str!("../../protocol/PROTOCOL.md");
        let section = spec.split("## 18. The Kafka door").nth(1).expect("the Kafka section");
        let mut rows = Vec::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let versions: Vec<(i16, i16)> = cells[2]
                .split(", ")
                .map(|v| match v.split_once('-') {
                    Some((low, high)) => (low.parse().expect("low"), high.parse().expect("high")),
                    None => (v.parse().expect("version"), v.parse().expect("version")),
                })
                .collect();
            let apis: Vec<(String, i16)> = cells[1]
                .split("), ")
                .map(|api| {
                    let (name, key) = api.split_once(" (").expect("`Name` (key)");
                    let key = key.trim_end_matches(')').parse().expect("key");
                    (name.trim_matches('`').to_owned(), key)
                })
                .collect();
            assert_eq!(apis.len(), versions.len(), "{line}");
            for ((name, key), (low, high)) in apis.into_iter().zip(versions) {
                rows.push((name, key, low, high));
            }
        }
        rows
    }

    #[test]
    fn protocol_md_lists_exactly_the_apis_and_versions_api_versions_gives() {
        let mut spoken: Vec<_> = APIS
            .iter()
            .map(|(api, low, high)| (name(*api).to_owned(), *api as i16, *low, *high))
            .collect();
        let mut written = documented();
        spoken.sort_by_key(|row| row.1);
        written.sort_by_key(|row| row.1);
        assert_eq!(written, spoken);
    }
}
