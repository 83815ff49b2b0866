#!/usr/bin/env python3
"""Queries a Prometheus that scraped a ledger load test with every dashboard panel's PromQL.

Usage: scrape-check.py BACKEND PROMETHEUS_URL COUNTS_FILE DASHBOARD.json...
(called by scrape-test.sh)

Prints one line per check and writes "PASSED FAILED" to COUNTS_FILE. BACKEND is the backend the
load test ran on (memory or postgres): queries on metrics that backend cannot produce without an
outage (or, for memory, without PostgreSQL) only have to be valid; all others must return data.
"""

import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

# Grafana variables and what they stand for here (1 s scrape interval, a ~20 s old TSDB).
SUBST = [
    ("${instance:regex}", ".*"),
    ("$instance", ".*"),
    ("$__rate_interval", "15s"),
    ("$__interval", "15s"),
    ("$__range", "1m"),
]
# Metrics only a PostgreSQL outage (failover, buffer, spool) produces, and those the
# PostgreSQL backend (with its writer) produces in normal operation. The drain's series exist
# from start (registered at 0), so their panels must answer on every pass.
NEEDS_OUTAGE = r"ledger_(failovers|buffered|spool|records_rechained|records_kept)"
NEEDS_POSTGRES = r"ledger_(db_|writer_pending|partition_on_postgres)"
# Metrics only a ledger configured `replication: synchronous` (with a standby) produces.
NEEDS_STANDBY = r"ledger_replication_"
# Metrics only `ledger serve` emits; scrape-test.sh runs it (and a client) on the postgres
# pass only, where these panels must answer.
NEEDS_SERVE = r"ledger_http_"


def main():
    backend, prom, counts_file, dashboards = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    if backend == "memory":
        optional = re.compile(f"{NEEDS_OUTAGE}|{NEEDS_POSTGRES}|{NEEDS_STANDBY}|{NEEDS_SERVE}")
        why = "needs postgres/outage/standby/serve"
    else:
        optional = re.compile(f"{NEEDS_OUTAGE}|{NEEDS_STANDBY}")
        why = "needs an outage/standby"

    def get(path, **params):
        url = f"{prom}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:  # a bad query answers 400 with a JSON error
            return json.load(e)

    def non_empty(query):
        answer = get("/api/v1/query", query=query)
        return answer.get("status") == "success" and bool(answer["data"]["result"])

    counts = {"passed": 0, "failed": 0}
    listed = []

    def check(label, ok, detail=""):
        counts["passed" if ok else "failed"] += 1
        line = f"{'ok  ' if ok else 'FAIL'} [{backend}] {label}"
        print(f"{line}: {detail}" if detail else line)

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

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
                if optional.search(expr):
                    listed.append(f"{label} ({series} series now)")
                    check(f"{label} [{why}: valid]", True)
                else:
                    check(label, series > 0, "" if series else f"empty result for {expr}")

    # The dashboard's `instance` variable: label_values(ledger_appends_total, instance).
    values = get("/api/v1/label/instance/values", **{"match[]": "ledger_appends_total"})
    check(
        "variable instance: label_values(ledger_appends_total, instance)",
        values.get("status") == "success" and bool(values.get("data")),
        "" if values.get("data") else "no instance values",
    )
    # The load is really running while the dashboard is queried, on this pass's backend.
    check(
        "appends are flowing (ok rate > 0)",
        non_empty('sum(rate(ledger_appends_total{outcome="ok"}[15s])) > 0'),
    )
    check(
        f"active backend is {backend}",
        non_empty(f'ledger_backend_active{{backend="{backend}"}} == 1'),
    )

    if listed:
        print(f"\n[{backend}] {why} (checked for validity only):")
        for line in listed:
            print(f"  - {line}")
    with open(counts_file, "w") as f:
        print(counts["passed"], counts["failed"], file=f)


if __name__ == "__main__":
    main()
