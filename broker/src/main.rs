//! The `broker` binary: parse arguments, bind, serve until Ctrl-C or SIGTERM.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use broker::group::Groups;
use broker::store::{Store, DEFAULT_SEGMENT_BYTES};
use broker::unread::Limits;
use broker::{preload, server, Broker, Config, Fsync, Shutdown, StoreConfig};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A ZeroMQ message broker hosting claimable logical brokers over one topic store.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The endpoint to bind: HOST:PORT or tcp://HOST:PORT (a host name is resolved to its
    /// address), ipc://PATH; port `*` picks a free one, as in `127.0.0.1:*`.
    #[arg(
        long,
        value_name = "ENDPOINT",
        env = protocol::endpoint::ENDPOINT_ENV,
        default_value = protocol::DEFAULT_ENDPOINT,
        value_parser = protocol::endpoint::resolve
    )]
    bind: String,
    /// Start with the sample topics `Hola mundo`, `Hello world`, `Hallo welt` and `Ciao mondo`.
    #[arg(long)]
    preload: bool,
    /// How many logical brokers to host.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    brokers: u32,
    /// How long a claim lasts without a request, e.g. `30s`, `500ms`, `2m`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// The most bytes of key plus value one message may have.
    #[arg(long, default_value_t = protocol::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Keep topics in this directory, durably; without it they live in memory only.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// When appends reach the disk before they are acknowledged: `always` (each pass of the
    /// event loop flushes once for all its appends), `interval=DURATION` or `never` (the
    /// operating system decides).
    #[arg(long, default_value = "always", value_parser = parse_fsync)]
    fsync: Fsync,
    /// Bytes of records per segment file; retention removes whole segments.
    #[arg(long, default_value_t = DEFAULT_SEGMENT_BYTES, value_parser = parse_segment_bytes)]
    segment_bytes: usize,
    /// Keep about this many of each topic's newest messages (at least this many).
    #[arg(long, value_name = "N")]
    retention_messages: Option<u64>,
    /// Keep about this many bytes of each topic's newest keys and values.
    #[arg(long, value_name = "N")]
    retention_bytes: Option<u64>,
    /// Keep messages this long, e.g. `7d`, `12h`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    retention_time: Option<Duration>,
    /// How long a message delivered to a consumer group member waits for its acknowledgement
    /// before it goes to a member again, e.g. `30s`, `2s`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    group_ack_timeout: Duration,
    /// The most bytes of replies all clients together may leave unread (queued to them but not
    /// yet taken by their connections); past it, reads get `311 overloaded`.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().total)]
    max_unread_bytes: usize,
    /// The most bytes of replies one client may leave unread; past it, its reads get
    /// `311 overloaded`.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().per_peer)]
    max_unread_bytes_per_client: usize,
    /// With `--data-dir`: rather than refuse to start on damaged files, move them aside into
    /// `DATA_DIR/damaged/<n>/` (keeping a copy of anything cut), log each one, and start without
    /// them.
    #[arg(long, requires = "data_dir")]
    repair: bool,
}

/// Parses a segment size: 64 bytes to 1 GiB (offsets within a segment are 32-bit).
fn parse_segment_bytes(text: &str) -> Result<usize, String> {
    let bytes: usize = text.parse().map_err(|e| format!("{e}"))?;
    (64..=1 << 30)
        .contains(&bytes)
        .then_some(bytes)
        .ok_or_else(|| "expected 64 to 1073741824".into())
}

/// Parses `always`, `never` or `interval=DURATION`.
fn parse_fsync(text: &str) -> Result<Fsync, String> {
    match text {
        "always" => Ok(Fsync::Always),
        "never" => Ok(Fsync::Never),
        _ => match text.strip_prefix("interval=") {
            Some(duration) => humantime::parse_duration(duration)
                .map(Fsync::Interval)
                .map_err(|e| format!("bad interval {duration:?}: {e}")),
            None => Err("expected `always`, `never` or `interval=DURATION`".into()),
        },
    }
}

/// Raises the soft limit on open files to the hard limit, as Redis and nginx do: each client
/// connection takes a file descriptor, and the default soft limit (often 1,024) is reached long
/// before the machine's. Logs the limit in effect.
fn raise_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open file limit"),
    }
}

fn main() {
    if let Err(error) = run(Args::parse()) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    anyhow::ensure!(args.lease > Duration::ZERO, "--lease must be longer than zero");
    anyhow::ensure!(
        args.group_ack_timeout > Duration::ZERO,
        "--group-ack-timeout must be longer than zero"
    );
    let retention = protocol::Retention {
        messages: args.retention_messages,
        bytes: args.retention_bytes,
        ms: args.retention_time.map(|d| d.as_millis() as u64),
    };
    let config = Config {
        brokers: args.brokers,
        lease: args.lease,
        store: StoreConfig {
            data_dir: args.data_dir,
            fsync: args.fsync,
            max_message_bytes: args.max_message_bytes,
            segment_bytes: args.segment_bytes,
            retention,
            repair: args.repair,
        },
        group_ack_timeout: args.group_ack_timeout,
        unread: Limits { total: args.max_unread_bytes, per_peer: args.max_unread_bytes_per_client },
    };
    raise_file_limit();

    let started = std::time::Instant::now();
    let store = Store::open(config.store.clone()).context("cannot open the store")?;
    if let Some(dir) = &config.store.data_dir {
        let totals = store.totals();
        tracing::info!(
            "opened {} in {:?}: {} topics, {} messages",
            dir.display(),
            started.elapsed(),
            totals.topics,
            totals.messages
        );
    }
    let groups =
        Groups::open(config.group_ack_timeout, &config.store, &store, std::time::Instant::now())
            .context("cannot open the consumer groups")?;
    if config.store.data_dir.is_some() {
        tracing::info!(states = groups.len(), "opened the consumer groups");
    }
    let mut broker = Broker::new(store, &config);
    broker.groups = groups;
    if args.preload {
        let added = preload::preload(&mut broker.store, broker::clock::epoch_ms())
            .context("cannot preload")?;
        tracing::info!(topics = added, "preloaded sample topics");
    }

    let shutdown = Shutdown::new().context("cannot make the stop signal's pipe")?;
    let trigger = shutdown.clone();
    ctrlc::set_handler(move || trigger.trigger()).context("cannot install the Ctrl-C handler")?;

    let context = zmq::Context::new();
    let listener = server::bind(&context, &args.bind, &config)?;
    let endpoint = listener.endpoint().to_owned();
    // One line on stdout, flushed, so that scripts and tests can read where to connect.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {endpoint}")?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(
        %endpoint,
        brokers = config.brokers,
        lease = ?config.lease,
        group_ack_timeout = ?config.group_ack_timeout,
        "serving"
    );

    server::run(listener, broker, shutdown)?;
    Ok(())
}
