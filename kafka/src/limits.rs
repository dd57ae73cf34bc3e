//! What Kafka peers may make the gateway hold: a cap on open connections (each is a thread and
//! a native client), and a budget of request bytes read and not yet answered, shared by every
//! connection, like Kafka's `max.connections` and `queued.max.request.bytes`.
//!
//! A frame's bytes are reserved from the budget as they arrive, never on the word of its size
//! prefix alone: a buffer's room is reserved before it grows, and it grows (doubling) only when
//! the bytes already read fill it, so a connection holds at most twice what it sent. When the
//! budget is spent, a connection waits for others to answer before reading more; the peer sees
//! the slowdown through TCP's flow control. A frame must arrive whole within the request read
//! timeout, waits for the budget included: a connection that stops mid-frame, or that two
//! half-read frames keep waiting on each other, is closed and gives its bytes back, so the
//! waiting always ends. A frame is at most half of the budget (a connection's share), so two
//! connections at a time can always be reading their largest frames.

use std::collections::HashMap;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The default cap on open Kafka connections: an idle one costs a thread that sleeps in a read
/// and a socket, about 15 KiB (README's figures), and no native client; ten thousand idle ones
/// leave room for more.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// File descriptors kept for what is not a Kafka connection (the native clients' sockets, the
/// listener, logs) when the cap is lowered to fit the open file limit.
pub const SPARE_FILES: usize = 1_024;

/// How long a connection must have been idle to be closed for a new one when the cap is
/// reached: long enough that a client between its requests is never taken for an idle one.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(10);

/// The default budget of request bytes held at once by all connections: 256 MiB.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 256 * 1024 * 1024;

/// The default time a frame has to arrive whole once its first byte came: 30 s.
pub const DEFAULT_REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time a connection may stay silent between requests before it is closed:
/// Kafka's `connections.max.idle.ms`, 10 minutes.
pub const DEFAULT_MAX_IDLE: Duration = Duration::from_secs(600);

/// The gateway's limits and what is taken of them now.
#[derive(Debug)]
pub struct Limits {
    /// The most connections served at once.
    max_connections: usize,
    /// Connections served now.
    connections: AtomicUsize,
    /// The budget of request bytes held at once.
    max_queued_bytes: usize,
    /// Bytes of the budget not reserved.
    free: Mutex<usize>,
    /// Signalled when bytes go back to the budget.
    freed: Condvar,
    /// When a refused connection was last logged, and how many were not logged since.
    refused: Mutex<(Option<Instant>, u64)>,
    /// The open connections by number: a handle to close each, when it last finished a
    /// request, and whether one is being answered now.
    open: Mutex<(u64, HashMap<u64, Open>)>,
    /// How long a frame may take to arrive once begun.
    pub request_read_timeout: Duration,
    /// How long a connection may be silent between requests.
    pub max_idle: Duration,
    /// Failed TLS handshakes, logged throttled.
    pub failed_handshakes: Throttle,
}

impl Limits {
    /// Limits of `max_connections` connections and `max_queued_bytes` request bytes.
    pub fn new(max_connections: usize, max_queued_bytes: usize) -> Limits {
        Limits {
            max_connections,
            connections: AtomicUsize::new(0),
            max_queued_bytes,
            free: Mutex::new(max_queued_bytes),
            freed: Condvar::new(),
            refused: Mutex::new((None, 0)),
            open: Mutex::new((0, HashMap::new())),
            request_read_timeout: DEFAULT_REQUEST_READ_TIMEOUT,
            max_idle: DEFAULT_MAX_IDLE,
            failed_handshakes: Throttle::default(),
        }
    }

    /// These limits with other timeouts.
    pub fn with_timeouts(mut self, request_read: Duration, idle: Duration) -> Limits {
        self.request_read_timeout = request_read;
        self.max_idle = idle;
        self
    }

    /// The largest frame a connection may send: no more than half the budget.
    pub fn max_frame_bytes(&self) -> usize {
        (self.max_queued_bytes / 2).min(crate::frame::MAX_FRAME_BYTES)
    }

    /// An empty reservation, to grow with [`Limits::grow`].
    pub fn nothing(self: &Arc<Self>) -> Reservation {
        Reservation { limits: Arc::clone(self), bytes: 0 }
    }

    /// Adds `bytes` to `reservation`, waiting until they are free or `deadline` passes;
    /// whether they were reserved.
    pub fn grow(&self, reservation: &mut Reservation, bytes: usize, deadline: Instant) -> bool {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free < bytes {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            free = self.freed.wait_timeout(free, left).map_or_else(|e| e.into_inner().0, |r| r.0);
        }
        *free -= bytes;
        reservation.bytes += bytes;
        true
    }

    /// Admits one more connection, `stream`. At the cap, the connection idle the longest (at
    /// least [`EVICTABLE_AFTER`], between requests) is closed to make room, so that idle
    /// connections lock out no one; when none is, `stream` is refused: `None` (the refusal is
    /// logged, at most once a second with a count of the others).
    pub fn admit(self: &Arc<Self>, peer: &str, stream: &TcpStream) -> Option<Admitted> {
        let taken = self.connections.fetch_add(1, Ordering::SeqCst);
        if taken >= self.max_connections && !self.evict_one() {
            self.connections.fetch_sub(1, Ordering::SeqCst);
            self.log_refused(peer);
            return None;
        }
        // The descriptor, not a duplicate of it: ten thousand connections would take twice
        // as many descriptors. It stays open while listed: `Admitted` is dropped (and unlisted,
        // under the same lock) before the connection's stream.
        let handle = Some(stream.as_raw_fd());
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.0 += 1;
        let id = open.0;
        open.1.insert(id, Open { handle, since: Instant::now(), busy: false });
        Some(Admitted { limits: Arc::clone(self), id })
    }

    /// Closes the connection idle the longest, if one was idle long enough; whether one was.
    fn evict_one(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let oldest = open
            .1
            .iter()
            .filter(|(_, o)| !o.busy && o.handle.is_some())
            .filter(|(_, o)| now.duration_since(o.since) >= EVICTABLE_AFTER)
            .min_by_key(|(_, o)| o.since)
            .map(|(id, _)| *id);
        let Some(id) = oldest else { return false };
        if let Some(fd) = open.1.get_mut(&id).and_then(|o| o.handle.take()) {
            // Its thread sees the connection end and counts it out.
            // SAFETY: `fd` is an open socket while it is listed (see `admit`); shutting it
            // down touches no memory.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        tracing::info!("closed the Kafka connection idle the longest to make room for a new one");
        true
    }

    /// Logs a refused connection, at most once a second with a count of the others.
    fn log_refused(&self, peer: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match refused.0 {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => refused.1 += 1,
            _ => {
                tracing::warn!(
                    suppressed = refused.1,
                    "refusing the Kafka connection from {peer}: {} connections are open \
                     (--max-connections) and none has been idle for {EVICTABLE_AFTER:?}",
                    self.max_connections
                );
                *refused = (Some(now), 0);
            }
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new(DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_QUEUED_BYTES)
    }
}

/// An open connection, as the cap sees it.
#[derive(Debug)]
struct Open {
    /// Its socket, to shut down; `None` once shut down to make room.
    handle: Option<RawFd>,
    /// When it last finished a request (or opened).
    since: Instant,
    /// Whether a request of it is being answered.
    busy: bool,
}

/// One admitted connection; dropping it makes room for another.
#[derive(Debug)]
pub struct Admitted {
    /// The limits it counts in.
    limits: Arc<Limits>,
    /// Its number among the open connections.
    id: u64,
}

impl Admitted {
    /// Marks the connection as answering a request (`true`) or idle since now (`false`).
    pub fn busy(&self, busy: bool) {
        let mut open = self.limits.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(o) = open.1.get_mut(&self.id) {
            o.busy = busy;
            o.since = Instant::now();
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limits.open.lock().unwrap_or_else(PoisonError::into_inner).1.remove(&self.id);
        self.limits.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bytes taken from the budget for one request, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    /// The limits it was taken from.
    limits: Arc<Limits>,
    /// How many bytes.
    bytes: usize,
}

impl Reservation {
    /// How many bytes it holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut free = self.limits.free.lock().unwrap_or_else(PoisonError::into_inner);
        *free += self.bytes;
        self.limits.freed.notify_all();
    }
}

/// Lines logged at most once a second with a count of the others, as the broker logs its
/// refused logins: a client retrying a wrong password or a bad certificate fills no disk.
#[derive(Debug, Default)]
pub struct Throttle {
    /// When one was last logged, and how many were not logged since.
    last: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// Whether to log now: `Some` with the number held back since the last line, or `None`
    /// (counted) within a second of it.
    pub fn admit(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match last.0 {
            Some(at) if now.duration_since(at) < Duration::from_secs(1) => {
                last.1 += 1;
                None
            }
            _ => {
                let suppressed = last.1;
                *last = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_over_the_cap_are_refused_until_one_closes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let limits = Arc::new(Limits::new(2, 1024));
        let first = limits.admit("a", &stream);
        let second = limits.admit("b", &stream);
        assert!(first.is_some() && second.is_some());
        // Neither has been idle long enough to make room.
        assert!(limits.admit("c", &stream).is_none());
        drop(first);
        assert!(limits.admit("d", &stream).is_some());
    }

    #[test]
    fn a_throttle_lets_one_line_a_second_through_and_counts_the_rest() {
        let throttle = Throttle::default();
        assert_eq!(throttle.admit(), Some(0));
        for _ in 0..50 {
            assert_eq!(throttle.admit(), None);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let next = loop {
            if let Some(suppressed) = throttle.admit() {
                break suppressed;
            }
            assert!(Instant::now() < deadline, "no line let through after a second");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(next >= 50, "{next}");
    }

    #[test]
    fn a_reservation_waits_for_the_bytes_another_gives_back() {
        let limits = Arc::new(Limits::new(10, 100));
        let long = Instant::now() + Duration::from_secs(30);
        let mut held = limits.nothing();
        assert!(limits.grow(&mut held, 80, long));
        // Past its deadline, a wait gives up and reserves nothing.
        let mut late = limits.nothing();
        assert!(!limits.grow(&mut late, 50, Instant::now() + Duration::from_millis(50)));
        let other = Arc::clone(&limits);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let mut reservation = other.nothing();
            assert!(other.grow(&mut reservation, 50, long));
            tx.send(()).expect("send");
            drop(reservation);
        });
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "reserved past the budget");
        drop(held);
        rx.recv_timeout(Duration::from_secs(5)).expect("the bytes given back let it through");
        waiter.join().expect("join");
        assert_eq!(*limits.free.lock().expect("lock"), 100);
    }
}
