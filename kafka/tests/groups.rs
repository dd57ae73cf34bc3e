//! Kafka consumer groups through the gateway with real clients: members that die are replaced.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{binary, run, script, success, Door};

/// A confluent-kafka group member (`kafka-confluent.py member`) and the lines it printed.
struct Member {
    /// The Python process.
    child: Child,
    /// Its standard output, line by line, as it comes.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn start(door: &Door, topic: &str, group: &str) -> Member {
        let mut child = Command::new("python3")
            .arg(script("kafka-confluent.py"))
            .args(["member", &door.bootstrap(), topic, group])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 kafka-confluent.py member");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped");
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        Member { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    /// Waits until `done` holds of its lines, within `limit`.
    fn wait_for(&self, limit: Duration, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.lines()) {
            assert!(Instant::now() < deadline, "{what} within {limit:?}: {:?}", self.lines());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether its last assignment holds the partition.
    fn holds(&self) -> bool {
        self.lines().iter().rev().find(|l| l.starts_with("assigned")).map(String::as_str)
            == Some("assigned 1")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Child::kill signals this process by its id, and is quiet if it already ended.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assignments(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.starts_with("assigned")).count()
}

#[test]
fn a_member_killed_with_sigkill_is_replaced_within_its_session_timeout() {
    let door = Door::start(&[]);
    let produce = |value: &str| {
        let mut produce = Command::new(binary("producer"));
        produce.args(["--connect", &door.endpoint(), "--topic", "work", value]);
        success(&run(produce, ""), "producer");
    };
    produce("before");
    let first = Member::start(&door, "work", "workers");
    first.wait_for(Duration::from_secs(30), "the first member reads", |l| {
        l.iter().any(|l| l == "message before")
    });
    let second = Member::start(&door, "work", "workers");
    // Both have their assignment of the second generation: one holds the partition.
    second.wait_for(Duration::from_secs(30), "the second member is assigned", |l| {
        assignments(l) >= 1
    });
    first.wait_for(Duration::from_secs(30), "the first member is assigned again", |l| {
        assignments(l) >= 2
    });
    let (mut holder, survivor) = if first.holds() { (first, second) } else { (second, first) };
    assert!(!survivor.holds(), "both hold the partition");
    testkit::signal_process(holder.child.id(), "KILL");
    let _ = holder.child.wait();
    produce("after");
    // Session timeout (6 s) and the rebalance, with room for a slow machine.
    survivor.wait_for(Duration::from_secs(40), "the survivor takes over", |l| {
        l.iter().any(|l| l == "message after")
    });
    assert!(survivor.holds());
    drop(holder);
    drop(survivor);
    door.stop();
}
