//! The `web` console in a real browser: the system's headless Chromium, driven by Playwright
//! for Python (`web_browser.py` beside this file), against the real `broker`, `web` and
//! `consumer` binaries on free loopback ports. Each test runs one check of the script and fails
//! on its non-zero exit, showing what it printed. Screenshots of the main views are saved under
//! the target directory (`tmp/web-console/`) for people to look at.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

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
fn a_script_value_is_shown_as_text_and_never_runs() {
    check("escaping");
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
fn topics_are_created_and_deleted_after_a_confirmation_in_the_page() {
    check("topic_admin");
}

#[test]
fn with_users_the_page_logs_in_and_shows_the_brokers_reason_for_a_refusal() {
    check("auth");
}
