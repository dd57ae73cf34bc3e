//! The native clients the gateway's connections share: a connection takes one for a request
//! and gives it back after, so that an idle Kafka connection holds no ZeroMQ socket, and ten
//! thousand of them cost the broker and libzmq nothing (a libzmq context allows 1,023 sockets;
//! one client per connection ran out near 340 connections).
//!
//! A pool makes clients as they are needed, as siblings of its first (one ZeroMQ context), up
//! to [`MAX_CLIENTS`]; past it a request waits for a client to come back, at most
//! [`TAKE_WAIT`]. The gateway has one pool for connections without a login, and one per user
//! for SASL logins, since a client is logged in as its user.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use client::Client;

/// The most clients a pool makes: a request in flight each, a held fetch included.
pub const MAX_CLIENTS: usize = 256;

/// How long a request waits for a client when all are lent.
pub const TAKE_WAIT: Duration = Duration::from_secs(30);

/// Native clients to lend, by request.
pub struct Pool {
    /// What new clients are made from (siblings share its ZeroMQ context); never lent.
    origin: Mutex<Client>,
    /// The clients not lent, and how many were made in all.
    idle: Mutex<(Vec<Client>, usize)>,
    /// Signalled when a client comes back.
    returned: Condvar,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let made = self.idle.lock().map(|idle| idle.1).unwrap_or_default();
        f.debug_struct("Pool").field("made", &made).finish()
    }
}

impl Pool {
    /// A pool of siblings of `origin`.
    pub fn new(origin: Client) -> Pool {
        Pool {
            origin: Mutex::new(origin),
            idle: Mutex::new((Vec::new(), 0)),
            returned: Condvar::new(),
        }
    }

    /// Lends a client: an idle one, a new one while fewer than [`MAX_CLIENTS`] were made, or
    /// the first given back within [`TAKE_WAIT`].
    ///
    /// # Errors
    /// A message saying why none could be had.
    pub fn take(&self) -> Result<Client, String> {
        let deadline = Instant::now() + TAKE_WAIT;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(client) = idle.0.pop() {
                return Ok(client);
            }
            if idle.1 < MAX_CLIENTS {
                idle.1 += 1;
                drop(idle);
                let made = self.origin.lock().unwrap_or_else(PoisonError::into_inner).sibling();
                return made.map_err(|e| {
                    self.idle.lock().unwrap_or_else(PoisonError::into_inner).1 -= 1;
                    format!("cannot open a native client: {e:#}")
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "all {MAX_CLIENTS} native clients stayed busy for {TAKE_WAIT:?}"
                ));
            }
            idle =
                self.returned.wait_timeout(idle, left).map_or_else(|e| e.into_inner().0, |r| r.0);
        }
    }

    /// Takes `client` back to lend again, speaking for no one until a connection sets whom
    /// it speaks for (`Client::set_origin`): the next borrower may be another's.
    pub fn give(&self, mut client: Client) {
        client.set_origin(None);
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).0.push(client);
        self.returned.notify_one();
    }

    /// Adds `client`, made elsewhere (a login's), when there is room; else it is closed.
    pub fn adopt(&self, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.1 < MAX_CLIENTS {
            idle.1 += 1;
            idle.0.push(client);
            drop(idle);
            self.returned.notify_one();
        }
    }

    /// How many clients were made, lent or not.
    pub fn made(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).1
    }
}
