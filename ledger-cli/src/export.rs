//! `ledger export [--anchor ID] [--since TS] [-o FILE]`: the records as JSON Lines (format
//! in docs/OPERATIONS.md), streamed page by page.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use ledger_actors::transfer::{self, ExportOptions};
use ledger_actors::{LedgerConfig, LedgerStore};
use tokio::io::{AsyncWrite, BufWriter};
use uuid::Uuid;

/// Output buffer: pages are written in a few large writes.
const OUT_BUFFER: usize = 1 << 20;

/// Arguments of `ledger export`.
#[derive(clap::Args)]
pub struct Args {
    /// Only this anchor's records.
    #[arg(long)]
    anchor: Option<Uuid>,
    /// Only records with ts at or after this time (RFC 3339): an incremental export.
    #[arg(long, value_parser = crate::read::parse_ts)]
    since: Option<DateTime<Utc>>,
    /// Write to this file (created through FILE.partial, renamed when complete) instead of
    /// standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Runs `ledger export`: exit 0 when the export is complete, 2 otherwise (an incomplete
/// export has no end line, and with `-o` no FILE).
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    crate::read::with_store(&config, |store| export(store, args)).await
}

async fn export(store: Arc<dyn LedgerStore>, args: Args) -> anyhow::Result<ExitCode> {
    let options = ExportOptions {
        anchor: args.anchor,
        since: args.since,
    };
    // A progress bar only where someone watches it, and only when it cannot mix with the
    // export itself.
    let bar = if std::io::stderr().is_terminal()
        && (args.output.is_some() || !std::io::stdout().is_terminal())
    {
        let total = match options {
            ExportOptions {
                anchor: None,
                since: None,
            } => store.count().await?,
            ExportOptions {
                anchor: Some(a),
                since: None,
            } => store.count_anchor(a).await?,
            _ => 0,
        };
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {pos}/{len} records [{elapsed_precise}] {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let mut progress = |n: u64| {
        if let Some(bar) = &bar {
            bar.set_position(n);
        }
    };
    let summary = match &args.output {
        // A device or a pipe (`-o /dev/null`, a FIFO) is written in place: the partial file
        // and rename below would replace it with a regular file.
        Some(path) if path.exists() && !path.is_file() && !path.is_dir() => {
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            write(store.as_ref(), file, &options, &mut progress).await?
        }
        Some(path) => {
            let partial = partial_path(path);
            let file = tokio::fs::File::create(&partial)
                .await
                .with_context(|| format!("creating {}", partial.display()))?;
            let summary = write(store.as_ref(), file, &options, &mut progress).await?;
            tokio::fs::rename(&partial, path)
                .await
                .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
            summary
        }
        None => write(store.as_ref(), tokio::io::stdout(), &options, &mut progress).await?,
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    eprintln!(
        "exported {} records of {} anchors{}",
        summary.records,
        summary.anchors,
        args.output
            .as_ref()
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

async fn write<W: AsyncWrite + Unpin>(
    store: &dyn LedgerStore,
    out: W,
    options: &ExportOptions,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<transfer::ExportSummary> {
    let mut out = BufWriter::with_capacity(OUT_BUFFER, out);
    Ok(transfer::export(store, &mut out, options, progress).await?)
}

/// `FILE.partial`, where the export is written until it is complete.
fn partial_path(path: &std::path::Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}
