//! Idle broker connections of one browser session, lent to its request threads.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::security::Credentials;
use crate::{Client, Endpoints, Result, Shutdown};

/// How the console reaches the broker: the same for every session but for the login.
#[derive(Clone)]
pub struct Target {
    /// The broker's endpoints (a new connection starts on the first).
    pub endpoints: Endpoints,
    /// How long a request waits for the broker (`--timeout`).
    pub timeout: Duration,
    /// Cuts the waits short when the console stops.
    pub shutdown: Shutdown,
}

/// Connections to the broker logged in as one user, one lent to each request thread at a time
/// and kept after for the next: a REQ socket serves one exchange at a time, and a fresh one per
/// request would cost a handshake (a password check, with users) every time.
pub struct Pool {
    /// Where the connections go.
    target: Target,
    /// How they log in.
    credentials: Credentials,
    /// Connections not lent out now.
    idle: Mutex<Vec<Client>>,
}

/// At most this many idle connections are kept per session; the rest are closed when given
/// back, so that a session holds a bounded number of sockets.
const MAX_IDLE: usize = 4;

impl Pool {
    /// A pool of connections to `target` logging in with `credentials`.
    pub fn new(target: Target, credentials: Credentials) -> Pool {
        Pool { target, credentials, idle: Mutex::new(Vec::new()) }
    }

    /// Who the connections log in as, for the page.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Runs `work` with a connection, lent for the call.
    ///
    /// # Errors
    /// A new connection cannot be made, or whatever `work` returns.
    pub fn with<T>(&self, work: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut client = self.take()?;
        let result = work(&mut client);
        match &result {
            // A connection the broker did not answer keeps counting its silence: the next
            // request would fail at once. A new one starts afresh.
            Err(e) if e.broker_code().is_none() => {}
            _ => self.give_back(client),
        }
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
            None => self.fresh(),
        }
    }

    /// A new connection, never one used before.
    ///
    /// # Errors
    /// The endpoint cannot be connected to, or the credentials cannot be set.
    pub fn fresh(&self) -> Result<Client> {
        let target = &self.target;
        Ok(Client::connect_to(target.endpoints.clone(), target.timeout, self.credentials.clone())?
            .with_shutdown(target.shutdown.clone()))
    }

    /// Keeps `client` for the next request.
    pub fn give_back(&self, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(client);
        }
    }
}
