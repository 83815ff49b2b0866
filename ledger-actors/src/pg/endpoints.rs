//! Multi-host DSNs (`postgres://u@h1:5432,h2:5433/db?target_session_attrs=read-write`):
//! which host the ledger's connections go to, and following a switchover.
//!
//! sqlx takes one host per pool (no `target_session_attrs`), so the ledger chooses: the
//! hosts are tried in the DSN's order, each on a new connection that asks
//! `pg_is_in_recovery()` and `transaction_read_only`, and the first that fits is *the
//! current host* of that DSN, shared by every pool of the process made from it (a registry
//! keyed by the DSN). The writer and the integrator always want a server that takes writes;
//! read-only tools take the DSN's `target_session_attrs` (default `any`).
//!
//! When the writer's outage probe finds the current host gone or read-only, it looks again
//! ([`find`]); a different host that fits becomes current: every registered pool gets its
//! connect options ([`sqlx::Pool::set_connect_options`]), and its connections opened before
//! the switch are closed as they are next acquired (the `before_acquire` check that
//! [`guard`] installs), so no statement goes to the old server again. A plain DSN has one
//! host and none of this runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use sea_orm::sqlx::{self, PgPool, postgres::PgConnectOptions};

use crate::config::{Dsn, SessionAttrs};
use crate::error::LedgerError;

/// The current host of one multi-host DSN and the pools that follow it.
struct Selection {
    current: AtomicUsize,
    /// When the current host last changed (connections older than this are closed).
    switched: Mutex<Option<Instant>>,
    pools: Mutex<Vec<PgPool>>,
}

static SELECTIONS: LazyLock<Mutex<HashMap<String, Arc<Selection>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn selection(dsn: &Dsn) -> Arc<Selection> {
    let mut all = SELECTIONS.lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(all.entry(dsn.expose().to_owned()).or_insert_with(|| {
        Arc::new(Selection {
            current: AtomicUsize::new(0),
            switched: Mutex::new(None),
            pools: Mutex::new(Vec::new()),
        })
    }))
}

/// The DSN of the host the ledger's connections go to now (the DSN itself for one host).
pub fn current(dsn: &Dsn) -> Dsn {
    let endpoints = dsn.endpoints();
    if endpoints.len() <= 1 {
        return dsn.clone();
    }
    let i = selection(dsn).current.load(Ordering::Acquire);
    endpoints
        .get(i)
        .cloned()
        .unwrap_or_else(|| endpoints[0].clone())
}

/// What a host answered.
async fn kind_of(options: &PgConnectOptions, limit: Duration) -> Result<(bool, bool), String> {
    use sqlx::Connection as _;
    let ask = async {
        let mut conn = sqlx::PgConnection::connect_with(options).await?;
        let found: (bool, bool) = sqlx::query_as(
            "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'",
        )
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>(found)
    };
    match tokio::time::timeout(limit, ask).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// Finds the first host of `dsn` (the current one first) that `want`s, within `limit`
/// per host, makes it current (switching every registered pool if it changed) and returns
/// its DSN. A plain DSN is returned as is, unchecked. [`LedgerError::Unavailable`] names
/// what each host answered when none fits.
pub async fn find(
    dsn: &Dsn,
    want: SessionAttrs,
    options: impl Fn(&Dsn) -> Result<PgConnectOptions, LedgerError>,
    limit: Duration,
) -> Result<Dsn, LedgerError> {
    let endpoints = dsn.endpoints();
    if endpoints.len() <= 1 {
        return Ok(dsn.clone());
    }
    let sel = selection(dsn);
    let start = sel.current.load(Ordering::Acquire).min(endpoints.len() - 1);
    let order: Vec<usize> = std::iter::once(start)
        .chain((0..endpoints.len()).filter(|&i| i != start))
        .collect();
    let mut answers = Vec::new();
    let mut standby_fallback = None;
    for i in order {
        let endpoint = &endpoints[i];
        let (host, port) = &dsn.hosts()[i];
        match kind_of(&options(endpoint)?, limit).await {
            Ok((recovery, read_only)) if want.accepts(recovery, read_only) => {
                switch(&sel, i, endpoint, &options);
                return Ok(endpoint.clone());
            }
            Ok((recovery, _)) => {
                if want == SessionAttrs::PreferStandby && standby_fallback.is_none() {
                    standby_fallback = Some(i);
                }
                answers.push(format!(
                    "{host}:{port}: {}",
                    if recovery { "a standby" } else { "read-only" }
                ));
            }
            Err(e) => answers.push(format!("{host}:{port}: {e}")),
        }
    }
    if let Some(i) = standby_fallback {
        switch(&sel, i, &endpoints[i], &options);
        return Ok(endpoints[i].clone());
    }
    Err(LedgerError::Unavailable(format!(
        "no host of the DSN is {} ({})",
        want.as_str(),
        answers.join("; ")
    )))
}

fn switch(
    sel: &Selection,
    to: usize,
    endpoint: &Dsn,
    options: &impl Fn(&Dsn) -> Result<PgConnectOptions, LedgerError>,
) {
    let before = sel.current.swap(to, Ordering::AcqRel);
    if before == to {
        return;
    }
    *sel.switched.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    let Ok(options) = options(endpoint) else {
        return;
    };
    let mut pools = sel.pools.lock().unwrap_or_else(|p| p.into_inner());
    pools.retain(|p| !p.is_closed());
    for pool in pools.iter() {
        pool.set_connect_options(options.clone());
    }
    tracing::warn!(
        host = %endpoint.redacted(),
        pools = pools.len(),
        "multi-host DSN: switched to another host"
    );
}

/// Registers `pool` (made from `dsn`) to follow switches of its current host. Nothing for
/// a plain DSN.
pub fn register(dsn: &Dsn, pool: &PgPool) {
    if dsn.hosts().len() <= 1 {
        return;
    }
    let sel = selection(dsn);
    let mut pools = sel.pools.lock().unwrap_or_else(|p| p.into_inner());
    pools.retain(|p| !p.is_closed());
    pools.push(pool.clone());
}

/// The `before_acquire` check of a pool made from `dsn`: a connection opened before the
/// last switch of the current host is closed instead of used.
pub fn guard(
    dsn: &Dsn,
) -> impl for<'c> Fn(
    &'c mut sqlx::PgConnection,
    sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'c, Result<bool, sqlx::Error>>
+ Send
+ Sync
+ 'static {
    let sel = (dsn.hosts().len() > 1).then(|| selection(dsn));
    move |_conn, meta| {
        let keep = sel.as_ref().is_none_or(|sel| {
            sel.switched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|at| meta.age < at.elapsed())
        });
        Box::pin(async move { Ok(keep) })
    }
}
