//! The transparency log's methods of [`Ledger`]: the latest checkpoint, receipts,
//! consistency proofs, and appends that answer with a receipt. The log itself (integrator,
//! proofs, verification) is [`crate::tlog`] and [`crate::integrator`]; this file only lets
//! the facade reach it, so that `tlog` does not depend on the facade.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_entities::NewRecord;
use ledger_tlog::note::NoteVerifier;
use ledger_tlog::receipt::Receipt;
use uuid::Uuid;

use super::Ledger;
use crate::chain::AppendAck;
use crate::config::Backend;
use crate::error::LedgerError;
use crate::integrator::{Integrator, LogStore, StoredCheckpoint};
use crate::subscribe::{SubscribeOptions, Subscription};
use crate::tlog::{ConsistencyProof, prove, prove_consistency};

impl Ledger {
    fn tlog(&self) -> Result<&Arc<Integrator>, LedgerError> {
        self.integrator().ok_or_else(|| {
            LedgerError::NotYetLogged("the transparency log is off (checkpoint_interval: 0)".into())
        })
    }

    /// The log's storage, when the integrator runs.
    pub fn log_store(&self) -> Option<&Arc<dyn LogStore>> {
        self.integrator().map(|i| i.log())
    }

    /// The ledger's records in log order from the position after `after` (from position 0
    /// when `None`), catch-up from storage and then live; see [`crate::subscribe`] for
    /// when a record becomes visible and what ends a subscription.
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        self.subscribe_with(SubscribeOptions {
            after,
            ..SubscribeOptions::default()
        })
    }

    /// [`Ledger::subscribe`] with options (an end instead of following, checkpointed
    /// positions only, one anchor, page size). Works on a ledger opened read-only too. On
    /// PostgreSQL each subscription reads over a small pool of its own, so it never takes a
    /// connection from appends or the integrator.
    pub fn subscribe_with(&self, options: SubscribeOptions) -> Subscription {
        let progress = self.integrator().map(|i| i.progress());
        let log = match self.config().backend {
            Backend::Postgres => match crate::tlog::subscription_log(self.config()) {
                Ok(log) => log,
                Err(e) => return Subscription::failed(e),
            },
            Backend::Memory => match self.integrator() {
                Some(i) => Arc::clone(i.log()),
                None => {
                    return Subscription::failed(LedgerError::NotYetLogged(
                        "the transparency log is off (checkpoint_interval: 0): records get no position"
                            .into(),
                    ));
                }
            },
        };
        crate::subscribe::subscribe(log, progress, options)
    }

    /// The latest stored checkpoint (written by whichever process integrates).
    pub async fn checkpoint(&self) -> Result<Option<StoredCheckpoint>, LedgerError> {
        self.tlog()?.log().latest_checkpoint().await
    }

    /// The verifier key of this ledger's checkpoint signer, if it has one.
    pub fn checkpoint_verifier(&self) -> Option<NoteVerifier> {
        self.integrator().and_then(|i| i.verifier().cloned())
    }

    /// The integrator's progress (leader or standby, log size, last checkpoint, lag).
    pub fn integrator_progress(&self) -> Option<crate::integrator::Progress> {
        self.integrator().map(|i| i.progress().borrow().clone())
    }

    /// The delay from a record's `ts` to the checkpoint covering it, over every record this
    /// process's integrator has covered (p50, p99, max); `None` with the integrator off or
    /// before its first checkpoint.
    pub fn coverage_lag(&self) -> Option<crate::integrator::CoverageLag> {
        self.integrator().and_then(|i| i.coverage_lag())
    }

    /// A receipt for `rid` under the latest checkpoint: the record, its leaf index, the
    /// inclusion path and the signed note. [`LedgerError::NotYetLogged`] when no
    /// checkpoint covers it yet; [`LedgerError::Log`] when stored hashes are missing.
    pub async fn prove(&self, rid: Uuid) -> Result<Receipt, LedgerError> {
        prove(self.store().as_ref(), self.tlog()?.log().as_ref(), rid).await
    }

    /// The consistency proof from `old_size` to `new_size` (default: the latest
    /// checkpoint's size), with both roots computed from the stored tiles.
    pub async fn prove_consistency(
        &self,
        old_size: u64,
        new_size: Option<u64>,
    ) -> Result<ConsistencyProof, LedgerError> {
        prove_consistency(self.tlog()?.log().as_ref(), old_size, new_size).await
    }

    /// Appends and answers only once a checkpoint covers the record, with its receipt (as
    /// Rekor v2 does). Waits at most `wait` for the checkpoint
    /// ([`LedgerError::NotYetLogged`] after that: the record is appended, ask
    /// [`Ledger::prove`] later).
    pub async fn append_with_receipt(
        &self,
        record: NewRecord,
        wait: Duration,
    ) -> Result<(AppendAck, Receipt), LedgerError> {
        let ack = self.append(record).await?;
        let rid = ack.record.rid;
        let deadline = Instant::now() + wait;
        let mut progress = self.tlog()?.progress();
        loop {
            match self.prove(rid).await {
                Ok(receipt) => return Ok((ack, receipt)),
                Err(LedgerError::NotYetLogged(reason)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(LedgerError::NotYetLogged(format!(
                            "{reason} after waiting {wait:?}; the record is appended"
                        )));
                    }
                    // Woken by this process's integrator, or polled when another process
                    // integrates.
                    let _ = tokio::time::timeout(
                        left.min(Duration::from_millis(100)),
                        progress.changed(),
                    )
                    .await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until a checkpoint covers at least `size` leaves (or `wait` passes) and returns
    /// the latest checkpoint then.
    pub async fn await_checkpoint(
        &self,
        size: u64,
        wait: Duration,
    ) -> Result<Option<StoredCheckpoint>, LedgerError> {
        let deadline = Instant::now() + wait;
        let mut progress = self.tlog()?.progress();
        loop {
            let latest = self.checkpoint().await?;
            if latest.as_ref().is_some_and(|c| c.size >= size) {
                return Ok(latest);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(latest);
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), progress.changed())
                .await;
        }
    }
}
