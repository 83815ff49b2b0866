//! `ledger anchors [--after ID] [--limit N] [--json]`: anchors with their record count and
//! head, in ascending id.

use std::process::ExitCode;

use std::sync::Arc;

use ledger_actors::transfer::format::format_ts;
use ledger_actors::{LedgerConfig, LedgerStore};
use serde_json::json;
use uuid::Uuid;

/// Arguments of `ledger anchors`.
#[derive(clap::Args)]
pub struct Args {
    /// Start after this anchor id (page on with the last id printed).
    #[arg(long)]
    after: Option<Uuid>,
    /// At most this many anchors.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// JSON Lines: one `{"anchor_id", "records", "head_hash", "head_ts"}` per anchor.
    #[arg(long)]
    json: bool,
}

/// Runs `ledger anchors`: exit 0, or 2 when the store cannot be read.
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    crate::read::with_store(&config, |store| list(store, args)).await
}

async fn list(store: Arc<dyn LedgerStore>, args: Args) -> anyhow::Result<ExitCode> {
    let anchors = store.anchors(args.after, args.limit).await?;
    let heads = store.heads(&anchors).await?;
    let counts =
        futures::future::try_join_all(anchors.iter().map(|a| store.count_anchor(*a))).await?;
    if !args.json {
        println!(
            "{:<36} {:>10} {:<27} head_hash",
            "anchor_id", "records", "head_ts"
        );
    }
    for (anchor, count) in anchors.iter().zip(counts) {
        let head = heads.get(anchor);
        let head_ts = head.map(|h| format_ts(h.ts));
        let head_hash = head.map(|h| h.hash.to_hex());
        if args.json {
            println!(
                "{}",
                json!({ "anchor_id": anchor, "records": count, "head_hash": head_hash, "head_ts": head_ts })
            );
        } else {
            println!(
                "{anchor:<36} {count:>10} {:<27} {}",
                head_ts.as_deref().unwrap_or("-"),
                head_hash.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
