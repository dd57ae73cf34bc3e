//! The broker: a ZeroMQ ROUTER serving claimable logical brokers over one topic store.
//!
//! [`server::run`] is the entry point: it takes a bound socket, the state and a stop signal. The
//! `broker` binary only parses its arguments, binds, and calls it.

pub mod audit;
pub mod auth;
pub mod broker;
pub mod clock;
pub mod cmd;
pub mod files;
pub mod group;
pub mod idempotence;
pub mod logical;
pub mod metrics;
pub mod nats;
pub mod outbox;
pub mod preload;
pub mod quiet;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod unread;
pub mod waiting;

use std::time::Duration;

pub use broker::Broker;
pub use shutdown::Shutdown;
pub use store::{Fsync, StoreConfig};

/// How the broker is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// How many logical brokers to host (ids 1 to this).
    pub brokers: u32,
    /// How long a claim lasts without a request.
    pub lease: Duration,
    /// Where and how messages are kept.
    pub store: StoreConfig,
    /// How long a message delivered to a group member waits for its acknowledgement.
    pub group_ack_timeout: Duration,
    /// How many reply bytes clients may leave unread.
    pub unread: unread::Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            brokers: 2,
            lease: Duration::from_secs(30),
            store: StoreConfig::default(),
            group_ack_timeout: group::DEFAULT_ACK_TIMEOUT,
            unread: unread::Limits::default(),
        }
    }
}
