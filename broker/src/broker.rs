//! The broker's state: the topic store, the logical brokers over it, and counters.
//!
//! Commands (`cmd`) act on this; the server owns it and the socket, and keeps the two apart.

use crate::logical::LogicalBrokers;
use crate::store::Store;
use crate::Config;

/// Everything a request can read or change.
#[derive(Debug)]
pub struct Broker {
    /// Every topic's messages, shared by all logical brokers.
    pub store: Store,
    /// The logical brokers and their claims.
    pub brokers: LogicalBrokers,
    /// What the broker has done since it started, for its closing summary.
    pub stats: Stats,
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
}

impl Broker {
    /// A broker serving `store`, configured by `config`.
    pub fn new(store: Store, config: &Config) -> Broker {
        Broker {
            store,
            brokers: LogicalBrokers::new(config.brokers, config.lease),
            stats: Stats::default(),
        }
    }
}
