//! The witness publisher: submits each new signed checkpoint to every configured witness
//! (C2SP tlog-witness `add-checkpoint`) and stores the cosignatures they return.
//!
//! It runs on its own thread (an actix Arbiter), apart from the appends and the integrator,
//! and only reads what the integrator publishes ([`super::Progress`]): a slow, failing or dead
//! witness delays nothing but its own cosignatures. Only the lease holder publishes (the
//! process whose integrator leads); a standby's publisher waits.
//!
//! Per witness, one loop: take the latest checkpoint; send `old <size>` (what the witness
//! last cosigned, as far as this process knows; 0 at start), the consistency proof from that
//! size and the signed note. On 200, verify the returned line with the witness's key and
//! store it ([`LogStore::add_cosignature`]); on 409, learn the witness's size from the body
//! and resend from it at once (bounded: a run of conflicts backs off); anything else (other
//! statuses, a timeout, no connection, a line that does not verify) counts as a failure and
//! is retried after an exponential back-off with jitter (backon), always with the latest
//! checkpoint.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Arbiter;
use backon::BackoffBuilder as _;
use ledger_tlog::merkle::{consistency_nodes, consistency_proof};
use ledger_tlog::note::split_note;
use ledger_tlog::tile::tiles_for;
use ledger_tlog::witness::{AddCheckpoint, parse_conflict_size};
use tokio::sync::watch;
use uuid::Uuid;

use super::{LogStore, Progress, StoredCheckpoint};
use crate::config::WitnessConfig;
use crate::error::LedgerError;

/// Longest wait for one witness request (connect, send, answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer body read from a witness.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Back-off between failed attempts: from this, doubling, plus up to 100 % jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest back-off before jitter.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Conflicts (409) in a row resent at once before backing off: a witness ahead of this
/// log, or answering 409 to every size, must not be hammered.
const CONFLICTS_AT_ONCE: u32 = 3;

/// The publisher's settings.
#[derive(Debug, Clone)]
pub struct WitnessSettings {
    /// The witnesses.
    pub witnesses: Vec<WitnessConfig>,
    /// Cosignatures that make a checkpoint witnessed (for `ledger_witness_quorum_size`).
    pub quorum: usize,
}

/// The outcome of one submission.
#[derive(Debug)]
enum Outcome {
    /// The witness's cosignature line (without newline) and its timestamp.
    Cosigned(String, u64),
    /// 409: the witness's size.
    Conflict(u64),
}

fn backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Starts the publisher on its own Arbiter (recording with `metrics_partition`'s label); it
/// follows `progress` until the integrator (the sender) is gone or the Arbiter is stopped.
pub(crate) fn start(
    log: Arc<dyn LogStore>,
    settings: WitnessSettings,
    progress: watch::Receiver<Progress>,
    metrics_partition: Option<usize>,
) -> Result<Arbiter, LedgerError> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        // A witness answers add-checkpoint itself; a redirect would turn the POST into a GET.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("avl-ledger/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| LedgerError::Config(format!("witness HTTP client: {e}")))?;
    let names: Vec<String> = settings
        .witnesses
        .iter()
        .map(|w| w.key.name().to_owned())
        .collect();
    crate::metrics::in_partition(metrics_partition, || {
        crate::metrics::witnesses_configured(&names)
    });
    let sizes = Arc::new(Mutex::new(vec![0u64; settings.witnesses.len()]));
    let arbiter = crate::metrics::arbiter(metrics_partition);
    let quorum = settings.quorum;
    arbiter.spawn(async move {
        let loops = settings.witnesses.into_iter().enumerate().map(|(i, w)| {
            Publisher {
                index: i,
                witness: w,
                log: Arc::clone(&log),
                client: client.clone(),
                progress: progress.clone(),
                sizes: Arc::clone(&sizes),
                quorum,
            }
            .run()
        });
        futures::future::join_all(loops).await;
    });
    Ok(arbiter)
}

struct Publisher {
    index: usize,
    witness: WitnessConfig,
    log: Arc<dyn LogStore>,
    client: reqwest::Client,
    progress: watch::Receiver<Progress>,
    /// Every witness's cosigned size, for the quorum gauge.
    sizes: Arc<Mutex<Vec<u64>>>,
    quorum: usize,
}

impl Publisher {
    fn name(&self) -> &str {
        self.witness.key.name()
    }

    /// The checkpoint to submit now: the latest signed one, while this process leads.
    fn target(&mut self) -> Option<StoredCheckpoint> {
        let p = self.progress.borrow_and_update();
        if !p.leader {
            return None;
        }
        p.checkpoint.clone().filter(|c| c.note.is_some())
    }

    async fn run(mut self) {
        // What the witness last cosigned as this process knows it (0: unknown; a 409 says).
        let mut old = 0u64;
        // The last checkpoint whose cosignature is stored.
        let mut done: Option<Uuid> = None;
        let mut delays = backoff();
        let mut conflicts = 0u32;
        let mut caught_up_at = Instant::now();
        loop {
            let target = self.target().filter(|c| Some(c.cid) != done);
            let Some(cp) = target else {
                if done.is_some() {
                    caught_up_at = Instant::now();
                }
                crate::metrics::witness_lag(self.name(), 0, 0.0);
                if self.progress.changed().await.is_err() {
                    return;
                }
                continue;
            };
            crate::metrics::witness_lag(
                self.name(),
                cp.size.saturating_sub(old),
                caught_up_at.elapsed().as_secs_f64(),
            );
            match self.submit(old, &cp).await {
                Ok(Outcome::Cosigned(line, ts)) => match self.store(&cp, &line, ts).await {
                    Ok(()) => {
                        old = cp.size;
                        done = Some(cp.cid);
                        delays = backoff();
                        conflicts = 0;
                        caught_up_at = Instant::now();
                        self.cosigned(&cp);
                        continue;
                    }
                    Err(e) => self.failed(&format!("cosignature not stored: {e}")),
                },
                Ok(Outcome::Conflict(size)) => {
                    tracing::debug!(witness = self.name(), size, "witness answered 409");
                    old = size;
                    conflicts += 1;
                    if size <= cp.size && conflicts <= CONFLICTS_AT_ONCE {
                        continue;
                    }
                    if size > cp.size {
                        tracing::warn!(
                            witness = self.name(),
                            witness_size = size,
                            log_size = cp.size,
                            "the witness has cosigned a larger tree of this log than the latest checkpoint (a rolled-back database, or another log under this key?)"
                        );
                    }
                    self.failed("repeated 409 Conflict");
                }
                Err(e) => self.failed(&e),
            }
            // The pause is never cut short, so a dead witness costs one request per
            // back-off; the checkpoint sent next is the latest one then.
            tokio::time::sleep(delays.next().unwrap_or(BACKOFF_MAX)).await;
            conflicts = 0;
        }
    }

    fn failed(&self, why: &str) {
        tracing::warn!(
            witness = self.name(),
            error = why,
            "witness submission failed; retrying after a back-off"
        );
        crate::metrics::witness_failure(self.name());
    }

    fn cosigned(&self, cp: &StoredCheckpoint) {
        let delay = cp.created_at.map_or(0.0, |at| {
            (chrono::Utc::now() - at)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64()
        });
        let quorum_size = {
            let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = sizes.get_mut(self.index) {
                *s = (*s).max(cp.size);
            }
            let mut sorted = sizes.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            sorted
                .get(self.quorum.saturating_sub(1))
                .copied()
                .unwrap_or(0)
        };
        crate::metrics::witness_cosigned(self.name(), cp.size, delay, quorum_size);
        tracing::debug!(witness = self.name(), size = cp.size, "checkpoint cosigned");
    }

    /// Sends one `add-checkpoint` request for `cp` from `old`.
    async fn submit(&self, old: u64, cp: &StoredCheckpoint) -> Result<Outcome, String> {
        let note = cp.note.as_deref().ok_or("the checkpoint is unsigned")?;
        let old = old.min(cp.size);
        let proof = if old == 0 || old == cp.size {
            Vec::new()
        } else {
            let nodes = consistency_nodes(old, cp.size).map_err(|e| e.to_string())?;
            let tiles = self
                .log
                .read_tiles(&tiles_for(&nodes))
                .await
                .map_err(|e| format!("consistency proof: {e}"))?;
            consistency_proof(old, cp.size, &tiles)
                .map_err(|e| format!("consistency proof: {e}"))?
        };
        let body = AddCheckpoint {
            old,
            proof,
            note: note.to_owned(),
        }
        .to_body();
        let mut resp = self
            .client
            .post(self.witness.add_checkpoint_url())
            .body(body)
            .send()
            .await
            .map_err(|e| format!("request: {}", e.without_url()))?;
        let status = resp.status().as_u16();
        let mut answer = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("answer: {}", e.without_url()))?
        {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
            }
            answer.extend_from_slice(&chunk);
        }
        let answer = String::from_utf8_lossy(&answer);
        match status {
            200 => {
                let (text, _) = split_note(note).map_err(|e| e.to_string())?;
                for line in answer.lines() {
                    if let Some(ts) = self
                        .witness
                        .key
                        .verify_line(text, line)
                        .map_err(|e| format!("answer: {e}"))?
                    {
                        return Ok(Outcome::Cosigned(line.to_owned(), ts));
                    }
                }
                Err("200 without a cosignature by the configured key".into())
            }
            409 => parse_conflict_size(&answer)
                .map(Outcome::Conflict)
                .map_err(|e| format!("409: {e}")),
            other => Err(format!(
                "HTTP {other}: {}",
                answer.chars().take(200).collect::<String>().trim()
            )),
        }
    }

    async fn store(&self, cp: &StoredCheckpoint, line: &str, ts: u64) -> Result<(), LedgerError> {
        let at = i64::try_from(ts)
            .ok()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .ok_or_else(|| LedgerError::Internal(format!("cosignature timestamp {ts}")))?;
        self.log
            .add_cosignature(cp.cid, &self.witness.key.to_key_string(), line, at)
            .await
    }
}
