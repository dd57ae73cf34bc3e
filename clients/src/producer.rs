//! The `producer` command: append messages from the command line or from standard input.
//!
//! Standard input is read on a thread into a channel, each read's complete lines as one chunk.
//! The sending side takes whatever lines are there, up to a batch, and sends them in one append:
//! piped input goes out in large batches, while a person typing sees each line sent as soon as
//! it is entered (a terminal hands over one line per read).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IsTerminal, Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::thread;
use std::time::Duration;

use clap::{Parser, Subcommand};
use protocol::{partition_for_key, validate_topic_name, ErrorCode, Header, NewMessage, Sequenced};
use tracing::debug;

use crate::args::{
    non_empty, parse_producer_property, ConnectArgs, PipelineArgs, ProducerProperty,
};
use crate::client::{Appended, Client};
use crate::envelope::ValueSchema;
use crate::idempotence::COPY_WINDOW;
use crate::output::plural;
use crate::perf::{self, ProducePerfArgs};
use crate::pipeline::{Outcome, Pipeline, PipelineOptions};
use crate::{ClientError, Idempotence, Result, Shutdown};

/// At most this many bytes of keys and values go in one append from standard input (a single
/// larger line still goes, alone).
const BATCH_BYTES: usize = 1 << 20;

/// How much the reading thread asks for in one read.
const READ_BYTES: usize = 64 * 1024;

/// How many reads' worth of lines the reading thread may get ahead of the sender, to bound
/// memory (about 4 MiB).
const QUEUED_CHUNKS: usize = 64;

/// How often the wait for the next line looks at the Ctrl-C flag.
const LINE_POLL: Duration = Duration::from_millis(100);

/// Append messages to a topic, like Kafka's console producer.
#[derive(Debug, Clone, Parser)]
#[command(name = "producer", version)]
#[command(
    about = "Append messages to a topic, from the command line or one per line of standard input",
    after_help = "Without MESSAGE arguments, standard input is read one message per line until \
                  end of input (Ctrl-D) or Ctrl-C; lines are sent in batches as they arrive. \
                  The summary line gives the offsets of the first and last message appended \
                  (with the partition, on a topic of several).\n\n\
                  On a topic of several partitions, a message with a key goes to the partition \
                  Kafka's default partitioner picks (murmur2 of the key, modulo the partition \
                  count), so that a key's messages stay in order on one partition; messages \
                  without a key go where the broker puts them. --partition N sends every \
                  message to partition N.\n\n\
                  The producer is idempotent, as Kafka's is by default: it marks each append \
                  with a random producer id and a sequence, so that an append whose reply was \
                  lost, or that the broker could not confirm, is sent again within --timeout \
                  and stored once.\n\n\
                  `producer perf` measures the broker instead (see `producer perf --help`); its \
                  options go after the word perf. To append to a topic named perf, write \
                  `producer -- perf MESSAGE...`.",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
pub struct ProducerArgs {
    /// Where the broker is and how long to wait for it.
    #[command(flatten)]
    pub connection: ConnectArgs,

    /// Give every message this key.
    #[arg(long, value_name = "KEY", conflicts_with = "key_separator")]
    pub key: Option<String>,

    /// Split each message at the first SEP into key and value (Kafka's parse.key with
    /// key.separator). A message without SEP is sent whole, with no key.
    #[arg(long, value_name = "SEP", value_parser = non_empty)]
    pub key_separator: Option<String>,

    /// Append every message to partition N (Kafka's flag) instead of placing each by its key.
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,

    /// Give every message this header (as kcat's -H): NAME=VALUE, or NAME alone for a header
    /// with no value (Kafka's null). May be repeated, and a name may come more than once:
    /// headers are sent in the order given.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, Option<String>)>,

    /// Send standard input in appends of at most N messages (and about 1 MiB).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub batch: u32,

    /// How appends of standard input are pipelined.
    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Send appends without a producer id and sequence, for a broker older than them (Kafka's
    /// enable.idempotence=false). Such a broker ignores them, so its copies of an append
    /// could be stored twice; without them, an append whose outcome is in doubt is reported,
    /// not sent again.
    #[arg(long)]
    pub no_idempotence: bool,

    /// Kafka's console producer properties: parse.key=true (split each message at the key
    /// separator, as --key-separator does), key.separator=SEP (a tab by default). May be
    /// repeated.
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_producer_property)]
    pub property: Vec<ProducerProperty>,

    /// Wrap each message (each line: a JSON value) in Kafka Connect's JSON envelope with
    /// this schema, `{"schema": ..., "payload": LINE}`, as JsonConverter with
    /// schemas.enable=true reads it (a JDBC sink needs it). FILE holds the schema in its
    /// JSON form. A line that is not JSON, or lacks a required field, is not sent.
    #[arg(long, value_name = "FILE")]
    pub value_schema: Option<std::path::PathBuf>,

    /// The topic to append to; created if it does not exist.
    #[arg(value_name = "TOPIC", required_unless_present = "topic_flag")]
    pub topic: Option<String>,

    /// The topic, as Kafka's tools name it; then every argument is a message.
    #[arg(long = "topic", id = "topic_flag", value_name = "TOPIC")]
    pub topic_flag: Option<String>,

    /// Messages to append, all in one request. Without any, standard input is read.
    #[arg(value_name = "MESSAGE")]
    pub messages: Vec<String>,

    /// A measurement instead of an append.
    #[command(subcommand)]
    pub command: Option<ProducerCommand>,
}

/// What the producer can do besides appending.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ProducerCommand {
    /// Measure append throughput and latency, like Kafka's producer perf test.
    #[command(after_help = perf::PRODUCE_HELP)]
    Perf(ProducePerfArgs),
}

/// A `--header`: its name and value, split at the first `=`; no `=` is a header without a
/// value.
///
/// # Errors
/// A name longer than [`protocol::MAX_HEADER_KEY_BYTES`].
pub fn parse_header(text: &str) -> std::result::Result<(String, Option<String>), String> {
    let (name, value) = match text.split_once('=') {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (text, None),
    };
    if name.len() > protocol::MAX_HEADER_KEY_BYTES {
        return Err(format!(
            "a header's name may have at most {} bytes; this one has {}",
            protocol::MAX_HEADER_KEY_BYTES,
            name.len()
        ));
    }
    Ok((name.to_owned(), value))
}

/// How each message gets its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMode {
    /// No key.
    None,
    /// This key for every message.
    Fixed(Vec<u8>),
    /// The part of the line before the first separator.
    Separator(Vec<u8>),
}

impl KeyMode {
    /// The key mode the options ask for: `--key`, else `--key-separator`, else Kafka's
    /// `parse.key=true` with its `key.separator` (a tab unless given).
    pub fn from_args(args: &ProducerArgs) -> KeyMode {
        let mut parse_key = false;
        let mut kafka_separator = "\t".to_owned();
        for property in &args.property {
            match property {
                ProducerProperty::ParseKey(on) => parse_key = *on,
                ProducerProperty::KeySeparator(separator) => kafka_separator = separator.clone(),
            }
        }
        match (&args.key, &args.key_separator) {
            (Some(key), _) => KeyMode::Fixed(key.clone().into_bytes()),
            (None, Some(separator)) => KeyMode::Separator(separator.clone().into_bytes()),
            (None, None) if parse_key => KeyMode::Separator(kafka_separator.into_bytes()),
            (None, None) => KeyMode::None,
        }
    }

    /// The message to send for `line`.
    pub fn message<'a>(&'a self, line: &'a [u8]) -> NewMessage<'a> {
        match self {
            KeyMode::None => NewMessage::new(None, line),
            KeyMode::Fixed(key) => NewMessage::new(Some(key), line),
            KeyMode::Separator(separator) => match find(line, separator) {
                Some(at) => NewMessage::new(Some(&line[..at]), &line[at + separator.len()..]),
                None => NewMessage::new(None, line),
            },
        }
    }
}

/// What a run appended, for the summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    /// The topic appended to.
    pub topic: String,
    /// How many messages were appended.
    pub messages: u64,
    /// The offsets they got, as runs of consecutive offsets of a partition, each partition's
    /// in offset order: other producers' appends in between split them. `(partition, first,
    /// last)`.
    pub ranges: Vec<(u32, u64, u64)>,
    /// Whether the topic is known to have several partitions, so that the summary names them.
    pub partitioned: bool,
    /// How many append requests carried them.
    pub requests: u64,
    /// Whether to mention the request count (standard input, where batching decides it).
    pub show_requests: bool,
    /// How many lines of standard input were not sent because they are over the size limit.
    pub skipped: u64,
    /// How many lines of standard input went out in appends that got no reply, so that they
    /// may or may not have been stored (the producer went on through another endpoint).
    pub unconfirmed: u64,
}

/// How many runs of offsets the summary lists before it only counts the rest.
const SHOWN_RANGES: usize = 3;

impl Produced {
    /// Nothing appended yet.
    fn new(topic: &str, show_requests: bool) -> Produced {
        Produced {
            topic: topic.to_owned(),
            messages: 0,
            ranges: Vec::new(),
            partitioned: false,
            requests: 0,
            show_requests,
            skipped: 0,
            unconfirmed: 0,
        }
    }

    /// Counts one successful append of `count` messages.
    fn add(&mut self, count: usize, appended: &Appended) {
        self.messages += count as u64;
        if appended.placed.is_empty() {
            self.add_range(appended.partition, appended.first_offset, appended.last_offset);
        } else {
            for placed in &appended.placed {
                self.add_range(placed.partition, placed.first_offset, placed.last_offset);
            }
        }
        self.requests += 1;
    }

    /// Adds offsets `first` to `last` of `partition` among the partition's runs, which stay in
    /// offset order (an append sent again, idempotent, can be answered after later ones with
    /// the earlier offsets its first sending got), joining them to the runs they follow on
    /// from or lead into. The run before them is almost always the partition's last.
    fn add_range(&mut self, partition: u32, first: u64, last: u64) {
        if partition != 0 {
            self.partitioned = true;
        }
        let same = |run: &(u32, u64, u64)| run.0 == partition;
        let before = self.ranges.iter().rposition(|run| same(run) && run.1 < first);
        let at = match before {
            Some(i) if self.ranges[i].2 + 1 == first => {
                self.ranges[i].2 = last;
                i
            }
            Some(i) => {
                self.ranges.insert(i + 1, (partition, first, last));
                i + 1
            }
            None => {
                let at = self.ranges.iter().position(same).unwrap_or(self.ranges.len());
                self.ranges.insert(at, (partition, first, last));
                at
            }
        };
        let next = (at + 1..self.ranges.len()).find(|&j| same(&self.ranges[j]));
        if let Some(next) = next.filter(|&j| self.ranges[at].2 + 1 == self.ranges[j].1) {
            self.ranges[at].2 = self.ranges[next].2;
            self.ranges.remove(next);
        }
    }
}

/// How many partitions the summary lists before it only counts the rest.
const SHOWN_PARTITIONS: usize = 8;

/// Runs of offsets as `at offset 4`, `at offsets 4..6, 9` (the first [`SHOWN_RANGES`], then a
/// count).
fn offsets_text(ranges: &[(u64, u64)]) -> String {
    let range = |&(first, last): &(u64, u64)| {
        if first == last {
            first.to_string()
        } else {
            format!("{first}..{last}")
        }
    };
    match ranges {
        [] => String::new(),
        [(first, last)] if first == last => format!("offset {first}"),
        ranges => {
            let shown: Vec<String> = ranges.iter().take(SHOWN_RANGES).map(range).collect();
            let mut text = format!("offsets {}", shown.join(", "));
            if ranges.len() > SHOWN_RANGES {
                text.push_str(&format!(" and {} more ranges", ranges.len() - SHOWN_RANGES));
            }
            text
        }
    }
}

/// # Format
/// `appended N message(s) to TOPIC at offset(s) FIRST..LAST[, FIRST..LAST...][ in K
/// request(s)][; skipped S line(s) over the size limit][; U line(s) unconfirmed]`. Each range
/// is contiguous: when other producers appended in between, the ranges are listed in offset
/// order (the first three, then a count). On a topic of several partitions each partition's
/// offsets follow its number, partitions in order: `at partition 0 offsets 4..6, partition 2
/// offset 0`.
impl fmt::Display for Produced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topic = crate::output::safe(&self.topic);
        write!(f, "appended {} message{} to {topic}", self.messages, plural(self.messages))?;
        let mut partitions: Vec<u32> = self.ranges.iter().map(|(p, _, _)| *p).collect();
        partitions.sort_unstable();
        partitions.dedup();
        let of = |partition: u32| -> Vec<(u64, u64)> {
            let ranges = self.ranges.iter().filter(|(p, _, _)| *p == partition);
            ranges.map(|&(_, first, last)| (first, last)).collect()
        };
        if !self.partitioned && partitions.len() <= 1 {
            if !self.ranges.is_empty() {
                write!(f, " at {}", offsets_text(&of(partitions.first().copied().unwrap_or(0))))?;
            }
        } else {
            let shown: Vec<String> = partitions
                .iter()
                .take(SHOWN_PARTITIONS)
                .map(|&p| format!("partition {p} {}", offsets_text(&of(p))))
                .collect();
            write!(f, " at {}", shown.join(", "))?;
            if partitions.len() > SHOWN_PARTITIONS {
                write!(f, " and {} more partitions", partitions.len() - SHOWN_PARTITIONS)?;
            }
        }
        if self.show_requests {
            write!(f, " in {} request{}", self.requests, plural(self.requests))?;
        }
        if self.skipped > 0 {
            write!(
                f,
                "; skipped {} line{} over the size limit",
                self.skipped,
                plural(self.skipped)
            )?;
        }
        if self.unconfirmed > 0 {
            write!(f, "; {} line{} unconfirmed", self.unconfirmed, plural(self.unconfirmed))?;
        }
        Ok(())
    }
}

/// Runs the producer: appends the messages given, or standard input, and prints the summary.
///
/// # Errors
/// An invalid topic name (found before connecting), an unreachable broker, a refused append or
/// unreadable input. What was appended before a failure is still printed.
pub fn run(mut args: ProducerArgs, shutdown: &Shutdown) -> Result<()> {
    if let Some(topic) = args.topic_flag.take() {
        // With --topic, what parsing took for the topic is the first message.
        args.messages.splice(0..0, args.topic.take());
        args.topic = Some(topic);
    }
    let topic = match (&args.command, &args.topic) {
        (Some(ProducerCommand::Perf(perf)), _) => {
            return perf::produce(&args.connection, perf, shutdown)
        }
        (None, Some(topic)) => topic.as_str(),
        // Argument parsing requires a topic when there is no command.
        (None, None) => "",
    };
    validate_topic_name(topic)
        .map_err(|source| ClientError::InvalidTopic { name: topic.to_owned(), source })?;
    let schema = match &args.value_schema {
        Some(path) => Some(ValueSchema::read(path).map_err(|e| usage("--value-schema", e))?),
        None => None,
    };
    let mut client = args.connection.client(shutdown)?;
    let keys = KeyMode::from_args(&args);
    if args.headers.len() > protocol::MAX_MESSAGE_HEADERS {
        return Err(usage(
            "--header",
            format!("a message may have at most {} headers", protocol::MAX_MESSAGE_HEADERS),
        ));
    }
    let headers: Vec<Header<'_>> = args
        .headers
        .iter()
        .map(|(key, value)| Header { key, value: value.as_deref().map(str::as_bytes) })
        .collect();
    let idempotence = if args.no_idempotence { None } else { Some(Idempotence::new()?) };
    let mut produced = Produced::new(topic, args.messages.is_empty());
    let mut placer = Placer::new(args.partition);
    let result = if args.messages.is_empty() {
        if io::stdin().is_terminal() {
            eprintln!("type one message per line; Ctrl-D (or Ctrl-C) sends what is left and ends");
        }
        let batching = Batching {
            topic,
            keys: &keys,
            headers: &headers,
            max_messages: args.batch,
            schema: schema.as_ref(),
            idempotence: idempotence.as_ref(),
        };
        match args.pipeline.options(args.batch as usize, idempotence.is_some()) {
            Some(options) => {
                let mut pipelined = Pipelined::new(&client, &batching, options)?;
                pipelined.run(&mut client, &mut placer, io::stdin(), shutdown, &mut produced)
            }
            None => produce_lines(
                &mut client,
                &batching,
                &mut placer,
                io::stdin(),
                shutdown,
                &mut produced,
            ),
        }
    } else {
        if let Some(schema) = &schema {
            for (i, m) in args.messages.iter_mut().enumerate() {
                let wrapped = wrap(schema, &keys, m.as_bytes().to_vec())
                    .map_err(|e| usage("--value-schema", format!("message {}: {e}", i + 1)))?;
                *m = String::from_utf8(wrapped).unwrap_or_default();
            }
        }
        let messages: Vec<NewMessage<'_>> = args
            .messages
            .iter()
            .map(|m| NewMessage { headers: headers.clone(), ..keys.message(m.as_bytes()) })
            .collect();
        let idempotence = idempotence.as_ref();
        append_placed(&mut client, topic, &mut placer, messages, idempotence, &mut produced)
    };
    produced.partitioned |= placer.fixed.is_some() || placer.partitions.is_some_and(|n| n > 1);
    if result.is_ok() || produced.messages > 0 {
        writeln!(io::stdout(), "{produced}").map_err(ClientError::output)?;
    }
    if matches!(result, Err(ClientError::Interrupted)) {
        eprintln!("interrupted while waiting for the broker: the last append may have been stored");
    }
    result
}

/// Where the producer sends each message: to the partition the user named, or, for a message
/// with a key, to the one Kafka's default partitioner gives the key among the topic's
/// partitions (so that a key's messages stay on one partition, in order, and the producer can
/// say where each went). A message without a key goes where the broker puts it.
///
/// The partition count comes from the broker's topic list, which is read under a claim taken
/// and given back at once. When that cannot be had (every logical broker is claimed, or the
/// user may not list topics) keyed messages go where the broker puts them too: it places them
/// by the same hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placer {
    /// `--partition`: every message goes there.
    fixed: Option<u32>,
    /// The topic's partition count, once known.
    partitions: Option<u32>,
    /// How many more times to ask for the count: once at first, once more after an append
    /// that made the topic.
    lookups: u8,
}

impl Placer {
    /// A placer sending everything to `fixed` when given.
    pub fn new(fixed: Option<u32>) -> Placer {
        Placer { fixed, partitions: None, lookups: 2 }
    }

    /// The partition to name in the append for `message`; `None` leaves it to the broker. On
    /// a topic of one partition everything goes to partition 0, in one append, so that the
    /// lines keep their order whether they have keys or not.
    fn partition(&self, message: &NewMessage<'_>) -> Option<u32> {
        self.fixed.or_else(|| match (message.key, self.partitions?) {
            (_, 1) => Some(0),
            (Some(key), partitions) => Some(partition_for_key(key, partitions)),
            (None, _) => None,
        })
    }

    /// Learns `topic`'s partition count when keyed messages need it and it is not known yet.
    ///
    /// # Errors
    /// The broker did not answer, or Ctrl-C; a refusal only leaves the placing to the broker.
    fn learn(&mut self, client: &mut Client, topic: &str) -> Result<()> {
        if self.fixed.is_some() || self.partitions.is_some() || self.lookups == 0 {
            return Ok(());
        }
        self.lookups -= 1;
        let topics = client.topics();
        match topics {
            Ok(topics) => {
                self.partitions =
                    topics.iter().find(|t| t.name == topic).map(|t| t.partitions.max(1));
                Ok(())
            }
            Err(e) if e.broker_code().is_some() => {
                debug!("no partition count for {topic} ({e}); the broker places keyed messages");
                self.lookups = 0;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// `items` split by the partition each goes to (`None`: where the broker puts it), each group
/// in the order of `items`, the groups in the order of their first item.
fn split<T>(items: Vec<T>, partition: impl Fn(&T) -> Option<u32>) -> Vec<(Option<u32>, Vec<T>)> {
    let mut groups: Vec<(Option<u32>, Vec<T>)> = Vec::new();
    for item in items {
        let partition = partition(&item);
        match groups.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, group)) => group.push(item),
            None => groups.push((partition, vec![item])),
        }
    }
    groups
}

/// Appends `messages`, given on the command line, each to the partition `placer` gives it: one
/// append per partition, each marked by `idempotence` when given.
///
/// # Errors
/// A refused or unconfirmed append; those before it stay counted in `produced`.
fn append_placed(
    client: &mut Client,
    topic: &str,
    placer: &mut Placer,
    messages: Vec<NewMessage<'_>>,
    idempotence: Option<&Idempotence>,
    produced: &mut Produced,
) -> Result<()> {
    if messages.iter().any(|m| m.key.is_some()) {
        placer.learn(client, topic)?;
    }
    for (partition, group) in split(messages, |m| placer.partition(m)) {
        let count = group.len();
        let mark = idempotence.map(Idempotence::next);
        let appended = append_retrying(client, topic, partition, group, mark)?;
        produced.add(count, &appended);
    }
    Ok(())
}

/// How lines become appends.
#[derive(Debug, Clone)]
pub struct Batching<'a> {
    /// The topic to append to.
    pub topic: &'a str,
    /// How each line gets its key.
    pub keys: &'a KeyMode,
    /// The headers every message gets (`--header`).
    pub headers: &'a [Header<'a>],
    /// At most this many messages per append.
    pub max_messages: u32,
    /// With `--value-schema`: each value goes in Connect's envelope with this schema.
    pub schema: Option<&'a ValueSchema>,
    /// The marks of an idempotent producer, unless `--no-idempotence`: each new append gets
    /// the next, and keeps it for every copy.
    pub idempotence: Option<&'a Idempotence>,
}

impl<'a> Batching<'a> {
    /// The message to send for `line`: its key as `keys` says, and the headers.
    fn message(&self, line: &'a [u8]) -> NewMessage<'a> {
        NewMessage { headers: self.headers.to_vec(), ..self.keys.message(line) }
    }
}

/// An error in what the user gave, named after `what`.
fn usage(what: &'static str, reason: String) -> ClientError {
    ClientError::Io { what, source: io::Error::new(io::ErrorKind::InvalidInput, reason) }
}

/// `line` with its value (after the key, when the line carries one) in `schema`'s envelope.
fn wrap(
    schema: &ValueSchema,
    keys: &KeyMode,
    line: Vec<u8>,
) -> std::result::Result<Vec<u8>, String> {
    if let KeyMode::Separator(separator) = keys {
        if let Some(at) = find(&line, separator) {
            let split = at + separator.len();
            let mut out = line[..split].to_vec();
            out.extend(schema.wrap(&line[split..])?);
            return Ok(out);
        }
    }
    schema.wrap(&line)
}

/// Reads `input` one message per line until its end or Ctrl-C and appends the lines in
/// batches, adding each append to `produced`.
///
/// After Ctrl-C the lines already read are still sent; the line being typed is not. An
/// idempotent append that got no reply is sent again, with its mark, within the timeout (see
/// [`append_retrying`]); one that is not idempotent is not (it may have been stored). When an
/// append is left unconfirmed and the client moved to another endpoint that may answer, its
/// lines are reported on standard error and counted, and the next lines go there.
///
/// # Errors
/// A failed append (the lines after it are not sent), a read error (after sending the lines
/// read before it), or, at the end, lines unconfirmed or skipped for their size.
pub fn produce_lines(
    client: &mut Client,
    batching: &Batching<'_>,
    placer: &mut Placer,
    input: impl Read + Send + 'static,
    shutdown: &Shutdown,
    produced: &mut Produced,
) -> Result<()> {
    let mut lines = Lines::read(input, shutdown);
    let max_messages = batching.max_messages.max(1) as usize;
    let mut stopping = false;
    let mut read_error = None;
    let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut line_number = 0;
    let mut limit = None;
    while !stopping {
        batch.clear();
        let mut bytes = 0;
        // Wait for the first line of a batch; take the rest only if they are there already.
        let mut block = true;
        while batch.len() < max_messages && bytes < BATCH_BYTES {
            match lines.next(block) {
                Next::Line(line) => {
                    line_number += 1;
                    let wrapped = match batching.schema {
                        Some(schema) => wrap(schema, batching.keys, line),
                        None => Ok(line),
                    };
                    let line = match wrapped {
                        Ok(line) => line,
                        Err(e) => {
                            eprintln!("line {line_number}: {e}; not sent");
                            produced.skipped += 1;
                            continue;
                        }
                    };
                    bytes += line.len();
                    batch.push((line_number, line));
                }
                Next::Failed(e) => {
                    read_error = Some(e);
                    stopping = true;
                    break;
                }
                Next::End => {
                    stopping = true;
                    break;
                }
                Next::Empty => break,
            }
            block = false;
        }
        if !batch.is_empty() {
            debug!(messages = batch.len(), bytes, "sending a batch");
            let keyed = batch.iter().any(|(_, line)| batching.message(line).key.is_some());
            if keyed {
                placer.learn(client, batching.topic)?;
            }
            let appended_before = produced.requests;
            let lines = std::mem::take(&mut batch);
            let groups = split(lines, |(_, line)| placer.partition(&batching.message(line)));
            for (partition, mut group) in groups {
                send_lines(client, batching, partition, &mut group, &mut limit, produced)?;
            }
            if keyed && produced.requests > appended_before {
                // The first append may have made the topic: its count can be known now.
                placer.learn(client, batching.topic)?;
            }
        }
    }
    match read_error {
        Some(source) => Err(ClientError::Io { what: "cannot read standard input", source }),
        None if produced.unconfirmed > 0 => {
            Err(ClientError::LinesUnconfirmed { count: produced.unconfirmed })
        }
        None if produced.skipped > 0 => Err(ClientError::LinesSkipped { count: produced.skipped }),
        None => Ok(()),
    }
}

/// The pipelined reading of standard input (`--max-in-flight`): each line is given to a
/// [`Pipeline`] as it comes, tagged with its line number, and each [`Outcome`] is reported as
/// the lockstep path reports an append: its offsets in the summary, or its error with the lines
/// it affected.
///
/// The lines of an append stay here until its outcome, so that one refused for a line over
/// the broker's size limit can go again without that line (they then come after what was sent
/// meanwhile). A refusal or an unconfirmed append ends the reading; what is in flight is still
/// awaited and reported. An append left unconfirmed by a move to the next endpoint does not:
/// its lines are reported and counted, and the reading goes on. Ctrl-C ends the reading too,
/// as on the lockstep path.
struct Pipelined<'a> {
    /// The pipeline.
    pipeline: Pipeline,
    /// How lines become messages.
    batching: &'a Batching<'a>,
    /// The lines given and not yet decided, by line number.
    lines: std::collections::HashMap<u64, Vec<u8>>,
    /// The broker's size limit, once a refusal has told it.
    limit: Option<usize>,
    /// The first error that ends the run.
    failure: Option<ClientError>,
}

impl<'a> Pipelined<'a> {
    /// A pipeline of `client`'s connection appending to the batching's topic.
    fn new(
        client: &Client,
        batching: &'a Batching<'a>,
        options: PipelineOptions,
    ) -> Result<Pipelined<'a>> {
        Ok(Pipelined {
            pipeline: Pipeline::open(client, batching.topic, options)?,
            batching,
            lines: std::collections::HashMap::new(),
            limit: None,
            failure: None,
        })
    }

    /// Reads `input` one message per line until its end, Ctrl-C or a failure, then waits for
    /// every outcome.
    ///
    /// # Errors
    /// As [`produce_lines`].
    fn run(
        &mut self,
        client: &mut Client,
        placer: &mut Placer,
        input: impl Read + Send + 'static,
        shutdown: &Shutdown,
        produced: &mut Produced,
    ) -> Result<()> {
        let mut lines = Lines::read(input, shutdown);
        let mut read_error = None;
        let mut line_number = 0;
        let mut learnt = placer.partitions.is_some() || placer.fixed.is_some();
        while self.failure.is_none() {
            let line = match lines.next(false) {
                Next::Line(line) => line,
                Next::Empty => {
                    // Nothing to read now: let lingering appends go and replies come.
                    self.pipeline.tick(LINE_POLL.min(Duration::from_millis(10)))?;
                    self.take(produced);
                    continue;
                }
                Next::Failed(e) => {
                    read_error = Some(e);
                    break;
                }
                Next::End => break,
            };
            line_number += 1;
            let line = match self.batching.schema {
                Some(schema) => match wrap(schema, self.batching.keys, line) {
                    Ok(line) => line,
                    Err(e) => {
                        eprintln!("line {line_number}: {e}; not sent");
                        produced.skipped += 1;
                        continue;
                    }
                },
                None => line,
            };
            let message = self.batching.message(&line);
            let size = message.size();
            if self.limit.is_some_and(|limit| size > limit) {
                skip_line(line_number, size, self.limit, produced);
                continue;
            }
            if message.key.is_some() && !learnt {
                placer.learn(client, self.batching.topic)?;
                if placer.partitions.is_some() {
                    // Keyed lines now go to their partition's lane: what was gathered for
                    // the broker to place goes first.
                    self.pipeline.close_open();
                    learnt = true;
                }
            }
            let partition = placer.partition(&message);
            self.pipeline.send(partition, message, line_number)?;
            self.lines.insert(line_number, line);
            self.take(produced);
        }
        self.pipeline.flush()?;
        self.take(produced);
        // Lines sent again without one over the size limit.
        while self.pipeline.pending() > 0 && self.failure.is_none() {
            self.pipeline.flush()?;
            self.take(produced);
        }
        if let Some(failure) = self.failure.take() {
            return Err(match failure {
                ClientError::Unconfirmed { cause, .. } => {
                    ClientError::Unconfirmed { count: produced.unconfirmed as usize, cause }
                }
                other => other,
            });
        }
        match read_error {
            Some(source) => Err(ClientError::Io { what: "cannot read standard input", source }),
            None if produced.unconfirmed > 0 => {
                Err(ClientError::LinesUnconfirmed { count: produced.unconfirmed })
            }
            None if produced.skipped > 0 => {
                Err(ClientError::LinesSkipped { count: produced.skipped })
            }
            None => Ok(()),
        }
    }

    /// Reports every outcome decided.
    fn take(&mut self, produced: &mut Produced) {
        while let Some(outcome) = self.pipeline.outcome() {
            self.report(outcome, produced);
        }
    }

    /// Reports one outcome: counts an append, or says which lines an error affected.
    fn report(&mut self, outcome: Outcome, produced: &mut Produced) {
        let Outcome { tags, partition, result, sent_again } = outcome;
        let mut lines: Vec<(u64, Vec<u8>)> =
            tags.iter().map(|&n| (n, self.lines.remove(&n).unwrap_or_default())).collect();
        match result {
            Ok(appended) => {
                if sent_again {
                    // Their place against the lines given after them is not known: say so.
                    eprintln!(
                        "{}: appended when sent again with the same producer and sequence; they \
                         may follow lines sent after them",
                        line_span(&tags)
                    );
                }
                produced.add(lines.len(), &appended);
            }
            Err(ClientError::Broker { code: ErrorCode::MessageTooLarge, reason, .. }) => {
                let size = |line: &[u8]| self.batching.message(line).size();
                match too_large(&reason) {
                    Some((index, limit)) if index < lines.len() => {
                        self.limit = Some(limit);
                        lines.retain(|(number, line)| {
                            let over = size(line) > limit;
                            if over {
                                skip_line(*number, size(line), Some(limit), produced);
                            }
                            !over
                        });
                    }
                    _ if lines.len() == 1 => {
                        let (number, line) = lines.remove(0);
                        skip_line(number, size(&line), None, produced);
                    }
                    // Without the line named, each goes alone.
                    _ => {}
                }
                for (number, line) in lines {
                    let message = self.batching.message(&line);
                    if let Err(e) = self.pipeline.send(partition, message, number) {
                        self.failure.get_or_insert(e);
                        return;
                    }
                    self.lines.insert(number, line);
                    // A batch of several lines refused with no line named goes one by one.
                    self.pipeline.close_open();
                }
            }
            Err(e) => {
                let which = line_span(&tags);
                match &e {
                    // Left behind by a move to the next endpoint: counted, and the lines after
                    // it go on there, as on the lockstep path.
                    ClientError::Unconfirmed { .. } if self.pipeline.has_fresh_endpoint() => {
                        eprintln!("{which}: {e}; not sent again");
                        produced.unconfirmed += tags.len() as u64;
                        return;
                    }
                    ClientError::Unconfirmed { .. } => {
                        eprintln!("{which}: {e}");
                        produced.unconfirmed += tags.len() as u64;
                    }
                    // The broker could not tell whether its store kept them: not "not appended".
                    e if may_be_stored(e) => {
                        eprintln!("{which}: {e}");
                        produced.unconfirmed += tags.len() as u64;
                    }
                    _ => eprintln!("{which}: not appended: {e}"),
                }
                self.failure.get_or_insert(e);
            }
        }
    }
}

/// The lines of one pipelined append, by their numbers, as its reports name them: `line 6`,
/// `3 lines from line 6 to 8`.
fn line_span(tags: &[u64]) -> String {
    match (tags.first(), tags.last()) {
        (Some(first), Some(last)) if first != last => {
            format!("{} lines from line {first} to {last}", tags.len())
        }
        (Some(first), _) => format!("line {first}"),
        _ => "no line".to_owned(),
    }
}

/// Appends `batch`, numbered lines of standard input, leaving out each line over the broker's
/// size limit with a note on standard error, so that one long line does not cost the others.
///
/// An append is all or nothing, so a refused one is sent again without the line it names.
/// The broker's reason names the line and the limit (`message I of the batch is S bytes; the
/// limit is L`); once known, the limit is checked here first, in `limit`. A reason that does
/// not read so is handled by sending the lines one by one.
///
/// An append that got no reply while the client has another endpoint to go to is reported
/// with its line numbers and counted in `produced`, and is no error.
///
/// # Errors
/// A failed append other than a line too large or one the producer goes on after.
fn send_lines(
    client: &mut Client,
    batching: &Batching<'_>,
    partition: Option<u32>,
    batch: &mut Vec<(u64, Vec<u8>)>,
    limit: &mut Option<usize>,
    produced: &mut Produced,
) -> Result<()> {
    let size = |line: &[u8]| batching.message(line).size();
    loop {
        if let Some(limit) = *limit {
            batch.retain(|(number, line)| {
                let over = size(line) > limit;
                if over {
                    skip_line(*number, size(line), Some(limit), produced);
                }
                !over
            });
        }
        if batch.is_empty() {
            return Ok(());
        }
        let messages = batch.iter().map(|(_, line)| batching.message(line)).collect();
        // A new append each time round: after a line too large it holds other lines, so it
        // is no copy of the one refused and gets a sequence of its own.
        let mark = batching.idempotence.map(Idempotence::next);
        let reason = match append_retrying(client, batching.topic, partition, messages, mark) {
            Ok(appended) => {
                produced.add(batch.len(), &appended);
                return Ok(());
            }
            Err(ClientError::Broker { code: ErrorCode::MessageTooLarge, reason, .. }) => reason,
            Err(e @ ClientError::Unconfirmed { .. }) if client.has_fresh_endpoint() => {
                let (first, last) = (batch[0].0, batch[batch.len() - 1].0);
                let lines = if first == last {
                    format!("line {first}")
                } else {
                    format!("lines {first} to {last}")
                };
                eprintln!("{lines}: {e}; not sent again");
                produced.unconfirmed += batch.len() as u64;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match too_large(&reason) {
            Some((index, broker_limit)) if index < batch.len() => *limit = Some(broker_limit),
            _ if batch.len() == 1 => {
                let (number, line) = batch.remove(0);
                skip_line(number, size(&line), None, produced);
            }
            _ => {
                for line in std::mem::take(batch) {
                    send_lines(client, batching, partition, &mut vec![line], limit, produced)?;
                }
            }
        }
    }
}

/// Appends `messages`, sending them again, with a growing pause, while the broker refuses them
/// with a `314 store_unavailable` that says nothing was appended (a shared store that cannot
/// be reached for a moment, an election), until the client's timeout runs out, as Kafka's
/// producers retry retriable errors.
///
/// With `mark` (an idempotent producer's), every copy carries it, so the broker stores the
/// messages at most once and answers a copy with the offsets the first sending got: what
/// leaves the outcome in doubt is sent again too, within the same timeout counted from the
/// first sending (and never past [`COPY_WINDOW`], inside the two minutes the broker remembers
/// a mark): a `314` that cannot say whether they were appended, `317 in_progress` (a copy came
/// while the first sending was being stored), and no reply at all when the client has an
/// endpoint left that has not been silent ([`Client::append_sequenced`] has already sent it
/// once more on a fresh socket). Without a mark those are not sent again.
fn append_retrying(
    client: &mut Client,
    topic: &str,
    partition: Option<u32>,
    messages: Vec<NewMessage<'_>>,
    mark: Option<Sequenced>,
) -> Result<Appended> {
    let deadline = std::time::Instant::now() + client.timeout().min(COPY_WINDOW);
    let mut pause = Duration::from_millis(10);
    let count = messages.len();
    // Once a sending may have stored them, a copy's refusal does not say they were not.
    let mut in_doubt = false;
    loop {
        let result = match mark {
            Some(mark) => client.append_sequenced(topic, partition, messages.clone(), mark),
            None => client.append(topic, partition, messages.clone()),
        };
        let result = if in_doubt { result.map_err(|e| e.left_in_doubt(count)) } else { result };
        let note = match &result {
            Err(ClientError::Broker { code: ErrorCode::StoreUnavailable, reason, .. })
                if reason.ends_with("nothing was appended") =>
            {
                format!("the broker's store refused the messages ({reason}); sending again")
            }
            Err(_) if mark.is_none() => return result,
            Err(ClientError::Broker { code: ErrorCode::InProgress, .. }) => {
                "the broker is still storing the first sending; asking again".to_owned()
            }
            Err(e) if may_be_stored(e) => {
                in_doubt = true;
                format!("{e}; sending again with the same producer and sequence")
            }
            Err(e @ ClientError::Unconfirmed { .. }) if client.has_fresh_endpoint() => {
                in_doubt = true;
                format!("{e}; sending again with the same producer and sequence")
            }
            _ => return result,
        };
        if std::time::Instant::now() + pause >= deadline {
            return result;
        }
        eprintln!("{note}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Whether a refusal leaves the append's outcome unknown: a `314 store_unavailable` that does
/// not say nothing was appended (its store's acknowledgement did not come), so the messages
/// may have been stored, or a `317 in_progress` (a copy of an idempotent append whose first
/// sending is still being stored).
fn may_be_stored(error: &ClientError) -> bool {
    match error {
        ClientError::Broker { code: ErrorCode::StoreUnavailable, reason, .. } => {
            !reason.ends_with("nothing was appended")
        }
        ClientError::Broker { code: ErrorCode::InProgress, .. } => true,
        _ => false,
    }
}

/// Says on standard error that line `number`, of `size` bytes, is not sent, and counts it.
fn skip_line(number: u64, size: usize, limit: Option<usize>, produced: &mut Produced) {
    produced.skipped += 1;
    match limit {
        Some(limit) => eprintln!(
            "line {number} is {size} bytes; the limit is {limit} (broker --max-message-bytes); \
             not sent"
        ),
        None => eprintln!(
            "line {number} is {size} bytes, over the broker's limit (broker \
             --max-message-bytes); not sent"
        ),
    }
}

/// The index of the refused message and the limit, from a `message_too_large` reason.
fn too_large(reason: &str) -> Option<(usize, usize)> {
    let index = reason.strip_prefix("message ")?.split(' ').next()?.parse().ok()?;
    let limit = reason.rsplit("the limit is ").next()?.trim().parse().ok()?;
    Some((index, limit))
}

/// What the reading thread sends: the complete lines of one read, or the read's failure.
type Chunk = io::Result<Vec<Vec<u8>>>;

/// What the line source gave.
enum Next {
    /// A line, without its line ending.
    Line(Vec<u8>),
    /// Reading failed.
    Failed(io::Error),
    /// The input ended, or Ctrl-C was pressed and the lines read before it have been taken.
    End,
    /// No line is waiting (only when not blocking).
    Empty,
}

/// The receiving end of the reading thread, aware of Ctrl-C.
struct Lines<'a> {
    /// Chunks of lines from the reading thread.
    receiver: Receiver<Chunk>,
    /// Set by Ctrl-C.
    shutdown: &'a Shutdown,
    /// Lines of the last chunk not taken yet.
    pending: VecDeque<Vec<u8>>,
    /// Chunks taken since Ctrl-C was seen.
    chunks_after_signal: usize,
}

impl<'a> Lines<'a> {
    /// The lines of `input`, read on a thread of their own, until Ctrl-C sets `shutdown`.
    fn read(input: impl Read + Send + 'static, shutdown: &'a Shutdown) -> Lines<'a> {
        Lines {
            receiver: spawn_reader(input),
            shutdown,
            pending: VecDeque::new(),
            chunks_after_signal: 0,
        }
    }

    /// The next line: waiting for one if `block`, looking at the Ctrl-C flag meanwhile.
    fn next(&mut self, block: bool) -> Next {
        if let Some(line) = self.pending.pop_front() {
            return Next::Line(line);
        }
        let chunk = match self.receive(block) {
            Ok(chunk) => chunk,
            Err(next) => return next,
        };
        match chunk {
            Ok(lines) => {
                self.pending.extend(lines);
                // A chunk always holds at least one line.
                self.pending.pop_front().map_or(Next::Empty, Next::Line)
            }
            Err(e) => Next::Failed(e),
        }
    }

    /// The next chunk, or what to report instead.
    ///
    /// After Ctrl-C only chunks already queued are taken, never more than the queue holds, so
    /// that an endless pipe cannot keep the program going; then it reports the end.
    fn receive(&mut self, block: bool) -> std::result::Result<Chunk, Next> {
        loop {
            if self.shutdown.is_signalled() {
                self.chunks_after_signal += 1;
                if self.chunks_after_signal > QUEUED_CHUNKS {
                    return Err(Next::End);
                }
                return self.receiver.try_recv().map_err(|_| Next::End);
            }
            if !block {
                return self.receiver.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => Next::Empty,
                    TryRecvError::Disconnected => Next::End,
                });
            }
            match self.receiver.recv_timeout(LINE_POLL) {
                Ok(chunk) => return Ok(chunk),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(Next::End),
            }
        }
    }
}

/// Reads `input` on a thread and sends the complete lines of each read as one chunk; a last
/// line without a line ending is sent at the end of input. The thread ends at the end of
/// input, on a read error (sent as the last item), or when the receiver is gone; a thread
/// blocked on a terminal read when the program ends simply ends with it.
fn spawn_reader(mut input: impl Read + Send + 'static) -> Receiver<Chunk> {
    let (sender, receiver) = mpsc::sync_channel(QUEUED_CHUNKS);
    thread::spawn(move || {
        let mut buffer = vec![0; READ_BYTES];
        let mut partial = Vec::new();
        loop {
            let read = match input.read(&mut buffer) {
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = sender.send(Err(e));
                    break;
                }
            };
            if read == 0 {
                if !partial.is_empty() {
                    strip_line_ending(&mut partial);
                    let _ = sender.send(Ok(vec![partial]));
                }
                break;
            }
            let lines = split_lines(&buffer[..read], &mut partial);
            if !lines.is_empty() && sender.send(Ok(lines)).is_err() {
                break;
            }
        }
    });
    receiver
}

/// The complete lines in `partial` followed by `data`, without their line endings; what
/// follows the last line ending is left in `partial`.
fn split_lines(data: &[u8], partial: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut rest = data;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        partial.extend_from_slice(&rest[..=end]);
        strip_line_ending(partial);
        lines.push(std::mem::take(partial));
        rest = &rest[end + 1..];
    }
    partial.extend_from_slice(rest);
    lines
}

/// Removes a trailing `\n` or `\r\n`.
fn strip_line_ending(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
}

/// The position of the first `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_refusal_that_cannot_say_what_was_stored_leaves_the_lines_unconfirmed() {
        let refusal = |reason: &str| ClientError::Broker {
            code: ErrorCode::StoreUnavailable,
            reason: reason.to_owned(),
            range: None,
        };
        assert!(may_be_stored(&refusal(
            "could not confirm that the messages were stored (JetStream refused: timed out: \
             didn't receive ack in time); they may have been appended or not"
        )));
        assert!(!may_be_stored(&refusal(
            "the store cannot be reached (NATS is not reachable); nothing was appended"
        )));
        let other = ClientError::Broker {
            code: ErrorCode::MessageTooLarge,
            reason: "message 0 of the batch is 9 bytes; the limit is 8".to_owned(),
            range: None,
        };
        assert!(!may_be_stored(&other));
    }

    #[test]
    fn keys_from_a_separator_or_fixed() {
        let sep = KeyMode::Separator(b"::".to_vec());
        assert_eq!(sep.message(b"k::v::w"), NewMessage::new(Some(b"k"), b"v::w"));
        assert_eq!(sep.message(b"::v"), NewMessage::new(Some(b""), b"v"));
        assert_eq!(sep.message(b"plain"), NewMessage::new(None, b"plain"));
        let fixed = KeyMode::Fixed(b"id".to_vec());
        assert_eq!(fixed.message(b"v"), NewMessage::new(Some(b"id"), b"v"));
        assert_eq!(KeyMode::None.message(b"v"), NewMessage::new(None, b"v"));
    }

    #[test]
    fn line_endings() {
        for (raw, want) in [(&b"a\n"[..], &b"a"[..]), (b"a\r\n", b"a"), (b"a", b"a"), (b"\n", b"")]
        {
            let mut line = raw.to_vec();
            strip_line_ending(&mut line);
            assert_eq!(line, want);
        }
    }

    #[test]
    fn reads_become_lines() {
        let mut partial = Vec::new();
        assert_eq!(split_lines(b"a\nb\r\nc", &mut partial), [&b"a"[..], b"b"]);
        assert_eq!(partial, b"c");
        assert_eq!(split_lines(b"d\n\n", &mut partial), [&b"cd"[..], b""]);
        assert!(partial.is_empty());
    }

    fn at(partition: u32, first_offset: u64, last_offset: u64) -> Appended {
        Appended { partition, first_offset, last_offset, placed: Vec::new() }
    }

    #[test]
    fn summaries_name_partitions_on_a_topic_of_several() {
        let mut p = Produced::new("t", false);
        p.add(2, &at(0, 4, 5));
        p.add(1, &at(2, 0, 0));
        p.add(2, &at(0, 6, 7));
        p.add(1, &at(2, 3, 3));
        assert_eq!(
            p.to_string(),
            "appended 6 messages to t at partition 0 offsets 4..7, partition 2 offsets 0, 3"
        );
        let mut placed = at(1, 9, 9);
        placed.placed = vec![
            protocol::Placement { partition: 1, first_offset: 9, last_offset: 9 },
            protocol::Placement { partition: 3, first_offset: 0, last_offset: 1 },
        ];
        let mut q = Produced::new("t", false);
        q.add(3, &placed);
        assert_eq!(
            q.to_string(),
            "appended 3 messages to t at partition 1 offset 9, partition 3 offsets 0..1"
        );
        let mut r = Produced::new("t", false);
        r.partitioned = true;
        r.add(1, &at(0, 0, 0));
        assert_eq!(r.to_string(), "appended 1 message to t at partition 0 offset 0");
    }

    #[test]
    fn keyed_messages_go_where_kafka_puts_them_unless_a_partition_is_named() {
        let mut placer = Placer::new(None);
        let keyed = |key: &'static [u8]| NewMessage::new(Some(key), b"v");
        let plain = NewMessage::new(None, b"v");
        // The count unknown: the broker places everything.
        assert_eq!(placer.partition(&keyed(b"k")), None);
        placer.partitions = Some(6);
        for key in [&b"21"[..], b"foobar", b"abc", b""] {
            assert_eq!(placer.partition(&keyed(key)), Some(partition_for_key(key, 6)));
        }
        assert_eq!(placer.partition(&plain), None);
        let one = Placer { partitions: Some(1), ..Placer::new(None) };
        assert_eq!((one.partition(&keyed(b"a")), one.partition(&plain)), (Some(0), Some(0)));
        let messages = vec![keyed(b"a"), plain.clone(), keyed(b"b"), keyed(b"a"), plain.clone()];
        let groups = split(messages, |m| placer.partition(m));
        let total: usize = groups.iter().map(|(_, g)| g.len()).sum();
        assert_eq!(total, 5);
        for (partition, group) in &groups {
            for m in group {
                assert_eq!(placer.partition(m), *partition);
            }
        }
        assert_eq!(groups[0].0, Some(partition_for_key(b"a", 6)));
        let fixed = Placer::new(Some(4));
        assert_eq!(fixed.partition(&keyed(b"a")), Some(4));
        assert_eq!(fixed.partition(&plain), Some(4));
    }

    #[test]
    fn summaries() {
        let mut p = Produced::new("t", false);
        assert_eq!(p.to_string(), "appended 0 messages to t");
        p.add(1, &at(0, 4, 4));
        assert_eq!(p.to_string(), "appended 1 message to t at offset 4");
        p.add(2, &at(0, 5, 6));
        p.show_requests = true;
        assert_eq!(p.to_string(), "appended 3 messages to t at offsets 4..6 in 2 requests");
        p.add(1, &at(0, 9, 9));
        p.skipped = 1;
        assert_eq!(
            p.to_string(),
            "appended 4 messages to t at offsets 4..6, 9 in 3 requests; skipped 1 line over the \
             size limit"
        );
        p.unconfirmed = 2;
        assert!(p.to_string().ends_with("size limit; 2 lines unconfirmed"), "{p}");
        p.unconfirmed = 0;
        for offset in [11, 13, 15] {
            p.add(1, &at(0, offset, offset));
        }
        assert!(p.to_string().contains("at offsets 4..6, 9, 11 and 2 more ranges"), "{p}");
        // Offsets answered late (a copy gets its first sending's) go in their place.
        let mut q = Produced::new("t", false);
        for (first, last) in [(50, 99), (0, 9), (20, 29), (10, 19), (100, 100)] {
            q.add((last - first + 1) as usize, &at(0, first, last));
        }
        assert_eq!(q.to_string(), "appended 81 messages to t at offsets 0..29, 50..100");
        q.add(1, &at(2, 5, 5));
        q.add(20, &at(0, 30, 49));
        q.add(1, &at(2, 4, 4));
        assert_eq!(
            q.to_string(),
            "appended 103 messages to t at partition 0 offsets 0..100, partition 2 offsets 4..5"
        );
        assert_eq!(
            too_large("message 1 of the batch is 2097152 bytes; the limit is 1048576"),
            Some((1, 1_048_576))
        );
        assert_eq!(too_large("too big"), None);
    }

    #[test]
    fn arguments() {
        let args = ProducerArgs::try_parse_from(["producer", "t", "a", "b"]).unwrap();
        assert_eq!(args.messages, ["a", "b"]);
        assert_eq!(args.batch, 1000);
        assert_eq!(args.connection.connect, None);
        assert!(ProducerArgs::try_parse_from([
            "producer",
            "--key",
            "k",
            "--key-separator",
            ":",
            "t"
        ])
        .is_err());
        assert!(ProducerArgs::try_parse_from(["producer", "--key-separator", "", "t"]).is_err());
        assert!(ProducerArgs::try_parse_from(["producer"]).is_err());
        let kafka = ProducerArgs::try_parse_from([
            "producer",
            "--topic",
            "t",
            "--property",
            "parse.key=true",
            "a",
        ])
        .unwrap();
        assert_eq!((kafka.topic.as_deref(), kafka.topic_flag.as_deref()), (Some("a"), Some("t")));
        assert_eq!(KeyMode::from_args(&kafka), KeyMode::Separator(b"\t".to_vec()));
    }

    #[test]
    fn perf_is_a_command_but_not_a_message() {
        let parse = |args: &[&str]| ProducerArgs::try_parse_from(args).unwrap();
        let perf = parse(&["producer", "perf", "--messages", "10", "--connect", "tcp://h:1"]);
        assert_eq!(perf.connection.connect.as_deref(), Some("tcp://h:1"));
        let Some(ProducerCommand::Perf(perf)) = perf.command else { panic!("no perf command") };
        assert_eq!((perf.messages, perf.batch, perf.size, perf.clients), (10, 1, 100, 1));
        let message = parse(&["producer", "t", "perf"]);
        assert_eq!((message.topic.as_deref(), message.command), (Some("t"), None));
        assert_eq!(message.messages, ["perf"]);
        let topic = parse(&["producer", "--", "perf", "m"]);
        assert_eq!((topic.topic.as_deref(), topic.command), (Some("perf"), None));
    }
}
