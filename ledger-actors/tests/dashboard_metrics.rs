//! Keeps the Grafana dashboard, the Prometheus alert rules and their unit tests in step with
//! `ledger_actors::metrics`:
//!
//! - every `ledger_*` metric referenced by a PromQL expression (dashboard panels and variables,
//!   alert rules, promtool test series and expressions) is in [`metrics::ALL`], after stripping
//!   the histogram series suffixes `_bucket`, `_sum` and `_count`;
//! - every name in [`metrics::ALL`] is shown by at least one dashboard panel;
//! - every panel queries the `${datasource}` template variable;
//! - every alert has a severity and summary/description/runbook annotations, its runbook anchor
//!   exists in docs/OPERATIONS.md, and the promtool tests cover it firing and not firing.
//!
//! The tokenizer is deliberately simple: an identifier is a maximal run of `[A-Za-z0-9_:]`, and
//! those starting with `ledger_` are metric names (PromQL functions, label names, `up` and the
//! Grafana variables never start with it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use ledger_actors::metrics;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

fn repo_file(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn dashboard() -> Json {
    serde_json::from_str(&repo_file("grafana/dashboards/avl-ledger.json"))
        .expect("dashboard is valid JSON")
}

fn yaml(relative: &str) -> Yaml {
    serde_yaml_ng::from_str(&repo_file(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"))
}

/// `ledger_*` identifiers in a PromQL expression, with histogram series suffixes stripped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("ledger_"))
        .map(|token| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| token.strip_suffix(suffix))
                .unwrap_or(token)
                .to_owned()
        })
        .collect()
}

fn str_field<'a>(value: &'a Json, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Json::as_str)
}

/// All panels, descending into rows (collapsed rows keep their panels inside).
fn panels(dashboard: &Json) -> Vec<&Json> {
    fn walk<'a>(items: &'a [Json], out: &mut Vec<&'a Json>) {
        for panel in items {
            out.push(panel);
            if let Some(children) = panel.get("panels").and_then(Json::as_array) {
                walk(children, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        dashboard["panels"]
            .as_array()
            .expect("dashboard has panels"),
        &mut out,
    );
    out
}

/// (panel title, PromQL expression) for every panel target.
fn panel_exprs(dashboard: &Json) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = str_field(panel, "title").unwrap_or("?").to_owned();
            panel
                .get("targets")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .map(move |target| {
                    let expr = str_field(target, "expr")
                        .unwrap_or_else(|| panic!("panel {title:?} has a target without expr"));
                    (title.clone(), expr.to_owned())
                })
        })
        .collect()
}

fn template_exprs(dashboard: &Json) -> Vec<String> {
    let mut out = Vec::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating list")
    {
        if str_field(variable, "type") == Some("datasource") {
            continue; // its query is the plugin id "prometheus", not PromQL
        }
        match variable.get("query") {
            Some(Json::String(query)) => out.push(query.clone()),
            Some(query) => out.extend(str_field(query, "query").map(str::to_owned)),
            None => {}
        }
        out.extend(str_field(variable, "definition").map(str::to_owned));
    }
    out
}

fn alert_rules() -> Vec<Yaml> {
    let rules = yaml("grafana/alerts/avl-rules.yml");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().expect("rules").clone())
        .collect()
}

fn ystr<'a>(value: &'a Yaml, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Yaml::as_str)
}

#[test]
fn tokenizer_strips_series_suffixes_and_ignores_non_ledger_identifiers() {
    let names = metric_names(
        "histogram_quantile(0.95, sum by (le) (rate(ledger_append_duration_seconds_bucket\
         {instance=~\"$instance\"}[$__rate_interval]))) / up{job=\"avl-ledger\"} \
         + ledger_drain_duration_seconds_sum + ledger_db_batch_size_count + ledger_appends_total",
    );
    let expected: BTreeSet<String> = [
        "ledger_append_duration_seconds",
        "ledger_drain_duration_seconds",
        "ledger_db_batch_size",
        "ledger_appends_total",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, expected);
}

#[test]
fn every_referenced_metric_is_known() {
    let known: BTreeSet<&str> = metrics::ALL.iter().copied().collect();
    let dashboard = dashboard();
    let mut sources: Vec<(String, String)> = panel_exprs(&dashboard)
        .into_iter()
        .map(|(title, expr)| (format!("dashboard panel {title:?}"), expr))
        .collect();
    sources.extend(
        template_exprs(&dashboard)
            .into_iter()
            .map(|expr| ("dashboard variable".to_owned(), expr)),
    );
    for rule in alert_rules() {
        let name = ystr(&rule, "alert")
            .or_else(|| ystr(&rule, "record"))
            .unwrap_or("?");
        let expr = ystr(&rule, "expr").expect("every rule has an expr");
        sources.push((format!("rule {name}"), expr.to_owned()));
    }
    let tests = yaml("grafana/alerts/avl-rules.test.yml");
    for test in tests["tests"].as_sequence().expect("tests") {
        let name = ystr(test, "name").unwrap_or("?");
        for series in test["input_series"].as_sequence().into_iter().flatten() {
            let selector = ystr(series, "series").expect("input series selector");
            sources.push((format!("promtool test {name:?}"), selector.to_owned()));
        }
        for expr_test in test["promql_expr_test"].as_sequence().into_iter().flatten() {
            let expr = ystr(expr_test, "expr").expect("promql_expr_test expr");
            sources.push((format!("promtool test {name:?}"), expr.to_owned()));
        }
    }

    let mut unknown = Vec::new();
    let mut referenced = 0;
    for (source, expr) in &sources {
        for name in metric_names(expr) {
            referenced += 1;
            if !known.contains(name.as_str()) {
                unknown.push(format!("{source}: {name}"));
            }
        }
    }
    assert!(referenced > 30, "suspiciously few references: {referenced}");
    assert!(
        unknown.is_empty(),
        "metrics not in ledger_actors::metrics::ALL:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn every_metric_is_on_the_dashboard() {
    let shown: BTreeSet<String> = panel_exprs(&dashboard())
        .into_iter()
        .flat_map(|(_, expr)| metric_names(&expr))
        .collect();
    let missing: Vec<&str> = metrics::ALL
        .iter()
        .copied()
        .filter(|name| !shown.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics without a dashboard panel: {missing:?}"
    );
}

#[test]
fn dashboard_uses_the_datasource_variable() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().expect("schemaVersion") >= 39,
        "schemaVersion must be 39 or later"
    );
    let variable = dashboard["templating"]["list"]
        .as_array()
        .expect("templating list")
        .iter()
        .find(|v| str_field(v, "name") == Some("datasource"))
        .expect("a `datasource` template variable");
    assert_eq!(str_field(variable, "type"), Some("datasource"));
    assert_eq!(str_field(variable, "query"), Some("prometheus"));

    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = str_field(panel, "title").unwrap_or("?");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id in {title:?}"
        );
        if str_field(panel, "type") == Some("row") {
            continue;
        }
        assert!(
            str_field(panel, "description").is_some_and(|d| !d.is_empty()),
            "panel {title:?} has no description"
        );
        assert_eq!(
            str_field(&panel["datasource"], "uid"),
            Some("${datasource}"),
            "panel {title:?} datasource"
        );
        let targets = panel["targets"].as_array().expect("panel targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            assert_eq!(
                str_field(&target["datasource"], "uid"),
                Some("${datasource}"),
                "panel {title:?} target datasource"
            );
        }
    }
}

/// GitHub's heading anchor: lowercase, spaces to hyphens, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn alerts_are_annotated_documented_and_tested() {
    let operations = repo_file("docs/OPERATIONS.md");
    let anchors: BTreeSet<String> = operations
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| anchor(heading.trim_start_matches('#')))
        .collect();

    // alert name -> (has a firing case, has a not-firing case)
    let mut coverage: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for rule in alert_rules() {
        let Some(name) = ystr(&rule, "alert") else {
            continue;
        };
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|v| !v.is_empty()),
                "{name}: missing annotation {key}"
            );
        }
        let runbook = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let target = runbook
            .strip_prefix("docs/OPERATIONS.md#")
            .unwrap_or_else(|| panic!("{name}: runbook {runbook} is not in docs/OPERATIONS.md"));
        assert!(
            anchors.contains(target),
            "{name}: docs/OPERATIONS.md has no heading for #{target}"
        );
        coverage.insert(name.to_owned(), (false, false));
    }
    assert!(coverage.len() >= 6, "expected at least six alerts");

    let tests = yaml("grafana/alerts/avl-rules.test.yml");
    for test in tests["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = ystr(case, "alertname").expect("alertname");
            let fires = case["exp_alerts"]
                .as_sequence()
                .is_some_and(|alerts| !alerts.is_empty());
            let entry = coverage
                .get_mut(name)
                .unwrap_or_else(|| panic!("promtool test for unknown alert {name}"));
            if fires {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }
    for (name, (firing, quiet)) in coverage {
        assert!(firing, "{name}: no promtool test where it fires");
        assert!(quiet, "{name}: no promtool test where it does not fire");
    }
}
