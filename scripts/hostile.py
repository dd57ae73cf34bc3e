#!/usr/bin/env python3
"""Attacks a running broker with replies nobody reads, and measures what it costs others.

Run by `scripts/bench.sh --hostile`, which starts the broker and passes its endpoint and
process id:

    hostile.py --endpoint tcp://127.0.0.1:PORT --pid PID

It fills a topic with about 100 MB, then measures, in one run:
- the broker's resident memory (VmRSS, sampled every 5 ms) before and at its peak during two
  attacks: 1,000 fetches of 16 MiB from one DEALER, then 100 from each of 10 DEALERs, none of
  which reads its replies;
- the latency of `status` from another client, with no attack (the floor) and during each one.
Prints one Markdown table, each figure beside its floor and target.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import msgpack
import zmq

from pyclient import Client

MIB = 1 << 20
VALUE = b"v" * 10_000


def rss(pid: int) -> int:
    """The process's resident memory in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def frame(op: str, **fields) -> list[bytes]:
    """A request as a REQ socket would frame it, for a DEALER."""
    return [b"", msgpack.packb({"v": 1, "op": op, **fields}, use_bin_type=True)]


def attacker(context: zmq.Context, endpoint: str) -> zmq.Socket:
    """A DEALER that takes in as little as it can of its replies: a client that does not read."""
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVHWM, 1)
    socket.setsockopt(zmq.RCVBUF, 4096)
    socket.connect(endpoint)
    return socket


class Watch:
    """Samples the broker's memory and times `status` on a thread until stopped."""

    def __init__(self, endpoint: str, pid: int):
        self.endpoint, self.pid = endpoint, pid
        self.peak = rss(pid)
        self.latencies: list[float] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self.sample), threading.Thread(target=self.ask)]

    def sample(self):
        while not self.done.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.005)

    def ask(self):
        with Client(self.endpoint, timeout=10) as client:
            while not self.done.is_set():
                started = time.perf_counter()
                client.status()
                self.latencies.append((time.perf_counter() - started) * 1000)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        for thread in self.threads:
            thread.join()


def attack(context, endpoint: str, observer: Client, watch_claim: int, token: int,
           clients: int, requests: int, name: str) -> tuple[int, int]:
    """Sends `requests` greedy fetches from each of `clients` DEALERs, none reading; waits until
    the broker has handled them all (a marker topic each creates last), then reads and closes.
    Returns how many replies delivered messages and how many were `overloaded`."""
    sockets = [attacker(context, endpoint) for _ in range(clients)]
    for i, socket in enumerate(sockets):
        for _ in range(requests):
            socket.send_multipart(frame("fetch", claim=token, topic="hostile", offset=0,
                                        max_messages=10_000, max_bytes=16 * MIB))
        socket.send_multipart(frame("create_topic", topic=f"{name}-{i}"))
    markers = {f"{name}-{i}" for i in range(clients)}
    deadline = time.monotonic() + 60
    while not markers <= {t["name"] for t in observer.list_topics(watch_claim)}:
        if time.monotonic() > deadline:
            raise RuntimeError("the broker did not handle the attack within 60 s")
        time.sleep(0.01)
    fetched = overloaded = 0
    for socket in sockets:
        for _ in range(requests + 1):
            reply = msgpack.unpackb(socket.recv_multipart()[-1], raw=False)
            if reply.get("reply") == "messages":
                fetched += 1
            elif reply.get("error") == "overloaded":
                overloaded += 1
        socket.close()
    return fetched, overloaded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--pid", type=int, required=True)
    args = parser.parse_args()

    context = zmq.Context()
    with Client(args.endpoint, timeout=30) as loader:
        for _ in range(100):
            loader.append("hostile", [VALUE] * 100)
    observer = Client(args.endpoint, timeout=30)
    watch_claim = observer.claim(broker=2, client="observer")["claim"]
    holder = Client(args.endpoint)
    token = holder.claim(broker=1, client="attacker")["claim"]

    with Watch(args.endpoint, args.pid) as quiet:
        time.sleep(2)
    before = rss(args.pid)
    floor = percentile(quiet.latencies, 0.99)
    rows = []
    for clients, requests in ((1, 1000), (10, 100)):
        name = f"done-{clients}x{requests}"
        with Watch(args.endpoint, args.pid) as watch:
            fetched, overloaded = attack(context, args.endpoint, observer, watch_claim, token,
                                         clients, requests, name)
        target = 2 * before + 128 * 1_000_000
        rows.append((f"{clients} × {requests} unread fetches of 16 MiB: peak VmRSS "
                     f"({fetched} served, {overloaded} overloaded)",
                     f"{watch.peak / 1e6:.0f} MB", f"{before / 1e6:.0f} MB before",
                     f"{watch.peak / before:.2f}", f"< 2 × before + 128 MB = {target / 1e6:.0f} MB",
                     "yes" if watch.peak < target else "**no**"))
        p99 = percentile(watch.latencies, 0.99)
        rows.append((f"{clients} × {requests}: another client's status p99 "
                     f"({len(watch.latencies)} calls, p50 {percentile(watch.latencies, 0.5):.2f} ms)",
                     f"{p99:.2f} ms", f"{floor:.2f} ms unattacked", f"{p99 / floor:.1f}",
                     "≤ 10 ms", "yes" if p99 <= 10 else "**no**"))
    print("| case | figure | floor | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    holder.close()
    observer.close()
    print(f"\nA topic of about 100 MB in memory; {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d', time.gmtime())}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
