//! A real Prometheus (Debian's `prometheus`) scrapes the broker, the Kafka gateway and the web
//! console on free ports; its own HTTP API then reports the rate of appended messages and a
//! group's lag after known counts were produced and consumed. `promtool check metrics` finds
//! nothing to say about each endpoint's page.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, get, metrics_address, try_get, Started};
use protocol::{Append, GroupFetch, GroupStart, NewMessage, Request, Response};
use testkit::BrokerProcess;

/// How long Prometheus has to start, scrape and answer what a step waits for.
const DEADLINE: Duration = Duration::from_secs(60);

/// Fails at once, in one line, when `program` is not installed.
fn need(program: &str) {
    if Command::new(program).arg("--version").output().is_err() {
        panic!("{program} is not installed: scripts/test.sh installs it (Debian's prometheus)");
    }
}

/// Percent-encodes a query string value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Asks Prometheus at `address` for `query` now: the value of each series, with its labels.
fn query(address: SocketAddr, query: &str) -> Vec<(serde_json::Value, f64)> {
    let (status, body) = get(address, &format!("/api/v1/query?query={}", encode(query)));
    assert_eq!(status, 200, "{query}: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let results = answer["data"]["result"].as_array().cloned().unwrap_or_default();
    results
        .into_iter()
        .map(|r| {
            let value = r["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            (r["metric"].clone(), value)
        })
        .collect()
}

/// Polls `query` until its one value satisfies `wanted`; fails with the last answer at the
/// deadline.
fn wait_for(address: SocketAddr, q: &str, wanted: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = query(address, q);
        if let [(_, value)] = answer.as_slice() {
            if wanted(*value) {
                return *value;
            }
        }
        assert!(Instant::now() < deadline, "Prometheus never answered {q} as wanted: {answer:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls the page at `address` until it holds `line`.
fn wait_for_page(address: SocketAddr, line: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, page) = get(address, "/metrics");
        if page.contains(line) {
            return;
        }
        assert!(Instant::now() < deadline, "the page at {address} never showed {line:?}:\n{page}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `promtool check metrics` on the page at `address`: it must say nothing.
fn promtool_check(address: SocketAddr, what: &str) {
    let (status, page) = get(address, "/metrics");
    assert_eq!(status, 200, "{what}: {page}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success() && said.trim().is_empty(), "promtool on {what}: {said}");
}

/// Sends `request` on `socket` and decodes the reply, which must not be an error.
fn ask(
    socket: &zmq::Socket,
    request: &Request<'_>,
    check: impl FnOnce(Response<'_>) -> u64,
) -> u64 {
    let reply = testkit::round_trip(socket, request);
    let response = protocol::decode_response(&reply).unwrap();
    check(response)
}

#[test]
fn prometheus_scrapes_all_three_and_reports_the_append_rate_and_a_groups_lag() {
    need("prometheus");
    need("promtool");
    let broker = BrokerProcess::start(&binary("broker"), &["--metrics-listen", "127.0.0.1:0"]);
    let broker_metrics = metrics_address(&broker.stdout_line(testkit::STEP).unwrap());
    let mut gateway = Command::new(binary("kafka-gateway"));
    gateway.args(["--listen", "127.0.0.1:0", "--connect", &broker.endpoint]);
    gateway.args(["--metrics-listen", "127.0.0.1:0"]);
    let gateway = Started::spawn(gateway);
    let kafka = gateway.line_after("listening on ");
    let gateway_metrics = metrics_address(&gateway.line());
    let mut web = Command::new(binary("web"));
    web.args(["--listen", "127.0.0.1:0", "--connect", &broker.endpoint]);
    web.args(["--metrics-listen", "127.0.0.1:0"]);
    let web = Started::spawn(web);
    let console: SocketAddr = web.line_after("serving http://").parse().unwrap();
    let web_metrics = metrics_address(&web.line());

    for (address, what) in
        [(broker_metrics, "broker"), (gateway_metrics, "kafka-gateway"), (web_metrics, "web")]
    {
        assert_eq!(get(address, "/healthz").0, 200, "{what} /healthz");
        assert_eq!(get(address, "/readyz").0, 200, "{what} /readyz");
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: broker\n    static_configs: [{{targets: ['{broker_metrics}']}}]\n\
             \x20 - job_name: kafka-gateway\n    static_configs: [{{targets: ['{gateway_metrics}']}}]\n\
             \x20 - job_name: web\n    static_configs: [{{targets: ['{web_metrics}']}}]\n"
        ),
    )
    .unwrap();
    // Prometheus picks its own port and logs it (`msg="Listening on" address=...`) on standard
    // error, which the shell hands to the pipe `Started` reads.
    let mut prometheus = Command::new("sh");
    prometheus.arg("-c").arg(format!(
        "exec prometheus --config.file='{}' --storage.tsdb.path='{}' \
         --web.listen-address=127.0.0.1:0 2>&1",
        config.display(),
        dir.path().join("data").display()
    ));
    let prometheus = Started::spawn(prometheus);
    let api: SocketAddr = loop {
        let line = prometheus.line();
        if !line.contains("msg=\"Listening on\"") {
            continue;
        }
        let address = line.split("address=").nth(1).and_then(|a| a.split_whitespace().next());
        break address.and_then(|a| a.parse().ok()).expect("Prometheus's address in its log");
    };
    let deadline = Instant::now() + DEADLINE;
    while !try_get(api, "/-/ready").is_ok_and(|(status, _)| status == 200) {
        assert!(Instant::now() < deadline, "Prometheus did not get ready at {api}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for job in ["broker", "kafka-gateway", "web"] {
        wait_for(api, &format!("up{{job=\"{job}\"}}"), |up| up == 1.0);
    }
    // A scrape from before the appends, so that the rate has something to rise from.
    wait_for(api, "broker_appended_messages_total", |n| n == 0.0);

    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let value = [7u8; 50];
    for _ in 0..3 {
        let messages = vec![NewMessage::new(None, &value); 100];
        let append = Request::Append(Append {
            topic: "metrics",
            partition: None,
            messages,
            sequenced: None,
        });
        ask(&socket, &append, |r| match r {
            Response::Appended { .. } => 0,
            other => panic!("{}", other.name()),
        });
    }
    let claim = Request::Claim { broker: None, wait_ms: 0, client: Some("metrics-test") };
    let claim = ask(&socket, &claim, |r| match r {
        Response::Claimed { claim, .. } => claim,
        other => panic!("{}", other.name()),
    });
    let join =
        Request::JoinGroup { claim, group: "g", topic: "metrics", start: GroupStart::Earliest };
    ask(&socket, &join, |r| match r {
        Response::Joined { .. } => 0,
        other => panic!("{}", other.name()),
    });
    let fetch = GroupFetch {
        claim,
        group: "g",
        topic: "metrics",
        max_messages: 100,
        max_bytes: 1 << 20,
        wait_ms: 0,
        ordered: false,
    };
    let reply = testkit::round_trip(&socket, &Request::GroupFetch(fetch));
    let offsets: Vec<u64> = match protocol::decode_response(&reply).unwrap() {
        Response::Delivered { messages, .. } => messages.iter().map(|m| m.offset).collect(),
        other => panic!("{}", other.name()),
    };
    assert_eq!(offsets.len(), 100);
    let ack = Request::Ack { group: "g", topic: "metrics", partition: 0, offsets };
    ask(&socket, &ack, |r| match r {
        Response::Acked { .. } => 0,
        other => panic!("{}", other.name()),
    });

    // The gateway and the console have something to count too.
    let kcat = Command::new("kcat").args(["-L", "-b", &kafka]).output();
    assert!(kcat.is_ok_and(|o| o.status.success()), "kcat -L (scripts/test.sh installs kcat)");
    assert_eq!(get(console, "/").0, 200);

    wait_for(api, "broker_appended_messages_total", |n| n == 300.0);
    wait_for(api, "broker_appended_bytes_total", |n| n == 300.0 * 50.0);
    let rate = wait_for(api, "rate(broker_appended_messages_total[1m])", |r| r > 0.0);
    assert!(rate.is_finite());
    wait_for(api, "broker_group_lag{group=\"g\",topic=\"metrics\"}", |lag| lag == 200.0);
    wait_for(api, "broker_group_committed_offset{group=\"g\",topic=\"metrics\"}", |o| o == 100.0);
    wait_for(api, "broker_topic_end_offset{topic=\"metrics\"}", |o| o == 300.0);
    wait_for(api, "broker_fetched_messages_total", |n| n == 100.0);
    wait_for(api, "sum(broker_claims)", |n| n == 1.0);
    wait_for(api, "kafka_gateway_requests_total{api=\"Metadata\"}", |n| n >= 1.0);
    wait_for(api, "web_requests_total{path=\"/\"}", |n| n >= 1.0);

    // A refusal, by kind and code, on the broker's own page (published within a second).
    let renew = testkit::round_trip(&socket, &Request::Renew { claim: claim + 1 });
    assert!(matches!(protocol::decode_response(&renew), Ok(Response::Error { .. })));
    wait_for_page(broker_metrics, "broker_refusals_total{op=\"renew\",code=\"unknown_claim\"} 1\n");
    // This test's socket, and the gateway's (the console's may come and go).
    wait_for(api, "broker_connections", |n| n >= 2.0);
    wait_for_page(broker_metrics, "broker_requests_total{op=\"append\"} 3\n");

    promtool_check(broker_metrics, "the broker");
    promtool_check(gateway_metrics, "kafka-gateway");
    promtool_check(web_metrics, "web");
    broker.kill();
}
