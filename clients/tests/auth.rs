//! The programs against a broker that requires a login: `--user` with a password (PLAIN),
//! `--curve-server-key` with `--curve-key-file` (CURVE), and what a refused login, a missing
//! password or a missing permission look like to the person typing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{broker_binary, run_with, Finished, CONSUMER, PRODUCER};
use testkit::{BrokerProcess, STEP};

const PASSWORD: &str = "correct horse";

/// Runs `broker ARGS` (a tool: keygen, hash-password) with `envs`; returns its standard output.
fn broker_tool(args: &[&str], envs: &[(&str, &str)]) -> String {
    let output = Command::new(broker_binary())
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run the broker's tool");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned()
}

/// `broker keygen DIR/NAME`: the key file and its public key.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let printed = broker_tool(&["keygen", path.to_str().expect("UTF-8")], &[]);
    let public = printed.strip_prefix("curve public key ").expect("the public key").to_owned();
    (path, public)
}

/// A users file in `dir`: alice may produce on orders, bob consume it (in group baristas), and
/// the till with key `till_key` both.
fn users(dir: &Path, till_key: &str) -> PathBuf {
    let hash = broker_tool(&["hash-password"], &[("BROKER_PASSWORD", PASSWORD)]);
    let text = format!(
        "[users.alice]\npassword_hash = \"{hash}\"\ntopics = {{ produce = [\"orders\"] }}\n\n\
         [users.bob]\npassword_hash = \"{hash}\"\ntopics = {{ consume = [\"orders\"] }}\n\
         groups = {{ consume = [\"baristas\"] }}\n\n\
         [users.till]\ncurve_public_key = \"{till_key}\"\n\
         topics = {{ produce = [\"orders\"], consume = [\"orders\"] }}\n"
    );
    let path = dir.join("users.toml");
    std::fs::write(&path, text).expect("write the users file");
    path
}

/// Runs `program --connect ENDPOINT ARGS` with `envs`.
fn as_user(
    program: &str,
    broker: &BrokerProcess,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Finished {
    let mut all = vec!["--connect", &broker.endpoint, "--timeout", "3s"];
    all.extend_from_slice(args);
    run_with(program, &all, b"", envs)
}

#[test]
fn users_log_in_with_passwords_and_are_held_to_their_permissions() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (_, till_key) = keygen(dir.path(), "till.key");
    let users = users(dir.path(), &till_key);
    let broker = BrokerProcess::start(&broker_binary(), &["--auth", users.to_str().unwrap()]);
    let password = [("BROKER_PASSWORD", PASSWORD)];

    let out = as_user(PRODUCER, &broker, &["--user", "alice", "orders", "one espresso"], &password);
    assert_eq!(out.assert_success().lines(), ["appended 1 message to orders at offset 0"]);
    let out = as_user(CONSUMER, &broker, &["--user", "bob", "fetch", "orders"], &password);
    assert_eq!(out.assert_success().lines(), ["0\tone espresso"]);

    // bob may read, not write: the broker says so, and nothing is appended.
    let out = as_user(PRODUCER, &broker, &["--user", "bob", "orders", "free coffee"], &password);
    out.assert_code(1);
    assert!(out.stderr.contains("(forbidden)"), "{}", out.stderr);
    let out = as_user(CONSUMER, &broker, &["--user", "bob", "fetch", "orders"], &password);
    assert_eq!(out.assert_success().lines(), ["0\tone espresso"]);

    // A wrong password, and no login at all, are refused at the handshake, and said so.
    let wrong = [("BROKER_PASSWORD", "guess")];
    let out = as_user(CONSUMER, &broker, &["--user", "bob", "fetch", "orders"], &wrong);
    out.assert_code(3);
    let want = format!("error: authentication failed for user bob at {}", broker.endpoint);
    assert_eq!(out.stderr.trim_end(), want);
    let out = as_user(CONSUMER, &broker, &["status"], &[]);
    out.assert_code(3);
    assert!(out.stderr.contains("authentication failed for a client without credentials"));

    // An empty BROKER_PASSWORD is said to be empty, not tried.
    let out = as_user(CONSUMER, &broker, &["--user", "bob", "status"], &[("BROKER_PASSWORD", "")]);
    out.assert_code(1);
    assert!(out.stderr.contains("BROKER_PASSWORD is set but empty"), "{}", out.stderr);

    // Without BROKER_PASSWORD and off a terminal there is no password to send.
    let out = as_user(CONSUMER, &broker, &["--user", "bob", "status"], &[]);
    out.assert_code(1);
    assert!(out.stderr.contains("set BROKER_PASSWORD"), "{}", out.stderr);
    broker.interrupt();
}

#[test]
fn a_till_logs_in_by_key_over_curve_and_strangers_are_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (server_file, _) = keygen(dir.path(), "broker.key");
    let (till_file, till_key) = keygen(dir.path(), "till.key");
    let (stranger_file, stranger_key) = keygen(dir.path(), "stranger.key");
    let users = users(dir.path(), &till_key);
    let broker = BrokerProcess::start(
        &broker_binary(),
        &["--auth", users.to_str().unwrap(), "--curve-secret-key", server_file.to_str().unwrap()],
    );
    let printed = broker.stdout_line(STEP).expect("the broker's public key");
    let server_key = printed.strip_prefix("curve public key ").expect("a key").to_owned();
    let till = ["--curve-server-key", &server_key, "--curve-key-file", till_file.to_str().unwrap()];

    let mut args = till.to_vec();
    args.extend(["orders", "two lattes"]);
    let out = as_user(PRODUCER, &broker, &args, &[]);
    assert_eq!(out.assert_success().lines(), ["appended 1 message to orders at offset 0"]);
    let mut args = till.to_vec();
    args.extend(["fetch", "orders"]);
    assert_eq!(as_user(CONSUMER, &broker, &args, &[]).assert_success().lines(), ["0\ttwo lattes"]);

    // A key the users file does not know, and a client that trusts another server key.
    let stranger =
        ["--curve-server-key", &server_key, "--curve-key-file", stranger_file.to_str().unwrap()];
    let mut args = stranger.to_vec();
    args.push("status");
    let out = as_user(CONSUMER, &broker, &args, &[]);
    out.assert_code(3);
    assert!(out.stderr.contains(&format!("authentication failed for key {stranger_key}")));
    let mut args = vec!["--curve-server-key", &stranger_key, "--curve-key-file"];
    args.extend([till_file.to_str().unwrap(), "status"]);
    let out = as_user(CONSUMER, &broker, &args, &[]);
    out.assert_code(3);
    // The till's own key is fine: the server key it was given is what is wrong.
    assert!(!out.stderr.contains("authentication failed"), "{}", out.stderr);
    let want = format!("the broker's CURVE key may not be {stranger_key}");
    assert!(out.stderr.contains(&want), "{}", out.stderr);

    // Flags that do not go together are refused before anything is sent.
    let mut args = till.to_vec();
    args.extend(["--user", "alice", "status"]);
    let out = as_user(CONSUMER, &broker, &args, &[("BROKER_PASSWORD", PASSWORD)]);
    out.assert_code(1);
    assert!(out.stderr.contains("a connection uses one"), "{}", out.stderr);
    broker.interrupt();
}
