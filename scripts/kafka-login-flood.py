#!/usr/bin/env python3
"""Floods kafka-gateway with wrong-password SASL/PLAIN logins from one source address while
timing correct logins from another, and prints one JSON object: the correct logins' count,
failures, p50_ms and p99_ms, the flood's seconds and how many of its logins were answered
(refused) in that time, and the gateway's VmRSS in KiB before (rss_idle_kib) and at most during
the flood (rss_peak_kib).

The flood is FLOOD connections from 127.0.0.2, each sending SaslHandshake v0 and a bare PLAIN
token for USER with a new wrong password; a refused one is replaced at once by a new
connection, so that FLOOD logins are in flight all the time, for SECONDS. A correct login is a
new connection from 127.0.0.1 doing the same with the right password, timed from connect to
the gateway's empty success frame, one after the other; one that gets no answer within 5 s
counts as a failure.

scripts/bench.sh --kafka-login-flood runs it against a gateway in front of a broker with --auth.

Usage: scripts/kafka-login-flood.py --bootstrap 127.0.0.1:PORT --pid PID --user NAME
           --password PASSWORD [--flood 256] [--seconds 10]
"""

import argparse
import json
import socket
import struct
import threading
import time

LOGIN_LIMIT_S = 5.0


def rss_kib(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def login(host, port, source, user, password, timeout):
    """One SASL/PLAIN login with SaslHandshake v0: the bytes answered to the token."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.bind((source, 0))
        sock.connect((host, port))
        # SaslHandshake (17) v0, correlation id 1, no client id, mechanism PLAIN.
        body = struct.pack(">hhih", 17, 0, 1, -1) + struct.pack(">h", 5) + b"PLAIN"
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", recv_exact(sock, 4))[0]
        recv_exact(sock, size)
        token = b"\0" + user.encode() + b"\0" + password.encode()
        sock.sendall(struct.pack(">i", len(token)) + token)
        return sock.recv(4)
    finally:
        sock.close()


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--flood", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    host, port = args.bootstrap.rsplit(":", 1)
    port = int(port)
    idle = rss_kib(args.pid)
    peak = idle
    stop = threading.Event()
    refused = [0]
    lock = threading.Lock()

    def flood(n):
        i = 0
        while not stop.is_set():
            i += 1
            try:
                answer = login(host, port, "127.0.0.2", args.user, f"wrong-{n}-{i}",
                               args.seconds + 5)
            except OSError:
                answer = None
            if answer == b"" and not stop.is_set():
                with lock:
                    refused[0] += 1

    threads = [threading.Thread(target=flood, args=(n,), daemon=True) for n in range(args.flood)]
    began = time.monotonic()
    for t in threads:
        t.start()
    times, failures = [], 0
    while time.monotonic() - began < args.seconds:
        start = time.monotonic()
        try:
            answer = login(host, port, "127.0.0.1", args.user, args.password, LOGIN_LIMIT_S)
            ok = answer == b"\0\0\0\0"
        except OSError:
            ok = False
        if ok:
            times.append((time.monotonic() - start) * 1000)
        else:
            failures += 1
        peak = max(peak, rss_kib(args.pid))
    seconds = time.monotonic() - began
    stop.set()
    times.sort()

    def pct(p):
        return times[min(len(times) - 1, int(len(times) * p))] if times else None

    print(json.dumps({
        "logins": len(times), "failures": failures, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
        "seconds": seconds, "refused": refused[0], "rss_idle_kib": idle, "rss_peak_kib": peak,
    }), flush=True)


if __name__ == "__main__":
    main()
