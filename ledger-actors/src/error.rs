//! The one error type of this crate.

use std::time::Duration;

use uuid::Uuid;

/// Everything an append, a read, a verification or start-up can fail with. Each variant says
/// how a caller should handle it. The type is `Clone` so one persistence outcome can answer
/// several waiters (an idempotent re-append waits on the original).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    /// The record was refused by validation; nothing was written. Handle: fix the input; a
    /// retry with the same input fails the same way.
    #[error("invalid record: {0}")]
    Invalid(#[from] ledger_entities::Error),
    /// A client rid is already stored (or in flight) with different content. Nothing was
    /// written. Handle: use a fresh rid, or fetch the stored record with `Ledger::get`.
    #[error("rid {rid} is already used by a different record: {reason}")]
    Conflict {
        /// The conflicting rid.
        rid: Uuid,
        /// What differs.
        reason: String,
    },
    /// A read named an anchor that has no records. Handle: check the anchor id.
    #[error("anchor {0} has no records")]
    UnknownAnchor(Uuid),
    /// The ledger could not take the append within the configured timeout (too many appends
    /// in flight). Nothing was written. Handle: back off and retry.
    #[error("ledger overloaded: no capacity for the append within {waited:?}")]
    Overloaded {
        /// How long the append waited for capacity.
        waited: Duration,
    },
    /// The append was handed to the ledger but its outcome did not arrive within the
    /// timeout: it may or may not be committed. Handle: re-append with the same client rid
    /// (idempotent) to learn the outcome.
    #[error("append outcome unknown after {waited:?}; re-append with the same rid to find out")]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The record was not written because an earlier record of the same anchor, still in
    /// flight, was refused; the chain continues from before that record. Handle: retry the
    /// append as is.
    #[error("not written: an earlier in-flight record of anchor {anchor_id} was refused; retry")]
    Aborted {
        /// The anchor whose in-flight suffix was abandoned.
        anchor_id: Uuid,
    },
    /// The database refused a record that would fork a chain (another writer extended the
    /// anchor). Nothing was written. Handle: retry; the chain actor has rebased on the
    /// database's head.
    #[error("fork refused for anchor {anchor_id}: another record already follows {prev_hash:?}")]
    ForkRefused {
        /// The anchor.
        anchor_id: Uuid,
        /// The predecessor that already has a successor (`None`: genesis exists).
        prev_hash: Option<ledger_entities::RecordHash>,
    },
    /// Other writers (other processes sharing the database) kept extending the anchor: the
    /// record was re-linked onto the new head and written again `attempts` times, and the
    /// append's time ran out before one attempt committed. Nothing was written. Handle:
    /// retry; if it persists, fewer processes should write this anchor at once.
    #[error(
        "anchor {anchor_id} kept moving under the append ({attempts} attempts); nothing written, retry"
    )]
    Contended {
        /// The anchor.
        anchor_id: Uuid,
        /// Attempts made (the first write and the re-links).
        attempts: u32,
    },
    /// The database cannot be reached (connection refused or reset, pool timeout, server
    /// shutting down, statement timeout). Handle: retry later; the writer fails over to
    /// memory where it is running.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused data (a constraint or type error not caused by connectivity).
    /// Retrying the same data fails again. Handle: report it; do not treat it as an outage.
    #[error("database refused the data: {0}")]
    Database(String),
    /// The database refused the login or does not exist: wrong password (SQLSTATE 28P01),
    /// unknown role or other authorization failure (28000), unknown database (3D000). A
    /// configuration error, not an outage: the ledger does not fall back to memory. Handle:
    /// fix the DSN (user, password, database name) or create the role/database.
    #[error("database access refused: {0}; check the DSN's user, password and database name")]
    AccessDenied(String),
    /// The database aborted the transaction to resolve a conflict with a concurrent one
    /// (deadlock 40P01, serialization failure 40001); nothing was written. The ledger retries
    /// these itself while its timeout allows; seen by a caller only when time ran out.
    /// Handle: retry.
    #[error("transaction conflict in the database (retry): {0}")]
    Contention(String),
    /// A second ledger process was started with the same `spool_dir` while another ledger
    /// owns that spool (it holds an exclusive lock on `avl-outage.lock`). Nothing was started.
    /// Handle: give each ledger process its own `spool_dir`, or stop the other process.
    #[error(
        "the outage spool in {0} is locked by another running ledger; give each process its own spool_dir"
    )]
    SpoolLocked(std::path::PathBuf),
    /// The ledger was opened read-only ([`crate::Ledger::open_read_only`]) and takes no
    /// appends. Handle: append through a ledger started with [`crate::Ledger::start`].
    #[error("this ledger was opened read-only and takes no appends")]
    ReadOnly,
    /// The database schema is missing or out of date. Handle: run `ledger migrate up` (or set
    /// `auto_migrate: true`).
    #[error("database schema is not up to date ({0}); run `ledger migrate up`")]
    SchemaMissing(String),
    /// Configuration is malformed; the message names the key or line. Handle: fix the
    /// configuration file or environment variable.
    #[error("configuration error: {0}")]
    Config(String),
    /// The ledger is shutting down and takes no more appends. Handle: stop appending.
    #[error("the ledger is shutting down")]
    ShuttingDown,
    /// The anchor's chain actor stopped (passivated) before it took the append; nothing was
    /// written. Handle: [`crate::Ledger`] resends by itself; a host sending to actors
    /// directly resends to the router's current actor for the anchor.
    #[error("the anchor's chain actor retired before taking the append; resend it")]
    Retired,
    /// The Prometheus metrics exporter could not be installed: its address cannot be bound
    /// (in use, not a local address, no permission: the reason starts with `cannot bind`), a
    /// metrics recorder is already installed in this process
    /// ([`crate::metrics::ALREADY_INSTALLED`]), or its thread could not start. Nothing was
    /// installed. Handle: choose another `--metrics-addr`, or install the exporter once per
    /// process.
    #[error("cannot start the metrics exporter on {addr}: {reason}")]
    MetricsExporter {
        /// The listener address that was requested.
        addr: std::net::SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The transparency log cannot answer yet: the record is not integrated, or no
    /// checkpoint covers it, or none exists. Handle: retry after the next checkpoint
    /// (`checkpoint_interval`).
    #[error("not yet in the log: {0}")]
    NotYetLogged(String),
    /// The transparency log's stored data is inconsistent or a proof does not verify
    /// (a tampered or corrupt database). Handle: run `ledger verify` and alert an operator;
    /// never retry.
    #[error("transparency log: {0}")]
    Log(#[from] ledger_tlog::Error),
    /// The database's transparency log does not extend the last checkpoint this ledger's
    /// key signed (kept in the state file beside the key): the database was rolled back or
    /// replaced (a backup restored, a standby promoted while behind, an old primary back).
    /// Signing on would sign a split view, so the integrator signs nothing and assigns no
    /// position; appends go on (committed, not yet integrated). Handle: alert an operator;
    /// restore the missing records and the log's signed prefix (docs/OPERATIONS.md, "Log
    /// rollback"). Never remove the state file to silence it, unless the database is
    /// deliberately a new log (then use a new key).
    #[error(
        "log rollback: signed size {signed}, database has {stored}: {detail}; nothing is signed until the log is restored"
    )]
    LogRollback {
        /// Size of the last checkpoint the key signed.
        signed: u64,
        /// Size of the log the database holds.
        stored: u64,
        /// What does not match.
        detail: String,
    },
    /// `replication: synchronous` is configured but the server has no synchronous standby
    /// (`synchronous_standby_names` is empty, or it is not the primary): a `Committed`
    /// record would not survive a failover. Refused at start; nothing was started. Handle:
    /// configure a synchronous standby on the primary (docs/OPERATIONS.md, "Replicated
    /// durability") or set `replication: local` knowing what `Committed` then promises.
    #[error("replication: synchronous, but {0}")]
    NotReplicated(String),
    /// Reading or writing a stream failed (an export's output, an import's input). Handle:
    /// check the file, pipe or disk named in the message; an import can simply be run again
    /// (it resumes), an export must be redone.
    #[error("i/o error: {0}")]
    Io(String),
    /// The input is not an AVL export this build can read: no or wrong header line, an
    /// unsupported format version, or an end line that does not match the records before it.
    /// Nothing after the problem was read. Handle: check that the file is an export (see
    /// `docs/OPERATIONS.md`, "Export format") and was copied whole.
    #[error("not a readable AVL export: {0}")]
    Format(String),
    /// The live memory → PostgreSQL migration ([`crate::Ledger::migrate_to_postgres`]) was
    /// refused and nothing was switched: the ledger is not a running memory-backend ledger
    /// (it runs on PostgreSQL, is read-only, already migrated or shutting down), the target
    /// is not a `postgres` configuration, or the target database holds records that conflict
    /// with the in-memory chains (the message names the anchor or rid). Records a refused
    /// run already copied are kept; a rerun skips them. Handle: point the migration at an
    /// empty database (or the one an interrupted run of this migration filled); the ledger
    /// keeps running on memory meanwhile.
    #[error("memory to PostgreSQL migration refused: {0}")]
    MigrationRefused(String),
    /// An append that expected a head ([`crate::Expect::Head`] or [`crate::Expect::NoStream`])
    /// found the anchor elsewhere: another append (in this process or another one sharing
    /// the database) moved it first. Nothing was written. Handle: re-read the anchor, decide
    /// again on its state, and append expecting `current`.
    #[error("anchor {anchor_id}: expected head {expected:?}, found {current:?}; nothing written")]
    HeadMismatch {
        /// The anchor.
        anchor_id: Uuid,
        /// The head the append expected (`None`: the anchor must not exist).
        expected: Option<ledger_entities::RecordHash>,
        /// The anchor's head now (`None`: it has no records).
        current: Option<ledger_entities::RecordHash>,
    },
    /// One record of an atomic append ([`crate::Ledger::append_all`]) was refused, so none
    /// was written. Handle: fix record `index` as `reason` says and send the whole batch
    /// again.
    #[error("batch refused at record {index} (rid {rid:?}): {reason}; nothing written")]
    BatchRefused {
        /// Position of the refused record in the batch (0-based).
        index: usize,
        /// Its client rid, if it had one.
        rid: Option<Uuid>,
        /// Why it was refused.
        reason: Box<LedgerError>,
    },
    /// An atomic append is larger than `max_batch_records` records or `max_batch_bytes`
    /// canonical payload bytes. Nothing was written. Handle: split it into smaller atomic
    /// appends (if the records may land separately), or raise the limits.
    #[error(
        "batch too large: {records} records, {bytes} payload bytes (limits {max_records} records, {max_bytes} bytes); nothing written"
    )]
    BatchTooLarge {
        /// Records in the batch (counted up to the first limit passed).
        records: usize,
        /// Canonical payload bytes of those records.
        bytes: usize,
        /// `max_batch_records`.
        max_records: usize,
        /// `max_batch_bytes`.
        max_bytes: usize,
    },
    /// An atomic append is empty. Nothing was written. Handle: send at least one record.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// Some records of an atomic append (by client rid) are stored already and others are
    /// not: it is neither a new batch nor a re-send of a stored one. Nothing was written.
    /// Handle: re-send exactly the batch that was stored (its answer returns the stored
    /// records), or use fresh rids.
    #[error(
        "batch overlaps stored records: {stored} of its {records} client rids are stored already; nothing written"
    )]
    BatchOverlap {
        /// Records of the batch whose rid is stored.
        stored: usize,
        /// Records in the batch.
        records: usize,
    },
    /// An actor stopped unexpectedly or an invariant failed. Handle: report it as a bug;
    /// the append's outcome is unknown (re-append with the same rid to learn it).
    #[error("internal error: {0}")]
    Internal(String),
    /// A partitioned ledger's configured `partitions` list disagrees with what a partition's
    /// database records about its place (another order or length, a database of another
    /// ledger, or no record yet); the message names the partition and both placements.
    /// Nothing was started or written. Handle: restore the list the databases were migrated
    /// with, run `ledger migrate up` for a new list, or change the partition count with the
    /// documented export/import procedure.
    #[error("partitions do not match: {0}")]
    PartitionMismatch(String),
    /// An error of one partition of a partitioned ledger (`index` in the `partitions`
    /// list). Handle: as `reason` says; only that partition's anchors are concerned.
    #[error("partition {index}: {reason}")]
    Partition {
        /// The partition's index in the list.
        index: usize,
        /// What went wrong there.
        reason: Box<LedgerError>,
    },
}

/// The reason of the [`LedgerError::Conflict`] the writer answers for a record whose rid
/// the database already holds under another hash (the chain actor then looks the stored
/// record up: the same content sealed by another process is a replay, not a conflict).
pub(crate) const RID_TAKEN: &str = "rid already stored";

/// True for a [`LedgerError::Conflict`] the writer answers when the database already holds
/// the record's rid ([`RID_TAKEN`]) or its hash (another process sealed the very same
/// record, to the microsecond): both may be a replay of the stored record, which the chain
/// actor looks up before answering.
pub(crate) fn stored_by_another_write(e: &LedgerError) -> bool {
    matches!(e, LedgerError::Conflict { reason, .. }
        if reason == RID_TAKEN || (reason.starts_with("hash ") && reason.ends_with(" already stored")))
}

impl LedgerError {
    /// The variant's name in snake case (`timeout`, `contended`, ...): a bounded label for
    /// counting errors by kind (the load test's `errors_by_kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            LedgerError::Invalid(_) => "invalid",
            LedgerError::Conflict { .. } => "conflict",
            LedgerError::UnknownAnchor(_) => "unknown_anchor",
            LedgerError::Overloaded { .. } => "overloaded",
            LedgerError::Timeout { .. } => "timeout",
            LedgerError::Aborted { .. } => "aborted",
            LedgerError::ForkRefused { .. } => "fork_refused",
            LedgerError::Contended { .. } => "contended",
            LedgerError::Unavailable(_) => "unavailable",
            LedgerError::Database(_) => "database",
            LedgerError::AccessDenied(_) => "access_denied",
            LedgerError::Contention(_) => "contention",
            LedgerError::SpoolLocked(_) => "spool_locked",
            LedgerError::ReadOnly => "read_only",
            LedgerError::SchemaMissing(_) => "schema_missing",
            LedgerError::Config(_) => "config",
            LedgerError::ShuttingDown => "shutting_down",
            LedgerError::Retired => "retired",
            LedgerError::MetricsExporter { .. } => "metrics_exporter",
            LedgerError::NotYetLogged(_) => "not_yet_logged",
            LedgerError::Log(_) => "log",
            LedgerError::LogRollback { .. } => "log_rollback",
            LedgerError::NotReplicated(_) => "not_replicated",
            LedgerError::Io(_) => "io",
            LedgerError::Format(_) => "format",
            LedgerError::MigrationRefused(_) => "migration_refused",
            LedgerError::HeadMismatch { .. } => "head_mismatch",
            LedgerError::BatchRefused { .. } => "batch_refused",
            LedgerError::BatchTooLarge { .. } => "batch_too_large",
            LedgerError::InvalidBatch(_) => "invalid_batch",
            LedgerError::BatchOverlap { .. } => "batch_overlap",
            LedgerError::Internal(_) => "internal",
            LedgerError::PartitionMismatch(_) => "partition_mismatch",
            LedgerError::Partition { reason, .. } => reason.kind(),
        }
    }

    /// A short, bounded label for metrics (`ledger_appends_total{outcome=...}`).
    pub fn outcome_label(&self) -> &'static str {
        match self {
            LedgerError::Invalid(_)
            | LedgerError::BatchTooLarge { .. }
            | LedgerError::InvalidBatch(_) => "validation",
            LedgerError::BatchRefused { reason, .. } => reason.outcome_label(),
            LedgerError::Partition { reason, .. } => reason.outcome_label(),
            LedgerError::Conflict { .. }
            | LedgerError::HeadMismatch { .. }
            | LedgerError::BatchOverlap { .. }
            | LedgerError::ForkRefused { .. }
            | LedgerError::Contended { .. } => "conflict",
            LedgerError::Overloaded { .. } => "overloaded",
            LedgerError::Unavailable(_)
            | LedgerError::Timeout { .. }
            | LedgerError::Contention(_) => "unavailable",
            _ => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kinds are the variants' names in snake case, distinct per variant.
    #[test]
    fn kinds_name_the_variant() {
        assert_eq!(
            LedgerError::Timeout {
                waited: Duration::from_secs(1)
            }
            .kind(),
            "timeout"
        );
        assert_eq!(
            LedgerError::LogRollback {
                signed: 2,
                stored: 1,
                detail: String::new()
            }
            .kind(),
            "log_rollback"
        );
        assert_eq!(LedgerError::ShuttingDown.kind(), "shutting_down");
        assert_eq!(LedgerError::Unavailable("x".into()).kind(), "unavailable");
    }
}
