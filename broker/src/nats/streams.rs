//! The topics' streams, on the runtime's thread: each partition of a topic is one stream with
//! one subject (`record`). A commit's appends are published all at once, each message with a
//! de-duplication id, and settled when JetStream acknowledged them all and this process's
//! follower of each topic read them back; every stream is followed by an ordered consumer
//! whose messages go to the serving thread's copies, whichever broker process appended them.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::context::{Publish, PublishErrorKind};
use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use protocol::Retention;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::record;
use super::runtime::{Connection, Event, Events};
use crate::store::{IoFailure, StoreError};

/// How long JetStream has to acknowledge a commit's appends, retry included, before they are
/// refused: within the client's default 5 s timeout, so that the client hears the refusal.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a commit waits for the topic's follower to have read its own appends back, so that
/// they are readable on this broker when they are acknowledged.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a follower waits for a message before it asks the stream whether it missed some
/// (its consumer lost when JetStream restarted or moved its leader), and starts again if so.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How long a follower waits before it starts again after its consumer failed.
const FOLLOW_RETRY: Duration = Duration::from_millis(250);

/// The most messages one [`Event::Messages`] carries.
const EVENT_BATCH: usize = 4096;

/// One append request of a commit: its topic, partition and the payloads of its messages.
#[derive(Debug)]
pub struct Staged {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Each message, encoded as `record` says.
    pub payloads: Vec<Bytes>,
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
    /// This process's name in de-duplication ids.
    instance: String,
    /// The copies kept from an earlier run (`--copy-dir`), by topic, until their stream is
    /// followed: the offset each copy's next message gets, and the payload of its last
    /// message as its stream held it.
    resume: HashMap<(String, u32), (u64, Bytes)>,
}

/// A topic being followed.
struct Followed {
    /// The stream sequence of the last message handed to the serving thread.
    forwarded: watch::Receiver<u64>,
    /// The task reading the stream.
    task: JoinHandle<()>,
}

impl Streams {
    /// No topic followed yet; `instance` names this process in de-duplication ids, and
    /// `resume` holds the copies kept from an earlier run.
    pub fn new(instance: String, resume: HashMap<(String, u32), (u64, Bytes)>) -> Streams {
        Streams { followed: HashMap::new(), instance, resume }
    }

    /// Stops following every stream, at a stop.
    pub fn stop(&mut self) {
        for (_, followed) in self.followed.drain() {
            followed.task.abort();
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

    /// Publishes a commit's appends and reports them with [`Event::Committed`]: each one's
    /// offsets, or why it was refused; all unconfirmed when JetStream took too long.
    pub async fn commit(&mut self, conn: &Connection, ticket: u64, appends: Vec<Staged>) {
        let published = self.publish_commit(conn, ticket, &appends);
        let results =
            match tokio::time::timeout(COMMIT_TIMEOUT + READ_BACK_TIMEOUT, published).await {
                Ok(results) => results,
                Err(_) => {
                    let reason = "JetStream did not acknowledge the messages in time";
                    let unconfirmed = StoreError::Unconfirmed(reason.to_owned());
                    appends.iter().map(|_| Err(unconfirmed.clone())).collect()
                }
            };
        conn.events.send(Event::Committed { ticket, results });
    }

    /// Publishes `appends`, all at once, waits for every acknowledgement (retrying, with the
    /// same de-duplication ids, those that failed while time is left), then for the topics'
    /// followers to have read them back. Returns each append's offsets or why it was refused.
    async fn publish_commit(
        &mut self,
        conn: &Connection,
        ticket: u64,
        appends: &[Staged],
    ) -> Vec<Result<(u64, u64), StoreError>> {
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        // Publishes made while disconnected would wait in the client and be stored after it
        // reconnects, after their refusal: none is made.
        if conn.client.connection_state() != async_nats::connection::State::Connected {
            let down = StoreError::Unavailable("NATS is not reachable".to_owned());
            return appends.iter().map(|_| Err(down.clone())).collect();
        }
        let mut refused: HashMap<(&str, u32), Refusal> = HashMap::new();
        for staged in appends {
            let key = (staged.topic.as_str(), staged.partition);
            let followed = self.followed.contains_key(&(staged.topic.clone(), staged.partition));
            if followed || refused.contains_key(&key) {
                continue;
            }
            if let Err(error) = self.follow_or_create(conn, &staged.topic, staged.partition).await {
                refused.insert(key, error);
            }
        }
        // Every message of the commit, with its id, and its stream sequence once acknowledged.
        let mut sent: Vec<Vec<Sent>> = appends
            .iter()
            .enumerate()
            .map(|(at, staged)| {
                let subject = record::subject(&staged.topic, staged.partition);
                staged
                    .payloads
                    .iter()
                    .enumerate()
                    .map(|(n, payload)| Sent {
                        subject: subject.clone(),
                        id: format!("{}-{ticket}-{at}-{n}", self.instance),
                        payload: payload.clone(),
                        outcome: Err("not sent".into()),
                        maybe_stored: false,
                    })
                    .collect()
            })
            .collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let todo: Vec<&mut Sent> = sent
                .iter_mut()
                .zip(appends)
                .filter(|(_, staged)| !refused.contains_key(&(&*staged.topic, staged.partition)))
                .flat_map(|(messages, _)| messages.iter_mut())
                .filter(|m| m.outcome.is_err())
                .collect();
            if todo.is_empty() {
                break;
            }
            self.publish_all(conn, todo, deadline).await;
            let left = sent.iter().flatten().any(|m| m.outcome.is_err());
            if !left || attempt >= 2 || Instant::now() >= deadline {
                break;
            }
            tracing::warn!(ticket, "retrying the appends JetStream did not acknowledge");
        }
        let mut results = Vec::with_capacity(appends.len());
        let mut newest: HashMap<(String, u32), u64> = HashMap::new();
        for (staged, messages) in appends.iter().zip(&sent) {
            if let Some(refusal) = refused.get(&(&*staged.topic, staged.partition)) {
                results.push(Err(refusal.clone().into_failure()));
                continue;
            }
            match outcome(messages) {
                Ok((first, last)) => {
                    let top = newest.entry((staged.topic.clone(), staged.partition)).or_default();
                    *top = (*top).max(last);
                    results.push(Ok((first.saturating_sub(1), last.saturating_sub(1))));
                }
                Err(error) => results.push(Err(error)),
            }
        }
        // The acknowledgement waits for the messages to be readable here too.
        for (key, seq) in newest {
            let Some(followed) = self.followed.get_mut(&key) else { continue };
            let read =
                tokio::time::timeout(READ_BACK_TIMEOUT, followed.forwarded.wait_for(|s| *s >= seq));
            if !matches!(read.await, Ok(Ok(_))) {
                let (topic, partition) = key;
                tracing::warn!(%topic, partition, seq, "acknowledged appends not read back yet");
            }
        }
        results
    }

    /// Publishes `messages` asynchronously and waits for all their acknowledgements at once,
    /// until `deadline`, noting each outcome.
    async fn publish_all(&self, conn: &Connection, messages: Vec<&mut Sent>, deadline: Instant) {
        let mut acks = Vec::with_capacity(messages.len());
        for message in &messages {
            let publish = Publish::build().payload(message.payload.clone()).message_id(&message.id);
            acks.push(conn.js.send_publish(message.subject.clone(), publish).await);
        }
        // Each outcome: the sequence, or why not and whether the message may be stored.
        let waits = acks.into_iter().map(|ack| async move {
            match ack {
                Ok(future) => future.await.map(|a| a.sequence).map_err(|e| {
                    let maybe_stored = e.kind() != PublishErrorKind::StreamNotFound;
                    (e.to_string(), maybe_stored)
                }),
                Err(error) => Err((error.to_string(), false)),
            }
        });
        let outcomes =
            tokio::time::timeout_at(deadline, futures_util::future::join_all(waits)).await;
        match outcomes {
            Ok(outcomes) => {
                for (message, outcome) in messages.into_iter().zip(outcomes) {
                    message.outcome = outcome.map_err(|(e, maybe_stored)| {
                        message.maybe_stored |= maybe_stored;
                        format!("JetStream refused: {e}")
                    });
                }
            }
            Err(_) => {
                for message in messages {
                    message.outcome = Err("JetStream did not acknowledge in time".into());
                    message.maybe_stored = true;
                }
            }
        }
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
            Err(error) => {
                let answered =
                    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(_));
                return Err(Refusal::of(
                    answered,
                    "cannot find the topic's stream in JetStream",
                    error,
                ));
            }
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
            Err(error) => {
                let answered =
                    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(_));
                let doing = "cannot find the topic's stream in JetStream";
                return Err(Refusal::of(answered, doing, error));
            }
        };
        let info = stream
            .info()
            .await
            .map_err(|e| Refusal::of(false, "cannot read the topic's stream in JetStream", e))?;
        let state = &info.state;
        let next = state.last_sequence;
        let first = if state.messages == 0 { next } else { state.first_sequence.saturating_sub(1) };
        let retention = retention_of(&info.config);
        let resumed = match self.resume.remove(&key) {
            // The copy's last message (offset `end - 1`, sequence `end`) is still in the stream.
            Some((end, last)) if end > first && end <= next => {
                match stream.get_raw_message(end).await {
                    Ok(message) if message.payload == last => Some(end),
                    _ => None,
                }
            }
            _ => None,
        };
        let event =
            Event::Topic { topic: topic.to_owned(), partition, first, next, retention, resumed };
        conn.events.send(event);
        let (forwarded_tx, forwarded) = watch::channel(next);
        let task = tokio::spawn(read_stream(
            conn.js.clone(),
            name,
            key.clone(),
            resumed.unwrap_or(first) + 1,
            conn.events.clone(),
            forwarded_tx,
        ));
        self.followed.insert(key, Followed { forwarded, task });
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
            conn.js.get_or_create_stream(config).await.map_err(|e| {
                let answered =
                    matches!(e.kind(), jetstream::context::CreateStreamErrorKind::JetStream(_));
                Refusal::of(answered, "cannot create the topic's stream in JetStream", e)
            })?;
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
            Err(error) => {
                let answered =
                    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(_));
                return Err(Refusal::of(
                    answered,
                    "cannot find the topic's stream in JetStream",
                    error,
                ));
            }
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
            Err(error) => {
                let answered =
                    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(_));
                return Err(Refusal::of(
                    answered,
                    "cannot find the topic's stream in JetStream",
                    error,
                ));
            }
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

    /// Follows or forgets a topic another broker process created or deleted, as JetStream's
    /// advisory on `subject` says.
    pub async fn advised(&mut self, conn: &Connection, subject: &str) {
        let Some((stream, (topic, partition), action)) = advisory(subject) else { return };
        match action {
            "CREATED" => {
                if let Err(error) = self.follow(conn, &topic, partition).await {
                    tracing::warn!(%topic, partition, %error, "cannot follow a new partition's stream");
                }
            }
            "DELETED" => {
                // A topic deleted and created again since is kept.
                if conn.js.get_stream(stream).await.is_ok() {
                    return;
                }
                if let Some(followed) = self.followed.remove(&(topic.clone(), partition)) {
                    followed.task.abort();
                }
                conn.events.send(Event::Deleted { topic, partition });
            }
            _ => {}
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
            let publish = Publish::build().payload(payload.into()).message_id(id);
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
        Err(error) => Err(match error.kind() {
            jetstream::context::CreateStreamErrorKind::JetStream(e)
                if e.error_code() == ErrorCode::STREAM_NAME_EXIST =>
            {
                Refusal::Exists
            }
            jetstream::context::CreateStreamErrorKind::JetStream(_) => {
                Refusal::of(true, "cannot create the topic's stream in JetStream", error)
            }
            _ => Refusal::of(false, "cannot create the topic's stream in JetStream", error),
        }),
    }
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

/// The stream, its (topic, partition) and the action (`CREATED`, `DELETED`, ...) a stream
/// advisory's subject names; `None` for one about a stream that is not a topic's.
fn advisory(subject: &str) -> Option<(&str, (String, u32), &str)> {
    let mut tokens = subject.rsplit('.');
    let (stream, action) = (tokens.next()?, tokens.next()?);
    Some((stream, record::partition_of(stream)?, action))
}

/// What became of one append of a commit, from its messages: the stream sequences of its
/// first and last message; [`StoreError::Unavailable`] when nothing of it can be stored (no
/// message acknowledged, no publish gone out unanswered); otherwise
/// [`StoreError::Unconfirmed`].
fn outcome(messages: &[Sent]) -> Result<(u64, u64), StoreError> {
    let seqs: Result<Vec<u64>, String> = messages.iter().map(|m| m.outcome.clone()).collect();
    match seqs {
        Ok(seqs) => match (seqs.iter().min(), seqs.iter().max()) {
            (Some(&first), Some(&last)) => Ok((first, last)),
            _ => Ok((1, 0)),
        },
        Err(error) if messages.iter().all(|m| m.outcome.is_err() && !m.maybe_stored) => {
            Err(StoreError::Unavailable(error))
        }
        Err(error) => Err(StoreError::Unconfirmed(error)),
    }
}

/// One message of a commit.
struct Sent {
    /// Its topic's subject.
    subject: String,
    /// Its de-duplication id, the same on a retry.
    id: String,
    /// Its payload.
    payload: Bytes,
    /// Its stream sequence once acknowledged, or why not.
    outcome: Result<u64, String>,
    /// Whether a publish of it went out whose fate is unknown (its acknowledgement did not
    /// come): it may be stored though not acknowledged. Not so for a publish JetStream
    /// answered had no stream to go to (no leader, during an election), or one never sent.
    maybe_stored: bool,
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
    forwarded: watch::Sender<u64>,
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
    forwarded: &watch::Sender<u64>,
) -> Result<(), String> {
    let mut stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let config = OrderedConfig {
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: (*from).max(1) },
        ..OrderedConfig::default()
    };
    let consumer = stream.create_consumer(config).await.map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    loop {
        let first = match tokio::time::timeout(IDLE_CHECK, messages.next()).await {
            Ok(first) => first.ok_or("the consumer ended")?,
            Err(_) => {
                let info = stream.info().await.map_err(|e| e.to_string())?;
                if info.state.last_sequence >= *from {
                    return Err("the consumer fell behind its stream".into());
                }
                continue;
            }
        };
        let mut batch = Vec::new();
        let mut failure = None;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Ok(message) => {
                    let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
                    batch.push((seq.saturating_sub(1), message.payload.clone()));
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
        if let Some(&(offset, _)) = batch.last() {
            *from = offset + 2;
            let (topic, partition) = (topic.clone(), *partition);
            events.send(Event::Messages { topic, partition, messages: batch });
            forwarded.send_replace(offset + 1);
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(outcome: Result<u64, &str>, maybe_stored: bool) -> Sent {
        Sent {
            subject: "topic.74".into(),
            id: "i-1-0-0".into(),
            payload: Bytes::new(),
            outcome: outcome.map_err(str::to_owned),
            maybe_stored,
        }
    }

    #[test]
    fn an_append_is_stored_when_every_message_is_acknowledged() {
        let acked = [sent(Ok(7), false), sent(Ok(5), false), sent(Ok(6), true)];
        assert_eq!(outcome(&acked), Ok((5, 7)));
    }

    #[test]
    fn an_append_nothing_of_which_went_out_is_unavailable_else_unconfirmed() {
        let never_sent = [sent(Err("no stream"), false), sent(Err("no stream"), false)];
        assert!(matches!(outcome(&never_sent), Err(StoreError::Unavailable(_))));
        // One publish went out unanswered: it may be stored.
        let unanswered = [sent(Err("no stream"), false), sent(Err("timeout"), true)];
        assert!(matches!(outcome(&unanswered), Err(StoreError::Unconfirmed(_))));
        // One was stored and one not: the append is neither wholly stored nor wholly lost.
        let half = [sent(Ok(3), false), sent(Err("no stream"), false)];
        assert!(matches!(outcome(&half), Err(StoreError::Unconfirmed(_))));
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
