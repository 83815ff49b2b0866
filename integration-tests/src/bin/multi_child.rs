//! One of several host processes sharing a database, for the multi-process tests.
//!
//! Configured from the `LEDGER_*` environment (backend, DSN, timeout, ...), plus:
//! - `AVL_ANCHORS`: comma-separated anchor UUIDs, shared by every process of a test;
//! - `AVL_TASKS`: concurrent appending tasks; `AVL_APPENDS`: appends per task;
//! - `AVL_ACKS`: the file this process writes its outcomes to.
//!
//! Prints `READY` once the ledger has started, then waits for a line on stdin (so that every
//! process starts appending at once). Each task appends records with fresh client rids to
//! the anchors in turn. The outcome file has one line per append: `ACK <rid> <anchor>
//! <hash> <durability>` or `ERR <rid> <anchor> <error>`; after the drain, one `MOVED
//! <old hash> <new hash>` line per record an outage drain re-chained, and one `KEPT <rid>
//! <reason>` per record kept unwritten. Exit 0 when it could run (the parent judges the
//! outcomes).

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use ledger_actors::{Ledger, LedgerConfig};
use ledger_entities::NewRecord;
use uuid::Uuid;

fn env<T: std::str::FromStr>(name: &str) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    let v = std::env::var(name).with_context(|| format!("{name} is not set"))?;
    v.parse().map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

fn main() -> anyhow::Result<()> {
    // Logs on stderr when `LEDGER_LOG` is set (e.g. `LEDGER_LOG=ledger_actors=debug`).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("LEDGER_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let config = LedgerConfig::load(None)?;
    let anchors: Vec<Uuid> = std::env::var("AVL_ANCHORS")
        .context("AVL_ANCHORS is not set")?
        .split(',')
        .map(Uuid::parse_str)
        .collect::<Result<_, _>>()?;
    let tasks: usize = env("AVL_TASKS")?;
    let appends: usize = env("AVL_APPENDS")?;
    let out_path: std::path::PathBuf = env("AVL_ACKS")?;
    let out = Arc::new(Mutex::new(std::io::BufWriter::new(
        std::fs::File::create(&out_path)
            .with_context(|| format!("creating {}", out_path.display()))?,
    )));
    actix::System::new().block_on(async move {
        let ledger = Ledger::start(config).await?;
        println!("READY");
        std::io::stdout().flush()?;
        let mut go = String::new();
        std::io::stdin().lock().read_line(&mut go)?;
        let workers = (0..tasks).map(|t| {
            let ledger = ledger.clone();
            let anchors = anchors.clone();
            let out = Arc::clone(&out);
            async move {
                for i in 0..appends {
                    let rid = Uuid::new_v4();
                    let anchor = anchors[(t + i) % anchors.len()];
                    let record = NewRecord::new(
                        anchor,
                        "multi",
                        "event",
                        serde_json::json!({ "task": t, "i": i }),
                        "multi-child",
                    )
                    .with_rid(rid);
                    let line = match ledger.append(record).await {
                        Ok(ack) => format!(
                            "ACK {rid} {anchor} {} {:?}\n",
                            ack.record.hash, ack.durability
                        ),
                        Err(e) => format!("ERR {rid} {anchor} {e}\n"),
                    };
                    let mut f = out.lock().unwrap_or_else(|p| p.into_inner());
                    f.write_all(line.as_bytes())?;
                }
                anyhow::Ok(())
            }
        });
        for r in futures::future::join_all(workers).await {
            r?;
        }
        ledger.await_drain(Duration::from_secs(60)).await;
        if let Some(records) = ledger.outage_records().await {
            let mut f = out.lock().unwrap_or_else(|p| p.into_inner());
            for (_, old, new) in records.rechained {
                writeln!(f, "MOVED {old} {new}")?;
            }
            for (rid, reason) in records.quarantined {
                writeln!(f, "KEPT {rid} {reason}")?;
            }
        }
        ledger.shutdown().await?;
        out.lock().unwrap_or_else(|p| p.into_inner()).flush()?;
        anyhow::Ok(())
    })
}
