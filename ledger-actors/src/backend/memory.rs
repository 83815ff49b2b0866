//! [`MemoryDriver`]: the `memory` backend, with or without a spool.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use ledger_entities::LedgerRecord;

use crate::config::Backend;
use crate::driver::{Driver, Outcome};
use crate::error::LedgerError;
use crate::spool::Spool;
use crate::store::{Durability, LedgerStore, MemoryLedgerStore};

/// Stores each unit in a [`MemoryLedgerStore`] on the chain actor's own thread (fork guard
/// and uniqueness checked there) and answers at once: [`Durability::Volatile`], or with a
/// `spool_dir` (the rollback window of docs/OPERATIONS.md) [`Durability::Spooled`] — each
/// unit is first appended to the spool as one frame and fsynced, so a record is never in
/// memory (and linked onto) without being in the spool; the next start reloads the spool,
/// and a start on PostgreSQL writes it there.
pub(crate) struct MemoryDriver {
    memory: Arc<MemoryLedgerStore>,
    store: Arc<dyn LedgerStore>,
    /// The spool, if spooling. The mutex serializes the actors' spool writes; it holds
    /// `None` once a write failed (a partial frame may follow the last good one, and a
    /// record appended behind it could not be read back), so every later append is refused
    /// until a restart, which keeps the unreadable tail aside.
    spool: Option<Mutex<Option<Spool>>>,
    /// Never set: the memory store is always there.
    never: Arc<crate::driver::OutageFlag>,
}

impl MemoryDriver {
    /// A driver over `memory`, spooling into `spool` if given.
    pub(crate) fn new(memory: Arc<MemoryLedgerStore>, spool: Option<Spool>) -> Self {
        let store: Arc<dyn LedgerStore> = Arc::clone(&memory) as Arc<dyn LedgerStore>;
        Self {
            memory,
            store,
            spool: spool.map(|s| Mutex::new(Some(s))),
            never: Arc::default(),
        }
    }

    /// The memory store (what the live migration copies).
    pub(crate) fn memory(&self) -> &Arc<MemoryLedgerStore> {
        &self.memory
    }

    /// Whether each unit is spooled before it is stored.
    pub(crate) fn spools(&self) -> bool {
        self.spool.is_some()
    }
}

impl Driver for MemoryDriver {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.store
    }

    fn write_now(&self, records: &[Arc<LedgerRecord>]) -> Option<Outcome> {
        let durability = match &self.spool {
            Some(spool) => match spool_write(spool, records) {
                Ok(()) => Durability::Spooled,
                Err(e) => return Some(Err(e)),
            },
            None => Durability::Volatile,
        };
        // A unit spooled and then refused by the store was never acknowledged: the spool
        // reload skips it.
        Some(self.memory.insert_now(records).map(|()| durability))
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), LedgerError>> {
        // Every unit was stored (and spooled) before it was answered: nothing is pending.
        Box::pin(std::future::ready(Ok(())))
    }

    fn suspend_passivation(&self) -> Arc<crate::driver::OutageFlag> {
        Arc::clone(&self.never)
    }
}

/// Writes `records` to the spool as one frame and fsyncs it; see [`MemoryDriver::spool`]
/// for why a failed write refuses every later append.
fn spool_write(
    spool: &Mutex<Option<Spool>>,
    records: &[Arc<LedgerRecord>],
) -> Result<(), LedgerError> {
    // The lock is held only for one append + fsync; a poisoned lock still holds a usable
    // file or `None`.
    let mut slot = spool.lock().unwrap_or_else(|p| p.into_inner());
    let written = match slot.as_mut() {
        Some(spool) => spool.append_unit(records).and_then(|()| spool.sync()),
        None => Err(LedgerError::Io(
            "the spool could not be written earlier; appends are refused until the host restarts (records acknowledged before are safe)".into(),
        )),
    };
    if let Err(e) = &written
        && slot.is_some()
    {
        tracing::error!(error = %e, "spool write failed: refusing appends until restart");
        *slot = None;
    }
    written
}
