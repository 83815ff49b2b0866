#!/usr/bin/env bash
# W1 on PostgreSQL with its pgbench ceiling measured in the same run.
#
#   bench/w1-postgres.sh LEDGER_BINARY [RUNS]
#
# For each run: a fresh database, migrated with the binary's own `ledger migrate up`, then
# pgbench inserting W1's 200,000 rows (bench/ceiling.sql: 500 rows per multi-row INSERT,
# 4 clients, 100 transactions each); then a second fresh, migrated database and
# `ledger loadtest --anchors 10000 --appends-per-anchor 20 --concurrency 512 --json`.
# Prints one line per run: pgbench rows/s, the other ceilings of bench/ceilings.sh (bare
# ADR-14 table, schema without the predecessor check, the writer's statement, with the
# integrator's log rows; AVL_BENCH_CEILINGS=0 leaves them out), the load test's JSON, and the
# load average.
# Server: $PGHOST/$PGPORT/$PGUSER (default 127.0.0.1, 5432, postgres). Databases
# avl_bench_ceiling$AVL_BENCH_SUFFIX and avl_bench_w1$AVL_BENCH_SUFFIX (a suffix lets two
# checkouts measure on one server without dropping each other's databases).
# With AVL_BENCH_WITHOUT_PREV_CHECK=1 the load test's database drops the trigger
# `ledger_records_prev_fk` after migrating: the same binary without the predecessor check, to
# measure what the check costs. AVL_BENCH_LOADTEST_ARGS adds arguments to the load test (e.g.
# `--batch 20`: each call appends 20 records to one anchor atomically).
set -euo pipefail
bin=${1:?usage: $0 LEDGER_BINARY [RUNS]}
runs=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
sfx=${AVL_BENCH_SUFFIX:-}
db_ceiling=avl_bench_ceiling$sfx db_w1=avl_bench_w1$sfx
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
fresh() {
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
    LEDGER_DSN="postgres://$PGUSER@$PGHOST:$PGPORT/$1" "$bin" migrate up >/dev/null
}
source "$here/ceilings.sh"
for run in $(seq 1 "$runs"); do
    if [ "${AVL_BENCH_CEILINGS:-1}" = 1 ]; then
        ceilings=$(ceilings_line "$bin")
    else
        ceilings=""
    fi
    fresh $db_ceiling
    tps=$(pgbench -n -c 4 -j 4 -t 100 -f "$here/ceiling.sql" $db_ceiling 2>/dev/null \
        | awk '/^tps = / { print $3 }')
    rows=$(psql -qXtA -d $db_ceiling -c "SELECT count(*) FROM ledger_records")
    fresh $db_w1
    if [ "${AVL_BENCH_WITHOUT_PREV_CHECK:-0}" = 1 ]; then
        psql -qX -d $db_w1 -c "DROP TRIGGER ledger_records_prev_fk ON ledger_records" >/dev/null
    fi
    out=$(LEDGER_BACKEND=postgres LEDGER_DSN="postgres://$PGUSER@$PGHOST:$PGPORT/$db_w1" \
        "$bin" loadtest --anchors 10000 --appends-per-anchor 20 --concurrency 512 --json \
        ${AVL_BENCH_LOADTEST_ARGS:-})
    ceiling=$(awk -v t="$tps" 'BEGIN { printf "%.0f", t * 500 }')
    echo "run $run: pgbench_rows=$rows pgbench_rows_per_s=$ceiling ceilings=\"$ceilings\" loadtest=$out load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
done
psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db_ceiling" -c "DROP DATABASE IF EXISTS $db_w1" \
    -c "DROP DATABASE IF EXISTS $ceilings_db" >/dev/null
