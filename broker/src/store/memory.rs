//! The in-memory log: every topic's segments in memory, gone when the broker stops.

use super::log::delegate_log;
use super::{StoreConfig, Topics};

/// A [`super::Log`] kept in memory only.
#[derive(Debug)]
pub struct MemoryLog(Topics);

impl MemoryLog {
    /// An empty log set up as `config` says (its data directory, if any, is ignored).
    pub fn new(config: StoreConfig) -> MemoryLog {
        MemoryLog(Topics::in_memory(config))
    }
}

delegate_log!(MemoryLog);
