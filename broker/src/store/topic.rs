//! A topic: its partitions, each its own log with offsets from 0 (a [`Partition`]), numbered
//! from 0; their count is fixed at creation, may grow, and never shrinks.

use protocol::{Retention, TopicInfo};

use super::partition::Partition;
use super::storage::{InMemory, Storage};
use super::StoreError;

/// One topic: its partitions, in order, each kept as `S` says.
#[derive(Debug)]
pub struct Topic<S: Storage = InMemory> {
    /// The partitions, partition `p` at index `p`; never empty.
    partitions: Vec<Partition<S>>,
}

impl<S: Storage> Topic<S> {
    /// The topic made of these partitions, partition `p` at index `p`. `partitions` is not
    /// empty: every caller makes at least partition 0.
    pub fn new(partitions: Vec<Partition<S>>) -> Topic<S> {
        debug_assert!(!partitions.is_empty(), "a topic has at least one partition");
        Topic { partitions }
    }

    /// How many partitions it has.
    pub fn count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Its partitions, in order.
    pub fn partitions(&self) -> &[Partition<S>] {
        &self.partitions
    }

    /// Its partitions, in order, to change.
    pub fn partitions_mut(&mut self) -> &mut [Partition<S>] {
        &mut self.partitions
    }

    /// Partition `partition` of this topic, named `name`.
    ///
    /// # Errors
    /// [`StoreError::UnknownPartition`] when the topic has fewer partitions.
    pub fn partition(&self, name: &str, partition: u32) -> Result<&Partition<S>, StoreError> {
        let count = self.count();
        self.partitions
            .get(partition as usize)
            .ok_or_else(|| unknown_partition(name, partition, count))
    }

    /// Partition `partition` of this topic, named `name`, to change.
    ///
    /// # Errors
    /// As [`Topic::partition`].
    pub fn partition_mut(
        &mut self,
        name: &str,
        partition: u32,
    ) -> Result<&mut Partition<S>, StoreError> {
        let count = self.count();
        self.partitions
            .get_mut(partition as usize)
            .ok_or_else(|| unknown_partition(name, partition, count))
    }

    /// Adds partitions after the last one (growing the topic).
    pub fn extend(&mut self, partitions: Vec<Partition<S>>) {
        self.partitions.extend(partitions);
    }

    /// Limits set for this topic, over the store's defaults; every partition has them.
    pub fn retention(&self) -> Retention {
        self.partitions[0].retention()
    }

    /// Committed messages held, over every partition.
    pub fn messages(&self) -> u64 {
        self.partitions.iter().map(Partition::messages).sum()
    }

    /// Bytes of keys and values of the committed messages held, over every partition.
    pub fn payload_bytes(&self) -> u64 {
        self.partitions.iter().map(Partition::payload_bytes).sum()
    }

    /// Bytes of records held, over every partition, as [`Partition::stored_bytes`] counts them.
    pub fn stored_bytes(&self) -> u64 {
        self.partitions.iter().map(Partition::stored_bytes).sum()
    }

    /// Bytes of the broker's own memory its records take, over every partition.
    pub fn memory_bytes(&self) -> usize {
        self.partitions.iter().map(Partition::memory_bytes).sum()
    }

    /// Bytes of its segment files, for a topic on disk.
    pub fn disk_bytes(&self) -> Option<u64> {
        self.partitions.iter().map(Partition::disk_bytes).sum()
    }

    /// Whether this topic sets a retention time of its own.
    pub fn retains_by_time(&self) -> bool {
        self.partitions[0].retains_by_time()
    }

    /// What a listing shows of this topic, named `name`, on a store whose own limits are
    /// `defaults` (see [`info_of`]).
    pub fn info(&self, name: &str, defaults: &Retention) -> TopicInfo {
        info_of(name, self.partitions.iter(), defaults)
    }

    /// Its partitions, in order, given up.
    pub fn into_partitions(self) -> Vec<Partition<S>> {
        self.partitions
    }
}

/// What a listing shows of topic `name` of these partitions, in order: the whole topic's
/// messages and bytes, each partition's offsets, and partition 0's as the topic's own (what a
/// client that knows no partitions reads); and the retention limits that apply, the topic's own
/// over the store's `defaults`.
pub fn info_of<'a, S: Storage + 'a>(
    name: &str,
    partitions: impl Iterator<Item = &'a Partition<S>>,
    defaults: &Retention,
) -> TopicInfo {
    let (mut messages, mut bytes, mut disk_bytes) = (0, 0, Some(0u64));
    let (mut first_offsets, mut next_offsets) = (Vec::new(), Vec::new());
    let mut own = Retention::default();
    for (index, log) in partitions.enumerate() {
        if index == 0 {
            own = log.retention();
        }
        messages += log.messages();
        bytes += log.payload_bytes();
        disk_bytes = disk_bytes.zip(log.disk_bytes()).map(|(a, b)| a + b);
        first_offsets.push(log.first_offset());
        next_offsets.push(log.next_offset());
    }
    TopicInfo {
        name: name.to_owned(),
        partitions: first_offsets.len() as u32,
        messages,
        first_offset: first_offsets.first().copied().unwrap_or_default(),
        next_offset: next_offsets.first().copied().unwrap_or_default(),
        bytes,
        disk_bytes,
        first_offsets,
        next_offsets,
        retention_messages: own.messages.or(defaults.messages),
        retention_bytes: own.bytes.or(defaults.bytes),
        retention_ms: own.ms.or(defaults.ms),
    }
}

/// The refusal of partition `partition` of topic `name`, which has `partitions`.
pub fn unknown_partition(name: &str, partition: u32, partitions: u32) -> StoreError {
    StoreError::UnknownPartition { topic: name.to_owned(), partition, partitions }
}
