//! Addresses as a Kafka user types them: `HOST:PORT` without a transport, host names,
//! `--bootstrap-server`, and `BROKER_ENDPOINT` as the default of all three programs.

mod common;

use std::process::{Command, Stdio};

use common::{broker_binary, run, run_with, CONSUMER, PRODUCER};
use testkit::STEP;

/// A broker started with no `--bind`, its endpoint from `BROKER_ENDPOINT`; killed on drop.
struct EnvBroker {
    /// The broker process.
    child: std::process::Child,
    /// The endpoint it reported.
    endpoint: String,
}

impl EnvBroker {
    fn start(endpoint_env: &str) -> EnvBroker {
        let mut child = Command::new(broker_binary())
            .env("BROKER_ENDPOINT", endpoint_env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker");
        let lines = testkit::lines_of(child.stdout.take().expect("stdout is piped"));
        let first = lines.recv_timeout(STEP).expect("a `listening on` line");
        let endpoint =
            first.strip_prefix("listening on ").expect("a `listening on` line").to_owned();
        EnvBroker { child, endpoint }
    }
}

impl Drop for EnvBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn host_port_host_names_bootstrap_server_and_the_environment() {
    // The broker binds a host name from the environment (ZeroMQ alone took it for an
    // interface: "No such device").
    let broker = EnvBroker::start("localhost:*");
    let port = broker.endpoint.rsplit(':').next().expect("a port").to_owned();
    assert!(broker.endpoint.starts_with("tcp://127.0.0.1:"), "{}", broker.endpoint);

    // HOST:PORT without tcp://, under Kafka's flag name.
    let plain = format!("127.0.0.1:{port}");
    let out = run(PRODUCER, &["--bootstrap-server", &plain, "addresses", "one", "two"]);
    out.assert_success();

    // A host name, from the environment.
    let named = format!("localhost:{port}");
    let out = run_with(CONSUMER, &["fetch", "addresses"], b"", &[("BROKER_ENDPOINT", &named)]);
    assert_eq!(out.assert_success().lines(), ["0\tone", "1\ttwo"]);

    // --connect wins over the environment.
    let connect = format!("tcp://localhost:{port}");
    let env = [("BROKER_ENDPOINT", "nowhere:1")];
    let out = run_with(CONSUMER, &["--connect", &connect, "topics"], b"", &env);
    assert!(out.assert_success().stdout.contains("addresses"), "{}", out.stdout);
}

#[test]
fn a_bad_address_says_what_form_is_expected() {
    for args in [&["--connect", "nowhere", "status"][..], &["--bootstrap-server", "h:x", "topics"]]
    {
        let out = run(CONSUMER, args);
        out.assert_code(2);
        assert!(out.stderr.contains("expected HOST:PORT or tcp://HOST:PORT"), "{}", out.stderr);
        // Said once, not once more as its own cause.
        assert_eq!(out.stderr.matches("invalid endpoint").count(), 1, "{}", out.stderr);
    }
    let out = run(PRODUCER, &["--connect", "udp://127.0.0.1:1", "t", "m"]);
    out.assert_code(2);
    assert!(out.stderr.contains("unknown transport \"udp\""), "{}", out.stderr);
    let out = run(&broker_binary().to_string_lossy(), &["--bind", "localhost"]);
    out.assert_code(2);
    assert!(out.stderr.contains("the port is missing; expected HOST:PORT"), "{}", out.stderr);
    let out = run_with(CONSUMER, &["status"], b"", &[("BROKER_ENDPOINT", "127.0.0.1")]);
    out.assert_code(2);
    assert!(out.stderr.contains("expected HOST:PORT"), "{}", out.stderr);
}
