//! The `web` console in a real browser: the system's headless Chromium, driven by Playwright
//! for Python (`web_browser.py` beside this file), against the real `broker`, `web` and
//! `consumer` binaries on free loopback ports. Each test runs one check of the script and fails
//! on its non-zero exit, showing what it printed. Screenshots of the main views are saved under
//! the target directory (`tmp/web-console/`) for people to look at.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use testkit::{BrokerProcess, STEP};

/// The `web` binary under test.
const WEB: &str = env!("CARGO_BIN_EXE_web");

/// The `consumer` binary, which takes a claim from the command line.
const CONSUMER: &str = env!("CARGO_BIN_EXE_consumer");

/// The longest one check may take, browser start included, before it is stopped and fails.
const CHECK_LIMIT: Duration = Duration::from_secs(120);

/// One browser at a time: the checks time things (a claim seen within a second) that two
/// browsers starting at once on a small machine would blur.
static BROWSER: Mutex<()> = Mutex::new(());

/// Where the screenshots go: a directory under the target directory, never committed.
fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-console");
    std::fs::create_dir_all(&dir).expect("create the screenshots' directory");
    dir
}

/// Runs `web_browser.py CHECK` and fails the test when it does.
fn check(name: &str) {
    testkit::require::browser();
    let _one = BROWSER.lock().unwrap_or_else(PoisonError::into_inner);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web_browser.py");
    let broker = testkit::sibling_binary(Path::new(WEB), "broker");
    let output = tempfile::tempdir().expect("temporary directory");
    let out_path = output.path().join("out");
    let err_path = output.path().join("err");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(name)
        .env("BROKER_BIN", &broker)
        .env("WEB_BIN", WEB)
        .env("CONSUMER_BIN", CONSUMER)
        .env("ARTEFACTS", artefacts())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("create a file for its output"))
        .stderr(std::fs::File::create(&err_path).expect("create a file for its errors"))
        .spawn()
        .expect("run python3 (scripts/test.sh installs what it needs)");
    let status = testkit::wait_child(&mut child, CHECK_LIMIT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    match status {
        Some(status) if status.success() => {
            assert!(stdout.contains(&format!("ok {name}")), "{name}: no `ok` line\n{stdout}")
        }
        Some(status) => panic!("browser check {name} failed ({status})\n{stdout}\n{stderr}"),
        None => panic!("browser check {name} took over {CHECK_LIMIT:?}\n{stdout}\n{stderr}"),
    }
}

#[test]
fn the_preloaded_topics_and_the_brokers_are_listed() {
    check("topics");
}

#[test]
fn a_message_produced_from_the_form_appears_in_a_follow_view_without_reloading() {
    check("follow");
}

#[test]
fn a_claim_taken_by_the_consumer_shows_its_broker_busy_within_a_second() {
    check("claim");
}

#[test]
fn a_script_value_is_shown_as_text_and_never_runs_and_bytes_as_hex() {
    check("escaping");
}

#[test]
fn a_messages_headers_are_shown_above_its_value_as_text() {
    check("headers");
}

#[test]
fn a_stopped_broker_shows_a_banner_that_clears_when_it_is_back() {
    check("banner");
}

#[test]
fn the_page_claims_a_broker_picks_a_message_and_releases_it_also_by_closing() {
    check("consume");
}

#[test]
fn the_page_keeps_its_claim_while_open_and_a_lost_page_loses_it_with_the_lease() {
    check("lease");
}

#[test]
fn topics_are_created_and_deleted_after_a_confirmation_in_the_page() {
    check("topic_admin");
}

#[test]
fn a_group_shows_its_lag_and_chart_updating_live() {
    check("groups");
}

#[test]
fn with_users_the_page_logs_in_and_shows_the_brokers_reason_for_a_refusal() {
    check("auth");
}

#[test]
fn a_keyboard_focus_and_a_slow_click_survive_the_refreshes() {
    check("focus");
}

#[test]
fn a_100_kb_value_stays_within_a_screen_with_show_all_copy_and_download() {
    check("large");
}

#[test]
fn on_a_400_px_phone_every_control_is_on_the_screen_and_values_are_readable() {
    check("phone");
}

#[test]
fn pages_follow_next_offset_and_the_address_holds_the_view_for_back_and_bookmarks() {
    check("paging");
}

#[test]
fn a_follow_view_refused_with_503_tries_again_and_goes_live() {
    check("retry");
}

#[test]
fn a_stopped_broker_is_said_within_a_second_or_so_with_a_5_s_timeout() {
    check("reconnecting");
}

#[test]
fn a_thousand_topics_are_filtered_sorted_and_paged() {
    check("many_topics");
}

#[test]
fn the_small_ones_icon_labels_contrast_hex_marks_waiting_follow_and_chart_scale() {
    check("small");
}

#[test]
fn messages_are_searched_by_key_and_value_shown_newest_first_json_pretty_and_copied() {
    check("search");
}

#[test]
fn a_groups_offset_is_reset_from_the_page_with_the_clis_refusal_while_it_is_read() {
    check("group_reset");
}

#[test]
fn the_topics_say_what_they_keep_and_a_time_finds_its_first_message() {
    check("time_and_retention");
}

#[test]
fn the_page_is_dark_when_the_system_is() {
    check("dark");
}

/// A `web` process for one test, stopped when dropped.
struct Console {
    /// The process.
    child: Child,
    /// Its address, `127.0.0.1:PORT`, from its `serving` line.
    address: String,
}

impl Console {
    /// Starts `web` against `broker` on a free port and waits for its `serving` line.
    fn start(broker: &BrokerProcess) -> Console {
        let mut child = Command::new(WEB)
            .args(["--connect", &broker.endpoint, "--listen", "127.0.0.1:0", "--timeout", "2s"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start web");
        let lines = testkit::lines_of(child.stdout.take().expect("stdout is piped"));
        let line = lines.recv_timeout(STEP).expect("web printed no `serving` line");
        let address = line.strip_prefix("serving http://").expect("a `serving` line").to_owned();
        Console { child, address }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens `GET PATH` on `console` with `headers`, and returns its lines as they come, until
/// `enough` says so of everything read (or the deadline passes, failing the test).
fn read_stream(
    console: &Console,
    path: &str,
    headers: &str,
    enough: impl Fn(&str) -> bool,
) -> String {
    let mut stream = TcpStream::connect(&console.address).expect("connect to web");
    stream.set_read_timeout(Some(Duration::from_millis(200))).expect("set a read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {}\r\n{headers}\r\n", console.address)
        .expect("send the request");
    let mut reader = BufReader::new(stream);
    let mut text = String::new();
    let deadline = Instant::now() + STEP;
    // A line cut by the read timeout stays here and is finished by the next read.
    let mut line = String::new();
    while !enough(&text) {
        assert!(Instant::now() < deadline, "not enough within {STEP:?}:\n{text}{line}");
        match reader.read_line(&mut line) {
            Ok(0) => panic!("the stream ended:\n{text}{line}"),
            Ok(_) => text.push_str(&std::mem::take(&mut line)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("cannot read the stream: {e}\n{text}"),
        }
    }
    text
}

/// Sends a request of `head` (its request line and headers) with a body of `{}`, and reads
/// the whole reply.
fn one_shot(console: &Console, head: &str) -> String {
    let mut stream = TcpStream::connect(&console.address).expect("connect to web");
    stream.set_read_timeout(Some(STEP)).expect("set a read timeout");
    write!(stream, "{head}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}").expect("send");
    let mut reply = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut reply);
    reply
}

#[test]
fn a_follow_stream_resumes_after_the_last_event_id_without_gaps_or_repeats() {
    let broker =
        BrokerProcess::start(&testkit::sibling_binary(Path::new(WEB), "broker"), &["--preload"]);
    let console = Console::start(&broker);
    let path = "/api/follow?topic=Hello%20world&from=0";

    // From the start: one event with offsets 0 to 2, whose id is the offset to read next.
    let first = read_stream(&console, path, "", |t| t.contains("\"messages\":["));
    assert!(first.contains("text/event-stream"), "{first}");
    assert!(first.contains("id: 3\n"), "{first}");
    assert!(first.contains("\"offset\":0") && first.contains("\"offset\":2"), "{first}");

    // A browser that saw up to offset 1 reconnects with Last-Event-ID: 2, and `from` no longer
    // counts. It gets offset 2 and nothing before it.
    let resumed =
        read_stream(&console, path, "Last-Event-ID: 2\r\n", |t| t.contains("\"messages\":["));
    let events: Vec<&str> = resumed
        .lines()
        .filter(|l| l.starts_with("data: ") && l.contains("\"messages\":["))
        .collect();
    assert_eq!(events.len(), 1, "{resumed}");
    assert!(events[0].contains("\"offset\":2"), "{resumed}");
    assert!(
        !events[0].contains("\"offset\":1") && !events[0].contains("\"offset\":0"),
        "{resumed}"
    );

    // Not an offset: refused in words.
    let bad = one_shot(
        &console,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nLast-Event-ID: yesterday\r\n",
            console.address
        ),
    );
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    assert!(bad.contains("Last-Event-ID must be an offset"), "{bad}");
}

#[test]
fn a_request_from_another_site_or_host_name_is_refused() {
    let broker =
        BrokerProcess::start(&testkit::sibling_binary(Path::new(WEB), "broker"), &["--preload"]);
    let console = Console::start(&broker);
    let request = |head: &str| one_shot(&console, head);
    let host = &console.address;
    let other_site = request(&format!(
        "POST /api/consume/claim HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\n"
    ));
    assert!(other_site.starts_with("HTTP/1.1 403"), "{other_site}");
    let rebound = request("POST /api/consume/claim HTTP/1.1\r\nHost: evil.example:8080\r\n");
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    // The console's own page may.
    let own = request(&format!(
        "POST /api/consume/claim HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n\
         X-Console-Page: test\r\n"
    ));
    assert!(own.starts_with("HTTP/1.1 200"), "{own}");
    assert!(own.contains("Set-Cookie: console_session="), "{own}");
    assert!(own.contains("HttpOnly; SameSite=Strict"), "{own}");
}

#[test]
fn partitions_are_shown_created_produced_to_picked_and_followed_from_the_page() {
    check("partitions");
}
