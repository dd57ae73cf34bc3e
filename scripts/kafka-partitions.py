#!/usr/bin/env python3
"""Partitions through the broker's Kafka door with confluent-kafka, as a Kafka user works with
them: an AdminClient makes and grows topics, producers choose partitions (by number, or by key
with Kafka's murmur2), and the members of a group share a topic's partitions through the
client's own assignor.

    kafka-partitions.py create BOOTSTRAP TOPIC N
        # create_topics() with N partitions: prints "created" or "refused ERROR", then
        # "partitions COUNT" from the topic's metadata (when it exists)
    kafka-partitions.py grow BOOTSTRAP TOPIC N
        # create_partitions() to N in all: prints "grown" or "refused ERROR", then
        # "partitions COUNT"
    kafka-partitions.py produce BOOTSTRAP TOPIC MESSAGE...
        # a producer with partitioner murmur2_random; MESSAGE is KEY=VALUE (placed by its key)
        # or P:VALUE (sent to partition P); prints "delivered PARTITION OFFSET VALUE" for each,
        # in the order given
    kafka-partitions.py member BOOTSTRAP TOPIC GROUP STRATEGY
        # a member of GROUP with partition.assignment.strategy STRATEGY (range, roundrobin,
        # cooperative-sticky) and a 6 s session timeout, committing each message before it
        # prints it: "assignment P,P,..." (its partitions, whenever they change) and
        # "message PARTITION OFFSET VALUE" (after "uncommitted PARTITION OFFSET ERROR" when
        # the commit failed); on SIGTERM or SIGINT it closes (leaving the
        # group) and prints "closed"; it stops by itself after 120 s

KAFKA_IDEMPOTENCE=1 makes the producer idempotent (enable.idempotence=true), whose sequence
numbers run per partition.
"""
import os
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic


def settings(bootstrap):
    """An AdminClient's: its metadata requests must not create the topics they look up."""
    return {"bootstrap.servers": bootstrap, "allow.auto.create.topics": False}


def count(admin, topic):
    """The partition count the topic's metadata gives, when it exists."""
    found = admin.list_topics(topic, timeout=10).topics.get(topic)
    if found is not None and found.error is None:
        print(f"partitions {len(found.partitions)}", flush=True)


def outcome(future, done):
    """Prints `done`, or "refused NAME" with the error's name."""
    try:
        future.result()
        print(done, flush=True)
    except KafkaException as e:
        print(f"refused {e.args[0].name()}", flush=True)


def create(bootstrap, topic, partitions):
    admin = AdminClient(settings(bootstrap))
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1)], request_timeout=10)
    outcome(futures[topic], "created")
    count(admin, topic)


def grow(bootstrap, topic, partitions):
    admin = AdminClient(settings(bootstrap))
    futures = admin.create_partitions([NewPartitions(topic, partitions)], request_timeout=10)
    outcome(futures[topic], "grown")
    count(admin, topic)


def produce(bootstrap, topic, messages):
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                         "linger.ms": 5, "message.timeout.ms": 10000,
                         "enable.idempotence": os.environ.get("KAFKA_IDEMPOTENCE") == "1"})
    results = [None] * len(messages)

    def delivered(index):
        def report(err, msg):
            results[index] = err or (msg.partition(), msg.offset(), msg.value().decode())
        return report

    for i, message in enumerate(messages):
        if "=" in message:
            key, value = message.split("=", 1)
            producer.produce(topic, key=key, value=value, on_delivery=delivered(i))
        else:
            partition, value = message.split(":", 1)
            producer.produce(topic, value=value, partition=int(partition),
                             on_delivery=delivered(i))
        producer.poll(0)
    left = producer.flush(30)
    if left:
        sys.exit(f"{left} messages not delivered")
    for result in results:
        if not isinstance(result, tuple):
            sys.exit(f"not delivered: {result}")
        print("delivered %d %d %s" % result)


def member(bootstrap, topic, group, strategy):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "partition.assignment.strategy": strategy,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                         "topic.metadata.refresh.interval.ms": 1000})
    held = set()
    stopping = []
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda *_: stopping.append(True))

    def show():
        print("assignment " + ",".join(str(p) for p in sorted(held)), flush=True)

    def assigned(_consumer, partitions):
        held.update(p.partition for p in partitions)
        show()

    def revoked(_consumer, partitions):
        held.difference_update(p.partition for p in partitions)
        show()

    consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked, on_lost=revoked)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not stopping:
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        try:
            consumer.commit(message=msg, asynchronous=False)
        except KafkaException as e:
            # A commit a rebalance fenced: the message is read again by whoever takes over.
            print(f"uncommitted {msg.partition()} {msg.offset()} {e.args[0].name()}", flush=True)
        print(f"message {msg.partition()} {msg.offset()} {msg.value().decode()}", flush=True)
    consumer.close()
    print("closed", flush=True)


if __name__ == "__main__":
    command, args = sys.argv[1:2], sys.argv[2:]
    if command == ["create"] and len(args) == 3:
        create(args[0], args[1], int(args[2]))
    elif command == ["grow"] and len(args) == 3:
        grow(args[0], args[1], int(args[2]))
    elif command == ["produce"] and len(args) >= 3:
        produce(args[0], args[1], args[2:])
    elif command == ["member"] and len(args) == 4:
        member(*args)
    else:
        sys.exit(__doc__)
