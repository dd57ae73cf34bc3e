#!/usr/bin/env python3
"""Whether a Kafka user without the right on a group can join it or disturb its members, with
confluent-kafka through a gateway started with --sasl-plain:

    kafka-group-rights.py BOOTSTRAP TOPIC GROUP MEMBER INTRUDER PASSWORD

MEMBER joins GROUP on TOPIC and prints "member assigned" once it has its partition. INTRUDER
then subscribes in the same group: prints "intruder refused CODE" for the error it gets (or
"intruder assigned" if it got in), and "intruder offsets refused CODE" (or "intruder offsets
N") for committed() of the group; then, for each user, "USER lists G1,G2" from
list_consumer_groups() and "USER describes N members" (or "USER describe refused CODE") from
describe_consumer_groups([GROUP]). MEMBER goes on polling, with heartbeats every 300 ms, for as
long again as the intruder tried plus 3 s, and prints "member revoked" at each rebalance it is
told of before it closes, then "member committed N" for its own committed(). Each user's list_topics() is printed
as "USER sees T1,T2". At most 60 s in all.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient


def config(bootstrap, user, password, group):
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": password,
        "group.id": group,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 300,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }


def main():
    bootstrap, topic, group, member_name, intruder_name, password = sys.argv[1:7]
    deadline = time.monotonic() + 60
    assigned = []
    closing = []
    member = Consumer(config(bootstrap, member_name, password, group))
    member.subscribe(
        [topic],
        on_assign=lambda c, parts: assigned.append(len(parts)),
        on_revoke=lambda c, parts: closing or print("member revoked", flush=True),
    )
    while not assigned and time.monotonic() < deadline:
        member.poll(0.1)
    if not assigned:
        print("member never assigned", flush=True)
        return 1
    print("member assigned", flush=True)
    for name in (member_name, intruder_name):
        looker = Consumer(config(bootstrap, name, password, group + "-lister"))
        names = sorted(looker.list_topics(timeout=10).topics)
        print(f"{name} sees {','.join(names)}", flush=True)
        looker.close()

    errors = []
    intruder_config = config(bootstrap, intruder_name, password, group)
    intruder_config["error_cb"] = errors.append
    intruder = Consumer(intruder_config)
    got_in = []
    intruder.subscribe([topic], on_assign=lambda c, parts: got_in.append(len(parts)))
    began = time.monotonic()
    outcome = None
    while outcome is None and time.monotonic() < deadline:
        member.poll(0.05)
        message = intruder.poll(0.05)
        if message is not None and message.error():
            errors.append(message.error())
        if got_in:
            outcome = "intruder assigned"
        for error in errors:
            if error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                outcome = f"intruder refused {error.name()}"
    print(outcome or "intruder neither refused nor assigned", flush=True)
    try:
        offsets = intruder.committed([TopicPartition(topic, 0)], timeout=10)
        print(f"intruder offsets {offsets[0].offset}", flush=True)
    except KafkaException as e:
        print(f"intruder offsets refused {e.args[0].name()}", flush=True)
    tried = time.monotonic() - began
    intruder.close()
    for name in (member_name, intruder_name):
        admin_config = config(bootstrap, name, password, group)
        for key in ("group.id", "session.timeout.ms", "heartbeat.interval.ms",
                    "enable.auto.commit", "auto.offset.reset"):
            del admin_config[key]
        admin = AdminClient(admin_config)
        listed = admin.list_consumer_groups(request_timeout=10).result()
        names = sorted(g.group_id for g in listed.valid)
        print(f"{name} lists {','.join(names)}", flush=True)
        try:
            described = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
            print(f"{name} describes {len(described.members)} members", flush=True)
        except KafkaException as e:
            print(f"{name} describe refused {e.args[0].name()}", flush=True)

    watch_until = min(deadline, time.monotonic() + tried + 3)
    while time.monotonic() < watch_until:
        member.poll(0.1)
    offsets = member.committed([TopicPartition(topic, 0)], timeout=10)
    print(f"member committed {offsets[0].offset}", flush=True)
    closing.append(True)
    member.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
