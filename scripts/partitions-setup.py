#!/usr/bin/env python3
"""Fills a broker with topics of several partitions, for scripts/bench.sh --partitions: creates
TOPICS topics named PREFIX-0, PREFIX-1, ... of PARTITIONS partitions each, and appends MESSAGES
messages of SIZE bytes to every partition (one append per partition). Prints one JSON object:
topics, partitions, messages, seconds.

Usage: scripts/partitions-setup.py --endpoint tcp://127.0.0.1:PORT [--topics 1000]
       [--partitions 6] [--messages 100] [--size 100] [--prefix t]
"""

import argparse
import json
import sys
import time

import msgpack
import zmq


def ask(socket, request: dict) -> dict:
    socket.send(msgpack.packb({"v": 1, **request}))
    reply = msgpack.unpackb(socket.recv())
    if reply.get("code") != 200:
        raise SystemExit(f"{request['op']} refused: {reply.get('error')}: {reply.get('reason')}")
    return reply


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--prefix", default="t")
    args = parser.parse_args()
    socket = zmq.Context.instance().socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, 30_000)
    socket.connect(args.endpoint)
    value = b"v" * args.size
    messages = [{"value": value} for _ in range(args.messages)]
    start = time.monotonic()
    for topic in range(args.topics):
        name = f"{args.prefix}-{topic}"
        ask(socket, {"op": "create_topic", "topic": name, "partitions": args.partitions})
        for partition in range(args.partitions):
            if messages:
                ask(socket, {"op": "append", "topic": name, "partition": partition,
                             "messages": messages})
    seconds = time.monotonic() - start
    json.dump({"topics": args.topics, "partitions": args.partitions,
               "messages": args.messages, "seconds": round(seconds, 3)}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
