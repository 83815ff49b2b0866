//! A host process for the atomic-batch tests (`Ledger::append_all`), configured from the
//! `LEDGER_*` environment, in one of two modes (`AVL_MODE`):
//!
//! - `race`: appends to the anchor `AVL_ANCHOR`. Prints `READY` once its ledger has started,
//!   then for each stdin line `GO <expected head hash | none>` appends a batch of 3 records
//!   expecting that head and prints `OK <hash of its last record>`, `MISMATCH <current head
//!   | none>` or `ERR <kind> <message>`. Ends at the end of stdin.
//! - `flood`: 8 tasks append batches of `AVL_BATCH` records to 10 fresh anchors until killed
//!   (or 60 seconds); each record's payload names its batch (`batch`, a UUID), its index in
//!   it (`k`) and the batch's size (`n`). Prints `READY`, then `ACK <batch> <durability>`
//!   per acknowledged batch, flushed at once.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ledger_actors::{Expect, Ledger, LedgerConfig, LedgerError};
use ledger_entities::{NewRecord, RecordHash};
use uuid::Uuid;

fn main() -> anyhow::Result<()> {
    let mut config = LedgerConfig::load(None)?;
    config.spool_dir = std::env::var_os("AVL_SPOOL_DIR").map(std::path::PathBuf::from);
    let mode = std::env::var("AVL_MODE").context("AVL_MODE is not set")?;
    actix::System::new().block_on(async move {
        let ledger = Ledger::start(config).await?;
        println!("READY");
        std::io::stdout().flush()?;
        match mode.as_str() {
            "race" => race(&ledger).await?,
            "flood" => flood(&ledger).await,
            other => anyhow::bail!("unknown AVL_MODE {other:?}"),
        }
        ledger.shutdown().await?;
        Ok(())
    })
}

async fn race(ledger: &Ledger) -> anyhow::Result<()> {
    let anchor: Uuid = std::env::var("AVL_ANCHOR")
        .context("AVL_ANCHOR is not set")?
        .parse()?;
    let show = |h: Option<RecordHash>| h.map_or_else(|| "none".to_owned(), |h| h.to_string());
    let mut round = 0u64;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let Some(expected) = line.strip_prefix("GO ") else {
            continue;
        };
        let expect = match expected.trim() {
            "none" => Expect::NoStream,
            h => Expect::Head(h.parse().context("expected head")?),
        };
        let records = (0..3)
            .map(|k| {
                NewRecord::new(
                    anchor,
                    "race",
                    "event",
                    serde_json::json!({ "pid": std::process::id(), "round": round, "k": k }),
                    "batch-child",
                )
            })
            .collect();
        let out = match ledger.append_all(anchor, records, expect).await {
            Ok(ack) => format!("OK {}", show(ack.records.last().map(|r| r.hash))),
            Err(LedgerError::HeadMismatch { current, .. }) => format!("MISMATCH {}", show(current)),
            Err(e) => format!("ERR {} {e}", e.kind()),
        };
        println!("{out}");
        std::io::stdout().flush()?;
        round += 1;
    }
    Ok(())
}

async fn flood(ledger: &Ledger) {
    let n: u64 = std::env::var("AVL_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let anchors: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let workers = (0..8).map(|w| {
        let anchors = anchors.clone();
        async move {
            let mut i = 0usize;
            while Instant::now() < deadline {
                let batch = Uuid::new_v4();
                let anchor = anchors[(i + w) % anchors.len()];
                let records = (0..n)
                    .map(|k| {
                        NewRecord::new(
                            anchor,
                            "flood",
                            "event",
                            serde_json::json!({ "batch": batch.to_string(), "k": k, "n": n }),
                            "batch-child",
                        )
                    })
                    .collect();
                if let Ok(ack) = ledger.append_all(anchor, records, Expect::Any).await {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ACK {batch} {:?}", ack.durability);
                    let _ = out.flush();
                }
                i += 1;
            }
        }
    });
    futures::future::join_all(workers).await;
}
