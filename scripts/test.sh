#!/usr/bin/env bash
# Runs the whole test suite: the Python client's packages, every crate's unit and integration
# tests (the Python client's round trip among them), then the end-to-end demos.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
cargo test --workspace
scripts/demo.sh
scripts/groups-demo.sh
