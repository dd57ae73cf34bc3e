//! With `--sasl-plain`, Kafka clients log in with SASL/PLAIN as users of a broker with `--auth`,
//! and get exactly those users' permissions: the door is no way around them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{binary, run, script, success, GATEWAY};
use testkit::BrokerProcess;

const PASSWORD: &str = "correct horse";

/// A users file: alice may produce on orders, bob only consume it (in group readers, whose
/// offsets he may commit).
fn users(dir: &std::path::Path) -> PathBuf {
    let output = Command::new(binary("broker"))
        .arg("hash-password")
        .env("BROKER_PASSWORD", PASSWORD)
        .output()
        .expect("hash a password");
    let hash = String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned();
    let text = format!(
        "[users.alice]\npassword_hash = \"{hash}\"\ntopics = {{ produce = [\"orders\"] }}\n\n\
         [users.bob]\npassword_hash = \"{hash}\"\ntopics = {{ consume = [\"orders\"] }}\n\
         groups = {{ consume = [\"readers\"], admin = [\"readers\"] }}\n"
    );
    let path = dir.join("users.toml");
    std::fs::write(&path, text).expect("write the users file");
    path
}

/// The tutorial producer sending one message to orders, logged in as `user` (none if `None`).
fn produce_as(bootstrap: &str, login: Option<(&str, &str)>) -> Output {
    let mut produce = Command::new("python3");
    produce.arg(script("kafka-confluent.py")).args(["produce", bootstrap, "orders", "1"]);
    if let Some((user, password)) = login {
        produce.env("KAFKA_USER", user).env("KAFKA_PASSWORD", password);
    }
    run(produce, "")
}

/// The tutorial consumer reading one message of orders in group readers, as `user`.
fn consume_as(bootstrap: &str, user: &str) -> Output {
    let mut consume = Command::new("python3");
    consume
        .arg(script("kafka-confluent.py"))
        .args(["consume", bootstrap, "orders", "readers", "1"]);
    consume.env("KAFKA_USER", user).env("KAFKA_PASSWORD", PASSWORD);
    run(consume, "")
}

/// A broker whose clients log in as the users of `users`.
fn broker_with(users: &Path) -> BrokerProcess {
    BrokerProcess::start(&binary("broker"), &["--auth", users.to_str().expect("UTF-8")])
}

/// `kafka-gateway` on a free port in front of `broker`, with `extra` flags.
fn gateway_for(broker: &BrokerProcess, extra: &[&str]) -> BrokerProcess {
    let mut command = Command::new(GATEWAY);
    command.args(["--listen", "127.0.0.1:0", "--connect", &broker.endpoint]).args(extra);
    BrokerProcess::spawn(command)
}

#[test]
fn sasl_plain_logins_carry_the_users_permissions() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let users = users(dir.path());
    let broker = broker_with(&users);
    let gateway = gateway_for(&broker, &["--sasl-plain"]);
    let bootstrap = gateway.endpoint.clone();

    success(&produce_as(&bootstrap, Some(("alice", PASSWORD))), "alice's producer");

    let bob = produce_as(&bootstrap, Some(("bob", PASSWORD)));
    assert!(!bob.status.success(), "bob may not produce: {bob:?}");
    let said =
        String::from_utf8_lossy(&bob.stdout).into_owned() + &String::from_utf8_lossy(&bob.stderr);
    assert!(
        said.contains("TOPIC_AUTHORIZATION_FAILED") || said.contains("authorization"),
        "{said}"
    );

    let wrong = produce_as(&bootstrap, Some(("alice", "wrong")));
    assert!(!wrong.status.success(), "a wrong password must not produce: {wrong:?}");
    let anonymous = produce_as(&bootstrap, None);
    assert!(!anonymous.status.success(), "no login must not produce: {anonymous:?}");

    // One message in all: alice's.
    let mut fetch = Command::new(binary("consumer"));
    fetch.args(["--connect", &broker.endpoint, "--user", "bob", "fetch", "orders"]);
    fetch.env("BROKER_PASSWORD", PASSWORD);
    let out = success(&run(fetch, ""), "bob's native fetch");
    assert_eq!(out.lines().count(), 1, "{out}");
    // And bob reads it through the Kafka door, as a member of his group.
    let read = success(&consume_as(&bootstrap, "bob"), "bob's tutorial consumer");
    assert_eq!(read.lines().collect::<Vec<_>>(), ["key-0=message-0@0"], "{read}");

    let log = gateway.interrupt();
    assert!(log.contains("SASL login refused"), "{log}");
    assert!(log.contains("before a SASL login"), "{log}");
    broker.interrupt();
}

#[test]
fn a_broker_with_users_makes_the_gateway_ask_for_logins_unbidden() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let users = users(dir.path());
    let broker = broker_with(&users);
    // No --sasl-plain: the gateway finds out that the broker has users.
    let gateway = gateway_for(&broker, &[]);
    let bootstrap = gateway.endpoint.clone();
    success(&produce_as(&bootstrap, Some(("alice", PASSWORD))), "alice's producer");
    let anonymous = produce_as(&bootstrap, None);
    assert!(!anonymous.status.success(), "no login must not produce: {anonymous:?}");
    let log = gateway.interrupt();
    assert!(log.contains("must log in with SASL/PLAIN"), "{log}");
    broker.interrupt();
}

#[test]
fn sasl_plain_in_front_of_a_broker_without_users_is_refused_at_start() {
    let broker = BrokerProcess::start(&binary("broker"), &[]);
    let mut command = Command::new(GATEWAY);
    command.args(["--listen", "127.0.0.1:0", "--connect", &broker.endpoint, "--sasl-plain"]);
    let out = run(command, "");
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("has no users"), "{said}");
    broker.interrupt();
}

#[test]
fn kcat_logs_in_with_the_handshake_versions_librdkafka_2_0_asks_for() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let users = users(dir.path());
    let broker = broker_with(&users);
    let gateway = gateway_for(&broker, &[]);
    let kcat = |user: &str, password: &str, args: &[&str], input: &str| {
        let mut kcat = Command::new("kcat");
        kcat.args([
            "-b",
            &gateway.endpoint,
            "-t",
            "orders",
            "-X",
            "security.protocol=SASL_PLAINTEXT",
        ]);
        kcat.args(["-X", "sasl.mechanisms=PLAIN", "-X", &format!("sasl.username={user}")]);
        kcat.args(["-X", &format!("sasl.password={password}")]).args(args);
        run(kcat, input)
    };
    success(&kcat("alice", PASSWORD, &["-P"], "one\ntwo\n"), "kcat -P as alice");
    let read = success(&kcat("bob", PASSWORD, &["-C", "-e"], ""), "kcat -C as bob");
    assert_eq!(read, "one\ntwo\n");
    let wrong = kcat("alice", "wrong", &["-P"], "three\n");
    assert!(!wrong.status.success(), "{wrong:?}");
    let log = gateway.interrupt();
    assert!(log.contains("SASL login refused"), "{log}");
    broker.interrupt();
}

/// Logs in on a raw connection with `SaslHandshake` v0 and then a bare PLAIN token, as clients
/// before `SaslAuthenticate` did; what the gateway sent back after the token (empty when the
/// connection was closed).
fn raw_v0_login(bootstrap: &str, user: &str, password: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(bootstrap).expect("connect");
    stream.set_read_timeout(Some(testkit::STEP)).expect("timeout");
    // SaslHandshake (17) v0, correlation id 1, no client id, mechanism "PLAIN".
    let mut request = vec![0, 17, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 5];
    request.extend_from_slice(b"PLAIN");
    let mut frame = u32::try_from(request.len()).expect("len").to_be_bytes().to_vec();
    frame.extend_from_slice(&request);
    stream.write_all(&frame).expect("send the handshake");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("the handshake's answer");
    let mut body = vec![0u8; usize::try_from(u32::from_be_bytes(size)).expect("size")];
    stream.read_exact(&mut body).expect("the handshake's answer");
    assert_eq!(&body[4..6], &[0, 0], "the handshake's error code");
    let token = format!("\0{user}\0{password}");
    let mut frame = u32::try_from(token.len()).expect("len").to_be_bytes().to_vec();
    frame.extend_from_slice(token.as_bytes());
    stream.write_all(&frame).expect("send the token");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn a_sasl_handshake_v0_is_followed_by_a_bare_token() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let users = users(dir.path());
    let broker = broker_with(&users);
    let gateway = gateway_for(&broker, &[]);
    // The gateway answers a good token with an empty frame and keeps the connection open,
    // which the read ends by its timeout; a wrong one closes it with nothing.
    assert_eq!(raw_v0_login(&gateway.endpoint, "alice", PASSWORD), [0, 0, 0, 0]);
    assert_eq!(raw_v0_login(&gateway.endpoint, "alice", "wrong"), Vec::<u8>::new());
    gateway.interrupt();
    broker.interrupt();
}

/// Kafka group membership needs `consume` on the group, as a native `join_group` does: eve may
/// consume the topic but has no right on group baristas, so she can neither join it nor force a
/// rebalance of bob, its member, nor read its committed offsets, nor list or describe it; and
/// each user's Metadata lists only the topics it has some right on.
#[test]
fn group_membership_and_offsets_need_the_groups_consume_right() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = Command::new(binary("broker"))
        .arg("hash-password")
        .env("BROKER_PASSWORD", PASSWORD)
        .output()
        .expect("hash a password");
    let hash = String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned();
    let users = dir.path().join("users.toml");
    let text = format!(
        "[users.ops]\npassword_hash = \"{hash}\"\n\
         topics = {{ produce = [\"*\"], admin = [\"*\"] }}\n\
         groups = {{ admin = [\"*\"] }}\n\n\
         [users.bob]\npassword_hash = \"{hash}\"\ntopics = {{ consume = [\"orders\"] }}\n\
         groups = {{ consume = [\"baristas\"] }}\n\n\
         [users.eve]\npassword_hash = \"{hash}\"\n\
         topics = {{ consume = [\"orders\"], produce = [\"menu\"] }}\n"
    );
    std::fs::write(&users, text).expect("write the users file");
    let broker = broker_with(&users);
    let gateway = gateway_for(&broker, &["--sasl-plain"]);
    let bootstrap = gateway.endpoint.clone();
    for topic in ["orders", "menu", "secret"] {
        let mut produce = Command::new("python3");
        produce.arg(script("kafka-confluent.py")).args(["produce", &bootstrap, topic, "1"]);
        produce.env("KAFKA_USER", "ops").env("KAFKA_PASSWORD", PASSWORD);
        success(&run(produce, ""), "ops's producer");
    }

    let mut rights = Command::new("python3");
    rights
        .arg(script("kafka-group-rights.py"))
        .args([&bootstrap, "orders", "baristas", "bob", "eve", PASSWORD]);
    let out = success(&run(rights, ""), "the group rights script");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "member assigned",
            "bob sees orders",
            "eve sees menu,orders",
            "intruder refused GROUP_AUTHORIZATION_FAILED",
            "intruder offsets refused GROUP_AUTHORIZATION_FAILED",
            "bob lists baristas",
            "bob describes 1 members",
            "eve lists ",
            "eve describe refused GROUP_AUTHORIZATION_FAILED",
            "member committed -1001",
        ],
        "{out}"
    );
    // Deleting a group's offsets needs `admin` on it, and a user without it learns nothing
    // more of the group; one with it learns the group has no offsets.
    let delete_offsets = |user: &str| {
        let mut admin = Command::new("python3");
        admin.arg(script("kafka-python-admin.py"));
        admin.args([&bootstrap, "delete-offsets", "baristas", "orders:0"]);
        admin.env("KAFKA_USER", user).env("KAFKA_PASSWORD", PASSWORD);
        success(&run(admin, ""), "kafka-python delete_group_offsets")
    };
    assert_eq!(delete_offsets("eve"), "refused GroupAuthorizationFailedError\n");
    assert_eq!(delete_offsets("bob"), "refused GroupAuthorizationFailedError\n");
    assert_eq!(delete_offsets("ops"), "refused GroupIdNotFoundError\n");
    gateway.interrupt();
    broker.interrupt();
}

/// `broker keygen FILE` in `dir`: the file and the public key it printed.
fn keygen(dir: &std::path::Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let output = Command::new(binary("broker")).arg("keygen").arg(&path).output().expect("keygen");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let public = stdout.trim().strip_prefix("curve public key ").expect("the key line").to_owned();
    (path, public)
}

/// In front of a broker that requires CURVE, the gateway connects with a key pair of its own
/// and acts as that key's user: kcat produces and consumes through it without a login. A
/// gateway whose key is no user's stops at start, saying so.
#[test]
fn the_gateway_reaches_a_curve_broker_with_its_own_key_pair() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (server_key, server_public) = keygen(dir.path(), "server.key");
    let (gateway_key, gateway_public) = keygen(dir.path(), "gateway.key");
    let (stranger_key, _) = keygen(dir.path(), "stranger.key");
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[users.cafe]\ncurve_public_key = \"{gateway_public}\"\n\
             topics = {{ produce = [\"orders\"], consume = [\"orders\"] }}\n"
        ),
    )
    .expect("write the users file");
    let broker = BrokerProcess::start(
        &binary("broker"),
        &[
            "--auth",
            users.to_str().expect("UTF-8"),
            "--curve-secret-key",
            server_key.to_str().expect("UTF-8"),
        ],
    );
    let gateway_with = |key: &PathBuf| {
        let mut command = Command::new(GATEWAY);
        command.args(["--listen", "127.0.0.1:0", "--connect", &broker.endpoint]);
        command.args(["--curve-server-key", &server_public, "--curve-key-file"]).arg(key);
        command
    };
    let gateway = BrokerProcess::spawn(gateway_with(&gateway_key));
    let kcat = |args: &[&str], input: &str| {
        let mut kcat = Command::new("kcat");
        kcat.args(["-b", &gateway.endpoint, "-t", "orders"]).args(args);
        run(kcat, input)
    };
    success(&kcat(&["-P"], "one\ntwo\n"), "kcat -P through a CURVE gateway");
    let read = success(&kcat(&["-C", "-e"], ""), "kcat -C through a CURVE gateway");
    assert_eq!(read, "one\ntwo\n");

    let stranger = run(gateway_with(&stranger_key), "");
    assert!(!stranger.status.success(), "{stranger:?}");
    let said = String::from_utf8_lossy(&stranger.stderr);
    assert!(said.contains("refused the gateway's key"), "{said}");
    gateway.interrupt();
    broker.interrupt();
}

/// A client guessing logins gets one checked a second after a few failures, whatever user names
/// it tries (the broker throttles by user name too; these are all different): the gateway
/// throttles by client address.
#[test]
fn failed_logins_from_one_address_are_throttled() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let users = users(dir.path());
    let broker = broker_with(&users);
    let gateway = gateway_for(&broker, &[]);
    let free = 5;
    for i in 0..free {
        assert!(raw_v0_login(&gateway.endpoint, &format!("guess{i}"), "wrong").is_empty());
    }
    let throttled = std::time::Instant::now();
    for i in free..free + 3 {
        assert!(raw_v0_login(&gateway.endpoint, &format!("guess{i}"), "wrong").is_empty());
    }
    let took = throttled.elapsed();
    // Three checks one second apart, the first a second after the last free one.
    assert!(took >= std::time::Duration::from_millis(2_500), "three guesses took {took:?}");
    gateway.interrupt();
    broker.interrupt();
}

/// A raw Kafka connection to `bootstrap` logged in as `user` with `SaslHandshake` v1 and
/// `SaslAuthenticate` v0; the connection, and the error code of the login.
fn raw_login(bootstrap: &str, user: &str, password: &str) -> (std::net::TcpStream, i16) {
    use kafka_protocol::messages::{
        ApiKey, RequestKind, SaslAuthenticateRequest, SaslAuthenticateResponse,
        SaslHandshakeRequest,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let mut stream = std::net::TcpStream::connect(bootstrap).expect("connect");
    stream.set_read_timeout(Some(testkit::STEP)).expect("timeout");
    let mut handshake = SaslHandshakeRequest::default();
    handshake.mechanism = StrBytes::from_static_str("PLAIN");
    common::ask(&mut stream, ApiKey::SaslHandshake, 1, RequestKind::SaslHandshake(handshake));
    let mut login = SaslAuthenticateRequest::default();
    login.auth_bytes = format!("\0{user}\0{password}").into_bytes().into();
    let mut reply =
        common::ask(&mut stream, ApiKey::SaslAuthenticate, 0, RequestKind::SaslAuthenticate(login));
    let code =
        SaslAuthenticateResponse::decode(&mut reply, 0).expect("SaslAuthenticate").error_code;
    (stream, code)
}

/// `CreateTopics` v4 of `topic` on `stream`: the error code.
fn raw_create_topic(stream: &mut std::net::TcpStream, topic: &str) -> i16 {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{
        ApiKey, CreateTopicsRequest, CreateTopicsResponse, RequestKind, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let mut wanted = CreatableTopic::default();
    wanted.name = TopicName(StrBytes::from_string(topic.to_owned()));
    wanted.num_partitions = 1;
    wanted.replication_factor = -1;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![wanted];
    request.timeout_ms = 10_000;
    let mut reply =
        common::ask(stream, ApiKey::CreateTopics, 4, RequestKind::CreateTopics(request));
    CreateTopicsResponse::decode(&mut reply, 4).expect("CreateTopics v4").topics[0].error_code
}

/// Behind the gateway the broker sees only the gateway's address: each request the gateway makes
/// for a Kafka client gives the client's address as `origin`, which the broker's audit log shows
/// beside it; the gateway says each login with that address itself.
#[test]
fn the_brokers_audit_log_names_the_kafka_client_behind_each_action_and_refusal() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = Command::new(binary("broker"))
        .arg("hash-password")
        .env("BROKER_PASSWORD", PASSWORD)
        .output()
        .expect("hash a password");
    let hash = String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned();
    let users = dir.path().join("users.toml");
    let text = format!(
        "[users.ops]\npassword_hash = \"{hash}\"\ntopics = {{ admin = [\"*\"] }}\n\n\
         [users.bob]\npassword_hash = \"{hash}\"\ntopics = {{ consume = [\"*\"] }}\n"
    );
    std::fs::write(&users, text).expect("write the users file");
    let users = users.to_str().expect("UTF-8");
    let broker =
        BrokerProcess::start(&binary("broker"), &["--auth", users, "--log-format", "json"]);
    let gateway = gateway_for(&broker, &["--sasl-plain"]);

    let (mut ops, code) = raw_login(&gateway.endpoint, "ops", PASSWORD);
    assert_eq!(code, 0, "ops logs in");
    let ops_from = ops.local_addr().expect("the connection's own address").to_string();
    assert_eq!(raw_create_topic(&mut ops, "audited"), 0, "ops creates a topic");
    let (mut bob, code) = raw_login(&gateway.endpoint, "bob", PASSWORD);
    assert_eq!(code, 0, "bob logs in");
    let bob_from = bob.local_addr().expect("the connection's own address").to_string();
    assert_ne!(raw_create_topic(&mut bob, "not-bobs"), 0, "bob may not create topics");
    let (_, code) = raw_login(&gateway.endpoint, "bob", "wrong");
    assert_ne!(code, 0, "a wrong password is refused");
    drop((ops, bob));

    let log = gateway.interrupt();
    assert!(log.contains("SASL login accepted") && log.contains(&ops_from), "{log}");
    assert!(log.contains("SASL login refused"), "{log}");
    let stderr = broker.interrupt();
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|event: &serde_json::Value| event["target"] == "audit")
        .collect();
    let by = |user: &str| {
        events
            .iter()
            .find(|e| e["fields"]["op"] == "create_topic" && e["fields"]["user"] == user)
            .unwrap_or_else(|| panic!("no create_topic by {user} in {events:#?}"))
    };
    for (user, from) in [("ops", &ops_from), ("bob", &bob_from)] {
        let said = by(user);
        assert_eq!(said["fields"]["origin"], from.as_str(), "{said}");
        // The gateway's own address, as ZeroMQ gives it (without a port).
        assert_eq!(said["fields"]["peer"], "127.0.0.1", "{said}");
    }
    assert_eq!(by("ops")["fields"]["topic"], "audited");
    assert_eq!(by("bob")["level"], "WARN");
}
