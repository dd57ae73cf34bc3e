//! The topics' streams, on the runtime's thread: each partition of a topic is one stream with
//! one subject (`record`), each append one JetStream message (a batch) or a few. A commit's
//! batches are handed at once to their partitions' publishers (`lane`), one per partition,
//! which publish them in the order commits came, without waiting for the acknowledgements of
//! the commits before them, and publish again those another process got in before. A commit
//! settles when JetStream acknowledged its batches (or its time ran out) and this process's
//! follower of each partition read them back, and is reported once every earlier commit on
//! the same partitions was: commits on other partitions never wait for it. Every stream is
//! followed by an ordered consumer whose batches go to the serving thread's copies, whichever
//! process appended them.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use protocol::{Retention, Sequenced};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cold;
use super::lane::{self, Job, Stored};
use super::record;
use super::runtime::{Connection, Event, Events};
use crate::store::{IoFailure, StoreError};

/// How long JetStream has to acknowledge a commit's appends, retry included, before they are
/// refused: within the client's default 5 s timeout, so that the client hears the refusal.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a commit waits for the topic's follower to have read its own appends back, so that
/// they are readable on this broker when they are acknowledged.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long past a commit's deadline its batches' publishers may take to answer, which they do
/// by the deadline: beyond it a batch counts as unconfirmed.
const LANE_GRACE: Duration = Duration::from_millis(500);

/// How long a follower waits for a message before it asks the stream whether it missed some
/// (its consumer lost when JetStream restarted or moved its leader), and starts again if so.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How often a follower of a busy stream looks where the stream starts now: its limits remove
/// its oldest messages without a word, and the copy of the newest does not see it.
const FIRST_CHECK: Duration = Duration::from_secs(5);

/// How long a follower waits before it starts again after its consumer failed.
const FOLLOW_RETRY: Duration = Duration::from_millis(250);

/// The most messages one [`Event::Messages`] carries.
const EVENT_BATCH: usize = 4096;

/// One append request of a commit: its topic, partition and its messages as batches.
#[derive(Debug)]
pub struct Staged {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Its messages, in batches `record` made, whose base offsets are set when published.
    pub batches: Vec<Vec<u8>>,
    /// The idempotent producer's mark on the append, which names its batches in the stream's
    /// de-duplication, so that a resend through any process is stored no second time.
    pub sequenced: Option<Sequenced>,
}

/// One batch of a commit in flight.
struct Batch {
    /// Its payload, base offset set.
    payload: Bytes,
    /// Its base offset and count of messages.
    base: u64,
    /// How many messages it holds.
    count: u64,
    /// What became of it, once known.
    stored: Stored,
}

/// One append of a commit in flight: refused at once, or its batches.
struct Append {
    /// The partition.
    key: (String, u32),
    /// Why it was refused before anything was published.
    refused: Option<StoreError>,
    /// Its batches, in order.
    batches: Vec<Batch>,
}

/// A commit whose batches are published, and what became of them.
struct InFlight {
    /// The commit's ticket.
    ticket: u64,
    /// Its appends, in order.
    appends: Vec<Append>,
}

/// Why a create or a delete was refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The topic exists (create).
    Exists,
    /// There is no such topic (delete).
    Unknown,
    /// JetStream answered with an error.
    Failed(String),
    /// JetStream could not be reached, or did not answer in time.
    Unreachable(String),
    /// The topic has this many partitions, as many as or more than a growth asked.
    Partitions(u32),
}

impl Refusal {
    /// A request that failed while `doing` this: [`Refusal::Failed`] when JetStream
    /// `answered` with an error, else [`Refusal::Unreachable`].
    fn of(answered: bool, doing: &str, error: impl std::fmt::Display) -> Refusal {
        match answered {
            true => Refusal::Failed(format!("{doing}: {error}")),
            false => Refusal::Unreachable(format!("{doing}: {error}")),
        }
    }

    /// What the serving thread makes of it for an append of a commit.
    pub fn into_failure(self) -> StoreError {
        match self {
            Refusal::Unreachable(reason) => StoreError::Unavailable(reason),
            Refusal::Failed(reason) => StoreError::Io(IoFailure::new(io::Error::other(reason))),
            Refusal::Exists | Refusal::Unknown | Refusal::Partitions(_) => {
                StoreError::Io(IoFailure::new(io::Error::other("the topic's stream changed")))
            }
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Exists => f.write_str("the topic's stream exists"),
            Refusal::Unknown => f.write_str("the topic has no stream"),
            Refusal::Partitions(n) => write!(f, "the topic has {n} partitions"),
            Refusal::Failed(reason) | Refusal::Unreachable(reason) => f.write_str(reason),
        }
    }
}

/// The topics followed, on the runtime.
pub struct Streams {
    /// The partitions, (topic, partition), followed, each by a task reading its stream into
    /// the serving thread's copy.
    followed: HashMap<(String, u32), Followed>,
    /// The commits handed to the publishers and not yet settled.
    pending: FuturesUnordered<BoxFuture<'static, InFlight>>,
    /// The commits not yet reported, in the order they came, with the partitions each
    /// appends to: a commit is reported once none before it shares a partition with it.
    unreported: Vec<(u64, Vec<(String, u32)>)>,
    /// The commits settled and not yet reported, waiting for an earlier one.
    finished: Vec<InFlight>,
    /// This process's name in de-duplication ids.
    instance: String,
    /// The copies kept from an earlier run (`--copy-dir`), by topic, until their stream is
    /// followed: the offset each copy's next message gets, and the payload of its last
    /// message as its stream held it.
    resume: HashMap<(String, u32), (u64, Bytes)>,
}

/// A topic being followed.
struct Followed {
    /// The stream sequence of the last message handed to the serving thread, and the offset
    /// after its last message.
    forwarded: watch::Receiver<(u64, u64)>,
    /// The task reading the stream.
    task: JoinHandle<()>,
    /// When the stream was created: a stream of the same name created later is another
    /// topic's.
    created: i128,
    /// The partition's publisher, which ends once this is dropped and it answered every
    /// batch handed to it.
    lane: mpsc::UnboundedSender<Job>,
    /// The publisher's task.
    publisher: JoinHandle<()>,
}

impl Streams {
    /// No topic followed yet; `instance` names this process in de-duplication ids, and
    /// `resume` holds the copies kept from an earlier run.
    pub fn new(instance: String, resume: HashMap<(String, u32), (u64, Bytes)>) -> Streams {
        Streams {
            followed: HashMap::new(),
            pending: FuturesUnordered::new(),
            unreported: Vec::new(),
            finished: Vec::new(),
            instance,
            resume,
        }
    }

    /// Stops following every stream, at a stop.
    pub fn stop(&mut self) {
        for (_, followed) in self.followed.drain() {
            followed.task.abort();
            followed.publisher.abort();
        }
    }

    /// Follows every partition's stream JetStream holds.
    pub async fn follow_existing(&mut self, conn: &Connection) -> Result<(), String> {
        let mut names = conn.js.stream_names();
        let mut partitions = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| format!("cannot list JetStream's streams: {e}"))?;
            partitions.extend(record::partition_of(&name));
        }
        partitions.sort();
        for (topic, partition) in partitions {
            if let Err(error) = self.follow(conn, &topic, partition).await {
                tracing::warn!(%topic, partition, %error, "cannot follow a partition's stream");
            }
        }
        Ok(())
    }

    /// Hands a commit's batches to their partitions' publishers, without waiting: the commit
    /// settles through [`Streams::next_settled`], and is reported by [`Streams::settle`]
    /// after the commits before it on the same partitions.
    pub async fn commit(&mut self, conn: &Connection, ticket: u64, staged: Vec<Staged>) {
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        let sequenced: Vec<Option<Sequenced>> = staged.iter().map(|s| s.sequenced).collect();
        let mut appends: Vec<Append> = staged
            .into_iter()
            .map(|s| Append {
                key: (s.topic, s.partition),
                refused: None,
                batches: s
                    .batches
                    .into_iter()
                    .map(|b| Batch {
                        count: record::count_of(&b),
                        payload: b.into(),
                        base: 0,
                        stored: Stored::Again("not sent".into()),
                    })
                    .collect(),
            })
            .collect();
        // Publishes made while disconnected would wait in the client and be stored after it
        // reconnects, after their refusal: none is made.
        if conn.client.connection_state() != async_nats::connection::State::Connected {
            for append in &mut appends {
                let down = StoreError::Unavailable("NATS is not reachable".to_owned());
                append.refused = Some(down);
            }
            let done = InFlight { ticket, appends };
            self.pending.push(Box::pin(async move { done }));
            return;
        }
        let mut refused: HashMap<(String, u32), Refusal> = HashMap::new();
        for append in &mut appends {
            if !self.followed.contains_key(&append.key) && !refused.contains_key(&append.key) {
                let (topic, partition) = &append.key;
                if let Err(error) = self.follow_or_create(conn, topic, *partition).await {
                    refused.insert(append.key.clone(), error);
                }
            }
            if let Some(refusal) = refused.get(&append.key) {
                append.refused = Some(refusal.clone().into_failure());
            }
        }
        let keys = appends.iter().filter(|a| a.refused.is_none()).map(|a| a.key.clone());
        let mut keys: Vec<(String, u32)> = keys.collect();
        keys.sort();
        keys.dedup();
        self.unreported.push((ticket, keys));
        // Each batch goes to its partition's publisher, which answers by the deadline.
        let mut answers = Vec::new();
        for (at, append) in appends.iter_mut().enumerate() {
            if append.refused.is_some() {
                continue;
            }
            let Some(followed) = self.followed.get(&append.key) else { continue };
            for (n, batch) in append.batches.iter_mut().enumerate() {
                let (done, answer) = oneshot::channel();
                // An idempotent append's batches are named by its mark, the same in every
                // process and every sending; any other's by this process and commit.
                let (id, resend) = match sequenced[at] {
                    Some(mark) => (format!("i-{:x}-{}-{n}", mark.producer, mark.sequence), true),
                    None => (format!("{}-{ticket}-{at}-{n}", self.instance), false),
                };
                let job = Job {
                    payload: std::mem::take(&mut batch.payload),
                    count: batch.count,
                    id,
                    resend,
                    append: (ticket, at),
                    deadline,
                    done,
                };
                // A publisher that is gone drops the job, and its answer says so.
                let _ = followed.lane.send(job);
                answers.push((at, n, answer));
            }
        }
        let waiting = self.read_back_of(&appends);
        let events = conn.events.clone();
        self.pending.push(Box::pin(async move {
            let mut done = InFlight { ticket, appends };
            for (at, n, answer) in answers {
                // The publisher answers by the deadline; a little more is left for it to.
                let answer = tokio::time::timeout_at(deadline + LANE_GRACE, answer).await;
                let Some(batch) = done.appends.get_mut(at).and_then(|a| a.batches.get_mut(n))
                else {
                    continue;
                };
                match answer {
                    Ok(Ok(published)) => {
                        batch.payload = published.payload;
                        batch.base = published.base;
                        batch.stored = published.stored;
                    }
                    Ok(Err(_)) => {
                        batch.stored = Stored::Again("the partition's stream changed".into())
                    }
                    Err(_) => {
                        batch.stored =
                            Stored::Maybe("the partition's publisher did not answer in time".into())
                    }
                }
            }
            read_back(&done, waiting, &events).await;
            done
        }));
    }

    /// The followers of the partitions `appends` publish to, with the stream sequence each
    /// is to read up to before the commit settles (filled in once acknowledged).
    fn read_back_of(&self, appends: &[Append]) -> Vec<ReadBack> {
        let mut waiting: Vec<ReadBack> = Vec::new();
        for append in appends {
            if waiting.iter().any(|(k, _)| *k == append.key) {
                continue;
            }
            if let Some(followed) = self.followed.get(&append.key) {
                waiting.push((append.key.clone(), followed.forwarded.clone()));
            }
        }
        waiting
    }

    /// The next commit to settle, in whatever order they do, once its acknowledgements came
    /// (or did not in time); never ready when none is in flight.
    pub async fn next_settled(&mut self) -> InFlightDone {
        match self.pending.next().await {
            Some(done) => InFlightDone(done),
            None => std::future::pending().await,
        }
    }

    /// Reports with [`Event::Committed`] a commit that settled, once every commit before it
    /// on the same partitions was, and any later one that waited for it.
    pub fn settle(&mut self, conn: &Connection, InFlightDone(done): InFlightDone) {
        self.finished.push(done);
        while let Some(at) = self.finished.iter().position(|d| self.may_report(d.ticket)) {
            let done = self.finished.remove(at);
            self.unreported.retain(|(ticket, _)| *ticket != done.ticket);
            report(conn, done);
        }
    }

    /// Whether no commit before `ticket` that appends to one of its partitions is unreported.
    fn may_report(&self, ticket: u64) -> bool {
        let Some(at) = self.unreported.iter().position(|(t, _)| *t == ticket) else {
            return true;
        };
        let keys = &self.unreported[at].1;
        self.unreported[..at].iter().all(|(_, earlier)| !earlier.iter().any(|k| keys.contains(k)))
    }

    /// Starts following partition `partition` of `topic`, for an append to it; when the
    /// topic has no stream at all, makes it first, with the partitions and limits a topic made
    /// by its first append gets. A partition the topic does not have is refused.
    async fn follow_or_create(
        &mut self,
        conn: &Connection,
        topic: &str,
        partition: u32,
    ) -> Result<(), Refusal> {
        match self.follow(conn, topic, partition).await {
            Err(Refusal::Unknown) => {}
            done => return done,
        }
        let zero = conn.js.get_stream(record::stream_name(topic, 0)).await;
        let exists = match zero {
            Ok(_) => true,
            Err(error) if is_not_found(&error) => false,
            Err(error) => return Err(lookup_refused(error)),
        };
        let partitions = conn.setup.partitions;
        if exists || partition >= partitions {
            return Err(Refusal::Unknown);
        }
        match self.create(conn, topic, partitions, conn.setup.retention).await {
            // Made meanwhile by another process: follow it as it is.
            Ok(()) | Err(Refusal::Exists) => self.follow(conn, topic, partition).await,
            Err(refusal) => Err(refusal),
        }
    }

    /// Starts following partition `partition` of `topic`. Tells the serving thread of it
    /// before any of its messages. [`Refusal::Unknown`] when its stream does not exist.
    async fn follow(
        &mut self,
        conn: &Connection,
        topic: &str,
        partition: u32,
    ) -> Result<(), Refusal> {
        let key = (topic.to_owned(), partition);
        if self.followed.contains_key(&key) {
            return Ok(());
        }
        let name = record::stream_name(topic, partition);
        let mut stream = match conn.js.get_stream(&name).await {
            Ok(stream) => stream,
            Err(error) if is_not_found(&error) => return Err(Refusal::Unknown),
            Err(error) => return Err(lookup_refused(error)),
        };
        let info = stream
            .info()
            .await
            .map_err(|e| Refusal::of(false, "cannot read the topic's stream in JetStream", e))?
            .clone();
        let state = &info.state;
        let (first_seq, last_seq) = (state.first_sequence, state.last_sequence);
        // A stream emptied by its limits has no batch left to say where its offsets end:
        // they go on from its last sequence, as in the format before batches (at worst
        // short of where they were, which only a stream emptied while no process followed it
        // can come to).
        let (mut first, mut next) = (last_seq, last_seq);
        if state.messages > 0 {
            let span = |message: Result<_, _>| match message {
                Ok(message) => {
                    let message: async_nats::jetstream::message::StreamMessage = message;
                    record::span(message.sequence, &message.payload)
                }
                Err(_) => None,
            };
            first = span(stream.get_raw_message(first_seq).await)
                .map_or(first_seq.saturating_sub(1), |(from, _)| from);
            next = span(stream.get_raw_message(last_seq).await).map_or(last_seq, |(_, to)| to);
        }
        let retention = retention_of(&info.config);
        let created = info.created.unix_timestamp_nanos();
        let partitions = (partition == 0).then(|| partitions_of(&info.config));
        // The stream sequence the follower starts at: after the stream's last message (older
        // ones are read back when asked for, `cold`), or, for a copy kept from an earlier run
        // when the stream still holds its last message at its place, after that message.
        let mut start = last_seq + 1;
        let resumed = match self.resume.remove(&key) {
            Some((end, last)) if end > first && end <= next => {
                match find(&stream, end - 1, first_seq, last_seq).await {
                    Some((seq, message)) if message == last => {
                        start = seq;
                        Some(end)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let event = Event::Topic {
            topic: topic.to_owned(),
            partition,
            partitions,
            first,
            next,
            bytes: state.bytes,
            retention,
            resumed,
        };
        conn.events.send(event);
        // Where the follower has handed messages on: nowhere yet, unless the stream holds
        // nothing past where it starts.
        let read = if start > last_seq { (last_seq, next) } else { (start - 1, first) };
        let (forwarded_tx, forwarded) = watch::channel(read);
        let task = tokio::spawn(read_stream(
            conn.js.clone(),
            name,
            key.clone(),
            start,
            conn.events.clone(),
            forwarded_tx,
        ));
        let (lane, publisher) = lane::start(conn.js.clone(), key.clone(), forwarded.clone());
        self.followed.insert(key, Followed { forwarded, task, created, lane, publisher });
        Ok(())
    }

    /// Makes the streams of partitions `from..to` of `topic` with these limits, and, when `from`
    /// is 0, partition 0's last, noting the count in its metadata: a topic is seen once its
    /// partition 0 exists, with its others. (A deletion removes partition 0's stream last, so
    /// that it leaves no other partition's stream behind for a topic made again.)
    async fn make_streams(
        &self,
        conn: &Connection,
        topic: &str,
        from: u32,
        to: u32,
        retention: Retention,
    ) -> Result<(), Refusal> {
        let replicas = conn.setup.replicas;
        for partition in from.max(1)..to {
            // One made meanwhile by another process making the same topic is taken as it is.
            let config = stream_config(topic, partition, replicas, retention, None);
            conn.js.get_or_create_stream(config).await.map_err(create_refused)?;
        }
        if from == 0 {
            create_stream(conn, stream_config(topic, 0, replicas, retention, Some(to))).await?;
        }
        Ok(())
    }

    /// Grows `topic` to `partitions` partitions: makes the new partitions' streams, then notes
    /// the count in partition 0's metadata, and follows them.
    pub async fn grow(
        &mut self,
        conn: &Connection,
        topic: &str,
        partitions: u32,
    ) -> Result<(), Refusal> {
        let zero = record::stream_name(topic, 0);
        let mut stream = match conn.js.get_stream(&zero).await {
            Ok(stream) => stream,
            Err(error) if is_not_found(&error) => return Err(Refusal::Unknown),
            Err(error) => return Err(lookup_refused(error)),
        };
        let info = stream
            .info()
            .await
            .map_err(|e| Refusal::of(false, "cannot read the topic's stream in JetStream", e))?;
        let now = partitions_of(&info.config);
        if partitions <= now {
            return Err(Refusal::Partitions(now));
        }
        let retention = retention_of(&info.config);
        let mut config = info.config.clone();
        config.metadata.insert(record::PARTITIONS_KEY.to_owned(), partitions.to_string());
        let grown = match self.make_streams(conn, topic, now, partitions, retention).await {
            Ok(()) => conn.js.update_stream(config).await.map(|_| ()).map_err(|e| {
                Refusal::of(true, "cannot note the topic's partitions in JetStream", e)
            }),
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = grown {
            // The topic is left as it was: the streams made for it go again.
            for partition in now..partitions {
                let _ = conn.js.delete_stream(record::stream_name(topic, partition)).await;
            }
            return Err(refusal);
        }
        for partition in now..partitions {
            self.follow(conn, topic, partition).await?;
        }
        spread_leaders(conn, topic, partitions).await;
        Ok(())
    }

    /// Creates `topic`'s streams, one per partition, and follows them.
    pub async fn create(
        &mut self,
        conn: &Connection,
        topic: &str,
        partitions: u32,
        retention: Retention,
    ) -> Result<(), Refusal> {
        match conn.js.get_stream(record::stream_name(topic, 0)).await {
            Ok(_) => return Err(Refusal::Exists),
            Err(error) if is_not_found(&error) => {}
            Err(error) => {
                let answered =
                    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(_));
                return Err(Refusal::of(answered, "cannot look the topic up in JetStream", error));
            }
        }
        self.make_streams(conn, topic, 0, partitions, retention).await?;
        for partition in 0..partitions {
            self.followed.remove(&(topic.to_owned(), partition)).inspect(|f| f.task.abort());
            self.follow(conn, topic, partition).await?;
        }
        spread_leaders(conn, topic, partitions).await;
        Ok(())
    }

    /// Deletes `topic`'s streams, partition 0's last (the topic is gone with it, and leaves no
    /// other partition's stream behind), and stops following them.
    pub async fn delete(&mut self, conn: &Connection, topic: &str) -> Result<(), Refusal> {
        let zero = record::stream_name(topic, 0);
        let partitions = match conn.js.get_stream(&zero).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => partitions_of(&info.config),
                Err(error) => {
                    return Err(Refusal::of(
                        false,
                        "cannot read the topic's stream in JetStream",
                        error,
                    ))
                }
            },
            Err(error) if is_not_found(&error) => return Err(Refusal::Unknown),
            Err(error) => return Err(lookup_refused(error)),
        };
        for partition in (0..partitions).rev() {
            if let Some(followed) = self.followed.remove(&(topic.to_owned(), partition)) {
                followed.task.abort();
            }
            match conn.js.delete_stream(record::stream_name(topic, partition)).await {
                Ok(_) => {}
                Err(error) => match error.kind() {
                    jetstream::context::DeleteStreamErrorKind::JetStream(e)
                        if e.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                    {
                        if partition == 0 {
                            return Err(Refusal::Unknown);
                        }
                    }
                    jetstream::context::DeleteStreamErrorKind::JetStream(_) => {
                        return Err(Refusal::of(
                            true,
                            "cannot delete the topic's stream in JetStream",
                            error,
                        ))
                    }
                    _ => {
                        return Err(Refusal::of(
                            false,
                            "cannot delete the topic's stream in JetStream",
                            error,
                        ))
                    }
                },
            }
        }
        Ok(())
    }

    /// Follows or forgets a partition another broker process created or deleted, as its
    /// JetStream advisory on `subject` says.
    pub async fn advised(&mut self, conn: &Connection, subject: &str) {
        if let Some((_, key, "CREATED" | "DELETED")) = advisory(subject) {
            self.reconcile(conn, key).await;
        }
    }

    /// Catches up with advisories missed (core NATS delivers them at most once, and none
    /// while disconnected) or not acted on (JetStream too slow to answer): every partition's
    /// stream JetStream lists and is not followed here, and every one followed and not
    /// listed, is looked at again.
    pub async fn sweep(&mut self, conn: &Connection) {
        let mut listed = std::collections::BTreeSet::new();
        let mut names = conn.js.stream_names();
        while let Some(name) = names.next().await {
            match name {
                Ok(name) => listed.extend(record::partition_of(&name)),
                Err(error) => {
                    tracing::debug!(%error, "cannot list JetStream's streams");
                    return;
                }
            }
        }
        let unfollowed = listed.iter().filter(|key| !self.followed.contains_key(*key));
        let gone = self.followed.keys().filter(|key| !listed.contains(*key));
        let missed: Vec<_> = unfollowed.chain(gone).cloned().collect();
        for key in missed {
            self.reconcile(conn, key).await;
        }
    }

    /// Follows or forgets partition `key` as JetStream holds it now: advisories come late (a
    /// topic deleted and made again since) and are about a name, so the stream found decides.
    async fn reconcile(&mut self, conn: &Connection, key: (String, u32)) {
        let (topic, partition) = &key;
        let found = match conn.js.get_stream(record::stream_name(topic, *partition)).await {
            Ok(stream) => Some(stream.cached_info().created.unix_timestamp_nanos()),
            Err(error) if is_not_found(&error) => None,
            Err(error) => {
                tracing::warn!(%topic, partition, %error, "cannot look a partition's stream up");
                return;
            }
        };
        let replaced = match self.followed.get(&key) {
            Some(followed) if Some(followed.created) == found => return,
            Some(_) => {
                self.followed.remove(&key).inspect(|f| f.task.abort());
                true
            }
            None => false,
        };
        let (topic, partition) = key;
        if found.is_none() || replaced {
            conn.events.send(Event::Deleted { topic: topic.clone(), partition });
        }
        if found.is_some() {
            if let Err(error) = self.follow(conn, &topic, partition).await {
                tracing::warn!(%topic, partition, %error, "cannot follow a new partition's stream");
            }
        }
    }

    /// Publishes each payload with its id, for tests of the de-duplication.
    #[cfg(test)]
    pub async fn publish_raw(
        &mut self,
        conn: &Connection,
        topic: &str,
        messages: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<(u64, bool)>, String> {
        self.follow_or_create(conn, topic, 0).await.map_err(|e| e.to_string())?;
        let mut acks = Vec::new();
        for (id, payload) in messages {
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .message_id(id);
            let ack = conn.js.send_publish(record::subject(topic, 0), publish).await;
            let ack = ack.map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
            acks.push((ack.sequence, ack.duplicate));
        }
        Ok(acks)
    }
}

/// Creates a stream as `config` says.
async fn create_stream(conn: &Connection, config: Config) -> Result<(), Refusal> {
    match conn.js.create_stream(config).await {
        Ok(_) => Ok(()),
        Err(error) => Err(create_refused(error)),
    }
}

/// The refusal of a stream's creation: [`Refusal::Exists`] for a name taken, and, as when
/// JetStream does not answer, [`Refusal::Unreachable`] (`314`, sent again by clients) for
/// an error that passes by itself ([`passes`]).
fn create_refused(error: jetstream::context::CreateStreamError) -> Refusal {
    let doing = "cannot create the topic's stream in JetStream";
    match error.kind() {
        jetstream::context::CreateStreamErrorKind::JetStream(e)
            if e.error_code() == ErrorCode::STREAM_NAME_EXIST =>
        {
            Refusal::Exists
        }
        jetstream::context::CreateStreamErrorKind::JetStream(e) if passes(e.error_code()) => {
            Refusal::of(false, doing, error)
        }
        jetstream::context::CreateStreamErrorKind::JetStream(_) => Refusal::of(true, doing, error),
        _ => Refusal::of(false, doing, error),
    }
}

/// Whether JetStream's error `code` passes by itself: no servers to place a stream's replicas
/// on yet (a cluster starting, or one of its servers down: "no suitable peers for placement"),
/// or no JetStream leader now ("JetStream system temporarily unavailable").
pub fn passes(code: ErrorCode) -> bool {
    code == ErrorCode::CLUSTER_NO_PEERS || code == ErrorCode::CLUSTER_NOT_AVAILABLE
}

/// The configuration of partition `partition` of `topic`'s stream, its limits `retention`,
/// kept on `replicas` servers; partition 0's notes the topic's count of `partitions`.
fn stream_config(
    topic: &str,
    partition: u32,
    replicas: usize,
    retention: Retention,
    partitions: Option<u32>,
) -> Config {
    let limit = |n: Option<u64>| n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let metadata = partitions
        .map(|n| [(record::PARTITIONS_KEY.to_owned(), n.to_string())].into_iter().collect())
        .unwrap_or_default();
    Config {
        name: record::stream_name(topic, partition),
        subjects: vec![record::subject(topic, partition)],
        metadata,
        max_messages: limit(retention.messages),
        max_bytes: limit(retention.bytes),
        max_age: retention.ms.map_or(Duration::ZERO, Duration::from_millis),
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        num_replicas: replicas,
        ..Config::default()
    }
}

/// A topic's limits, as its stream's configuration holds them.
fn retention_of(config: &Config) -> Retention {
    Retention {
        messages: u64::try_from(config.max_messages).ok(),
        bytes: u64::try_from(config.max_bytes).ok(),
        ms: (!config.max_age.is_zero()).then_some(config.max_age.as_millis() as u64),
    }
}

/// A topic's count of partitions, as its partition 0's stream configuration notes it: 1 when
/// it does not (a stream made before topics had partitions).
fn partitions_of(config: &Config) -> u32 {
    config
        .metadata
        .get(record::PARTITIONS_KEY)
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=protocol::MAX_PARTITIONS).contains(n))
        .unwrap_or(1)
}

/// Spreads the leaders of `topic`'s `partitions` streams over the servers, when they are
/// replicated and several ([`super::leaders`]), so that its writes spread with them.
async fn spread_leaders(conn: &Connection, topic: &str, partitions: u32) {
    if conn.setup.replicas > 1 && partitions > 1 {
        super::leaders::spread(&conn.js, topic, partitions).await;
    }
}

/// The stream, its (topic, partition) and the action (`CREATED`, `DELETED`, ...) a stream
/// advisory's subject names; `None` for one about a stream that is not a topic's.
fn advisory(subject: &str) -> Option<(&str, (String, u32), &str)> {
    let mut tokens = subject.rsplit('.');
    let (stream, action) = (tokens.next()?, tokens.next()?);
    Some((stream, record::partition_of(stream)?, action))
}

/// A partition's follower, and where it has read to: what a commit waits on to be readable.
type ReadBack = ((String, u32), watch::Receiver<(u64, u64)>);

/// A commit in flight that settled, for [`Streams::settle`].
pub struct InFlightDone(InFlight);

/// Waits, at most [`READ_BACK_TIMEOUT`], for the followers `waiting` to have read the batches
/// of `done` acknowledged, so that they are readable here too when the commit settles.
async fn read_back(done: &InFlight, waiting: Vec<ReadBack>, events: &Events) {
    for (key, mut forwarded) in waiting {
        let stored = done.appends.iter().filter(|a| a.key == key).flat_map(|a| &a.batches);
        let mut stored: Vec<(u64, Bytes)> = stored
            .filter_map(|b| match b.stored {
                Stored::Yes(seq) => Some((seq, b.payload.clone())),
                _ => None,
            })
            .collect();
        stored.sort_by_key(|(seq, _)| *seq);
        let Some(&(seq, _)) = stored.last() else { continue };
        // A batch right after what the follower has handed on goes to the copy now, behind
        // it in the channel, rather than after a round trip through the follower (which
        // hands it on again, skipped as held).
        let mut covered = forwarded.borrow().0;
        let mut direct = Vec::new();
        for (at, payload) in stored {
            if at <= covered {
                continue;
            }
            if covered + 1 != at {
                break;
            }
            direct.push((at, payload));
            covered = at;
        }
        if !direct.is_empty() {
            let (topic, partition) = (key.0.clone(), key.1);
            events.send_now(topic, partition, direct);
        }
        if covered >= seq {
            continue;
        }
        let read = tokio::time::timeout(READ_BACK_TIMEOUT, forwarded.wait_for(|f| f.0 >= seq));
        if !matches!(read.await, Ok(Ok(_))) {
            let (topic, partition) = key;
            tracing::warn!(%topic, partition, seq, "acknowledged appends not read back yet");
        }
    }
}

/// Tells the serving thread what became of each append of a settled commit.
fn report(conn: &Connection, done: InFlight) {
    let results = done.appends.iter().map(outcome).collect();
    conn.events.send(Event::Committed { ticket: done.ticket, results });
}

/// What became of one append of a commit, from its batches: the offsets of its first and last
/// message when every batch is stored; [`StoreError::Unavailable`] when none is and none
/// may be; otherwise [`StoreError::Unconfirmed`].
fn outcome(append: &Append) -> Result<(u64, u64), StoreError> {
    if let Some(refused) = &append.refused {
        return Err(refused.clone());
    }
    let reason = append.batches.iter().find_map(|b| match &b.stored {
        Stored::Yes(_) => None,
        Stored::Again(r) | Stored::Maybe(r) | Stored::No(r) => Some(r.clone()),
    });
    let Some(reason) = reason else {
        return match (append.batches.first(), append.batches.last()) {
            (Some(first), Some(last)) => Ok((first.base, last.base + last.count - 1)),
            _ => Ok((0, 0)),
        };
    };
    let none_stored =
        append.batches.iter().all(|b| matches!(b.stored, Stored::Again(_) | Stored::No(_)));
    match none_stored {
        true => Err(StoreError::Unavailable(reason)),
        false => Err(StoreError::Unconfirmed(reason)),
    }
}

/// The stream sequence of the stored message that holds offset `offset`, between sequences
/// `low` and `high`, and that message in the format before batches (to compare it with a
/// copy's); `None` when it is not found, or the stream holds messages not ours.
async fn find(
    stream: &jetstream::stream::Stream,
    offset: u64,
    low: u64,
    high: u64,
) -> Option<(u64, Vec<u8>)> {
    let (seq, payload) = cold::locate(stream, offset, low, high).await.ok()??;
    let (base, messages) = record::decode_stored(seq, &payload)?;
    let found = messages.get(usize::try_from(offset - base).ok()?)?;
    Some((seq, record::encode(found.timestamp, found.key, found.value)))
}

/// The refusal of a topic's stream that could not be looked up (not one JetStream says it
/// lacks, which is [`Refusal::Unknown`]): JetStream answered with an error, or did not answer.
fn lookup_refused(error: jetstream::context::GetStreamError) -> Refusal {
    let answered = matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(_));
    Refusal::of(answered, "cannot find the topic's stream in JetStream", error)
}

/// Whether `error` says the stream does not exist.
fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == ErrorCode::STREAM_NOT_FOUND
    )
}

/// Reads `stream` from sequence `from` on with an ordered consumer, forever, handing its
/// messages to the serving thread in batches and noting the last one in `forwarded`. A failed
/// consumer (JetStream restarting, a leader moving) is made again from where it stopped.
async fn read_stream(
    js: Context,
    stream: String,
    key: (String, u32),
    mut from: u64,
    events: Events,
    forwarded: watch::Sender<(u64, u64)>,
) {
    loop {
        if let Err(error) = read_from(&js, &stream, &key, &mut from, &events, &forwarded).await {
            let (topic, partition) = &key;
            tracing::debug!(%topic, partition, %error, "following the partition's stream again");
        }
        tokio::time::sleep(FOLLOW_RETRY).await;
    }
}

/// One consumer's life in [`read_stream`]: returns why it ended.
async fn read_from(
    js: &Context,
    stream: &str,
    (topic, partition): &(String, u32),
    from: &mut u64,
    events: &Events,
    forwarded: &watch::Sender<(u64, u64)>,
) -> Result<(), String> {
    let mut stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let config = OrderedConfig {
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: (*from).max(1) },
        ..OrderedConfig::default()
    };
    let consumer = stream.create_consumer(config).await.map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let key = (topic.clone(), *partition);
    // The stream's first sequence as last told, and when it was last looked at.
    let mut start = (0, tokio::time::Instant::now());
    loop {
        let first = match tokio::time::timeout(IDLE_CHECK, messages.next()).await {
            Ok(first) => first.ok_or("the consumer ended")?,
            Err(_) => {
                let state = stream.info().await.map_err(|e| e.to_string())?.state.clone();
                if state.last_sequence >= *from {
                    return Err("the consumer fell behind its stream".into());
                }
                tell_start(&stream, &state, &key, &mut start, events).await;
                continue;
            }
        };
        let mut batch = Vec::new();
        let mut failure = None;
        let mut next = Some(first);
        // The offset after the last message of ours read.
        let mut end = None;
        while let Some(item) = next.take() {
            match item {
                Ok(message) => {
                    let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
                    if let Some((_, to)) = record::span(seq, &message.payload) {
                        end = Some(to);
                    }
                    batch.push((seq, message.payload.clone()));
                }
                Err(error) => {
                    failure = Some(error.to_string());
                    break;
                }
            }
            if batch.len() < EVENT_BATCH {
                next = messages.next().now_or_never().flatten();
            }
        }
        if let Some(&(seq, _)) = batch.last() {
            *from = seq + 1;
            let (topic, partition) = (topic.clone(), *partition);
            events.send_read(topic, partition, batch).await;
            forwarded.send_if_modified(|(at, next)| {
                let moved = seq > *at || (seq == *at && end.is_some_and(|e| e != *next));
                if seq >= *at {
                    *at = seq;
                    *next = end.unwrap_or(*next);
                }
                moved
            });
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
        if start.1.elapsed() >= FIRST_CHECK {
            let state = stream.info().await.map_err(|e| e.to_string())?.state.clone();
            tell_start(&stream, &state, &key, &mut start, events).await;
        }
    }
}

/// Tells the serving thread where partition `key`'s stream starts (`Event::First`) when its
/// first sequence moved since `start` (the sequence last told, and when it was looked at).
async fn tell_start(
    stream: &jetstream::stream::Stream,
    state: &jetstream::stream::State,
    (topic, partition): &(String, u32),
    start: &mut (u64, tokio::time::Instant),
    events: &Events,
) {
    start.1 = tokio::time::Instant::now();
    if state.messages == 0 || state.first_sequence == start.0 {
        return;
    }
    let Ok(message) = stream.get_raw_message(state.first_sequence).await else { return };
    let Some((first, _)) = record::span(state.first_sequence, &message.payload) else { return };
    start.0 = state.first_sequence;
    events.send(Event::First { topic: topic.clone(), partition: *partition, first });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(stored: &[(u64, u64, Stored)]) -> Append {
        let batch = |(base, count, stored): &(u64, u64, Stored)| Batch {
            payload: Bytes::new(),
            base: *base,
            count: *count,
            stored: stored.clone(),
        };
        Append { key: ("t".into(), 0), refused: None, batches: stored.iter().map(batch).collect() }
    }

    #[test]
    fn an_append_is_stored_when_every_batch_is_acknowledged() {
        let acked = [(5, 2, Stored::Yes(3)), (7, 3, Stored::Yes(4))];
        assert_eq!(outcome(&append(&acked)), Ok((5, 9)));
    }

    #[test]
    fn an_append_nothing_of_which_is_stored_is_unavailable_else_unconfirmed() {
        let again = || Stored::Again("wrong last sequence".into());
        let never = [(0, 1, again()), (1, 1, Stored::No("too large".into()))];
        assert!(matches!(outcome(&append(&never)), Err(StoreError::Unavailable(_))));
        // One publish went out unanswered: it may be stored.
        let unanswered = [(0, 1, again()), (1, 1, Stored::Maybe("timeout".into()))];
        assert!(matches!(outcome(&append(&unanswered)), Err(StoreError::Unconfirmed(_))));
        // One batch was stored and one not: the append is neither wholly stored nor lost.
        let half = [(0, 1, Stored::Yes(1)), (1, 1, again())];
        assert!(matches!(outcome(&append(&half)), Err(StoreError::Unconfirmed(_))));
        let mut refused = append(&half);
        refused.refused = Some(StoreError::Unavailable("down".into()));
        assert!(matches!(outcome(&refused), Err(StoreError::Unavailable(r)) if r == "down"));
    }

    #[test]
    fn a_topics_limits_go_into_its_stream_and_back() {
        for retention in [
            Retention::default(),
            Retention { messages: Some(10), bytes: Some(1 << 20), ms: Some(60_000) },
            Retention { messages: None, bytes: Some(0), ms: None },
        ] {
            let config = stream_config("orders", 0, 3, retention, Some(4));
            assert_eq!(retention_of(&config), retention);
            assert_eq!((config.num_replicas, config.discard), (3, DiscardPolicy::Old));
            assert_eq!(config.subjects, [record::subject("orders", 0)]);
            assert_eq!(partitions_of(&config), 4);
            let other = stream_config("orders", 2, 3, retention, None);
            assert_eq!(other.subjects, [record::subject("orders", 2)]);
            assert_eq!(retention_of(&other), retention);
        }
        // A stream made before topics had partitions holds a topic of one.
        assert_eq!(partitions_of(&Config::default()), 1);
        // Past what JetStream can hold: as many as it can.
        let limits = Retention { messages: Some(u64::MAX), ..Retention::default() };
        let huge = stream_config("t", 0, 1, limits, None);
        assert_eq!(huge.max_messages, i64::MAX);
    }

    #[test]
    fn advisories_name_a_topics_stream_or_nothing() {
        let stream = record::stream_name("orders", 0);
        let subject = format!("$JS.EVENT.ADVISORY.STREAM.CREATED.{stream}");
        let zero = ("orders".to_owned(), 0);
        assert_eq!(advisory(&subject), Some((stream.as_str(), zero, "CREATED")));
        let stream = record::stream_name("orders", 5);
        let subject = format!("$JS.EVENT.ADVISORY.STREAM.DELETED.{stream}");
        let five = ("orders".to_owned(), 5);
        assert_eq!(advisory(&subject), Some((stream.as_str(), five, "DELETED")));
        assert_eq!(advisory("$JS.EVENT.ADVISORY.STREAM.DELETED.KV_broker_claims"), None);
        assert_eq!(advisory("nodots"), None);
    }

    #[test]
    fn refusals_become_the_errors_a_commit_reports() {
        let unreachable = Refusal::of(false, "cannot create", "timed out");
        assert!(
            matches!(unreachable.into_failure(), StoreError::Unavailable(r) if r == "cannot create: timed out")
        );
        let failed = Refusal::of(true, "cannot create", "no space");
        assert!(matches!(failed.into_failure(), StoreError::Io(_)));
        assert!(matches!(Refusal::Exists.into_failure(), StoreError::Io(_)));
        assert_eq!(Refusal::Unknown.to_string(), "the topic has no stream");
    }
}
