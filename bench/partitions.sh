#!/usr/bin/env bash
# W1 on two partitions (two PostgreSQL servers on this machine) against W1 on one, in the
# same run, with each server's pgbench ceiling.
#
#   bench/partitions.sh LEDGER_BINARY [RUNS]
#
# Makes a second PostgreSQL cluster with `pg_createcluster` on a free port (dropped at
# exit; the main cluster is only given databases). Each run, in alternating order:
#   one:  a fresh database on the main server, `ledger migrate up`, then
#         `ledger loadtest --anchors 10000 --appends-per-anchor 20 --concurrency 512 --json`
#         (W1) with LEDGER_DSN;
#   two:  fresh databases on the main server and on the second one, `ledger migrate up`
#         with LEDGER_PARTITIONS listing both, then the same load test.
# and pgbench with bench/ceiling.sql (500-row INSERTs, 4 clients, 100 transactions) on
# each server. Prints one line per measurement and the medians at the end.
# Needs root (pg_createcluster, runuser), pgbench, psql, python3.
set -euo pipefail
bin=${1:?usage: $0 LEDGER_BINARY [RUNS]}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
runs=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
ver=$(ls /etc/postgresql | sort -n | tail -1)
name=avl_bench_parts_$$
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export PGUSER=${PGUSER:-postgres}
main="127.0.0.1:5432"
second="127.0.0.1:$port"
cleanup() {
    pg_dropcluster --stop "$ver" "$name" >/dev/null 2>&1 || true
    psql -qX -h 127.0.0.1 -p 5432 -d postgres -c "DROP DATABASE IF EXISTS avl_bench_p0" \
        -c "DROP DATABASE IF EXISTS avl_bench_ceiling" >/dev/null 2>&1 || true
}
trap cleanup EXIT
pg_createcluster "$ver" "$name" --port "$port" -- --auth=trust >/dev/null
# The second server gets the main one's memory and durability settings.
for setting in shared_buffers max_connections synchronous_commit fsync wal_level; do
    value=$(psql -qXtA -h 127.0.0.1 -p 5432 -d postgres -c "SHOW $setting")
    echo "$setting = '$value'" >>"/etc/postgresql/$ver/$name/postgresql.conf"
done
echo "listen_addresses = '127.0.0.1'" >>"/etc/postgresql/$ver/$name/postgresql.conf"
pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start
until pg_isready -q -h 127.0.0.1 -p "$port"; do sleep 0.1; done

fresh() { # host:port db
    local h=${1%:*} p=${1#*:}
    psql -qX -h "$h" -p "$p" -d postgres -c "DROP DATABASE IF EXISTS $2" -c "CREATE DATABASE $2" >/dev/null
}
ceiling() { # host:port
    local h=${1%:*} p=${1#*:}
    fresh "$1" avl_bench_ceiling
    LEDGER_DSN="postgres://$PGUSER@$1/avl_bench_ceiling" "$bin" migrate up >/dev/null
    tps=$(pgbench -n -h "$h" -p "$p" -c 4 -j 4 -t 100 -f "$here/ceiling.sql" avl_bench_ceiling 2>/dev/null |
        awk '/^tps = / { print $3 }')
    awk -v t="$tps" 'BEGIN { printf "%.0f", t * 500 }'
    psql -qX -h "$h" -p "$p" -d postgres -c "DROP DATABASE avl_bench_ceiling" >/dev/null
}
w1() { # one|two
    fresh "$main" avl_bench_p0
    local env=(LEDGER_BACKEND=postgres "LEDGER_LOG=${LEDGER_LOG:-error}")
    if [ "$1" = one ]; then
        env+=("LEDGER_DSN=postgres://$PGUSER@$main/avl_bench_p0")
    else
        fresh "$second" avl_bench_p1
        env+=("LEDGER_PARTITIONS=postgres://$PGUSER@$main/avl_bench_p0 postgres://$PGUSER@$second/avl_bench_p1")
    fi
    env "${env[@]}" "$bin" migrate up >/dev/null
    env "${env[@]}" "$bin" loadtest --anchors 10000 --appends-per-anchor 20 --concurrency 512 --json
}
results=$(mktemp)
for run in $(seq 1 "$runs"); do
    order="one two"
    [ $((run % 2)) = 0 ] && order="two one"
    for cfg in $order; do
        out=$(w1 "$cfg")
        rate=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(round(r["appends_per_sec"]), r["latency_ms"]["p99"], r["errors"])' "$out")
        echo "run $run w1_$cfg: appends_per_s p99_ms errors = $rate load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
        echo "w1_$cfg ${rate%% *}" >>"$results"
    done
    c0=$(ceiling "$main")
    c1=$(ceiling "$second")
    echo "run $run pgbench_rows_per_s: main=$c0 second=$c1"
    echo "ceiling_main $c0" >>"$results"
    echo "ceiling_second $c1" >>"$results"
done
python3 - "$results" <<'PY'
import statistics, sys
vals = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    vals.setdefault(k, []).append(float(v))
for k in ("w1_one", "w1_two", "ceiling_main", "ceiling_second"):
    print(f"median {k}: {statistics.median(vals[k]):.0f} ({', '.join(f'{v:.0f}' for v in vals[k])})")
PY
rm -f "$results"
