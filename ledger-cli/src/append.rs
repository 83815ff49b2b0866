//! `ledger append [--fail-fast] [--concurrency N]`: JSON Lines on stdin, one record per
//! line, or one atomic batch per line (`{"anchor_id": …, "records": [ … ], "expected_head":
//! "<hash>" | null}`: all or none, `Ledger::append_all`); one JSON line on stdout per input
//! line, in input order: the acknowledgement, or the error naming the line and the field.
//!
//! Lines of different anchors are appended concurrently (up to `--concurrency` in flight);
//! lines of one anchor are appended one after another, in input order, so a chain takes them
//! in the order given.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use anyhow::Context as _;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ledger_actors::transfer::format::{self, AppendLine, FieldError};
use ledger_actors::{AppendAck, Backend, Durability, LedgerConfig, LedgerError, PartitionedLedger};
use serde_json::{Value, json};
use tokio::io::BufReader;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Lines read but not yet printed, at most (bounds memory whatever the input's length).
const MAX_OUTSTANDING: usize = 8192;

/// Arguments of `ledger append`.
#[derive(clap::Args)]
pub struct Args {
    /// Stop at the first line that fails: no later line is started (lines already in flight,
    /// at most --concurrency, finish and are reported).
    #[arg(long)]
    fail_fast: bool,
    /// Appends in flight at once (lines of one anchor are always appended in order).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

/// A started line: its number, anchor, whether it failed, and its output line.
type InFlight = Pin<Box<dyn Future<Output = (u64, Uuid, bool, Value)>>>;

/// Appends one input line (a record or an atomic batch) and makes its output line.
async fn append_line(
    ledger: PartitionedLedger,
    line: u64,
    input: AppendLine,
) -> (u64, Uuid, bool, Value) {
    match input {
        AppendLine::One(record) => {
            let anchor = record.anchor_id;
            let result = ledger.append(record).await;
            (line, anchor, result.is_err(), outcome(line, &result))
        }
        AppendLine::Batch {
            anchor_id,
            records,
            expect,
        } => {
            let result = ledger.append_all(anchor_id, records, expect).await;
            let value = match &result {
                Ok(ack) => json!({
                    "line": line,
                    "anchor_id": anchor_id,
                    "records": ack.records.iter().map(|r| json!({
                        "rid": r.rid,
                        "hash": r.hash,
                        "prev_hash": r.prev_hash,
                        "ts": format::format_ts(r.ts),
                    })).collect::<Vec<_>>(),
                    "durability": durability(ack.durability),
                    "replayed": ack.replayed,
                }),
                Err(e) => error_line(line, e),
            };
            (line, anchor_id, result.is_err(), value)
        }
    }
}

fn line_anchor(input: &AppendLine) -> Uuid {
    match input {
        AppendLine::One(r) => r.anchor_id,
        AppendLine::Batch { anchor_id, .. } => *anchor_id,
    }
}

/// Runs `ledger append`: exit 0 when every line was appended, 1 when a line failed (or
/// records acknowledged during an outage did not reach PostgreSQL before exit), 2 when the
/// ledger cannot start.
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    if config.backend == Backend::Postgres {
        // Refuse to start on the memory fallback: acknowledgements would be lost at exit.
        // Opening read-only checks the database and the schema, and nothing else.
        PartitionedLedger::open_read_only(config.clone())
            .await
            .context("checking the database")?
            .shutdown()
            .await?;
    } else if config.spool_dir.is_none() {
        eprintln!(
            "ledger: note: the memory backend keeps nothing after this process exits (set LEDGER_BACKEND=postgres, or a spool_dir)"
        );
    }
    let max_line = config_line_limit(&config);
    // Partitioned: each line goes to its anchor's partition.
    let ledger = PartitionedLedger::start(config)
        .await
        .context("starting the ledger")?;
    let mut input = read_stdin(max_line);
    let concurrency = args.concurrency.max(1);
    let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
    let mut waiting: HashMap<Uuid, VecDeque<(u64, AppendLine)>> = HashMap::new();
    let mut busy: HashSet<Uuid> = HashSet::new();
    // Lines whose anchor is free, started lowest line first.
    let mut ready: BTreeMap<u64, AppendLine> = BTreeMap::new();
    let mut done: BTreeMap<u64, Option<Value>> = BTreeMap::new();
    let mut next_out: u64 = 1;
    let mut line_no: u64 = 0;
    let mut eof = false;
    let mut failures: u64 = 0;
    let mut stop = false;
    loop {
        // Start what may start.
        while !stop && in_flight.len() < concurrency {
            let Some((line, record)) = ready.pop_first() else {
                break;
            };
            busy.insert(line_anchor(&record));
            in_flight.push(Box::pin(append_line(ledger.clone(), line, record)));
        }
        let outstanding = (line_no + 1 - next_out) as usize;
        let may_read = !eof && !stop && outstanding < MAX_OUTSTANDING && ready.len() < concurrency;
        if !may_read && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            line = input.recv(), if may_read => {
                let text = match line {
                    None => {
                        eof = true;
                        continue;
                    }
                    Some(Err(e)) => return Err(e).context("reading standard input"),
                    Some(Ok(text)) => text,
                };
                line_no += 1;
                if text.as_ref().is_ok_and(|t| t.trim().is_empty()) {
                    done.insert(line_no, None);
                } else {
                    match text.map_err(FieldError::whole_line).and_then(|t| format::parse_append_input(&t)) {
                        Ok(record) => {
                            let anchor = line_anchor(&record);
                            if busy.contains(&anchor) || waiting.contains_key(&anchor) {
                                waiting.entry(anchor).or_default().push_back((line_no, record));
                            } else {
                                busy.insert(anchor);
                                ready.insert(line_no, record);
                            }
                        }
                        Err(e) => {
                            failures += 1;
                            stop |= args.fail_fast;
                            done.insert(line_no, Some(field_error(line_no, &e)));
                        }
                    }
                }
            }
            Some((line, anchor, failed, value)) = in_flight.next(), if !in_flight.is_empty() => {
                if failed {
                    failures += 1;
                    stop |= args.fail_fast;
                }
                done.insert(line, Some(value));
                busy.remove(&anchor);
                if let Some(queue) = waiting.get_mut(&anchor) {
                    if let Some((line, record)) = queue.pop_front() {
                        busy.insert(anchor);
                        ready.insert(line, record);
                    }
                    if queue.is_empty() {
                        waiting.remove(&anchor);
                    }
                }
            }
        }
        // Print the lines that are settled, in input order.
        while let Some(entry) = done.remove(&next_out) {
            if let Some(value) = entry {
                println!("{value}");
            }
            next_out += 1;
        }
    }
    // Lines read but never started (--fail-fast stopped first) are reported as such.
    let unstarted = ready
        .into_iter()
        .chain(waiting.into_values().flatten())
        .map(|(line, _)| line);
    for line in unstarted {
        let value = json!({ "line": line, "error": "not_attempted", "field": null,
            "message": "not appended: --fail-fast stopped at an earlier failure" });
        done.insert(line, Some(value));
    }
    for value in done.into_values().flatten() {
        println!("{value}");
    }
    let reports = ledger.shutdown().await?;
    let mut code = if failures > 0 { 1 } else { 0 };
    if stop {
        eprintln!("ledger: --fail-fast: stopped after line {line_no}; later lines were not read");
    }
    for report in reports.into_iter().filter(|r| r.buffered > 0) {
        code = 1;
        eprintln!(
            "ledger: {} acknowledged records were not in PostgreSQL when the process stopped{}",
            report.buffered,
            report
                .spool
                .map(|p| format!(
                    "; they are in the spool {} and are written at the next start",
                    p.display()
                ))
                .unwrap_or_else(|| "; they are lost (configure spool_dir to keep them)".into())
        );
    }
    Ok(ExitCode::from(code))
}

/// Longest input line kept: six times `max_payload_bytes` (JSON escapes) plus room for the
/// other fields.
fn config_line_limit(config: &LedgerConfig) -> usize {
    config
        .max_payload_bytes
        .saturating_mul(6)
        .saturating_add(64 * 1024)
}

/// A line of standard input: its text, or why it cannot be a record line (too long, not
/// UTF-8).
type InputLine = Result<String, String>;

/// Reads standard input line by line on a task of its own (so that waiting for a line can be
/// interrupted without losing part of one), holding at most `max_line` bytes of a line.
fn read_stdin(max_line: usize) -> mpsc::Receiver<std::io::Result<InputLine>> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::task::spawn_local(async move {
        let mut input = BufReader::new(tokio::io::stdin());
        let mut buf = Vec::new();
        loop {
            let line = match format::read_line(&mut input, &mut buf, max_line).await {
                Ok(format::LineRead::Eof) => return,
                Ok(format::LineRead::Line) => Ok(String::from_utf8(std::mem::take(&mut buf))
                    .map(|t| t.trim_end_matches('\r').to_owned())
                    .map_err(|e| format!("the line is not UTF-8: {e}"))),
                Ok(format::LineRead::TooLong(n)) => Ok(Err(format!(
                    "the line is {n} bytes, over the limit of {max_line}"
                ))),
                Err(e) => Err(e),
            };
            let failed = line.is_err();
            if tx.send(line).await.is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// The output line of an append: the acknowledgement, or the error.
fn outcome(line: u64, result: &Result<AppendAck, LedgerError>) -> Value {
    match result {
        Ok(ack) => json!({
            "line": line,
            "rid": ack.record.rid,
            "hash": ack.record.hash,
            "prev_hash": ack.record.prev_hash,
            "ts": format::format_ts(ack.record.ts),
            "durability": durability(ack.durability),
            "replayed": ack.replayed,
        }),
        Err(e) => error_line(line, e),
    }
}

/// The output line of a failed append: the error's kind, the field (inside a batch
/// `records/<index>/<field>`) and the message.
fn error_line(line: u64, e: &LedgerError) -> Value {
    json!({ "line": line, "error": error_kind(e), "field": error_field(e), "message": e.to_string() })
}

fn error_field(e: &LedgerError) -> Option<String> {
    match e {
        LedgerError::Invalid(inner) => inner.field().map(str::to_owned),
        LedgerError::Conflict { .. } => Some("rid".to_owned()),
        LedgerError::HeadMismatch { .. } => Some("expected_head".to_owned()),
        LedgerError::BatchTooLarge { .. }
        | LedgerError::InvalidBatch(_)
        | LedgerError::BatchOverlap { .. } => Some("records".to_owned()),
        LedgerError::BatchRefused { index, reason, .. } => Some(match error_field(reason) {
            Some(f) => format!("records/{index}/{}", f.trim_start_matches('/')),
            None => format!("records/{index}"),
        }),
        _ => None,
    }
}

fn field_error(line: u64, e: &FieldError) -> Value {
    json!({ "line": line, "error": "malformed", "field": e.field, "message": e.message })
}

/// A stable snake_case name for each error, for scripts.
fn error_kind(e: &LedgerError) -> &'static str {
    match e {
        LedgerError::Invalid(_) => "invalid",
        LedgerError::Conflict { .. } => "conflict",
        LedgerError::ForkRefused { .. } => "fork_refused",
        LedgerError::Overloaded { .. } => "overloaded",
        LedgerError::Timeout { .. } => "timeout",
        LedgerError::Aborted { .. } => "aborted",
        LedgerError::Contended { .. } => "contended",
        LedgerError::Unavailable(_) => "unavailable",
        LedgerError::Database(_) => "database",
        LedgerError::ShuttingDown => "shutting_down",
        LedgerError::HeadMismatch { .. }
        | LedgerError::BatchRefused { .. }
        | LedgerError::BatchTooLarge { .. }
        | LedgerError::InvalidBatch(_)
        | LedgerError::BatchOverlap { .. } => e.kind(),
        _ => "internal",
    }
}

fn durability(d: Durability) -> &'static str {
    match d {
        Durability::Volatile => "volatile",
        Durability::Buffered => "buffered",
        Durability::Spooled => "spooled",
        Durability::Committed => "committed",
    }
}
