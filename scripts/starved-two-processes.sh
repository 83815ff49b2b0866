#!/usr/bin/env bash
# A slow machine is not an outage: two `ledger loadtest` processes on shared anchors while
# the machine is starved of CPU and disk (BUSY busy loops and WRITERS `dd ... conv=fsync`
# writers that also `sync`), against a dedicated PostgreSQL cluster (never `main`).
#
#   scripts/starved-two-processes.sh [LEDGER_BINARY] [DURATION_S] [BUSY] [WRITERS]
#
# Exit 0 only if both load tests exit 0 with 0 failovers and 0 failed appends. Prints each
# process's failovers, slow_not_down, errors_by_kind and latency p99.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ledger="${1:-target/release/ledger}"
duration="${2:-20}"
busy="${3:-6}"
writers="${4:-3}"
version="$(ls /etc/postgresql | sort -V | tail -n 1)"
name="avl_starved_$$_0"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pg_dropcluster --stop "$version" "$name" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

pg_createcluster "$version" "$name" --port "$port" -- --auth=trust >/dev/null
echo "listen_addresses = '127.0.0.1'" >>"/etc/postgresql/$version/$name/postgresql.conf"
pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start
dsn="postgres://postgres@127.0.0.1:$port/postgres"
export LEDGER_BACKEND=postgres LEDGER_DSN="$dsn" LEDGER_TIMEOUT=10 LEDGER_CHECKPOINT_INTERVAL=0
"$ledger" migrate up >/dev/null

for _ in $(seq "$busy"); do (while :; do :; done) & pids+=($!); done
for i in $(seq "$writers"); do
    (while :; do dd if=/dev/zero of="$work/fill-$i" bs=1M count=32 conv=fsync status=none; sync; done) &
    pids+=($!)
done
sleep 1

for i in 1 2; do
    "$ledger" loadtest --anchors 100 --concurrency 64 --duration "${duration}s" --anchor-seed 7 \
        --json >"$work/out-$i.json" 2>"$work/err-$i.txt" &
    load[$i]=$!
done
ok=1
for i in 1 2; do
    status=0
    wait "${load[$i]}" || status=$?
    python3 - "$work/out-$i.json" "$status" <<'PY' || ok=0
import json, sys
r = json.load(open(sys.argv[1]))
status = int(sys.argv[2])
print(f"exit {status} appends {r['appends']} errors {r['errors']} {r['errors_by_kind']} "
      f"failovers {r['failovers']} slow_not_down {r.get('slow_not_down')} p99 {r['latency_ms']['p99']:.1f} ms "
      f"max {r['latency_ms']['max']:.1f} ms missing {r['records_missing']}")
sys.exit(0 if status == 0 and r['failovers'] == 0 and r['errors'] == 0 else 1)
PY
done
[ "$ok" -eq 1 ] && echo PASS || { echo FAIL; cat "$work"/err-*.txt | tail -20; exit 1; }
