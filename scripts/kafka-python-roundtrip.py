#!/usr/bin/env python3
"""A kafka-python producer and consumer round trip through the broker's Kafka door.

    kafka-python-roundtrip.py BOOTSTRAP TOPIC N [COMPRESSION]

Sends N messages "value-<i>" with keys "key-<i>" (compressed with COMPRESSION: gzip, snappy,
lz4 or zstd, when given), then reads the topic from the beginning and prints each message as
key=value@offset.
"""
import sys

from kafka import KafkaConsumer, KafkaProducer


def main(bootstrap, topic, count, compression=None):
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=compression,
                             linger_ms=5)
    futures = [producer.send(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode())
               for i in range(count)]
    producer.flush(30)
    for future in futures:
        future.get(timeout=30)
    producer.close()

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)
    seen = 0
    for msg in consumer:
        print(f"{msg.key.decode()}={msg.value.decode()}@{msg.offset}")
        seen += 1
        if seen == count:
            break
    consumer.close()
    if seen < count:
        sys.exit(f"only {seen} of {count} messages came back")


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:])
