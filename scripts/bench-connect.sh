#!/usr/bin/env bash
# Measures connect's JDBC sink into PostgreSQL beside the database's own floor, in one run, and
# prints one Markdown table: rows per second the sink writes, rows per second `COPY` loads the
# same rows, their ratio, the target (≥ 0.5).
#
# Builds in release mode; starts a PostgreSQL of its own (initdb and pg_ctl from Debian's
# postgresql package, as the postgres user when run as root; default settings, so every commit
# is flushed) and a broker in memory, on free loopback ports. The rows are ROWS (100,000)
# orders of the tutorial's table, each payload about 100 bytes, produced once with
# `producer --value-schema` (the schema envelope, as the tutorial's producer sends them). Each
# round then:
#   - floor: `\copy` of the same rows, from a CSV file, into an empty table like the sink's;
#   - sink: `connect run` with the tutorial's config (insert.mode insert, then upsert, with
#     batch.size 1000) reading the whole topic as a new consumer group, into an empty table,
#     timed from connect's start until the table holds every row.
# Each case runs ROUNDS times (default 3), floor and sink in turn; the table gives medians, and
# a ratio is the median of each round's ratios. Everything it starts is stopped when it ends;
# scratch data goes in a temporary directory that is removed.
#
# Usage: scripts/bench-connect.sh   (the table goes to standard output, progress to standard error)
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-100000}
ROUNDS=${ROUNDS:-3}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "initdb not found: install Debian's postgresql package (scripts/test.sh does)" >&2
    exit 1
fi
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi

cargo build --release -q -p broker -p clients -p connect
target=target/release

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    "${as_pg[@]}" "$bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

mkdir "$work/pg"
if [ "$(id -u)" = 0 ]; then chown postgres: "$work/pg"; fi
pg_port=$(free_port)
"${as_pg[@]}" "$bin/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
    -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null
sql() { psql -X -q -t -A -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c "$1"; }
table='("order_time" bigint primary key, "count" integer not null, "order" text[] not null)'

broker_port=$(free_port)
endpoint="tcp://127.0.0.1:$broker_port"
"$target/broker" --bind "$endpoint" >"$work/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$work/broker.log" && break; sleep 0.1; done

cat >"$work/schema.json" <<'EOF'
{"type": "struct", "optional": false, "name": "order", "fields": [
  {"type": "int64", "optional": false, "field": "order_time"},
  {"type": "int32", "optional": false, "field": "count"},
  {"type": "array", "items": {"type": "string", "optional": false}, "optional": false, "field": "order"}]}
EOF
echo "producing $ROWS orders with the schema envelope" >&2
python3 - "$ROWS" "$work/orders.json" "$work/orders.csv" <<'EOF'
import sys
rows, as_json, as_csv = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(as_json, "w") as j, open(as_csv, "w") as c:
    for i in range(rows):
        t, n = 1_700_000_000_000 + i, 1 + i % 4
        j.write(f'{{"order_time": {t}, "count": {n}, "order": ["cod", "chips", "mushy peas", "curry sauce", "pickled egg"]}}\n')
        c.write(f'{t},{n},"{{cod,chips,""mushy peas"",""curry sauce"",""pickled egg""}}"\n')
EOF
echo "payload bytes per order: $(head -1 "$work/orders.json" | wc -c)" >&2
"$target/producer" --connect "$endpoint" --value-schema "$work/schema.json" orders <"$work/orders.json" >/dev/null

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# floor ROUND: seconds for \copy of the CSV into an empty table.
floor() {
    sql "DROP TABLE IF EXISTS floor_orders; CREATE TABLE floor_orders $table"
    local start end
    start=$(now)
    psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres \
        -c "\\copy floor_orders FROM '$work/orders.csv' WITH (FORMAT csv)"
    end=$(now)
    [ "$(sql 'SELECT count(*) FROM floor_orders')" = "$ROWS" ] || { echo "COPY lost rows" >&2; exit 1; }
    awk -v a="$start" -v b="$end" 'BEGIN { print b - a }'
}

# sink MODE ROUND: seconds from connect's start until the table holds every row.
sink() {
    local mode=$1 round=$2 name="bench_${1}_$2" pk=none
    [ "$mode" = upsert ] && pk=record_value
    sql "DROP TABLE IF EXISTS orders; CREATE TABLE orders $table"
    cat >"$work/$name.json" <<EOF
{"name": "$name", "connector.class": "io.aiven.connect.jdbc.JdbcSinkConnector",
 "topics": "orders", "connection.url": "jdbc:postgresql://127.0.0.1:$pg_port/postgres",
 "connection.user": "postgres", "insert.mode": "$mode", "pk.mode": "$pk",
 "pk.fields": "order_time", "batch.size": "1000", "auto.create": "false",
 "value.converter": "org.apache.kafka.connect.json.JsonConverter"}
EOF
    local start end
    start=$(now)
    "$target/connect" --connect "$endpoint" run --offsets "$work/offsets" "$work/$name.json" \
        >/dev/null 2>"$work/$name.log" &
    local pid=$!
    pids+=($pid)
    until [ "$(sql 'SELECT count(*) FROM orders')" = "$ROWS" ]; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
        sleep 0.05
    done
    end=$(now)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    awk -v a="$start" -v b="$end" 'BEGIN { print b - a }'
}

declare -A seconds ratios
for round in $(seq "$ROUNDS"); do
    for mode in insert upsert; do
        f=$(floor)
        s=$(sink "$mode" "$round")
        echo "round $round $mode: COPY ${f}s, sink ${s}s" >&2
        seconds[floor]+="$f "
        seconds[$mode]+="$s "
        ratios[$mode]+="$(awk -v f="$f" -v s="$s" 'BEGIN { print f / s }') "
    done
done

rate() { echo "$1" | tr ' ' '\n' | grep . | awk -v rows="$ROWS" '{ print rows / $1 }' | median; }
copy_rate=$(rate "${seconds[floor]}")
echo
echo "| case ($ROWS orders, batch.size 1000) | rows/s | floor: COPY rows/s | ratio | target |"
echo "|---|---|---|---|---|"
for mode in insert upsert; do
    r=$(rate "${seconds[$mode]}")
    ratio=$(echo "${ratios[$mode]}" | tr ' ' '\n' | grep . | median)
    printf '| JDBC sink, insert.mode=%s | %.0f | %.0f | %.2f | ≥ 0.5 |\n' "$mode" "$r" "$copy_rate" "$ratio"
done
