//! [`Ledger`]: the cheap-to-clone handle a host application holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use actix::prelude::*;
use ledger_entities::{LedgerRecord, NewRecord};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::chain::{AppendAck, ChainSettings};
use crate::config::{Backend, LedgerConfig};
use crate::error::LedgerError;
use crate::persistence::{Durability, Flush, MemoryPersistence, Persist, PostgresPersistence};
use crate::router::ChainRouter;
use crate::store::{Head, LedgerStore, MemoryLedgerStore, RecordRange};
use crate::verify::{self, ChainReport, VerifySummary};

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
}

/// What [`Ledger::shutdown`] left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Appends still unanswered when the drain wait gave up (0 after a clean drain).
    pub unanswered: usize,
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

    /// Starts a memory-backend ledger over an existing store (a restarted ledger continues
    /// every chain in it).
    pub fn start_memory(
        config: LedgerConfig,
        store: Arc<MemoryLedgerStore>,
    ) -> Result<Self, LedgerError> {
        config.check()?;
        let persistence_arbiter = Arbiter::new();
        let memory = Arc::clone(&store);
        let persistence =
            MemoryPersistence::start_in_arbiter(&persistence_arbiter.handle(), |_| {
                MemoryPersistence::new(memory, Durability::Volatile)
            });
        let store: Arc<dyn LedgerStore> = store;
        Ok(Self::assemble(
            config,
            store,
            persistence.clone().recipient(),
            persistence.recipient(),
            vec![persistence_arbiter],
        ))
    }

    /// Starts a postgres-backend ledger: connects, checks (or, with `auto_migrate`, applies)
    /// the schema and runs [`PostgresPersistence`] on its own Arbiter. If the database cannot
    /// be reached it logs a warning and starts on a fresh memory store instead (records then
    /// acknowledged as [`Durability::Volatile`]); a missing schema is an error.
    async fn start_postgres(config: LedgerConfig) -> Result<Self, LedgerError> {
        let store = match crate::store::postgres::open(&config).await {
            Ok(store) => store,
            Err(LedgerError::Unavailable(reason)) => {
                let dsn = config
                    .dsn
                    .as_ref()
                    .map(|d| d.redacted())
                    .unwrap_or_default();
                tracing::warn!(%dsn, %reason, "PostgreSQL unreachable at start; falling back to the memory backend (appends are NOT durable)");
                return Self::start_memory(config, Arc::new(MemoryLedgerStore::new()));
            }
            Err(e) => return Err(e),
        };
        let persistence_arbiter = Arbiter::new();
        let settings = config.clone();
        let options = crate::store::postgres::sqlx_options(&config)?;
        let reads = store.connection().clone();
        let persistence =
            PostgresPersistence::start_in_arbiter(&persistence_arbiter.handle(), move |_| {
                PostgresPersistence::with_own_pool(options, &reads, &settings)
            });
        Ok(Self::assemble(
            config,
            Arc::new(store),
            persistence.clone().recipient(),
            persistence.recipient(),
            vec![persistence_arbiter],
        ))
    }

    fn assemble(
        config: LedgerConfig,
        store: Arc<dyn LedgerStore>,
        persist: Recipient<Persist>,
        flush: Recipient<Flush>,
        mut arbiters: Vec<Arbiter>,
    ) -> Self {
        let workers: Vec<Arbiter> = (0..config.worker_count()).map(|_| Arbiter::new()).collect();
        let handles = workers.iter().map(Arbiter::handle).collect();
        arbiters.extend(workers);
        let settings = ChainSettings {
            store: Arc::clone(&store),
            persist,
            limits: config.limits(),
            mailbox_capacity: config.mailbox_capacity,
            passivate_after: config.passivate_after,
        };
        let router = ChainRouter::new(settings, handles);
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(config.max_in_flight)),
                config,
                store,
                router,
                flush,
                closing: AtomicBool::new(false),
                arbiters: std::sync::Mutex::new(arbiters),
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

    /// The router of chain actors, for hosts that talk to the actors directly.
    pub fn router(&self) -> &Arc<ChainRouter> {
        &self.inner.router
    }

    /// Appends a record to its anchor's chain and answers once it is stored. Waits at most
    /// the configured timeout for capacity ([`LedgerError::Overloaded`]) and for the outcome
    /// ([`LedgerError::Timeout`]).
    pub async fn append(&self, record: NewRecord) -> Result<AppendAck, LedgerError> {
        let started = Instant::now();
        let result = self.append_inner(record).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome_label(),
        };
        crate::metrics::append_finished(outcome, started.elapsed().as_secs_f64());
        result
    }

    async fn append_inner(&self, record: NewRecord) -> Result<AppendAck, LedgerError> {
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(LedgerError::ShuttingDown);
        }
        let timeout = self.inner.config.timeout;
        let _permit = match tokio::time::timeout(timeout, self.inner.permits.acquire()).await {
            Err(_) => return Err(LedgerError::Overloaded { waited: timeout }),
            Ok(Err(_closed)) => return Err(LedgerError::ShuttingDown),
            Ok(Ok(permit)) => permit,
        };
        self.inner.router.append(record, timeout).await
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

    /// Walks one anchor's chain, recomputing every hash; reports the first break.
    pub async fn verify(&self, anchor_id: Uuid) -> Result<ChainReport, LedgerError> {
        verify::verify_chain(self.inner.store.as_ref(), anchor_id).await
    }

    /// Verifies every anchor.
    pub async fn verify_all(&self) -> Result<VerifySummary, LedgerError> {
        verify::verify_all(self.inner.store.as_ref()).await
    }

    /// Refuses new appends, waits (up to the configured timeout) for those in flight to be
    /// answered, flushes the persistence actor, then stops the actors and their threads.
    pub async fn shutdown(&self) -> Result<ShutdownReport, LedgerError> {
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return Ok(ShutdownReport { unanswered: 0 });
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
        flushed?;
        Ok(ShutdownReport { unanswered })
    }
}
