//! Import: read an export (JSON Lines), verify every record, write the good ones in batches.
//!
//! # What is checked, in order
//! 1. The line parses and every field has its type and shape ([`RefusalReason::Malformed`]).
//! 2. The record passes the append-time validation (labels, signature size, payload limits;
//!    [`RefusalReason::Invalid`]).
//! 3. Its hash is recomputed from its fields ([`RefusalReason::HashMismatch`]).
//! 4. Its rid is not stored with other content ([`RefusalReason::RidConflict`]); stored with
//!    the same content it is skipped (idempotence, resumption).
//! 5. It links onto its anchor's head: in the store, or the record before it in the same
//!    batch ([`RefusalReason::Fork`], [`RefusalReason::PredecessorMissing`],
//!    [`RefusalReason::TimestampNotIncreasing`]).
//!
//! A record passing all five is written with its batch through `write_batch`, the one call
//! that writes; a batch is atomic, so a process killed during an import leaves whole batches,
//! and running the same import again skips them and carries on (exact resumption). Memory
//! is bounded by the batch size: the store is the only state kept between batches.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ledger_entities::validate::Limits;
use ledger_entities::{LedgerRecord, RecordHash};
use serde::Serialize;
use tokio::io::AsyncBufRead;
use uuid::Uuid;

use super::format::{self, FORMAT_VERSION, Line};
use crate::error::LedgerError;
use crate::store::{Head, LedgerStore};

/// Bytes a record line may have beyond six times `max_payload_bytes` (the other fields).
const MAX_LINE_OVERHEAD: usize = 64 * 1024;

/// Records written per batch by default.
pub const DEFAULT_IMPORT_BATCH: usize = 1000;

/// How to import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOptions {
    /// Records verified and written together (one transaction); at least 1.
    pub batch_size: usize,
    /// The validation limits records must pass (the ledger's configured ones).
    pub limits: Limits,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_IMPORT_BATCH,
            limits: Limits::default(),
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// Record lines read.
    pub read: u64,
    /// Records written.
    pub imported: u64,
    /// Records already stored with the same content (not written again).
    pub skipped: u64,
    /// Records refused (each reported with its line and rid).
    pub refused: u64,
    /// The record count of the end line, if the input had one. An input whose end line is
    /// missing was cut short; one whose count differs from `read` lost or gained lines.
    pub end: Option<u64>,
}

impl ImportSummary {
    /// True when the input ended with an end line that counts exactly the records read.
    pub fn is_complete(&self) -> bool {
        self.end == Some(self.read)
    }
}

/// Why a record was refused. Nothing refused is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RefusalReason {
    /// The line or a field of it is malformed (not JSON, wrong type, missing, unknown key).
    Malformed {
        /// The field, if one is to blame.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A field fails the ledger's validation (NUL, too long, payload limits, version).
    Invalid {
        /// The field, if one is to blame.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The stored hash is not the hash of the fields: the line was altered.
    HashMismatch {
        /// The hash in the line.
        stored: RecordHash,
        /// The hash of its fields.
        computed: RecordHash,
    },
    /// The rid is already stored with different content.
    RidConflict {
        /// The hash stored under that rid.
        stored_hash: RecordHash,
    },
    /// Writing the record would fork a stored chain: its predecessor already has another
    /// successor (or, for a genesis record, the anchor already has a genesis).
    Fork {
        /// The record's `prev_hash`.
        prev_hash: Option<RecordHash>,
    },
    /// The record's predecessor is neither stored nor imported before it (missing from the
    /// input, or refused earlier).
    PredecessorMissing {
        /// The record's `prev_hash`.
        prev_hash: RecordHash,
    },
    /// The record's `ts` is not after its predecessor's.
    TimestampNotIncreasing {
        /// The record's `ts` (µs since the epoch).
        ts_us: i64,
        /// Its predecessor's `ts` (µs since the epoch).
        previous_us: i64,
    },
    /// The database refused the record (a constraint, a concurrent writer).
    DatabaseRefused {
        /// The database's reason.
        message: String,
    },
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefusalReason::Malformed { field, message }
            | RefusalReason::Invalid { field, message } => match field {
                Some(field) => write!(f, "field {field}: {message}"),
                None => f.write_str(message),
            },
            RefusalReason::HashMismatch { stored, computed } => write!(
                f,
                "hash mismatch: the line says {stored}, its fields hash to {computed} (altered?)"
            ),
            RefusalReason::RidConflict { stored_hash } => write!(
                f,
                "rid already stored with different content (stored hash {stored_hash})"
            ),
            RefusalReason::Fork { prev_hash: Some(p) } => write!(
                f,
                "would fork a stored chain: record {p} already has another successor"
            ),
            RefusalReason::Fork { prev_hash: None } => write!(
                f,
                "would fork a stored chain: the anchor already has another genesis record"
            ),
            RefusalReason::PredecessorMissing { prev_hash } => write!(
                f,
                "predecessor {prev_hash} is neither stored nor imported before it (missing from the input, or refused)"
            ),
            RefusalReason::TimestampNotIncreasing { ts_us, previous_us } => write!(
                f,
                "ts {ts_us} µs is not after its predecessor's {previous_us} µs"
            ),
            RefusalReason::DatabaseRefused { message } => {
                write!(f, "the database refused it: {message}")
            }
        }
    }
}

/// One refused record: where it is in the input and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// 1-based line number in the input.
    pub line: u64,
    /// The record's rid, when the line got that far.
    pub rid: Option<Uuid>,
    /// Why.
    #[serde(flatten)]
    pub reason: RefusalReason,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rid {
            Some(rid) => write!(f, "line {} (rid {rid}): {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// A verified record waiting for its batch, with its line.
struct Pending {
    line: u64,
    record: Arc<LedgerRecord>,
}

/// Where the import is.
struct State<'a> {
    store: &'a dyn LedgerStore,
    summary: ImportSummary,
    on_refused: &'a mut dyn FnMut(&Refusal),
}

impl State<'_> {
    fn refuse(&mut self, line: u64, rid: Option<Uuid>, reason: RefusalReason) {
        self.summary.refused += 1;
        (self.on_refused)(&Refusal { line, rid, reason });
    }
}

/// Reads an export from `input` and writes its records to `store`; see the module doc.
/// `on_refused` hears about each refused record as it is refused; `progress` gets the
/// summary after each batch.
///
/// Errors (the import stops; what was written stays written, and running the same import
/// again resumes): [`LedgerError::Format`] (no header, unsupported version, lines after the
/// end line), [`LedgerError::Io`] (reading `input`), [`LedgerError::Unavailable`] and other
/// store errors other than a refused record.
pub async fn import<R: AsyncBufRead + Unpin>(
    store: &dyn LedgerStore,
    mut input: R,
    options: &ImportOptions,
    on_refused: &mut dyn FnMut(&Refusal),
    progress: &mut dyn FnMut(&ImportSummary),
) -> Result<ImportSummary, LedgerError> {
    let batch_size = options.batch_size.max(1);
    let mut state = State {
        store,
        summary: ImportSummary::default(),
        on_refused,
    };
    // A record line holds at most a payload of `max_payload_bytes` canonical bytes, which
    // JSON escapes (`\u0000`-style) can make six times longer; anything beyond is refused
    // without being held in memory.
    let max_line = options
        .limits
        .max_payload_bytes
        .saturating_mul(6)
        .saturating_add(MAX_LINE_OVERHEAD);
    let mut raw: Vec<u8> = Vec::new();
    let mut line_no: u64 = 0;
    let mut header_seen = false;
    let mut batch: Vec<Pending> = Vec::with_capacity(batch_size);
    loop {
        let read = format::read_line(&mut input, &mut raw, max_line)
            .await
            .map_err(|e| LedgerError::Io(format!("reading line {}: {e}", line_no + 1)))?;
        let line = match read {
            format::LineRead::Eof => break,
            format::LineRead::Line => {
                line_no += 1;
                std::str::from_utf8(&raw).map_err(|e| format!("the line is not UTF-8: {e}"))
            }
            format::LineRead::TooLong(len) => {
                line_no += 1;
                Err(format!(
                    "the line is {len} bytes, over the limit of {max_line}"
                ))
            }
        };
        let line = match line {
            Ok(line) => line.trim_end_matches('\r'),
            Err(message) if header_seen && state.summary.end.is_none() => {
                state.summary.read += 1;
                let reason = RefusalReason::Malformed {
                    field: None,
                    message,
                };
                state.refuse(line_no, None, reason);
                continue;
            }
            Err(message) => return Err(LedgerError::Format(format!("line {line_no}: {message}"))),
        };
        if line.trim().is_empty() {
            continue;
        }
        if state.summary.end.is_some() {
            return Err(LedgerError::Format(format!(
                "line {line_no}: content after the end line"
            )));
        }
        if !header_seen {
            match format::parse_export_line(line) {
                Ok(Line::Header(v)) if v <= FORMAT_VERSION && v > 0 => {
                    header_seen = true;
                    continue;
                }
                Ok(Line::Header(v)) => {
                    return Err(LedgerError::Format(format!(
                        "line {line_no}: format version {v}; this build reads versions 1 to {FORMAT_VERSION}"
                    )));
                }
                _ => {
                    return Err(LedgerError::Format(format!(
                        "line {line_no}: expected the header line {{\"{}\": {FORMAT_VERSION}, ...}}",
                        format::HEADER_KEY
                    )));
                }
            }
        }
        match format::parse_export_line(line) {
            Ok(Line::Header(_)) => {
                return Err(LedgerError::Format(format!(
                    "line {line_no}: a second header line"
                )));
            }
            Ok(Line::End(count)) => state.summary.end = Some(count),
            Ok(Line::Record(record)) => {
                state.summary.read += 1;
                if let Some(pending) = verify(&mut state, line_no, *record, &options.limits) {
                    batch.push(pending);
                }
            }
            Err((e, rid)) => {
                state.summary.read += 1;
                state.refuse(
                    line_no,
                    rid,
                    RefusalReason::Malformed {
                        field: e.field,
                        message: e.message,
                    },
                );
            }
        }
        if batch.len() >= batch_size {
            settle(&mut state, std::mem::take(&mut batch)).await?;
            progress(&state.summary);
        }
    }
    if !header_seen {
        return Err(LedgerError::Format(
            "the input is empty (no header line)".into(),
        ));
    }
    settle(&mut state, batch).await?;
    progress(&state.summary);
    Ok(state.summary)
}

/// Checks 2 and 3 of the module doc; `None` when the record was refused.
fn verify(
    state: &mut State<'_>,
    line: u64,
    record: LedgerRecord,
    limits: &Limits,
) -> Option<Pending> {
    let rid = Some(record.rid);
    if let Err(e) = ledger_entities::validate::validate_record(&record, limits) {
        {
            let field = e.field().map(str::to_owned);
            state.refuse(
                line,
                rid,
                RefusalReason::Invalid {
                    field,
                    message: e.to_string(),
                },
            );
            return None;
        }
    }
    // The payload was canonicalized when the line was parsed; the hash covers those bytes.
    match ledger_entities::record::record_hash(&record) {
        Ok(computed) if computed == record.hash => Some(Pending {
            line,
            record: Arc::new(record),
        }),
        Ok(computed) => {
            let stored = record.hash;
            state.refuse(line, rid, RefusalReason::HashMismatch { stored, computed });
            None
        }
        Err(e) => {
            let field = e.field().map(str::to_owned);
            state.refuse(
                line,
                rid,
                RefusalReason::Invalid {
                    field,
                    message: e.to_string(),
                },
            );
            None
        }
    }
}

/// Checks 4 and 5 of the module doc against the store, then writes what passed.
async fn settle(state: &mut State<'_>, batch: Vec<Pending>) -> Result<(), LedgerError> {
    if batch.is_empty() {
        return Ok(());
    }
    let rids: Vec<Uuid> = batch.iter().map(|p| p.record.rid).collect();
    let stored: HashMap<Uuid, Arc<LedgerRecord>> = state
        .store
        .get_many(&rids)
        .await?
        .into_iter()
        .map(|r| (r.rid, r))
        .collect();
    // Rid -> hash of the records taken in this batch (a rid repeated in the input).
    let mut taken: HashMap<Uuid, RecordHash> = HashMap::new();
    let mut fresh: Vec<Pending> = Vec::with_capacity(batch.len());
    for p in batch {
        let same_as = |hash: &RecordHash, sig: Option<&Vec<u8>>| {
            *hash == p.record.hash && sig == p.record.sig.as_ref()
        };
        if let Some(s) = stored.get(&p.record.rid) {
            if same_as(&s.hash, s.sig.as_ref()) {
                state.summary.skipped += 1;
            } else {
                let stored_hash = s.hash;
                state.refuse(
                    p.line,
                    Some(p.record.rid),
                    RefusalReason::RidConflict { stored_hash },
                );
            }
            continue;
        }
        if let Some(hash) = taken.get(&p.record.rid) {
            if *hash == p.record.hash {
                state.summary.skipped += 1;
            } else {
                let stored_hash = *hash;
                state.refuse(
                    p.line,
                    Some(p.record.rid),
                    RefusalReason::RidConflict { stored_hash },
                );
            }
            continue;
        }
        taken.insert(p.record.rid, p.record.hash);
        fresh.push(p);
    }
    let anchors: Vec<Uuid> = fresh
        .iter()
        .map(|p| p.record.anchor_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut heads: HashMap<Uuid, Option<Head>> = anchors.iter().map(|a| (*a, None)).collect();
    heads.extend(
        state
            .store
            .heads(&anchors)
            .await?
            .into_iter()
            .map(|(a, h)| (a, Some(h))),
    );
    // Hashes accepted in this batch (a second successor of one of them forks the file).
    let mut accepted_hashes: HashSet<RecordHash> = HashSet::new();
    let mut accepted: Vec<Pending> = Vec::with_capacity(fresh.len());
    for p in fresh {
        let r = &p.record;
        let head = heads.get(&r.anchor_id).cloned().flatten();
        let links = r.prev_hash == head.as_ref().map(|h| h.hash);
        if links {
            if let Some(h) = &head
                && r.ts <= h.ts
            {
                let reason = RefusalReason::TimestampNotIncreasing {
                    ts_us: r.ts_micros(),
                    previous_us: h.ts.timestamp_micros(),
                };
                state.refuse(p.line, Some(r.rid), reason);
                continue;
            }
            heads.insert(r.anchor_id, Some(Head::of(r)));
            accepted_hashes.insert(r.hash);
            accepted.push(p);
            continue;
        }
        let reason = match r.prev_hash {
            None => RefusalReason::Fork { prev_hash: None },
            Some(prev) => {
                let known = accepted_hashes.contains(&prev)
                    || state
                        .store
                        .get_by_hash(prev)
                        .await?
                        .is_some_and(|s| s.anchor_id == r.anchor_id);
                if known {
                    RefusalReason::Fork {
                        prev_hash: Some(prev),
                    }
                } else {
                    RefusalReason::PredecessorMissing { prev_hash: prev }
                }
            }
        };
        state.refuse(p.line, Some(r.rid), reason);
    }
    write_verified(state, accepted).await
}

/// Writes verified records: the whole batch at once; if the store refuses it (a concurrent
/// writer, a data error), one record at a time so that only the culprits are refused, with
/// the records after a refused one in its chain refused too.
async fn write_verified(state: &mut State<'_>, accepted: Vec<Pending>) -> Result<(), LedgerError> {
    if accepted.is_empty() {
        return Ok(());
    }
    let records: Vec<Arc<LedgerRecord>> = accepted.iter().map(|p| Arc::clone(&p.record)).collect();
    match write_batch(state.store, &records).await {
        Ok(()) => {
            state.summary.imported += records.len() as u64;
            return Ok(());
        }
        Err(e @ LedgerError::Unavailable(_)) => return Err(e),
        Err(e) => {
            tracing::debug!(error = %e, "import batch refused; writing its records one by one")
        }
    }
    let mut failed: HashSet<RecordHash> = HashSet::new();
    for p in accepted {
        let r = &p.record;
        if let Some(prev) = r.prev_hash
            && failed.contains(&prev)
        {
            failed.insert(r.hash);
            let reason = RefusalReason::PredecessorMissing { prev_hash: prev };
            state.refuse(p.line, Some(r.rid), reason);
            continue;
        }
        match write_batch(state.store, std::slice::from_ref(r)).await {
            Ok(()) => state.summary.imported += 1,
            Err(e @ LedgerError::Unavailable(_)) => return Err(e),
            Err(LedgerError::ForkRefused { prev_hash, .. }) => {
                failed.insert(r.hash);
                state.refuse(p.line, Some(r.rid), RefusalReason::Fork { prev_hash });
            }
            Err(e) => {
                failed.insert(r.hash);
                let reason = RefusalReason::DatabaseRefused {
                    message: e.to_string(),
                };
                state.refuse(p.line, Some(r.rid), reason);
            }
        }
    }
    Ok(())
}

/// The one call through which import writes: [`LedgerStore::insert`], which on PostgreSQL is
/// [`crate::pg::insert_records`] — the same statement group commit, the drain and spool
/// recovery use, refused by the same constraints (fork guard, predecessor check).
async fn write_batch(
    store: &dyn LedgerStore,
    records: &[Arc<LedgerRecord>],
) -> Result<(), LedgerError> {
    store.insert(records).await
}
