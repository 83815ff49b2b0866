#!/usr/bin/env bash
# Issue 12's figures for one binary against a reference binary, runs alternated.
#
#   bench/write-path.sh NEW_BINARY REF_BINARY
#
# Memory: W1 (5 alternated pairs), 1 anchor x 200,000 (3 runs of NEW), 1,000,000 anchors x 2
# with peak RSS (3 runs of NEW, 1 of REF). PostgreSQL: bench/w1-postgres.sh (3 runs each,
# pgbench ceiling per run), then W1 at concurrency 32..512 (NEW; 32 and 128 for REF), each on
# a fresh migrated database. Server: $PGHOST/$PGPORT/$PGUSER (default 127.0.0.1, 5432,
# postgres); it creates and drops the database avl_bench_conc.
set -euo pipefail
new=${1:?usage: $0 NEW_BINARY REF_BINARY}
ref=${2:?usage: $0 NEW_BINARY REF_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
load() { cut -d' ' -f1-3 /proc/loadavg; }
summary() {
    python3 -c "import json,sys; d=json.load(sys.stdin); print(round(d['appends_per_sec']), 'p50', d['latency_ms']['p50'], 'p95', d['latency_ms']['p95'], 'errors', d['errors'], 'breaks', d['continuity_breaks'], 'missing', d['records_missing'], 'verified', d['anchors_verified'])"
}
memory() { "$1" loadtest --anchors "$2" --appends-per-anchor "$3" --concurrency 512 --json 2>/dev/null; }
echo "== W1 memory, alternated $(date -u +%H:%M) load $(load)"
for _ in 1 2 3 4 5; do
    echo -n "new "; memory "$new" 10000 20 | summary
    echo -n "ref "; memory "$ref" 10000 20 | summary
done
echo "== 1 anchor x 200,000 $(date -u +%H:%M) load $(load)"
for _ in 1 2 3; do echo -n "new "; memory "$new" 1 200000 | summary; done
echo "== 1,000,000 anchors x 2, peak RSS in KiB $(date -u +%H:%M) load $(load)"
rss=$(mktemp)
for who in new new new ref; do
    bin=$new; [ "$who" = ref ] && bin=$ref
    echo -n "$who "; /usr/bin/time -f %M -o "$rss" "$bin" loadtest --anchors 1000000 \
        --appends-per-anchor 2 --concurrency 512 --json 2>/dev/null | summary | tr '\n' ' '
    echo "rss_kib $(tail -1 "$rss")"
done
rm -f "$rss"
echo "== W1 PostgreSQL with its pgbench ceiling $(date -u +%H:%M) load $(load)"
echo "-- new"; "$here/w1-postgres.sh" "$new" 3 2>/dev/null
echo "-- ref"; "$here/w1-postgres.sh" "$ref" 3 2>/dev/null
concurrency() {
    local db=avl_bench_conc
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
    LEDGER_DSN="postgres://$PGUSER@$PGHOST:$PGPORT/$db" "$1" migrate up >/dev/null
    echo -n "$3 concurrency $2: "
    LEDGER_BACKEND=postgres LEDGER_DSN="postgres://$PGUSER@$PGHOST:$PGPORT/$db" "$1" loadtest \
        --anchors 10000 --appends-per-anchor 20 --concurrency "$2" --json 2>/dev/null | summary
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
}
echo "== W1 PostgreSQL by concurrency $(date -u +%H:%M) load $(load)"
for c in 32 64 128 256 512; do concurrency "$new" $c new; done
for c in 32 128; do concurrency "$ref" $c ref; done
echo "== end $(date -u +%H:%M) load $(load)"
