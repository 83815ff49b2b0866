//! The spool across restarts: a memory ledger reloading it ([`reload_spool`]), and a
//! PostgreSQL ledger writing it to the database at start ([`recover_spool`], re-chaining
//! onto the database's heads and reporting every re-chained record in a [`SpoolRecovery`]).
//!
//! This is what makes the rollback runbook (docs/OPERATIONS.md, "Rollback and roll-forward")
//! safe: records appended on the memory backend during the rollback window are spooled,
//! survive restarts, and reach PostgreSQL at roll-forward.
//!
//! # Layout
//! - [`SpoolRecovery`], [`RechainedRecord`]: what a recovery did, as the operator sees it
//!   (`ledger recover-spool --json`, the report file, [`crate::Ledger::spool_recovery`]).
//! - [`reload_spool`]: a memory ledger's start.
//! - [`recover_spool`]: a PostgreSQL ledger's start (and `ledger recover-spool`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use crate::error::LedgerError;
use crate::pg::store::PostgresLedgerStore;
use crate::spool;
use crate::store::MemoryLedgerStore;
use crate::writer::drain::{self, DrainState};

/// Prefix of the report file [`recover_spool`] writes in the spool directory when it
/// re-chained or kept records: `avl-recovery-<unix µs>.json`.
pub const REPORT_PREFIX: &str = "avl-recovery-";

pub use crate::store::RechainedRecord;

/// What writing a spool to PostgreSQL did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpoolRecovery {
    /// The spool file.
    pub spool: PathBuf,
    /// Complete records read from the spool.
    pub records: u64,
    /// Every record written under a new hash.
    pub rechained: Vec<RechainedRecord>,
    /// Rids of records the database refuses for good (their rid is stored with other
    /// content): not in PostgreSQL, kept in the spool directory's kept file.
    pub kept: Vec<Uuid>,
    /// Why reading stopped before the end of the spool, if it did (the file was kept aside).
    pub corrupt_tail: Option<String>,
    /// The report file written in the spool directory (when anything was re-chained, kept
    /// or corrupt).
    pub report_file: Option<PathBuf>,
}

/// Loads the spool in `dir` into `store` (a memory ledger's start with a `spool_dir`) and
/// opens it for appending. A record the store refuses (it was spooled, then refused, so never
/// acknowledged) is skipped with a warning. A corrupt or truncated tail is kept aside
/// (`.corrupt-<unix time>`) and the spool rewritten with the complete records before it, so
/// that new records are not appended behind unreadable bytes.
pub fn reload_spool(dir: &Path, store: &MemoryLedgerStore) -> Result<spool::Spool, LedgerError> {
    let contents = spool::read(dir)?;
    let mut loaded = 0usize;
    for r in &contents.records {
        match store.insert_now(std::slice::from_ref(r)) {
            Ok(()) => loaded += 1,
            Err(e) => {
                tracing::warn!(rid = %r.rid, error = %e, "spool reload: record not loaded (it was never acknowledged)");
            }
        }
    }
    let mut out = spool::Spool::open(dir)?;
    if let Some((offset, reason)) = &contents.corrupt_tail {
        let path = dir.join(spool::SPOOL_FILE);
        let aside = keep_aside(&path)?;
        tracing::error!(spool = %path.display(), offset, %reason, kept = %aside.display(),
            records_before = contents.records.len(), "spool has a corrupt tail; it is kept aside and the spool rewritten with the complete records before it");
        out.truncate()?;
        for r in &contents.records {
            out.append(r)?;
        }
        out.sync()?;
    }
    if !contents.records.is_empty() {
        tracing::info!(records = loaded, spool = %dir.display(), "memory ledger reloaded its spool");
    }
    Ok(out)
}

/// Copies the spool file to `<file>.corrupt-<unix time>` and returns that path.
fn keep_aside(path: &Path) -> Result<PathBuf, LedgerError> {
    let aside = path.with_extension(format!("spool.corrupt-{}", chrono::Utc::now().timestamp()));
    std::fs::copy(path, &aside).map_err(|e| {
        LedgerError::Internal(format!("spool: keep corrupt copy {}: {e}", aside.display()))
    })?;
    Ok(aside)
}

/// Writes the records an earlier process left in the spool (an outage's, or a memory
/// ledger's rollback window) to PostgreSQL, then empties it. Records already stored (same
/// rid and content, possibly re-chained by an earlier, interrupted recovery) are skipped;
/// a record whose anchor moved in the database is re-chained onto its head. Every re-chained
/// record is logged (warn) and listed in the returned report and in a report file in `dir`.
/// A corrupt or truncated tail is reported and the file kept aside (`.corrupt-<unix
/// time>`); the complete frames before it are applied, a partial frame never is.
pub async fn recover_spool(
    dir: &Path,
    store: &Arc<PostgresLedgerStore>,
    batch_size: usize,
) -> Result<SpoolRecovery, LedgerError> {
    let contents = spool::read(dir)?;
    let path = dir.join(spool::SPOOL_FILE);
    let mut report = SpoolRecovery {
        spool: path.clone(),
        records: contents.records.len() as u64,
        ..SpoolRecovery::default()
    };
    if let Some((offset, reason)) = &contents.corrupt_tail {
        let aside = keep_aside(&path)?;
        tracing::error!(spool = %path.display(), offset, %reason, kept = %aside.display(),
            records_before = contents.records.len(), "outage spool has a corrupt tail; applying the complete records before it");
        report.corrupt_tail = Some(format!(
            "at byte {offset}: {reason} (file kept as {})",
            aside.display()
        ));
    }
    if contents.records.is_empty() && contents.corrupt_tail.is_none() {
        return Ok(report);
    }
    let pool = store.connection().get_postgres_connection_pool().clone();
    let mut state = DrainState::default();
    // Whole frames per drain batch: an atomic batch (one frame) is written whole or not
    // at all, like the writer's drain.
    let mut chunks: Vec<(std::ops::Range<usize>, Vec<usize>)> = Vec::new();
    let mut at = 0;
    for &unit in &contents.units {
        match chunks.last_mut() {
            Some((range, units)) if range.len() < batch_size.max(1) => {
                range.end += unit;
                units.push(unit);
            }
            _ => chunks.push((at..at + unit, vec![unit])),
        }
        at += unit;
    }
    for (range, units) in chunks {
        let batch = &contents.records[range];
        let out = drain::drain_batch(&pool, store, batch, &units, &mut state).await;
        if let Some(e) = out.unavailable {
            return Err(e);
        }
        for (old, new) in &out.rechained {
            tracing::warn!(rid = %new.rid, anchor = %new.anchor_id, buffered_hash = %old, new_hash = %new.hash, "spool recovery re-chained a record");
            report.rechained.push(RechainedRecord {
                rid: new.rid,
                anchor_id: new.anchor_id,
                old_hash: *old,
                new_hash: new.hash,
            });
        }
        for (r, e) in &out.quarantined {
            tracing::error!(rid = %r.rid, error = %e, "spool recovery: the database refuses a record; it is not in PostgreSQL");
        }
        if !out.quarantined.is_empty() {
            // Never dropped with the spool: kept in the spool directory's kept file.
            let kept: Vec<_> = out.quarantined.iter().map(|(r, _)| Arc::clone(r)).collect();
            let file = spool::keep(dir, &kept)?;
            tracing::error!(records = kept.len(), file = %file.display(), "spool recovery kept records it cannot write");
            crate::metrics::records_kept(kept.len() as u64);
            report.kept.extend(kept.iter().map(|r| r.rid));
        }
    }
    if !report.rechained.is_empty() || !report.kept.is_empty() || report.corrupt_tail.is_some() {
        let file = dir.join(format!(
            "{REPORT_PREFIX}{}.json",
            chrono::Utc::now().timestamp_micros()
        ));
        report.report_file = Some(file.clone());
        let body = serde_json::to_vec_pretty(&report)
            .map_err(|e| LedgerError::Internal(format!("recovery report: encode: {e}")))?;
        std::fs::write(&file, body)
            .and_then(|()| std::fs::File::open(&file)?.sync_all())
            .map_err(|e| {
                LedgerError::Internal(format!("recovery report {}: write: {e}", file.display()))
            })?;
        tracing::warn!(rechained = report.rechained.len(), kept = report.kept.len(), report = %file.display(),
            "spool recovery report written");
    }
    tracing::info!(records = report.records, spool = %path.display(), "spool written to PostgreSQL");
    spool::Spool::open(dir)?.truncate()?;
    Ok(report)
}
