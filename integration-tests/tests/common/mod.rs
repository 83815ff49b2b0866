//! Shared test support: a private PostgreSQL database per test, in the style of SeaORM's
//! own test `TestContext`.
//!
//! The server comes from `LEDGER_TEST_DSN` (default [`DEFAULT_DSN`]). Each [`TestContext`]
//! creates a database named `avl_test_<name>_<random>` on it, so tests run in parallel
//! without seeing each other's rows, and drops it again in [`TestContext::teardown`] (or,
//! best effort, when the context is dropped without it, e.g. after a failed assertion).
//! An unreachable server fails the test with instructions; it never skips silently.

#![allow(
    dead_code,
    reason = "each test binary compiles this module and uses a different part of it"
)]

use std::borrow::Cow;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, RuntimeErr};
use url::Url;
use uuid::Uuid;

/// Environment variable naming the PostgreSQL server the tests use.
pub const DSN_ENV: &str = "LEDGER_TEST_DSN";

/// The server used when [`DSN_ENV`] is unset: the local PostgreSQL 15 with trust auth.
pub const DEFAULT_DSN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Connections per test pool. Small because many tests hold a pool at once and the server
/// allows 100 connections by default.
const POOL_SIZE: u32 = 4;

/// How long to wait for the server before failing: an unreachable server should fail the
/// test quickly, not after sqlx's 30 s default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A freshly created database that belongs to one test.
pub struct TestContext {
    /// Connection pool to the test database.
    pub db: DatabaseConnection,
    /// DSN of the test database (with the password, if `LEDGER_TEST_DSN` has one), for code
    /// under test that opens its own connections.
    pub dsn: String,
    /// Name of the test database.
    pub db_name: String,
    /// DSN of the server's maintenance database, used to create and drop the test database.
    admin_dsn: String,
    /// Set by `teardown`, so `Drop` does not drop the database a second time.
    torn_down: bool,
}

impl TestContext {
    /// A new database with every migration applied.
    pub async fn new(name: &str) -> Self {
        let ctx = Self::new_unmigrated(name).await;
        if let Err(err) = Migrator::up(&ctx.db, None).await {
            panic!("migrating test database {}: {err}", ctx.db_name);
        }
        ctx
    }

    /// A new, empty database: no ledger tables and no `seaql_migrations`.
    pub async fn new_unmigrated(name: &str) -> Self {
        let admin_dsn = std::env::var(DSN_ENV).unwrap_or_else(|_| DEFAULT_DSN.to_owned());
        let db_name = unique_db_name(name);
        let dsn = dsn_for_database(&admin_dsn, &db_name);

        let admin = match connect(&admin_dsn, 1).await {
            Ok(admin) => admin,
            Err(first) => {
                // The default server is this machine's: start it if it is installed but not
                // running (never anything else: a test only ever starts the `main` cluster).
                let started = std::env::var(DSN_ENV).is_err() && start_local_server();
                let retried = if started {
                    connect(&admin_dsn, 1).await
                } else {
                    Err(first)
                };
                retried.unwrap_or_else(|err| {
                    panic!(
                        "PostgreSQL not reachable at {}: start it, or set {DSN_ENV}=postgres://user@host:port/db ({err})",
                        redact(&admin_dsn)
                    )
                })
            }
        };
        // `db_name` is built from [a-z0-9_] only, so quoting it is enough.
        if let Err(err) = admin
            .execute_unprepared(&format!("CREATE DATABASE \"{db_name}\""))
            .await
        {
            panic!("creating test database {db_name}: {err}");
        }
        // Best effort: the admin pool is dropped either way; a failed close changes nothing.
        let _ = admin.close().await;

        let db = connect(&dsn, POOL_SIZE)
            .await
            .unwrap_or_else(|err| panic!("connecting to test database {db_name}: {err}"));

        TestContext {
            db,
            dsn,
            db_name,
            admin_dsn,
            torn_down: false,
        }
    }

    /// Closes the pool and drops the database. Call it at the end of every test; if a test
    /// fails before reaching it, `Drop` still tries.
    pub async fn teardown(mut self) {
        // Ignore a failed close: `WITH (FORCE)` below ends any connection still open.
        let _ = self.db.close_by_ref().await;
        if let Err(err) = drop_database(&self.admin_dsn, &self.db_name).await {
            panic!("dropping test database {}: {err}", self.db_name);
        }
        self.torn_down = true;
    }
}

impl Drop for TestContext {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        // Usually reached while a failed test unwinds. `Drop` cannot await, and blocking on
        // the test's own runtime from inside it would deadlock, so the database is dropped
        // from a fresh runtime on a separate thread. Failures are reported, never raised:
        // panicking while unwinding would abort the whole test binary.
        let admin_dsn = self.admin_dsn.clone();
        let db_name = self.db_name.clone();
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?;
            runtime
                .block_on(drop_database(&admin_dsn, &db_name))
                .map_err(|err| err.to_string())
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!(
                "warning: could not drop test database {}: {err}",
                self.db_name
            ),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.db_name),
        }
    }
}

/// The SQLSTATE of a database error, e.g. `"23505"` for a unique violation.
pub fn sqlstate(err: &DbErr) -> Option<String> {
    database_error(err)
        .and_then(|db_err| db_err.code())
        .map(Cow::into_owned)
}

/// The name of the constraint a database error reports, if any.
pub fn constraint_name(err: &DbErr) -> Option<String> {
    database_error(err)
        .and_then(|db_err| db_err.constraint())
        .map(str::to_owned)
}

fn database_error(err: &DbErr) -> Option<&(dyn sea_orm::sqlx::error::DatabaseError + 'static)> {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(sqlx_err))
        | DbErr::Query(RuntimeErr::SqlxError(sqlx_err))
        | DbErr::Conn(RuntimeErr::SqlxError(sqlx_err)) => sqlx_err.as_database_error(),
        _ => None,
    }
}

/// Starts this machine's PostgreSQL `main` cluster (Debian's `pg_ctlcluster`, newest
/// installed version) when the default server does not answer, and waits up to 30 s for it.
/// One process-wide attempt; true when the server answers afterwards.
fn start_local_server() -> bool {
    static STARTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STARTED.get_or_init(|| {
        let Some(version) = std::fs::read_dir("/etc/postgresql").ok().and_then(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        }) else {
            return false;
        };
        eprintln!("PostgreSQL not answering: starting the local cluster {version}/main");
        // Another test binary may be starting it at the same time: a failed start is fine as
        // long as the server answers afterwards.
        let _ = std::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", "start"])
            .status();
        (0..30).any(|_| {
            let ready = std::process::Command::new("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", "5432"])
                .status()
                .is_ok_and(|s| s.success());
            if !ready {
                std::thread::sleep(Duration::from_secs(1));
            }
            ready
        })
    })
}

async fn connect(dsn: &str, pool_size: u32) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(dsn);
    options
        .max_connections(pool_size)
        .connect_timeout(CONNECT_TIMEOUT)
        .acquire_timeout(CONNECT_TIMEOUT)
        .sqlx_logging(false);
    Database::connect(options).await
}

async fn drop_database(admin_dsn: &str, db_name: &str) -> Result<(), DbErr> {
    let admin = connect(admin_dsn, 1).await?;
    // FORCE ends sessions still connected (a pool of the test, a leaked actor's connection),
    // which would otherwise make DROP DATABASE fail.
    let result = admin
        .execute_unprepared(&format!(
            "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
        ))
        .await;
    let _ = admin.close().await;
    result.map(|_| ())
}

/// `avl_test_<name>_<16 random hex digits>`: the name reduced to lowercase ASCII letters,
/// digits and `_` (so it needs no escaping) and cut to 32 characters, keeping the whole
/// within PostgreSQL's 63-byte identifier limit.
fn unique_db_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    let random = Uuid::new_v4().simple().to_string();
    format!("avl_test_{clean}_{}", &random[..16])
}

/// `dsn` with its database (the URL path) replaced by `db_name`; query parameters such as
/// `sslmode` are kept.
fn dsn_for_database(dsn: &str, db_name: &str) -> String {
    let mut url = Url::parse(dsn).unwrap_or_else(|err| {
        // The value is not echoed: it may hold a password.
        panic!("{DSN_ENV} is not a valid URL like postgres://user@host:port/db: {err}")
    });
    url.set_path(&format!("/{db_name}"));
    url.into()
}

/// `dsn` without its password, for messages.
fn redact(dsn: &str) -> String {
    match Url::parse(dsn) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Only fails for URLs that cannot have a password, which this one has.
                let _ = url.set_password(None);
            }
            url.into()
        }
        Err(_) => "<unparsable DSN>".to_owned(),
    }
}

/// Writes `signer`'s key to a fresh `checkpoint.key` (mode 0600, as `ledger keygen` does) in
/// the temporary directory and returns its path, for `checkpoint_key`.
pub fn key_file(signer: &ledger_tlog::note::NoteSigner) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("avl-test-key-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create the key directory");
    let path = dir.join("checkpoint.key");
    std::fs::write(&path, signer.to_key_string().as_bytes()).expect("write the key file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("restrict the key file to its owner");
    }
    path
}
