//! `append`: add messages to a topic; needs no claim.
//!
//! An append that names a partition goes there. One that does not is placed message by
//! message, as Kafka's default partitioner places them: a keyed message goes to its key's
//! partition (`protocol::partition_for_key`, Kafka's murmur2, so a key keeps its partition
//! and its order), and every keyless message of the append goes to one partition, the next
//! of the topic's in turn for each append that has any (sticky per append, round robin over
//! appends). An idempotent producer's append (`sequenced`) puts its keyless messages on the
//! partition its mark gives instead (`Sequenced::keyless_partition`), so that a copy sent
//! through another broker process goes where the first went. The request is then split into
//! one append per partition reached, all or nothing (`Log::append_parts`, or
//! `Log::append_sequenced` for an idempotent producer's).

use std::collections::{BTreeMap, HashMap};

use protocol::{partition_for_key, Append, ErrorCode, NewMessage, Placement, Response};

use super::{refuse, Context, Outcome};
use crate::broker::Broker;
use crate::idempotence::Seen;
use crate::store::StoreError;

/// The partition each topic's next keyless append goes to.
#[derive(Debug, Clone, Default)]
pub struct Turns {
    /// How many keyless appends each topic has had, by name. An entry is made only by an append
    /// the store took, and goes when its topic is deleted, so there are never more than topics
    /// the broker has held at once.
    turns: HashMap<String, u32>,
    /// How many partitions a topic an append makes gets (`--partitions`).
    default_partitions: u32,
}

impl Turns {
    /// No append placed yet; a topic an append makes gets `default_partitions`.
    pub fn new(default_partitions: u32) -> Turns {
        Turns { turns: HashMap::new(), default_partitions }
    }

    /// The partition of `topic`'s next keyless append, among `partitions`.
    fn next(&self, topic: &str, partitions: u32) -> u32 {
        self.turns.get(topic).copied().unwrap_or_default() % partitions.max(1)
    }

    /// Passes `topic`'s turn on, once a keyless append to it was taken.
    fn advance(&mut self, topic: &str) {
        match self.turns.get_mut(topic) {
            Some(turn) => *turn = turn.wrapping_add(1),
            None => {
                self.turns.insert(topic.to_owned(), 1);
            }
        }
    }

    /// Forgets a deleted topic's turns.
    pub fn forget(&mut self, topic: &str) {
        self.turns.remove(topic);
    }
}

/// Appends the batch to its topic, creating the topic if needed, all stamped with this pass's
/// time, to the partition it names or placed as the module says. All or nothing: a refused
/// batch leaves the topic as it was.
///
/// An idempotent producer's append (`sequenced`) that the broker stored already is answered
/// with its first offsets and stored no second time; one still being stored is refused `317`
/// (`crate::idempotence`; a store shared with other broker processes recognises it itself).
pub fn apply<'a>(broker: &mut Broker, append: Append<'a>, cx: &Context<'_>) -> Outcome<'a> {
    let topic = append.topic;
    let remembered = append.sequenced.filter(|_| !broker.store.recognises_resends());
    if let Some(sequenced) = remembered {
        match broker.remembered.seen(topic, sequenced, cx.now) {
            Seen::New => {}
            Seen::InProgress => {
                let reason = format!(
                    "an append of producer {} with sequence {} to topic {topic:?} is being \
                     stored; nothing was done: send it again once it is answered",
                    sequenced.producer, sequenced.sequence
                );
                return Outcome::Reply(Response::error(ErrorCode::InProgress, reason));
            }
            Seen::Stored(first, placed) => {
                return Outcome::Reply(appended(topic, first, &placed));
            }
        }
    }
    let (first, placed) = match store(broker, &append, cx) {
        Ok(stored) => stored,
        Err(error) => return refuse(error),
    };
    if let Some(sequenced) = remembered {
        broker.remembered.stage(topic, sequenced, first, placed.clone(), cx.now);
    }
    broker.stats.appended += append.messages.len() as u64;
    broker.stats.appended_bytes += crate::metrics::payload_bytes(&append.messages);
    Outcome::Reply(appended(topic, first, &placed))
}

/// Stages `append` in the store, to the partition it names or placed as the module says:
/// the partition of its first message, and where its messages went, by partition.
fn store(
    broker: &mut Broker,
    append: &Append<'_>,
    cx: &Context<'_>,
) -> Result<(u32, Vec<Placement>), StoreError> {
    let topic = append.topic;
    let partitions = match append.partition {
        // Every message goes there: no count is needed (the store checks the partition).
        Some(_) => 0,
        None => match broker.store.partitions(topic) {
            Ok(partitions) => partitions,
            Err(StoreError::UnknownTopic(_)) => broker.keyless.default_partitions,
            Err(error) => return Err(error),
        },
    };
    // Where the keyless messages go: the partition named; else one the producer's mark gives,
    // the same through every broker process; else the topic's turn.
    let keyless = match (append.partition, append.sequenced) {
        (Some(partition), _) => Keyless::Named(partition),
        (None, Some(sequenced)) => Keyless::Fixed(sequenced.keyless_partition(partitions)),
        (None, None) => Keyless::Turn(broker.keyless.next(topic, partitions)),
    };
    let parts = place(keyless, partitions, &append.messages);
    let first = parts.first;
    let slices: Vec<(u32, &[NewMessage<'_>])> = match &parts.by_partition {
        // One partition reached: the request's messages as they are, without a copy.
        None => vec![(first, append.messages.as_slice())],
        Some(by_partition) => by_partition.iter().map(|(p, m)| (*p, m.as_slice())).collect(),
    };
    let offsets = match append.sequenced {
        Some(sequenced) => broker.store.append_sequenced(topic, &slices, cx.now_ms, sequenced)?,
        None => broker.store.append_parts(topic, &slices, cx.now_ms)?,
    };
    if matches!(keyless, Keyless::Turn(_)) && parts.keyless {
        broker.keyless.advance(topic);
    }
    let placed = slices.iter().zip(offsets).map(|((p, _), o)| placement(*p, o)).collect();
    Ok((first, placed))
}

/// Where messages went in `partition`: their (first, last) `offsets`.
fn placement(partition: u32, (first_offset, last_offset): (u64, u64)) -> Placement {
    Placement { partition, first_offset, last_offset }
}

/// The `appended` reply for messages `placed`, by partition, the first message's partition
/// being `partition`: its offsets are the reply's, and `placed` lists every partition when
/// there are several.
pub fn appended<'a>(topic: &'a str, partition: u32, placed: &[Placement]) -> Response<'a> {
    let (first_offset, last_offset) = placed
        .iter()
        .find(|p| p.partition == partition)
        .map_or((0, 0), |p| (p.first_offset, p.last_offset));
    let placed = match placed {
        [_] => Vec::new(),
        several => several.to_vec(),
    };
    Response::Appended { topic, partition, first_offset, last_offset, placed }
}

/// Where an append's keyless messages go.
#[derive(Debug, Clone, Copy)]
enum Keyless {
    /// Every message goes to the partition the append names.
    Named(u32),
    /// To this partition, which an idempotent producer's mark gives.
    Fixed(u32),
    /// To the topic's turn, this partition, passed on once the append is taken.
    Turn(u32),
}

/// An append's messages, by the partition each goes to.
struct Parts<'m> {
    /// The partition of the first message.
    first: u32,
    /// Whether any message is keyless.
    keyless: bool,
    /// The messages of each partition, in request order; `None` when all go to `first`.
    by_partition: Option<BTreeMap<u32, Vec<NewMessage<'m>>>>,
}

/// Where each of `messages` goes among `partitions`: a keyed one to its key's partition, a
/// keyless one as `keyless` says (every one, when it names the partition).
fn place<'m>(keyless: Keyless, partitions: u32, messages: &[NewMessage<'m>]) -> Parts<'m> {
    let has_keyless = messages.iter().any(|m| m.key.is_none());
    let sticky = match keyless {
        Keyless::Named(partition) => {
            return Parts { first: partition, keyless: has_keyless, by_partition: None };
        }
        _ if partitions <= 1 => return Parts { first: 0, keyless: false, by_partition: None },
        Keyless::Fixed(partition) | Keyless::Turn(partition) => partition,
    };
    let partition_of = |message: &NewMessage<'_>| match message.key {
        Some(key) => partition_for_key(key, partitions),
        None => sticky,
    };
    let first = messages.first().map_or(sticky, partition_of);
    if messages.iter().all(|m| partition_of(m) == first) {
        return Parts { first, keyless: has_keyless, by_partition: None };
    }
    let mut by_partition: BTreeMap<u32, Vec<NewMessage<'m>>> = BTreeMap::new();
    for message in messages {
        by_partition.entry(partition_of(message)).or_default().push(message.clone());
    }
    Parts { first, keyless: has_keyless, by_partition: Some(by_partition) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn keyed(key: &'static str) -> NewMessage<'static> {
        NewMessage::new(Some(key.as_bytes()), b"v")
    }

    const KEYLESS: NewMessage<'static> = NewMessage::new(None, b"v");

    /// Where `messages` go, the keyless ones to `keyless`: the first message's partition, and
    /// each partition's messages.
    fn parts(
        keyless: Keyless,
        partitions: u32,
        messages: &[NewMessage<'static>],
    ) -> (u32, BTreeMap<u32, Vec<NewMessage<'static>>>) {
        let parts = place(keyless, partitions, messages);
        let by_partition = parts
            .by_partition
            .unwrap_or_else(|| BTreeMap::from([(parts.first, messages.to_vec())]));
        (parts.first, by_partition)
    }

    #[test]
    fn keys_go_to_their_murmur2_partition_and_keyless_appends_take_turns() {
        let mut turns = Turns::new(1);
        let messages = [keyed("foobar"), KEYLESS, keyed("user-42"), KEYLESS];
        let (first, parts) = parts(Keyless::Turn(turns.next("t", 50)), 50, &messages);
        assert_eq!(first, 16);
        assert_eq!(parts[&16].len(), 1, "foobar goes to 16 of 50, as on Kafka");
        let user = partition_for_key(b"user-42", 50);
        assert!(parts[&user].iter().any(|m| m.key == Some(b"user-42")));
        // Both keyless messages of the append went to one partition: the topic's first turn.
        assert_eq!(parts[&0].iter().filter(|m| m.key.is_none()).count(), 2);
        // Each keyless append taken passes the turn on to the next partition.
        let next =
            |turns: &Turns, topic| place(Keyless::Turn(turns.next(topic, 3)), 3, &[KEYLESS]).first;
        let taken: Vec<u32> = (0..4)
            .map(|_| {
                turns.advance("t");
                next(&turns, "t")
            })
            .collect();
        assert_eq!(taken, [1, 2, 0, 1]);
        // Another topic has turns of its own, forgotten when it is deleted.
        assert_eq!(next(&turns, "u"), 0);
        turns.advance("u");
        assert_eq!(next(&turns, "u"), 1);
        turns.forget("u");
        assert_eq!(next(&turns, "u"), 0);
    }

    #[test]
    fn an_idempotent_appends_keyless_messages_go_where_its_mark_says_through_any_broker() {
        let mark = |sequence| protocol::Sequenced { producer: 7, sequence };
        // (7 + sequence) mod 3: the producer's appends go round the partitions.
        let reached: Vec<u32> = (0..4).map(|s| mark(s).keyless_partition(3)).collect();
        assert_eq!(reached, [1, 2, 0, 1]);
        let wraps = protocol::Sequenced { producer: u64::MAX, sequence: 2 };
        assert_eq!(wraps.keyless_partition(3), 1, "the sum is taken modulo 2^64");
        let messages = [KEYLESS, keyed("foobar")];
        let (first, parts) = parts(Keyless::Fixed(mark(3).keyless_partition(3)), 3, &messages);
        assert_eq!(first, 1);
        assert_eq!(parts[&1], vec![KEYLESS]);
        assert_eq!(parts[&partition_for_key(b"foobar", 3)], vec![keyed("foobar")]);
        assert_eq!(mark(5).keyless_partition(1), 0);
    }

    #[test]
    fn an_idempotent_append_sent_again_is_answered_with_its_first_offsets_and_stored_once() {
        let store = StoreConfig { partitions: 2, ..StoreConfig::default() };
        let config = crate::Config { store: store.clone(), ..crate::Config::default() };
        let mut broker = Broker::new(crate::store::Store::in_memory(store), &config);
        let cx = Context { now: std::time::Instant::now(), now_ms: 1, peer: "tcp://127.0.0.1:1" };
        let sequenced = Some(protocol::Sequenced { producer: 9, sequence: 4 });
        let append =
            || Append { topic: "t", messages: vec![KEYLESS, KEYLESS], partition: None, sequenced };
        let first = apply(&mut broker, append(), &cx);
        assert!(
            matches!(
                first,
                Outcome::Reply(Response::Appended {
                    partition: 1,
                    first_offset: 0,
                    last_offset: 1,
                    ..
                })
            ),
            "{first:?}"
        );
        // Sent again before its commit settled: refused, nothing staged.
        match apply(&mut broker, append(), &cx) {
            Outcome::Reply(Response::Error { code: ErrorCode::InProgress, .. }) => {}
            other => panic!("{other:?}"),
        }
        let ticket = broker.store.commit(cx.now, cx.now_ms);
        broker.remembered.committing(ticket);
        for settled in broker.store.wait_settled() {
            broker.remembered.settle(settled.ticket, &settled.failures);
        }
        let again = apply(&mut broker, append(), &cx);
        assert!(
            matches!(
                again,
                Outcome::Reply(Response::Appended {
                    partition: 1,
                    first_offset: 0,
                    last_offset: 1,
                    ..
                })
            ),
            "{again:?}"
        );
        broker.store.commit_and_wait(cx.now, cx.now_ms);
        assert_eq!(broker.store.offsets("t", 1).map(|o| o.1), Ok(2), "stored once");
        assert_eq!(broker.stats.appended, 2);
    }

    #[test]
    fn only_appends_the_store_takes_pass_a_turn_on_so_refused_ones_leave_nothing() {
        let store = StoreConfig { partitions: 3, ..StoreConfig::default() };
        let config = crate::Config { store: store.clone(), ..crate::Config::default() };
        let mut broker = Broker::new(crate::store::Store::in_memory(store), &config);
        let cx = Context { now: std::time::Instant::now(), now_ms: 1, peer: "tcp://127.0.0.1:1" };
        let append_to =
            |topic| Append { topic, messages: vec![KEYLESS], partition: None, sequenced: None };
        for topic in ["", " bad", "a/../b\0"] {
            let refused = apply(&mut broker, append_to(topic), &cx);
            assert!(matches!(refused, Outcome::Reply(Response::Error { .. })), "{refused:?}");
        }
        assert!(broker.keyless.turns.is_empty(), "{:?}", broker.keyless.turns);
        let mut reached = Vec::new();
        for _ in 0..3 {
            match apply(&mut broker, append_to("t"), &cx) {
                Outcome::Reply(Response::Appended { partition, .. }) => reached.push(partition),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(reached, [0, 1, 2], "a new topic of three partitions, taken in turn");
        assert_eq!(broker.keyless.turns.len(), 1);
    }

    #[test]
    fn an_append_reaching_several_partitions_lists_them_all() {
        let reply = appended("t", 2, &[placement(0, (5, 6)), placement(2, (9, 9))]);
        let Response::Appended { partition, first_offset, last_offset, placed, .. } = reply else {
            panic!("{reply:?}")
        };
        assert_eq!((partition, first_offset, last_offset), (2, 9, 9));
        assert_eq!(placed.len(), 2);
        assert_eq!((placed[0].partition, placed[0].first_offset, placed[0].last_offset), (0, 5, 6));
        let one = [placement(0, (5, 6))];
        let Response::Appended { placed, .. } = appended("t", 0, &one) else { panic!() };
        assert!(placed.is_empty(), "one partition: no list");
    }
}
