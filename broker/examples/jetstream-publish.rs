//! The floor `scripts/bench.sh --nats` measures the NATS store against: a bare JetStream
//! client publishing single messages straight to a nats-server, with many acknowledgements in
//! flight, as a client of JetStream would without the broker.
//!
//! `jetstream-publish nats://HOST:PORT MESSAGES SIZE IN_FLIGHT` publishes MESSAGES messages of
//! SIZE bytes to a stream of its own (made anew), at most IN_FLIGHT unacknowledged, and prints
//! `{"records_per_s": N}`.

use std::collections::VecDeque;
use std::time::Instant;

use async_nats::jetstream::{self, stream::Config};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: jetstream-publish nats://HOST:PORT MESSAGES SIZE IN_FLIGHT";
    let [url, messages, size, in_flight] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (Ok(messages), Ok(size), Ok(in_flight)) =
        (messages.parse::<usize>(), size.parse::<usize>(), in_flight.parse::<usize>())
    else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start a runtime: {error}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(publish(url, messages, size, in_flight.max(1))) {
        Ok(rate) => println!("{{\"records_per_s\": {rate:.0}}}"),
        Err(error) => {
            eprintln!("jetstream-publish: {error}");
            std::process::exit(1);
        }
    }
}

/// Publishes and returns the messages acknowledged per second.
async fn publish(url: &str, messages: usize, size: usize, in_flight: usize) -> Result<f64, String> {
    let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
    let js = jetstream::new(client);
    let _ = js.delete_stream("FLOOR").await;
    let config =
        Config { name: "FLOOR".into(), subjects: vec!["floor".into()], ..Config::default() };
    js.create_stream(config).await.map_err(|e| e.to_string())?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    let mut acks = VecDeque::with_capacity(in_flight);
    for _ in 0..messages {
        if acks.len() >= in_flight {
            if let Some(ack) = acks.pop_front() {
                let ack: jetstream::context::PublishAckFuture = ack;
                ack.await.map_err(|e| e.to_string())?;
            }
        }
        let ack = js.publish("floor", payload.clone()).await.map_err(|e| e.to_string())?;
        acks.push_back(ack);
    }
    for ack in acks {
        ack.await.map_err(|e| e.to_string())?;
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    let _ = js.delete_stream("FLOOR").await;
    Ok(rate)
}
