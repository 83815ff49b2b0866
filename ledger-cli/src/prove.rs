//! `ledger prove`: a receipt for one record, or a consistency proof between two sizes.

use std::process::ExitCode;

use anyhow::Context as _;
use ledger_actors::{LedgerConfig, LedgerError, create_ledger_store};
use uuid::Uuid;

/// Arguments of `ledger prove`.
#[derive(clap::Args)]
pub struct Args {
    /// The record id (or, with `--consistency`, the new tree size; default: the latest
    /// checkpoint's).
    target: Option<String>,
    /// Prove that the log at the new size extends the log at this size.
    #[arg(long, value_name = "OLD_SIZE")]
    consistency: Option<u64>,
    #[command(flatten)]
    partition: crate::parts::PartitionArg,
}

/// Prints the receipt (or consistency proof) as JSON; exit 1 when the record is not covered
/// by a checkpoint yet.
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    let config = args.partition.config(&config)?;
    let log = ledger_actors::tlog::open_log(&config)?;
    let result = match args.consistency {
        Some(old) => {
            let new = args
                .target
                .as_deref()
                .map(str::parse::<u64>)
                .transpose()
                .context("NEW_SIZE must be a number")?;
            ledger_actors::tlog::prove_consistency(log.as_ref(), old, new)
                .await
                .map(|p| serde_json::to_string_pretty(&p))
        }
        None => {
            let rid: Uuid = args
                .target
                .as_deref()
                .context("give a record id (or --consistency OLD_SIZE)")?
                .parse()
                .context("not a record id")?;
            let store = create_ledger_store(&config).await?;
            ledger_actors::tlog::prove(store.as_ref(), log.as_ref(), rid)
                .await
                .map(|r| serde_json::to_string_pretty(&r))
        }
    };
    match result {
        Ok(json) => {
            println!("{}", json?);
            Ok(ExitCode::SUCCESS)
        }
        Err(LedgerError::NotYetLogged(reason)) => {
            eprintln!("not provable yet: {reason}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
