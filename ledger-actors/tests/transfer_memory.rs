//! Export and import through the public API on memory stores: the paged scan visits every
//! record once in `(anchor, ts)` order, an export of more records than a page imports into an
//! empty store exactly, a second import skips everything, and a refused record is reported
//! while the store keeps only verified records.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::sync::Arc;

use chrono::{Duration, Utc};
use ledger_actors::store::MemoryLedgerStore;
use ledger_actors::transfer::{self, ExportOptions, ImportOptions, Refusal, RefusalReason};
use ledger_actors::{Ledger, LedgerConfig, LedgerStore, ScanKey};
use ledger_entities::{LedgerRecord, NewRecord};
use serde_json::json;
use uuid::Uuid;

/// A store holding `anchors` chains of `per_anchor` records each.
async fn filled(anchors: usize, per_anchor: usize) -> (Arc<MemoryLedgerStore>, Vec<LedgerRecord>) {
    let store = Arc::new(MemoryLedgerStore::new());
    let start = Utc::now() - Duration::days(1);
    let mut all = Vec::new();
    for _ in 0..anchors {
        let anchor = Uuid::new_v4();
        let mut chain: Vec<Arc<LedgerRecord>> = Vec::new();
        for i in 0..per_anchor {
            let new = NewRecord::new(anchor, "s", "k", json!({ "i": i }), "p");
            let prev = chain.last().map(|r| r.hash);
            let ts = start + Duration::microseconds(i as i64 * 3);
            chain.push(Arc::new(
                LedgerRecord::seal(new, Uuid::now_v7(), ts, prev).unwrap(),
            ));
        }
        store.insert(&chain).await.unwrap();
        all.extend(chain.iter().map(|r| (**r).clone()));
    }
    all.sort_by_key(|r| (r.anchor_id, r.ts, r.rid));
    (store, all)
}

async fn export_bytes(store: &dyn LedgerStore, options: &ExportOptions) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    transfer::export(store, &mut out, options, &mut |_| {})
        .await
        .unwrap();
    out
}

async fn scan_all(store: &dyn LedgerStore, page: usize) -> Vec<LedgerRecord> {
    let mut out = Vec::new();
    let mut after: Option<ScanKey> = None;
    loop {
        let batch = store.scan(after.as_ref(), None, page).await.unwrap();
        assert!(batch.len() <= page);
        let Some(last) = batch.last() else { break };
        after = Some(ScanKey::of(last));
        out.extend(batch.iter().map(|r| (**r).clone()));
    }
    out
}

/// The default (memory) scan returns every record exactly once, in `(anchor, ts)` order,
/// whatever the page size, including pages that end inside a chain; `since` filters by ts.
#[actix_rt::test]
async fn scan_pages_visit_every_record_once_in_order() {
    let (store, all) = filled(9, 13).await;
    for page in [1, 7, 13, 50, 1000] {
        assert_eq!(scan_all(store.as_ref(), page).await, all, "page {page}");
    }
    let since = all[5].ts;
    let recent = store.scan(None, Some(since), 10_000).await.unwrap();
    assert_eq!(recent.len(), all.iter().filter(|r| r.ts >= since).count());
}

/// An export of more records than one page, imported into an empty store, gives the same
/// records; importing it again skips every record and writes nothing.
#[actix_rt::test]
async fn export_import_round_trip_and_second_import_skips() {
    let (source, all) = filled(3, 1700).await;
    let bytes = export_bytes(source.as_ref(), &ExportOptions::default()).await;
    let target = MemoryLedgerStore::new();
    let mut refused: Vec<Refusal> = Vec::new();
    let options = ImportOptions {
        batch_size: 333,
        ..ImportOptions::default()
    };
    let summary = transfer::import(
        &target,
        &bytes[..],
        &options,
        &mut |r| refused.push(r.clone()),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(
        (summary.read, summary.imported, summary.skipped),
        (5100, 5100, 0)
    );
    assert!(summary.is_complete());
    assert_eq!(scan_all(&target, 1000).await, all);
    let again = transfer::import(
        &target,
        &bytes[..],
        &options,
        &mut |r| refused.push(r.clone()),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!((again.imported, again.skipped, again.refused), (0, 5100, 0));
    assert_eq!(target.count().await.unwrap(), 5100);
}

/// `Ledger::export` of one anchor, then `Ledger::import` into another memory ledger with a
/// record's kind edited in the file: the edited record is refused by hash with its line and
/// rid, the rest of its chain as missing a predecessor, and the target keeps the prefix.
#[actix_rt::test]
async fn ledger_export_import_refuses_an_edited_record() {
    let source = Ledger::start(LedgerConfig::default()).await.unwrap();
    let anchor = Uuid::new_v4();
    for i in 0..10 {
        source
            .append(NewRecord::new(anchor, "s", "k", json!({ "i": i }), "p"))
            .await
            .unwrap();
    }
    let mut bytes: Vec<u8> = Vec::new();
    let options = ExportOptions {
        anchor: Some(anchor),
        since: None,
    };
    source.export(&mut bytes, &options).await.unwrap();
    source.shutdown().await.unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[4] = lines[4].replace("\"kind\":\"k\"", "\"kind\":\"K\"");
    let edited = lines.join("\n");
    let target = Ledger::start(LedgerConfig::default()).await.unwrap();
    let mut refused: Vec<Refusal> = Vec::new();
    let summary = target
        .import(edited.as_bytes(), &mut |r| refused.push(r.clone()))
        .await
        .unwrap();
    assert_eq!((summary.imported, summary.refused), (3, 7));
    assert_eq!(refused[0].line, 5);
    assert!(matches!(
        refused[0].reason,
        RefusalReason::HashMismatch { .. }
    ));
    assert!(
        refused[1..]
            .iter()
            .all(|r| matches!(r.reason, RefusalReason::PredecessorMissing { .. }))
    );
    let kept = target.verify(anchor).await.unwrap();
    assert!(kept.is_intact());
    assert_eq!(kept.records, 3);
    target.shutdown().await.unwrap();
}

/// A line too long for the configured payload limit and a line that is not UTF-8 are each
/// refused as malformed, naming their line, without stopping the import or holding the long
/// line in memory; the records around them are imported.
#[actix_rt::test]
async fn overlong_and_non_utf8_lines_are_refused_not_fatal() {
    let (source, _) = filled(1, 4).await;
    let bytes = export_bytes(source.as_ref(), &ExportOptions::default()).await;
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut input: Vec<u8> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
        if i == 0 {
            input.extend_from_slice(&vec![b'x'; 200_000]);
            input.push(b'\n');
            input.extend_from_slice(b"{\"rid\": \"\xff\xfe\"}\n");
        }
    }
    let target = MemoryLedgerStore::new();
    let options = ImportOptions {
        batch_size: 10,
        limits: ledger_entities::validate::Limits {
            max_payload_bytes: 1000,
            ..Default::default()
        },
    };
    let mut refused: Vec<Refusal> = Vec::new();
    let summary = transfer::import(
        &target,
        &input[..],
        &options,
        &mut |r| refused.push(r.clone()),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!((summary.read, summary.imported, summary.refused), (6, 4, 2));
    assert_eq!(refused[0].line, 2);
    assert!(
        refused[0].to_string().contains("200000 bytes"),
        "{}",
        refused[0]
    );
    assert_eq!(refused[1].line, 3);
    assert!(refused[1].to_string().contains("UTF-8"), "{}", refused[1]);
    // The end line counts only the export's 4 records: the input gained lines.
    assert!(!summary.is_complete());
}
