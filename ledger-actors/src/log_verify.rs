//! Verification of the transparency log from what is stored: the log's leaves against the
//! records, the tree recomputed from the records against every checkpoint's root and
//! signature, checkpoint ranges, records missing from the log, and leaf order against chain
//! order. Used by `ledger verify`; nothing here writes.

use ledger_tlog::merkle::{leaf_hash, parse_hash};
use ledger_tlog::note::{Checkpoint, NoteVerifier, split_note};
use ledger_tlog::tile::{Edge, TILE_WIDTH, TileId};
use serde::Serialize;

use crate::error::LedgerError;
use crate::integrator::{LogStore, StoredCheckpoint};

/// Leaves read per page.
const PAGE: usize = 10_000;
/// Most unlogged / misordered records listed.
const LIST_LIMIT: usize = 10_000;

/// One finding: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogProblem {
    /// `leaf N (rid R)`, `record R` or `checkpoint C (size N)`.
    pub subject: String,
    /// What is wrong.
    pub reason: String,
}

/// The outcome of [`verify_log`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogReport {
    /// Leaves in the log.
    pub leaves: u64,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// Size and root (hex) of the latest checkpoint.
    pub latest: Option<(u64, String)>,
    /// Records committed but not yet integrated (not a problem by itself).
    pub pending: usize,
    /// Everything found wrong; empty when the log is intact.
    pub problems: Vec<LogProblem>,
}

fn problem(subject: impl Into<String>, reason: impl Into<String>) -> LogProblem {
    LogProblem {
        subject: subject.into(),
        reason: reason.into(),
    }
}

fn checkpoint_subject(c: &StoredCheckpoint) -> String {
    format!("checkpoint {} (size {})", c.cid, c.size)
}

/// Checks a stored checkpoint's note: signed by `verifier` (when given) for this origin,
/// and stating the row's size and root.
fn check_note(c: &StoredCheckpoint, verifier: Option<&NoteVerifier>) -> Option<String> {
    let text = match (verifier, &c.note) {
        (Some(_), None) => return Some("not signed".into()),
        (Some(v), Some(note)) => match v.open(note) {
            Ok(text) => text,
            Err(e) => return Some(format!("signature: {e}")),
        },
        (None, Some(note)) => match split_note(note) {
            Ok((text, _)) => text,
            Err(e) => return Some(e.to_string()),
        },
        (None, None) => return None,
    };
    match Checkpoint::parse(text) {
        Err(e) => Some(e.to_string()),
        Ok(p) if verifier.is_some_and(|v| v.name() != p.origin) => Some(format!(
            "origin {:?} is not this ledger's ({:?})",
            p.origin,
            verifier.map(NoteVerifier::name).unwrap_or_default()
        )),
        Ok(p) if p.size != c.size || p.root != c.root => Some(format!(
            "the signed note says size {} root {}, the row size {} root {}",
            p.size,
            hex::encode(p.root),
            c.size,
            hex::encode(c.root)
        )),
        Ok(_) => None,
    }
}

/// Verifies the stored log (see the module doc). `verifier`: the ledger's checkpoint key
/// (without it signatures are not checked). `since`: a checkpoint saved earlier by a
/// monitor (already signature-checked by the caller); today's log must contain it.
pub async fn verify_log(
    log: &dyn LogStore,
    verifier: Option<&NoteVerifier>,
    since: Option<&Checkpoint>,
) -> Result<LogReport, LedgerError> {
    let mut report = LogReport::default();
    let checkpoints = log.checkpoints().await?;
    report.checkpoints = checkpoints.len();
    report.latest = checkpoints.last().map(|c| (c.size, hex::encode(c.root)));
    let mut previous_size = 0u64;
    for c in &checkpoints {
        if let Some(reason) = check_note(c, verifier) {
            report.problems.push(problem(checkpoint_subject(c), reason));
        }
        if c.range_start != previous_size {
            report.problems.push(problem(
                checkpoint_subject(c),
                format!(
                    "range starts at leaf {} but the previous checkpoint ended at {previous_size}",
                    c.range_start
                ),
            ));
        }
        previous_size = c.size;
    }
    if let (Some(s), Some(v)) = (since, verifier)
        && s.origin != v.name()
    {
        report.problems.push(problem(
            format!("saved checkpoint (size {})", s.size),
            format!("origin {:?} is not this ledger's", s.origin),
        ));
    }

    let mut edge = Edge::new();
    let mut next_checkpoint = 0usize;
    let mut expected = 0u64;
    let check_roots = |edge: &Edge, report: &mut LogReport, next: &mut usize| {
        while let Some(c) = checkpoints.get(*next).filter(|c| c.size == edge.size()) {
            if c.root != edge.root() {
                report.problems.push(problem(
                    checkpoint_subject(c),
                    format!(
                        "root {} differs from the tree recomputed from the stored records \
                         (a record in leaves {}..{} changed, one was removed or inserted there, \
                         or the checkpoint was replaced)",
                        hex::encode(c.root),
                        c.range_start,
                        c.size
                    ),
                ));
            }
            *next += 1;
        }
        if let Some(s) = since.filter(|s| s.size == edge.size())
            && s.root != edge.root()
        {
            report.problems.push(problem(
                format!("saved checkpoint (size {})", s.size),
                "today's log does not contain it: history was rewritten",
            ));
        }
    };
    check_roots(&edge, &mut report, &mut next_checkpoint);
    loop {
        let page = log.leaves(expected, PAGE).await?;
        if page.is_empty() {
            break;
        }
        let first_tile = expected / TILE_WIDTH as u64;
        let last_tile = (expected + page.len() as u64) / TILE_WIDTH as u64;
        let ids: Vec<TileId> = (first_tile..=last_tile)
            .map(|index| TileId { level: 0, index })
            .collect();
        let tiles = log.read_tiles(&ids).await?;
        for entry in page {
            if entry.index != expected {
                report.problems.push(problem(
                    format!("leaf {expected}"),
                    format!(
                        "the log jumps from leaf {} to leaf {} (rid {}): leaves removed",
                        expected.saturating_sub(1),
                        entry.index,
                        entry.rid
                    ),
                ));
                expected = entry.index;
            }
            let subject = format!("leaf {} (rid {})", entry.index, entry.rid);
            let logged = tiles
                .tiles
                .get(&TileId {
                    level: 0,
                    index: entry.index / TILE_WIDTH as u64,
                })
                .and_then(|t| t.get((entry.index % TILE_WIDTH as u64) as usize))
                .copied();
            let current = match &entry.hash {
                None => {
                    report.problems.push(problem(
                        &subject,
                        "the record is in the log but not in ledger_records (deleted)",
                    ));
                    None
                }
                Some(h) => match parse_hash(h) {
                    Ok(bytes) => Some(leaf_hash(&bytes)),
                    Err(e) => {
                        report.problems.push(problem(&subject, e.to_string()));
                        None
                    }
                },
            };
            match (current, logged) {
                (Some(c), Some(l)) if c != l => report.problems.push(problem(
                    &subject,
                    "the record's hash differs from the one logged when it was integrated \
                     (record changed)",
                )),
                (_, None) => report.problems.push(problem(
                    &subject,
                    "its tile hash is missing from ledger_tiles",
                )),
                _ => {}
            }
            // The tree is recomputed from the records as they are now.
            edge.push(current.or(logged).unwrap_or([0u8; 32]));
            check_roots(&edge, &mut report, &mut next_checkpoint);
            expected += 1;
        }
    }
    report.leaves = expected;
    for c in checkpoints.get(next_checkpoint..).unwrap_or_default() {
        report.problems.push(problem(
            checkpoint_subject(c),
            format!(
                "covers {} leaves but the log has only {} (leaves removed)",
                c.size,
                edge.size()
            ),
        ));
    }
    if let Some(s) = since.filter(|s| s.size > edge.size()) {
        report.problems.push(problem(
            format!("saved checkpoint (size {})", s.size),
            format!(
                "today's log has only {} leaves: history was truncated",
                edge.size()
            ),
        ));
    }
    for u in log.unlogged(LIST_LIMIT).await? {
        if u.successor_logged {
            report.problems.push(problem(
                format!("record {}", u.rid),
                "not in the log, but the record after it in its chain is (inserted record)",
            ));
        } else {
            report.pending += 1;
        }
    }
    for (rid, pred) in log.misordered(LIST_LIMIT).await? {
        report.problems.push(problem(
            format!("record {rid}"),
            format!("logged before its chain predecessor {pred} (log order rewritten or record inserted)"),
        ));
    }
    for (rid, reason) in log.unfaithful_payloads(LIST_LIMIT).await? {
        report.problems.push(problem(
            format!("record {rid}"),
            format!(
                "stored payload not hashable as stored ({reason}): it would verify as the \
                 nearest double, not as written (written by hand?)"
            ),
        ));
    }
    Ok(report)
}
