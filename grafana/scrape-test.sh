#!/usr/bin/env bash
# End-to-end check of the metrics against a real Prometheus; CI runs it after check.sh.
#
#   1. builds `ledger` (debug) and starts, in the background,
#        ledger --metrics-addr 127.0.0.1:<free port> loadtest --anchors 200 --concurrency 32 --duration 60s
#      on the memory backend;
#   2. starts `prometheus` with a temporary configuration (job `avl-ledger`, scrape interval 1s,
#      TSDB in a temporary directory, listening on 127.0.0.1:<free port>);
#   3. waits until Prometheus has scraped the ledger at least 20 times;
#   4. runs EVERY query of every panel of grafana/dashboards/*.json through /api/v1/query, with
#      Grafana's variables substituted ($__rate_interval -> 15s, $__interval -> 15s,
#      $__range -> 1m, $instance / ${instance:regex} -> .*), plus the `instance` template
#      variable's label_values() query and a check that appends are actually flowing:
#        - queries on metrics the memory backend produces must return a non-empty result;
#        - queries that need the PostgreSQL backend or an outage (DB batch size and write
#          latency, DB errors, pool, failovers, buffered records, drain, spool, re-chained
#          records, supervisor mailbox) only have to be valid (status "success"); they are
#          listed as "needs postgres/outage".
#   5. prints `scrape-test: N passed, M failed` and exits non-zero if anything failed.
#
# Bounded: the load test stops by itself after 60 s (and is killed at 90 s), Prometheus is
# killed at 120 s; the EXIT trap stops both as soon as the checks are done.
#
# TODO(postgres): once `LEDGER_BACKEND=postgres` starts a real PostgreSQL backend (the pg and
# supervisor branches), add a second pass: the same load test with LEDGER_BACKEND=postgres and
# LEDGER_DSN=$LEDGER_TEST_DSN, asserting non-empty results for the DB batch size, DB write
# latency and pool panels too; the failover/drain/spool panels then still need an outage
# (stop PostgreSQL mid-run) to be non-empty. Until then those queries are only checked for
# validity, and the output says so for each of them.
#
# Needs cargo, prometheus (Debian: `apt-get install prometheus`), curl and python3.
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
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
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

echo "building ledger (debug)"
(cd "$root" && cargo build -q -p ledger-cli)
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
ledger="$target_dir/debug/ledger"

metrics_port="$(free_port)"
prom_port="$(free_port)"
metrics_url="http://127.0.0.1:$metrics_port"
prom_url="http://127.0.0.1:$prom_port"

echo "starting the load test, metrics on 127.0.0.1:$metrics_port"
env -u LEDGER_CONFIG -u LEDGER_DSN LEDGER_BACKEND=memory \
    timeout 90 "$ledger" --metrics-addr "127.0.0.1:$metrics_port" \
    loadtest --anchors 200 --concurrency 32 --duration 60s --json \
    >"$tmp/loadtest.out" 2>"$tmp/loadtest.err" &
pids+=("$!")
if ! wait_for 30 "the ledger's metrics listener" curl -sf "$metrics_url/health"; then
    cat "$tmp/loadtest.err" >&2
    exit 1
fi

cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: avl-ledger
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
EOF
echo "starting prometheus on 127.0.0.1:$prom_port"
timeout 120 prometheus \
    --config.file="$tmp/prometheus.yml" \
    --storage.tsdb.path="$tmp/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" \
    --log.level=warn \
    >"$tmp/prometheus.log" 2>&1 &
pids+=("$!")
if ! wait_for 30 "prometheus to be ready" curl -sf "$prom_url/-/ready"; then
    cat "$tmp/prometheus.log" >&2
    exit 1
fi

# Enough scrapes for 15s rate windows and 1m ranges to hold several samples.
enough_scrapes() {
    curl -sf "$prom_url/api/v1/query" \
        --data-urlencode 'query=count_over_time(up{job="avl-ledger"}[1m]) >= 20' |
        python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["data"]["result"] else 1)'
}
echo "waiting for 20 scrapes"
if ! wait_for 60 "20 scrapes of the ledger" enough_scrapes; then
    cat "$tmp/prometheus.log" "$tmp/loadtest.err" >&2
    exit 1
fi

python3 - "$prom_url" "$here"/dashboards/*.json <<'PY'
import json, re, sys, urllib.parse, urllib.request

prom, dashboards = sys.argv[1], sys.argv[2:]
SUBST = [
    ("${instance:regex}", ".*"),
    ("$instance", ".*"),
    ("$__rate_interval", "15s"),
    ("$__interval", "15s"),
    ("$__range", "1m"),
]
# Metrics only the PostgreSQL backend or an outage (failover, drain, spool) produce.
NEEDS_POSTGRES = re.compile(
    r"ledger_(db_|failovers|buffered|drain|spool|records_rechained|supervisor)")

def get(path, **params):
    url = f"{prom}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # a bad query answers 400 with a JSON error
        return json.load(e)

def panels(items):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))

passed = failed = 0
needs_postgres = []

def check(label, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print(f"{'ok  ' if ok else 'FAIL'} {label}{(': ' + detail) if detail else ''}")

for path in dashboards:
    with open(path) as f:
        dashboard = json.load(f)
    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in SUBST:
                expr = expr.replace(var, value)
            label = f"panel {panel['id']} {panel['title']!r} {target['refId']}"
            if "$" in expr:
                check(label, False, f"unknown Grafana variable in {expr}")
                continue
            answer = get("/api/v1/query", query=expr)
            if answer.get("status") != "success":
                check(label, False, f"{answer.get('error')} in {expr}")
                continue
            series = len(answer["data"]["result"])
            if NEEDS_POSTGRES.search(expr):
                needs_postgres.append(f"{label} ({series} series now)")
                check(label + " [needs postgres/outage: valid]", True)
            else:
                check(label, series > 0, "" if series else f"empty result for {expr}")

# The dashboard's `instance` variable: label_values(ledger_appends_total, instance).
values = get("/api/v1/label/instance/values", **{"match[]": "ledger_appends_total"})
check("variable instance: label_values(ledger_appends_total, instance)",
      values.get("status") == "success" and bool(values.get("data")),
      "" if values.get("data") else "no instance values")

# The load is really running while the dashboard is queried.
flowing = get("/api/v1/query",
              query='sum(rate(ledger_appends_total{outcome="ok"}[15s])) > 0')
check("appends are flowing (ok rate > 0)",
      flowing.get("status") == "success" and bool(flowing["data"]["result"]))

if needs_postgres:
    print("\nneeds postgres/outage (checked for validity only; see the TODO in scrape-test.sh):")
    for line in needs_postgres:
        print(f"  - {line}")
print(f"\nscrape-test: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
