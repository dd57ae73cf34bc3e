//! The JDBC sink against a real PostgreSQL: the tutorial's table and config, orders produced
//! with the schema envelope, `connect` and the broker killed mid-stream, bad records.

mod common;

use std::time::Duration;

use common::{orders, produce, tutorial_config, wait_for, Broker, Connect, Postgres, ORDER_SCHEMA};

/// The tutorial's table, made by hand.
const TABLE: &str = r#"CREATE TABLE demo5_cod_and_chips ("order_time" bigint primary key, "count" integer not null, "order" text[] not null)"#;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn the_tutorials_orders_arrive_exactly_once_with_upsert_through_kills() {
    let pg = Postgres::start();
    pg.client().batch_execute(TABLE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&dir.path().join("data"));
    let schema = dir.path().join("order-schema.json");
    std::fs::write(&schema, ORDER_SCHEMA).unwrap();
    let config = dir.path().join("pg_sink.json");
    std::fs::write(
        &config,
        tutorial_config("sink_fish_chips_json_schema", &pg.jdbc_url(), "upsert", ""),
    )
    .unwrap();
    let offsets = dir.path().join("connect.offsets");
    let produce_orders = |endpoint: &str, from, to| {
        let schema = schema.to_str().unwrap();
        produce(
            endpoint,
            &["--value-schema", schema, "--batch", "50", "demo5-cod-and-chips"],
            &orders(from, to),
        );
    };
    let rows = || pg.count("SELECT count(*) FROM demo5_cod_and_chips");

    let connect = Connect::start(&broker.endpoint, &[&config], &offsets, false);
    produce_orders(&broker.endpoint, 0, 400);
    wait_for("the first rows", MINUTE, || rows() >= 100);
    // A crash of connect: what it wrote and did not acknowledge comes again.
    connect.kill();
    let connect = Connect::start(&broker.endpoint, &[&config], &offsets, false);
    produce_orders(&broker.endpoint, 400, 700);
    wait_for("rows after connect's restart", MINUTE, || rows() >= 450);
    // A crash of the broker: connect waits for it and goes on.
    broker.kill();
    broker.restart();
    produce_orders(&broker.endpoint, 700, 1000);
    wait_for("all 1,000 orders", MINUTE, || rows() >= 1000);
    let committed = || {
        common::consume(
            &broker.endpoint,
            &["groups", "--json", "connect-sink_fish_chips_json_schema"],
        )
    };
    wait_for("the group to acknowledge everything", MINUTE, || {
        committed().contains("\"committed_offset\":1000")
    });
    connect.stop();
    assert_eq!(rows(), 1000);
    assert_eq!(pg.count("SELECT count(DISTINCT order_time) FROM demo5_cod_and_chips"), 1000);
    assert_eq!(pg.count("SELECT sum(count) FROM demo5_cod_and_chips"), 2500);
    assert_eq!(
        pg.count(r#"SELECT count(*) FROM demo5_cod_and_chips WHERE "order" = ARRAY['cod', 'chips', 'mushy peas', 'curry sauce']"#),
        1000
    );
}

#[test]
fn insert_mode_delivers_every_order_at_least_once_when_connect_is_killed() {
    let pg = Postgres::start();
    pg.client()
        .batch_execute(
            r#"CREATE TABLE demo5_cod_and_chips ("order_time" bigint not null, "count" integer not null, "order" text[] not null)"#,
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"));
    let schema = dir.path().join("order-schema.json");
    std::fs::write(&schema, ORDER_SCHEMA).unwrap();
    let config = dir.path().join("pg_sink.json");
    std::fs::write(&config, tutorial_config("sink_insert", &pg.jdbc_url(), "insert", "")).unwrap();
    let offsets = dir.path().join("connect.offsets");
    let schema = schema.to_str().unwrap();
    let distinct = || pg.count("SELECT count(DISTINCT order_time) FROM demo5_cod_and_chips");

    let connect = Connect::start(&broker.endpoint, &[&config], &offsets, false);
    produce(
        &broker.endpoint,
        &["--value-schema", schema, "--batch", "50", "demo5-cod-and-chips"],
        &orders(0, 500),
    );
    wait_for("the first rows", MINUTE, || distinct() >= 100);
    connect.kill();
    let connect = Connect::start(&broker.endpoint, &[&config], &offsets, false);
    produce(
        &broker.endpoint,
        &["--value-schema", schema, "demo5-cod-and-chips"],
        &orders(500, 1000),
    );
    wait_for("all 1,000 orders", MINUTE, || distinct() == 1000);
    connect.stop();
    assert!(pg.count("SELECT count(*) FROM demo5_cod_and_chips") >= 1000);
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_or_stop_the_connector() {
    let pg = Postgres::start();
    pg.client()
        .batch_execute(&format!("{TABLE}; ALTER TABLE demo5_cod_and_chips ADD CHECK (count > 0)"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"));
    let schema = dir.path().join("order-schema.json");
    std::fs::write(&schema, ORDER_SCHEMA).unwrap();
    let schema = schema.to_str().unwrap();
    let tolerant = dir.path().join("tolerant.json");
    let dlq = r#", "errors.tolerance": "all", "errors.deadletterqueue.topic.name": "orders-dlq""#;
    std::fs::write(&tolerant, tutorial_config("tolerant", &pg.jdbc_url(), "upsert", dlq)).unwrap();
    // A second connector on the same topic with the default errors.tolerance=none, writing
    // to a table of its own.
    pg.client()
        .batch_execute(r#"CREATE TABLE strict ("order_time" bigint primary key, "count" integer not null, "order" text[] not null)"#)
        .unwrap();
    let strict = dir.path().join("strict.json");
    std::fs::write(
        &strict,
        tutorial_config("strict", &pg.jdbc_url(), "upsert", r#", "table.name.format": "strict""#),
    )
    .unwrap();
    let offsets = dir.path().join("connect.offsets");

    let topic = "demo5-cod-and-chips";
    produce(&broker.endpoint, &["--value-schema", schema, topic], &orders(0, 3));
    // No envelope, a count that breaks the table's check, a count the schema refuses.
    produce(&broker.endpoint, &[topic], "{\"order_time\": 5, \"count\": 1, \"order\": []}\n");
    let broken = "{\"order_time\": 1700000000006, \"count\": -1, \"order\": [\"cod\"]}\n";
    produce(&broker.endpoint, &["--value-schema", schema, topic], broken);
    let envelope = format!(
        "{{\"schema\": {}, \"payload\": {{\"order_time\": 7, \"count\": \"many\", \"order\": []}}}}\n",
        ORDER_SCHEMA.replace('\n', " ")
    );
    produce(&broker.endpoint, &[topic], &envelope);
    produce(&broker.endpoint, &["--value-schema", schema, topic], &orders(10, 13));

    // The consumer shows the payload alone, and the envelope without the flag.
    let first =
        common::consume(&broker.endpoint, &["fetch", topic, "--max", "1", "--unwrap-schema"]);
    assert_eq!(
        first,
        "0\t{\"count\":1,\"order\":[\"cod\",\"chips\",\"mushy peas\",\"curry sauce\"],\"order_time\":1700000000000}\n"
    );
    let whole = common::consume(&broker.endpoint, &["fetch", topic, "--max", "1"]);
    assert!(whole.contains("\"schema\":{") && whole.contains("\"payload\":{"), "{whole}");
    let connect = Connect::start(&broker.endpoint, &[&tolerant, &strict], &offsets, true);
    wait_for("the good orders", MINUTE, || {
        pg.count("SELECT count(*) FROM demo5_cod_and_chips") == 6
    });
    let letters = || {
        common::consume(&broker.endpoint, &["fetch", "orders-dlq", "--unwrap-schema"])
            .lines()
            .map(|l| l.split_once('\t').map(|(_, v)| v.to_owned()).unwrap_or_default())
            .map(|v| serde_json::from_str::<serde_json::Value>(&v).expect("a JSON letter"))
            .collect::<Vec<_>>()
    };
    wait_for("three dead letters", MINUTE, || letters().len() >= 3);
    let letters = letters();
    assert_eq!(letters.len(), 3, "{letters:?}");
    let reasons: Vec<&str> = letters.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].contains("not in the schema envelope"), "{reasons:?}");
    assert!(reasons[1].contains("check constraint"), "{reasons:?}");
    assert!(reasons[2].contains("payload.count"), "{reasons:?}");
    let offsets_of: Vec<u64> = letters.iter().map(|l| l["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets_of, [3, 4, 5]);
    assert_eq!(letters[0]["topic"], topic);
    assert!(letters[0]["value"].as_str().unwrap().contains("\"order_time\": 5"));
    let status = connect.get_json("/connectors/tolerant/status");
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");
    assert_eq!(status["tasks"][0]["records_rejected"], 3, "{status}");

    // errors.tolerance=none: the connector stops at the first bad record, says which, and
    // writes nothing of its batch.
    wait_for("the strict connector to fail", MINUTE, || {
        connect.get_json("/connectors/strict/status")["tasks"][0]["state"] == "FAILED"
    });
    let status = connect.get_json("/connectors/strict/status");
    let trace = status["tasks"][0]["trace"].as_str().unwrap();
    assert!(trace.contains("offset 3") && trace.contains("schema envelope"), "{trace}");
    assert_eq!(pg.count("SELECT count(*) FROM strict"), 0);
    connect.stop();
}

#[test]
fn sslmode_require_encrypts_and_a_database_down_is_waited_for() {
    let pg = Postgres::start_with_tls();
    pg.client().batch_execute(TABLE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"));
    let schema = dir.path().join("order-schema.json");
    std::fs::write(&schema, ORDER_SCHEMA).unwrap();
    let config = dir.path().join("pg_sink.json");
    let text = tutorial_config("tls", &pg.jdbc_url(), "upsert", r#", "retry.backoff.ms": "200""#)
        .replace("sslmode=prefer", "sslmode=require");
    std::fs::write(&config, text).unwrap();
    let offsets = dir.path().join("connect.offsets");
    let schema = schema.to_str().unwrap();
    let rows = || pg.count("SELECT count(*) FROM demo5_cod_and_chips");

    // The database is down when the orders come: the status says so, nothing is acknowledged.
    pg.halt();
    let connect = Connect::start(&broker.endpoint, &[&config], &offsets, true);
    produce(&broker.endpoint, &["--value-schema", schema, "demo5-cod-and-chips"], &orders(0, 200));
    wait_for("the status to say the database is down", MINUTE, || {
        let status = connect.get_json("/connectors/tls/status");
        status["tasks"][0]["waiting"].as_str().is_some_and(|w| w.contains("destination"))
    });
    let group = common::consume(&broker.endpoint, &["groups", "--json", "connect-tls"]);
    assert!(group.contains("\"committed_offset\":0"), "{group}");
    pg.resume();
    wait_for("the orders once the database is back", MINUTE, || rows() == 200);
    let encrypted = pg.count(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE application_name = 'connect' AND ssl",
    );
    assert_eq!(encrypted, 1);
    let status = connect.get_json("/connectors/tls/status");
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");
    connect.stop();
}

/// Produces 1,000 orders in the schema envelope through the Kafka door, as the tutorial's
/// confluent-kafka producer does.
const CONFLUENT_PRODUCER: &str = r#"
import json, sys
from confluent_kafka import Producer
bootstrap, schema = sys.argv[1], json.loads(sys.argv[2])
producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
for i in range(1000):
    order = {"order_time": 1700000000000 + i, "count": 1 + i % 4, "order": ["cod", "chips"]}
    producer.produce("demo5-cod-and-chips", json.dumps({"schema": schema, "payload": order}))
assert producer.flush(30) == 0, "not every order was delivered"
"#;

#[test]
fn orders_from_confluent_kafka_through_the_gateway_arrive_exactly_once() {
    let pg = Postgres::start();
    pg.client().batch_execute(TABLE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("data"));
    let mut gateway = std::process::Command::new(common::binary("kafka-gateway"));
    gateway.args(["--listen", "127.0.0.1:0", "--connect", &broker.endpoint]);
    let gateway = testkit::BrokerProcess::spawn(gateway);
    let config = dir.path().join("pg_sink.json");
    std::fs::write(&config, tutorial_config("from_kafka", &pg.jdbc_url(), "upsert", "")).unwrap();
    let connect = Connect::start(&broker.endpoint, &[&config], &dir.path().join("offsets"), false);
    let out = std::process::Command::new("python3")
        .args(["-c", CONFLUENT_PRODUCER, &gateway.endpoint, ORDER_SCHEMA])
        .output()
        .expect("python3 runs (scripts/test.sh installs what it needs)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'confluent_kafka'"),
        "confluent-kafka is missing: scripts/test.sh installs it (pip install -r scripts/requirements.txt)"
    );
    assert!(out.status.success(), "the confluent-kafka producer failed: {stderr}");
    wait_for("1,000 orders", MINUTE, || {
        pg.count("SELECT count(*) FROM demo5_cod_and_chips") == 1000
    });
    connect.stop();
    assert_eq!(pg.count("SELECT count(DISTINCT order_time) FROM demo5_cod_and_chips"), 1000);
    gateway.interrupt();
}
