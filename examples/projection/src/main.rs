//! An example read model on a ledger subscription: the running total of each anchor's
//! records (the sum of their payload's integer `amount`, and their count), kept in two
//! PostgreSQL tables beside the ledger's.
//!
//! **Exactly once, resumable.** The projection stores the last position it applied
//! (`projection_position`) in the same transaction as the totals that position's records
//! changed, so after any crash (even SIGKILL mid-transaction) the database holds either a
//! batch's totals *and* its position, or neither; at start it subscribes after the stored
//! position ([`ledger_actors::Ledger::subscribe`]), which delivers exactly the records after
//! it. The position update also checks the position it read (`… WHERE last IS NOT DISTINCT
//! FROM $previous`), so two instances running at once cannot both apply a batch: the second
//! one's transaction changes nothing and it stops with an error.
//!
//! It reads the ledger through a read-only ledger (no writer, no integrator), so it runs
//! beside the processes that append. Configuration: the `LEDGER_*` variables (backend
//! `postgres`, `LEDGER_DSN`); `PROJECTION_DSN` puts the tables in another database (default:
//! the ledger's); `PROJECTION_BATCH` is the most records applied per transaction (default
//! 1000; a batch is also cut when no more records are ready). It follows the ledger until
//! SIGINT or SIGTERM.
//!
//! ```text
//! LEDGER_BACKEND=postgres LEDGER_DSN=postgres://… cargo run -p avl-projection-example
//! psql -c 'SELECT * FROM projection_totals'
//! ```

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use futures::{FutureExt as _, StreamExt as _};
use ledger_actors::{Backend, Delivered, Ledger, LedgerConfig};
use sea_orm::sqlx::{self, PgPool, Row};
use uuid::Uuid;

/// The projection's tables: created if missing (idempotent).
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS projection_totals (\
        anchor_id UUID PRIMARY KEY, total BIGINT NOT NULL, records BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS projection_position (\
        id INT PRIMARY KEY CHECK (id = 1), last BIGINT)",
    "INSERT INTO projection_position (id, last) VALUES (1, NULL) ON CONFLICT (id) DO NOTHING",
];

fn main() -> anyhow::Result<()> {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("LEDGER_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let config = LedgerConfig::load(None)?;
    if config.backend != Backend::Postgres {
        bail!(
            "the projection reads a PostgreSQL ledger: set LEDGER_BACKEND=postgres and LEDGER_DSN"
        );
    }
    let dsn = match std::env::var("PROJECTION_DSN") {
        Ok(dsn) => dsn,
        Err(_) => std::env::var("LEDGER_DSN").context("LEDGER_DSN is not set")?,
    };
    let batch: usize = match std::env::var("PROJECTION_BATCH") {
        Ok(v) => v.parse().context("PROJECTION_BATCH: a whole number")?,
        Err(_) => 1000,
    };
    if batch == 0 {
        bail!("PROJECTION_BATCH must be at least 1");
    }
    actix::System::new().block_on(run(config, &dsn, batch))
}

async fn run(config: LedgerConfig, dsn: &str, batch: usize) -> anyhow::Result<()> {
    let pool = PgPool::connect(dsn)
        .await
        .context("connecting to the projection's database")?;
    for statement in SCHEMA {
        sqlx::query(*statement).execute(&pool).await?;
    }
    let last: Option<i64> = sqlx::query("SELECT last FROM projection_position WHERE id = 1")
        .fetch_one(&pool)
        .await?
        .try_get("last")?;
    let mut last = last.map(u64::try_from).transpose()?;
    let ledger = Ledger::open_read_only(config).await?;
    let mut records = ledger.subscribe(last);
    eprintln!(
        "projection: resuming after position {}",
        last.map_or_else(|| "none (from the start)".to_owned(), |p| p.to_string())
    );
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    };
    tokio::pin!(stop);
    let mut pending: Vec<Delivered> = Vec::with_capacity(batch);
    loop {
        // Wait for one record, then take what else is ready, up to a batch.
        let first = tokio::select! {
            item = records.next() => item,
            _ = &mut stop => break,
        };
        let Some(first) = first else { break };
        pending.push(first?);
        while pending.len() < batch {
            match records.next().now_or_never() {
                Some(Some(item)) => pending.push(item?),
                Some(None) | None => break,
            }
        }
        last = Some(apply(&pool, last, &pending).await?);
        pending.clear();
    }
    ledger.shutdown().await?;
    Ok(())
}

/// Applies `batch` (consecutive positions after `last`) in one transaction: the totals and
/// the new position together. Returns the new position.
async fn apply(pool: &PgPool, last: Option<u64>, batch: &[Delivered]) -> anyhow::Result<u64> {
    let mut sums: HashMap<Uuid, (i64, i64)> = HashMap::new();
    for d in batch {
        let amount = d
            .record
            .payload
            .to_value()
            .get("amount")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        let entry = sums.entry(d.record.anchor_id).or_default();
        entry.0 = entry.0.checked_add(amount).context("total overflows")?;
        entry.1 += 1;
    }
    let Some(new_last) = batch.last().map(|d| d.position) else {
        bail!("an empty batch");
    };
    let anchors: Vec<Uuid> = sums.keys().copied().collect();
    let totals: Vec<i64> = anchors.iter().map(|a| sums[a].0).collect();
    let counts: Vec<i64> = anchors.iter().map(|a| sums[a].1).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO projection_totals (anchor_id, total, records) \
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[]) \
         ON CONFLICT (anchor_id) DO UPDATE SET total = projection_totals.total + EXCLUDED.total, \
            records = projection_totals.records + EXCLUDED.records",
    )
    .bind(&anchors)
    .bind(&totals)
    .bind(&counts)
    .execute(&mut *tx)
    .await?;
    let moved = sqlx::query(
        "UPDATE projection_position SET last = $1 WHERE id = 1 AND last IS NOT DISTINCT FROM $2",
    )
    .bind(i64::try_from(new_last)?)
    .bind(last.map(i64::try_from).transpose()?)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() != 1 {
        // Rolled back on drop: nothing of this batch is applied.
        bail!("another projection moved the stored position; this one stops");
    }
    tx.commit().await?;
    Ok(new_last)
}
