//! Persistence actors: they receive hashed records from chain actors and make them durable.
//!
//! Every persistence actor speaks the same messages ([`Persist`], [`Flush`]), so the
//! supervisor can put one in place of another. A record is acknowledged through its
//! [`Persist::reply`] only after it is stored, with the [`Durability`] it reached.

use std::sync::Arc;

use actix::Message;
use ledger_entities::LedgerRecord;
use tokio::sync::oneshot;

use crate::error::LedgerError;

pub mod memory;
pub mod postgres;
pub mod read_only;

pub use memory::MemoryPersistence;
pub use postgres::PostgresPersistence;
pub use read_only::ReadOnlyPersistence;

/// How durable an acknowledged record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// In this process's memory only (the `memory` backend): lost when the process exits.
    Volatile,
    /// Held on the memory fallback during a PostgreSQL outage; written to PostgreSQL when it
    /// returns. Lost if the process dies before that, unless spooled.
    Buffered,
    /// Held on the memory fallback and fsynced to the local spool file; survives a crash.
    Spooled,
    /// Committed in PostgreSQL.
    Committed,
}

/// Where a persistence actor sends a record's outcome.
pub type PersistReply = oneshot::Sender<Result<Durability, LedgerError>>;

/// Store this record after every record sent before it by the same chain actor. Sent with
/// `do_send` so that one chain actor's records stay in order.
pub struct Persist {
    /// The hashed record.
    pub record: Arc<LedgerRecord>,
    /// Receives the outcome exactly once.
    pub reply: PersistReply,
    /// Answer only once the record is committed in PostgreSQL, even during an outage
    /// (`Ledger::append_durable`). Memory persistence answers at once regardless.
    pub wait_committed: bool,
}

impl Message for Persist {
    type Result = ();
}

/// Stop now: the supervisor has failed over and taken this actor's records. Records not yet
/// written are answered [`LedgerError::Unavailable`] (nobody waits for them any more) and
/// running writes are abandoned; the drain later finds whatever they committed.
pub struct Retire;

impl Message for Retire {
    type Result = ();
}

/// Write out everything received so far, then answer. Used by shutdown.
pub struct Flush;

impl Message for Flush {
    type Result = Result<(), LedgerError>;
}
