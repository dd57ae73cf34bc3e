//! Idle broker connections shared by the console's request threads.

use std::sync::{Mutex, PoisonError};

use crate::{Client, Result};

/// Connections to the broker, one lent to each request thread at a time and kept after for
/// the next: a REQ socket serves one exchange at a time, and a fresh one per request would
/// cost a handshake (a password check, with users) every time.
pub struct Pool {
    /// The connection new ones are made from ([`Client::sibling`]): same endpoint, login.
    base: Mutex<Client>,
    /// Connections not lent out now.
    idle: Mutex<Vec<Client>>,
}

/// At most this many idle connections are kept; the rest are closed when given back.
const MAX_IDLE: usize = 16;

impl Pool {
    /// A pool making its connections like `base`.
    pub fn new(base: Client) -> Pool {
        Pool { base: Mutex::new(base), idle: Mutex::new(Vec::new()) }
    }

    /// Runs `work` with a connection, lent for the call.
    ///
    /// # Errors
    /// A new connection cannot be made, or whatever `work` returns.
    pub fn with<T>(&self, work: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut client = self.take()?;
        let result = work(&mut client);
        self.give_back(client);
        result
    }

    /// An idle connection, or a new one.
    ///
    /// # Errors
    /// A new connection cannot be made.
    pub fn take(&self) -> Result<Client> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match idle {
            Some(client) => Ok(client),
            None => self.base.lock().unwrap_or_else(PoisonError::into_inner).sibling(),
        }
    }

    /// Keeps `client` for the next request.
    pub fn give_back(&self, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(client);
        }
    }
}
