//! [`MemoryPersistence`]: the persistence actor of the `memory` backend.

use std::sync::Arc;

use actix::{Actor, Context, Handler};

use super::{Durability, Flush, Persist};
use crate::error::LedgerError;
use crate::store::MemoryLedgerStore;

/// Stores each record in a [`MemoryLedgerStore`] as it arrives and acknowledges it as
/// [`Durability::Volatile`] (or the durability given at construction, for the fallback).
pub struct MemoryPersistence {
    store: Arc<MemoryLedgerStore>,
    durability: Durability,
}

impl MemoryPersistence {
    /// A persistence actor writing to `store`, acknowledging with `durability`.
    pub fn new(store: Arc<MemoryLedgerStore>, durability: Durability) -> Self {
        Self { store, durability }
    }
}

impl Actor for MemoryPersistence {
    type Context = Context<Self>;
}

/// Inserts the record (fork guard and uniqueness checked by the store) and answers at once.
impl Handler<Persist> for MemoryPersistence {
    type Result = ();

    fn handle(&mut self, msg: Persist, _ctx: &mut Context<Self>) {
        let outcome = self
            .store
            .insert_now(std::slice::from_ref(&msg.record))
            .map(|()| self.durability);
        // The appender may have given up (timeout); its outcome is then simply not read.
        let _ = msg.reply.send(outcome);
    }
}

/// Nothing is pending between messages, so a flush is immediate.
impl Handler<Flush> for MemoryPersistence {
    type Result = Result<(), LedgerError>;

    fn handle(&mut self, _msg: Flush, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}
