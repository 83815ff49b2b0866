#!/usr/bin/env bash
# W1 on PostgreSQL with signed checkpoints every 1 s and with the integrator off, alternated, 3 runs each
# (RUNS=N to change), each on a fresh database. Prints one JSON line per run, then one summary line:
# both medians, their ratio (target >= 0.90) and the median of the runs' commit -> checkpoint p99.
# Usage: bench/w1-checkpoints.sh [LEDGER_BINARY] (default target/release/ledger); PostgreSQL at 127.0.0.1:5432, user postgres.
set -euo pipefail
bin=${1:-target/release/ledger}
runs=${RUNS:-3}
out_file=$(mktemp)
key_dir=$(mktemp -d)
trap 'rm -rf "$out_file" "$key_dir"' EXIT
# Checkpoints are signed (Ed25519), as in production; the key is thrown away afterwards.
$bin keygen --origin bench.invalid/avl-w1 --out "$key_dir/key" >/dev/null 2>&1
for run in $(seq 1 "$runs"); do
  for iv in 1 0; do
    psql -qX -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS avl_w1ck" -c "CREATE DATABASE avl_w1ck" >/dev/null 2>&1
    dsn=postgres://postgres@127.0.0.1:5432/avl_w1ck
    LEDGER_DSN=$dsn $bin migrate up >/dev/null
    out=$(LEDGER_BACKEND=postgres LEDGER_DSN=$dsn LEDGER_CHECKPOINT_INTERVAL=$iv LEDGER_CHECKPOINT_KEY=$key_dir/key/checkpoint.key $bin loadtest --anchors 10000 --appends-per-anchor 20 --concurrency 512 --json 2>/dev/null)
    line="run=$run interval=$iv load=$(cut -d' ' -f1 /proc/loadavg) $out"
    echo "$line"
    echo "$line" >>"$out_file"
  done
done
psql -qX -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS avl_w1ck" >/dev/null
python3 - "$out_file" <<'PY'
import json, statistics, sys
on, off, p99, loads = [], [], [], []
for line in open(sys.argv[1]):
    head, _, body = line.partition(" {")
    fields = dict(f.split("=") for f in head.split())
    r = json.loads("{" + body)
    loads.append(float(fields["load"]))
    if fields["interval"] == "1":
        assert r["checkpoint"]["signed"] and r["integration"]["covers_all_appends"], line
        on.append(r["appends_per_sec"])
        p99.append(r["integration"]["commit_to_checkpoint_ms"]["p99"])
    else:
        off.append(r["appends_per_sec"])
m_on, m_off = statistics.median(on), statistics.median(off)
print(f"SUMMARY W1 postgres: checkpoints 1 s median {m_on:.0f}/s ({', '.join(f'{x:.0f}' for x in on)}); "
      f"integrator off median {m_off:.0f}/s ({', '.join(f'{x:.0f}' for x in off)}); "
      f"ratio {m_on / m_off:.3f} (target >= 0.90); commit->checkpoint p99 median {statistics.median(p99):.0f} ms "
      f"({', '.join(str(x) for x in p99)}; target <= 2000); load {min(loads):.1f}-{max(loads):.1f}")
PY
