//! A chain actor driven directly, without a `Ledger`: what it answers when its store fails.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use async_trait::async_trait;
use futures::future::BoxFuture;
use ledger_entities::validate::Limits;
use ledger_entities::{LedgerRecord, NewRecord, RecordHash};
use serde_json::json;
use uuid::Uuid;

use super::{Append, ChainActor, ChainSettings};
use crate::config::Backend;
use crate::driver::{Driver, Outcome};
use crate::error::LedgerError;
use crate::observe::ChainMailboxes;
use crate::store::{Durability, Head, LedgerStore, MemoryLedgerStore, RecordRange};

/// A store whose every read fails with a data error (not an outage).
struct BrokenStore;

fn broken() -> LedgerError {
    LedgerError::Internal("the store is broken".into())
}

#[async_trait]
impl LedgerStore for BrokenStore {
    fn backend(&self) -> Backend {
        Backend::Memory
    }
    async fn insert(&self, _records: &[Arc<LedgerRecord>]) -> Result<(), LedgerError> {
        Err(broken())
    }
    async fn get(&self, _rid: Uuid) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        Err(broken())
    }
    async fn get_by_hash(
        &self,
        _hash: RecordHash,
    ) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        Err(broken())
    }
    async fn records(
        &self,
        _anchor_id: Uuid,
        _range: &RecordRange,
    ) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        Err(broken())
    }
    async fn head(&self, _anchor_id: Uuid) -> Result<Option<Head>, LedgerError> {
        Err(broken())
    }
    async fn anchors(&self, _after: Option<Uuid>, _limit: usize) -> Result<Vec<Uuid>, LedgerError> {
        Err(broken())
    }
    async fn count(&self) -> Result<u64, LedgerError> {
        Err(broken())
    }
    async fn count_anchor(&self, _anchor_id: Uuid) -> Result<u64, LedgerError> {
        Err(broken())
    }
}

/// Reads from the broken store, writes into a memory store (so the test can see that
/// nothing was written).
struct BrokenReads {
    reads: Arc<dyn LedgerStore>,
    written: Arc<MemoryLedgerStore>,
    never: Arc<crate::driver::OutageFlag>,
}

impl Driver for BrokenReads {
    fn backend(&self) -> Backend {
        Backend::Memory
    }
    fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.reads
    }
    fn write_now(&self, records: &[Arc<LedgerRecord>]) -> Option<Outcome> {
        Some(
            self.written
                .insert_now(records)
                .map(|()| Durability::Volatile),
        )
    }
    fn flush(&self) -> BoxFuture<'static, Result<(), LedgerError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn suspend_passivation(&self) -> Arc<crate::driver::OutageFlag> {
        Arc::clone(&self.never)
    }
}

/// An actor whose first head load fails answers the append with the store's typed error
/// (not "outcome unknown"), writes nothing, and retires so that a fresh actor can retry.
#[actix_rt::test]
async fn failed_head_load_answers_its_typed_error_and_retires() {
    let written = Arc::new(MemoryLedgerStore::new());
    let driver = BrokenReads {
        reads: Arc::new(BrokenStore),
        written: Arc::clone(&written),
        never: Arc::default(),
    };
    let settings = ChainSettings {
        suspend_passivation: driver.suspend_passivation(),
        driver: Arc::new(driver),
        limits: Limits::default(),
        mailbox_capacity: 16,
        passivate_after: Duration::from_secs(60),
        max_live_actors: 0,
        mailboxes: Arc::new(ChainMailboxes::new()),
        relink_for: Duration::from_secs(1),
        max_batch_records: 1000,
        max_batch_bytes: 1 << 20,
    };
    let anchor = Uuid::new_v4();
    let actor = ChainActor::new(anchor, Arc::new(settings), None).start();
    let record = NewRecord::new(anchor, "slot", "kind", json!({"n": 1}), "test");
    let answer = actor.send(Append::new(record)).await.expect("answered");
    match answer {
        Err(LedgerError::Internal(reason)) => assert_eq!(reason, "the store is broken"),
        other => panic!("expected the store's error, got {other:?}"),
    }
    assert_eq!(
        written.count().await.expect("memory count"),
        0,
        "nothing may be written"
    );
    // Retired: the actor stops, so a later append must go to a fresh actor.
    for _ in 0..100 {
        if !actor.connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!actor.connected(), "the failed actor did not retire");
}
