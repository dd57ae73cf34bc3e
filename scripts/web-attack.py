#!/usr/bin/env python3
"""The web console under attack: 2,000 slow-loris connections and 10,000 cookie-less GETs
while a logged-in browser keeps using its session.

Prints whether the logged-in session survived, how long its page takes to answer during the
attack (p50, p99, max) beside the same requests with the console idle just before (the floor),
the web process's resident memory (now and its peak) beside its idle size and the 128 MB
target, and its threads.

Environment: BROKER_BIN, WEB_BIN (the binaries to run).
"""

import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BROKER = os.environ.get("BROKER_BIN", "target/debug/broker")
WEB = os.environ.get("WEB_BIN", "target/debug/web")
PASSWORD = "correct horse"
SLOW = 2000
GETS = 10_000


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/{pid}/status")


def request(address, method, path, headers="", body=""):
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {address}\r\n{headers}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
        )
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return reply.decode(errors="replace")
            reply += chunk


def timed(address, cookie):
    """The logged-in page's two requests: the page and its session; seconds taken, and the
    session's reply."""
    started = time.perf_counter()
    page = request(address, "GET", "/", cookie)
    session = request(address, "GET", "/api/session", cookie)
    taken = time.perf_counter() - started
    if not page.startswith("HTTP/1.1 200"):
        raise SystemExit(f"the page did not answer: {page[:200]}")
    return taken, session


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < SLOW + 200:
        raise SystemExit(f"the open-files limit ({hard}) is below {SLOW + 200}")
    with tempfile.TemporaryDirectory() as directory:
        hashed = subprocess.run(
            [BROKER, "hash-password"], env={**os.environ, "BROKER_PASSWORD": PASSWORD},
            check=True, capture_output=True, text=True).stdout.strip()
        users = os.path.join(directory, "users.toml")
        with open(users, "w") as f:
            f.write(f'[users.bob]\npassword_hash = "{hashed}"\ntopics = {{ consume = ["*"] }}\n')
        broker = subprocess.Popen(
            [BROKER, "--bind", "tcp://127.0.0.1:*", "--preload", "--auth", users],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        web = None
        try:
            endpoint = broker.stdout.readline().strip().removeprefix("listening on ")
            web = subprocess.Popen(
                [WEB, "--connect", endpoint, "--listen", "127.0.0.1:0"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            address = web.stdout.readline().strip().removeprefix("serving http://")
            run(address, web.pid)
        finally:
            for p in (web, broker):
                if p is not None:
                    # Interrupted, so that the console removes its socket's directory.
                    p.send_signal(signal.SIGINT)
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()


def run(address, pid):
    body = f'{{"user":"bob","password":"{PASSWORD}"}}'
    login = request(address, "POST", "/api/login", "Content-Type: application/json\r\n", body)
    if not login.startswith("HTTP/1.1 200"):
        raise SystemExit(f"cannot log in: {login[:300]}")
    cookie_line = next(l for l in login.split("\r\n") if l.startswith("Set-Cookie: "))
    cookie = "Cookie: " + cookie_line.removeprefix("Set-Cookie: ").split(";")[0] + "\r\n"
    idle_rss = status(pid, "VmRSS")
    floor = [timed(address, cookie)[0] for _ in range(50)]

    host, port = address.split(":")
    slow = []
    for _ in range(SLOW):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
        slow.append(s)
    stop = threading.Event()

    def keep_slow():
        while not stop.is_set():
            for s in slow:
                try:
                    s.sendall(b"a")
                except OSError:
                    pass
            stop.wait(1)

    sent = [0]

    def flood():
        while sent[0] < GETS and not stop.is_set():
            sent[0] += 1
            path = ("/api/session", "/api/overview", "/", "/assets/app.js")[sent[0] % 4]
            try:
                request(address, "GET", path)
            except OSError:
                pass

    threads = [threading.Thread(target=keep_slow)] + [
        threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    during = []
    peak_threads = 0
    survived = True
    while any(t.is_alive() for t in threads[1:]):
        taken, session = timed(address, cookie)
        during.append(taken)
        survived = survived and '"user":"bob"' in session
        peak_threads = max(peak_threads, status(pid, "Threads"))
        time.sleep(0.1)
    rss = status(pid, "VmRSS")
    hwm = status(pid, "VmHWM")
    taken, session = timed(address, cookie)
    during.append(taken)
    survived = survived and '"user":"bob"' in session
    stop.set()
    for t in threads:
        t.join()
    for s in slow:
        s.close()

    ms = lambda v: f"{v * 1000:.1f} ms"
    print(f"web console under {SLOW} slow-loris connections and {sent[0]} cookie-less GETs")
    print(f"  logged-in session survived: {'yes' if survived else 'NO'} (target: yes)")
    print(f"  logged-in page + session, during ({len(during)} rounds): "
          f"p50 {ms(statistics.median(during))}  p99 {ms(percentile(during, 0.99))}  "
          f"max {ms(max(during))}  (target: within 1 s)")
    print(f"    floor, idle just before ({len(floor)} rounds):   "
          f"p50 {ms(statistics.median(floor))}  p99 {ms(percentile(floor, 0.99))}  "
          f"max {ms(max(floor))}")
    print(f"  web RSS: {rss / 1024:.1f} MB after, peak {hwm / 1024:.1f} MB "
          f"(target: <= 128 MB), idle {idle_rss / 1024:.1f} MB")
    print(f"  web threads: peak {peak_threads} (idle before the attack: a handful)")
    if not survived or max(during) > 1.0 or hwm > 128 * 1024:
        sys.exit(1)


if __name__ == "__main__":
    main()
