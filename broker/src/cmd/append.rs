//! `append`: add messages to a topic; needs no claim.
//!
//! An append that names a partition goes there. One that does not is placed message by
//! message, as Kafka's default partitioner places them: a keyed message goes to its key's
//! partition (`protocol::partition_for_key`, Kafka's murmur2, so a key keeps its partition
//! and its order), and every keyless message of the append goes to one partition, the next
//! of the topic's in turn for each append that has any (sticky per append, round robin over
//! appends). The request is then split into one append per partition reached, all or
//! nothing (`Log::append_parts`).

use std::collections::{BTreeMap, HashMap};

use protocol::{partition_for_key, Append, NewMessage, Placement, Response};

use super::{refuse, Context, Outcome};
use crate::broker::Broker;
use crate::store::StoreError;

/// The partition each topic's next keyless append goes to.
#[derive(Debug, Clone, Default)]
pub struct Keyless {
    /// How many keyless appends each topic has had, by name. An entry is made only by an append
    /// the store took, and goes when its topic is deleted, so there are never more than topics
    /// the broker has held at once.
    turns: HashMap<String, u32>,
    /// How many partitions a topic an append makes gets (`--partitions`).
    default_partitions: u32,
}

impl Keyless {
    /// No append placed yet; a topic an append makes gets `default_partitions`.
    pub fn new(default_partitions: u32) -> Keyless {
        Keyless { turns: HashMap::new(), default_partitions }
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
pub fn apply<'a>(broker: &mut Broker, append: Append<'a>, cx: &Context<'_>) -> Outcome<'a> {
    let topic = append.topic;
    let (first, placed) = match append.partition {
        Some(partition) => (
            partition,
            broker
                .store
                .append(topic, partition, &append.messages, cx.now_ms)
                .map(|(first, last)| vec![placement(partition, (first, last))]),
        ),
        None => {
            let partitions = match broker.store.partitions(topic) {
                Ok(partitions) => partitions,
                Err(StoreError::UnknownTopic(_)) => broker.keyless.default_partitions,
                Err(error) => return refuse(error),
            };
            let keyless = partitions > 1 && append.messages.iter().any(|m| m.key.is_none());
            if partitions == 1 || append.messages.iter().all(|m| m.key.is_none()) {
                // One partition reached: the request's messages as they are, without a copy.
                let partition = match partitions {
                    1 => 0,
                    _ => broker.keyless.next(topic, partitions),
                };
                let offsets = broker.store.append(topic, partition, &append.messages, cx.now_ms);
                if keyless && offsets.is_ok() {
                    broker.keyless.advance(topic);
                }
                return finish(
                    broker,
                    &append,
                    partition,
                    offsets.map(|o| vec![placement(partition, o)]),
                );
            }
            let (first, parts) = place(&broker.keyless, topic, partitions, &append.messages);
            let slices: Vec<(u32, &[NewMessage<'_>])> =
                parts.iter().map(|(p, messages)| (*p, messages.as_slice())).collect();
            let placed = broker.store.append_parts(topic, &slices, cx.now_ms).map(|offsets| {
                parts.keys().zip(offsets).map(|(&p, offsets)| placement(p, offsets)).collect()
            });
            if keyless && placed.is_ok() {
                broker.keyless.advance(topic);
            }
            (first, placed)
        }
    };
    finish(broker, &append, first, placed)
}

/// Where messages went in `partition`: their (first, last) `offsets`.
fn placement(partition: u32, (first_offset, last_offset): (u64, u64)) -> Placement {
    Placement { partition, first_offset, last_offset }
}

/// The outcome of `append`, whose first message went to partition `first`, once the store
/// `placed` it, by partition, or refused it.
fn finish<'a>(
    broker: &mut Broker,
    append: &Append<'a>,
    first: u32,
    placed: Result<Vec<Placement>, StoreError>,
) -> Outcome<'a> {
    match placed {
        Ok(placed) => {
            broker.stats.appended += append.messages.len() as u64;
            broker.stats.appended_bytes += crate::metrics::payload_bytes(&append.messages);
            Outcome::Reply(appended(append.topic, first, &placed))
        }
        Err(error) => refuse(error),
    }
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

/// The messages of an append that names no partition, by the partition each goes to, in
/// request order within each; and the first message's partition.
fn place<'m>(
    keyless: &Keyless,
    topic: &str,
    partitions: u32,
    messages: &[NewMessage<'m>],
) -> (u32, BTreeMap<u32, Vec<NewMessage<'m>>>) {
    let sticky = messages.iter().any(|m| m.key.is_none()).then(|| keyless.next(topic, partitions));
    let mut parts: BTreeMap<u32, Vec<NewMessage<'m>>> = BTreeMap::new();
    let mut first = None;
    for message in messages {
        let partition = match message.key {
            Some(key) => partition_for_key(key, partitions),
            None => sticky.unwrap_or_default(),
        };
        first.get_or_insert(partition);
        parts.entry(partition).or_default().push(message.clone());
    }
    (first.unwrap_or_default(), parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn keyed(key: &'static str) -> NewMessage<'static> {
        NewMessage::new(Some(key.as_bytes()), b"v")
    }

    const KEYLESS: NewMessage<'static> = NewMessage::new(None, b"v");

    #[test]
    fn keys_go_to_their_murmur2_partition_and_keyless_appends_take_turns() {
        let mut keyless = Keyless::new(1);
        let messages = [keyed("foobar"), KEYLESS, keyed("user-42"), KEYLESS];
        let (first, parts) = place(&keyless, "t", 50, &messages);
        assert_eq!(first, 16);
        assert_eq!(parts[&16].len(), 1, "foobar goes to 16 of 50, as on Kafka");
        let user = partition_for_key(b"user-42", 50);
        assert!(parts[&user].iter().any(|m| m.key == Some(b"user-42")));
        // Both keyless messages of the append went to one partition: the topic's first turn.
        assert_eq!(parts[&0].iter().filter(|m| m.key.is_none()).count(), 2);
        // Each keyless append taken passes the turn on to the next partition.
        let turns: Vec<u32> = (0..4)
            .map(|_| {
                keyless.advance("t");
                place(&keyless, "t", 3, &[KEYLESS]).0
            })
            .collect();
        assert_eq!(turns, [1, 2, 0, 1]);
        // Another topic has turns of its own, forgotten when it is deleted.
        assert_eq!(place(&keyless, "u", 3, &[KEYLESS]).0, 0);
        keyless.advance("u");
        assert_eq!(place(&keyless, "u", 3, &[KEYLESS]).0, 1);
        keyless.forget("u");
        assert_eq!(place(&keyless, "u", 3, &[KEYLESS]).0, 0);
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
