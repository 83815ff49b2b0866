//! [`PostgresLedgerStore`]: records in PostgreSQL through SeaORM, plus [`connect`] and the
//! error classification ([`classify`]) every PostgreSQL path of the ledger uses.
//!
//! Reads are served by the index `idx_records_anchor_ts (anchor_id, ts)`: a window of an
//! anchor's records is one range scan, its head one backward index probe (`ORDER BY ts DESC
//! LIMIT 1`, independent of the chain's length), and the anchor listing an index-only scan.
//!
//! The fork guard is the database's: the unique constraint `ledger_records_no_fork` on
//! `(anchor_id, prev_hash)` (NULLS NOT DISTINCT) refuses a second genesis or a second
//! successor of a record; the predecessor check `ledger_records_prev_fk` (a statement-level
//! trigger) refuses a record whose predecessor is not stored in its anchor. Writes go through
//! [`crate::pg::insert_records`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_entities::entity::ledger_records::{self, Column, Entity as Records};
use ledger_entities::{LedgerRecord, RecordHash};
use sea_orm::sqlx;
use sea_orm::{
    ColumnTrait, ConnectOptions, Database, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, RuntimeErr,
};
use tokio::sync::{Semaphore, oneshot};
use uuid::Uuid;

use crate::config::{Backend, Dsn, LedgerConfig, SessionAttrs};
use crate::error::LedgerError;
use crate::store::{Head, LedgerStore, RecordRange, ScanKey};

/// Name of the fork-guard constraint (`UNIQUE NULLS NOT DISTINCT (anchor_id, prev_hash)`).
pub const FORK_GUARD: &str = "ledger_records_no_fork";
/// Name of the primary-key constraint on `rid`.
pub const RID_KEY: &str = "ledger_records_pkey";
/// Name of the unique constraint on `hash`.
pub const HASH_KEY: &str = "ledger_records_hash_key";
/// Name the predecessor check (trigger `ledger_records_prev_fk`, migration
/// `m20261126_000020_prev_fk`) reports with SQLSTATE 23503: a record's predecessor must be
/// stored, in the same anchor.
pub const PREV_FK: &str = "ledger_records_prev_fk";

/// Opens a connection pool to the configured database: at most `config.pool_size`
/// connections, `config.timeout` to open a connection or acquire one from the pool, a
/// server-side `statement_timeout` of `config.timeout` on every connection, and statement
/// logging off (statements carry payloads). With a multi-host DSN, to the first host that
/// takes writes (`crate::pg::endpoints`), following later switches.
///
/// At least one connection is opened before this returns, so an unreachable database is
/// reported here as [`LedgerError::Unavailable`]. A missing DSN is [`LedgerError::Config`].
/// No error message contains the DSN's password.
pub async fn connect(config: &LedgerConfig) -> Result<DatabaseConnection, LedgerError> {
    connect_for(config, SessionAttrs::ReadWrite).await
}

fn dsn_of(config: &LedgerConfig) -> Result<&Dsn, LedgerError> {
    config.dsn.as_ref().ok_or_else(|| {
        LedgerError::Config("dsn: backend is postgres but no dsn is set (LEDGER_DSN)".into())
    })
}

/// [`connect`] to a host of the kind `want` (read-only tools pass the DSN's
/// `target_session_attrs`).
pub async fn connect_for(
    config: &LedgerConfig,
    want: SessionAttrs,
) -> Result<DatabaseConnection, LedgerError> {
    let dsn = dsn_of(config)?;
    let endpoint =
        crate::pg::endpoints::find(dsn, want, |d| options_for(config, d), config.timeout)
            .await
            .map_err(|e| scrub(e, dsn))?;
    let mut options = ConnectOptions::new(endpoint.expose());
    options
        .max_connections(config.pool_size)
        .min_connections(0)
        .connect_timeout(config.timeout)
        .acquire_timeout(config.timeout)
        .statement_timeout(config.timeout)
        .set_application_name("avl-ledger")
        .sqlx_logging(false);
    let replicated = crate::pg::replication::session_options(config.replication);
    if !replicated.is_empty() {
        options.map_sqlx_postgres_opts(move |o| o.options(replicated.clone()));
    }
    if dsn.hosts().len() > 1 {
        let follows = dsn.clone();
        options.map_sqlx_postgres_pool_opts(move |o| {
            o.before_acquire(crate::pg::endpoints::guard(&follows))
        });
    }
    let db = Database::connect(options)
        .await
        .map_err(|e| scrub(classify(&e, None), dsn))?;
    crate::pg::endpoints::register(dsn, db.get_postgres_connection_pool());
    Ok(db)
}

/// The DSN of the host of `config`'s DSN that takes writes (the DSN itself when it has one
/// host), for tools that connect on their own (`ledger migrate`).
pub async fn writable_endpoint(config: &LedgerConfig) -> Result<Dsn, LedgerError> {
    let dsn = dsn_of(config)?;
    crate::pg::endpoints::find(
        dsn,
        SessionAttrs::ReadWrite,
        |d| options_for(config, d),
        config.timeout,
    )
    .await
    .map_err(|e| scrub(e, dsn))
}

/// Driver options for a connection of `config`'s database with the same settings as
/// [`connect`] (`statement_timeout`, application name, no statement logging), for pools
/// built directly with sqlx (the writer's group commit, the integrator); with a multi-host
/// DSN, to its current host (register the pool with `crate::pg::endpoints::register` and
/// give it `crate::pg::endpoints::guard` to follow switches).
pub fn sqlx_options(
    config: &LedgerConfig,
) -> Result<sqlx::postgres::PgConnectOptions, LedgerError> {
    let dsn = dsn_of(config)?;
    options_for(config, &crate::pg::endpoints::current(dsn))
}

/// [`sqlx_options`] for one host's DSN.
fn options_for(
    config: &LedgerConfig,
    dsn: &Dsn,
) -> Result<sqlx::postgres::PgConnectOptions, LedgerError> {
    use sqlx::ConnectOptions as _;
    let options: sqlx::postgres::PgConnectOptions = dsn
        .expose()
        .parse()
        // The parse error names the offending part, not the whole DSN.
        .map_err(|e: sqlx::Error| scrub(LedgerError::Config(format!("dsn: {e}")), dsn))?;
    Ok(options
        .application_name("avl-ledger")
        .options([("statement_timeout", config.timeout.as_millis().to_string())])
        .options(crate::pg::replication::session_options(config.replication))
        .disable_statement_logging())
}

/// The outage probe of a writer: the pool's server answers and takes writes — or, with a
/// multi-host DSN, another host does, and becomes the current one (the pools follow).
pub async fn takes_writes(
    config: &LedgerConfig,
    pool: &sqlx::PgPool,
    limit: std::time::Duration,
) -> bool {
    if crate::pg::answers(pool, limit).await {
        return true;
    }
    match config.dsn.as_ref() {
        Some(dsn) if dsn.hosts().len() > 1 => {
            let found = crate::pg::endpoints::find(
                dsn,
                SessionAttrs::ReadWrite,
                |d| options_for(config, d),
                limit,
            )
            .await;
            // The host takes writes; the pool's own probe (synchronous replication's
            // settings included) decides on the next round if it did not switch.
            found.is_ok() && crate::pg::answers(pool, limit).await
        }
        _ => false,
    }
}

/// Connects ([`connect`]) and checks that the schema is up to date
/// ([`migration::schema_status`]). A pending schema is migrated when `config.auto_migrate`
/// is set and is otherwise [`LedgerError::SchemaMissing`] (run `ledger migrate up`); a schema
/// newer than this build is always [`LedgerError::SchemaMissing`].
pub async fn open(config: &LedgerConfig) -> Result<PostgresLedgerStore, LedgerError> {
    open_for(config, SessionAttrs::ReadWrite).await
}

/// [`open`] on a host of the kind `want` (read-only tools: the DSN's
/// `target_session_attrs`, default any).
pub async fn open_for(
    config: &LedgerConfig,
    want: SessionAttrs,
) -> Result<PostgresLedgerStore, LedgerError> {
    use migration::{Migrator, MigratorTrait, SchemaStatus};

    let db = connect_for(config, want).await?;
    let status = migration::schema_status(&db)
        .await
        .map_err(|e| counted(&e, None))?;
    match status {
        SchemaStatus::UpToDate => {}
        SchemaStatus::Pending { ref pending } if config.auto_migrate => {
            tracing::info!(?pending, "auto_migrate: applying pending migrations");
            Migrator::up(&db, None)
                .await
                .map_err(|e| LedgerError::SchemaMissing(format!("auto_migrate failed: {e}")))?;
        }
        status => return Err(LedgerError::SchemaMissing(status.to_string())),
    }
    if want == SessionAttrs::ReadWrite {
        crate::pg::replication::check_start(db.get_postgres_connection_pool(), config.replication)
            .await?;
    }
    Ok(PostgresLedgerStore::new(db).with_replication(config.replication))
}

/// Removes the DSN's secrets from an error's text ([`Dsn::scrub`]). Driver messages do not
/// echo the DSN today; this keeps it so.
fn scrub(err: LedgerError, dsn: &Dsn) -> LedgerError {
    match err {
        LedgerError::Unavailable(m) => LedgerError::Unavailable(dsn.scrub(&m)),
        LedgerError::Database(m) => LedgerError::Database(dsn.scrub(&m)),
        LedgerError::Config(m) => LedgerError::Config(dsn.scrub(&m)),
        LedgerError::AccessDenied(m) => LedgerError::AccessDenied(dsn.scrub(&m)),
        other => other,
    }
}

/// SQLSTATEs that mean the server cannot serve us now, not that it refused our data:
/// shutdown in progress (57P01 admin, 57P02 crash, 57P03 cannot connect now), query
/// cancelled or `statement_timeout` (57014), too many connections (53300), and a read-only
/// transaction (25006: we reached a standby, as after a primary switchover).
pub const UNAVAILABLE_STATES: &[&str] = &["57P01", "57P02", "57P03", "57014", "53300", "25006"];

/// SQLSTATEs that mean the server refused our login or the database does not exist:
/// invalid password (28P01), invalid authorization, e.g. an unknown role (28000), unknown
/// database (3D000). Configuration errors: never an outage, never a fallback.
pub const ACCESS_STATES: &[&str] = &["28P01", "28000", "3D000"];

/// SQLSTATEs of a transaction the server aborted to resolve a conflict with another one:
/// deadlock (40P01), serialization failure (40001). Nothing was written; the same statement
/// succeeds when retried.
pub const CONTENTION_STATES: &[&str] = &["40P01", "40001"];

/// Classifies a SeaORM error into the ledger's error.
///
/// - Connectivity, [`LedgerError::Unavailable`]: I/O errors (connection refused or reset),
///   TLS and protocol errors, pool acquire timeout and closed pool
///   ([`DbErr::ConnectionAcquire`]), any other failure while connecting ([`DbErr::Conn`]),
///   SQLSTATE class 08 and the states of [`UNAVAILABLE_STATES`].
/// - Refused login or unknown database, [`LedgerError::AccessDenied`]: [`ACCESS_STATES`],
///   while connecting or later.
/// - Conflict with a concurrent transaction, [`LedgerError::Contention`]:
///   [`CONTENTION_STATES`]; retry ([`retry_contention`]).
/// - SQLSTATE 23503 on [`PREV_FK`] (predecessor not stored in the anchor), with `record`:
///   [`LedgerError::ForkRefused`].
/// - SQLSTATE 23505 on [`FORK_GUARD`]: [`LedgerError::ForkRefused`]; on [`RID_KEY`] or
///   [`HASH_KEY`]: [`LedgerError::Conflict`]. `record` is the record the failed statement
///   wrote, when it wrote only one; without it the anchor, predecessor and rid are read from
///   the error's detail (`Key (...)=(...)`), and the error stays [`LedgerError::Database`] if
///   that fails.
/// - Everything else: [`LedgerError::Database`]. A data error is never connectivity.
///
/// Messages are the driver's and the server's; they never contain the DSN.
pub fn classify(err: &DbErr, record: Option<&LedgerRecord>) -> LedgerError {
    match err {
        DbErr::ConnectionAcquire(e) => LedgerError::Unavailable(format!("connection pool: {e}")),
        DbErr::Conn(RuntimeErr::SqlxError(e)) => match classify_sqlx(e, None) {
            // Any failure to connect is connectivity unless the server refused the login.
            denied @ LedgerError::AccessDenied(_) => denied,
            _ => LedgerError::Unavailable(e.to_string()),
        },
        DbErr::Conn(e) => LedgerError::Unavailable(e.to_string()),
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            classify_sqlx(e, record)
        }
        other => LedgerError::Database(other.to_string()),
    }
}

/// True for a connectivity error ([`LedgerError::Unavailable`] by [`classify`]) that shows
/// only a slow or loaded server, not a gone one: the pool timed out waiting for a
/// connection, a connect or statement timed out (57014: `statement_timeout` or a cancel),
/// or the server has too many connections (53300). The writer writes such records again
/// and fails over only on evidence that the server is unreachable.
pub fn only_slow(err: &DbErr) -> bool {
    use sea_orm::error::ConnAcquireErr;
    let sqlx_slow = |e: &sqlx::Error| match e {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::TimedOut,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c == "57014" || c == "53300"),
        _ => false,
    };
    match err {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => sqlx_slow(e),
        _ => false,
    }
}

/// [`classify`] of the driver's error.
pub(crate) fn classify_sqlx(err: &sqlx::Error, record: Option<&LedgerRecord>) -> LedgerError {
    use sqlx::Error as E;
    match err {
        E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::BeginFailed => LedgerError::Unavailable(err.to_string()),
        E::Database(db) => {
            let state = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if state.starts_with("08") || UNAVAILABLE_STATES.contains(&state.as_str()) {
                return LedgerError::Unavailable(format!("{} (SQLSTATE {state})", db.message()));
            }
            if state == "42704" && db.message().contains(crate::pg::replication::GUARD_SETTING) {
                // The replicated-durability guard of the records' INSERT: this server does
                // not take writes we could call Committed (replication: synchronous).
                return LedgerError::Unavailable(
                    "replication: synchronous, but the server has no synchronous_standby_names (SQLSTATE 42704 from the ledger's guard)".into(),
                );
            }
            if ACCESS_STATES.contains(&state.as_str()) {
                return LedgerError::AccessDenied(format!("{} (SQLSTATE {state})", db.message()));
            }
            if CONTENTION_STATES.contains(&state.as_str()) {
                return LedgerError::Contention(format!("{} (SQLSTATE {state})", db.message()));
            }
            if state == "23503" && db.constraint() == Some(PREV_FK) {
                // The predecessor is not stored in the record's anchor.
                if let Some(r) = record {
                    return LedgerError::ForkRefused {
                        anchor_id: r.anchor_id,
                        prev_hash: r.prev_hash,
                    };
                }
                // A multi-row statement: the check's message names the anchor.
                if let Some((anchor_id, prev)) = parse_prev_check(db.message()) {
                    return LedgerError::ForkRefused {
                        anchor_id,
                        prev_hash: Some(prev),
                    };
                }
            }
            if state == "23505" {
                let detail = db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|pg| pg.detail());
                if let Some(refused) = unique_violation(db.constraint(), detail, record) {
                    return refused;
                }
            }
            LedgerError::Database(format!("{} (SQLSTATE {state})", db.message()))
        }
        other => LedgerError::Database(other.to_string()),
    }
}

/// Runs `op` again while it fails with [`LedgerError::Contention`] (deadlock, serialization
/// failure) and `within` has not passed, with exponential back-off and jitter (backon); any
/// other outcome, or the last contention error when time is up, is returned as is. A
/// contention error is never a failover and never fails an append while time remains.
pub async fn retry_contention<T, F, Fut>(within: std::time::Duration, op: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbErr>>,
{
    use backon::Retryable as _;
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(5))
        .with_max_delay(std::time::Duration::from_millis(500))
        .with_jitter()
        .with_total_delay(Some(within))
        .without_max_times();
    op.retry(backoff)
        .when(|e: &DbErr| {
            let contended = matches!(classify(e, None), LedgerError::Contention(_));
            if contended {
                tracing::debug!(error = %e, "transaction conflict; retrying");
            }
            contended
        })
        .await
}

/// The typed error for a unique violation on one of the ledger's constraints, if it can be
/// attributed to a record.
fn unique_violation(
    constraint: Option<&str>,
    detail: Option<&str>,
    record: Option<&LedgerRecord>,
) -> Option<LedgerError> {
    let keys = detail.and_then(parse_key_detail);
    match constraint? {
        FORK_GUARD => {
            let (anchor_id, prev_hash) = match (record, &keys) {
                (Some(r), _) => (r.anchor_id, r.prev_hash),
                (None, Some(values)) if values.len() == 2 => {
                    let prev = values[1].trim();
                    (
                        Uuid::parse_str(values[0].trim()).ok()?,
                        if prev.is_empty() || prev == "null" {
                            None
                        } else {
                            Some(prev.parse().ok()?)
                        },
                    )
                }
                _ => return None,
            };
            Some(LedgerError::ForkRefused {
                anchor_id,
                prev_hash,
            })
        }
        RID_KEY => {
            let rid = match (record, &keys) {
                (Some(r), _) => r.rid,
                (None, Some(values)) if values.len() == 1 => {
                    Uuid::parse_str(values[0].trim()).ok()?
                }
                _ => return None,
            };
            Some(LedgerError::Conflict {
                rid,
                reason: "rid already stored".into(),
            })
        }
        HASH_KEY => {
            let record = record?;
            Some(LedgerError::Conflict {
                rid: record.rid,
                reason: format!("hash {} already stored", record.hash),
            })
        }
        _ => None,
    }
}

/// The values of PostgreSQL's unique-violation detail, `Key (a, b)=(x, y) already exists.`
fn parse_key_detail(detail: &str) -> Option<Vec<String>> {
    let rest = detail.strip_prefix("Key (")?;
    let (_, rest) = rest.split_once(")=(")?;
    let (values, _) = rest.rsplit_once(") already exists")?;
    Some(values.split(", ").map(str::to_owned).collect())
}

/// The anchor and predecessor named by the predecessor check's message ("record R of anchor A
/// names predecessor H, which is not stored in that anchor", migration
/// `m20261126_000020_prev_fk`).
fn parse_prev_check(message: &str) -> Option<(Uuid, RecordHash)> {
    let rest = message.strip_prefix("record ")?;
    let (_, rest) = rest.split_once(" of anchor ")?;
    let (anchor, rest) = rest.split_once(" names predecessor ")?;
    let (prev, _) = rest.split_once(',')?;
    Some((Uuid::parse_str(anchor).ok()?, prev.parse().ok()?))
}

/// Converts a row read from `ledger_records` into a record.
fn to_record(row: ledger_records::Model) -> Result<Arc<LedgerRecord>, LedgerError> {
    LedgerRecord::try_from(row)
        .map(Arc::new)
        .map_err(|e| LedgerError::Database(e.to_string()))
}

/// Locks a mutex whose data stays consistent even if a holder panicked (a `Vec` of pending
/// lookups is only pushed to and drained).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// [`classify`], counted in `ledger_db_errors_total` by class. Every failed statement of
/// the ledger goes through here (or through [`classify`] plus an explicit count).
pub(crate) fn counted(err: &DbErr, record: Option<&LedgerRecord>) -> LedgerError {
    let classified = classify(err, record);
    crate::metrics::db_error(matches!(classified, LedgerError::Unavailable(_)));
    classified
}

fn read_err(err: DbErr) -> LedgerError {
    counted(&err, None)
}

/// Most anchors looked up by one batched head query.
const MAX_HEADS_PER_QUERY: usize = 1024;
/// Rids per `rid = ANY($1)` look-up of [`LedgerStore::get_many`].
const MAX_RIDS_PER_QUERY: usize = 5_000;
/// Batched head queries in flight at once; further lookups queue and join the next batch.
const HEAD_QUERIES_IN_FLIGHT: usize = 2;

/// The heads of a batch of anchors, one backward probe of `idx_records_anchor_ts` each:
/// `ORDER BY ts DESC LIMIT 1` per anchor, so O(1) in the length of the chains. Anchors
/// without records have no row.
const HEADS_SQL: &str = "SELECT a.anchor_id, r.rid, r.hash, r.ts \
     FROM UNNEST($1::uuid[]) AS a(anchor_id) \
     CROSS JOIN LATERAL (SELECT rid, hash, ts FROM ledger_records \
         WHERE anchor_id = a.anchor_id ORDER BY ts DESC LIMIT 1) AS r";

type HeadReply = oneshot::Sender<Result<Option<Head>, LedgerError>>;

/// Coalesces concurrent [`LedgerStore::head`] calls (every chain actor loads its head when
/// it starts, so a burst of new anchors means a burst of lookups) into batched queries.
struct HeadLoader {
    pending: Mutex<Vec<(Uuid, HeadReply)>>,
    permits: Semaphore,
}

/// A [`LedgerStore`] over PostgreSQL (schema from the `migration` crate). Cheap to clone:
/// clones share the connection pool.
///
/// Queries go through SeaORM, except the two that bind arrays, which use the same pool
/// through sqlx directly: the batched head lookup here and the writer's batch
/// insert.
#[derive(Clone)]
pub struct PostgresLedgerStore {
    db: DatabaseConnection,
    heads: Arc<HeadLoader>,
    /// What a commit must reach before it counts ([`crate::pg::insert_records`]).
    replication: crate::config::Replication,
}

impl PostgresLedgerStore {
    /// A store over an open connection pool (see [`connect`]).
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            heads: Arc::new(HeadLoader {
                pending: Mutex::new(Vec::new()),
                permits: Semaphore::new(HEAD_QUERIES_IN_FLIGHT),
            }),
            replication: crate::config::Replication::Local,
        }
    }

    /// The store with `replication` as what a commit must reach (set by [`open`] from the
    /// configuration; [`PostgresLedgerStore::new`] assumes `local`).
    pub fn with_replication(mut self, replication: crate::config::Replication) -> Self {
        self.replication = replication;
        self
    }

    /// What a commit must reach before it counts.
    pub fn replication_mode(&self) -> crate::config::Replication {
        self.replication
    }

    /// Answers a batch of head lookups with one query.
    async fn load_heads(&self, batch: Vec<(Uuid, HeadReply)>) {
        let anchors: Vec<Uuid> = batch.iter().map(|(a, _)| *a).collect();
        let rows = sqlx::query_as::<_, (Uuid, Uuid, String, DateTime<Utc>)>(HEADS_SQL)
            .bind(anchors)
            .fetch_all(self.db.get_postgres_connection_pool())
            .await;
        match rows {
            Ok(rows) => {
                let mut heads: HashMap<Uuid, Result<Head, LedgerError>> = rows
                    .into_iter()
                    .map(|(anchor, rid, hash, ts)| {
                        let head = RecordHash::parse("hash", &hash)
                            .map(|hash| Head { rid, hash, ts })
                            .map_err(|e| {
                                LedgerError::Database(format!("head of anchor {anchor}: {e}"))
                            });
                        (anchor, head)
                    })
                    .collect();
                for (anchor, reply) in batch {
                    // The caller may have given up; then nobody reads the answer.
                    let _ = reply.send(heads.remove(&anchor).transpose());
                }
            }
            Err(e) => {
                let err = counted(&DbErr::Query(RuntimeErr::SqlxError(Arc::new(e))), None);
                for (_, reply) in batch {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Connects ([`connect`]) and wraps the pool.
    pub async fn connect(config: &LedgerConfig) -> Result<Self, LedgerError> {
        connect(config).await.map(Self::new)
    }

    /// The connection pool.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }
}

#[async_trait]
impl LedgerStore for PostgresLedgerStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    /// One statement through [`crate::pg::insert_records`], the ledger's only insert: the
    /// database's constraints refuse a fork, a second genesis, a missing predecessor
    /// (`ledger_records_prev_fk`) and a duplicate hash; a rid already stored with the same
    /// hash is the same record (nothing written, `Ok`), with another hash it is
    /// [`LedgerError::Conflict`] and nothing is written.
    async fn insert(&self, records: &[Arc<LedgerRecord>]) -> Result<(), LedgerError> {
        if records.is_empty() {
            return Ok(());
        }
        let single = (records.len() == 1).then(|| records[0].as_ref());
        let sqlx_err =
            |e: sqlx::Error| counted(&DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e))), single);
        let mut txn = self
            .db
            .get_postgres_connection_pool()
            .begin()
            .await
            .map_err(sqlx_err)?;
        let taken = crate::pg::insert_records_on(&mut txn, records)
            .await
            .map_err(|e| counted(&e, single))?;
        if let Some(&i) = taken.first() {
            // All or nothing: undo the rows written beside the refused one.
            let _ = txn.rollback().await;
            return Err(LedgerError::Conflict {
                rid: records[i].rid,
                reason: "rid already stored with other content".into(),
            });
        }
        txn.commit().await.map_err(sqlx_err)?;
        crate::pg::replication::confirm(self.db.get_postgres_connection_pool(), self.replication)
            .await
            .map_err(|e| counted(&e, single))
    }

    async fn get(&self, rid: Uuid) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        Records::find_by_id(rid)
            .one(&self.db)
            .await
            .map_err(read_err)?
            .map(to_record)
            .transpose()
    }

    async fn get_by_hash(
        &self,
        hash: RecordHash,
    ) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        Records::find()
            .filter(Column::Hash.eq(hash.to_hex()))
            .one(&self.db)
            .await
            .map_err(read_err)?
            .map(to_record)
            .transpose()
    }

    /// `WHERE anchor_id = $1 [AND ts >= $since] [AND ts < $until] ORDER BY ts LIMIT $n`.
    async fn records(
        &self,
        anchor_id: Uuid,
        range: &RecordRange,
    ) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        if range.limit == 0 {
            return Ok(Vec::new());
        }
        let mut query = Records::find().filter(Column::AnchorId.eq(anchor_id));
        if let Some(since) = range.since {
            query = query.filter(Column::Ts.gte(since));
        }
        if let Some(until) = range.until {
            query = query.filter(Column::Ts.lt(until));
        }
        query
            .order_by_asc(Column::Ts)
            .limit(u64::try_from(range.limit).unwrap_or(u64::MAX))
            .all(&self.db)
            .await
            .map_err(read_err)?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// `... WHERE anchor_id = $1 ORDER BY ts DESC LIMIT 1`, batched: concurrent lookups
    /// are answered together by one query (`HEADS_SQL`), at most two such queries run at
    /// once, and a caller that finds a query slot free answers every lookup waiting then.
    async fn head(&self, anchor_id: Uuid) -> Result<Option<Head>, LedgerError> {
        let (tx, mut rx) = oneshot::channel();
        lock(&self.heads.pending).push((anchor_id, tx));
        loop {
            tokio::select! {
                biased;
                answer = &mut rx => match answer {
                    Ok(head) => return head,
                    // The caller serving our batch was cancelled mid-query: ask again.
                    Err(_) => {
                        let (tx, again) = oneshot::channel();
                        lock(&self.heads.pending).push((anchor_id, tx));
                        rx = again;
                    }
                },
                permit = self.heads.permits.acquire() => {
                    let Ok(_permit) = permit else {
                        return Err(LedgerError::Internal("head loader closed".into()));
                    };
                    let batch: Vec<(Uuid, HeadReply)> = {
                        let mut pending = lock(&self.heads.pending);
                        let n = pending.len().min(MAX_HEADS_PER_QUERY);
                        pending.drain(..n).collect()
                    };
                    // Empty: another caller took our lookup; its answer arrives on `rx`.
                    if !batch.is_empty() {
                        self.load_heads(batch).await;
                    }
                }
            }
        }
    }

    /// `SELECT DISTINCT anchor_id ... [WHERE anchor_id > $after] ORDER BY anchor_id LIMIT $n`.
    async fn anchors(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<Uuid>, LedgerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut query = Records::find()
            .select_only()
            .column(Column::AnchorId)
            .distinct();
        if let Some(after) = after {
            query = query.filter(Column::AnchorId.gt(after));
        }
        query
            .order_by_asc(Column::AnchorId)
            .limit(u64::try_from(limit).unwrap_or(u64::MAX))
            .into_tuple::<Uuid>()
            .all(&self.db)
            .await
            .map_err(read_err)
    }

    async fn count(&self) -> Result<u64, LedgerError> {
        Records::find().count(&self.db).await.map_err(read_err)
    }

    async fn count_anchor(&self, anchor_id: Uuid) -> Result<u64, LedgerError> {
        Records::find()
            .filter(Column::AnchorId.eq(anchor_id))
            .count(&self.db)
            .await
            .map_err(read_err)
    }

    /// `SELECT ... WHERE rid = ANY($1)`, in chunks of `MAX_RIDS_PER_QUERY` rids.
    async fn get_many(&self, rids: &[Uuid]) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        let mut out = Vec::new();
        for chunk in rids.chunks(MAX_RIDS_PER_QUERY) {
            let rows = Records::find()
                .filter(Column::Rid.is_in(chunk.iter().copied()))
                .all(&self.db)
                .await
                .map_err(read_err)?;
            for row in rows {
                out.push(to_record(row)?);
            }
        }
        Ok(out)
    }

    /// One keyset query per page, served by `idx_records_anchor_ts` (an index range scan
    /// from the position on, then an incremental sort by `rid` within equal `(anchor_id, ts)`,
    /// stopped by the `LIMIT`).
    async fn scan(
        &self,
        after: Option<&ScanKey>,
        since: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        use sea_orm::{DbBackend, Statement};
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conditions: Vec<String> = Vec::new();
        let mut values: Vec<sea_orm::Value> = Vec::new();
        if let Some(key) = after {
            values.extend([key.anchor_id.into(), key.ts.into(), key.rid.into()]);
            conditions.push("(anchor_id, ts, rid) > ($1, $2, $3)".into());
        }
        if let Some(since) = since {
            values.push(since.into());
            conditions.push(format!("ts >= ${}", values.len()));
        }
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        let sql = format!(
            "SELECT * FROM ledger_records {} ORDER BY anchor_id, ts, rid LIMIT ${}",
            if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            },
            values.len()
        );
        Records::find()
            .from_raw_sql(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                values,
            ))
            .all(&self.db)
            .await
            .map_err(read_err)?
            .into_iter()
            .map(to_record)
            .collect()
    }

    /// A round trip through the pool (SeaORM's `ping`).
    async fn ping(&self) -> Result<(), LedgerError> {
        self.db.ping().await.map_err(|e| classify(&e, None))
    }

    async fn replication(
        &self,
        limit: std::time::Duration,
    ) -> Option<Result<crate::pg::replication::ReplicationState, LedgerError>> {
        if self.replication == crate::config::Replication::Local {
            return None;
        }
        Some(
            crate::pg::replication::state(
                self.db.get_postgres_connection_pool(),
                self.replication,
                limit,
            )
            .await,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::error::Error as StdError;
    use std::fmt;

    use sea_orm::ConnAcquireErr;
    use sea_orm::sqlx::error::{DatabaseError, ErrorKind};

    use super::*;

    /// A database error as the server would report it: SQLSTATE and constraint.
    #[derive(Debug)]
    struct ServerError {
        code: &'static str,
        constraint: Option<&'static str>,
    }

    impl fmt::Display for ServerError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "server error {}", self.code)
        }
    }

    impl StdError for ServerError {}

    impl DatabaseError for ServerError {
        fn message(&self) -> &str {
            "server error"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.code))
        }
        fn constraint(&self) -> Option<&str> {
            self.constraint
        }
        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    /// The predecessor check's message names the anchor and predecessor, so a multi-row
    /// statement refused by it is attributed to one anchor.
    #[test]
    fn predecessor_check_message_names_the_anchor() {
        let anchor = Uuid::new_v4();
        let prev = RecordHash::digest(b"x");
        let msg = format!(
            "record {} of anchor {anchor} names predecessor {prev}, which is not stored in that anchor",
            Uuid::new_v4()
        );
        assert_eq!(parse_prev_check(&msg), Some((anchor, prev)));
        assert_eq!(parse_prev_check("something else"), None);
    }

    fn server(code: &'static str, constraint: Option<&'static str>) -> DbErr {
        let err = sqlx::Error::Database(Box::new(ServerError { code, constraint }));
        DbErr::Exec(RuntimeErr::SqlxError(Arc::new(err)))
    }

    fn sqlx_err(err: sqlx::Error) -> DbErr {
        DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
    }

    fn record() -> LedgerRecord {
        LedgerRecord {
            rid: Uuid::from_u128(7),
            anchor_id: Uuid::from_u128(8),
            slot: "s".into(),
            kind: "k".into(),
            ts: chrono::Utc::now(),
            prev_hash: Some(RecordHash::from_bytes([0xaa; 32])),
            hash: RecordHash::from_bytes([0xbb; 32]),
            payload: ledger_entities::Payload::from_value(&serde_json::json!({}))
                .expect("canonical"),
            sig: None,
            producer: "p".into(),
            version: "v1".into(),
        }
    }

    fn is_unavailable(e: &LedgerError) -> bool {
        matches!(e, LedgerError::Unavailable(_))
    }

    /// Every connectivity failure named by the design is classified `Unavailable`.
    #[test]
    fn connectivity_errors_are_unavailable() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let cases = vec![
            sqlx_err(sqlx::Error::Io(refused)),
            sqlx_err(sqlx::Error::Io(reset)),
            sqlx_err(sqlx::Error::PoolTimedOut),
            sqlx_err(sqlx::Error::PoolClosed),
            sqlx_err(sqlx::Error::Protocol("unexpected message".into())),
            sqlx_err(sqlx::Error::Tls("handshake failed".into())),
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            DbErr::Conn(RuntimeErr::Internal("cannot connect".into())),
            server("08006", None),
            server("08001", None),
            server("57P01", None),
            server("57P02", None),
            server("57P03", None),
            server("57014", None),
            server("53300", None),
            // A standby answered: read-only transaction (after a primary switchover).
            server("25006", None),
        ];
        for err in cases {
            let classified = classify(&err, None);
            assert!(
                is_unavailable(&classified),
                "{err} classified as {classified:?}"
            );
        }
    }

    /// A refused login or a missing database is `AccessDenied` (a configuration error, no
    /// fallback), whether it comes while connecting or on a statement.
    #[test]
    fn refused_login_and_missing_database_are_access_denied() {
        for code in ["28P01", "28000", "3D000"] {
            let err = sqlx::Error::Database(Box::new(ServerError {
                code,
                constraint: None,
            }));
            let on_connect = DbErr::Conn(RuntimeErr::SqlxError(Arc::new(err)));
            for e in [on_connect, server(code, None)] {
                let classified = classify(&e, None);
                assert!(
                    matches!(classified, LedgerError::AccessDenied(ref m) if m.contains(code)),
                    "{code}: {classified:?}"
                );
            }
        }
        // Any other failure while connecting stays connectivity.
        let other = sqlx::Error::Database(Box::new(ServerError {
            code: "XX000",
            constraint: None,
        }));
        assert!(is_unavailable(&classify(
            &DbErr::Conn(RuntimeErr::SqlxError(Arc::new(other))),
            None
        )));
    }

    /// Deadlocks and serialization failures are `Contention` (retried), never connectivity
    /// and never a plain data error.
    #[test]
    fn deadlock_and_serialization_failure_are_contention() {
        for code in ["40P01", "40001"] {
            let classified = classify(&server(code, None), None);
            assert!(
                matches!(classified, LedgerError::Contention(_)),
                "{code}: {classified:?}"
            );
        }
    }

    /// A contention error is retried until the operation succeeds; a data error is not.
    #[test]
    fn contention_is_retried_data_errors_are_not() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let attempts = std::cell::Cell::new(0);
        let got = rt.block_on(retry_contention(std::time::Duration::from_secs(5), || {
            attempts.set(attempts.get() + 1);
            let n = attempts.get();
            async move {
                if n < 4 {
                    Err(server("40P01", None))
                } else {
                    Ok(n)
                }
            }
        }));
        assert_eq!(got.ok(), Some(4));
        attempts.set(0);
        let got = rt.block_on(retry_contention(std::time::Duration::from_secs(5), || {
            attempts.set(attempts.get() + 1);
            async { Err::<(), _>(server("23502", None)) }
        }));
        assert!(got.is_err());
        assert_eq!(attempts.get(), 1);
    }

    /// A duplicate on the fork guard, or a missing predecessor (the predecessor check), is
    /// `ForkRefused` with the record's anchor and predecessor.
    #[test]
    fn fork_guard_violation_is_fork_refused() {
        let r = record();
        assert_eq!(
            classify(&server("23503", Some(PREV_FK)), Some(&r)),
            LedgerError::ForkRefused {
                anchor_id: r.anchor_id,
                prev_hash: r.prev_hash,
            }
        );
        assert_eq!(
            classify(&server("23505", Some(FORK_GUARD)), Some(&r)),
            LedgerError::ForkRefused {
                anchor_id: r.anchor_id,
                prev_hash: r.prev_hash,
            }
        );
    }

    /// A duplicate rid or hash is `Conflict` naming the record's rid.
    #[test]
    fn duplicate_rid_or_hash_is_conflict() {
        let r = record();
        for constraint in [RID_KEY, HASH_KEY] {
            match classify(&server("23505", Some(constraint)), Some(&r)) {
                e @ LedgerError::Conflict { .. } => {
                    let LedgerError::Conflict { rid, .. } = &e else {
                        unreachable!()
                    };
                    assert_eq!(*rid, r.rid);
                    // Either may be the same record stored by another process (the hash:
                    // sealed by it to the same microsecond): the chain actor looks it up.
                    assert!(
                        crate::error::stored_by_another_write(&e),
                        "{constraint}: {e}"
                    );
                }
                other => panic!("{constraint}: {other:?}"),
            }
        }
    }

    /// Data errors (other constraints, bad values, unattributable duplicates) are `Database`,
    /// never connectivity.
    #[test]
    fn data_errors_are_database_errors() {
        let cases = vec![
            server("23505", Some("some_other_key")),
            server("23505", Some(FORK_GUARD)), // no record, no detail: cannot attribute
            server("23502", None),
            server("22P02", None),
            server("22021", None),
            server("42P01", None),
            sqlx_err(sqlx::Error::RowNotFound),
            sqlx_err(sqlx::Error::Decode("bad".into())),
            DbErr::Type("bad type".into()),
            DbErr::RecordNotInserted,
        ];
        for err in cases {
            let classified = classify(&err, None);
            assert!(
                matches!(classified, LedgerError::Database(_)),
                "{err} classified as {classified:?}"
            );
        }
    }

    /// The unique-violation detail of PostgreSQL yields the key values.
    #[test]
    fn key_detail_is_parsed() {
        let anchor = Uuid::from_u128(9);
        let prev = RecordHash::from_bytes([0xcc; 32]);
        let detail = format!("Key (anchor_id, prev_hash)=({anchor}, {prev}) already exists.");
        assert_eq!(
            unique_violation(Some(FORK_GUARD), Some(&detail), None),
            Some(LedgerError::ForkRefused {
                anchor_id: anchor,
                prev_hash: Some(prev),
            })
        );
        let genesis = format!("Key (anchor_id, prev_hash)=({anchor}, null) already exists.");
        assert_eq!(
            unique_violation(Some(FORK_GUARD), Some(&genesis), None),
            Some(LedgerError::ForkRefused {
                anchor_id: anchor,
                prev_hash: None,
            })
        );
        let rid = Uuid::from_u128(10);
        let detail = format!("Key (rid)=({rid}) already exists.");
        assert!(matches!(
            unique_violation(Some(RID_KEY), Some(&detail), None),
            Some(LedgerError::Conflict { rid: r, .. }) if r == rid
        ));
    }

    /// An error quoting the DSN or its password (raw or percent-decoded) loses them.
    #[test]
    fn scrub_removes_the_dsn_and_password() {
        let dsn = Dsn::parse("postgres://u:hun%40ter2@h/db").expect("parses");
        let text = format!(
            "cannot reach {}; password hun%40ter2 or hun@ter2",
            dsn.expose()
        );
        let LedgerError::Unavailable(msg) = scrub(LedgerError::Unavailable(text), &dsn) else {
            panic!("variant changed");
        };
        assert!(!msg.contains("ter2"), "{msg}");
        assert!(msg.contains("postgres://u:****@h/db"), "{msg}");
    }
}
