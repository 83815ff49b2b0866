#!/usr/bin/env bash
# Validates the observability assets; CI runs it. Exits non-zero on the first failure.
#   1. promtool check rules   alerts/avl-rules.yml       (rule syntax and PromQL)
#   2. promtool test rules    alerts/avl-rules.test.yml  (every alert, firing and not firing)
#   3. promtool check config  prometheus.yml             (example scrape config)
#   4. every PromQL expression of dashboards/*.json parses (Grafana's $variables substituted,
#      each expression checked as a recording rule by promtool)
# Needs promtool (Debian: `apt-get install prometheus`) and python3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

for tool in promtool python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "check.sh: $tool not found (promtool: apt-get install prometheus)" >&2
        exit 2
    fi
done

promtool check rules alerts/avl-rules.yml
promtool test rules alerts/avl-rules.test.yml
promtool check config prometheus.yml

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for dashboard in dashboards/*.json; do
    python3 - "$dashboard" "$tmp/dashboard-rules.yml" <<'PY'
import json, sys

def panels(items):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))

with open(sys.argv[1]) as f:
    dashboard = json.load(f)  # fails on invalid JSON
subst = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "1m", "$instance": ".+"}
rules = []
for panel in panels(dashboard["panels"]):
    for target in panel.get("targets", []):
        expr = target["expr"]
        for var, value in subst.items():
            expr = expr.replace(var, value)
        if "$" in expr:
            sys.exit(f"{sys.argv[1]}: panel {panel['title']!r}: unknown variable in {expr!r}")
        rules.append({"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": expr})
if not rules:
    sys.exit(f"{sys.argv[1]}: no PromQL expressions found")
with open(sys.argv[2], "w") as f:
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)  # JSON is YAML
PY
    echo "Checking PromQL of $dashboard"
    promtool check rules "$tmp/dashboard-rules.yml" | sed 's/^/  /'
done

echo "grafana/check.sh: all checks passed"
