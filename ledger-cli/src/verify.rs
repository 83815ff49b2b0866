//! `ledger verify`: walk chains, recompute hashes, list breaks.

use std::process::ExitCode;

use anyhow::Context as _;
use ledger_actors::{Ledger, LedgerConfig};
use uuid::Uuid;

/// Arguments of `ledger verify`.
#[derive(clap::Args)]
pub struct Args {
    /// Verify only this anchor.
    #[arg(long)]
    anchor: Option<Uuid>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    log: crate::verify_log::LogArgs,
}

/// Runs `ledger verify`; exit 0 when every chain is intact, 1 otherwise, 2 when the store
/// cannot be read (the ledger is opened read-only: an unreachable database is an error,
/// never an empty memory store, and the outage spool is not touched).
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open_read_only(config.clone())
        .await
        .context("opening the ledger read-only")?;
    let log = crate::verify_log::run(&config, &args.log).await?;
    let log_problems = log.as_ref().map_or(0, |l| l.problems.len());
    let summary = match args.anchor {
        Some(anchor) => {
            let report = ledger.verify(anchor).await?;
            ledger_actors::verify::VerifySummary {
                anchors: 1,
                records: report.records,
                breaks: report.broken.into_iter().collect(),
            }
        }
        None => ledger.verify_all().await?,
    };
    ledger.shutdown().await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "anchors_verified": summary.anchors,
                "records": summary.records,
                "continuity_breaks": summary.breaks.len(),
                "breaks": summary.breaks,
                "log": log,
            })
        );
    } else {
        for b in &summary.breaks {
            println!(
                "BROKEN anchor {} at record {} (position {}): {}",
                b.anchor_id, b.rid, b.position, b.reason
            );
        }
        println!(
            "{} anchors, {} records verified, {} broken",
            summary.anchors,
            summary.records,
            summary.breaks.len()
        );
        if let Some(l) = &log {
            for p in &l.problems {
                println!("LOG {}: {}", p.subject, p.reason);
            }
            println!(
                "log: {} leaves, {} checkpoints, {} records awaiting integration, {} problems",
                l.leaves, l.checkpoints, l.pending, log_problems
            );
        }
    }
    Ok(if summary.breaks.is_empty() && log_problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
