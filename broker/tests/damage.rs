//! Damaged files and the broker's own bookkeeping against the real broker binary: no topic name
//! can pass for a deletion in progress, a damaged file of any kind stops start-up by name and
//! changes nothing, and `--repair` sets it aside where the user can see it.

mod wire;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use protocol::{GroupFetch, GroupInfo, GroupStart, Request, Response};
use testkit::{BrokerProcess, STEP};
use wire::{append, ask, claim, fetch, fetch_from, topics};

/// Bytes an append of one message without a key takes on disk besides its value: a batch of
/// one (length, checksum, base offset, count, timestamp, flags) and the message's two lengths.
const RECORD_FRAMING: u64 = 31;
/// Bytes a segment file begins with: its magic number and format version.
const SEGMENT_HEADER: u64 = 8;

/// Starts the broker on `data_dir` with `args` besides `--data-dir`.
fn start_on(data_dir: &Path, args: &[&str]) -> BrokerProcess {
    let mut all = vec!["--data-dir", utf8(data_dir)];
    all.extend_from_slice(args);
    wire::start(&all)
}

/// Starts the broker on `data_dir` expecting it to refuse: returns what it wrote on standard
/// error, having checked that it exited with an error and never listened.
#[track_caller]
fn start_fails(data_dir: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--bind", "tcp://127.0.0.1:*", "--data-dir", utf8(data_dir)])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the broker");
    let Some(status) = testkit::wait_child(&mut child, STEP) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the broker kept running on a damaged data directory");
    };
    let output = child.wait_with_output().expect("the broker's output");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!status.success(), "exited with {status}; stderr:\n{stderr}");
    assert!(!stdout.contains("listening on"), "it listened: {stdout}");
    assert!(stderr.contains("--repair"), "no way out offered:\n{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    stderr.into_owned()
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("a temporary directory with a UTF-8 path")
}

/// The directories under `topics/`.
fn topic_dirs(data_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(data_dir.join("topics"))
        .expect("topics/")
        .map(|entry| entry.expect("an entry").path())
        .collect();
    dirs.sort();
    dirs
}

/// Every file below `dir` with its bytes, by path: a picture of a directory to compare.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in fs::read_dir(&next).expect("a readable directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = fs::read(&path).expect("a readable file");
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

fn values(socket: &zmq::Socket, token: u64, topic: &str) -> Vec<String> {
    fetch(socket, fetch_from(token, topic, 0))
        .messages
        .iter()
        .map(|m| String::from_utf8_lossy(m.value).into_owned())
        .collect()
}

/// Joins `group` on `topic` from the earliest offset, takes `take` messages and acknowledges
/// them all.
fn consume(socket: &zmq::Socket, token: u64, group: &str, topic: &str, take: u32) {
    let join = Request::JoinGroup { claim: token, group, topic, start: GroupStart::Earliest };
    assert!(matches!(ask(socket, &join), Response::Joined { .. }));
    let request = Request::GroupFetch(GroupFetch {
        ordered: false,
        claim: token,
        group,
        topic,
        max_messages: take,
        max_bytes: protocol::DEFAULT_FETCH_BYTES,
        wait_ms: 0,
    });
    let offsets = match ask(socket, &request) {
        Response::Delivered { messages, .. } => {
            messages.iter().map(|m| m.offset).collect::<Vec<_>>()
        }
        other => panic!("expected delivered, got {other:?}"),
    };
    assert_eq!(offsets.len(), take as usize);
    let ack = Request::Ack { group, topic, partition: 0, offsets };
    assert!(matches!(ask(socket, &ack), Response::Acked { .. }));
}

fn groups(socket: &zmq::Socket) -> Vec<(String, String, u64)> {
    match ask(socket, &Request::ListGroups { group: None, topic: None }) {
        Response::Groups { groups } => {
            groups.into_iter().map(|g: GroupInfo| (g.group, g.topic, g.committed_offset)).collect()
        }
        other => panic!("expected groups, got {other:?}"),
    }
}

fn record_len(value: &str) -> u64 {
    RECORD_FRAMING + value.len() as u64
}

#[test]
fn topics_named_like_a_deletion_in_progress_survive_a_restart_with_their_groups() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let names = [".deleting-orders", ".DELETING-Audit"];
    let broker = start_on(data.path(), &["--fsync", "always"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "c");
    for name in names {
        append(&socket, name, &["a", "b", "c"]);
        consume(&socket, token, "g", name, 2);
    }
    drop(socket);
    broker.interrupt();

    let broker = start_on(data.path(), &["--fsync", "always"]);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "c");
    let listed: Vec<String> = topics(&socket, token).into_iter().map(|t| t.name).collect();
    assert_eq!(listed, [".DELETING-Audit", ".deleting-orders"]);
    for name in names {
        assert_eq!(values(&socket, token, name), ["a", "b", "c"], "{name}");
    }
    let expected: Vec<(String, String, u64)> =
        names.iter().rev().map(|name| ("g".to_owned(), (*name).to_owned(), 2)).collect();
    assert_eq!(groups(&socket), expected);

    // Deleting one really deletes it, and leaves nothing a restart could take for a topic.
    assert!(matches!(
        ask(&socket, &Request::DeleteTopic { topic: ".deleting-orders" }),
        Response::Deleted { .. }
    ));
    drop(socket);
    broker.interrupt();
    let broker = start_on(data.path(), &[]);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "c");
    let listed: Vec<String> = topics(&socket, token).into_iter().map(|t| t.name).collect();
    assert_eq!(listed, [".DELETING-Audit"]);
    drop(socket);
    broker.interrupt();
}

#[test]
fn a_deletion_an_older_broker_left_unfinished_is_cleared_and_nothing_else() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append(&socket, "doomed", &["x"]);
    drop(socket);
    broker.interrupt();
    // What a broker that kept deletions in topics/ left when it died mid-delete.
    let [dir] = <[PathBuf; 1]>::try_from(topic_dirs(data.path())).expect("one topic directory");
    let name = dir.file_name().and_then(|n| n.to_str()).expect("a UTF-8 name").to_owned();
    let leftover = dir.with_file_name(format!(".deleting-{name}"));
    fs::rename(&dir, &leftover).expect("rename");

    let broker = start_on(data.path(), &[]);
    assert!(!leftover.exists(), "the old-style leftover is still there");
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "c");
    assert!(topics(&socket, token).is_empty());
    drop(socket);
    broker.interrupt();
}

#[test]
fn a_damaged_topic_meta_stops_start_up_by_name_and_repair_sets_the_topic_aside() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append(&socket, "t", &["one", "two"]);
    let (_, token) = claim(&socket, None, "c");
    consume(&socket, token, "g", "t", 1);
    drop(socket);
    broker.interrupt();

    let [dir] = <[PathBuf; 1]>::try_from(topic_dirs(data.path())).expect("one topic directory");
    let meta = dir.join("topic.meta");
    fs::write(&meta, b"\xc1 not a meta").expect("damage topic.meta");
    let before = snapshot(data.path());

    let stderr = start_fails(data.path());
    let named = format!("{} is damaged", meta.display());
    assert!(stderr.contains(&named), "no {named:?} in:\n{stderr}");
    assert_eq!(snapshot(data.path()), before, "a refused start changed files");

    // --repair sets the directory and its group's state aside, says so, and starts.
    let broker = start_on(data.path(), &["--repair"]);
    let run = data.path().join("damaged").join("1");
    let kept_dir = run.join("topics").join(dir.file_name().expect("a name"));
    assert_eq!(
        fs::read(kept_dir.join("topic.meta")).expect("the meta is kept"),
        b"\xc1 not a meta"
    );
    let kept_groups: Vec<PathBuf> = fs::read_dir(run.join("groups"))
        .expect("the group state is kept")
        .map(|e| e.expect("an entry").path())
        .collect();
    assert_eq!(kept_groups.len(), 1, "{kept_groups:?}");
    let socket = broker.req(&context);
    // The name is free again: a new topic starts from offset 0.
    assert_eq!(append(&socket, "t", &["new"]), (0, 0));
    drop(socket);
    let stderr = broker.interrupt();
    let line = format!("set aside {} as {}", dir.display(), kept_dir.display());
    assert!(stderr.contains(&line), "no {line:?} in:\n{stderr}");
}

#[test]
fn damage_in_the_middle_of_the_newest_segment_stops_start_up_and_repair_keeps_a_copy() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    for value in ["one", "two", "three"] {
        append(&socket, "t", &[value]);
    }
    drop(socket);
    broker.interrupt();

    let [dir] = <[PathBuf; 1]>::try_from(topic_dirs(data.path())).expect("one topic directory");
    let segment = dir.join(format!("{:020}.log", 0));
    let mut bytes = fs::read(&segment).expect("the segment");
    // The file's header (magic and format version), then the first record.
    let second = SEGMENT_HEADER + record_len("one");
    bytes[(second + RECORD_FRAMING) as usize] ^= 0x20;
    fs::write(&segment, &bytes).expect("damage the segment");
    let before = snapshot(data.path());

    let stderr = start_fails(data.path());
    let third = second + record_len("two");
    let named = format!(
        "{} is damaged at byte {second} (offset 1): the batch fails its checksum, and a whole \
         batch follows at byte {third}",
        segment.display()
    );
    assert!(stderr.contains(&named), "no {named:?} in:\n{stderr}");
    assert_eq!(snapshot(data.path()), before, "a refused start changed files");

    let broker = start_on(data.path(), &["--repair"]);
    let copy = data.path().join("damaged/1/topics").join(dir.file_name().expect("a name"));
    let copy = copy.join(segment.file_name().expect("a name"));
    assert_eq!(fs::read(&copy).expect("a copy of the whole file"), bytes);
    assert_eq!(fs::metadata(&segment).expect("the segment").len(), second);
    let socket = broker.req(&context);
    let (_, token) = claim(&socket, None, "c");
    assert_eq!(values(&socket, token, "t"), ["one"]);
    drop(socket);
    let stderr = broker.interrupt();
    let line = format!("set aside a copy of {} as {}", segment.display(), copy.display());
    assert!(stderr.contains(&line), "no {line:?} in:\n{stderr}");
}

#[test]
fn a_damaged_or_unknown_file_among_the_group_states_stops_start_up() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let broker = start_on(data.path(), &[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append(&socket, "t", &["one", "two"]);
    let (_, token) = claim(&socket, None, "c");
    consume(&socket, token, "g", "t", 1);
    drop(socket);
    broker.interrupt();

    let groups_dir = data.path().join("groups");
    let stray = groups_dir.join("notes.txt");
    fs::write(&stray, b"mine").expect("a stray file");
    let before = snapshot(data.path());
    let stderr = start_fails(data.path());
    let named = format!("{} is not a group state file", stray.display());
    assert!(stderr.contains(&named), "no {named:?} in:\n{stderr}");
    assert_eq!(snapshot(data.path()), before, "a refused start changed files");

    let broker = start_on(data.path(), &["--repair"]);
    assert_eq!(fs::read(data.path().join("damaged/1/groups/notes.txt")).expect("kept"), b"mine");
    let socket = broker.req(&context);
    assert_eq!(groups(&socket), [("g".to_owned(), "t".to_owned(), 1)]);
    drop(socket);
    broker.interrupt();
}
