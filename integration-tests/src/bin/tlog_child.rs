//! A host process for the integrator takeover test: a PostgreSQL ledger configured from the
//! `LEDGER_*` environment (key, lease, interval included) that appends to its own anchors
//! and prints `ACK <rid>` per acknowledged append and `LEADER <true|false> <size>` whenever
//! its integrator's role or log size changes, flushed at once. It stops cleanly (final
//! checkpoint, lease released) when its standard input closes or after 60 seconds.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ledger_actors::{Ledger, LedgerConfig};
use ledger_entities::NewRecord;
use uuid::Uuid;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> anyhow::Result<()> {
    let config = LedgerConfig::load(None)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stdin_stop = Arc::clone(&stop);
    std::thread::spawn(move || {
        let _ = std::io::read_to_string(std::io::stdin());
        stdin_stop.store(true, Ordering::Release);
    });
    actix::System::new().block_on(async move {
        let ledger = Ledger::start(config).await?;
        say("READY");
        let anchors: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let running = || !stop.load(Ordering::Acquire) && Instant::now() < deadline;
        let watcher = {
            let ledger = ledger.clone();
            async move {
                let mut last = None;
                while running() {
                    if let Some(p) = ledger.integrator_progress() {
                        let now = (p.leader, p.size);
                        if last != Some(now) {
                            say(&format!("LEADER {} {}", p.leader, p.size));
                            last = Some(now);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let workers = (0..4).map(|w| {
            let ledger = ledger.clone();
            let anchor = anchors[w * 2 % anchors.len()];
            async move {
                let mut i = 0u64;
                while running() {
                    let rid = Uuid::new_v4();
                    let record = NewRecord::new(
                        anchor,
                        "child",
                        "event",
                        serde_json::json!({ "i": i }),
                        "tlog-child",
                    )
                    .with_rid(rid);
                    if ledger.append(record).await.is_ok() {
                        say(&format!("ACK {rid}"));
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        futures::future::join(watcher, futures::future::join_all(workers)).await;
        ledger.shutdown().await?;
        say("STOPPED");
        Ok(())
    })
}
