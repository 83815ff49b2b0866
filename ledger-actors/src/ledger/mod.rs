//! [`Ledger`]: the cheap-to-clone handle a host application holds.

mod log;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix::prelude::*;
use ledger_entities::{LedgerRecord, NewRecord};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::backend::memory::MemoryDriver;
use crate::backend::postgres::PostgresDriver;
use crate::backend::read_only::ReadOnlyDriver;
use crate::chain::{Append, AppendAck, AppendBatch, BatchAck, ChainActor, ChainSettings, Expect};
use crate::config::{Backend, LedgerConfig};
use crate::driver::Driver;
use crate::error::LedgerError;
use crate::health::Health;
use crate::observe::{ActiveBackend, ChainMailboxes, Observer, Sampler};
use crate::pg::store::PostgresLedgerStore;
use crate::router::ChainRouter;
use crate::spool;
use crate::store::{Head, LedgerStore, MemoryLedgerStore, RecordRange};
use crate::verify::{self, ChainReport, VerifySummary};
use crate::writer::{AwaitDrain, GetOutageRecords, GetStatus, OutageRecords, OutageStatus, Writer};

/// The running ledger. Clone it freely; every clone talks to the same actors.
///
/// Start it inside an actix `System` (e.g. under `#[actix::main]` or `actix_rt::System`):
/// it starts one worker Arbiter per core for chain actors and one for persistence.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    /// What the ledger started on. Reads, appends and health go through
    /// [`Ledger::backing`] instead, which is this until a migration sets `switched`.
    started: Backing,
    router: Arc<ChainRouter>,
    permits: Arc<Semaphore>,
    closing: AtomicBool,
    arbiters: std::sync::Mutex<Vec<Arbiter>>,
    workers: Vec<ArbiterHandle>,
    /// Opened with [`Ledger::open_read_only`]: appends are refused before any actor.
    read_only: AtomicBool,
    /// The lock on `spool_dir` while this ledger owns the spool; released by shutdown.
    spool_lock: std::sync::Mutex<Option<spool::SpoolLock>>,
    /// The memory driver appends go to, on a memory-backend ledger (what
    /// [`Ledger::migrate_to_postgres`] copies).
    memory: Option<Arc<MemoryDriver>>,
    /// Set once by [`Ledger::migrate_to_postgres`]: what the ledger runs on afterwards
    /// (`started` is then the memory ledger's, kept for shutdown).
    switched: OnceLock<Backing>,
    /// Held by a migration from start to end: one at a time.
    migrating: tokio::sync::Mutex<()>,
    /// What writing the spool to PostgreSQL at start did (postgres backend with a
    /// `spool_dir` that held records).
    spool_recovery: OnceLock<crate::recovery::SpoolRecovery>,
    /// Poked when an append is acknowledged: wakes the integrator so the record gets its
    /// leaf index (and reaches subscribers) promptly, not at its next timed round.
    committed: Arc<tokio::sync::Notify>,
}

/// What a ledger runs on, replaced whole by [`Ledger::migrate_to_postgres`]: grouped so
/// that no reader can take one part from before the switch and another from after it
/// (every accessor goes through [`Ledger::backing`]).
struct Backing {
    config: LedgerConfig,
    /// The storage driver: appends, reads, flush.
    driver: Arc<dyn Driver>,
    /// The same driver when it is PostgreSQL's: its writer answers outage status, drain
    /// waits and health.
    postgres: Option<Arc<PostgresDriver>>,
    /// Depths, in-flight appends and the active backend, for the gauges and
    /// [`Ledger::health`].
    observer: Arc<Observer>,
    /// The transparency log's integrator (see `crate::tlog`), set right after start;
    /// empty when `checkpoint_interval` is 0.
    integrator: OnceLock<Arc<crate::integrator::Integrator>>,
}

/// Copy rounds of [`Ledger::migrate_to_postgres`] while appends continue, at most (each
/// round copies what was appended during the one before; the rounds stop early once that
/// is a batch or less, or stops shrinking).
const MIGRATION_ROUNDS: u32 = 8;

/// What [`Ledger::shutdown`] left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Appends still unanswered when the drain wait gave up (0 after a clean drain).
    pub unanswered: usize,
    /// Records acknowledged during a PostgreSQL outage that had not reached PostgreSQL when
    /// the ledger stopped (0 when PostgreSQL was reachable to the end).
    pub buffered: usize,
    /// Where those records are kept across restarts (the spool), if spooling; without a
    /// spool they are lost with the process.
    pub spool: Option<std::path::PathBuf>,
}

/// Whether a ledger is started alone or as one partition of a partitioned ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Alone,
    Partition,
}

impl Ledger {
    /// Starts the ledger described by `config` (one database: a `partitions` list is started
    /// by [`crate::PartitionedLedger`]). On PostgreSQL, a database migrated as a partition of
    /// a partitioned ledger (its `ledger_partition` row says partition `i` of `n > 1`) is
    /// refused with [`LedgerError::PartitionMismatch`]: this ledger would take appends of
    /// anchors the partition map puts on other servers.
    pub async fn start(config: LedgerConfig) -> Result<Self, LedgerError> {
        Self::start_as(config, Member::Alone).await
    }

    /// [`Ledger::start`] for partition `i` of a [`crate::PartitionedLedger`], which checked
    /// the database's partition record against the whole list before.
    pub(crate) async fn start_partition(config: LedgerConfig) -> Result<Self, LedgerError> {
        Self::start_as(config, Member::Partition).await
    }

    async fn start_as(config: LedgerConfig, member: Member) -> Result<Self, LedgerError> {
        config.check()?;
        match config.backend {
            Backend::Memory => match config.spool_dir.clone() {
                Some(dir) => Self::start_memory_spooled(config, &dir),
                None => Self::start_memory(config, Arc::new(MemoryLedgerStore::new())),
            },
            Backend::Postgres => Self::start_postgres(config, member).await,
        }
    }

    /// Opens the ledger for reading only, as commands that read (verify, health, export)
    /// must: on the `postgres` backend it connects and checks the schema (never migrates),
    /// and an unreachable database is an error ([`LedgerError::Unavailable`]) — it never falls
    /// back to memory, never reads, replays or truncates the outage spool, and starts no
    /// writer. On the `memory` backend it reads a fresh, empty store. Appends are refused
    /// with [`LedgerError::ReadOnly`] before they reach an actor.
    pub async fn open_read_only(config: LedgerConfig) -> Result<Self, LedgerError> {
        config.check()?;
        let store: Arc<dyn LedgerStore> = match config.backend {
            Backend::Memory => Arc::new(MemoryLedgerStore::new()),
            Backend::Postgres => {
                let reading = LedgerConfig {
                    auto_migrate: false,
                    ..config.clone()
                };
                // Reads may go to a standby (the DSN's target_session_attrs; default any).
                let want = config
                    .dsn
                    .as_ref()
                    .and_then(|d| d.session_attrs())
                    .unwrap_or(crate::config::SessionAttrs::Any);
                Arc::new(crate::pg::store::open_for(&reading, want).await?)
            }
        };
        let driver = Arc::new(ReadOnlyDriver::new(config.backend, store));
        let ledger = Self::assemble(config, driver, Vec::new(), None);
        ledger.inner.read_only.store(true, Ordering::Release);
        Ok(ledger)
    }

    /// Whether this ledger was opened with [`Ledger::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only.load(Ordering::Acquire)
    }

    /// Starts a memory-backend ledger over an existing store (a restarted ledger continues
    /// every chain in it).
    pub fn start_memory(
        config: LedgerConfig,
        store: Arc<MemoryLedgerStore>,
    ) -> Result<Self, LedgerError> {
        Self::start_memory_with(config, store, None)
    }

    /// The memory backend with a `spool_dir` (the rollback window, docs/OPERATIONS.md):
    /// takes the spool's lock ([`LedgerError::SpoolLocked`] if another process holds it),
    /// reloads every record in the spool into memory (chains continue where the last process
    /// left them), then spools each new record (fsynced) before acknowledging it
    /// [`Durability::Spooled`]. The spool is never truncated here: a later start on
    /// PostgreSQL with the same `spool_dir` writes it there (re-chaining onto the database's
    /// heads, reported) and empties it.
    fn start_memory_spooled(
        config: LedgerConfig,
        dir: &std::path::Path,
    ) -> Result<Self, LedgerError> {
        config.check()?;
        let lock = spool::SpoolLock::acquire(dir)?;
        let store = Arc::new(MemoryLedgerStore::new());
        let spool = crate::recovery::reload_spool(dir, &store)?;
        let ledger = Self::start_memory_with(config, store, Some(spool))?;
        *ledger
            .inner
            .spool_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(lock);
        Ok(ledger)
    }

    fn start_memory_with(
        config: LedgerConfig,
        store: Arc<MemoryLedgerStore>,
        spool: Option<spool::Spool>,
    ) -> Result<Self, LedgerError> {
        config.check()?;
        let log = crate::tlog::memory_log(&store);
        let driver = Arc::new(MemoryDriver::new(store, spool));
        let mut ledger = Self::assemble(
            config,
            Arc::clone(&driver) as Arc<dyn Driver>,
            Vec::new(),
            None,
        );
        if let Some(inner) = Arc::get_mut(&mut ledger.inner) {
            // Just assembled: this is the only handle.
            inner.memory = Some(driver);
        }
        ledger.set_integrator(crate::tlog::start_integrator(
            &ledger.inner.started.config,
            log,
            Arc::clone(&ledger.inner.committed),
        )?);
        Ok(ledger)
    }

    fn set_integrator(&self, integrator: Option<Arc<crate::integrator::Integrator>>) {
        if let Some(i) = integrator {
            // Called once, right after assemble: the cell is empty.
            let _ = self.inner.started.integrator.set(i);
        }
    }

    /// The transparency log's integrator, unless `checkpoint_interval` is 0.
    pub(crate) fn integrator(&self) -> Option<&Arc<crate::integrator::Integrator>> {
        self.backing().integrator.get()
    }

    /// What the ledger runs on now: what it started on, or after a migration what it
    /// switched to. The one way to the store, writer, observer, integrator and config.
    fn backing(&self) -> &Backing {
        self.inner.switched.get().unwrap_or(&self.inner.started)
    }

    fn driver(&self) -> &Arc<dyn Driver> {
        &self.backing().driver
    }

    fn writer(&self) -> Option<&Addr<Writer>> {
        self.backing().postgres.as_ref().map(|p| p.writer())
    }

    fn observer(&self) -> &Arc<Observer> {
        &self.backing().observer
    }

    /// Starts a postgres-backend ledger: connects, checks (or, with `auto_migrate`, applies)
    /// the schema, writes any records left in the outage spool by an earlier process, then
    /// runs the PostgreSQL driver (its [`Writer`], group commit and outage buffer) on its own
    /// Arbiter. If the database cannot be reached at start it logs a warning and starts on a
    /// fresh memory store instead (records then acknowledged as [`Durability::Volatile`], the
    /// spool left untouched); a missing schema is an error.
    ///
    /// With a `spool_dir`, the ledger first takes an exclusive lock on it
    /// ([`spool::SpoolLock`]), held until [`Ledger::shutdown`]: a second process with the same
    /// `spool_dir` fails with [`LedgerError::SpoolLocked`] and touches nothing.
    async fn start_postgres(config: LedgerConfig, member: Member) -> Result<Self, LedgerError> {
        let lock = match &config.spool_dir {
            Some(dir) => Some(spool::SpoolLock::acquire(dir)?),
            None => None,
        };
        let ledger = Self::start_postgres_locked(config, member).await?;
        *ledger
            .inner
            .spool_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = lock;
        Ok(ledger)
    }

    async fn start_postgres_locked(
        config: LedgerConfig,
        member: Member,
    ) -> Result<Self, LedgerError> {
        let store = match crate::pg::store::open(&config).await {
            Ok(store) => Arc::new(store),
            Err(LedgerError::Unavailable(reason)) => {
                let dsn = config
                    .dsn
                    .as_ref()
                    .map(|d| d.redacted())
                    .unwrap_or_default();
                tracing::warn!(%dsn, %reason, spool = ?config.spool_dir, "PostgreSQL unreachable at start; falling back to the memory backend (appends are NOT durable; a spool, if any, is kept for the next start)");
                return Self::start_memory(config, Arc::new(MemoryLedgerStore::new()));
            }
            Err(e) => return Err(e),
        };
        if member == Member::Alone {
            // Before the spool is recovered into it or anything is written.
            crate::pg::partition_record::refuse_partition_alone(&config, store.connection())
                .await?;
        }
        let recovery = match &config.spool_dir {
            Some(dir) => {
                Some(crate::recovery::recover_spool(dir, &store, config.batch_size).await?)
            }
            None => None,
        };
        let (arbiter, driver) = PostgresDriver::start(&config, store)?;
        let log = crate::tlog::postgres_log(&config)?;
        let driver = Arc::new(driver);
        let ledger = Self::assemble(
            config,
            Arc::clone(&driver) as Arc<dyn Driver>,
            vec![arbiter],
            Some(&driver),
        );
        if let Some(r) = recovery.filter(|r| r.records > 0 || r.corrupt_tail.is_some()) {
            // Just assembled: the cell is empty.
            let _ = ledger.inner.spool_recovery.set(r);
        }
        ledger.set_integrator(crate::tlog::start_integrator(
            &ledger.inner.started.config,
            log,
            Arc::clone(&ledger.inner.committed),
        )?);
        Ok(ledger)
    }

    /// What writing the spool to PostgreSQL did at this ledger's start: the records an
    /// earlier process left there (an outage, or a memory ledger's rollback window) and every
    /// one re-chained onto the database's heads. `None` when the spool was empty (or there
    /// is none).
    pub fn spool_recovery(&self) -> Option<&crate::recovery::SpoolRecovery> {
        self.inner.spool_recovery.get()
    }

    /// Writes the spool in `config.spool_dir` to the PostgreSQL database of `config` and
    /// empties it, without starting a ledger (`ledger recover-spool`, the roll-forward step
    /// of the rollback runbook): takes the spool's lock ([`LedgerError::SpoolLocked`] while
    /// a host runs on it), connects (never falls back to memory:
    /// [`LedgerError::Unavailable`]), then as a PostgreSQL ledger's start does. A config
    /// that is not `postgres` with a `spool_dir` is a [`LedgerError::Config`].
    pub async fn recover_spool(
        config: &LedgerConfig,
    ) -> Result<crate::recovery::SpoolRecovery, LedgerError> {
        config.check()?;
        let (Backend::Postgres, Some(dir)) = (config.backend, &config.spool_dir) else {
            return Err(LedgerError::Config(
                "recovering the spool needs backend: postgres and a spool_dir".into(),
            ));
        };
        let _lock = spool::SpoolLock::acquire(dir)?;
        let store = Arc::new(crate::pg::store::open(config).await?);
        crate::recovery::recover_spool(dir, &store, config.batch_size).await
    }

    /// Starts the chain workers, the router and the metrics sampler around a storage
    /// driver (`arbiters`: the driver's own, stopped at shutdown; `postgres`: the driver
    /// again when it is the writer, which is told the router).
    fn assemble(
        config: LedgerConfig,
        driver: Arc<dyn Driver>,
        mut arbiters: Vec<Arbiter>,
        postgres: Option<&Arc<PostgresDriver>>,
    ) -> Self {
        let workers: Vec<Arbiter> = (0..config.worker_count())
            .map(|_| crate::metrics::arbiter(config.metrics_partition))
            .collect();
        let handles: Vec<ArbiterHandle> = workers.iter().map(Arbiter::handle).collect();
        arbiters.extend(workers);
        let permits = Arc::new(Semaphore::new(config.max_in_flight));
        let mailboxes = Arc::new(ChainMailboxes::new());
        let active = match postgres {
            // The writer sets `ledger_backend_active` itself, on start and every swap.
            Some(p) => ActiveBackend::Writer(Arc::clone(p.degraded())),
            None => {
                let backend = driver.store().backend();
                crate::metrics::in_partition(config.metrics_partition, || {
                    crate::metrics::backend_active(backend == Backend::Postgres)
                });
                ActiveBackend::Fixed(backend)
            }
        };
        let observer = Arc::new(Observer::new(
            config.backend,
            active,
            Arc::clone(&permits),
            config.max_in_flight,
            Arc::clone(&mailboxes),
        ));
        // The sampler runs on the first Arbiter (the writer's, or the first worker's) and
        // stops with it.
        if let Some(home) = arbiters.first() {
            let sampled = Arc::clone(&observer);
            Sampler::start_in_arbiter(&home.handle(), move |_| Sampler::new(sampled));
        }
        let settings = ChainSettings {
            suspend_passivation: driver.suspend_passivation(),
            driver: Arc::clone(&driver),
            limits: config.limits(),
            mailbox_capacity: config.mailbox_capacity,
            passivate_after: config.passivate_after,
            max_live_actors: config.max_live_actors,
            mailboxes,
            relink_for: config.timeout.mul_f64(0.8),
            max_batch_records: config.max_batch_records,
            max_batch_bytes: config.max_batch_bytes,
        };
        let router = ChainRouter::new(settings, handles.clone());
        if let Some(p) = postgres {
            p.attach(&router);
        }
        Self {
            inner: Arc::new(Inner {
                permits,
                started: Backing {
                    config,
                    driver,
                    postgres: postgres.cloned(),
                    observer,
                    integrator: OnceLock::new(),
                },
                router,
                closing: AtomicBool::new(false),
                arbiters: std::sync::Mutex::new(arbiters),
                workers: handles,
                read_only: AtomicBool::new(false),
                spool_lock: std::sync::Mutex::new(None),
                memory: None,
                switched: OnceLock::new(),
                migrating: tokio::sync::Mutex::new(()),
                spool_recovery: OnceLock::new(),
                committed: Arc::new(tokio::sync::Notify::new()),
            }),
        }
    }

    /// The configuration the ledger runs with.
    pub fn config(&self) -> &LedgerConfig {
        &self.backing().config
    }

    /// The store reads go to.
    pub fn store(&self) -> &Arc<dyn LedgerStore> {
        self.driver().store()
    }

    /// The worker threads chain actors run on (one per core unless configured). A host may
    /// spawn its own futures there to keep appends and actors on the same cores.
    pub fn workers(&self) -> &[ArbiterHandle] {
        &self.inner.workers
    }

    /// The router of chain actors, for hosts that talk to the actors directly.
    pub fn router(&self) -> &Arc<ChainRouter> {
        &self.inner.router
    }

    /// The ledger's health report: what is checked and the rules that make it healthy,
    /// degraded or down are in [`Health`] and docs/OPERATIONS.md ("Health"). Takes at most
    /// 2 s (or the configured timeout, if shorter) per probe.
    pub async fn health(&self) -> Health {
        let log_halted = match self.integrator() {
            Some(i) => i.progress().borrow().halted.clone(),
            None => self.read_only_rollback().await,
        };
        crate::health::assess(crate::health::Probe {
            config: self.config(),
            store: self.store().as_ref(),
            observer: self.observer(),
            driver: self.driver().as_ref(),
            writer: self.writer(),
            workers: self.inner.router.workers(),
            closing: self.inner.closing.load(Ordering::Acquire),
            log_halted,
        })
        .await
    }

    /// A read-only ledger (`ledger health`) runs no integrator: it checks the stored log
    /// against the key's signed state itself, so an operator sees a rollback on connect.
    async fn read_only_rollback(&self) -> Option<String> {
        let config = self.config();
        let key = config.checkpoint_key.as_ref()?;
        if !self.is_read_only()
            || config.backend != Backend::Postgres
            || config.checkpoint_interval.is_zero()
        {
            return None;
        }
        let file = crate::integrator::signed::SignedStateFile::beside(key);
        match crate::tlog::open_log(config) {
            Ok(log) => crate::integrator::rollback_reason(log.as_ref(), &file).await,
            Err(e) => Some(format!("cannot open the log to check it: {e}")),
        }
    }

    /// Publishes the sampled gauges (in-flight appends, chain mailbox depths) now. A sampler
    /// does it every second; call this to read current values from the exporter without
    /// waiting for it.
    pub fn sample_metrics(&self) {
        self.observer().publish();
    }

    /// Appends a record to its anchor's chain and answers once it is stored. Waits at most
    /// the configured timeout for capacity ([`LedgerError::Overloaded`]) and for the outcome
    /// ([`LedgerError::Timeout`]).
    ///
    /// A payload nested deeper than the validation limit is refused here, before it reaches
    /// an actor, and dropped without recursion: no payload can overflow a stack.
    pub async fn append(&self, record: NewRecord) -> Result<AppendAck, LedgerError> {
        let started = Instant::now();
        let result = match self.admit(record) {
            Ok(record) => self.append_inner(record).await,
            Err(e) => Err(e),
        };
        finished(started, result)
    }

    /// Like [`Ledger::append`], but answers only once the record is committed in
    /// PostgreSQL ([`crate::Durability::Committed`]), waiting through an outage for up to `wait`
    /// ([`LedgerError::Timeout`] after that: the record is buffered, not lost). On the memory
    /// backend it is [`Ledger::append`].
    pub async fn append_durable(
        &self,
        record: NewRecord,
        wait: std::time::Duration,
    ) -> Result<AppendAck, LedgerError> {
        let started = Instant::now();
        let result = match self.admit(record) {
            Ok(record) => {
                let anchor_id = record.anchor_id;
                self.send(Append::durable(record), anchor_id, wait).await
            }
            Err(e) => Err(e),
        };
        finished(started, result)
    }

    /// The checks made before a record crosses into an actor: the payload's nesting depth
    /// (iteratively; a refused payload is disposed of without recursion).
    fn admit(&self, record: NewRecord) -> Result<NewRecord, LedgerError> {
        let max_depth = self.config().limits().max_depth;
        match ledger_entities::validate::check_depth(&record.payload, max_depth) {
            Ok(()) => Ok(record),
            Err(e) => {
                ledger_entities::validate::dispose(record.payload);
                Err(e.into())
            }
        }
    }

    async fn append_inner(&self, record: NewRecord) -> Result<AppendAck, LedgerError> {
        let anchor_id = record.anchor_id;
        self.send(Append::new(record), anchor_id, self.config().timeout)
            .await
    }

    /// Appends `records` to `anchor_id`'s chain atomically: they land contiguous, in this
    /// order, all or none, with one durability; answered once all are stored. A refusal names
    /// the record ([`LedgerError::BatchRefused`]) and stores nothing. `expect` is checked
    /// against the anchor's head first ([`LedgerError::HeadMismatch`] carries the current
    /// head), in this process and, on PostgreSQL, against other processes too. Re-sending a
    /// stored batch (same client rids, same content) answers the stored records
    /// (`replayed`); a batch overlapping stored rids only in part is
    /// [`LedgerError::BatchOverlap`]. At most `max_batch_records` records and
    /// `max_batch_bytes` canonical payload bytes ([`LedgerError::BatchTooLarge`]). On
    /// PostgreSQL the batch is one unit of group commit (one statement, one transaction);
    /// during an outage it is buffered and spooled as one unit, unless it expects a head
    /// (then it is refused `Unavailable`: other processes cannot be checked).
    pub async fn append_all(
        &self,
        anchor_id: Uuid,
        records: Vec<NewRecord>,
        expect: Expect,
    ) -> Result<BatchAck, LedgerError> {
        self.append_batch(anchor_id, records, expect, false, self.config().timeout)
            .await
    }

    /// Like [`Ledger::append_all`], but answers only once the batch is committed in
    /// PostgreSQL, waiting through an outage for up to `wait`.
    pub async fn append_all_durable(
        &self,
        anchor_id: Uuid,
        records: Vec<NewRecord>,
        expect: Expect,
        wait: std::time::Duration,
    ) -> Result<BatchAck, LedgerError> {
        self.append_batch(anchor_id, records, expect, true, wait)
            .await
    }

    /// [`Ledger::append`] only if the anchor's head is as `expect` says (see
    /// [`Ledger::append_all`]; this is a batch of one).
    pub async fn append_expecting(
        &self,
        record: NewRecord,
        expect: Expect,
    ) -> Result<AppendAck, LedgerError> {
        let anchor_id = record.anchor_id;
        let ack = self.append_all(anchor_id, vec![record], expect).await?;
        let record = ack.records.into_iter().next().ok_or_else(|| {
            LedgerError::Internal("an atomic append of one record answered none".into())
        })?;
        Ok(AppendAck {
            record,
            durability: ack.durability,
            replayed: ack.replayed,
        })
    }

    async fn append_batch(
        &self,
        anchor_id: Uuid,
        records: Vec<NewRecord>,
        expect: Expect,
        wait_committed: bool,
        wait: std::time::Duration,
    ) -> Result<BatchAck, LedgerError> {
        let started = Instant::now();
        let result = match self.admit_all(records) {
            Ok(records) => {
                let msg = if wait_committed {
                    AppendBatch::durable(records, expect)
                } else {
                    AppendBatch::new(records, expect)
                };
                self.send(msg, anchor_id, wait).await
            }
            Err(e) => Err(e),
        };
        finished(started, result)
    }

    /// [`Ledger::admit`] for every record of a batch, after its record-count limit (so an
    /// oversized batch costs nothing); on a refusal every payload is disposed of.
    fn admit_all(&self, records: Vec<NewRecord>) -> Result<Vec<NewRecord>, LedgerError> {
        let config = self.config();
        let refused = if records.len() > config.max_batch_records {
            Some(LedgerError::BatchTooLarge {
                records: records.len(),
                bytes: 0,
                max_records: config.max_batch_records,
                max_bytes: config.max_batch_bytes,
            })
        } else {
            let max_depth = config.limits().max_depth;
            records.iter().enumerate().find_map(|(index, r)| {
                ledger_entities::validate::check_depth(&r.payload, max_depth)
                    .err()
                    .map(|e| LedgerError::BatchRefused {
                        index,
                        rid: r.rid,
                        reason: Box::new(e.into()),
                    })
            })
        };
        match refused {
            None => Ok(records),
            Some(e) => {
                for r in records {
                    ledger_entities::validate::dispose(r.payload);
                }
                Err(e)
            }
        }
    }

    async fn send<M, R>(
        &self,
        msg: M,
        anchor_id: Uuid,
        wait: std::time::Duration,
    ) -> Result<R, LedgerError>
    where
        M: crate::chain::Routed<Result = Result<R, LedgerError>>,
        ChainActor: actix::Handler<M>,
        R: Send + 'static,
    {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(LedgerError::ShuttingDown);
        }
        if self.is_read_only() {
            return Err(LedgerError::ReadOnly);
        }
        let timeout = self.config().timeout;
        let _permit = match tokio::time::timeout(timeout, self.inner.permits.acquire()).await {
            Err(_) => return Err(LedgerError::Overloaded { waited: timeout }),
            Ok(Err(_closed)) => return Err(LedgerError::ShuttingDown),
            Ok(Ok(permit)) => permit,
        };
        let acked = self
            .inner
            .router
            .append(msg, anchor_id, wait.max(timeout))
            .await;
        if acked.is_ok() {
            // One atomic store when a wake is already pending (see `Inner::committed`).
            self.inner.committed.notify_one();
        }
        acked
    }

    /// The record with this rid: the way to learn an acknowledged record's final hash.
    ///
    /// A record acknowledged `Committed` (or `Volatile`) is returned as acknowledged. One
    /// acknowledged `Buffered`/`Spooled` during an outage is returned as it waits in the
    /// outage buffer until the drain writes it, and from then on as PostgreSQL holds it —
    /// re-chained, if another process extended its anchor meanwhile (same rid and content,
    /// new `prev_hash`, `ts` and hash; [`Ledger::rechained`] names both hashes). So after
    /// [`Ledger::await_drain`] reports nothing buffered, what this returns is final.
    pub async fn get(&self, rid: Uuid) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        self.store().get(rid).await
    }

    /// One anchor's records in chain order within `range`.
    pub async fn records(
        &self,
        anchor_id: Uuid,
        range: &RecordRange,
    ) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        let records = self.store().records(anchor_id, range).await?;
        if records.is_empty() && self.store().head(anchor_id).await?.is_none() {
            return Err(LedgerError::UnknownAnchor(anchor_id));
        }
        Ok(records)
    }

    /// The anchor's last stored record.
    pub async fn head(&self, anchor_id: Uuid) -> Result<Head, LedgerError> {
        self.store()
            .head(anchor_id)
            .await?
            .ok_or(LedgerError::UnknownAnchor(anchor_id))
    }

    /// Anchor ids in ascending order after `after`, at most `limit`.
    pub async fn anchors(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, LedgerError> {
        self.store().anchors(after, limit).await
    }

    /// Writes the records `options` selects to `out` as an export (JSON Lines, see
    /// [`crate::transfer`]), a page at a time, in constant memory; reads go through the
    /// ledger's store, so during an outage they include buffered records (or fail with
    /// [`LedgerError::Unavailable`] where PostgreSQL is needed).
    pub async fn export<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        out: &mut W,
        options: &crate::transfer::ExportOptions,
    ) -> Result<crate::transfer::ExportSummary, LedgerError> {
        crate::transfer::export(self.store().as_ref(), out, options, &mut |_| {}).await
    }

    /// Imports an export into this ledger's store (verified, idempotent, resumable; see
    /// [`crate::transfer::import()`]), calling `on_refused` for each refused record. The
    /// records are written to the store directly, not through the chain actors: a chain
    /// actor holding the head of an anchor that the import extends finds out at its next
    /// append (refused as [`LedgerError::ForkRefused`], then it reloads its head), so import
    /// anchors that are not being appended to.
    pub async fn import<R: tokio::io::AsyncBufRead + Unpin>(
        &self,
        input: R,
        on_refused: &mut dyn FnMut(&crate::transfer::Refusal),
    ) -> Result<crate::transfer::ImportSummary, LedgerError> {
        let options = crate::transfer::ImportOptions {
            batch_size: self.config().batch_size,
            limits: self.config().limits(),
        };
        crate::transfer::import(
            self.store().as_ref(),
            input,
            &options,
            on_refused,
            &mut |_| {},
        )
        .await
    }

    /// Moves this running memory-backend ledger onto the PostgreSQL database `target`
    /// describes, without a restart and without losing or re-chaining a record.
    ///
    /// 1. Refuses ([`LedgerError::MigrationRefused`], nothing changed) unless this is a
    ///    running memory-backend ledger and `target` a valid `postgres` configuration, and
    ///    when the target holds another chain of an anchor this ledger has.
    /// 2. Copies every record, verified (hash recomputed), through
    ///    [`crate::pg::insert_records`] in commit order, in rounds while appends continue:
    ///    each round the records committed since the last one.
    /// 3. Cut-over: takes every append permit (appends wait, none fails unless it waits
    ///    longer than its timeout), copies the last records, checks that every anchor's
    ///    head in PostgreSQL is the in-memory head, writes any outage spool in
    ///    `target.spool_dir`, starts the [`Writer`] and switches the chain actors, the
    ///    reads, health and the transparency log to PostgreSQL; then releases the appends.
    ///    From then on appends are acknowledged [`crate::Durability::Committed`] (or buffered
    ///    during an outage, as on any PostgreSQL ledger).
    ///
    /// If it fails before the switch the ledger keeps running on memory; the records already
    /// copied stay in PostgreSQL and a rerun skips them (same rid, same hash). Waiting for
    /// the appends in flight longer than the configured timeout is
    /// [`LedgerError::Overloaded`]: retry. `target.max_in_flight` is replaced by this
    /// ledger's (the permits are shared). Appends made through [`Ledger::router`] directly,
    /// and [`Ledger::import`] run concurrently, bypass the quiescing: do not run them
    /// during a migration.
    pub async fn migrate_to_postgres(
        &self,
        target: LedgerConfig,
    ) -> Result<crate::migrate::MigrationReport, LedgerError> {
        let _one = self.inner.migrating.lock().await;
        let refuse = |why: &str| Err(LedgerError::MigrationRefused(why.to_owned()));
        if self.is_read_only() {
            return refuse("the ledger was opened read-only");
        }
        if self.inner.closing.load(Ordering::Acquire) {
            return refuse("the ledger is shutting down");
        }
        if self.inner.switched.get().is_some() {
            return refuse("the ledger already runs on PostgreSQL (migrated)");
        }
        let Some(memory) = self.inner.memory.as_ref().map(|d| Arc::clone(d.memory())) else {
            return refuse("the ledger runs on PostgreSQL, not on the memory backend");
        };
        if target.backend != Backend::Postgres {
            return refuse("the target configuration's backend is not postgres");
        }
        let target = LedgerConfig {
            max_in_flight: self.inner.started.config.max_in_flight,
            ..target
        };
        target.check()?;
        let store = Arc::new(crate::pg::store::open(&target).await?);
        crate::migrate::check_target(&memory, &store).await?;
        let pool = store.connection().get_postgres_connection_pool().clone();
        let batch = target.batch_size;
        let (mut at, mut rounds, mut last) = (0u64, 0u32, u64::MAX);
        loop {
            // What this round copies: the records committed up to now (appends that come in
            // while it runs are the next round's).
            let upto = memory.committed_len();
            let next =
                crate::migrate::copy_range(&memory, &pool, at, upto, batch, target.replication)
                    .await?;
            rounds += 1;
            let delta = next - at;
            at = next;
            tracing::info!(
                round = rounds,
                records = delta,
                "migration: copy round done"
            );
            let behind = memory.committed_len() - at;
            // Stop when what is left fits a batch, when the rounds stop shrinking (appends
            // come in as fast as they are copied: waiting longer would not shorten the
            // pause), or after MIGRATION_ROUNDS.
            if behind <= batch as u64 || behind >= last || rounds >= MIGRATION_ROUNDS {
                break;
            }
            last = behind;
        }
        let max = u32::try_from(self.inner.started.config.max_in_flight).unwrap_or(u32::MAX);
        let wait = self.inner.started.config.timeout;
        let permits = match tokio::time::timeout(wait, self.inner.permits.acquire_many(max)).await {
            Ok(Ok(p)) => p,
            Ok(Err(_closed)) => return Err(LedgerError::ShuttingDown),
            Err(_) => return Err(LedgerError::Overloaded { waited: wait }),
        };
        let paused = Instant::now();
        let switched = self.cut_over(&memory, store, &pool, at, target).await;
        drop(permits);
        let cutover_pause = paused.elapsed();
        let (records, anchors, cutover_records) = switched?;
        let report = crate::migrate::MigrationReport {
            records,
            anchors,
            rounds,
            cutover_records,
            cutover_pause,
        };
        tracing::info!(?report, "migration: the ledger runs on PostgreSQL");
        if let Some(old) = self.inner.started.integrator.get() {
            old.shutdown(self.inner.started.config.timeout).await;
        }
        Ok(report)
    }

    /// The quiesced part of [`Ledger::migrate_to_postgres`]: last copy, checks, switch.
    /// Returns (records, anchors, records copied now).
    async fn cut_over(
        &self,
        memory: &Arc<MemoryLedgerStore>,
        store: Arc<PostgresLedgerStore>,
        pool: &sea_orm::sqlx::PgPool,
        at: u64,
        target: LedgerConfig,
    ) -> Result<(u64, u64, u64), LedgerError> {
        let end = crate::migrate::copy_range(
            memory,
            pool,
            at,
            memory.committed_len(),
            target.batch_size,
            target.replication,
        )
        .await?;
        let anchors = crate::migrate::verify_heads(memory, &store).await?;
        let mut lock = None;
        // A memory ledger spooling into the target's spool_dir: every record in that spool
        // is in memory (a record the reload skipped was never acknowledged) and now in
        // PostgreSQL, so the spool is emptied after the switch instead of written again.
        let mut spooled_here = false;
        if let Some(dir) = &target.spool_dir {
            let held = self
                .inner
                .spool_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|l| l.path().parent() == Some(dir.as_path()));
            spooled_here = held && self.inner.memory.as_ref().is_some_and(|d| d.spools());
            if !held {
                lock = Some(spool::SpoolLock::acquire(dir)?);
            }
            if !spooled_here {
                crate::recovery::recover_spool(dir, &store, target.batch_size).await?;
            }
        }
        let log = crate::tlog::postgres_log(&target)?;
        let (arbiter, driver) = PostgresDriver::start(&target, store)?;
        let driver = Arc::new(driver);
        let integrator =
            match crate::tlog::start_integrator(&target, log, Arc::clone(&self.inner.committed)) {
                Ok(i) => i,
                Err(e) => {
                    arbiter.stop();
                    return Err(e);
                }
            };
        driver.attach(&self.inner.router);
        let mut settings = self.inner.router.current_settings();
        settings.driver = Arc::clone(&driver) as Arc<dyn Driver>;
        settings.suspend_passivation = driver.suspend_passivation();
        settings.relink_for = target.timeout.mul_f64(0.8);
        let observer = Arc::new(Observer::new(
            Backend::Postgres,
            ActiveBackend::Writer(Arc::clone(driver.degraded())),
            Arc::clone(&self.inner.permits),
            self.inner.started.config.max_in_flight,
            Arc::clone(&settings.mailboxes),
        ));
        let switched = Backing {
            config: target,
            driver: Arc::clone(&driver) as Arc<dyn Driver>,
            postgres: Some(driver),
            observer,
            integrator: integrator.map_or_else(OnceLock::new, OnceLock::from),
        };
        if self.inner.switched.set(switched).is_err() {
            // The `migrating` lock and the check at the start rule this out.
            arbiter.stop();
            return Err(LedgerError::Internal("ledger switched twice".into()));
        }
        self.inner.router.switch_settings(settings)?;
        self.inner
            .arbiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(arbiter);
        if let Some(lock) = lock {
            *self
                .inner
                .spool_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(lock);
        }
        if let (true, Some(dir)) = (spooled_here, &self.config().spool_dir) {
            // Appends are still held: nothing is being spooled. Should this fail, the records
            // stay in the spool and the next PostgreSQL start finds them stored (skipped).
            if let Err(e) = spool::Spool::open(dir).and_then(|mut s| s.truncate()) {
                tracing::error!(error = %e, "migration: could not empty the memory spool (its records are in PostgreSQL; a later start skips them)");
            }
        }
        Ok((end, anchors, end - at))
    }

    /// Walks one anchor's chain, recomputing every hash; reports the first break.
    pub async fn verify(&self, anchor_id: Uuid) -> Result<ChainReport, LedgerError> {
        verify::verify_chain(self.store().as_ref(), anchor_id).await
    }

    /// Verifies every anchor.
    pub async fn verify_all(&self) -> Result<VerifySummary, LedgerError> {
        verify::verify_all(self.store().as_ref()).await
    }

    /// The writer's view of PostgreSQL: active mode, buffered records, failovers,
    /// counts of re-chained and quarantined records. `None` on the memory backend.
    pub async fn outage_status(&self) -> Option<OutageStatus> {
        let addr = self.writer()?;
        addr.send(GetStatus).await.ok()
    }

    /// The records re-chained or quarantined by outage drains (the status has only their
    /// counts). `None` on the memory backend.
    pub async fn outage_records(&self) -> Option<OutageRecords> {
        let addr = self.writer()?;
        addr.send(GetOutageRecords).await.ok()
    }

    /// The re-chain of an acknowledged record, if an outage drain (or the writer, as the
    /// record reached it behind a moved one) wrote it under another hash than its
    /// acknowledgement's: `old_hash` is the hash acknowledged, `new_hash` the hash stored
    /// (after every re-chain). `None` when it was stored as acknowledged, on the memory
    /// backend, or for a rid this process never re-chained. Re-chains by a start's spool
    /// recovery are in [`Ledger::spool_recovery`] instead.
    pub async fn rechained(&self, rid: Uuid) -> Option<crate::recovery::RechainedRecord> {
        let addr = self.writer()?;
        addr.send(crate::writer::GetRechain(rid))
            .await
            .ok()
            .flatten()
    }

    /// Waits until records buffered during an outage are all in PostgreSQL (or `timeout`
    /// passes) and returns the status then. `None` on the memory backend.
    pub async fn await_drain(&self, timeout: std::time::Duration) -> Option<OutageStatus> {
        let addr = self.writer()?;
        addr.send(AwaitDrain { timeout }).await.ok()
    }

    /// Refuses new appends, waits (up to the configured timeout) for those in flight to be
    /// answered, flushes the storage driver, then stops the actors and their threads. The
    /// report says what did not reach PostgreSQL (during an outage) and where it is kept.
    pub async fn shutdown(&self) -> Result<ShutdownReport, LedgerError> {
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return Ok(ShutdownReport {
                unanswered: 0,
                buffered: 0,
                spool: None,
            });
        }
        let max = u32::try_from(self.config().max_in_flight).unwrap_or(u32::MAX);
        let drained =
            tokio::time::timeout(self.config().timeout, self.inner.permits.acquire_many(max)).await;
        let unanswered = match &drained {
            Ok(Ok(_)) => 0,
            _ => self.config().max_in_flight - self.inner.permits.available_permits(),
        };
        let flushed = self.driver().flush().await;
        // During an outage, give the drain the same bounded time before reporting.
        let status = match self.outage_status().await {
            Some(s) if s.buffered > 0 => self.await_drain(self.config().timeout).await,
            other => other,
        };
        let (buffered, spool) = match status {
            Some(status) if status.buffered > 0 => {
                tracing::warn!(buffered = status.buffered, spool = ?status.spool,
                    "shutting down during a PostgreSQL outage: records acknowledged but not yet in PostgreSQL");
                (status.buffered, status.spool)
            }
            _ => (0, None),
        };
        if let Some(integrator) = self.integrator() {
            integrator.shutdown(self.config().timeout).await;
        }
        self.inner.permits.close();
        self.inner.router.clear();
        let arbiters = std::mem::take(
            &mut *self
                .inner
                .arbiters
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for arbiter in arbiters {
            arbiter.stop();
        }
        self.inner.started.observer.finish();
        if let Some(s) = self.inner.switched.get() {
            s.observer.finish();
        }
        // The writer (the spool's writer) is stopped: the next ledger may take the spool.
        drop(
            self.inner
                .spool_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        flushed?;
        Ok(ShutdownReport {
            unanswered,
            buffered,
            spool,
        })
    }
}

/// The store `config` names, ready for reads and [`LedgerStore::insert`]: a fresh
/// [`MemoryLedgerStore`] for `backend: memory` (no network access at all), or for
/// `backend: postgres` a [`crate::pg::store::PostgresLedgerStore`] over a new pool, after checking that the
/// schema is up to date (or migrating it when `auto_migrate` is set).
///
/// Errors: [`LedgerError::Config`] (bad configuration), [`LedgerError::Unavailable`] (the
/// database cannot be reached), [`LedgerError::SchemaMissing`] (run `ledger migrate up`).
/// Unlike [`Ledger::start`] it never falls back to memory.
pub async fn create_ledger_store(
    config: &LedgerConfig,
) -> Result<Arc<dyn LedgerStore>, LedgerError> {
    config.check()?;
    match config.backend {
        Backend::Memory => Ok(Arc::new(MemoryLedgerStore::new())),
        Backend::Postgres => Ok(Arc::new(crate::pg::store::open(config).await?)),
    }
}

/// Counts an append (or an atomic batch, once) in `ledger_appends_total` and its latency
/// histogram, by outcome, and passes its result on.
fn finished<T>(started: Instant, result: Result<T, LedgerError>) -> Result<T, LedgerError> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.outcome_label(),
    };
    crate::metrics::append_finished(outcome, started.elapsed().as_secs_f64());
    result
}
