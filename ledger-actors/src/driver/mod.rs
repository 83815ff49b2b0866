//! The storage-driver interface: where a chain actor's sealed records go, and where reads
//! come from. The drivers themselves are in the private `backend` module.
//!
//! Every backend is one [`Driver`]. A chain actor holds its ledger's driver and calls it on
//! one path: [`Driver::write_now`] for a driver that stores on the caller's thread (memory,
//! memory + spool, read-only — the append is answered without another hop), else
//! [`Driver::submit`] with a [`Persist`] unit answered later through its reply (PostgreSQL:
//! the writer's group commit, outage buffer and drain). The live memory → PostgreSQL
//! migration swaps the driver whole, so nothing can read one backend's part beside another's.
//!
//! This module depends on nothing but the store, configuration and error types, so that
//! the chain actors, the writer and the spool can all depend on it.
//!
//! - [`Driver`]: the interface;
//! - [`handoff`]: the unit and answers of a driver that answers later.

pub mod handoff;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use ledger_entities::LedgerRecord;

pub use self::handoff::{Outcome, Persist};
use crate::config::Backend;
use crate::error::LedgerError;
use crate::store::LedgerStore;

/// One storage backend, whole: its writes, its reads, its flush and status.
pub trait Driver: Send + Sync + 'static {
    /// The backend the driver stores on (the configured one; during a PostgreSQL outage the
    /// writer's reads say where they go, [`LedgerStore::backend`]).
    fn backend(&self) -> Backend;

    /// The store reads go to (and heads are loaded from).
    fn store(&self) -> &Arc<dyn LedgerStore>;

    /// Stores one unit (`records`, one anchor's, in chain order) now, on the caller's thread,
    /// and returns the durability it reached; `None` when this driver answers later, through
    /// [`Driver::submit`].
    fn write_now(&self, records: &[Arc<LedgerRecord>]) -> Option<Outcome>;

    /// Hands a unit over; it is answered exactly once through its reply. A driver that
    /// writes now answers it at once with [`Driver::write_now`]'s outcome.
    fn submit(&self, unit: Persist) {
        let records: Vec<_> = unit.records().cloned().collect();
        let outcome = self.write_now(&records).unwrap_or_else(|| {
            Err(LedgerError::Internal(
                "a driver that answers later did not take the unit".into(),
            ))
        });
        // The appender may have given up waiting; then nobody reads this.
        let _ = unit.reply.send(outcome);
    }

    /// Answers once every unit submitted before is answered or safely kept.
    fn flush(&self) -> BoxFuture<'static, Result<(), LedgerError>>;

    /// Other processes may write this store's anchors (PostgreSQL): a head this ledger
    /// loaded can be stale, and a refused record may be re-linked onto the moved head.
    fn shared(&self) -> bool {
        false
    }

    /// Raised while the driver cannot load heads (a PostgreSQL outage): chain actors then do
    /// not passivate, since a revived actor would need its head from the unreachable store.
    fn suspend_passivation(&self) -> Arc<OutageFlag>;
}

/// Raised by the PostgreSQL writer while it is not writing to PostgreSQL (an outage or a
/// drain), lowered when it is back in `Primary`. Reads wait on [`OutageFlag::raised`] beside
/// the database, so a read that hangs on a black-holed connection ends when the writer fails
/// over, not when its own connect timeout runs out.
#[derive(Debug, Default)]
pub struct OutageFlag {
    on: AtomicBool,
    raised: tokio::sync::Notify,
}

impl OutageFlag {
    /// True while raised.
    pub fn is_raised(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Raises (`true`) or lowers the flag; raising wakes every [`OutageFlag::raised`] waiter.
    pub(crate) fn set(&self, on: bool) {
        self.on.store(on, Ordering::Release);
        if on {
            self.raised.notify_waiters();
        }
    }

    /// Completes once the flag is raised (at once if it is).
    pub async fn raised(&self) {
        loop {
            let notified = self.raised.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check: a `set(true)` between the check and the await
            // still wakes this waiter.
            notified.as_mut().enable();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}
