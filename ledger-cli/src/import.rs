//! `ledger import FILE|- [--json] [--batch-size N]`: an export into the configured store,
//! every record verified before it is written; idempotent and resumable.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use ledger_actors::partition::create_partitioned_store;
use ledger_actors::transfer::{self, ImportOptions, ImportSummary, Refusal};
use ledger_actors::{Backend, LedgerConfig};
use serde_json::json;
use tokio::io::{AsyncBufRead, BufReader};

/// Input buffer.
const IN_BUFFER: usize = 1 << 20;

/// Arguments of `ledger import`.
#[derive(clap::Args)]
pub struct Args {
    /// The export to read; `-` for standard input.
    input: PathBuf,
    /// Print one JSON object `{"read", "imported", "skipped", "refused", "complete"}` on
    /// stdout, and each refusal as a JSON line on stderr.
    #[arg(long)]
    json: bool,
    /// Records verified and written per transaction (default: the configured batch_size).
    #[arg(long)]
    batch_size: Option<usize>,
}

/// Runs `ledger import`: exit 0 when every record was imported or already stored and the
/// input was complete, 1 when a record was refused or the input was cut short, 2 when the
/// import could not run or stopped (run it again to resume).
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    if config.backend == Backend::Memory {
        eprintln!(
            "ledger: note: the memory backend keeps nothing after this process exits; the \
             import only verifies the input"
        );
    }
    // Partitioned: each record goes to its anchor's partition.
    let store = create_partitioned_store(&config).await?;
    let options = ImportOptions {
        batch_size: args.batch_size.unwrap_or(config.batch_size),
        limits: config.limits(),
    };
    let json_out = args.json;
    let mut on_refused = |r: &Refusal| {
        if json_out {
            eprintln!(
                "{}",
                serde_json::to_string(r).unwrap_or_else(|e| e.to_string())
            );
        } else {
            eprintln!("refused: {r}");
        }
    };
    let summary = if args.input.as_os_str() == "-" {
        let input = BufReader::with_capacity(IN_BUFFER, tokio::io::stdin());
        read(store.as_ref(), input, &options, &mut on_refused, None).await?
    } else {
        let file = tokio::fs::File::open(&args.input)
            .await
            .with_context(|| format!("opening {}", args.input.display()))?;
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            Some(bar)
        } else {
            None
        };
        let input = BufReader::with_capacity(IN_BUFFER, file);
        let summary = read(
            store.as_ref(),
            input,
            &options,
            &mut on_refused,
            bar.as_ref(),
        )
        .await?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        summary
    };
    let complete = summary.is_complete();
    if args.json {
        println!(
            "{}",
            json!({
                "read": summary.read,
                "imported": summary.imported,
                "skipped": summary.skipped,
                "refused": summary.refused,
                "complete": complete,
            })
        );
    } else {
        println!(
            "read {}, imported {}, skipped {} (already stored), refused {}",
            summary.read, summary.imported, summary.skipped, summary.refused
        );
    }
    if !complete {
        match summary.end {
            None => eprintln!(
                "ledger: the input has no end line: it was cut short; the records before the cut were verified and imported"
            ),
            Some(n) => eprintln!(
                "ledger: the end line counts {n} records but {} were read: lines were lost or added",
                summary.read
            ),
        }
    }
    Ok(if summary.refused == 0 && complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn read<R: AsyncBufRead + Unpin>(
    store: &dyn ledger_actors::LedgerStore,
    input: R,
    options: &ImportOptions,
    on_refused: &mut dyn FnMut(&Refusal),
    bar: Option<&ProgressBar>,
) -> anyhow::Result<ImportSummary> {
    let mut progress = |s: &ImportSummary| {
        if let Some(bar) = bar {
            bar.set_message(format!(
                "{} read, {} imported, {} skipped, {} refused",
                s.read, s.imported, s.skipped, s.refused
            ));
            bar.tick();
        }
    };
    transfer::import(store, input, options, on_refused, &mut progress)
        .await
        .context("import stopped (what was written stays; run the same command again to resume)")
}
