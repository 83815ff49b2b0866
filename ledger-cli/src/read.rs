//! Opening the store for commands that only read (`get`, `records`, `anchors`, `export`):
//! the configured database and nothing else — never the memory fallback, never the spool, no
//! migrations. The one place to switch to the ledger's read-only start mode.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use ledger_actors::{Backend, LedgerConfig, LedgerStore, PartitionedLedger};

/// Opens the configured PostgreSQL ledger read-only
/// ([`PartitionedLedger::open_read_only`]: every partition of a partitioned one, reads
/// routed by anchor), runs `command` on its store, then closes it. An unreachable database or a schema that is not
/// up to date is an error (the CLI exits 2 with the reason); so is the memory backend, whose
/// records live only inside the process that appended them.
pub async fn with_store<F, Fut>(config: &LedgerConfig, command: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Arc<dyn LedgerStore>) -> Fut,
    Fut: Future<Output = anyhow::Result<ExitCode>>,
{
    if config.backend == Backend::Memory {
        bail!(
            "the memory backend keeps records inside the process that appended them, so this \
             command has nothing to read; set LEDGER_BACKEND=postgres and LEDGER_DSN"
        );
    }
    let ledger = PartitionedLedger::open_read_only(config.clone())
        .await
        .context("opening the ledger read-only")?;
    let result = command(ledger.store()).await;
    ledger.shutdown().await?;
    result
}

/// `--since`/`--until` values: RFC 3339 (e.g. `2026-11-25T21:00:00Z`).
pub fn parse_ts(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    ledger_actors::transfer::format::parse_ts(text)
}
