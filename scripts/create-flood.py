#!/usr/bin/env python3
"""Creates COUNT topics, one `create_topic` after the other in lockstep, and prints one JSON
object: count, seconds, p50_us, p99_us, max_us of the creations, and refused (replies that were
not `created`).

scripts/bench.sh --create-flood runs it beside scripts/status-latency.py on a broker under
--fsync always, to show whether creating topics holds up other clients.

Usage: scripts/create-flood.py --endpoint tcp://127.0.0.1:PORT [--count 1000] [--prefix made]
"""

import argparse
import json
import sys
import time

import msgpack
import zmq


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--prefix", default="made")
    args = parser.parse_args()
    socket = zmq.Context.instance().socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, 10_000)
    socket.connect(args.endpoint)
    samples = []
    refused = 0
    began = time.perf_counter()
    for n in range(args.count):
        request = msgpack.packb({"v": 1, "op": "create_topic", "topic": f"{args.prefix}-{n}"})
        started = time.perf_counter_ns()
        socket.send(request)
        try:
            reply = msgpack.unpackb(socket.recv(), raw=False)
        except zmq.Again:
            print(f"create_topic: no reply within 10 s after {n} topics", file=sys.stderr)
            return 1
        samples.append((time.perf_counter_ns() - started) / 1000)
        if reply.get("reply") != "created":
            refused += 1
    seconds = time.perf_counter() - began
    samples.sort()

    def rank(per_mille: int) -> float:
        return samples[max(0, -(-len(samples) * per_mille // 1000) - 1)]

    print(json.dumps({"count": len(samples), "seconds": seconds, "p50_us": rank(500),
                      "p99_us": rank(990), "max_us": samples[-1], "refused": refused}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
