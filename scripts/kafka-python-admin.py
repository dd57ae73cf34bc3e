#!/usr/bin/env python3
"""Topic administration through the broker's Kafka door with kafka-python's admin client.

    kafka-python-admin.py BOOTSTRAP create TOPIC [RETENTION_MS]
    kafka-python-admin.py BOOTSTRAP create3 TOPIC      # asks for 3 partitions, as setup code does
    kafka-python-admin.py BOOTSTRAP grow TOPIC N       # create_partitions() to N in all
    kafka-python-admin.py BOOTSTRAP delete TOPIC
    kafka-python-admin.py BOOTSTRAP delete-offsets GROUP TOPIC:P[,P...]...
        # delete_group_offsets(): prints "TOPIC:P ERROR_NAME" for each partition (NoError when
        # deleted), or "refused ERROR_NAME" for an error of the whole request
    kafka-python-admin.py BOOTSTRAP offsets GROUP TOPIC:P[,P...]...
        # list_group_offsets(): prints "TOPIC:P OFFSET" (-1: none committed) for each

With KAFKA_USER and KAFKA_PASSWORD set, the group actions log in with SASL/PLAIN.
"""
import os
import sys

from kafka import TopicPartition
from kafka.admin import KafkaAdminClient, NewPartitions, NewTopic
from kafka.errors import KafkaError


def partitions(specs):
    """TopicPartitions from arguments TOPIC:P[,P...]."""
    named = []
    for spec in specs:
        topic, numbers = spec.rsplit(":", 1)
        named.extend(TopicPartition(topic, int(p)) for p in numbers.split(","))
    return named


def login():
    """The SASL/PLAIN settings, when KAFKA_USER is set."""
    if not os.environ.get("KAFKA_USER"):
        return {}
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
            "sasl_plain_username": os.environ["KAFKA_USER"],
            "sasl_plain_password": os.environ.get("KAFKA_PASSWORD", "")}


def groups(bootstrap, action, group, specs):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **login())
    try:
        if action == "delete-offsets":
            try:
                results = admin.delete_group_offsets(group, partitions(specs))
            except KafkaError as e:
                print(f"refused {type(e).__name__}")
                return
            for tp, error in sorted(results.items()):
                print(f"{tp.topic}:{tp.partition} {error.__name__}")
        else:
            offsets = admin.list_group_offsets({group: partitions(specs)})[group]
            for tp, found in sorted(offsets.items()):
                print(f"{tp.topic}:{tp.partition} {found.offset}")
    finally:
        admin.close()


def main(bootstrap, action, topic, retention_ms=None):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        if action in ("create", "create3"):
            configs = {"retention.ms": retention_ms} if retention_ms else None
            partitions = 3 if action == "create3" else 1
            admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                          topic_configs=configs)])
            print(f"created {topic}")
        elif action == "grow" and retention_ms:
            admin.create_partitions({topic: NewPartitions(int(retention_ms))})
            print(f"grown {topic}")
        elif action == "delete":
            admin.delete_topics([topic])
            print(f"deleted {topic}")
        else:
            sys.exit(__doc__)
    finally:
        admin.close()


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[2] in ("delete-offsets", "offsets"):
        groups(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) in (4, 5):
        main(*sys.argv[1:])
    else:
        sys.exit(__doc__)
