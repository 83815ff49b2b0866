//! A chain actor driven directly, without a `Ledger`: what it answers when its store fails.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use actix::Actor;
use async_trait::async_trait;
use ledger_actors::LedgerError;
use ledger_actors::chain::{Append, ChainActor, ChainSettings, Sink};
use ledger_actors::config::Backend;
use ledger_actors::observe::ChainMailboxes;
use ledger_actors::store::{Head, LedgerStore, MemoryLedgerStore, RecordRange};
use ledger_entities::validate::Limits;
use ledger_entities::{LedgerRecord, NewRecord, RecordHash};
use serde_json::json;
use uuid::Uuid;

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

/// An actor whose first head load fails answers the append with the store's typed error
/// (not "outcome unknown"), writes nothing, and retires so that a fresh actor can retry.
#[actix_rt::test]
async fn failed_head_load_answers_its_typed_error_and_retires() {
    let written = Arc::new(MemoryLedgerStore::new());
    let settings = ChainSettings {
        store: Arc::new(BrokenStore),
        persist: Sink::Memory(Arc::clone(&written)),
        limits: Limits::default(),
        mailbox_capacity: 16,
        passivate_after: Duration::from_secs(60),
        max_live_actors: 0,
        suspend_passivation: Arc::new(AtomicBool::new(false)),
        mailboxes: Arc::new(ChainMailboxes::new()),
        persistence_queue: None,
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
