//! Persistence actors: they receive hashed records from chain actors and make them durable.
//!
//! Every persistence actor speaks the same messages ([`Persist`], [`Flush`]), so the
//! supervisor can put one in place of another. A record is acknowledged through its
//! [`Persist::reply`] only after it is stored, with the [`Durability`] it reached.

use std::sync::Arc;

use actix::{Message, Recipient};
use ledger_entities::LedgerRecord;
use tokio::sync::oneshot;

use crate::error::LedgerError;

pub mod memory;
pub mod postgres;
pub mod read_only;

pub use memory::MemoryPersistence;
pub use postgres::PostgresPersistence;
pub use read_only::ReadOnlyPersistence;

pub use crate::store::Durability;

/// A record's outcome.
pub type Outcome = Result<Durability, LedgerError>;

/// Where a persistence actor sends a record's outcome.
pub enum PersistReply {
    /// To one waiter (a chain actor's append).
    Oneshot(oneshot::Sender<Outcome>),
    /// To a forwarding actor (the supervisor), by the sequence number it gave the record.
    /// A persistence actor answers every such record of a batch in one [`Answers`] message.
    Forwarded {
        /// The forwarder's number for the record.
        seq: u64,
        /// Where the answers go.
        to: Recipient<Answers>,
    },
}

impl PersistReply {
    /// Sends `outcome` on its own. `Err` when nobody waits any more (the appender gave up);
    /// callers ignore that.
    #[allow(
        clippy::result_unit_err,
        reason = "nothing to report: the waiter is gone"
    )]
    pub fn send(self, outcome: Outcome) -> Result<(), ()> {
        match self {
            PersistReply::Oneshot(tx) => tx.send(outcome).map_err(|_| ()),
            PersistReply::Forwarded { seq, to } => {
                to.do_send(Answers(vec![(seq, outcome)]));
                Ok(())
            }
        }
    }
}

/// Outcomes of forwarded records, by their forwarder's sequence number (one message per
/// settled batch).
pub struct Answers(pub Vec<(u64, Outcome)>);

impl Message for Answers {
    type Result = ();
}

/// Collects the outcomes of one batch: oneshots are answered at once, forwarded records are
/// sent together by [`AnswerBatch::finish`].
#[derive(Default)]
pub struct AnswerBatch {
    to: Option<Recipient<Answers>>,
    forwarded: Vec<(u64, Outcome)>,
}

impl AnswerBatch {
    /// Answers one record (forwarded ones when the batch finishes).
    pub fn answer(&mut self, reply: PersistReply, outcome: Outcome) {
        match reply {
            PersistReply::Oneshot(tx) => {
                // The appender may have given up waiting; then nobody reads this.
                let _ = tx.send(outcome);
            }
            PersistReply::Forwarded { seq, to } => {
                self.to.get_or_insert(to);
                self.forwarded.push((seq, outcome));
            }
        }
    }

    /// Sends the forwarded outcomes in one message.
    pub fn finish(self) {
        if let Some(to) = self.to {
            to.do_send(Answers(self.forwarded));
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
