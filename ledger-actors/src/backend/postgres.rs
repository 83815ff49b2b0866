//! [`PostgresDriver`]: the `postgres` backend — the [`Writer`] (group commit, failover to
//! the outage buffer, the drain back) and its reads (PostgreSQL plus the buffer).

use std::sync::{Arc, OnceLock, Weak};

use actix::prelude::*;
use futures::future::BoxFuture;
use ledger_entities::LedgerRecord;

use crate::config::{Backend, LedgerConfig};
use crate::driver::handoff::WriterSender;
use crate::driver::{Driver, OutageFlag, Outcome, Persist};
use crate::error::LedgerError;
use crate::pg::store::PostgresLedgerStore;
use crate::router::ChainRouter;
use crate::store::LedgerStore;
use crate::writer::Writer;
use crate::writer::buffer::OutageBuffer;
use crate::writer::reads::WriterReads;

/// Hands every unit to the writer's inbox; the writer answers each through its reply.
pub(crate) struct PostgresDriver {
    addr: Addr<Writer>,
    inbox: WriterSender,
    reads: Arc<dyn LedgerStore>,
    /// Set by the writer while PostgreSQL is not the active backend.
    degraded: Arc<OutageFlag>,
    /// Filled once the router exists: the writer tells chain actors to reload re-chained
    /// heads through it.
    router: Arc<OnceLock<Weak<ChainRouter>>>,
}

impl PostgresDriver {
    /// Starts a [`Writer`] over `store` on an Arbiter of its own (returned, for the ledger to
    /// stop at shutdown).
    pub(crate) fn start(
        config: &LedgerConfig,
        store: Arc<PostgresLedgerStore>,
    ) -> Result<(Arbiter, Self), LedgerError> {
        let buffer = Arc::new(OutageBuffer::default());
        let router: Arc<OnceLock<Weak<ChainRouter>>> = Arc::new(OnceLock::new());
        let degraded: Arc<OutageFlag> = Arc::default();
        let actor = Writer::new(
            config.clone(),
            Arc::clone(&store),
            Arc::clone(&buffer),
            Arc::clone(&router),
            Arc::clone(&degraded),
        )?;
        let inbox = actor.sender();
        let arbiter = crate::metrics::arbiter(config.metrics_partition);
        let addr = Writer::start_in_arbiter(&arbiter.handle(), move |_| actor);
        let reads: Arc<dyn LedgerStore> =
            Arc::new(WriterReads::new(store, buffer, Arc::clone(&degraded)));
        Ok((
            arbiter,
            Self {
                addr,
                inbox,
                reads,
                degraded,
                router,
            },
        ))
    }

    /// Tells the writer which router runs the chain actors (once, right after it exists).
    pub(crate) fn attach(&self, router: &Arc<ChainRouter>) {
        // Set once per driver; a second call would name the same router.
        let _ = self.router.set(Arc::downgrade(router));
    }

    /// The writer (outage status, drain, health).
    pub(crate) fn writer(&self) -> &Addr<Writer> {
        &self.addr
    }

    /// Set while the writer is not in `Primary`.
    pub(crate) fn degraded(&self) -> &Arc<OutageFlag> {
        &self.degraded
    }
}

impl Driver for PostgresDriver {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.reads
    }

    fn write_now(&self, _records: &[Arc<LedgerRecord>]) -> Option<Outcome> {
        None
    }

    fn submit(&self, unit: Persist) {
        self.inbox.persist(unit);
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), LedgerError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inbox.flush(tx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(LedgerError::Internal(
                    "the PostgreSQL writer stopped before the flush completed".into(),
                ))
            })
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn suspend_passivation(&self) -> Arc<OutageFlag> {
        Arc::clone(&self.degraded)
    }
}
