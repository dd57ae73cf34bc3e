//! The broker endpoints a client may talk to, one at a time, and which one is next after a
//! broker process stops answering: the ZeroMQ guide's lazy pirate with several servers, tried
//! in turn.

use std::fmt;

use protocol::endpoint::{self, InvalidEndpoint};

/// What separates the endpoints of a list: `tcp://A:5555,tcp://B:5555`.
pub const SEPARATOR: char = ',';

/// One or more broker endpoints, each resolved, and the one in use now.
///
/// Several endpoints make sense only for broker processes that share their topics (`broker
/// --store nats://...`): the client moves to the next when the one in use does not answer, and
/// after the last comes the first again (round robin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The endpoints in the order given; never empty.
    list: Vec<String>,
    /// The index of the one in use.
    at: usize,
}

impl Endpoints {
    /// Parses `given`, one address or several separated by commas (`HOST:PORT,HOST:PORT`), and
    /// resolves each as [`endpoint::resolve`] says. The first is the one used first.
    ///
    /// # Errors
    /// [`InvalidEndpoint`] naming the first address that is not one (an empty one between two
    /// commas included).
    pub fn parse(given: &str) -> Result<Endpoints, InvalidEndpoint> {
        let parts: Vec<&str> = given.split(SEPARATOR).collect();
        let mut list = Vec::with_capacity(parts.len());
        for (n, part) in parts.iter().enumerate() {
            if parts.len() > 1 && part.trim().is_empty() {
                return Err(InvalidEndpoint {
                    given: given.to_owned(),
                    reason: format!(
                        "endpoint {} of {} in the list is empty (separate endpoints with one \
                         comma)",
                        n + 1,
                        parts.len()
                    ),
                });
            }
            list.push(endpoint::resolve(part)?);
        }
        Ok(Endpoints { list, at: 0 })
    }

    /// A list of the one endpoint `endpoint`, used as it is (not resolved).
    pub fn one(endpoint: &str) -> Endpoints {
        Endpoints { list: vec![endpoint.to_owned()], at: 0 }
    }

    /// The endpoint in use.
    pub fn present(&self) -> &str {
        &self.list[self.at]
    }

    /// The index of the endpoint in use, from 0 in the order given.
    pub fn position(&self) -> usize {
        self.at
    }

    /// How many endpoints there are (at least one).
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether the list is empty: never, it holds at least one endpoint.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Moves to the next endpoint, the first after the last; returns whether that is another
    /// one than before (not so with a single endpoint).
    pub fn advance(&mut self) -> bool {
        self.at = (self.at + 1) % self.list.len();
        self.list.len() > 1
    }
}

/// # Format
/// The endpoints as given to `--connect`: `tcp://A:1,tcp://B:2`.
impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.list.join(&SEPARATOR.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_or_a_list_each_resolved() {
        let one = Endpoints::parse("127.0.0.1:5555").unwrap();
        assert_eq!((one.len(), one.present()), (1, "tcp://127.0.0.1:5555"));
        let two = Endpoints::parse("tcp://127.0.0.1:5555, 127.0.0.1:5556").unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two.to_string(), "tcp://127.0.0.1:5555,tcp://127.0.0.1:5556");
        let named = Endpoints::parse("localhost:1,ipc:///run/b.sock").unwrap();
        assert!(named.present().starts_with("tcp://"), "{named}");
        assert_eq!(named.list[1], "ipc:///run/b.sock");
    }

    #[test]
    fn a_bad_address_in_a_list_is_named() {
        let e = Endpoints::parse("tcp://127.0.0.1:5555,nowhere").unwrap_err();
        assert_eq!(e.given, "nowhere");
        assert!(e.to_string().starts_with("invalid endpoint \"nowhere\": the port is missing"));
        let e = Endpoints::parse("tcp://127.0.0.1:5555,udp://h:1").unwrap_err();
        assert_eq!(e.given, "udp://h:1");
        for gap in ["127.0.0.1:1,,127.0.0.1:2", "127.0.0.1:1,", ",127.0.0.1:1"] {
            let e = Endpoints::parse(gap).unwrap_err();
            assert!(e.reason.contains("in the list is empty"), "{gap:?}: {e}");
        }
        let e = Endpoints::parse("127.0.0.1:1,,127.0.0.1:2").unwrap_err();
        assert!(e.reason.starts_with("endpoint 2 of 3"), "{e}");
        assert!(Endpoints::parse("").unwrap_err().reason.contains("empty"));
    }

    #[test]
    fn the_next_endpoint_is_taken_in_turn_and_the_first_after_the_last() {
        let mut three = Endpoints::parse("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3").unwrap();
        let mut seen = vec![three.present().to_owned()];
        for _ in 0..4 {
            assert!(three.advance());
            seen.push(three.present().to_owned());
        }
        let ports: Vec<&str> = seen.iter().map(|e| &e[e.len() - 1..]).collect();
        assert_eq!(ports, ["1", "2", "3", "1", "2"]);
        let mut one = Endpoints::one("tcp://127.0.0.1:9");
        assert!(!one.advance());
        assert_eq!((one.present(), one.position()), ("tcp://127.0.0.1:9", 0));
    }
}
