#!/usr/bin/env bash
# A real PostgreSQL server stop (not a proxy fault) during `ledger loadtest` on PostgreSQL.
#
#   scripts/real-server-stop.sh [LEDGER_BINARY] [DURATION_S] [STOP_AFTER_S] [DOWN_FOR_S]
#
# Creates a fresh database, starts a load test with seeded anchors (so the end-of-run check
# compares every acknowledged rid with what is stored), stops its server with
# `pg_ctlcluster ... stop -m immediate` after STOP_AFTER_S seconds, starts it again DOWN_FOR_S
# seconds later, waits for the load test, then checks in SQL that `ledger_records` holds every
# acknowledged append exactly once and that the transparency log has no gap or duplicate.
# Exit 0 only if the load test exited 0 (0 errors, 0 breaks, 0 missing) and the SQL checks hold.
#
# The server is a cluster of its own (`pg_createcluster`, port AVL_STOP_PORT, default 5498),
# dropped on exit: the machine's `main` cluster is never stopped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ledger="${1:-target/release/ledger}"
duration="${2:-30}"
stop_after="${3:-8}"
down_for="${4:-7}"
version="$(ls /etc/postgresql | sort -V | tail -n 1)"
port="${AVL_STOP_PORT:-5498}"
cluster="avl_stop_$$"
db="avl_real_stop"
base="postgres://postgres@127.0.0.1:$port"
work="$(mktemp -d)"
trap 'pg_dropcluster --stop "$version" "$cluster" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
pg_createcluster "$version" "$cluster" --port "$port" -- --auth=trust >/dev/null
pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 1; done

psql -q "$base/postgres" -c "CREATE DATABASE $db"
export LEDGER_BACKEND=postgres LEDGER_DSN="$base/$db"
"$ledger" migrate up >/dev/null
cat >"$work/ledger.yaml" <<EOF
ledger:
  backend: postgres
  spool_dir: $work/spool
EOF

"$ledger" loadtest --config "$work/ledger.yaml" --anchors 1000 --concurrency 64 \
    --duration "${duration}s" --anchor-seed 7 --json >"$work/out.json" &
load=$!
sleep "$stop_after"
echo "stopping PostgreSQL $version (immediate) at $(date +%T)"
pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" stop -m immediate
sleep "$down_for"
echo "starting PostgreSQL $version at $(date +%T)"
pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start
status=0
wait "$load" || status=$?
cat "$work/out.json"
echo

appends=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["appends"])' "$work/out.json")
read -r rows rids < <(psql -qtA -F ' ' "$base/$db" \
    -c "SELECT count(*), count(DISTINCT rid) FROM ledger_records")
read -r leaves distinct_leaves max_leaf < <(psql -qtA -F ' ' "$base/$db" \
    -c "SELECT count(*), count(DISTINCT rid), coalesce(max(leaf_index), -1) FROM ledger_log")
echo "loadtest exit $status; appends acknowledged $appends; rows $rows; distinct rids $rids"
echo "log: $leaves leaves, $distinct_leaves distinct rids, highest index $max_leaf"

ok=1
[ "$status" -eq 0 ] || ok=0
[ "$rows" -eq "$appends" ] && [ "$rids" -eq "$appends" ] || ok=0
# The load test waits for a checkpoint covering all its appends, so the log holds every row,
# each once, with no gap (highest index = leaves - 1).
[ "$leaves" -eq "$rows" ] && [ "$leaves" -eq "$distinct_leaves" ] \
    && [ "$max_leaf" -eq $((leaves - 1)) ] || ok=0
if [ "$ok" -eq 1 ]; then
    echo "PASS: every acknowledged append stored exactly once and logged once, no gap"
else
    echo "FAIL"
    exit 1
fi
