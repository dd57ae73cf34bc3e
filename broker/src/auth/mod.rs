//! Who may connect and what each may do: authentication through ZAP (PLAIN or CURVE, with the
//! users file) and the permission check every decoded request passes before it is applied.
//!
//! The serve loop sees one door, [`Guard`]: it secures the listening socket, answers the ZAP
//! handshakes libzmq asks about (on a thread of its own: a password check costs an Argon2 hash,
//! which must not hold up the requests of users already logged in), and says for each request
//! whether its user may make it.

pub mod admission;
pub mod keys;
pub mod permissions;
pub mod users;
pub mod zap;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Instant;

use protocol::{excerpt, ErrorCode, Request, Response};
use thiserror::Error;
use tracing::{info, warn};

use crate::logical::LogicalBrokers;
use crate::metrics::Login as Outcome;
use crate::quiet::{Shown, Throttle};
use crate::shutdown::Reload;
use admission::{Admission, Overflow};
use keys::{encode_z85, ServerKeys};
use permissions::Scope;
use users::{UserId, Users};
use zap::{Credentials, Verdict, ZAP_ENDPOINT};

/// The ZAP domain the broker's socket asks in.
const ZAP_DOMAIN: &str = "broker";

/// Password checks that run at once, each on a thread of its own: an Argon2 check takes a core
/// for about 25 ms, and the machines the broker is measured on have two.
const CHECKERS: usize = 2;

/// Where the checking threads send their verdicts back to the ZAP handler.
const CHECKED_ENDPOINT: &str = "inproc://broker-zap-checked";

/// Why security could not be set up.
#[derive(Debug, Error)]
pub enum AuthError {
    /// A users or key file cannot be read or is wrong: which file, which line (0 for the whole
    /// file), and why.
    #[error("{file}{}: {reason}", if *line > 0 { format!(", line {line}") } else { String::new() })]
    File {
        /// The file's path.
        file: String,
        /// The line, from 1; 0 when the error is not on one line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// CURVE was asked for, and the libzmq linked has none (built without libsodium).
    #[error(
        "this libzmq has no CURVE support (it was built without libsodium); link one that has, \
         such as Debian's libzmq3-dev (see .cargo/config.toml)"
    )]
    NoCurve,
    /// The ZAP handler's thread could not be started.
    #[error("cannot start the ZAP handler: {0}")]
    Thread(String),
    /// The ZAP handler or a socket option failed.
    #[error("cannot set up authentication: {0}")]
    Socket(#[from] zmq::Error),
}

/// How the broker secures its socket.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The users file's users: with them, every client must log in as one (PLAIN, or CURVE if
    /// `curve` is set) and is held to its permissions.
    pub users: Option<Users>,
    /// The server's CURVE keys: with them, every connection is encrypted.
    pub curve: Option<ServerKeys>,
    /// Where `users` was read from, to read again on SIGHUP.
    pub users_file: Option<PathBuf>,
}

/// The users, shared by the serving thread, the ZAP handler and its checking threads, and
/// replaced whole when the users file is read again.
type SharedUsers = Arc<RwLock<Option<Users>>>;

/// Reads `users`, whatever a thread that panicked while holding the lock left (a whole value:
/// it is only ever replaced whole).
fn read(users: &SharedUsers) -> RwLockReadGuard<'_, Option<Users>> {
    users.read().unwrap_or_else(PoisonError::into_inner)
}

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Authentication is off (or CURVE without users): anyone may do anything.
    Anyone,
    /// This user.
    User(UserId),
    /// Authentication is on but the message names no user (cannot happen through libzmq's
    /// handshake; refused all the same).
    Nobody,
}

/// The door: the socket's security, the ZAP handler, and the permission check.
pub struct Guard {
    /// What was set up, shared with the ZAP handler's thread (its users moved to `users`).
    settings: Arc<Settings>,
    /// The users, read again on SIGHUP.
    users: SharedUsers,
    /// Whether clients must log in as users.
    login: bool,
    /// Asked for by SIGHUP: read the users file again.
    reload: Reload,
    /// Whether a ZAP handler answers (anything is checked).
    zap: bool,
    /// Refused logins and handshakes, logged at most once a second; shared with the ZAP
    /// handler's thread.
    refused: Arc<Mutex<Throttle>>,
    /// The peers of open connections, to name one whose handshake failed.
    handshakes: Handshakes,
}

/// The peer addresses of the connections the socket accepted, by descriptor, and the failed
/// handshakes whose connection's drop has not been seen yet. Bounded by the descriptors the
/// process may hold: a descriptor used again replaces its entry.
#[derive(Default)]
struct Handshakes {
    /// Peer address by descriptor.
    peers: HashMap<i32, String>,
    /// Failed handshakes not yet logged.
    failed: u32,
}

impl Handshakes {
    /// Reads and keeps the peer address of the connection on descriptor `fd`.
    fn accepted(&mut self, fd: i32) {
        use std::os::fd::FromRawFd;
        if fd < 0 {
            return;
        }
        // SAFETY: the descriptor is only borrowed to ask for its peer: ManuallyDrop never
        // closes it. If the connection was closed meanwhile, the call fails (or names whatever
        // was given the descriptor since: another peer of this socket).
        let stream = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
        match stream.peer_addr() {
            Ok(address) => self.peers.insert(fd, address.to_string()),
            Err(_) => self.peers.remove(&fd),
        };
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Guard {
    /// Sets up `settings` in `context`: binds the ZAP handler when anything is to be checked,
    /// and starts its thread. Must come before any socket of the context is bound.
    ///
    /// The thread blocks on its socket for as long as the process lives; the process ends it by
    /// exiting (its socket keeps the context alive, so no teardown waits for it).
    ///
    /// # Errors
    /// CURVE asked for and libzmq has none, or the handler cannot be bound.
    pub fn open(context: &zmq::Context, mut settings: Settings) -> Result<Guard, AuthError> {
        if settings.curve.is_some() && !zmq::has("curve").unwrap_or(false) {
            return Err(AuthError::NoCurve);
        }
        let login = settings.users.is_some();
        let users: SharedUsers = Arc::new(RwLock::new(settings.users.take()));
        let reload = Reload::new().map_err(|e| AuthError::Thread(e.to_string()))?;
        let settings = Arc::new(settings);
        let refused = Arc::new(Mutex::new(Throttle::default()));
        let zap = login || settings.curve.is_some();
        if zap {
            // A ROUTER, not a REP: the handler takes the next handshake's request while
            // earlier ones are being checked, and answers each when its check is done.
            let socket = context.socket(zmq::ROUTER)?;
            socket.set_linger(0)?;
            socket.bind(ZAP_ENDPOINT)?;
            let checked = context.socket(zmq::PULL)?;
            checked.set_linger(0)?;
            checked.bind(CHECKED_ENDPOINT)?;
            let checks = start_checkers(context, &users)?;
            let (users, refused) = (Arc::clone(&users), Arc::clone(&refused));
            std::thread::Builder::new()
                .name("zap".into())
                .spawn(move || {
                    let mut handler = ZapHandler {
                        socket,
                        checked,
                        checks,
                        users,
                        refused,
                        admission: Admission::new(admission::Limits::default()),
                        checking: HashMap::new(),
                        idle: CHECKERS,
                        next_ticket: 0,
                    };
                    handler.run();
                })
                .map_err(|e| AuthError::Thread(e.to_string()))?;
        }
        let handshakes = Handshakes::default();
        Ok(Guard { settings, users, login, reload, zap, refused, handshakes })
    }

    /// Whether connections must complete a PLAIN or CURVE handshake.
    pub fn checks_handshakes(&self) -> bool {
        self.zap
    }

    /// Whether clients must log in.
    pub fn requires_login(&self) -> bool {
        self.login
    }

    /// The descriptor the serve loop polls: readable when a reload was asked for.
    pub fn reload_fd(&self) -> std::os::fd::RawFd {
        self.reload.fd()
    }

    /// What SIGHUP triggers: a request to read the users file again.
    pub fn reload_trigger(&self) -> Reload {
        self.reload.clone()
    }

    /// Reads the users file again if a reload was asked for, and puts its users in place of
    /// the old ones: from the next request (and the next login) on, each user has the rights
    /// the file gives now, and a user no longer in it has none. A file that does not read
    /// changes nothing; the error is logged with the file and the line.
    pub fn reload_if_asked(&self) {
        if !self.reload.take() {
            return;
        }
        let Some(path) = self.settings.users_file.as_deref() else {
            warn!("SIGHUP: there is no users file to read again (the broker runs without --auth)");
            return;
        };
        match Users::read(path) {
            Ok(users) => {
                let count = users.len();
                *self.users.write().unwrap_or_else(PoisonError::into_inner) = Some(users);
                info!(users = count, file = %path.display(), "read the users file again");
            }
            Err(error) => warn!(%error, "SIGHUP: kept the users as they were"),
        }
    }

    /// The server's CURVE public key, when connections are encrypted.
    pub fn curve_public_key(&self) -> Option<String> {
        self.settings.curve.as_ref().map(|keys| encode_z85(&keys.public))
    }

    /// Makes `socket` a PLAIN or CURVE server as set up; leaves it alone when security is off.
    ///
    /// # Errors
    /// A socket option failed.
    pub fn secure(&self, socket: &zmq::Socket) -> Result<(), zmq::Error> {
        if let Some(keys) = &self.settings.curve {
            socket.set_curve_server(true)?;
            socket.set_curve_secretkey(&keys.secret)?;
        } else if self.login {
            socket.set_plain_server(true)?;
        }
        if self.zap {
            socket.set_zap_domain(ZAP_DOMAIN)?;
        }
        Ok(())
    }

    /// Notes the peer address of a connection the socket accepted, whose descriptor the
    /// socket's monitor gave: a handshake that fails before ZAP is reported by the monitor with
    /// the broker's own endpoint only (libzmq's monitor events of version 1), so the address
    /// is read here, while the connection is open, and named when it is dropped.
    pub fn note_accepted(&mut self, fd: i32) {
        if self.zap {
            self.handshakes.accepted(fd);
        }
    }

    /// Notes a handshake that failed before reaching ZAP (a client without credentials, or
    /// with another mechanism, or a CURVE client with another server key): logged, with the
    /// peer's address, when the monitor reports the connection dropped.
    pub fn note_failed_handshake(&mut self) {
        self.handshakes.failed += 1;
    }

    /// Notes a dropped connection, whose descriptor the socket's monitor gave: if its
    /// handshake failed, logs that, with its peer's address, at most one line a second with
    /// the refused logins.
    pub fn note_disconnected(&mut self, now: Instant, fd: i32) {
        let peer = self.handshakes.peers.remove(&fd);
        if self.handshakes.failed == 0 {
            return;
        }
        // libzmq reports a failed handshake, then the drop of that connection, on one thread.
        self.handshakes.failed -= 1;
        let admitted = self.refused.lock().unwrap_or_else(PoisonError::into_inner).admit(now);
        if let Some(suppressed) = admitted {
            let peer = peer.as_deref().unwrap_or("unknown (gone before its address was read)");
            warn!(
                peer = %Shown(peer),
                suppressed,
                "refused a connection from {}: its handshake failed (no credentials, another \
                 mechanism, or another CURVE server key)",
                Shown(peer)
            );
        }
    }

    /// Says how many refusals were held back since the last line, when the broker stops.
    pub fn say_suppressed(&mut self) {
        let suppressed =
            self.refused.lock().unwrap_or_else(PoisonError::into_inner).take_suppressed();
        if suppressed > 0 {
            warn!(suppressed, "refused logins: {suppressed} more since the last warning");
        }
        if self.zap {
            let (accepted, refused, unchecked) = crate::metrics::LOGINS.snapshot();
            info!(
                accepted,
                refused,
                unchecked,
                "logins since start: {accepted} accepted, {refused} refused (wrong credentials, \
                 or a failed handshake), {unchecked} refused unchecked (too many waiting)"
            );
        }
    }

    /// Who sent the message `body`: the user ZAP named for its connection.
    pub fn identify(&self, body: &mut zmq::Message) -> Identity {
        let users = read(&self.users);
        let Some(users) = users.as_ref() else { return Identity::Anyone };
        match body.gets("User-Id").and_then(|name| users.by_name(name)) {
            Some(id) => Identity::User(id),
            None => Identity::Nobody,
        }
    }

    /// The name a claim by `who` is held under, when claims belong to users.
    pub fn holder(&self, who: Identity) -> Option<String> {
        match who {
            Identity::User(id) => read(&self.users).as_ref()?.get(id).map(|u| u.name.clone()),
            Identity::Anyone | Identity::Nobody => None,
        }
    }

    /// Narrows a `topics` or `groups` reply to what `who` may see: with users, only the topics
    /// and groups it has some right on (PROTOCOL.md §17). Any other reply, or any reply
    /// without users, is left as it is.
    pub fn narrow(&self, who: Identity, response: &mut Response<'_>) {
        let Identity::User(id) = who else { return };
        if !matches!(response, Response::Topics { .. } | Response::Groups { .. }) {
            return;
        }
        let users = read(&self.users);
        match users.as_ref().and_then(|users| users.get(id)) {
            Some(user) => user.permissions.narrow(response),
            // Removed from the users file since: it sees nothing.
            None => permissions::Permissions::default().narrow(response),
        }
    }

    /// Whether `who` may make `request`: its permissions cover every topic and group it names,
    /// and a claim it uses is its own.
    ///
    /// # Errors
    /// The `forbidden` refusal to send; nothing was changed.
    pub fn admit(
        &self,
        who: Identity,
        request: &Request<'_>,
        brokers: &LogicalBrokers,
    ) -> Result<(), Response<'static>> {
        let id = match who {
            Identity::Anyone => return Ok(()),
            Identity::Nobody => {
                return Err(forbidden("the connection is not logged in as any user".into()))
            }
            Identity::User(id) => id,
        };
        let users = read(&self.users);
        let Some(user) = users.as_ref().and_then(|users| users.get(id)) else {
            return Err(forbidden("unknown user".into()));
        };
        if let Some(need) = user.permissions.lacking(request) {
            let what = match need.scope {
                Scope::Topic => "topic",
                Scope::Group => "group",
            };
            return Err(forbidden(format!(
                "user {} may not {} on {what} {} ({})",
                excerpt(&user.name),
                need.right.name(),
                excerpt(need.name),
                request.op()
            )));
        }
        if let Request::Claim { .. } = request {
            // A claim serves reads only (fetch, groups): a user who may read nothing has no use
            // for one, and would only hold a logical broker from others.
            if !user.permissions.may_consume_any() {
                return Err(forbidden(format!(
                    "user {} may consume no topic, so it may not claim a logical broker",
                    excerpt(&user.name)
                )));
            }
            if let Some(limit) = user.max_claims {
                let held = brokers.held_by(&user.name);
                if held >= limit as usize {
                    return Err(forbidden(format!(
                        "user {} holds {held} claims, its limit (max_claims = {limit})",
                        excerpt(&user.name)
                    )));
                }
            }
        }
        if let Some(token) = request.claim() {
            if brokers.holder_of(token).is_some_and(|holder| holder != user.name) {
                return Err(forbidden(format!(
                    "claim {token} belongs to another user, not to {}",
                    excerpt(&user.name)
                )));
            }
        }
        Ok(())
    }
}

/// A PLAIN login waiting for its password check, or being checked.
struct Login {
    /// The routing frames of the ZAP request, through the delimiter.
    envelope: Vec<Vec<u8>>,
    /// The ZAP request's id, echoed in the reply.
    id: Vec<u8>,
    /// The user name sent.
    user: Vec<u8>,
    /// The password sent; dropped once handed to a checker.
    password: Vec<u8>,
    /// The peer's address, the source a flood is counted by.
    address: String,
}

/// A password check handed to a checking thread.
struct Check {
    /// Names the login in [`ZapHandler::checking`].
    ticket: u64,
    /// The user name sent.
    user: Vec<u8>,
    /// The password sent.
    password: Vec<u8>,
}

/// The ZAP handler's state, on its own thread: libzmq's questions come in on `socket`, password
/// checks go to the checking threads through `checks` and come back on `checked`.
struct ZapHandler {
    /// Bound at [`ZAP_ENDPOINT`].
    socket: zmq::Socket,
    /// Bound at [`CHECKED_ENDPOINT`].
    checked: zmq::Socket,
    /// To the checking threads; at most [`CHECKERS`] checks are handed over at once, so it
    /// never queues.
    checks: mpsc::SyncSender<Check>,
    /// The users.
    users: SharedUsers,
    /// Refused logins, logged at most once a second.
    refused: Arc<Mutex<Throttle>>,
    /// The logins waiting for a check, by source address.
    admission: Admission<Login>,
    /// The logins being checked, by ticket.
    checking: HashMap<u64, Login>,
    /// Checking threads free.
    idle: usize,
    /// The next check's ticket.
    next_ticket: u64,
}

impl ZapHandler {
    /// Answers every request libzmq sends until a socket fails (the context ends).
    fn run(&mut self) {
        loop {
            let timeout = self.admission.next_due().map_or(-1, |due| {
                let left = due.saturating_duration_since(Instant::now());
                left.as_micros().div_ceil(1000).min(i64::MAX as u128) as i64
            });
            let mut items =
                [self.socket.as_poll_item(zmq::POLLIN), self.checked.as_poll_item(zmq::POLLIN)];
            match zmq::poll(&mut items, timeout) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(_) => return,
            }
            let (asked, answered) = (items[0].is_readable(), items[1].is_readable());
            if answered && self.take_verdicts().is_err() {
                return;
            }
            if asked && self.take_requests().is_err() {
                return;
            }
            self.start_checks();
        }
    }

    /// Takes every ZAP request waiting: answers at once what needs no password check, and
    /// queues the rest by source address (refusing unchecked what does not fit).
    fn take_requests(&mut self) -> Result<(), zmq::Error> {
        loop {
            let frames = match self.socket.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => return Ok(()),
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(e),
            };
            // libzmq's ZAP requests come as a REQ socket's: routing frames, an empty delimiter.
            let Some(delimiter) = frames.iter().position(Vec::is_empty) else { continue };
            let (envelope, body) = frames.split_at(delimiter + 1);
            let Some(request) = zap::decode(body) else {
                let verdict = Verdict::Refuse("a malformed ZAP request".into());
                self.answer(envelope, &[], &verdict, "")?;
                continue;
            };
            let address = String::from_utf8_lossy(request.address).into_owned();
            let Credentials::Plain { user, password } = request.credentials else {
                let verdict = zap::judge(read(&self.users).as_ref(), &request.credentials);
                self.answer(envelope, request.id, &verdict, &address)?;
                continue;
            };
            let login = Login {
                envelope: envelope.to_vec(),
                id: request.id.to_vec(),
                user: user.to_vec(),
                password: password.to_vec(),
                address: address.clone(),
            };
            let name = String::from_utf8_lossy(user).into_owned();
            let offered = self.admission.offer(&address, &name, login, Instant::now());
            if let Err((login, overflow)) = offered {
                let why = match overflow {
                    Overflow::Source => "too many logins from this address are waiting",
                    Overflow::Total => "too many logins are waiting",
                };
                let verdict = Verdict::Later(format!("{why}; refused unchecked"));
                self.answer(&login.envelope, &login.id, &verdict, &address)?;
            }
        }
    }

    /// Hands waiting logins to free checking threads, addresses without recent failures first.
    fn start_checks(&mut self) {
        while self.idle > 0 {
            let Some((_, mut login)) = self.admission.next(Instant::now()) else { return };
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            let check = Check {
                ticket,
                user: login.user.clone(),
                password: std::mem::take(&mut login.password),
            };
            if self.checks.send(check).is_err() {
                return;
            }
            self.idle -= 1;
            self.checking.insert(ticket, login);
        }
    }

    /// Answers the logins whose checks are done, and records their outcome for their address.
    fn take_verdicts(&mut self) -> Result<(), zmq::Error> {
        loop {
            let frames = match self.checked.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => return Ok(()),
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(e),
            };
            self.idle = (self.idle + 1).min(CHECKERS);
            let Some((ticket, verdict)) = decode_verdict(&frames) else { continue };
            let Some(login) = self.checking.remove(&ticket) else { continue };
            let accepted = matches!(verdict, Verdict::Accept(_));
            let name = String::from_utf8_lossy(&login.user);
            self.admission.settle(&login.address, &name, accepted, Instant::now());
            self.answer(&login.envelope, &login.id, &verdict, &login.address)?;
        }
    }

    /// Sends the reply to a ZAP request, logging a refusal (at most one line a second).
    fn answer(
        &self,
        envelope: &[Vec<u8>],
        id: &[u8],
        verdict: &Verdict,
        address: &str,
    ) -> Result<(), zmq::Error> {
        crate::metrics::LOGINS.count(match verdict {
            Verdict::Accept(_) => Outcome::Accepted,
            Verdict::Refuse(_) => Outcome::Refused,
            Verdict::Later(_) => Outcome::Unchecked,
        });
        if let Verdict::Refuse(why) | Verdict::Later(why) = verdict {
            let admitted =
                self.refused.lock().unwrap_or_else(PoisonError::into_inner).admit(Instant::now());
            if let Some(suppressed) = admitted {
                warn!(peer = %Shown(address), suppressed, "refused a login: {why}");
            }
        }
        let mut frames = envelope.to_vec();
        frames.extend(zap::reply(id, verdict));
        self.socket.send_multipart(frames, zmq::DONTWAIT)
    }
}

/// Starts the password-checking threads; the sender that hands them checks. Each sends its
/// verdicts to [`CHECKED_ENDPOINT`] as `[ticket (u64 le), verdict frames...]`.
///
/// # Errors
/// A thread or its socket could not be made.
fn start_checkers(
    context: &zmq::Context,
    users: &SharedUsers,
) -> Result<mpsc::SyncSender<Check>, AuthError> {
    let (sender, receiver) = mpsc::sync_channel::<Check>(CHECKERS);
    let receiver = Arc::new(Mutex::new(receiver));
    for n in 0..CHECKERS {
        let push = context.socket(zmq::PUSH)?;
        push.set_linger(0)?;
        push.connect(CHECKED_ENDPOINT)?;
        let (users, receiver) = (Arc::clone(users), Arc::clone(&receiver));
        std::thread::Builder::new()
            .name(format!("zap-check-{n}"))
            .spawn(move || loop {
                let next = receiver.lock().unwrap_or_else(PoisonError::into_inner).recv();
                let Ok(check) = next else { return };
                let credentials =
                    Credentials::Plain { user: &check.user, password: &check.password };
                let verdict = zap::judge(read(&users).as_ref(), &credentials);
                if push.send_multipart(encode_verdict(check.ticket, &verdict), 0).is_err() {
                    return;
                }
            })
            .map_err(|e| AuthError::Thread(e.to_string()))?;
    }
    Ok(sender)
}

/// A checking thread's message: the ticket, then whether accepted, then the user or the reason.
fn encode_verdict(ticket: u64, verdict: &Verdict) -> [Vec<u8>; 3] {
    let (kind, text): (&[u8], &str) = match verdict {
        Verdict::Accept(user) => (b"accept", user),
        Verdict::Refuse(why) => (b"refuse", why),
        Verdict::Later(why) => (b"later", why),
    };
    [ticket.to_le_bytes().to_vec(), kind.to_vec(), text.as_bytes().to_vec()]
}

/// The ticket and verdict of a checking thread's message.
fn decode_verdict(frames: &[Vec<u8>]) -> Option<(u64, Verdict)> {
    let [ticket, kind, text] = frames else { return None };
    let ticket = u64::from_le_bytes(<[u8; 8]>::try_from(ticket.as_slice()).ok()?);
    let text = String::from_utf8_lossy(text).into_owned();
    let verdict = match kind.as_slice() {
        b"accept" => Verdict::Accept(text),
        b"refuse" => Verdict::Refuse(text),
        _ => Verdict::Later(text),
    };
    Some((ticket, verdict))
}

/// Whether `endpoint` can be reached from other machines: a TCP endpoint on an address other
/// than loopback (`127.0.0.0/8`, `::1`, `localhost`). `ipc://` and `inproc://` cannot.
pub fn is_exposed(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("tcp://") else { return false };
    // A `source;address` endpoint connects; the part after `;` is what is bound.
    let rest = rest.rsplit(';').next().unwrap_or(rest);
    let host = match rest.rsplit_once(':') {
        Some((host, _port)) => host,
        None => rest,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "localhost" {
        return false;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        // `*`, `0.0.0.0`, an interface name or a host name: maybe reachable.
        Err(_) => true,
    }
}

/// A `forbidden` refusal.
fn forbidden(reason: String) -> Response<'static> {
    Response::error(ErrorCode::Forbidden, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_tcp_is_not_exposed() {
        for endpoint in [
            "tcp://127.0.0.1:5555",
            "tcp://127.0.0.1:*",
            "tcp://localhost:1",
            "tcp://[::1]:9",
            "ipc:///tmp/b",
        ] {
            assert!(!is_exposed(endpoint), "{endpoint}");
        }
        for endpoint in [
            "tcp://*:5555",
            "tcp://0.0.0.0:5555",
            "tcp://10.0.0.7:1",
            "tcp://eth0:1",
            "tcp://[::]:9",
        ] {
            assert!(is_exposed(endpoint), "{endpoint}");
        }
    }
}
