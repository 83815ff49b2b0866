#!/usr/bin/env bash
# Several processes on one database.
#
#   bench/multi-process.sh LEDGER_BINARY [RUNS]
#
# Each run, each on a fresh migrated database, with
# `ledger loadtest --anchors 100 --appends-per-anchor 200 --concurrency 64 --json`:
#   one     — 1 process (--anchor-seed 7): 20,000 appends;
#   shared  — 2 processes at once, both --anchor-seed 7 (the same 100 anchors): 40,000;
#   disjoint— 2 processes at once, --anchor-seed 7 and 8 (different anchors): 40,000.
# Prints per run and mode: combined appends/s (all appends / the slower process's seconds),
# each process's errors and exit status, the records in the database, and the load average.
# Server: $PGHOST/$PGPORT/$PGUSER (default 127.0.0.1, 5432, postgres).
set -euo pipefail
bin=${1:?usage: $0 LEDGER_BINARY [RUNS]}
runs=${2:-3}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
export LEDGER_BACKEND=postgres
args=(loadtest --anchors 100 --appends-per-anchor 200 --concurrency 64 --json)
db=avl_bench_multi
fresh() {
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    LEDGER_DSN="postgres://$PGUSER@$PGHOST:$PGPORT/$db" "$bin" migrate up >/dev/null
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
report() { # mode, then one JSON line and exit status per process
    local mode=$1; shift
    local total=0 slowest=0 errors="" codes=""
    while [ $# -gt 0 ]; do
        total=$((total + $(field "$1" appends)))
        slowest=$(python3 -c "print(max($slowest, $(field "$1" seconds)))")
        errors="$errors $(field "$1" errors)/$(field "$1" records_missing)"
        codes="$codes $2"
        shift 2
    done
    local rows
    rows=$(psql -qXtA -d $db -c "SELECT count(*) FROM ledger_records")
    printf '%-8s %8.0f appends/s  errors/missing:%s  exit:%s  records in db: %s  load: %s\n' \
        "$mode" "$(python3 -c "print($total / $slowest)")" "$errors" "$codes" "$rows" \
        "$(cut -d' ' -f1-3 /proc/loadavg)"
}
export LEDGER_DSN="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
for run in $(seq 1 "$runs"); do
    echo "run $run"
    fresh
    set +e
    one=$("$bin" "${args[@]}" --anchor-seed 7); c1=$?
    set -e
    report one "$one" $c1
    for mode in shared disjoint; do
        fresh
        second=7
        [ $mode = disjoint ] && second=8
        set +e
        "$bin" "${args[@]}" --anchor-seed 7 > /tmp/avl-multi-a.json & pa=$!
        "$bin" "${args[@]}" --anchor-seed $second > /tmp/avl-multi-b.json & pb=$!
        wait $pa; ca=$?
        wait $pb; cb=$?
        set -e
        report $mode "$(cat /tmp/avl-multi-a.json)" $ca "$(cat /tmp/avl-multi-b.json)" $cb
    done
done
