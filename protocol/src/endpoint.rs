//! Broker addresses as people write them: `HOST:PORT` (Kafka's form), `tcp://HOST:PORT`,
//! `ipc://PATH`, `inproc://NAME`, with host names resolved to an address, since ZeroMQ's tcp
//! transport binds only to an IP address or an interface.
//!
//! Pure `std`: resolving uses [`std::net::ToSocketAddrs`], and nothing here opens a socket.

use std::fmt;
use std::net::{IpAddr, ToSocketAddrs};

/// The environment variable that sets the default endpoint of the broker (`--bind`) and of the
/// clients (`--connect`).
pub const ENDPOINT_ENV: &str = "BROKER_ENDPOINT";

/// The forms an endpoint may take, for error messages.
pub const EXPECTED_FORMS: &str =
    "expected HOST:PORT or tcp://HOST:PORT (e.g. 127.0.0.1:5555, localhost:5555), ipc://PATH or \
     inproc://NAME";

/// Why an address is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEndpoint {
    /// The address as given.
    pub given: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for InvalidEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid endpoint {:?}: {}; {EXPECTED_FORMS}", self.given, self.reason)
    }
}

impl std::error::Error for InvalidEndpoint {}

/// Turns an address as a person writes it into a ZeroMQ endpoint.
///
/// `HOST:PORT` means `tcp://HOST:PORT`. A tcp host that is a name (not an IP address, nor `*`
/// for every interface) is resolved, preferring an IPv4 address; a port of `*` (any free port,
/// when binding) is kept. `ipc://` and `inproc://` endpoints are kept as they are.
///
/// # Errors
/// [`InvalidEndpoint`] for an unknown transport, a missing or non-numeric port, an empty host,
/// or a host name that does not resolve; its message lists the forms expected.
pub fn resolve(given: &str) -> Result<String, InvalidEndpoint> {
    let invalid = |reason: String| InvalidEndpoint { given: given.to_owned(), reason };
    let text = given.trim();
    if text.is_empty() {
        return Err(invalid("it is empty".to_owned()));
    }
    let address = match text.split_once("://") {
        Some(("tcp", address)) => address,
        Some(("ipc" | "inproc", rest)) if !rest.is_empty() => return Ok(text.to_owned()),
        Some(("ipc" | "inproc", _)) => return Err(invalid("the path or name is missing".into())),
        Some((transport, _)) => {
            return Err(invalid(format!("unknown transport {transport:?}")));
        }
        None => text,
    };
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(invalid("the port is missing".to_owned()));
    };
    let port_number = match port {
        "*" => 0,
        _ => port.parse::<u16>().map_err(|_| invalid(format!("{port:?} is not a port number")))?,
    };
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if bare.is_empty() {
        return Err(invalid("the host is missing".to_owned()));
    }
    if bare == "*" || bare.parse::<IpAddr>().is_ok() {
        return Ok(format!("tcp://{host}:{port}"));
    }
    let resolved = (bare, port_number)
        .to_socket_addrs()
        .map_err(|e| invalid(format!("cannot resolve host {bare:?}: {e}")))?;
    let addresses: Vec<IpAddr> = resolved.map(|a| a.ip()).collect();
    let ip = addresses
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| addresses.first())
        .ok_or_else(|| invalid(format!("host {bare:?} has no address")))?;
    Ok(match ip {
        IpAddr::V4(v4) => format!("tcp://{v4}:{port}"),
        IpAddr::V6(v6) => format!("tcp://[{v6}]:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_style_addresses_mean_tcp() {
        assert_eq!(resolve("127.0.0.1:5555").as_deref(), Ok("tcp://127.0.0.1:5555"));
        assert_eq!(resolve("tcp://127.0.0.1:5555").as_deref(), Ok("tcp://127.0.0.1:5555"));
        assert_eq!(resolve("tcp://127.0.0.1:*").as_deref(), Ok("tcp://127.0.0.1:*"));
        assert_eq!(resolve("*:6000").as_deref(), Ok("tcp://*:6000"));
        assert_eq!(resolve("[::1]:6000").as_deref(), Ok("tcp://[::1]:6000"));
        assert_eq!(resolve(" 10.0.0.1:1 ").as_deref(), Ok("tcp://10.0.0.1:1"));
    }

    #[test]
    fn host_names_are_resolved() {
        let local = resolve("localhost:6000").unwrap();
        assert!(local == "tcp://127.0.0.1:6000" || local == "tcp://[::1]:6000", "{local}");
        let local = resolve("tcp://localhost:*").unwrap();
        assert!(local.starts_with("tcp://") && local.ends_with(":*"), "{local}");
    }

    #[test]
    fn other_transports_pass_through() {
        assert_eq!(resolve("ipc:///tmp/b.sock").as_deref(), Ok("ipc:///tmp/b.sock"));
        assert_eq!(resolve("inproc://b").as_deref(), Ok("inproc://b"));
    }

    #[test]
    fn errors_say_what_is_expected() {
        for bad in ["", "localhost", "tcp://:5555", "udp://h:1", "h:port", "h:70000", "ipc://"] {
            let e = resolve(bad).unwrap_err();
            assert!(e.to_string().contains("expected HOST:PORT"), "{bad:?}: {e}");
        }
        let e = resolve("127.0.0.1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid endpoint \"127.0.0.1\": the port is missing; expected HOST:PORT or \
             tcp://HOST:PORT (e.g. 127.0.0.1:5555, localhost:5555), ipc://PATH or inproc://NAME"
        );
    }
}
