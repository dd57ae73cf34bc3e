#!/usr/bin/env python3
"""Produce and consume through the broker's Kafka door with confluent-kafka, written as a Kafka
tutorial writes them: nothing but the bootstrap address says this is not Kafka.

    kafka-confluent.py produce BOOTSTRAP TOPIC N     # sends N lines "message-<i>", keys "key-<i>"
    kafka-confluent.py consume BOOTSTRAP TOPIC GROUP N
        # a member of GROUP prints the next N messages as key=value@offset, committing as it
        # goes (auto commit) and on close; a second run in the same group goes on from there
    kafka-confluent.py list BOOTSTRAP                # list_topics() with no topic, from an
        # AdminClient, a Producer and a Consumer: prints each topic name once per client
    kafka-confluent.py regex BOOTSTRAP PATTERN GROUP N
        # a member of GROUP subscribed to a regex ("^orders-.*") prints N messages as
        # topic:value, sorted
    kafka-confluent.py transactional BOOTSTRAP
        # init_transactions() of a producer with a transactional.id: prints "initialised", or
        # "refused SECONDS ERROR"
    kafka-confluent.py times BOOTSTRAP TOPIC MS
        # offsets_for_times() of partition 0 at MS: prints "offset N", then the message there
        # as "TYPE TIMESTAMP VALUE" (TYPE: create or log-append)
    kafka-confluent.py groups BOOTSTRAP GROUP
        # AdminClient: prints "listed NAME STATE" for each group of list_consumer_groups(), then
        # "described NAME STATE" and "member CLIENT_ID TOPIC:PARTITIONS" from
        # describe_consumer_groups([GROUP])
    kafka-confluent.py delete-groups BOOTSTRAP GROUP...
        # AdminClient: delete_consumer_groups(GROUPS); prints "deleted NAME" or "refused NAME
        # ERROR_NAME" for each
    kafka-confluent.py member BOOTSTRAP TOPIC GROUP
        # a member of GROUP with a 6 s session timeout that prints "assigned N" (N partitions)
        # at each assignment and "message VALUE" for each message, until killed (at most 120 s);
        # KAFKA_OFFSET_RESET sets its auto.offset.reset (earliest unless set)

With KAFKA_USER and KAFKA_PASSWORD set, both log in with SASL/PLAIN (for a gateway started
with --sasl-plain in front of a broker with --auth). With KAFKA_SSL_CA set (a CA file), they
connect with TLS (security.protocol=SSL, or SASL_SSL with a login); KAFKA_SSL_CERT and
KAFKA_SSL_KEY give a client certificate. KAFKA_COMPRESSION sets the producer's compression.type
(gzip, snappy, lz4, zstd); KAFKA_IDEMPOTENCE=1 sets enable.idempotence=true.
"""
import os
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient


def login():
    """The SASL settings, when KAFKA_USER is set, and the TLS ones, when KAFKA_SSL_CA is (with
    KAFKA_SSL_CERT and KAFKA_SSL_KEY for a client certificate)."""
    settings = {}
    tls = bool(os.environ.get("KAFKA_SSL_CA"))
    if tls:
        settings.update({"security.protocol": "SSL",
                         "ssl.ca.location": os.environ["KAFKA_SSL_CA"]})
        if os.environ.get("KAFKA_SSL_CERT"):
            settings.update({"ssl.certificate.location": os.environ["KAFKA_SSL_CERT"],
                             "ssl.key.location": os.environ["KAFKA_SSL_KEY"]})
    if os.environ.get("KAFKA_USER"):
        settings.update({"security.protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
                         "sasl.mechanism": "PLAIN",
                         "sasl.username": os.environ["KAFKA_USER"],
                         "sasl.password": os.environ.get("KAFKA_PASSWORD", "")})
    return settings


def produce(bootstrap, topic, count):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "message.timeout.ms": 10000,
                         "compression.type": os.environ.get("KAFKA_COMPRESSION", "none"),
                         "enable.idempotence": os.environ.get("KAFKA_IDEMPOTENCE") == "1",
                         **login()})
    failures = []

    def delivered(err, msg):
        if err is not None:
            failures.append(err)

    for i in range(count):
        producer.produce(topic, key=f"key-{i}", value=f"message-{i}", on_delivery=delivered)
        producer.poll(0)
    left = producer.flush(30)
    if left or failures:
        sys.exit(f"{left} messages not delivered; errors: {failures[:3]}")
    print(f"produced {count}")


def consume(bootstrap, topic, group, count):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": True, **login()})
    consumer.subscribe([topic])
    seen = 0
    try:
        while seen < count:
            msg = consumer.poll(30.0)
            if msg is None:
                sys.exit(f"only {seen} of {count} messages came")
            if msg.error():
                continue
            print(f"{msg.key().decode()}={msg.value().decode()}@{msg.offset()}")
            seen += 1
    finally:
        consumer.close()


def list_all(bootstrap):
    clients = [AdminClient({"bootstrap.servers": bootstrap, **login()}),
               Producer({"bootstrap.servers": bootstrap, **login()}),
               Consumer({"bootstrap.servers": bootstrap, "group.id": "lister", **login()})]
    for client in clients:
        names = sorted(client.list_topics(timeout=10).topics)
        print(type(client).__name__, " ".join(names))
    clients[2].close()


def regex(bootstrap, pattern, group, count):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 1000,
                         **login()})
    consumer.subscribe([pattern])
    seen = []
    try:
        while len(seen) < count:
            msg = consumer.poll(30.0)
            if msg is None:
                sys.exit(f"only {len(seen)} of {count} messages came: {seen}")
            if msg.error():
                continue
            seen.append(f"{msg.topic()}:{msg.value().decode()}")
    finally:
        consumer.close()
    print("\n".join(sorted(seen)))


def transactional(bootstrap):
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "tx-1", **login()})
    start = time.monotonic()
    try:
        producer.init_transactions(30)
        print("initialised")
    except Exception as e:  # pylint: disable=broad-except
        print(f"refused {time.monotonic() - start:.1f} {e}")


def times(bootstrap, topic, ms):
    from confluent_kafka import TopicPartition, TIMESTAMP_LOG_APPEND_TIME
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "times",
                         "enable.auto.commit": False, **login()})
    found = consumer.offsets_for_times([TopicPartition(topic, 0, ms)], timeout=10)[0]
    if found.error:
        sys.exit(f"offsets_for_times: {found.error}")
    print(f"offset {found.offset}", flush=True)
    if found.offset >= 0:
        consumer.assign([found])
        msg = consumer.poll(30.0)
        if msg is None or msg.error():
            sys.exit(f"no message at {found.offset}: {msg and msg.error()}")
        kind, stamp = msg.timestamp()
        kind = "log-append" if kind == TIMESTAMP_LOG_APPEND_TIME else "create"
        print(f"{kind} {stamp} {msg.value().decode()}")
    consumer.close()


def groups(bootstrap, group):
    admin = AdminClient({"bootstrap.servers": bootstrap, **login()})
    listed = admin.list_consumer_groups(request_timeout=10).result()
    for g in sorted(listed.valid, key=lambda g: g.group_id):
        print(f"listed {g.group_id} {g.state.name}")
    described = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    print(f"described {described.group_id} {described.state.name}")
    for m in described.members:
        parts = ",".join(f"{p.topic}:{p.partition}" for p in m.assignment.topic_partitions)
        print(f"member {m.client_id} {parts}")


def delete_groups(bootstrap, names):
    admin = AdminClient({"bootstrap.servers": bootstrap, **login()})
    for name, future in admin.delete_consumer_groups(names, request_timeout=10).items():
        try:
            future.result()
            print(f"deleted {name}")
        except KafkaException as e:
            print(f"refused {name} {e.args[0].name()}")


def member(bootstrap, topic, group):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "client.id": os.environ.get("KAFKA_CLIENT_ID", "member"),
                         "auto.offset.reset": os.environ.get("KAFKA_OFFSET_RESET", "earliest"),
                         "session.timeout.ms": 6000,
                         "heartbeat.interval.ms": 500, **login()})

    def assigned(_consumer, partitions):
        print(f"assigned {len(partitions)}", flush=True)

    consumer.subscribe([topic], on_assign=assigned)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            print(f"message {msg.value().decode()}", flush=True)
    consumer.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["produce"] and len(sys.argv) == 5:
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1:2] == ["consume"] and len(sys.argv) == 6:
        consume(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif sys.argv[1:2] == ["member"] and len(sys.argv) == 5:
        member(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1:2] == ["transactional"] and len(sys.argv) == 3:
        transactional(sys.argv[2])
    elif sys.argv[1:2] == ["times"] and len(sys.argv) == 5:
        times(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1:2] == ["delete-groups"] and len(sys.argv) >= 4:
        delete_groups(sys.argv[2], sys.argv[3:])
    elif sys.argv[1:2] == ["groups"] and len(sys.argv) == 4:
        groups(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["list"] and len(sys.argv) == 3:
        list_all(sys.argv[2])
    elif sys.argv[1:2] == ["regex"] and len(sys.argv) == 6:
        regex(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        sys.exit(__doc__)
