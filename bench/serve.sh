#!/usr/bin/env bash
# Tiles served per second and p99 latency of `ledger serve` under 64 concurrent clients, with
# wrk (Debian: apt-get install wrk), against a log of 65,536 leaves on a fresh database of
# the server of $LEDGER_TEST_DSN (default postgres://postgres@127.0.0.1:5432/postgres).
#
# Each round runs, one after the other, for DURATION each (default 10s):
#   tile       wrk -t2 -c64 --latency: GET /tile/0/<N> over the 256 full level-0 tiles in turn
#              (after the first pass each worker answers them from its tile cache)
#   tile-db    the same against a second server started with --tile-cache 0 (every tile read
#              from PostgreSQL)
#   checkpoint the same against /checkpoint (one database read per request: the reference
#              for a request that reads PostgreSQL once)
#   404        the same against /nope (no database: the server's own ceiling)
# ROUNDS rounds (default 3); prints every run and the medians per target (requests/s, p99).
#
# Usage: bench/serve.sh [ROUNDS] [DURATION]       (builds the release binary first)
set -euo pipefail

rounds="${1:-3}"
duration="${2:-10s}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
admin_dsn="${LEDGER_TEST_DSN:-postgres://postgres@127.0.0.1:5432/postgres}"
for tool in cargo wrk psql python3 curl; do
    command -v "$tool" >/dev/null || { echo "bench/serve.sh: $tool not found" >&2; exit 2; }
done

(cd "$root" && cargo build -q --release -p ledger-cli)
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
ledger="$target_dir/release/ledger"

tmp="$(mktemp -d)"
db="avl_bench_serve_$$"
dsn="$(python3 -c '
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$admin_dsn" "$db")"
serve_pid=""
serve_db_pid=""
cleanup() {
    if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
    if [ -n "$serve_db_pid" ]; then kill "$serve_db_pid" 2>/dev/null || true; wait "$serve_db_pid" 2>/dev/null || true; fi
    psql -q "$admin_dsn" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

psql -q "$admin_dsn" -c "CREATE DATABASE \"$db\""
export LEDGER_BACKEND=postgres LEDGER_DSN="$dsn"
unset LEDGER_CONFIG LEDGER_METRICS_ADDR
"$ledger" migrate up >/dev/null
"$ledger" keygen --origin bench.example/avl --out "$tmp/keys" >/dev/null 2>&1
LEDGER_CHECKPOINT_KEY="$tmp/keys/checkpoint.key" LEDGER_CHECKPOINT_INTERVAL=0.2 \
    "$ledger" loadtest --anchors 256 --appends-per-anchor 256 --concurrency 64 --json \
    >"$tmp/fill.json"
size="$("$ledger" checkpoint --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["size"])')"
echo "log: $size leaves; $(nproc) cores shared by wrk, ledger serve and PostgreSQL"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$ledger" serve --listen "127.0.0.1:$port" >"$tmp/serve.out" 2>"$tmp/serve.err" &
serve_pid="$!"
port_db="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$ledger" serve --listen "127.0.0.1:$port_db" --tile-cache 0 >"$tmp/serve-db.out" 2>"$tmp/serve-db.err" &
serve_db_pid="$!"
for p in "$port" "$port_db"; do
    for _ in $(seq 60); do
        curl -s -o /dev/null "http://127.0.0.1:$p/" && break
        sleep 0.5
    done
    curl -sf -o /dev/null "http://127.0.0.1:$p/tile/0/255" || { echo "no full tile 255 on $p" >&2; exit 1; }
done
base="http://127.0.0.1:$port"
base_db="http://127.0.0.1:$port_db"

cat >"$tmp/tiles.lua" <<'EOF'
-- The 256 full level-0 tiles in turn (paths 000 .. 255), one per request.
local n = 0
request = function()
  local path = string.format("/tile/0/%03d", n % 256)
  n = n + 1
  return wrk.format("GET", path)
end
EOF

results="$tmp/results"
: >"$results"
run() { # NAME URL [SCRIPT]
    local name="$1" url="$2" out="$tmp/wrk-$1.txt"
    if [ -n "${3:-}" ]; then
        wrk -t2 -c64 -d"$duration" --latency -s "$3" "$url" >"$out"
    else
        wrk -t2 -c64 -d"$duration" --latency "$url" >"$out"
    fi
    python3 - "$name" "$out" >>"$results" <<'EOF'
import re, sys
name, text = sys.argv[1], open(sys.argv[2]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
errors = re.search(r"Socket errors:.*", text)
print(f"{name} {rps:.0f} {p99:.2f} {non2xx.group(1) if non2xx else 0} {errors.group(0) if errors else ''}")
EOF
    tail -n 1 "$results"
}
echo "run: target requests/s p99_ms non2xx [socket errors]"
for round in $(seq "$rounds"); do
    echo "round $round"
    run tile "$base" "$tmp/tiles.lua"
    run tile-db "$base_db" "$tmp/tiles.lua"
    run checkpoint "$base/checkpoint"
    run 404 "$base/nope"
done
python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.split()[:4] for l in open(sys.argv[1]) if l.strip()]
print("\nmedians (requests/s, p99 ms):")
for name in ["tile", "tile-db", "checkpoint", "404"]:
    mine = [r for r in rows if r[0] == name]
    print(f"  {name:10} {statistics.median(float(r[1]) for r in mine):>8.0f} req/s"
          f"  p99 {statistics.median(float(r[2]) for r in mine):.2f} ms  ({len(mine)} runs)")
EOF
