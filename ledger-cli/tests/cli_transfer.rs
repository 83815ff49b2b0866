//! `ledger export` and `ledger import` against real PostgreSQL (a database per test): the
//! round trip is exact, import is idempotent, resumable after SIGKILL, and refuses (naming
//! line and rid) anything that fails verification or would fork a stored chain.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

#[path = "../../integration-tests/tests/common/mod.rs"]
mod common;
mod support;

use std::time::Duration;

use chrono::Utc;
use common::TestContext;
use ledger_actors::{Backend, Ledger, LedgerConfig};
use ledger_entities::{LedgerRecord, NewRecord};
use serde_json::{Value, json};
use support::{all_records, chain, export_text, ledger, stderr, stdout, temp_dir, write_file};
use uuid::Uuid;

/// Payloads that stress the round trip: unicode, escapes, floats, deep keys, empty values.
fn payloads() -> Vec<Value> {
    vec![
        json!({ "text": "héllo ✓ \"q\" \\ \u{1F600}", "n": 1.5, "neg": -0.25, "big": 9_007_199_254_740_991_i64 }),
        json!([1, "two", null, false, { "z": 1, "a": [] }]),
        json!({}),
        json!("just a string"),
        json!(1e-7),
        json!({ "b": { "c": { "d": { "e": [[[1]]] } } }, "a": "" }),
    ]
}

/// Appends through a PostgreSQL ledger: `anchors` chains of `per_anchor` records, every
/// other one signed.
async fn fill(dsn: &str, anchors: usize, per_anchor: usize) -> Vec<Uuid> {
    let ledger = Ledger::start(support::pg_config(dsn)).await.unwrap();
    assert_eq!(ledger.store().backend(), Backend::Postgres);
    let ids: Vec<Uuid> = (0..anchors).map(|_| Uuid::new_v4()).collect();
    let payloads = payloads();
    for i in 0..per_anchor {
        let appends = ids.iter().map(|a| {
            let mut r = NewRecord::new(
                *a,
                "slot",
                "kind",
                payloads[i % payloads.len()].clone(),
                "fill",
            );
            if i % 2 == 0 {
                r = r.with_sig(vec![i as u8, 1, 2, 255]);
            }
            ledger.append(r)
        });
        for ack in futures::future::join_all(appends).await {
            ack.unwrap();
        }
    }
    ledger.shutdown().await.unwrap();
    ids
}

fn import_json(out: &std::process::Output) -> Value {
    serde_json::from_str(stdout(out).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

/// Export → import into a fresh database gives identical records (every field of every
/// record), `ledger verify` passes on the copy, and the file is the documented format:
/// header line, one line per record (ts RFC 3339 with microseconds, sig base64), end line
/// with the count; each anchor's records in chain order.
#[actix_rt::test]
async fn export_then_import_into_fresh_database_is_identical() {
    let src = TestContext::new("export_src").await;
    let anchors = fill(&src.dsn, 7, 12).await;
    let dir = temp_dir("roundtrip");
    let file = dir.join("all.jsonl");
    let out = ledger(&src.dsn, &["export", "-o", file.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!dir.join("all.jsonl.partial").exists());
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 84 + 2);
    assert_eq!(lines[0]["avl_export"], 1);
    assert_eq!(lines[85], json!({ "avl_export_end": { "records": 84 } }));
    let records = &lines[1..85];
    for pair in records.windows(2) {
        if pair[0]["anchor_id"] == pair[1]["anchor_id"] {
            assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "chain order");
        } else {
            assert!(pair[0]["anchor_id"].as_str() < pair[1]["anchor_id"].as_str());
            assert!(
                pair[1]["prev_hash"].is_null(),
                "an anchor starts at its genesis"
            );
        }
    }
    let ts = records[0]["ts"].as_str().unwrap();
    assert!(
        ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[19] == b'.',
        "{ts}"
    );
    assert_eq!(records[0]["sig"], "AAEC/w==", "base64 of [0, 1, 2, 255]");
    // A pipe named as the output (as `-o /dev/null` names a device) is written in place,
    // not replaced by a regular file through the partial file's rename.
    let fifo = dir.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let out = ledger(&src.dsn, &["export", "-o", fifo.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let carried = reader.join().unwrap();
    assert!(
        carried.lines().skip(1).eq(text.lines().skip(1)),
        "the pipe did not carry the same records"
    );
    {
        use std::os::unix::fs::FileTypeExt as _;
        let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(kind.is_fifo(), "the pipe was replaced: {kind:?}");
    }
    // Standard output carries the same records.
    let piped = ledger(&src.dsn, &["export"], "");
    assert_eq!(piped.status.code(), Some(0));
    assert_eq!(
        stdout(&piped).lines().skip(1).collect::<Vec<_>>(),
        text.lines().skip(1).collect::<Vec<_>>()
    );
    // One anchor only.
    let one = ledger(
        &src.dsn,
        &["export", "--anchor", &anchors[3].to_string()],
        "",
    );
    let one: Vec<Value> = stdout(&one)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(one.len(), 12 + 2);
    assert!(
        one[1..13]
            .iter()
            .all(|r| r["anchor_id"] == json!(anchors[3]))
    );

    let dst = TestContext::new("export_dst").await;
    let out = ledger(&dst.dsn, &["import", file.to_str().unwrap(), "--json"], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        import_json(&out),
        json!({ "read": 84, "imported": 84, "skipped": 0, "refused": 0, "complete": true })
    );
    let (a, b) = (all_records(&src.db).await, all_records(&dst.db).await);
    assert_eq!(a.len(), 84);
    assert_eq!(a, b, "every field of every record");
    let verify = ledger(&dst.dsn, &["verify", "--json"], "");
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    let summary: Value = serde_json::from_str(stdout(&verify).trim()).unwrap();
    assert_eq!(summary["records"], 84);
    assert_eq!(summary["continuity_breaks"], 0);
    std::fs::remove_dir_all(dir).unwrap();
    src.teardown().await;
    dst.teardown().await;
}

/// Importing the same export twice writes nothing the second time: every record is skipped
/// and counted, and no row gets a new version (same `xmin` for every row).
#[actix_rt::test]
async fn import_twice_writes_nothing_the_second_time() {
    let dst = TestContext::new("import_twice").await;
    let start = Utc::now() - chrono::Duration::days(1);
    let mut records: Vec<LedgerRecord> = Vec::new();
    for _ in 0..5 {
        records.extend(chain(Uuid::new_v4(), 40, start));
    }
    let dir = temp_dir("twice");
    let file = write_file(&dir, "x.jsonl", &export_text(&records));
    let first = ledger(
        &dst.dsn,
        &["import", &file, "--json", "--batch-size", "64"],
        "",
    );
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(import_json(&first)["imported"], 200);
    let before = support::row_versions(&dst.db).await;
    let second = ledger(
        &dst.dsn,
        &["import", &file, "--json", "--batch-size", "64"],
        "",
    );
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(
        import_json(&second),
        json!({ "read": 200, "imported": 0, "skipped": 200, "refused": 0, "complete": true })
    );
    assert_eq!(
        support::row_versions(&dst.db).await,
        before,
        "no row written again"
    );
    std::fs::remove_dir_all(dir).unwrap();
    dst.teardown().await;
}

/// An import killed with SIGKILL half-way, then run again with the same command, ends with
/// exactly the records of the file: the batches committed before the kill are skipped, the
/// rest imported, nothing twice, nothing missing, every chain intact.
#[actix_rt::test]
async fn import_killed_half_way_and_rerun_is_exact() {
    let dst = TestContext::new("import_sigkill").await;
    let start = Utc::now() - chrono::Duration::days(1);
    let mut records: Vec<LedgerRecord> = Vec::new();
    for _ in 0..40 {
        records.extend(chain(Uuid::new_v4(), 500, start));
    }
    let total = records.len() as i64;
    let dir = temp_dir("sigkill");
    let file = write_file(&dir, "big.jsonl", &export_text(&records));
    let mut child = support::command(&dst.dsn, &["import", &file, "--batch-size", "100"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..6000 {
        if support::count(&dst.db).await >= total / 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let after_kill = support::count(&dst.db).await;
    assert!(
        after_kill > 0 && after_kill < total,
        "killed half-way: {after_kill} of {total} rows"
    );
    assert_eq!(after_kill % 100, 0, "only whole batches are committed");
    let rerun = ledger(
        &dst.dsn,
        &["import", &file, "--json", "--batch-size", "100"],
        "",
    );
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    let summary = import_json(&rerun);
    assert_eq!(summary["skipped"], after_kill);
    assert_eq!(summary["imported"], total - after_kill);
    assert_eq!(summary["refused"], 0);
    let mut expected = records.clone();
    expected.sort_by_key(|r| (r.anchor_id, r.ts, r.rid));
    assert_eq!(all_records(&dst.db).await, expected);
    assert_eq!(ledger(&dst.dsn, &["verify"], "").status.code(), Some(0));
    std::fs::remove_dir_all(dir).unwrap();
    dst.teardown().await;
}

/// A line whose payload was edited is refused by hash, named with its line number and rid
/// (exit 1); the records after it in its chain are refused (their predecessor is missing);
/// other chains are imported; nothing in the database fails verification.
#[actix_rt::test]
async fn edited_payload_is_refused_named_and_never_stored() {
    let dst = TestContext::new("import_edited").await;
    let start = Utc::now() - chrono::Duration::days(1);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut records = chain(a, 10, start);
    records.extend(chain(b, 10, start));
    let text = export_text(&records);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Line 7 (header is line 1) is record 5 of anchor a.
    let edited_rid = records[5].rid;
    assert!(lines[6].contains(&edited_rid.to_string()));
    lines[6] = lines[6].replace("\"i\":5", "\"i\":500");
    let dir = temp_dir("edited");
    let file = write_file(&dir, "edited.jsonl", &(lines.join("\n") + "\n"));
    let out = ledger(&dst.dsn, &["import", &file, "--json"], "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        import_json(&out),
        json!({ "read": 20, "imported": 15, "skipped": 0, "refused": 5, "complete": true })
    );
    let refusals: Vec<Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(refusals.len(), 5);
    assert_eq!(refusals[0]["line"], 7);
    assert_eq!(refusals[0]["rid"], json!(edited_rid));
    assert_eq!(refusals[0]["reason"], "hash_mismatch");
    assert_eq!(refusals[0]["stored"], json!(records[5].hash));
    for (k, r) in refusals[1..].iter().enumerate() {
        assert_eq!(r["line"], 8 + k);
        assert_eq!(r["rid"], json!(records[6 + k].rid));
        assert_eq!(r["reason"], "predecessor_missing");
    }
    // The text form names line and rid too.
    let dst2 = TestContext::new("import_edited_text").await;
    let text_out = ledger(&dst2.dsn, &["import", &file], "");
    assert!(
        stderr(&text_out).contains(&format!("line 7 (rid {edited_rid}): hash mismatch")),
        "{}",
        stderr(&text_out)
    );
    let stored = all_records(&dst.db).await;
    assert!(stored.iter().all(|r| r.hash_matches().unwrap()));
    assert!(!stored.iter().any(|r| r.rid == edited_rid));
    assert_eq!(stored.iter().filter(|r| r.anchor_id == a).count(), 5);
    assert_eq!(ledger(&dst.dsn, &["verify"], "").status.code(), Some(0));
    std::fs::remove_dir_all(dir).unwrap();
    dst.teardown().await;
    dst2.teardown().await;
}

/// A record that would fork a chain already in the database (its predecessor has another
/// successor there) is refused as a fork, named by line and rid; the records before it that
/// are already stored are skipped; nothing is written.
#[actix_rt::test]
async fn import_refuses_a_fork_of_a_stored_chain() {
    let dst = TestContext::new("import_fork").await;
    let start = Utc::now() - chrono::Duration::days(1);
    let a = Uuid::new_v4();
    let records = chain(a, 8, start);
    let dir = temp_dir("fork");
    // The database holds records 0..4 and another successor of record 3.
    let prefix = write_file(&dir, "prefix.jsonl", &export_text(&records[..4]));
    assert_eq!(
        ledger(&dst.dsn, &["import", &prefix], "").status.code(),
        Some(0)
    );
    let other = LedgerRecord::seal(
        NewRecord::new(a, "slot", "other", json!({ "fork": true }), "elsewhere"),
        Uuid::now_v7(),
        records[4].ts,
        Some(records[3].hash),
    )
    .unwrap();
    let other_file = write_file(
        &dir,
        "other.jsonl",
        &export_text(std::slice::from_ref(&other)),
    );
    assert_eq!(
        ledger(&dst.dsn, &["import", &other_file], "").status.code(),
        Some(0)
    );
    let before = support::row_versions(&dst.db).await;
    let file = write_file(&dir, "all.jsonl", &export_text(&records));
    let out = ledger(&dst.dsn, &["import", &file, "--json"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        import_json(&out),
        json!({ "read": 8, "imported": 0, "skipped": 4, "refused": 4, "complete": true })
    );
    let first: Value = serde_json::from_str(stderr(&out).lines().next().unwrap()).unwrap();
    assert_eq!(first["line"], 6);
    assert_eq!(first["rid"], json!(records[4].rid));
    assert_eq!(first["reason"], "fork");
    assert_eq!(first["prev_hash"], json!(records[3].hash));
    assert_eq!(support::row_versions(&dst.db).await, before);
    std::fs::remove_dir_all(dir).unwrap();
    dst.teardown().await;
}

/// An input cut short (no end line) imports the verified records it has and exits 1 saying
/// so; an input that is not an export (no header) is refused before anything is written
/// (exit 2); standard input works as `-`.
#[actix_rt::test]
async fn cut_short_and_foreign_inputs() {
    let dst = TestContext::new("import_cut").await;
    let records = chain(Uuid::new_v4(), 30, Utc::now() - chrono::Duration::hours(1));
    let text = export_text(&records);
    let cut: String = text.lines().take(21).map(|l| format!("{l}\n")).collect();
    let out = ledger(&dst.dsn, &["import", "-", "--json"], &cut);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(import_json(&out)["imported"], 20);
    assert_eq!(import_json(&out)["complete"], false);
    assert!(stderr(&out).contains("cut short"), "{}", stderr(&out));
    let rest = ledger(&dst.dsn, &["import", "-", "--json"], &text);
    assert_eq!(rest.status.code(), Some(0));
    assert_eq!(import_json(&rest)["skipped"], 20);
    assert_eq!(import_json(&rest)["imported"], 10);
    let foreign: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let before = support::count(&dst.db).await;
    let out = ledger(&dst.dsn, &["import", "-"], &foreign);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("header"), "{}", stderr(&out));
    assert_eq!(support::count(&dst.db).await, before);
    dst.teardown().await;
}

/// Incremental backups: a full export, more appends, then `export --since` the first new
/// record's ts; importing both into a fresh database gives exactly the source's records
/// (the incremental file's first record of each anchor links onto the imported head).
#[actix_rt::test]
async fn incremental_export_since_links_onto_the_full_one() {
    let src = TestContext::new("incr_src").await;
    let anchors = fill(&src.dsn, 3, 5).await;
    let full = ledger(&src.dsn, &["export"], "");
    assert_eq!(full.status.code(), Some(0));
    let more: Vec<String> = anchors
        .iter()
        .flat_map(|a| {
            (0..4).map(move |i| {
                json!({ "anchor_id": a, "slot": "s", "kind": "later", "payload": { "i": i }, "producer": "p" })
                    .to_string()
            })
        })
        .collect();
    let acks = ledger(
        &src.dsn,
        &["append", "--concurrency", "1"],
        &more.join("\n"),
    );
    assert_eq!(acks.status.code(), Some(0));
    let first_new = support::json_lines(&acks)
        .iter()
        .map(|a| a["ts"].as_str().unwrap().to_owned())
        .min()
        .unwrap();
    let incr = ledger(&src.dsn, &["export", "--since", &first_new], "");
    assert_eq!(stdout(&incr).lines().count(), 12 + 2);
    let dst = TestContext::new("incr_dst").await;
    let one = ledger(&dst.dsn, &["import", "-"], &stdout(&full));
    assert_eq!(one.status.code(), Some(0), "{}", stderr(&one));
    let two = ledger(&dst.dsn, &["import", "-", "--json"], &stdout(&incr));
    assert_eq!(two.status.code(), Some(0), "{}", stderr(&two));
    assert_eq!(import_json(&two)["imported"], 12);
    assert_eq!(all_records(&src.db).await, all_records(&dst.db).await);
    src.teardown().await;
    dst.teardown().await;
}

/// The offline memory → PostgreSQL path: a host on the memory backend writes
/// `Ledger::export` to a file; `ledger import` loads it into PostgreSQL with every record
/// and chain intact; new appends on PostgreSQL continue the chains.
#[actix_rt::test]
async fn memory_host_export_imports_into_postgres() {
    let host = Ledger::start(LedgerConfig::default()).await.unwrap();
    let anchors: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for i in 0..25 {
        for a in &anchors {
            host.append(NewRecord::new(
                *a,
                "s",
                "k",
                json!({ "i": i }),
                "memory-host",
            ))
            .await
            .unwrap();
        }
    }
    let dir = temp_dir("memory");
    let path = dir.join("memory.jsonl");
    let mut file = tokio::fs::File::create(&path).await.unwrap();
    let summary = host.export(&mut file, &Default::default()).await.unwrap();
    assert_eq!((summary.records, summary.anchors), (100, 4));
    let mut in_memory: Vec<LedgerRecord> = Vec::new();
    for a in &anchors {
        let range = ledger_actors::RecordRange::default();
        in_memory.extend(
            host.records(*a, &range)
                .await
                .unwrap()
                .iter()
                .map(|r| (**r).clone()),
        );
    }
    host.shutdown().await.unwrap();
    let dst = TestContext::new("memory_to_pg").await;
    let out = ledger(&dst.dsn, &["import", path.to_str().unwrap(), "--json"], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    in_memory.sort_by_key(|r| (r.anchor_id, r.ts, r.rid));
    assert_eq!(all_records(&dst.db).await, in_memory);
    let next = json!({ "anchor_id": anchors[0], "slot": "s", "kind": "k", "payload": {}, "producer": "pg" });
    let ack = support::json_lines(&ledger(&dst.dsn, &["append"], &next.to_string()));
    let head = in_memory
        .iter()
        .rfind(|r| r.anchor_id == anchors[0])
        .unwrap();
    assert_eq!(ack[0]["prev_hash"], json!(head.hash), "the chain continues");
    std::fs::remove_dir_all(dir).unwrap();
    dst.teardown().await;
}
