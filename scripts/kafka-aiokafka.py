#!/usr/bin/env python3
"""An aiokafka producer and group consumer through the broker's Kafka door, as aiokafka's own
examples write them.

    kafka-aiokafka.py BOOTSTRAP TOPIC GROUP N [COMPRESSION]

Sends N messages "value-<i>" with keys "key-<i>" (compressed with COMPRESSION when given), then
a member of GROUP reads N messages from the earliest offset, commits, and prints each as
key=value@offset.
"""
import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def main(bootstrap, topic, group, count, compression=None):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=compression,
                                linger_ms=5)
    await producer.start()
    try:
        sends = [await producer.send(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode())
                 for i in range(count)]
        await asyncio.wait_for(asyncio.gather(*sends), 30)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen = 0
    try:
        while seen < count:
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            for messages in batches.values():
                for msg in messages:
                    print(f"{msg.key.decode()}={msg.value.decode()}@{msg.offset}")
                    seen += 1
        await consumer.commit()
    finally:
        await consumer.stop()


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:]))
