#!/usr/bin/env python3
"""Throughput through the broker's Kafka door with confluent-kafka (librdkafka): the figures
`scripts/bench.sh --kafka` sets beside `producer perf` and `consumer perf`.

    kafka-perf.py produce BOOTSTRAP TOPIC N [SIZE]   # N messages of SIZE bytes (100), linger.ms=5
    kafka-perf.py consume BOOTSTRAP TOPIC N          # the first N messages of TOPIC
    kafka-perf.py kcat-produce BOOTSTRAP TOPIC N [SIZE]  # the same messages through kcat -P,
                                                         # librdkafka without Python in the loop

Prints one JSON object: op, messages, seconds, records_per_s, mb_per_s (a trailing --json,
as the native perf commands take, changes nothing).
"""
import json
import subprocess
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition


def produce(bootstrap, topic, count, size=100):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "queue.buffering.max.messages": 1_000_000})
    value = b"x" * size
    errors = []

    def delivered(err, _msg):
        if err is not None:
            errors.append(err)

    start = time.perf_counter()
    for _ in range(count):
        while True:
            try:
                producer.produce(topic, value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    if producer.flush(120):
        sys.exit("messages left undelivered")
    seconds = time.perf_counter() - start
    if errors:
        sys.exit(f"{len(errors)} delivery errors, e.g. {errors[0]}")
    return seconds, count * size


def kcat_produce(bootstrap, topic, count, size=100):
    lines = (b"x" * size + b"\n") * count
    start = time.perf_counter()
    subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", topic, "-X", "linger.ms=5",
                    "-X", "queue.buffering.max.messages=1000000"], input=lines, check=True)
    return time.perf_counter() - start, count * size


def consume(bootstrap, topic, count):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "kafka-perf",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen = 0
    size = 0
    start = time.perf_counter()
    while seen < count:
        batch = consumer.consume(10_000, 30.0)
        if not batch:
            sys.exit(f"only {seen} of {count} messages came")
        for msg in batch:
            if msg.error():
                raise KafkaException(msg.error())
            size += len(msg.value())
        seen += len(batch)
    seconds = time.perf_counter() - start
    consumer.close()
    return seconds, size


if __name__ == "__main__":
    if sys.argv[-1] == "--json":
        sys.argv.pop()
    if len(sys.argv) < 5 or sys.argv[1] not in ("produce", "consume", "kcat-produce"):
        sys.exit(__doc__)
    op, bootstrap, topic, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    value_size = int(sys.argv[5]) if len(sys.argv) > 5 else 100
    if op == "produce":
        seconds, size = produce(bootstrap, topic, n, value_size)
    elif op == "kcat-produce":
        seconds, size = kcat_produce(bootstrap, topic, n, value_size)
    else:
        seconds, size = consume(bootstrap, topic, n)
    print(json.dumps({"op": op, "messages": n, "seconds": round(seconds, 3),
                      "records_per_s": round(n / seconds), "mb_per_s": round(size / seconds / 1e6, 1)}))
