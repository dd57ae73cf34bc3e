//! `connect`: runs connectors standalone from Kafka Connect config files, with a REST API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use client::{Credentials, Endpoints, Shutdown};
use connect::config::ConnectorConfig;
use connect::offsets::Offsets;
use connect::worker::{Kind, Worker, WorkerSettings};
use protocol::endpoint::ENDPOINT_ENV;

/// Moves data between the broker and the systems around it: a JDBC sink into PostgreSQL, and
/// Kafka's FileStreamSource and FileStreamSink, configured as in Kafka Connect.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The broker's address: HOST:PORT, tcp://HOST:PORT or ipc://PATH; several separated by
    /// commas for broker processes sharing their topics [default: $BROKER_ENDPOINT, else
    /// tcp://127.0.0.1:5555].
    #[arg(long, visible_alias = "bootstrap-server", value_name = "ENDPOINT", global = true)]
    connect: Option<String>,
    /// How long to wait for the broker before a request counts as unanswered, e.g. `5s`.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    timeout: Duration,
    /// Log in as this user with a password (PLAIN), from $BROKER_PASSWORD or asked for on a
    /// terminal: for a broker started with --auth.
    #[arg(long, value_name = "NAME", global = true)]
    user: Option<String>,
    /// The broker's CURVE public key: encrypt the connection, for a broker started with
    /// --curve-secret-key.
    #[arg(long, value_name = "KEY", allow_hyphen_values = true, global = true)]
    curve_server_key: Option<String>,
    /// With --curve-server-key: this client's key pair, from the secret key on the first line
    /// of FILE (as `broker keygen FILE` writes it).
    #[arg(long, value_name = "FILE", global = true)]
    curve_key_file: Option<PathBuf>,
    /// With `run`: serve the REST API (Kafka Connect's) at HOST:PORT, e.g. 127.0.0.1:8083 (port
    /// 0 picks a free one).
    #[arg(long, value_name = "HOST:PORT", global = true)]
    rest: Option<String>,
    /// With `run`: where source connectors keep their positions (connect-standalone's
    /// offset.storage.file.filename).
    #[arg(long, value_name = "FILE", default_value = "connect.offsets", global = true)]
    offsets: PathBuf,
    /// With `run`: serve metrics in Prometheus' text format (`/metrics`) and health checks
    /// (`/healthz`, `/readyz`) over HTTP on ADDR: HOST:PORT, or a bare PORT for loopback. Off
    /// by default.
    #[arg(long, value_name = "ADDR", value_parser = ops::http::parse_listen, global = true)]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the connectors of the config files (JSON, flat or {"name", "config"}, or
    /// .properties) until Ctrl-C or SIGTERM.
    Run {
        /// Connector configs.
        #[arg(value_name = "CONFIG")]
        configs: Vec<PathBuf>,
    },
    /// Checks the config files and exits: 0 when every one would start.
    Check {
        /// Connector configs.
        #[arg(value_name = "CONFIG", required = true)]
        configs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    client::init_tracing();
    match run(ops::config::parse::<Args>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads and checks every config, so that one bad file stops start-up before anything runs.
fn read_configs(paths: &[PathBuf]) -> anyhow::Result<Vec<ConnectorConfig>> {
    let mut configs: Vec<ConnectorConfig> = Vec::new();
    for path in paths {
        let config = ConnectorConfig::read(path)?;
        Kind::from_config(&config)?;
        if let Some(other) = configs.iter().find(|c| c.name == config.name) {
            anyhow::bail!(
                "{}: name: {:?} is the name of the connector in {} too",
                config.origin,
                config.name,
                other.origin
            );
        }
        configs.push(config);
    }
    Ok(configs)
}

fn run(args: Args) -> anyhow::Result<()> {
    let (rest, offsets) = (args.rest.clone(), args.offsets.clone());
    let configs = match args.command {
        Command::Check { configs } => {
            let configs = read_configs(&configs)?;
            for c in &configs {
                println!("{}: connector {} is fine", c.origin, c.name);
            }
            return Ok(());
        }
        Command::Run { configs } => read_configs(&configs)?,
    };
    let (given, from) = match (&args.connect, std::env::var(ENDPOINT_ENV)) {
        (Some(flag), _) => (flag.clone(), "--connect"),
        (None, Ok(env)) => (env, ENDPOINT_ENV),
        (None, Err(_)) => (protocol::DEFAULT_ENDPOINT.to_owned(), "the default"),
    };
    let endpoints = Endpoints::parse(&given).with_context(|| format!("{given} (from {from})"))?;
    let credentials = Credentials::from_flags(
        args.user.as_deref(),
        args.curve_server_key.as_deref(),
        args.curve_key_file.as_deref(),
    )?;
    let offsets = Offsets::open(&offsets)?;
    let server = match &rest {
        Some(address) => Some(
            tiny_http::Server::http(address)
                .map_err(|e| anyhow::anyhow!("cannot serve the REST API at {address}: {e}"))?,
        ),
        None => None,
    };
    let worker_id = match server.as_ref().and_then(|s| s.server_addr().to_ip()) {
        Some(address) => address.to_string(),
        None => format!("connect-{}", std::process::id()),
    };
    let worker = Worker::new(WorkerSettings {
        endpoints,
        timeout: args.timeout,
        credentials,
        offsets,
        worker_id: worker_id.clone(),
    });
    if let Some(address) = args.metrics_listen {
        let endpoint = connect::metrics::Endpoint { worker: worker.clone() };
        let bound = ops::http::serve(address, std::sync::Arc::new(endpoint))
            .with_context(|| format!("cannot listen on {address} for --metrics-listen"))?;
        println!("metrics on http://{bound}/metrics");
    }
    let shutdown = Shutdown::new();
    client::install_ctrl_c(&shutdown)?;
    let count = configs.len();
    for config in configs {
        worker.add(config)?;
    }
    println!("running {count} connector{}", if count == 1 { "" } else { "s" });
    if server.is_some() {
        println!("serving http://{worker_id}");
    }
    match &server {
        Some(server) => connect::rest::serve(server, &worker, &shutdown),
        None => {
            while !shutdown.is_signalled() {
                shutdown.pause(Duration::from_millis(200));
            }
        }
    }
    worker.stop_all();
    Ok(())
}
