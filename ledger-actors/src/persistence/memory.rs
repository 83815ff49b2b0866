//! [`MemoryPersistence`]: the persistence actor of the `memory` backend.

use std::sync::Arc;

use actix::{Actor, Context, Handler};

use super::{Durability, Flush, Persist};
use crate::error::LedgerError;
use crate::observe::QueueDepth;
use crate::store::MemoryLedgerStore;

/// Stores each record in a [`MemoryLedgerStore`] as it arrives and acknowledges it as
/// [`Durability::Volatile`] (or the durability given at construction, for the fallback).
pub struct MemoryPersistence {
    store: Arc<MemoryLedgerStore>,
    durability: Durability,
    /// Its mailbox depth: pushed by the senders, popped here as each [`Persist`] is taken.
    queue: Option<QueueDepth>,
}

impl MemoryPersistence {
    /// A persistence actor writing to `store`, acknowledging with `durability`.
    pub fn new(store: Arc<MemoryLedgerStore>, durability: Durability) -> Self {
        Self {
            store,
            durability,
            queue: None,
        }
    }

    /// The same actor, popping `queue` for every [`Persist`] it takes; its senders push it
    /// (see [`crate::chain::ChainSettings::persistence_queue`]).
    pub fn with_queue(mut self, queue: QueueDepth) -> Self {
        self.queue = Some(queue);
        self
    }
}

impl Actor for MemoryPersistence {
    type Context = Context<Self>;
}

/// Inserts the record (fork guard and uniqueness checked by the store) and answers at once.
impl Handler<Persist> for MemoryPersistence {
    type Result = ();

    fn handle(&mut self, msg: Persist, _ctx: &mut Context<Self>) {
        if let Some(queue) = &self.queue {
            queue.pop();
        }
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
