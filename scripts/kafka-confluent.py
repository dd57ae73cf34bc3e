#!/usr/bin/env python3
"""Produce and consume through the broker's Kafka door with confluent-kafka, written as a Kafka
tutorial writes them: nothing but the bootstrap address says this is not Kafka.

    kafka-confluent.py produce BOOTSTRAP TOPIC N     # sends N lines "message-<i>", keys "key-<i>"
    kafka-confluent.py consume BOOTSTRAP TOPIC N     # prints N messages from the start, as key=value@offset

The door has no consumer groups yet, so the consumer assigns partition 0 from the beginning
instead of subscribing with a group.
"""
import sys

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition


def produce(bootstrap, topic, count):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
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


def consume(bootstrap, topic, count):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tutorial",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
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


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] not in ("produce", "consume"):
        sys.exit(__doc__)
    {"produce": produce, "consume": consume}[sys.argv[1]](sys.argv[2], sys.argv[3], int(sys.argv[4]))
