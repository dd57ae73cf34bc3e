//! The serve loop: the ROUTER socket, envelopes, held replies, and the order of a pass.
//!
//! One thread owns the socket and the state. Each pass of the loop blocks in `zmq::poll` until a
//! request comes, the next deadline it knows of (a lease, a held reply, a timed flush or
//! retention check), a commit of the store settles (its `wake_fd`), or a stop (the [`Shutdown`]
//! self-pipe), then handles every request already queued (up to [`PASS_REQUESTS`]), lets leases
//! and waits run out, starts the store's commit and takes every commit that settled, answers the
//! fetches held on topics that grew, commits the consumer groups, and only then sends the
//! pass's replies but the acknowledgements whose commit has not settled, which wait for a later
//! pass: one write per partition and one flush cover every append of the pass (group commit), one
//! file per group state every change of a consumer group, and no append is acknowledged, no
//! message served, and no group change reported, before it is durable. The loop never waits
//! for the store's flush: under `--fsync always` the store's flush thread does.

use std::time::{Duration, Instant};

use protocol::{
    decode_request, decode_request_with_id, ErrorCode, Fetch, GroupFetch, Request, Response,
};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::audit::{self, Actor};
use crate::auth::{Guard, Identity};
use crate::broker::{Broker, Stats};
use crate::cmd::{self, claim, fetch, group_fetch, Context, Outcome};
use crate::logical::ClaimError;
use crate::metrics::Meter;
use crate::outbox::{self, Envelope, Handout, Outbox, Route as _};
use crate::quiet::{Shown, Throttle};
use crate::shutdown::Shutdown;
use crate::store::{Budget, Settled};
use crate::unread::{self, Allowance, Unread};
use crate::waiting::{HeldFetch, HeldGroupFetch, Waiting};
use crate::Config;

/// The most requests handled in one pass before timers and replies get their turn.
pub const PASS_REQUESTS: usize = 1024;

/// How long a stopping broker still answers requests that arrive, each with "shutting down".
const STOP_GRACE: Duration = Duration::from_millis(200);

/// The most replies queued towards one peer before the broker drops further ones. Large replies
/// are bounded in bytes by [`Unread`]; this bounds the small ones a peer leaves unread.
const SEND_HIGH_WATER_MARK: i32 = 10_000;

/// How long the broker stops accepting connections after an accept failed (out of file
/// descriptors): long enough that a listener that cannot accept does not spin, short enough
/// that clients retrying get in soon after others leave (nginx pauses its accepts likewise).
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(500);

/// Where the socket's monitor reports accept failures.
const MONITOR_ENDPOINT: &str = "inproc://broker-monitor";

/// How long closing the socket may wait for the last replies to leave.
const LINGER: Duration = Duration::from_millis(500);

/// How many times at most a pass makes its group requests again on the states another broker
/// process stored first, before it refuses them with `314`.
const AGAIN_ROUNDS: usize = 16;

/// How long after its groups' commit began a pass still starts making its group requests
/// again: each round is one more round trip to the shared states on the serving thread.
const AGAIN_TIME: Duration = Duration::from_millis(250);

/// What made a reply of this pass that reports a change of a group's state, kept until the
/// groups' commit so that it can be made again, the same request on the state another broker
/// process stored first, rather than refused.
#[derive(Debug)]
enum Again {
    /// A request as it came: its frame (read again to make it again), who sent it, and what
    /// its peer's unread replies allowed it.
    Request { body: zmq::Message, who: Identity, allowance: Allowance },
    /// A held group fetch answered in this pass.
    Held(HeldGroupFetch<()>),
}

/// Why the broker could not start or had to stop.
#[derive(Debug, Error)]
pub enum Error {
    /// The endpoint could not be bound.
    #[error("cannot bind {endpoint}: {source}")]
    Bind {
        /// The endpoint asked for.
        endpoint: String,
        /// What ZeroMQ said.
        source: zmq::Error,
    },
    /// The socket failed in a way the broker cannot go on from.
    #[error("socket error: {0}")]
    Socket(#[from] zmq::Error),
}

/// The routing frames of a request: the peer's identity, any frames a proxy added, and the
/// empty delimiter when the peer sent one. A reply goes out with the same frames.
type Frames = Vec<zmq::Message>;

/// The broker's bound ROUTER socket, where it is bound, and its monitor.
pub struct Listener {
    /// The ROUTER socket.
    socket: zmq::Socket,
    /// Reports the socket's failed accepts.
    monitor: zmq::Socket,
    /// The endpoint bound, as ZeroMQ reports it (a `*` port resolved).
    endpoint: String,
    /// How many reply bytes its peers may leave unread.
    unread: unread::Limits,
    /// Who may connect and what each may do.
    guard: Guard,
}

impl Listener {
    /// The endpoint bound, with any `*` port resolved: where clients connect.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// Creates the broker's ROUTER socket, secures it as `guard` says, binds it to `endpoint`, and
/// watches it for failed accepts (and failed handshakes, when clients must log in).
///
/// # Errors
/// A socket option, the monitor or the bind failed.
pub fn bind(
    context: &zmq::Context,
    endpoint: &str,
    config: &Config,
    guard: Guard,
) -> Result<Listener, Error> {
    let socket = context.socket(zmq::ROUTER)?;
    guard.secure(&socket)?;
    // Without this a ROUTER silently drops replies to peers it cannot reach; with it the send
    // fails and the broker can say so.
    socket.set_router_mandatory(true)?;
    socket.set_sndhwm(SEND_HIGH_WATER_MARK)?;
    socket.set_linger(LINGER.as_millis() as i32)?;
    // ZeroMQ drops a peer that sends a bigger frame, before the broker sees it: room for a batch
    // of maximal messages, but not for an arbitrary amount of memory.
    socket.set_maxmsgsize(max_frame_bytes(config.store.max_message_bytes))?;
    socket
        .bind(endpoint)
        .map_err(|source| Error::Bind { endpoint: endpoint.to_owned(), source })?;
    let endpoint = socket
        .get_last_endpoint()?
        .unwrap_or_else(|raw| String::from_utf8_lossy(&raw).into_owned());
    let mut events = zmq::SocketEvent::ACCEPT_FAILED as i32
        | zmq::SocketEvent::ACCEPTED as i32
        | zmq::SocketEvent::DISCONNECTED as i32;
    if guard.checks_handshakes() {
        // Handshakes refused by ZAP are logged there, with the user; these fail before it.
        events |= zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32;
    }
    socket.monitor(MONITOR_ENDPOINT, events)?;
    let monitor = context.socket(zmq::PAIR)?;
    monitor.connect(MONITOR_ENDPOINT)?;
    Ok(Listener { socket, monitor, endpoint, unread: config.unread, guard })
}

/// The largest frame the socket accepts: 64 MiB, or room for two maximal messages if more.
pub fn max_frame_bytes(max_message_bytes: usize) -> i64 {
    (64 << 20).max(2 * max_message_bytes as i64 + 4096)
}

/// Serves requests on `socket` until `shutdown` is signalled, then answers what is held and
/// returns the counters.
///
/// # Errors
/// The socket failed.
pub fn run(listener: Listener, mut broker: Broker, shutdown: Shutdown) -> Result<Stats, Error> {
    let unread = Unread::new(listener.unread);
    let meter = Meter::new(broker.published.clone());
    let mut server = Server {
        listener,
        broker: &mut broker,
        shutdown,
        waiting: Waiting::default(),
        outbox: Outbox::new(unread),
        grown: Vec::new(),
        warnings: Warnings::default(),
        accept_paused: None,
        monitor_ready: false,
        meter,
        again: Vec::new(),
    };
    let served = server.serve();
    // Whatever ended the loop, a socket error included, held requests are answered and the
    // store is flushed before the broker goes.
    let stopped = server.stop();
    served.and(stopped)?;
    let totals = broker.store.totals();
    let stats = broker.stats;
    info!(
        "stopped: served {} requests ({} refused, {} overloaded), appended {} messages, dropped \
         {} replies; {} topics hold {} messages",
        stats.requests,
        stats.refused,
        stats.overloaded,
        stats.appended,
        stats.dropped_replies,
        totals.topics,
        totals.messages,
    );
    Ok(stats)
}

/// Kinds of warning a client can cause over and over, each said at most once a second.
#[derive(Debug, Default)]
struct Warnings {
    /// A reply could not be queued (the peer is not reading, or something worse).
    dropped_reply: Throttle,
    /// A read refused because replies were left unread.
    overloaded: Throttle,
    /// A frame with an envelope the broker cannot answer properly.
    malformed_envelope: Throttle,
    /// The socket could not accept a connection.
    accept_failed: Throttle,
    /// Requests refused for a lack of rights, said to the audit log.
    forbidden: audit::Refusals,
}

impl Warnings {
    /// Logs how many of each kind were held back since their last line, so that the log's
    /// counts add up when the broker stops.
    fn say_suppressed(&mut self) {
        let kinds = [
            ("replies dropped", &mut self.dropped_reply),
            ("reads refused as overloaded", &mut self.overloaded),
            ("malformed envelopes", &mut self.malformed_envelope),
            ("failed accepts", &mut self.accept_failed),
        ];
        for (kind, throttle) in kinds {
            let suppressed = throttle.take_suppressed();
            if suppressed > 0 {
                warn!(suppressed, "{kind}: {suppressed} more since the last warning");
            }
        }
        self.forbidden.say_suppressed();
    }
}

/// The serve loop's state for one run.
struct Server<'b> {
    /// The bound ROUTER socket and its monitor.
    listener: Listener,
    /// The state requests act on.
    broker: &'b mut Broker,
    /// The stop flag and the pipe that wakes the poll.
    shutdown: Shutdown,
    /// Replies held back.
    waiting: Waiting<Envelope>,
    /// Replies of this pass, sent at its end.
    outbox: Outbox<Envelope>,
    /// Partitions, (topic, partition), appended to in this pass while fetches were held on
    /// their topic, and topics deleted or reset (partition `None`: all of them).
    grown: Vec<(String, Option<u32>)>,
    /// Throttles for the warnings a client can cause.
    warnings: Warnings,
    /// Until when the socket is unbound because it could not accept connections.
    accept_paused: Option<Instant>,
    /// Whether the socket's monitor has events to read.
    monitor_ready: bool,
    /// Counts for `--metrics-listen`, and where they are published.
    meter: Meter,
    /// The place in the outbox of each reply of this pass that reports a change of a group's
    /// state, with what made it.
    again: Vec<(usize, Again)>,
}

impl Server<'_> {
    /// Runs passes until a stop is asked for.
    fn serve(&mut self) -> Result<(), Error> {
        while !self.shutdown.is_signalled() {
            self.pass()?;
        }
        Ok(())
    }

    /// One pass of the loop, step by step. The order is what makes group commit safe: nothing
    /// is sent before the store and then the groups have committed what it reports.
    fn pass(&mut self) -> Result<(), Error> {
        self.wait()?;
        let clock = Clock::now();
        self.watch_accepts(clock.instant);
        for _ in 0..PASS_REQUESTS {
            let Some(frames) = self.receive()? else { break };
            self.handle(frames, &clock);
        }
        self.expire(&clock);
        self.commit_store(&clock);
        self.serve_grown(clock.instant);
        self.commit_groups(&clock);
        let lost = self.send_replies(&clock);
        self.give_back(lost, clock.instant);
        self.outbox.unread.forget_idle();
        let (waiting, unread) = (self.waiting.claims_wanted(), self.outbox.unread.total());
        self.meter.publish(self.broker, waiting, unread, clock.instant);
        Ok(())
    }

    /// Blocks until a request or a monitor event comes, a stop is asked for, or the next
    /// deadline passes; forever when there is none.
    fn wait(&mut self) -> Result<(), Error> {
        let timeout = self.next_deadline().map_or(-1, |deadline| {
            // Rounded up: waking a millisecond early would only mean a pass that finds nothing.
            let left = deadline.saturating_duration_since(Instant::now());
            left.as_micros().div_ceil(1000).min(i64::MAX as u128) as i64
        });
        // The store's descriptor wakes the loop when a commit settles, so that its
        // acknowledgements go at once; polling a descriptor that never becomes readable
        // (the shutdown pipe's again) when the store has none keeps the array one shape.
        let settled_fd = self.broker.store.wake_fd().unwrap_or(self.shutdown.fd());
        let mut items = [
            self.listener.socket.as_poll_item(zmq::POLLIN),
            self.listener.monitor.as_poll_item(zmq::POLLIN),
            zmq::PollItem::from_fd(self.shutdown.fd(), zmq::POLLIN),
            zmq::PollItem::from_fd(settled_fd, zmq::POLLIN),
            zmq::PollItem::from_fd(self.listener.guard.reload_fd(), zmq::POLLIN),
        ];
        match zmq::poll(&mut items, timeout) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        self.monitor_ready = items[1].is_readable();
        if items[2].is_readable() {
            self.shutdown.drain();
        }
        if items[4].is_readable() {
            self.listener.guard.reload_if_asked();
        }
        Ok(())
    }

    /// Stops accepting connections for [`ACCEPT_PAUSE`] when an accept failed, and starts again
    /// after it. ZeroMQ's listener retries a failed accept at once, for as long as the
    /// connection waits, so without a pause a broker out of file descriptors would spin.
    fn watch_accepts(&mut self, now: Instant) {
        let mut failed = None;
        let events = std::iter::from_fn(|| {
            self.monitor_ready.then(|| self.listener.monitor.recv_multipart(zmq::DONTWAIT).ok())?
        });
        for event in events {
            if let Some(frame) = event.first().filter(|f| f.len() >= 6) {
                let code = u16::from_le_bytes([frame[0], frame[1]]);
                let errno = i32::from_le_bytes([frame[2], frame[3], frame[4], frame[5]]);
                if code == zmq::SocketEvent::ACCEPT_FAILED as u16 {
                    failed = Some(zmq::Error::from_raw(errno));
                } else if code == zmq::SocketEvent::ACCEPTED as u16 {
                    // The value of ACCEPTED and DISCONNECTED is the connection's descriptor.
                    self.listener.guard.note_accepted(errno);
                    self.meter.connection(true);
                } else if code == zmq::SocketEvent::DISCONNECTED as u16 {
                    self.listener.guard.note_disconnected(now, errno);
                    self.meter.connection(false);
                } else if code == zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as u16
                    || code == zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as u16
                {
                    self.listener.guard.note_failed_handshake();
                    crate::metrics::LOGINS.count(crate::metrics::Login::Refused);
                }
            }
        }
        let endpoint = &self.listener.endpoint;
        if let (Some(error), None) = (failed, self.accept_paused) {
            if let Some(suppressed) = self.warnings.accept_failed.admit(now) {
                warn!(
                    %error,
                    suppressed,
                    "cannot accept connections; not accepting any for {ACCEPT_PAUSE:?}"
                );
            }
            if self.listener.socket.unbind(endpoint).is_ok() {
                self.accept_paused = Some(now + ACCEPT_PAUSE);
            }
        }
        if self.accept_paused.is_some_and(|until| now >= until) {
            match self.listener.socket.bind(endpoint) {
                Ok(()) => {
                    self.accept_paused = None;
                    info!(%endpoint, "accepting connections again");
                }
                Err(error) => {
                    warn!(%error, %endpoint, "cannot listen again; trying later");
                    self.accept_paused = Some(now + ACCEPT_PAUSE);
                }
            }
        }
    }

    /// Starts the commit of the pass's appends (and applies retention), whose
    /// acknowledgements wait for its ticket, then takes every commit that settled meanwhile,
    /// this one too when the store settles at once.
    fn commit_store(&mut self, clock: &Clock) {
        let ticket = self.broker.store.commit(clock.instant, clock.epoch_ms);
        self.meter.committing(ticket, clock.instant, self.broker.stats.appended);
        self.outbox.stamp(ticket);
        self.broker.remembered.committing(ticket);
        let settled = self.broker.store.settled();
        self.settle_store(settled);
    }

    /// Opens the acknowledgements of settled commits (those of appends that could not be
    /// made durable become refusals), has fetches held on topics that became readable look
    /// again, and makes the groups of topics that retention shortened forget what went.
    fn settle_store(&mut self, settled: Vec<Settled>) {
        for commit in settled {
            self.meter.settled(&commit);
            self.outbox.settle(commit.ticket, &commit.failures, &commit.renumbered);
            self.broker.remembered.settle(commit.ticket, &commit.failures);
            for (topic, partition) in commit.readable {
                let grown = (topic, Some(partition));
                if self.waiting.holds_fetches_on(&grown.0) && !self.grown.contains(&grown) {
                    self.grown.push(grown);
                }
            }
        }
        let Broker { store, groups, .. } = &mut *self.broker;
        for (topic, partition) in store.take_trimmed() {
            if let Ok((first, _)) = store.offsets(&topic, partition) {
                groups.fit_topic(&topic, partition, first);
            }
        }
    }

    /// Commits the pass's changes of group states: replies about states that could not be
    /// written become refusals. A state another broker process stored first was taken as
    /// stored, and the pass's changes to it dropped: the requests that made them are made
    /// again on it, in the order they came, and committed again, for at most [`AGAIN_ROUNDS`]
    /// rounds started within [`AGAIN_TIME`]; those still not stored then are refused (`314`).
    fn commit_groups(&mut self, clock: &Clock) {
        let began = Instant::now();
        let mut again = std::mem::take(&mut self.again);
        for round in 0.. {
            let failures = self.broker.groups.commit();
            let reloaded: Vec<(String, String, Option<u32>)> = failures
                .iter()
                .filter(|failure| failure.reloaded)
                .map(|f| (f.group.clone(), f.topic.clone(), f.partition))
                .collect();
            let more = !reloaded.is_empty() && round < AGAIN_ROUNDS && began.elapsed() < AGAIN_TIME;
            let mut redo = Vec::new();
            if more {
                for (at, what) in again.drain(..) {
                    if self.outbox.hold_again(at, &reloaded) {
                        redo.push((at, what));
                    }
                }
            } else {
                for (group, topic, partition) in &reloaded {
                    warn!(
                        group = %Shown(group),
                        topic = %Shown(topic),
                        partition,
                        rounds = round + 1,
                        "another broker process stored the group's state first each time; \
                         its replies refused"
                    );
                }
            }
            for (op, code) in self.outbox.settle_groups(&failures) {
                self.meter.refused(op, code);
                self.broker.stats.refused += 1;
            }
            if redo.is_empty() {
                break;
            }
            debug!(
                requests = redo.len(),
                round, "making group requests again on the states another broker process stored"
            );
            self.meter.made_again(redo.len());
            again = self.make_again(redo, clock);
        }
    }

    /// Makes each request of `redo` again (their replies wait in the outbox at their places,
    /// in order), on the group states as they are now, replacing its reply in its place; a
    /// group fetch that finds nothing now is held again, its reply taken out. Returns the
    /// requests whose new replies report a change of a group's state, at their places then.
    fn make_again(&mut self, redo: Vec<(usize, Again)>, clock: &Clock) -> Vec<(usize, Again)> {
        let cx = Context { now: clock.instant, now_ms: clock.epoch_ms, peer: "" };
        let mut kept = Vec::new();
        let mut withdrawn: Vec<(usize, HeldGroupFetch<()>)> = Vec::new();
        for (at, what) in redo {
            match what {
                Again::Request { body, who, allowance } => {
                    let Ok(request) = decode_request(&body) else {
                        // It decoded the first time, and the frame has not changed; were it
                        // not so, its peer still gets an answer.
                        let response = Response::error(
                            ErrorCode::InternalError,
                            "the group request could not be made again",
                        );
                        self.outbox.replace(at, response);
                        continue;
                    };
                    let op = request.op();
                    let request = within(request, allowance);
                    match cmd::apply(request, self.broker, &cx) {
                        Outcome::Reply(mut response) => {
                            self.listener.guard.narrow(who, &mut response);
                            if let Response::Reset { topic, .. } = &response {
                                if self.waiting.holds_fetches_on(topic)
                                    && !self.grown.iter().any(|(t, p)| t == topic && p.is_none())
                                {
                                    self.grown.push(((*topic).to_owned(), None));
                                }
                            }
                            let changed = !matches!(response, Response::Error { .. });
                            if !changed {
                                self.meter.replied(op, &response);
                            }
                            self.outbox.replace(at, response);
                            if changed {
                                kept.push((at, Again::Request { body, who, allowance }));
                            }
                        }
                        Outcome::HoldGroupFetch(fetch) => withdrawn.push((at, fetch)),
                        // A group request is answered or held as a group fetch, nothing else.
                        Outcome::WaitForClaim(_) | Outcome::HoldFetch(_) => {
                            let response = Response::error(
                                ErrorCode::InternalError,
                                "the group request could not be made again",
                            );
                            self.outbox.replace(at, response);
                        }
                    }
                }
                Again::Held(held) => {
                    let Broker { store, groups, .. } = &mut *self.broker;
                    let budget = Budget::of_fetch(held.max_messages, held.max_bytes);
                    let to = group_fetch::Delivery {
                        group: &held.group,
                        topic: &held.topic,
                        member: held.claim,
                        budget,
                        ordered: held.ordered,
                    };
                    let response = group_fetch::deliver(&**store, groups, to, clock.instant);
                    if group_fetch::is_empty(&response) && clock.instant < held.until {
                        let wake = group_fetch::wake(groups, &held.group, &held.topic, held.until);
                        drop(response);
                        withdrawn.push((at, HeldGroupFetch { wake, ..held }));
                        continue;
                    }
                    self.outbox.replace(at, response);
                    kept.push((at, Again::Held(held)));
                }
            }
        }
        for (at, _) in &mut kept {
            *at -= withdrawn.iter().filter(|(out, _)| *out < *at).count();
        }
        // Later places first, so that each place taken out is still the one it was.
        withdrawn.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        for (at, held) in withdrawn {
            let envelope = self.outbox.withdraw(at);
            self.waiting.push_group_fetch(held.routed(envelope));
        }
        kept
    }

    /// Sends the pass's replies. A claim granted to a peer that is gone (a client that gave up
    /// waiting) is released again and handed to the next waiter, rather than left to expire.
    /// Returns the group deliveries whose reply could not be sent.
    fn send_replies(&mut self, clock: &Clock) -> Vec<Handout> {
        let cx = Context { now: clock.instant, now_ms: clock.epoch_ms, peer: "" };
        let mut lost = Vec::new();
        loop {
            let socket = &mut self.listener.socket;
            let undelivered =
                self.outbox.flush(|envelope, reply| outbox::send(socket, envelope, reply));
            self.broker.stats.dropped_replies += undelivered.dropped;
            if let Some(error) = undelivered.error {
                if let Some(suppressed) = self.warnings.dropped_reply.admit(clock.instant) {
                    warn!(%error, suppressed, "replies dropped: their peers are not reading them");
                }
            }
            lost.extend(undelivered.handouts);
            if undelivered.claims.is_empty() {
                return lost;
            }
            for token in undelivered.claims {
                if let Ok(id) = self.broker.brokers.release(token) {
                    info!(broker = id, "released a claim whose holder left before the reply");
                }
            }
            self.serve_waiting_claims(&cx);
        }
    }

    /// Makes deliveries whose reply could not be sent (the member is gone) due again at once,
    /// and has the group fetches held on their topics look again in the next pass.
    fn give_back(&mut self, lost: Vec<Handout>, now: Instant) {
        for handout in lost {
            debug!(group = handout.group, topic = handout.topic, "delivery reached nobody");
            self.broker.groups.give_back(
                &handout.group,
                &handout.topic,
                handout.partition,
                &handout.offsets,
                now,
            );
            let grown = (handout.topic, None);
            if self.waiting.holds_fetches_on(&grown.0) && !self.grown.contains(&grown) {
                self.grown.push(grown);
            }
        }
    }

    /// The earliest moment something held or claimed times out, the store has timed work, or
    /// the socket should accept connections again; now, when deliveries given back left held
    /// group fetches to look again.
    fn next_deadline(&self) -> Option<Instant> {
        [
            (!self.grown.is_empty()).then(Instant::now),
            self.waiting.next_deadline(),
            self.broker.brokers.next_expiry(),
            self.broker.store.next_deadline(),
            self.accept_paused,
            self.meter.next_publish(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One whole multipart message from the socket, if one is queued.
    fn receive(&self) -> Result<Option<Vec<zmq::Message>>, Error> {
        let mut frames = Vec::with_capacity(3);
        loop {
            let more = match self.listener.socket.recv_msg(zmq::DONTWAIT) {
                // The frame itself says whether more follow: no call into the socket.
                Ok(frame) => {
                    let more = frame.get_more();
                    frames.push(frame);
                    more
                }
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) if frames.is_empty() => {
                    return Ok(None)
                }
                Err(e) => return Err(e.into()),
            };
            if !more {
                return Ok(Some(frames));
            }
        }
    }

    /// Handles one request: check its shape, decode it, apply it, and queue or hold the reply.
    fn handle(&mut self, frames: Vec<zmq::Message>, clock: &Clock) {
        self.broker.stats.requests += 1;
        let (frames, mut body) = match split_envelope(frames) {
            Ok(parts) => parts,
            Err(Some((frames, reason))) => {
                let envelope = Envelope { frames, id: None };
                if let Some(suppressed) = self.warnings.malformed_envelope.admit(clock.instant) {
                    warn!(reason, suppressed, "malformed envelope");
                }
                self.broker.stats.refused += 1;
                let response = Response::error(ErrorCode::Malformed, reason);
                self.meter.replied("unknown", &response);
                self.outbox.push(envelope, response);
                return;
            }
            Err(None) => {
                if let Some(suppressed) = self.warnings.malformed_envelope.admit(clock.instant) {
                    warn!(suppressed, "dropped a message with no routing identity");
                }
                return;
            }
        };
        let who = self.listener.guard.identify(&mut body);
        let envelope_id;
        // The reply echoes the request's `id`, errors included (PROTOCOL.md, "Correlating
        // replies"): the envelope carries it to wherever the reply is made.
        let request = match decode_request_with_id(&body) {
            Ok((request, id)) => {
                envelope_id = id;
                request
            }
            Err((error, id)) => {
                let envelope = Envelope { frames, id };
                debug!(%error, "refused a frame");
                self.broker.stats.refused += 1;
                let response = Response::error(error.code(), error.to_string());
                self.meter.replied("unknown", &response);
                self.outbox.push(envelope, response);
                return;
            }
        };
        let envelope = Envelope { frames, id: envelope_id };
        self.meter.request(&request);
        // The door: a request its user may not make is refused before it can change anything.
        if let Err(refusal) = self.listener.guard.admit(who, &request, &self.broker.brokers) {
            let op = request.op();
            if let Response::Error { reason, .. } = &refusal {
                let actor = self.actor(who, &mut body);
                self.warnings.forbidden.say(&actor, op, reason, clock.instant);
            }
            self.broker.stats.refused += 1;
            self.meter.replied(op, &refusal);
            self.outbox.push(envelope, refusal);
            return;
        }
        // Admin actions are said to the audit log with who did them and from where. The peer's
        // address costs too much to look up for every request (see claims below), and the
        // request borrows the frame it is read from: for these few, small requests the frame
        // is read again once the address is known.
        let (request, actor) = if audit::is_admin(&request) {
            let actor = self.actor(who, &mut body);
            match decode_request(&body) {
                Ok(again) => (again, Some(actor)),
                Err(_) => return,
            }
        } else {
            (request, None)
        };
        let allowance = self.outbox.unread.allowance(envelope.peer());
        let request = match allowance {
            Allowance::Refused if is_read(&request) => {
                let response = self.overloaded(clock.instant);
                self.meter.replied(request.op(), &response);
                self.outbox.push(envelope, response);
                return;
            }
            allowance => within(request, allowance),
        };
        // Only a claim that names no client needs the peer's address (as its holder). Looked
        // up for every request, it took about 5 % of the serve loop's instructions per small
        // append, so the others go without.
        // With users, a claim belongs to its user: held under the user's name, whatever name
        // the client gives, so that only that user's requests may use its token.
        if let Request::Claim { broker, wait_ms, client } = request {
            let holder = match (self.listener.guard.holder(who), client) {
                (Some(user), _) => user,
                (None, None) => peer_of(&mut body),
                (None, Some(_)) => {
                    self.dispatch(request, envelope, clock, "", who, None);
                    return;
                }
            };
            let request = Request::Claim { broker, wait_ms, client: None };
            self.dispatch(request, envelope, clock, &holder, who, None);
            return;
        }
        let changes_groups = changes_groups(&request);
        let replied = self.dispatch(request, envelope, clock, "", who, actor.as_ref());
        if let Some(at) = replied.filter(|_| changes_groups) {
            self.again.push((at, Again::Request { body, who, allowance }));
        }
    }

    /// Who sent a request, for the audit log: its user, its address, and the end user's
    /// address its door gave as `origin`, if any.
    fn actor(&self, who: Identity, body: &mut zmq::Message) -> Actor {
        let origin = protocol::frame_origin(body).map(str::to_owned);
        Actor { user: self.listener.guard.holder(who), peer: peer_of(body), origin }
    }

    /// The reply to a read from a peer that has left too many replies unread, counted.
    fn overloaded(&mut self, now: Instant) -> Response<'static> {
        self.broker.stats.refused += 1;
        self.broker.stats.overloaded += 1;
        let limits = self.listener.unread;
        if let Some(suppressed) = self.warnings.overloaded.admit(now) {
            warn!(
                unread = self.outbox.unread.total(),
                suppressed, "refused reads from clients that leave their replies unread"
            );
        }
        let reason = format!(
            "replies not yet read hold too much memory (at most {} bytes for one client); read \
             the replies, or try again later",
            limits.per_peer
        );
        Response::error(ErrorCode::Overloaded, reason)
    }

    /// Applies a decoded request from `who`, then queues its reply or holds it. Returns the
    /// reply's place in the outbox, when it was queued.
    fn dispatch(
        &mut self,
        request: Request<'_>,
        envelope: Envelope,
        clock: &Clock,
        peer: &str,
        who: Identity,
        actor: Option<&Actor>,
    ) -> Option<usize> {
        let op = request.op();
        debug!(op, "request");
        let released = matches!(request, Request::Release { .. });
        let cx = Context { now: clock.instant, now_ms: clock.epoch_ms, peer };
        let replied = match cmd::apply(request, self.broker, &cx) {
            Outcome::Reply(mut response) => {
                if let Some(actor) = actor {
                    audit::done(actor, &response);
                }
                self.listener.guard.narrow(who, &mut response);
                // Appends wake held fetches when their commit settles (`settle_store`).
                if let Response::Deleted { topic } | Response::Reset { topic, .. } = &response {
                    if self.waiting.holds_fetches_on(topic)
                        && !self.grown.iter().any(|(t, p)| t == topic && p.is_none())
                    {
                        self.grown.push(((*topic).to_owned(), None));
                    }
                }
                let refused = matches!(response, Response::Error { .. });
                self.meter.replied(op, &response);
                let at = self.outbox.push(envelope, response);
                self.broker.stats.refused += u64::from(refused);
                Some(at)
            }
            Outcome::WaitForClaim(claim) => {
                self.waiting.push_claim(claim.routed(envelope));
                None
            }
            Outcome::HoldFetch(fetch) => {
                self.waiting.push_fetch(fetch.routed(envelope));
                None
            }
            Outcome::HoldGroupFetch(fetch) => {
                self.waiting.push_group_fetch(fetch.routed(envelope));
                None
            }
        };
        if released {
            self.serve_waiting_claims(&cx);
        }
        replied
    }

    /// Ends lapsed claims and answers waits whose time is up.
    fn expire(&mut self, clock: &Clock) {
        let cx = Context { now: clock.instant, now_ms: clock.epoch_ms, peer: "" };
        let freed = self.broker.brokers.expire(clock.instant);
        for id in &freed {
            info!(broker = id, "claim expired");
        }
        // Claims ended through other broker processes free logical brokers here too.
        let freed_elsewhere = self.broker.brokers.follow_shared(clock.instant);
        let (claims, fetches) = self.waiting.take_expired(clock.instant);
        for waiting in claims {
            // One last try: it may fit now; otherwise the reply says why not.
            let response = claim::grant(self.broker, waiting.broker, &waiting.holder, &cx)
                .unwrap_or_else(Response::from);
            self.outbox.push(waiting.envelope, response);
        }
        for held in fetches {
            self.answer_fetch(held, clock.instant);
        }
        for held in self.waiting.take_woken_group_fetches(clock.instant) {
            self.retry_group_fetch(held, clock.instant);
        }
        if !freed.is_empty() || freed_elsewhere {
            self.serve_waiting_claims(&cx);
        }
    }

    /// Hands free logical brokers to waiting claims, longest waiting first. A claim that
    /// finds its logical broker taken through another process after all waits on.
    fn serve_waiting_claims(&mut self, cx: &Context<'_>) {
        let mut still = Vec::new();
        while let Some(waiting) =
            self.waiting.take_claim(|wanted| self.broker.brokers.can_claim(wanted))
        {
            match claim::grant(self.broker, waiting.broker, &waiting.holder, cx) {
                Err(ClaimError::NoneAvailable(_) | ClaimError::Busy(_))
                    if waiting.deadline > cx.now =>
                {
                    still.push(waiting);
                }
                granted => {
                    let response = granted.unwrap_or_else(Response::from);
                    self.outbox.push(waiting.envelope, response);
                }
            }
        }
        for waiting in still {
            self.waiting.push_claim(waiting);
        }
    }

    /// Answers the fetches held on topics that grew (or went away) in this pass, and the group
    /// fetches there, oldest first, as far as there is something for them.
    fn serve_grown(&mut self, now: Instant) {
        for (topic, partition) in std::mem::take(&mut self.grown) {
            for held in self.waiting.take_fetches(&topic, partition) {
                self.answer_fetch(held, now);
            }
            for held in self.waiting.take_group_fetches(&topic) {
                self.retry_group_fetch(held, now);
            }
        }
    }

    /// Delivers what there is now to a held group fetch. If there is nothing (other members took
    /// it) and its wait is not over, it is held again, to wake when the group's first pending
    /// message comes due.
    fn retry_group_fetch(&mut self, held: HeldGroupFetch<Envelope>, now: Instant) {
        let allowance = self.outbox.unread.allowance(held.envelope.peer());
        if allowance == Allowance::Refused {
            let response = self.overloaded(now);
            self.meter.replied("group_fetch", &response);
            self.outbox.push(held.envelope, response);
            return;
        }
        let Broker { store, groups, brokers, .. } = &mut *self.broker;
        let budget = Budget::of_fetch(held.max_messages, allowance.max_bytes(held.max_bytes));
        let to = group_fetch::Delivery {
            group: &held.group,
            topic: &held.topic,
            member: held.claim,
            budget,
            ordered: held.ordered,
        };
        let response = group_fetch::deliver(&**store, groups, to, now);
        if group_fetch::is_empty(&response) && now < held.until {
            let wake = group_fetch::wake(groups, &held.group, &held.topic, held.until);
            drop(response);
            self.waiting.push_group_fetch(HeldGroupFetch { wake, ..held });
            return;
        }
        // The claim may have been released meanwhile; the reply goes out all the same.
        let _ = brokers.renew(held.claim, now, now);
        self.meter.replied("group_fetch", &response);
        let changed = !matches!(response, Response::Error { .. });
        let at = self.outbox.push(held.envelope, response);
        if changed {
            let held = HeldGroupFetch {
                envelope: (),
                claim: held.claim,
                group: held.group,
                topic: held.topic,
                max_messages: held.max_messages,
                max_bytes: held.max_bytes,
                ordered: held.ordered,
                wake: held.wake,
                until: held.until,
            };
            self.again.push((at, Again::Held(held)));
        }
    }

    /// Answers a held fetch with what its topic holds now; its claim's lease starts again.
    fn answer_fetch(&mut self, held: HeldFetch<Envelope>, now: Instant) {
        // The claim may have been released meanwhile; the reply goes out all the same.
        let _ = self.broker.brokers.renew(held.claim, now, now);
        let allowance = self.outbox.unread.allowance(held.envelope.peer());
        if allowance == Allowance::Refused {
            let response = self.overloaded(now);
            self.meter.replied("fetch", &response);
            self.outbox.push(held.envelope, response);
            return;
        }
        let budget = Budget::of_fetch(held.max_messages, allowance.max_bytes(held.max_bytes));
        let store = &*self.broker.store;
        let read =
            fetch::Read { topic: &held.topic, partition: held.partition, offset: held.offset };
        let times = (now, held.deadline);
        let Some(response) = fetch::answer_held(store, read, (budget, held.batches), times) else {
            // Its messages are still being read back: held until they come.
            self.waiting.push_fetch(held);
            return;
        };
        self.meter.replied("fetch", &response);
        self.outbox.push(held.envelope, response);
    }

    /// Answers everything held and everything still queued, then sends the last replies.
    fn stop(&mut self) -> Result<(), Error> {
        // Handshakes that failed since the last pass are logged before the stop is, and a
        // reload asked for before the stop is done (and logged) before it.
        self.monitor_ready = true;
        self.watch_accepts(Instant::now());
        self.listener.guard.reload_if_asked();
        let (claims, fetches) = self.waiting.take_all();
        info!(claims = claims.len(), fetches = fetches.len(), "stopping: answering held requests");
        for waiting in claims {
            self.outbox.push(waiting.envelope, shutting_down());
        }
        // A held fetch has nothing to give (what came was served in its pass): its reader is
        // told the broker stops, rather than left to find out from the silence that follows.
        for held in fetches {
            self.outbox.push(held.envelope, shutting_down());
        }
        for held in self.waiting.take_all_group_fetches() {
            self.outbox.push(held.envelope, shutting_down());
        }
        self.refuse_queued();
        // Acknowledgements still waiting for their commit get it now.
        let settled = self.broker.store.wait_settled();
        self.settle_store(settled);
        // Nothing changed since the last pass's commits, but the replies of held group fetches
        // wait for a commit all the same.
        self.commit_groups(&Clock::now());
        // Deliveries that cannot be sent now stay pending, and come due with their timeout.
        self.send_replies(&Clock::now());
        // A request on its way as the stop began (a follower's next fetch, sent as its last
        // one was answered) is told too, for a moment, rather than left to its client's timeout.
        let grace = Instant::now() + STOP_GRACE;
        while let Some(left) = grace.checked_duration_since(Instant::now()) {
            let wait = i64::try_from(left.as_millis()).unwrap_or(i64::MAX).max(1);
            if !matches!(self.listener.socket.poll(zmq::POLLIN, wait), Ok(n) if n > 0) {
                break;
            }
            self.refuse_queued();
            self.send_replies(&Clock::now());
        }
        self.warnings.say_suppressed();
        self.listener.guard.say_suppressed();
        self.broker.store.close();
        Ok(())
    }

    /// Answers the requests queued on the socket, up to a pass's worth, that the broker stops.
    fn refuse_queued(&mut self) {
        for _ in 0..PASS_REQUESTS {
            let Ok(Some(frames)) = self.receive() else { break };
            if let Ok((frames, body)) = split_envelope(frames) {
                let id = protocol::frame_id(&body);
                self.outbox.push(Envelope { frames, id }, shutting_down());
            }
        }
    }
}

/// Whether a request only reads, so that its reply may be large and refusing it changes
/// nothing a client could lose.
fn is_read(request: &Request<'_>) -> bool {
    matches!(
        request,
        Request::Status
            | Request::ListTopics { .. }
            | Request::Fetch(_)
            | Request::GroupFetch(_)
            | Request::ListGroups { .. }
    )
}

/// `request`, with its reply cut to what `allowance` leaves: only fetches can be cut.
fn within(request: Request<'_>, allowance: Allowance) -> Request<'_> {
    match request {
        Request::Fetch(fetch) => {
            Request::Fetch(Fetch { max_bytes: allowance.max_bytes(fetch.max_bytes), ..fetch })
        }
        Request::GroupFetch(fetch) => Request::GroupFetch(GroupFetch {
            max_bytes: allowance.max_bytes(fetch.max_bytes),
            ..fetch
        }),
        request => request,
    }
}

/// Whether a reply to `request` may report a change of a group's state, which the groups'
/// commit stores: such a request is kept until then, to be made again if another broker process
/// stored the state first.
fn changes_groups(request: &Request<'_>) -> bool {
    matches!(
        request,
        Request::JoinGroup { .. }
            | Request::GroupFetch(_)
            | Request::Ack { .. }
            | Request::ResetGroup { .. }
    )
}

fn shutting_down() -> Response<'static> {
    Response::error(ErrorCode::ShuttingDown, "the broker is shutting down")
}

/// The time of one pass, in the two forms commands need.
struct Clock {
    /// For deadlines and leases.
    instant: Instant,
    /// For message timestamps.
    epoch_ms: u64,
}

impl Clock {
    fn now() -> Clock {
        Clock { instant: Instant::now(), epoch_ms: crate::clock::epoch_ms() }
    }
}

/// The peer's address as ZeroMQ reports it, or a placeholder. An `ipc://` peer is `localhost`
/// whatever the libzmq: one built with `SO_PEERCRED` (Debian's) adds `:uid:gid:pid`, which is
/// not for other clients to see.
fn peer_of(body: &mut zmq::Message) -> String {
    let address = body.gets("Peer-Address").unwrap_or("unknown peer");
    match address.split_once(':') {
        Some(("localhost", _)) => "localhost".to_owned(),
        _ => address.to_owned(),
    }
}

/// Splits a request into its envelope and its one body frame.
///
/// A REQ peer's request arrives as `[identity, empty, body]`; a DEALER may send `[body]` alone,
/// arriving as `[identity, body]`. Anything else is malformed: `Err(Some(..))` carries the
/// envelope to send the error on, `Err(None)` means there is nobody to answer.
fn split_envelope(
    mut frames: Vec<zmq::Message>,
) -> Result<(Frames, zmq::Message), Option<(Frames, &'static str)>> {
    match frames.iter().position(|f| f.is_empty()) {
        Some(0) | None if frames.len() < 2 => Err(None),
        // The usual shape, a REQ peer's: the body is the last frame, right after the delimiter.
        Some(delimiter) if delimiter + 2 == frames.len() => {
            let body = frames.pop().expect("a frame after the delimiter");
            Ok((frames, body))
        }
        Some(delimiter) => {
            let body = frames.split_off(delimiter + 1);
            match <[zmq::Message; 1]>::try_from(body) {
                Ok([body]) => Ok((frames, body)),
                Err(_) => {
                    Err(Some((frames, "expected exactly one body frame after the empty delimiter")))
                }
            }
        }
        None if frames.len() == 2 => {
            let body = frames.pop().expect("two frames");
            Ok((frames, body))
        }
        None => {
            frames.truncate(1);
            Err(Some((frames, "expected [empty delimiter] and exactly one body frame")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<zmq::Message> {
        parts.iter().map(|p| zmq::Message::from(*p)).collect()
    }

    fn shape(result: Result<(Frames, zmq::Message), Option<(Frames, &str)>>) -> String {
        match result {
            Ok((envelope, body)) => format!("ok {} {:?}", envelope.len(), &body[..]),
            Err(Some((envelope, _))) => format!("error {}", envelope.len()),
            Err(None) => "drop".into(),
        }
    }

    #[test]
    fn envelopes_of_req_and_dealer_peers_are_accepted() {
        assert_eq!(
            shape(split_envelope(frames(&[b"id", b"", b"body"]))),
            "ok 2 [98, 111, 100, 121]"
        );
        assert_eq!(shape(split_envelope(frames(&[b"id", b"body"]))), "ok 1 [98, 111, 100, 121]");
        assert_eq!(shape(split_envelope(frames(&[b"id", b"proxy", b"", b"x"]))), "ok 3 [120]");
    }

    #[test]
    fn other_shapes_get_an_error_or_are_dropped() {
        assert_eq!(shape(split_envelope(frames(&[b"id", b"", b"a", b"b"]))), "error 2");
        assert_eq!(shape(split_envelope(frames(&[b"id", b""]))), "error 2");
        assert_eq!(shape(split_envelope(frames(&[b"id", b"a", b"b"]))), "error 1");
        assert_eq!(shape(split_envelope(frames(&[b"id"]))), "drop");
    }
}
