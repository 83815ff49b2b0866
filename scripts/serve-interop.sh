#!/usr/bin/env bash
# `ledger serve` checked by Go's golang.org/x/mod/sumdb/{note,tlog} (scripts/tlog-interop):
# a fresh database on the server of $LEDGER_TEST_DSN (default
# postgres://postgres@127.0.0.1:5432/postgres), the log grown to 1, 257 and 65,793 leaves;
# at each size the Go checker verifies the served checkpoint, recomputes the root from the
# served tiles (tlog.TileHashReader checks each tile against it), checks inclusion proofs of
# leaves read from the entry bundles, and the consistency with the previous size (whose root
# must be the previous checkpoint's).
#
# Usage: scripts/serve-interop.sh [LEDGER_BINARY]   (default: a debug build, built here)
# Needs Go and golang.org/x/mod from Debian: apt-get install golang-go golang-golang-x-mod-dev
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
admin_dsn="${LEDGER_TEST_DSN:-postgres://postgres@127.0.0.1:5432/postgres}"
ledger="${1:-}"
if [ -z "$ledger" ]; then
    (cd "$root" && cargo build -q -p ledger-cli)
    ledger="$(cd "$root" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug/ledger"
fi
tmp="$(mktemp -d)"
db="avl_serve_interop_$$"
serve_pid=""
cleanup() {
    if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
    psql -q "$admin_dsn" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

(cd "$root/scripts/tlog-interop" &&
    GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$tmp/gocache" go build -o "$tmp/tlog-interop" main.go)
psql -q "$admin_dsn" -c "CREATE DATABASE \"$db\""
export LEDGER_BACKEND=postgres
LEDGER_DSN="$(python3 -c '
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$admin_dsn" "$db")"
export LEDGER_DSN
unset LEDGER_CONFIG LEDGER_METRICS_ADDR
"$ledger" migrate up >/dev/null
"$ledger" keygen --origin interop.example/avl --out "$tmp/keys" >/dev/null 2>&1
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$ledger" serve --listen "127.0.0.1:$port" >"$tmp/serve.out" 2>"$tmp/serve.err" &
serve_pid="$!"
previous=""
for step in "1 1" "2 128" "256 256"; do
    read -r anchors per_anchor <<<"$step"
    LEDGER_CHECKPOINT_KEY="$tmp/keys/checkpoint.key" LEDGER_CHECKPOINT_INTERVAL=0.2 \
        "$ledger" loadtest --anchors "$anchors" --appends-per-anchor "$per_anchor" --json >/dev/null
    "$tmp/tlog-interop" "http://127.0.0.1:$port" "$tmp/keys/checkpoint.pub" $previous
    previous="$("$ledger" checkpoint --json | python3 -c 'import json, sys; c = json.load(sys.stdin); print(c["size"], c["root"])')"
done
echo "serve-interop: ok (Go's sumdb/tlog accepted every size)"
