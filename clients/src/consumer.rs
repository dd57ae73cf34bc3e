//! The `consumer` command: show the logical brokers, list topics, fetch or follow messages, alone
//! or as a member of a consumer group, and look after groups.
//!
//! Reading commands claim a logical broker first and give it back on every way out: success,
//! error and Ctrl-C alike. Messages and tables go to standard output; notes about what is
//! happening (waiting, restarting, totals) go to standard error so that output can be piped.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use protocol::{
    validate_group_name, validate_topic_name, ErrorCode, Fetch, Retention, TopicInfo,
    DEFAULT_FETCH_BYTES, MAX_FETCH_MESSAGES,
};

use crate::args::{
    parse_duration, parse_offset, parse_partitions, positive, ClaimArgs, ConnectArgs, OffsetArg,
    PrintArgs, TopicArg,
};
use crate::claim::{self, ClaimSpec, FOLLOW_WAIT, TOPIC_RETRY};
use crate::client::{Claimed, Client};
use crate::group::{self, GroupArgs, Member, Reading, ResetArgs};
use crate::interactive;
use crate::output::{self, plural, safe, MessageFormat};
use crate::perf::{self, ConsumePerfArgs};
use crate::{ClientError, Result, Shutdown};

/// What `--help` says about the output formats.
const FORMATS_HELP: &str = "\
Output:
  fetch and follow print one message a line: OFFSET<TAB>VALUE, or PARTITION:OFFSET<TAB>VALUE
  when they read a topic of several partitions (without --partition); --print-timestamp adds the
  timestamp after the offset (RFC 3339 in local time; --print-timestamp=ms: milliseconds since
  the Unix epoch), --print-key adds the key (or `null`) before the value. Kafka's --property
  print.key=true, print.timestamp=true (CreateTime:MS), print.offset=false and
  key.separator=SEP do the same as in Kafka's console consumer. Keys and values that are not valid UTF-8 are printed with each
  invalid byte as \\xNN. In text output (tables too), control characters and bidirectional
  overrides are escaped (\\x1b, \\r, \\n, \\t, \\u{202e}) so that nothing read can act on the
  terminal; JSON output keeps them exact.

  --json prints one JSON object a line instead, for every command:
    status  {\"id\",\"available\",\"holder\",\"lease_remaining_ms\",\"topics\",\"messages\",
             \"bytes\",\"disk_bytes\"}
    topics  {\"name\",\"partitions\",\"messages\",\"first_offset\",\"next_offset\",\"bytes\",
             \"disk_bytes\",\"first_offsets\",\"next_offsets\"} (the lists: one per partition;
             first_offset and next_offset are partition 0's)
  (holder and lease_remaining_ms are null for a free logical broker, disk_bytes for a broker
  that keeps its topics in memory only.)
    fetch, follow  {\"topic\",\"partition\",\"offset\",\"timestamp\",\"key\",\"value\"}
    groups  {\"group\",\"topic\",\"partition\",\"committed_offset\",\"delivered_offset\",
             \"end_offset\",\"lag\",\"pending\",\"members\"} (one per partition)
    group-reset  {\"group\",\"topic\",\"partition\",\"committed_offset\"} (partition null: all)
  A key or value that is valid UTF-8 is a string. One that is not is null, and the field
  key_hex or value_hex holds its bytes in hexadecimal. A message without a key has
  \"key\": null and no key_hex. --print-key and --print-timestamp do not change JSON output.

  Notes (waiting, totals, restarts, acknowledgements) go to standard error.

  fetch reads the whole topic (as it was when it started) unless --max stops it, and says on
  standard error how many messages were left unread then. Ctrl-C ends any command with exit
  status 130, after its summary.

Consumer groups:
  fetch and follow with --group NAME read as a member of that group: each message goes to one
  member, and what a member prints it acknowledges (unless --no-auto-ack). A message printed
  and not acknowledged within the broker's --group-ack-timeout goes to a member again. A group
  new on a topic starts at its first message (--group-start latest: at its end). A partition
  is read by one member at a time, in order, as on Kafka (--unordered: shared, in no order).";

/// What `consumer --help` says below the commands: where the rest is.
const MAIN_HELP: &str = "\
`consumer COMMAND --help` shows a command's own flags, and for fetch and follow the output
formats (text and --json) and consumer groups. Kafka's own line, `consumer --bootstrap-server
HOST:PORT --topic TOPIC [--from-beginning]`, is read as `follow`.

Without a command, on a terminal, the consumer walks through brokers, topics and messages
interactively.";

/// The flags `consumer --help` leaves to the commands whose own they are (they are still
/// accepted before the command's name, as they always were).
const COMMAND_FLAGS: [&str; 5] = ["print_key", "print_timestamp", "property", "broker", "wait"];

/// Read from the broker, like Kafka's console consumer.
#[derive(Debug, Clone, Parser)]
#[command(name = "consumer", version, after_help = MAIN_HELP)]
#[command(about = "Show the logical brokers, list topics, and fetch or follow messages")]
pub struct ConsumerArgs {
    /// Where the broker is and how long to wait for it.
    #[command(flatten)]
    pub connection: ConnectArgs,

    /// Print one JSON object per line instead of text (fields: `consumer fetch --help`).
    #[arg(long, global = true, display_order = 102)]
    pub json: bool,

    /// Which logical broker to claim (also accepted after the command's name).
    #[command(flatten)]
    pub claim: ClaimArgs,

    /// How to print messages (also accepted after the command's name).
    #[command(flatten)]
    pub print: PrintArgs,

    /// What to do; without one, an interactive walk on a terminal.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The consumer's commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Show each logical broker: free or claimed, by whom, the lease left, topics and messages.
    Status,
    /// List the topics with their message counts and offsets.
    Topics {
        /// Which logical broker to claim.
        #[command(flatten)]
        claim: ClaimArgs,
    },
    /// Print the messages of a topic from an offset (or the next ones for a group), then exit.
    ///
    /// Reads to the end of the topic as it was when the fetch started, unless --max stops it
    /// first.
    #[command(after_help = FORMATS_HELP)]
    Fetch {
        /// The topic to read.
        #[command(flatten)]
        topic: TopicArg,
        /// Where to start: earliest (the first kept message, the default), latest, or an
        /// offset.
        #[arg(long, value_name = "WHERE", value_parser = parse_offset, conflicts_with = "group")]
        offset: Option<OffsetArg>,
        /// Accepted for Kafka's sake: a fetch starts at the beginning anyway; with --group, a
        /// group new on the topic starts at its first message.
        #[arg(long, conflicts_with_all = ["offset", "group_start"])]
        from_beginning: bool,
        /// Print at most N messages.
        #[arg(long, visible_alias = "max-messages", value_name = "N", value_parser = positive)]
        max: Option<u64>,
        /// Reading as a member of a consumer group.
        #[command(flatten)]
        group: GroupArgs,
        /// Which logical broker to claim.
        #[command(flatten)]
        claim: ClaimArgs,
        /// How to print messages.
        #[command(flatten)]
        print: PrintArgs,
    },
    /// Print the messages of a topic as they arrive, until Ctrl-C.
    ///
    /// Starts at the end of the topic unless told otherwise, and waits for a topic that does
    /// not exist yet. An offset that is no longer (or not yet) available restarts the follow
    /// from the first available one. With --group, reads what the group has not yet been
    /// delivered, sharing the messages with the group's other members.
    #[command(after_help = FORMATS_HELP)]
    Follow {
        /// The topic to follow.
        #[command(flatten)]
        topic: TopicArg,
        /// Start at the topic's first message instead of its end; with --group, a group new
        /// on the topic starts there (--group-start earliest).
        #[arg(long, conflicts_with_all = ["offset", "group_start"])]
        from_beginning: bool,
        /// Where to start: earliest, latest (the end, the default) or an offset.
        #[arg(long, value_name = "WHERE", value_parser = parse_offset, conflicts_with = "group")]
        offset: Option<OffsetArg>,
        /// Exit after printing N messages.
        #[arg(long, visible_alias = "max-messages", value_name = "N", value_parser = positive)]
        max: Option<u64>,
        /// Following as a member of a consumer group.
        #[command(flatten)]
        group: GroupArgs,
        /// Which logical broker to claim.
        #[command(flatten)]
        claim: ClaimArgs,
        /// How to print messages.
        #[command(flatten)]
        print: PrintArgs,
    },
    /// Acknowledge messages delivered to a consumer group, by offset (after --no-auto-ack).
    Ack {
        /// The group.
        #[arg(value_name = "GROUP")]
        group: String,
        /// The topic.
        #[arg(value_name = "TOPIC")]
        topic: String,
        /// The offsets of the messages processed.
        #[arg(value_name = "OFFSET", required = true, num_args = 1..)]
        offsets: Vec<u64>,
        /// The partition the offsets are of (as the reading printed it before each offset).
        #[arg(long, value_name = "N", default_value_t = 0)]
        partition: u32,
    },
    /// List consumer groups with their committed offset, lag, pending messages and members on
    /// each topic they read.
    Groups {
        /// Only this group.
        #[arg(value_name = "GROUP")]
        group: Option<String>,
        /// Only groups reading this topic.
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
    },
    /// Move a consumer group's committed offset on a topic; a group new there is created.
    ///
    /// Refused while the group has members on the topic (as Kafka refuses to reset an active
    /// group) unless --force; its members then print a notice and read from the new place.
    GroupReset {
        /// The group.
        #[arg(value_name = "GROUP")]
        group: String,
        /// The topic.
        #[arg(value_name = "TOPIC")]
        topic: String,
        /// Where to.
        #[command(flatten)]
        to: ResetArgs,
        /// Move this partition only [default: every partition].
        #[arg(long, value_name = "N")]
        partition: Option<u32>,
        /// Reset even while the group has members on the topic.
        #[arg(long)]
        force: bool,
    },
    /// Forget a group's committed offsets, on one topic or on all (kafka-consumer-groups
    /// --delete). Refused while the group has members there: they must stop first.
    GroupDelete {
        /// The group.
        #[arg(value_name = "GROUP")]
        group: String,
        /// Only its offsets on this topic [default: every topic].
        #[arg(value_name = "TOPIC")]
        topic: Option<String>,
        /// Only its offset on partition N of TOPIC (kafka-consumer-groups --delete-offsets of
        /// one partition): the partition has none afterwards, and the next join starts it at
        /// its start.
        #[arg(long, value_name = "N", requires = "topic")]
        partition: Option<u32>,
    },
    /// Create a topic with a number of partitions and its own retention (a topic is also
    /// made by the first append to it, with the broker's defaults).
    CreateTopic {
        /// The topic.
        #[arg(value_name = "TOPIC")]
        topic: String,
        /// How many partitions, from 1 to 10000 (Kafka's flag): each is a log of its own,
        /// read in order; more of them let more group members read at once [default: the
        /// broker's --partitions].
        #[arg(long, value_name = "N", value_parser = parse_partitions)]
        partitions: Option<u32>,
        /// Keep about this many of each partition's newest messages [default: the broker's].
        #[arg(long, value_name = "N", value_parser = positive)]
        retention_messages: Option<u64>,
        /// Keep about this many bytes of each partition's newest messages.
        #[arg(long, value_name = "N", value_parser = positive)]
        retention_bytes: Option<u64>,
        /// Keep messages this long, e.g. `7d`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        retention_time: Option<Duration>,
    },
    /// Grow a topic to N partitions in all (a topic never shrinks). Keys hash over the new
    /// count from then on, so a key's later messages may go to another partition.
    AddPartitions {
        /// The topic.
        #[arg(value_name = "TOPIC")]
        topic: String,
        /// How many partitions it has afterwards, more than now and at most 10000.
        #[arg(long, value_name = "N", value_parser = parse_partitions)]
        partitions: u32,
    },
    /// Measure fetch throughput and latency, like Kafka's consumer perf test.
    #[command(after_help = perf::CONSUME_HELP)]
    Perf(ConsumePerfArgs),
}

impl ConsumerArgs {
    /// The command line `args` (the program's name first), or clap's error (help and version
    /// included) to exit with. Kafka's console consumer's line, with `--topic` and no command
    /// (`consumer --bootstrap-server H:P --topic T --from-beginning`), is read as `follow`.
    ///
    /// # Errors
    /// The arguments are not the consumer's.
    pub fn parse_from_args(args: Vec<std::ffi::OsString>) -> Result<ConsumerArgs, clap::Error> {
        let parse = |args: &[std::ffi::OsString]| {
            let mut command = ConsumerArgs::command();
            for id in COMMAND_FLAGS {
                command = command.mut_arg(id, |arg| arg.hide(true));
            }
            command
                .try_get_matches_from(args)
                .and_then(|matches| ConsumerArgs::from_arg_matches(&matches))
        };
        let first = parse(&args);
        let kafka_line = args
            .iter()
            .skip(1)
            .any(|a| a.to_str().is_some_and(|a| a == "--topic" || a.starts_with("--topic=")));
        match first {
            Err(e) if kafka_line && e.kind() == clap::error::ErrorKind::UnknownArgument => {
                let mut followed = args.clone();
                followed.insert(1.min(followed.len()), "follow".into());
                // Its errors are then those of `follow`, which the line was meant as.
                parse(&followed)
            }
            other => other,
        }
    }
}

/// Where a follow starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The topic's first kept message.
    Beginning,
    /// The topic's next offset: only messages appended from now on.
    End,
    /// This offset.
    Offset(u64),
}

/// Runs the consumer as `args` say.
///
/// # Errors
/// [`ClientError::NotATerminal`] when no command is given off a terminal; otherwise whatever
/// the command fails with, after giving back any claim it made. Ctrl-C during `follow` or the
/// interactive walk is a normal end, not an error.
pub fn run(args: ConsumerArgs, shutdown: &Shutdown) -> Result<()> {
    check_names(args.command.as_ref())?;
    if args.command.is_none() && !(io::stdin().is_terminal() && io::stdout().is_terminal()) {
        return Err(ClientError::NotATerminal);
    }
    // Options given after the command's name, else before it.
    let (claim_args, print) = match &args.command {
        Some(Command::Topics { claim } | Command::Perf(ConsumePerfArgs { claim, .. })) => {
            (claim.or(args.claim), &args.print)
        }
        Some(Command::Fetch { claim, print, .. } | Command::Follow { claim, print, .. }) => {
            (claim.or(args.claim), if *print == PrintArgs::default() { &args.print } else { print })
        }
        _ => (args.claim, &args.print),
    };
    let spec = ClaimSpec::new("consumer", claim_args.broker, claim_args.wait);
    if let Some(Command::Perf(perf)) = &args.command {
        return perf::consume(&args.connection, perf, &spec, args.json, shutdown);
    }
    let mut client = args.connection.client(shutdown)?;
    if matches!(args.command, Some(Command::Fetch { .. } | Command::Follow { .. })) {
        // A reader that has gone away (`| head -1`) ends the wait for the next messages.
        client = client.watching_output();
    }
    let format = MessageFormat::from_args(args.json, print);
    let Some(command) = args.command else {
        return interactive::run(&mut client, &spec, shutdown);
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match &command {
        Command::Status => {
            let brokers = client.status()?;
            output::write_status(&mut out, &brokers, format.json).map_err(ClientError::output)?;
            return out.flush().map_err(ClientError::output);
        }
        Command::Topics { .. } => {
            // Listing needs no claim, so a user who may only produce can list its topics too.
            let topics = client.topics()?;
            output::write_topics(&mut out, &topics, format.json).map_err(ClientError::output)?;
            return out.flush().map_err(ClientError::output);
        }
        Command::Groups { group, topic } => {
            group::list(&mut client, group.as_deref(), topic.as_deref(), format.json, &mut out)?;
            return out.flush().map_err(ClientError::output);
        }
        Command::Ack { group, topic, offsets, partition } => {
            return group::ack(&mut client, group, topic, *partition, offsets);
        }
        Command::GroupReset { group, topic, to, partition, force } => {
            let target = group::Target { group, topic, partition: *partition };
            group::reset(&mut client, &target, to.target(), *force, format.json, &mut out)?;
            return out.flush().map_err(ClientError::output);
        }
        Command::GroupDelete { group, topic, partition } => {
            match (topic, partition) {
                (Some(topic), Some(partition)) => {
                    client.delete_group_partition(group, topic, *partition)?;
                    eprintln!(
                        "deleted group {}'s offset on partition {partition} of topic {}",
                        safe(group),
                        safe(topic)
                    );
                }
                (Some(topic), None) => {
                    client.delete_group(group, Some(topic))?;
                    eprintln!("deleted group {}'s offsets on topic {}", safe(group), safe(topic));
                }
                (None, _) => {
                    client.delete_group(group, None)?;
                    eprintln!("deleted group {}", safe(group));
                }
            }
            return Ok(());
        }
        Command::CreateTopic {
            topic,
            partitions,
            retention_messages,
            retention_bytes,
            retention_time,
        } => {
            let retention = Retention {
                messages: *retention_messages,
                bytes: *retention_bytes,
                ms: retention_time.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            };
            let made = client.create_topic(topic, *partitions, retention)?;
            eprintln!("created topic {} with {made} partition{}", safe(topic), plural(made.into()));
            return Ok(());
        }
        Command::AddPartitions { topic, partitions } => {
            let now = client.create_partitions(topic, *partitions)?;
            eprintln!("topic {} has {now} partitions now", safe(topic));
            return Ok(());
        }
        _ => {}
    }
    let mut claimed = claim::acquire(&mut client, &spec)?;
    let result = match command {
        // Answered above, without a claim (or with claims of their own).
        Command::Status
        | Command::Topics { .. }
        | Command::Perf(_)
        | Command::Groups { .. }
        | Command::Ack { .. }
        | Command::GroupReset { .. }
        | Command::GroupDelete { .. }
        | Command::CreateTopic { .. }
        | Command::AddPartitions { .. } => Ok(()),
        Command::Fetch { topic, offset, from_beginning, max, group, .. } => match &group.group {
            Some(name) => Member {
                client: &mut client,
                claimed: &mut claimed,
                spec: &spec,
                reading: Reading::new(name, topic.name(), &group, from_beginning, &format),
                shutdown,
                spread: false,
            }
            .fetch(max.unwrap_or(u64::MAX), &mut out),
            None => {
                let start = start_of(offset, Start::Beginning);
                let mut fetch = Follow {
                    client: &mut client,
                    claimed: &mut claimed,
                    spec: &spec,
                    topic: topic.name(),
                    partition: topic.partition,
                    format: format.clone(),
                    shutdown,
                };
                fetch.fetch(start, max, &mut out)
            }
        },
        Command::Follow {
            topic,
            max,
            from_beginning,
            group: ref args @ GroupArgs { group: Some(ref name), .. },
            ..
        } => Member {
            client: &mut client,
            claimed: &mut claimed,
            spec: &spec,
            reading: Reading::new(name, topic.name(), args, from_beginning, &format),
            shutdown,
            spread: false,
        }
        .follow(max, &mut out),
        Command::Follow { topic, from_beginning, offset, max, .. } => {
            let start =
                if from_beginning { Start::Beginning } else { start_of(offset, Start::End) };
            let mut follow = Follow {
                client: &mut client,
                claimed: &mut claimed,
                spec: &spec,
                topic: topic.name(),
                partition: topic.partition,
                format: format.clone(),
                shutdown,
            };
            follow.run(start, max, &mut out)
        }
    };
    let flushed = out.flush().map_err(ClientError::output);
    // A broker shutting down ends every claim with it, and answers nothing more.
    if !matches!(&result, Err(e) if e.broker_code() == Some(ErrorCode::ShuttingDown)) {
        claim::release(&mut client, &claimed);
    }
    result.and(flushed)
}

/// Where `--offset` says to start, or `default`.
fn start_of(offset: Option<OffsetArg>, default: Start) -> Start {
    match offset {
        None => default,
        Some(OffsetArg::Earliest) => Start::Beginning,
        Some(OffsetArg::Latest) => Start::End,
        Some(OffsetArg::At(offset)) => Start::Offset(offset),
    }
}

/// Checks the topic and group names a command names before anything is sent.
///
/// # Errors
/// [`ClientError::InvalidTopic`] or [`ClientError::InvalidGroup`].
fn check_names(command: Option<&Command>) -> Result<()> {
    let (topic, group) = match command {
        Some(Command::Fetch { topic, group, .. } | Command::Follow { topic, group, .. }) => {
            (topic.topic.as_ref().or(topic.topic_flag.as_ref()), group.group.as_ref())
        }
        Some(Command::Ack { group, topic, .. } | Command::GroupReset { group, topic, .. }) => {
            (Some(topic), Some(group))
        }
        Some(Command::CreateTopic { topic, .. } | Command::AddPartitions { topic, .. }) => {
            (Some(topic), None)
        }
        Some(Command::Groups { group, topic }) => (topic.as_ref(), group.as_ref()),
        Some(Command::GroupDelete { group, topic, .. }) => (topic.as_ref(), Some(group)),
        Some(Command::Perf(ConsumePerfArgs { topic, .. })) => (Some(topic), None),
        _ => (None, None),
    };
    if let Some(name) = topic {
        validate_topic_name(name)
            .map_err(|source| ClientError::InvalidTopic { name: name.clone(), source })?;
    }
    if let Some(name) = group {
        validate_group_name(name)
            .map_err(|source| ClientError::InvalidGroup { name: name.clone(), source })?;
    }
    Ok(())
}

/// How long a follow of several partitions holds the last fetch of a round when the rounds
/// find nothing: a message waits at most about this long and a round of fetches.
const SPREAD_WAIT: Duration = Duration::from_millis(100);

/// How often a follow of every partition looks for partitions added to the topic.
const GROWTH_CHECK: Duration = Duration::from_secs(5);

/// A fetch or a follow in progress: the claim it reads under, re-made if it expires.
struct Follow<'a> {
    /// The connection to the broker.
    client: &'a mut Client,
    /// The claim held; replaced if the broker forgets it.
    claimed: &'a mut Claimed,
    /// How to claim again.
    spec: &'a ClaimSpec,
    /// The topic followed.
    topic: &'a str,
    /// The one partition read (`--partition`); `None` reads every partition.
    partition: Option<u32>,
    /// How messages are printed.
    format: MessageFormat,
    /// Ends the follow.
    shutdown: &'a Shutdown,
}

/// Where a reading of one partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    /// The partition.
    partition: u32,
    /// The next offset to read in it.
    offset: u64,
}

impl Follow<'_> {
    /// The partitions to read and where each starts, as `start` says; `None` when Ctrl-C came
    /// first. A topic that does not exist yet is read from offset 0 of partition 0 (or of the
    /// partition asked for).
    ///
    /// # Errors
    /// A numeric `--offset` on a topic of several partitions without `--partition`; a failed
    /// request.
    fn positions(&mut self, start: Start) -> Result<Option<Vec<Position>>> {
        let Some(topics) = self.listed()? else { return Ok(None) };
        let info = topics.into_iter().find(|t| t.name == self.topic);
        let partitions: Vec<u32> = match (self.partition, &info) {
            (Some(p), _) => vec![p],
            (None, Some(info)) => (0..info.partitions.max(1)).collect(),
            (None, None) => vec![0],
        };
        if let (Start::Offset(_), true) = (start, partitions.len() > 1) {
            return Err(ClientError::Io {
                what: "--offset",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} has {} partitions, each with offsets of its own: add --partition N \
                         to start partition N at an offset, or use --offset earliest or latest",
                        safe(self.topic),
                        partitions.len()
                    ),
                ),
            });
        }
        let positions = partitions
            .into_iter()
            .map(|partition| {
                let offset = match (start, &info) {
                    (Start::Offset(offset), _) => offset,
                    (Start::Beginning, Some(info)) => first_of(info, partition),
                    (Start::End, Some(info)) => next_of(info, partition),
                    // Everything a topic created from now on holds is new.
                    (_, None) => 0,
                };
                Position { partition, offset }
            })
            .collect::<Vec<_>>();
        self.format_for(positions.len());
        Ok(Some(positions))
    }

    /// Prints the partition with each offset when the reading spans several.
    fn format_for(&mut self, partitions: usize) {
        self.format.print_partition = partitions > 1;
    }

    /// Prints the messages of the topic from `start` to its end as it was when the fetch
    /// began (or `max` of them), in as many fetches as that takes, one partition after the
    /// other. Says on standard error how many were read and, when `max` stopped it, how many
    /// were left and how to read them.
    fn fetch(&mut self, start: Start, max: Option<u64>, out: &mut impl Write) -> Result<()> {
        let topic = self.topic;
        let Some(positions) = self.positions(start)? else {
            return Err(ClientError::Interrupted);
        };
        let max = max.unwrap_or(u64::MAX);
        let mut printed = 0;
        let mut ends = Vec::new();
        for position in &positions {
            let (count, offset, end) = self.fetch_partition(*position, max - printed, out)?;
            printed += count;
            ends.push((position.partition, offset, end));
            if printed >= max {
                break;
            }
        }
        out.flush().map_err(ClientError::output)?;
        let left: u64 = ends.iter().map(|(_, offset, end)| end.saturating_sub(*offset)).sum();
        match (ends.as_slice(), positions.len()) {
            ([(partition, offset, end)], 1) => {
                let hint = if printed >= max && left > 0 {
                    let partition_flag = match self.partition {
                        Some(p) => format!(" --partition {p}"),
                        None => String::new(),
                    };
                    format!(
                        " ({left} left unread: add{partition_flag} --offset {offset} to read \
                         on, or leave out --max to read to the end)"
                    )
                } else {
                    String::new()
                };
                let of_partition = match self.partition {
                    Some(_) => format!(" partition {partition}"),
                    None => String::new(),
                };
                eprintln!(
                    "read {printed} message{} of {}{of_partition}; next offset {offset} of \
                     {end}{hint}",
                    plural(printed),
                    safe(topic)
                );
            }
            _ => {
                let unread = positions.len() - ends.len();
                let hint = if printed >= max && (left > 0 || unread > 0) {
                    let more = if unread > 0 {
                        format!(" and {unread} partition{} not read", plural(unread as u64))
                    } else {
                        String::new()
                    };
                    format!(
                        " ({left} left unread{more}: read one partition with --partition N, or \
                         leave out --max to read to the end)"
                    )
                } else {
                    String::new()
                };
                eprintln!(
                    "read {printed} message{} of {} from {} partitions{hint}",
                    plural(printed),
                    safe(topic),
                    positions.len()
                );
            }
        }
        Ok(())
    }

    /// Prints up to `max` messages of one partition from `position` to its end as it was
    /// when the reading of it began; returns how many, the next offset and that end.
    fn fetch_partition(
        &mut self,
        position: Position,
        max: u64,
        out: &mut impl Write,
    ) -> Result<(u64, u64, u64)> {
        let topic = self.topic;
        let Position { partition, mut offset } = position;
        let mut printed = 0;
        let mut goal = None;
        let mut end = offset;
        while printed < max {
            let want = (max - printed).min(u64::from(MAX_FETCH_MESSAGES));
            let request = Fetch {
                claim: self.claimed.token,
                topic,
                partition,
                offset,
                max_messages: u32::try_from(want).unwrap_or(MAX_FETCH_MESSAGES),
                max_bytes: DEFAULT_FETCH_BYTES,
                wait_ms: 0,
                batches: false,
            };
            let format = &self.format;
            let (count, next_offset, end_offset) =
                self.client.fetch(request, |batch| print_batch(out, topic, &batch, format))?;
            printed += count;
            offset = next_offset;
            end = end_offset;
            // Messages appended meanwhile are left for the next fetch: a fetch ends.
            let goal = *goal.get_or_insert(end_offset);
            if count == 0 || next_offset >= goal {
                break;
            }
        }
        Ok((printed, offset, end))
    }

    /// Prints messages from `start` as they arrive until Ctrl-C (or `max` messages): of the
    /// one partition asked for, or of every partition, partitions added meanwhile included.
    /// Over several partitions it reads each in turn without waiting, and once a whole round
    /// found nothing holds the last fetch of each round for [`SPREAD_WAIT`].
    fn run(&mut self, start: Start, max: Option<u64>, out: &mut impl Write) -> Result<()> {
        let topic = self.topic;
        let Some(mut positions) = self.positions(start)? else {
            return Ok(());
        };
        match (positions.as_slice(), self.partition) {
            ([Position { offset, .. }], None) => eprintln!(
                "following {} on logical broker {} from offset {offset}; Ctrl-C to stop",
                safe(topic),
                self.claimed.broker
            ),
            ([Position { partition, offset }], Some(_)) => eprintln!(
                "following {} partition {partition} on logical broker {} from offset {offset}; \
                 Ctrl-C to stop",
                safe(topic),
                self.claimed.broker
            ),
            (all, _) => eprintln!(
                "following {} ({} partitions) on logical broker {} from {}; Ctrl-C to stop",
                safe(topic),
                all.len(),
                self.claimed.broker,
                match start {
                    Start::Beginning => "the first offset of each",
                    _ => "the end of each",
                }
            ),
        }
        let mut printed = 0;
        let mut waiting_for_topic = false;
        // Whether the topic was read: a topic missing after that was deleted, not yet made.
        let mut seen = false;
        // Fetches in a row that found nothing, and whose turn it is.
        let (mut empty, mut turn) = (0usize, 0usize);
        let mut checked = Instant::now();
        // Reading every partition of a topic that is not there: how many it will have is
        // known only once it is, so it is looked for in the topic list, not fetched.
        let mut absent = self.partition.is_none() && !self.fit(&mut positions, false)?;
        while !self.shutdown.is_signalled() && !matches!(max, Some(max) if printed >= max) {
            if absent {
                if self.fit(&mut positions, false)? {
                    absent = false;
                    waiting_for_topic = false;
                    continue;
                }
                if !waiting_for_topic {
                    if seen {
                        eprintln!(
                            "topic {} was deleted; waiting for it to be made again",
                            safe(topic)
                        );
                    } else {
                        eprintln!("topic {} does not exist yet; waiting for it", safe(topic));
                    }
                    waiting_for_topic = true;
                }
                self.shutdown.pause(TOPIC_RETRY);
                continue;
            }
            if self.partition.is_none() && seen && checked.elapsed() >= GROWTH_CHECK {
                checked = Instant::now();
                self.fit(&mut positions, true)?;
            }
            let at = turn % positions.len();
            let Position { partition, offset } = positions[at];
            let hold = FOLLOW_WAIT.min(self.client.max_hold());
            // After a round that found nothing, the last fetch of each round is held a little:
            // an idle follow sends a round of fetches per SPREAD_WAIT, and a message on any
            // partition waits at most about that and one round.
            let wait = match positions.len() {
                1 => hold,
                n if empty >= n && at + 1 == n => SPREAD_WAIT.min(hold),
                _ => Duration::ZERO,
            };
            let want = max.map_or(u64::from(MAX_FETCH_MESSAGES), |max| max - printed);
            let request = Fetch {
                claim: self.claimed.token,
                topic,
                partition,
                offset,
                max_messages: u32::try_from(want.min(u64::from(MAX_FETCH_MESSAGES)))
                    .unwrap_or(MAX_FETCH_MESSAGES),
                max_bytes: DEFAULT_FETCH_BYTES,
                wait_ms: wait.as_millis() as u64,
                batches: false,
            };
            let format = &self.format;
            let fetched =
                self.client.fetch(request, |batch| print_batch(out, topic, &batch, format));
            turn = turn.wrapping_add(1);
            match fetched {
                Ok((count, next_offset, _)) => {
                    out.flush().map_err(ClientError::output)?;
                    printed += count;
                    positions[at].offset = next_offset;
                    empty = if count == 0 { empty + 1 } else { 0 };
                    waiting_for_topic = false;
                    seen = true;
                }
                Err(ClientError::Interrupted) => break,
                Err(ClientError::Broker { code: ErrorCode::OffsetOutOfRange, range, .. }) => {
                    let first = range.map_or(0, |(first, _)| first);
                    let held = match range {
                        Some((first, next)) if next > first => {
                            format!(" (it holds offsets {first} to {})", next - 1)
                        }
                        Some((_, next)) => format!(" (it is empty; next offset {next})"),
                        None => String::new(),
                    };
                    let of_partition = if self.format.print_partition || self.partition.is_some() {
                        format!(" partition {partition}")
                    } else {
                        String::new()
                    };
                    eprintln!(
                        "offset {offset} of {}{of_partition} is not available{held}; \
                         restarting from offset {first}, the first available",
                        safe(topic)
                    );
                    positions[at].offset = first;
                }
                Err(e) if e.broker_code() == Some(ErrorCode::UnknownTopic) => {
                    if !waiting_for_topic {
                        if seen {
                            eprintln!(
                                "topic {} was deleted; waiting for it to be made again",
                                safe(topic)
                            );
                        } else {
                            eprintln!("topic {} does not exist yet; waiting for it", safe(topic));
                        }
                        waiting_for_topic = true;
                    }
                    // Made again, it is read from its start, every partition it then has.
                    positions.truncate(1);
                    positions[0].offset = 0;
                    if self.partition.is_none() {
                        absent = true;
                        continue;
                    }
                    self.shutdown.pause(TOPIC_RETRY);
                }
                Err(e)
                    if e.broker_code() == Some(ErrorCode::UnknownPartition)
                        && self.partition.is_none() =>
                {
                    // Made again with fewer partitions: read those it has.
                    self.fit(&mut positions, false)?;
                    turn = 0;
                }
                Err(e) if e.broker_code() == Some(ErrorCode::UnknownClaim) => {
                    claim::reclaim(self.client, self.claimed, self.spec)?;
                }
                Err(e) => return Err(e),
            }
        }
        eprintln!("read {printed} message{} of {}", plural(printed), safe(topic));
        Ok(())
    }

    /// The topics, listed under the follow's claim (the listing renews it while the follow
    /// waits for its topic), claimed again when the broker no longer knows the claim (it moved
    /// to another broker process, or the lease ran out); `None` after Ctrl-C.
    ///
    /// # Errors
    /// A failed request or claim.
    fn listed(&mut self) -> Result<Option<Vec<TopicInfo>>> {
        loop {
            match self.client.list_topics(self.claimed.token) {
                Ok(topics) => return Ok(Some(topics)),
                Err(ClientError::Interrupted) => return Ok(None),
                Err(e) if e.broker_code() == Some(ErrorCode::UnknownClaim) => {
                    claim::reclaim(self.client, self.claimed, self.spec)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes `positions` the topic's partitions as they are now, keeping where each one read
    /// so far stands: the partitions it gained are read from their first offset (all they
    /// hold came after the follow began), and those it lost (deleted and made again with
    /// fewer) are dropped. Says so when `grown` and the topic gained some. Returns whether the
    /// topic is there (and true after Ctrl-C, which the caller's loop notices).
    fn fit(&mut self, positions: &mut Vec<Position>, grown: bool) -> Result<bool> {
        let Some(topics) = self.listed()? else { return Ok(true) };
        let Some(info) = topics.into_iter().find(|t| t.name == self.topic) else {
            return Ok(false);
        };
        let (known, now) = (positions.len() as u32, info.partitions.max(1));
        if grown && now > known {
            eprintln!("{} has {now} partitions now; following the new ones too", safe(self.topic));
        }
        positions.truncate(now as usize);
        for partition in known..now {
            positions.push(Position { partition, offset: first_of(&info, partition) });
        }
        self.format_for(positions.len());
        Ok(true)
    }
}

/// A partition's first kept offset, from a topic record.
fn first_of(info: &TopicInfo, partition: u32) -> u64 {
    match info.first_offsets.get(partition as usize) {
        Some(offset) => *offset,
        None if partition == 0 => info.first_offset,
        None => 0,
    }
}

/// A partition's next offset, from a topic record.
fn next_of(info: &TopicInfo, partition: u32) -> u64 {
    match info.next_offsets.get(partition as usize) {
        Some(offset) => *offset,
        None if partition == 0 => info.next_offset,
        None => 0,
    }
}

/// Prints a fetched batch; returns how many messages it held, the next offset and the end.
fn print_batch(
    out: &mut impl Write,
    topic: &str,
    batch: &crate::client::Batch<'_>,
    format: &MessageFormat,
) -> Result<(u64, u64, u64)> {
    for message in &batch.messages {
        output::write_message(out, topic, batch.partition, message, format)
            .map_err(ClientError::output)?;
    }
    Ok((batch.messages.len() as u64, batch.next_offset, batch.end_offset))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(args: &[&str]) -> clap::error::Result<ConsumerArgs> {
        ConsumerArgs::try_parse_from(args)
    }

    #[test]
    fn options_go_before_or_after_the_command() {
        let a = parse(&["consumer", "--json", "fetch", "t", "--max", "3"]).unwrap();
        let b = parse(&["consumer", "fetch", "t", "--max", "3", "--json"]).unwrap();
        assert!(a.json && b.json);
        let Some(Command::Fetch { topic, offset, max, .. }) = &a.command else { panic!("{a:?}") };
        assert_eq!((topic.name(), *offset, *max), ("t", None, Some(3)));
        assert_eq!(a.command, b.command);
        let c = parse(&["consumer", "--timeout", "1s", "status"]).unwrap();
        assert_eq!(c.connection.timeout, Duration::from_secs(1));
        let d = parse(&["consumer", "--broker", "2", "--print-key", "fetch", "t"]).unwrap();
        assert_eq!(d.claim.broker, Some(2));
        assert!(d.print.print_key);
        let e = parse(&["consumer", "fetch", "t", "--broker", "2", "--wait"]).unwrap();
        let Some(Command::Fetch { claim, .. }) = e.command else { panic!("{e:?}") };
        assert_eq!(claim, ClaimArgs { broker: Some(2), wait: true });
    }

    #[test]
    fn kafka_flags_are_understood() {
        let a = parse(&["consumer", "fetch", "--topic", "t", "--max-messages", "2"]).unwrap();
        let b = parse(&["consumer", "fetch", "t", "--max", "2"]).unwrap();
        assert_eq!(a.command.as_ref().map(|_| ()), b.command.as_ref().map(|_| ()));
        let Some(Command::Fetch { topic, max, .. }) = a.command else { panic!() };
        assert_eq!((topic.name(), max), ("t", Some(2)));
        assert!(parse(&["consumer", "fetch", "t", "--topic", "u"]).is_err());
        assert!(parse(&["consumer", "fetch"]).is_err());
        let f = parse(&["consumer", "follow", "t", "--offset", "earliest"]).unwrap();
        let Some(Command::Follow { offset, .. }) = f.command else { panic!() };
        assert_eq!(offset, Some(OffsetArg::Earliest));
        assert!(parse(&["consumer", "fetch", "t", "--from-beginning"]).is_ok());
        assert!(parse(&["consumer", "follow", "t", "--from-beginning", "--group", "g"]).is_ok());
        let p = parse(&["consumer", "fetch", "t", "--property", "print.key=true"]).unwrap();
        let Some(Command::Fetch { print, .. }) = p.command else { panic!() };
        assert!(MessageFormat::from_args(false, &print).print_key);
        let t = parse(&["consumer", "fetch", "t", "--print-timestamp"]).unwrap();
        let Some(Command::Fetch { print, .. }) = t.command else { panic!() };
        assert_eq!(print.print_timestamp, Some(crate::args::TimestampStyle::Local));
        let t = parse(&["consumer", "--print-timestamp=ms", "fetch", "t"]).unwrap();
        assert_eq!(t.print.print_timestamp, Some(crate::args::TimestampStyle::Ms));
    }

    #[test]
    fn follow_starts_are_exclusive() {
        assert!(parse(&["consumer", "follow", "t", "--from-beginning", "--offset", "3"]).is_err());
        let f = parse(&["consumer", "follow", "t", "--offset", "3"]).unwrap();
        let Some(Command::Follow { offset, from_beginning, .. }) = f.command else { panic!() };
        assert_eq!((offset, from_beginning), (Some(OffsetArg::At(3)), false));
    }

    #[test]
    fn group_options_need_a_group_and_exclude_offsets() {
        assert!(parse(&["consumer", "follow", "t", "--group", "g", "--offset", "3"]).is_err());
        assert!(parse(&[
            "consumer",
            "follow",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "--group-start",
            "latest"
        ])
        .is_err());
        assert!(parse(&["consumer", "fetch", "t", "--group", "g", "--offset", "3"]).is_err());
        assert!(parse(&["consumer", "follow", "t", "--no-auto-ack"]).is_err());
        assert!(parse(&["consumer", "fetch", "t", "--batch", "2"]).is_err());
        let f =
            parse(&["consumer", "follow", "t", "--group", "g", "--no-auto-ack", "--batch", "2"])
                .unwrap();
        let Some(Command::Follow { group, .. }) = f.command else { panic!("{f:?}") };
        assert_eq!(group.group.as_deref(), Some("g"));
        assert!(group.no_auto_ack);
        assert_eq!(group.batch, Some(2));
    }

    #[test]
    fn group_commands_parse() {
        let a = parse(&["consumer", "ack", "g", "t", "3", "5"]).unwrap();
        assert_eq!(
            a.command,
            Some(Command::Ack {
                group: "g".into(),
                topic: "t".into(),
                offsets: vec![3, 5],
                partition: 0
            })
        );
        assert!(parse(&["consumer", "ack", "g", "t"]).is_err(), "an ack needs an offset");
        assert!(parse(&["consumer", "ack", "g", "t", "-1"]).is_err());
        assert!(parse(&["consumer", "ack", "g", "t", "1", "--broker", "1"]).is_err());
        let r = parse(&["consumer", "group-reset", "g", "t", "--to-offset", "4"]).unwrap();
        let Some(Command::GroupReset { to, force, .. }) = r.command else { panic!("{r:?}") };
        assert_eq!((to.target(), force), (protocol::ResetTo::Offset(4), false));
        assert!(parse(&["consumer", "group-reset", "g", "t"]).is_err(), "a reset needs a target");
        assert!(
            parse(&["consumer", "group-reset", "g", "t", "--to-earliest", "--to-latest"]).is_err()
        );
        let g = parse(&["consumer", "groups", "--topic", "t"]).unwrap();
        assert_eq!(g.command, Some(Command::Groups { group: None, topic: Some("t".into()) }));
    }
}
