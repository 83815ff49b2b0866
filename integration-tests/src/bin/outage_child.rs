//! A host process for the SIGKILL test: appends through the ledger (configured from the
//! `LEDGER_*` environment, spool in `AVL_SPOOL_DIR`) and prints one `ACK <rid> <durability>`
//! line per acknowledged append, flushed at once, until killed or after 60 seconds.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ledger_actors::{Ledger, LedgerConfig};
use ledger_entities::NewRecord;
use uuid::Uuid;

fn main() -> anyhow::Result<()> {
    let mut config = LedgerConfig::load(None)?;
    config.spool_dir = std::env::var_os("AVL_SPOOL_DIR").map(PathBuf::from);
    actix::System::new().block_on(async move {
        let ledger = Ledger::start(config).await?;
        println!("READY");
        let anchors: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let workers = (0..8).map(|w| {
            let ledger = ledger.clone();
            let anchors = anchors.clone();
            async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let rid = Uuid::new_v4();
                    let anchor = anchors[(i as usize + w) % anchors.len()];
                    let record = NewRecord::new(
                        anchor,
                        "child",
                        "event",
                        serde_json::json!({ "i": i }),
                        "outage-child",
                    )
                    .with_rid(rid);
                    if let Ok(ack) = ledger.append(record).await {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "ACK {rid} {:?}", ack.durability);
                        let _ = out.flush();
                    }
                    i += 1;
                }
            }
        });
        futures::future::join_all(workers).await;
        ledger.shutdown().await?;
        Ok(())
    })
}
