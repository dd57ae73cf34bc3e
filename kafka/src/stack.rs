//! Giving back the stack pages an idle connection's thread touched while it answered requests.
//!
//! Each Kafka connection is a thread that sleeps in a read between requests. Answering one
//! touches tens of KiB of its stack (64 KiB in a debug build, measured with `/proc/PID/smaps`),
//! and the kernel keeps touched pages resident until the thread ends: ten thousand connections
//! that each made one request held 640 MB. A thread whose connection has been silent for
//! [`crate::frame::TRIM_AFTER`] gives back the pages below its present frame
//! (`madvise(MADV_DONTNEED)`: they read as zeros, fresh, the next time they are touched), so an
//! idle connection holds only the frames it sleeps in. A busy connection never pays for it.

/// Bytes kept below the present frame: room for the calls this function makes.
const MARGIN: usize = 8 * 1024;

/// The size of a page.
const PAGE: usize = 4096;

/// Gives back the unused part of the calling thread's stack. Does nothing where the thread's
/// stack cannot be found.
pub fn release_unused() {
    let here = 0u8;
    let here = std::ptr::addr_of!(here) as usize;
    // SAFETY: `attr` is initialised by `pthread_getattr_np` before use and destroyed after;
    // the pointers passed are to locals that outlive the calls.
    let (low, size) = unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let mut low: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut low, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if got != 0 {
            return;
        }
        (low as usize, size)
    };
    if here < low || here >= low + size {
        return;
    }
    let bottom = low.next_multiple_of(PAGE);
    let top = here.saturating_sub(MARGIN) & !(PAGE - 1);
    if top > bottom {
        // SAFETY: [bottom, top) is this thread's own stack below the present frame and the
        // margin: no live frame is there, nothing points into it, and the pages are private
        // anonymous memory, which MADV_DONTNEED turns back into zero-filled pages on demand.
        unsafe { libc::madvise(bottom as *mut libc::c_void, top - bottom, libc::MADV_DONTNEED) };
    }
}
