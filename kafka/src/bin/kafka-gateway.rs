//! `kafka-gateway`: lets Kafka clients produce to and consume from the broker.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

/// See `kafka::reserve`: a forged array length must not abort the gateway.
#[global_allocator]
static ALLOCATOR: kafka::reserve::Reserve = kafka::reserve::Reserve;

/// A Kafka listener in front of the broker: Kafka clients connect here, the gateway speaks the
/// native protocol to the broker.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The address Kafka clients connect to (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: String,
    /// The broker's native endpoint, in any form the other programs take (`HOST:PORT`,
    /// `tcp://HOST:PORT`, `ipc://PATH`), or several separated by commas for broker processes
    /// that share their topics; else `BROKER_ENDPOINT`, else the default.
    #[arg(long, value_name = "ENDPOINT")]
    connect: Option<String>,
    /// The `host:port` Kafka clients are told to reach the gateway at, when not the listen
    /// address (behind NAT or a container's port mapping).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Require Kafka clients to log in with SASL/PLAIN as users of a broker started with
    /// `--auth`; each connection then acts as its user, with its permissions. A broker with
    /// users makes the gateway ask for logins without this flag too.
    #[arg(long, conflicts_with = "curve_server_key")]
    sasl_plain: bool,
    /// The broker's CURVE public key (Z85), for a broker started with `--curve-secret-key`:
    /// the gateway's connections are encrypted, and with `--curve-key-file` it acts as the
    /// user that key pair belongs to (every Kafka client then has that user's rights).
    #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
    curve_server_key: Option<String>,
    /// With `--curve-server-key`: the gateway's key pair, from the secret key on the first
    /// line of FILE (as `broker keygen FILE` writes it); without it a new pair for the run.
    #[arg(long, value_name = "FILE", requires = "curve_server_key")]
    curve_key_file: Option<PathBuf>,
    /// The most Kafka connections served at once; more are closed as they come (Kafka's
    /// `max.connections`).
    #[arg(long, value_name = "N", default_value_t = kafka::limits::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// The most request bytes all connections hold at once, read and not yet answered; past
    /// it, connections wait before reading more (Kafka's `queued.max.request.bytes`). The
    /// largest request accepted is half of it, up to 100 MiB.
    #[arg(long, value_name = "BYTES", default_value_t = kafka::limits::DEFAULT_MAX_QUEUED_BYTES)]
    max_queued_request_bytes: usize,
    /// Serve metrics in Prometheus' text format (`/metrics`) and health checks (`/healthz`,
    /// `/readyz`) over HTTP on ADDR: HOST:PORT, or a bare PORT for loopback. Off by default.
    #[arg(long, value_name = "ADDR", value_parser = ops::http::parse_listen)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// How long a request may take to arrive whole once its first byte came, waits for the
    /// budget included; a slower one closes its connection.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    request_read_timeout_ms: u64,
    /// How long a connection may stay silent between requests before it is closed (Kafka's
    /// `connections.max.idle.ms`).
    #[arg(long, value_name = "MS", default_value_t = 600_000)]
    connections_max_idle_ms: u64,
    /// TLS on the Kafka listener: the server's certificate chain, a PEM file (Kafka clients
    /// then connect with `security.protocol=SSL`, or `SASL_SSL` with logins).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert`, a PEM file.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Ask clients for certificates signed by this CA (PEM), and refuse those without one:
    /// mutual TLS (Kafka's `ssl.client.auth=required`).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

fn main() -> ExitCode {
    kafka::reserve::keep_freed_memory();
    client::init_tracing();
    match run(ops::config::parse::<Args>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // Each Kafka connection takes a file descriptor; the default soft limit (often 1,024) is
    // reached long before --max-connections.
    let mut max_connections = args.max_connections;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(limit, "open file limit");
            let room = usize::try_from(limit).unwrap_or(usize::MAX);
            let fits = room.saturating_sub(kafka::limits::SPARE_FILES).max(1);
            if fits < max_connections {
                tracing::warn!(
                    "--max-connections {max_connections} lowered to {fits}: the open file \
                     limit is {limit}"
                );
                max_connections = fits;
            }
        }
        Err(error) => tracing::warn!(%error, "cannot raise the open file limit"),
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(kafka::tls::server_config(cert, key, args.tls_client_ca.as_deref())?)
        }
        _ => None,
    };
    let listener = TcpListener::bind(&args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr().context("cannot read the listening address")?;
    let (host, port) = match &args.advertise {
        None => (local.ip().to_string(), local.port()),
        Some(address) => {
            let (host, port) = address
                .rsplit_once(':')
                .with_context(|| format!("--advertise {address}: expected HOST:PORT"))?;
            let port = port.parse().with_context(|| format!("--advertise {address}: bad port"))?;
            (host.to_owned(), port)
        }
    };
    // Read here rather than by clap, which would blame `--connect` for a bad variable.
    let (given, from) = match (&args.connect, std::env::var(protocol::endpoint::ENDPOINT_ENV)) {
        (Some(flag), _) => (flag.clone(), "--connect"),
        (None, Ok(env)) => (env, protocol::endpoint::ENDPOINT_ENV),
        (None, Err(_)) => (protocol::DEFAULT_ENDPOINT.to_owned(), "the default endpoint"),
    };
    let endpoints = client::Endpoints::parse(&given).context(from)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        flag.store(true, Ordering::SeqCst);
        // Wake the accept so that the loop sees the flag.
        let _ = TcpStream::connect(local);
    })
    .context("cannot install the Ctrl-C handler")?;
    println!("listening on {local}");
    if let Some(address) = args.metrics_listen {
        let bound = ops::http::serve(address, Arc::new(kafka::metrics::Endpoint))
            .with_context(|| format!("cannot listen on {address} for --metrics-listen"))?;
        println!("metrics on http://{bound}/metrics");
    }
    let limits = kafka::limits::Limits::new(max_connections, args.max_queued_request_bytes)
        .with_timeouts(
            Duration::from_millis(args.request_read_timeout_ms.max(1)),
            Duration::from_millis(args.connections_max_idle_ms.max(1)),
        );
    let credentials = client::Credentials::from_flags(
        None,
        args.curve_server_key.as_deref(),
        args.curve_key_file.as_deref(),
    )?;
    let mut gateway =
        kafka::gateway::Gateway::new(listener, endpoints, host, port, args.sasl_plain, limits)
            .with_credentials(credentials);
    if let Some(tls) = tls {
        gateway = gateway.with_tls(tls);
    }
    gateway.run(&stop)
}
