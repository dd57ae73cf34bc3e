#!/usr/bin/env bash
# Installs the system's libzmq with CURVE (Debian's libzmq3-dev) when it is missing and
# apt-get is there: the workspace links it (.cargo/config.toml) rather than building its own.
set -euo pipefail
if [ -e /usr/lib/x86_64-linux-gnu/libzmq.so ] || ldconfig -p 2>/dev/null | grep -q 'libzmq\.so '; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "libzmq (with CURVE) is missing: install your system's libzmq development package" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
$sudo apt-get update
$sudo apt-get install -y libzmq3-dev
