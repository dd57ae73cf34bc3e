//! `GET /api/follow?topic=T[&partition=P]&from=N`: a partition's new messages (partition 0's
//! unless named), pushed to the browser as Server-Sent Events as they arrive.
//!
//! Each `messages` event carries one fetch's batch and has as its `id` the offset to read from
//! next, so a browser that reconnects sends it back as `Last-Event-ID` and resumes where it
//! stopped, without gaps or repeats. While the stream is open it holds a claim of one logical
//! broker, as any consumer following a topic does, and renews it with its long-poll fetches;
//! the follow views of one session share that claim ([`Session::join_follow`]), so a browser
//! opening many views takes one logical broker. The last view of a session releases it when
//! its browser goes away (noticed at the next write, within one long poll) or the console
//! stops. `status` events tell the page whether the broker answers,
//! and that the stream waits for a topic that does not exist yet (as `consumer follow` does).
//!
//! Memory per stream is bounded: there is no queue between the broker and the browser. The
//! stream fetches one batch (at most [`MAX_BATCH`] messages and [`BATCH_BYTES`]), writes it,
//! and fetches the next only once the write is done, so a slow browser slows its own stream
//! (TCP's flow control) and nothing piles up in the console.

use std::io::Write;
use std::time::Duration;

use protocol::{ErrorCode, Fetch};
use serde_json::json;
use tiny_http::Request;

use super::api::{self, Reply, Shown};
use super::pool::Pool;
use super::session::Session;
use super::Query;
use crate::{Client, ClientError, Shutdown};

/// The most messages one event carries: at high rates one event per fetch keeps the browser's
/// work per message small.
const MAX_BATCH: u32 = 1000;

/// The byte budget of one event's messages.
const BATCH_BYTES: u32 = 1024 * 1024;

/// How long to wait before trying again after the broker did not answer or had no logical
/// broker free.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where the stream starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// At this offset.
    At(u64),
    /// At the topic's end when the stream opens: only new messages.
    End,
}

/// What a follow request asks for.
pub struct Opening<'a> {
    /// Its query: `topic` and `from`.
    pub query: &'a Query,
    /// Its `Last-Event-ID` header, sent by a reconnecting browser.
    pub last_event_id: Option<&'a str>,
    /// A new session's `Set-Cookie` value, to send with the stream's head.
    pub cookie: Option<String>,
}

/// Answers a follow request: validates it, then streams events until the browser leaves.
pub fn stream(request: Request, session: &Session, opening: &Opening<'_>, shutdown: &Shutdown) {
    let start = match start_of(opening.query, opening.last_event_id) {
        Ok(start) => start,
        Err(reason) => {
            let _ = request.respond(Reply::error(400, reason).into_response());
            return;
        }
    };
    let Some(topic) = opening.query.get("topic").map(str::to_owned) else {
        let _ = request.respond(Reply::error(400, "which topic? (topic=...)").into_response());
        return;
    };
    let Ok(partition) = opening.query.get("partition").map_or(Ok(0), str::parse::<u32>) else {
        let reply = Reply::error(400, "the partition must be a whole number");
        let _ = request.respond(reply.into_response());
        return;
    };
    let client = match session.pool.take() {
        Ok(client) => client,
        Err(e) => {
            let _ = request.respond(Reply::failed(&e).into_response());
            return;
        }
    };
    let mut out = request.into_writer();
    let cookie =
        opening.cookie.as_ref().map(|c| format!("Set-Cookie: {c}\r\n")).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
         Connection: close\r\nX-Accel-Buffering: no\r\n{cookie}\r\nretry: 1000\n\n"
    );
    if out.write_all(head.as_bytes()).and_then(|()| out.flush()).is_err() {
        session.pool.give_back(client);
        return;
    }
    let mut follower = Follower {
        client,
        session,
        pool: &session.pool,
        topic,
        partition,
        claim: None,
        state: "",
        healthy: true,
        refused: None,
    };
    follower.run(&mut out, start, shutdown);
    if let Some(token) = follower.claim.take() {
        if session.leave_follow(token, &mut follower.client) {
            follower.healthy = false;
        }
    }
    if follower.healthy {
        session.pool.give_back(follower.client);
    }
}

/// Where to start: `Last-Event-ID` (a reconnecting browser), else `from` (a number or
/// `end`), else the end.
fn start_of(query: &Query, last_event_id: Option<&str>) -> Result<Start, &'static str> {
    if let Some(id) = last_event_id.filter(|id| !id.is_empty()) {
        return id.parse().map(Start::At).map_err(|_| "Last-Event-ID must be an offset");
    }
    match query.get("from") {
        None | Some("end") => Ok(Start::End),
        Some(from) => from.parse().map(Start::At).map_err(|_| "from must be an offset or `end`"),
    }
}

/// One follow stream's state.
struct Follower<'a> {
    /// The connection the stream reads with.
    client: Client,
    /// The session whose follow views share one claim.
    session: &'a Session,
    /// Where a new connection comes from when the broker stopped answering this one.
    pool: &'a Pool,
    /// The broker's reason when it refused the user the topic: the stream ends.
    refused: Option<String>,
    /// Whether the broker answered the last request (a connection that went unanswered is
    /// not kept for others).
    healthy: bool,
    /// The topic followed.
    topic: String,
    /// Its partition followed.
    partition: u32,
    /// The claim held, if any.
    claim: Option<u64>,
    /// The last `status` state sent, so that each change is sent once.
    state: &'static str,
}

impl Follower<'_> {
    /// Streams events to `out` until a write fails, the topic goes or `shutdown`.
    fn run(&mut self, out: &mut dyn Write, start: Start, shutdown: &Shutdown) {
        let mut offset = None;
        let mut waiting_for_topic = false;
        if let Start::At(at) = start {
            offset = Some(at);
        }
        while !shutdown.is_signalled() {
            if self.refused.is_some() {
                return;
            }
            let token = match self.claim {
                Some(token) => token,
                None => match self.session.join_follow(&mut self.client) {
                    Ok(token) => {
                        self.claim = Some(token);
                        token
                    }
                    Err(e) => {
                        if self.failed(out, &e, shutdown).is_err() {
                            return;
                        }
                        continue;
                    }
                },
            };
            let at = match offset {
                Some(at) => at,
                None => match self.client.list_topics(token) {
                    Ok(topics) => match topics.iter().find(|t| t.name == self.topic) {
                        Some(info) => {
                            // A partition the topic lacks: the fetch says so, from offset 0.
                            let (first, next) =
                                api::partition_offsets(info, self.partition).unwrap_or((0, 0));
                            let at = if waiting_for_topic { first } else { next };
                            offset = Some(at);
                            at
                        }
                        None => {
                            // As `consumer follow` does: wait for it, and read it from its
                            // first message once it is there.
                            waiting_for_topic = true;
                            if self.wait_for_topic(out, shutdown).is_err() {
                                return;
                            }
                            continue;
                        }
                    },
                    Err(e) => {
                        if self.failed(out, &e, shutdown).is_err() {
                            return;
                        }
                        continue;
                    }
                },
            };
            let fetch = Fetch {
                claim: token,
                topic: &self.topic,
                partition: self.partition,
                offset: at,
                max_messages: MAX_BATCH,
                max_bytes: BATCH_BYTES,
                wait_ms: u64::try_from(self.client.max_hold().as_millis()).unwrap_or(u64::MAX),
                batches: false,
            };
            let batch = self.client.fetch(fetch, |batch| {
                let shown: Vec<Shown> = batch.messages.iter().map(Shown::from_message).collect();
                Ok((shown, batch.next_offset, batch.end_offset))
            });
            let written = match batch {
                Ok((shown, next, end)) => {
                    let live = self.set_state(out, "live", None);
                    offset = Some(next);
                    live.and_then(|()| {
                        if shown.is_empty() {
                            // A comment: keeps proxies from closing the stream, and notices
                            // a browser gone away.
                            out.write_all(b": idle\n\n").and_then(|()| out.flush())
                        } else {
                            let data = json!({ "messages": shown, "end_offset": end });
                            send_with_id(out, next, &data)
                        }
                    })
                }
                Err(ClientError::Broker { code: ErrorCode::OffsetOutOfRange, range, .. }) => {
                    // Retention removed what was asked for, or the topic is shorter than the
                    // offset the browser remembers (a broker restarted empty): go on from the
                    // nearest offset there is.
                    let (first, end) = range.unwrap_or((0, 0));
                    offset = Some(if at < first { first } else { end });
                    let note = format!("offset {at} is not in the topic; going on from there");
                    send(out, "note", &json!({ "note": note, "offset": offset }))
                }
                Err(ClientError::Broker { code: ErrorCode::UnknownTopic, .. }) => {
                    // Deleted: wait for it to be made again, and read that from its start.
                    waiting_for_topic = true;
                    offset = None;
                    self.wait_for_topic(out, shutdown)
                }
                Err(e) => self.failed(out, &e, shutdown),
            };
            if written.is_err() {
                return;
            }
        }
    }

    /// After a failed request: forgets a claim the broker no longer knows, and tells the page
    /// when the broker did not answer, then waits a moment before going on.
    fn failed(
        &mut self,
        out: &mut dyn Write,
        error: &ClientError,
        shutdown: &Shutdown,
    ) -> std::io::Result<()> {
        match error.broker_code() {
            Some(ErrorCode::UnknownClaim) => {
                if let Some(token) = self.claim.take() {
                    self.session.lost_follow(token);
                }
                return Ok(());
            }
            Some(ErrorCode::Forbidden) => {
                // The user may not read the topic: trying again will not change that.
                let reason = api::describe(error);
                self.refused = Some(reason.clone());
                return send(out, "gone", &json!({ "error": reason }));
            }
            _ => {}
        }
        if error.broker_code().is_none() {
            // No answer: the claim may be gone with a restarted broker; claim again after, on
            // a new connection (this one keeps counting its silence). The other views of the
            // session leave it as they find it gone.
            if let Some(token) = self.claim.take() {
                self.session.lost_follow(token);
            }
            match self.pool.fresh() {
                Ok(client) => self.client = client,
                Err(e) => tracing::debug!("cannot make a new connection: {e}"),
            }
        }
        let told = self.status(out, error);
        shutdown.pause(RETRY_AFTER);
        told
    }

    /// Tells the page the topic does not exist (yet), then waits a moment before looking again.
    fn wait_for_topic(&mut self, out: &mut dyn Write, shutdown: &Shutdown) -> std::io::Result<()> {
        let note = format!("there is no topic {} yet; waiting for it", self.topic);
        let told = self.set_state(out, "waiting", Some(&note));
        // Something must reach the browser now and then, so that a page gone is noticed.
        let alive = told.and_then(|()| out.write_all(b": waiting\n\n")).and_then(|()| out.flush());
        shutdown.pause(RETRY_AFTER);
        alive
    }

    /// Tells the page why the stream cannot read now.
    fn status(&mut self, out: &mut dyn Write, error: &ClientError) -> std::io::Result<()> {
        let state = if error.broker_code().is_some() { "waiting" } else { "down" };
        self.set_state(out, state, Some(&api::describe(error)))
    }

    /// Sends a `status` event when the state changed.
    fn set_state(
        &mut self,
        out: &mut dyn Write,
        state: &'static str,
        error: Option<&str>,
    ) -> std::io::Result<()> {
        if self.state == state {
            return Ok(());
        }
        self.state = state;
        send(out, "status", &json!({ "state": state, "error": error }))
    }
}

/// Writes one event named `event` carrying `data`.
fn send(out: &mut dyn Write, event: &str, data: &serde_json::Value) -> std::io::Result<()> {
    write!(out, "event: {event}\ndata: {data}\n\n")?;
    out.flush()
}

/// Writes one `messages` event carrying `data`, with `next` as its id.
fn send_with_id(out: &mut dyn Write, next: u64, data: &serde_json::Value) -> std::io::Result<()> {
    write!(out, "id: {next}\nevent: messages\ndata: {data}\n\n")?;
    out.flush()
}
