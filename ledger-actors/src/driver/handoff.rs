//! The hand-off to a driver that answers later (the PostgreSQL writer): a [`Persist`] unit
//! carries its records and a [`PersistReply`]; the writer answers every record of one chain
//! actor settled together in one [`Acks`] message ([`AckBatch`]). A record is acknowledged
//! only after it is stored, with the [`Durability`] it reached.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Message, Recipient};
use ledger_entities::LedgerRecord;
use tokio::sync::oneshot;

use crate::error::LedgerError;

pub use crate::store::Durability;

/// A record's outcome.
pub type Outcome = Result<Durability, LedgerError>;

/// Where a driver sends a unit's outcome.
pub enum PersistReply {
    /// To one waiter (tests; anything holding its own oneshot).
    Oneshot(oneshot::Sender<Outcome>),
    /// To the chain actor that sent the record, by the number it gave it: the writer answers
    /// all of one chain actor's records settled together in one [`Acks`] message
    /// ([`AckBatch`]).
    Batched(AckTo),
}

/// A chain actor and its number for one record. Dropped unanswered (a bug, or a writer that
/// stopped), it answers [`LedgerError::Internal`], so that no append waits for an answer
/// that cannot come.
pub struct AckTo {
    to: Option<Recipient<Acks>>,
    tag: u64,
}

impl AckTo {
    /// The record numbered `tag` by the chain actor `to`.
    pub fn new(to: Recipient<Acks>, tag: u64) -> Self {
        Self { to: Some(to), tag }
    }

    /// The chain actor and the number, once (the guard is then spent).
    fn take(mut self) -> Option<(Recipient<Acks>, u64)> {
        self.to.take().map(|to| (to, self.tag))
    }
}

impl Drop for AckTo {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            to.do_send(Acks(vec![(
                self.tag,
                Err(LedgerError::Internal(
                    "the PostgreSQL writer dropped a record without answering".into(),
                )),
            )]));
        }
    }
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
            PersistReply::Batched(ack) => {
                if let Some((to, tag)) = ack.take() {
                    to.do_send(Acks(vec![(tag, outcome)]));
                }
                Ok(())
            }
        }
    }
}

/// Outcomes of a chain actor's records, by its numbers for them (one message per chain
/// actor per settled batch).
pub struct Acks(pub Vec<(u64, Outcome)>);

impl Message for Acks {
    type Result = ();
}

/// Collects the outcomes of records settled together and sends them with one [`Acks`]
/// message per chain actor ([`AckBatch::finish`]); oneshots are answered at once.
#[derive(Default)]
pub struct AckBatch {
    by_actor: HashMap<Recipient<Acks>, Vec<(u64, Outcome)>>,
}

impl AckBatch {
    /// Answers one record (batched ones when [`AckBatch::finish`] runs).
    pub fn answer(&mut self, reply: PersistReply, outcome: Outcome) {
        match reply {
            PersistReply::Oneshot(tx) => {
                // The appender may have given up waiting; then nobody reads this.
                let _ = tx.send(outcome);
            }
            PersistReply::Batched(ack) => {
                if let Some((to, tag)) = ack.take() {
                    self.by_actor.entry(to).or_default().push((tag, outcome));
                }
            }
        }
    }

    /// Sends the collected outcomes, one message per chain actor.
    pub fn finish(self) {
        for (to, acks) in self.by_actor {
            to.do_send(Acks(acks));
        }
    }
}

/// Store this record after every record sent before it by the same chain actor. Sent with
/// `do_send` so that one chain actor's records stay in order.
pub struct Persist {
    /// The hashed record (the first of an atomic batch).
    pub record: Arc<LedgerRecord>,
    /// The rest of an atomic batch (`Ledger::append_all`), in chain order after `record`;
    /// empty for a single append. The writer keeps the batch one unit: written in one
    /// group-commit statement or not at all, buffered and spooled together (one spool
    /// frame), answered once through `reply`.
    pub rest: Vec<Arc<LedgerRecord>>,
    /// The append expected a head: it must never be re-linked or re-chained onto another
    /// head, and is refused (not buffered) while PostgreSQL is unreachable, because then
    /// no other process's append can be checked against it.
    pub strict: bool,
    /// Receives the outcome exactly once.
    pub reply: PersistReply,
    /// Answer only once the record is committed in PostgreSQL, even during an outage
    /// (`Ledger::append_durable`). A memory driver answers at once regardless.
    pub wait_committed: bool,
    /// When its chain actor first took the append (before any re-link): a writer that holds
    /// acknowledgements back (during a drain) counts the hold from here, so an append that
    /// already spent time being re-linked is not held past its timeout.
    pub accepted: std::time::Instant,
}

impl Message for Persist {
    type Result = ();
}

impl Persist {
    /// Records in this unit.
    pub fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// Never true: a unit holds at least its first record (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The unit's records in chain order.
    pub fn records(&self) -> impl Iterator<Item = &Arc<LedgerRecord>> {
        std::iter::once(&self.record).chain(self.rest.iter())
    }
}

/// What the writer's inbox carries: records and flushes, in one FIFO order.
pub enum Inbox {
    /// A record to store (see [`Persist`]).
    Record(Persist),
    /// Answer once every record sent before this is answered or safely buffered.
    Flush(oneshot::Sender<Result<(), LedgerError>>),
}

/// The sending side of the writer's inbox, a tokio mpsc channel it drains in batches
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

    use actix::prelude::*;

    use super::*;

    /// Stands in for a chain actor: remembers each `Acks` message it gets.
    #[derive(Default)]
    struct Seen(Vec<Vec<(u64, Outcome)>>);

    impl Actor for Seen {
        type Context = Context<Self>;
    }

    impl Handler<Acks> for Seen {
        type Result = ();

        fn handle(&mut self, msg: Acks, _ctx: &mut Context<Self>) {
            self.0.push(msg.0);
        }
    }

    struct Take;

    impl Message for Take {
        type Result = Vec<Vec<(u64, Outcome)>>;
    }

    impl Handler<Take> for Seen {
        type Result = MessageResult<Take>;

        fn handle(&mut self, _msg: Take, _ctx: &mut Context<Self>) -> Self::Result {
            MessageResult(std::mem::take(&mut self.0))
        }
    }

    /// Outcomes settled together reach each chain actor in one `Acks` message holding all
    /// of its records, in order; a oneshot reply is answered directly.
    #[actix_rt::test]
    async fn ack_batch_sends_one_message_per_chain_actor() {
        let a = Seen::default().start();
        let b = Seen::default().start();
        let (tx, rx) = oneshot::channel();
        let mut acks = AckBatch::default();
        for tag in 0..3 {
            let to = a.clone().recipient();
            acks.answer(
                PersistReply::Batched(AckTo::new(to, tag)),
                Ok(Durability::Committed),
            );
        }
        let to = b.clone().recipient();
        acks.answer(
            PersistReply::Batched(AckTo::new(to, 7)),
            Err(LedgerError::ReadOnly),
        );
        acks.answer(PersistReply::Oneshot(tx), Ok(Durability::Spooled));
        acks.finish();
        assert_eq!(rx.await.unwrap().unwrap(), Durability::Spooled);
        let at_a = a.send(Take).await.unwrap();
        assert_eq!(
            at_a,
            vec![vec![
                (0, Ok(Durability::Committed)),
                (1, Ok(Durability::Committed)),
                (2, Ok(Durability::Committed)),
            ]]
        );
        assert_eq!(
            b.send(Take).await.unwrap(),
            vec![vec![(7, Err(LedgerError::ReadOnly))]]
        );
    }

    /// A batched reply dropped unanswered still answers its chain actor (an error), so no
    /// append waits for an answer that cannot come.
    #[actix_rt::test]
    async fn batched_reply_dropped_unanswered_answers_an_error() {
        let a = Seen::default().start();
        drop(PersistReply::Batched(AckTo::new(a.clone().recipient(), 3)));
        let seen = a.send(Take).await.unwrap();
        assert!(
            matches!(seen.as_slice(), [one] if matches!(one.as_slice(), [(3, Err(LedgerError::Internal(_)))])),
            "{:?}",
            seen.len()
        );
    }
}
