//! `ledger verify`: walk chains, recompute hashes, list breaks; on a partitioned ledger
//! every partition (or the one `--partition` names), each break and log problem named by
//! its partition.

use std::process::ExitCode;

use anyhow::Context as _;
use ledger_actors::log_verify::LogReport;
use ledger_actors::partition::partition_config;
use ledger_actors::verify::VerifySummary;
use ledger_actors::{LedgerConfig, PartitionedLedger};
use serde_json::json;
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
    /// With `partitions:` configured: verify only this partition (0-based); needed with
    /// --key or --since, which name one partition's log. Default: every partition.
    #[arg(long, value_name = "N")]
    partition: Option<usize>,
}

/// One partition's outcome.
struct Verified {
    partition: usize,
    summary: VerifySummary,
    log: Option<LogReport>,
}

/// Runs `ledger verify`; exit 0 when every chain is intact, 1 otherwise, 2 when the store
/// cannot be read (the ledger is opened read-only: an unreachable database is an error,
/// never an empty memory store, and the outage spool is not touched).
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    let partitioned = !config.partitions.is_empty();
    let count = ledger_actors::partition::partition_count(&config);
    if let Some(p) = args.partition {
        anyhow::ensure!(
            p < count,
            "--partition {p}: the ledger has {count} partition(s)"
        );
    }
    if count > 1 && args.partition.is_none() && (args.log.key.is_some() || args.log.since.is_some())
    {
        anyhow::bail!(
            "--key and --since name one partition's log (each partition has its own key): add --partition N"
        );
    }
    let ledger = PartitionedLedger::open_read_only(config.clone())
        .await
        .context("opening the ledger read-only")?;
    let result = verify(&ledger, &config, &args, count).await;
    ledger.shutdown().await?;
    let verified = result?;
    let breaks: usize = verified.iter().map(|v| v.summary.breaks.len()).sum();
    let log_problems: usize = verified
        .iter()
        .map(|v| v.log.as_ref().map_or(0, |l| l.problems.len()))
        .sum();
    if args.json {
        let anchors: u64 = verified.iter().map(|v| v.summary.anchors).sum();
        let records: u64 = verified.iter().map(|v| v.summary.records).sum();
        let mut out = json!({
            "anchors_verified": anchors,
            "records": records,
            "continuity_breaks": breaks,
        });
        if partitioned {
            out["breaks"] = verified
                .iter()
                .flat_map(|v| {
                    v.summary.breaks.iter().map(move |b| {
                        let mut b = serde_json::to_value(b).unwrap_or_default();
                        b["partition"] = json!(v.partition);
                        b
                    })
                })
                .collect();
            out["log_problems"] = json!(log_problems);
            out["partitions"] = verified
                .iter()
                .map(|v| {
                    json!({
                        "partition": v.partition,
                        "anchors_verified": v.summary.anchors,
                        "records": v.summary.records,
                        "continuity_breaks": v.summary.breaks.len(),
                        "log": v.log,
                    })
                })
                .collect();
        } else {
            let v = verified.first();
            out["breaks"] = json!(v.map(|v| &v.summary.breaks));
            out["log"] = json!(v.and_then(|v| v.log.as_ref()));
        }
        println!("{out}");
    } else {
        for v in &verified {
            let part = |p: usize| {
                if partitioned {
                    format!("partition {p} ")
                } else {
                    String::new()
                }
            };
            for b in &v.summary.breaks {
                println!(
                    "BROKEN {}anchor {} at record {} (position {}): {}",
                    part(v.partition),
                    b.anchor_id,
                    b.rid,
                    b.position,
                    b.reason
                );
            }
            println!(
                "{}{} anchors, {} records verified, {} broken",
                part(v.partition),
                v.summary.anchors,
                v.summary.records,
                v.summary.breaks.len()
            );
            if let Some(l) = &v.log {
                for p in &l.problems {
                    println!("LOG {}{}: {}", part(v.partition), p.subject, p.reason);
                }
                println!(
                    "{}log: {} leaves, {} checkpoints, {} records awaiting integration, {} problems",
                    part(v.partition),
                    l.leaves,
                    l.checkpoints,
                    l.pending,
                    l.problems.len()
                );
            }
        }
    }
    Ok(if breaks == 0 && log_problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn verify(
    ledger: &PartitionedLedger,
    config: &LedgerConfig,
    args: &Args,
    count: usize,
) -> anyhow::Result<Vec<Verified>> {
    let chosen: Vec<usize> = match (args.anchor, args.partition) {
        (Some(anchor), _) => vec![ledger.partition_of(anchor)],
        (None, Some(p)) => vec![p],
        (None, None) => (0..count).collect(),
    };
    let mut out = Vec::with_capacity(chosen.len());
    for p in chosen {
        let named = |what: &str| {
            if config.partitions.is_empty() {
                what.to_owned()
            } else {
                format!("partition {p}: {what}")
            }
        };
        let part = ledger
            .partition(p)
            .with_context(|| format!("no partition {p}"))?;
        let summary = match args.anchor {
            Some(anchor) => {
                let report = part
                    .verify(anchor)
                    .await
                    .with_context(|| named("verifying the anchor"))?;
                VerifySummary {
                    anchors: 1,
                    records: report.records,
                    breaks: report.broken.into_iter().collect(),
                }
            }
            None => part
                .verify_all()
                .await
                .with_context(|| named("verifying the chains"))?,
        };
        let log = crate::verify_log::run(&partition_config(config, p)?, &args.log)
            .await
            .with_context(|| named("verifying the log"))?;
        out.push(Verified {
            partition: p,
            summary,
            log,
        });
    }
    Ok(out)
}
