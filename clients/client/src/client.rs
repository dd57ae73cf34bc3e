//! A connection to the broker: one REQ socket, waits that always end, and a fresh socket after
//! a timeout (the "lazy pirate" pattern), on the next endpoint when several are given.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use protocol::batch::{self, Batches};
use protocol::{
    decode_response, encode_request_with_origin, Append, BrokerStatus, ErrorCode, Fetch,
    GroupFetch, GroupInfo, GroupStart, Message, NewMessage, Placement, Request, ResetTo, Response,
    Retention, Sequenced, TopicInfo, MAX_FETCH_MESSAGES, MAX_WAIT_MS,
};
use tracing::debug;

use crate::endpoints::Endpoints;
use crate::idempotence::COPY_WINDOW;
use crate::security::{Credentials, Handshake};
use crate::{ClientError, Result, Shutdown};

/// How long a request waits for its reply unless told otherwise (`--timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest single wait on the socket, so that Ctrl-C is noticed within this time.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// How long the broker may stay silent before the user is told what the program waits for.
const NOTE_AFTER: Duration = Duration::from_secs(1);

/// Whether the "waiting for the broker" note has been printed since the last reply, by any
/// client of the process: a program says it once, not once per socket.
static WAIT_NOTED: AtomicBool = AtomicBool::new(false);

/// A client of a broker endpoint, or of one of several broker processes sharing their topics.
///
/// The timeout is the whole budget of an endpoint's silence, retries included: from the first
/// request it left unanswered, every request to it waits at most until the timeout has run out
/// (or, for a request asking the broker to hold it longer than half the timeout, that hold plus
/// half the timeout). So once the broker has failed to answer, what follows (giving a claim
/// back) fails at once instead of waiting again, and a program gives up within its timeout.
/// Callers keep the holds they ask for within [`Client::max_hold`]. After a second of silence a
/// note on standard error says what the program waits for, once. When no reply comes, the REQ
/// socket cannot be used again, so it is closed and a new one connected: the next request
/// starts clean. Requests that are safe to repeat (`status`, `list_topics`, `fetch`, `renew`,
/// the group requests, and an idempotent append: one marked with a producer and a sequence,
/// [`Client::append_sequenced`]) get one retry on a fresh socket within the same budget; a plain
/// `append` never does, because the lost reply may belong to an append the broker carried out
/// (a copy would be stored twice, where the broker answers a marked copy with the first one's
/// offsets), and `claim` never does on the same endpoint, because a second claim could hold a
/// second logical broker. A group fetch whose reply was lost delivered messages nobody saw: they are pending,
/// and come again once their ack timeout runs out, so a retry loses nothing (delivery is at
/// least once anyway).
///
/// With several endpoints ([`Client::connect_to`]), the client talks to one at a time, the
/// first to begin with. The fresh socket made after a request got no reply connects to the next
/// endpoint (after the last, the first), and a line on standard error says so; so does a
/// request safe to repeat that a stopping broker process answered `shutting_down`. Each endpoint
/// has a budget of its own, counted from the first request it left unanswered; a reply from any
/// of them ends every silence. A request safe to repeat is tried once on each endpoint in turn,
/// every try but the last with half of what is left of its endpoint's budget: with one of two
/// broker processes dead, it goes on through the other within half the timeout. A claim is
/// tried once on each endpoint in the same way: a claim a slow process granted after all costs
/// its logical broker for a lease, which nobody renews, where not trying the next endpoint
/// would leave a program unable to start while the first process is down. A plain append that
/// got no reply is not sent again (its error says its messages may or may not have been
/// stored), but the next request goes to the next endpoint with a fresh budget. When every endpoint is
/// silent, a program gives up within the timeout for each endpoint. Claim tokens belong to the
/// broker process that gave them: after a move, requests under an old token get `302
/// unknown_claim`, and a reader claims again.
pub struct Client {
    /// Owns the sockets' I/O threads.
    context: zmq::Context,
    /// The REQ socket of the present attempt; replaced after a timeout.
    socket: zmq::Socket,
    /// How the client logs in, on every socket it opens.
    credentials: Credentials,
    /// The present socket's handshake, watched for a refused login.
    handshake: Handshake,
    /// Where the broker processes are, and which one the socket is connected to.
    endpoints: Endpoints,
    /// How long to wait for a reply beyond any wait the request asks for.
    timeout: Duration,
    /// When set, waits end early with [`ClientError::Interrupted`] once it is signalled.
    shutdown: Option<Shutdown>,
    /// The encoded request, kept to reuse its allocation.
    frame: Vec<u8>,
    /// For each endpoint, by position, when its present silence began: the start of the oldest
    /// request it left unanswered since the last reply from any endpoint. `None` after a reply.
    silences: Vec<Option<Instant>>,
    /// When set, waits end with a broken-pipe error as soon as standard output is closed, so
    /// that a reader gone away (`consumer follow t | head -1`) is noticed during a wait.
    watch_output: bool,
    /// Whether waits say nothing on standard error: a client working behind a menu.
    quiet: bool,
    /// The end user's address a door in between gives with each request, as `origin`, for
    /// the broker's audit log; `None` for a client acting for itself.
    origin: Option<String>,
    /// Whether the last call sent its request again after a try got no reply: for an
    /// idempotent append, that try may have stored it whatever the last reply says.
    retried_unanswered: bool,
}

/// A logical broker held under a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    /// The logical broker's id.
    pub broker: u32,
    /// The token every request under the claim carries.
    pub token: u64,
    /// How long the claim lasts without a request under it.
    pub lease: Duration,
}

/// Where an append put its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The partition of the first message.
    pub partition: u32,
    /// The first message's offset in `partition`.
    pub first_offset: u64,
    /// The offset of the last message that went to `partition`.
    pub last_offset: u64,
    /// When the messages went to several partitions: each one's offsets; empty otherwise.
    pub placed: Vec<Placement>,
}

/// What one fetch returned, borrowed from the reply frame.
#[derive(Debug)]
pub struct Batch<'a> {
    /// The partition read.
    pub partition: u32,
    /// The messages, in offset order; empty when none was there in time.
    pub messages: Vec<Message<'a>>,
    /// The offset to fetch from next.
    pub next_offset: u64,
    /// The topic's next offset when the broker replied.
    pub end_offset: u64,
}

/// What a group fetch delivered, borrowed from the reply frame.
#[derive(Debug)]
pub struct Delivery<'a> {
    /// The partition every message is of.
    pub partition: u32,
    /// The messages, in offset order; empty when nothing was there in time.
    pub messages: Vec<Message<'a>>,
    /// The offsets among them that had been delivered before and not acknowledged in time.
    pub redelivered: Vec<u64>,
    /// The group's committed offset on the topic.
    pub committed_offset: u64,
    /// The topic's next offset.
    pub end_offset: u64,
    /// Where the group was reset to since this member's previous group fetch, if it was.
    pub reset_offset: Option<u64>,
}

/// A group joined on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The group's committed offset on the topic (on partition 0).
    pub committed_offset: u64,
    /// The topic's next offset (partition 0's).
    pub end_offset: u64,
    /// How many members the group has on the topic, this one included.
    pub members: u32,
    /// Whether the join created the group on the topic.
    pub created: bool,
    /// How long a delivered message waits for its acknowledgement.
    pub ack_timeout: Duration,
    /// How many partitions the topic has: a reader shows each message's when several.
    pub partitions: u32,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// How many of the offsets were pending (the others had been acknowledged already).
    pub acked: u64,
    /// The group's committed offset on the topic now.
    pub committed_offset: u64,
}

impl Client {
    /// Connects to `endpoint` (ZeroMQ connects lazily: a broker that is not there yet is only
    /// noticed when a request gets no reply).
    ///
    /// # Errors
    /// [`ClientError::Connect`] when the endpoint is not one ZeroMQ can connect to.
    pub fn connect(endpoint: &str, timeout: Duration) -> Result<Client> {
        Client::connect_as(endpoint, timeout, Credentials::None)
    }

    /// Connects to `endpoint` logging in with `credentials`, as [`Client::connect`] does.
    ///
    /// # Errors
    /// As [`Client::connect`]; [`ClientError::Connect`] too when the credentials cannot be set
    /// (a libzmq without CURVE).
    pub fn connect_as(
        endpoint: &str,
        timeout: Duration,
        credentials: Credentials,
    ) -> Result<Client> {
        Client::connect_to(Endpoints::one(endpoint), timeout, credentials)
    }

    /// Connects to the endpoint of `endpoints` in use, logging in with `credentials`, and
    /// moves to the next one whenever a request gets no reply (see [`Client`]).
    ///
    /// # Errors
    /// As [`Client::connect_as`].
    pub fn connect_to(
        endpoints: Endpoints,
        timeout: Duration,
        credentials: Credentials,
    ) -> Result<Client> {
        let context = zmq::Context::new();
        let (socket, handshake) =
            open_socket(&context, endpoints.present(), timeout, &credentials)?;
        Ok(Client {
            context,
            socket,
            credentials,
            handshake,
            silences: vec![None; endpoints.len()],
            endpoints,
            timeout,
            shutdown: None,
            frame: Vec::new(),
            watch_output: false,
            quiet: false,
            origin: None,
            retried_unanswered: false,
        })
    }

    /// Makes waits for replies end early once `shutdown` is signalled. `append`, `release` and
    /// `ack` still run to their end (bounded by the timeout), so that what was read before Ctrl-C
    /// is sent, a claim is given back and what was processed is acknowledged.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Client {
        self.shutdown = Some(shutdown);
        self
    }

    /// Another client of the same endpoints with its own socket, for use on another thread;
    /// it starts on the endpoint this one uses now (where this one's claim is known).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn sibling(&self) -> Result<Client> {
        let (socket, handshake) =
            open_socket(&self.context, self.endpoint(), self.timeout, &self.credentials)?;
        Ok(Client {
            context: self.context.clone(),
            socket,
            credentials: self.credentials.clone(),
            handshake,
            endpoints: self.endpoints.clone(),
            timeout: self.timeout,
            shutdown: self.shutdown.clone(),
            frame: Vec::new(),
            silences: vec![None; self.endpoints.len()],
            watch_output: self.watch_output,
            quiet: self.quiet,
            origin: None,
            retried_unanswered: false,
        })
    }

    /// What a [`crate::Pipeline`] of this client needs: its ZeroMQ context, a DEALER socket
    /// connected to the endpoint in use with the same login, its handshake, the credentials and
    /// the timeout.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub(crate) fn dealer(
        &self,
    ) -> Result<(zmq::Context, zmq::Socket, Handshake, Credentials, Duration)> {
        let (socket, handshake) = open_socket_of(
            zmq::DEALER,
            &self.context,
            self.endpoint(),
            self.timeout,
            &self.credentials,
        )?;
        Ok((self.context.clone(), socket, handshake, self.credentials.clone(), self.timeout))
    }

    /// Makes waits for replies end with a broken-pipe error ([`ClientError::is_broken_pipe`])
    /// as soon as standard output is closed by its reader; `append`, `release` and `ack` still
    /// run to their end, as after Ctrl-C.
    pub fn watching_output(mut self) -> Client {
        self.watch_output = true;
        self
    }

    /// Makes waits silent: no note on standard error about a broker that does not answer,
    /// for a client working behind a menu on the terminal, whose caller says what matters.
    pub fn quiet(mut self) -> Client {
        self.quiet = true;
        self
    }

    /// Makes every request from now on carry `origin`, the address of the end user this
    /// client acts for, until set again (`None`: none). For a door in between (the web
    /// console, the Kafka gateway) that lends one connection to many users: the broker's audit
    /// log shows it beside the connection's own address, as the door's word (PROTOCOL.md,
    /// "Who a door speaks for"). One the broker would drop (over 64 bytes, spaces or other
    /// than printable ASCII) is not sent.
    pub fn set_origin(&mut self, origin: Option<&str>) {
        self.origin = origin.filter(|o| protocol::is_valid_origin(o.as_bytes())).map(str::to_owned);
    }

    /// The endpoint this client talks to now.
    pub fn endpoint(&self) -> &str {
        self.endpoints.present()
    }

    /// Every endpoint this client may talk to, and the one in use.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Whether the endpoint in use has left no request unanswered since the last reply from
    /// any endpoint. After a request got no reply, this is so only when the client moved to
    /// another endpoint that may still answer: worth going on with the next request.
    pub fn has_fresh_endpoint(&self) -> bool {
        self.silences[self.endpoints.position()].is_none()
    }

    /// How long a request waits for its reply (`--timeout`): also how long a program retries
    /// a refusal that says to try again.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The longest hold a request should ask of the broker (a long-poll fetch, a claim waiting
    /// for a logical broker): a quarter of the timeout, at most 10 s. Within it, a broker that
    /// stops answering is still noticed within the timeout, retry included.
    pub fn max_hold(&self) -> Duration {
        (self.timeout / 4).min(Duration::from_secs(10))
    }

    /// Sends `request`, waits for its reply and hands the decoded reply to `read`. An error
    /// reply never reaches `read`: it becomes [`ClientError::Broker`].
    ///
    /// The reply borrows from the received frame, which lives only for the call: `read` takes
    /// what it needs without the frame being copied first.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when no reply came in time, [`ClientError::Interrupted`]
    /// when the shutdown flag ended the wait, [`ClientError::Broker`] for an error reply,
    /// [`ClientError::Decode`] for a reply that is not one, and whatever `read` returns.
    pub fn call<T>(
        &mut self,
        request: &Request<'_>,
        read: impl FnOnce(Response<'_>) -> Result<T>,
    ) -> Result<T> {
        // Taken out of `self` for the exchange, which needs `self` mutably; put back after.
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        encode_request_with_origin(request, None, self.origin.as_deref(), &mut frame);
        let held = Duration::from_millis(held_ms(request).min(MAX_WAIT_MS));
        // One try on each endpoint, and a retry on a fresh socket when there is only one. A
        // claim gets one try on each endpoint too, never two on the same one.
        let attempts = match request {
            _ if is_safe_to_retry(request) => self.endpoints.len().max(2),
            Request::Claim { .. } => self.endpoints.len(),
            _ => 1,
        };
        // An append is cut short by a Ctrl-C that comes while it waits (the program is to end
        // at once), not by one that came before it: what was read before Ctrl-C is still sent.
        let signalled = self.shutdown.as_ref().is_some_and(Shutdown::is_signalled);
        let cancellable = match request {
            Request::Append(_) => !signalled,
            Request::Release { .. } | Request::Ack { .. } => false,
            _ => true,
        };
        // A copy of an idempotent append goes only while the broker remembers the first.
        let copy_until =
            matches!(request, Request::Append(_)).then(|| Instant::now() + COPY_WINDOW);
        let mut silent: Vec<String> = Vec::new();
        let mut attempt = 1;
        self.retried_unanswered = false;
        let reply = loop {
            debug!(op = request.op(), bytes = frame.len(), attempt, "request");
            // The budget of the endpoint in use (the same one again for a retry when there is
            // only one). A try that may be followed by another gets its hold and half of what
            // is left over, so that the next try has time to be answered too.
            let deadline = self.deadline(held);
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            let until = if attempt < attempts && left > held {
                now + held + (left - held) / 2
            } else {
                deadline
            };
            match self.exchange(&frame, until, held, cancellable) {
                Err(ClientError::Unreachable { endpoint }) => {
                    if !silent.contains(&endpoint) {
                        silent.push(endpoint);
                    }
                    if attempt == attempts || copy_until.is_some_and(|t| Instant::now() >= t) {
                        break Err(ClientError::Unreachable { endpoint: silent.join(" or ") });
                    }
                    debug!(op = request.op(), "no reply in time; retrying on a new socket");
                    self.retried_unanswered = true;
                    attempt += 1;
                }
                // A broker process stopping cleanly says so: with several endpoints, a request
                // safe to repeat goes on to the next at once.
                Ok(reply)
                    if attempt < attempts
                        && self.endpoints.len() > 1
                        && matches!(
                            decode_response(&reply),
                            Ok(Response::Error { code: ErrorCode::ShuttingDown, .. })
                        ) =>
                {
                    let stopping = self.endpoint().to_owned();
                    self.endpoints.advance();
                    eprintln!(
                        "the broker at {stopping} is shutting down; moving to {}",
                        self.endpoint()
                    );
                    self.reopen()?;
                    attempt += 1;
                }
                other => break other,
            }
        };
        self.frame = frame;
        let reply = reply?;
        let response = decode_response(&reply).map_err(ClientError::Decode)?;
        debug!(reply = response.name(), bytes = reply.len(), "reply");
        if let Response::Error { code, reason, range, .. } = response {
            return Err(ClientError::Broker { code, reason: reason.into_owned(), range });
        }
        read(response)
    }

    /// Describes every logical broker.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn status(&mut self) -> Result<Vec<BrokerStatus>> {
        let request = Request::Status;
        self.call(&request, |response| match response {
            Response::Status { brokers } => Ok(brokers),
            other => Err(unexpected(&request, &other)),
        })
    }

    /// Claims logical broker `broker` (any free one when `None`), letting the broker hold the
    /// request up to `wait` for one to free up. `client` names the claimant in `status`.
    ///
    /// # Errors
    /// As [`Client::call`]; `no_broker_available` or `broker_busy` when none fits in time.
    pub fn claim(
        &mut self,
        broker: Option<u32>,
        wait: Duration,
        client: Option<&str>,
    ) -> Result<Claimed> {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).min(MAX_WAIT_MS);
        let request = Request::Claim { broker, wait_ms, client };
        self.call(&request, |response| match response {
            Response::Claimed { broker, claim, lease_ms } => {
                Ok(Claimed { broker, token: claim, lease: Duration::from_millis(lease_ms) })
            }
            other => Err(unexpected(&request, &other)),
        })
    }

    /// Extends the lease of claim `token`; returns the new lease.
    ///
    /// # Errors
    /// As [`Client::call`]; `unknown_claim` when the claim has ended.
    pub fn renew(&mut self, token: u64) -> Result<Duration> {
        let request = Request::Renew { claim: token };
        self.call(&request, |response| match response {
            Response::Renewed { lease_ms, .. } => Ok(Duration::from_millis(lease_ms)),
            other => Err(unexpected(&request, &other)),
        })
    }

    /// Gives back the logical broker held under claim `token`; returns its id. Runs to its end
    /// even after Ctrl-C, bounded by the timeout.
    ///
    /// # Errors
    /// As [`Client::call`]; `unknown_claim` when the claim has ended already.
    pub fn release(&mut self, token: u64) -> Result<u32> {
        let request = Request::Release { claim: token };
        self.call(&request, |response| match response {
            Response::Released { broker } => Ok(broker),
            other => Err(unexpected(&request, &other)),
        })
    }

    /// Every topic with each partition's offsets; needs no claim.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn topics(&mut self) -> Result<Vec<TopicInfo>> {
        let request = Request::ListTopics { claim: None };
        self.call(&request, |response| match response {
            Response::Topics { topics } => Ok(topics),
            other => Err(unexpected(&request, &other)),
        })
    }

    /// Every topic with its offsets, under claim `token`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn list_topics(&mut self, token: u64) -> Result<Vec<TopicInfo>> {
        let request = Request::ListTopics { claim: Some(token) };
        self.call(&request, |response| match response {
            Response::Topics { topics } => Ok(topics),
            other => Err(unexpected(&request, &other)),
        })
    }

    /// Fetches as `fetch` says and hands the batch to `read`, borrowed from the reply frame.
    /// The messages come as record batches, which the broker copies as it keeps them
    /// (PROTOCOL.md, "Record batches"), whatever `fetch.batches` says; from a broker older
    /// than them, one record each, as before.
    ///
    /// # Errors
    /// As [`Client::call`]; `unknown_topic` and `offset_out_of_range` (with its range) among
    /// the broker's refusals; [`ClientError::Batches`] for record batches that do not read
    /// back.
    pub fn fetch<T>(
        &mut self,
        fetch: Fetch<'_>,
        read: impl FnOnce(Batch<'_>) -> Result<T>,
    ) -> Result<T> {
        let offset = fetch.offset;
        let allowed = fetch.max_messages.clamp(1, MAX_FETCH_MESSAGES) as usize;
        let request = Request::Fetch(Fetch { batches: true, ..fetch });
        self.call(&request, |response| match response {
            Response::Messages { partition, messages, next_offset, end_offset, .. } => {
                read(Batch { partition, messages, next_offset, end_offset })
            }
            Response::Batches { partition, batches, next_offset, end_offset, .. } => {
                let mut messages = Vec::new();
                // A decoded reply holds its batches' bytes, never pieces to write.
                if let Batches::Bytes(bytes) = batches {
                    batch::read(bytes, offset, &mut messages).map_err(ClientError::Batches)?;
                }
                // A whole batch missing at the end would leave no other trace.
                let follows = messages.last().map_or(offset, |m| m.offset + 1);
                let what = if next_offset != follows {
                    Some("its next_offset does not follow its last message")
                } else if messages.len() > allowed {
                    Some("more messages than the fetch asked for")
                } else {
                    None
                };
                if let Some(what) = what {
                    return Err(ClientError::Batches(batch::BatchError::Reply(what)));
                }
                read(Batch { partition, messages, next_offset, end_offset })
            }
            other => Err(unexpected(&request, &other)),
        })
    }

    /// Appends `messages` (at least one) to `topic`: all to `partition`, or, when `None`, each
    /// where the broker places it (by its key's hash). Never retried: see [`Client`].
    ///
    /// # Errors
    /// As [`Client::call`]; a timeout becomes [`ClientError::Unconfirmed`], since the broker
    /// may have stored the messages; `unknown_partition` for a partition the topic lacks.
    pub fn append(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        messages: Vec<NewMessage<'_>>,
    ) -> Result<Appended> {
        self.append_marked(topic, partition, messages, None)
    }

    /// Appends `messages` as [`Client::append`] does, marked by an idempotent producer with
    /// `mark` (from [`crate::Idempotence::next`]): the broker stores it at most once, so it is
    /// safe to send again, and a reply lost gets one more try on a fresh socket (on the next
    /// endpoint when there are several) within the timeout, as a `status` does. A caller that
    /// sends it again itself (after `314` "may have been appended", `317 in_progress`, or
    /// [`ClientError::Unconfirmed`]) gives the same messages, partition and mark, within two
    /// minutes of the first sending (PROTOCOL.md, "Idempotent appends"). Keyless messages with
    /// no `partition` go to partition `(producer + sequence) mod partitions`.
    ///
    /// # Errors
    /// As [`Client::append`]; `in_progress` when a copy sent before is still being stored; a
    /// refusal of the retry after a try that got no reply is [`ClientError::Unconfirmed`] when
    /// it need not hold for that try ([`ClientError::left_in_doubt`]).
    pub fn append_sequenced(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        messages: Vec<NewMessage<'_>>,
        mark: Sequenced,
    ) -> Result<Appended> {
        self.append_marked(topic, partition, messages, Some(mark))
    }

    /// Sends an append, marked when `sequenced` is given.
    fn append_marked(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        messages: Vec<NewMessage<'_>>,
        sequenced: Option<Sequenced>,
    ) -> Result<Appended> {
        let count = messages.len();
        let request = Request::Append(Append { topic, partition, messages, sequenced });
        let result = self.call(&request, |response| match response {
            Response::Appended { partition, first_offset, last_offset, placed, .. } => {
                Ok(Appended { partition, first_offset, last_offset, placed })
            }
            other => Err(unexpected(&request, &other)),
        });
        // A copy's refusal says nothing of the try before it that got no reply.
        let in_doubt = sequenced.is_some() && self.retried_unanswered;
        result.map_err(|e| match e {
            ClientError::Unreachable { .. } => {
                ClientError::Unconfirmed { count, cause: Box::new(e) }
            }
            other if in_doubt => other.left_in_doubt(count),
            other => other,
        })
    }

    /// Makes claim `token` a member of `group` on `topic`; a group new on the topic starts at
    /// `start`.
    ///
    /// # Errors
    /// As [`Client::call`]; `unknown_topic` when the topic does not exist.
    pub fn join_group(
        &mut self,
        token: u64,
        group: &str,
        topic: &str,
        start: GroupStart,
    ) -> Result<Joined> {
        let request = Request::JoinGroup { claim: token, group, topic, start };
        self.call(&request, |response| match response {
            Response::Joined {
                committed_offset,
                end_offset,
                members,
                created,
                ack_timeout_ms,
                partitions,
                ..
            } => Ok(Joined {
                committed_offset,
                end_offset,
                members,
                created,
                ack_timeout: Duration::from_millis(ack_timeout_ms),
                partitions,
            }),
            other => Err(unexpected(&request, &other)),
        })
    }

    /// Takes the next messages for a group member as `fetch` says, and hands them to `read`,
    /// borrowed from the reply frame. They are pending until acknowledged.
    ///
    /// # Errors
    /// As [`Client::call`]; `unknown_member` when the claim has not joined the group.
    pub fn group_fetch<T>(
        &mut self,
        fetch: GroupFetch<'_>,
        read: impl FnOnce(Delivery<'_>) -> Result<T>,
    ) -> Result<T> {
        let request = Request::GroupFetch(fetch);
        self.call(&request, |response| match response {
            Response::Delivered {
                messages,
                redelivered,
                committed_offset,
                end_offset,
                reset_offset,
                partition,
                ..
            } => read(Delivery {
                partition,
                messages,
                redelivered,
                committed_offset,
                end_offset,
                reset_offset,
            }),
            other => Err(unexpected(&request, &other)),
        })
    }

    /// Acknowledges `offsets` (at least one) of `topic`'s `partition` for `group`. Runs to its
    /// end even after Ctrl-C, bounded by the timeout, so that what was processed is
    /// acknowledged.
    ///
    /// # Errors
    /// As [`Client::call`]; `not_pending` when an offset was never delivered to the group, and
    /// then nothing is acknowledged.
    pub fn ack(
        &mut self,
        group: &str,
        topic: &str,
        partition: u32,
        offsets: &[u64],
    ) -> Result<Acked> {
        let request = Request::Ack { group, topic, partition, offsets: offsets.to_vec() };
        self.call(&request, |response| match response {
            Response::Acked { acked, committed_offset, .. } => {
                Ok(Acked { acked, committed_offset })
            }
            other => Err(unexpected(&request, &other)),
        })
    }

    /// The group states `group` and `topic` select, every one when both are `None`.
    ///
    /// # Errors
    /// As [`Client::call`]; `unknown_group` when `group` has no state.
    pub fn list_groups(
        &mut self,
        group: Option<&str>,
        topic: Option<&str>,
    ) -> Result<Vec<GroupInfo>> {
        let request = Request::ListGroups { group, topic };
        self.call(&request, |response| match response {
            Response::Groups { groups } => Ok(groups),
            other => Err(unexpected(&request, &other)),
        })
    }

    /// Moves `group`'s committed offset on `topic`'s `partition` (on every partition when
    /// `None`) as `to` says; returns the new offset (partition 0's when every partition moved).
    ///
    /// # Errors
    /// As [`Client::call`]; `offset_out_of_range` for an offset the topic does not hold.
    pub fn reset_group(
        &mut self,
        group: &str,
        topic: &str,
        partition: Option<u32>,
        to: ResetTo,
    ) -> Result<u64> {
        let request = Request::ResetGroup { group, topic, partition, to };
        self.call(&request, |response| match response {
            Response::Reset { committed_offset, .. } => Ok(committed_offset),
            other => Err(unexpected(&request, &other)),
        })
    }

    /// Forgets `group`'s committed offsets on `topic` (on every topic when `None`).
    ///
    /// # Errors
    /// As [`Client::call`]; `unknown_group` when it has none there, `group_active` while it
    /// has members there.
    pub fn delete_group(&mut self, group: &str, topic: Option<&str>) -> Result<()> {
        self.delete_group_request(&Request::DeleteGroup { group, topic, partition: None })
    }

    /// Forgets `group`'s committed offset on `partition` of `topic` alone (Kafka's
    /// `--delete-offsets` of one partition): the partition has none afterwards.
    ///
    /// # Errors
    /// As [`Client::delete_group`]; `unknown_partition` when the topic has no such partition.
    pub fn delete_group_partition(
        &mut self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<()> {
        let request =
            Request::DeleteGroup { group, topic: Some(topic), partition: Some(partition) };
        self.delete_group_request(&request)
    }

    /// Sends a `delete_group`.
    fn delete_group_request(&mut self, request: &Request<'_>) -> Result<()> {
        self.call(request, |response| match response {
            Response::GroupDeleted { .. } => Ok(()),
            other => Err(unexpected(request, &other)),
        })
    }

    /// Creates `topic` with `partitions` partitions (`None`: the broker's `--partitions`) and
    /// the `retention` given; returns how many partitions it has.
    ///
    /// # Errors
    /// As [`Client::call`]; `topic_exists`, `invalid_partitions` among the broker's refusals.
    pub fn create_topic(
        &mut self,
        topic: &str,
        partitions: impl Into<Option<u32>>,
        retention: Retention,
    ) -> Result<u32> {
        let request = Request::CreateTopic { topic, partitions: partitions.into(), retention };
        self.call(&request, |response| match response {
            Response::Created { partitions, .. } => Ok(partitions),
            other => Err(unexpected(&request, &other)),
        })
    }

    /// Grows `topic` to `partitions` partitions in all; returns how many it has now.
    ///
    /// # Errors
    /// As [`Client::call`]; `invalid_partitions` when that is not more than it has.
    pub fn create_partitions(&mut self, topic: &str, partitions: u32) -> Result<u32> {
        let request = Request::CreatePartitions { topic, partitions };
        self.call(&request, |response| match response {
            Response::PartitionsCreated { partitions, .. } => Ok(partitions),
            other => Err(unexpected(&request, &other)),
        })
    }

    /// Sends `frame`, a request encoded already, and returns the reply frame undecoded. Not
    /// retried, and cut short by the shutdown flag. For load generators, which send the same
    /// bytes many times and time the exchange alone.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when no reply came within the timeout,
    /// [`ClientError::Interrupted`] when the shutdown flag ended the wait,
    /// [`ClientError::Socket`] when the socket failed.
    pub fn round_trip(&mut self, frame: &[u8]) -> Result<zmq::Message> {
        let deadline = self.deadline(Duration::ZERO);
        self.exchange(frame, deadline, Duration::ZERO, true)
    }

    /// When a request asking the broker to hold it for `held` must have its reply: the
    /// timeout after the present silence of the endpoint in use began (now, when the broker
    /// answered last time).
    fn deadline(&mut self, held: Duration) -> Instant {
        let since = *self.silences[self.endpoints.position()].get_or_insert_with(Instant::now);
        since + self.timeout.max(held + self.timeout / 2)
    }

    /// Forgets the silence of the endpoint in use: a wait that ended for another reason than
    /// the broker (Ctrl-C, a closed output, a refused login) says nothing of it.
    fn end_silence(&mut self) {
        self.silences[self.endpoints.position()] = None;
    }

    /// Sends the encoded request `frame` and waits until `deadline` for the reply, in slices
    /// short enough to notice the shutdown flag when `cancellable` (and a closed standard
    /// output when watched). `held` is how long the broker was asked to hold the reply: only a
    /// silence longer than that is worth a note.
    fn exchange(
        &mut self,
        frame: &[u8],
        deadline: Instant,
        held: Duration,
        cancellable: bool,
    ) -> Result<zmq::Message> {
        if let Err(e) = self.socket.send(frame, 0) {
            return Err(match e {
                // The send timeout passed: the outgoing queue is full, nothing is connected.
                zmq::Error::EAGAIN => {
                    let unreachable = self.unreachable();
                    self.fail_over()?;
                    unreachable
                }
                source => {
                    let failed = self.socket_error(source);
                    self.reopen()?;
                    failed
                }
            });
        }
        let stdout = io::stdout();
        let stdout_fd = stdout.as_raw_fd();
        loop {
            if cancellable && self.shutdown.as_ref().is_some_and(Shutdown::is_signalled) {
                // The REQ socket still expects this reply: only a new socket can send again.
                self.reopen()?;
                self.end_silence();
                return Err(ClientError::Interrupted);
            }
            let now = Instant::now();
            if now >= deadline {
                let unreachable = self.unreachable();
                self.fail_over()?;
                return Err(unreachable);
            }
            self.note_silence(held);
            let slice = (deadline - now).min(POLL_SLICE);
            // Round up so that a wait of a few microseconds does not become a busy loop.
            let slice_ms = i64::try_from(slice.as_millis()).unwrap_or(i64::MAX).max(1);
            let mut items = [
                self.socket.as_poll_item(zmq::POLLIN),
                self.handshake.poll_item(),
                // Only errors are asked for: on a pipe whose reader has gone, poll reports one.
                zmq::PollItem::from_fd(stdout_fd, zmq::PollEvents::empty()),
            ];
            // What must run to its end (giving a claim back) does so even without a reader.
            let watched = if self.watch_output && cancellable { 3 } else { 2 };
            match zmq::poll(&mut items[..watched], slice_ms) {
                Ok(0) => {}
                Ok(_) if items[1].is_readable() && self.handshake.failed() => {
                    let refused =
                        self.handshake.error(&self.credentials, self.endpoint().to_owned());
                    self.reopen()?;
                    self.end_silence();
                    return Err(refused);
                }
                Ok(_) if items[1].is_readable() => {}
                Ok(_) if items[0].is_readable() => {
                    // Whoever answered, the client is in touch again: no endpoint is counted
                    // silent any more.
                    self.silences.fill(None);
                    WAIT_NOTED.store(false, Ordering::Relaxed);
                    return self.socket.recv_msg(0).map_err(|source| self.socket_error(source));
                }
                Ok(_) => {
                    // Standard output is closed: the reader has all it wants.
                    self.reopen()?;
                    self.end_silence();
                    return Err(ClientError::output(io::Error::from(io::ErrorKind::BrokenPipe)));
                }
                // A signal (Ctrl-C) arrived: go round and look at the flag.
                Err(zmq::Error::EINTR) => {}
                Err(source) => {
                    let failed = self.socket_error(source);
                    self.reopen()?;
                    return Err(failed);
                }
            }
        }
    }

    /// Says on standard error, once per silence, that the program is waiting for the broker,
    /// when it has been silent for a second beyond the `held` time it was asked to take.
    fn note_silence(&self, held: Duration) {
        if self.quiet {
            return;
        }
        let Some(since) = self.silences[self.endpoints.position()] else { return };
        let waited = since.elapsed();
        let budget = self.timeout.max(held + self.timeout / 2);
        // A wait about to end says nothing: the error that ends it says enough.
        if waited < held + NOTE_AFTER || waited + POLL_SLICE >= budget {
            return;
        }
        if WAIT_NOTED.swap(true, Ordering::Relaxed) {
            return;
        }
        let silent = waited.as_secs();
        eprintln!(
            "waiting for the broker at {} ({silent} s of {})",
            self.endpoint(),
            format_budget(budget)
        );
    }

    /// Replaces the socket with a fresh one on the same endpoint. The old one closes at once
    /// (linger 0), dropping the request it could not finish.
    fn reopen(&mut self) -> Result<()> {
        (self.socket, self.handshake) =
            open_socket(&self.context, self.endpoints.present(), self.timeout, &self.credentials)?;
        Ok(())
    }

    /// Replaces the socket, which got no reply, with a fresh one on the next endpoint, saying
    /// so on standard error when that is another one.
    fn fail_over(&mut self) -> Result<()> {
        let silent = self.endpoints.present().to_owned();
        if self.endpoints.advance() {
            eprintln!(
                "the broker at {silent} did not answer; moving to {}",
                self.endpoints.present()
            );
        }
        self.reopen()
    }

    /// The error for a broker that did not answer.
    fn unreachable(&self) -> ClientError {
        ClientError::Unreachable { endpoint: self.endpoint().to_owned() }
    }

    /// The error for a socket that failed otherwise.
    fn socket_error(&self, source: zmq::Error) -> ClientError {
        ClientError::Socket { endpoint: self.endpoint().to_owned(), source }
    }
}

/// A REQ socket connected to `endpoint`, logging in with `credentials` and its handshake
/// watched, that never blocks the program: no linger on close, and a send timeout so that a
/// full queue is reported instead of waited on forever.
fn open_socket(
    context: &zmq::Context,
    endpoint: &str,
    timeout: Duration,
    credentials: &Credentials,
) -> Result<(zmq::Socket, Handshake)> {
    open_socket_of(zmq::REQ, context, endpoint, timeout, credentials)
}

/// A socket of `kind` set up as [`open_socket`] sets up a REQ socket.
pub(crate) fn open_socket_of(
    kind: zmq::SocketType,
    context: &zmq::Context,
    endpoint: &str,
    timeout: Duration,
    credentials: &Credentials,
) -> Result<(zmq::Socket, Handshake)> {
    let connect_error = |source| ClientError::Connect { endpoint: endpoint.to_owned(), source };
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let socket = context.socket(kind).map_err(connect_error)?;
    socket.set_linger(0).map_err(connect_error)?;
    credentials.apply(&socket).map_err(connect_error)?;
    let handshake = Handshake::watch(context, &socket).map_err(connect_error)?;
    socket.set_sndtimeo(timeout_ms).map_err(connect_error)?;
    socket.set_rcvtimeo(timeout_ms).map_err(connect_error)?;
    socket.connect(endpoint).map_err(connect_error)?;
    Ok((socket, handshake))
}

/// A budget as people write it: `5 s`, `1.5 s`, `500 ms`.
fn format_budget(budget: Duration) -> String {
    if budget < Duration::from_secs(1) {
        format!("{} ms", budget.as_millis())
    } else if budget.subsec_millis() == 0 {
        format!("{} s", budget.as_secs())
    } else {
        format!("{:.1} s", budget.as_secs_f64())
    }
}

/// How long the request asks the broker to hold its reply, in milliseconds.
fn held_ms(request: &Request<'_>) -> u64 {
    match request {
        Request::Claim { wait_ms, .. } => *wait_ms,
        Request::Fetch(fetch) => fetch.wait_ms,
        Request::GroupFetch(fetch) => fetch.wait_ms,
        _ => 0,
    }
}

/// Whether sending `request` twice does no more than sending it once. An append does so when
/// an idempotent producer marked it: the broker answers a copy with the first one's offsets.
fn is_safe_to_retry(request: &Request<'_>) -> bool {
    matches!(
        request,
        Request::Append(Append { sequenced: Some(_), .. })
            | Request::Status
            | Request::ListTopics { .. }
            | Request::Fetch(_)
            | Request::Renew { .. }
            | Request::JoinGroup { .. }
            | Request::GroupFetch(_)
            | Request::Ack { .. }
            | Request::ListGroups { .. }
            | Request::ResetGroup { .. }
    )
}

/// The error for a reply that does not answer `request`.
fn unexpected(request: &Request<'_>, response: &Response<'_>) -> ClientError {
    ClientError::UnexpectedReply { request: request.op(), reply: response.name() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::encode_response;
    use std::thread;

    /// A REP socket on an ephemeral loopback port answering each request with `answer`.
    fn fake_broker(
        answer: impl Fn(Request<'_>) -> Response<'static> + Send + 'static,
        replies: usize,
    ) -> (String, thread::JoinHandle<()>) {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::REP).unwrap();
        socket.set_linger(0).unwrap();
        socket.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = socket.get_last_endpoint().unwrap().unwrap();
        let handle = thread::spawn(move || {
            for _ in 0..replies {
                let frame = socket.recv_bytes(0).unwrap();
                let request = protocol::decode_request(&frame).unwrap();
                let mut out = Vec::new();
                encode_response(answer(request), &mut out);
                socket.send(out, 0).unwrap();
            }
        });
        (endpoint, handle)
    }

    #[test]
    fn a_reply_is_decoded_and_an_error_reply_is_typed() {
        let (endpoint, broker) = fake_broker(
            |request| match request {
                Request::Status => Response::Status { brokers: Vec::new() },
                _ => Response::error(ErrorCode::UnknownTopic, "no topic x"),
            },
            2,
        );
        let mut client = Client::connect(&endpoint, Duration::from_secs(5)).unwrap();
        assert_eq!(client.status().unwrap(), Vec::new());
        let e = client.list_topics(7).unwrap_err();
        assert_eq!(e.broker_code(), Some(ErrorCode::UnknownTopic));
        assert_eq!(e.to_string(), "no topic x (unknown_topic)");
        broker.join().unwrap();
    }

    #[test]
    fn a_fetch_asks_for_batches_and_takes_them_or_messages_but_none_of_a_reply_that_disagrees() {
        // Each fetch's `max_messages` picks the answer, always 3 messages at offsets 5 to 7:
        // 3, one batch as asked; 1, the same as a `messages` reply; 4, one batch told with a
        // next_offset of 7 (as if a batch were missing at the end); 2, more than asked.
        let answer = |request: Request<'_>| {
            let Request::Fetch(fetch) = request else { panic!("not a fetch: {request:?}") };
            assert!(fetch.batches, "the client asks for batches");
            let values: [&'static [u8]; 3] = [b"a", b"b", b"c"];
            let messages: Vec<Message<'static>> = (5..8)
                .zip(values)
                .map(|(offset, value)| Message {
                    offset,
                    timestamp: 1,
                    key: None,
                    value,
                    headers: Vec::new(),
                })
                .collect();
            let next_offset = if fetch.max_messages == 4 { 7 } else { 8 };
            if fetch.max_messages == 1 {
                let topic = "t";
                return Response::Messages {
                    topic,
                    partition: 0,
                    messages,
                    next_offset,
                    end_offset: 8,
                };
            }
            let batches = Batches::Pieces(batch::pieces_of(&messages));
            Response::Batches { topic: "t", partition: 0, batches, next_offset, end_offset: 8 }
        };
        let (endpoint, broker) = fake_broker(answer, 4);
        let mut client = Client::connect(&endpoint, Duration::from_secs(5)).unwrap();
        let fetch = |max_messages| Fetch {
            claim: 1,
            topic: "t",
            partition: 0,
            offset: 5,
            max_messages,
            max_bytes: 1 << 20,
            wait_ms: 0,
            batches: false,
        };
        let values = |batch: Batch<'_>| -> Result<Vec<Vec<u8>>> {
            Ok(batch.messages.iter().map(|m| m.value.to_vec()).collect())
        };
        let abc = [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        assert_eq!(client.fetch(fetch(3), values).unwrap(), abc);
        assert_eq!(client.fetch(fetch(1), values).unwrap(), abc, "a messages reply is taken");
        let missing = client.fetch(fetch(4), values).unwrap_err();
        assert!(matches!(missing, ClientError::Batches(_)), "{missing}");
        let too_many = client.fetch(fetch(2), values).unwrap_err();
        let ClientError::Batches(cause) = too_many else { panic!("{too_many}") };
        assert_eq!(cause.what(), "more messages than the fetch asked for");
        broker.join().unwrap();
    }

    #[test]
    fn no_reply_in_time_is_unreachable_and_the_next_request_works() {
        // A ROUTER that reads requests and never answers them.
        let context = zmq::Context::new();
        let silent = context.socket(zmq::ROUTER).unwrap();
        silent.set_linger(0).unwrap();
        silent.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = silent.get_last_endpoint().unwrap().unwrap();
        let mut client = Client::connect(&endpoint, Duration::from_millis(200)).unwrap();
        let started = Instant::now();
        let e = client.status().unwrap_err();
        assert_eq!(e.to_string(), format!("broker not reachable at {endpoint}"));
        // One retry for a status, within the one timeout.
        assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
        let e = client.append("t", None, vec![NewMessage::new(None, b"x")]).unwrap_err();
        assert!(matches!(e, ClientError::Unconfirmed { count: 1, .. }), "{e:?}");
        // No other endpoint to go to.
        assert!(!client.has_fresh_endpoint());
    }

    /// A ROUTER on an ephemeral loopback port that reads requests and never answers them.
    fn silent_broker(context: &zmq::Context) -> (zmq::Socket, String) {
        let silent = context.socket(zmq::ROUTER).unwrap();
        silent.set_linger(0).unwrap();
        silent.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = silent.get_last_endpoint().unwrap().unwrap();
        (silent, endpoint)
    }

    /// A client of `endpoints` in this order.
    fn client_of(endpoints: &[&str], timeout: Duration) -> Client {
        let endpoints = Endpoints::parse(&endpoints.join(",")).unwrap();
        Client::connect_to(endpoints, timeout, Credentials::None).unwrap()
    }

    #[test]
    fn a_safe_request_goes_on_through_the_next_endpoint_within_the_timeout() {
        let context = zmq::Context::new();
        let (_silent, dead) = silent_broker(&context);
        let (alive, broker) = fake_broker(|_| Response::Status { brokers: Vec::new() }, 2);
        let timeout = Duration::from_millis(600);
        let mut client = client_of(&[&dead, &alive], timeout);
        let started = Instant::now();
        assert_eq!(client.status().unwrap(), Vec::new());
        // Half the budget on the silent one, then the other answers at once.
        let took = started.elapsed();
        assert!(took >= timeout / 2 && took < timeout, "{took:?}");
        assert_eq!(client.endpoint(), alive);
        // It stays there.
        let sibling = client.sibling().unwrap();
        assert_eq!(sibling.endpoint(), alive);
        assert_eq!(sibling.endpoints().len(), 2);
        let started = Instant::now();
        client.status().unwrap();
        assert!(started.elapsed() < timeout / 2, "{:?}", started.elapsed());
        broker.join().unwrap();
    }

    #[test]
    fn an_append_without_reply_is_not_sent_again_and_the_next_goes_to_the_next_endpoint() {
        let context = zmq::Context::new();
        let (silent, dead) = silent_broker(&context);
        let (alive, broker) = fake_broker(
            |_| Response::Appended {
                topic: "t",
                partition: 0,
                first_offset: 0,
                last_offset: 0,
                placed: Vec::new(),
            },
            1,
        );
        let timeout = Duration::from_millis(400);
        let mut client = client_of(&[&dead, &alive], timeout);
        let x = vec![NewMessage::new(None, b"x")];
        let started = Instant::now();
        let e = client.append("t", None, x.clone()).unwrap_err();
        assert!(matches!(e, ClientError::Unconfirmed { count: 1, .. }), "{e:?}");
        assert!(e.to_string().starts_with(&format!("broker not reachable at {dead};")), "{e}");
        // The whole budget of that endpoint, one try only.
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        assert_eq!(silent.recv_multipart(zmq::DONTWAIT).map(|frames| frames.len()), Ok(3));
        assert_eq!(silent.recv_multipart(zmq::DONTWAIT), Err(zmq::Error::EAGAIN));
        assert!(client.has_fresh_endpoint());
        let appended = client.append("t", None, x).unwrap();
        assert_eq!(
            appended,
            Appended { partition: 0, first_offset: 0, last_offset: 0, placed: Vec::new() }
        );
        broker.join().unwrap();
    }

    #[test]
    fn an_idempotent_append_without_reply_goes_again_to_the_next_endpoint_with_its_mark() {
        let context = zmq::Context::new();
        let (silent, dead) = silent_broker(&context);
        let mark = Sequenced { producer: 42, sequence: 7 };
        let (alive, broker) = fake_broker(
            move |request| match request {
                Request::Append(Append { sequenced: Some(got), .. }) if got == mark => {
                    Response::Appended {
                        topic: "t",
                        partition: 0,
                        first_offset: 3,
                        last_offset: 3,
                        placed: Vec::new(),
                    }
                }
                _ => Response::error(ErrorCode::Malformed, "not the mark sent first"),
            },
            1,
        );
        let timeout = Duration::from_millis(600);
        let mut client = client_of(&[&dead, &alive], timeout);
        let started = Instant::now();
        let x = vec![NewMessage::new(None, b"x")];
        let appended = client.append_sequenced("t", None, x, mark).unwrap();
        assert_eq!(appended.first_offset, 3);
        // Half the budget on the silent one, as for a status.
        assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
        let frames = silent.recv_multipart(zmq::DONTWAIT).unwrap();
        let body = frames.last().unwrap();
        let Ok(Request::Append(first)) = protocol::decode_request(body) else { panic!() };
        assert_eq!(first.sequenced, Some(mark));
        broker.join().unwrap();
    }

    #[test]
    fn a_refusal_of_the_retry_leaves_an_idempotent_append_in_doubt_and_a_plain_one_unretried() {
        let context = zmq::Context::new();
        let (_silent, dead) = silent_broker(&context);
        fn nothing(_: Request<'_>) -> Response<'static> {
            Response::error(ErrorCode::StoreUnavailable, "down; nothing was appended")
        }
        let (alive, broker) = fake_broker(nothing, 1);
        let mut client = client_of(&[&dead, &alive], Duration::from_millis(600));
        let mark = Sequenced { producer: 42, sequence: 0 };
        let x = vec![NewMessage::new(None, b"x")];
        // The try on the silent endpoint may have stored it: not "nothing was appended".
        match client.append_sequenced("t", None, x.clone(), mark) {
            Err(ClientError::Unconfirmed { count: 1, cause }) => {
                assert!(matches!(*cause, ClientError::CopyRefused { .. }), "{cause:?}");
            }
            other => panic!("{other:?}"),
        }
        broker.join().unwrap();
        // Answered without a retry, the refusal is the broker's own.
        let (again, broker) = fake_broker(nothing, 1);
        let mut client = client_of(&[&again], Duration::from_millis(600));
        let e = client.append_sequenced("t", None, x, mark).unwrap_err();
        assert_eq!(e.broker_code(), Some(ErrorCode::StoreUnavailable));
        broker.join().unwrap();
    }

    #[test]
    fn with_every_endpoint_silent_the_error_names_them_all() {
        let context = zmq::Context::new();
        let (_a, first) = silent_broker(&context);
        let (_b, second) = silent_broker(&context);
        let timeout = Duration::from_millis(300);
        let mut client = client_of(&[&first, &second], timeout);
        let started = Instant::now();
        let e = client.status().unwrap_err();
        assert_eq!(e.to_string(), format!("broker not reachable at {first} or {second}"));
        // Half a budget on the first, a whole one on the second.
        let took = started.elapsed();
        assert!(took >= timeout * 3 / 2 && took < timeout * 2, "{took:?}");
        // Both have been silent since the last reply: what follows fails at once.
        assert!(!client.has_fresh_endpoint());
        let started = Instant::now();
        assert!(client.status().is_err());
        assert!(started.elapsed() < timeout / 4, "{:?}", started.elapsed());
    }

    #[test]
    fn the_shutdown_flag_ends_a_wait() {
        let context = zmq::Context::new();
        let silent = context.socket(zmq::ROUTER).unwrap();
        silent.set_linger(0).unwrap();
        silent.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = silent.get_last_endpoint().unwrap().unwrap();
        let shutdown = Shutdown::new();
        let mut client = Client::connect(&endpoint, Duration::from_secs(30))
            .unwrap()
            .with_shutdown(shutdown.clone());
        shutdown.trigger();
        let started = Instant::now();
        assert!(matches!(client.status(), Err(ClientError::Interrupted)));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_malformed_endpoint_is_refused_at_once() {
        let e = Client::connect("nowhere", DEFAULT_TIMEOUT).err().unwrap();
        assert!(e.to_string().starts_with("cannot connect to nowhere"), "{e}");
    }
}
