//! The ZAP handler (ZeroMQ RFC 27): libzmq asks it whether each PLAIN or CURVE handshake may
//! go on, over an inproc socket, and stamps the user it names on every message of the
//! connection (`User-Id`).

use super::users::Users;

/// Where libzmq sends ZAP requests: a fixed address in the socket's own context.
pub const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// The ZAP version spoken.
const VERSION: &[u8] = b"1.0";

/// What a ZAP request asked, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'f> {
    /// PLAIN: a user name and a password.
    Plain {
        /// The name as the client sent it.
        user: &'f [u8],
        /// The password.
        password: &'f [u8],
    },
    /// CURVE: the client's long-term public key.
    Curve {
        /// 32 bytes.
        key: &'f [u8],
    },
    /// Another mechanism, or a request that does not follow RFC 27.
    Other,
}

/// A ZAP request: its id (echoed in the reply), the peer's address and its credentials.
#[derive(Debug)]
pub struct ZapRequest<'f> {
    /// Echoed in the reply.
    pub id: &'f [u8],
    /// The peer's address, for the log.
    pub address: &'f [u8],
    /// What the peer presented.
    pub credentials: Credentials<'f>,
}

/// Decodes a ZAP request's frames; `None` when there are too few to answer.
pub fn decode(frames: &[Vec<u8>]) -> Option<ZapRequest<'_>> {
    let [version, id, _domain, address, _identity, mechanism, rest @ ..] = frames else {
        return None;
    };
    let credentials = match (version.as_slice(), mechanism.as_slice(), rest) {
        (VERSION, b"PLAIN", [user, password]) => Credentials::Plain { user, password },
        (VERSION, b"CURVE", [key]) if key.len() == 32 => Credentials::Curve { key },
        _ => Credentials::Other,
    };
    Some(ZapRequest { id, address, credentials })
}

/// The verdict on one handshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted as this user (empty: CURVE without a users file, anyone with the server key).
    Accept(String),
    /// Refused, with what the broker's log says about it.
    Refuse(String),
    /// Refused without a check (too many logins waiting). Answered as a refusal (`400`), not
    /// as RFC 27's temporary error (`300`): libzmq closes a connection refused with `300`
    /// silently, without telling the client, which keeps its handshake open until the
    /// handshake interval runs out, holding its buffers.
    Later(String),
}

/// Decides on `credentials`: with `users`, they must name a user and prove it; without
/// (encryption only), any CURVE key is accepted.
pub fn judge(users: Option<&Users>, credentials: &Credentials<'_>) -> Verdict {
    let shown = |bytes: &[u8]| crate::quiet::Shown(&String::from_utf8_lossy(bytes)).to_string();
    match (users, credentials) {
        (None, Credentials::Curve { .. }) => Verdict::Accept(String::new()),
        (Some(users), Credentials::Plain { user, password }) => {
            let found = std::str::from_utf8(user).ok().and_then(|name| users.by_name(name));
            match found.and_then(|id| users.get(id)) {
                Some(found) if found.password_matches(password) => {
                    Verdict::Accept(found.name.clone())
                }
                Some(_) => Verdict::Refuse(format!("wrong password for user {}", shown(user))),
                None => {
                    // As long as a wrong password's check, so that the time of a refusal does
                    // not tell which user names exist.
                    users.check_dummy(password);
                    Verdict::Refuse(format!("unknown user {}", shown(user)))
                }
            }
        }
        (Some(users), Credentials::Curve { key }) => {
            match users.by_key(key).and_then(|id| users.get(id)) {
                Some(found) => Verdict::Accept(found.name.clone()),
                None => Verdict::Refuse(format!(
                    "unknown CURVE key {}",
                    <&[u8; 32]>::try_from(*key)
                        .map_or_else(|_| "?".into(), super::keys::encode_z85)
                )),
            }
        }
        (_, _) => Verdict::Refuse("a mechanism the broker does not accept".into()),
    }
}

/// The reply frames to request `id` for `verdict`.
pub fn reply(id: &[u8], verdict: &Verdict) -> [Vec<u8>; 6] {
    let (code, text, user): (&[u8], &[u8], &[u8]) = match verdict {
        Verdict::Accept(user) => (b"200", b"OK", user.as_bytes()),
        Verdict::Refuse(_) => (b"400", b"authentication failed", b""),
        Verdict::Later(_) => (b"400", b"too many logins waiting; try again later", b""),
    };
    [VERSION.to_vec(), id.to_vec(), code.to_vec(), text.to_vec(), user.to_vec(), Vec::new()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn requests_decode_by_mechanism() {
        let plain = frames(&[b"1.0", b"7", b"", b"127.0.0.1", b"", b"PLAIN", b"ann", b"pw"]);
        let request = decode(&plain).unwrap();
        assert_eq!(request.id, b"7");
        assert_eq!(request.credentials, Credentials::Plain { user: b"ann", password: b"pw" });
        let curve = frames(&[b"1.0", b"8", b"", b"a", b"", b"CURVE", &[1; 32]]);
        assert_eq!(decode(&curve).unwrap().credentials, Credentials::Curve { key: &[1; 32] });
        let short_key = frames(&[b"1.0", b"8", b"", b"a", b"", b"CURVE", &[1; 31]]);
        assert_eq!(decode(&short_key).unwrap().credentials, Credentials::Other);
        assert!(decode(&frames(&[b"1.0", b"9"])).is_none());
    }

    #[test]
    fn without_users_only_curve_passes() {
        assert_eq!(
            judge(None, &Credentials::Curve { key: &[1; 32] }),
            Verdict::Accept(String::new())
        );
        let plain = Credentials::Plain { user: b"a", password: b"b" };
        assert!(matches!(judge(None, &plain), Verdict::Refuse(_)));
        let refused = reply(b"7", &judge(None, &plain));
        assert_eq!(refused[2], b"400");
    }
}
