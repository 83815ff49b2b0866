#!/usr/bin/env bash
# W1 on PostgreSQL with checkpoints every 1 s and with the integrator off, alternated, 3 runs each.
# Usage: bench/w1-checkpoints.sh [LEDGER_BINARY] (default target/release/ledger); PostgreSQL at 127.0.0.1:5432, user postgres.
set -euo pipefail
bin=${1:-target/release/ledger}
for run in 1 2 3; do
  for iv in 1 0; do
    psql -qX -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS avl_w1ck" -c "CREATE DATABASE avl_w1ck" >/dev/null
    dsn=postgres://postgres@127.0.0.1:5432/avl_w1ck
    LEDGER_DSN=$dsn $bin migrate up >/dev/null
    out=$(LEDGER_BACKEND=postgres LEDGER_DSN=$dsn LEDGER_CHECKPOINT_INTERVAL=$iv $bin loadtest --anchors 10000 --appends-per-anchor 20 --concurrency 512 --json 2>/dev/null)
    echo "run=$run interval=$iv load=$(cut -d' ' -f1 /proc/loadavg) $out"
  done
done
psql -qX -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS avl_w1ck" >/dev/null
