//! The transparency-log part of `ledger loadtest`: an ephemeral signing key on the memory
//! backend, the integrator's lag sampled during the run, and the wait for a checkpoint that
//! covers every append.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ledger_actors::{Backend, Ledger, LedgerConfig};
use ledger_tlog::note::NoteSigner;
use serde_json::{Value, json};

/// Longest wait for the covering checkpoint.
const COVER_WAIT: Duration = Duration::from_secs(120);

/// An ephemeral key, deleted when dropped.
pub struct Ephemeral {
    dir: PathBuf,
    /// The verifier key (public), printed with the results.
    pub verifier: String,
}

impl Drop for Ephemeral {
    fn drop(&mut self) {
        // Best effort: a leftover temporary key signs only this run's in-memory log.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// On the memory backend without a configured key (and with checkpoints on), signs with a
/// fresh key written to a private temporary file, so the run's checkpoints are signed.
pub fn ephemeral_key(config: &mut LedgerConfig) -> anyhow::Result<Option<Ephemeral>> {
    if config.backend != Backend::Memory
        || config.checkpoint_key.is_some()
        || config.checkpoint_interval.is_zero()
    {
        return Ok(None);
    }
    let signer = NoteSigner::from_seed("avl-ledger/loadtest", &rand::random::<[u8; 32]>())?;
    let dir = std::env::temp_dir().join(format!("avl-loadtest-key-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("checkpoint.key");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    std::io::Write::write_all(&mut options.open(&path)?, signer.to_key_string().as_bytes())?;
    config.checkpoint_key = Some(path);
    Ok(Some(Ephemeral {
        dir,
        verifier: signer.verifier().to_key_string(),
    }))
}

/// Samples the integrator's commit → checkpoint lag while the run lasts.
pub struct LagWatch {
    max_micros: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl LagWatch {
    /// Starts sampling (every 50 ms) on the current actix thread.
    pub fn start(ledger: &Ledger) -> Self {
        let max_micros = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s, l) = (Arc::clone(&max_micros), Arc::clone(&stop), ledger.clone());
        actix_rt::spawn(async move {
            while !s.load(Ordering::Acquire) {
                if let Some(lag) = l.integrator_progress().and_then(|p| p.last_lag) {
                    m.fetch_max(lag.as_micros() as u64, Ordering::AcqRel);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { max_micros, stop }
    }

    /// Waits for a checkpoint covering every record in the store and returns the
    /// `"checkpoint"` and `"integration"` JSON: size, root, the time from the end of the
    /// appends to that checkpoint, the largest commit → checkpoint lag seen, and the
    /// distribution of that lag over every record covered (`commit_to_checkpoint_ms`: the
    /// delay from each record's `ts`, taken just before its commit, to the first checkpoint
    /// covering it; millisecond resolution).
    pub async fn finish(
        self,
        ledger: &Ledger,
        appends_ended: Instant,
        ephemeral: Option<&Ephemeral>,
    ) -> anyhow::Result<(Value, Value)> {
        if ledger.integrator_progress().is_none() {
            self.stop.store(true, Ordering::Release);
            return Ok((Value::Null, Value::Null));
        }
        // The database may be unreachable now (a stop after the appends): wait for it.
        let until = Instant::now() + COVER_WAIT;
        let records = loop {
            match ledger.store().count().await {
                Ok(n) => break n,
                Err(ledger_actors::LedgerError::Unavailable(_)) if Instant::now() < until => {
                    actix_rt::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let covering = loop {
            let left = until.saturating_duration_since(Instant::now());
            match ledger.await_checkpoint(records, left).await {
                Ok(c) => break c,
                Err(ledger_actors::LedgerError::Unavailable(_)) if !left.is_zero() => {
                    actix_rt::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let waited = appends_ended.elapsed();
        self.stop.store(true, Ordering::Release);
        if let Some(lag) = ledger.integrator_progress().and_then(|p| p.last_lag) {
            self.max_micros
                .fetch_max(lag.as_micros() as u64, Ordering::AcqRel);
        }
        let covered = covering.as_ref().is_some_and(|c| c.size >= records);
        let checkpoint = match &covering {
            Some(c) => json!({
                "size": c.size,
                "root": c.root.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "signed": c.note.is_some(),
                "verifier_key": ephemeral.map(|e| e.verifier.clone()),
            }),
            None => Value::Null,
        };
        let coverage = ledger.coverage_lag().unwrap_or_default();
        let integration = json!({
            "covers_all_appends": covered,
            "appends_end_to_checkpoint_ms": waited.as_secs_f64() * 1000.0,
            "commit_to_checkpoint_max_ms": self.max_micros.load(Ordering::Acquire) as f64 / 1000.0,
            "commit_to_checkpoint_ms": {
                "records": coverage.records,
                "p50": coverage.p50_ms,
                "p99": coverage.p99_ms,
                "max": coverage.max_ms,
            },
        });
        Ok((checkpoint, integration))
    }
}
