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
use protocol::{validate_topic_name, NewMessage};
use tracing::debug;

use crate::args::{non_empty, ConnectArgs};
use crate::client::{Appended, Client};
use crate::perf::{self, ProducePerfArgs};
use crate::{ClientError, Result, Shutdown};

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
                  The summary line gives the offsets of the first and last message appended.\n\n\
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

    /// Send standard input in appends of at most N messages (and about 1 MiB).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub batch: u32,

    /// The topic to append to; created if it does not exist.
    #[arg(value_name = "TOPIC", required = true)]
    pub topic: Option<String>,

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
    /// The key mode the options ask for.
    pub fn from_args(args: &ProducerArgs) -> KeyMode {
        match (&args.key, &args.key_separator) {
            (Some(key), _) => KeyMode::Fixed(key.clone().into_bytes()),
            (None, Some(separator)) => KeyMode::Separator(separator.clone().into_bytes()),
            (None, None) => KeyMode::None,
        }
    }

    /// The message to send for `line`.
    pub fn message<'a>(&'a self, line: &'a [u8]) -> NewMessage<'a> {
        match self {
            KeyMode::None => NewMessage { key: None, value: line },
            KeyMode::Fixed(key) => NewMessage { key: Some(key), value: line },
            KeyMode::Separator(separator) => match find(line, separator) {
                Some(at) => {
                    NewMessage { key: Some(&line[..at]), value: &line[at + separator.len()..] }
                }
                None => NewMessage { key: None, value: line },
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
    /// The first appended message's offset.
    pub first_offset: Option<u64>,
    /// The last appended message's offset.
    pub last_offset: Option<u64>,
    /// How many append requests carried them.
    pub requests: u64,
    /// Whether to mention the request count (standard input, where batching decides it).
    pub show_requests: bool,
}

impl Produced {
    /// Nothing appended yet.
    fn new(topic: &str, show_requests: bool) -> Produced {
        Produced {
            topic: topic.to_owned(),
            messages: 0,
            first_offset: None,
            last_offset: None,
            requests: 0,
            show_requests,
        }
    }

    /// Counts one successful append of `count` messages.
    fn add(&mut self, count: usize, appended: Appended) {
        self.messages += count as u64;
        self.first_offset.get_or_insert(appended.first_offset);
        self.last_offset = Some(appended.last_offset);
        self.requests += 1;
    }
}

/// # Format
/// `appended N message(s) to TOPIC at offset(s) FIRST..LAST[ in K request(s)]`.
impl fmt::Display for Produced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: u64| if n == 1 { "" } else { "s" };
        write!(f, "appended {} message{} to {}", self.messages, plural(self.messages), self.topic)?;
        match (self.first_offset, self.last_offset) {
            (Some(first), Some(last)) if first == last => write!(f, " at offset {first}")?,
            (Some(first), Some(last)) => write!(f, " at offsets {first}..{last}")?,
            _ => {}
        }
        if self.show_requests {
            write!(f, " in {} request{}", self.requests, plural(self.requests))?;
        }
        Ok(())
    }
}

/// Runs the producer: appends the messages given, or standard input, and prints the summary.
///
/// # Errors
/// An invalid topic name (found before connecting), an unreachable broker, a refused append or
/// unreadable input. What was appended before a failure is still printed.
pub fn run(args: ProducerArgs, shutdown: &Shutdown) -> Result<()> {
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
    let mut client = Client::connect(&args.connection.endpoint()?, args.connection.timeout)?
        .with_shutdown(shutdown.clone());
    let keys = KeyMode::from_args(&args);
    let mut produced = Produced::new(topic, args.messages.is_empty());
    let result = if args.messages.is_empty() {
        if io::stdin().is_terminal() {
            eprintln!("type one message per line; Ctrl-D (or Ctrl-C) sends what is left and ends");
        }
        let batching = Batching { topic, keys: &keys, max_messages: args.batch };
        produce_lines(&mut client, &batching, io::stdin(), shutdown, &mut produced)
    } else {
        let messages = args.messages.iter().map(|m| keys.message(m.as_bytes())).collect();
        client.append(topic, messages).map(|a| produced.add(args.messages.len(), a))
    };
    if result.is_ok() || produced.messages > 0 {
        writeln!(io::stdout(), "{produced}").map_err(ClientError::output)?;
    }
    result
}

/// How lines become appends.
#[derive(Debug, Clone)]
pub struct Batching<'a> {
    /// The topic to append to.
    pub topic: &'a str,
    /// How each line gets its key.
    pub keys: &'a KeyMode,
    /// At most this many messages per append.
    pub max_messages: u32,
}

/// Reads `input` one message per line until its end or Ctrl-C and appends the lines in
/// batches, adding each append to `produced`.
///
/// After Ctrl-C the lines already read are still sent; the line being typed is not.
///
/// # Errors
/// A failed append (the lines after it are not sent) or a read error (after sending the lines
/// read before it).
pub fn produce_lines(
    client: &mut Client,
    batching: &Batching<'_>,
    input: impl Read + Send + 'static,
    shutdown: &Shutdown,
    produced: &mut Produced,
) -> Result<()> {
    let mut lines = Lines {
        receiver: spawn_reader(input),
        shutdown,
        pending: VecDeque::new(),
        chunks_after_signal: 0,
    };
    let max_messages = batching.max_messages.max(1) as usize;
    let mut stopping = false;
    let mut read_error = None;
    let mut batch: Vec<Vec<u8>> = Vec::new();
    while !stopping {
        batch.clear();
        let mut bytes = 0;
        // Wait for the first line of a batch; take the rest only if they are there already.
        let mut block = true;
        while batch.len() < max_messages && bytes < BATCH_BYTES {
            match lines.next(block) {
                Next::Line(line) => {
                    bytes += line.len();
                    batch.push(line);
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
            let messages = batch.iter().map(|line| batching.keys.message(line)).collect();
            debug!(messages = batch.len(), bytes, "sending a batch");
            let appended = client.append(batching.topic, messages)?;
            produced.add(batch.len(), appended);
        }
    }
    match read_error {
        Some(source) => Err(ClientError::Io { what: "cannot read standard input", source }),
        None => Ok(()),
    }
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

impl Lines<'_> {
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
    fn keys_from_a_separator_or_fixed() {
        let sep = KeyMode::Separator(b"::".to_vec());
        assert_eq!(sep.message(b"k::v::w"), NewMessage { key: Some(b"k"), value: b"v::w" });
        assert_eq!(sep.message(b"::v"), NewMessage { key: Some(b""), value: b"v" });
        assert_eq!(sep.message(b"plain"), NewMessage { key: None, value: b"plain" });
        let fixed = KeyMode::Fixed(b"id".to_vec());
        assert_eq!(fixed.message(b"v"), NewMessage { key: Some(b"id"), value: b"v" });
        assert_eq!(KeyMode::None.message(b"v"), NewMessage { key: None, value: b"v" });
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

    #[test]
    fn summaries() {
        let mut p = Produced::new("t", false);
        assert_eq!(p.to_string(), "appended 0 messages to t");
        p.add(1, Appended { first_offset: 4, last_offset: 4 });
        assert_eq!(p.to_string(), "appended 1 message to t at offset 4");
        p.add(2, Appended { first_offset: 5, last_offset: 6 });
        p.show_requests = true;
        assert_eq!(p.to_string(), "appended 3 messages to t at offsets 4..6 in 2 requests");
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
