//! `ledger health`: start the ledger from the configuration, report its health, exit by grade.

use std::process::ExitCode;

use ledger_actors::{HealthStatus, LedgerConfig, PartitionedLedger};
use serde_json::json;

/// Arguments of `ledger health`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The exit code of a grade: 0 healthy, 1 degraded, 2 down.
pub fn exit_code(status: HealthStatus) -> ExitCode {
    match status {
        HealthStatus::Healthy => ExitCode::SUCCESS,
        HealthStatus::Degraded => ExitCode::from(1),
        HealthStatus::Down => ExitCode::from(2),
    }
}

/// Runs `ledger health` (on a partitioned ledger: every partition, each reported under its
/// index and redacted DSN, the exit code by the worst): opens the ledger read-only in this process from the configuration
/// (so the backend, the database and the actors are exercised, but it never falls back to
/// memory and never touches a running service's outage spool), prints
/// [`ledger_actors::Health`] and shuts the ledger down. A ledger that cannot open at all
/// (database unreachable, login refused, schema missing) is reported down.
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    let partitioned = !config.partitions.is_empty();
    let ledger = match PartitionedLedger::open_read_only(config).await {
        Ok(ledger) => ledger,
        Err(e) => {
            let reason = format!("the ledger cannot start: {e}");
            if args.json {
                println!("{}", json!({ "status": "down", "reasons": [reason] }));
            } else {
                println!("status: down\nreasons:\n  - {reason}");
            }
            return Ok(exit_code(HealthStatus::Down));
        }
    };
    let health = ledger.health().await;
    ledger.shutdown().await?;
    if !partitioned {
        // One partition: the report as it always was.
        let Some(one) = health.partitions.first() else {
            anyhow::bail!("no partition reported its health");
        };
        if args.json {
            println!("{}", serde_json::to_string(&one.health)?);
        } else {
            println!("{}", one.health);
        }
        return Ok(exit_code(one.health.status));
    }
    if args.json {
        println!("{}", serde_json::to_string(&health)?);
    } else {
        println!("status: {} (the worst partition's)", health.status);
        for p in &health.partitions {
            println!(
                "\npartition {} ({}):",
                p.partition,
                p.dsn.as_deref().unwrap_or("")
            );
            for line in p.health.to_string().lines() {
                println!("  {line}");
            }
        }
    }
    Ok(exit_code(health.status))
}
