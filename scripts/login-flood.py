#!/usr/bin/env python3
"""Floods a broker with wrong-password PLAIN logins from one source address while timing correct
logins from another, and prints one JSON object: the correct logins' count, failures, p50_ms and
p99_ms, the broker's VmRSS in KiB before (rss_idle_kib) and at most during the flood
(rss_peak_kib), the flood's seconds, and the handshakes the flood's sockets saw refused.

The flood is FLOOD sockets connected from 127.0.0.2 (libzmq's `tcp://SOURCE:0;HOST:PORT`
form), each logging in as an existing user with a wrong password; a refused one is replaced at
once by a new socket with a new password, so that FLOOD logins are in flight all the time, for
SECONDS. A correct login is a new REQ socket from 127.0.0.1 with the right
password asking for `status`: timed from connect to the reply, one after the other; one that
gets no reply within 5 s counts as a failure.

scripts/bench.sh --login-flood runs it against a broker with --auth.

Usage: scripts/login-flood.py --endpoint tcp://127.0.0.1:PORT --pid PID --user NAME
           --password PASSWORD [--flood 256] [--seconds 10] [--hold]
"""

import argparse
import json
import resource
import signal
import sys
import threading
import time

import msgpack
import zmq
import zmq.utils.monitor

# How long a correct login may take before it counts as failed.
LOGIN_LIMIT_MS = 5000


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def correct_login(context: zmq.Context, endpoint: str, user: str, password: str) -> float | None:
    """Milliseconds from connect to the `status` reply, or None if none came in time."""
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    socket.plain_username = user.encode()
    socket.plain_password = password.encode()
    started = time.perf_counter()
    try:
        socket.connect(endpoint)
        socket.send(msgpack.packb({"v": 1, "op": "status"}))
        if socket.poll(LOGIN_LIMIT_MS, zmq.POLLIN) == 0:
            return None
        socket.recv()
        return (time.perf_counter() - started) * 1000
    finally:
        socket.close(linger=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--flood", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hold", action="store_true",
                        help="after the report, keep the flood's sockets open until SIGTERM")
    args = parser.parse_args()
    host_port = args.endpoint.removeprefix("tcp://")

    good = zmq.Context()
    # Idle: a few correct logins with no flood, to have the broker's resident memory at rest.
    for _ in range(3):
        correct_login(good, args.endpoint, args.user, args.password)
    rss_idle = rss_kib(args.pid)

    # Each socket of the flood has a monitor, and closed ones go only when libzmq reaps them.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    flood = zmq.Context()
    flood.set(zmq.MAX_SOCKETS, 16384)
    opened = [0]

    def open_flood_socket():
        """A socket logging in from 127.0.0.2 with a new wrong password, and its monitor."""
        socket = flood.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RECONNECT_IVL, 10)
        socket.plain_username = args.user.encode()
        socket.plain_password = f"wrong guess {opened[0]}".encode()
        opened[0] += 1
        # Replaced only once refused: a socket closed in the middle of its handshake would
        # count at the broker as a failed handshake, not as a password checked.
        monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        socket.connect(f"tcp://127.0.0.2:0;{host_port}")
        return socket, monitor

    pairs = [open_flood_socket() for _ in range(args.flood)]
    refused = [0]
    flooding = threading.Event()
    flooding.set()

    def keep_flooding():
        """Replaces each refused socket with a new one, so that FLOOD logins are always in
        flight, each with a new password, until the flood ends."""
        while flooding.is_set():
            poller = zmq.Poller()
            for _, monitor in pairs:
                poller.register(monitor, zmq.POLLIN)
            ready = dict(poller.poll(100))
            for at, (socket, monitor) in enumerate(pairs):
                if monitor not in ready:
                    continue
                events = 0
                while monitor.poll(0):
                    event = zmq.utils.monitor.parse_monitor_message(monitor.recv_multipart())
                    refused[0] += event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    events += 1
                if events:
                    socket.disable_monitor()
                    socket.close(linger=0)
                    monitor.close(linger=0)
                    pairs[at] = open_flood_socket()

    peak = [rss_idle]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(args.pid))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    flooder = threading.Thread(target=keep_flooding, daemon=True)
    flooder.start()
    began = time.perf_counter()
    timings = []
    failures = 0
    while time.perf_counter() - began < args.seconds:
        took = correct_login(good, args.endpoint, args.user, args.password)
        if took is None:
            failures += 1
        else:
            timings.append(took)
        time.sleep(0.05)
    seconds = time.perf_counter() - began
    stop.set()
    sampler.join()
    flooding.clear()
    flooder.join()
    if args.hold:
        # Sockets closed in the middle of their handshakes would count at the broker as failed
        # handshakes, which its stop line adds to the refusals: report, then keep them open
        # until told to end (once the broker has stopped).
        report(timings, failures, rss_idle, peak[0], seconds, refused[0], opened[0])
        ended = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: ended.set())
        while not ended.wait(0.1):
            pass
    for socket, monitor in pairs:
        if not socket.closed:
            socket.disable_monitor()
        socket.close(linger=0)
        monitor.close(linger=0)
    flood.term()
    good.term()
    if not args.hold:
        report(timings, failures, rss_idle, peak[0], seconds, refused[0], opened[0])
    return 0


def report(timings, failures, rss_idle, rss_peak, seconds, refused, opened):
    """Prints the JSON object the module's doc describes."""
    timings = sorted(timings)

    def rank(per_mille: int) -> float | None:
        if not timings:
            return None
        return timings[max(0, -(-len(timings) * per_mille // 1000) - 1)]

    print(json.dumps({"logins": len(timings), "failures": failures, "p50_ms": rank(500),
                      "p99_ms": rank(990), "rss_idle_kib": rss_idle, "rss_peak_kib": rss_peak,
                      "seconds": seconds, "flood_refused": refused, "flood_sockets": opened}),
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
