//! The `broker` binary: parse arguments, bind, serve until Ctrl-C or SIGTERM.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use broker::{preload, server, Broker, Config, Shutdown};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A ZeroMQ message broker hosting claimable logical brokers over one topic store.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The endpoint to bind; `tcp://127.0.0.1:*` picks a free port.
    #[arg(long, default_value = protocol::DEFAULT_ENDPOINT)]
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
    let config = Config {
        brokers: args.brokers,
        lease: args.lease,
        max_message_bytes: args.max_message_bytes,
    };

    let mut broker = Broker::new(&config);
    if args.preload {
        let now_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let added = preload::preload(&mut broker.store, now_ms).context("cannot preload")?;
        tracing::info!(topics = added, "preloaded sample topics");
    }

    let shutdown = Shutdown::new();
    let trigger = shutdown.clone();
    ctrlc::set_handler(move || trigger.trigger()).context("cannot install the Ctrl-C handler")?;

    let context = zmq::Context::new();
    let socket = server::bind(&context, &args.bind, &config)?;
    let endpoint = socket
        .get_last_endpoint()
        .context("cannot read the bound endpoint")?
        .unwrap_or_else(|raw| String::from_utf8_lossy(&raw).into_owned());
    // One line on stdout, flushed, so that scripts and tests can read where to connect.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {endpoint}")?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(%endpoint, brokers = config.brokers, lease = ?config.lease, "serving");

    server::run(socket, broker, shutdown)?;
    Ok(())
}
