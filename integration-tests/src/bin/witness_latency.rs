//! `avl-witness-latency`: measures commit → cosigned checkpoint with one local witness.
//!
//! ```text
//! LEDGER_BACKEND=postgres LEDGER_DSN=postgres://.../fresh_db LEDGER_CHECKPOINT_KEY=checkpoint.key \
//!     avl-witness-latency RECORDS RATE_PER_S
//! ```
//!
//! Starts the test witness in-process (trusting the key's verifier), a ledger configured from
//! the environment plus that witness, and appends RECORDS records to one anchor at RATE_PER_S
//! (one at a time, so leaf i is the i-th append on a fresh database). A poller reads the
//! latest checkpoint every 5 ms; a record counts as cosigned at the first poll that sees a
//! checkpoint covering it with a valid cosignature. Prints JSON: records, p50/p99/max of
//! ack → cosigned in milliseconds (includes up to 5 ms of polling), and the same for ack →
//! checkpoint (the covering checkpoint stored, cosigned or not).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ledger_actors::config::WitnessConfig;
use ledger_actors::tlog::open_log;
use ledger_actors::{Ledger, LedgerConfig};
use ledger_entities::NewRecord;
use ledger_tlog::cosig::CosignatureSigner;
use ledger_tlog::witness::Witness;

fn quantiles(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| {
        v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    serde_json::json!({ "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0) })
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().context("RECORDS")?.parse()?;
    let rate: f64 = args.next().context("RATE_PER_S")?.parse()?;
    let mut config = LedgerConfig::load(None)?;
    let key = config
        .checkpoint_key
        .clone()
        .context("LEDGER_CHECKPOINT_KEY")?;
    let log_key = ledger_actors::integrator::load_signer(&key)?.verifier();
    let signer =
        CosignatureSigner::from_seed("witness.example/bench", &rand::random::<[u8; 32]>())?;
    let w_key = signer.verifier();
    let running = integration_tests::witness::spawn(
        Witness::new(signer, vec![log_key]),
        "127.0.0.1:0".parse()?,
    )?;
    config.witnesses = vec![WitnessConfig::parse(
        &running.url(),
        &w_key.to_key_string(),
    )?];
    actix::System::new().block_on(async move {
        let ledger = Ledger::start(config.clone()).await?;
        let log = open_log(&config)?;
        let acks: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(records)));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = {
            let acks = Arc::clone(&acks);
            let done = Arc::clone(&done);
            actix::spawn(async move {
                let (mut cosigned, mut checkpointed) = (Vec::new(), Vec::new());
                let (mut cs, mut ck) = (0usize, 0usize);
                while cs < records {
                    if let Ok(Some(c)) = log.latest_checkpoint().await {
                        let now = Instant::now();
                        let size = usize::try_from(c.size).unwrap_or(usize::MAX).min(records);
                        let acked = acks.lock().map(|a| a.clone()).unwrap_or_default();
                        let size = size.min(acked.len());
                        while ck < size {
                            checkpointed.push((now - acked[ck]).as_secs_f64() * 1000.0);
                            ck += 1;
                        }
                        let ok = c
                            .note
                            .as_deref()
                            .is_some_and(|n| w_key.verify_note(n).ok().flatten().is_some());
                        if ok {
                            while cs < size {
                                cosigned.push((now - acked[cs]).as_secs_f64() * 1000.0);
                                cs += 1;
                            }
                        }
                    }
                    if done.load(std::sync::atomic::Ordering::Acquire) && cs >= records {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (cosigned, checkpointed)
            })
        };
        let anchor = uuid::Uuid::now_v7();
        let start = Instant::now();
        for i in 0..records {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            ledger
                .append(NewRecord::new(
                    anchor,
                    "slot",
                    "event",
                    serde_json::json!({ "i": i }),
                    "bench",
                ))
                .await?;
            if let Ok(mut a) = acks.lock() {
                a.push(Instant::now());
            }
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        let (cosigned, checkpointed) = poller.await?;
        ledger.shutdown().await?;
        println!(
            "{}",
            serde_json::json!({
                "records": records,
                "rate_per_s": rate,
                "checkpoint_interval_ms": config.checkpoint_interval.as_millis() as u64,
                "ack_to_cosigned": quantiles(cosigned),
                "ack_to_checkpoint": quantiles(checkpointed),
            })
        );
        drop(running);
        Ok::<_, anyhow::Error>(())
    })
}
