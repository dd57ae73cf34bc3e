//! Security against the real broker: PLAIN and CURVE logins accepted and refused, every
//! request's permission granted and denied with nothing changed by a refusal, claims that belong
//! to their user, and CURVE traffic that a relay on the wire cannot read.

mod wire;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use protocol::{ErrorCode, Fetch, GroupFetch, GroupStart, Request, ResetTo, Response};

use testkit::{BrokerProcess, STEP};
use wire::{append_of, ask, encode, expect_error, start};

const BROKER: &str = env!("CARGO_BIN_EXE_broker");

/// The password every PLAIN user of these tests has.
const PASSWORD: &str = "correct horse";

/// A fresh directory for one test's files.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

/// An Argon2 hash of `password`, made by `broker hash-password` as an operator would.
fn hash_of(password: &str) -> String {
    let output = Command::new(BROKER)
        .arg("hash-password")
        .env("BROKER_PASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .expect("run broker hash-password");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let hash = String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(password));
    hash
}

/// Writes `text` to `name` in `dir`.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a file");
    path
}

/// Starts a broker with `--auth users` and `extra` flags.
fn start_with(users: &Path, extra: &[&str]) -> BrokerProcess {
    let users = users.to_str().expect("UTF-8 path");
    let mut args = vec!["--auth", users];
    args.extend_from_slice(extra);
    start(&args)
}

/// Numbers the monitor endpoints of this test process.
static MONITORS: AtomicUsize = AtomicUsize::new(0);

/// What a client's socket reported about its handshake.
#[derive(Debug, PartialEq, Eq)]
enum Handshake {
    /// It succeeded.
    Succeeded,
    /// ZAP refused it (`HANDSHAKE_FAILED_AUTH`): wrong credentials.
    RefusedAuth,
    /// It failed before ZAP (mechanisms differ, or the server key is wrong).
    Failed,
}

/// A REQ socket set up by `secure`, connected to `endpoint`, and what its first handshake came
/// to, as the socket's monitor reports it (what a client would watch).
fn connect(
    context: &zmq::Context,
    endpoint: &str,
    secure: impl FnOnce(&zmq::Socket),
) -> (zmq::Socket, Handshake) {
    let socket = context.socket(zmq::REQ).expect("REQ");
    socket.set_linger(0).expect("linger");
    socket.set_rcvtimeo(STEP.as_millis() as i32).expect("rcvtimeo");
    socket.set_sndtimeo(STEP.as_millis() as i32).expect("sndtimeo");
    secure(&socket);
    let monitor_endpoint =
        format!("inproc://auth-test-monitor-{}", MONITORS.fetch_add(1, Ordering::Relaxed));
    let events = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
        | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32;
    socket.monitor(&monitor_endpoint, events).expect("monitor");
    let monitor = context.socket(zmq::PAIR).expect("PAIR");
    monitor.set_rcvtimeo(STEP.as_millis() as i32).expect("rcvtimeo");
    monitor.connect(&monitor_endpoint).expect("connect the monitor");
    socket.connect(endpoint).expect("connect");
    let event = monitor.recv_multipart(0).expect("a handshake event within the step limit");
    let code = u16::from_le_bytes([event[0][0], event[0][1]]);
    let outcome = if code == zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16 {
        Handshake::Succeeded
    } else if code == zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as u16 {
        Handshake::RefusedAuth
    } else {
        Handshake::Failed
    };
    (socket, outcome)
}

/// A socket logged in with PLAIN as `user`, `password`.
fn plain(
    context: &zmq::Context,
    endpoint: &str,
    user: &str,
    password: &str,
) -> (zmq::Socket, Handshake) {
    connect(context, endpoint, |s| {
        s.set_plain_username(Some(user)).expect("user");
        s.set_plain_password(Some(password)).expect("password");
    })
}

/// A socket logged in with PLAIN that must succeed.
#[track_caller]
fn login(context: &zmq::Context, endpoint: &str, user: &str) -> zmq::Socket {
    let (socket, outcome) = plain(context, endpoint, user, PASSWORD);
    assert_eq!(outcome, Handshake::Succeeded, "login as {user}");
    socket
}

/// A socket using CURVE with `server` as the broker's key and `pair` as its own.
fn curve(
    context: &zmq::Context,
    endpoint: &str,
    server: &[u8; 32],
    pair: &zmq::CurveKeyPair,
) -> (zmq::Socket, Handshake) {
    connect(context, endpoint, |s| {
        s.set_curve_serverkey(server).expect("server key");
        s.set_curve_publickey(&pair.public_key).expect("public key");
        s.set_curve_secretkey(&pair.secret_key).expect("secret key");
    })
}

/// The users file of the permission tests: `full` may do everything, `none` nothing but what
/// needs no permission, `logs` produce and consume on `logs.*` only.
fn users_file(dir: &Path) -> PathBuf {
    let hash = hash_of(PASSWORD);
    let text = format!(
        r#"
[users.full]
password_hash = "{hash}"
topics = {{ produce = ["*"], consume = ["*"], admin = ["*"] }}
groups = {{ consume = ["*"], admin = ["*"] }}

[users.none]
password_hash = "{hash}"

[users.logs]
password_hash = "{hash}"
topics = {{ produce = ["logs.*"], consume = ["logs.*"] }}
groups = {{ consume = ["readers"] }}
"#
    );
    write(dir, "users.toml", &text)
}

/// Claims any logical broker; returns the token.
#[track_caller]
fn claim(socket: &zmq::Socket, client: Option<&str>) -> u64 {
    match ask(socket, &Request::Claim { broker: None, wait_ms: 0, client }) {
        Response::Claimed { claim, .. } => claim,
        other => panic!("expected claimed, got {other:?}"),
    }
}

/// Everything a refused request could have changed, as `full` sees it: logical brokers, topics
/// with their offsets, groups with their offsets and pending counts.
fn snapshot(full: &zmq::Socket, token: u64) -> String {
    let states = wire::broker_states(full);
    let topics = ask(full, &Request::ListTopics { claim: Some(token) });
    let groups = ask(full, &Request::ListGroups { group: None, topic: None });
    format!("{states:?}\n{topics:?}\n{groups:?}")
}

#[test]
fn plain_logins_with_the_right_password_are_served_and_others_refused_and_logged() {
    let dir = scratch();
    let broker = start_with(&users_file(dir.path()), &[]);
    let context = zmq::Context::new();

    let full = login(&context, &broker.endpoint, "full");
    assert_eq!(wire::status(&full).len(), 2);

    let (_, wrong) = plain(&context, &broker.endpoint, "full", "wrong horse");
    assert_eq!(wrong, Handshake::RefusedAuth);
    let (_, unknown) = plain(&context, &broker.endpoint, "nobody", PASSWORD);
    assert_eq!(unknown, Handshake::RefusedAuth);
    // The refused clients never reach the broker: it still serves the good one.
    assert_eq!(wire::status(&full).len(), 2);

    let stderr = broker.interrupt();
    assert!(stderr.contains("refused a login: wrong password for user full"), "{stderr}");
    // Logged at most once a second: a refusal within the second is counted, and said later.
    assert!(
        stderr.contains("refused a login: unknown user nobody")
            || stderr.contains("refused logins: 1 more since the last warning"),
        "{stderr}"
    );
}

#[test]
fn a_client_without_credentials_is_refused_and_logged() {
    let dir = scratch();
    let broker = start_with(&users_file(dir.path()), &[]);
    let context = zmq::Context::new();
    // From another loopback address (libzmq's `source;destination` form), so that the log
    // line can be seen to name the peer, not the broker's own endpoint.
    let port = broker.endpoint.rsplit(':').next().expect("a port");
    let from_elsewhere = format!("tcp://127.0.0.2:0;127.0.0.1:{port}");
    let (socket, anonymous) = connect(&context, &from_elsewhere, |_| {});
    assert_eq!(anonymous, Handshake::Failed);
    // It has no connection to send on, and gets no reply.
    socket.set_rcvtimeo(wire::QUIET.as_millis() as i32).expect("rcvtimeo");
    let sent = socket.send(encode(&Request::Status), zmq::DONTWAIT);
    assert!(
        sent.is_err() || socket.recv_bytes(0).is_err(),
        "a client without credentials got a reply"
    );
    let endpoint = broker.endpoint.clone();
    let stderr = broker.interrupt();
    let line = refused_connection(&stderr, "127.0.0.2:");
    assert!(line.contains("its handshake failed"), "{stderr}");
    assert!(!line.contains(&endpoint), "the broker's own endpoint named: {line}");
}

/// The broker's line about a connection refused at its handshake, which names the peer at
/// `peer` (an address prefix). A peer whose connection libzmq closed before the broker read its
/// address is named as gone: the failure is fast, and the race cannot be won every time.
#[track_caller]
fn refused_connection<'s>(stderr: &'s str, peer: &str) -> &'s str {
    let line = stderr.lines().find(|l| l.contains("refused a connection from")).unwrap_or("");
    let named = format!("refused a connection from {peer}");
    let gone = "refused a connection from unknown (gone before its address was read)";
    assert!(line.contains(&named) || line.contains(gone), "no such line in:\n{stderr}");
    line
}

#[test]
fn a_curve_secret_key_file_others_may_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch();
    let (key_file, _) = keygen(dir.path());
    let key = key_file.to_str().expect("UTF-8");
    let warning = "can be read by every user of this machine";
    // As keygen wrote it (mode 600): no warning.
    let broker = start(&["--curve-secret-key", key]);
    let stderr = broker.interrupt();
    assert!(!stderr.contains(warning), "{stderr}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let broker = start(&["--curve-secret-key", key]);
    let stderr = broker.interrupt();
    let line = stderr.lines().find(|l| l.contains(warning)).unwrap_or("");
    assert!(line.contains("server.key") && line.contains("chmod 600"), "{stderr}");
}

#[test]
fn refused_logins_are_logged_at_most_once_a_second() {
    let dir = scratch();
    let broker = start_with(&users_file(dir.path()), &[]);
    let context = zmq::Context::new();
    let started = Instant::now();
    for _ in 0..20 {
        let (socket, outcome) = plain(&context, &broker.endpoint, "full", "wrong");
        assert_eq!(outcome, Handshake::RefusedAuth);
        // Each refused socket would retry; closing it stops that.
        drop(socket);
    }
    let seconds = started.elapsed().as_secs() + 1;
    let stderr = broker.interrupt();
    let lines = stderr.lines().filter(|l| l.contains("refused a login")).count();
    assert!((1..=seconds as usize + 1).contains(&lines), "{lines} lines in {seconds} s:\n{stderr}");
    // Every refusal is accounted for: logged, or counted in a later line's `suppressed=N`
    // (a warning after the second has passed, or the summary at the stop).
    let counted: usize = stderr
        .lines()
        .filter(|l| l.contains("refused a login") || l.contains("refused logins:"))
        .filter_map(|l| l.split("suppressed=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(lines + counted, 20, "{stderr}");
}

#[test]
fn a_users_file_that_does_not_parse_stops_the_broker_with_file_line_and_reason() {
    let dir = scratch();
    let cases = [
        ("[users.a]\npassword_hash = \"hunter2\"\n", "line 2", "not a PHC string"),
        ("[users.a]\ncurve_public_key = \"abc\"\n", "line 2", "40 characters"),
        ("[users.a]\npassword_hash = \"$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\"\ntopics = { consume = [\"a*b\"] }\n", "line 3", "`*`"),
        ("[users.a]\nrole = \"admin\"\n", "line 2", "unknown field"),
        ("[users.a]\npassword_hash = \"$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\"\n", "line 2", "checks Argon2 hashes"),
        ("[users.a]\npassword_hash = \"$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\"\n", "line 2", "the limits are m=262144"),
        ("[users\n", "line 1", ""),
    ];
    for (text, line, reason) in cases {
        let path = write(dir.path(), "users.toml", text);
        let mut child = Command::new(BROKER)
            .args(["--bind", "tcp://127.0.0.1:*", "--auth"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the broker");
        let status = testkit::wait_child(&mut child, STEP).expect("the broker stops at once");
        let mut stderr = String::new();
        let mut stdout = String::new();
        child.stderr.take().expect("piped").read_to_string(&mut stderr).expect("stderr");
        child.stdout.take().expect("piped").read_to_string(&mut stdout).expect("stdout");
        assert!(!status.success(), "{text:?}");
        assert!(stdout.is_empty(), "it must not listen: {stdout}");
        let file = path.display().to_string();
        assert!(stderr.contains(&file) && stderr.contains(line), "{text:?}: {stderr}");
        assert!(stderr.contains(reason), "{text:?}: {stderr}");
    }
    let missing = dir.path().join("missing.toml");
    let output = Command::new(BROKER)
        .args(["--bind", "tcp://127.0.0.1:*", "--auth"])
        .arg(&missing)
        .stdin(Stdio::null())
        .output()
        .expect("run the broker");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml"));
}

/// One request of the permission table: a request that needs a right, made by `none` (refused)
/// and by a user who has it (served).
struct Case {
    /// What it is, for the failure message.
    name: &'static str,
    /// The request, given the claim token of the user who makes it.
    request: Box<dyn Fn(u64) -> Request<'static>>,
}

#[test]
fn every_request_needing_a_permission_is_refused_without_it_and_changes_nothing() {
    let dir = scratch();
    let broker = start_with(&users_file(dir.path()), &["--brokers", "3"]);
    let context = zmq::Context::new();
    let full = login(&context, &broker.endpoint, "full");
    let none = login(&context, &broker.endpoint, "none");
    let full_claim = claim(&full, None);

    // State for the requests to act on: a topic with messages, a group with one pending.
    assert!(matches!(ask(&full, &append_of("orders", &["a", "b"])), Response::Appended { .. }));
    let join = Request::JoinGroup {
        claim: full_claim,
        group: "tills",
        topic: "orders",
        start: GroupStart::Earliest,
    };
    assert!(matches!(ask(&full, &join), Response::Joined { .. }));
    let take = GroupFetch {
        ordered: false,
        claim: full_claim,
        group: "tills",
        topic: "orders",
        max_messages: 1,
        max_bytes: 1 << 20,
        wait_ms: 0,
    };
    assert!(matches!(ask(&full, &Request::GroupFetch(take)), Response::Delivered { .. }));

    let cases: Vec<Case> = vec![
        Case { name: "append", request: Box::new(|_| append_of("orders", &["c"])) },
        Case {
            name: "fetch",
            request: Box::new(|claim| {
                Request::Fetch(Fetch {
                    partition: 0,
                    claim,
                    topic: "orders",
                    offset: 0,
                    max_messages: 10,
                    max_bytes: 1 << 20,
                    wait_ms: 0,
                    batches: false,
                })
            }),
        },
        Case {
            name: "create_topic",
            request: Box::new(|_| Request::CreateTopic {
                partitions: Some(1),
                topic: "new",
                retention: Default::default(),
            }),
        },
        // Growing a topic takes the right that creates one.
        Case {
            name: "create_partitions",
            request: Box::new(|_| Request::CreatePartitions { topic: "new", partitions: 2 }),
        },
        Case {
            name: "delete_topic",
            request: Box::new(|_| Request::DeleteTopic { topic: "orders" }),
        },
        Case {
            name: "join_group",
            request: Box::new(|claim| Request::JoinGroup {
                claim,
                group: "tills",
                topic: "orders",
                start: GroupStart::Earliest,
            }),
        },
        Case {
            name: "group_fetch",
            request: Box::new(|claim| {
                Request::GroupFetch(GroupFetch {
                    ordered: false,
                    claim,
                    group: "tills",
                    topic: "orders",
                    max_messages: 10,
                    max_bytes: 1 << 20,
                    wait_ms: 0,
                })
            }),
        },
        Case {
            name: "ack",
            request: Box::new(|_| Request::Ack {
                partition: 0,
                group: "tills",
                topic: "orders",
                offsets: vec![0],
            }),
        },
        Case {
            name: "reset_group",
            request: Box::new(|_| Request::ResetGroup {
                partition: None,
                group: "tills",
                topic: "orders",
                to: ResetTo::Latest,
            }),
        },
    ];

    // Refused, one by one, with nothing changed. `none` may hold no claim (it may consume
    // nothing): its requests carry `full`'s, and are refused for the right they lack first.
    for case in &cases {
        let before = snapshot(&full, full_claim);
        let reply = ask(&none, &(case.request)(full_claim));
        expect_error(&reply, ErrorCode::Forbidden);
        let Response::Error { reason, .. } = &reply else { unreachable!() };
        assert!(reason.contains("none") && reason.contains(case.name), "{}: {reason}", case.name);
        assert_eq!(snapshot(&full, full_claim), before, "{} changed the state", case.name);
    }

    // Served for the user who has the rights, in an order where each one makes sense.
    let served = |name: &str, response: Response<'static>| {
        assert!(!matches!(response, Response::Error { .. }), "{name} by full: {response:?}");
    };
    for case in &cases {
        if case.name == "delete_topic" {
            continue;
        }
        served(case.name, ask(&full, &(case.request)(full_claim)));
    }
    served("delete_topic", ask(&full, &Request::DeleteTopic { topic: "orders" }));

    // What needs no permission, `none` may do.
    assert_eq!(wire::status(&none).len(), 3);
    assert!(matches!(ask(&none, &Request::ListTopics { claim: None }), Response::Topics { .. }));
    assert!(matches!(
        ask(&none, &Request::ListGroups { group: None, topic: None }),
        Response::Groups { .. }
    ));
    // A claim serves reads: a user who may read nothing gets none, and holds no broker.
    let refused = ask(&none, &Request::Claim { broker: None, wait_ms: 0, client: None });
    expect_error(&refused, ErrorCode::Forbidden);
    let Response::Error { reason, .. } = &refused else { unreachable!() };
    assert!(reason.contains("may consume no topic"), "{reason}");
    assert_eq!(wire::status(&none).iter().filter(|b| !b.available).count(), 1, "full's only");
}

#[test]
fn patterns_grant_exact_names_and_prefixes_only() {
    let dir = scratch();
    let broker = start_with(&users_file(dir.path()), &[]);
    let context = zmq::Context::new();
    let logs = login(&context, &broker.endpoint, "logs");
    let token = claim(&logs, None);

    assert!(matches!(ask(&logs, &append_of("logs.web", &["up"])), Response::Appended { .. }));
    for topic in ["logs", "orders", "Logs.web"] {
        expect_error(&ask(&logs, &append_of(topic, &["x"])), ErrorCode::Forbidden);
    }
    let join = |group| Request::JoinGroup {
        claim: token,
        group,
        topic: "logs.web",
        start: GroupStart::Earliest,
    };
    assert!(matches!(ask(&logs, &join("readers")), Response::Joined { .. }));
    expect_error(&ask(&logs, &join("readers2")), ErrorCode::Forbidden);
    // Consume does not imply admin.
    let reset = Request::ResetGroup {
        group: "readers",
        topic: "logs.web",
        partition: None,
        to: ResetTo::Earliest,
    };
    expect_error(&ask(&logs, &reset), ErrorCode::Forbidden);
    expect_error(&ask(&logs, &Request::DeleteTopic { topic: "logs.web" }), ErrorCode::Forbidden);
}

#[test]
fn a_claim_token_works_only_for_the_user_who_claimed() {
    let dir = scratch();
    let broker = start_with(&users_file(dir.path()), &[]);
    let context = zmq::Context::new();
    let full = login(&context, &broker.endpoint, "full");
    let logs = login(&context, &broker.endpoint, "logs");
    assert!(matches!(ask(&full, &append_of("logs.web", &["up"])), Response::Appended { .. }));

    // The client name is ignored: the holder is the user.
    let token = claim(&logs, Some("pretending-to-be-someone"));
    let holders: Vec<_> = wire::status(&full).into_iter().filter_map(|b| b.holder).collect();
    assert_eq!(holders, ["logs"]);

    let stolen = [
        Request::Renew { claim: token },
        Request::ListTopics { claim: Some(token) },
        Request::Fetch(Fetch {
            partition: 0,
            claim: token,
            topic: "logs.web",
            offset: 0,
            max_messages: 10,
            max_bytes: 1 << 20,
            wait_ms: 0,
            batches: false,
        }),
        Request::JoinGroup {
            claim: token,
            group: "readers",
            topic: "logs.web",
            start: GroupStart::Earliest,
        },
        Request::Release { claim: token },
    ];
    for request in &stolen {
        let before = wire::broker_states(&full);
        let reply = ask(&full, request);
        expect_error(&reply, ErrorCode::Forbidden);
        assert_eq!(wire::broker_states(&full), before, "{request:?}");
    }
    // The owner still may.
    assert!(matches!(ask(&logs, &Request::Renew { claim: token }), Response::Renewed { .. }));
    assert!(matches!(ask(&logs, &Request::Release { claim: token }), Response::Released { .. }));
    // A token nobody holds is unknown, as without users.
    expect_error(&ask(&full, &Request::Renew { claim: token }), ErrorCode::UnknownClaim);
}

/// `broker keygen FILE`: writes the pair and prints the public key.
fn keygen(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("server.key");
    let output = Command::new(BROKER).arg("keygen").arg(&path).output().expect("run keygen");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let public = stdout.trim().strip_prefix("curve public key ").expect("the key line").to_owned();
    assert_eq!(public.len(), 40);
    (path, public)
}

/// Decodes a Z85 key with libzmq's decoder.
fn z85(text: &str) -> [u8; 32] {
    zmq::z85_decode(text).expect("Z85").try_into().expect("32 bytes")
}

#[test]
fn curve_logins_by_key_are_served_and_unknown_keys_and_wrong_server_keys_refused() {
    let dir = scratch();
    let (key_file, public) = keygen(dir.path());
    // keygen refuses to overwrite a key.
    let again = Command::new(BROKER).arg("keygen").arg(&key_file).output().expect("run keygen");
    assert!(!again.status.success());

    let client = zmq::CurveKeyPair::new().expect("CURVE");
    let users = format!(
        "[users.till]\ncurve_public_key = \"{}\"\ntopics = {{ produce = [\"orders\"], consume = [\"orders\"] }}\n",
        zmq::z85_encode(&client.public_key).expect("Z85")
    );
    let users = write(dir.path(), "users.toml", &users);
    let broker = start_with(&users, &["--curve-secret-key", key_file.to_str().expect("UTF-8")]);
    assert_eq!(
        broker.stdout_line(STEP).as_deref(),
        Some(format!("curve public key {public}").as_str())
    );
    let context = zmq::Context::new();
    let server = z85(&public);

    let (till, outcome) = curve(&context, &broker.endpoint, &server, &client);
    assert_eq!(outcome, Handshake::Succeeded);
    assert!(matches!(ask(&till, &append_of("orders", &["one"])), Response::Appended { .. }));
    expect_error(&ask(&till, &append_of("other", &["one"])), ErrorCode::Forbidden);
    let token = claim(&till, None);
    let holders: Vec<_> = wire::status(&till).into_iter().filter_map(|b| b.holder).collect();
    assert_eq!(holders, ["till"]);
    assert!(matches!(ask(&till, &Request::Release { claim: token }), Response::Released { .. }));

    let stranger = zmq::CurveKeyPair::new().expect("CURVE");
    let (_, outcome) = curve(&context, &broker.endpoint, &server, &stranger);
    assert_eq!(outcome, Handshake::RefusedAuth);
    let wrong_server = zmq::CurveKeyPair::new().expect("CURVE").public_key;
    let (_, outcome) = curve(&context, &broker.endpoint, &wrong_server, &client);
    assert_ne!(outcome, Handshake::Succeeded);
    let (_, outcome) = plain(&context, &broker.endpoint, "till", PASSWORD);
    assert_eq!(outcome, Handshake::Failed);

    let stderr = broker.interrupt();
    assert!(stderr.contains("refused a login: unknown CURVE key"), "{stderr}");
}

#[test]
fn curve_without_users_encrypts_for_any_client_key_and_refuses_plain_text() {
    let dir = scratch();
    let (key_file, public) = keygen(dir.path());
    let broker = start(&["--curve-secret-key", key_file.to_str().expect("UTF-8")]);
    assert_eq!(broker.stdout_line(STEP), Some(format!("curve public key {public}")));
    let context = zmq::Context::new();
    let anyone = zmq::CurveKeyPair::new().expect("CURVE");
    let (socket, outcome) = curve(&context, &broker.endpoint, &z85(&public), &anyone);
    assert_eq!(outcome, Handshake::Succeeded);
    assert!(matches!(ask(&socket, &append_of("orders", &["one"])), Response::Appended { .. }));
    let (_, outcome) = connect(&context, &broker.endpoint, |_| {});
    assert_eq!(outcome, Handshake::Failed);
    // The broker heard of the failure before the client did; a round trip after it makes sure
    // the serve loop has read that event too before it is stopped.
    assert!(matches!(ask(&socket, &Request::Status), Response::Status { .. }));
    let stderr = broker.interrupt();
    refused_connection(&stderr, "127.0.0.1:");
}

#[test]
fn a_bad_curve_key_file_stops_the_broker() {
    let dir = scratch();
    let key = write(dir.path(), "server.key", "not a key\n");
    let output = Command::new(BROKER)
        .args(["--bind", "tcp://127.0.0.1:*", "--curve-secret-key"])
        .arg(&key)
        .stdin(Stdio::null())
        .output()
        .expect("run the broker");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.key, line 1") && stderr.contains("40 characters"), "{stderr}");
}

/// A TCP relay on loopback that copies bytes both ways between its clients and `target`,
/// keeping every byte it passes.
struct Relay {
    /// Where clients connect, as a ZeroMQ endpoint.
    endpoint: String,
    /// Every byte passed, both ways.
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    fn start(target: &str) -> Relay {
        let target = target.strip_prefix("tcp://").expect("a tcp endpoint").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let endpoint = format!("tcp://{}", listener.local_addr().expect("address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        // One connection is all a test makes; the threads end when either side closes.
        thread::spawn(move || {
            let Ok((client, _)) = listener.accept() else { return };
            let Ok(server) = TcpStream::connect(&target) else { return };
            for (from, to) in [(&client, &server), (&server, &client)] {
                let (mut from, mut to) =
                    (from.try_clone().expect("clone"), to.try_clone().expect("clone"));
                let kept = Arc::clone(&kept);
                from.set_read_timeout(Some(STEP)).expect("timeout");
                thread::spawn(move || {
                    let mut buffer = [0u8; 4096];
                    while let Ok(n @ 1..) = from.read(&mut buffer) {
                        kept.lock().expect("lock").extend_from_slice(&buffer[..n]);
                        if to.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Relay { endpoint, seen }
    }

    /// Whether `needle` passed through.
    fn saw(&self, needle: &[u8]) -> bool {
        self.seen.lock().expect("lock").windows(needle.len()).any(|w| w == needle)
    }
}

#[test]
fn curve_traffic_cannot_be_read_on_the_wire_and_plain_traffic_can() {
    const VALUE: &str = "the-secret-recipe-42";
    let dir = scratch();
    let context = zmq::Context::new();

    // PLAIN: the value, the user name and the password cross the wire as they are.
    let plain_broker = start_with(&users_file(dir.path()), &[]);
    let relay = Relay::start(&plain_broker.endpoint);
    let socket = login(&context, &relay.endpoint, "full");
    assert!(matches!(ask(&socket, &append_of("orders", &[VALUE])), Response::Appended { .. }));
    assert!(relay.saw(VALUE.as_bytes()) && relay.saw(PASSWORD.as_bytes()));

    // CURVE: neither the value nor the request's field names do.
    let (key_file, public) = keygen(dir.path());
    let curve_broker = start(&["--curve-secret-key", key_file.to_str().expect("UTF-8")]);
    let relay = Relay::start(&curve_broker.endpoint);
    let pair = zmq::CurveKeyPair::new().expect("CURVE");
    let (socket, outcome) = curve(&context, &relay.endpoint, &z85(&public), &pair);
    assert_eq!(outcome, Handshake::Succeeded);
    let request = encode(&append_of("orders", &[VALUE]));
    let reply = wire::ask_raw(&socket, &request);
    assert!(matches!(reply, Response::Appended { .. }), "{reply:?}");
    assert!(!relay.saw(VALUE.as_bytes()), "the value crossed the wire in clear text");
    assert!(!relay.saw(b"append") && !relay.saw(b"orders"));
    assert!(relay.saw(b"CURVE"), "the relay saw the connection's greeting");
}

#[test]
fn without_auth_the_broker_serves_anyone_as_before() {
    let broker = start(&[]);
    let context = zmq::Context::new();
    let socket = broker.req(&context);
    let token = claim(&socket, Some("ann"));
    let holders: Vec<_> = wire::status(&socket).into_iter().filter_map(|b| b.holder).collect();
    assert_eq!(holders, ["ann"]);
    assert!(matches!(
        ask(&socket, &Request::DeleteTopic { topic: "nothing" }),
        Response::Error { .. }
    ));
    assert!(matches!(ask(&socket, &Request::Release { claim: token }), Response::Released { .. }));
    // No key line: the broker prints nothing more on stdout.
    assert_eq!(broker.stdout_line(wire::QUIET), None);
}

/// Sockets logging in as `full` with a wrong password from 127.0.0.2, each trying again every
/// 10 ms after a refusal, as a flood would; and a monitor on each, reporting its refusals:
/// `HANDSHAKE_FAILED_AUTH` for a password checked and found wrong, `DISCONNECTED` for a login
/// dropped unchecked (ZAP's temporary error, which RFC 27 answers by closing silently).
fn login_flood(
    context: &zmq::Context,
    port: &str,
    sockets: usize,
) -> (Vec<zmq::Socket>, Vec<zmq::Socket>) {
    // libzmq's `source;destination` form: the flood comes from another loopback address.
    let endpoint = format!("tcp://127.0.0.2:0;127.0.0.1:{port}");
    let mut flood = Vec::new();
    let mut monitors = Vec::new();
    for _ in 0..sockets {
        let socket = context.socket(zmq::REQ).expect("REQ");
        socket.set_linger(0).expect("linger");
        socket.set_reconnect_ivl(10).expect("reconnect interval");
        socket.set_plain_username(Some("full")).expect("user");
        socket.set_plain_password(Some("not the password")).expect("password");
        let monitor_endpoint =
            format!("inproc://auth-test-monitor-{}", MONITORS.fetch_add(1, Ordering::Relaxed));
        let events =
            zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32 | zmq::SocketEvent::DISCONNECTED as i32;
        socket.monitor(&monitor_endpoint, events).expect("monitor");
        let monitor = context.socket(zmq::PAIR).expect("PAIR");
        monitor.connect(&monitor_endpoint).expect("connect the monitor");
        flood.push(socket);
        monitors.push(monitor);
    }
    for socket in &flood {
        socket.connect(&endpoint).expect("connect");
    }
    (flood, monitors)
}

/// Waits for the first refusal of the flood, at most [`STEP`].
fn flood_refused(monitors: &[zmq::Socket]) {
    let mut items: Vec<_> = monitors.iter().map(|m| m.as_poll_item(zmq::POLLIN)).collect();
    let ready = zmq::poll(&mut items, STEP.as_millis() as i64).expect("poll the monitors");
    assert!(ready > 0, "the flood was not refused within {STEP:?}");
}

/// The broker's count of logins since start, from the line it logs when it stops:
/// (accepted, refused after a check, refused unchecked).
fn logins_counted(stderr: &str) -> (u64, u64, u64) {
    let line = stderr.lines().find(|l| l.contains("logins since start: ")).unwrap_or("");
    let numbers: Vec<u64> = line
        .split("logins since start: ")
        .nth(1)
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [accepted, refused, unchecked, ..] => (accepted, refused, unchecked),
        _ => panic!("no count of logins in the broker's log:\n{stderr}"),
    }
}

#[test]
fn a_login_flood_from_one_address_locks_out_no_user_from_another() {
    let dir = scratch();
    let broker = start_with(&users_file(dir.path()), &[]);
    let port = broker.endpoint.rsplit(':').next().expect("a port").to_owned();
    let context = zmq::Context::new();
    let (flood, monitors) = login_flood(&context, &port, 256);
    flood_refused(&monitors);
    // Each of these waits for its handshake for at most the step limit. Before checks were
    // bounded per address, they queued behind the flood's thousands of Argon2 checks.
    for _ in 0..5 {
        let full = login(&context, &broker.endpoint, "full");
        assert_eq!(wire::status(&full).len(), 2, "served during the flood");
    }
    drop(flood);
    let stderr = broker.interrupt();
    assert!(stderr.contains("refused a login"), "{stderr}");
}

#[test]
fn an_address_that_keeps_failing_has_one_password_checked_a_second() {
    let dir = scratch();
    let broker = start_with(&users_file(dir.path()), &[]);
    let port = broker.endpoint.rsplit(':').next().expect("a port").to_owned();
    let context = zmq::Context::new();
    let began = Instant::now();
    let (flood, monitors) = login_flood(&context, &port, 64);
    flood_refused(&monitors);
    let refused_at = Instant::now();
    // However long the flood runs, checks are spaced: count them over a few seconds of it.
    let _full = login(&context, &broker.endpoint, "full");
    while refused_at.elapsed() < std::time::Duration::from_secs(3) {
        let _ = login(&context, &broker.endpoint, "full");
    }
    // The broker stops before the flood's connections close: a handshake cut short by its
    // client counts as refused too, and is no password checked.
    let stderr = broker.interrupt();
    drop(flood);
    // Checks of handshakes still waiting go on until the broker has stopped: they count too.
    let seconds = began.elapsed().as_secs() + 1;
    let (accepted, refused, unchecked) = logins_counted(&stderr);
    assert!(accepted >= 2, "{stderr}");
    // Five free failures, then one check a second (the flood may have begun a second early).
    assert!(
        refused <= 5 + seconds + 1,
        "{refused} passwords checked from one address in about {seconds} s\n{stderr}"
    );
    assert!(unchecked > refused, "the rest are refused unchecked: {unchecked} against {refused}");
}

/// The broker's resident memory in bytes, from `/proc/PID/status`.
fn resident_bytes(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read proc status");
    let kib = text
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// Each password check costs an Argon2 memory of 19 MiB; the two checking threads keep theirs,
/// and no check adds to it.
#[test]
fn a_login_flood_does_not_grow_the_brokers_memory_with_each_check() {
    let dir = scratch();
    let broker = start_with(&users_file(dir.path()), &[]);
    let idle = resident_bytes(broker.pid());
    let port = broker.endpoint.rsplit(':').next().expect("a port").to_owned();
    let context = zmq::Context::new();
    let (flood, monitors) = login_flood(&context, &port, 64);
    flood_refused(&monitors);
    // Correct logins meanwhile: checks on both threads, for a few seconds of spaced checks
    // of the flood's passwords.
    let started = Instant::now();
    let mut peak = idle;
    while started.elapsed() < std::time::Duration::from_secs(4) {
        let _ = login(&context, &broker.endpoint, "full");
        peak = peak.max(resident_bytes(broker.pid()));
    }
    drop(flood);
    let stderr = broker.interrupt();
    let (accepted, refused, _) = logins_counted(&stderr);
    assert!(accepted + refused >= 10, "too few checks to tell: {stderr}");
    let grown = peak.saturating_sub(idle);
    assert!(
        grown <= 64 << 20,
        "VmRSS grew by {} MiB over {} password checks",
        grown >> 20,
        accepted + refused
    );
}

#[test]
fn a_user_holds_at_most_its_max_claims_at_once() {
    let dir = scratch();
    let hash = hash_of(PASSWORD);
    let text = format!(
        "[users.reader]\npassword_hash = \"{hash}\"\nmax_claims = 1\n\
         topics = {{ consume = [\"*\"] }}\n"
    );
    let broker = start_with(&write(dir.path(), "users.toml", &text), &["--brokers", "3"]);
    let context = zmq::Context::new();
    let reader = login(&context, &broker.endpoint, "reader");
    let token = claim(&reader, None);
    let again = ask(&reader, &Request::Claim { broker: None, wait_ms: 0, client: None });
    expect_error(&again, ErrorCode::Forbidden);
    let Response::Error { reason, .. } = again else { unreachable!() };
    assert!(reason.contains("max_claims = 1"), "{reason}");
    let free = wire::status(&reader).iter().filter(|b| b.available).count();
    assert_eq!(free, 2, "the refusal took nothing");
    assert!(matches!(ask(&reader, &Request::Release { claim: token }), Response::Released { .. }));
    claim(&reader, None);
    broker.interrupt();
}

#[test]
fn sighup_rereads_the_users_file_and_the_next_request_has_the_new_rights() {
    let dir = scratch();
    let users = users_file(dir.path());
    let broker = start_with(&users, &[]);
    let context = zmq::Context::new();
    let logs = login(&context, &broker.endpoint, "logs");
    let none = login(&context, &broker.endpoint, "none");
    expect_error(&ask(&logs, &append_of("orders", &["x"])), ErrorCode::Forbidden);

    // `logs` may produce to `orders` from now on; `none` is gone.
    let text = std::fs::read_to_string(&users).expect("the users file");
    let granted = text.replacen(
        r#"topics = { produce = ["logs.*"], consume = ["logs.*"] }"#,
        r#"topics = { produce = ["logs.*", "orders"], consume = ["logs.*"] }"#,
        1,
    );
    let (before, after) = granted.split_once("[users.none]").expect("none's table");
    let (_, rest) = after.split_once("[users.logs]").expect("logs's table");
    write(dir.path(), "users.toml", &format!("{before}[users.logs]{rest}"));
    broker.signal("HUP");
    let deadline = Instant::now() + STEP;
    loop {
        match ask(&logs, &append_of("orders", &["x"])) {
            Response::Appended { .. } => break,
            Response::Error { code: ErrorCode::Forbidden, .. } if Instant::now() < deadline => {
                thread::sleep(std::time::Duration::from_millis(20));
            }
            other => panic!("after SIGHUP: {other:?}"),
        }
    }
    expect_error(&ask(&none, &Request::Status), ErrorCode::Forbidden);

    // A file that does not read changes nothing, and the broker goes on. The stop's SIGINT
    // comes after the SIGHUP, so the reload is done (and logged) before the broker stops.
    write(dir.path(), "users.toml", "[users\n");
    broker.signal("HUP");
    assert!(matches!(ask(&logs, &append_of("orders", &["y"])), Response::Appended { .. }));
    let stderr = broker.interrupt();
    assert!(stderr.contains("read the users file again"), "{stderr}");
    assert!(stderr.contains("SIGHUP: kept the users as they were"), "{stderr}");
}

#[test]
fn admin_actions_and_refusals_are_logged_with_user_and_address_as_json_when_asked() {
    let dir = scratch();
    let broker = start_with(&users_file(dir.path()), &["--log-format", "json"]);
    let context = zmq::Context::new();
    let full = login(&context, &broker.endpoint, "full");
    let logs = login(&context, &broker.endpoint, "logs");
    expect_error(&ask(&logs, &append_of("orders", &["x"])), ErrorCode::Forbidden);
    let create = Request::CreateTopic {
        topic: "audited",
        partitions: Some(1),
        retention: Default::default(),
    };
    assert!(matches!(ask(&full, &create), Response::Created { .. }));
    assert!(matches!(
        ask(&full, &Request::DeleteTopic { topic: "audited" }),
        Response::Deleted { .. }
    ));
    let stderr = broker.interrupt();
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .filter(|event: &serde_json::Value| event["target"] == "audit")
        .collect();
    let said = |op: &str| {
        events
            .iter()
            .find(|e| e["fields"]["op"] == op)
            .unwrap_or_else(|| panic!("no audit event for {op} in {events:?}"))
    };
    let refused = said("append");
    assert_eq!(refused["fields"]["user"], "logs", "{refused}");
    assert_eq!(refused["level"], "WARN");
    assert!(refused["fields"]["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1")));
    for (op, message) in [("create_topic", "created topic"), ("delete_topic", "deleted topic")] {
        let done = said(op);
        assert_eq!(done["fields"]["user"], "full", "{done}");
        assert_eq!(done["fields"]["topic"], "audited", "{done}");
        assert_eq!(done["fields"]["message"], message, "{done}");
    }
    // A native client acting for itself gives no `origin`, and its lines carry none.
    for event in &events {
        assert!(event["fields"].get("origin").is_none(), "{event}");
    }
}

/// The audit events of a broker's JSON log.
fn audit_events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .filter(|event: &serde_json::Value| event["target"] == "audit")
        .collect()
}

#[test]
fn the_origin_a_request_gives_is_logged_beside_the_peer_and_an_unfit_one_dropped_not_refused() {
    let dir = scratch();
    let broker = start_with(&users_file(dir.path()), &["--log-format", "json"]);
    let context = zmq::Context::new();
    let full = login(&context, &broker.endpoint, "full");
    let logs = login(&context, &broker.endpoint, "logs");
    let with_origin = |request: &Request<'_>, origin: &str| {
        let mut frame = Vec::new();
        protocol::encode_request_with_origin(request, None, None, &mut frame);
        // Written by hand rather than by the encoder, which leaves out what the broker drops:
        // one more key, `origin`, whatever it holds.
        frame[0] += 1;
        frame.extend_from_slice(b"\xa6origin");
        frame.push(0xd9);
        frame.push(u8::try_from(origin.len()).expect("a short origin"));
        frame.extend_from_slice(origin.as_bytes());
        frame
    };
    fn create(topic: &str) -> Request<'_> {
        Request::CreateTopic { topic, partitions: Some(1), retention: Default::default() }
    }
    let told = "[2001:db8::7]:40112";
    let reply = wire::ask_raw(&full, &with_origin(&create("told"), told));
    assert!(matches!(reply, Response::Created { .. }), "{reply:?}");
    let refused =
        wire::ask_raw(&logs, &with_origin(&append_of("orders", &["x"]), "198.51.100.7:1"));
    expect_error(&refused, ErrorCode::Forbidden);
    // Too long, a space, a line break: dropped, and the request served all the same.
    let unfit = ["9".repeat(65), "a b".to_owned(), "x\ny=1".to_owned()];
    for (n, origin) in unfit.iter().enumerate() {
        let topic = format!("unfit{n}");
        let reply = wire::ask_raw(&full, &with_origin(&create(&topic), origin));
        assert!(matches!(reply, Response::Created { .. }), "{origin:?}: {reply:?}");
    }
    let events = audit_events(&broker.interrupt());
    let of = |op: &str, topic: &str| {
        events
            .iter()
            .find(|e| {
                e["fields"]["op"] == op && (topic.is_empty() || e["fields"]["topic"] == topic)
            })
            .unwrap_or_else(|| panic!("no audit event for {op} {topic} in {events:?}"))
            .clone()
    };
    let done = of("create_topic", "told");
    assert_eq!(done["fields"]["origin"], told, "{done}");
    assert!(done["fields"]["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1")));
    assert_eq!(done["fields"]["user"], "full", "{done}");
    let refusal = of("append", "");
    assert_eq!(refusal["fields"]["origin"], "198.51.100.7:1", "{refusal}");
    for n in 0..unfit.len() {
        let done = of("create_topic", &format!("unfit{n}"));
        assert!(done["fields"].get("origin").is_none(), "{done}");
    }
}
/// The names in a `topics` or `groups` reply, in order.
fn listed(reply: Response<'_>) -> Vec<String> {
    match reply {
        Response::Topics { topics } => topics.into_iter().map(|t| t.name).collect(),
        Response::Groups { groups } => groups.into_iter().map(|g| g.group).collect(),
        other => panic!("expected a listing, got {other:?}"),
    }
}

#[test]
fn a_user_lists_only_the_topics_and_groups_it_has_some_right_on() {
    let dir = scratch();
    let broker = start_with(&users_file(dir.path()), &[]);
    let context = zmq::Context::new();
    let full = login(&context, &broker.endpoint, "full");
    let full_token = claim(&full, None);
    for topic in ["orders", "logs.web", "logs.db"] {
        assert!(matches!(ask(&full, &append_of(topic, &["x"])), Response::Appended { .. }));
    }
    for (group, topic) in [("billing", "orders"), ("readers", "logs.web")] {
        let join =
            Request::JoinGroup { claim: full_token, group, topic, start: GroupStart::Earliest };
        assert!(matches!(ask(&full, &join), Response::Joined { .. }));
    }
    let all_groups = Request::ListGroups { group: None, topic: None };
    assert_eq!(
        listed(ask(&full, &Request::ListTopics { claim: Some(full_token) })),
        ["logs.db", "logs.web", "orders"]
    );
    assert_eq!(listed(ask(&full, &all_groups)), ["billing", "readers"]);

    let logs = login(&context, &broker.endpoint, "logs");
    let token = claim(&logs, None);
    assert_eq!(
        listed(ask(&logs, &Request::ListTopics { claim: Some(token) })),
        ["logs.db", "logs.web"]
    );
    assert_eq!(listed(ask(&logs, &all_groups)), ["readers"]);
    // Asking for a group by name shows nothing more.
    let billing = Request::ListGroups { group: Some("billing"), topic: None };
    assert!(listed(ask(&logs, &billing)).is_empty());
    let release = Request::Release { claim: token };
    assert!(matches!(ask(&logs, &release), Response::Released { .. }), "released");

    let none = login(&context, &broker.endpoint, "none");
    assert!(listed(ask(&none, &Request::ListTopics { claim: None })).is_empty());
    assert!(listed(ask(&none, &all_groups)).is_empty());
}
