#!/usr/bin/env bash
# A walk through the broker, the producer and the consumer, unattended, on loopback only.
#
# Builds the workspace with cargo, starts a broker with the sample topics on a free port, then
# shows status, topics, producing from arguments and from standard input, fetching, and
# following while the producer appends. Stops everything with SIGINT, as Ctrl-C would, and
# checks that each program exits cleanly. Exits non-zero as soon as any step fails.
#
# Usage: scripts/demo.sh            (debug build)
#        PROFILE=release scripts/demo.sh
set -euo pipefail

cd "$(dirname "$0")/.."

profile=${PROFILE:-debug}
bin=${CARGO_TARGET_DIR:-target}/$profile
work=$(mktemp -d)
broker_pid=""
follow_pid=""

# Stop whatever is still running and remove the scratch directory, however the script ends.
cleanup() {
    for pid in "$follow_pid" "$broker_pid"; do
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }

fail() {
    printf 'demo failed: %s\n' "$*" >&2
    exit 1
}

# Runs one of the built programs, showing the command line first.
show() {
    local program=$1
    shift
    printf '$ %s' "$program"
    printf ' %q' "$@"
    printf '\n'
    "$bin/$program" "$@"
}

# Waits up to 10 s for a command to succeed.
wait_for() {
    local what=$1
    shift
    for _ in $(seq 100); do
        if "$@"; then
            return 0
        fi
        sleep 0.1
    done
    fail "timed out waiting for $what"
}

step "building the workspace ($profile)"
if [[ $profile == release ]]; then
    cargo build --workspace --release
else
    cargo build --workspace
fi

step "starting the broker with the sample topics on a free loopback port"
"$bin/broker" --preload --bind 'tcp://127.0.0.1:*' >"$work/broker.out" 2>"$work/broker.log" &
broker_pid=$!
broker_ready() {
    kill -0 "$broker_pid" 2>/dev/null || fail "the broker exited: $(cat "$work/broker.log")"
    [[ -s $work/broker.out ]]
}
wait_for "the broker's first line" broker_ready
read -r first <"$work/broker.out"
[[ $first == "listening on "* ]] || fail "unexpected first line from the broker: $first"
endpoint=${first#listening on }
echo "broker $broker_pid is $first"

step "the logical brokers"
show consumer --connect "$endpoint" status

step "the topics"
show consumer --connect "$endpoint" topics

step "appending messages given as arguments"
show producer --connect "$endpoint" demo "hello" "world"

step "appending lines from standard input, with keys"
printf 'k1:first line\nk2:second line\nk3:third line\n' |
    show producer --connect "$endpoint" --key-separator : demo

step "fetching them back"
show consumer --connect "$endpoint" --print-key fetch demo

step "the same as JSON"
show consumer --connect "$endpoint" --json fetch demo --max 2

step "following the topic while the producer appends"
"$bin/consumer" --connect "$endpoint" follow demo >"$work/follow.out" 2>"$work/follow.err" &
follow_pid=$!
echo "\$ consumer --connect $endpoint follow demo &   (process $follow_pid)"
wait_for "the follower to start" grep -q '^following' "$work/follow.err"
show producer --connect "$endpoint" demo "appended while following 1" "appended while following 2"
follower_has_both() { [[ $(wc -l <"$work/follow.out") -ge 2 ]]; }
wait_for "the follower to print the new messages" follower_has_both
echo "stopping the follower with SIGINT"
kill -INT "$follow_pid"
follow_status=0
wait "$follow_pid" || follow_status=$?
follow_pid=""
echo "the follower printed:"
sed 's/^/    /' "$work/follow.out"
sed 's/^/    (stderr) /' "$work/follow.err"
# Ctrl-C ends a follow with 130, the status of an interrupted command.
[[ $follow_status -eq 130 ]] || fail "the follower exited with status $follow_status, not 130"
grep -qx $'5\tappended while following 1' "$work/follow.out" || fail "the follower missed a message"
grep -qx $'6\tappended while following 2' "$work/follow.out" || fail "the follower missed a message"

step "its claim was released: every logical broker is free again"
show consumer --connect "$endpoint" status | tee "$work/status.out"
if grep -q claimed "$work/status.out"; then
    fail "a logical broker is still claimed"
fi

step "stopping the broker with SIGINT"
kill -INT "$broker_pid"
broker_status=0
wait "$broker_pid" || broker_status=$?
broker_pid=""
[[ $broker_status -eq 0 ]] || fail "the broker exited with status $broker_status"
echo "the broker exited with status 0"

step "demo finished"
