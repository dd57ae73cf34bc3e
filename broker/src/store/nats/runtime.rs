//! The NATS side of the JetStream store: a thread of its own running a tokio runtime, the only
//! place the broker is asynchronous. It takes [`Command`]s from the serving thread, and hands
//! back [`Event`]s on a channel, writing a byte to the wake pipe after each so that the serve
//! loop's poll returns.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::context::{Publish, PublishErrorKind};
use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use protocol::Retention;
use tokio::sync::{mpsc as tmpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::record;
use crate::logical::ClaimChange;
use crate::store::{IoFailure, StoreError};

/// How long JetStream has to acknowledge a commit's appends, retry included, before they are
/// refused: within the client's default 5 s timeout, so that the client hears the refusal.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one request to JetStream (a publish's ack, a stream's creation) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

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

/// What the serving thread asks of the runtime.
#[derive(Debug)]
pub enum Command {
    /// Publish these appends, in order, and report them with [`Event::Committed`].
    Commit {
        /// The commit's ticket.
        ticket: u64,
        /// The appends of the commit, in the order they were made.
        appends: Vec<Staged>,
    },
    /// Create a topic's stream; answers on `reply`.
    Create {
        /// The topic.
        topic: String,
        /// Its limits.
        retention: Retention,
        /// Where the answer goes: the topic's next offset, or why not.
        reply: mpsc::Sender<Result<(), Refusal>>,
    },
    /// Delete a topic's stream; answers on `reply`.
    Delete {
        /// The topic.
        topic: String,
        /// Where the answer goes.
        reply: mpsc::Sender<Result<(), Refusal>>,
    },
    /// Take logical broker `id` for `holder` in the claims bucket, if nobody holds it; answers
    /// on `reply` whether it was taken. Held claims are renewed by the runtime until freed.
    Claim {
        /// The logical broker.
        id: u32,
        /// Who claims it, for other processes' logs.
        holder: String,
        /// Where the answer goes.
        reply: mpsc::Sender<Result<bool, String>>,
    },
    /// Read a group state from the groups bucket: its bytes and revision, if stored.
    GroupLoad {
        /// Its key.
        key: String,
        /// Where the answer goes.
        reply: mpsc::Sender<Result<Option<(Bytes, u64)>, String>>,
    },
    /// Store group states in the groups bucket, all at once, each only if its revision is
    /// still the one given (`None`: only if none is stored): each one's new revision or why
    /// not.
    GroupSave {
        /// Each state's key, bytes, and the revision it replaces.
        states: Vec<(String, Bytes, Option<u64>)>,
        /// Where the answers go, in order.
        reply: mpsc::Sender<Vec<Result<u64, NotSaved>>>,
    },
    /// Remove a group state from the groups bucket.
    GroupRemove {
        /// Its key.
        key: String,
    },
    /// Give back the claims held here and stop (the claims' handle may outlive the store's).
    Stop,
    /// Give logical broker `id` back in the claims bucket.
    Unclaim {
        /// The logical broker.
        id: u32,
    },
    /// Publish these payloads with these de-duplication ids and answer with their acks: for
    /// tests of the de-duplication.
    #[cfg(test)]
    PublishRaw {
        /// The topic.
        topic: String,
        /// Id and payload of each message.
        messages: Vec<(String, Vec<u8>)>,
        /// Where the stream sequences (and whether each was a duplicate) go.
        reply: mpsc::Sender<Result<Vec<(u64, bool)>, String>>,
    },
}

/// One append request of a commit: its topic and the payloads of its messages.
#[derive(Debug)]
pub struct Staged {
    /// The topic.
    pub topic: String,
    /// Each message, encoded as `record` says.
    pub payloads: Vec<Bytes>,
}

/// Why a group state was not stored.
#[derive(Debug)]
pub enum NotSaved {
    /// Its revision was not the one given: the state stored now and its revision, if any.
    Stored(Option<(Bytes, u64)>),
    /// JetStream could not be reached or refused.
    Failed(String),
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
    fn into_failure(self) -> StoreError {
        match self {
            Refusal::Unreachable(reason) => StoreError::Unavailable(reason),
            Refusal::Failed(reason) => StoreError::Io(IoFailure::new(io::Error::other(reason))),
            Refusal::Exists | Refusal::Unknown => {
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
            Refusal::Failed(reason) | Refusal::Unreachable(reason) => f.write_str(reason),
        }
    }
}

/// What the runtime tells the serving thread, in the order it happened.
#[derive(Debug)]
pub enum Event {
    /// A topic's stream exists (found, created here or elsewhere): the mirror starts at `next`.
    Topic {
        /// The topic.
        topic: String,
        /// The offset of its oldest message held (equal to `next` when empty).
        first: u64,
        /// The offset its next message gets.
        next: u64,
        /// Its limits, as its stream's configuration says.
        retention: Retention,
        /// Where the copy kept from an earlier run ends, when its stream still holds that
        /// copy's last message at its place: it is resumed, and messages follow from there.
        resumed: Option<u64>,
    },
    /// Messages of a topic, read from its stream in order, by whichever broker they came.
    Messages {
        /// The topic.
        topic: String,
        /// Each message's offset and payload.
        messages: Vec<(u64, Bytes)>,
    },
    /// A topic's stream was deleted (here or elsewhere).
    Deleted {
        /// The topic.
        topic: String,
    },
    /// A commit's appends were acknowledged by JetStream, or refused.
    Committed {
        /// The commit's ticket.
        ticket: u64,
        /// For each append of the commit, in order: the offsets of its first and last
        /// message, or why it was refused: [`StoreError::Unavailable`] when nothing of it
        /// was published, [`StoreError::Unconfirmed`] when it was and its acknowledgement
        /// did not come (it may have been lost, or the publish may wait in the client's
        /// buffer for the connection to come back), [`StoreError::Io`] when JetStream
        /// answered with an error.
        results: Vec<Result<(u64, u64), StoreError>>,
    },
}

/// The sending half of the event channel, with the pipe that wakes the serve loop.
#[derive(Debug, Clone)]
pub struct Events {
    /// The channel.
    sender: mpsc::Sender<Event>,
    /// The channel of claims taken or ended through other broker processes.
    claims: mpsc::Sender<ClaimChange>,
    /// The pipe's write end (non-blocking: a full pipe already wakes the loop).
    wake: std::sync::Arc<UnixStream>,
}

impl Events {
    /// An event channel, and one of claims made elsewhere, waking through `wake`.
    pub fn new(
        sender: mpsc::Sender<Event>,
        claims: mpsc::Sender<ClaimChange>,
        wake: UnixStream,
    ) -> Events {
        Events { sender, claims, wake: std::sync::Arc::new(wake) }
    }

    /// Tells the serving thread of a claim taken, renewed or ended through another broker
    /// process, and wakes the serve loop.
    fn claim(&self, change: ClaimChange) {
        if self.claims.send(change).is_ok() {
            let _ = (&*self.wake).write(&[1]);
        }
    }

    /// Sends `event` and wakes the serve loop. A serving thread that is gone is not an error:
    /// the runtime is stopping with it.
    fn send(&self, event: Event) {
        if self.sender.send(event).is_ok() {
            let _ = (&*self.wake).write(&[1]);
        }
    }
}

/// How the runtime is set up.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The servers, as `nats://HOST:PORT`.
    pub servers: Vec<String>,
    /// Copies JetStream keeps of each new stream.
    pub replicas: usize,
    /// Retention for topics created by an append.
    pub retention: Retention,
    /// How long a claim lasts without renewal: the claims bucket's time to live.
    pub lease: Duration,
    /// The copies kept from an earlier run (`--copy-dir`), by topic: the offset each copy's
    /// next message gets, and the payload of its last message as its stream held it. A copy
    /// whose stream still holds that payload at that place is resumed from there.
    pub resume: HashMap<String, (u64, Bytes)>,
}

/// The key-value bucket of the claims on logical brokers, shared by every broker process.
const CLAIMS_BUCKET: &str = "broker_claims";

/// The key-value bucket of the consumer groups' states, shared by every broker process.
const GROUPS_BUCKET: &str = "broker_groups";

/// Connects to JetStream and lists the topics there, then serves commands until the command
/// channel closes. Runs on the runtime's thread; `ready` hears whether the connection was made.
pub async fn run(
    setup: Setup,
    mut commands: tmpsc::UnboundedReceiver<Command>,
    events: Events,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let client = match async_nats::ConnectOptions::new()
        .connection_timeout(REQUEST_TIMEOUT)
        .connect(setup.servers.as_slice())
        .await
    {
        Ok(client) => client,
        Err(error) => {
            let _ = ready.send(Err(format!("cannot reach NATS at {:?}: {error}", setup.servers)));
            return;
        }
    };
    let mut js = jetstream::new(client.clone());
    js.set_timeout(REQUEST_TIMEOUT);
    let mut backend = Backend {
        client: client.clone(),
        js,
        events,
        setup,
        followed: HashMap::new(),
        instance: instance_id(),
        claims: None,
        held: HashMap::new(),
        groups: None,
    };
    let advisories = client.subscribe("$JS.EVENT.ADVISORY.STREAM.*.*").await;
    let mut advisories = match advisories {
        Ok(subscription) => subscription,
        Err(error) => {
            let _ = ready.send(Err(format!("cannot subscribe to JetStream's advisories: {error}")));
            return;
        }
    };
    // The buckets are made at start, while the cluster is whole: one of `--replicas 3`
    // cannot be placed while a server is down. Failing here is not fatal; first use tries again.
    if let Err(error) = backend.claims().await {
        tracing::warn!(%error, "cannot open the claims bucket yet");
    }
    if let Err(error) = backend.groups().await {
        tracing::warn!(%error, "cannot open the groups bucket yet");
    }
    if let Err(error) = backend.follow_existing().await {
        let _ = ready.send(Err(error));
        return;
    }
    let mut claims_watch = backend.watch_claims().await;
    let _ = ready.send(Ok(()));
    // Held claims are renewed three times a lease, so that one lost renewal costs nothing.
    let mut renewals =
        tokio::time::interval((backend.setup.lease / 3).max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Stop) | None => break,
                Some(command) => backend.apply(command).await,
            },
            Some(advisory) = advisories.next() => backend.advised(&advisory.subject).await,
            watched = next_claim(&mut claims_watch) => match watched {
                Some(Ok(entry)) => backend.claim_watched(&entry),
                ended => {
                    if let Some(Err(error)) = ended {
                        tracing::debug!(%error, "watching the claims bucket again");
                    }
                    // Made again at the next renewal tick.
                    claims_watch = None;
                }
            },
            _ = renewals.tick() => {
                backend.renew_claims().await;
                if claims_watch.is_none() {
                    claims_watch = backend.watch_claims().await;
                }
            }
        }
    }
    backend.free_claims().await;
    for (_, followed) in backend.followed.drain() {
        followed.task.abort();
    }
    let _ = client.flush().await;
}

/// A name for this broker process, unique among those sharing the JetStream, that prefixes
/// the de-duplication id of each message it publishes.
fn instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

/// The runtime's state.
struct Backend {
    /// The connection, to see whether it is up.
    client: async_nats::Client,
    /// The JetStream context.
    js: Context,
    /// Where events go.
    events: Events,
    /// How it was set up.
    setup: Setup,
    /// The topics followed, each by a task reading its stream into the serving thread's mirror.
    followed: HashMap<String, Followed>,
    /// This process's name in de-duplication ids.
    instance: String,
    /// The claims bucket, once opened.
    claims: Option<jetstream::kv::Store>,
    /// The logical brokers claimed through this process: holder and the key's last revision.
    held: HashMap<u32, (String, u64)>,
    /// The groups bucket, once opened.
    groups: Option<jetstream::kv::Store>,
}

/// A topic being followed.
struct Followed {
    /// The stream sequence of the last message handed to the serving thread.
    forwarded: watch::Receiver<u64>,
    /// The task reading the stream.
    task: JoinHandle<()>,
}

impl Backend {
    /// Follows every topic's stream JetStream holds.
    async fn follow_existing(&mut self) -> Result<(), String> {
        let mut names = self.js.stream_names();
        let mut topics = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| format!("cannot list JetStream's streams: {e}"))?;
            topics.extend(record::topic_of(&name));
        }
        for topic in topics {
            if let Err(error) = self.follow(&topic, None).await {
                tracing::warn!(%topic, %error, "cannot follow a topic's stream");
            }
        }
        Ok(())
    }

    /// Carries out one command.
    async fn apply(&mut self, command: Command) {
        match command {
            Command::Commit { ticket, appends } => {
                let results = match tokio::time::timeout(
                    COMMIT_TIMEOUT + READ_BACK_TIMEOUT,
                    self.commit(ticket, &appends),
                )
                .await
                {
                    Ok(results) => results,
                    Err(_) => {
                        let reason = "JetStream did not acknowledge the messages in time";
                        let unconfirmed = StoreError::Unconfirmed(reason.to_owned());
                        appends.iter().map(|_| Err(unconfirmed.clone())).collect()
                    }
                };
                self.events.send(Event::Committed { ticket, results });
            }
            Command::Create { topic, retention, reply } => {
                let _ = reply.send(self.create(&topic, retention).await);
            }
            Command::Delete { topic, reply } => {
                let _ = reply.send(self.delete(&topic).await);
            }
            Command::Claim { id, holder, reply } => {
                let _ = reply.send(self.claim(id, holder).await);
            }
            Command::Unclaim { id } => self.unclaim(id).await,
            Command::GroupLoad { key, reply } => {
                let _ = reply.send(self.group_load(&key).await);
            }
            Command::GroupSave { states, reply } => {
                let _ = reply.send(self.group_save(states).await);
            }
            Command::GroupRemove { key } => {
                if let Ok(bucket) = self.groups().await {
                    if let Err(error) = bucket.purge(&key).await {
                        tracing::warn!(%error, "cannot remove a group state from JetStream");
                    }
                }
            }
            Command::Stop => {}
            #[cfg(test)]
            Command::PublishRaw { topic, messages, reply } => {
                let _ = reply.send(self.publish_raw(&topic, messages).await);
            }
        }
    }

    /// Publishes `appends`, all at once, waits for every acknowledgement (retrying, with the
    /// same de-duplication ids, those that failed while time is left), then for the topics'
    /// followers to have read them back. Returns each append's offsets or why it was refused.
    async fn commit(
        &mut self,
        ticket: u64,
        appends: &[Staged],
    ) -> Vec<Result<(u64, u64), StoreError>> {
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        // Publishes made while disconnected would wait in the client and be stored after it
        // reconnects, after their refusal: none is made.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            let down = StoreError::Unavailable("NATS is not reachable".to_owned());
            return appends.iter().map(|_| Err(down.clone())).collect();
        }
        let mut refused: HashMap<&str, Refusal> = HashMap::new();
        for staged in appends {
            if self.followed.contains_key(&staged.topic) || refused.contains_key(&*staged.topic) {
                continue;
            }
            if let Err(error) = self.follow(&staged.topic, Some(self.setup.retention)).await {
                refused.insert(&staged.topic, error);
            }
        }
        // Every message of the commit, with its id, and its stream sequence once acknowledged.
        let mut sent: Vec<Vec<Sent>> = appends
            .iter()
            .enumerate()
            .map(|(at, staged)| {
                let subject = record::subject(&staged.topic);
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
                .filter(|(_, staged)| !refused.contains_key(&*staged.topic))
                .flat_map(|(messages, _)| messages.iter_mut())
                .filter(|m| m.outcome.is_err())
                .collect();
            if todo.is_empty() {
                break;
            }
            self.publish_all(todo, deadline).await;
            let left = sent.iter().flatten().any(|m| m.outcome.is_err());
            if !left || attempt >= 2 || Instant::now() >= deadline {
                break;
            }
            tracing::warn!(ticket, "retrying the appends JetStream did not acknowledge");
        }
        let mut results = Vec::with_capacity(appends.len());
        let mut newest: HashMap<&str, u64> = HashMap::new();
        for (staged, messages) in appends.iter().zip(&sent) {
            if let Some(refusal) = refused.get(&*staged.topic) {
                results.push(Err(refusal.clone().into_failure()));
                continue;
            }
            let seqs: Result<Vec<u64>, String> =
                messages.iter().map(|m| m.outcome.clone()).collect();
            match seqs {
                Ok(seqs) => {
                    let (first, last) = match (seqs.iter().min(), seqs.iter().max()) {
                        (Some(&first), Some(&last)) => (first, last),
                        _ => (1, 0),
                    };
                    let top = newest.entry(&staged.topic).or_default();
                    *top = (*top).max(last);
                    results.push(Ok((first.saturating_sub(1), last.saturating_sub(1))));
                }
                // Nothing of it is stored when no message was acknowledged and no publish of
                // any went out unanswered.
                Err(error) if messages.iter().all(|m| m.outcome.is_err() && !m.maybe_stored) => {
                    results.push(Err(StoreError::Unavailable(error)));
                }
                Err(error) => results.push(Err(StoreError::Unconfirmed(error))),
            }
        }
        // The acknowledgement waits for the messages to be readable here too.
        for (topic, seq) in newest {
            let Some(followed) = self.followed.get_mut(topic) else { continue };
            let read =
                tokio::time::timeout(READ_BACK_TIMEOUT, followed.forwarded.wait_for(|s| *s >= seq));
            if !matches!(read.await, Ok(Ok(_))) {
                tracing::warn!(%topic, seq, "acknowledged appends not read back yet");
            }
        }
        results
    }

    /// Publishes `messages` asynchronously and waits for all their acknowledgements at once,
    /// until `deadline`, noting each outcome.
    async fn publish_all(&self, messages: Vec<&mut Sent>, deadline: Instant) {
        let mut acks = Vec::with_capacity(messages.len());
        for message in &messages {
            let publish = Publish::build().payload(message.payload.clone()).message_id(&message.id);
            acks.push(self.js.send_publish(message.subject.clone(), publish).await);
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

    /// Starts following `topic`'s stream, creating it with `create`'s limits when it does not
    /// exist and `create` is given. Tells the serving thread of it before any of its messages.
    async fn follow(&mut self, topic: &str, create: Option<Retention>) -> Result<(), Refusal> {
        if self.followed.contains_key(topic) {
            return Ok(());
        }
        let name = record::stream_name(topic);
        let mut stream = match self.js.get_stream(&name).await {
            Ok(stream) => stream,
            Err(error) if is_not_found(&error) && create.is_some() => {
                let config = self.stream_config(topic, create.unwrap_or_default());
                self.js.get_or_create_stream(config).await.map_err(|e| {
                    let answered =
                        matches!(e.kind(), jetstream::context::CreateStreamErrorKind::JetStream(_));
                    Refusal::of(answered, "cannot create the topic's stream in JetStream", e)
                })?
            }
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
        let config = &info.config;
        let retention = Retention {
            messages: u64::try_from(config.max_messages).ok(),
            bytes: u64::try_from(config.max_bytes).ok(),
            ms: (!config.max_age.is_zero()).then_some(config.max_age.as_millis() as u64),
        };
        let resumed = match self.setup.resume.remove(topic) {
            // The copy's last message (offset `end - 1`, sequence `end`) is still in the stream.
            Some((end, last)) if end > first && end <= next => {
                match stream.get_raw_message(end).await {
                    Ok(message) if message.payload == last => Some(end),
                    _ => None,
                }
            }
            _ => None,
        };
        let event = Event::Topic { topic: topic.to_owned(), first, next, retention, resumed };
        self.events.send(event);
        let (forwarded_tx, forwarded) = watch::channel(next);
        let task = tokio::spawn(read_stream(
            self.js.clone(),
            name,
            topic.to_owned(),
            resumed.unwrap_or(first) + 1,
            self.events.clone(),
            forwarded_tx,
        ));
        self.followed.insert(topic.to_owned(), Followed { forwarded, task });
        Ok(())
    }

    /// The configuration of `topic`'s stream.
    fn stream_config(&self, topic: &str, retention: Retention) -> Config {
        let limit = |n: Option<u64>| n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        Config {
            name: record::stream_name(topic),
            subjects: vec![record::subject(topic)],
            max_messages: limit(retention.messages),
            max_bytes: limit(retention.bytes),
            max_age: retention.ms.map_or(Duration::ZERO, Duration::from_millis),
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            num_replicas: self.setup.replicas,
            ..Config::default()
        }
    }

    /// Creates `topic`'s stream and follows it.
    async fn create(&mut self, topic: &str, retention: Retention) -> Result<(), Refusal> {
        match self.js.get_stream(record::stream_name(topic)).await {
            Ok(_) => return Err(Refusal::Exists),
            Err(error) if is_not_found(&error) => {}
            Err(error) => {
                let answered =
                    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(_));
                return Err(Refusal::of(answered, "cannot look the topic up in JetStream", error));
            }
        }
        if let Err(error) = self.js.create_stream(self.stream_config(topic, retention)).await {
            return Err(match error.kind() {
                jetstream::context::CreateStreamErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::STREAM_NAME_EXIST =>
                {
                    Refusal::Exists
                }
                jetstream::context::CreateStreamErrorKind::JetStream(_) => {
                    Refusal::of(true, "cannot create the topic's stream in JetStream", error)
                }
                _ => Refusal::of(false, "cannot create the topic's stream in JetStream", error),
            });
        }
        self.followed.remove(topic).inspect(|f| f.task.abort());
        self.follow(topic, None).await
    }

    /// Deletes `topic`'s stream and stops following it.
    async fn delete(&mut self, topic: &str) -> Result<(), Refusal> {
        if let Some(followed) = self.followed.remove(topic) {
            followed.task.abort();
        }
        match self.js.delete_stream(record::stream_name(topic)).await {
            Ok(_) => Ok(()),
            Err(error) => Err(match error.kind() {
                jetstream::context::DeleteStreamErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Refusal::Unknown
                }
                jetstream::context::DeleteStreamErrorKind::JetStream(_) => {
                    Refusal::of(true, "cannot delete the topic's stream in JetStream", error)
                }
                _ => Refusal::of(false, "cannot delete the topic's stream in JetStream", error),
            }),
        }
    }

    /// Follows or forgets a topic another broker process created or deleted, as JetStream's
    /// advisory on `subject` says.
    async fn advised(&mut self, subject: &str) {
        let mut tokens = subject.rsplit('.');
        let (Some(stream), Some(action)) = (tokens.next(), tokens.next()) else { return };
        let Some(topic) = record::topic_of(stream) else { return };
        match action {
            "CREATED" => {
                if let Err(error) = self.follow(&topic, None).await {
                    tracing::warn!(%topic, %error, "cannot follow a new topic's stream");
                }
            }
            "DELETED" => {
                // A topic deleted and created again since is kept.
                if self.js.get_stream(stream).await.is_ok() {
                    return;
                }
                if let Some(followed) = self.followed.remove(&topic) {
                    followed.task.abort();
                }
                self.events.send(Event::Deleted { topic });
            }
            _ => {}
        }
    }

    /// The claims bucket, opened or created (its time to live the lease) on first use.
    async fn claims(&mut self) -> Result<jetstream::kv::Store, String> {
        if let Some(bucket) = &self.claims {
            return Ok(bucket.clone());
        }
        let bucket = match self.js.get_key_value(CLAIMS_BUCKET).await {
            Ok(bucket) => bucket,
            Err(_) => self
                .js
                .create_key_value(jetstream::kv::Config {
                    bucket: CLAIMS_BUCKET.into(),
                    history: 1,
                    max_age: self.setup.lease,
                    num_replicas: self.setup.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create the claims bucket in JetStream: {e}"))?,
        };
        self.claims = Some(bucket.clone());
        Ok(bucket)
    }

    /// A watch of the claims bucket: every key's present value, then each change, so that
    /// claims held through other broker processes are known here. `None` when it cannot be
    /// made now (tried again later).
    async fn watch_claims(&mut self) -> Option<jetstream::kv::Watch> {
        let bucket = match self.claims().await {
            Ok(bucket) => bucket,
            Err(error) => {
                tracing::debug!(%error, "cannot watch the claims bucket yet");
                return None;
            }
        };
        match bucket.watch_with_history(">").await {
            Ok(watch) => Some(watch),
            Err(error) => {
                tracing::debug!(%error, "cannot watch the claims bucket yet");
                None
            }
        }
    }

    /// Tells the serving thread of a claim taken, renewed or ended through another broker
    /// process, as the claims bucket's watch saw it; claims of this process are its own.
    fn claim_watched(&self, entry: &jetstream::kv::Entry) {
        let Some(id) = entry.key.strip_prefix("broker.").and_then(|n| n.parse::<u32>().ok()) else {
            return;
        };
        if self.held.contains_key(&id) {
            return;
        }
        let held = match entry.operation {
            jetstream::kv::Operation::Put => {
                // It lasts a lease from when it was stored (JetStream removes it then).
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i128);
                let age = u64::try_from(now - entry.created.unix_timestamp_nanos()).unwrap_or(0);
                let left = self.setup.lease.saturating_sub(Duration::from_nanos(age));
                let holder = String::from_utf8_lossy(&entry.value).into_owned();
                (!left.is_zero()).then_some((holder, left))
            }
            jetstream::kv::Operation::Delete | jetstream::kv::Operation::Purge => None,
        };
        self.events.claim(ClaimChange { id, held });
    }

    /// The groups bucket, opened or created on first use.
    async fn groups(&mut self) -> Result<jetstream::kv::Store, String> {
        if let Some(bucket) = &self.groups {
            return Ok(bucket.clone());
        }
        let bucket = match self.js.get_key_value(GROUPS_BUCKET).await {
            Ok(bucket) => bucket,
            Err(_) => self
                .js
                .create_key_value(jetstream::kv::Config {
                    bucket: GROUPS_BUCKET.into(),
                    history: 1,
                    num_replicas: self.setup.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create the groups bucket in JetStream: {e}"))?,
        };
        self.groups = Some(bucket.clone());
        Ok(bucket)
    }

    /// A group state's bytes and revision, if one is stored under `key`.
    async fn group_load(&mut self, key: &str) -> Result<Option<(Bytes, u64)>, String> {
        let bucket = self.groups().await?;
        let entry =
            bucket.entry(key).await.map_err(|e| format!("cannot read a group state: {e}"))?;
        Ok(entry
            .filter(|e| e.operation == jetstream::kv::Operation::Put)
            .map(|e| (e.value, e.revision)))
    }

    /// Stores group states, all at once, each only if its stored revision is the one given
    /// (compare-and-set); each one's new revision, or the state stored instead, or why not.
    async fn group_save(
        &mut self,
        states: Vec<(String, Bytes, Option<u64>)>,
    ) -> Vec<Result<u64, NotSaved>> {
        let bucket = match self.groups().await {
            Ok(bucket) => bucket,
            Err(error) => {
                return states.iter().map(|_| Err(NotSaved::Failed(error.clone()))).collect()
            }
        };
        let saves = states.into_iter().map(|(key, value, revision)| {
            let bucket = bucket.clone();
            async move {
                let stored = match revision {
                    Some(revision) => bucket.update(&key, value, revision).await.map_err(|e| {
                        let moved = e.kind() == jetstream::kv::UpdateErrorKind::WrongLastRevision;
                        (moved, e.to_string())
                    }),
                    None => bucket.create(&key, value).await.map_err(|e| {
                        let moved = e.kind() == jetstream::kv::CreateErrorKind::AlreadyExists;
                        (moved, e.to_string())
                    }),
                };
                match stored {
                    Ok(revision) => Ok(revision),
                    Err((true, _)) => match bucket.entry(&key).await {
                        Ok(entry) => Err(NotSaved::Stored(
                            entry
                                .filter(|e| e.operation == jetstream::kv::Operation::Put)
                                .map(|e| (e.value, e.revision)),
                        )),
                        Err(error) => Err(NotSaved::Failed(format!(
                            "cannot read a group state changed elsewhere: {error}"
                        ))),
                    },
                    Err((false, error)) => {
                        Err(NotSaved::Failed(format!("cannot store a group state: {error}")))
                    }
                }
            }
        });
        futures_util::future::join_all(saves).await
    }

    /// Takes logical broker `id` for `holder` unless another process holds it.
    async fn claim(&mut self, id: u32, holder: String) -> Result<bool, String> {
        let bucket = self.claims().await?;
        match bucket.create(claim_key(id), Bytes::from(holder.clone().into_bytes())).await {
            Ok(revision) => {
                self.held.insert(id, (holder, revision));
                Ok(true)
            }
            Err(error) if error.kind() == jetstream::kv::CreateErrorKind::AlreadyExists => {
                Ok(false)
            }
            Err(error) => Err(format!("cannot claim through JetStream: {error}")),
        }
    }

    /// Gives logical broker `id` back, if this process holds it.
    async fn unclaim(&mut self, id: u32) {
        let Some((_, revision)) = self.held.remove(&id) else { return };
        let Ok(bucket) = self.claims().await else { return };
        if let Err(error) = bucket.delete_expect_revision(claim_key(id), Some(revision)).await {
            tracing::warn!(broker = id, %error, "cannot free a claim in JetStream; it expires");
        }
    }

    /// Renews every claim held through this process, so that it outlives the bucket's time
    /// to live for as long as it is held here.
    async fn renew_claims(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let Ok(bucket) = self.claims().await else { return };
        for (id, (holder, revision)) in &mut self.held {
            let value = Bytes::from(holder.clone().into_bytes());
            match bucket.update(claim_key(*id), value, *revision).await {
                Ok(next) => *revision = next,
                Err(error) => {
                    tracing::warn!(broker = *id, %error, "cannot renew a claim in JetStream");
                }
            }
        }
    }

    /// Gives back every claim held through this process, at a clean stop.
    async fn free_claims(&mut self) {
        let ids: Vec<u32> = self.held.keys().copied().collect();
        for id in ids {
            self.unclaim(id).await;
        }
    }

    /// Publishes each payload with its id, for tests of the de-duplication.
    #[cfg(test)]
    async fn publish_raw(
        &mut self,
        topic: &str,
        messages: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<(u64, bool)>, String> {
        self.follow(topic, Some(Retention::default())).await.map_err(|e| e.to_string())?;
        let mut acks = Vec::new();
        for (id, payload) in messages {
            let publish = Publish::build().payload(payload.into()).message_id(id);
            let ack = self.js.send_publish(record::subject(topic), publish).await;
            let ack = ack.map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
            acks.push((ack.sequence, ack.duplicate));
        }
        Ok(acks)
    }
}

/// The next entry of the claims bucket's watch; never, while there is none.
async fn next_claim(
    watch: &mut Option<jetstream::kv::Watch>,
) -> Option<Result<jetstream::kv::Entry, jetstream::kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// The key of logical broker `id` in the claims bucket.
fn claim_key(id: u32) -> String {
    format!("broker.{id}")
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
    topic: String,
    mut from: u64,
    events: Events,
    forwarded: watch::Sender<u64>,
) {
    loop {
        if let Err(error) = read_from(&js, &stream, &topic, &mut from, &events, &forwarded).await {
            tracing::debug!(%topic, %error, "following the topic's stream again");
        }
        tokio::time::sleep(FOLLOW_RETRY).await;
    }
}

/// One consumer's life in [`read_stream`]: returns why it ended.
async fn read_from(
    js: &Context,
    stream: &str,
    topic: &str,
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
            events.send(Event::Messages { topic: topic.to_owned(), messages: batch });
            forwarded.send_replace(offset + 1);
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
    }
}
