//! The NATS wing's thread: a tokio runtime of its own, the only place the broker is
//! asynchronous. It holds the one connection, takes [`Command`]s from the serving thread and
//! hands each to the concern it belongs to (the topics' streams, `streams`; the claims bucket,
//! `claims`; the groups bucket, `groups`), and hands back [`Event`]s on a channel, writing a
//! byte to the wake pipe after each so that the serve loop's poll returns.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use protocol::Retention;
use tokio::sync::mpsc as tmpsc;

use super::claims::{self, ClaimsBucket};
use super::cold::{self, Load, Loaded};
use super::groups::{Entries, GroupsBucket, NotSaved};
use super::streams::{Refusal, Staged, Streams};
use crate::logical::ClaimChange;
use crate::store::StoreError;

/// How long one request to JetStream (a publish's ack, a stream's creation) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

/// How often the client asks its server whether it is there (a NATS `PING`) while it hears
/// nothing from it: after two unanswered, the next tick takes the connection for lost and
/// moves to another server of the list, about 3 s into a silence. [`HEARTBEAT`] notices a
/// silent server sooner.
const PING_INTERVAL: Duration = Duration::from_secs(1);

/// How often the runtime sends itself a message through its server, to learn that the server
/// still answers. A server that is paused (stopped, swapping, its host frozen) keeps its socket
/// open and says nothing: without this the broker would stay on it for the whole pause.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long the server may leave the runtime's own messages unanswered before the connection is
/// taken for lost and made again to another server of the list: inside [`COMMIT_TIMEOUT`]
/// (`streams`), so that appends refused while the server is silent go through another soon.
const SILENCE: Duration = Duration::from_millis(1500);

/// How long a connection to a server may take to be made, greeting included: a paused server
/// accepts the connection and never greets, so a short wait moves on to the next one soon.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long start-up waits before it tries again to reach NATS or its JetStream.
const START_RETRY: Duration = Duration::from_millis(250);

/// How long a stop may spend giving back the claims held here and flushing the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the partitions' streams JetStream lists are compared with those followed, for
/// the advisories of another process's creations and deletions that never came.
const SWEEP: Duration = Duration::from_secs(5);

/// What the serving thread asks of the runtime.
#[derive(Debug)]
pub enum Command {
    /// Publish these appends, in order, and report them with [`Event::Committed`] once
    /// acknowledged, after the commits before it that append to the same partitions
    /// (several are in flight at once; commits on other partitions do not wait for it).
    Commit {
        /// The commit's ticket.
        ticket: u64,
        /// The appends of the commit, in the order they were made.
        appends: Vec<Staged>,
    },
    /// Create a topic's streams, one per partition; answers on `reply`.
    Create {
        /// The topic.
        topic: String,
        /// How many partitions it has.
        partitions: u32,
        /// Its limits.
        retention: Retention,
        /// Where the answer goes: the topic's next offset, or why not.
        reply: mpsc::Sender<Result<(), Refusal>>,
    },
    /// Grow a topic to `partitions` partitions: create the new partitions' streams, then
    /// note the count in partition 0's; answers on `reply`.
    Grow {
        /// The topic.
        topic: String,
        /// How many partitions it is to have.
        partitions: u32,
        /// Where the answer goes.
        reply: mpsc::Sender<Result<(), Refusal>>,
    },
    /// Delete a topic's streams, every partition's; answers on `reply`.
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
    /// Read entries of the groups bucket, all at once: each one's bytes and revision, if
    /// stored.
    GroupLoad {
        /// Their keys.
        keys: Vec<String>,
        /// Where the answer goes, in order.
        reply: mpsc::Sender<Result<Entries, String>>,
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
    /// List the keys of the groups bucket that start with `prefix` (every key without one).
    GroupKeys {
        /// What the keys start with.
        prefix: Option<String>,
        /// Where the keys go.
        reply: mpsc::Sender<Result<Vec<String>, String>>,
    },
    /// Remove a group state from the groups bucket: one key, and every key under a prefix.
    GroupRemove {
        /// The key.
        key: String,
        /// What the other keys start with.
        under: String,
    },
    /// Read back the batches of a partition from the one holding an offset, and hand them
    /// on with [`Event::Loaded`].
    Load(Load),
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
        /// The topic (its partition 0).
        topic: String,
        /// Id and payload of each message.
        messages: Vec<(String, Vec<u8>)>,
        /// Where the stream sequences (and whether each was a duplicate) go.
        reply: mpsc::Sender<Result<Vec<(u64, bool)>, String>>,
    },
}

/// What the runtime tells the serving thread, in the order it happened.
#[derive(Debug)]
pub enum Event {
    /// A partition's stream exists (found, created here or elsewhere): the mirror starts at
    /// `next`.
    Topic {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// For partition 0: the topic's count of partitions, as its stream's metadata says.
        partitions: Option<u32>,
        /// The offset of its oldest message held (equal to `next` when empty).
        first: u64,
        /// The offset its next message gets.
        next: u64,
        /// The bytes its stream holds, as JetStream counts them.
        bytes: u64,
        /// Its limits, as its stream's configuration says.
        retention: Retention,
        /// Where the copy kept from an earlier run ends, when its stream still holds that
        /// copy's last message at its place: it is resumed, and messages follow from there.
        resumed: Option<u64>,
    },
    /// Messages of a partition, read from its stream in order, by whichever broker they came.
    Messages {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Each stored message's stream sequence and payload: a batch, or one message of the
        /// format before batches (`record`).
        messages: Vec<(u64, Bytes)>,
    },
    /// Batches of a partition read back ([`Command::Load`]), or why not.
    Loaded(Loaded),
    /// Where a partition's stream starts now: its limits removed the messages before.
    First {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset of its oldest message held.
        first: u64,
    },
    /// A partition's stream was deleted (here or elsewhere).
    Deleted {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
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

/// The most bytes of stored messages read from streams that may wait in the event channel
/// for the serving thread: a follower that reads faster than the copies take them (a process
/// starting on large topics, a busy serving thread) waits for them, rather than holding its
/// streams in memory a second time.
pub const HELD_LIMIT: usize = 32 << 20;

/// How long a follower waiting for room in [`HELD_LIMIT`] sleeps before it looks again, in
/// case the serving thread has gone and will never say it took them.
const HELD_RECHECK: Duration = Duration::from_millis(100);

/// The bytes of stored messages sent to the serving thread and not yet taken into its copies.
#[derive(Debug, Default)]
pub struct Held {
    /// The bytes.
    bytes: AtomicUsize,
    /// Wakes the followers waiting for room.
    taken: tokio::sync::Notify,
}

impl Held {
    /// Notes that the serving thread took `bytes` of messages ([`Event::Messages`]) into its
    /// copies.
    pub fn taken(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::SeqCst);
        self.taken.notify_waiters();
    }
}

/// The bytes of the payloads of an [`Event::Messages`].
pub fn payload_bytes(messages: &[(u64, Bytes)]) -> usize {
    messages.iter().map(|(_, payload)| payload.len()).sum()
}

/// The sending half of the event channel, with the pipe that wakes the serve loop.
#[derive(Debug, Clone)]
pub struct Events {
    /// The channel.
    sender: mpsc::Sender<Event>,
    /// The channel of claims taken or ended through other broker processes.
    claims: mpsc::Sender<ClaimChange>,
    /// The pipe's write end (non-blocking: a full pipe already wakes the loop).
    wake: Arc<UnixStream>,
    /// The bytes of messages sent and not yet taken.
    held: Arc<Held>,
}

impl Events {
    /// An event channel, and one of claims made elsewhere, waking through `wake`; the
    /// serving thread says through `held` what it took of the messages sent.
    pub fn new(
        sender: mpsc::Sender<Event>,
        claims: mpsc::Sender<ClaimChange>,
        wake: UnixStream,
        held: Arc<Held>,
    ) -> Events {
        Events { sender, claims, wake: Arc::new(wake), held }
    }

    /// Sends messages read from a partition's stream, once fewer than [`HELD_LIMIT`] bytes
    /// sent before wait for the serving thread.
    pub async fn send_read(&self, topic: String, partition: u32, messages: Vec<(u64, Bytes)>) {
        loop {
            let taken = self.held.taken.notified();
            if self.held.bytes.load(Ordering::SeqCst) < HELD_LIMIT {
                break;
            }
            let _ = tokio::time::timeout(HELD_RECHECK, taken).await;
        }
        self.send_now(topic, partition, messages);
    }

    /// Sends messages of a partition's stream at once, whatever waits: batches this process
    /// stored itself, which its clients wait on.
    pub fn send_now(&self, topic: String, partition: u32, messages: Vec<(u64, Bytes)>) {
        self.held.bytes.fetch_add(payload_bytes(&messages), Ordering::SeqCst);
        self.send(Event::Messages { topic, partition, messages });
    }

    /// Tells the serving thread of a claim taken, renewed or ended through another broker
    /// process, and wakes the serve loop.
    pub fn claim(&self, change: ClaimChange) {
        if self.claims.send(change).is_ok() {
            let _ = (&*self.wake).write(&[1]);
        }
    }

    /// Sends `event` and wakes the serve loop. A serving thread that is gone is not an error:
    /// the runtime is stopping with it.
    pub fn send(&self, event: Event) {
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
    /// How many partitions a topic made by its first append gets.
    pub partitions: u32,
    /// How long a claim lasts without renewal (the claims bucket's time to live is half).
    pub lease: Duration,
    /// How long start-up keeps trying to reach the servers and their JetStream.
    pub start_timeout: Duration,
    /// The copies kept from an earlier run (`--copy-dir`), by topic: the offset each copy's
    /// next message gets, and the payload of its last message as its stream held it. A copy
    /// whose stream still holds that payload at that place is resumed from there.
    pub resume: HashMap<(String, u32), (u64, Bytes)>,
}

/// What every concern of the runtime uses: the connection, JetStream, where events go, and
/// how the runtime was set up.
pub struct Connection {
    /// The connection, to see whether it is up.
    pub client: async_nats::Client,
    /// The JetStream context.
    pub js: Context,
    /// Where events go.
    pub events: Events,
    /// How it was set up (its `resume` taken by the streams).
    pub setup: Setup,
}

impl Connection {
    /// The key-value bucket `config` describes, kept in `opened` once opened: opened, or created
    /// as `config` says on first use.
    ///
    /// # Errors
    /// It could be neither found nor created.
    pub async fn bucket(
        &self,
        opened: &mut Option<jetstream::kv::Store>,
        config: jetstream::kv::Config,
    ) -> Result<jetstream::kv::Store, String> {
        if let Some(bucket) = opened {
            return Ok(bucket.clone());
        }
        let name = config.bucket.clone();
        let bucket = match self.js.get_key_value(&name).await {
            Ok(bucket) => bucket,
            Err(_) => self
                .js
                .create_key_value(config)
                .await
                .map_err(|e| format!("cannot create the bucket {name} in JetStream: {e}"))?,
        };
        *opened = Some(bucket.clone());
        Ok(bucket)
    }
}

/// The runtime's state, by concern.
struct Backend {
    /// The connection they share.
    conn: Connection,
    /// The topics' streams, followed into the serving thread's copies.
    streams: Streams,
    /// The claims bucket and the claims held through this process.
    claims: ClaimsBucket,
    /// The groups bucket.
    groups: GroupsBucket,
}

/// Connects to JetStream and lists the topics there, then serves commands until the command
/// channel closes. Runs on the runtime's thread; `ready` hears whether the connection was made.
pub async fn run(
    mut setup: Setup,
    mut commands: tmpsc::UnboundedReceiver<Command>,
    events: Events,
    ready: mpsc::Sender<Result<(), String>>,
) {
    // Servers started with the broker may not listen yet, nor their cluster have a leader:
    // start-up tries again until `start_timeout`.
    let deadline = tokio::time::Instant::now() + setup.start_timeout;
    let client = loop {
        let connecting = async_nats::ConnectOptions::new()
            .name(connection_name())
            .connection_timeout(CONNECT_TIMEOUT)
            .ping_interval(PING_INTERVAL)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connect(setup.servers.as_slice());
        // Each server costs at most `CONNECT_TIMEOUT`, greeting included; the start-up's
        // deadline bounds the whole.
        let error = match tokio::time::timeout_at(deadline, connecting).await {
            Ok(Ok(client)) => break client,
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no server answered".to_owned(),
        };
        if tokio::time::Instant::now() + START_RETRY >= deadline {
            let _ = ready.send(Err(format!("cannot reach NATS at {:?}: {error}", setup.servers)));
            return;
        }
        tracing::info!(%error, "NATS not reachable yet; trying again");
        tokio::time::sleep(START_RETRY).await;
    };
    let mut js = jetstream::new(client.clone());
    js.set_timeout(REQUEST_TIMEOUT);
    let resume = std::mem::take(&mut setup.resume);
    let mut backend = Backend {
        conn: Connection { client: client.clone(), js, events, setup },
        streams: Streams::new(instance_id(), resume),
        claims: ClaimsBucket::default(),
        groups: GroupsBucket::default(),
    };
    let advisories = client.subscribe("$JS.EVENT.ADVISORY.STREAM.*.*").await;
    let mut advisories = match advisories {
        Ok(subscription) => subscription,
        Err(error) => {
            let _ = ready.send(Err(format!("cannot subscribe to JetStream's advisories: {error}")));
            return;
        }
    };
    let Backend { conn, streams, claims, groups } = &mut backend;
    // JetStream answers once its cluster elected a leader.
    while let Err(error) = streams.follow_existing(conn).await {
        if tokio::time::Instant::now() + START_RETRY >= deadline {
            let _ = ready.send(Err(error));
            return;
        }
        tracing::info!(%error, "JetStream not ready yet; trying again");
        tokio::time::sleep(START_RETRY).await;
    }
    // The buckets are made at start, while the cluster is whole: one of `--replicas 3`
    // cannot be placed while a server is down. Failing here is not fatal; first use tries again.
    if let Err(error) = claims.bucket(conn).await {
        tracing::warn!(%error, "cannot open the claims bucket yet");
    }
    if let Err(error) = groups.bucket(conn).await {
        tracing::warn!(%error, "cannot open the groups bucket yet");
    }
    let mut claims_watch = claims.watch(conn).await;
    let mut heartbeat = Heartbeat::start(&conn.client).await;
    let mut beats = tokio::time::interval(HEARTBEAT);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let _ = ready.send(Ok(()));
    // Held claims are renewed three times a time to live, so that one lost renewal costs
    // nothing.
    let every = claims::time_to_live(conn.setup.lease) / 3;
    let mut renewals = tokio::time::interval(every.max(Duration::from_millis(10)));
    let mut sweeps = tokio::time::interval_at(tokio::time::Instant::now() + SWEEP, SWEEP);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Stop) | None => break,
                Some(command) => backend.apply(command).await,
            },
            done = backend.streams.next_settled() => {
                backend.streams.settle(&backend.conn, done);
            }
            Some(advisory) = advisories.next() => {
                backend.streams.advised(&backend.conn, &advisory.subject).await;
            }
            _ = sweeps.tick() => backend.streams.sweep(&backend.conn).await,
            _ = beats.tick() => heartbeat.beat(&backend.conn.client).await,
            Some(_) = heartbeat.next() => heartbeat.heard = tokio::time::Instant::now(),
            watched = claims::next(&mut claims_watch) => match watched {
                Some(Ok(entry)) => backend.claims.watched(&backend.conn, &entry),
                ended => {
                    if let Some(Err(error)) = ended {
                        tracing::debug!(%error, "watching the claims bucket again");
                    }
                    // Made again at the next renewal tick.
                    claims_watch = None;
                }
            },
            _ = renewals.tick() => {
                backend.claims.renew(&backend.conn).await;
                if claims_watch.is_none() {
                    claims_watch = backend.claims.watch(&backend.conn).await;
                }
            }
        }
    }
    backend.streams.stop();
    // A stop does not wait on a server that does not answer: what is not given back by then
    // ends with its lease.
    let closing = async {
        backend.claims.free_all(&backend.conn).await;
        let _ = client.flush().await;
    };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::warn!("NATS did not answer at the stop; claims held here end with their lease");
    }
}

/// The name this broker process gives its NATS connection, which the servers' `/connz` shows:
/// `broker-<process id>`.
fn connection_name() -> String {
    format!("broker-{}", std::process::id())
}

/// The runtime's check that its server still answers: a message to itself through the
/// server every [`HEARTBEAT`], and a new connection (to another server of the list, the
/// client preferring those that did not fail) when none came back for [`SILENCE`].
struct Heartbeat {
    /// The subject it sends to and listens on: an inbox of its own.
    subject: async_nats::Subject,
    /// Its messages, as they come back; `None` when it could not subscribe.
    subscriber: Option<async_nats::Subscriber>,
    /// When it last heard from the server (or connected).
    heard: tokio::time::Instant,
    /// How many times the client had connected, as last seen.
    connects: u64,
}

impl Heartbeat {
    /// Subscribes to an inbox of its own on `client`'s connection.
    async fn start(client: &async_nats::Client) -> Heartbeat {
        let subject = async_nats::Subject::from(client.new_inbox());
        let subscriber = match client.subscribe(subject.clone()).await {
            Ok(subscriber) => Some(subscriber),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the NATS server's answers; relying on pings");
                None
            }
        };
        let connects = client.statistics().connects.load(std::sync::atomic::Ordering::Relaxed);
        Heartbeat { subject, subscriber, heard: tokio::time::Instant::now(), connects }
    }

    /// The next of its messages to come back; never ready without a subscription.
    async fn next(&mut self) -> Option<async_nats::Message> {
        match &mut self.subscriber {
            Some(subscriber) => subscriber.next().await,
            None => std::future::pending().await,
        }
    }

    /// Sends the next message, or, when the server left the last ones unanswered for
    /// [`SILENCE`], makes the connection again.
    async fn beat(&mut self, client: &async_nats::Client) {
        if self.subscriber.is_none() {
            return;
        }
        let connects = client.statistics().connects.load(std::sync::atomic::Ordering::Relaxed);
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        if connects != self.connects || !connected {
            // A connection being made, or just made: the silence counts from now.
            self.connects = connects;
            self.heard = tokio::time::Instant::now();
            return;
        }
        if self.heard.elapsed() > SILENCE {
            tracing::warn!(
                silent_ms = self.heard.elapsed().as_millis() as u64,
                "the NATS server does not answer; connecting to another"
            );
            self.heard = tokio::time::Instant::now();
            if let Err(error) = client.force_reconnect().await {
                tracing::warn!(%error, "cannot connect to NATS again");
            }
            return;
        }
        let _ = client.publish(self.subject.clone(), Bytes::new()).await;
    }
}

/// A name for this broker process, unique among those sharing the JetStream, that prefixes
/// the de-duplication id of each message it publishes.
fn instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

impl Backend {
    /// Carries out one command, by the concern it belongs to.
    async fn apply(&mut self, command: Command) {
        let conn = &self.conn;
        match command {
            Command::Commit { ticket, appends } => self.streams.commit(conn, ticket, appends).await,
            Command::Create { topic, partitions, retention, reply } => {
                let _ = reply.send(self.streams.create(conn, &topic, partitions, retention).await);
            }
            Command::Grow { topic, partitions, reply } => {
                let _ = reply.send(self.streams.grow(conn, &topic, partitions).await);
            }
            Command::Delete { topic, reply } => {
                let _ = reply.send(self.streams.delete(conn, &topic).await);
            }
            Command::Claim { id, holder, reply } => {
                let _ = reply.send(self.claims.take(conn, id, holder).await);
            }
            Command::Unclaim { id } => self.claims.free(conn, id).await,
            Command::GroupLoad { keys, reply } => {
                let _ = reply.send(self.groups.load(conn, &keys).await);
            }
            Command::GroupSave { states, reply } => {
                let _ = reply.send(self.groups.save(conn, states).await);
            }
            Command::GroupRemove { key, under } => self.groups.remove(conn, &key, &under).await,
            Command::GroupKeys { prefix, reply } => {
                let _ = reply.send(self.groups.keys(conn, prefix.as_deref()).await);
            }
            Command::Load(load) => {
                let (js, events) = (conn.js.clone(), conn.events.clone());
                tokio::spawn(async move { events.send(Event::Loaded(cold::load(js, load).await)) });
            }
            Command::Stop => {}
            #[cfg(test)]
            Command::PublishRaw { topic, messages, reply } => {
                let _ = reply.send(self.streams.publish_raw(conn, &topic, messages).await);
            }
        }
    }
}
