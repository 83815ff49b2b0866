//! `ledger checkpoint`: the latest stored checkpoint.

use std::process::ExitCode;

use ledger_actors::LedgerConfig;

/// Arguments of `ledger checkpoint`.
#[derive(clap::Args)]
pub struct Args {
    /// Print `{"size", "root", "note"}` instead of the note.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    partition: crate::parts::PartitionArg,
}

/// Prints the latest checkpoint (the signed note as is); exit 1 when there is none.
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    let config = args.partition.config(&config)?;
    let log = ledger_actors::tlog::open_log(&config)?;
    let Some(c) = log.latest_checkpoint().await? else {
        eprintln!("no checkpoint yet");
        return Ok(ExitCode::from(1));
    };
    let note = ledger_actors::tlog::checkpoint_note(&c);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "size": c.size,
                "root": hex_root(&c.root),
                "note": note,
                "signed": c.note.is_some(),
            })
        );
    } else {
        print!("{note}");
    }
    Ok(ExitCode::SUCCESS)
}

fn hex_root(root: &[u8; 32]) -> String {
    root.iter().map(|b| format!("{b:02x}")).collect()
}
