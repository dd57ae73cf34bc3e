#!/usr/bin/env python3
"""Starts a broker and tells how long it takes to serve a topic whole: from the moment the
process is started to the first fetch that returns the topic's last message.

Usage: ready-time.py TOPIC COUNT -- BROKER_COMMAND...
The broker command must bind `tcp://127.0.0.1:*` and print `listening on ENDPOINT` (as
`broker --bind 'tcp://127.0.0.1:*'` does). Prints one JSON object: ready_ms (start to the
last message read), listening_ms (start to the `listening on` line), rss_kb (the broker's
VmRSS once ready), pid and endpoint (the broker, left running for the caller to read from
and stop).
"""

import json
import subprocess
import sys
import time

from pyclient import BrokerError, Client, ClientError

LIMIT_S = 120


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        sys.exit(__doc__)
    topic, count, command = sys.argv[1], int(sys.argv[2]), sys.argv[4:]
    start = time.monotonic()
    broker = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    endpoint = None
    for line in broker.stdout:
        if line.startswith("listening on "):
            endpoint = line.split()[-1]
            break
    if endpoint is None:
        sys.exit("the broker ended before it listened")
    listening = time.monotonic()
    deadline = start + LIMIT_S
    with Client(endpoint, timeout=5) as client:
        claim = client.claim()["claim"]
        while True:
            try:
                reply = client.fetch(claim, topic, count - 1, max_messages=1)
                if any(m["offset"] == count - 1 for m in reply["messages"]):
                    break
            except BrokerError as error:
                # Unknown topic, offset not yet there: the copy is still being read.
                if not error.transient:
                    raise
            except ClientError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"offset {count - 1} of {topic} was not served within {LIMIT_S} s")
            time.sleep(0.005)
        ready = time.monotonic()
        client.release(claim)
    print(json.dumps({
        "ready_ms": round((ready - start) * 1000),
        "listening_ms": round((listening - start) * 1000),
        "rss_kb": rss_kb(broker.pid),
        "pid": broker.pid,
        "endpoint": endpoint,
    }))


if __name__ == "__main__":
    main()
