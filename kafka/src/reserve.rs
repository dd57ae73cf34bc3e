//! The gateway's allocator: large allocations are reserved address space, not memory.
//!
//! The `kafka-protocol` crate sizes a decoded array by the length the peer wrote
//! (`Vec::with_capacity(n)`) before it reads a single element, so a 20-byte request that
//! claims two billion topics asks for about 100 GB at once. The system allocator refuses, and
//! Rust aborts the process on a refused allocation: one request would end every connection.
//! Here an allocation of [`LARGE`] or more is an anonymous `mmap` with `MAP_NORESERVE`, which
//! the kernel grants as address space without committing memory; the decoder then finds the
//! frame too short for the elements it announced, fails, and the mapping is unmapped untouched.
//! Smaller allocations go to the system allocator as usual, which [`keep_freed_memory`] asks
//! to keep what a request freed for the next one.

use std::alloc::{GlobalAlloc, Layout, System};

/// The size from which an allocation is mapped rather than allocated: 1 GiB, well above any
/// frame the door reads ([`crate::frame::MAX_FRAME_BYTES`]), so no real allocation is mapped.
pub const LARGE: usize = 1 << 30;

/// The largest block the system allocator serves from its heaps rather than mapping it on its
/// own (glibc's `M_MMAP_THRESHOLD`): above the frames Kafka clients send (librdkafka's
/// `message.max.bytes`, Java's `max.request.size`: 1 MiB by default) and the copies a Produce
/// makes of them.
pub const HEAP_BLOCKS_UP_TO: usize = 8 << 20;

/// The free memory at the top of a heap the system allocator keeps for the next blocks rather
/// than giving it back at once (glibc's `M_TRIM_THRESHOLD`).
pub const KEEP_FREED: usize = 32 << 20;

/// Has the system allocator (glibc's) keep the blocks one Produce takes for the next one: the
/// frame (about 1 MiB from librdkafka under load), its messages, ZeroMQ's copy of the append.
/// Left to itself it mapped such blocks anew for each request and unmapped them after, or gave
/// back the top of its heap, so that the kernel faulted in and zeroed every page of every
/// request: `exc_page_fault`, `clear_page_erms`, `unmap_page_range` and their kin took a quarter
/// of the gateway's CPU under `kcat -P` in `perf`. What stays is bounded: the blocks the
/// request budget admits at its peak, and [`KEEP_FREED`] free at the top of each heap.
/// Called once at start, before other threads run. Elsewhere than glibc it does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let threshold = libc::c_int::try_from(HEAP_BLOCKS_UP_TO).unwrap_or(libc::c_int::MAX);
        let keep = libc::c_int::try_from(KEEP_FREED).unwrap_or(libc::c_int::MAX);
        // SAFETY: `mallopt` sets two of the allocator's parameters; no pointer is passed, and
        // setting them before other threads allocate is what its manual asks.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
            libc::mallopt(libc::M_TRIM_THRESHOLD, keep);
        }
    }
}

/// The allocator; install with `#[global_allocator]`.
#[derive(Debug, Default)]
pub struct Reserve;

// SAFETY: large blocks come from `mmap`, which returns page-aligned (4 KiB) memory or
// MAP_FAILED; layouts with a larger alignment go to `System`. Each block is freed by the same
// path that made it, chosen again from its layout, which `dealloc` receives unchanged.
unsafe impl GlobalAlloc for Reserve {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < LARGE || layout.align() > 4096 {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: an anonymous private mapping; no pointer is passed in.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            address.cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < LARGE || layout.align() > 4096 {
            // SAFETY: `ptr` came from `System.alloc` with this layout.
            unsafe { System.dealloc(ptr, layout) };
        } else {
            // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `alloc`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < LARGE && new_size < LARGE {
            // SAFETY: forwarded with the caller's guarantees; both sizes stay with `System`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Crossing the threshold: a new block of the new size, the bytes copied, the old freed.
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` has a non-zero size.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller of the two sizes and distinct.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
