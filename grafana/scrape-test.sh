#!/usr/bin/env bash
# End-to-end check of the metrics against a real Prometheus; CI runs it after check.sh.
# Two passes, one per backend (memory, then postgres); each pass:
#
#   1. starts, in the background, the test witness (avl-test-witness) and, with a fresh
#      signing key and that witness configured,
#        ledger --metrics-addr 127.0.0.1:<free port> loadtest --anchors 200 --concurrency 32 --duration 60s
#      (the postgres pass on a fresh database created on the server of $LEDGER_TEST_DSN,
#      default postgres://postgres@127.0.0.1:5432/postgres, migrated with `ledger migrate up`
#      and dropped afterwards); the postgres pass also starts
#        ledger --metrics-addr 127.0.0.1:<free port> serve --listen 127.0.0.1:<free port>
#      on the same database and a client fetching /checkpoint, tiles, an entry bundle and an
#      unknown path from it every 0.2 s (the HTTP panels' data);
#   2. starts `prometheus` with a temporary configuration (job `avl-ledger`, scrape interval 1s,
#      TSDB in a temporary directory, listening on 127.0.0.1:<free port>);
#   3. waits until Prometheus has scraped the ledger at least 20 times;
#   4. runs EVERY query of every panel of grafana/dashboards/*.json through /api/v1/query, with
#      Grafana's variables substituted ($__rate_interval -> 15s, $__interval -> 15s,
#      $__range -> 1m, $instance / ${instance:regex} -> .*), plus the `instance` template
#      variable's label_values() query, a check that appends are flowing and one that the
#      pass's backend is the active one:
#        - every query must be valid (status "success");
#        - queries on metrics the pass's backend produces must return a non-empty result;
#        - the others only have to be valid, and are listed: on the memory pass as "needs
#          postgres/outage/serve" (DB batch size, write latency, errors and pool, writer
#          mailbox, failovers, buffered records, spool, re-chained records, and the HTTP
#          metrics of `ledger serve`, which runs on the postgres pass only), on the
#          postgres pass as "needs an outage" (failovers, buffered records, spool,
#          re-chained records: only a PostgreSQL outage during the load produces them, and
#          this script does not cause one);
#   5. stops both processes.
# It ends with `scrape-test: N passed, M failed` and exits non-zero if anything failed.
#
# Bounded: each load test stops by itself after 60 s (and is killed at 90 s), each Prometheus
# is killed at 120 s; a pass stops both as soon as its checks are done, and the EXIT trap
# stops whatever is left. A run takes about a minute after the build.
#
# Needs cargo, prometheus (Debian: `apt-get install prometheus`), curl, python3, and for the
# postgres pass psql and a PostgreSQL server that allows CREATE DATABASE.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

for tool in cargo prometheus curl python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "scrape-test.sh: $tool not found (prometheus: apt-get install prometheus)" >&2
        exit 2
    fi
done

tmp="$(mktemp -d)"
pids=()
admin_dsn="${LEDGER_TEST_DSN:-postgres://postgres@127.0.0.1:5432/postgres}"
scrape_db=""

drop_scrape_db() {
    if [ -n "$scrape_db" ]; then
        psql -q "$admin_dsn" -c "DROP DATABASE IF EXISTS \"$scrape_db\" WITH (FORCE)" \
            >/dev/null 2>&1 || true
        scrape_db=""
    fi
}

# Stops the background processes this script started (and only those), by pid.
stop_started() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}

cleanup() {
    stop_started
    drop_scrape_db
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for SECONDS DESCRIPTION COMMAND...: retries COMMAND every 0.5 s until it succeeds.
wait_for() {
    local seconds="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "scrape-test.sh: gave up after ${seconds}s waiting for $what" >&2
            return 1
        fi
        sleep 0.5
    done
}

# enough_scrapes PROMETHEUS_URL: Prometheus holds at least 20 scrapes of the ledger, enough for
# 15s rate windows and 1m ranges to have several samples.
enough_scrapes() {
    curl -sf "$1/api/v1/query" \
        --data-urlencode 'query=count_over_time(up{job="avl-ledger"}[1m]) >= 20' |
        python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["data"]["result"] else 1)'
}

echo "building ledger and the test witness (debug)"
(cd "$root" && cargo build -q -p ledger-cli && cargo build -q -p integration-tests --bin avl-test-witness)
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
ledger="$target_dir/debug/ledger"
test_witness="$target_dir/debug/avl-test-witness"

passed=0
failed=0

# run_pass BACKEND [LEDGER_DSN]: one load test, one Prometheus, every dashboard query. Adds to
# `passed` and `failed`; returns non-zero if the pass could not run at all. Leaves its two
# processes running: the caller stops them (stop_started).
run_pass() {
    local backend="$1" dsn="${2:-}"
    local dir="$tmp/$backend"
    mkdir -p "$dir"
    local metrics_port prom_port
    metrics_port="$(free_port)"
    prom_port="$(free_port)"
    local metrics_url="http://127.0.0.1:$metrics_port"
    local prom_url="http://127.0.0.1:$prom_port"

    echo
    echo "=== $backend pass: load test, metrics on 127.0.0.1:$metrics_port"
    local env_dsn=(-u LEDGER_DSN)
    if [ -n "$dsn" ]; then
        env_dsn=(LEDGER_DSN="$dsn")
    fi
    # A signing key and one witness (the test witness), so the witness panels have data.
    "$ledger" keygen --origin example.com/avl-scrape --out "$dir/key" >/dev/null 2>&1
    local witness_port
    witness_port="$(free_port)"
    timeout 120 "$test_witness" --listen "127.0.0.1:$witness_port" --key "$dir/witness.key" \
        --name witness.example/scrape --log-key "$dir/key/checkpoint.pub" \
        >"$dir/witness.out" 2>&1 &
    pids+=("$!")
    local wait_until=$((SECONDS + 10))
    until [ -s "$dir/witness.key.pub" ] && grep -q '^listening' "$dir/witness.out"; do
        if ((SECONDS >= wait_until)); then
            echo "scrape-test.sh: the test witness did not start:" >&2
            cat "$dir/witness.out" >&2
            return 1
        fi
        sleep 0.2
    done
    env -u LEDGER_CONFIG -u LEDGER_METRICS_ADDR "${env_dsn[@]}" LEDGER_BACKEND="$backend" \
        LEDGER_CHECKPOINT_KEY="$dir/key/checkpoint.key" \
        LEDGER_WITNESSES="http://127.0.0.1:$witness_port $(cat "$dir/witness.key.pub")" \
        timeout 90 "$ledger" --metrics-addr "127.0.0.1:$metrics_port" \
        loadtest --anchors 200 --concurrency 32 --duration 60s --json \
        >"$dir/loadtest.out" 2>"$dir/loadtest.err" &
    local ledger_pid="$!"
    pids+=("$ledger_pid")
    local deadline=$((SECONDS + 30))
    until curl -sf "$metrics_url/health" >/dev/null 2>&1; do
        if ! kill -0 "$ledger_pid" 2>/dev/null || ((SECONDS >= deadline)); then
            echo "scrape-test.sh: the ledger's metrics listener did not come up:" >&2
            cat "$dir/loadtest.err" >&2
            return 1
        fi
        sleep 0.5
    done

    local targets="\"127.0.0.1:$metrics_port\""
    if [ "$backend" = postgres ]; then
        # `ledger serve` on the same database, and a client asking it for a few resources.
        local serve_metrics_port serve_port
        serve_metrics_port="$(free_port)"
        serve_port="$(free_port)"
        echo "=== $backend pass: ledger serve on 127.0.0.1:$serve_port, metrics on 127.0.0.1:$serve_metrics_port"
        env -u LEDGER_CONFIG -u LEDGER_METRICS_ADDR "${env_dsn[@]}" LEDGER_BACKEND="$backend" \
            timeout 120 "$ledger" --metrics-addr "127.0.0.1:$serve_metrics_port" \
            serve --listen "127.0.0.1:$serve_port" --workers 1 \
            >"$dir/serve.out" 2>"$dir/serve.err" &
        pids+=("$!")
        if ! wait_for 30 "ledger serve to listen" curl -s -o /dev/null "http://127.0.0.1:$serve_port/"; then
            cat "$dir/serve.err" >&2
            return 1
        fi
        (
            for _ in $(seq 600); do
                for path in checkpoint tile/0/000.p/1 tile/entries/000.p/1 tile/0/000 nope; do
                    curl -s -o /dev/null "http://127.0.0.1:$serve_port/$path" || true
                done
                sleep 0.2
            done
        ) &
        pids+=("$!")
        targets="$targets, \"127.0.0.1:$serve_metrics_port\""
    fi

    printf '%s\n' \
        "global:" \
        "  scrape_interval: 1s" \
        "  evaluation_interval: 1s" \
        "scrape_configs:" \
        "  - job_name: avl-ledger" \
        "    metrics_path: /metrics" \
        "    static_configs:" \
        "      - targets: [$targets]" \
        >"$dir/prometheus.yml"
    echo "=== $backend pass: prometheus on 127.0.0.1:$prom_port"
    timeout 120 prometheus \
        --config.file="$dir/prometheus.yml" \
        --storage.tsdb.path="$dir/tsdb" \
        --web.listen-address="127.0.0.1:$prom_port" \
        --log.level=warn \
        >"$dir/prometheus.log" 2>&1 &
    pids+=("$!")
    if ! wait_for 30 "prometheus to be ready" curl -sf "$prom_url/-/ready"; then
        cat "$dir/prometheus.log" >&2
        return 1
    fi

    echo "=== $backend pass: waiting for 20 scrapes"
    if ! wait_for 60 "20 scrapes of the ledger" enough_scrapes "$prom_url"; then
        cat "$dir/prometheus.log" "$dir/loadtest.err" >&2
        return 1
    fi

    python3 "$here/scrape-check.py" "$backend" "$prom_url" "$dir/counts" \
        "$here"/dashboards/*.json || return 1
    local counts
    counts="$(cat "$dir/counts")"
    passed=$((passed + ${counts% *}))
    failed=$((failed + ${counts#* }))
}

if ! run_pass memory; then
    failed=$((failed + 1))
    echo "FAIL [memory] the pass could not run (see above)"
fi
stop_started

# The postgres pass, on a fresh migrated database of the test server.
if ! command -v psql >/dev/null 2>&1; then
    failed=$((failed + 1))
    echo "FAIL [postgres] psql not found: cannot create the pass's database"
else
    scrape_db="avl_scrape_$$_$RANDOM"
    scrape_dsn="$(python3 -c '
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$admin_dsn" "$scrape_db")"
    if psql -q "$admin_dsn" -c "CREATE DATABASE \"$scrape_db\"" >/dev/null &&
        env -u LEDGER_CONFIG LEDGER_DSN="$scrape_dsn" "$ledger" migrate up >/dev/null; then
        if ! run_pass postgres "$scrape_dsn"; then
            failed=$((failed + 1))
            echo "FAIL [postgres] the pass could not run (see above)"
        fi
        stop_started
    else
        failed=$((failed + 1))
        echo "FAIL [postgres] cannot create and migrate database $scrape_db on the test server"
    fi
    drop_scrape_db
fi

echo
echo "scrape-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
