//! The integrator (sequencer) of the transparency log: it gives every committed record a
//! leaf index, extends the Merkle tree's stored tiles, and writes signed checkpoints. It
//! runs on its own thread (an actix Arbiter), off the append path: appends never wait for it.
//!
//! Each round: hold (or take) the lease, read the records committed since the watermark
//! ([`LogStore::pending`]), append their leaf hashes to the tree's right edge
//! ([`ledger_tlog::tile::Edge`]), and write leaf indexes, changed tiles, the new watermark
//! and, when the log grew and `checkpoint_interval` has passed, a checkpoint — all in one
//! step that the store refuses unless the lease is still held. Any error steps the
//! integrator down; it reloads from the store and continues (so it catches up after an
//! outage). At shutdown it integrates what is left, writes a last checkpoint and releases the
//! lease. Rounds follow a timer, and an acknowledged append of this process
//! ([`Settings::wake`]) starts the leader's next one at once, so positions (what
//! subscriptions deliver) are assigned promptly after commit while checkpoints keep their
//! own interval.
//!
//! # Layout
//! - `log.rs`: the [`LogStore`] trait and the types it exchanges.
//! - `memory.rs`: [`memory::MemoryLog`] (memory backend).
//! - `postgres.rs`: [`postgres::PostgresLog`] (PostgreSQL: lease row, `xid8` order).
//! - `signed.rs`: [`signed::SignedStateFile`], what the key signed, kept beside the key: a
//!   log that does not extend it is a rollback, and nothing is signed over it.
//! - `witness.rs`: the witness publisher (C2SP tlog-witness), on its own thread beside the
//!   integrator: submits each new checkpoint, stores the cosignatures.
//! - this file: [`Integrator`] (the handle), [`Progress`], the loop, signing-key loading.

pub mod log;
pub mod memory;
pub mod postgres;
pub mod signed;
pub mod witness;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Arbiter;
use ledger_tlog::merkle::leaf_hash;
use ledger_tlog::note::{Checkpoint, NoteSigner, NoteVerifier};
use ledger_tlog::tile::Edge;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

pub use log::{LOG_CHANNEL, LogListener, LogStore, PendingRecord, StoredCheckpoint, Watermark};

use crate::error::LedgerError;

/// The origin line of checkpoints written without a signing key.
pub const UNSIGNED_ORIGIN: &str = "avl-ledger/unsigned";
/// Most records integrated per step.
pub const BATCH: usize = 20_000;
/// Least time between two counts of the backlog (for the metrics). The count walks the
/// backlog's index entries and heap tuples: under W1 a count every second cost PostgreSQL
/// ~1 s of CPU per 9 s run (`pg_stat_statements`), a tenth of the inserts' own time.
const BACKLOG_SAMPLE: Duration = Duration::from_secs(5);
/// The backlog is counted up to this many records (a bounded count when far behind, as
/// after an outage; `ledger_integration_lag_seconds` keeps the age exact).
const BACKLOG_CAP: u64 = 100_000;
/// Shortest pause between rounds when no full batch is waiting.
pub const IDLE: Duration = Duration::from_millis(50);
/// Longest pause between rounds when no full batch is waiting (see `Runner::pause`).
pub const ROUND_MAX: Duration = Duration::from_millis(250);
/// Least time from the start of one round to the start of a round woken by an append
/// ([`Settings::wake`]): under load the appends of these milliseconds share one round
/// (one transaction), and a record still waits at most about this plus a round for its
/// leaf index.
pub const WAKE_GAP: Duration = Duration::from_millis(5);

/// Resolves when `wake` is poked; never without one.
async fn woken(wake: Option<&tokio::sync::Notify>) {
    match wake {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// The integrator's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Least time between two checkpoints (when the log grew).
    pub checkpoint_interval: Duration,
    /// Lease length; a standby takes over at most about `lease + lease / 3` after the holder
    /// stops renewing.
    pub lease: Duration,
    /// Where the key's signed state is kept (a signed log that outlives the process: the
    /// PostgreSQL log with a key). `None`: no rollback check.
    pub signed_state: Option<signed::SignedStateFile>,
    /// Poked when this process's appends are acknowledged: the leader then runs its next
    /// round at once (at most every [`WAKE_GAP`]) instead of at the end of its pause, so a
    /// record gets its leaf index promptly after commit. `None`: rounds on the timer only.
    pub wake: Option<Arc<tokio::sync::Notify>>,
    /// Witnesses to submit signed checkpoints to (`None`: none configured).
    pub witnesses: Option<witness::WitnessSettings>,
    /// The partition whose label the integrator's and publisher's metrics carry (see
    /// `crate::metrics::arbiter`; `None`: no label).
    pub metrics_partition: Option<usize>,
}

/// What the integrator has done, observable through [`Integrator::progress`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// True while this process holds the lease.
    pub leader: bool,
    /// Leaves in the log as this integrator last wrote or loaded it.
    pub size: u64,
    /// The latest checkpoint it wrote or loaded.
    pub checkpoint: Option<StoredCheckpoint>,
    /// The largest delay, in this process's last checkpoint, from a record's `ts` to the
    /// checkpoint covering it.
    pub last_lag: Option<Duration>,
    /// Checkpoints this process wrote.
    pub checkpoints_written: u64,
    /// Set while the integrator refuses to go on because the stored log does not extend what
    /// the key signed ([`LedgerError::LogRollback`]): why.
    pub halted: Option<String>,
}

/// Distribution of the delay from a record's `ts` to the first checkpoint covering it, over
/// every record this process's integrator covered (millisecond resolution).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoverageLag {
    /// Records covered.
    pub records: u64,
    /// Median, 99th percentile and largest delay, in milliseconds.
    pub p50_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// Largest.
    pub max_ms: u64,
}

/// Longest delay the coverage histogram tells apart (one hour, in milliseconds); longer
/// ones count as this.
const LAG_HISTOGRAM_MAX_MS: u64 = 3_600_000;

fn lag_histogram() -> hdrhistogram::Histogram<u64> {
    // Bounds 1..=1 h with 2 significant digits are valid constants, so this cannot fail.
    hdrhistogram::Histogram::new_with_bounds(1, LAG_HISTOGRAM_MAX_MS, 2)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds"))
}

/// The running integrator.
pub struct Integrator {
    log: Arc<dyn LogStore>,
    verifier: Option<NoteVerifier>,
    progress: watch::Receiver<Progress>,
    coverage: Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    stop: std::sync::Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
    arbiter: std::sync::Mutex<Option<Arbiter>>,
    /// The witness publisher's thread, if witnesses are configured.
    publisher: std::sync::Mutex<Option<Arbiter>>,
}

impl std::fmt::Debug for Integrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integrator")
            .field("verifier", &self.verifier)
            .field("progress", &*self.progress.borrow())
            .finish_non_exhaustive()
    }
}

/// Reads the signer key file at `path`. Refused when the file is readable by group or
/// others (Unix), unreadable or malformed; no error contains the key.
pub fn load_signer(path: &Path) -> Result<NoteSigner, LedgerError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| LedgerError::Config(format!("checkpoint_key {}: {e}", path.display())))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(LedgerError::Config(format!(
                "checkpoint_key {}: readable by group or others (mode {:o}); chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            )));
        }
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| LedgerError::Config(format!("checkpoint_key {}: {e}", path.display())))?,
    );
    NoteSigner::parse(&text)
        .map_err(|e| LedgerError::Config(format!("checkpoint_key {}: {e}", path.display())))
}

impl Integrator {
    /// Starts the integrator loop on its own Arbiter.
    pub fn start(
        log: Arc<dyn LogStore>,
        signer: Option<NoteSigner>,
        mut settings: Settings,
    ) -> Result<Self, LedgerError> {
        let (tx, rx) = watch::channel(Progress::default());
        let publisher = match settings.witnesses.take() {
            Some(w) if !w.witnesses.is_empty() => {
                if signer.is_none() {
                    return Err(LedgerError::Config(
                        "witnesses: configured, but there is no checkpoint_key: witnesses cosign only signed checkpoints".into(),
                    ));
                }
                Some(witness::start(
                    Arc::clone(&log),
                    w,
                    rx.clone(),
                    settings.metrics_partition,
                )?)
            }
            _ => None,
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let verifier = signer.as_ref().map(NoteSigner::verifier);
        let arbiter = crate::metrics::arbiter(settings.metrics_partition);
        let coverage = Arc::new(std::sync::Mutex::new(lag_histogram()));
        let runner = Runner {
            log: Arc::clone(&log),
            signer,
            settings,
            holder: Uuid::new_v4(),
            progress: tx,
            coverage: Arc::clone(&coverage),
            checkpoints_written: 0,
            state: None,
            signed: signed::State::default(),
        };
        arbiter.spawn(runner.run(stop_rx));
        Ok(Self {
            log,
            verifier,
            progress: rx,
            coverage,
            stop: std::sync::Mutex::new(Some(stop_tx)),
            arbiter: std::sync::Mutex::new(Some(arbiter)),
            publisher: std::sync::Mutex::new(publisher),
        })
    }

    /// The log's storage (for proofs and verification).
    pub fn log(&self) -> &Arc<dyn LogStore> {
        &self.log
    }

    /// The verifier key of this ledger's signing key, if it has one.
    pub fn verifier(&self) -> Option<&NoteVerifier> {
        self.verifier.as_ref()
    }

    /// A receiver of the integrator's progress.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// The delay from a record's `ts` to the checkpoint covering it, over every record this
    /// process's integrator has covered so far (`None` before the first).
    pub fn coverage_lag(&self) -> Option<CoverageLag> {
        let h = self.coverage.lock().unwrap_or_else(|p| p.into_inner());
        (!h.is_empty()).then(|| CoverageLag {
            records: h.len(),
            p50_ms: h.value_at_quantile(0.50),
            p99_ms: h.value_at_quantile(0.99),
            max_ms: h.max(),
        })
    }

    /// Integrates what is committed, writes a last checkpoint, releases the lease and stops
    /// the thread. Waits at most `wait`.
    pub async fn shutdown(&self, wait: Duration) {
        let stop = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(stop) = stop {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = tokio::time::timeout(wait, done_rx).await;
            }
        }
        if let Some(a) = self
            .arbiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            a.stop();
        }
        if let Some(p) = self
            .publisher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            p.stop();
        }
    }
}

/// The leader's in-memory state.
struct Leading {
    size: u64,
    watermark: Watermark,
    edge: Edge,
    last_checkpoint: Option<StoredCheckpoint>,
    last_checkpoint_at: Option<Instant>,
    /// `ts` (Unix milliseconds) of the records integrated but not yet covered by a
    /// checkpoint, run-length encoded (consecutive records of the same millisecond share an
    /// entry), so a long checkpoint interval under load stays small.
    uncovered: Vec<(i64, u64)>,
    last_renew: Instant,
    /// When the backlog was last counted for the metrics.
    last_backlog: Option<Instant>,
}

struct Runner {
    log: Arc<dyn LogStore>,
    signer: Option<NoteSigner>,
    settings: Settings,
    holder: Uuid,
    progress: watch::Sender<Progress>,
    coverage: Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    checkpoints_written: u64,
    state: Option<Leading>,
    /// The key's signed state as last loaded or stored (see [`signed`]).
    signed: signed::State,
}

impl Runner {
    async fn run(mut self, mut stop: oneshot::Receiver<oneshot::Sender<()>>) {
        let mut backoff = IDLE;
        loop {
            let started = Instant::now();
            let outcome = self.round(false).await;
            // Only a leader that just finished a clean round is woken early; a standby
            // keeps to its lease timer and a failing one to its back-off.
            let wake = match outcome {
                Ok(false) if self.state.is_some() => self.settings.wake.clone(),
                _ => None,
            };
            let pause = match outcome {
                Ok(true) => Duration::ZERO,
                Ok(false) => {
                    backoff = IDLE;
                    if self.state.is_some() {
                        self.pause()
                    } else {
                        self.settings.lease / 3
                    }
                }
                Err(e @ LedgerError::LogRollback { .. }) => {
                    self.state = None;
                    tracing::error!(error = %e, "integrator halted: the database's log does not extend what this key signed");
                    self.progress.send_modify(|p| {
                        p.leader = false;
                        p.halted = Some(e.to_string());
                    });
                    crate::metrics::log_halted(true);
                    // Checked again at the next load: a restored log lets it go on.
                    Duration::from_secs(2)
                }
                Err(e) => {
                    if self.state.take().is_some() {
                        tracing::warn!(error = %e, "integrator stepped down; it reloads and retries");
                    } else {
                        tracing::debug!(error = %e, "integrator round failed");
                    }
                    self.publish(None);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    backoff
                }
            };
            tokio::select! {
                done = &mut stop => {
                    self.finish().await;
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                _ = tokio::time::sleep(pause) => {}
                _ = woken(wake.as_deref()) => {
                    let gap = WAKE_GAP.saturating_sub(started.elapsed());
                    if !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                }
            }
        }
    }

    /// Pause of the leader between rounds that found no full batch: a quarter of the
    /// checkpoint interval, between [`IDLE`] and [`ROUND_MAX`]. Fewer, larger rounds cost the
    /// database less per record (one transaction, one index descent per batch); a record still
    /// reaches the log well before the next checkpoint is due.
    fn pause(&self) -> Duration {
        (self.settings.checkpoint_interval / 4).clamp(IDLE, ROUND_MAX)
    }

    /// Last rounds at shutdown: everything committed, then a checkpoint, then the lease.
    async fn finish(&mut self) {
        let mut failures = 0;
        for _ in 0..1000 {
            match self.round(true).await {
                Ok(true) => continue,
                // Done, or not leading: the leader integrates what this process wrote.
                Ok(false) => break,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, attempt = failures, "integrator: final round failed");
                    if failures >= 5 {
                        break;
                    }
                    // A lease lost to a stall is taken back if no one else holds it.
                    self.state = None;
                    tokio::time::sleep(IDLE * 5).await;
                }
            }
        }
        if self.state.take().is_some()
            && let Err(e) = self.log.release(self.holder).await
        {
            tracing::warn!(error = %e, "integrator: lease not released (it expires)");
        }
        self.publish(None);
    }

    /// At every (re)load: the stored log of `size` leaves must extend the last checkpoint
    /// the key signed, and a checkpoint that was being signed must either be absent (never
    /// stored) or match. [`LedgerError::LogRollback`] otherwise.
    async fn check_signed(&mut self, size: u64) -> Result<(), LedgerError> {
        let Some(file) = &self.settings.signed_state else {
            return Ok(());
        };
        let mut state = file.load()?;
        if let Some(last) = &state.signed {
            extends(self.log.as_ref(), last, size).await?;
        }
        if let Some(intent) = state.intent.take() {
            if size >= intent.size {
                extends(self.log.as_ref(), &intent, size).await?;
                if state.signed.as_ref().is_none_or(|s| s.size <= intent.size) {
                    state.signed = Some(intent);
                }
            } else {
                tracing::warn!(
                    size = intent.size,
                    "the checkpoint being signed when the integrator last stopped was never stored; it is dropped"
                );
            }
            file.store(&state)?;
        }
        self.progress.send_modify(|p| p.halted = None);
        crate::metrics::log_halted(false);
        self.signed = state;
        Ok(())
    }

    fn publish(&self, lag: Option<Duration>) {
        let p = match &self.state {
            Some(s) => Progress {
                leader: true,
                size: s.size,
                checkpoint: s.last_checkpoint.clone(),
                last_lag: lag.or_else(|| self.progress.borrow().last_lag),
                checkpoints_written: self.checkpoints_written,
                halted: None,
            },
            None => Progress {
                leader: false,
                ..self.progress.borrow().clone()
            },
        };
        crate::metrics::integrator_state(p.leader, p.size);
        if !p.leader {
            crate::metrics::integration_lag(0, 0.0);
        }
        self.progress.send_replace(p);
    }

    /// Counts the backlog for the metrics, at most every [`BACKLOG_SAMPLE`].
    async fn sample_backlog(&mut self) -> Result<(), LedgerError> {
        let Some(state) = self.state.as_mut() else {
            return Ok(());
        };
        if state
            .last_backlog
            .is_some_and(|at| at.elapsed() < BACKLOG_SAMPLE)
        {
            return Ok(());
        }
        state.last_backlog = Some(Instant::now());
        // Only the metrics depend on it: a failure leaves them as they were (a database
        // outage shows in the next round anyway).
        let (records, oldest) = match self.log.backlog(state.watermark, BACKLOG_CAP).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "integrator: backlog not counted");
                return Ok(());
            }
        };
        let age = oldest.map_or(0.0, |ts| {
            (chrono::Utc::now() - ts)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64()
        });
        crate::metrics::integration_lag(records, age);
        Ok(())
    }

    /// One round; `Ok(true)` when more work is waiting. `final_round` forces a checkpoint
    /// when the log grew.
    async fn round(&mut self, final_round: bool) -> Result<bool, LedgerError> {
        if self.state.is_none() {
            if !self.log.acquire(self.holder, self.settings.lease).await? {
                return Ok(false);
            }
            let loaded = self.log.load().await?;
            let edge = Edge::load(loaded.size, &loaded.edge_tiles)?;
            if let Some(c) = &loaded.checkpoint
                && c.size == loaded.size
                && c.root != edge.root()
            {
                return Err(LedgerError::Log(ledger_tlog::Error::Invalid(format!(
                    "stored tiles give another root than checkpoint {} at size {}",
                    c.cid, c.size
                ))));
            }
            self.check_signed(loaded.size).await?;
            tracing::info!(size = loaded.size, "integrator holds the lease");
            self.state = Some(Leading {
                size: loaded.size,
                watermark: loaded.watermark,
                edge,
                last_checkpoint: loaded.checkpoint,
                last_checkpoint_at: None,
                uncovered: Vec::new(),
                last_renew: Instant::now(),
                last_backlog: None,
            });
            self.publish(None);
        }
        let lease = self.settings.lease;
        let Some(state) = self.state.as_mut() else {
            return Ok(false);
        };
        if state.last_renew.elapsed() >= lease / 3 {
            if !self.log.acquire(self.holder, lease).await? {
                return Err(LedgerError::Internal("integrator lease lost".into()));
            }
            state.last_renew = Instant::now();
        }
        let pending = self.log.pending(state.watermark, BATCH).await?;
        let mut leaves = Vec::with_capacity(pending.records.len());
        for r in &pending.records {
            leaves.push(leaf_hash(&r.hash.0));
        }
        let mut edge = state.edge.clone();
        let tiles = edge.append(&leaves);
        let new_size = edge.size();
        let covered = state.last_checkpoint.as_ref().map_or(0, |c| c.size);
        let due = new_size > covered
            && (final_round
                || state
                    .last_checkpoint_at
                    .is_none_or(|at| at.elapsed() >= self.settings.checkpoint_interval));
        if pending.records.is_empty() && !due && pending.watermark == state.watermark {
            self.sample_backlog().await?;
            return Ok(false);
        }
        let checkpoint = if due {
            let root = edge.root();
            let origin = self
                .signer
                .as_ref()
                .map_or(UNSIGNED_ORIGIN, |s| s.name())
                .to_owned();
            let text = Checkpoint {
                origin,
                size: new_size,
                root,
            }
            .text();
            if let (Some(file), Some(_)) = (&self.settings.signed_state, &self.signer) {
                // What is about to be signed, durable before the note can be stored.
                if let Some(last) = &self.signed.signed
                    && last.size > new_size
                {
                    return Err(LedgerError::LogRollback {
                        signed: last.size,
                        stored: new_size,
                        detail: "the next checkpoint would be smaller than the last signed".into(),
                    });
                }
                self.signed.intent = Some(signed::SignedCheckpoint::new(new_size, &root));
                file.store(&self.signed)?;
            }
            let note = self.signer.as_ref().map(|s| s.sign(&text)).transpose()?;
            Some(StoredCheckpoint {
                cid: Uuid::now_v7(),
                size: new_size,
                root,
                range_start: covered,
                note,
                created_at: Some(chrono::Utc::now()),
            })
        } else {
            None
        };
        let step = log::Commit {
            first_index: state.size,
            rids: pending.records.iter().map(|r| r.rid).collect(),
            hashes: pending.records.iter().map(|r| r.hash).collect(),
            tiles,
            watermark: pending.watermark,
            checkpoint: checkpoint.clone(),
        };
        self.log.commit(self.holder, lease, step).await?;
        if let (Some(file), Some(intent)) = (&self.settings.signed_state, self.signed.intent.take())
        {
            // Stored: the database must extend it from now on.
            self.signed.signed = Some(intent);
            file.store(&self.signed)?;
        }
        state.last_renew = Instant::now();
        state.size = new_size;
        state.edge = edge;
        state.watermark = pending.watermark;
        for r in &pending.records {
            let ms = r.ts.timestamp_millis();
            match state.uncovered.last_mut() {
                Some((last, n)) if *last == ms => *n += 1,
                _ => state.uncovered.push((ms, 1)),
            }
        }
        let mut lag = None;
        if let Some(c) = checkpoint {
            let now = chrono::Utc::now().timestamp_millis();
            let mut hist = self.coverage.lock().unwrap_or_else(|p| p.into_inner());
            let mut oldest = None;
            for (ms, n) in state.uncovered.drain(..) {
                let wait = u64::try_from(now - ms).unwrap_or(0);
                oldest = oldest.max(Some(wait));
                hist.saturating_record_n(wait.clamp(1, LAG_HISTOGRAM_MAX_MS), n);
            }
            drop(hist);
            lag = oldest.map(Duration::from_millis);
            self.checkpoints_written += 1;
            crate::metrics::checkpoint_written();
            tracing::debug!(size = new_size, lag = ?lag, "checkpoint written");
            state.last_checkpoint = Some(c);
            state.last_checkpoint_at = Some(Instant::now());
        }
        self.publish(lag);
        self.sample_backlog().await?;
        Ok(pending.full)
    }
}

/// For a process that does not integrate (`ledger health` opens the ledger read-only): why
/// an integrator with this key would halt on `log`, if it would — the stored log does not
/// extend the last checkpoint the key signed, or the state or the log cannot be read to tell.
pub(crate) async fn rollback_reason(
    log: &dyn LogStore,
    file: &signed::SignedStateFile,
) -> Option<String> {
    let state = match file.load() {
        Ok(state) => state,
        Err(e) => return Some(e.to_string()),
    };
    let Some(last) = &state.signed else {
        return None;
    };
    let size = match log.load().await {
        Ok(loaded) => loaded.size,
        Err(e) => {
            return Some(format!(
                "cannot read the log to check it against what the key signed: {e}"
            ));
        }
    };
    extends(log, last, size).await.err().map(|e| e.to_string())
}

/// Whether a log of `size` leaves in `log` extends `signed`: at least as long, and the root
/// of its first `signed.size` leaves (from the stored tiles) is the signed root.
async fn extends(
    log: &dyn LogStore,
    signed: &signed::SignedCheckpoint,
    size: u64,
) -> Result<(), LedgerError> {
    if size < signed.size {
        return Err(LedgerError::LogRollback {
            signed: signed.size,
            stored: size,
            detail: format!(
                "the database's log is {} leaves shorter",
                signed.size - size
            ),
        });
    }
    if signed.size == 0 {
        return Ok(());
    }
    let nodes = ledger_tlog::merkle::root_nodes(signed.size);
    let tiles = log
        .read_tiles(&ledger_tlog::tile::tiles_for(&nodes))
        .await?;
    let root = hex::encode(ledger_tlog::merkle::tree_root(signed.size, &tiles)?);
    if root != signed.root {
        return Err(LedgerError::LogRollback {
            signed: signed.size,
            stored: size,
            detail: format!(
                "the database's tree of {} leaves has root {root}, the key signed {}",
                signed.size, signed.root
            ),
        });
    }
    Ok(())
}
