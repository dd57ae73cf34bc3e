//! Config files: every flag of each program has a key in its example file in `deploy/`, the
//! example files start their programs, the command line overrides a file, and a bad file is
//! refused with its line.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::{binary, deploy, Started, PROGRAMS};
use testkit::BrokerProcess;

/// The long flags `program --help` lists, but `--help`, `--version` and `--config`.
fn help_flags(program: &str) -> BTreeSet<String> {
    let output = Command::new(binary(program)).arg("--help").output().unwrap();
    assert!(output.status.success(), "{program} --help failed");
    let help = String::from_utf8(output.stdout).unwrap();
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let line = line.trim_start();
        let line = line.strip_prefix("-h, ").or(line.strip_prefix("-V, ")).unwrap_or(line);
        if let Some(rest) = line.strip_prefix("--") {
            let flag: String =
                rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            flags.insert(flag);
        }
    }
    for own in ["help", "version", "config"] {
        assert!(flags.remove(own), "{program} --help lists no --{own}");
    }
    flags
}

/// The keys an example file lists, set or commented out (`# key = value`).
fn example_keys(program: &str) -> BTreeSet<String> {
    let path = deploy().join(format!("{program}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let line = line.strip_prefix('#').map_or(line, str::trim_start);
        let Some((key, _)) = line.split_once(" = ") else { continue };
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            assert!(keys.insert(key.to_owned()), "{} lists {key} twice", path.display());
        }
    }
    keys
}

#[test]
fn every_flag_of_each_program_has_a_key_in_its_example_file() {
    for program in PROGRAMS {
        let flags = help_flags(program);
        let keys = example_keys(program);
        let missing: Vec<_> = flags.difference(&keys).collect();
        let extra: Vec<_> = keys.difference(&flags).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "deploy/{program}.toml: flags without a key {missing:?}, keys without a flag {extra:?}"
        );
    }
}

#[test]
fn each_example_file_starts_its_program_with_the_listen_address_overridden() {
    for (program, listen, ready) in [
        ("broker", ["--bind", "tcp://127.0.0.1:*"], "listening on tcp://127.0.0.1:"),
        ("kafka-gateway", ["--listen", "127.0.0.1:0"], "listening on 127.0.0.1:"),
        ("web", ["--listen", "127.0.0.1:0"], "serving http://127.0.0.1:"),
    ] {
        let config = deploy().join(format!("{program}.toml"));
        let mut command = Command::new(binary(program));
        command.arg("--config").arg(&config).args(listen).env_remove("BROKER_ENDPOINT");
        let started = Started::spawn(command);
        let first = started.line();
        assert!(first.starts_with(ready), "{program}: {first:?}");
    }
}

#[test]
fn the_command_line_overrides_the_file_and_the_file_the_defaults() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "brokers = 3\nlease = \"2s\"\npreload = true").unwrap();
    let config = file.path().to_str().unwrap();
    let broker = BrokerProcess::start(&binary("broker"), &["--config", config, "--brokers", "5"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let reply = testkit::round_trip(&socket, &protocol::Request::Status);
    match protocol::decode_response(&reply).unwrap() {
        protocol::Response::Status { brokers, .. } => {
            assert_eq!(brokers.len(), 5, "--brokers 5 on the command line wins");
            // The file's preload made the sample topics.
            assert_eq!(brokers[0].topics, 4);
        }
        other => panic!("{other:?}"),
    }
    broker.kill();
}

#[test]
fn a_bad_file_stops_each_program_naming_the_file_line_and_key() {
    for program in PROGRAMS {
        for (text, line, key, why) in [
            ("# settings\n\nlisten-to = 1\n", 3, "listen-to", "unknown key"),
            ("metrics-listen = \"not an address\"\n", 1, "metrics-listen", "expected PORT"),
            ("metrics-listen = [1, 2]\n", 1, "metrics-listen", "takes one value"),
        ] {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            file.write_all(text.as_bytes()).unwrap();
            let mut child = Command::new(binary(program))
                .arg("--config")
                .arg(file.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let status = testkit::wait_child(&mut child, Duration::from_secs(10))
                .unwrap_or_else(|| panic!("{program} did not stop on a bad file"));
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            assert_eq!(status.code(), Some(2), "{program}: {stderr}");
            let start = format!("error: {}:{line}: key `{key}`: ", file.path().display());
            assert!(stderr.starts_with(&start) && stderr.contains(why), "{program}: {stderr}");
        }
    }
}
