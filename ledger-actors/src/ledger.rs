//! [`Ledger`]: the cheap-to-clone handle a host application holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use actix::prelude::*;
use ledger_entities::{LedgerRecord, NewRecord};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::chain::{Append, AppendAck, ChainSettings, Sink};
use crate::config::{Backend, LedgerConfig};
use crate::error::LedgerError;
use crate::health::Health;
use crate::observe::{ActiveBackend, ChainMailboxes, Observer, QueueDepth, Sampler};
use crate::persistence::{Durability, Flush, MemoryPersistence, ReadOnlyPersistence};
use crate::pg::store::PostgresLedgerStore;
use crate::router::ChainRouter;
use crate::store::{Head, LedgerStore, MemoryLedgerStore, RecordRange};
use crate::verify::{self, ChainReport, VerifySummary};
use crate::writer::buffer::OutageBuffer;
use crate::writer::drain::{self, DrainState};
use crate::writer::reads::SupervisedStore;
use crate::writer::{
    AwaitDrain, GetOutageRecords, GetStatus, OutageRecords, OutageStatus, Supervisor, spool,
};

/// The running ledger. Clone it freely; every clone talks to the same actors.
///
/// Start it inside an actix `System` (e.g. under `#[actix::main]` or `actix_rt::System`):
/// it starts one worker Arbiter per core for chain actors and one for persistence.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    config: LedgerConfig,
    store: Arc<dyn LedgerStore>,
    router: Arc<ChainRouter>,
    flush: Recipient<Flush>,
    permits: Arc<Semaphore>,
    closing: AtomicBool,
    arbiters: std::sync::Mutex<Vec<Arbiter>>,
    workers: Vec<ArbiterHandle>,
    /// Depths, in-flight appends and the active backend, for the gauges and
    /// [`Ledger::health`].
    observer: Arc<Observer>,
    supervisor: Option<Addr<Supervisor>>,
    /// The transparency log's integrator (see `crate::tlog`), set right after start.
    integrator: OnceLock<Arc<crate::integrator::Integrator>>,
    /// Opened with [`Ledger::open_read_only`]: appends are refused before any actor.
    read_only: AtomicBool,
    /// The lock on `spool_dir` while this ledger owns the spool; released by shutdown.
    spool_lock: std::sync::Mutex<Option<spool::SpoolLock>>,
}

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

/// The parts only a supervised (PostgreSQL) ledger has.
struct Supervised {
    addr: Addr<Supervisor>,
    router: Arc<OnceLock<Weak<ChainRouter>>>,
    degraded: Arc<AtomicBool>,
}

impl Ledger {
    /// Starts the ledger described by `config`.
    pub async fn start(config: LedgerConfig) -> Result<Self, LedgerError> {
        config.check()?;
        match config.backend {
            Backend::Memory => Self::start_memory(config, Arc::new(MemoryLedgerStore::new())),
            Backend::Postgres => Self::start_postgres(config).await,
        }
    }

    /// Opens the ledger for reading only, as commands that read (verify, health, export)
    /// must: on the `postgres` backend it connects and checks the schema (never migrates),
    /// and an unreachable database is an error ([`LedgerError::Unavailable`]) — it never falls
    /// back to memory, never reads, replays or truncates the outage spool, and starts no
    /// supervisor. On the `memory` backend it reads a fresh, empty store. Appends are refused
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
                Arc::new(crate::pg::store::open(&reading).await?)
            }
        };
        let arbiter = Arbiter::new();
        let refuse =
            ReadOnlyPersistence::start_in_arbiter(&arbiter.handle(), |_| ReadOnlyPersistence);
        let ledger = Self::assemble(
            config,
            store,
            Sink::Actor(refuse.clone().recipient()),
            refuse.recipient(),
            vec![arbiter],
            None,
            None,
        );
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
        config.check()?;
        let persistence_arbiter = Arbiter::new();
        let memory = Arc::clone(&store);
        let queue = QueueDepth::new();
        let actor_queue = queue.clone();
        let persistence =
            MemoryPersistence::start_in_arbiter(&persistence_arbiter.handle(), |_| {
                MemoryPersistence::new(memory, Durability::Volatile).with_queue(actor_queue)
            });
        let log = crate::tlog::memory_log(&store);
        let sink = Sink::Memory(Arc::clone(&store));
        let store: Arc<dyn LedgerStore> = store;
        let ledger = Self::assemble(
            config,
            store,
            sink,
            persistence.recipient(),
            vec![persistence_arbiter],
            None,
            Some(queue),
        );
        ledger.set_integrator(crate::tlog::start_integrator(&ledger.inner.config, log)?);
        Ok(ledger)
    }

    fn set_integrator(&self, integrator: Option<Arc<crate::integrator::Integrator>>) {
        if let Some(i) = integrator {
            // Called once, right after assemble: the cell is empty.
            let _ = self.inner.integrator.set(i);
        }
    }

    /// The transparency log's integrator, unless `checkpoint_interval` is 0.
    pub(crate) fn integrator(&self) -> Option<&Arc<crate::integrator::Integrator>> {
        self.inner.integrator.get()
    }

    /// Starts a postgres-backend ledger: connects, checks (or, with `auto_migrate`, applies)
    /// the schema, writes any records left in the outage spool by an earlier process, then
    /// runs the [`Supervisor`] (which owns the PostgreSQL persistence actor) on its own
    /// Arbiter. If the database cannot be reached at start it logs a warning and starts on a
    /// fresh memory store instead (records then acknowledged as [`Durability::Volatile`], the
    /// spool left untouched); a missing schema is an error.
    ///
    /// With a `spool_dir`, the ledger first takes an exclusive lock on it
    /// ([`spool::SpoolLock`]), held until [`Ledger::shutdown`]: a second process with the same
    /// `spool_dir` fails with [`LedgerError::SpoolLocked`] and touches nothing.
    async fn start_postgres(config: LedgerConfig) -> Result<Self, LedgerError> {
        let lock = match &config.spool_dir {
            Some(dir) => Some(spool::SpoolLock::acquire(dir)?),
            None => None,
        };
        let ledger = Self::start_postgres_locked(config).await?;
        *ledger
            .inner
            .spool_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = lock;
        Ok(ledger)
    }

    async fn start_postgres_locked(config: LedgerConfig) -> Result<Self, LedgerError> {
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
        if let Some(dir) = &config.spool_dir {
            recover_spool(dir, &store, config.batch_size).await?;
        }
        let buffer = Arc::new(OutageBuffer::default());
        let router_slot: Arc<OnceLock<Weak<ChainRouter>>> = Arc::new(OnceLock::new());
        let degraded = Arc::new(AtomicBool::new(false));
        let supervisor = Supervisor::new(
            config.clone(),
            Arc::clone(&store),
            Arc::clone(&buffer),
            Arc::clone(&router_slot),
            Arc::clone(&degraded),
        )?;
        let writer = supervisor.sender();
        let arbiter = Arbiter::new();
        let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| supervisor);
        let reads: Arc<dyn LedgerStore> =
            Arc::new(SupervisedStore::new(store, buffer, Arc::clone(&degraded)));
        let log = crate::tlog::postgres_log(&config)?;
        let ledger = Self::assemble(
            config,
            reads,
            Sink::Writer(writer),
            addr.clone().recipient(),
            vec![arbiter],
            Some(Supervised {
                addr,
                router: router_slot,
                degraded,
            }),
            None,
        );
        ledger.set_integrator(crate::tlog::start_integrator(&ledger.inner.config, log)?);
        Ok(ledger)
    }

    /// Starts the chain workers, the router and the metrics sampler around a running
    /// persistence actor (or supervisor). `persistence_queue` is the persistence actor's
    /// mailbox counter when it is a [`MemoryPersistence`] built with it (others report their
    /// own depth).
    fn assemble(
        config: LedgerConfig,
        store: Arc<dyn LedgerStore>,
        persist: Sink,
        flush: Recipient<Flush>,
        mut arbiters: Vec<Arbiter>,
        supervised: Option<Supervised>,
        persistence_queue: Option<QueueDepth>,
    ) -> Self {
        let workers: Vec<Arbiter> = (0..config.worker_count()).map(|_| Arbiter::new()).collect();
        let handles: Vec<ArbiterHandle> = workers.iter().map(Arbiter::handle).collect();
        arbiters.extend(workers);
        let permits = Arc::new(Semaphore::new(config.max_in_flight));
        let mailboxes = Arc::new(ChainMailboxes::new());
        let degraded = supervised.as_ref().map_or_else(
            || Arc::new(AtomicBool::new(false)),
            |s| Arc::clone(&s.degraded),
        );
        let active = match &supervised {
            // The supervisor sets `ledger_backend_active` itself, on start and every swap.
            Some(_) => ActiveBackend::Supervised(Arc::clone(&degraded)),
            None => {
                crate::metrics::backend_active(store.backend() == Backend::Postgres);
                ActiveBackend::Fixed(store.backend())
            }
        };
        let observer = Arc::new(Observer::new(
            config.backend,
            active,
            Arc::clone(&permits),
            config.max_in_flight,
            Arc::clone(&mailboxes),
            persistence_queue.clone(),
        ));
        // The sampler runs beside the persistence actor (the first Arbiter) and stops with it.
        if let Some(home) = arbiters.first() {
            let sampled = Arc::clone(&observer);
            Sampler::start_in_arbiter(&home.handle(), move |_| Sampler::new(sampled));
        }
        let settings = ChainSettings {
            store: Arc::clone(&store),
            persist,
            limits: config.limits(),
            mailbox_capacity: config.mailbox_capacity,
            passivate_after: config.passivate_after,
            suspend_passivation: Arc::clone(&degraded),
            mailboxes,
            persistence_queue,
            relink_for: config.timeout.mul_f64(0.8),
        };
        let router = ChainRouter::new(settings, handles.clone());
        if let Some(s) = &supervised {
            // Set once, right after the router exists; the supervisor reads it later.
            let _ = s.router.set(Arc::downgrade(&router));
        }
        Self {
            inner: Arc::new(Inner {
                permits,
                observer,
                config,
                store,
                router,
                flush,
                closing: AtomicBool::new(false),
                arbiters: std::sync::Mutex::new(arbiters),
                workers: handles,
                supervisor: supervised.map(|s| s.addr),
                integrator: OnceLock::new(),
                read_only: AtomicBool::new(false),
                spool_lock: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The configuration the ledger runs with.
    pub fn config(&self) -> &LedgerConfig {
        &self.inner.config
    }

    /// The store reads go to.
    pub fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.inner.store
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

    /// The ledger's health report; see [`crate::health`] for what is checked and the rules
    /// that make it healthy, degraded or down. Takes at most [`crate::health::PROBE_TIMEOUT`]
    /// (or the configured timeout, if shorter) per probe.
    pub async fn health(&self) -> Health {
        crate::health::assess(crate::health::Probe {
            config: &self.inner.config,
            store: self.inner.store.as_ref(),
            observer: &self.inner.observer,
            persistence: &self.inner.flush,
            supervisor: self.inner.supervisor.as_ref(),
            workers: self.inner.router.workers(),
            closing: self.inner.closing.load(Ordering::Acquire),
        })
        .await
    }

    /// Publishes the sampled gauges (in-flight appends, chain and memory-persistence mailbox
    /// depths) now.
    /// A sampler does it every [`crate::observe::SAMPLE_EVERY`]; call this to read current
    /// values from the exporter without waiting for it.
    pub fn sample_metrics(&self) {
        self.inner.observer.publish();
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
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome_label(),
        };
        crate::metrics::append_finished(outcome, started.elapsed().as_secs_f64());
        result
    }

    /// Like [`Ledger::append`], but answers only once the record is committed in
    /// PostgreSQL ([`Durability::Committed`]), waiting through an outage for up to `wait`
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
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome_label(),
        };
        crate::metrics::append_finished(outcome, started.elapsed().as_secs_f64());
        result
    }

    /// The checks made before a record crosses into an actor: the payload's nesting depth
    /// (iteratively; a refused payload is disposed of without recursion).
    fn admit(&self, record: NewRecord) -> Result<NewRecord, LedgerError> {
        let max_depth = self.inner.config.limits().max_depth;
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
        self.send(Append::new(record), anchor_id, self.inner.config.timeout)
            .await
    }

    async fn send(
        &self,
        msg: Append,
        anchor_id: Uuid,
        wait: std::time::Duration,
    ) -> Result<AppendAck, LedgerError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(LedgerError::ShuttingDown);
        }
        if self.is_read_only() {
            return Err(LedgerError::ReadOnly);
        }
        let timeout = self.inner.config.timeout;
        let _permit = match tokio::time::timeout(timeout, self.inner.permits.acquire()).await {
            Err(_) => return Err(LedgerError::Overloaded { waited: timeout }),
            Ok(Err(_closed)) => return Err(LedgerError::ShuttingDown),
            Ok(Ok(permit)) => permit,
        };
        self.inner
            .router
            .append(msg, anchor_id, wait.max(timeout))
            .await
    }

    /// The record with this rid.
    pub async fn get(&self, rid: Uuid) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        self.inner.store.get(rid).await
    }

    /// One anchor's records in chain order within `range`.
    pub async fn records(
        &self,
        anchor_id: Uuid,
        range: &RecordRange,
    ) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        let records = self.inner.store.records(anchor_id, range).await?;
        if records.is_empty() && self.inner.store.head(anchor_id).await?.is_none() {
            return Err(LedgerError::UnknownAnchor(anchor_id));
        }
        Ok(records)
    }

    /// The anchor's last stored record.
    pub async fn head(&self, anchor_id: Uuid) -> Result<Head, LedgerError> {
        self.inner
            .store
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
        self.inner.store.anchors(after, limit).await
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
        crate::transfer::export(self.inner.store.as_ref(), out, options, &mut |_| {}).await
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
            batch_size: self.inner.config.batch_size,
            limits: self.inner.config.limits(),
        };
        crate::transfer::import(
            self.inner.store.as_ref(),
            input,
            &options,
            on_refused,
            &mut |_| {},
        )
        .await
    }

    /// Walks one anchor's chain, recomputing every hash; reports the first break.
    pub async fn verify(&self, anchor_id: Uuid) -> Result<ChainReport, LedgerError> {
        verify::verify_chain(self.inner.store.as_ref(), anchor_id).await
    }

    /// Verifies every anchor.
    pub async fn verify_all(&self) -> Result<VerifySummary, LedgerError> {
        verify::verify_all(self.inner.store.as_ref()).await
    }

    /// The supervisor's view of PostgreSQL: active mode, buffered records, failovers,
    /// counts of re-chained and quarantined records. `None` on the memory backend.
    pub async fn outage_status(&self) -> Option<OutageStatus> {
        let addr = self.inner.supervisor.as_ref()?;
        addr.send(GetStatus).await.ok()
    }

    /// The records re-chained or quarantined by outage drains (the status has only their
    /// counts). `None` on the memory backend.
    pub async fn outage_records(&self) -> Option<OutageRecords> {
        let addr = self.inner.supervisor.as_ref()?;
        addr.send(GetOutageRecords).await.ok()
    }

    /// Waits until records buffered during an outage are all in PostgreSQL (or `timeout`
    /// passes) and returns the status then. `None` on the memory backend.
    pub async fn await_drain(&self, timeout: std::time::Duration) -> Option<OutageStatus> {
        let addr = self.inner.supervisor.as_ref()?;
        addr.send(AwaitDrain { timeout }).await.ok()
    }

    /// Refuses new appends, waits (up to the configured timeout) for those in flight to be
    /// answered, flushes the persistence actor, then stops the actors and their threads. The
    /// report says what did not reach PostgreSQL (during an outage) and where it is kept.
    pub async fn shutdown(&self) -> Result<ShutdownReport, LedgerError> {
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return Ok(ShutdownReport {
                unanswered: 0,
                buffered: 0,
                spool: None,
            });
        }
        let max = u32::try_from(self.inner.config.max_in_flight).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(
            self.inner.config.timeout,
            self.inner.permits.acquire_many(max),
        )
        .await;
        let unanswered = match &drained {
            Ok(Ok(_)) => 0,
            _ => self.inner.config.max_in_flight - self.inner.permits.available_permits(),
        };
        let flushed = self
            .inner
            .flush
            .send(Flush)
            .await
            .map_err(|e| LedgerError::Internal(format!("persistence actor gone: {e}")))
            .and_then(|r| r);
        // During an outage, give the drain the same bounded time before reporting.
        let status = match self.outage_status().await {
            Some(s) if s.buffered > 0 => self.await_drain(self.inner.config.timeout).await,
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
            integrator.shutdown(self.inner.config.timeout).await;
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
        self.inner.observer.finish();
        // The supervisor (the spool's writer) is stopped: the next ledger may take the spool.
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

/// Writes the records an earlier process left in the outage spool to PostgreSQL, then
/// empties it. A corrupt or truncated tail is reported and the file kept aside
/// (`.corrupt-<unix time>`); the complete frames before it are applied, a partial frame
/// never is.
async fn recover_spool(
    dir: &std::path::Path,
    store: &Arc<PostgresLedgerStore>,
    batch_size: usize,
) -> Result<(), LedgerError> {
    let contents = spool::read(dir)?;
    let path = dir.join(spool::SPOOL_FILE);
    if let Some((offset, reason)) = &contents.corrupt_tail {
        let aside =
            path.with_extension(format!("spool.corrupt-{}", chrono::Utc::now().timestamp()));
        tracing::error!(spool = %path.display(), offset, %reason, kept = %aside.display(),
            records_before = contents.records.len(), "outage spool has a corrupt tail; applying the complete records before it");
        std::fs::copy(&path, &aside).map_err(|e| {
            LedgerError::Internal(format!("spool: keep corrupt copy {}: {e}", aside.display()))
        })?;
    }
    if contents.records.is_empty() && contents.corrupt_tail.is_none() {
        return Ok(());
    }
    let pool = store.connection().get_postgres_connection_pool().clone();
    let mut state = DrainState::default();
    for batch in contents.records.chunks(batch_size.max(1)) {
        let out = drain::drain_batch(&pool, store, batch, &mut state).await;
        if let Some(e) = out.unavailable {
            return Err(e);
        }
        for (old, new) in &out.rechained {
            tracing::warn!(rid = %new.rid, buffered_hash = %old, new_hash = %new.hash, "spool recovery re-chained a record");
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
        }
    }
    tracing::info!(records = contents.records.len(), spool = %path.display(), "outage spool written to PostgreSQL");
    spool::Spool::open(dir)?.truncate()
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
