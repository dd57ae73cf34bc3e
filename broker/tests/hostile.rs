//! Clients that attack the broker rather than use it, against the real binary: replies that are
//! never read, floods of warnings, more connections than file descriptors; and the group states
//! retention must fit at once.

mod wire;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use protocol::{ErrorCode, Fetch, GroupFetch, GroupInfo, GroupStart, Request, Response};

use testkit::{BrokerProcess, STEP};
use wire::{append, ask, claim, decode, encode, expect_error, start, topics};

const MIB: u64 = 1 << 20;

/// A value of 1,000,000 bytes: just under the default message limit of 1 MiB.
fn big_value() -> String {
    "v".repeat(1_000_000)
}

/// Appends `count` values of 1 MB to `topic`, a few per request.
fn fill(socket: &zmq::Socket, topic: &str, count: usize) {
    let value = big_value();
    for _ in 0..count / 8 {
        append(socket, topic, &[value.as_str(); 8]);
    }
}

/// A field of `/proc/PID/status`, in bytes (the file gives kB).
fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read proc status");
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        * 1024
}

/// CPU time the process has used, user and system, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read proc stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Clock ticks are 100 a second on Linux.
    Duration::from_millis(ticks * 10)
}

/// A DEALER socket that takes in as little as it can of what the broker sends it: a peer that
/// does not read.
fn attacker(context: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let socket = context.socket(zmq::DEALER).expect("DEALER socket");
    socket.set_linger(0).expect("linger");
    socket.set_rcvhwm(1).expect("rcvhwm");
    socket.set_rcvbuf(4096).expect("rcvbuf");
    socket.set_rcvtimeo(STEP.as_millis() as i32).expect("rcvtimeo");
    socket.connect(endpoint).expect("connect");
    socket
}

/// Sends `request` on a DEALER as a REQ socket would frame it.
fn send_request(socket: &zmq::Socket, request: &Request<'_>) {
    socket.send_multipart([Vec::new(), encode(request)], 0).expect("send");
}

/// Receives one reply framed as for a REQ socket.
fn receive_reply(socket: &zmq::Socket) -> Response<'static> {
    let mut frames = socket.recv_multipart(0).expect("a reply within the step limit");
    let body = frames.pop().expect("a body frame");
    decode(body)
}

/// A fetch of up to 16 MiB of `topic` from its start.
fn greedy_fetch(claim: u64, topic: &str) -> Request<'_> {
    Request::Fetch(Fetch {
        partition: 0,
        claim,
        topic,
        offset: 0,
        max_messages: protocol::MAX_FETCH_MESSAGES,
        max_bytes: protocol::MAX_FETCH_BYTES,
        wait_ms: 0,
        batches: false,
    })
}

/// Waits until `topic` exists, as seen under `token`: a marker a client creates after its
/// other requests, so that once it exists the broker has handled all of them.
fn wait_for_topic(observer: &zmq::Socket, token: u64, topic: &str) {
    let deadline = Instant::now() + STEP;
    while !topics(observer, token).iter().any(|t| t.name == topic) {
        assert!(Instant::now() < deadline, "topic {topic} never appeared");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the replies to `count` greedy fetches: how many delivered messages and how many were
/// refused as overloaded. Any other reply fails the test.
fn count_replies(socket: &zmq::Socket, count: usize) -> (usize, usize) {
    let (mut fetched, mut overloaded) = (0, 0);
    for _ in 0..count {
        match receive_reply(socket) {
            Response::Messages { messages, .. } => {
                assert!(!messages.is_empty());
                fetched += 1;
            }
            other => {
                expect_error(&other, ErrorCode::Overloaded);
                overloaded += 1;
            }
        }
    }
    (fetched, overloaded)
}

/// Clients that send fetches of 16 MiB and never read the replies attack `broker`, holding a
/// topic of about 24 MB; returns how much the broker's resident memory grew while the replies
/// sat unread, and the replies counted once read.
fn attack(broker: &BrokerProcess, clients: usize, requests: usize) -> (u64, usize, usize) {
    let context = zmq::Context::new();
    let observer = broker.req(&context);
    fill(&observer, "big", 24);
    let (_, watch) = claim(&observer, Some(2), "observer");
    let attackers: Vec<zmq::Socket> =
        (0..clients).map(|_| attacker(&context, &broker.endpoint)).collect();
    send_request(&attackers[0], &Request::Claim { broker: Some(1), wait_ms: 0, client: None });
    let token = match receive_reply(&attackers[0]) {
        Response::Claimed { claim, .. } => claim,
        other => panic!("expected claimed, got {other:?}"),
    };
    let before = proc_status(broker.pid(), "VmRSS");
    for (i, socket) in attackers.iter().enumerate() {
        for _ in 0..requests {
            send_request(socket, &greedy_fetch(token, "big"));
        }
        let marker = format!("done-{i}");
        send_request(
            socket,
            &Request::CreateTopic {
                topic: &marker,
                partitions: Some(1),
                retention: Default::default(),
            },
        );
    }
    for i in 0..clients {
        wait_for_topic(&observer, watch, &format!("done-{i}"));
    }
    let grown = proc_status(broker.pid(), "VmRSS").saturating_sub(before);
    let (mut fetched, mut overloaded) = (0, 0);
    for socket in &attackers {
        let (f, o) = count_replies(socket, requests);
        fetched += f;
        overloaded += o;
        assert!(matches!(receive_reply(socket), Response::Created { .. }));
    }
    (grown, fetched, overloaded)
}

#[test]
fn replies_one_client_never_reads_hold_at_most_its_share() {
    let broker = start(&["--max-unread-bytes-per-client", &(32 * MIB).to_string()]);
    let (grown, fetched, overloaded) = attack(&broker, 1, 100);
    // Its share, one more reply admitted before the count was seen, and room for the allocator.
    assert!(grown < 32 * MIB + 16 * MIB + 32 * MIB, "grew by {} MiB", grown / MIB);
    assert!(fetched >= 1 && overloaded >= 50, "{fetched} fetched, {overloaded} overloaded");
    broker.interrupt();
}

#[test]
fn replies_many_clients_never_read_hold_at_most_the_total() {
    let args = ["--max-unread-bytes", &(48 * MIB).to_string()];
    let broker = start(&args);
    let (grown, fetched, overloaded) = attack(&broker, 10, 10);
    // The total, the fetch that crossed it, one message per client, room for the allocator.
    assert!(grown < 48 * MIB + 16 * MIB + 10 * MIB + 32 * MIB, "grew by {} MiB", grown / MIB);
    assert!(fetched >= 3 && overloaded >= 50, "{fetched} fetched, {overloaded} overloaded");
    let stderr = broker.interrupt();
    assert!(stderr.contains("overloaded"), "{stderr}");
}

#[test]
fn a_flood_of_warnings_gives_a_line_a_second_and_the_count_at_the_end() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = wire::dealer(&context, &broker.endpoint);
    let started = Instant::now();
    let floods = 20_000;
    for _ in 0..floods {
        // Two body frames after the delimiter: a malformed envelope.
        socket.send_multipart([&b""[..], b"a", b"b"], 0).expect("send");
    }
    for _ in 0..floods {
        let reply = decode(socket.recv_multipart(0).expect("reply").pop().expect("body"));
        expect_error(&reply, ErrorCode::Malformed);
    }
    let seconds = started.elapsed().as_secs();
    let stderr = broker.interrupt();
    // One line per occurrence said, each with the count held back before it, and a last line
    // with the count held back since.
    let said: Vec<&str> =
        stderr.lines().filter(|l| l.contains("malformed envelope reason")).collect();
    assert!(!said.is_empty() && said.len() as u64 <= seconds + 2, "{} lines", said.len());
    let held_back: u64 =
        stderr.lines().filter(|l| l.contains("malformed envelope")).map(suppressed_of).sum();
    let total = said.len() as u64 + held_back;
    assert_eq!(total, floods, "every malformed envelope is counted in the log:\n{stderr}");
}

/// The `suppressed=N` field of a log line, or 0.
fn suppressed_of(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("suppressed=")?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_client_name_is_logged_in_part() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let name = format!("{}\u{1b}[2J", "n".repeat(200));
    claim(&socket, None, &name);
    let stderr = broker.interrupt();
    let line = stderr.lines().find(|l| l.contains("claimed")).expect("a claimed line");
    assert!(line.contains(&format!("{}…(204 bytes)", "n".repeat(80))), "{line}");
    assert!(!line.contains(&"n".repeat(81)) && !line.contains('\u{1b}'), "{line}");
}

/// Starts the broker under `sh` with the open-file limits `ulimit_args` set first.
fn start_limited(ulimit_args: &str) -> BrokerProcess {
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!(
        "ulimit {ulimit_args} && exec \"{}\" --bind 'tcp://127.0.0.1:*'",
        env!("CARGO_BIN_EXE_broker")
    ));
    BrokerProcess::spawn(command)
}

/// The soft and hard open-file limits of process `pid`.
fn file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("open files");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit_and_logged() {
    let broker = start_limited("-Sn 64");
    let (soft, hard) = file_limits(broker.pid());
    assert_eq!(soft, hard, "the soft limit is raised to the hard one");
    let stderr = broker.interrupt();
    assert!(stderr.contains(&format!("limit={hard}")) && stderr.contains("open file limit"));
}

#[test]
fn more_connections_than_descriptors_do_not_make_the_broker_spin() {
    let broker = start_limited("-n 48");
    let context = zmq::Context::new();
    let clients: Vec<zmq::Socket> = (0..80).map(|_| broker.req(&context)).collect();
    for socket in &clients {
        socket.send(encode(&Request::Status), 0).expect("send");
    }
    // Watch the broker while some connections cannot be accepted.
    let cpu_before = cpu_time(broker.pid());
    let watched = Instant::now();
    let mut answered = 0;
    for socket in &clients {
        let left = Duration::from_millis(2000).saturating_sub(watched.elapsed());
        if socket.poll(zmq::POLLIN, left.as_millis() as i64).expect("poll") > 0 {
            answered += 1;
        }
    }
    let window = watched.elapsed();
    let used = cpu_time(broker.pid()) - cpu_before;
    assert!(answered < clients.len(), "every connection was accepted; the limit did not bite");
    assert!(used < window / 2, "the broker used {used:?} of CPU in {window:?}");
    drop(clients);
    // Once the others have gone, a new client gets in.
    let socket = broker.req(&context);
    assert!(matches!(ask(&socket, &Request::Status), Response::Status { .. }));
    let stderr = broker.interrupt();
    assert!(stderr.contains("cannot accept connections"), "{stderr}");
}

/// The groups on `topic`, as `list_groups` shows them.
fn group_state(socket: &zmq::Socket, group: &str, topic: &str) -> GroupInfo {
    match ask(socket, &Request::ListGroups { group: Some(group), topic: Some(topic) }) {
        Response::Groups { mut groups } if groups.len() == 1 => groups.remove(0),
        other => panic!("expected one group, got {other:?}"),
    }
}

#[test]
fn retention_that_removes_pending_offsets_shows_in_list_groups_at_once() {
    let broker = start(&["--retention-messages", "4", "--segment-bytes", "64"]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    append(&socket, "t", &["m-0", "m-1", "m-2"]);
    let (_, token) = claim(&socket, None, "member");
    let joined =
        Request::JoinGroup { claim: token, group: "g", topic: "t", start: GroupStart::Earliest };
    assert!(matches!(ask(&socket, &joined), Response::Joined { .. }));
    let take = Request::GroupFetch(GroupFetch {
        ordered: false,
        claim: token,
        group: "g",
        topic: "t",
        max_messages: 2,
        max_bytes: protocol::DEFAULT_FETCH_BYTES,
        wait_ms: 0,
    });
    assert!(matches!(ask(&socket, &take), Response::Delivered { .. }));
    let before = group_state(&socket, "g", "t");
    assert_eq!((before.committed_offset, before.pending), (0, 2));
    for i in 3..30 {
        append(&socket, "t", &[format!("m-{i}").as_str()]);
    }
    let first = topics(&socket, token).iter().find(|t| t.name == "t").expect("t").first_offset;
    assert!(first > 2, "retention kept offset {first}");
    let after = group_state(&socket, "g", "t");
    assert_eq!((after.committed_offset, after.delivered_offset, after.pending), (first, first, 0));
    broker.interrupt();
}
