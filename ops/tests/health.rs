//! `/healthz` and `/readyz`: a broker on a NATS JetStream is ready while JetStream answers,
//! not while its server is down, and ready again once it is back; the process stays healthy
//! throughout.

mod common;

use std::time::{Duration, Instant};

use common::{binary, get, metrics_address};
use testkit::{BrokerProcess, NatsServer};

/// Polls `/readyz` at `address` until it answers `status`; the body it gave.
fn wait_readyz(address: std::net::SocketAddr, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, body) = get(address, "/readyz");
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {got} ({body}), not {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn readyz_follows_whether_jetstream_answers() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let args = ["--store", &url, "--metrics-listen", "127.0.0.1:0"];
    let broker = BrokerProcess::start(&binary("broker"), &args);
    let address = metrics_address(&broker.stdout_line(testkit::STEP).unwrap());
    assert_eq!(wait_readyz(address, 200), "ready\n");
    nats.kill();
    let body = wait_readyz(address, 503);
    assert!(body.starts_with("not ready: JetStream at nats://127.0.0.1:"), "{body}");
    assert_eq!(get(address, "/healthz"), (200, "ok\n".to_owned()));
    nats.resume();
    wait_readyz(address, 200);
    broker.kill();
}
