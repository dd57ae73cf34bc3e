//! The systemd unit in `deploy/`: `systemd-analyze verify` accepts it, when the tool is there.

mod common;

use std::process::Command;

use common::{binary, deploy};

#[test]
fn systemd_analyze_verifies_the_broker_unit() {
    let unit = std::fs::read_to_string(deploy().join("broker.service")).unwrap();
    for wanted in [
        "User=broker",
        "ExecStart=/usr/local/bin/broker --config /etc/broker/broker.toml",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=",
    ] {
        assert!(unit.contains(wanted), "deploy/broker.service lacks {wanted}");
    }
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed: the unit was not verified");
        return;
    }
    // `verify` checks that ExecStart's program exists: the one built here stands in.
    let dir = tempfile::tempdir().unwrap();
    let built = binary("broker");
    let unit = unit.replace("/usr/local/bin/broker", built.to_str().unwrap());
    let path = dir.path().join("broker.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // It also reports on units of the machine it runs on; only this one's lines count.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("broker.service")).collect();
    assert!(output.status.success() && ours.is_empty(), "systemd-analyze verify: {stderr}");
}
