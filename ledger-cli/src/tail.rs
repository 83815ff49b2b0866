//! `ledger tail [--after POSITION] [--follow] [--json]`: the records in log order with their
//! positions, from a subscription ([`ledger_actors::Ledger::subscribe_with`]) on a ledger
//! opened read-only (no writer, no integrator, no spool).

use std::io::ErrorKind;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use futures::{FutureExt as _, StreamExt as _};
use ledger_actors::{Backend, Delivered, Ledger, LedgerConfig, SubscribeOptions};
use tokio::io::{AsyncWrite, AsyncWriteExt as _, BufWriter};
use uuid::Uuid;

/// Output buffer; flushed whenever the subscription has nothing ready.
const OUT_BUFFER: usize = 1 << 20;

/// Arguments of `ledger tail`.
#[derive(clap::Args)]
pub struct Args {
    /// Start after this position (the last one a consumer handled); default: position 0.
    #[arg(long, value_name = "POSITION")]
    after: Option<u64>,
    /// Keep printing records as they are integrated (until SIGINT or a closed output);
    /// without it, stop at the end of what was integrated when the command started.
    #[arg(long)]
    follow: bool,
    /// One JSON line per record, `{"position": N, "record": {…}}` (the record as `ledger
    /// export` writes it); default: one tab-separated line (position, anchor, rid, kind, ts,
    /// payload).
    #[arg(long)]
    json: bool,
    /// Only this anchor's records (positions stay the log's).
    #[arg(long)]
    anchor: Option<Uuid>,
    /// Only positions a stored checkpoint covers (each has a receipt).
    #[arg(long)]
    checkpointed: bool,
    /// Print no records, only `{"records", "last_position", "seconds", "records_per_sec"}` at
    /// the end (how far the log reaches, and how fast a subscription catches up).
    #[arg(long, conflicts_with = "follow")]
    count: bool,
    /// Records per page read (memory is about three pages; larger pages catch up faster).
    #[arg(long, default_value_t = ledger_actors::subscribe::DEFAULT_PAGE, value_name = "N")]
    page: usize,
    #[command(flatten)]
    partition: crate::parts::PartitionArg,
}

/// Runs `ledger tail`: exit 0 at the end (or on SIGINT, or when the reader of the output
/// goes away), 2 when the log cannot be read.
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    let config = args.partition.config(&config)?;
    if config.backend == Backend::Memory {
        bail!(
            "the memory backend keeps its log inside the process that appended the records, so \
             there is nothing to tail; set LEDGER_BACKEND=postgres and LEDGER_DSN"
        );
    }
    let ledger = Ledger::open_read_only(config)
        .await
        .context("opening the ledger read-only")?;
    let started = std::time::Instant::now();
    let result = tail(&ledger, &args, tokio::io::stdout()).await;
    let seconds = started.elapsed().as_secs_f64();
    ledger.shutdown().await?;
    match result {
        Ok(Tailed { records, last }) => {
            if args.count {
                println!(
                    "{}",
                    serde_json::json!({
                        "records": records,
                        "last_position": last,
                        "seconds": seconds,
                        "records_per_sec": records as f64 / seconds,
                    })
                );
            } else if !args.follow {
                match last {
                    Some(p) => eprintln!("tailed {records} records, last position {p}"),
                    None => eprintln!("tailed {records} records"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}

/// What a tail printed.
struct Tailed {
    records: u64,
    last: Option<u64>,
}

async fn tail<W: AsyncWrite + Unpin>(
    ledger: &Ledger,
    args: &Args,
    out: W,
) -> anyhow::Result<Tailed> {
    let mut stream = ledger.subscribe_with(SubscribeOptions {
        after: args.after,
        follow: args.follow,
        checkpointed_only: args.checkpointed,
        anchor: args.anchor,
        page: args.page,
        ..SubscribeOptions::default()
    });
    let mut out = BufWriter::with_capacity(OUT_BUFFER, out);
    let mut line = Vec::with_capacity(1024);
    let mut tailed = Tailed {
        records: 0,
        last: None,
    };
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        // While records keep coming (a long catch-up), SIGINT is looked at every so often.
        if tailed.records.is_multiple_of(4096) && (&mut interrupt).now_or_never().is_some() {
            break;
        }
        let item = match stream.next().now_or_never() {
            Some(item) => item,
            None => {
                // Nothing ready: what is printed so far goes out before waiting.
                if gone(out.flush().await)? {
                    return Ok(tailed);
                }
                tokio::select! {
                    item = stream.next() => item,
                    _ = &mut interrupt => break,
                }
            }
        };
        let Some(item) = item else { break };
        let delivered = item.context("reading the log")?;
        tailed.records += 1;
        tailed.last = Some(delivered.position);
        if args.count {
            continue;
        }
        line.clear();
        format_line(&mut line, &delivered, args.json)?;
        if gone(out.write_all(&line).await)? {
            return Ok(tailed);
        }
    }
    gone(out.flush().await)?;
    Ok(tailed)
}

/// Whether a write failed because the reader went away (`ledger tail | head`): the end of the
/// tail, not an error.
fn gone(result: std::io::Result<()>) -> anyhow::Result<bool> {
    match result {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(e).context("writing the output"),
    }
}

fn format_line(out: &mut Vec<u8>, d: &Delivered, json: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    if json {
        write!(out, "{{\"position\":{},\"record\":", d.position)?;
        ledger_actors::transfer::format::write_record(out, &d.record)?;
        // `write_record` ends its line; the object closes first.
        out.pop();
        out.extend_from_slice(b"}\n");
    } else {
        let r = &d.record;
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            d.position,
            r.anchor_id,
            r.rid,
            r.kind,
            ledger_actors::transfer::format::format_ts(r.ts),
            r.payload
        )?;
    }
    Ok(())
}
