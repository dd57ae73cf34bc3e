//! Command-line options shared by the producer and the consumer.

use std::time::Duration;

use clap::Args;
use protocol::endpoint::{self, ENDPOINT_ENV};

use crate::{ClientError, Result};

/// Where the broker is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ConnectArgs {
    /// The broker's address: HOST:PORT or tcp://HOST:PORT (a host name is resolved), or
    /// ipc://PATH [default: $BROKER_ENDPOINT, else tcp://127.0.0.1:5555]. `--bootstrap-server`
    /// is the same flag, as Kafka's tools spell it.
    #[arg(long, visible_alias = "bootstrap-server", value_name = "ENDPOINT", global = true)]
    pub connect: Option<String>,

    /// How long to wait for the broker before giving up, retries included, e.g. `500ms`, `5s`,
    /// `2m`. After a second of waiting, a note on standard error says so.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
}

impl ConnectArgs {
    /// The endpoint to connect to: `--connect`, else `BROKER_ENDPOINT`, else the default;
    /// resolved as [`endpoint::resolve`] says.
    ///
    /// Read here rather than by clap, which would also check the variable when `--connect`
    /// is given, and blame the flag for it.
    ///
    /// # Errors
    /// [`ClientError::Endpoint`] for an address that is not one, naming where it came from.
    pub fn endpoint(&self) -> Result<String> {
        let (given, from) = match (&self.connect, std::env::var(ENDPOINT_ENV)) {
            (Some(flag), _) => (flag.clone(), "--connect"),
            (None, Ok(env)) => (env, ENDPOINT_ENV),
            (None, Err(_)) => (protocol::DEFAULT_ENDPOINT.to_owned(), "the default"),
        };
        endpoint::resolve(&given).map_err(|source| ClientError::Endpoint { from, source })
    }
}

/// Parses a human-readable duration such as `30s`, `500ms` or `2m`, refusing zero.
///
/// # Errors
/// A message saying what is wrong with `text`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("the duration must be longer than zero".to_owned());
    }
    Ok(duration)
}

/// Parses a count of at least 1.
///
/// # Errors
/// A message when `text` is not a whole number of at least 1.
pub fn positive(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Accepts any string but the empty one.
///
/// # Errors
/// A message when `text` is empty.
pub fn non_empty(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_people_write() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").is_err() && positive("-1").is_err());
    }
}
