//! The transparency-log half of `ledger verify`: the stored log against the records, every
//! checkpoint's root and signature, and (with `--since`) a checkpoint saved earlier.

use std::path::PathBuf;

use anyhow::Context as _;
use ledger_actors::log_verify::{LogReport, verify_log};
use ledger_actors::{Backend, LedgerConfig};
use ledger_tlog::note::{Checkpoint, NoteVerifier};

/// The log options of `ledger verify`.
#[derive(clap::Args)]
pub struct LogArgs {
    /// Verifier key file (`checkpoint.pub`) to check checkpoint signatures with (default:
    /// derived from the configured `checkpoint_key`, if any).
    #[arg(long, value_name = "PUB_FILE")]
    pub key: Option<PathBuf>,
    /// A signed checkpoint saved earlier (e.g. by `ledger checkpoint > saved.note`): today's
    /// log must contain it. Needs a key.
    #[arg(long, value_name = "CHECKPOINT_FILE")]
    pub since: Option<PathBuf>,
}

/// Verifies the log when the backend has one (PostgreSQL); `None` on the memory backend.
pub async fn run(config: &LedgerConfig, args: &LogArgs) -> anyhow::Result<Option<LogReport>> {
    if config.backend != Backend::Postgres {
        return Ok(None);
    }
    let verifier = match (&args.key, &config.checkpoint_key) {
        (Some(path), _) => Some(
            NoteVerifier::parse(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )
            .context("the verifier key")?,
        ),
        (None, Some(signer)) => Some(ledger_actors::integrator::load_signer(signer)?.verifier()),
        (None, None) => None,
    };
    let since = match &args.since {
        None => None,
        Some(path) => {
            let v = verifier
                .as_ref()
                .context("--since needs the verifier key (--key)")?;
            let note = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let text = v
                .open(&note)
                .with_context(|| format!("{}: not signed by this ledger's key", path.display()))?;
            Some(Checkpoint::parse(text)?)
        }
    };
    let log = ledger_actors::tlog::open_log(config)?;
    let report = verify_log(log.as_ref(), verifier.as_ref(), since.as_ref()).await?;
    if verifier.is_none() {
        eprintln!("warning: checkpoint signatures not checked (no --key, no checkpoint_key)");
    }
    Ok(Some(report))
}
