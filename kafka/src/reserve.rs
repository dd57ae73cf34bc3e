//! The gateway's allocator: large allocations are reserved address space, not memory.
//!
//! The `kafka-protocol` crate sizes a decoded array by the length the peer wrote
//! (`Vec::with_capacity(n)`) before it reads a single element, so a 20-byte request that
//! claims two billion topics asks for about 100 GB at once. The system allocator refuses, and
//! Rust aborts the process on a refused allocation: one request would end every connection.
//! Here an allocation of [`LARGE`] or more is an anonymous `mmap` with `MAP_NORESERVE`, which
//! the kernel grants as address space without committing memory; the decoder then finds the
//! frame too short for the elements it announced, fails, and the mapping is unmapped untouched.
//! Smaller allocations go to the system allocator as usual.

use std::alloc::{GlobalAlloc, Layout, System};

/// The size from which an allocation is mapped rather than allocated: 1 GiB, well above any
/// frame the door reads ([`crate::frame::MAX_FRAME_BYTES`]), so no real allocation is mapped.
pub const LARGE: usize = 1 << 30;

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
