//! Segment buffers made ready ahead of need. Keeping a batch in memory costs more than taking
//! it in: the first write to each fresh 4 KiB page of a segment faults it in and zeroes it,
//! about 2 µs a page on the development machines, so a busy partition that starts a segment
//! pays it on every request until that segment is full. A thread of its own makes the next
//! buffer of a segment's size and writes to each of its pages while the serving thread
//! waits on the network; a partition that fills a segment takes it ([`take`]) instead of
//! allocating one. Only a partition that filled a segment does: a new partition starts with an
//! untouched allocation, so that a thousand quiet topics never hold a thousand touched
//! buffers. At most one buffer waits, so this holds at most one segment's size in memory, and
//! none for segments larger than [`MAX_SPARE`] (a `--segment-bytes` of up to a GiB is allowed:
//! a touched buffer of that size would sit outside `--max-memory`'s count). The buffer asks
//! for huge pages, so that faulting it in takes a few faults rather than one a page.

use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, OnceLock};

/// The buffers of one size, made one at a time by their thread.
#[derive(Debug)]
struct Pool {
    /// The size of the buffers made.
    capacity: usize,
    /// Hands over the buffer made, when the thread has one (a rendezvous: none waits queued).
    ready: Mutex<Receiver<Vec<u8>>>,
}

/// The largest segment whose next buffer is made ahead.
pub const MAX_SPARE: usize = 64 << 20;

/// The pool, for the size of segments asked for first (the broker's `--segment-bytes`);
/// `None` when its thread could not be started.
static POOL: OnceLock<Option<Pool>> = OnceLock::new();

/// A buffer with room for `capacity` bytes, whose pages are already in memory, when one is
/// ready; `None` at once otherwise (the caller allocates). Buffers are made only of the first
/// capacity ever asked for, and only up to [`MAX_SPARE`].
pub fn take(capacity: usize) -> Option<Vec<u8>> {
    if capacity > MAX_SPARE {
        return None;
    }
    POOL.get_or_init(|| Pool::start(capacity)).as_ref()?.take(capacity)
}

impl Pool {
    /// Starts the thread that makes buffers of `capacity` bytes.
    fn start(capacity: usize) -> Option<Pool> {
        let (sender, ready) = mpsc::sync_channel(0);
        let spawned = std::thread::Builder::new().name("spare".into()).spawn(move || loop {
            let mut buffer = Vec::with_capacity(capacity);
            ask_for_huge_pages(&mut buffer);
            // Written, not just reserved: the writes fault the pages in here, on this thread.
            buffer.resize(capacity, 1u8);
            buffer.clear();
            if sender.send(buffer).is_err() {
                return;
            }
        });
        match spawned {
            Ok(_) => Some(Pool { capacity, ready: Mutex::new(ready) }),
            Err(error) => {
                tracing::warn!(%error, "cannot start the thread that readies segment buffers");
                None
            }
        }
    }

    /// The buffer made, if the thread has one ready and it has room for `capacity` bytes.
    fn take(&self, capacity: usize) -> Option<Vec<u8>> {
        if self.capacity != capacity {
            return None;
        }
        self.ready.lock().ok()?.try_recv().ok()
    }
}

/// The size of a huge page on x86-64 and aarch64 (with 4 KiB pages).
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the whole 2 MiB ranges of `buffer`'s allocation with huge pages,
/// where transparent huge pages are on for regions that ask (`madvise`, the usual setting):
/// then writing a fresh 2 MiB takes one fault rather than 512. Measured on batch-1000
/// appends in memory (four alternating pairs of runs): 3.0M msg/s without, 3.4M with. Where
/// the kernel has none to give, or says no, nothing changes.
fn ask_for_huge_pages(buffer: &mut Vec<u8>) {
    let start = buffer.as_mut_ptr() as usize;
    let first = start.next_multiple_of(HUGE_PAGE);
    let end = (start + buffer.capacity()) / HUGE_PAGE * HUGE_PAGE;
    if end > first {
        // SAFETY: the range lies inside the buffer's allocation, which this thread owns, and
        // the advice changes how its pages are backed, never what they hold.
        let asked =
            unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
        if asked != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "no huge pages for segments");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_taken_is_empty_with_the_room_asked_for_and_another_size_gets_none() {
        let capacity = 64 << 10;
        let pool = Pool::start(capacity).unwrap();
        // A buffer is ready once the thread has made one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let buffer = loop {
            if let Some(buffer) = pool.take(capacity) {
                break buffer;
            }
            assert!(std::time::Instant::now() < deadline, "no buffer was made");
            std::thread::yield_now();
        };
        assert!(buffer.is_empty());
        assert!(buffer.capacity() >= capacity);
        assert_eq!(pool.take(capacity + 1), None);
    }

    #[test]
    fn no_buffer_is_made_for_segments_past_the_largest_spare() {
        // Refused before any pool is started: no thread touches a GiB.
        assert_eq!(take(MAX_SPARE + 1), None);
        assert_eq!(take(1 << 30), None);
    }
}
