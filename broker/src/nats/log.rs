//! The log kept in a NATS JetStream: [`NatsLog`], the serving thread's side of the topics'
//! streams, one per partition. Appends are staged and handed, once per pass, to the runtime (`streams` publishes
//! them); reads are served from a copy of each partition's newest messages held in memory, or
//! with `--copy-dir` in segment files there (the mirror), fed in stream order by the runtime's
//! followers from where the stream ended at the start, and from what was read back of older
//! ones (`cold`); the copies and what was read back hold at most `--cache-bytes` together.
//! Copies in files are kept from one clean stop to the next start, and resumed where they end
//! when their stream still holds their last message there.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protocol::batch::Piece;
use protocol::{Message, NewMessage, Retention, Sequenced, TopicInfo};
use tokio::sync::mpsc as tmpsc;

use crate::logical::ClaimChange;
use crate::store::{
    check_batch, check_growth, check_name, check_partitions, info_of, unknown, unknown_partition,
    Budget, Cache, CommitFailure, Files, InMemory, IoFailure, Log, Partition, Renumbered, Result,
    Settled, Storage, StoreConfig, StoreError, Ticket, Totals,
};
use crate::store::{disk, flush, recovery, Reading};

use super::cold::{Loaded, Reads};
use super::record::{self, Decoded};
use super::runtime::{self, Command, Event};
use super::streams::{self, Refusal, Staged};
use super::{NatsClaims, NatsConfig, NatsGroups};

/// How long a stop waits for the runtime's thread to end: it bounds its own work with NATS
/// to a second, but may be in the middle of a request that takes a little longer to time out.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a create or a delete of a topic may take before it is refused.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(4);

/// The copy of a partition a broker process serves reads from: in memory, or in files (which
/// fall back to memory when their directory cannot be made).
type Copy = Partition<Box<dyn Storage>>;

/// A partition: (topic, partition).
type Key = (String, u32);

/// What a partition's stream holds before its copy starts, as far as this process knows.
#[derive(Debug, Clone, Copy)]
struct Before {
    /// The stream's first offset: reads from there to the copy are read back.
    first: u64,
    /// The bytes of messages before the copy: the stream's bytes when the copy started at its
    /// end, and the bytes the cache dropped from the copy since.
    bytes: u64,
}

/// The smallest a read back asks for, and the most.
const LOAD_BYTES: (usize, usize) = (64 << 10, 4 << 20);

/// A [`Log`] kept in a NATS JetStream, served from a copy in memory or in files.
#[derive(Debug)]
pub struct NatsLog {
    /// Every partition known, its newest messages as read from its stream: what reads see. A
    /// topic is known while its partition 0 is; its partitions are those known from 0 on,
    /// without a gap.
    mirror: BTreeMap<Key, Copy>,
    /// What each partition's stream holds before its copy starts.
    before: BTreeMap<Key, Before>,
    /// What was read back of the partitions' older messages, and the reads back asked for.
    reads: Reads,
    /// The most bytes the copies and `reads` may hold together (`--cache-bytes`).
    cache_bytes: u64,
    /// The bytes of each segment of a copy: small enough that the cache drops a copy's oldest
    /// messages a little at a time.
    copy_segment_bytes: usize,
    /// The directory holding a directory of segment files for each topic's copy, laid out
    /// as a data directory (`topics/`); `None` when the copies are in memory.
    copies: Option<PathBuf>,
    /// The copies kept from an earlier run, until the runtime says whether each one's stream
    /// still holds it (`Event::Topic`'s `resumed`).
    unverified: BTreeMap<Key, Copy>,
    /// The partitions whose copy is still being read from their stream, with the offset their
    /// stream ended at when found: until the copy reaches it, offsets up to there are the
    /// partition's (a committed offset or a fetch there is not past its end), not yet readable.
    loading: BTreeMap<Key, u64>,
    /// How the store was set up.
    config: StoreConfig,
    /// The appends of the present pass, in order.
    staged: Vec<Staged>,
    /// The first offset `append` gave each staged append, to name it when its commit settles.
    given: Vec<u64>,
    /// For each partition appended to in the present pass or in a commit in flight, the
    /// offset the next append is given (renumbered when its commit settles).
    guessed: BTreeMap<Key, u64>,
    /// The ticket the next commit gets.
    next_ticket: u64,
    /// Commits handed to the runtime and not yet settled, oldest first, with the partition
    /// and given first offset of each of their appends.
    in_flight: VecDeque<(Ticket, Vec<(Key, u64)>)>,
    /// Commits settled and not yet reported.
    settled: Vec<Settled>,
    /// Partitions that received messages since the last report (from any broker process).
    grown: Vec<Key>,
    /// Partitions retention shortened in the mirror since the last call.
    trimmed: Vec<Key>,
    /// The partitions an append to a topic not known here listed before its streams were
    /// found: until a stream confirms one, it may be one the topic does not have (made
    /// elsewhere with fewer partitions than this process's `--partitions`).
    guesses: std::collections::BTreeSet<Key>,
    /// Commands to the runtime.
    commands: Option<tmpsc::UnboundedSender<Command>>,
    /// Events from the runtime.
    events: mpsc::Receiver<Event>,
    /// The read end of the pipe the runtime writes to after each event.
    wake: UnixStream,
    /// The runtime's thread.
    thread: Option<JoinHandle<()>>,
    /// Hears when the runtime's thread is done, so that a stop waits for it a bounded time.
    finished: mpsc::Receiver<()>,
    /// The claims taken or ended through other broker processes, as the runtime watches
    /// them, until [`NatsLog::claims`] hands them on.
    claim_changes: Option<mpsc::Receiver<ClaimChange>>,
    /// The bytes of messages the runtime sent and this thread has not yet taken: it is told
    /// of each batch taken, so that followers never hold more than [`runtime::HELD_LIMIT`]
    /// waiting here.
    held: Arc<runtime::Held>,
}

impl NatsLog {
    /// Connects to the JetStream `nats` names and starts following every topic there.
    ///
    /// # Errors
    /// JetStream cannot be reached, or the runtime's thread cannot be started.
    pub fn open(config: StoreConfig, nats: &NatsConfig) -> Result<NatsLog> {
        let (copies, unverified) = match nats.copy_dir.as_deref() {
            Some(dir) => {
                let (root, kept) = open_copies(dir, config.segment_bytes)?;
                (Some(root), kept)
            }
            None => (None, BTreeMap::new()),
        };
        let resume = unverified
            .iter()
            .filter_map(|(topic, copy)| Some((topic.clone(), (copy.next_offset(), last_of(copy)?))))
            .collect();
        let (wake, wake_writer) = UnixStream::pair().map_err(io_failure)?;
        wake.set_nonblocking(true).map_err(io_failure)?;
        wake_writer.set_nonblocking(true).map_err(io_failure)?;
        let (event_tx, events) = mpsc::channel();
        let (commands, command_rx) = tmpsc::unbounded_channel();
        let (ready_tx, ready) = mpsc::channel();
        let (claims_tx, claim_changes) = mpsc::channel();
        let setup = runtime::Setup {
            servers: nats.servers.clone(),
            replicas: nats.replicas.max(1),
            retention: config.retention,
            partitions: config.partitions,
            lease: nats.lease,
            start_timeout: nats.start_timeout,
            resume,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_failure)?;
        let held = Arc::new(runtime::Held::default());
        let emitter = runtime::Events::new(event_tx, claims_tx, wake_writer, Arc::clone(&held));
        let (finished_tx, finished) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("nats".into())
            .spawn(move || {
                runtime.block_on(runtime::run(setup, command_rx, emitter, ready_tx));
                let _ = finished_tx.send(());
            })
            .map_err(io_failure)?;
        let connected = ready
            .recv_timeout(nats.start_timeout + ADMIN_TIMEOUT)
            .unwrap_or_else(|_| Err(format!("no answer from NATS at {:?} in time", nats.servers)));
        if let Err(reason) = connected {
            drop(commands);
            // A runtime still waiting on a server is left to end with the process.
            if finished.recv_timeout(STOP_TIMEOUT).is_ok() {
                let _ = thread.join();
            }
            return Err(StoreError::Unavailable(reason));
        }
        let cache_bytes = nats.cache_bytes;
        let share = usize::try_from(cache_bytes / 16).unwrap_or(usize::MAX);
        let load_bytes = share.clamp(LOAD_BYTES.0, LOAD_BYTES.1);
        let mut log = NatsLog {
            mirror: BTreeMap::new(),
            before: BTreeMap::new(),
            reads: Reads::new(commands.clone(), load_bytes),
            cache_bytes,
            copy_segment_bytes: config.segment_bytes.min(share.max(LOAD_BYTES.0)),
            copies,
            unverified,
            loading: BTreeMap::new(),
            config,
            staged: Vec::new(),
            given: Vec::new(),
            guessed: BTreeMap::new(),
            next_ticket: 1,
            in_flight: VecDeque::new(),
            settled: Vec::new(),
            grown: Vec::new(),
            trimmed: Vec::new(),
            guesses: std::collections::BTreeSet::new(),
            commands: Some(commands),
            events,
            wake,
            thread: Some(thread),
            finished,
            claim_changes: Some(claim_changes),
            held,
        };
        log.take_events();
        // The runtime followed every stream before it said it was ready: a copy left over is
        // one of a topic deleted meanwhile.
        for (_, copy) in std::mem::take(&mut log.unverified) {
            if let Some(dir) = copy.dir() {
                remove_copy_files(dir);
            }
        }
        Ok(log)
    }

    /// Applies every event the runtime sent, without waiting.
    fn take_events(&mut self) {
        let mut byte = [0; 256];
        while matches!((&self.wake).read(&mut byte), Ok(n) if n > 0) {}
        while let Ok(event) = self.events.try_recv() {
            self.apply(event);
        }
    }

    /// Applies one event of the runtime.
    fn apply(&mut self, event: Event) {
        match event {
            Event::Topic {
                topic,
                partition,
                partitions,
                first,
                next,
                bytes,
                retention,
                resumed,
            } => {
                let key = (topic, partition);
                self.guesses.remove(&key);
                if let Some(count) = partitions {
                    self.drop_guesses(&key.0, count);
                }
                if let Some(copy) = self.unverified.remove(&key) {
                    if resumed == Some(copy.next_offset()) {
                        let end = copy.next_offset();
                        tracing::info!(topic = %key.0, partition, end, "copy resumed");
                        let first = first.min(copy.first_offset());
                        self.before.insert(key.clone(), Before { first, bytes: 0 });
                        if next > end {
                            // Appended meanwhile: the follower reads it from there.
                            self.loading.insert(key.clone(), next);
                        }
                        self.mirror.insert(key, copy);
                        return;
                    }
                    tracing::info!(topic = %key.0, partition, "copy not found in the stream; read again");
                    if let Some(dir) = copy.dir() {
                        remove_copy_files(dir);
                    }
                }
                let known = self.mirror.get(&key).is_some_and(|t| t.next_offset() >= next);
                // A partition not yet known starts empty at its stream's end, where its
                // follower starts; what the stream holds before is read back when asked for.
                if !known {
                    let copy = new_copy(self.copies.as_deref(), &key, next, retention);
                    self.mirror.insert(key.clone(), copy);
                    self.before.insert(key.clone(), Before { first, bytes });
                } else if let Some(before) = self.before.get_mut(&key) {
                    before.first = before.first.max(first);
                }
            }
            Event::Messages { topic, partition, messages } => {
                let bytes = runtime::payload_bytes(&messages);
                self.add((topic, partition), messages);
                self.held.taken(bytes);
            }
            Event::Loaded(loaded) => self.take_loaded(loaded),
            Event::First { topic, partition, first } => {
                if let Some(before) = self.before.get_mut(&(topic, partition)) {
                    before.first = before.first.max(first);
                }
            }
            Event::Deleted { topic, partition } => self.forget_partition(&(topic, partition)),
            Event::Committed { ticket, results } => self.settle(Ticket(ticket), results),
        }
    }

    /// Adds the stored messages (batches, or single messages of the format before batches)
    /// read from a partition's stream to its copy, in order: each with its stream sequence.
    fn add(&mut self, key: Key, stored: Vec<(u64, bytes::Bytes)>) {
        let Some(copy) = self.mirror.get_mut(&key) else { return };
        let topic = &key.0;
        let copies = self.copies.as_deref();
        let segment_bytes = self.copy_segment_bytes;
        let mut added = false;
        // The offset the copy's next message has, counting those appended to it here.
        let mut next = copy.next_offset();
        for (seq, payload) in &stored {
            if record::span(*seq, payload).is_some_and(|(_, end)| end <= next) {
                // Held already (put there from its acknowledgement): not decoded again.
                continue;
            }
            let Some((base, messages)) = record::decode_stored(*seq, payload) else {
                // Not ours: it holds no offsets, and is skipped rather than trusted.
                tracing::warn!(topic = %topic, seq, "a message of the stream is not ours; skipped");
                continue;
            };
            if base > next {
                // Messages removed from the stream before this broker read them: the copy
                // starts again at the oldest one held.
                *copy = new_copy(copies, &key, base, copy.retention());
                next = base;
                if let Some(before) = self.before.get_mut(&key) {
                    before.first = before.first.max(base);
                }
            }
            let skip = (next - base) as usize;
            // A stored batch goes to the copy as one batch (its messages share a timestamp);
            // single messages of the format before batches, one by one.
            let rest = messages.get(skip..).unwrap_or_default();
            for run in rest.chunk_by(|a, b| a.timestamp == b.timestamp) {
                let batch: Vec<NewMessage<'_>> = run.iter().map(Decoded::message).collect();
                copy.append_batch(run[0].timestamp, &batch, segment_bytes);
                next += run.len() as u64;
                added = true;
            }
        }
        keep(copy, topic);
        if self.loading.get(&key).is_some_and(|&until| copy.next_offset() >= until) {
            self.loading.remove(&key);
            tracing::debug!(topic = %topic, partition = key.1, "the partition's copy is read");
        }
        if added {
            let now_ms = crate::clock::epoch_ms();
            if copy.trim(&self.config.retention, now_ms) > 0 {
                // The stream's limits removed at least as much from the stream.
                if let Some(before) = self.before.get_mut(&key) {
                    before.first = before.first.max(copy.first_offset());
                }
                if !self.trimmed.contains(&key) {
                    self.trimmed.push(key.clone());
                }
            }
            if !self.grown.contains(&key) {
                self.grown.push(key);
            }
            self.keep_within_cache(None);
        }
    }

    /// Takes messages read back, or why they could not be: the fetches held for them look
    /// again.
    fn take_loaded(&mut self, loaded: Loaded) {
        let key = (loaded.load.topic.clone(), loaded.load.partition);
        let first = self.reads.take(loaded);
        if let (Some(first), Some(before)) = (first, self.before.get_mut(&key)) {
            // Retention may have removed messages from the stream since it was last seen.
            before.first = before.first.max(first);
        }
        self.keep_within_cache(Some(&key));
        if self.mirror.contains_key(&key) && !self.grown.contains(&key) {
            self.grown.push(key);
        }
    }

    /// Drops the oldest messages held until the copies and what was read back fit in
    /// `--cache-bytes`: what was read back least recently first (never `keep`'s, just read
    /// back for a reader waiting for it), then the oldest segment of the largest copy. A
    /// copy's newest segment always stays.
    fn keep_within_cache(&mut self, keep: Option<&Key>) {
        let mut held: u64 = self.mirror.values().map(Partition::stored_bytes).sum();
        held += self.reads.bytes();
        while held > self.cache_bytes {
            if self.reads.drop_oldest(keep) {
                held = self.mirror.values().map(Partition::stored_bytes).sum::<u64>()
                    + self.reads.bytes();
                continue;
            }
            let mut copies: Vec<(&Key, &mut Copy)> = self.mirror.iter_mut().collect();
            copies.sort_by_key(|(_, copy)| std::cmp::Reverse(copy.stored_bytes()));
            let dropped = copies.into_iter().find_map(|(key, copy)| {
                let (first, stored) = (copy.first_offset(), copy.stored_bytes());
                let payload = copy.drop_oldest()?;
                Some((key.clone(), first, stored - copy.stored_bytes(), payload))
            });
            let Some((key, first, stored, payload)) = dropped else { break };
            held -= stored;
            self.before.entry(key).or_insert(Before { first, bytes: 0 }).bytes += payload;
        }
    }

    /// Settles commit `ticket` with the runtime's results for its appends.
    fn settle(&mut self, ticket: Ticket, results: Vec<Result<(u64, u64)>>) {
        let Some(at) = self.in_flight.iter().position(|(t, _)| *t == ticket) else { return };
        let Some((_, appends)) = self.in_flight.remove(at) else { return };
        let mut settled =
            Settled { ticket, failures: Vec::new(), readable: Vec::new(), renumbered: Vec::new() };
        self.grown.retain(|t| !appends.iter().any(|(key, _)| key == t));
        for (((topic, partition), given), result) in appends.into_iter().zip(results) {
            match result {
                Ok((first, last)) => {
                    let key = (topic.clone(), partition);
                    if !settled.readable.contains(&key) {
                        settled.readable.push(key);
                    }
                    settled.renumbered.push(Renumbered { topic, partition, given, first, last });
                }
                Err(error) => {
                    let known = |f: &CommitFailure| f.topic == topic && f.partition == partition;
                    if !settled.failures.iter().any(known) {
                        tracing::error!(topic = %topic, partition, %error, "appends not acknowledged; refused");
                        settled.failures.push(CommitFailure { topic, partition, error });
                    }
                }
            }
        }
        if self.in_flight.is_empty() && self.staged.is_empty() {
            self.guessed.clear();
        }
        self.settled.push(settled);
    }

    /// The bytes of records the copies and what was read back hold. For tests.
    #[cfg(test)]
    pub(super) fn cached_bytes(&self) -> u64 {
        self.mirror.values().map(Partition::stored_bytes).sum::<u64>() + self.reads.bytes()
    }

    /// Asks the runtime `command` and waits for its answer on `reply`, at most
    /// [`ADMIN_TIMEOUT`].
    fn ask(
        &mut self,
        command: Command,
        reply: &mpsc::Receiver<std::result::Result<(), Refusal>>,
        topic: &str,
    ) -> Result<()> {
        let sent = self.commands.as_ref().is_some_and(|c| c.send(command).is_ok());
        if !sent {
            return Err(StoreError::Unavailable("the connection to NATS has stopped".into()));
        }
        let answer = reply.recv_timeout(ADMIN_TIMEOUT);
        self.take_events();
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Refusal::Exists)) => Err(StoreError::TopicExists(topic.to_owned())),
            Ok(Err(Refusal::Unknown)) => Err(unknown(topic)),
            Ok(Err(Refusal::Failed(reason))) => Err(nats_error(reason)),
            Ok(Err(Refusal::Partitions(now))) => Err(StoreError::InvalidPartitions(format!(
                "topic {} has {now} partitions; it can grow to more, never shrink",
                protocol::excerpt(topic)
            ))),
            Ok(Err(Refusal::Unreachable(reason))) => Err(StoreError::Unavailable(reason)),
            Err(_) => Err(StoreError::Unavailable("JetStream did not answer in time".into())),
        }
    }

    /// The claims on logical brokers kept in this JetStream, shared with every broker process
    /// on it. Only the first handle it gives hears of claims taken elsewhere.
    pub fn claims(&mut self) -> NatsClaims {
        NatsClaims::new(self.commands.clone(), self.claim_changes.take())
    }

    /// The consumer groups' states kept in this JetStream, shared with every broker process
    /// on it.
    pub fn groups(&self) -> NatsGroups {
        NatsGroups::new(self.commands.clone())
    }

    /// Publishes `messages` on `topic` with these de-duplication ids, waiting for their acks:
    /// each one's stream sequence and whether JetStream found it a duplicate. For tests.
    #[cfg(test)]
    pub(super) fn publish_raw(
        &mut self,
        topic: &str,
        messages: Vec<(String, Vec<u8>)>,
    ) -> Vec<(u64, bool)> {
        let (reply, answer) = mpsc::channel();
        let command = Command::PublishRaw { topic: topic.to_owned(), messages, reply };
        self.commands.as_ref().map(|c| c.send(command));
        answer.recv_timeout(ADMIN_TIMEOUT).unwrap().unwrap()
    }

    /// The bytes of records (framing included) a partition's copy and what was read back of
    /// it hold. For tests.
    #[cfg(test)]
    pub(super) fn held_bytes(&self, topic: &str, partition: u32) -> Option<u64> {
        let key = (topic.to_owned(), partition);
        let copy = self.mirror.get(&key).map(Partition::stored_bytes)?;
        Some(copy + self.reads.bytes_of(&key))
    }
}

/// The name, in the copies' folder, of the mark a clean stop leaves: the copies' files were
/// flushed and may be trusted.
const CLEAN_MARK: &str = "clean";

/// The folder, laid out as a data directory, that holds the copies of partition `partition` of
/// every topic: `copies` itself for partition 0 (as before topics had partitions), and
/// `copies/partitions/<p>/` for the others, each copy a topic of one partition there.
fn copies_root(copies: &Path, partition: u32) -> PathBuf {
    match partition {
        0 => copies.to_path_buf(),
        p => copies.join("partitions").join(p.to_string()),
    }
}

/// Opens `dir`'s folder of copies, `DIR/copies/`, laid out as a data directory for partition 0
/// and one more per other partition (see [`copies_root`]). After a clean stop (its mark is
/// there) the copies are recovered as a data directory is, to be resumed; otherwise (a crash
/// may have left their unflushed files anything), or if they do not open, the folder is made
/// anew, empty. The mark is removed first, durably, so that a crash from now on makes the
/// next start begin anew. Returns the folder and the copies kept.
///
/// # Errors
/// The folder cannot be removed or made.
fn open_copies(dir: &Path, segment_bytes: usize) -> Result<(PathBuf, BTreeMap<Key, Copy>)> {
    let copies = dir.join("copies");
    let failed = |what: &str, e| {
        StoreError::Io(IoFailure::doing(format!("cannot {what} {}", copies.display()), e))
    };
    let mark = copies.join(CLEAN_MARK);
    if fs::remove_file(&mark).is_ok() {
        crate::files::sync_dir(&copies).map_err(|e| failed("flush", e))?;
        match recover_copies(&copies, segment_bytes) {
            Ok(kept) => return Ok((copies, kept)),
            Err(error) => tracing::warn!(%error, "the topics' copies do not open; read again"),
        }
    }
    match fs::remove_dir_all(&copies) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(failed("clear", error)),
    }
    fs::create_dir_all(disk::topics_dir(&copies)).map_err(|e| failed("make", e))?;
    Ok((copies, BTreeMap::new()))
}

/// Recovers the copies of every partition kept in `copies`, as [`open_copies`] does after a
/// clean stop.
///
/// # Errors
/// A folder of copies does not open.
fn recover_copies(
    copies: &Path,
    segment_bytes: usize,
) -> std::result::Result<BTreeMap<Key, Copy>, crate::store::OpenError> {
    let mut roots = vec![0];
    if let Ok(listing) = fs::read_dir(copies.join("partitions")) {
        let names = listing.filter_map(|e| e.ok()?.file_name().into_string().ok());
        roots.extend(names.filter_map(|name| disk::partition_of(&name)));
    }
    let mut kept = BTreeMap::new();
    for partition in roots {
        let recovered = recovery::recover(&copies_root(copies, partition), segment_bytes, None)?;
        for (name, topic) in recovered.topics {
            // Each copy is a topic of one partition in its folder.
            if let Some(copy) = topic.into_partitions().into_iter().next() {
                kept.insert((name, partition), copy.boxed());
            }
        }
    }
    Ok(kept)
}

/// Flushes every copy's files and leaves the mark that lets the next start resume them.
fn mark_clean(copies: &Path) -> io::Result<()> {
    flush::syncfs(&fs::File::open(copies)?)?;
    let mark = fs::File::create(copies.join(CLEAN_MARK))?;
    mark.sync_all()?;
    crate::files::sync_dir(copies)
}

/// The payload its stream holds for `copy`'s last message; `None` for an empty copy.
fn last_of(copy: &Copy) -> Option<bytes::Bytes> {
    let last = copy.next_offset().checked_sub(1).filter(|&last| last >= copy.first_offset())?;
    let mut out: Vec<Message<'_>> = Vec::new();
    copy.read(last, &mut Budget::new(1, usize::MAX), &mut out).ok()?;
    let message = out.first()?;
    Some(record::encode(message.timestamp, message.key, message.value).into())
}

/// An empty copy of a partition whose next message gets offset `first`: in memory, or in a
/// directory of its own in its partition's folder under `copies` ([`copies_root`]; emptied
/// first), with its `topic.meta` so that a later start can recover it. A copy whose directory
/// cannot be made is kept in memory, with a log line saying so.
fn new_copy(
    copies: Option<&Path>,
    (topic, partition): &Key,
    first: u64,
    retention: Retention,
) -> Copy {
    let in_memory =
        || Partition::starting_at(Box::new(InMemory) as Box<dyn Storage>, first, retention);
    let Some(copies) = copies else { return in_memory() };
    let root = copies_root(copies, *partition);
    let dir = disk::topics_dir(&root).join(disk::topic_dir_name(topic));
    remove_copy_files(&dir);
    let meta = disk::Meta::new(topic, retention, 1);
    let made = fs::create_dir_all(disk::topics_dir(&root))
        .and_then(|()| disk::create_topic_dir_unpublished(&root, &meta))
        .and_then(|dir| disk::publish_meta(&dir, true));
    match made {
        Ok(()) => Partition::starting_at(Box::new(Files::new(dir)), first, retention),
        Err(error) => {
            tracing::error!(%error, dir = %dir.display(), topic, "cannot make a copy's directory; kept in memory");
            in_memory()
        }
    }
}

/// Removes a copy's directory and its files, if it has them.
fn remove_copy_files(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(%error, dir = %dir.display(), "cannot remove a copy's files"),
    }
}

/// Makes the messages appended to a copy readable, written to its files (if it has them)
/// without a flush: a clean stop flushes the copies, and after a crash they are read again
/// from JetStream.
fn keep(copy: &mut Copy, topic: &str) {
    if let Err(error) = copy.commit_unflushed() {
        tracing::error!(topic, %error, "cannot keep messages in the topic's copy; they are dropped from it");
    }
}

fn io_failure(error: io::Error) -> StoreError {
    StoreError::Io(IoFailure::new(error))
}

fn nats_error(reason: String) -> StoreError {
    StoreError::Io(IoFailure::new(io::Error::other(reason)))
}

impl NatsLog {
    /// Stages the parts of an append to `topic`, marked `sequenced` when an idempotent
    /// producer sent it, all or nothing; the offsets given are guesses the commit renumbers.
    fn stage(
        &mut self,
        topic: &str,
        parts: &[(u32, &[NewMessage<'_>])],
        timestamp: u64,
        sequenced: Option<Sequenced>,
    ) -> Result<Vec<(u64, u64)>> {
        let count = self.count(topic);
        let known = count.is_some();
        let count = count.unwrap_or(self.config.partitions);
        for &(partition, messages) in parts {
            check_batch(topic, messages, self.config.max_message_bytes)?;
            if partition >= count {
                return Err(unknown_partition(topic, partition, count));
            }
        }
        if !known {
            check_partitions(count)?;
            // A topic new here is listed at once, empty, as in the other stores; its streams'
            // state replaces it when the runtime finds or creates them.
            let retention = Retention::default();
            for p in 0..count {
                let key = (topic.to_owned(), p);
                let copy = new_copy(self.copies.as_deref(), &key, 0, retention);
                self.mirror.insert(key.clone(), copy);
                self.guesses.insert(key);
            }
        }
        let mut offsets = Vec::with_capacity(parts.len());
        for &(partition, messages) in parts {
            let key = (topic.to_owned(), partition);
            let held = self.mirror.get(&key).map_or(0, Copy::next_offset);
            let next = self.guessed.entry(key).or_insert(held);
            let first = (*next).max(held);
            *next = first + messages.len() as u64;
            let batches = record::encode_batches(timestamp, messages);
            self.staged.push(Staged { topic: topic.to_owned(), partition, batches, sequenced });
            self.given.push(first);
            offsets.push((first, *next - 1));
        }
        Ok(offsets)
    }
}

impl Log for NatsLog {
    fn append(
        &mut self,
        topic: &str,
        partition: u32,
        messages: &[NewMessage<'_>],
        timestamp: u64,
    ) -> Result<(u64, u64)> {
        let offsets = self.append_parts(topic, &[(partition, messages)], timestamp)?;
        Ok(offsets.first().copied().unwrap_or_default())
    }

    fn append_parts(
        &mut self,
        topic: &str,
        parts: &[(u32, &[NewMessage<'_>])],
        timestamp: u64,
    ) -> Result<Vec<(u64, u64)>> {
        self.stage(topic, parts, timestamp, None)
    }

    fn append_sequenced(
        &mut self,
        topic: &str,
        parts: &[(u32, &[NewMessage<'_>])],
        timestamp: u64,
        sequenced: Sequenced,
    ) -> Result<Vec<(u64, u64)>> {
        self.stage(topic, parts, timestamp, Some(sequenced))
    }

    /// JetStream's de-duplication recognises a batch published again under its id, through
    /// any process (PROTOCOL.md, "Idempotent appends").
    fn recognises_resends(&self) -> bool {
        true
    }

    fn commit(&mut self, _now: Instant, _now_ms: u64) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.take_events();
        if self.staged.is_empty() {
            // A commit of nothing waits for no other: commits on other partitions settle
            // independently, and this one has none.
            let (failures, readable, renumbered) = (Vec::new(), Vec::new(), Vec::new());
            self.settled.push(Settled { ticket, failures, readable, renumbered });
            return ticket;
        }
        let appends = std::mem::take(&mut self.staged);
        let names: Vec<(Key, u64)> = appends
            .iter()
            .map(|s| (s.topic.clone(), s.partition))
            .zip(self.given.drain(..))
            .collect();
        let sent = self
            .commands
            .as_ref()
            .is_some_and(|c| c.send(Command::Commit { ticket: ticket.0, appends }).is_ok());
        self.in_flight.push_back((ticket, names));
        if !sent {
            let count = self.in_flight.back().map_or(0, |(_, a)| a.len());
            let stopped = StoreError::Unavailable("the connection to NATS has stopped".to_owned());
            self.settle(ticket, vec![Err(stopped); count]);
        }
        ticket
    }

    fn settled(&mut self) -> Vec<Settled> {
        self.take_events();
        if !self.grown.is_empty() {
            // Messages from other broker processes, or read back late: no commit of ours
            // (ticket 0 is never given), but fetches held on these topics may look again.
            let readable = std::mem::take(&mut self.grown);
            self.settled.push(Settled {
                ticket: Ticket(0),
                failures: Vec::new(),
                readable,
                renumbered: Vec::new(),
            });
        }
        std::mem::take(&mut self.settled)
    }

    fn wait_settled(&mut self) -> Vec<Settled> {
        let deadline = Instant::now() + streams::COMMIT_TIMEOUT * 3;
        while !self.in_flight.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => self.apply(event),
                Err(_) => {
                    let tickets: Vec<(Ticket, usize)> =
                        self.in_flight.iter().map(|(t, a)| (*t, a.len())).collect();
                    for (ticket, count) in tickets {
                        let reason = "no answer from the connection to NATS".to_owned();
                        self.settle(ticket, vec![Err(StoreError::Unconfirmed(reason)); count]);
                    }
                }
            }
        }
        self.settled()
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.wake.as_raw_fd())
    }

    fn read<'a>(
        &'a self,
        topic: &str,
        partition: u32,
        offset: u64,
        budget: Budget,
        out: &mut Vec<Message<'a>>,
    ) -> Result<u64> {
        self.read_into(topic, partition, offset, budget, out)
    }

    fn read_batches<'a>(
        &'a self,
        topic: &str,
        partition: u32,
        offset: u64,
        budget: Budget,
        out: &mut Vec<Piece<'a>>,
    ) -> Result<u64> {
        self.read_into(topic, partition, offset, budget, out)
    }

    fn loading(&self, topic: &str, partition: u32, offset: u64) -> bool {
        let Ok(copy) = self.copy(topic, partition) else { return false };
        let key = (topic.to_owned(), partition);
        let older = (self.first_of(&key, copy)..copy.first_offset()).contains(&offset);
        older && self.reads.loading(&key, offset, copy.first_offset())
    }

    fn cache(&self) -> Option<Cache> {
        let copies: u64 = self.mirror.values().map(Partition::stored_bytes).sum();
        let (read_backs, read_back_bytes) = self.reads.done();
        let bytes = copies + self.reads.bytes();
        Some(Cache { bytes, limit: self.cache_bytes, read_backs, read_back_bytes })
    }

    fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        let copy = self.copy(topic, partition)?;
        let key = (topic.to_owned(), partition);
        Ok((self.first_of(&key, copy), self.loaded_until(topic, partition, copy)))
    }

    fn partitions(&self, topic: &str) -> Result<u32> {
        self.count(topic).ok_or_else(|| unknown(topic))
    }

    fn create(&mut self, topic: &str, partitions: u32, retention: Retention) -> Result<()> {
        check_name(topic)?;
        check_partitions(partitions)?;
        let (reply, answer) = mpsc::channel();
        let command = Command::Create { topic: topic.to_owned(), partitions, retention, reply };
        self.ask(command, &answer, topic)
    }

    fn grow(&mut self, topic: &str, partitions: u32) -> Result<()> {
        check_name(topic)?;
        let now = self.count(topic).ok_or_else(|| unknown(topic))?;
        check_growth(topic, now, partitions)?;
        let (reply, answer) = mpsc::channel();
        let command = Command::Grow { topic: topic.to_owned(), partitions, reply };
        self.ask(command, &answer, topic)
    }

    fn delete(&mut self, topic: &str) -> Result<()> {
        check_name(topic)?;
        let (reply, answer) = mpsc::channel();
        let command = Command::Delete { topic: topic.to_owned(), reply };
        let deleted = self.ask(command, &answer, topic);
        if deleted.is_ok() || matches!(deleted, Err(StoreError::UnknownTopic(_))) {
            self.forget(topic);
        }
        deleted
    }

    fn list(&self) -> Vec<TopicInfo> {
        let mut topics = Vec::new();
        for (topic, _) in self.mirror.keys().filter(|(_, p)| *p == 0) {
            let count = self.count(topic).unwrap_or(1);
            let keys: Vec<Key> = (0..count).map(|p| (topic.clone(), p)).collect();
            let copies = keys.iter().filter_map(|key| self.mirror.get(key));
            let mut info = info_of(topic, copies, &self.config.retention);
            // The stream holds more than the copy: its messages from its first offset on.
            let (mut messages, mut bytes) = (0, 0);
            for (at, key) in keys.iter().enumerate() {
                let (held, held_bytes) = self.held_by_stream(key);
                messages += held;
                bytes += held_bytes;
                if let (Some(first), Some(copy)) =
                    (info.first_offsets.get_mut(at), self.mirror.get(key))
                {
                    *first = self.first_of(key, copy);
                }
            }
            info.first_offset = info.first_offsets.first().copied().unwrap_or_default();
            (info.messages, info.bytes) = (messages, bytes);
            topics.push(info);
        }
        topics
    }

    fn totals(&self) -> Totals {
        let topics = self.mirror.keys().filter(|(_, p)| *p == 0).count() as u64;
        let mut totals = Totals { topics, ..Totals::default() };
        for key in self.mirror.keys() {
            let (messages, bytes) = self.held_by_stream(key);
            totals.messages += messages;
            totals.bytes += bytes;
        }
        totals
    }

    fn take_trimmed(&mut self) -> Vec<Key> {
        std::mem::take(&mut self.trimmed)
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn close(&mut self) {
        let unheard = self.wait_settled();
        if !unheard.is_empty() {
            tracing::debug!(commits = unheard.len(), "commits settled at close, unreported");
        }
        self.stop_runtime();
        if let Some(copies) = &self.copies {
            match mark_clean(copies) {
                Ok(()) => tracing::info!("the topics' copies are flushed, to be resumed"),
                Err(error) => tracing::warn!(%error, "cannot flush the topics' copies"),
            }
        }
    }
}

impl NatsLog {
    /// Drops the copies of every partition of a topic deleted, with their files.
    fn forget(&mut self, topic: &str) {
        let keys: Vec<Key> = self.mirror.keys().filter(|(t, _)| t == topic).cloned().collect();
        for key in keys {
            self.forget_partition(&key);
        }
    }

    /// Drops the partitions of `topic` listed by a guess that its stream's count of `partitions`
    /// says it does not have.
    fn drop_guesses(&mut self, topic: &str, partitions: u32) {
        let wrong: Vec<Key> =
            self.guesses.iter().filter(|(t, p)| t == topic && *p >= partitions).cloned().collect();
        for key in wrong {
            self.guesses.remove(&key);
            self.forget_partition(&key);
        }
    }

    /// Where partition `partition` of `topic` (its copy `copy`) ends: its stream's end when
    /// found, while the copy is still being read up to there.
    fn loaded_until(&self, topic: &str, partition: u32, copy: &Copy) -> u64 {
        let until = self.loading.get(&(topic.to_owned(), partition)).copied().unwrap_or(0);
        copy.next_offset().max(until)
    }

    /// Where partition `key`'s stream starts (its copy `copy`): reads from there to the copy
    /// are read back.
    fn first_of(&self, key: &Key, copy: &Copy) -> u64 {
        let first = copy.first_offset();
        self.before.get(key).map_or(first, |before| before.first.min(first))
    }

    /// The messages and the bytes of keys and values partition `key`'s stream holds, as far
    /// as this process knows (the bytes before its copy as JetStream counts them).
    fn held_by_stream(&self, key: &Key) -> (u64, u64) {
        let Some(copy) = self.mirror.get(key) else { return (0, 0) };
        let before = self.before.get(key).map_or(0, |before| before.bytes);
        let end = self.loaded_until(&key.0, key.1, copy);
        (end - self.first_of(key, copy), before + copy.payload_bytes())
    }

    /// Drops the copy of a partition whose stream was deleted, with its files.
    fn forget_partition(&mut self, key: &Key) {
        self.guesses.remove(key);
        self.loading.remove(key);
        self.before.remove(key);
        self.reads.forget(key);
        if let Some(dir) = self.mirror.remove(key).as_ref().and_then(Partition::dir) {
            remove_copy_files(dir);
        }
    }

    /// How many partitions `topic` has here: those known from 0 on, without a gap (the
    /// streams of a topic's new partitions are learned one by one); `None` for a topic not
    /// known, whose partition 0 is not.
    fn count(&self, topic: &str) -> Option<u32> {
        let range = (topic.to_owned(), 0)..=(topic.to_owned(), u32::MAX);
        let mut count = 0;
        for ((_, p), _) in self.mirror.range(range) {
            if *p != count {
                break;
            }
            count += 1;
        }
        (count > 0).then_some(count)
    }

    /// The copy of partition `partition` of `topic`.
    ///
    /// # Errors
    /// An unknown topic or partition.
    fn copy(&self, topic: &str, partition: u32) -> Result<&Copy> {
        let count = self.count(topic).ok_or_else(|| unknown(topic))?;
        if partition >= count {
            return Err(unknown_partition(topic, partition, count));
        }
        self.mirror
            .get(&(topic.to_owned(), partition))
            .ok_or_else(|| unknown_partition(topic, partition, count))
    }

    /// [`Log::read`] and [`Log::read_batches`]: from the copy, or from what was read back of
    /// the stream before it.
    fn read_into<'a, R: Reading<'a>>(
        &'a self,
        topic: &str,
        partition: u32,
        offset: u64,
        budget: Budget,
        out: &mut R,
    ) -> Result<u64> {
        check_name(topic)?;
        let copy = self.copy(topic, partition)?;
        let end = self.loaded_until(topic, partition, copy);
        if offset > copy.next_offset() && offset <= end {
            // Held by the stream, not yet by the copy being read: nothing yet, as at the end.
            return Ok(offset);
        }
        let key = (topic.to_owned(), partition);
        let first = self.first_of(&key, copy);
        crate::store::check_range(topic, offset, first, end)?;
        if offset >= copy.first_offset() {
            return copy.read_checked(topic, offset, budget, out);
        }
        // Older than the copy: what was read back, or nothing yet (a read back is asked for).
        if let Some(reason) = self.reads.take_failure(&key) {
            return Err(StoreError::Unavailable(reason));
        }
        let mut budget = budget;
        let mut messages = Vec::new();
        if !self.reads.read(&key, offset, copy.first_offset(), &mut budget, &mut messages) {
            self.reads.loading(&key, offset, copy.first_offset());
        }
        out.take_messages(messages);
        Ok(end)
    }
}

impl NatsLog {
    /// Stops the runtime, waiting for its thread at most [`STOP_TIMEOUT`]: one still waiting
    /// on the network then is left to end with the process.
    fn stop_runtime(&mut self) {
        self.reads.close();
        if let Some(commands) = self.commands.take() {
            let _ = commands.send(Command::Stop);
        }
        let Some(thread) = self.thread.take() else { return };
        match self.finished.recv_timeout(STOP_TIMEOUT) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!("the connection to NATS did not close in time; left to the exit");
            }
            _ => {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for NatsLog {
    fn drop(&mut self) {
        self.stop_runtime();
    }
}
