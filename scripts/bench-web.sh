#!/usr/bin/env bash
# Measures the web console in the system's headless Chromium, with release builds, and prints:
#   - the follow view's delay from an append acknowledged to the message in the page (DOM),
#     p50 and p99 over 1,000 messages, beside a floor measured in the same run: a request from
#     the page to the console and back;
#   - a page following a topic that receives 10,000 messages/s for 5 s: how late its event loop
#     runs a 50 ms timer (p50, p99, max), beside the same page idle just before, and how many
#     rows it keeps (a bounded window) and messages it counted;
#   - click to effect (a real click on a topic's Delete button until its question is drawn), p50
#     and max over 20 clicks while the page follows a topic taking 10,000 messages/s, beside the
#     same clicks with the page idle;
#   - with 1,000 topics, the page's long tasks (over 50 ms) per second and the longest over 10 s
#     of refreshes twice a second (target: none over 50 ms), and the time to draw one overview,
#     beside the same page with the 4 sample topics.
# It starts a broker with --preload and the console on free loopback ports, and stops them when
# it ends. Needs what scripts/test.sh installs (playwright, pyzmq, msgpack) and Chromium.
#
# `scripts/bench-web.sh --attack` measures the console under attack instead (no browser): under
# 2,000 slow-loris connections and 10,000 cookie-less GETs, whether a logged-in session survives,
# how long its page takes to answer (p50, p99, max; target within 1 s) beside the same requests
# with the console idle just before, and the web process's resident memory (target <= 128 MB)
# beside its idle size (scripts/web-attack.py). PROFILE=debug measures debug builds.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
scripts/need-libzmq.sh
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
if [ "$PROFILE" = release ]; then
    cargo build --release --quiet -p broker -p clients --bins
else
    cargo build --quiet -p broker -p clients --bins
fi
export BROKER_BIN=target/$PROFILE/broker WEB_BIN=target/$PROFILE/web CONSUMER_BIN=target/$PROFILE/consumer
if [ "${1:-}" = --attack ]; then
    exec python3 scripts/web-attack.py
fi
export ARTEFACTS=target/web-console
mkdir -p "$ARTEFACTS"
python3 clients/tests/web_browser.py bench
