#!/usr/bin/env bash
# W1 on PostgreSQL with one dead witness configured vs none, interleaved, same binary.
#
#   bench/w1-witness.sh LEDGER_BINARY [RUNS]
#
# Both variants sign checkpoints (witnesses need a key; a new key per run): a fresh, migrated
# database, then `ledger loadtest --anchors 10000 --appends-per-anchor 20 --concurrency 512
# --json` — once with no witness, once with LEDGER_WITNESSES naming 127.0.0.1:<a port nothing
# listens on>. Prints one line per run and variant: appends/s, p99, and the load average.
# Server: $PGHOST/$PGPORT/$PGUSER (default 127.0.0.1, 5432, postgres); database
# avl_bench_witness$AVL_BENCH_SUFFIX.
set -euo pipefail
bin=${1:?usage: $0 LEDGER_BINARY [RUNS]}
runs=${2:-3}
db=avl_bench_witness${AVL_BENCH_SUFFIX:-}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
dsn="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true' EXIT
# A cosignature/v1 verifier key for a witness that never answers (the test-only key of
# docs/HASHING.md; it only has to parse).
wkey=witness.example/avl-vectors+4395096c+BIE5dw6ofRdfVqNUZsNMfszLjYqRtO43ol32D1uPybOU
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run_one() {
    # A new key per database: the signer's state file beside a key refuses a fresh, empty
    # log under a key that already signed a longer one (a rollback).
    rm -rf "$tmp/key"
    "$bin" keygen --origin example.com/avl-bench --out "$tmp/key" >/dev/null 2>&1
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    LEDGER_DSN=$dsn "$bin" migrate up >/dev/null
    env LEDGER_BACKEND=postgres LEDGER_DSN="$dsn" LEDGER_CHECKPOINT_KEY="$tmp/key/checkpoint.key" "$@" \
        "$bin" loadtest --anchors 10000 --appends-per-anchor 20 --concurrency 512 --json \
        2>"$tmp/stderr"
}
for run in $(seq 1 "$runs"); do
    # Alternate which variant goes first: a run right after another pays for its predecessor's
    # dropped database and checkpoints.
    order="none dead"
    if [ $((run % 2)) = 0 ]; then order="dead none"; fi
    for variant in $order; do
        if [ "$variant" = dead ]; then
            out=$(run_one LEDGER_WITNESSES="http://127.0.0.1:$port $wkey")
        else
            out=$(run_one)
        fi
        rate=$(printf '%s' "$out" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(round(j["appends_per_sec"]), j["latency_ms"]["p99"], j["checkpoint"]["size"], j["errors"])')
        echo "run $run witness=$variant appends_per_s,p99_ms,checkpoint_size,errors=$rate load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
    done
done
