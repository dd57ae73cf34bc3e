//! Who may connect and what each may do: authentication through ZAP (PLAIN or CURVE, with the
//! users file) and the permission check every decoded request passes before it is applied.
//!
//! The serve loop sees one door, [`Guard`]: it secures the listening socket, answers the ZAP
//! handshakes libzmq asks about (on a thread of its own: a password check costs an Argon2 hash,
//! which must not hold up the requests of users already logged in), and says for each request
//! whether its user may make it.

pub mod keys;
pub mod permissions;
pub mod users;
pub mod zap;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use protocol::{excerpt, ErrorCode, Request, Response};
use thiserror::Error;
use tracing::warn;

use crate::logical::LogicalBrokers;
use crate::quiet::{Shown, Throttle};
use keys::{encode_z85, ServerKeys};
use permissions::Scope;
use users::{UserId, Users};
use zap::{Verdict, ZAP_ENDPOINT};

/// The ZAP domain the broker's socket asks in.
const ZAP_DOMAIN: &str = "broker";

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
    /// What was set up, shared with the ZAP handler's thread.
    settings: Arc<Settings>,
    /// Whether a ZAP handler answers (anything is checked).
    zap: bool,
    /// Refused logins and handshakes, logged at most once a second; shared with the ZAP
    /// handler's thread.
    refused: Arc<Mutex<Throttle>>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Guard {
    /// No security: what the broker does without `--auth` and `--curve-secret-key`.
    pub fn off() -> Guard {
        Guard { settings: Arc::default(), zap: false, refused: Arc::default() }
    }

    /// Sets up `settings` in `context`: binds the ZAP handler when anything is to be checked,
    /// and starts its thread. Must come before any socket of the context is bound.
    ///
    /// The thread blocks on its socket for as long as the process lives; the process ends it by
    /// exiting (its socket keeps the context alive, so no teardown waits for it).
    ///
    /// # Errors
    /// CURVE asked for and libzmq has none, or the handler cannot be bound.
    pub fn open(context: &zmq::Context, settings: Settings) -> Result<Guard, AuthError> {
        if settings.curve.is_some() && !zmq::has("curve").unwrap_or(false) {
            return Err(AuthError::NoCurve);
        }
        let settings = Arc::new(settings);
        let refused = Arc::new(Mutex::new(Throttle::default()));
        let zap = settings.users.is_some() || settings.curve.is_some();
        if zap {
            let socket = context.socket(zmq::REP)?;
            socket.set_linger(0)?;
            socket.bind(ZAP_ENDPOINT)?;
            let (settings, refused) = (Arc::clone(&settings), Arc::clone(&refused));
            std::thread::Builder::new()
                .name("zap".into())
                .spawn(move || answer_zap(&socket, &settings, &refused))
                .map_err(|e| AuthError::Thread(e.to_string()))?;
        }
        Ok(Guard { settings, zap, refused })
    }

    /// Whether connections must complete a PLAIN or CURVE handshake.
    pub fn checks_handshakes(&self) -> bool {
        self.zap
    }

    /// Whether clients must log in.
    pub fn requires_login(&self) -> bool {
        self.settings.users.is_some()
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
        } else if self.settings.users.is_some() {
            socket.set_plain_server(true)?;
        }
        if self.zap {
            socket.set_zap_domain(ZAP_DOMAIN)?;
        }
        Ok(())
    }

    /// Logs a handshake that failed before reaching ZAP (a client without credentials, or with
    /// another mechanism), at most one line a second with the refused logins.
    pub fn note_failed_handshake(&mut self, now: Instant, peer: &str) {
        let admitted = self.refused.lock().unwrap_or_else(PoisonError::into_inner).admit(now);
        if let Some(suppressed) = admitted {
            warn!(
                peer = %Shown(peer),
                suppressed,
                "refused a connection: its handshake failed (no credentials, or another mechanism)"
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
    }

    /// Who sent the message `body`: the user ZAP named for its connection.
    pub fn identify(&self, body: &mut zmq::Message) -> Identity {
        let Some(users) = &self.settings.users else { return Identity::Anyone };
        match body.gets("User-Id").and_then(|name| users.by_name(name)) {
            Some(id) => Identity::User(id),
            None => Identity::Nobody,
        }
    }

    /// The name a claim by `who` is held under, when claims belong to users.
    pub fn holder(&self, who: Identity) -> Option<&str> {
        match who {
            Identity::User(id) => self.user_name(id),
            Identity::Anyone | Identity::Nobody => None,
        }
    }

    fn user_name(&self, id: UserId) -> Option<&str> {
        self.settings.users.as_ref()?.get(id).map(|u| u.name.as_str())
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
        let Some(user) = self.settings.users.as_ref().and_then(|users| users.get(id)) else {
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

/// The ZAP handler's loop: answers every request libzmq sends until the socket fails (the
/// context ends). A refusal is logged, at most one line a second.
fn answer_zap(socket: &zmq::Socket, settings: &Settings, refused: &Mutex<Throttle>) {
    loop {
        let frames = match socket.recv_multipart(0) {
            Ok(frames) => frames,
            Err(zmq::Error::EINTR) => continue,
            Err(_) => return,
        };
        let (id, verdict, address) = match zap::decode(&frames) {
            Some(request) => (
                request.id.to_vec(),
                zap::judge(settings.users.as_ref(), &request.credentials),
                String::from_utf8_lossy(request.address).into_owned(),
            ),
            None => (Vec::new(), Verdict::Refuse("a malformed ZAP request".into()), String::new()),
        };
        if let Verdict::Refuse(why) = &verdict {
            let admitted =
                refused.lock().unwrap_or_else(PoisonError::into_inner).admit(Instant::now());
            if let Some(suppressed) = admitted {
                warn!(peer = %Shown(&address), suppressed, "refused a login: {why}");
            }
        }
        crate::metrics::LOGINS.count(matches!(verdict, Verdict::Accept(_)));
        // A REP socket must answer before it takes the next request.
        if socket.send_multipart(zap::reply(&id, &verdict), 0).is_err() {
            return;
        }
    }
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
