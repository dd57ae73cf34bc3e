//! The stop signal: set once by Ctrl-C, SIGTERM or a test, and a self-pipe that wakes the serve
//! loop from its poll when it is set; and the reload signal (SIGHUP), a self-pipe of its own.
//!
//! The serve loop blocks in `zmq::poll` until its next deadline, or forever when it has none; a
//! flag alone would be seen only at that deadline. So [`Shutdown::trigger`] also writes one byte
//! to a socket pair whose read end the loop polls beside the ROUTER (the ZeroMQ guide's
//! `interrupt.c` recipe). Setting the flag before writing the byte means the loop, once woken,
//! always sees the flag.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag that says the broker should stop, and the pipe that wakes the loop. Clones share both.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// The flag and the pipe.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Set once, never cleared.
    signalled: AtomicBool,
    /// Written to, one byte, when the flag is set.
    waker: UnixStream,
    /// Polled by the serve loop; readable once the flag is set.
    wakee: UnixStream,
}

impl Shutdown {
    /// A flag not yet set.
    ///
    /// # Errors
    /// The socket pair could not be made (out of file descriptors).
    pub fn new() -> io::Result<Shutdown> {
        let (waker, wakee) = UnixStream::pair()?;
        waker.set_nonblocking(true)?;
        wakee.set_nonblocking(true)?;
        let inner = Inner { signalled: AtomicBool::new(false), waker, wakee };
        Ok(Shutdown { inner: Arc::new(inner) })
    }

    /// Asks the broker to stop, and wakes its loop. Safe to call from a signal-handling thread.
    pub fn trigger(&self) {
        self.inner.signalled.store(true, Ordering::SeqCst);
        // A full pipe already holds a wake-up, so a failed write loses nothing.
        let _ = (&self.inner.waker).write(&[1]);
    }

    /// Whether a stop was asked for.
    pub fn is_signalled(&self) -> bool {
        self.inner.signalled.load(Ordering::SeqCst)
    }

    /// The descriptor to poll: readable once a stop was asked for.
    pub fn fd(&self) -> RawFd {
        self.inner.wakee.as_raw_fd()
    }

    /// Empties the pipe after a wake-up, so that the next poll blocks again.
    pub fn drain(&self) {
        let mut bytes = [0; 64];
        while matches!((&self.inner.wakee).read(&mut bytes), Ok(n) if n > 0) {}
    }
}

/// A request to reread the users file (SIGHUP), and the pipe that wakes the loop for it. Unlike
/// a stop, it is asked for again and again: [`Reload::take`] reads and clears it.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The pipe: written to once per request, drained by `take`.
    inner: Arc<(UnixStream, UnixStream)>,
}

impl Reload {
    /// Nothing asked yet.
    ///
    /// # Errors
    /// The socket pair could not be made (out of file descriptors).
    pub fn new() -> io::Result<Reload> {
        let (waker, wakee) = UnixStream::pair()?;
        waker.set_nonblocking(true)?;
        wakee.set_nonblocking(true)?;
        Ok(Reload { inner: Arc::new((waker, wakee)) })
    }

    /// Asks for a reload, and wakes the loop. Safe to call from a signal-handling thread.
    pub fn trigger(&self) {
        // A full pipe already holds a request, so a failed write loses nothing.
        let _ = (&self.inner.0).write(&[1]);
    }

    /// The descriptor to poll: readable while a reload is asked for.
    pub fn fd(&self) -> RawFd {
        self.inner.1.as_raw_fd()
    }

    /// Whether a reload was asked for since the last call; empties the pipe.
    pub fn take(&self) -> bool {
        let mut bytes = [0; 64];
        let mut asked = false;
        while let Ok(n @ 1..) = (&self.inner.1).read(&mut bytes) {
            asked |= n > 0;
        }
        asked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_is_taken_once_per_request() {
        let reload = Reload::new().unwrap();
        assert!(!reload.take());
        reload.trigger();
        reload.clone().trigger();
        let mut items = [zmq::PollItem::from_fd(reload.fd(), zmq::POLLIN)];
        assert_eq!(zmq::poll(&mut items, 0).unwrap(), 1);
        assert!(reload.take());
        assert!(!reload.take(), "taken");
    }

    #[test]
    fn a_trigger_sets_the_flag_for_every_clone_and_makes_the_pipe_readable() {
        let shutdown = Shutdown::new().unwrap();
        let clone = shutdown.clone();
        let mut items = [zmq::PollItem::from_fd(shutdown.fd(), zmq::POLLIN)];
        assert_eq!(zmq::poll(&mut items, 0).unwrap(), 0);
        assert!(!clone.is_signalled());
        clone.trigger();
        assert!(shutdown.is_signalled());
        assert_eq!(zmq::poll(&mut items, 1000).unwrap(), 1);
        shutdown.drain();
        assert_eq!(zmq::poll(&mut items, 0).unwrap(), 0);
    }
}
