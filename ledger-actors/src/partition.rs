//! A ledger partitioned over several PostgreSQL databases (usually on several servers):
//! the partition map, the partition record each database keeps, and
//! [`PartitionedLedger`], one [`Ledger`] per partition behind one handle.
//!
//! # The map
//! Anchor `a` lives wholly in partition [`partition_of`]`(a, n)` of an `n`-partition list:
//! the first 8 bytes of SHA-256 over the anchor id's 16 bytes (RFC 9562 byte order), read
//! big-endian as a `u64`, then Lamping and Veach's jump consistent hash of that key into
//! `n` buckets ("A Fast, Minimal Memory, Consistent Hash Algorithm", 2014). Both steps are
//! fixed arithmetic (integer operations and IEEE 754 double division), so every process,
//! build and platform computes the same partition; `tests` pins values. Jump hashing moves
//! only the anchors that go to the new partition when one is added (about 1/(n+1) of
//! them), which keeps a future in-place growth cheap; today's procedure for changing `n`
//! (docs/OPERATIONS.md, "Changing the partition count") moves every anchor whole into
//! fresh databases with export and import.
//!
//! # The partition record
//! Each partition's database has a `ledger_partition` row (migration
//! `m20261203_000040_partition`): its index in the list and the list's length, written by
//! `ledger migrate up` ([`record_partitions`]) or by a start with `auto_migrate`. A start
//! whose list disagrees with a database's row (another order, another length, a database
//! of an unpartitioned ledger) is refused with [`LedgerError::PartitionMismatch`] naming
//! the partition, its DSN (redacted) and both placements.
//!
//! # Each partition is a whole ledger
//! Partition `i` runs the configuration [`partition_config`]`(config, i)`: the list's `i`th
//! DSN, the spool in `spool_dir/p<i>`, the checkpoint key `checkpoint_key` with
//! `{partition}` replaced by `i` (so each partition's log has its own key, origin and
//! signed-state file), and the worker threads divided among the partitions. Its writer,
//! group commit, outage detection, buffer, spool, drain, integrator, log and checkpoints
//! are its own: an outage of one server makes only its anchors' appends `Buffered`.
//! Nothing spans partitions, so no write needs a distributed transaction.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_entities::{LedgerRecord, NewRecord, RecordHash};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::chain::{AppendAck, BatchAck, Expect};
use crate::config::{Backend, LedgerConfig};
use crate::error::LedgerError;
use crate::health::{Health, HealthStatus};
use crate::ledger::{Ledger, ShutdownReport};
use crate::store::{Head, LedgerStore, RecordRange, ReplicationState, ScanKey};
use crate::verify::{ChainReport, VerifySummary};
use crate::writer::{Mode, OutageRecords, OutageStatus};

pub use crate::config::{KEY_PLACEHOLDER, MAX_PARTITIONS};
pub use crate::pg::partition_record::{PartitionRecord, read_record};

/// How often the partition gauges are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The hash key of an anchor: the first 8 bytes of SHA-256 over its 16 bytes, big-endian.
pub fn anchor_key(anchor: Uuid) -> u64 {
    let digest = Sha256::digest(anchor.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Lamping and Veach's jump consistent hash: `key` into `buckets` buckets (0 when
/// `buckets` is 0 or 1).
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as u32
}

/// The partition (0-based) of `anchor` in a list of `count` partitions (0 for 0 or 1).
pub fn partition_of(anchor: Uuid, count: usize) -> usize {
    let buckets = u32::try_from(count.min(MAX_PARTITIONS)).unwrap_or(1);
    jump_hash(anchor_key(anchor), buckets) as usize
}

/// Partitions of `config`: the length of `partitions`, or 1 for an unpartitioned ledger.
pub fn partition_count(config: &LedgerConfig) -> usize {
    config.partitions.len().max(1)
}

/// The configuration partition `index` runs with: the list's `index`th DSN (no list), the
/// spool in `spool_dir/p<index>`, `{partition}` in `checkpoint_key` replaced by the index,
/// and `workers` (0: one per core) divided among the partitions, at least one each. An
/// unpartitioned configuration is its own partition 0.
pub fn partition_config(config: &LedgerConfig, index: usize) -> Result<LedgerConfig, LedgerError> {
    let count = partition_count(config);
    if index >= count {
        return Err(LedgerError::Config(format!(
            "partition {index}: the configuration has {count} partition(s) (0..={})",
            count - 1
        )));
    }
    if config.partitions.is_empty() {
        return Ok(LedgerConfig {
            metrics_partition: Some(0),
            ..config.clone()
        });
    }
    let mut part = config.clone();
    part.metrics_partition = Some(index);
    part.dsn = Some(config.partitions[index].clone());
    part.partitions = Vec::new();
    part.spool_dir = config
        .spool_dir
        .as_ref()
        .map(|d| d.join(format!("p{index}")));
    part.checkpoint_key = config.checkpoint_key.as_ref().map(|k| {
        k.to_string_lossy()
            .replace(KEY_PLACEHOLDER, &index.to_string())
            .into()
    });
    part.workers = (config.worker_count() / count).max(1);
    Ok(part)
}

/// What [`check_record`] did on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RecordCheck {
    /// The database already recorded this place.
    Matches,
    /// The record was missing and has been written now.
    Written,
    /// An unpartitioned ledger's database without a record (nothing to check).
    Unpartitioned,
}

fn mismatch(index: usize, count: usize, dsn: &str, found: &PartitionRecord) -> LedgerError {
    LedgerError::PartitionMismatch(format!(
        "partition {index} ({dsn}): its database records partition {} of {}, but the configured list has it as partition {index} of {count}: the partitions list changed order or length since it was migrated. Restore the list the databases were migrated with, or move the anchors to a new layout (docs/OPERATIONS.md, \"Changing the partition count\")",
        found.index, found.count
    ))
}

/// Checks partition `index` of `config` (its own [`partition_config`]) against its
/// database's partition record; with `write`, writes a missing record (after checking
/// that every anchor already stored there belongs to this partition under the list).
/// An unpartitioned `config` accepts a database without a record or with `0 of 1`.
pub async fn check_record(
    config: &LedgerConfig,
    index: usize,
    write: bool,
) -> Result<RecordCheck, LedgerError> {
    let count = partition_count(config);
    let part = LedgerConfig {
        pool_size: 1,
        ..partition_config(config, index)?
    };
    let dsn = part.dsn.as_ref().map(|d| d.redacted()).unwrap_or_default();
    let db = crate::pg::store::connect(&part).await?;
    let result = check_on(&db, config, index, count, &dsn, write).await;
    // Best effort: the one connection is dropped either way.
    let _ = db.close().await;
    result
}

async fn check_on(
    db: &DatabaseConnection,
    config: &LedgerConfig,
    index: usize,
    count: usize,
    dsn: &str,
    write: bool,
) -> Result<RecordCheck, LedgerError> {
    if write
        && let migration::SchemaStatus::Pending { .. } = migration::schema_status(db)
            .await
            .map_err(|e| LedgerError::SchemaMissing(format!("reading the migrations: {e}")))?
    {
        // auto_migrate (or `ledger migrate up`): the table must exist to be written.
        use migration::MigratorTrait as _;
        migration::Migrator::up(db, None)
            .await
            .map_err(|e| LedgerError::SchemaMissing(format!("auto_migrate failed: {e}")))?;
    }
    let found = read_record(db).await?;
    let partitioned = !config.partitions.is_empty();
    match found {
        Some(f) if f.index as usize == index && f.count as usize == count => {
            Ok(RecordCheck::Matches)
        }
        Some(f) => Err(mismatch(index, count, dsn, &f)),
        None if !partitioned => Ok(RecordCheck::Unpartitioned),
        None if !write => Err(LedgerError::PartitionMismatch(format!(
            "partition {index} ({dsn}): its database has no partition record (it was not migrated as partition {index} of {count}); run `ledger migrate up` with this partitions list, or set auto_migrate"
        ))),
        None => {
            let stray = foreign_anchors(db, index, count).await?;
            if let Some((n, example)) = stray {
                return Err(LedgerError::PartitionMismatch(format!(
                    "partition {index} ({dsn}): its database holds {n} anchor(s) that belong to other partitions under this list (e.g. {example}); it was another ledger's database. Move its anchors with export and import (docs/OPERATIONS.md, \"Changing the partition count\")"
                )));
            }
            db.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO ledger_partition (partition_index, partition_count) VALUES ($1, $2) ON CONFLICT (singleton) DO NOTHING",
                vec![(index as i32).into(), (count as i32).into()],
            ))
            .await
            .map_err(|e| LedgerError::Database(format!("writing ledger_partition: {e}")))?;
            // Another process may have written it at the same moment: read what won.
            match read_record(db).await? {
                Some(f) if f.index as usize == index && f.count as usize == count => {
                    Ok(RecordCheck::Written)
                }
                Some(f) => Err(mismatch(index, count, dsn, &f)),
                None => Err(LedgerError::Internal(
                    "ledger_partition empty right after writing it".into(),
                )),
            }
        }
    }
}

/// Anchors stored in this database that the map puts elsewhere: how many, and one.
async fn foreign_anchors(
    db: &DatabaseConnection,
    index: usize,
    count: usize,
) -> Result<Option<(u64, Uuid)>, LedgerError> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT DISTINCT anchor_id FROM ledger_records",
        ))
        .await
        .map_err(|e| LedgerError::Database(format!("listing anchors: {e}")))?;
    let mut n = 0u64;
    let mut example = None;
    for row in rows {
        let a: Uuid = row
            .try_get("", "anchor_id")
            .map_err(|e| LedgerError::Database(format!("anchor_id: {e}")))?;
        if partition_of(a, count) != index {
            n += 1;
            example.get_or_insert(a);
        }
    }
    Ok(example.map(|e| (n, e)))
}

/// `ledger migrate up`'s last step over a partitions list: checks every partition's record
/// and writes the missing ones, in list order; stops at the first mismatch. An
/// unpartitioned configuration checks its one database (a database that records itself as
/// a partition of a longer list is refused).
pub async fn record_partitions(config: &LedgerConfig) -> Result<Vec<RecordCheck>, LedgerError> {
    let mut out = Vec::new();
    for i in 0..partition_count(config) {
        out.push(
            check_record(config, i, true)
                .await
                .map_err(|e| in_partition(i, e))?,
        );
    }
    Ok(out)
}

/// `e` of partition `index`, named (a mismatch already names it).
fn in_partition(index: usize, e: LedgerError) -> LedgerError {
    match e {
        e @ (LedgerError::PartitionMismatch(_) | LedgerError::Partition { .. }) => e,
        e => LedgerError::Partition {
            index,
            reason: Box::new(e),
        },
    }
}

/// One partition's chain verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionVerify {
    /// The partition.
    pub partition: usize,
    /// Its chains.
    pub summary: VerifySummary,
}

/// One partition's health.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionHealth {
    /// The partition.
    pub partition: usize,
    /// Its DSN, redacted (`None` unpartitioned).
    pub dsn: Option<String>,
    /// Its report.
    pub health: Health,
}

/// The health of every partition; the status is the worst of theirs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionedHealth {
    /// The worst partition's status.
    pub status: HealthStatus,
    /// Each partition's report, in list order.
    pub partitions: Vec<PartitionHealth>,
}

/// A ledger over one or more partitions: one [`Ledger`] each, appends and reads routed by
/// anchor ([`partition_of`]). An unpartitioned configuration is one partition, started
/// exactly as [`Ledger::start`] would. Clone it freely.
#[derive(Clone)]
pub struct PartitionedLedger {
    parts: Arc<Vec<Ledger>>,
    dsns: Arc<Vec<Option<String>>>,
    store: Arc<PartitionedStore>,
    sampler: Arc<std::sync::Mutex<Option<actix_rt::task::JoinHandle<()>>>>,
    /// Per partition, the append counters by durability (an unpartitioned ledger is
    /// partition 0, so the dashboard's partition panels have data on every ledger that
    /// appends; empty when opened read-only).
    counters: Arc<Vec<Vec<metrics::Counter>>>,
}

impl PartitionedLedger {
    /// Starts every partition of `config` ([`Ledger::start`] on [`partition_config`]), after
    /// checking each database's partition record ([`check_record`]; written when missing
    /// with `auto_migrate`). Every partition must be reachable to be checked; a failure is
    /// named by its partition, and the partitions already started are shut down.
    pub async fn start(config: LedgerConfig) -> Result<Self, LedgerError> {
        Self::open(config, false).await
    }

    /// [`Ledger::open_read_only`] on every partition (records checked, never written).
    pub async fn open_read_only(config: LedgerConfig) -> Result<Self, LedgerError> {
        Self::open(config, true).await
    }

    async fn open(config: LedgerConfig, read_only: bool) -> Result<Self, LedgerError> {
        config.check()?;
        let count = partition_count(&config);
        let partitioned = !config.partitions.is_empty();
        let opened = futures::future::join_all((0..count).map(|i| {
            let config = config.clone();
            async move {
                let part = partition_config(&config, i)?;
                if part.backend == Backend::Postgres {
                    let write = partitioned && config.auto_migrate && !read_only;
                    if partitioned || !read_only {
                        match check_record(&config, i, write).await {
                            Ok(_) => {}
                            // An unpartitioned ledger keeps its fallback to memory when
                            // its database is down at start (Ledger::start's rule).
                            Err(LedgerError::Unavailable(_) | LedgerError::SchemaMissing(_))
                                if !partitioned => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                if read_only {
                    Ledger::open_read_only(part).await
                } else {
                    Ledger::start_partition(part).await
                }
            }
        }))
        .await;
        let mut parts = Vec::with_capacity(count);
        let mut first_error = None;
        for (i, r) in opened.into_iter().enumerate() {
            match r {
                Ok(l) => parts.push(l),
                Err(e) => {
                    first_error.get_or_insert(if partitioned { in_partition(i, e) } else { e });
                }
            }
        }
        if let Some(e) = first_error {
            for l in &parts {
                // Best effort: the start failed anyway and says why.
                let _ = l.shutdown().await;
            }
            return Err(e);
        }
        let dsns = (0..count)
            .map(|i| config.partitions.get(i).map(|d| d.redacted()))
            .collect();
        let parts = Arc::new(parts);
        let ledger = Self {
            store: Arc::new(PartitionedStore {
                parts: parts.iter().map(|l| Arc::clone(l.store())).collect(),
            }),
            parts,
            dsns: Arc::new(dsns),
            sampler: Arc::new(std::sync::Mutex::new(None)),
            counters: Arc::new(if read_only {
                Vec::new()
            } else {
                (0..count).map(crate::metrics::partition_counters).collect()
            }),
        };
        if !read_only {
            ledger.start_sampler();
        }
        Ok(ledger)
    }

    /// Samples each partition's writer state into the partition gauges.
    fn start_sampler(&self) {
        let parts = Arc::clone(&self.parts);
        let handle = actix_rt::spawn(async move {
            loop {
                sample(&parts).await;
                actix_rt::time::sleep(SAMPLE_EVERY).await;
            }
        });
        *self.sampler.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Publishes the partition gauges now (the sampler does it every second).
    pub async fn sample_metrics(&self) {
        sample(&self.parts).await;
        for (i, l) in self.parts.iter().enumerate() {
            crate::metrics::in_partition(Some(i), || l.sample_metrics());
        }
    }

    /// How many partitions.
    pub fn count(&self) -> usize {
        self.parts.len()
    }

    /// Every partition's ledger, in list order.
    pub fn partitions(&self) -> &[Ledger] {
        &self.parts
    }

    /// Partition `index`'s ledger.
    pub fn partition(&self, index: usize) -> Option<&Ledger> {
        self.parts.get(index)
    }

    /// The partition `anchor` lives in.
    pub fn partition_of(&self, anchor: Uuid) -> usize {
        partition_of(anchor, self.parts.len())
    }

    /// The ledger of `anchor`'s partition.
    pub fn ledger_for(&self, anchor: Uuid) -> &Ledger {
        &self.parts[self.partition_of(anchor)]
    }

    /// A store over every partition (reads routed by anchor, `get` asks every partition):
    /// what export, import and the read commands use.
    pub fn store(&self) -> Arc<dyn LedgerStore> {
        Arc::clone(&self.store) as Arc<dyn LedgerStore>
    }

    /// Every partition's chain worker threads.
    pub fn workers(&self) -> Vec<actix::ArbiterHandle> {
        self.parts
            .iter()
            .flat_map(|l| l.workers().iter().cloned())
            .collect()
    }

    /// [`Ledger::append`] on the record's partition.
    pub async fn append(&self, record: NewRecord) -> Result<AppendAck, LedgerError> {
        let p = self.partition_of(record.anchor_id);
        let result = self.parts[p].append(record).await;
        self.count_append(p, result.as_ref().map(|a| a.durability).ok(), 1);
        result
    }

    /// [`Ledger::append_durable`] on the record's partition.
    pub async fn append_durable(
        &self,
        record: NewRecord,
        wait: Duration,
    ) -> Result<AppendAck, LedgerError> {
        let p = self.partition_of(record.anchor_id);
        let result = self.parts[p].append_durable(record, wait).await;
        self.count_append(p, result.as_ref().map(|a| a.durability).ok(), 1);
        result
    }

    /// [`Ledger::append_all`] on the anchor's partition.
    pub async fn append_all(
        &self,
        anchor_id: Uuid,
        records: Vec<NewRecord>,
        expect: Expect,
    ) -> Result<BatchAck, LedgerError> {
        let p = self.partition_of(anchor_id);
        let n = records.len() as u64;
        let result = self.parts[p].append_all(anchor_id, records, expect).await;
        self.count_append(p, result.as_ref().map(|a| a.durability).ok(), n);
        result
    }

    /// [`Ledger::append_expecting`] on the record's partition.
    pub async fn append_expecting(
        &self,
        record: NewRecord,
        expect: Expect,
    ) -> Result<AppendAck, LedgerError> {
        let p = self.partition_of(record.anchor_id);
        let result = self.parts[p].append_expecting(record, expect).await;
        self.count_append(p, result.as_ref().map(|a| a.durability).ok(), 1);
        result
    }

    fn count_append(&self, partition: usize, durability: Option<crate::Durability>, n: u64) {
        if let Some(c) = self
            .counters
            .get(partition)
            .and_then(|c| c.get(durability_index(durability)))
        {
            c.increment(n);
        }
    }

    /// The record with this rid, from whichever partition holds it.
    pub async fn get(&self, rid: Uuid) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        self.store.get(rid).await
    }

    /// [`Ledger::records`] on the anchor's partition.
    pub async fn records(
        &self,
        anchor_id: Uuid,
        range: &RecordRange,
    ) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        self.ledger_for(anchor_id).records(anchor_id, range).await
    }

    /// [`Ledger::head`] on the anchor's partition.
    pub async fn head(&self, anchor_id: Uuid) -> Result<Head, LedgerError> {
        self.ledger_for(anchor_id).head(anchor_id).await
    }

    /// [`Ledger::verify`] on the anchor's partition, with the partition.
    pub async fn verify(&self, anchor_id: Uuid) -> Result<(usize, ChainReport), LedgerError> {
        let p = self.partition_of(anchor_id);
        Ok((p, self.parts[p].verify(anchor_id).await?))
    }

    /// [`Ledger::verify_all`] on every partition (concurrently), each summary with its
    /// partition; an error names its partition.
    pub async fn verify_all(&self) -> Result<Vec<PartitionVerify>, LedgerError> {
        let all = futures::future::join_all(self.parts.iter().map(Ledger::verify_all)).await;
        all.into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.map(|summary| PartitionVerify {
                    partition: i,
                    summary,
                })
                .map_err(|e| self.named(i, e))
            })
            .collect()
    }

    fn named(&self, i: usize, e: LedgerError) -> LedgerError {
        if self.parts.len() > 1 || self.dsns.first().is_some_and(Option::is_some) {
            in_partition(i, e)
        } else {
            e
        }
    }

    /// Every partition's health (concurrently); the status is the worst one.
    pub async fn health(&self) -> PartitionedHealth {
        let all = futures::future::join_all(self.parts.iter().map(Ledger::health)).await;
        let partitions: Vec<PartitionHealth> = all
            .into_iter()
            .enumerate()
            .map(|(i, health)| PartitionHealth {
                partition: i,
                dsn: self.dsns.get(i).cloned().flatten(),
                health,
            })
            .collect();
        let status = partitions
            .iter()
            .map(|p| p.health.status)
            .max()
            .unwrap_or(HealthStatus::Down);
        PartitionedHealth { status, partitions }
    }

    /// Each partition's writer state (`None` where it has no writer), in list order.
    pub async fn outage_status(&self) -> Vec<Option<OutageStatus>> {
        futures::future::join_all(self.parts.iter().map(Ledger::outage_status)).await
    }

    /// Each partition's re-chained and quarantined records, in list order.
    pub async fn outage_records(&self) -> Vec<Option<OutageRecords>> {
        futures::future::join_all(self.parts.iter().map(Ledger::outage_records)).await
    }

    /// [`Ledger::await_drain`] on every partition (concurrently, each up to `timeout`).
    pub async fn await_drain(&self, timeout: Duration) -> Vec<Option<OutageStatus>> {
        futures::future::join_all(self.parts.iter().map(|l| l.await_drain(timeout))).await
    }

    /// Shuts every partition down (concurrently); the first error, named, after all tried.
    pub async fn shutdown(&self) -> Result<Vec<ShutdownReport>, LedgerError> {
        if let Some(h) = self
            .sampler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            h.abort();
        }
        let all = futures::future::join_all(self.parts.iter().map(Ledger::shutdown)).await;
        let mut out = Vec::with_capacity(all.len());
        let mut first = None;
        for (i, r) in all.into_iter().enumerate() {
            match r {
                Ok(r) => out.push(r),
                Err(e) => {
                    first.get_or_insert(self.named(i, e));
                }
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// The index into [`crate::metrics::partition_counters`] of an acknowledgement's durability
/// (`None`: failed).
fn durability_index(durability: Option<crate::Durability>) -> usize {
    match durability {
        Some(crate::Durability::Committed) => 0,
        Some(crate::Durability::Buffered) => 1,
        Some(crate::Durability::Spooled) => 2,
        Some(crate::Durability::Volatile) => 3,
        None => 4,
    }
}

async fn sample(parts: &[Ledger]) {
    let states = futures::future::join_all(parts.iter().map(Ledger::outage_status)).await;
    for (i, s) in states.into_iter().enumerate() {
        let on_postgres = match &s {
            Some(s) => Some(s.mode == Mode::Primary),
            // No writer: a PostgreSQL ledger started on its fallback is off PostgreSQL; a
            // memory ledger has no PostgreSQL to be on (no series, so no alert).
            None => (parts[i].config().backend == crate::Backend::Postgres).then_some(false),
        };
        crate::metrics::partition_writer(i, on_postgres, s.map_or(0, |s| s.buffered as u64));
    }
}

/// Merges pages sorted by `key` (each at most `limit` long) into the first `limit` of their
/// union, without duplicates.
fn merge<T: Clone, K: Ord>(pages: Vec<Vec<T>>, limit: usize, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut all: Vec<T> = pages.into_iter().flatten().collect();
    all.sort_by_key(|t| key(t));
    all.dedup_by(|a, b| key(a) == key(b));
    all.truncate(limit);
    all
}

/// A [`LedgerStore`] over every partition's store: by-anchor calls go to the anchor's
/// partition; `get`, `get_by_hash` and `get_many` ask every partition; `anchors` and `scan`
/// merge the partitions' pages in order; `count` adds. `insert` writes each partition's
/// records in one call of its own: atomic within a partition, not across partitions
/// (import, its user, is idempotent and resumable, so a partly written batch is finished by
/// running it again).
pub struct PartitionedStore {
    parts: Vec<Arc<dyn LedgerStore>>,
}

impl PartitionedStore {
    fn of(&self, anchor: Uuid) -> &Arc<dyn LedgerStore> {
        &self.parts[partition_of(anchor, self.parts.len())]
    }
}

/// [`crate::create_ledger_store`] over every partition of `config` (each database's
/// partition record checked; written when missing with `auto_migrate`): the store `ledger
/// import` and `ledger prove` write to and read from. Unpartitioned, it is
/// [`crate::create_ledger_store`] itself.
pub async fn create_partitioned_store(
    config: &LedgerConfig,
) -> Result<Arc<dyn LedgerStore>, LedgerError> {
    config.check()?;
    if config.partitions.is_empty() {
        return crate::create_ledger_store(config).await;
    }
    let mut parts = Vec::with_capacity(config.partitions.len());
    for i in 0..config.partitions.len() {
        let opened = async {
            check_record(config, i, config.auto_migrate).await?;
            crate::create_ledger_store(&partition_config(config, i)?).await
        };
        parts.push(opened.await.map_err(|e| in_partition(i, e))?);
    }
    Ok(Arc::new(PartitionedStore { parts }))
}

#[async_trait]
impl LedgerStore for PartitionedStore {
    fn backend(&self) -> Backend {
        self.parts
            .first()
            .map_or(Backend::Postgres, |l| l.backend())
    }

    async fn insert(&self, records: &[Arc<LedgerRecord>]) -> Result<(), LedgerError> {
        let n = self.parts.len();
        let mut groups: Vec<Vec<Arc<LedgerRecord>>> = vec![Vec::new(); n];
        for r in records {
            groups[partition_of(r.anchor_id, n)].push(Arc::clone(r));
        }
        for (i, g) in groups.iter().enumerate() {
            if !g.is_empty() {
                self.parts[i].insert(g).await?;
            }
        }
        Ok(())
    }

    async fn get(&self, rid: Uuid) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        let found = futures::future::try_join_all(self.parts.iter().map(|l| l.get(rid))).await?;
        Ok(found.into_iter().flatten().next())
    }

    async fn get_by_hash(
        &self,
        hash: RecordHash,
    ) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        let found =
            futures::future::try_join_all(self.parts.iter().map(|l| l.get_by_hash(hash))).await?;
        Ok(found.into_iter().flatten().next())
    }

    async fn records(
        &self,
        anchor_id: Uuid,
        range: &RecordRange,
    ) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        self.of(anchor_id).records(anchor_id, range).await
    }

    async fn head(&self, anchor_id: Uuid) -> Result<Option<Head>, LedgerError> {
        self.of(anchor_id).head(anchor_id).await
    }

    async fn anchors(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<Uuid>, LedgerError> {
        let pages =
            futures::future::try_join_all(self.parts.iter().map(|l| l.anchors(after, limit)))
                .await?;
        Ok(merge(pages, limit, |a| *a))
    }

    async fn count(&self) -> Result<u64, LedgerError> {
        let counts = futures::future::try_join_all(self.parts.iter().map(|l| l.count())).await?;
        Ok(counts.into_iter().sum())
    }

    async fn count_anchor(&self, anchor_id: Uuid) -> Result<u64, LedgerError> {
        self.of(anchor_id).count_anchor(anchor_id).await
    }

    async fn get_many(&self, rids: &[Uuid]) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        let found =
            futures::future::try_join_all(self.parts.iter().map(|l| l.get_many(rids))).await?;
        Ok(merge(found, usize::MAX, |r| r.rid))
    }

    async fn heads(
        &self,
        anchors: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, Head>, LedgerError> {
        let n = self.parts.len();
        let mut groups: Vec<Vec<Uuid>> = vec![Vec::new(); n];
        for a in anchors {
            groups[partition_of(*a, n)].push(*a);
        }
        let found = futures::future::try_join_all(
            groups
                .iter()
                .enumerate()
                .map(|(i, g)| self.parts[i].heads(g)),
        )
        .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn scan(
        &self,
        after: Option<&ScanKey>,
        since: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        let pages =
            futures::future::try_join_all(self.parts.iter().map(|l| l.scan(after, since, limit)))
                .await?;
        Ok(merge(pages, limit, |r| ScanKey::of(r)))
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        for (i, l) in self.parts.iter().enumerate() {
            l.ping().await.map_err(|e| in_partition(i, e))?;
        }
        Ok(())
    }

    async fn replication(&self, limit: Duration) -> Option<Result<ReplicationState, LedgerError>> {
        match self.parts.first() {
            Some(l) => l.replication(limit).await,
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]
    use super::*;

    /// The map is fixed: these values must never change (every stored anchor would move).
    /// They were computed independently (Python's hashlib and float arithmetic, the
    /// reference C code's steps) and agree with this implementation.
    #[test]
    fn the_map_is_pinned() {
        let a = Uuid::from_u128(0x0192_8c6e_0000_7000_8000_0000_0000_0001);
        assert_eq!(anchor_key(Uuid::nil()), 0x374708fff7719dd5);
        assert_eq!(jump_hash(0, 10), 0);
        assert_eq!(jump_hash(1, 10), 6);
        assert_eq!(jump_hash(0xdead_beef, 1000), 285);
        let got: Vec<usize> = (1..=8).map(|n| partition_of(a, n)).collect();
        assert_eq!(got, vec![0, 1, 1, 1, 1, 1, 6, 6]);
        // The namespace UUID of RFC 9562 (DNS).
        let dns = Uuid::parse_str("6ba7b810-9dad-11d1-80b4-00c04fd430c8").unwrap();
        let got: Vec<usize> = (1..=8).map(|n| partition_of(dns, n)).collect();
        assert_eq!(got, vec![0, 1, 1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn every_partition_gets_a_fair_share_and_growth_moves_only_to_the_new_one() {
        let anchors: Vec<Uuid> = (0..20_000u128).map(Uuid::from_u128).collect();
        for n in 2..6 {
            let mut counts = vec![0usize; n];
            for a in &anchors {
                let p = partition_of(*a, n);
                counts[p] += 1;
                let before = partition_of(*a, n - 1);
                assert!(p == before || p == n - 1, "{a} moved from {before} to {p}");
            }
            let fair = anchors.len() / n;
            for c in counts {
                assert!(
                    c.abs_diff(fair) < fair / 10,
                    "{n} partitions: {c} vs {fair}"
                );
            }
        }
    }

    #[test]
    fn partition_configs_split_the_settings() {
        let base = LedgerConfig {
            backend: Backend::Postgres,
            partitions: vec![
                crate::Dsn::parse("postgres://u:pw@a:5432/l").unwrap(),
                crate::Dsn::parse("postgres://u:pw@b:5432/l").unwrap(),
            ],
            spool_dir: Some("/var/spool/avl".into()),
            checkpoint_key: Some("/etc/avl/p{partition}/checkpoint.key".into()),
            workers: 4,
            ..LedgerConfig::default()
        };
        base.check().unwrap();
        let p1 = partition_config(&base, 1).unwrap();
        assert_eq!(p1.dsn.as_ref().unwrap().hosts()[0].0, "b");
        assert!(p1.partitions.is_empty());
        assert_eq!(
            p1.spool_dir.unwrap(),
            std::path::Path::new("/var/spool/avl/p1")
        );
        assert_eq!(
            p1.checkpoint_key.unwrap(),
            std::path::Path::new("/etc/avl/p1/checkpoint.key")
        );
        assert_eq!(p1.workers, 2);
        assert!(matches!(
            partition_config(&base, 2),
            Err(LedgerError::Config(_))
        ));
        let shared_key = LedgerConfig {
            checkpoint_key: Some("/etc/avl/checkpoint.key".into()),
            ..base.clone()
        };
        let e = shared_key.check().unwrap_err().to_string();
        assert!(e.contains("{partition}"), "{e}");
        let with_dsn = LedgerConfig {
            dsn: Some(crate::Dsn::parse("postgres://u@c/l").unwrap()),
            ..base.clone()
        };
        assert!(
            with_dsn
                .check()
                .unwrap_err()
                .to_string()
                .contains("both set")
        );
        let twice = LedgerConfig {
            partitions: vec![base.partitions[0].clone(), base.partitions[0].clone()],
            ..base.clone()
        };
        let e = twice.check().unwrap_err().to_string();
        assert!(e.contains("same database") && !e.contains("pw"), "{e}");
    }

    #[test]
    fn merge_keeps_order_and_limit() {
        let got = merge(vec![vec![1, 4, 7], vec![2, 4, 9], vec![]], 4, |x| *x);
        assert_eq!(got, vec![1, 2, 4, 7]);
    }
}
