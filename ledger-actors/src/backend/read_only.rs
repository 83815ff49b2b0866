//! [`ReadOnlyDriver`]: the driver of a ledger opened with [`crate::Ledger::open_read_only`].

use std::sync::Arc;

use futures::future::BoxFuture;
use ledger_entities::LedgerRecord;

use crate::config::Backend;
use crate::driver::{Driver, Outcome};
use crate::error::LedgerError;
use crate::store::LedgerStore;

/// Reads from its store; stores nothing: every unit is refused with
/// [`LedgerError::ReadOnly`] (the ledger refuses appends before any actor; this is the last
/// line). A flush answers at once.
pub(crate) struct ReadOnlyDriver {
    backend: Backend,
    store: Arc<dyn LedgerStore>,
    never: Arc<crate::driver::OutageFlag>,
}

impl ReadOnlyDriver {
    /// Reads from `store`, configured as `backend`.
    pub(crate) fn new(backend: Backend, store: Arc<dyn LedgerStore>) -> Self {
        Self {
            backend,
            store,
            never: Arc::default(),
        }
    }
}

impl Driver for ReadOnlyDriver {
    fn backend(&self) -> Backend {
        self.backend
    }

    fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.store
    }

    fn write_now(&self, _records: &[Arc<LedgerRecord>]) -> Option<Outcome> {
        Some(Err(LedgerError::ReadOnly))
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), LedgerError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn shared(&self) -> bool {
        self.backend == Backend::Postgres
    }

    fn suspend_passivation(&self) -> Arc<crate::driver::OutageFlag> {
        Arc::clone(&self.never)
    }
}
