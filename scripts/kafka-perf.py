#!/usr/bin/env python3
"""Throughput through the broker's Kafka door with confluent-kafka (librdkafka): the figures
`scripts/bench.sh --kafka` sets beside `producer perf` and `consumer perf`.

    kafka-perf.py produce BOOTSTRAP TOPIC N [SIZE]   # N messages of SIZE bytes (100), linger.ms=5
    kafka-perf.py consume BOOTSTRAP TOPIC N          # the first N messages of TOPIC
    kafka-perf.py kcat-produce BOOTSTRAP TOPIC N [SIZE]  # the same messages through kcat -P,
                                                         # librdkafka without Python in the loop,
                                                         # N lines read from a file
    kafka-perf.py kcat-consume BOOTSTRAP TOPIC N     # the first N messages through kcat -C
    kafka-perf.py idle BOOTSTRAP N GATEWAY_PID       # N idle connections (each answered one
        # ApiVersions): the gateway's resident memory before and after, and a new producer's
        # time to its first acknowledged message, with them open (records_per_s: 1 / that time)
    kafka-perf.py first BOOTSTRAP                    # that time alone, without idle connections

Prints one JSON object: op, messages, seconds, records_per_s, mb_per_s (a trailing --json,
as the native perf commands take, changes nothing).

KAFKA_COMPRESSION sets the producers' compression.type (lz4, ...); KAFKA_SSL_CA (a CA file)
makes every client connect with TLS (security.protocol=SSL).
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition


def settings():
    """The TLS settings from KAFKA_SSL_CA, as a dict."""
    if os.environ.get("KAFKA_SSL_CA"):
        return {"security.protocol": "SSL", "ssl.ca.location": os.environ["KAFKA_SSL_CA"]}
    return {}


def compression():
    """The producers' compression.type from KAFKA_COMPRESSION."""
    return {"compression.type": os.environ.get("KAFKA_COMPRESSION", "none")}


def kcat_settings():
    """settings() and compression() as kcat's -X arguments."""
    out = []
    for key, value in {**settings(), **compression()}.items():
        out += ["-X", f"{key}={value}"]
    return out


def produce(bootstrap, topic, count, size=100):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "queue.buffering.max.messages": 1_000_000, **settings(),
                         **compression()})
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
    # The lines are written to a file first and kcat reads them from it, so that nothing else
    # runs beside kcat while it is timed.
    with tempfile.TemporaryFile() as lines:
        lines.write((b"x" * size + b"\n") * count)
        lines.seek(0)
        start = time.perf_counter()
        subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", topic, "-X", "linger.ms=5",
                        "-X", "queue.buffering.max.messages=1000000", *kcat_settings()],
                       stdin=lines, check=True)
        return time.perf_counter() - start, count * size


def kcat_consume(bootstrap, topic, count):
    start = time.perf_counter()
    out = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning",
                          "-c", str(count), "-e", *kcat_settings()],
                         stdout=subprocess.PIPE, check=True).stdout
    seconds = time.perf_counter() - start
    lines = out.count(b"\n")
    if lines < count:
        sys.exit(f"only {lines} of {count} messages came")
    return seconds, len(out) - count


def rss_kb(pid):
    """A process's resident memory, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


API_VERSIONS_V0 = bytes([0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0xFF, 0xFF])


def first_produce(bootstrap):
    """Seconds from a new producer to its first acknowledged message."""
    start = time.perf_counter()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, **settings()})
    producer.produce("first-produce", b"x")
    if producer.flush(60):
        sys.exit("the first message was not delivered")
    return time.perf_counter() - start


def idle(bootstrap, count, pid):
    host, port = bootstrap.rsplit(":", 1)
    before = rss_kb(pid)
    sockets = []
    for _ in range(count):
        conn = socket.create_connection((host, int(port)))
        conn.sendall(API_VERSIONS_V0)
        size = int.from_bytes(conn.recv(4, socket.MSG_WAITALL), "big")
        conn.recv(size, socket.MSG_WAITALL)
        sockets.append(conn)
    time.sleep(0.5)
    after = rss_kb(pid)
    seconds = first_produce(bootstrap)
    return {"idle_connections": count, "rss_before_kb": before, "rss_after_kb": after,
            "kb_per_connection": round((after - before) / count, 1),
            "first_produce_ms": round(seconds * 1000, 1)}


def consume(bootstrap, topic, count):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "kafka-perf",
                         "enable.auto.commit": False, **settings()})
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
    if sys.argv[1:2] == ["first"] and len(sys.argv) == 3:
        seconds = first_produce(sys.argv[2])
        print(json.dumps({"op": "first", "messages": 1, "seconds": round(seconds, 4),
                          "records_per_s": round(1 / seconds, 2)}))
        sys.exit(0)
    if sys.argv[1:2] == ["idle"] and len(sys.argv) == 5:
        report = idle(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        report["records_per_s"] = round(1000 / report["first_produce_ms"], 2)
        print(json.dumps(report))
        sys.exit(0)
    if len(sys.argv) < 5 or sys.argv[1] not in ("produce", "consume", "kcat-produce",
                                                 "kcat-consume"):
        sys.exit(__doc__)
    op, bootstrap, topic, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    value_size = int(sys.argv[5]) if len(sys.argv) > 5 else 100
    if op == "produce":
        seconds, size = produce(bootstrap, topic, n, value_size)
    elif op == "kcat-produce":
        seconds, size = kcat_produce(bootstrap, topic, n, value_size)
    elif op == "kcat-consume":
        seconds, size = kcat_consume(bootstrap, topic, n)
    else:
        seconds, size = consume(bootstrap, topic, n)
    print(json.dumps({"op": op, "messages": n, "seconds": round(seconds, 3),
                      "records_per_s": round(n / seconds), "mb_per_s": round(size / seconds / 1e6, 1)}))
