//! The in-memory log: every topic's segments in memory, gone when the broker stops.

use super::log::delegate_log;
use super::{InMemory, StoreConfig, Topics};

/// A [`super::Log`] kept in memory only.
#[derive(Debug)]
pub struct MemoryLog(Topics<InMemory>);

impl MemoryLog {
    /// An empty log set up as `config` says (its data directory, if any, is ignored).
    pub fn new(config: StoreConfig) -> MemoryLog {
        MemoryLog(Topics::in_memory(config))
    }
}

delegate_log!(MemoryLog);

/// The ceiling of an in-memory store when none is given: half of the machine's memory
/// (`MemTotal` of `/proc/meminfo`), so that appends are refused with `313 storage_full` well
/// before the machine runs out and kills the broker. `None` where the machine's memory cannot
/// be read.
pub fn default_max_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kb: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb.saturating_mul(1024) / 2)
}
