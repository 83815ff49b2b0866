#!/usr/bin/env bash
# Subscriptions on PostgreSQL: live lag at W1 load and catch-up speed, each with a same-run
# reference.
#
#   bench/subscribe.sh LEDGER_BINARY [REF_BINARY]
#
# RUNS times (default 3), alternated:
#   1. live: a fresh migrated database, then
#      `ledger loadtest --anchors 10000 --appends-per-anchor 20 --concurrency 512 --subscribe --json`
#      (W1 with a subscriber: ack -> delivery p50/p99/max); with REF_BINARY also W1 without
#      `--subscribe` by that binary on a fresh database (the write rate before subscriptions).
#   2. catch-up, on the database of step 1 (200,000 records; read once untimed first, so
#      every reader finds the rows' hint bits set): `ledger tail --count` (a
#      subscription from position 0 to the end, records counted), `ledger export > /dev/null`
#      and psql `\copy` of the same join (leaves with their records, in leaf order) to
#      /dev/null, each timed.
# Prints one line per measurement with the load average, then a SUMMARY line of medians.
# Server: $PGHOST/$PGPORT/$PGUSER (default 127.0.0.1, 5432, postgres); database
# avl_bench_sub$AVL_BENCH_SUFFIX (and ..._ref), dropped at the end.
set -euo pipefail
bin=${1:?usage: $0 LEDGER_BINARY [REF_BINARY]}
ref=${2:-}
runs=${RUNS:-3}
sfx=${AVL_BENCH_SUFFIX:-}
db=avl_bench_sub$sfx db_ref=avl_bench_sub_ref$sfx
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
dsn() { echo "postgres://$PGUSER@$PGHOST:$PGPORT/$1"; }
fresh() {
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
    LEDGER_DSN=$(dsn "$1") "$2" migrate up >/dev/null
}
load() { cut -d' ' -f1-3 /proc/loadavg; }
w1=(loadtest --anchors 10000 --appends-per-anchor 20 --concurrency 512 --json)
out=$(mktemp)
trap 'rm -f "$out" "$out.rss"' EXIT
export LEDGER_BACKEND=postgres
for run in $(seq 1 "$runs"); do
    fresh $db "$bin"
    r=$(LEDGER_DSN=$(dsn $db) "$bin" "${w1[@]}" --subscribe 2>/dev/null)
    echo "live run=$run load=\"$(load)\" $r" | tee -a "$out"
    if [ -n "$ref" ]; then
        fresh $db_ref "$ref"
        r=$(LEDGER_DSN=$(dsn $db_ref) "$ref" "${w1[@]}" 2>/dev/null)
        echo "ref run=$run load=\"$(load)\" $r" | tee -a "$out"
    fi
    # Untimed first read: sets the new rows' hint bits, so the three readers below find the
    # same pages (otherwise the first one pays for it).
    psql -qX -d $db -c "\\copy (SELECT l.leaf_index, r.* FROM ledger_log l JOIN ledger_records r ON r.rid = l.rid ORDER BY l.leaf_index) TO /dev/null"
    r=$(LEDGER_DSN=$(dsn $db) /usr/bin/time -f '%M' -o "$out.rss" "$bin" tail --count 2>/dev/null)
    echo "tail run=$run load=\"$(load)\" peak_rss_kb=$(cat "$out.rss") $r" | tee -a "$out"
    s=$(date +%s.%N)
    LEDGER_DSN=$(dsn $db) "$bin" export 2>/dev/null >/dev/null
    e=$(date +%s.%N)
    echo "export run=$run load=\"$(load)\" {\"seconds\": $(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.3f", e - s }')}" | tee -a "$out"
    s=$(date +%s.%N)
    psql -qX -d $db -c "\\copy (SELECT l.leaf_index, r.* FROM ledger_log l JOIN ledger_records r ON r.rid = l.rid ORDER BY l.leaf_index) TO /dev/null"
    e=$(date +%s.%N)
    echo "copy run=$run load=\"$(load)\" {\"seconds\": $(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.3f", e - s }')}" | tee -a "$out"
done
psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" -c "DROP DATABASE IF EXISTS $db_ref" >/dev/null
python3 - "$out" <<'PY'
import json, statistics, sys
m = {}
for line in open(sys.argv[1]):
    kind = line.split()[0]
    body = json.loads(line[line.index("{"):])
    m.setdefault(kind, []).append(body)
med = lambda xs: statistics.median(xs)
n = 200_000
live = m["live"]
for r in live:
    s = r["subscription"]
    assert r["errors"] == 0 and s["undelivered"] == 0 and s["duplicates"] == 0 and s["disorder"] == 0, r
parts = [
    "live_p99_ms=%.1f" % med([r["subscription"]["ack_to_delivery_ms"]["p99"] for r in live]),
    "live_p50_ms=%.1f" % med([r["subscription"]["ack_to_delivery_ms"]["p50"] for r in live]),
    "append_p99_ms=%.1f" % med([r["latency_ms"]["p99"] for r in live]),
    "w1_subscribed=%.0f" % med([r["appends_per_sec"] for r in live]),
]
if "ref" in m:
    parts.append("w1_ref=%.0f" % med([r["appends_per_sec"] for r in m["ref"]]))
parts += [
    "tail=%.0f/s" % med([r["records_per_sec"] for r in m["tail"]]),
    "tail_peak_rss_kb=%d" % max(int(l.split("peak_rss_kb=")[1].split()[0]) for l in open(sys.argv[1]) if l.startswith("tail ")),
    "export=%.0f/s" % med([n / r["seconds"] for r in m["export"]]),
    "copy=%.0f/s" % med([n / r["seconds"] for r in m["copy"]]),
]
print("SUMMARY", " ".join(parts))
PY
