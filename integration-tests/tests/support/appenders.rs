//! Appends under way while a test breaks something: `n` tasks, each on an anchor of its
//! own, appending one record every 5 ms until stopped, every acknowledgement recorded with
//! its durability and the moment its append was called; and the wait for the drain after.

#![allow(dead_code, reason = "each test binary uses a different part of it")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger_actors::writer::Mode;
use ledger_actors::{Durability, Ledger};
use ledger_entities::NewRecord;
use serde_json::json;
use uuid::Uuid;

/// rid → (durability acknowledged, when the append was called).
pub type Acks = BTreeMap<Uuid, (Durability, Instant)>;

/// Running appenders.
pub struct Appenders {
    acks: Arc<Mutex<Acks>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<actix_rt::task::JoinHandle<Vec<String>>>,
}

impl Appenders {
    /// Starts `n` appenders on `ledger` (records produced by `producer`).
    pub fn start(ledger: &Ledger, n: u64, producer: &'static str) -> Self {
        let acks: Arc<Mutex<Acks>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|a| {
                let (ledger, acks, stop) = (ledger.clone(), Arc::clone(&acks), Arc::clone(&stop));
                actix_rt::spawn(async move {
                    let anchor = Uuid::now_v7();
                    let mut failed = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let record = NewRecord::new(
                            anchor,
                            "slot",
                            "event",
                            json!({ "i": a * 1_000_000 + i }),
                            producer,
                        );
                        let called = Instant::now();
                        match ledger.append(record).await {
                            Ok(ack) => {
                                acks.lock()
                                    .unwrap()
                                    .insert(ack.record.rid, (ack.durability, called));
                            }
                            Err(e) => failed.push(e.to_string()),
                        }
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    failed
                })
            })
            .collect();
        Self { acks, stop, tasks }
    }

    /// A copy of the acknowledgements so far.
    pub fn acks(&self) -> Acks {
        self.acks.lock().unwrap().clone()
    }

    /// Stops the appenders; returns every failed append's error and the acknowledgements.
    pub async fn stop(self) -> (Vec<String>, Acks) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failed = Vec::new();
        for t in self.tasks {
            failed.extend(t.await.unwrap());
        }
        let acks = self.acks.lock().unwrap().clone();
        (failed, acks)
    }
}

/// Waits (up to 90 s) until the ledger's writer is back on PostgreSQL with nothing buffered.
pub async fn wait_primary_and_drained(ledger: &Ledger, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = ledger.outage_status().await.unwrap();
        if status.mode == Mode::Primary && status.buffered == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the drain did not finish: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
