//! The topic store: every topic's log, shared by all logical brokers.
//!
//! The store knows nothing of sockets, claims or envelopes, so it is tested on its own. Each
//! message is stored once; every logical broker serves the same store, which is how an append
//! reaches all of them in the same order and their offsets agree.

mod segment;
mod topic;

use std::collections::BTreeMap;

use protocol::{validate_topic_name, InvalidTopicName, Message, NewMessage, TopicInfo};
use thiserror::Error;

pub use topic::Topic;

/// Why the store refused an operation. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// No topic has this name.
    #[error("no topic is named {0:?}")]
    UnknownTopic(String),
    /// The topic exists already.
    #[error("a topic named {0:?} exists already")]
    TopicExists(String),
    /// The name breaks the naming rules.
    #[error("{0:?} is not a valid topic name: {1}")]
    InvalidTopicName(String, InvalidTopicName),
    /// A message is over the size limit.
    #[error("message {index} of the batch is {size} bytes; the limit is {limit}")]
    MessageTooLarge {
        /// Its position in the batch, from 0.
        index: usize,
        /// Its key and value bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The offset is outside what the topic holds.
    #[error("offset {offset} is outside {first}..={next}, the offsets topic {topic:?} can serve")]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The offset asked for.
        offset: u64,
        /// The oldest offset held.
        first: u64,
        /// The next offset to be given.
        next: u64,
    },
}

/// The result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Every topic, by name.
#[derive(Debug)]
pub struct Store {
    /// The topics, ordered by name so that listings come out sorted.
    topics: BTreeMap<String, Topic>,
    /// The most bytes of key and value one message may have.
    max_message_bytes: usize,
}

/// What the store holds, in sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Topics.
    pub topics: u64,
    /// Messages over all topics.
    pub messages: u64,
    /// Bytes of keys and values over all topics.
    pub bytes: u64,
}

impl Store {
    /// An empty store that refuses messages over `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Store {
        Store { topics: BTreeMap::new(), max_message_bytes }
    }

    /// Appends `messages` to `topic`, creating it if needed, all stamped `timestamp`.
    /// Returns the first and last offsets given.
    ///
    /// # Errors
    /// An invalid name or an oversized message refuses the whole batch.
    pub fn append(
        &mut self,
        topic: &str,
        messages: &[NewMessage<'_>],
        timestamp: u64,
    ) -> Result<(u64, u64)> {
        check_name(topic)?;
        let limit = self.max_message_bytes;
        if let Some((index, size)) =
            messages.iter().map(NewMessage::size).enumerate().find(|&(_, size)| size > limit)
        {
            return Err(StoreError::MessageTooLarge { index, size, limit });
        }
        let log = self.topics.entry(topic.to_owned()).or_default();
        let first = log.next_offset();
        for message in messages {
            log.append(timestamp, message.key, message.value);
        }
        Ok((first, log.next_offset() - 1))
    }

    /// Reads up to `max_messages` messages and `max_bytes` bytes of `topic` from `offset` into
    /// `out` (always at least one message when one exists). Returns the topic's next offset.
    ///
    /// # Errors
    /// An invalid name, an unknown topic, or an offset below the first held or past the next to be given.
    pub fn read<'a>(
        &'a self,
        topic: &str,
        offset: u64,
        max_messages: usize,
        max_bytes: usize,
        out: &mut Vec<Message<'a>>,
    ) -> Result<u64> {
        check_name(topic)?;
        let log = self.topic(topic)?;
        let (first, next) = (log.first_offset(), log.next_offset());
        if offset < first || offset > next {
            return Err(StoreError::OffsetOutOfRange {
                topic: topic.to_owned(),
                offset,
                first,
                next,
            });
        }
        log.read(offset, max_messages, max_bytes, out);
        Ok(next)
    }

    /// Creates an empty topic.
    ///
    /// # Errors
    /// An invalid name, or a topic of that name exists.
    pub fn create(&mut self, topic: &str) -> Result<()> {
        check_name(topic)?;
        if self.topics.contains_key(topic) {
            return Err(StoreError::TopicExists(topic.to_owned()));
        }
        self.topics.insert(topic.to_owned(), Topic::default());
        Ok(())
    }

    /// Removes a topic and its messages.
    ///
    /// # Errors
    /// An invalid name or an unknown topic.
    pub fn delete(&mut self, topic: &str) -> Result<()> {
        check_name(topic)?;
        self.topics.remove(topic).map(drop).ok_or_else(|| StoreError::UnknownTopic(topic.into()))
    }

    /// One topic's log.
    ///
    /// # Errors
    /// An unknown topic.
    pub fn topic(&self, topic: &str) -> Result<&Topic> {
        self.topics.get(topic).ok_or_else(|| StoreError::UnknownTopic(topic.to_owned()))
    }

    /// Every topic with its offsets, ordered by name.
    pub fn list(&self) -> Vec<TopicInfo> {
        self.topics
            .iter()
            .map(|(name, log)| TopicInfo {
                name: name.clone(),
                messages: log.messages(),
                first_offset: log.first_offset(),
                next_offset: log.next_offset(),
                bytes: log.payload_bytes(),
            })
            .collect()
    }

    /// What the store holds, in sum.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals { topics: self.topics.len() as u64, ..Totals::default() };
        for log in self.topics.values() {
            totals.messages += log.messages();
            totals.bytes += log.payload_bytes();
        }
        totals
    }
}

fn check_name(topic: &str) -> Result<()> {
    validate_topic_name(topic).map_err(|e| StoreError::InvalidTopicName(topic.to_owned(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(value: &[u8]) -> NewMessage<'_> {
        NewMessage { key: None, value }
    }

    #[test]
    fn append_creates_the_topic_and_read_returns_it() {
        let mut store = Store::new(100);
        assert_eq!(store.append("t", &[message(b"a"), message(b"b")], 7), Ok((0, 1)));
        assert_eq!(store.append("t", &[message(b"c")], 8), Ok((2, 2)));
        let mut out = Vec::new();
        assert_eq!(store.read("t", 1, 10, 100, &mut out), Ok(3));
        assert_eq!(
            out.iter().map(|m| (m.offset, m.value, m.timestamp)).collect::<Vec<_>>(),
            [(1, &b"b"[..], 7), (2, &b"c"[..], 8)]
        );
        assert_eq!(store.totals(), Totals { topics: 1, messages: 3, bytes: 3 });
    }

    #[test]
    fn refused_operations_change_nothing() {
        let mut store = Store::new(4);
        store.append("t", &[message(b"a")], 0).unwrap();
        let too_large = store.append("t", &[message(b"ok"), message(b"12345")], 0);
        assert_eq!(too_large, Err(StoreError::MessageTooLarge { index: 1, size: 5, limit: 4 }));
        assert!(matches!(
            store.append("", &[message(b"a")], 0),
            Err(StoreError::InvalidTopicName(..))
        ));
        assert_eq!(store.create("t"), Err(StoreError::TopicExists("t".into())));
        assert_eq!(store.delete("u"), Err(StoreError::UnknownTopic("u".into())));
        assert_eq!(store.list().len(), 1);
        assert_eq!(store.totals().messages, 1);
    }

    #[test]
    fn reads_outside_the_log_are_refused_but_the_end_is_not() {
        let mut store = Store::new(100);
        store.append("t", &[message(b"a")], 0).unwrap();
        let mut out = Vec::new();
        assert_eq!(store.read("t", 1, 10, 100, &mut out), Ok(1));
        assert!(out.is_empty());
        assert!(matches!(
            store.read("t", 2, 10, 100, &mut out),
            Err(StoreError::OffsetOutOfRange { first: 0, next: 1, .. })
        ));
        assert_eq!(
            store.read("nope", 0, 10, 100, &mut out),
            Err(StoreError::UnknownTopic("nope".into()))
        );
    }

    #[test]
    fn create_then_delete() {
        let mut store = Store::new(100);
        store.create("Hola mundo").unwrap();
        assert_eq!(store.list()[0].name, "Hola mundo");
        assert_eq!(store.list()[0].next_offset, 0);
        store.delete("Hola mundo").unwrap();
        assert!(store.list().is_empty());
    }
}
