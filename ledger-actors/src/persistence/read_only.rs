//! [`ReadOnlyPersistence`]: the persistence actor of a ledger opened with
//! [`crate::Ledger::open_read_only`]. It stores nothing: every record is refused with
//! [`LedgerError::ReadOnly`].

use actix::{Actor, Context, Handler};

use super::{Flush, Persist};
use crate::error::LedgerError;

/// Refuses every [`Persist`] with [`LedgerError::ReadOnly`]; [`Flush`] answers at once.
#[derive(Debug, Default)]
pub struct ReadOnlyPersistence;

impl Actor for ReadOnlyPersistence {
    type Context = Context<Self>;
}

/// Refuses the record.
impl Handler<Persist> for ReadOnlyPersistence {
    type Result = ();

    fn handle(&mut self, msg: Persist, _ctx: &mut Context<Self>) {
        // The appender may have given up; then nobody reads the refusal.
        let _ = msg.reply.send(Err(LedgerError::ReadOnly));
    }
}

/// Nothing is ever pending.
impl Handler<Flush> for ReadOnlyPersistence {
    type Result = Result<(), LedgerError>;

    fn handle(&mut self, _msg: Flush, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}
