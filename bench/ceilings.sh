#!/usr/bin/env bash
# pgbench ceilings for W1's 200,000 rows on this server, from the bare table to the ledger's
# whole schema written the ledger's way, so that a W1 figure can be split into what the
# schema costs and what the ledger (the client) costs.
#
#   bench/ceilings.sh LEDGER_BINARY [RUNS]
#
# Each figure is rows/s of 4 pgbench clients x 100 transactions of 500 rows, on a fresh
# database migrated with the binary's own `ledger migrate up`:
#   bare      ADR-14's table only (`ledger migrate up -n 1`: primary key, hash unique, fork
#             guard, anchor/ts index), bench/ceiling.sql (one multi-row INSERT ... SELECT)
#   schema    every migration (+ tx_id/seq, the integration index, the predecessor trigger),
#             bench/ceiling.sql — the ceiling W1 has been compared with
#   no_prev   as schema, the trigger `ledger_records_prev_fk` dropped
#   writer    every migration, bench/ceiling-writer.sql (the writer's statement: UNNEST of
#             column arrays, text -> JSONB, replication guard, ON CONFLICT (rid))
#   logged    as writer, with one more client running the integrator's rounds beside it
#             (bench/integrator.sql: pending read, one ledger_log row per record, lease row);
#             log_lag_s is how long after the last insert the log held every row
# Prints one line per run. Server: $PGHOST/$PGPORT/$PGUSER (default 127.0.0.1, 5432,
# postgres); database avl_bench_ceilings$AVL_BENCH_SUFFIX, dropped at the end.
# `source`d by bench/w1-postgres.sh for `ceilings_line`.
set -euo pipefail
ceilings_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
ceilings_db=avl_bench_ceilings${AVL_BENCH_SUFFIX:-}

# ceilings_fresh BIN [MIGRATE_ARGS...]: a fresh database, migrated.
ceilings_fresh() {
    local bin=$1
    shift
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $ceilings_db" -c "CREATE DATABASE $ceilings_db" >/dev/null
    LEDGER_DSN="postgres://$PGUSER@$PGHOST:$PGPORT/$ceilings_db" "$bin" migrate up "$@" >/dev/null
}

# ceilings_pgbench SCRIPT: rows/s of the 4-client run (fails unless all 200,000 rows landed).
ceilings_pgbench() {
    local tps rows
    tps=$(pgbench -n -c 4 -j 4 -t 100 -f "$ceilings_here/$1" $ceilings_db 2>/dev/null \
        | awk '/^tps = / { print $3 }')
    rows=$(psql -qXtA -d $ceilings_db -c "SELECT count(*) FROM ledger_records")
    if [ "$rows" != 200000 ]; then
        echo "ceilings: $1 stored $rows rows, not 200000" >&2
        return 1
    fi
    awk -v t="$tps" 'BEGIN { printf "%.0f", t * 500 }'
}

# ceilings_line BIN: one line of every ceiling.
ceilings_line() {
    local bin=$1 bare schema no_prev writer logged lag ipid start logged_rows
    ceilings_fresh "$bin" -n 1
    bare=$(ceilings_pgbench ceiling.sql)
    ceilings_fresh "$bin"
    schema=$(ceilings_pgbench ceiling.sql)
    ceilings_fresh "$bin"
    psql -qX -d $ceilings_db -c "DROP TRIGGER ledger_records_prev_fk ON ledger_records" >/dev/null
    no_prev=$(ceilings_pgbench ceiling.sql)
    ceilings_fresh "$bin"
    writer=$(ceilings_pgbench ceiling-writer.sql)
    ceilings_fresh "$bin"
    pgbench -n -c 1 -T 600 -f "$ceilings_here/integrator.sql" $ceilings_db >/dev/null 2>&1 &
    ipid=$!
    logged=$(ceilings_pgbench ceiling-writer.sql)
    start=$(date +%s.%N)
    while :; do
        logged_rows=$(psql -qXtA -d $ceilings_db -c "SELECT tree_size FROM ledger_integrator")
        [ "$logged_rows" = 200000 ] && break
        if ! kill -0 $ipid 2>/dev/null; then
            echo "ceilings: the integrator pgbench ended with $logged_rows rows logged" >&2
            return 1
        fi
        sleep 0.05
    done
    lag=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')
    kill $ipid
    wait $ipid 2>/dev/null || true
    echo "bare=$bare schema=$schema no_prev=$no_prev writer=$writer logged=$logged log_lag_s=$lag"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    bin=${1:?usage: $0 LEDGER_BINARY [RUNS]}
    for run in $(seq 1 "${2:-3}"); do
        echo "run $run: $(ceilings_line "$bin") load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
    done
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $ceilings_db" >/dev/null
fi
