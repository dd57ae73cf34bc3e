//! A topic: its segments, oldest first, and the offsets they span.

use std::collections::VecDeque;

use protocol::Message;

use super::segment::Segment;

/// How many bytes of records a segment holds before a new one is started.
pub const SEGMENT_BYTES: usize = 4 << 20;

/// One topic's log.
#[derive(Debug, Default)]
pub struct Topic {
    /// The segments, oldest first; never empty once a message was appended.
    segments: VecDeque<Segment>,
    /// The offset the next message gets. Kept apart from the segments so that it survives
    /// retention removing every one of them.
    next_offset: u64,
    /// Messages held.
    messages: u64,
    /// Bytes of keys and values held.
    payload_bytes: u64,
}

impl Topic {
    /// Appends one message stamped `timestamp` and returns its offset.
    pub fn append(&mut self, timestamp: u64, key: Option<&[u8]>, value: &[u8]) -> u64 {
        let len = Segment::record_len(key, value);
        if !self.segments.back().is_some_and(|s| s.fits(len)) {
            self.segments.push_back(Segment::new(self.next_offset, SEGMENT_BYTES.max(len)));
        }
        let segment = self.segments.back_mut().expect("a segment was just ensured");
        let offset = segment.push(timestamp, key, value);
        self.next_offset = offset + 1;
        self.messages += 1;
        self.payload_bytes += (key.map_or(0, <[u8]>::len) + value.len()) as u64;
        offset
    }

    /// The oldest offset still held (equal to [`Topic::next_offset`] when empty).
    pub fn first_offset(&self) -> u64 {
        self.segments.front().map_or(self.next_offset, Segment::base_offset)
    }

    /// The offset the next message gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Messages held.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Bytes of keys and values held.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Pushes onto `out` the messages from `offset` on, at most `max_messages` of them and at
    /// most `max_bytes` of keys and values, but always the first one if there is one. `offset`
    /// must lie in `first_offset()..=next_offset()`.
    pub fn read<'a>(
        &'a self,
        offset: u64,
        max_messages: usize,
        max_bytes: usize,
        out: &mut Vec<Message<'a>>,
    ) {
        let mut bytes = 0;
        // Segments are sorted by base offset: find the one holding `offset`.
        let start = self.segments.partition_point(|s| s.next_offset() <= offset);
        for segment in self.segments.range(start..) {
            for at in offset.max(segment.base_offset())..segment.next_offset() {
                let message = segment.get(at);
                bytes += message.key.map_or(0, <[u8]>::len) + message.value.len();
                if out.len() == max_messages || (!out.is_empty() && bytes > max_bytes) {
                    return;
                }
                out.push(message);
            }
        }
    }

    /// Removes whole segments from the front while `remove` says so of the oldest one, never
    /// the one being written. Returns how many messages were removed.
    pub fn trim_front(&mut self, mut remove: impl FnMut(&Topic, &Segment) -> bool) -> u64 {
        let mut removed = 0;
        while self.segments.len() > 1 && remove(self, &self.segments[0]) {
            let Some(segment) = self.segments.pop_front() else { break };
            let count = segment.next_offset() - segment.base_offset();
            self.messages -= count;
            self.payload_bytes -= segment.payload_bytes();
            removed += count;
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(topic: &Topic, offset: u64, max_messages: usize, max_bytes: usize) -> Vec<String> {
        let mut out = Vec::new();
        topic.read(offset, max_messages, max_bytes, &mut out);
        out.iter().map(|m| format!("{}={}", m.offset, String::from_utf8_lossy(m.value))).collect()
    }

    #[test]
    fn offsets_count_up_from_zero() {
        let mut topic = Topic::default();
        assert_eq!((topic.first_offset(), topic.next_offset()), (0, 0));
        for (i, value) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(topic.append(0, None, value.as_bytes()), i as u64);
        }
        assert_eq!(values(&topic, 0, 10, 1000), ["0=a", "1=b", "2=c"]);
        assert_eq!(values(&topic, 1, 1, 1000), ["1=b"]);
        assert_eq!(values(&topic, 3, 10, 1000), Vec::<String>::new());
        assert_eq!(topic.messages(), 3);
        assert_eq!(topic.payload_bytes(), 3);
    }

    #[test]
    fn max_bytes_limits_a_read_but_never_below_one_message() {
        let mut topic = Topic::default();
        topic.append(0, None, &[b'x'; 10]);
        topic.append(0, None, &[b'y'; 10]);
        assert_eq!(values(&topic, 0, 10, 5).len(), 1);
        assert_eq!(values(&topic, 0, 10, 19).len(), 1);
        assert_eq!(values(&topic, 0, 10, 20).len(), 2);
    }

    #[test]
    fn reads_cross_segment_boundaries() {
        let mut topic = Topic::default();
        let value = vec![b'v'; SEGMENT_BYTES / 3];
        for _ in 0..7 {
            topic.append(0, None, &value);
        }
        assert!(topic.segments.len() >= 3);
        let mut out = Vec::new();
        topic.read(1, 100, usize::MAX, &mut out);
        assert_eq!(out.iter().map(|m| m.offset).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn trimming_removes_whole_old_segments_and_keeps_offsets() {
        let mut topic = Topic::default();
        let value = vec![b'v'; SEGMENT_BYTES / 2];
        for _ in 0..6 {
            topic.append(0, None, &value);
        }
        let removed = topic.trim_front(|t, _| t.messages() > 2);
        assert!(removed > 0);
        assert_eq!(topic.next_offset(), 6);
        assert_eq!(topic.first_offset(), 6 - topic.messages());
        assert_eq!(topic.append(0, None, b"x"), 6);
    }
}
