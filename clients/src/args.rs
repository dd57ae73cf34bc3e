//! Command-line options shared by the producer and the consumer.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use protocol::endpoint::ENDPOINT_ENV;

use crate::security::Credentials;
use crate::{Client, ClientError, Endpoints, Result, Shutdown};

/// How a producer pipelines its appends (`client::Pipeline`): without `--max-in-flight`, it
/// works in lockstep, one append and then its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct PipelineArgs {
    /// Pipeline: gather messages into appends and keep up to N appends awaiting their replies
    /// at once, on one connection (Kafka's max.in.flight.requests.per.connection). Messages
    /// given to one partition keep their order. Without it, one append waits for its reply
    /// before the next goes.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=1024)
    )]
    pub max_in_flight: Option<u32>,

    /// With --max-in-flight: how long a message waits for others to share its append, in
    /// milliseconds (Kafka's linger.ms).
    #[arg(long, value_name = "MS", default_value_t = 5, requires = "max_in_flight")]
    pub linger: u64,

    /// With --max-in-flight: an append closes once it holds this many bytes of keys and
    /// values (Kafka's batch.size).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = ::client::pipeline::DEFAULT_BATCH_BYTES as u64,
        value_parser = clap::value_parser!(u64).range(1..=(64 << 20)),
        requires = "max_in_flight"
    )]
    pub batch_bytes: u64,
}

impl PipelineArgs {
    /// The pipeline's options, with appends of at most `batch_messages` messages, marked by
    /// an idempotent producer when `idempotent`; `None` without `--max-in-flight`.
    pub fn options(
        &self,
        batch_messages: usize,
        idempotent: bool,
    ) -> Option<::client::PipelineOptions> {
        Some(::client::PipelineOptions {
            linger: Duration::from_millis(self.linger),
            batch_bytes: usize::try_from(self.batch_bytes).unwrap_or(usize::MAX),
            batch_messages,
            max_in_flight: self.max_in_flight? as usize,
            idempotent,
        })
    }
}

/// Where the broker is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ConnectArgs {
    /// The broker's address: HOST:PORT, tcp://HOST:PORT or ipc://PATH; a host name is
    /// resolved. Several, separated by commas (tcp://A:5555,tcp://B:5555), for broker
    /// processes sharing their topics: the client talks to the first, and moves to the next
    /// when one does not answer [default: $BROKER_ENDPOINT, else tcp://127.0.0.1:5555].
    // Shared flags come after each command's own in its help.
    #[arg(
        long,
        visible_alias = "bootstrap-server",
        value_name = "ENDPOINT",
        global = true,
        display_order = 100
    )]
    pub connect: Option<String>,

    /// How long to wait for the broker before giving up, retries included, e.g. `500ms`, `5s`,
    /// `2m`. After a second of waiting, a note on standard error says so.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5s",
        value_parser = parse_duration,
        global = true,
        display_order = 101
    )]
    pub timeout: Duration,

    /// Log in as this user with a password (PLAIN), from $BROKER_PASSWORD or asked for on a
    /// terminal: for a broker started with --auth.
    #[arg(long, value_name = "NAME", global = true, display_order = 102)]
    pub user: Option<String>,

    /// The broker's CURVE public key (40 characters of Z85, as it prints at start-up):
    /// encrypt the connection, for a broker started with --curve-secret-key.
    // A Z85 key may start with `-`.
    #[arg(
        long,
        value_name = "KEY",
        global = true,
        allow_hyphen_values = true,
        display_order = 103
    )]
    pub curve_server_key: Option<String>,

    /// With --curve-server-key: this client's key pair, from the secret key on the first line
    /// of FILE (as `broker keygen FILE` writes it); without it a new pair is made for the run.
    #[arg(long, value_name = "FILE", global = true, display_order = 104)]
    pub curve_key_file: Option<PathBuf>,
}

impl ConnectArgs {
    /// A client of the broker these flags name, logged in as they say, its waits cut short by
    /// `shutdown`.
    ///
    /// # Errors
    /// A bad endpoint or bad login flags; [`ClientError::Connect`] when the socket cannot be
    /// made.
    pub fn client(&self, shutdown: &Shutdown) -> Result<Client> {
        self.client_at(self.endpoints()?, shutdown)
    }

    /// As [`ConnectArgs::client`], of the broker processes at `endpoints`.
    ///
    /// # Errors
    /// As [`ConnectArgs::client`].
    pub fn client_at(&self, endpoints: Endpoints, shutdown: &Shutdown) -> Result<Client> {
        let credentials = Credentials::from_flags(
            self.user.as_deref(),
            self.curve_server_key.as_deref(),
            self.curve_key_file.as_deref(),
        )?;
        Ok(Client::connect_to(endpoints, self.timeout, credentials)?
            .with_shutdown(shutdown.clone()))
    }

    /// The endpoints to connect to: `--connect`, else `BROKER_ENDPOINT`, else the default;
    /// one address or several separated by commas, each resolved as [`Endpoints::parse`] says.
    ///
    /// Read here rather than by clap, which would also check the variable when `--connect`
    /// is given, and blame the flag for it.
    ///
    /// # Errors
    /// [`ClientError::Endpoint`] for an address that is not one, naming it and where it came
    /// from.
    pub fn endpoints(&self) -> Result<Endpoints> {
        let (given, from) = match (&self.connect, std::env::var(ENDPOINT_ENV)) {
            (Some(flag), _) => (flag.clone(), "--connect"),
            (None, Ok(env)) => (env, ENDPOINT_ENV),
            (None, Err(_)) => (protocol::DEFAULT_ENDPOINT.to_owned(), "the default"),
        };
        Endpoints::parse(&given).map_err(|reason| ClientError::Endpoint { from, reason })
    }
}

/// A topic named by position, or with `--topic` as Kafka's console tools name it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct TopicArg {
    /// The topic.
    #[arg(
        value_name = "TOPIC",
        required_unless_present = "topic_flag",
        conflicts_with = "topic_flag"
    )]
    pub topic: Option<String>,
    /// The topic, as Kafka's tools name it: the same as TOPIC.
    #[arg(long = "topic", id = "topic_flag", value_name = "TOPIC")]
    pub topic_flag: Option<String>,
    /// Read this partition only (Kafka's flag); its offsets are the partition's own.
    /// Without it every partition is read. A group shares out partitions itself.
    #[arg(long, value_name = "N", conflicts_with = "group")]
    pub partition: Option<u32>,
}

/// Parses a partition count: 1 to [`protocol::MAX_PARTITIONS`].
///
/// # Errors
/// A message saying what is allowed, for 0, a count above the limit, or not a number.
pub fn parse_partitions(text: &str) -> Result<u32, String> {
    let max = protocol::MAX_PARTITIONS;
    match text.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(_) => Err(format!("a topic has from 1 to {max} partitions")),
        Err(_) => Err(format!("expected a number of partitions from 1 to {max}, not {text:?}")),
    }
}

impl TopicArg {
    /// The topic given, one way or the other.
    pub fn name(&self) -> &str {
        // Argument parsing requires exactly one of them.
        self.topic.as_deref().or(self.topic_flag.as_deref()).unwrap_or_default()
    }
}

/// Which logical broker a reading command claims, and whether it waits for one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Args)]
pub struct ClaimArgs {
    /// Claim this logical broker (by id) instead of any free one.
    #[arg(long, value_name = "ID")]
    pub broker: Option<u32>,
    /// When no fitting logical broker is free, wait for one instead of failing.
    #[arg(long)]
    pub wait: bool,
}

impl ClaimArgs {
    /// These options, or where one is not given here, those of `outer` (given before the
    /// command's name).
    pub fn or(self, outer: ClaimArgs) -> ClaimArgs {
        ClaimArgs { broker: self.broker.or(outer.broker), wait: self.wait || outer.wait }
    }
}

/// How text output shows each message's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimestampStyle {
    /// RFC 3339 in local time, to the millisecond: `2026-11-30T14:03:07.123+01:00`.
    Local,
    /// Milliseconds since the Unix epoch.
    Ms,
    /// `CreateTime:` and the milliseconds, as Kafka's console consumer prints them.
    #[value(skip)]
    CreateTime,
}

/// How fetched messages are printed as text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct PrintArgs {
    /// Print each message's key (or `null`) before its value.
    #[arg(long)]
    pub print_key: bool,
    /// Print each message's timestamp after its offset: RFC 3339 in local time, or with
    /// `=ms` milliseconds since the Unix epoch.
    #[arg(
        long,
        value_name = "STYLE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "local"
    )]
    pub print_timestamp: Option<TimestampStyle>,
    /// Print each message's headers before its key and value, as Kafka's console consumer
    /// does with print.headers=true: `name:value` pairs joined by commas, `NO_HEADERS` when
    /// it has none, `null` for a header without a value.
    #[arg(long)]
    pub print_headers: bool,
    /// Kafka's console consumer properties: print.key=true|false, print.timestamp=true|false
    /// (as `CreateTime:MS`), print.offset=true|false, key.separator=SEP (between key and
    /// value; a tab by default), print.headers=true|false, headers.separator=SEP (between
    /// headers; a comma by default), headers.key.separator=SEP (between a header's name and
    /// value; a colon by default). May be repeated.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_consumer_property)]
    pub property: Vec<ConsumerProperty>,
    /// Print only the payload of a message in Kafka Connect's JSON envelope
    /// (`{"schema": ..., "payload": ...}`, as `producer --value-schema` writes it); other
    /// messages are printed as they are.
    #[arg(long)]
    pub unwrap_schema: bool,
}

/// A consumer property of Kafka's, as `--property NAME=VALUE` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerProperty {
    /// `print.key`: as `--print-key`.
    PrintKey(bool),
    /// `print.timestamp`: `CreateTime:MS` after the offset.
    PrintTimestamp(bool),
    /// `print.offset`: whether the offset starts the line (it does unless told otherwise).
    PrintOffset(bool),
    /// `key.separator`: what goes between the key and the value.
    KeySeparator(String),
    /// `print.headers`: as `--print-headers`.
    PrintHeaders(bool),
    /// `headers.separator`: what goes between two headers.
    HeadersSeparator(String),
    /// `headers.key.separator`: what goes between a header's name and its value.
    HeadersKeySeparator(String),
}

/// Parses a consumer `--property`.
///
/// # Errors
/// A message naming the properties understood, or saying what to type instead.
pub fn parse_consumer_property(text: &str) -> Result<ConsumerProperty, String> {
    let (name, value) = split_property(text)?;
    match name {
        "print.key" => Ok(ConsumerProperty::PrintKey(parse_bool(name, value)?)),
        "print.timestamp" => Ok(ConsumerProperty::PrintTimestamp(parse_bool(name, value)?)),
        "print.offset" => Ok(ConsumerProperty::PrintOffset(parse_bool(name, value)?)),
        "key.separator" => Ok(ConsumerProperty::KeySeparator(unescape_separator(value)?)),
        "print.headers" => Ok(ConsumerProperty::PrintHeaders(parse_bool(name, value)?)),
        "headers.separator" => Ok(ConsumerProperty::HeadersSeparator(unescape_separator(value)?)),
        "headers.key.separator" => {
            Ok(ConsumerProperty::HeadersKeySeparator(unescape_separator(value)?))
        }
        "print.value" | "print.partition" | "value.separator" | "line.separator"
        | "null.literal" | "print.delivery" => {
            Err(format!("{name} is not supported; use --json to get every field of each message"))
        }
        _ => Err(format!(
            "unknown property {name:?}; the consumer understands print.key, print.timestamp, \
             print.offset, key.separator, print.headers, headers.separator and \
             headers.key.separator"
        )),
    }
}

/// A producer property of Kafka's, as `--property NAME=VALUE` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProducerProperty {
    /// `parse.key`: split each line into key and value at the separator.
    ParseKey(bool),
    /// `key.separator`: where `parse.key` splits (a tab by default, as in Kafka).
    KeySeparator(String),
}

/// Parses a producer `--property`.
///
/// # Errors
/// A message naming the properties understood.
pub fn parse_producer_property(text: &str) -> Result<ProducerProperty, String> {
    let (name, value) = split_property(text)?;
    match name {
        "parse.key" => Ok(ProducerProperty::ParseKey(parse_bool(name, value)?)),
        "key.separator" => Ok(ProducerProperty::KeySeparator(unescape_separator(value)?)),
        _ => Err(format!(
            "unknown property {name:?}; the producer understands parse.key and key.separator \
             (or use --key KEY for one key for every message)"
        )),
    }
}

/// `NAME=VALUE` split at the first `=`.
fn split_property(text: &str) -> Result<(&str, &str), String> {
    text.split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, e.g. print.key=true, not {text:?}"))
}

/// `true` or `false`.
fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{name} takes true or false, not {value:?}")),
    }
}

/// A separator as shells pass it: `\t` and `\n` written out become a tab and a newline.
fn unescape_separator(value: &str) -> Result<String, String> {
    let separator = value.replace("\\t", "\t").replace("\\n", "\n");
    if separator.is_empty() {
        return Err("key.separator must not be empty".to_owned());
    }
    Ok(separator)
}

/// Where a read starts: Kafka's `--offset earliest | latest | N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetArg {
    /// The topic's first kept message.
    Earliest,
    /// The topic's end: only messages appended from now on.
    Latest,
    /// This offset.
    At(u64),
}

/// Parses `earliest`, `latest` or an offset.
///
/// # Errors
/// A message saying what is expected.
pub fn parse_offset(text: &str) -> Result<OffsetArg, String> {
    match text {
        "earliest" => Ok(OffsetArg::Earliest),
        "latest" => Ok(OffsetArg::Latest),
        _ => text.parse().map(OffsetArg::At).map_err(|_| {
            format!("expected earliest, latest or an offset (a whole number), not {text:?}")
        }),
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

    #[test]
    fn endpoints_from_the_flag_one_or_several_a_bad_one_named() {
        let flags = |connect: &str| ConnectArgs {
            connect: Some(connect.to_owned()),
            timeout: Duration::from_secs(5),
            user: None,
            curve_server_key: None,
            curve_key_file: None,
        };
        let two = flags("127.0.0.1:5555,tcp://127.0.0.1:5556").endpoints().unwrap();
        assert_eq!(two.to_string(), "tcp://127.0.0.1:5555,tcp://127.0.0.1:5556");
        let e = flags("127.0.0.1:5555,127.0.0.1").endpoints().unwrap_err();
        assert!(matches!(e, ClientError::Endpoint { from: "--connect", .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("invalid endpoint \"127.0.0.1\": the port is missing"),
            "{e}"
        );
        assert!(e.to_string().ends_with("(from --connect)"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn kafka_properties_and_offsets() {
        assert_eq!(parse_consumer_property("print.key=true"), Ok(ConsumerProperty::PrintKey(true)));
        assert_eq!(
            parse_consumer_property("key.separator=\\t"),
            Ok(ConsumerProperty::KeySeparator("\t".into()))
        );
        assert!(parse_consumer_property("print.key=yes").is_err());
        assert!(parse_consumer_property("print.key").is_err());
        assert_eq!(
            parse_consumer_property("print.headers=true"),
            Ok(ConsumerProperty::PrintHeaders(true))
        );
        assert_eq!(
            parse_consumer_property("headers.separator=|"),
            Ok(ConsumerProperty::HeadersSeparator("|".into()))
        );
        assert_eq!(
            parse_consumer_property("headers.key.separator=="),
            Ok(ConsumerProperty::HeadersKeySeparator("=".into()))
        );
        assert!(parse_consumer_property("fetch.min.bytes=1").unwrap_err().contains("unknown"));
        assert_eq!(parse_producer_property("parse.key=true"), Ok(ProducerProperty::ParseKey(true)));
        assert_eq!(parse_offset("earliest"), Ok(OffsetArg::Earliest));
        assert_eq!(parse_offset("latest"), Ok(OffsetArg::Latest));
        assert_eq!(parse_offset("7"), Ok(OffsetArg::At(7)));
        assert!(parse_offset("-1").is_err());
        assert_eq!(parse_partitions("6"), Ok(6));
        assert_eq!(parse_partitions("10000"), Ok(10_000));
        for bad in ["0", "10001", "-1", "many"] {
            let e = parse_partitions(bad).unwrap_err();
            assert!(e.contains("1 to 10000"), "{bad}: {e}");
        }
    }
}
