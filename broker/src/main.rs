//! The `broker` binary: parse arguments, bind, serve until Ctrl-C or SIGTERM.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use broker::auth::keys::{self, ServerKeys};
use broker::auth::users::{hash_password, Users};
use broker::auth::{self, Guard, Settings};
use broker::group::Groups;
use broker::nats::{NatsConfig, NatsLog};
use broker::store::{Store, DEFAULT_SEGMENT_BYTES};
use broker::unread::Limits;
use broker::{preload, server, Broker, Config, Fsync, Shutdown, StoreConfig};
use clap::{Parser, Subcommand};
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// A ZeroMQ message broker hosting claimable logical brokers over one topic store.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    /// Something else than serving: make keys or password hashes.
    #[command(subcommand)]
    command: Option<Tool>,
    /// Require every client to log in as a user of this TOML file (PLAIN with a password, or
    /// CURVE with a key when `--curve-secret-key` is given), and hold it to the user's
    /// permissions.
    #[arg(long, value_name = "FILE")]
    auth: Option<PathBuf>,
    /// Encrypt every connection with CURVE, with the server's secret key read from the first
    /// line of FILE (40 characters of Z85, as `broker keygen` writes it).
    #[arg(long, value_name = "FILE")]
    curve_secret_key: Option<PathBuf>,
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
    #[arg(long, value_name = "DIR", conflicts_with = "store")]
    data_dir: Option<PathBuf>,
    /// Keep topics in a NATS JetStream shared with other broker processes:
    /// `nats://HOST:PORT[,HOST:PORT...]` (a server version 2.10 or later, with JetStream on).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// With `--store`: how many copies JetStream keeps of each new topic (at most the
    /// cluster's size).
    #[arg(long, default_value_t = 1, requires = "store", value_parser = clap::value_parser!(u32).range(1..=5))]
    replicas: u32,
    /// With `--store`: keep this process's copy of each topic's newest messages, which reads
    /// are served from, in segment files under DIR (read through the page cache, as with
    /// `--data-dir`) instead of in memory. A clean stop keeps them for the next start, which
    /// reads only what was appended meanwhile.
    #[arg(long, value_name = "DIR", requires = "store", conflicts_with = "data_dir")]
    copy_dir: Option<PathBuf>,
    /// With `--store`: the most bytes of messages this process holds, its copies of the
    /// partitions' newest messages and what it read back of older ones together; past it, the
    /// oldest go (JetStream still holds them, and reads there read them back).
    #[arg(long, value_name = "BYTES", default_value_t = broker::nats::DEFAULT_CACHE_BYTES, requires = "store")]
    cache_bytes: u64,
    /// With `--store`: how long start-up keeps trying to reach NATS and its JetStream (servers
    /// not listening yet, a cluster that has not elected its leader yet) before it gives up.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    start_timeout: Duration,
    /// When appends reach the disk before they are acknowledged: `always` (each pass of the
    /// event loop flushes once for all its appends), `interval=DURATION` or `never` (the
    /// operating system decides).
    #[arg(long, default_value = "always", value_parser = parse_fsync)]
    fsync: Fsync,
    /// Bytes of records per segment file; retention removes whole segments.
    #[arg(long, default_value_t = DEFAULT_SEGMENT_BYTES, value_parser = parse_segment_bytes)]
    segment_bytes: usize,
    /// How many partitions a topic made by its first append gets, from 1 to 10000 (Kafka's
    /// `num.partitions`); `create_topic` names its own.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(protocol::MAX_PARTITIONS)))]
    partitions: u32,
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
    /// Without `--data-dir`: the most bytes the stored messages may take in memory (keys,
    /// values and 20 bytes each); past it, appends get `313 storage_full`. By default half of
    /// the machine's memory.
    #[arg(long, value_name = "BYTES", conflicts_with = "data_dir")]
    max_memory: Option<u64>,
    /// With `--data-dir`: the most bytes the segment files may take; past it, appends get
    /// `313 storage_full`. No limit by default.
    #[arg(long, value_name = "BYTES", requires = "data_dir")]
    max_disk: Option<u64>,
    /// Serve metrics in Prometheus' text format (`/metrics`) and health checks (`/healthz`,
    /// `/readyz`) over HTTP on ADDR: HOST:PORT, or a bare PORT for loopback (e.g. 9464). Off by
    /// default.
    #[arg(long, value_name = "ADDR", value_parser = ops::http::parse_listen)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// How log lines are written to standard error: `text` for people, `json` (one object a
    /// line, with every field) for log shippers. `RUST_LOG` picks what is logged
    /// (`audit=info` for the security events alone).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// The broker's tools.
#[derive(Debug, Subcommand)]
enum Tool {
    /// Write a new CURVE key pair to FILE (secret key on the first line, public key on the
    /// second; readable by the owner only) and print the public key.
    Keygen {
        /// Where to write the pair; must not exist.
        file: PathBuf,
    },
    /// Print an Argon2id hash of a password for a users file's `password_hash`: the password is
    /// `BROKER_PASSWORD`, or else the first line of standard input.
    HashPassword,
}

/// Runs a tool.
fn run_tool(tool: Tool) -> Result<()> {
    match tool {
        Tool::Keygen { file } => {
            let public = keys::keygen(&file)?;
            println!("curve public key {}", keys::encode_z85(&public));
        }
        Tool::HashPassword => {
            let password = match std::env::var("BROKER_PASSWORD") {
                Ok(password) => password,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).context("cannot read the password")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            anyhow::ensure!(!password.is_empty(), "the password is empty");
            let hash = hash_password(password.as_bytes()).map_err(anyhow::Error::msg)?;
            println!("{hash}");
        }
    }
    Ok(())
}

/// Starts the thread that turns signals into the loop's wake-ups: SIGINT (Ctrl-C) and SIGTERM
/// stop the broker, SIGHUP has it read the users file again.
///
/// # Errors
/// The handlers could not be installed.
fn handle_signals(shutdown: Shutdown, reload: broker::shutdown::Reload) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install the signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // Signals that arrive together are taken together, a reload before a stop: a
            // users file changed and then the broker stopped is read before it stops.
            while !signals.is_closed() {
                let batch: Vec<i32> = signals.wait().collect();
                if batch.contains(&SIGHUP) {
                    reload.trigger();
                }
                if batch.iter().any(|&signal| signal != SIGHUP) {
                    shutdown.trigger();
                }
            }
        })
        .context("cannot start the signals' thread")?;
    Ok(())
}

/// Reads the security settings the flags ask for.
fn security(args: &Args) -> Result<Settings> {
    let users = args.auth.as_deref().map(Users::read).transpose()?;
    let curve = args.curve_secret_key.as_deref().map(ServerKeys::read).transpose()?;
    if let Some(users) = &users {
        let (without, lacking): (Vec<&str>, _) = match curve {
            Some(_) => (users.without_key().collect(), "curve_public_key"),
            None => (users.without_password().collect(), "password_hash"),
        };
        if !without.is_empty() {
            let mechanism = if curve.is_some() { "CURVE" } else { "PLAIN" };
            tracing::warn!(
                users = ?without,
                "these users have no {lacking} and cannot log in while connections use {mechanism}"
            );
        }
        tracing::info!(users = users.len(), "read the users file");
    }
    if users.as_ref().is_some_and(Users::is_empty) {
        tracing::warn!("the users file names no users: nobody can log in");
    }
    Ok(Settings { users, curve, users_file: args.auth.clone() })
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
    if let Err(error) = run(ops::config::parse::<Args>()) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(mut args: Args) -> Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let log = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format.as_str() {
        "json" => log.json().init(),
        _ => log.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    if let Some(tool) = args.command.take() {
        return run_tool(tool);
    }
    // Read before anything else is opened: a bad users or key file stops start-up at once.
    let settings = security(&args)?;
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
    let max_bytes = match args.data_dir {
        Some(_) => args.max_disk,
        None => args.max_memory.or_else(broker::store::default_max_memory),
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
            max_bytes,
            partitions: args.partitions,
            nats: args
                .store
                .as_deref()
                .map(|url| NatsConfig::parse(url, args.replicas as usize))
                .transpose()
                .map_err(anyhow::Error::msg)?,
        },
        group_ack_timeout: args.group_ack_timeout,
        unread: Limits { total: args.max_unread_bytes, per_peer: args.max_unread_bytes_per_client },
    };
    raise_file_limit();

    let started = std::time::Instant::now();
    let (store, ledger): (Box<Store>, _) = match &config.store.nats {
        Some(nats) => {
            let nats = NatsConfig {
                lease: config.lease,
                copy_dir: args.copy_dir.clone(),
                cache_bytes: args.cache_bytes,
                start_timeout: args.start_timeout,
                ..nats.clone()
            };
            let mut log = NatsLog::open(config.store.clone(), &nats)
                .with_context(|| format!("cannot open the store on NATS at {:?}", nats.servers))?;
            let shared = (log.claims(), log.groups());
            (Box::new(log), Some(shared))
        }
        None => (Store::open(config.store.clone()).context("cannot open the store")?, None),
    };
    if let Some(dir) = &config.store.data_dir {
        let totals = store.totals();
        tracing::info!(
            "opened {} in {:?}: {} topics, {} messages, read and checked {} bytes of segments",
            dir.display(),
            started.elapsed(),
            totals.topics,
            totals.messages,
            store.checked_bytes()
        );
    }
    let groups =
        Groups::open(config.group_ack_timeout, &config.store, &*store, std::time::Instant::now())
            .context("cannot open the consumer groups")?;
    if config.store.data_dir.is_some() {
        tracing::info!(states = groups.len(), "opened the consumer groups");
    }
    let mut broker = Broker::new(store, &config);
    broker.groups = groups;
    if let Some((claims, group_states)) = ledger {
        broker.brokers.share(Box::new(claims));
        broker.groups.share(Box::new(group_states));
    }
    if args.preload {
        let added = preload::preload(&mut *broker.store, broker::clock::epoch_ms())
            .context("cannot preload")?;
        tracing::info!(topics = added, "preloaded sample topics");
    }

    let shutdown = Shutdown::new().context("cannot make the stop signal's pipe")?;
    let context = zmq::Context::new();
    // The ZAP handler is bound before the socket that asks it.
    let guard = Guard::open(&context, settings).context("cannot set up security")?;
    handle_signals(shutdown.clone(), guard.reload_trigger())?;
    let login = guard.requires_login();
    let curve_key = guard.curve_public_key();
    let listener = server::bind(&context, &args.bind, &config, guard)?;
    let endpoint = listener.endpoint().to_owned();
    // One line on stdout, flushed, so that scripts and tests can read where to connect; then
    // the key clients need to encrypt, when they must.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {endpoint}")?;
    if let Some(key) = &curve_key {
        writeln!(stdout, "curve public key {key}")?;
    }
    if let Some(address) = args.metrics_listen {
        let nats = config.store.nats.as_ref().map(|n| n.servers.clone()).unwrap_or_default();
        let published = Arc::new(broker::metrics::Published::new(nats));
        broker.published = Some(Arc::clone(&published));
        let bound = ops::http::serve(address, published)
            .with_context(|| format!("cannot listen on {address} for --metrics-listen"))?;
        writeln!(stdout, "metrics on http://{bound}/metrics")?;
    }
    stdout.flush()?;
    drop(stdout);
    if !login && auth::is_exposed(&endpoint) {
        tracing::warn!(
            %endpoint,
            "listening beyond this machine without --auth: anyone who can reach the port may \
             read, write and delete every topic"
        );
    }
    tracing::info!(
        %endpoint,
        brokers = config.brokers,
        lease = ?config.lease,
        group_ack_timeout = ?config.group_ack_timeout,
        auth = login,
        encrypted = curve_key.is_some(),
        "serving"
    );

    server::run(listener, broker, shutdown)?;
    Ok(())
}
