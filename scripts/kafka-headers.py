#!/usr/bin/env python3
"""Record headers through the broker's Kafka door with confluent-kafka, as a Kafka user sends
and reads them.

    kafka-headers.py produce BOOTSTRAP TOPIC
        # sends "with" (key "k") with headers [("trace", "t-1"), ("trace", None),
        # ("content-type", "")], then "without" with none; prints "produced 2"
    kafka-headers.py consume BOOTSTRAP TOPIC N
        # reads N messages of partition 0 from its start and prints each as one JSON line,
        # {"offset": .., "value": .., "headers": [[NAME, VALUE or null], ...] or null}
"""
import json
import sys

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING


def produce(bootstrap, topic):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "message.timeout.ms": 10000})
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(err)

    headers = [("trace", b"t-1"), ("trace", None), ("content-type", b"")]
    producer.produce(topic, key="k", value="with", headers=headers, on_delivery=delivered)
    producer.produce(topic, value="without", on_delivery=delivered)
    left = producer.flush(30)
    if left or failures:
        sys.exit(f"{left} messages not delivered; errors: {failures[:3]}")
    print("produced 2")


def consume(bootstrap, topic, count):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "headers",
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
            headers = msg.headers()
            if headers is not None:
                headers = [[name, None if value is None else value.decode()]
                           for name, value in headers]
            print(json.dumps({"offset": msg.offset(), "value": msg.value().decode(),
                              "headers": headers}), flush=True)
            seen += 1
    finally:
        consumer.close()


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "produce" and len(sys.argv) == 4:
        produce(sys.argv[2], sys.argv[3])
    elif command == "consume" and len(sys.argv) == 5:
        consume(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
