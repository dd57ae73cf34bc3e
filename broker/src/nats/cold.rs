//! Reading back: the messages of a partition older than this process's copy of it, read from
//! the partition's stream when a reader asks for them. A broker process keeps only the recent
//! part of each partition (its copy, within `--cache-bytes`), so that a process added to a
//! running cluster is ready at once and holds no full copy; a read below a copy asks for the
//! batches that hold its offset ([`Reads`], the serving side), which the runtime reads with
//! direct gets of their stream sequences ([`load`], the runtime side), a few at once, found by a
//! binary search of base offsets or from where the last read back of the partition ended. What
//! comes back is held in memory as one range per partition, the least recently read dropped
//! first when the cache is full; a reader nearing a range's end has the next part read ahead.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use futures_util::future::join_all;
use protocol::{Message, NewMessage, Retention};
use tokio::sync::mpsc as tmpsc;

use super::record::{self, Decoded};
use super::runtime::Command;
use crate::store::{Budget, InMemory, Partition};

/// A partition: (topic, partition).
type Key = (String, u32);

/// At most this many reads back are in flight at once; the others wait for one to end.
const MAX_LOADS: usize = 16;

/// How many batches a read back asks for at once.
const GETS_AT_ONCE: u64 = 8;

/// A read back the serving thread asks the runtime for.
#[derive(Debug, Clone)]
pub struct Load {
    /// Which read back it is: an answer is taken only while it is the one asked for its
    /// partition (not after the topic was deleted, nor made again under its name).
    pub id: u64,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset wanted: the read starts at the batch that holds it.
    pub offset: u64,
    /// Where this process's copy starts: the read stops at the batch that reaches it.
    pub until: u64,
    /// The stream sequence that may hold the batch of `offset` (where the last read back of
    /// the partition ended), checked before it is trusted.
    pub seq: Option<u64>,
    /// About how many bytes of batches to read.
    pub bytes: usize,
}

/// What a read back found.
#[derive(Debug)]
pub struct Loaded {
    /// The read back asked for.
    pub load: Load,
    /// The stream's first offset now and its batches from the one holding the offset wanted
    /// (none when retention removed it), each with its stream sequence; or why not.
    pub result: Result<(u64, Vec<(u64, Bytes)>), String>,
}

/// Messages read back of one partition, contiguous, from the batch that held the offset first
/// asked for.
#[derive(Debug)]
struct Range {
    /// The messages.
    messages: Partition,
    /// The stream sequence after the last batch held.
    next_seq: u64,
    /// When it was last read, in [`Reads::tick`]s.
    used: Cell<u64>,
}

/// A read back asked for and not yet answered.
#[derive(Debug)]
struct Asked {
    /// What is asked.
    load: Load,
    /// Whether it went to the runtime ([`MAX_LOADS`] at most), or waits for room.
    sent: bool,
}

/// The serving thread's side: the ranges read back, and the reads back asked for. Reads are
/// made through `&self` (a read is made while earlier reads' messages are borrowed), so what a
/// read asks for is kept in cells.
#[derive(Debug)]
pub struct Reads {
    /// The messages read back, by partition.
    ranges: BTreeMap<Key, Range>,
    /// The reads back asked for, one per partition at most.
    asked: RefCell<BTreeMap<Key, Asked>>,
    /// The partitions whose last read back failed, with why: the next read there says so
    /// (once), and asks again.
    failed: RefCell<BTreeMap<Key, String>>,
    /// Counts reads, to find the range read least recently, and reads back, to name them.
    tick: Cell<u64>,
    /// About how many bytes one read back asks for; a range keeps at most twice that.
    load_bytes: usize,
    /// Where reads back are asked for; `None` once the runtime stops.
    commands: Option<tmpsc::UnboundedSender<Command>>,
    /// Reads back answered since the start, and the bytes of batches they brought.
    done: (u64, u64),
}

impl Reads {
    /// Nothing read back yet; each read back asks for about `load_bytes`.
    pub fn new(commands: tmpsc::UnboundedSender<Command>, load_bytes: usize) -> Reads {
        Reads {
            ranges: BTreeMap::new(),
            asked: RefCell::default(),
            failed: RefCell::default(),
            tick: Cell::new(0),
            load_bytes,
            commands: Some(commands),
            done: (0, 0),
        }
    }

    /// Reads the messages read back of `key` from `offset` into `out`, as many as `budget`
    /// takes: `false` when none are held there. A reader nearing the end of what is held has
    /// the next part (up to `until`, where the copy starts) read ahead.
    pub fn read<'a>(
        &'a self,
        key: &Key,
        offset: u64,
        until: u64,
        budget: &mut Budget,
        out: &mut Vec<Message<'a>>,
    ) -> bool {
        let Some(range) = self.ranges.get(key) else { return false };
        let (first, next) = (range.messages.first_offset(), range.messages.next_offset());
        if offset < first || offset >= next {
            return false;
        }
        self.tick.set(self.tick.get() + 1);
        range.used.set(self.tick.get());
        // Held in memory: a read cannot fail. `out` may hold messages read before.
        let before = out.len();
        let _ = range.messages.read(offset, budget, out);
        let end = out.get(before..).and_then(<[_]>::last).map_or(offset, |m| m.offset + 1);
        if next < until && next.saturating_sub(end) * 2 <= next - first {
            self.want(key, next, until, Some(range.next_seq));
        }
        true
    }

    /// Whether a read of `key` at `offset` (below `until`, where the copy starts) must wait
    /// for a read back: asks for one when none is asked for the partition. `false` when what
    /// is held covers it, or when the last read back failed (the read says why).
    pub fn loading(&self, key: &Key, offset: u64, until: u64) -> bool {
        if self.failed.borrow().contains_key(key) {
            return false;
        }
        let held = self.ranges.get(key).is_some_and(|range| {
            range.messages.first_offset() <= offset && offset < range.messages.next_offset()
        });
        if !held {
            self.want(key, offset, until, None);
        }
        !held
    }

    /// Why the last read back of `key` failed, once.
    pub fn take_failure(&self, key: &Key) -> Option<String> {
        self.failed.borrow_mut().remove(key)
    }

    /// Asks for a read back of `key` from `offset`, unless one is asked for already.
    fn want(&self, key: &Key, offset: u64, until: u64, seq: Option<u64>) {
        let mut asked = self.asked.borrow_mut();
        if asked.contains_key(key) {
            return;
        }
        let (topic, partition) = key.clone();
        self.tick.set(self.tick.get() + 1);
        let id = self.tick.get();
        let load = Load { id, topic, partition, offset, until, seq, bytes: self.load_bytes };
        let sent = asked.values().filter(|a| a.sent).count() < MAX_LOADS && self.send(&load);
        asked.insert(key.clone(), Asked { load, sent });
    }

    /// Hands `load` to the runtime.
    fn send(&self, load: &Load) -> bool {
        let command = Command::Load(load.clone());
        self.commands.as_ref().is_some_and(|c| c.send(command).is_ok())
    }

    /// Takes what a read back found, and sends the reads back that waited for room. Returns
    /// the stream's first offset, when the read back could see it; `None` too for one no
    /// longer asked for (its partition was forgotten since).
    pub fn take(&mut self, loaded: Loaded) -> Option<u64> {
        let key = (loaded.load.topic, loaded.load.partition);
        let asked = self.asked.get_mut();
        if asked.get(&key).is_none_or(|a| a.load.id != loaded.load.id) {
            self.send_waiting();
            return None;
        }
        asked.remove(&key);
        let first = match loaded.result {
            Ok((first, batches)) => {
                self.done.0 += 1;
                self.done.1 += batches.iter().map(|(_, payload)| payload.len() as u64).sum::<u64>();
                self.keep(&key, loaded.load.offset, batches);
                Some(first)
            }
            Err(reason) => {
                tracing::warn!(topic = %key.0, partition = key.1, offset = loaded.load.offset, %reason, "cannot read messages back from the stream");
                self.failed.get_mut().insert(key, reason);
                None
            }
        };
        self.send_waiting();
        first
    }

    /// Sends the reads back that wait for room, oldest partition first.
    fn send_waiting(&self) {
        let mut asked = self.asked.borrow_mut();
        let mut room = MAX_LOADS.saturating_sub(asked.values().filter(|a| a.sent).count());
        for waiting in asked.values_mut().filter(|a| !a.sent) {
            if room == 0 {
                break;
            }
            waiting.sent = self.send(&waiting.load);
            room -= usize::from(waiting.sent);
        }
    }

    /// Adds stored batches of `key`, read back from `offset`, in stream order, to its range:
    /// after it when they follow on, else as its new range. What a range holds before `offset`
    /// goes when it holds more than twice a read back.
    fn keep(&mut self, key: &Key, offset: u64, batches: Vec<(u64, Bytes)>) {
        let segment_bytes = (self.load_bytes / 2).max(1);
        for (seq, payload) in &batches {
            let Some((base, messages)) = record::decode_stored(*seq, payload) else {
                tracing::warn!(topic = %key.0, seq, "a message of the stream is not ours; skipped");
                continue;
            };
            let end = base + messages.len() as u64;
            let follows = self.ranges.get(key).is_some_and(|range| {
                (base..end).contains(&range.messages.next_offset())
                    || range.messages.next_offset() == base
            });
            if !follows {
                let messages = Partition::starting_at(InMemory, base, no_limits());
                self.ranges
                    .insert(key.clone(), Range { messages, next_seq: 0, used: Cell::new(0) });
            }
            let Some(range) = self.ranges.get_mut(key) else { continue };
            let skip = (range.messages.next_offset() - base) as usize;
            let rest = messages.get(skip..).unwrap_or_default();
            for run in rest.chunk_by(|a, b| a.timestamp == b.timestamp) {
                let batch: Vec<NewMessage<'_>> = run.iter().map(Decoded::message).collect();
                range.messages.append_batch(run[0].timestamp, &batch, segment_bytes);
            }
            // In memory: a commit cannot fail.
            let _ = range.messages.commit(false);
            range.next_seq = seq + 1;
        }
        let Some(range) = self.ranges.get_mut(key) else { return };
        self.tick.set(self.tick.get() + 1);
        range.used.set(self.tick.get());
        while range.messages.stored_bytes() > 2 * self.load_bytes as u64 {
            if range.messages.drop_oldest_before(offset).is_none() {
                break;
            }
        }
    }

    /// Reads back answered since the start, and the bytes of batches they brought.
    pub fn done(&self) -> (u64, u64) {
        self.done
    }

    /// The bytes the ranges hold.
    pub fn bytes(&self) -> u64 {
        self.ranges.values().map(|range| range.messages.stored_bytes()).sum()
    }

    /// The bytes held of `key`'s messages read back. For tests.
    #[cfg(test)]
    pub fn bytes_of(&self, key: &Key) -> u64 {
        self.ranges.get(key).map_or(0, |range| range.messages.stored_bytes())
    }

    /// Drops the range read least recently but `keep`'s: `false` when no other is held.
    pub fn drop_oldest(&mut self, keep: Option<&Key>) -> bool {
        let others = self.ranges.iter().filter(|(key, _)| Some(*key) != keep);
        let oldest = others.min_by_key(|(_, range)| range.used.get());
        let Some(key) = oldest.map(|(key, _)| key.clone()) else { return false };
        self.ranges.remove(&key);
        true
    }

    /// Forgets a partition whose stream was deleted.
    pub fn forget(&mut self, key: &Key) {
        self.ranges.remove(key);
        self.asked.get_mut().remove(key);
        self.failed.get_mut().remove(key);
    }

    /// Asks for nothing more: the runtime stops.
    pub fn close(&mut self) {
        self.commands = None;
    }
}

/// A range keeps what it read; the cache, not retention, bounds it.
fn no_limits() -> Retention {
    Retention::default()
}

/// The runtime's side: reads back what `load` asks for.
pub async fn load(js: Context, load: Load) -> Loaded {
    let result = read_back(&js, &load).await;
    Loaded { load, result }
}

/// The stream's first offset and its batches from the one holding `load.offset`.
async fn read_back(js: &Context, load: &Load) -> Result<(u64, Vec<(u64, Bytes)>), String> {
    let name = record::stream_name(&load.topic, load.partition);
    let stream = js
        .get_stream(&name)
        .await
        .map_err(|e| format!("cannot find the partition's stream: {e}"))?;
    let state = stream.cached_info().state.clone();
    if state.messages == 0 {
        // Emptied by its limits: its offsets go on from its last sequence (as `streams`).
        return Ok((state.last_sequence, Vec::new()));
    }
    let (first_seq, last_seq) = (state.first_sequence, state.last_sequence);
    let (first, _) = span_at(&stream, first_seq).await?.0;
    if load.offset < first {
        return Ok((first, Vec::new()));
    }
    let hinted = match load.seq.filter(|seq| (first_seq..=last_seq).contains(seq)) {
        Some(seq) => {
            let ((from, to), payload) = span_at(&stream, seq).await?;
            (from..to).contains(&load.offset).then_some((seq, payload))
        }
        None => None,
    };
    let (seq, payload) = match hinted {
        Some(found) => found,
        None => locate(&stream, load.offset, first_seq, last_seq)
            .await?
            .ok_or_else(|| format!("no batch of the stream holds offset {}", load.offset))?,
    };
    let mut bytes = payload.len();
    let mut reached = record::span(seq, &payload).is_none_or(|(_, to)| to >= load.until);
    let mut batches = vec![(seq, payload)];
    let mut next = seq + 1;
    while bytes < load.bytes && !reached && next <= last_seq {
        // As many as the batches read so far say are still wanted, a few at once.
        let each = (bytes / batches.len()).max(1);
        let wanted = (load.bytes - bytes).div_ceil(each) as u64;
        let upto = last_seq.min(next + wanted.clamp(1, GETS_AT_ONCE) - 1);
        let gets = (next..=upto).map(|seq| stream.get_raw_message(seq));
        for (seq, got) in (next..=upto).zip(join_all(gets).await) {
            let payload = got.map_err(|e| format!("cannot read sequence {seq}: {e}"))?.payload;
            bytes += payload.len();
            reached |= record::span(seq, &payload).is_none_or(|(_, to)| to >= load.until);
            batches.push((seq, payload));
        }
        next = upto + 1;
    }
    Ok((first, batches))
}

/// The offsets the stored message at `seq` spans, and its payload.
pub(super) async fn span_at(
    stream: &jetstream::stream::Stream,
    seq: u64,
) -> Result<((u64, u64), Bytes), String> {
    let message = stream
        .get_raw_message(seq)
        .await
        .map_err(|e| format!("cannot read sequence {seq}: {e}"))?;
    let span = record::span(seq, &message.payload)
        .ok_or_else(|| format!("sequence {seq} of the stream is not ours"))?;
    Ok((span, message.payload))
}

/// The stream sequence of the stored message that holds offset `offset`, between sequences
/// `low` and `high`, with its payload: `None` when none does. Base offsets grow with
/// sequences: a binary search, a few direct reads.
///
/// # Errors
/// A read failed, or the stream holds a message not ours.
pub async fn locate(
    stream: &jetstream::stream::Stream,
    offset: u64,
    mut low: u64,
    mut high: u64,
) -> Result<Option<(u64, Bytes)>, String> {
    while low <= high {
        let mid = low + (high - low) / 2;
        let ((from, to), payload) = span_at(stream, mid).await?;
        if to <= offset {
            low = mid + 1;
        } else if from > offset {
            let Some(below) = mid.checked_sub(1) else { break };
            high = below;
        } else {
            return Ok(Some((mid, payload)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored batch of `count` messages from offset `base`, each value its offset, at stream
    /// sequence `seq`.
    fn batch(seq: u64, base: u64, count: u64) -> (u64, Bytes) {
        let values: Vec<String> = (base..base + count).map(|n| n.to_string()).collect();
        let messages: Vec<NewMessage<'_>> =
            values.iter().map(|v| NewMessage::new(None, v.as_bytes())).collect();
        let mut encoded = record::encode_batches(1, &messages).remove(0);
        record::set_base(&mut encoded, base);
        (seq, encoded.into())
    }

    fn reads(load_bytes: usize) -> (Reads, tmpsc::UnboundedReceiver<Command>) {
        let (commands, asked) = tmpsc::unbounded_channel();
        (Reads::new(commands, load_bytes), asked)
    }

    fn key(topic: &str) -> Key {
        (topic.to_owned(), 0)
    }

    /// The loads sent so far.
    fn sent(asked: &mut tmpsc::UnboundedReceiver<Command>) -> Vec<Load> {
        let mut loads = Vec::new();
        while let Ok(command) = asked.try_recv() {
            if let Command::Load(load) = command {
                loads.push(load);
            }
        }
        loads
    }

    /// The values `reads` holds of `key` from `offset`, as many as it has there.
    fn read(reads: &Reads, key: &Key, offset: u64) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let held = reads.read(key, offset, u64::MAX, &mut Budget::new(1000, usize::MAX), &mut out);
        held.then(|| out.iter().map(|m| String::from_utf8_lossy(m.value).into_owned()).collect())
    }

    #[test]
    fn one_read_back_per_partition_is_asked_and_what_it_brings_is_read() {
        let (mut reads, mut asked) = reads(1 << 20);
        let t = key("t");
        assert!(reads.loading(&t, 5, 100));
        assert!(reads.loading(&t, 7, 100), "still coming");
        let loads = sent(&mut asked);
        assert_eq!(loads.len(), 1, "one read back for the partition");
        assert_eq!((loads[0].offset, loads[0].until), (5, 100));
        let result = Ok((0, vec![batch(2, 4, 3), batch(3, 7, 2)]));
        assert_eq!(reads.take(Loaded { load: loads[0].clone(), result }), Some(0));
        assert!(!reads.loading(&t, 5, 100));
        assert_eq!(read(&reads, &t, 5).unwrap(), ["5", "6", "7", "8"]);
        assert_eq!(read(&reads, &t, 9), None, "not held: past what came");
        assert_eq!(read(&reads, &t, 3), None, "not held: before what came");
    }

    #[test]
    fn a_read_after_messages_of_higher_offsets_in_the_same_reply_reads_from_its_own_offset() {
        // A group fetch puts messages due again before the ones it reads on from.
        let (mut reads, mut asked) = reads(1 << 20);
        let (t, u) = (key("t"), key("u"));
        reads.loading(&t, 0, 100);
        reads.loading(&u, 500, 1000);
        for load in sent(&mut asked) {
            let base = load.offset;
            reads.take(Loaded { load, result: Ok((0, vec![batch(1, base, 5)])) });
        }
        let mut out = Vec::new();
        let budget = &mut Budget::new(1000, usize::MAX);
        assert!(reads.read(&u, 500, 1000, budget, &mut out));
        assert!(reads.read(&t, 2, 100, budget, &mut out));
        let offsets: Vec<u64> = out.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [500, 501, 502, 503, 504, 2, 3, 4]);
        // With the budget spent on the first, the second read adds nothing.
        let mut out = Vec::new();
        let budget = &mut Budget::new(5, usize::MAX);
        assert!(reads.read(&u, 500, 1000, budget, &mut out));
        assert!(reads.read(&t, 2, 100, budget, &mut out));
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn an_answer_to_a_read_back_no_longer_asked_for_is_dropped() {
        let (mut reads, mut asked) = reads(1 << 20);
        let t = key("t");
        reads.loading(&t, 0, 100);
        let old = sent(&mut asked).remove(0);
        // The topic is deleted and made again; its first read back is asked again.
        reads.forget(&t);
        reads.loading(&t, 0, 100);
        let new = sent(&mut asked).remove(0);
        assert_ne!(old.id, new.id);
        let stale = Ok((0, vec![batch(1, 0, 3)]));
        assert_eq!(reads.take(Loaded { load: old, result: stale }), None);
        assert_eq!(read(&reads, &t, 0), None, "nothing of the deleted topic is served");
        assert!(reads.take(Loaded { load: new, result: Ok((0, vec![batch(1, 0, 1)])) }).is_some());
        assert_eq!(read(&reads, &t, 0).unwrap(), ["0"]);
    }

    #[test]
    fn reads_back_past_the_most_in_flight_wait_and_go_when_one_ends() {
        let (mut reads, mut asked) = reads(1 << 20);
        let keys: Vec<Key> = (0..MAX_LOADS + 2).map(|n| key(&format!("t{n}"))).collect();
        for key in &keys {
            assert!(reads.loading(key, 0, 10));
        }
        let first = sent(&mut asked);
        assert_eq!(first.len(), MAX_LOADS);
        let done = first[0].clone();
        reads.take(Loaded { load: done, result: Err("no answer".into()) });
        let next = sent(&mut asked);
        assert_eq!(next.len(), 1, "one more goes as one ends");
        assert_eq!(next[0].topic, format!("t{MAX_LOADS}"));
    }

    #[test]
    fn a_failed_read_back_is_told_once_and_the_next_read_asks_again() {
        let (mut reads, mut asked) = reads(1 << 20);
        let t = key("t");
        reads.loading(&t, 3, 10);
        let load = sent(&mut asked).remove(0);
        assert_eq!(reads.take(Loaded { load, result: Err("timed out".into()) }), None);
        assert!(!reads.loading(&t, 3, 10), "the read says why instead");
        assert_eq!(reads.take_failure(&t).as_deref(), Some("timed out"));
        assert_eq!(reads.take_failure(&t), None);
        assert!(reads.loading(&t, 3, 10));
        assert_eq!(sent(&mut asked).len(), 1);
    }

    #[test]
    fn a_range_that_grows_past_twice_a_read_back_keeps_what_the_reader_is_at() {
        // Each message of these batches takes about 10 bytes; a read back asks for 200.
        let (mut reads, mut asked) = reads(200);
        let t = key("t");
        reads.loading(&t, 0, 1000);
        let load = sent(&mut asked).remove(0);
        let batches: Vec<(u64, Bytes)> = (0..8).map(|n| batch(n + 1, n * 10, 10)).collect();
        reads.take(Loaded { load, result: Ok((0, batches)) });
        assert_eq!(read(&reads, &t, 0).unwrap().first().map(String::as_str), Some("0"));
        // A reader near the end has the next part read ahead, after what is held.
        let ahead = sent(&mut asked);
        assert_eq!(ahead.len(), 1);
        assert_eq!((ahead[0].offset, ahead[0].seq), (80, Some(9)));
        let more: Vec<(u64, Bytes)> = (8..16).map(|n| batch(n + 1, n * 10, 10)).collect();
        reads.take(Loaded { load: ahead[0].clone(), result: Ok((0, more)) });
        // What came before offset 80 went, the range staying within twice a read back plus
        // a segment; from 80 on it is all there.
        assert_eq!(read(&reads, &t, 0), None);
        let from_80 = read(&reads, &t, 80).unwrap();
        assert_eq!(from_80.first().map(String::as_str), Some("80"));
        assert_eq!(from_80.last().map(String::as_str), Some("159"));
    }
}
