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
pub mod read_only;

pub use memory::MemoryPersistence;
pub use read_only::ReadOnlyPersistence;

pub use crate::store::Durability;

/// A record's outcome.
pub type Outcome = Result<Durability, LedgerError>;

/// Where a persistence actor sends a record's outcome: the appending chain actor's oneshot.
pub enum PersistReply {
    /// To one waiter (a chain actor's append).
    Oneshot(oneshot::Sender<Outcome>),
}

impl PersistReply {
    /// Sends `outcome`. `Err` when nobody waits any more (the appender gave up); callers
    /// ignore that.
    #[allow(
        clippy::result_unit_err,
        reason = "nothing to report: the waiter is gone"
    )]
    pub fn send(self, outcome: Outcome) -> Result<(), ()> {
        match self {
            PersistReply::Oneshot(tx) => tx.send(outcome).map_err(|_| ()),
        }
    }
}

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

/// What the supervisor's inbox carries: records and flushes, in one FIFO order.
pub enum Inbox {
    /// A record to store (see [`Persist`]).
    Record(Persist),
    /// Answer once every record sent before this is answered or safely buffered.
    Flush(oneshot::Sender<Result<(), LedgerError>>),
}

/// The sending side of the supervisor's inbox, a tokio mpsc channel it drains in batches
/// (`recv_many`): chain actors hand records to the PostgreSQL writer through it, without an
/// actor message per record. One sender's records arrive in the order it sent them.
#[derive(Clone, Debug)]
pub struct WriterSender(pub(crate) tokio::sync::mpsc::UnboundedSender<Inbox>);

impl WriterSender {
    /// Hands `msg` to the writer. If the writer has stopped, the record is dropped unanswered
    /// (its reply's receiver then sees the sender gone).
    pub fn persist(&self, msg: Persist) {
        // A closed channel means the writer stopped (shutdown): nobody can store it.
        let _ = self.0.send(Inbox::Record(msg));
    }

    /// Asks the writer to write out everything sent before, and answers on `reply`.
    pub fn flush(&self, reply: oneshot::Sender<Result<(), LedgerError>>) {
        if let Err(tokio::sync::mpsc::error::SendError(Inbox::Flush(reply))) =
            self.0.send(Inbox::Flush(reply))
        {
            // The flusher may have stopped waiting; then nobody reads the answer.
            let _ = reply.send(Err(LedgerError::Internal(
                "the PostgreSQL writer has stopped".into(),
            )));
        }
    }
}

/// Write out everything received so far, then answer. Used by shutdown.
pub struct Flush;

impl Message for Flush {
    type Result = Result<(), LedgerError>;
}
