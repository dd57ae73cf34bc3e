//! Idle broker connections of one browser session, lent to its request threads.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::security::Credentials;
use crate::{Client, ClientError, Endpoints, Result, Shutdown};

thread_local! {
    /// The address of the browser whose request this thread answers (each request has a
    /// thread of its own, follow streams included): given as `origin` with every broker
    /// request a connection lent on this thread makes, so that the broker's audit log names
    /// the browser, not only the console (PROTOCOL.md, "Who a door speaks for"). Set once per
    /// thread by [`answer_for`] rather than passed to each pool call, since a session's pool,
    /// the anonymous one above all, serves many browsers.
    static ORIGIN: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Makes the connections lent on this thread from now on speak for the browser at `peer`.
pub fn answer_for(peer: SocketAddr) {
    ORIGIN.with(|origin| *origin.borrow_mut() = Some(peer.to_string()));
}

/// Runs `work` with the connections lent meanwhile speaking for no browser: for what the
/// console does of its own accord on a browser's thread (ending another's idle session).
pub fn for_no_one<T>(work: impl FnOnce() -> T) -> T {
    let saved = ORIGIN.with(|origin| origin.borrow_mut().take());
    let result = work();
    ORIGIN.with(|origin| *origin.borrow_mut() = saved);
    result
}

/// `client`, set to speak for the browser this thread answers.
fn lend(mut client: Client) -> Client {
    ORIGIN.with(|origin| client.set_origin(origin.borrow().as_deref()));
    client
}

/// How the console reaches the broker: the same for every session but for the login.
#[derive(Clone)]
pub struct Target {
    /// The broker's endpoints (a new connection starts on the first).
    pub endpoints: Endpoints,
    /// How long a request waits for the broker (`--timeout`).
    pub timeout: Duration,
    /// Cuts the waits short when the console stops.
    pub shutdown: Shutdown,
    /// Whether the broker seems silent, so that a page's action fails at once rather than
    /// waiting the whole timeout to learn what an overview knows already. Shared by every
    /// session: the broker is the same, and a browser's reads and actions may be answered
    /// under different sessions (reads without a cookie share the anonymous one).
    silence: Arc<Mutex<Silence>>,
}

impl Target {
    /// How to reach the broker at `endpoints`, waiting `timeout` for each answer.
    pub fn new(endpoints: Endpoints, timeout: Duration, shutdown: Shutdown) -> Target {
        Target { endpoints, timeout, shutdown, silence: Arc::default() }
    }

    /// The same target with a silence of its own: for a login's trial, which a broker that
    /// spaces failed checks may leave unanswered without being silent to others.
    pub fn apart(&self) -> Target {
        Target { silence: Arc::default(), ..self.clone() }
    }
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

/// What a pool knows of the broker's silence.
#[derive(Default)]
struct Silence {
    /// Until when a request fails at once: the broker left one unanswered lately. The
    /// overview ([`Pool::probe`]) keeps asking meanwhile, and its first answer ends this.
    until: Option<Instant>,
    /// Since when an overview has been waiting for its answer, if one is.
    asking_since: Option<Instant>,
}

/// An overview unanswered this long means the broker is silent (it answers one in
/// milliseconds): actions fail at once from then on.
const SILENT_AFTER: Duration = Duration::from_secs(1);

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
    /// While the broker is silent (it left a request unanswered within the last timeout),
    /// fails at once with [`ClientError::Unreachable`] instead.
    pub fn with<T>(&self, work: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let silent = {
            let silence = self.target.silence.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            silence.until.is_some_and(|until| now < until)
                || silence.asking_since.is_some_and(|since| now - since >= SILENT_AFTER)
        };
        if silent {
            let endpoint = self.target.endpoints.present().to_owned();
            return Err(ClientError::Unreachable { endpoint });
        }
        self.run(work)
    }

    /// As [`Pool::with`], but asks the broker even while it is silent: how the overview
    /// finds out that it answers again (and, waiting long, that it does not).
    ///
    /// # Errors
    /// As [`Pool::with`].
    pub fn probe<T>(&self, work: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        self.target
            .silence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .asking_since
            .get_or_insert_with(Instant::now);
        let result = self.run(work);
        self.target.silence.lock().unwrap_or_else(PoisonError::into_inner).asking_since = None;
        result
    }

    /// Runs `work` with a connection and notes whether the broker answered.
    fn run<T>(&self, work: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut client = self.take()?;
        let result = work(&mut client);
        let silent_until = match &result {
            Err(ClientError::Unreachable { .. }) => Some(Instant::now() + self.target.timeout),
            _ => None,
        };
        self.target.silence.lock().unwrap_or_else(PoisonError::into_inner).until = silent_until;
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
            Some(client) => Ok(lend(client)),
            None => self.fresh(),
        }
    }

    /// A new connection, never one used before.
    ///
    /// # Errors
    /// The endpoint cannot be connected to, or the credentials cannot be set.
    pub fn fresh(&self) -> Result<Client> {
        let target = &self.target;
        let client =
            Client::connect_to(target.endpoints.clone(), target.timeout, self.credentials.clone())?;
        Ok(lend(client.with_shutdown(target.shutdown.clone())))
    }

    /// Keeps `client` for the next request.
    pub fn give_back(&self, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(client);
        }
    }
}
