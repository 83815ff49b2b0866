//! Chain verification: walk an anchor's records in chain order, recompute every hash and
//! check every link.

use std::fmt;

use futures::StreamExt;
use ledger_entities::{LedgerRecord, RecordHash};
use serde::Serialize;
use uuid::Uuid;

use crate::error::LedgerError;
use crate::store::{LedgerStore, RecordRange};

/// Records read per page while walking a chain.
const PAGE: usize = 1000;
/// Chains verified concurrently by [`verify_all`].
const PARALLEL_CHAINS: usize = 16;

/// Why a chain is broken at a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BreakReason {
    /// The stored hash is not the hash of the stored fields (a field was altered).
    HashMismatch {
        /// Hash stored with the record.
        stored: RecordHash,
        /// Hash recomputed from its fields.
        computed: RecordHash,
    },
    /// `prev_hash` does not name the previous record (a record is missing, inserted or
    /// reordered).
    PrevHashMismatch {
        /// Hash of the previous record (`None` at the start of the chain).
        expected: Option<RecordHash>,
        /// The record's `prev_hash`.
        found: Option<RecordHash>,
    },
    /// `ts` does not increase strictly.
    TimestampNotIncreasing {
        /// Previous record's ts (µs since the epoch).
        previous_us: i64,
        /// This record's ts (µs since the epoch).
        ts_us: i64,
    },
    /// The record cannot be hashed (unsupported version, malformed prev_hash, …).
    Unhashable {
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for BreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakReason::HashMismatch { stored, computed } => {
                write!(f, "hash mismatch: stored {stored}, computed {computed}")
            }
            BreakReason::PrevHashMismatch { expected, found } => write!(
                f,
                "prev_hash {} does not match the previous record's hash {}",
                found.map_or_else(|| "(none)".to_owned(), |h| h.to_string()),
                expected.map_or_else(|| "(none: genesis expected)".to_owned(), |h| h.to_string())
            ),
            BreakReason::TimestampNotIncreasing { previous_us, ts_us } => {
                write!(
                    f,
                    "ts {ts_us} µs is not after the previous record's {previous_us} µs"
                )
            }
            BreakReason::Unhashable { reason } => write!(f, "cannot hash: {reason}"),
        }
    }
}

/// The first break of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// The anchor.
    pub anchor_id: Uuid,
    /// The first record that does not verify.
    pub rid: Uuid,
    /// Its 0-based position in the chain.
    pub position: u64,
    /// Why.
    pub reason: BreakReason,
}

/// Result of verifying one anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// The anchor.
    pub anchor_id: Uuid,
    /// Records walked (up to and including a break).
    pub records: u64,
    /// Hash of the last record walked.
    pub head: Option<RecordHash>,
    /// The first break, if any.
    pub broken: Option<ChainBreak>,
}

impl ChainReport {
    /// True when the chain verified.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Result of verifying every anchor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifySummary {
    /// Anchors verified.
    pub anchors: u64,
    /// Records walked.
    pub records: u64,
    /// The first break of each broken chain.
    pub breaks: Vec<ChainBreak>,
}

/// Checks one record against its predecessor; `None` when it links and hashes correctly.
pub fn check_link(prev: Option<&LedgerRecord>, record: &LedgerRecord) -> Option<BreakReason> {
    let expected = prev.map(|p| p.hash);
    if record.prev_hash != expected {
        return Some(BreakReason::PrevHashMismatch {
            expected,
            found: record.prev_hash,
        });
    }
    if let Some(p) = prev
        && record.ts <= p.ts
    {
        return Some(BreakReason::TimestampNotIncreasing {
            previous_us: p.ts_micros(),
            ts_us: record.ts_micros(),
        });
    }
    match ledger_entities::record::record_hash(record) {
        Ok(computed) if computed == record.hash => None,
        Ok(computed) => Some(BreakReason::HashMismatch {
            stored: record.hash,
            computed,
        }),
        Err(e) => Some(BreakReason::Unhashable {
            reason: e.to_string(),
        }),
    }
}

/// Verifies one anchor's chain; [`LedgerError::UnknownAnchor`] if it has no records.
pub async fn verify_chain(
    store: &dyn LedgerStore,
    anchor_id: Uuid,
) -> Result<ChainReport, LedgerError> {
    let mut range = RecordRange {
        limit: PAGE,
        ..RecordRange::default()
    };
    let mut report = ChainReport {
        anchor_id,
        records: 0,
        head: None,
        broken: None,
    };
    let mut prev: Option<std::sync::Arc<LedgerRecord>> = None;
    loop {
        let page = store.records(anchor_id, &range).await?;
        let Some(last) = page.last() else { break };
        range = range.after(last);
        let full = page.len() == PAGE;
        for record in page {
            if let Some(reason) = check_link(prev.as_deref(), &record) {
                report.records += 1;
                report.broken = Some(ChainBreak {
                    anchor_id,
                    rid: record.rid,
                    position: report.records - 1,
                    reason,
                });
                crate::metrics::chain_break_found();
                return Ok(report);
            }
            report.records += 1;
            report.head = Some(record.hash);
            prev = Some(record);
        }
        if !full {
            break;
        }
    }
    if report.records == 0 {
        return Err(LedgerError::UnknownAnchor(anchor_id));
    }
    Ok(report)
}

/// Verifies every anchor in the store, several chains at a time.
pub async fn verify_all(store: &dyn LedgerStore) -> Result<VerifySummary, LedgerError> {
    let mut summary = VerifySummary::default();
    let mut after = None;
    loop {
        let anchors = store.anchors(after, PAGE).await?;
        let Some(last) = anchors.last() else { break };
        after = Some(*last);
        let mut reports =
            futures::stream::iter(anchors.into_iter().map(|a| verify_chain(store, a)))
                .buffer_unordered(PARALLEL_CHAINS);
        while let Some(report) = reports.next().await {
            let report = match report {
                Ok(r) => r,
                // An anchor listed but empty (e.g. removed meanwhile) has nothing to verify.
                Err(LedgerError::UnknownAnchor(_)) => continue,
                Err(e) => return Err(e),
            };
            summary.anchors += 1;
            summary.records += report.records;
            summary.breaks.extend(report.broken);
        }
    }
    Ok(summary)
}
