//! `ledger records --anchor ID [--since TS] [--until TS] [--limit N] [--json]`: one
//! anchor's records in chain order.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use ledger_actors::transfer::format::format_ts;
use std::sync::Arc;

use ledger_actors::{LedgerConfig, LedgerStore, RecordRange};
use uuid::Uuid;

/// Records read per page.
const PAGE: usize = 1000;

/// Arguments of `ledger records`.
#[derive(clap::Args)]
pub struct Args {
    /// The anchor whose chain is listed.
    #[arg(long)]
    anchor: Uuid,
    /// Only records with ts at or after this time (RFC 3339).
    #[arg(long, value_parser = crate::read::parse_ts)]
    since: Option<DateTime<Utc>>,
    /// Only records with ts before this time (RFC 3339).
    #[arg(long, value_parser = crate::read::parse_ts)]
    until: Option<DateTime<Utc>>,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// JSON Lines: one record per line, as the export writes them.
    #[arg(long)]
    json: bool,
}

/// Runs `ledger records`: exit 0 (even for an empty window), 1 when the anchor has no
/// records at all, 2 when the store cannot be read.
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    crate::read::with_store(&config, |store| list(store, args)).await
}

async fn list(store: Arc<dyn LedgerStore>, args: Args) -> anyhow::Result<ExitCode> {
    if store.head(args.anchor).await?.is_none() {
        eprintln!("ledger: anchor {} has no records", args.anchor);
        return Ok(ExitCode::from(1));
    }
    if !args.json {
        println!(
            "{:<27} {:<36} {:<16} {:<16} {:<16} {:<12} payload",
            "ts", "rid", "kind", "slot", "producer", "hash"
        );
    }
    let mut range = RecordRange {
        since: args.since,
        until: args.until,
        limit: PAGE.min(args.limit),
    };
    let mut shown = 0;
    while shown < args.limit {
        range.limit = PAGE.min(args.limit - shown);
        let page = store.records(args.anchor, &range).await?;
        let Some(last) = page.last() else { break };
        range = range.after(last);
        let full = page.len() == range.limit;
        for r in &page {
            if args.json {
                print!("{}", crate::get::json_line(r)?);
            } else {
                println!(
                    "{:<27} {:<36} {:<16} {:<16} {:<16} {:<12} {}",
                    format_ts(r.ts),
                    r.rid,
                    cut(&r.kind, 16),
                    cut(&r.slot, 16),
                    cut(&r.producer, 16),
                    &r.hash.to_hex()[..12],
                    cut(&r.payload.to_string(), 60)
                );
            }
        }
        shown += page.len();
        if !full {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `text` cut to `max` characters, with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
