//! Logging in to a broker that requires it (`broker --auth`, `--curve-secret-key`): PLAIN, a
//! user name and password, or CURVE, key pairs and encryption. [`Credentials`] are set on every
//! socket the client opens, and [`Handshake`] watches that socket's handshake, so that a refused
//! login is reported as such at once rather than as a broker that does not answer.

use std::ffi::{c_char, c_int, CString};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{ClientError, Result};

/// Where the password of `--user` comes from when it is not typed at a prompt.
pub const PASSWORD_ENV: &str = "BROKER_PASSWORD";

/// How a client proves who it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing: ZeroMQ's NULL mechanism, for a broker without `--auth` or CURVE.
    #[default]
    None,
    /// PLAIN: a user name and its password, sent in clear text.
    Plain {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// CURVE: the broker's public key, and the client's own pair, in Z85.
    Curve {
        /// The broker's public key, which the handshake proves the broker holds.
        server: String,
        /// The client's public key, by which a broker with `--auth` knows its user.
        public: String,
        /// The client's secret key.
        secret: String,
    },
}

impl std::fmt::Debug for Credentials {
    /// Shows who, never a password or a secret key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.who())
    }
}

impl Credentials {
    /// The credentials the flags ask for: `--user` (with the password from
    /// [`PASSWORD_ENV`], or asked for on a terminal), or `--curve-server-key` with the
    /// client's key pair from `--curve-key-file` (a new pair for this run without it).
    ///
    /// # Errors
    /// [`ClientError::Credentials`]: both mechanisms asked for, a key that is not one, a key
    /// file that cannot be read, a password that cannot be had.
    pub fn from_flags(
        user: Option<&str>,
        curve_server_key: Option<&str>,
        curve_key_file: Option<&Path>,
    ) -> Result<Credentials> {
        let bad = |reason: String| ClientError::Credentials(reason);
        match (user, curve_server_key, curve_key_file) {
            (Some(_), Some(_), _) => Err(bad(
                "--user logs in with a password (PLAIN) and --curve-server-key with a key \
                 (CURVE); a connection uses one: under CURVE the key file says who you are"
                    .into(),
            )),
            (_, None, Some(_)) => Err(bad("--curve-key-file needs --curve-server-key".into())),
            (Some(user), None, None) => {
                Ok(Credentials::Plain { user: user.to_owned(), password: password(user)? })
            }
            (None, Some(server), file) => {
                check_key(server).map_err(|r| bad(format!("--curve-server-key: {r}")))?;
                let (public, secret) = match file {
                    Some(path) => read_key_file(path)?,
                    None => {
                        let pair = zmq::CurveKeyPair::new().map_err(|e| bad(e.to_string()))?;
                        (z85(&pair.public_key)?, z85(&pair.secret_key)?)
                    }
                };
                Ok(Credentials::Curve { server: server.to_owned(), public, secret })
            }
            (None, None, None) => Ok(Credentials::None),
        }
    }

    /// Who these credentials say the client is, for messages: `user NAME`, `key KEY` or `a
    /// client without credentials`.
    pub fn who(&self) -> String {
        match self {
            Credentials::None => "a client without credentials".to_owned(),
            Credentials::Plain { user, .. } => format!("user {user}"),
            Credentials::Curve { public, .. } => format!("key {public}"),
        }
    }

    /// Sets the credentials on `socket`, before it connects.
    ///
    /// # Errors
    /// What ZeroMQ says (a libzmq without CURVE refuses the CURVE options).
    pub fn apply(&self, socket: &zmq::Socket) -> zmq::Result<()> {
        match self {
            Credentials::None => Ok(()),
            Credentials::Plain { user, password } => {
                socket.set_plain_username(Some(user))?;
                socket.set_plain_password(Some(password))
            }
            Credentials::Curve { server, public, secret } => {
                socket.set_curve_serverkey(server.as_bytes())?;
                socket.set_curve_publickey(public.as_bytes())?;
                socket.set_curve_secretkey(secret.as_bytes())
            }
        }
    }
}

/// The password of `user`: [`PASSWORD_ENV`], else typed at a prompt on a terminal.
fn password(user: &str) -> Result<String> {
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        if password.is_empty() {
            // An empty password is never a user's: trying it would only be refused as wrong.
            return Err(ClientError::Credentials(format!(
                "--user {user}: {PASSWORD_ENV} is set but empty; set it to the password, or \
                 unset it to be asked for it on a terminal"
            )));
        }
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(ClientError::Credentials(format!(
            "--user {user} needs a password: set {PASSWORD_ENV}, or run on a terminal to be \
             asked for it"
        )));
    }
    dialoguer::Password::new()
        .with_prompt(format!("password for {user}"))
        .interact()
        .map_err(|e| ClientError::Credentials(format!("cannot read the password: {e}")))
}

/// Checks that `key` is a CURVE key in Z85: 40 characters that decode to 32 bytes.
fn check_key(key: &str) -> std::result::Result<(), String> {
    match zmq::z85_decode(key) {
        Ok(bytes) if key.len() == 40 && bytes.len() == 32 => Ok(()),
        _ => Err(format!("{key:?} is not a CURVE key: 40 characters of Z85 expected")),
    }
}

/// The key as 40 characters of Z85.
fn z85(key: &[u8]) -> Result<String> {
    zmq::z85_encode(key).map_err(|e| ClientError::Credentials(format!("{e:?}")))
}

/// The (public, secret) pair of a key file whose first line is the secret key in Z85, as
/// `broker keygen` writes it.
fn read_key_file(path: &Path) -> Result<(String, String)> {
    let bad = |reason: String| ClientError::Credentials(format!("{}: {reason}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let secret = text.lines().next().unwrap_or_default().trim().to_owned();
    check_key(&secret).map_err(|r| bad(format!("line 1: {r}")))?;
    let public = public_of(&secret).ok_or_else(|| bad("line 1: not a CURVE secret key".into()))?;
    Ok((public, secret))
}

extern "C" {
    /// libzmq's `zmq_curve_public` (since 4.2), which zmq-sys declares but does not export.
    fn zmq_curve_public(z85_public_key: *mut c_char, z85_secret_key: *const c_char) -> c_int;
}

/// The public key, in Z85, of the secret key `secret` (Z85), as libzmq computes it.
fn public_of(secret: &str) -> Option<String> {
    let secret = CString::new(secret).ok()?;
    let mut public = [0u8; 41];
    // SAFETY: `public` has room for the 40 characters and the NUL libzmq writes; `secret` is a
    // NUL-terminated string of 40 characters, as checked by the caller.
    let rc = unsafe { zmq_curve_public(public.as_mut_ptr().cast(), secret.as_ptr()) };
    (rc == 0).then(|| String::from_utf8_lossy(&public[..40]).into_owned())
}

/// The handshake events of one socket, read from its monitor: whether the broker refused the
/// client's credentials, or the handshake failed before the broker looked at them.
pub struct Handshake {
    /// Connected to the watched socket's monitor endpoint.
    monitor: zmq::Socket,
    /// Whether the last failure [`Handshake::failed`] read was the broker's refusal of the
    /// credentials (`HANDSHAKE_FAILED_AUTH`), not a handshake that failed before that.
    refused: std::cell::Cell<bool>,
}

/// Numbers the monitor endpoints of the process's sockets.
static MONITORS: AtomicU64 = AtomicU64::new(0);

impl Handshake {
    /// Watches the handshakes of `socket`, which must not have connected yet.
    ///
    /// # Errors
    /// What ZeroMQ says.
    pub fn watch(context: &zmq::Context, socket: &zmq::Socket) -> zmq::Result<Handshake> {
        let endpoint = format!("inproc://handshake-{}", MONITORS.fetch_add(1, Ordering::Relaxed));
        let events = zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32;
        socket.monitor(&endpoint, events)?;
        let monitor = context.socket(zmq::PAIR)?;
        monitor.set_linger(0)?;
        monitor.connect(&endpoint)?;
        Ok(Handshake { monitor, refused: std::cell::Cell::new(false) })
    }

    /// The socket to poll beside the watched one: readable when a handshake event came.
    pub fn poll_item(&self) -> zmq::PollItem<'_> {
        self.monitor.as_poll_item(zmq::POLLIN)
    }

    /// Whether a handshake failed, from the events that came (it reads them all).
    pub fn failed(&self) -> bool {
        // Only failures are subscribed to: any event is one.
        let mut failed = false;
        while let Ok(event) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            failed = true;
            let code =
                event.first().filter(|f| f.len() >= 2).map(|f| u16::from_le_bytes([f[0], f[1]]));
            self.refused.set(code == Some(zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as u16));
        }
        failed
    }

    /// The error for the failure [`Handshake::failed`] saw, for a client with `credentials`
    /// connected to `endpoint`: the broker refused the credentials (ZAP said no), or the
    /// handshake failed before the broker looked at them. A CURVE client whose server key is
    /// not the broker's fails so, and is told that the key may be wrong rather than that its
    /// own key was refused.
    pub fn error(&self, credentials: &Credentials, endpoint: String) -> ClientError {
        let who = credentials.who();
        let hint = match credentials {
            _ if self.refused.get() => return ClientError::AuthenticationFailed { who, endpoint },
            // A broker that wants a login refuses a client with none before ZAP.
            Credentials::None => return ClientError::AuthenticationFailed { who, endpoint },
            Credentials::Curve { server, .. } => format!(
                "the broker's CURVE key may not be {server} (check --curve-server-key against \
                 the `curve public key` line the broker prints), or the broker does not use \
                 CURVE"
            ),
            Credentials::Plain { .. } => "the broker does not take PLAIN logins (it may use \
                                          CURVE: log in with --curve-server-key)"
                .to_owned(),
        };
        ClientError::HandshakeFailed { who, endpoint, hint }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_pair_read_back_from_a_file_has_the_public_key_libzmq_made() {
        let pair = zmq::CurveKeyPair::new().unwrap();
        let (public, secret) = (z85(&pair.public_key).unwrap(), z85(&pair.secret_key).unwrap());
        let dir = std::env::temp_dir().join(format!("security-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("client.key");
        std::fs::write(&file, format!("{secret}\n{public}\n")).unwrap();
        assert_eq!(read_key_file(&file).unwrap(), (public.clone(), secret));
        std::fs::write(&file, "not a key\n").unwrap();
        let error = read_key_file(&file).unwrap_err().to_string();
        assert!(error.contains("line 1") && error.contains("40 characters of Z85"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flags_that_do_not_go_together_are_refused_and_nothing_asks_for_nothing() {
        let key = z85(&zmq::CurveKeyPair::new().unwrap().public_key).unwrap();
        assert!(Credentials::from_flags(Some("a"), Some(&key), None).is_err());
        assert!(Credentials::from_flags(None, None, Some(Path::new("k"))).is_err());
        assert!(Credentials::from_flags(None, Some("short"), None).is_err());
        assert_eq!(Credentials::from_flags(None, None, None).unwrap(), Credentials::None);
        let curve = Credentials::from_flags(None, Some(&key), None).unwrap();
        assert!(curve.who().starts_with("key "));
        assert!(!format!("{curve:?}").contains("secret"));
    }
}
