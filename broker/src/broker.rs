//! The broker's state: the topic store, the logical brokers over it, the consumer groups, and
//! counters.
//!
//! Commands (`cmd`) act on this; the server owns it and the socket, and keeps the two apart.

use crate::group::Groups;
use crate::logical::LogicalBrokers;
use crate::store::Store;
use crate::Config;

/// Everything a request can read or change.
#[derive(Debug)]
pub struct Broker {
    /// Every topic's messages, shared by all logical brokers.
    pub store: Box<Store>,
    /// The logical brokers and their claims.
    pub brokers: LogicalBrokers,
    /// Every consumer group's state, shared by all logical brokers as the store is.
    pub groups: Groups,
    /// What the broker has done since it started, for its closing summary.
    pub stats: Stats,
    /// Where the serving loop publishes its metrics, with `--metrics-listen`.
    pub published: Option<std::sync::Arc<crate::metrics::Published>>,
    /// Where an append that names no partition puts its keyless messages.
    pub keyless: crate::cmd::append::Turns,
    /// The idempotent appends stored lately, when the store does not recognise them itself.
    pub remembered: crate::idempotence::Remembered,
    /// How many partitions a topic gets when neither its `create_topic` nor the append that
    /// makes it names a count (`--partitions`).
    pub default_partitions: u32,
}

/// Counters for the summary the broker logs when it stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Requests received, well formed or not.
    pub requests: u64,
    /// Requests answered with an error.
    pub refused: u64,
    /// Messages appended.
    pub appended: u64,
    /// Bytes of keys and values appended.
    pub appended_bytes: u64,
    /// Reads refused because their peer, or all peers, had too many reply bytes unread.
    pub overloaded: u64,
    /// Replies that could not be queued to their peer (gone, or not reading).
    pub dropped_replies: u64,
}

impl Broker {
    /// A broker serving `store`, configured by `config`, with no consumer groups yet (kept in
    /// memory: a broker with a data directory replaces them with [`Groups::open`]).
    pub fn new(store: Box<Store>, config: &Config) -> Broker {
        Broker {
            store,
            brokers: LogicalBrokers::new(config.brokers, config.lease),
            groups: Groups::in_memory(config.group_ack_timeout),
            stats: Stats::default(),
            published: None,
            keyless: crate::cmd::append::Turns::new(config.store.partitions),
            remembered: crate::idempotence::Remembered::default(),
            default_partitions: config.store.partitions,
        }
    }
}
