//! `ledger append`, `get`, `records` and `anchors` against a real PostgreSQL (a database per
//! test), and the read commands' refusal to run without one.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

#[path = "../../integration-tests/tests/common/mod.rs"]
mod common;
mod support;

use common::TestContext;
use serde_json::{Value, json};
use support::{json_lines, ledger, stderr, stdout};
use uuid::Uuid;

fn line(anchor: Uuid, payload: Value) -> String {
    json!({ "anchor_id": anchor, "slot": "s", "kind": "event", "payload": payload, "producer": "cli" })
        .to_string()
}

/// `ledger append` answers every line in input order: an acknowledgement with rid, hash,
/// prev_hash, ts (µs), durability and replayed for good lines, a typed error naming the line
/// and the field for bad ones, and the lines after a bad one are still appended. Lines of
/// one anchor are chained in input order; a repeated client rid is replayed, not stored twice.
#[actix_rt::test]
async fn append_acknowledges_each_line_in_order_and_names_bad_fields() {
    let ctx = TestContext::new("cli_append").await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let rid = Uuid::new_v4();
    let mut input = Vec::new();
    for i in 0..20 {
        input.push(line(if i % 2 == 0 { a } else { b }, json!({ "i": i })));
    }
    input.insert(
        3,
        r#"{"anchor_id":"not-a-uuid","slot":"s","kind":"k","payload":{},"producer":"p"}"#.into(),
    );
    input.insert(5, line(a, json!({ "big": 9_007_199_254_740_993_u64 })));
    input.insert(7, String::new()); // a blank line: no output, counted
    input.insert(8, json!({ "anchor_id": a, "slot": "s", "kind": "k", "payload": {}, "producer": "p", "sig": "%%" }).to_string());
    let with_rid = json!({ "anchor_id": b, "slot": "s", "kind": "k", "payload": {"r": 1}, "producer": "p", "rid": rid }).to_string();
    input.push(with_rid.clone());
    input.push(with_rid);
    let out = ledger(&ctx.dsn, &["append"], &(input.join("\n") + "\n"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let acks = json_lines(&out);
    assert_eq!(
        acks.len(),
        input.len() - 1,
        "one output line per non-blank input line"
    );
    let lines: Vec<u64> = acks.iter().map(|v| v["line"].as_u64().unwrap()).collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted, "output in input order");
    let by_line = |n: u64| acks.iter().find(|v| v["line"] == n).unwrap();
    assert_eq!(by_line(4)["error"], "malformed");
    assert_eq!(by_line(4)["field"], "anchor_id");
    // An integer the hash cannot record exactly is refused while parsing (the number rule).
    assert_eq!(by_line(6)["error"], "malformed");
    assert_eq!(by_line(6)["field"], "payload/big");
    assert_eq!(by_line(9)["error"], "malformed");
    assert_eq!(by_line(9)["field"], "sig");
    assert!(acks.iter().all(|v| v.get("line").is_some()));
    let good: Vec<&Value> = acks.iter().filter(|v| v.get("error").is_none()).collect();
    assert_eq!(good.len(), 22);
    for ack in &good {
        assert_eq!(ack["durability"], "committed");
        assert_eq!(ack["hash"].as_str().unwrap().len(), 64);
        let ts = ack["ts"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 27, "{ts}");
    }
    // Anchor a's records are chained in input order.
    let store = support::store(&ctx.db);
    let chain_a = store
        .records(a, &ledger_actors::RecordRange::default())
        .await
        .unwrap();
    assert_eq!(chain_a.len(), 10);
    for (i, r) in chain_a.iter().enumerate() {
        assert_eq!(
            r.payload.to_value(),
            json!({ "i": 2 * i }),
            "anchor a in input order"
        );
    }
    let (first, second) = (&good[good.len() - 2], &good[good.len() - 1]);
    assert_eq!(first["rid"], json!(rid));
    assert_eq!(first["replayed"], false);
    assert_eq!(second["replayed"], true);
    assert_eq!(second["hash"], first["hash"]);
    assert_eq!(support::count(&ctx.db).await, 21);
    ctx.teardown().await;
}

/// With `--fail-fast` (one line at a time) nothing after the first failing line is
/// appended: the later lines are reported `not_attempted` or not read at all; exit 1.
#[actix_rt::test]
async fn append_fail_fast_stops_at_the_first_failure() {
    let ctx = TestContext::new("cli_fail_fast").await;
    let a = Uuid::new_v4();
    let input = [
        line(a, json!({ "i": 0 })),
        json!({ "anchor_id": a, "slot": "", "kind": "k", "payload": {}, "producer": "p" })
            .to_string(),
        line(a, json!({ "i": 2 })),
        line(Uuid::new_v4(), json!({ "i": 3 })),
    ]
    .join("\n");
    let out = ledger(
        &ctx.dsn,
        &["append", "--fail-fast", "--concurrency", "1"],
        &input,
    );
    assert_eq!(out.status.code(), Some(1));
    let acks = json_lines(&out);
    assert!(acks[0].get("error").is_none(), "{acks:?}");
    assert_eq!(acks[1]["error"], "invalid");
    assert_eq!(acks[1]["field"], "slot");
    assert!(
        acks[2..].iter().all(|v| v["error"] == "not_attempted"),
        "{acks:?}"
    );
    assert_eq!(support::count(&ctx.db).await, 1);
    ctx.teardown().await;
}

/// A batch line `{"anchor_id", "records": [...], "expected_head"}` is one atomic append:
/// acknowledged with all its records, or refused naming the record and field with nothing
/// written; `expected_head: null` on an existing anchor and a stale head are refused with
/// the current head; single-record lines still work beside batch lines.
#[actix_rt::test]
async fn append_takes_batch_lines_atomically() {
    let ctx = TestContext::new("cli_batch").await;
    let a = Uuid::new_v4();
    let item = |i: u64| json!({ "slot": "s", "kind": "k", "payload": { "i": i }, "producer": "p" });
    let first =
        json!({ "anchor_id": a, "records": [item(0), item(1), item(2)], "expected_head": null });
    let out = ledger(&ctx.dsn, &["append"], &format!("{first}\n"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let acks = json_lines(&out);
    let records = acks[0]["records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(acks[0]["durability"], "committed");
    let head = records[2]["hash"].as_str().unwrap().to_owned();
    assert_eq!(records[1]["prev_hash"], records[0]["hash"]);

    let mut bad = item(4);
    bad["slot"] = json!("");
    let input = [
        // the anchor exists: refused with its head
        json!({ "anchor_id": a, "records": [item(3)], "expected_head": null }).to_string(),
        // the second record is invalid: nothing of this line is written
        json!({ "anchor_id": a, "records": [item(3), bad], "expected_head": head }).to_string(),
        json!({ "anchor_id": a, "records": [item(5)], "expected_head": "zz" }).to_string(),
        json!({ "anchor_id": a, "slot": "s", "kind": "k", "payload": {}, "producer": "p" })
            .to_string(),
    ];
    let out = ledger(
        &ctx.dsn,
        &["append", "--concurrency", "1"],
        &(input.join("\n") + "\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let acks = json_lines(&out);
    assert_eq!(acks[0]["error"], "head_mismatch", "{acks:?}");
    assert!(acks[0]["message"].as_str().unwrap().contains(&head));
    assert_eq!(acks[1]["error"], "batch_refused", "{acks:?}");
    assert_eq!(acks[1]["field"], "records/1/slot");
    assert_eq!(acks[2]["error"], "malformed");
    assert_eq!(acks[2]["field"], "expected_head");
    assert!(acks[3].get("error").is_none(), "{acks:?}");
    assert_eq!(acks[3]["prev_hash"], json!(head));
    assert_eq!(support::count(&ctx.db).await, 4);
    ctx.teardown().await;
}

/// `get`, `records` and `anchors` show what was appended, as tables and as JSON (the
/// export's record line, every field); `--since`/`--until`/`--limit` select windows; an
/// unknown rid or anchor exits 1.
#[actix_rt::test]
async fn get_records_and_anchors_read_what_was_appended() {
    let ctx = TestContext::new("cli_reads").await;
    let a = Uuid::new_v4();
    let input: Vec<String> = (0..30).map(|i| line(a, json!({ "i": i }))).collect();
    let out = ledger(
        &ctx.dsn,
        &["append", "--concurrency", "1"],
        &input.join("\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let acks = json_lines(&out);
    let rid = acks[4]["rid"].as_str().unwrap().to_owned();

    let got = ledger(&ctx.dsn, &["get", &rid, "--json"], "");
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    let record: Value = serde_json::from_str(stdout(&got).trim()).unwrap();
    for key in [
        "rid",
        "anchor_id",
        "slot",
        "kind",
        "ts",
        "prev_hash",
        "hash",
        "payload",
        "sig",
        "producer",
        "version",
    ] {
        assert!(record.get(key).is_some(), "{key} missing: {record}");
    }
    assert_eq!(record["hash"], acks[4]["hash"]);
    assert_eq!(record["prev_hash"], acks[3]["hash"]);
    assert_eq!(record["ts"], acks[4]["ts"]);
    assert_eq!(record["payload"], json!({ "i": 4 }));
    let text = ledger(&ctx.dsn, &["get", &rid], "");
    assert!(
        stdout(&text).contains(&format!("rid        {rid}")),
        "{}",
        stdout(&text)
    );
    let missing = ledger(&ctx.dsn, &["get", &Uuid::new_v4().to_string()], "");
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no record"));

    let all = ledger(
        &ctx.dsn,
        &[
            "records",
            "--anchor",
            &a.to_string(),
            "--json",
            "--limit",
            "1000",
        ],
        "",
    );
    let all = json_lines(&all);
    assert_eq!(all.len(), 30);
    assert!(
        all.windows(2).all(|w| w[1]["prev_hash"] == w[0]["hash"]),
        "chain order"
    );
    let since = acks[10]["ts"].as_str().unwrap();
    let until = acks[15]["ts"].as_str().unwrap();
    let window = ledger(
        &ctx.dsn,
        &[
            "records",
            "--anchor",
            &a.to_string(),
            "--since",
            since,
            "--until",
            until,
            "--json",
        ],
        "",
    );
    let window = json_lines(&window);
    assert_eq!(window.len(), 5);
    assert_eq!(window[0]["hash"], acks[10]["hash"]);
    let limited = json_lines(&ledger(
        &ctx.dsn,
        &[
            "records",
            "--anchor",
            &a.to_string(),
            "--limit",
            "7",
            "--json",
        ],
        "",
    ));
    assert_eq!(limited.len(), 7);
    let table = ledger(&ctx.dsn, &["records", "--anchor", &a.to_string()], "");
    assert_eq!(stdout(&table).lines().count(), 31, "header + 30 rows");
    let unknown = ledger(
        &ctx.dsn,
        &["records", "--anchor", &Uuid::new_v4().to_string()],
        "",
    );
    assert_eq!(unknown.status.code(), Some(1));

    let b = Uuid::new_v4();
    ledger(&ctx.dsn, &["append"], &line(b, json!({})));
    let anchors = json_lines(&ledger(&ctx.dsn, &["anchors", "--json"], ""));
    assert_eq!(anchors.len(), 2);
    let entry_a = anchors.iter().find(|v| v["anchor_id"] == json!(a)).unwrap();
    assert_eq!(entry_a["records"], 30);
    assert_eq!(entry_a["head_hash"], acks[29]["hash"]);
    assert_eq!(entry_a["head_ts"], acks[29]["ts"]);
    let first = json_lines(&ledger(
        &ctx.dsn,
        &["anchors", "--json", "--limit", "1"],
        "",
    ));
    assert_eq!(first.len(), 1);
    let after = first[0]["anchor_id"].as_str().unwrap();
    let rest = json_lines(&ledger(
        &ctx.dsn,
        &["anchors", "--json", "--after", after],
        "",
    ));
    assert_eq!(rest.len(), 1);
    assert_ne!(rest[0]["anchor_id"], first[0]["anchor_id"]);
    let table = ledger(&ctx.dsn, &["anchors"], "");
    assert!(stdout(&table).contains(&a.to_string()));
    ctx.teardown().await;
}

/// The commands that only read never fall back to memory: an unreachable database is exit 2
/// with the reason on stderr and nothing on stdout; the memory backend is refused the same
/// way, saying why.
#[test]
fn read_commands_need_the_database() {
    let dead = "postgres://avl@127.0.0.1:1/avl";
    let rid = Uuid::new_v4().to_string();
    let anchor = Uuid::new_v4().to_string();
    let commands: [&[&str]; 4] = [
        &["get", &rid],
        &["records", "--anchor", &anchor],
        &["anchors"],
        &["export"],
    ];
    let run = |args: &[&str], backend: &str| {
        support::command(dead, args)
            .env("LEDGER_TIMEOUT", "1")
            .env("LEDGER_BACKEND", backend)
            .output()
            .unwrap()
    };
    for args in commands {
        let out = run(args, "postgres");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("unavailable"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
        let out = run(args, "memory");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains("memory backend"), "{}", stderr(&out));
    }
    let out = run(&["append"], "postgres");
    assert_eq!(
        out.status.code(),
        Some(2),
        "append must not ack on the memory fallback"
    );
}
