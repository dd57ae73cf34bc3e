//! Kafka's quickstart connectors end to end (a file into a topic into a file, across a
//! restart), the REST API, and configs that stop `connect` at start.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{wait_for, Broker, Connect, CONNECT};

const MINUTE: Duration = Duration::from_secs(60);

/// Lines `from..to` of the test file: numbered, of varied lengths, some with non-ASCII text.
fn lines(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("line {i} {} é\n", "x".repeat(i % 37))).collect()
}

/// The number of lines in `path` (0 when it is not there yet).
fn line_count(path: &Path) -> usize {
    std::fs::read(path).map(|b| b.iter().filter(|c| **c == b'\n').count()).unwrap_or(0)
}

/// Connect's quickstart configs, as `.properties`: the source reads `input` into `topic`, the
/// sink writes `topic` into `output`.
fn quickstart(
    dir: &Path,
    input: &Path,
    output: &Path,
    topic: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let source = dir.join("connect-file-source.properties");
    std::fs::write(
        &source,
        format!(
            "name=local-file-source\nconnector.class=FileStreamSource\ntasks.max=1\nfile={}\ntopic={topic}\n",
            input.display()
        ),
    )
    .unwrap();
    let sink = dir.join("connect-file-sink.properties");
    std::fs::write(
        &sink,
        format!(
            "name=local-file-sink\nconnector.class=FileStreamSink\ntasks.max=1\nfile={}\ntopics={topic}\n",
            output.display()
        ),
    )
    .unwrap();
    (source, sink)
}

#[test]
fn a_file_goes_through_a_topic_into_a_file_exactly_resuming_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"));
    let input = dir.path().join("test.txt");
    let output = dir.path().join("test.sink.txt");
    let (source, sink) = quickstart(dir.path(), &input, &output, "connect-test");
    let offsets = dir.path().join("connect.offsets");
    std::fs::write(&input, lines(0, 60_000)).unwrap();

    let connect = Connect::start(&broker.endpoint, &[&source, &sink], &offsets, false);
    wait_for("the first 60,000 lines", MINUTE, || line_count(&output) >= 60_000);
    connect.stop();
    // The rest of the file is written while connect is down; a line is half written at the end.
    let mut file = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
    let rest = lines(60_000, 100_000);
    let (most, last) = rest.split_at(rest.len() - 10);
    file.write_all(most.as_bytes()).unwrap();
    let connect = Connect::start(&broker.endpoint, &[&source, &sink], &offsets, false);
    // The source follows the file as it grows; a line counts once it ends.
    wait_for("99,999 lines", MINUTE, || line_count(&output) >= 99_999);
    file.write_all(last.as_bytes()).unwrap();
    wait_for("all 100,000 lines", MINUTE, || line_count(&output) >= 100_000);
    connect.stop();
    let (want, got) = (std::fs::read(&input).unwrap(), std::fs::read(&output).unwrap());
    assert!(want == got, "the copy differs: {} lines of {}", line_count(&output), 100_000);
    let stored = std::fs::read_to_string(&offsets).unwrap();
    assert!(stored.contains(&format!("\"position\": {}", want.len())), "{stored}");
}

#[test]
fn the_rest_api_lists_adds_pauses_resumes_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"));
    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    std::fs::write(&input, lines(0, 100)).unwrap();
    let offsets = dir.path().join("connect.offsets");
    let connect = Connect::start(&broker.endpoint, &[], &offsets, true);
    assert_eq!(connect.get_json("/connectors"), serde_json::json!([]));

    let source = serde_json::json!({"name": "source", "config": {
        "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
        "file": input, "topic": "rest-test"}});
    let (code, body) = connect.http("POST", "/connectors", &source.to_string());
    assert_eq!(code, 201, "{body}");
    let sink = serde_json::json!({"name": "sink", "config": {
        "connector.class": "FileStreamSink", "file": output, "topics": "rest-test"}});
    assert_eq!(connect.http("POST", "/connectors", &sink.to_string()).0, 201);
    assert_eq!(connect.http("POST", "/connectors", &sink.to_string()).0, 409);
    assert_eq!(connect.get_json("/connectors"), serde_json::json!(["sink", "source"]));
    assert_eq!(connect.get_json("/connectors/sink")["type"], "sink");
    wait_for("the first 100 lines", MINUTE, || line_count(&output) == 100);

    // Paused, the sink writes nothing while the source goes on.
    assert_eq!(connect.http("PUT", "/connectors/sink/pause", "").0, 202);
    wait_for("the sink to pause", MINUTE, || {
        connect.get_json("/connectors/sink/status")["tasks"][0]["state"] == "PAUSED"
    });
    let mut file = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
    file.write_all(lines(100, 200).as_bytes()).unwrap();
    wait_for("the source to send the new lines", MINUTE, || {
        connect.get_json("/connectors/source/offsets")["offsets"][0]["offset"]["position"]
            == std::fs::metadata(&input).unwrap().len()
    });
    let sink_offsets = connect.get_json("/connectors/sink/offsets");
    assert_eq!(sink_offsets["offsets"][0]["offset"]["kafka_offset"], 100, "{sink_offsets}");
    assert_eq!(line_count(&output), 100);
    assert_eq!(connect.http("PUT", "/connectors/sink/resume", "").0, 202);
    wait_for("the lines sent while paused", MINUTE, || line_count(&output) == 200);
    assert_eq!(connect.get_json("/connectors/sink/status")["tasks"][0]["state"], "RUNNING");
    assert_eq!(std::fs::read(&input).unwrap(), std::fs::read(&output).unwrap());

    assert_eq!(connect.http("DELETE", "/connectors/source", "").0, 204);
    assert_eq!(connect.get_json("/connectors"), serde_json::json!(["sink"]));
    assert_eq!(connect.http("GET", "/connectors/source/status", "").0, 404);
    let (code, body) = connect.http(
        "POST",
        "/connectors",
        r#"{"name": "bad", "config": {"connector.class": "FileStreamSink", "topics": "t"}}"#,
    );
    assert_eq!(code, 400);
    assert!(body.contains("file: missing"), "{body}");
    let (code, _) = connect.http("POST", "/connectors", &"x".repeat(2 << 20));
    assert_eq!(code, 413);
    assert!(common::consume(&broker.endpoint, &["status"]).contains("connect-sink"));
    connect.stop();
    // A stopped connector gives its logical broker back.
    let status = common::consume(&broker.endpoint, &["status"]);
    assert!(!status.contains("connect-") && status.contains("free"), "{status}");
}

#[test]
fn a_bad_config_stops_connect_at_start_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"{"name": "a", "connector.class": "com.example.MongoSink", "topics": "t"}"#,
            "connector.class: \"com.example.MongoSink\" is not a connector",
        ),
        (
            r#"{"name": "a", "connector.class": "io.aiven.connect.jdbc.JdbcSinkConnector", "topics": "t"}"#,
            "connection.url: missing",
        ),
        (
            r#"{"name": "a", "connector.class": "JdbcSinkConnector", "topics": "t", "connection.user": "u", "connection.url": "jdbc:mysql://h/db"}"#,
            "connection.url: expected jdbc:postgresql://",
        ),
        (
            r#"{"name": "a", "config": {"connector.class": "JdbcSinkConnector", "topics": "t", "connection.user": "u", "connection.url": "jdbc:postgresql://h/db", "value.converter.schemas.enable": "false", "auto.create": "true"}}"#,
            "auto.create: true needs value.converter.schemas.enable=true",
        ),
        (r#"{"connector.class": "FileStreamSource", "topic": "t", "file": "f"}"#, "name: missing"),
        ("{\"name\": ", "not JSON"),
    ];
    for (i, (config, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.json"));
        std::fs::write(&path, config).unwrap();
        for command in ["check", "run"] {
            let out = Command::new(CONNECT)
                .args(["--connect", "tcp://127.0.0.1:1", command])
                .arg(&path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command} {config}: {stderr}");
            let named = format!("{}: {expected}", path.display());
            assert!(stderr.contains(&named), "{command} {config}:\nwanted {named}\ngot {stderr}");
        }
    }
    let good = dir.path().join("good.properties");
    std::fs::write(&good, "name=s\nconnector.class=FileStreamSink\nfile=out.txt\ntopics=t\n")
        .unwrap();
    let out = Command::new(CONNECT).arg("check").arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_metrics_page_counts_what_each_connector_wrote_and_promtool_finds_no_fault() {
    testkit::require::program("promtool", "apt-get install prometheus");
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"));
    let input = dir.path().join("test.txt");
    let output = dir.path().join("test.sink.txt");
    let (source, sink) = quickstart(dir.path(), &input, &output, "metered");
    std::fs::write(&input, lines(0, 1_000)).unwrap();
    let mut child = Command::new(CONNECT)
        .args(["--connect", &broker.endpoint, "--metrics-listen", "127.0.0.1:0", "run"])
        .arg("--offsets")
        .arg(dir.path().join("connect.offsets"))
        .args([&source, &sink])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("connect starts");
    let lines_out = testkit::lines_of(child.stdout.take().expect("piped"));
    let first = lines_out.recv_timeout(testkit::STEP).expect("connect printed nothing");
    let page = first.strip_prefix("metrics on http://").expect("the metrics line first");
    let address = page.strip_suffix("/metrics").expect("a /metrics address").to_owned();
    let written = r#"connect_records_written_total{connector="local-file-sink"} 1000"#;
    let mut body = String::new();
    wait_for("the sink's 1,000 lines on the page", MINUTE, || {
        body = common::http(&address, "GET", "/metrics", "").1;
        body.contains(written)
    });
    assert!(body.contains(r#"connect_records_written_total{connector="local-file-source"} 1000"#));
    assert!(
        body.contains(r#"connect_connector_state{connector="local-file-sink",state="RUNNING"} 1"#)
    );
    assert_eq!(common::http(&address, "GET", "/healthz", "").0, 200);
    let (clean, said) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_with(&body);
    assert!(clean, "promtool: {said}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs a command with `input` on its standard input; whether it succeeded and said nothing,
/// and what it said.
trait OutputWith {
    fn output_with(&mut self, input: &str) -> (bool, String);
}

impl OutputWith for std::process::Command {
    fn output_with(&mut self, input: &str) -> (bool, String) {
        use std::io::Write as _;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the command starts");
        child.stdin.take().expect("piped").write_all(input.as_bytes()).expect("its input");
        let out = child.wait_with_output().expect("its output");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success() && said.trim().is_empty(), said)
    }
}
