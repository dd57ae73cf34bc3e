#!/usr/bin/env python3
"""Measures `status` latency: one client in lockstep, asking the broker for its status again and
again until SIGTERM or SIGINT, then prints one JSON object: count, p50_us, p99_us, max_us.

scripts/bench.sh --durable runs it beside a load, as the 17th client, to show how long other
clients wait while the broker is busy (with flushes, for instance).

Usage: scripts/status-latency.py --endpoint tcp://127.0.0.1:PORT
"""

import argparse
import json
import signal
import sys
import time

import msgpack
import zmq


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    args = parser.parse_args()
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    socket = zmq.Context.instance().socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, 10_000)
    socket.connect(args.endpoint)
    request = msgpack.packb({"v": 1, "op": "status"})
    socket.send(request)
    socket.recv()  # connecting is not timed
    samples = []
    while not stop:
        started = time.perf_counter_ns()
        socket.send(request)
        try:
            socket.recv()
        except zmq.Again:
            print("status: no reply within 10 s", file=sys.stderr)
            return 1
        except zmq.ZMQError as error:  # interrupted by the signal
            if stop:
                break
            raise error
        samples.append((time.perf_counter_ns() - started) / 1000)
    samples.sort()
    if not samples:
        print(json.dumps({"count": 0}))
        return 0

    def rank(per_mille: int) -> float:
        return samples[max(0, -(-len(samples) * per_mille // 1000) - 1)]

    print(json.dumps({"count": len(samples), "p50_us": rank(500), "p99_us": rank(990),
                      "max_us": samples[-1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
