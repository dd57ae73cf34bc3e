//! The NATS wing: several broker processes sharing one NATS JetStream
//! (`broker --store nats://HOST:PORT[,...]`). It implements the doors of three rooms and
//! nothing else: the store's [`crate::store::Log`] ([`NatsLog`], the topics' streams), the
//! logical brokers' [`crate::logical::Ledger`] ([`NatsClaims`], the claims bucket) and the
//! groups' [`crate::group::SharedStates`] ([`NatsGroups`], the groups bucket). None of those
//! rooms knows it is NATS behind its door.
//!
//! Each partition of a topic is one stream with one subject, each append one JetStream message
//! (a batch) that carries the offset of its first message; a batch is stored only right after
//! the one its offsets follow, so every broker process gives the same offsets. A process holds
//! only the newest messages of each partition and reads older ones back when asked, within
//! `--cache-bytes`. The serving thread never waits on the network: the wing's one connection
//! lives on a tokio runtime on a thread of its own (`runtime`), the only asynchronous code of
//! the broker, which takes commands and hands back events through a channel and a wake pipe.
//! Each concern keeps its serving side and its runtime side in one file: `streams` and `log`
//! (topics; `lane` publishes one partition's batches), `cold` (reading older messages back),
//! `claims`, `groups`; `record` is the layout of a topic's messages in its stream.

mod claims;
mod cold;
mod groups;
mod lane;
mod leaders;
mod log;
mod record;
mod runtime;
mod streams;

pub use claims::NatsClaims;
pub use groups::NatsGroups;
pub use log::NatsLog;

use std::path::PathBuf;
use std::time::Duration;

/// How many bytes of messages a broker process holds by default: its copies of the partitions'
/// newest messages and what it read back of older ones (`--cache-bytes`).
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// Where the JetStream is and how topics are kept there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// The servers, as `nats://HOST:PORT`; the client reconnects to any of them.
    pub servers: Vec<String>,
    /// Copies JetStream keeps of each new topic's stream (1, or 3 on a cluster of three).
    pub replicas: usize,
    /// How long a claim lasts unrenewed: the claims bucket's time to live, the same for every
    /// broker process (the first to create the bucket sets it).
    pub lease: Duration,
    /// Where the copy of each topic is kept in segment files (`--copy-dir`); `None` keeps it
    /// in memory.
    pub copy_dir: Option<PathBuf>,
    /// The most bytes the copies and the messages read back may hold together
    /// (`--cache-bytes`): past it, the oldest go (the streams still hold them).
    pub cache_bytes: u64,
    /// How long start-up keeps trying to reach the servers and their JetStream before it gives
    /// up (`--start-timeout`).
    pub start_timeout: Duration,
}

impl NatsConfig {
    /// Reads `nats://HOST:PORT[,HOST:PORT...]` (each later address may repeat `nats://`).
    ///
    /// # Errors
    /// Not a `nats://` address, or an empty one.
    pub fn parse(text: &str, replicas: usize) -> std::result::Result<NatsConfig, String> {
        let rest = text
            .strip_prefix("nats://")
            .ok_or_else(|| format!("{text:?} is not a nats://HOST:PORT address"))?;
        let servers: Vec<String> = rest
            .split(',')
            .map(|s| s.trim().trim_start_matches("nats://"))
            .map(|s| format!("nats://{s}"))
            .collect();
        if rest.split(',').any(|s| s.trim().trim_start_matches("nats://").is_empty()) {
            return Err(format!("{text:?} names an empty server address"));
        }
        Ok(NatsConfig {
            servers,
            replicas,
            lease: Duration::from_secs(30),
            copy_dir: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
            start_timeout: Duration::from_secs(30),
        })
    }
}

#[cfg(test)]
mod tests;
