#!/usr/bin/env python3
"""Topic administration through the broker's Kafka door with kafka-python's admin client.

    kafka-python-admin.py BOOTSTRAP create TOPIC [RETENTION_MS]
    kafka-python-admin.py BOOTSTRAP create3 TOPIC      # asks for 3 partitions, as setup code does
    kafka-python-admin.py BOOTSTRAP grow TOPIC N       # create_partitions() to N in all
    kafka-python-admin.py BOOTSTRAP delete TOPIC
"""
import sys

from kafka.admin import KafkaAdminClient, NewPartitions, NewTopic


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
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    main(*sys.argv[1:])
