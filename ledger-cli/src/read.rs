//! Opening the store for commands that only read (`get`, `records`, `anchors`, `export`):
//! the configured database and nothing else — never the memory fallback, never the spool, no
//! migrations. The one place to switch to the ledger's read-only start mode.

use std::sync::Arc;

use anyhow::bail;
use ledger_actors::{Backend, LedgerConfig, LedgerStore, create_ledger_store};

/// The configured PostgreSQL store. An unreachable database or a schema that is not up to
/// date is an error (the CLI exits 2 with the reason); so is the memory backend, whose
/// records live only inside the process that appended them.
pub async fn open_store(config: &LedgerConfig) -> anyhow::Result<Arc<dyn LedgerStore>> {
    if config.backend == Backend::Memory {
        bail!(
            "the memory backend keeps records inside the process that appended them, so this \
             command has nothing to read; set LEDGER_BACKEND=postgres and LEDGER_DSN"
        );
    }
    let mut config = config.clone();
    // A command that reads never changes the schema.
    config.auto_migrate = false;
    Ok(create_ledger_store(&config).await?)
}

/// `--since`/`--until` values: RFC 3339 (e.g. `2026-11-25T21:00:00Z`).
pub fn parse_ts(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    ledger_actors::transfer::format::parse_ts(text)
}
