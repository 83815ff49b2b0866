//! `ledger recover-spool [--json]`: write the records left in the spool (a PostgreSQL
//! outage's, or the memory backend's rollback window) to PostgreSQL, re-chaining them onto
//! the database's heads, and list every re-chained record (the roll-forward step of the
//! rollback runbook, docs/OPERATIONS.md).

use std::process::ExitCode;

use ledger_actors::{Ledger, LedgerConfig};

/// Arguments of `ledger recover-spool`.
#[derive(clap::Args)]
pub struct Args {
    /// Print the report as one JSON object (spool, records, rechained [{rid, anchor_id,
    /// old_hash, new_hash}], kept, corrupt_tail, report_file) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    partition: crate::parts::PartitionArg,
}

/// Runs `ledger recover-spool`: exit 0 when every spooled record is in PostgreSQL, 1 when
/// records were kept (the database refuses them) or the spool had a corrupt tail, 2 when it
/// could not run (no spool_dir or not postgres, the spool locked by a running host, the
/// database unreachable: nothing written, run it again).
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    let config = args.partition.config(&config)?;
    let report = Ledger::recover_spool(&config).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "spool {}: {} records written to PostgreSQL, {} re-chained, {} kept",
            report.spool.display(),
            report.records - report.kept.len() as u64,
            report.rechained.len(),
            report.kept.len()
        );
        for r in &report.rechained {
            println!(
                "re-chained rid {} anchor {}: {} -> {}",
                r.rid, r.anchor_id, r.old_hash, r.new_hash
            );
        }
        for rid in &report.kept {
            println!("kept (not in PostgreSQL) rid {rid}");
        }
        if let Some(tail) = &report.corrupt_tail {
            println!("corrupt tail: {tail}");
        }
        if let Some(file) = &report.report_file {
            println!("report: {}", file.display());
        }
    }
    Ok(if report.kept.is_empty() && report.corrupt_tail.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
