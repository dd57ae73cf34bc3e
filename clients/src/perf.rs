//! `producer perf` and `consumer perf`: load generators in the manner of Kafka's
//! `kafka-producer-perf-test` and `kafka-consumer-perf-test`, with a floor to compare against.
//!
//! Each client is a thread with its own REQ socket, working in lockstep: one request, then its
//! reply, then the next. A run prints messages per second, megabytes (10^6 bytes of keys and
//! values) per second, requests per second and the latency of a request (send to reply) at the
//! 50th, 95th, 99th and 99.9th percentiles.
//!
//! `--floor` points the same client code, sending the same request bytes, at a bare ZeroMQ
//! ROUTER started in this process instead of the broker ([`Floor`]): what the transport alone
//! does on this machine, so that a broker figure can be read as a ratio to it. Figures taken at
//! different moments on a shared machine differ widely; compare only figures of one run.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use protocol::batch::{self, Batches};
use protocol::{
    decode_response, encode_request, encode_response, validate_topic_name, Append, Fetch, Message,
    NewMessage, Request, Response, MAX_FETCH_BYTES, MAX_FETCH_MESSAGES,
};
use serde::Serialize;

use crate::args::{positive, ConnectArgs, PipelineArgs};
use crate::claim::{self, ClaimSpec};
use crate::client::Client;
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::{ClientError, Endpoints, Result, Shutdown};

/// How long the floor's receive waits before it looks at its stop flag.
const FLOOR_TICK_MS: i32 = 100;

/// What `producer perf --help` adds.
pub const PRODUCE_HELP: &str = "\
Each client is a thread with its own REQ socket that sends one append and waits for its reply
before the next (lockstep). The request is encoded once and sent again and again, so the
figures are the broker's and the transport's, not the client's encoder. With --keys, the
requests of a cycle of keys are encoded once each (at most 1,000 of them).

With --max-in-flight N (and --batch 1), each client instead gives its messages one at a time to
the pipelined producer, as an application sends single messages: it gathers them into appends
by --linger and --batch-bytes and keeps up to N appends awaiting their replies. The latency is
then a message's, from its send to its acknowledgement, and requests are the appends made.
Its appends are marked by an idempotent producer, as `producer`'s are, unless --no-idempotence.

--floor sends the same requests to a bare ZeroMQ ROUTER started in this process, which echoes
each one back, instead of to the broker: what ZeroMQ alone does on this machine. Compare
figures taken in the same run only.

Output: one line of figures; with --json one object with the fields op, target, endpoint,
topic, clients, batch, size, messages, requests, bytes, seconds, records_per_s, mb_per_s
(10^6 bytes of keys and values), requests_per_s and latency_us {mean, p50, p95, p99, p999,
max}, the time from sending a request to having its reply.";

/// What `consumer perf --help` adds.
pub const CONSUME_HELP: &str = "\
Each client is a thread with its own REQ socket that claims a logical broker of its own, then
fetches up to --batch messages per request, in lockstep, until it has read its share of
--messages; the clients start at offsets spread over the topic and go back to its first offset
when they reach its end. So that every client can hold a claim, there can be only as many
clients as logical brokers (the broker's --brokers, 2 by default), unless --wait, with which
the extra clients wait for a claim to be released and start later (their runs then overlap
only in part, and there is no common start).

--floor instead fetches from a bare ZeroMQ ROUTER started in this process, which answers each
fetch with a prepared reply of --batch messages of --size bytes, as the broker would send them
(one record batch): what ZeroMQ alone does on this machine. Compare figures taken in the same run only.

Output: as `producer perf`, with op \"fetch\".";

/// Options of `producer perf`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ProducePerfArgs {
    /// How many messages to append in all.
    #[arg(long, value_name = "N", value_parser = positive)]
    pub messages: u64,
    /// Bytes of each message's value.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub size: usize,
    /// Messages per append request.
    #[arg(
        long,
        value_name = "M",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub batch: u32,
    /// Concurrent clients, each a thread with its own socket.
    #[arg(
        long,
        value_name = "C",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1024)
    )]
    pub clients: u32,
    /// The topic to append to; created if it does not exist.
    #[arg(long, value_name = "TOPIC", default_value = "perf")]
    pub topic: String,
    /// Spread the appends over this many topics, `TOPIC-0` to `TOPIC-<N-1>`: each client
    /// sends its requests to them in turn, starting at a topic of its own.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub topics: u32,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Measure a bare ZeroMQ echo in this process instead of the broker.
    #[arg(long)]
    pub floor: bool,
    /// Give the messages keys `key-0` to `key-<N-1>`, in turn, and leave their placing to the
    /// broker (no `partition` in the appends): it places each by its key's hash.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub keys: Option<u32>,
    /// Pipelining: with --max-in-flight, messages are given one at a time to the pipelined
    /// producer (`--batch 1`), which gathers them into appends.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// With --max-in-flight: appends without the idempotent producer's id and sequences, as
    /// `producer --no-idempotence` sends them. (Lockstep, the one encoded request sent again
    /// and again carries none: the broker would take each for a copy of the first.)
    #[arg(long, requires = "max_in_flight")]
    pub no_idempotence: bool,
}

/// Options of `consumer perf` (besides the consumer's global `--json`).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ConsumePerfArgs {
    /// Which logical broker each client claims, and whether it waits for one.
    #[command(flatten)]
    pub claim: crate::args::ClaimArgs,
    /// The topic to read; it must hold at least one message.
    #[arg(value_name = "TOPIC")]
    pub topic: String,
    /// How many messages to read in all.
    #[arg(long, value_name = "N", value_parser = positive)]
    pub messages: u64,
    /// At most this many messages per fetch (its max_messages).
    #[arg(
        long,
        value_name = "M",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_FETCH_MESSAGES))
    )]
    pub batch: u32,
    /// Concurrent clients, each a thread with its own socket and its own claim.
    #[arg(
        long,
        value_name = "C",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1024)
    )]
    pub clients: u32,
    /// Measure a bare ZeroMQ ROUTER in this process, answering with a prepared reply, instead
    /// of the broker.
    #[arg(long)]
    pub floor: bool,
    /// With --floor: bytes of each message's value in the prepared reply.
    #[arg(long, value_name = "BYTES", default_value_t = 100, requires = "floor")]
    pub size: usize,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `append` or `fetch`.
    pub op: &'static str,
    /// `broker`, or `floor` for the bare ZeroMQ ROUTER.
    pub target: &'static str,
    /// Where the requests went.
    pub endpoint: String,
    /// The topic.
    pub topic: String,
    /// Concurrent clients.
    pub clients: u32,
    /// Messages per request asked for.
    pub batch: u32,
    /// Bytes of each value (for a fetch: the mean over the messages read).
    pub size: u64,
    /// Messages appended or read.
    pub messages: u64,
    /// Requests made.
    pub requests: u64,
    /// Bytes of keys and values appended or read.
    pub bytes: u64,
    /// From the first request to the last reply, in seconds.
    pub seconds: f64,
    /// Messages per second.
    pub records_per_s: f64,
    /// Megabytes (10^6 bytes) of keys and values per second.
    pub mb_per_s: f64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// The time from sending a request to having its reply.
    pub latency_us: Latency,
}

/// Request latencies, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// The mean.
    pub mean: f64,
    /// The median.
    pub p50: f64,
    /// The 95th percentile.
    pub p95: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The 99.9th percentile.
    pub p999: f64,
    /// The longest.
    pub max: f64,
}

impl Latency {
    /// The figures of `samples` (nanoseconds), which it sorts.
    pub fn of(samples: &mut [u64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        // Nearest rank: the smallest sample with at least `per_mille` thousandths of them at or
        // below it, in integers so that 99.9 % of 1,000 samples is exactly 999 of them.
        let rank = |per_mille: usize| {
            let index = (per_mille * samples.len()).div_ceil(1000);
            micros(samples[index.clamp(1, samples.len()) - 1])
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Latency {
            mean: sum as f64 / samples.len() as f64 / 1000.0,
            p50: rank(500),
            p95: rank(950),
            p99: rank(990),
            p999: rank(999),
            max: micros(samples[samples.len() - 1]),
        }
    }
}

fn micros(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

/// # Format
/// `OP TOPIC at ENDPOINT (TARGET): C client(s), batches of M, S-byte values` on one line, then
/// `N records in T s: R records/s, B MB/s, Q requests/s; latency µs mean .. p50 .. p95 .. p99
/// .. p99.9 .. max ..`.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency_us;
        writeln!(
            f,
            "{} {} at {} ({}): {} client{}, batches of {}, {}-byte values",
            self.op,
            self.topic,
            self.endpoint,
            self.target,
            self.clients,
            if self.clients == 1 { "" } else { "s" },
            self.batch,
            self.size,
        )?;
        write!(
            f,
            "{} records in {:.3} s: {:.1} records/s, {:.2} MB/s, {:.1} requests/s; latency µs \
             mean {:.1} p50 {:.1} p95 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
            self.messages,
            self.seconds,
            self.records_per_s,
            self.mb_per_s,
            self.requests_per_s,
            l.mean,
            l.p50,
            l.p95,
            l.p99,
            l.p999,
            l.max,
        )
    }
}

/// What one client did in the timed part of a run.
#[derive(Debug, Default)]
struct ClientRun {
    /// When its first timed request went out.
    started: Option<Instant>,
    /// When its last reply came.
    ended: Option<Instant>,
    /// Messages appended or read.
    messages: u64,
    /// Bytes of keys and values appended or read.
    bytes: u64,
    /// Each request's latency in nanoseconds (each message's, when pipelined).
    latencies: Vec<u64>,
    /// Requests made, when not one per latency (pipelined: the appends).
    requests: Option<u64>,
}

impl ClientRun {
    /// Times one exchange and counts what `exchange` says it moved: messages and bytes.
    fn time(&mut self, exchange: impl FnOnce() -> Result<(u64, u64)>) -> Result<()> {
        let sent = Instant::now();
        self.started.get_or_insert(sent);
        let (messages, bytes) = exchange()?;
        let received = Instant::now();
        self.ended = Some(received);
        self.latencies.push((received - sent).as_nanos() as u64);
        self.messages += messages;
        self.bytes += bytes;
        Ok(())
    }
}

/// The parts of a report that the runs do not tell.
struct Setup<'a> {
    op: &'static str,
    floor: bool,
    endpoint: &'a str,
    topic: &'a str,
    clients: u32,
    batch: u32,
}

impl Setup<'_> {
    /// Sums the clients' runs into a report.
    fn report(&self, runs: Vec<ClientRun>) -> Report {
        let started = runs.iter().filter_map(|r| r.started).min();
        let ended = runs.iter().filter_map(|r| r.ended).max();
        let seconds = match (started, ended) {
            (Some(s), Some(e)) => (e - s).as_secs_f64(),
            _ => 0.0,
        };
        let messages: u64 = runs.iter().map(|r| r.messages).sum();
        let bytes: u64 = runs.iter().map(|r| r.bytes).sum();
        let requests: u64 =
            runs.iter().map(|r| r.requests.unwrap_or(r.latencies.len() as u64)).sum();
        let mut latencies: Vec<u64> = runs.into_iter().flat_map(|r| r.latencies).collect();
        let per_second = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
        Report {
            op: self.op,
            target: if self.floor { "floor" } else { "broker" },
            endpoint: self.endpoint.to_owned(),
            topic: self.topic.to_owned(),
            clients: self.clients,
            batch: self.batch,
            size: bytes.checked_div(messages).unwrap_or(0),
            messages,
            requests,
            bytes,
            seconds,
            records_per_s: per_second(messages as f64),
            mb_per_s: per_second(bytes as f64 / 1e6),
            requests_per_s: per_second(requests as f64),
            latency_us: Latency::of(&mut latencies),
        }
    }
}

/// Runs `producer perf` and prints its figures.
///
/// # Errors
/// An invalid topic name, an unreachable broker, a refused append, or Ctrl-C.
pub fn produce(
    connection: &ConnectArgs,
    args: &ProducePerfArgs,
    shutdown: &Shutdown,
) -> Result<()> {
    validate_topic_name(&args.topic)
        .map_err(|source| ClientError::InvalidTopic { name: args.topic.clone(), source })?;
    let floor = if args.floor { Some(Floor::start(None)?) } else { None };
    let endpoints = match &floor {
        Some(floor) => Endpoints::one(&floor.endpoint),
        None => connection.endpoints()?,
    };
    let endpoint = endpoints.to_string();
    let first = connection.client_at(endpoints, shutdown)?;

    let value: Vec<u8> = (0..args.size).map(|i| b'a' + (i % 26) as u8).collect();
    let batch = u64::from(args.batch);
    let names: Vec<String> = match args.topics {
        1 => vec![args.topic.clone()],
        n => (0..n).map(|i| format!("{}-{i}", args.topic)).collect(),
    };
    for name in &names {
        validate_topic_name(name)
            .map_err(|source| ClientError::InvalidTopic { name: name.clone(), source })?;
    }
    let keys: Vec<String> = (0..args.keys.unwrap_or(0)).map(|i| format!("key-{i}")).collect();
    if let Some(options) =
        args.pipeline.options(protocol::MAX_APPEND_MESSAGES, !args.no_idempotence)
    {
        if args.floor || args.batch != 1 {
            return Err(usage(
                "--max-in-flight gives messages one at a time to a broker: use --batch 1 and no \
                 --floor (appends are gathered by --linger and --batch-bytes)",
            ));
        }
        let run = Pipelined { args, options, names: &names, keys: &keys, value: &value };
        return run.measure(first, &endpoint, shutdown);
    }
    // Message `n` of a cycle of requests: its key, in turn, when there are keys.
    let key_of =
        |n: u64| (!keys.is_empty()).then(|| keys[(n % keys.len() as u64) as usize].as_bytes());
    let encode_from = |topic: &str, start: u64, count: u64| {
        let messages = (0..count).map(|i| NewMessage::new(key_of(start + i), &value)).collect();
        let mut frame = Vec::new();
        // No partition: the broker puts a keyless append's messages on one partition, the next
        // in turn, and places keyed messages by their keys.
        encode_request(
            &Request::Append(Append { topic, partition: None, messages, sequenced: None }),
            &mut frame,
        );
        frame
    };
    let encode_to = |topic: &str, count: u64| encode_from(topic, 0, count);
    let encode = |count: u64| encode_to(&names[0], count);
    // One request per topic, encoded once, as for a single topic; with keys, one per request
    // of a cycle of keys (each request starting where the last left off), up to 1,000.
    let cycle = match keys.len() as u64 {
        0 => 1,
        n => (n / gcd(n, batch.min(args.messages))).min(1000),
    };
    let fulls: Vec<Vec<u8>> = names
        .iter()
        .flat_map(|name| {
            (0..cycle)
                .map(|c| encode_from(name, c * batch.min(args.messages), batch.min(args.messages)))
        })
        .collect();
    // The last request carries what is left over when the batch does not divide the total;
    // client 0 sends it.
    let requests = args.messages.div_ceil(batch);
    let left_over = args.messages - (requests - 1) * batch;
    let last = (left_over != batch).then(|| encode(left_over));
    let mut status = Vec::new();
    encode_request(&Request::Status, &mut status);

    let barrier = Barrier::new(args.clients as usize);
    let mut clients = Vec::with_capacity(args.clients as usize);
    for _ in 1..args.clients {
        clients.push(first.sibling()?);
    }
    clients.insert(0, first);
    let per_client = requests / u64::from(args.clients);
    let extra = requests % u64::from(args.clients);
    let runs = thread::scope(|scope| {
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, mut client)| {
                let count = per_client + u64::from((i as u64) < extra);
                let last = if i == 0 { last.as_deref() } else { None };
                let (fulls, status, barrier) = (&fulls, &status, &barrier);
                // Clients start spread over the topics, and each goes through all of them.
                let start = i * fulls.len() / args.clients as usize;
                scope.spawn(move || {
                    // One untimed exchange first, so that connecting is not timed.
                    let warm = client.round_trip(status).map(drop);
                    barrier.wait();
                    warm?;
                    let mut run = ClientRun {
                        latencies: Vec::with_capacity(count as usize),
                        ..ClientRun::default()
                    };
                    for n in 0..count {
                        if shutdown.is_signalled() {
                            return Err(ClientError::Interrupted);
                        }
                        let frame = match last {
                            Some(last) if n + 1 == count => last,
                            _ => &fulls[(start + n as usize) % fulls.len()],
                        };
                        let sent = if n + 1 == count && last.is_some() { left_over } else { batch };
                        run.time(|| {
                            let reply = client.round_trip(frame)?;
                            check_appended(&reply, frame.len(), sent, args.floor)?;
                            Ok((sent, sent * args.size as u64))
                        })?;
                    }
                    Ok(run)
                })
            })
            .collect();
        join_all(handles)
    })?;
    drop(floor);
    let setup = Setup {
        op: "append",
        floor: args.floor,
        endpoint: &endpoint,
        topic: &args.topic,
        clients: args.clients,
        batch: args.batch,
    };
    print_report(&setup.report(runs), args.json)
}

/// The greatest common divisor of `a` and `b`.
fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

/// An error in the options given.
fn usage(reason: &str) -> ClientError {
    ClientError::Io {
        what: "invalid options",
        source: io::Error::new(io::ErrorKind::InvalidInput, reason.to_owned()),
    }
}

/// `producer perf --max-in-flight`: single messages given to the pipelined producer.
struct Pipelined<'a> {
    args: &'a ProducePerfArgs,
    options: PipelineOptions,
    names: &'a [String],
    keys: &'a [String],
    value: &'a [u8],
}

impl Pipelined<'_> {
    /// Runs the clients, each with a pipeline of its own, and prints the figures.
    fn measure(&self, first: Client, endpoint: &str, shutdown: &Shutdown) -> Result<()> {
        let args = self.args;
        let mut clients = Vec::with_capacity(args.clients as usize);
        for _ in 1..args.clients {
            clients.push(first.sibling()?);
        }
        clients.insert(0, first);
        let barrier = Barrier::new(args.clients as usize);
        let per_client = args.messages / u64::from(args.clients);
        let extra = args.messages % u64::from(args.clients);
        let runs = thread::scope(|scope| {
            let handles: Vec<_> = clients
                .into_iter()
                .enumerate()
                .map(|(i, mut client)| {
                    let count = per_client + u64::from((i as u64) < extra);
                    let barrier = &barrier;
                    scope.spawn(move || {
                        // One untimed exchange first, so that connecting is not timed.
                        let warm = client.status().map(drop);
                        let topic = &self.names[i % self.names.len()];
                        let pipeline = Pipeline::open(&client, topic, self.options);
                        barrier.wait();
                        warm?;
                        self.client_run(pipeline?, count, shutdown)
                    })
                })
                .collect();
            join_all(handles)
        })?;
        let setup = Setup {
            op: "append",
            floor: false,
            endpoint,
            topic: &args.topic,
            clients: args.clients,
            batch: args.batch,
        };
        print_report(&setup.report(runs), args.json)
    }

    /// Gives `count` messages one at a time, then waits for every outcome. A message's
    /// latency runs from its send to its acknowledgement; each append counts as a request.
    fn client_run(
        &self,
        mut pipeline: Pipeline,
        count: u64,
        shutdown: &Shutdown,
    ) -> Result<ClientRun> {
        let start = Instant::now();
        let mut sent_at: Vec<u64> = Vec::with_capacity(count as usize);
        let mut run =
            ClientRun { latencies: Vec::with_capacity(count as usize), ..ClientRun::default() };
        let mut appends = 0u64;
        let mut take =
            |pipeline: &mut Pipeline, sent_at: &[u64], run: &mut ClientRun| -> Result<()> {
                while let Some(outcome) = pipeline.outcome() {
                    outcome.result?;
                    let now = start.elapsed().as_nanos() as u64;
                    for &tag in &outcome.tags {
                        run.latencies.push(now.saturating_sub(sent_at[tag as usize]));
                    }
                    run.messages += outcome.tags.len() as u64;
                    run.bytes += outcome.tags.len() as u64 * self.value.len() as u64;
                    appends += 1;
                }
                Ok(())
            };
        run.started = Some(start);
        for n in 0..count {
            if n % 1024 == 0 && shutdown.is_signalled() {
                return Err(ClientError::Interrupted);
            }
            let key = (!self.keys.is_empty())
                .then(|| self.keys[(n % self.keys.len() as u64) as usize].as_bytes());
            sent_at.push(start.elapsed().as_nanos() as u64);
            pipeline.send(None, NewMessage::new(key, self.value), n)?;
            take(&mut pipeline, &sent_at, &mut run)?;
        }
        pipeline.flush()?;
        take(&mut pipeline, &sent_at, &mut run)?;
        run.ended = Some(Instant::now());
        // The report counts requests as latencies; here they are appends.
        run.requests = Some(appends);
        Ok(run)
    }
}

/// Checks the reply to an append of `sent` messages: the broker's must say it appended that
/// many; the floor's must be the request again.
fn check_appended(reply: &[u8], request_len: usize, sent: u64, floor: bool) -> Result<()> {
    if floor {
        if reply.len() != request_len {
            return Err(ClientError::UnexpectedReply { request: "append", reply: "a short echo" });
        }
        return Ok(());
    }
    match decode_response(reply).map_err(ClientError::Decode)? {
        Response::Appended { first_offset, last_offset, placed, .. }
            if placed.is_empty() && last_offset + 1 - first_offset == sent =>
        {
            Ok(())
        }
        // Keyed messages the broker spread over partitions: each partition's run.
        Response::Appended { placed, .. }
            if placed.iter().map(|p| p.last_offset + 1 - p.first_offset).sum::<u64>() == sent =>
        {
            Ok(())
        }
        Response::Error { code, reason, range, .. } => {
            Err(ClientError::Broker { code, reason: reason.into_owned(), range })
        }
        other => Err(ClientError::UnexpectedReply { request: "append", reply: other.name() }),
    }
}

/// Runs `consumer perf` and prints its figures. `spec` says which logical broker each client
/// claims and whether it waits for one.
///
/// # Errors
/// An invalid topic name, an unreachable broker, no logical broker free (without `--wait`),
/// an unknown or empty topic, a refused fetch, or Ctrl-C.
pub fn consume(
    connection: &ConnectArgs,
    args: &ConsumePerfArgs,
    spec: &ClaimSpec,
    json: bool,
    shutdown: &Shutdown,
) -> Result<()> {
    validate_topic_name(&args.topic)
        .map_err(|source| ClientError::InvalidTopic { name: args.topic.clone(), source })?;
    let floor = if args.floor {
        Some(Floor::start(Some(prepared_messages(&args.topic, args.batch, args.size)))?)
    } else {
        None
    };
    let endpoints = match &floor {
        Some(floor) => Endpoints::one(&floor.endpoint),
        None => connection.endpoints()?,
    };
    let endpoint = endpoints.to_string();
    let first = connection.client_at(endpoints, shutdown)?;
    let mut clients = Vec::with_capacity(args.clients as usize);
    for _ in 1..args.clients {
        clients.push(first.sibling()?);
    }
    clients.insert(0, first);

    // With --wait a client may wait for another to finish and release: no common start.
    let barrier = (args.floor || !spec.wait).then(|| Barrier::new(args.clients as usize));
    let per_client = args.messages / u64::from(args.clients);
    let extra = args.messages % u64::from(args.clients);
    let runs = thread::scope(|scope| {
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, mut client)| {
                let share = per_client + u64::from((i as u64) < extra);
                let barrier = barrier.as_ref();
                scope.spawn(move || {
                    let reader = Reader::start(&mut client, args, spec, i as u32);
                    if let Some(barrier) = barrier {
                        barrier.wait();
                    }
                    let mut reader = reader?;
                    let run = reader.read(&mut client, args, share, shutdown);
                    if let Some(claimed) = reader.claimed {
                        claim::release(&mut client, &claimed);
                    }
                    run
                })
            })
            .collect();
        join_all(handles)
    })?;
    drop(floor);
    let setup = Setup {
        op: "fetch",
        floor: args.floor,
        endpoint: &endpoint,
        topic: &args.topic,
        clients: args.clients,
        batch: args.batch,
    };
    print_report(&setup.report(runs), json)
}

/// One consumer client's place in the topic.
struct Reader {
    /// The claim it reads under; none for the floor, which needs none.
    claimed: Option<crate::client::Claimed>,
    /// The topic's first offset, where the reader goes back to at the end.
    first: u64,
    /// Where the next fetch starts.
    offset: u64,
}

impl Reader {
    /// Claims a logical broker (not for the floor) and places client `index` of
    /// `args.clients` in the topic.
    fn start(
        client: &mut Client,
        args: &ConsumePerfArgs,
        spec: &ClaimSpec,
        index: u32,
    ) -> Result<Reader> {
        if args.floor {
            return Ok(Reader { claimed: None, first: 0, offset: 0 });
        }
        let claimed = claim::acquire(client, spec)?;
        let topics = match client.list_topics(claimed.token) {
            Ok(topics) => topics,
            Err(e) => {
                claim::release(client, &claimed);
                return Err(e);
            }
        };
        let Some(info) = topics.iter().find(|t| t.name == args.topic && t.messages > 0) else {
            claim::release(client, &claimed);
            return Err(ClientError::Broker {
                code: protocol::ErrorCode::UnknownTopic,
                reason: format!("topic {:?} does not exist or holds no message", args.topic),
                range: None,
            });
        };
        let span = info.next_offset - info.first_offset;
        let offset = info.first_offset + span * u64::from(index) / u64::from(args.clients);
        Ok(Reader { claimed: Some(claimed), first: info.first_offset, offset })
    }

    /// Fetches until `share` messages are read, going back to the first offset at the end.
    fn read(
        &mut self,
        client: &mut Client,
        args: &ConsumePerfArgs,
        share: u64,
        shutdown: &Shutdown,
    ) -> Result<ClientRun> {
        let mut run = ClientRun {
            latencies: Vec::with_capacity((share / u64::from(args.batch) + 1) as usize),
            ..ClientRun::default()
        };
        let token = self.claimed.map_or(0, |c| c.token);
        while run.messages < share {
            if shutdown.is_signalled() {
                return Err(ClientError::Interrupted);
            }
            let want = (share - run.messages).min(u64::from(args.batch)) as u32;
            let fetch = Fetch {
                claim: token,
                topic: &args.topic,
                partition: 0,
                offset: self.offset,
                max_messages: want,
                max_bytes: MAX_FETCH_BYTES,
                wait_ms: 0,
                batches: false,
            };
            let mut next = self.offset;
            run.time(|| {
                client.fetch(fetch, |batch| {
                    let bytes = batch.messages.iter().map(message_bytes).sum::<u64>();
                    next = batch.next_offset;
                    if batch.next_offset >= batch.end_offset || batch.messages.is_empty() {
                        next = self.first;
                    }
                    Ok((batch.messages.len() as u64, bytes))
                })
            })?;
            self.offset = next;
        }
        Ok(run)
    }
}

/// Bytes of a message's key and value.
fn message_bytes(message: &Message<'_>) -> u64 {
    (message.key.map_or(0, <[u8]>::len) + message.value.len()) as u64
}

/// The reply the floor gives every fetch (from offset 0): `count` messages of `size` bytes
/// appended together, encoded as the broker encodes a `batches` reply (one record batch).
fn prepared_messages(topic: &str, count: u32, size: usize) -> Vec<u8> {
    let value: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let timestamp =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let messages = (0..u64::from(count))
        .map(|offset| Message { offset, timestamp, key: None, value: &value, headers: Vec::new() })
        .collect::<Vec<_>>();
    let response = Response::Batches {
        topic,
        partition: 0,
        batches: Batches::Pieces(batch::pieces_of(&messages)),
        next_offset: u64::from(count),
        end_offset: u64::from(count),
    };
    let mut frame = Vec::new();
    encode_response(response, &mut frame);
    frame
}

/// Waits for every client thread; the first failure wins.
fn join_all(
    handles: Vec<thread::ScopedJoinHandle<'_, Result<ClientRun>>>,
) -> Result<Vec<ClientRun>> {
    let mut runs = Vec::with_capacity(handles.len());
    let mut failure = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(run)) => runs.push(run),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(runs),
    }
}

/// Prints `report` as text or as one JSON object.
fn print_report(report: &Report, json: bool) -> Result<()> {
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, report)
            .map_err(|e| ClientError::output(io::Error::other(e)))?;
        writeln!(out).map_err(ClientError::output)
    } else {
        writeln!(out, "{report}").map_err(ClientError::output)
    }
}

/// A bare ZeroMQ ROUTER on an ephemeral loopback port, served by a thread of this process with
/// a context (and so an I/O thread) of its own, as the broker's process has. It answers each
/// request at once: with the request's own frames, or with a prepared reply. It stops when
/// dropped.
pub struct Floor {
    /// Where it listens.
    endpoint: String,
    /// Asks the thread to stop.
    stop: Arc<AtomicBool>,
    /// The serving thread.
    thread: Option<thread::JoinHandle<()>>,
}

impl Floor {
    /// Binds `tcp://127.0.0.1:*` and starts answering: with `reply` when given, else with an
    /// echo of each request.
    ///
    /// # Errors
    /// The socket could not be made or bound.
    pub fn start(reply: Option<Vec<u8>>) -> Result<Floor> {
        let endpoint = "tcp://127.0.0.1:*";
        let failed = |source| ClientError::Connect { endpoint: endpoint.to_owned(), source };
        let context = zmq::Context::new();
        let socket = context.socket(zmq::ROUTER).map_err(failed)?;
        socket.set_linger(0).map_err(failed)?;
        socket.set_rcvtimeo(FLOOR_TICK_MS).map_err(failed)?;
        socket.bind(endpoint).map_err(failed)?;
        let endpoint = socket
            .get_last_endpoint()
            .map_err(failed)?
            .unwrap_or_else(|raw| String::from_utf8_lossy(&raw).into_owned());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            serve_floor(&socket, reply.as_deref(), &flag);
            // The socket goes before its context.
            drop(socket);
            drop(context);
        });
        Ok(Floor { endpoint, stop, thread: Some(thread) })
    }

    /// Where it listens.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The floor's loop: receive a whole request, send it (or `reply`) back on its envelope.
fn serve_floor(socket: &zmq::Socket, reply: Option<&[u8]>, stop: &AtomicBool) {
    let mut frames: Vec<zmq::Message> = Vec::with_capacity(4);
    while !stop.load(Ordering::SeqCst) {
        frames.clear();
        match socket.recv_msg(0) {
            Ok(frame) => frames.push(frame),
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
            Err(_) => return,
        }
        while socket.get_rcvmore().unwrap_or(false) {
            match socket.recv_msg(0) {
                Ok(frame) => frames.push(frame),
                Err(_) => return,
            }
        }
        let last = frames.len() - 1;
        for (i, frame) in frames.drain(..).enumerate() {
            let sent = match reply {
                Some(reply) if i == last => socket.send(reply, 0),
                _ if i == last => socket.send(frame, 0),
                _ => socket.send(frame, zmq::SNDMORE),
            };
            if sent.is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut samples: Vec<u64> = (1..=1000).rev().map(|n| n * 1000).collect();
        let l = Latency::of(&mut samples);
        assert_eq!((l.p50, l.p95, l.p99, l.p999, l.max), (500.0, 950.0, 990.0, 999.0, 1000.0));
        assert!((l.mean - 500.5).abs() < 1e-9);
        assert_eq!(Latency::of(&mut [7000]).p999, 7.0);
        assert_eq!(Latency::of(&mut []), Latency::default());
    }

    #[test]
    fn the_floor_echoes_and_answers_with_its_reply() {
        let echo = Floor::start(None).unwrap();
        let mut client = Client::connect(echo.endpoint(), Duration::from_secs(5)).unwrap();
        assert_eq!(&client.round_trip(b"hello").unwrap()[..], b"hello");
        drop(echo);

        let reply = prepared_messages("t", 3, 10);
        let prepared = Floor::start(Some(reply)).unwrap();
        let mut client = Client::connect(prepared.endpoint(), Duration::from_secs(5)).unwrap();
        let fetch = Fetch {
            claim: 0,
            topic: "t",
            partition: 0,
            offset: 0,
            max_messages: 3,
            max_bytes: MAX_FETCH_BYTES,
            wait_ms: 0,
            batches: false,
        };
        let (count, next) = client.fetch(fetch, |b| Ok((b.messages.len(), b.next_offset))).unwrap();
        assert_eq!((count, next), (3, 3));
    }

    #[test]
    fn a_report_reads_like_kafkas() {
        let run = ClientRun {
            started: Some(Instant::now()),
            ended: None,
            messages: 10,
            bytes: 1000,
            latencies: vec![1000; 10],
            requests: None,
        };
        let setup =
            Setup { op: "append", floor: true, endpoint: "e", topic: "t", clients: 1, batch: 1 };
        let report = setup.report(vec![run]);
        assert_eq!(report.size, 100);
        assert_eq!(report.requests, 10);
        let text = report.to_string();
        assert!(
            text.starts_with("append t at e (floor): 1 client, batches of 1, 100-byte values\n")
        );
        assert!(text.contains("latency µs mean 1.0 p50 1.0"), "{text}");
    }
}
