//! One partition's publisher, on the runtime: a task per partition followed (`Lane`), which
//! publishes the batches commits hand it in the order they came. While it knows where its
//! stream ends it publishes each batch at once, without waiting for the acknowledgements of
//! those before it (each names the offset of its first message and carries JetStream's
//! expected last sequence, and after the first of a run the expected last message id, so that
//! JetStream stores it only right after the batch this process counted on). Once a batch is
//! refused or goes unanswered it waits for every publish in flight to be answered, then
//! publishes the batches refused with nothing stored, and any that came meanwhile, one at a
//! time, each after its follower read the stream to its end, while their commits' time lasts.
//!
//! An idempotent producer's batch keeps one message id, its mark's, for every attempt and in
//! every process: JetStream then stores it once, and answers a copy as a duplicate of the batch
//! stored first, which the lane reads back (one direct get) to report that batch's offsets.
//!
//! A partition is the unit: a stream that is slow, without a leader, or gone holds up only the
//! commits' batches to that partition, never another partition's.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;
use async_nats::jetstream::{Error as JetStreamError, ErrorCode};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::record;

/// How long a lane waits before it publishes again a batch refused with nothing stored.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// How much of its commit's time a batch published again must have left: one sent later could
/// not be answered in time, and would turn a refusal that stored nothing into an append that
/// "may have been stored".
const LAST_TRY: Duration = Duration::from_millis(250);

/// What became of one batch's publish: its stream sequence, or why not.
#[derive(Debug, Clone)]
pub enum Stored {
    /// Acknowledged at this stream sequence.
    Yes(u64),
    /// Refused with nothing stored: another process appended first (wrong last sequence or
    /// message id), or the stream had no leader. Published again while time is left.
    Again(String),
    /// Not acknowledged: it may or may not be stored.
    Maybe(String),
    /// Refused with nothing stored, for good (no retry helps).
    No(String),
}

/// One batch for a lane to publish.
pub struct Job {
    /// Its payload; its base offset is set when it is published.
    pub payload: Bytes,
    /// How many messages it holds.
    pub count: u64,
    /// The de-duplication id of its first publish (each retry adds its attempt's number,
    /// unless `resend`).
    pub id: String,
    /// Whether it is an idempotent producer's (its id the same in every process and for every
    /// sending): published again under the same id, and a duplicate JetStream recognises is
    /// answered with the batch stored first.
    pub resend: bool,
    /// The append it belongs to, (ticket, place in the commit): once one of its batches is
    /// not stored, the later ones are not published, so that an append is never stored with
    /// a hole in it.
    pub append: (u64, usize),
    /// When its commit settles, stored or not.
    pub deadline: Instant,
    /// Where what became of it goes.
    pub done: oneshot::Sender<Published>,
}

/// What became of one batch: the payload as published (base offset set), its base offset,
/// and whether it is stored.
pub struct Published {
    /// The payload, as published.
    pub payload: Bytes,
    /// The offset of its first message.
    pub base: u64,
    /// Whether it is stored.
    pub stored: Stored,
}

/// Where a partition's stream ends, as this process counts on it when it publishes.
#[derive(Debug, Clone)]
struct Tail {
    /// The stream sequence of the last stored message.
    seq: u64,
    /// The offset the next batch starts at.
    next: u64,
    /// The de-duplication id of the last stored message, when this process published it.
    last_id: Option<String>,
}

/// A batch published, waiting for its acknowledgement.
struct Sent {
    /// The batch.
    job: Job,
    /// The offset of its first message.
    base: u64,
}

/// One partition's publisher.
struct Lane {
    /// The partition.
    key: (String, u32),
    /// JetStream.
    js: Context,
    /// Where the partition's follower has read to: a stream's end is known once it read it.
    forwarded: watch::Receiver<(u64, u64)>,
    /// Where the stream ends as this process counts on it; `None` when it must be read to
    /// its end first (nothing published yet, or a publish failed).
    tail: Option<Tail>,
    /// The last append a batch of which was not stored.
    failed: Option<(u64, usize)>,
}

/// Starts the publisher of partition `key`, whose follower reports where it has read to on
/// `forwarded`. It ends once the sender it returns is dropped and every batch handed to it
/// is answered.
pub fn start(
    js: Context,
    key: (String, u32),
    forwarded: watch::Receiver<(u64, u64)>,
) -> (mpsc::UnboundedSender<Job>, JoinHandle<()>) {
    let (jobs, receiver) = mpsc::unbounded_channel();
    let lane = Lane { key, js, forwarded, tail: None, failed: None };
    (jobs, tokio::spawn(lane.run(receiver)))
}

impl Lane {
    /// Publishes the batches handed to it, in order, until its sender is dropped.
    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut in_flight: FuturesOrdered<BoxFuture<'static, (Sent, Acked)>> =
            FuturesOrdered::new();
        // Batches to publish one at a time, in order: refused ones, and those behind them.
        let mut queue: VecDeque<Job> = VecDeque::new();
        let mut open = true;
        loop {
            if in_flight.is_empty() {
                if let Some(job) = queue.pop_front() {
                    self.alone(job).await;
                    continue;
                }
                if !open {
                    return;
                }
            }
            // Nothing new is taken while a failure is being drained (the stream's end unknown
            // and publishes in flight) or batches wait their turn: it would go before them.
            let taking = open && queue.is_empty() && (self.tail.is_some() || in_flight.is_empty());
            tokio::select! {
                job = jobs.recv(), if taking => match job {
                    Some(job) if Instant::now() >= job.deadline => {
                        // Its commit has given up on it: nothing is published for it.
                        self.finish(job, 0, Stored::Again("not sent in time".into()));
                    }
                    Some(job) => {
                        if self.tail.is_none() {
                            match self.read_to_end(job.deadline).await {
                                Ok(tail) => self.tail = Some(tail),
                                Err(_) => {
                                    queue.push_back(job);
                                    continue;
                                }
                            }
                        }
                        match self.send(job, 0).await {
                            Ok((sent, ack)) => {
                                let deadline = sent.job.deadline;
                                in_flight.push_back(Box::pin(async move {
                                    let stored = acknowledged(ack, deadline).await;
                                    (sent, stored)
                                }));
                            }
                            Err((job, Stored::Again(_))) => queue.push_back(job),
                            Err((job, stored)) => self.finish(job, 0, stored),
                        }
                    }
                    None => open = false,
                },
                Some((sent, acked)) = in_flight.next() => match acked {
                    Acked::Stored(seq) => self.finish(sent.job, sent.base, Stored::Yes(seq)),
                    Acked::Duplicate(seq) => {
                        // Nothing was stored: the stream does not end where this process
                        // counted on, and the publishes after it in flight are refused.
                        self.tail = None;
                        self.answer_duplicate(sent.job, seq).await;
                    }
                    Acked::Not(Stored::Again(_)) => {
                        self.tail = None;
                        queue.push_back(sent.job);
                    }
                    Acked::Not(other) => {
                        self.tail = None;
                        self.finish(sent.job, sent.base, other);
                    }
                },
            }
        }
    }

    /// Publishes `job` and waits for its acknowledgement, again while it is refused with
    /// nothing stored and its commit's time lasts.
    async fn alone(&mut self, mut job: Job) {
        let mut attempt = 0;
        let mut reason = "not sent in time".to_owned();
        // The first try goes whatever time is left; the next only while one can be answered.
        while Instant::now() < job.deadline
            && (attempt == 0 || Instant::now() + LAST_TRY < job.deadline)
        {
            attempt += 1;
            let (sent, ack) = match self.send(job, attempt).await {
                Ok(sent) => sent,
                Err((back, Stored::Again(why))) => {
                    job = back;
                    reason = why;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err((back, stored)) => return self.finish(back, 0, stored),
            };
            let stored = match acknowledged(ack, sent.job.deadline).await {
                Acked::Stored(seq) => Stored::Yes(seq),
                Acked::Duplicate(seq) => {
                    self.tail = None;
                    return self.answer_duplicate(sent.job, seq).await;
                }
                Acked::Not(stored) => stored,
            };
            match stored {
                Stored::Again(why) => {
                    tracing::debug!(topic = %self.key.0, partition = self.key.1, %why, "publishing a batch again");
                    self.tail = None;
                    job = sent.job;
                    reason = why;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Stored::Yes(seq) => return self.finish(sent.job, sent.base, Stored::Yes(seq)),
                other => {
                    self.tail = None;
                    return self.finish(sent.job, sent.base, other);
                }
            }
        }
        self.finish(job, 0, Stored::Again(reason));
    }

    /// Publishes `job` right after the end of its stream as this process counts on it (read
    /// to its end first when unknown), its base offset set, as attempt `attempt`; gives the
    /// batch back with why when it could not be sent.
    async fn send(
        &mut self,
        mut job: Job,
        attempt: u32,
    ) -> Result<(Sent, PublishAckFuture), (Job, Stored)> {
        if self.failed == Some(job.append) {
            let why = "an earlier batch of the same append was not stored".to_owned();
            return Err((job, Stored::No(why)));
        }
        if job.count == 0 {
            return Err((job, Stored::No("an empty batch".into())));
        }
        let tail = match &self.tail {
            Some(tail) => tail.clone(),
            None => match self.read_to_end(job.deadline).await {
                Ok(tail) => tail,
                Err(why) => return Err((job, Stored::Again(why))),
            },
        };
        // In place when nothing else holds the payload (its first publish), else copied.
        let mut payload = match std::mem::take(&mut job.payload).try_into_mut() {
            Ok(payload) => payload,
            Err(shared) => bytes::BytesMut::from(&shared[..]),
        };
        record::set_base(&mut payload, tail.next);
        job.payload = payload.freeze();
        let id = match attempt {
            _ if job.resend => job.id.clone(),
            0 => job.id.clone(),
            n => format!("{}-{n}", job.id),
        };
        let mut publish = PublishMessage::build()
            .payload(job.payload.clone())
            .message_id(&id)
            .expected_last_sequence(tail.seq);
        if let Some(last) = &tail.last_id {
            publish = publish.expected_last_message_id(last);
        }
        let subject = record::subject(&self.key.0, self.key.1);
        match self.js.send_publish(subject, publish).await {
            Ok(ack) => {
                let next = tail.next + job.count;
                self.tail = Some(Tail { seq: tail.seq + 1, next, last_id: Some(id) });
                Ok((Sent { job, base: tail.next }, ack))
            }
            Err(error) => {
                self.tail = None;
                Err((job, Stored::No(format!("JetStream refused: {error}"))))
            }
        }
    }

    /// Reads the partition's stream to its end (its follower has read every message stored
    /// when asked), and returns where it ends.
    async fn read_to_end(&mut self, deadline: Instant) -> Result<Tail, String> {
        let name = record::stream_name(&self.key.0, self.key.1);
        let info = async {
            let mut stream = self.js.get_stream(&name).await.map_err(|e| e.to_string())?;
            stream.info().await.map(|i| i.state.last_sequence).map_err(|e| e.to_string())
        };
        let last = tokio::time::timeout_at(deadline, info)
            .await
            .map_err(|_| "JetStream did not answer in time".to_owned())?
            .map_err(|e| format!("cannot read the partition's stream: {e}"))?;
        let read = tokio::time::timeout_at(deadline, self.forwarded.wait_for(|f| f.0 >= last));
        let (seq, next) = match read.await {
            Ok(Ok(at)) => *at,
            _ => return Err("the partition's stream was not read to its end in time".into()),
        };
        Ok(Tail { seq, next, last_id: None })
    }

    /// Answers `job`, an idempotent producer's batch JetStream found stored already at
    /// sequence `seq`, with that batch: its payload and base offset, so that the commit
    /// reports the offsets its first sending got, and the copy reads it from the stream.
    async fn answer_duplicate(&mut self, mut job: Job, seq: u64) {
        let name = record::stream_name(&self.key.0, self.key.1);
        let read = async {
            let stream = self.js.get_stream(&name).await.map_err(|e| e.to_string())?;
            super::cold::span_at(&stream, seq).await
        };
        match tokio::time::timeout_at(job.deadline, read).await {
            Ok(Ok(((base, end), payload))) => {
                job.count = end - base;
                job.payload = payload;
                self.finish(job, base, Stored::Yes(seq));
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(why)) => why,
                    _ => "JetStream did not answer in time".to_owned(),
                };
                let why = format!("stored before at sequence {seq}, which cannot be read: {why}");
                self.finish(job, 0, Stored::Maybe(why));
            }
        }
    }

    /// Hands what became of `job` to its commit.
    fn finish(&mut self, job: Job, base: u64, stored: Stored) {
        if !matches!(stored, Stored::Yes(_)) {
            self.failed = Some(job.append);
        }
        let _ = job.done.send(Published { payload: job.payload, base, stored });
    }
}

/// What JetStream answered a publish.
enum Acked {
    /// Stored at this stream sequence.
    Stored(u64),
    /// Not stored: a message of the same id is stored at this sequence (an idempotent
    /// producer's batch sent again).
    Duplicate(u64),
    /// Not stored, or not known to be.
    Not(Stored),
}

/// JetStream's refusal of a publish whose id is that of a message still being stored
/// (`JSStreamDuplicateMessageConflict`): nothing was stored, and once the first is, the same
/// publish is answered as its duplicate.
const DUPLICATE_IN_FLIGHT: ErrorCode = ErrorCode(10158);

/// Whether JetStream refused a publish with `code`.
fn refused_with(error: &PublishError, code: ErrorCode) -> bool {
    let source = std::error::Error::source(error);
    source.and_then(|e| e.downcast_ref::<JetStreamError>()).is_some_and(|e| e.error_code() == code)
}

/// Waits, until `deadline`, for a publish's acknowledgement.
async fn acknowledged(ack: PublishAckFuture, deadline: Instant) -> Acked {
    match tokio::time::timeout_at(deadline, ack).await {
        Ok(Ok(ack)) if ack.duplicate => Acked::Duplicate(ack.sequence),
        Ok(Ok(ack)) => Acked::Stored(ack.sequence),
        Ok(Err(error)) => {
            let reason = format!("JetStream refused: {error}");
            Acked::Not(match error.kind() {
                PublishErrorKind::WrongLastSequence
                | PublishErrorKind::WrongLastMessageId
                | PublishErrorKind::StreamNotFound => Stored::Again(reason),
                PublishErrorKind::Other if refused_with(&error, DUPLICATE_IN_FLIGHT) => {
                    Stored::Again(reason)
                }
                PublishErrorKind::Other => Stored::No(reason),
                _ => Stored::Maybe(reason),
            })
        }
        Err(_) => Acked::Not(Stored::Maybe("JetStream did not acknowledge in time".into())),
    }
}
