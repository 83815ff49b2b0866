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
use crate::health::Health;
use crate::observe::{ChainMailboxes, FailoverState, Observer, QueueDepth, Sampler};
use crate::persistence::{Durability, Flush, MemoryPersistence, Persist};
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
    workers: Vec<ArbiterHandle>,
    /// Depths, in-flight appends and failover state, for the gauges and [`Ledger::health`].
    observer: Arc<Observer>,
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
            Backend::Postgres => Err(LedgerError::Config(
                "backend: postgres is not built yet in this version".into(),
            )),
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
        let queue = QueueDepth::new();
        let actor_queue = queue.clone();
        let persistence =
            MemoryPersistence::start_in_arbiter(&persistence_arbiter.handle(), |_| {
                MemoryPersistence::new(memory, Durability::Volatile).with_queue(actor_queue)
            });
        let store: Arc<dyn LedgerStore> = store;
        Ok(Self::assemble_observed(
            config,
            store,
            persistence.clone().recipient(),
            persistence.recipient(),
            vec![persistence_arbiter],
            Some(queue),
        ))
    }

    /// [`Ledger::assemble_observed`] for a persistence actor that reports its own mailbox
    /// depth (through `metrics::persistence_depth`).
    #[allow(dead_code, reason = "the postgres backend's start calls it")]
    fn assemble(
        config: LedgerConfig,
        store: Arc<dyn LedgerStore>,
        persist: Recipient<Persist>,
        flush: Recipient<Flush>,
        arbiters: Vec<Arbiter>,
    ) -> Self {
        Self::assemble_observed(config, store, persist, flush, arbiters, None)
    }

    /// Starts the chain workers, the router and the metrics sampler around a running
    /// persistence actor. `persistence_queue` is the persistence actor's mailbox counter when
    /// it is a [`MemoryPersistence`] built with it.
    fn assemble_observed(
        config: LedgerConfig,
        store: Arc<dyn LedgerStore>,
        persist: Recipient<Persist>,
        flush: Recipient<Flush>,
        mut arbiters: Vec<Arbiter>,
        persistence_queue: Option<QueueDepth>,
    ) -> Self {
        let workers: Vec<Arbiter> = (0..config.worker_count()).map(|_| Arbiter::new()).collect();
        let handles: Vec<ArbiterHandle> = workers.iter().map(Arbiter::handle).collect();
        arbiters.extend(workers);
        let permits = Arc::new(Semaphore::new(config.max_in_flight));
        let mailboxes = Arc::new(ChainMailboxes::new());
        let observer = Arc::new(Observer::new(
            config.backend,
            store.backend(),
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
            mailboxes,
            persistence_queue,
        };
        let router = ChainRouter::new(settings, handles.clone());
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
            workers: self.inner.router.workers(),
            closing: self.inner.closing.load(Ordering::Acquire),
        })
        .await
    }

    /// Which backend takes the writes and how many records wait on the memory fallback. The
    /// supervisor updates it on failover, failback and drain; the gauges and
    /// [`Ledger::health`] read it.
    pub fn failover_state(&self) -> &Arc<FailoverState> {
        self.inner.observer.failover()
    }

    /// Publishes the sampled gauges (in-flight appends, mailbox depths, active backend) now.
    /// A sampler does it every [`crate::observe::SAMPLE_EVERY`]; call this to read current
    /// values from the exporter without waiting for it.
    pub fn sample_metrics(&self) {
        self.inner.observer.publish();
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
        self.inner.observer.finish();
        flushed?;
        Ok(ShutdownReport { unanswered })
    }
}
