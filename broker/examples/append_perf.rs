//! Lockstep appends over one REQ socket, with or without CURVE: what encryption costs an
//! append, for `scripts/bench.sh`. (`producer perf` measures the broker in general; this drives
//! the one case it cannot yet, a connection that logs in with CURVE.)
//!
//! `append_perf --connect EP [--curve-server-key KEY | --user NAME] [--messages N] [--batch N]
//! [--size N] [--json]` prints messages per second (and latency percentiles with `--json`);
//! `--user` takes its password from `BROKER_PASSWORD`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use protocol::{encode_request, Append, NewMessage, Request};

/// Lockstep appends over one REQ socket.
#[derive(Debug, Parser)]
struct Args {
    /// The broker's endpoint.
    #[arg(long)]
    connect: String,
    /// The broker's CURVE public key (Z85): connect with CURVE, as a new key pair.
    #[arg(long)]
    curve_server_key: Option<String>,
    /// Log in with PLAIN as this user, with the password in `BROKER_PASSWORD`.
    #[arg(long)]
    user: Option<String>,
    /// How many messages to append in all.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Messages per append request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// The topic appended to.
    #[arg(long, default_value = "perf-curve")]
    topic: String,
    /// Print a JSON report (`records_per_s`, `latency_us.p50`, `latency_us.p99`).
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.batch > 0 && args.messages >= args.batch, "--batch must fit --messages");
    let context = zmq::Context::new();
    let socket = context.socket(zmq::REQ)?;
    socket.set_linger(0)?;
    socket.set_rcvtimeo(10_000)?;
    if let Some(key) = &args.curve_server_key {
        let server = zmq::z85_decode(key).map_err(|e| anyhow::anyhow!("bad server key: {e:?}"))?;
        let pair = zmq::CurveKeyPair::new().context("this libzmq has no CURVE")?;
        socket.set_curve_serverkey(&server)?;
        socket.set_curve_publickey(&pair.public_key)?;
        socket.set_curve_secretkey(&pair.secret_key)?;
    }
    if let Some(user) = &args.user {
        let password = std::env::var("BROKER_PASSWORD").context("--user needs BROKER_PASSWORD")?;
        socket.set_plain_username(Some(user))?;
        socket.set_plain_password(Some(&password))?;
    }
    socket.connect(&args.connect)?;

    let value = vec![b'x'; args.size];
    let messages = vec![NewMessage { key: None, value: &value }; args.batch];
    let mut frame = Vec::new();
    encode_request(&Request::Append(Append { topic: &args.topic, messages }), &mut frame);

    let requests = args.messages / args.batch;
    let mut latencies = Vec::with_capacity(requests);
    let started = Instant::now();
    for _ in 0..requests {
        let sent = Instant::now();
        socket.send(&frame[..], 0)?;
        let reply = socket.recv_bytes(0).context("no reply within 10 s")?;
        latencies.push(sent.elapsed());
        if let Ok(protocol::Response::Error { reason, .. }) = protocol::decode_response(&reply) {
            bail!("the broker refused an append: {reason}");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = (requests * args.batch) as f64 / elapsed;
    latencies.sort();
    let percentile = |p: f64| {
        let at = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
        latencies.get(at).copied().unwrap_or(Duration::ZERO).as_secs_f64() * 1e6
    };
    if args.json {
        println!(
            "{{\"records_per_s\": {rate:.0}, \"latency_us\": {{\"p50\": {:.1}, \"p99\": {:.1}}}}}",
            percentile(0.5),
            percentile(0.99)
        );
    } else {
        println!("{rate:.0}");
    }
    Ok(())
}
