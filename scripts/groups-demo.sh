#!/usr/bin/env bash
# Consumer groups, unattended, on loopback only: a restaurant where tills take orders and
# preparers share them.
#
# Starts a broker that keeps its data in a scratch directory and redelivers an order whose
# acknowledgement has not come within 2 s. Three tills (producers) append orders while two
# preparers, members of the group "preparers", share them: each order goes to one preparer,
# which acknowledges it once prepared. One preparer faints part-way: it goes on taking orders
# without preparing them, and is killed with SIGKILL. The orders it held come back, after the
# ack timeout, to the other preparer. The topic has one partition, so the preparers share it
# with `--unordered` (by default a partition is read by one member at a time, as on Kafka). The script checks that every order was prepared exactly
# once, restarts the broker to show that the group's place survived, and lets a second group,
# "auditors", read every order on its own. Exits non-zero as soon as a check fails.
#
# Usage: scripts/groups-demo.sh            (debug build)
#        PROFILE=release scripts/groups-demo.sh
set -euo pipefail

cd "$(dirname "$0")/.."

profile=${PROFILE:-debug}
bin=${CARGO_TARGET_DIR:-target}/$profile
work=$(mktemp -d)
tills=3
orders_per_till=10
orders=$((tills * orders_per_till))
pids=()

# Stop whatever is still running and remove the scratch directory, however the script ends.
cleanup() {
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }

fail() {
    printf 'groups demo failed: %s\n' "$*" >&2
    for log in "$work"/*.err "$work"/*.log; do
        [[ -s $log ]] || continue
        printf -- '--- last lines of %s\n' "${log##*/}" >&2
        tail -n 15 "$log" >&2
    done
    exit 1
}

# Runs one of the built programs, showing the command line first (on standard error, so that
# standard output holds only what the program prints).
show() {
    local program=$1
    shift
    {
        printf '$ %s' "$program"
        printf ' %q' "$@"
        printf '\n'
    } >&2
    "$bin/$program" "$@"
}

# Waits up to $1 seconds for a command to succeed.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 10))); do
        if "$@"; then
            return 0
        fi
        sleep 0.1
    done
    fail "timed out after ${seconds}s waiting for $what"
}

# Starts the broker on a free loopback port and sets $broker_pid and $endpoint.
start_broker() {
    : >"$work/broker.out"
    "$bin/broker" --bind 'tcp://127.0.0.1:*' --brokers 3 --data-dir "$work/data" \
        --group-ack-timeout 2s >"$work/broker.out" 2>>"$work/broker.log" &
    broker_pid=$!
    pids+=("$broker_pid")
    broker_ready() {
        kill -0 "$broker_pid" 2>/dev/null || fail "the broker exited: $(cat "$work/broker.log")"
        [[ -s $work/broker.out ]]
    }
    wait_for 10 "the broker's first line" broker_ready
    local first
    read -r first <"$work/broker.out"
    [[ $first == "listening on "* ]] || fail "unexpected first line from the broker: $first"
    endpoint=${first#listening on }
    echo "broker $broker_pid is $first"
}

# Stops the broker with SIGINT, as Ctrl-C would, and checks that it exits cleanly.
stop_broker() {
    kill -INT "$broker_pid"
    local status=0
    wait "$broker_pid" || status=$?
    [[ $status -eq 0 ]] || fail "the broker exited with status $status"
    echo "the broker exited with status 0"
}

# The columns of the `consumer groups` row of group $1 on topic orders.
group_row() {
    "$bin/consumer" --connect "$endpoint" groups "$1" --topic orders | sed -n 2p
}

# Whether group $1 has acknowledged every message of topic orders: the opening one and the
# $orders orders.
all_acknowledged() {
    local row
    row=$(group_row "$1") || return 1
    read -r _ _ _ committed end lag pending _ <<<"$row"
    [[ $committed -eq $((orders + 1)) && $end -eq $((orders + 1)) && $lag -eq 0 && $pending -eq 0 ]]
}

lines() { [[ -f $1 ]] && wc -l <"$1" || echo 0; }

step "building the workspace ($profile)"
if [[ $profile == release ]]; then
    cargo build --workspace --release
else
    cargo build --workspace
fi

step "starting a broker that keeps its data in $work/data, with a 2 s ack timeout"
start_broker
show producer --connect "$endpoint" orders "kitchen opens"

step "two preparers join the group \"preparers\" on topic orders"
# Preparer A prepares every order it is given: `follow --group` acknowledges what it prints.
"$bin/consumer" --connect "$endpoint" follow orders --group preparers --batch 1 --unordered \
    >"$work/a.out" 2>"$work/a.err" &
pids+=($!)
a_pid=$!
echo "\$ consumer --connect $endpoint follow orders --group preparers --batch 1 --unordered &   (process $a_pid)"

# Preparer B acknowledges each order itself once prepared (`--no-auto-ack` and `consumer ack`),
# until it faints after five: from then on it takes orders and prepares none of them.
mkfifo "$work/b.fifo"
"$bin/consumer" --connect "$endpoint" follow orders --group preparers --batch 2 --no-auto-ack \
    --unordered >"$work/b.fifo" 2>"$work/b.err" &
b_pid=$!
pids+=("$b_pid")
echo "\$ consumer --connect $endpoint follow orders --group preparers --batch 2 --no-auto-ack --unordered &   (process $b_pid)"
(
    prepared=0
    while IFS=$'\t' read -r offset order; do
        printf '%s\t%s\n' "$offset" "$order" >>"$work/b.received"
        if ((prepared < 5)); then
            "$bin/consumer" --connect "$endpoint" ack preparers orders "$offset" 2>/dev/null
            printf '%s\t%s\n' "$offset" "$order" >>"$work/b.prepared"
            prepared=$((prepared + 1))
        fi
    done
) <"$work/b.fifo" &
pids+=($!)
wait_for 10 "preparer A to join" grep -q '^following' "$work/a.err"
wait_for 10 "preparer B to join" grep -q '^following' "$work/b.err"
sed 's/^/    (A) /' "$work/a.err"
sed 's/^/    (B) /' "$work/b.err"

step "$tills tills append $orders_per_till orders each, at the same time"
for till in $(seq "$tills"); do
    (
        for order in $(seq "$orders_per_till"); do
            "$bin/producer" --connect "$endpoint" --key "till-$till" orders \
                "till-$till order $order" >/dev/null 2>>"$work/tills.err"
            sleep 0.05
        done
    ) &
    pids+=($!)
done
echo "(in the background)"

step "preparer B faints holding orders it took; it is killed with SIGKILL"
b_fainted() { [[ $(lines "$work/b.received") -ge 6 ]]; }
wait_for 20 "preparer B to take six orders" b_fainted
kill -KILL "$b_pid"
wait "$b_pid" 2>/dev/null || true
echo "preparer B took $(lines "$work/b.received") orders and prepared $(lines "$work/b.prepared") before it was killed"
echo "(its claim, and so its membership, lasts until the claim's lease runs out)"
show consumer --connect "$endpoint" groups preparers

step "preparer A gets the orders B held once their ack timeout has run out"
wait_for 30 "every order to be acknowledged" all_acknowledged preparers
show consumer --connect "$endpoint" groups
grep 'delivered again' "$work/a.err" | sed 's/^/    (A) /' || fail "preparer A was delivered nothing again"
kill -INT "$a_pid"
a_status=0
wait "$a_pid" || a_status=$?
# Ctrl-C ends a follow with 130, the status of an interrupted command.
[[ $a_status -eq 130 ]] || fail "preparer A exited with status $a_status, not 130"

step "checking: every order prepared exactly once"
cut -f2 "$work/a.out" | grep -v '^kitchen opens$' | sort >"$work/a.orders" || true
cut -f2 "$work/b.prepared" | grep -v '^kitchen opens$' | sort >"$work/b.orders" || true
sort "$work/a.orders" "$work/b.orders" >"$work/prepared.orders"
for till in $(seq "$tills"); do
    for order in $(seq "$orders_per_till"); do
        echo "till-$till order $order"
    done
done | sort >"$work/expected.orders"
if ! diff -u "$work/expected.orders" "$work/prepared.orders"; then
    fail "the orders prepared are not the orders taken, each once"
fi
twice=$(comm -12 "$work/a.orders" "$work/b.orders")
[[ -z $twice ]] || fail "prepared by both preparers: $twice"
fainted=$(cut -f2 "$work/b.received" | sort | comm -23 - <(cut -f2 "$work/b.prepared" | sort))
[[ -n $fainted ]] || fail "preparer B held no unprepared order when it was killed"
missed=$(comm -23 <(echo "$fainted") <(cut -f2 "$work/a.out" | sort))
[[ -z $missed ]] || fail "orders B held never reached A: $missed"
echo "preparer A prepared $(wc -l <"$work/a.orders") orders, B $(wc -l <"$work/b.orders"): $orders in all, none twice"
echo "the orders B held unprepared went to A:"
sed 's/^/    /' <<<"$fainted"

step "restarting the broker: the group keeps its place"
stop_broker
start_broker
show consumer --connect "$endpoint" groups
all_acknowledged preparers || fail "the group lost its place across the restart"

step "another group, \"auditors\", reads every order on its own"
show consumer --connect "$endpoint" fetch orders --group auditors --max 100 >"$work/auditors.out"
[[ $(lines "$work/auditors.out") -eq $((orders + 1)) ]] ||
    fail "the auditors read $(lines "$work/auditors.out") orders, not $((orders + 1))"
echo "the auditors read $(lines "$work/auditors.out") messages"

step "resetting the auditors to offset $((orders - 4)): they read the last five again"
show consumer --connect "$endpoint" group-reset auditors orders --to-offset $((orders - 4))
show consumer --connect "$endpoint" fetch orders --group auditors | tee "$work/audit-again.out"
[[ $(lines "$work/audit-again.out") -eq 5 ]] || fail "expected the last five orders again"
show consumer --connect "$endpoint" groups

step "stopping the broker with SIGINT"
stop_broker

step "groups demo finished"
