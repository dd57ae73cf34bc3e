//! A pipelined producer: single messages gathered into appends, several appends in flight on
//! one DEALER socket, each reply matched to its append by the `id` it echoes (PROTOCOL.md,
//! "Correlating replies").
//!
//! Messages are gathered per partition asked for (a lane: `None`, the broker's placing, is a
//! lane of its own) until the batch holds `batch_bytes` of keys and values or
//! `batch_messages` messages, or its first message has waited `linger`, as Kafka's producer
//! does with `batch.size` and `linger.ms`. Closed batches go out in the order they closed, at
//! most `max_in_flight` unanswered at once, so the appends of one lane reach the broker, and
//! take their offsets, in the order their messages were given. The one door is [`Pipeline`];
//! its invariant: every message given gets exactly one [`Outcome`], and no append is sent
//! twice unless the broker said that nothing of it was appended, or the append is idempotent
//! (the default, [`PipelineOptions::idempotent`]): then every copy is the same frame, with the
//! same producer and sequence, sent within the append's timeout, and the broker stores it once.
//!
//! An idempotent pipeline draws a random producer id when it opens ([`Idempotence`]) and
//! marks each batch with the next sequence as it closes; the batch keeps its encoded frame, so
//! every copy carries the same mark, partition and messages.
//!
//! A refusal that says nothing was appended and that may pass (`311 overloaded`, `314
//! store_unavailable` saying "nothing was appended") is sent again after a short pause,
//! within the timeout counted from its first send, but only when no later append of the same
//! lane is in flight: a later one could be stored before it, and the lane's order would be
//! lost. Otherwise the refusal is the outcome. When idempotent, so is a `314` that says the
//! append "may have been appended", under the same rule: the copy is answered with the offsets
//! the first sending got, or stored now if that one was not; and since the store failed to
//! confirm this one, a later one may well have been stored since, before a copy that stores
//! it. Without idempotence that `314` is the outcome, in doubt. `317 in_progress` (a copy of
//! an idempotent append whose first sending is still being stored) is sent again after the
//! pause whatever is in flight: the broker took the first sending in its turn, and the copy
//! is answered with its offsets once it settles.
//!
//! A reply that does not come in time means the broker is gone (the broker sends a client's
//! replies in order). Without idempotence that time is the whole timeout: every append in
//! flight is then unconfirmed (it may or may not have been stored), and never sent again. An
//! idempotent pipeline gives the oldest append in flight half of what is left of its timeout
//! (as [`Client`] gives a request safe to repeat), then sends everything in flight again, in
//! order, on a new socket (to the next endpoint when there are several), each within what is
//! left of its own timeout; an append whose timeout runs out is unconfirmed.
//!
//! Why a copy sent while later appends of its lane are in flight (after a `317`, or with them
//! after a missing reply) is safe: the broker stores each mark once and answers a copy with
//! the offsets its first sending got, so no message is stored twice; what a copy can change
//! is only where the append lands when its first sending was never stored while a later one
//! was (the copy then lands after it). PROTOCOL.md allows this: the order of a producer's
//! acknowledged appends is their order in the partition for the appends acknowledged the
//! first time they were sent. Not sending the copy would leave the append in doubt, which
//! says less and costs the same order when its first sending lands late.
//!
//! Given several endpoints (`--connect A,B`, broker processes sharing a store), the pipeline
//! moves to the next on a new socket, as [`Client`] does, and sends there what it had not sent
//! yet, each with a new timeout (and, idempotent, the copies, each with what is left of its
//! own); the unconfirmed appends are the only messages whose order against the lane's later
//! ones is not known. Once every endpoint in turn has left an append unanswered past its
//! timeout with no reply from any in between, the appends not yet sent fail, and so does
//! everything given afterwards.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

use protocol::{
    decode_response, encode_request_with_id, frame_id, Append, ErrorCode, Header, NewMessage,
    Request, Response, MAX_APPEND_MESSAGES,
};

use crate::client::{open_socket_of, Appended};
use crate::endpoints::Endpoints;
use crate::idempotence::COPY_WINDOW;
use crate::security::{Credentials, Handshake};
use crate::{Client, ClientError, Idempotence, Result};

/// How long a message waits for others to share its append (Kafka's `linger.ms` is 5 ms in
/// recent versions).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);

/// How many bytes of keys and values close a batch (Kafka's `batch.size` is 16 KiB; an append
/// here costs the broker more than a Kafka batch, so batches are larger).
pub const DEFAULT_BATCH_BYTES: usize = 256 * 1024;

/// How many appends may await their replies at once (Kafka's
/// `max.in.flight.requests.per.connection`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 5;

/// How many messages given between two looks at the socket when no batch closes.
const PUMP_EVERY: u64 = 256;

/// The pause before a refused append that stored nothing is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// How a pipeline gathers and sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineOptions {
    /// How long the first message of a batch waits for others.
    pub linger: Duration,
    /// Bytes of keys and values that close a batch.
    pub batch_bytes: usize,
    /// Messages that close a batch (at most the protocol's limit of an append).
    pub batch_messages: usize,
    /// Appends unanswered at once; 1 is lockstep.
    pub max_in_flight: usize,
    /// Mark each append with the pipeline's random producer id and a sequence, so that one
    /// whose reply was lost, or that the broker could not say was stored, is sent again
    /// safely (Kafka's `enable.idempotence`, on by default since Kafka 3.0). Off for a broker
    /// older than the marks, which ignores them: its copies could be stored twice.
    pub idempotent: bool,
}

impl Default for PipelineOptions {
    fn default() -> PipelineOptions {
        PipelineOptions {
            linger: DEFAULT_LINGER,
            batch_bytes: DEFAULT_BATCH_BYTES,
            batch_messages: 1000,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            idempotent: true,
        }
    }
}

/// What became of some of the messages given to a pipeline: those of one append.
#[derive(Debug)]
pub struct Outcome {
    /// The tags the messages were given with, in the order they were given.
    pub tags: Vec<u64>,
    /// The partition asked for (`None`: the broker placed them).
    pub partition: Option<u32>,
    /// Where they went, or why not: [`ClientError::Unconfirmed`] when they may or may not
    /// have been stored (idempotent: when no copy got a reply within the timeout).
    pub result: Result<Appended>,
    /// Whether the append was sent again, idempotent, after a sending that got no reply or
    /// one in doubt (`314` "may have been appended", `317`): appended so, it may have landed
    /// after appends of its lane given later (see the module's text).
    pub sent_again: bool,
}

/// Messages of one lane being gathered.
struct Open {
    /// The partition asked for.
    partition: Option<u32>,
    /// When its first message came.
    since: Instant,
    /// Keys, values and headers, one after the other.
    data: Vec<u8>,
    /// Each message's key, value and headers in `data`.
    spans: Vec<Span>,
    /// Each message's tag.
    tags: Vec<u64>,
}

/// Where one message's parts are in its lane's `data`.
struct Span {
    /// Its key, if it has one.
    key: Option<Range<usize>>,
    /// Its value.
    value: Range<usize>,
    /// Its headers' names and values (none for most messages, which then allocate nothing).
    headers: Vec<(Range<usize>, Option<Range<usize>>)>,
}

/// An append encoded, sent or to be sent.
struct Batch {
    /// The `id` it is sent with.
    id: u64,
    /// The partition asked for.
    partition: Option<u32>,
    /// The request frame.
    frame: Vec<u8>,
    /// Its messages' tags.
    tags: Vec<u64>,
    /// When it closed: its reply is due within the timeout from then, retries included.
    since: Instant,
    /// Not to be sent again before this (after a refusal that stored nothing).
    not_before: Option<Instant>,
    /// Whether it may have been stored: it went out and got no reply, or a reply that could
    /// not say. Such an append is never said not appended.
    in_doubt: bool,
    /// How many sockets it went out on and got no reply on (idempotent: it is sent again on
    /// a new one, at most [`Pipeline::tries`] in all).
    unanswered: usize,
    /// When it was last sent.
    sent_at: Instant,
}

impl Batch {
    /// When an idempotent pipeline stops waiting for this batch's reply on the socket it went
    /// out on, and sends it again on a new one: half of what was left of its timeout when it
    /// was sent.
    fn patience(&self, timeout: Duration) -> Instant {
        let deadline = self.since + timeout;
        self.sent_at + deadline.saturating_duration_since(self.sent_at) / 2
    }
}

/// A producer with several appends in flight on one connection; see the module's text.
pub struct Pipeline {
    /// Owns the socket's I/O thread; the socket to the next endpoint is made in it too.
    context: zmq::Context,
    /// The DEALER socket.
    socket: zmq::Socket,
    /// Its handshake, watched for a refused login.
    handshake: Handshake,
    /// How it logs in, for the error of a refused login.
    credentials: Credentials,
    /// Where the broker processes are, and which one the socket is connected to.
    endpoints: Endpoints,
    /// How many endpoints in a row have left an append unanswered since the last reply.
    silent: usize,
    /// The topic appended to.
    topic: String,
    /// How it gathers and sends.
    options: PipelineOptions,
    /// How long an append may wait for its reply, retries included.
    timeout: Duration,
    /// The next `id`.
    next_id: u64,
    /// Batches being gathered, one per lane.
    open: Vec<Open>,
    /// Batches closed and not sent yet (or refused and to be sent again), in order.
    ready: VecDeque<Batch>,
    /// Batches sent and unanswered, in the order sent.
    in_flight: VecDeque<Batch>,
    /// Outcomes not yet taken.
    done: VecDeque<Outcome>,
    /// Set once every endpoint has failed to answer in time: everything fails from then on.
    gone: bool,
    /// When the first lane being gathered has lingered enough, if any is.
    next_linger: Option<Instant>,
    /// Messages given, to pump every [`PUMP_EVERY`].
    sends: u64,
    /// The producer id and sequences that mark each append, when idempotent.
    idempotence: Option<Idempotence>,
}

impl Pipeline {
    /// A pipeline appending to `topic` through a DEALER socket of its own, connected where
    /// `client` is connected, with its login, its timeout and its other endpoints to move to.
    ///
    /// # Errors
    /// As [`Client::connect`]; when idempotent, as [`Idempotence::new`].
    pub fn open(client: &Client, topic: &str, options: PipelineOptions) -> Result<Pipeline> {
        let idempotence = if options.idempotent { Some(Idempotence::new()?) } else { None };
        Pipeline::open_with(client, topic, options, idempotence)
    }

    /// A pipeline as [`Pipeline::open`] makes it, marking its appends with `idempotence`
    /// when given (whatever the options say), for tests that must know the producer id.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn open_with(
        client: &Client,
        topic: &str,
        options: PipelineOptions,
        idempotence: Option<Idempotence>,
    ) -> Result<Pipeline> {
        let (context, socket, handshake, credentials, timeout) = client.dealer()?;
        let batch_messages = options.batch_messages.clamp(1, MAX_APPEND_MESSAGES);
        Ok(Pipeline {
            context,
            socket,
            handshake,
            credentials,
            endpoints: client.endpoints().clone(),
            silent: 0,
            topic: topic.to_owned(),
            options: PipelineOptions {
                batch_messages,
                max_in_flight: options.max_in_flight.max(1),
                idempotent: idempotence.is_some(),
                ..options
            },
            timeout,
            next_id: 0,
            open: Vec::new(),
            ready: VecDeque::new(),
            in_flight: VecDeque::new(),
            done: VecDeque::new(),
            gone: false,
            next_linger: None,
            sends: 0,
            idempotence,
        })
    }

    /// Gives one message, to `partition` (`None`: where the broker puts it), known by `tag`
    /// in its [`Outcome`]. Sends what is due, takes the replies there are, and waits for room
    /// while more than one closed append waits to be sent: at most `max_in_flight` + 2
    /// batches are held (memory stays bounded), and a message waits behind no more than that
    /// (its latency stays bounded).
    ///
    /// # Errors
    /// The socket failed, or the broker refused the login; outcomes already decided stay to
    /// be taken.
    pub fn send(
        &mut self,
        partition: Option<u32>,
        message: NewMessage<'_>,
        tag: u64,
    ) -> Result<()> {
        let now = Instant::now();
        let lane = match self.open.iter().position(|o| o.partition == partition) {
            Some(lane) => lane,
            None => {
                self.open.push(Open {
                    partition,
                    since: now,
                    data: Vec::new(),
                    spans: Vec::new(),
                    tags: Vec::new(),
                });
                self.open.len() - 1
            }
        };
        let open = &mut self.open[lane];
        if open.tags.is_empty() {
            open.since = now;
        }
        let mut put = |bytes: &[u8]| {
            let start = open.data.len();
            open.data.extend_from_slice(bytes);
            start..open.data.len()
        };
        let key = message.key.map(&mut put);
        let value = put(message.value);
        let headers = message
            .headers
            .iter()
            .map(|h| (put(h.key.as_bytes()), h.value.map(&mut put)))
            .collect();
        open.spans.push(Span { key, value, headers });
        open.tags.push(tag);
        let lingered = open.since + self.options.linger;
        self.next_linger = Some(self.next_linger.map_or(lingered, |t| t.min(lingered)));
        self.sends += 1;
        let full = open.data.len() >= self.options.batch_bytes
            || open.tags.len() >= self.options.batch_messages;
        if full {
            self.close(lane);
        }
        // Sending and reading replies cost a call into ZeroMQ each: done when a batch closed
        // or lingered, and every so many messages, not for every message.
        if full
            || self.next_linger.is_some_and(|t| now >= t)
            || self.sends.is_multiple_of(PUMP_EVERY)
        {
            self.pump(now)?;
        }
        while self.ready.len() > 1 {
            self.wait(self.next_deadline())?;
        }
        Ok(())
    }

    /// Sends the batches whose linger is over and takes the replies that came, waiting at
    /// most `wait` for one when nothing else is to be done.
    ///
    /// # Errors
    /// As [`Pipeline::send`].
    pub fn tick(&mut self, wait: Duration) -> Result<()> {
        let now = Instant::now();
        self.pump(now)?;
        let until = self.next_deadline().map_or(now + wait, |d| d.min(now + wait));
        self.wait(Some(until))
    }

    /// Sends everything given and waits for every reply, each within the timeout.
    ///
    /// # Errors
    /// As [`Pipeline::send`].
    pub fn flush(&mut self) -> Result<()> {
        self.close_open();
        loop {
            self.pump(Instant::now())?;
            if self.ready.is_empty() && self.in_flight.is_empty() {
                return Ok(());
            }
            self.wait(self.next_deadline())?;
        }
    }

    /// Closes every batch being gathered, oldest first, so that what comes next goes after
    /// them: for a caller about to send messages of one partition through another lane (it
    /// has learnt where the broker would put them).
    pub fn close_open(&mut self) {
        while let Some(lane) = self.oldest_open(None) {
            self.close(lane);
        }
    }

    /// The lane gathering for longest, among those gathering since before `due` when given.
    fn oldest_open(&self, due: Option<Instant>) -> Option<usize> {
        let lanes = self.open.iter().enumerate();
        let due = lanes.filter(|(_, o)| due.is_none_or(|due| o.since <= due));
        due.min_by_key(|(_, o)| o.since).map(|(lane, _)| lane)
    }

    /// The next outcome decided, in the order they were decided.
    pub fn outcome(&mut self) -> Option<Outcome> {
        self.done.pop_front()
    }

    /// Whether appends can still be sent: not every endpoint has gone silent. An unconfirmed
    /// outcome taken while this holds was left behind by a move to another endpoint.
    pub fn has_fresh_endpoint(&self) -> bool {
        !self.gone
    }

    /// The endpoint appends go to now.
    pub fn endpoint(&self) -> &str {
        self.endpoints.present()
    }

    /// How many messages are given and not yet decided.
    pub fn pending(&self) -> usize {
        let open: usize = self.open.iter().map(|o| o.tags.len()).sum();
        let batches = self.ready.iter().chain(&self.in_flight);
        open + batches.map(|b| b.tags.len()).sum::<usize>()
    }

    /// Closes the batch of lane `lane` into an encoded append, ready to be sent.
    fn close(&mut self, lane: usize) {
        let open = self.open.swap_remove(lane);
        if open.tags.is_empty() {
            return;
        }
        let messages = open
            .spans
            .iter()
            .map(|span| NewMessage {
                key: span.key.clone().map(|k| &open.data[k]),
                value: &open.data[span.value.clone()],
                headers: span
                    .headers
                    .iter()
                    .map(|(key, value)| Header {
                        // Put there from a `str`: the bytes are UTF-8.
                        key: std::str::from_utf8(&open.data[key.clone()]).unwrap_or_default(),
                        value: value.clone().map(|v| &open.data[v]),
                    })
                    .collect(),
            })
            .collect();
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = Vec::with_capacity(open.data.len() + open.tags.len() * 12 + 64);
        let request = Request::Append(Append {
            topic: &self.topic,
            partition: open.partition,
            messages,
            sequenced: self.idempotence.as_ref().map(Idempotence::next),
        });
        encode_request_with_id(&request, Some(id), &mut frame);
        let now = Instant::now();
        self.ready.push_back(Batch {
            id,
            partition: open.partition,
            frame,
            tags: open.tags,
            since: now,
            not_before: None,
            in_doubt: false,
            unanswered: 0,
            sent_at: now,
        });
    }

    /// Closes the batches whose linger is over, sends what may go, and takes the replies
    /// already there.
    fn pump(&mut self, now: Instant) -> Result<()> {
        // Oldest first, so that lanes close in the order their messages came.
        while let Some(lane) =
            now.checked_sub(self.options.linger).and_then(|due| self.oldest_open(Some(due)))
        {
            self.close(lane);
        }
        let linger = self.options.linger;
        self.next_linger = self.open.iter().map(|o| o.since + linger).min();
        if self.gone {
            self.fail_all();
            return Ok(());
        }
        while self.in_flight.len() < self.options.max_in_flight {
            match self.ready.front() {
                Some(batch) if batch.not_before.is_some_and(|t| t > now) => break,
                Some(_) => {}
                None => break,
            }
            let Some(mut batch) = self.ready.pop_front() else { break };
            match self.socket.send(&batch.frame, zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) => {
                    // Nothing connected yet, or the queue is full: try again later.
                    self.ready.push_front(batch);
                    break;
                }
                Err(source) => {
                    self.ready.push_front(batch);
                    return Err(self.socket_error(source));
                }
            }
            batch.sent_at = now;
            self.in_flight.push_back(batch);
        }
        self.receive()
    }

    /// Waits until `until` (at most) for a reply or a failed login, then takes the replies.
    fn wait(&mut self, until: Option<Instant>) -> Result<()> {
        let now = Instant::now();
        let until = until.unwrap_or(now + self.timeout);
        let ms = i64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(0);
        // Wake for room to send too when an append waits only for that (no peer connected
        // yet, or its queue full).
        let now_due = |b: &Batch| b.not_before.is_none_or(|t| t <= now);
        let may_send = self.in_flight.len() < self.options.max_in_flight
            && self.ready.front().is_some_and(now_due);
        let events = if may_send { zmq::POLLIN | zmq::POLLOUT } else { zmq::POLLIN };
        let mut items = [self.socket.as_poll_item(events), self.handshake.poll_item()];
        match zmq::poll(&mut items, ms.max(1)) {
            Ok(_) if items[1].is_readable() && self.handshake.failed() => {
                let endpoint = self.endpoints.present().to_owned();
                return Err(self.handshake.error(&self.credentials, endpoint));
            }
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(source) => return Err(self.socket_error(source)),
        }
        self.receive()?;
        self.check_deadlines(Instant::now())?;
        self.pump(Instant::now())
    }

    /// The earliest moment something is due: a linger's end, a retry, a reply's deadline, an
    /// idempotent copy's.
    fn next_deadline(&self) -> Option<Instant> {
        let lingers = self.open.iter().map(|o| o.since + self.options.linger);
        let retries = self.ready.front().and_then(|b| b.not_before);
        let oldest = [self.in_flight.front(), self.ready.front()];
        let replies = oldest.into_iter().flatten().map(|b| b.since + self.timeout);
        let copies = self.impatience();
        lingers.chain(retries).chain(replies).chain(copies).min()
    }

    /// How many times an idempotent append is sent for want of a reply: once on each endpoint,
    /// twice with one, as [`Client`] tries a request safe to repeat.
    fn tries(&self) -> usize {
        self.endpoints.len().max(2)
    }

    /// When an idempotent pipeline gives up waiting on this socket for the oldest append in
    /// flight and sends what is in flight again on a new one; `None` without idempotence, or
    /// once that append has had its tries.
    fn impatience(&self) -> Option<Instant> {
        let oldest = self.in_flight.front().filter(|_| self.idempotence.is_some())?;
        (oldest.unanswered + 1 < self.tries()).then(|| oldest.patience(self.timeout))
    }

    /// Takes every reply waiting on the socket.
    fn receive(&mut self) -> Result<()> {
        loop {
            let reply = match self.socket.recv_msg(zmq::DONTWAIT) {
                Ok(reply) => reply,
                Err(zmq::Error::EAGAIN) => return Ok(()),
                Err(zmq::Error::EINTR) => continue,
                Err(source) => return Err(self.socket_error(source)),
            };
            // The broker echoes `[body]` alone to a DEALER that sent it alone. A broker from
            // before `id` sends none: appends are never held, so their replies come in the
            // order sent, and the oldest in flight is the one answered.
            let id = frame_id(&reply).or_else(|| self.in_flight.front().map(|b| b.id));
            let Some(at) = id.and_then(|id| self.in_flight.iter().position(|b| b.id == id)) else {
                tracing::debug!(id, "a reply to no append in flight; ignored");
                continue;
            };
            let Some(batch) = self.in_flight.remove(at) else { continue };
            // Whoever answered, the pipeline is in touch again.
            self.silent = 0;
            self.settle(batch, &reply);
        }
    }

    /// Decides what `reply` means for `batch`: an outcome, or a retry.
    fn settle(&mut self, mut batch: Batch, reply: &[u8]) {
        let result = match decode_response(reply) {
            Ok(Response::Appended { partition, first_offset, last_offset, placed, .. }) => {
                tracing::debug!(id = batch.id, messages = batch.tags.len(), "appended");
                Ok(Appended { partition, first_offset, last_offset, placed })
            }
            Ok(Response::Error { code, reason, range, .. }) => {
                let now = Instant::now();
                let later_in_flight = self.in_flight.iter().any(|b| b.partition == batch.partition);
                let within = now + RETRY_PAUSE < batch.since + self.timeout.min(COPY_WINDOW);
                let refused = refusal(code, &reason);
                let again = match refused {
                    Refusal::StoredNothing => !later_in_flight,
                    Refusal::InProgress => true,
                    Refusal::InDoubt => self.idempotence.is_some() && !later_in_flight,
                    Refusal::Final => false,
                };
                if again && within {
                    tracing::debug!(id = batch.id, %code, "append refused; sending it again");
                    batch.in_doubt |= matches!(refused, Refusal::InDoubt | Refusal::InProgress);
                    batch.not_before = Some(now + RETRY_PAUSE);
                    self.ready.push_front(batch);
                    return;
                }
                let refused = ClientError::Broker { code, reason: reason.into_owned(), range };
                // A copy's refusal says nothing of the sending before it that may have stored it.
                if batch.in_doubt {
                    Err(refused.left_in_doubt(batch.tags.len()))
                } else {
                    Err(refused)
                }
            }
            Ok(other) => {
                Err(ClientError::UnexpectedReply { request: "append", reply: other.name() })
            }
            Err(error) => Err(ClientError::Decode(error)),
        };
        self.decide(batch, result);
    }

    /// When the oldest append in flight, or the next to send, has waited past the timeout
    /// since it closed, the broker in use is taken for gone; so it is when an idempotent
    /// pipeline's oldest append in flight has waited past its patience ([`Batch::patience`]).
    /// What is in flight is unconfirmed, or, idempotent, sent again within its own timeout;
    /// the rest goes to the next endpoint (a new socket on the same one when there is only
    /// one), or fails when every endpoint has gone silent past the timeout.
    ///
    /// # Errors
    /// The socket to the next endpoint could not be made.
    fn check_deadlines(&mut self, now: Instant) -> Result<()> {
        self.expire_copies(now);
        let oldest = [self.in_flight.front(), self.ready.front()];
        let late = oldest.into_iter().flatten().any(|b| now >= b.since + self.timeout);
        let impatient = self.impatience().is_some_and(|t| now >= t);
        if !late && !impatient {
            return Ok(());
        }
        self.silent += 1;
        if late && self.silent >= self.endpoints.len() {
            self.gone = true;
            self.fail_all();
            return Ok(());
        }
        self.take_back(now);
        let silent = self.endpoints.present().to_owned();
        if self.endpoints.advance() {
            eprintln!(
                "the broker at {silent} did not answer; moving to {}",
                self.endpoints.present()
            );
        } else {
            tracing::debug!(endpoint = silent, "no reply in time; sending again on a new socket");
        }
        // The old socket closes at once (linger 0), dropping whatever it still held for the
        // silent broker: only what is in `ready` is sent again.
        (self.socket, self.handshake) = open_socket_of(
            zmq::DEALER,
            &self.context,
            self.endpoints.present(),
            self.timeout,
            &self.credentials,
        )?;
        for batch in &mut self.ready {
            // Each append not stored yet gets the new endpoint's whole timeout; a copy of one
            // that may have been keeps what is left of its own, counted from its first sending.
            if !batch.in_doubt {
                batch.since = now;
            }
            batch.not_before = None;
        }
        Ok(())
    }

    /// Takes every append in flight off the socket about to be closed: unconfirmed (it may or
    /// may not have been stored), or, idempotent and within its timeout, back to the front of
    /// the queue in the order sent, to be sent again.
    fn take_back(&mut self, now: Instant) {
        let mut again = VecDeque::new();
        for mut batch in std::mem::take(&mut self.in_flight) {
            if self.idempotence.is_some() && now < batch.since + self.timeout.min(COPY_WINDOW) {
                batch.unanswered += 1;
                batch.in_doubt = true;
                again.push_back(batch);
            } else {
                self.unconfirmed(batch);
            }
        }
        again.append(&mut self.ready);
        self.ready = again;
    }

    /// Decides as unconfirmed the idempotent copies waiting to be sent whose timeout has run
    /// out (or whose [`COPY_WINDOW`] has): sent before, they may have been stored.
    fn expire_copies(&mut self, now: Instant) {
        let timeout = self.timeout;
        let expired = |b: &Batch| b.in_doubt && now >= b.since + timeout.min(COPY_WINDOW);
        if !self.ready.iter().any(expired) {
            return;
        }
        let (gone, kept): (VecDeque<Batch>, VecDeque<Batch>) =
            std::mem::take(&mut self.ready).into_iter().partition(expired);
        self.ready = kept;
        for batch in gone {
            self.unconfirmed(batch);
        }
    }

    /// Decides `batch`, sent and unanswered, as unconfirmed: it may or may not have been stored.
    fn unconfirmed(&mut self, batch: Batch) {
        let count = batch.tags.len();
        let endpoint = self.endpoints.present().to_owned();
        let cause = Box::new(ClientError::Unreachable { endpoint });
        let result = Err(ClientError::Unconfirmed { count, cause });
        self.decide(batch, result);
    }

    /// Decides everything given so far once every endpoint is gone: what may have been stored
    /// is unconfirmed, what was not fails.
    fn fail_all(&mut self) {
        for batch in std::mem::take(&mut self.in_flight) {
            self.unconfirmed(batch);
        }
        self.close_open();
        for batch in std::mem::take(&mut self.ready) {
            if batch.in_doubt {
                self.unconfirmed(batch);
                continue;
            }
            let endpoint = self.endpoints.present().to_owned();
            let result = Err(ClientError::Unreachable { endpoint });
            self.decide(batch, result);
        }
    }

    /// Gives `batch`'s messages their outcome, `result`.
    fn decide(&mut self, batch: Batch, result: Result<Appended>) {
        let Batch { tags, partition, in_doubt, .. } = batch;
        self.done.push_back(Outcome { tags, partition, result, sent_again: in_doubt });
    }

    fn socket_error(&self, source: zmq::Error) -> ClientError {
        ClientError::Socket { endpoint: self.endpoints.present().to_owned(), source }
    }
}

/// What a refusal of an append says of sending it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Nothing of it was stored, and the cause may pass (`311 overloaded`, `314
    /// store_unavailable` saying "nothing was appended"): a copy is stored where it lands.
    StoredNothing,
    /// `317 in_progress`: its first sending is still being stored; a copy gets its offsets.
    InProgress,
    /// A `314` that cannot say whether it was stored: only an idempotent copy is safe.
    InDoubt,
    /// Sending it again would be refused again.
    Final,
}

/// What `code` and `reason` say of sending the append again.
fn refusal(code: ErrorCode, reason: &str) -> Refusal {
    match code {
        ErrorCode::Overloaded => Refusal::StoredNothing,
        ErrorCode::StoreUnavailable if reason.contains("nothing was appended") => {
            Refusal::StoredNothing
        }
        ErrorCode::StoreUnavailable => Refusal::InDoubt,
        ErrorCode::InProgress => Refusal::InProgress,
        _ => Refusal::Final,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::Endpoints;

    /// A ROUTER on an ephemeral loopback port that reads requests and never answers them.
    fn silent_broker(context: &zmq::Context) -> (zmq::Socket, String) {
        let silent = context.socket(zmq::ROUTER).unwrap();
        silent.set_linger(0).unwrap();
        silent.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = silent.get_last_endpoint().unwrap().unwrap();
        (silent, endpoint)
    }

    /// The ids of the requests `router` has received, waiting at most a second for the first.
    fn ids_received(router: &zmq::Socket) -> Vec<Option<u64>> {
        let mut ids = Vec::new();
        let mut wait = 1000;
        while router.poll(zmq::POLLIN, wait).unwrap() > 0 {
            let frames = router.recv_multipart(0).unwrap();
            ids.push(frames.last().and_then(|body| frame_id(body)));
            wait = 50;
        }
        ids
    }

    fn message(value: &[u8]) -> NewMessage<'_> {
        NewMessage::new(None, value)
    }

    #[test]
    fn an_unanswered_append_is_unconfirmed_and_the_next_goes_to_the_next_endpoint_until_all_are_silent(
    ) {
        let context = zmq::Context::new();
        let (a, a_endpoint) = silent_broker(&context);
        let (b, b_endpoint) = silent_broker(&context);
        let endpoints = Endpoints::parse(&format!("{a_endpoint},{b_endpoint}")).unwrap();
        let timeout = Duration::from_millis(300);
        let client = Client::connect_to(endpoints, timeout, Credentials::None).unwrap();
        let options =
            PipelineOptions { max_in_flight: 2, idempotent: false, ..PipelineOptions::default() };
        let mut pipeline = Pipeline::open(&client, "t", options).unwrap();

        // A leaves the first append unanswered: unconfirmed, and the pipeline moves to B.
        pipeline.send(None, message(b"one"), 1).unwrap();
        pipeline.flush().unwrap();
        let first = pipeline.outcome().unwrap();
        assert_eq!(first.tags, [1]);
        match first.result {
            Err(ClientError::Unconfirmed { count: 1, cause }) => {
                assert!(
                    matches!(*cause, ClientError::Unreachable { ref endpoint } if *endpoint == a_endpoint)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(pipeline.has_fresh_endpoint());
        assert_eq!(pipeline.endpoint(), b_endpoint);

        // B leaves the next unanswered too: every endpoint is silent, and what follows fails.
        pipeline.send(None, message(b"two"), 2).unwrap();
        pipeline.flush().unwrap();
        let second = pipeline.outcome().unwrap();
        assert_eq!(second.tags, [2]);
        assert!(matches!(second.result, Err(ClientError::Unconfirmed { count: 1, .. })));
        assert!(!pipeline.has_fresh_endpoint());
        pipeline.send(None, message(b"three"), 3).unwrap();
        pipeline.flush().unwrap();
        let third = pipeline.outcome().unwrap();
        assert_eq!(third.tags, [3]);
        assert!(matches!(third.result, Err(ClientError::Unreachable { .. })), "{third:?}");
        assert!(pipeline.outcome().is_none());

        // Each append went to one endpoint, once (ids count from 0); the one that failed was
        // never sent.
        assert_eq!(ids_received(&a), [Some(0)]);
        assert_eq!(ids_received(&b), [Some(1)]);
    }

    /// A ROUTER on an ephemeral loopback port answering each append with the next of
    /// `answers` (an error's code and reason, or `None` for `appended` at the next offsets),
    /// echoing its `id`, on a thread; gives the marks of the appends it took, in the order they
    /// came, once it has given every answer or waited two seconds for an append.
    fn scripted_broker(
        answers: Vec<Option<(ErrorCode, &'static str)>>,
    ) -> (String, std::thread::JoinHandle<Vec<Option<protocol::Sequenced>>>) {
        let context = zmq::Context::new();
        let router = context.socket(zmq::ROUTER).unwrap();
        router.set_linger(0).unwrap();
        router.set_rcvtimeo(2_000).unwrap();
        router.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = router.get_last_endpoint().unwrap().unwrap();
        let serving = std::thread::spawn(move || {
            let _context = context;
            let mut marks = Vec::new();
            let mut next_offset = 0;
            for answer in answers {
                let Ok(frames) = router.recv_multipart(0) else { break };
                let (body, envelope) = frames.split_last().unwrap();
                let Ok(Request::Append(append)) = protocol::decode_request(body) else {
                    panic!("not an append")
                };
                marks.push(append.sequenced);
                let count = append.messages.len() as u64;
                let response = match answer {
                    Some((code, reason)) => Response::error(code, reason),
                    None => {
                        next_offset += count;
                        Response::Appended {
                            topic: "t",
                            partition: 0,
                            first_offset: next_offset - count,
                            last_offset: next_offset - 1,
                            placed: Vec::new(),
                        }
                    }
                };
                let mut reply = Vec::new();
                protocol::encode_response_with_id(response, frame_id(body), &mut reply);
                let mut out: Vec<Vec<u8>> = envelope.iter().map(|f| f.to_vec()).collect();
                out.push(reply);
                router.send_multipart(out, 0).unwrap();
            }
            marks
        });
        (endpoint, serving)
    }

    /// The marks of the appends `router` has received, waiting at most a second for the first.
    fn marks_received(router: &zmq::Socket) -> Vec<Option<protocol::Sequenced>> {
        let mut marks = Vec::new();
        let mut wait = 1000;
        while router.poll(zmq::POLLIN, wait).unwrap() > 0 {
            let frames = router.recv_multipart(0).unwrap();
            let body = frames.last().unwrap();
            let Ok(Request::Append(append)) = protocol::decode_request(body) else {
                panic!("not an append")
            };
            marks.push(append.sequenced);
            wait = 50;
        }
        marks
    }

    fn mark(sequence: u64) -> Option<protocol::Sequenced> {
        Some(protocol::Sequenced { producer: 42, sequence })
    }

    #[test]
    fn an_idempotent_append_left_unanswered_goes_again_to_the_next_endpoint_with_its_mark() {
        let context = zmq::Context::new();
        let (silent, silent_endpoint) = silent_broker(&context);
        let (answering, serving) = scripted_broker(vec![None, None]);
        let endpoints = Endpoints::parse(&format!("{silent_endpoint},{answering}")).unwrap();
        let timeout = Duration::from_millis(600);
        let client = Client::connect_to(endpoints, timeout, Credentials::None).unwrap();
        let options = PipelineOptions { max_in_flight: 2, ..PipelineOptions::default() };
        let idempotence = Some(Idempotence::with_id(42));
        let mut pipeline = Pipeline::open_with(&client, "t", options, idempotence).unwrap();

        let started = Instant::now();
        pipeline.send(None, message(b"one"), 1).unwrap();
        pipeline.flush().unwrap();
        // The silent endpoint had half the timeout; the copy was answered by the next.
        assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
        let first = pipeline.outcome().unwrap();
        assert_eq!(first.tags, [1]);
        assert_eq!(first.result.unwrap().first_offset, 0);
        assert_eq!(pipeline.endpoint(), answering);
        // The next append gets the next sequence.
        pipeline.send(None, message(b"two"), 2).unwrap();
        pipeline.flush().unwrap();
        assert_eq!(pipeline.outcome().unwrap().result.unwrap().first_offset, 1);
        assert!(pipeline.outcome().is_none());

        assert_eq!(marks_received(&silent), [mark(0)]);
        assert_eq!(serving.join().unwrap(), [mark(0), mark(1)]);
    }

    #[test]
    fn an_idempotent_append_unanswered_on_its_one_endpoint_is_sent_once_more_then_unconfirmed() {
        let context = zmq::Context::new();
        let (silent, endpoint) = silent_broker(&context);
        let timeout = Duration::from_millis(400);
        let client = Client::connect(&endpoint, timeout).unwrap();
        let idempotence = Some(Idempotence::with_id(42));
        let options = PipelineOptions::default();
        let mut pipeline = Pipeline::open_with(&client, "t", options, idempotence).unwrap();
        let started = Instant::now();
        pipeline.send(None, message(b"one"), 1).unwrap();
        pipeline.flush().unwrap();
        let took = started.elapsed();
        assert!(took >= timeout && took < timeout * 2, "{took:?}");
        let first = pipeline.outcome().unwrap();
        assert!(
            matches!(first.result, Err(ClientError::Unconfirmed { count: 1, .. })),
            "{first:?}"
        );
        assert!(!pipeline.has_fresh_endpoint());
        // Twice, on two sockets, with the one mark.
        assert_eq!(marks_received(&silent), [mark(0), mark(0)]);
    }

    #[test]
    fn in_progress_and_in_doubt_are_sent_again_with_the_same_mark_only_when_idempotent() {
        use ErrorCode::{InProgress, StoreUnavailable};
        let maybe = "may have been appended or not";
        let answers =
            vec![Some((StoreUnavailable, maybe)), Some((InProgress, "settling")), None, None];
        let (endpoint, serving) = scripted_broker(answers);
        let client = Client::connect(&endpoint, Duration::from_secs(5)).unwrap();
        let idempotence = Some(Idempotence::with_id(42));
        let options = PipelineOptions { linger: Duration::ZERO, ..PipelineOptions::default() };
        let mut pipeline = Pipeline::open_with(&client, "t", options, idempotence).unwrap();
        pipeline.send(None, message(b"one"), 1).unwrap();
        pipeline.flush().unwrap();
        pipeline.send(None, message(b"two"), 2).unwrap();
        pipeline.flush().unwrap();
        let outcomes: Vec<u64> = std::iter::from_fn(|| pipeline.outcome())
            .map(|o| o.result.unwrap().first_offset)
            .collect();
        assert_eq!(outcomes, [0, 1]);
        assert_eq!(serving.join().unwrap(), [mark(0), mark(0), mark(0), mark(1)]);

        // Without idempotence nothing is marked, and the doubt is the outcome.
        let (endpoint, serving) = scripted_broker(vec![Some((StoreUnavailable, maybe))]);
        let client = Client::connect(&endpoint, Duration::from_secs(5)).unwrap();
        let options = PipelineOptions { idempotent: false, ..options };
        let mut pipeline = Pipeline::open(&client, "t", options).unwrap();
        pipeline.send(None, message(b"one"), 1).unwrap();
        pipeline.flush().unwrap();
        let outcome = pipeline.outcome().unwrap();
        assert_eq!(outcome.result.unwrap_err().broker_code(), Some(StoreUnavailable));
        assert_eq!(serving.join().unwrap(), [None]);
    }

    #[test]
    fn a_copy_refused_with_nothing_stored_leaves_an_append_whose_first_sending_got_no_reply_in_doubt(
    ) {
        let context = zmq::Context::new();
        let (_silent, silent_endpoint) = silent_broker(&context);
        let nothing = (ErrorCode::StoreUnavailable, "store down; nothing was appended");
        let (refusing, serving) = scripted_broker(vec![Some(nothing); 100]);
        let endpoints = Endpoints::parse(&format!("{silent_endpoint},{refusing}")).unwrap();
        let client =
            Client::connect_to(endpoints, Duration::from_millis(600), Credentials::None).unwrap();
        let idempotence = Some(Idempotence::with_id(42));
        let options = PipelineOptions::default();
        let mut pipeline = Pipeline::open_with(&client, "t", options, idempotence).unwrap();
        pipeline.send(None, message(b"one"), 1).unwrap();
        pipeline.flush().unwrap();
        // The copies were refused until the timeout ran out; the first sending may have been
        // stored all the same: unconfirmed, never "not appended".
        let outcome = pipeline.outcome().unwrap();
        match outcome.result {
            Err(ClientError::Unconfirmed { count: 1, cause }) => {
                assert!(matches!(*cause, ClientError::CopyRefused { .. }), "{cause:?}");
            }
            other => panic!("{other:?}"),
        }
        let copies = serving.join().unwrap();
        assert!(copies.len() > 1 && copies.iter().all(|m| *m == mark(0)), "{copies:?}");
    }

    #[test]
    fn refusals_are_told_apart_by_what_a_copy_would_do() {
        assert_eq!(refusal(ErrorCode::Overloaded, "read the replies"), Refusal::StoredNothing);
        assert_eq!(
            refusal(
                ErrorCode::StoreUnavailable,
                "the store cannot be reached (down); nothing was appended"
            ),
            Refusal::StoredNothing
        );
        assert_eq!(
            refusal(ErrorCode::StoreUnavailable, "may have been appended or not"),
            Refusal::InDoubt
        );
        assert_eq!(refusal(ErrorCode::InProgress, "still being stored"), Refusal::InProgress);
        assert_eq!(refusal(ErrorCode::StorageFull, "nothing was appended"), Refusal::Final);
        assert_eq!(refusal(ErrorCode::UnknownPartition, "no partition 9"), Refusal::Final);
    }
}
