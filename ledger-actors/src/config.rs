//! Configuration: the YAML `ledger:` section, overridden by `LEDGER_*` environment variables.
//!
//! ```yaml
//! ledger:
//!   backend: postgres          # memory | postgres
//!   dsn: postgres://avl:secret@127.0.0.1:5432/avl
//!   pool_size: 10
//!   timeout: 5                 # seconds
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::LedgerError;

/// Which store holds the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process memory: fast, lost when the process exits. Never touches the network.
    #[default]
    Memory,
    /// PostgreSQL through SeaORM: every acknowledged append is durable.
    Postgres,
}

impl Backend {
    /// The lowercase name used in configuration and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Postgres => "postgres",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, LedgerError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" => Ok(Backend::Memory),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            other => Err(LedgerError::Config(format!(
                "backend: unknown backend {other:?}; expected memory or postgres"
            ))),
        }
    }
}

/// A PostgreSQL connection string. Accepts `postgres://`, `postgresql://` and the SQLAlchemy
/// form `postgresql+asyncpg://` (same meaning). The password is kept out of `Debug`,
/// `Display` and every error message; only [`Dsn::expose`] returns it, for connecting.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn {
    url: url::Url,
}

impl Dsn {
    /// Parses and normalizes a DSN. Errors never contain the input (it may hold a password).
    pub fn parse(raw: &str) -> Result<Self, LedgerError> {
        let raw = raw.trim();
        let (scheme, rest) = raw.split_once("://").ok_or_else(|| {
            LedgerError::Config(
                "dsn: expected postgres://user[:password]@host[:port]/database".into(),
            )
        })?;
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" | "postgresql+asyncpg" => {}
            other => {
                return Err(LedgerError::Config(format!(
                    "dsn: unsupported scheme {other:?}; expected postgres://, postgresql:// or postgresql+asyncpg://"
                )));
            }
        }
        let url = url::Url::parse(&format!("postgres://{rest}"))
            .map_err(|e| LedgerError::Config(format!("dsn: malformed ({e})")))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(LedgerError::Config("dsn: no host".into()));
        }
        if url.path().trim_start_matches('/').is_empty() {
            return Err(LedgerError::Config("dsn: no database name".into()));
        }
        Ok(Self { url })
    }

    /// The full DSN including the password, for the database driver only. Never log it.
    pub fn expose(&self) -> &str {
        self.url.as_str()
    }

    /// The database name.
    pub fn database(&self) -> &str {
        self.url.path().trim_start_matches('/')
    }

    /// The same server with another database name (used by tools and tests).
    pub fn with_database(&self, name: &str) -> Self {
        let mut url = self.url.clone();
        url.set_path(&format!("/{name}"));
        Self { url }
    }

    /// The DSN with any password replaced by `****`: safe for logs.
    pub fn redacted(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            // Setting a password fails only for URLs that cannot have one ("cannot-be-a-base"),
            // which `parse` has ruled out by requiring a host.
            let _ = url.set_password(Some("****"));
        }
        url.to_string()
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Dsn").field(&self.redacted()).finish()
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for Dsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Dsn::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The ledger's settings. Every field has a default, so an empty `ledger:` section (or none)
/// means the in-memory backend with defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// `memory` (default) or `postgres`. Env: `LEDGER_BACKEND`.
    pub backend: Backend,
    /// PostgreSQL DSN, required for `postgres`. Env: `LEDGER_DSN`.
    pub dsn: Option<Dsn>,
    /// Database connection pool size. Env: `LEDGER_POOL_SIZE`.
    pub pool_size: u32,
    /// Seconds to wait for capacity, an append's outcome, or the database. Env:
    /// `LEDGER_TIMEOUT`.
    #[serde(deserialize_with = "de_timeout")]
    pub timeout: Duration,
    /// Largest canonical payload accepted, in bytes (default 1 MiB).
    pub max_payload_bytes: usize,
    /// Most appends in flight at once across all anchors; beyond it appends wait up to
    /// `timeout`, then fail with `Overloaded`. Bounds memory.
    pub max_in_flight: usize,
    /// Mailbox capacity of each chain actor.
    pub mailbox_capacity: usize,
    /// Seconds an anchor may stay idle before its chain actor is stopped (passivated).
    #[serde(deserialize_with = "de_passivate_after")]
    pub passivate_after: Duration,
    /// Worker threads (actix Arbiters) for chain actors; 0 means one per core.
    pub workers: usize,
    /// Most records in one PostgreSQL batch (multi-row INSERT, one transaction).
    pub batch_size: usize,
    /// Milliseconds a partial batch may wait for more records before it is written.
    #[serde(deserialize_with = "de_batch_linger")]
    pub batch_linger: Duration,
    /// Run pending migrations at start instead of refusing to start.
    pub auto_migrate: bool,
    /// Most records held on the memory fallback during a PostgreSQL outage.
    pub buffer_capacity: usize,
    /// Seconds a record may wait for PostgreSQL before the supervisor declares an outage
    /// (catches black-holed connections that never error).
    #[serde(deserialize_with = "de_failover_after")]
    pub failover_after: Duration,
    /// Directory for the outage spool file (fsynced before acknowledging); none: no spool.
    pub spool_dir: Option<PathBuf>,
    /// Seconds between checkpoints of the transparency log (written only when it grew);
    /// 0 turns the integrator off. Env: `LEDGER_CHECKPOINT_INTERVAL`.
    #[serde(deserialize_with = "de_checkpoint_interval")]
    pub checkpoint_interval: Duration,
    /// Path of the checkpoint signer key (`ledger keygen`); none: checkpoints unsigned.
    /// Env: `LEDGER_CHECKPOINT_KEY`.
    pub checkpoint_key: Option<PathBuf>,
    /// Seconds an integrator's lease lasts; a standby process takes over within about
    /// 1.33 × this after the holder dies. Env: `LEDGER_INTEGRATOR_LEASE`.
    #[serde(deserialize_with = "de_integrator_lease")]
    pub integrator_lease: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Memory,
            dsn: None,
            pool_size: 10,
            timeout: Duration::from_secs(5),
            max_payload_bytes: ledger_entities::validate::DEFAULT_MAX_PAYLOAD_BYTES,
            max_in_flight: 65_536,
            mailbox_capacity: 64,
            passivate_after: Duration::from_secs(60),
            workers: 0,
            batch_size: 1000,
            batch_linger: Duration::from_millis(2),
            auto_migrate: false,
            buffer_capacity: 1_000_000,
            failover_after: Duration::from_secs(1),
            spool_dir: None,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_key: None,
            integrator_lease: Duration::from_secs(3),
        }
    }
}

/// A duration given as a number of `unit_secs`-long units, with the key named in errors
/// (serde's custom errors do not carry the field name).
fn duration_field<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
    unit: &str,
    unit_secs: f64,
) -> Result<Duration, D::Error> {
    let n = f64::deserialize(d).map_err(|e| {
        serde::de::Error::custom(format!("{key}: expected a number of {unit} ({e})"))
    })?;
    Duration::try_from_secs_f64(n * unit_secs).map_err(|_| {
        serde::de::Error::custom(format!(
            "{key}: expected a non-negative number of {unit}, got {n}"
        ))
    })
}

fn de_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_field(d, "timeout", "seconds", 1.0)
}

fn de_passivate_after<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_field(d, "passivate_after", "seconds", 1.0)
}

fn de_failover_after<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_field(d, "failover_after", "seconds", 1.0)
}

fn de_checkpoint_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_field(d, "checkpoint_interval", "seconds", 1.0)
}

fn de_integrator_lease<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_field(d, "integrator_lease", "seconds", 1.0)
}

fn de_batch_linger<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_field(d, "batch_linger", "milliseconds", 0.001)
}

#[derive(Deserialize)]
struct ConfigFile {
    /// Other top-level sections belong to the host application and are ignored.
    ledger: Option<LedgerConfig>,
}

impl LedgerConfig {
    /// Loads the configuration the way the CLI and hosts do: the YAML file named by `path`
    /// or else by `LEDGER_CONFIG` (if any), then the `LEDGER_*` environment variables.
    pub fn load(path: Option<&Path>) -> Result<Self, LedgerError> {
        let from_env = std::env::var_os("LEDGER_CONFIG").map(PathBuf::from);
        let mut config = match path.map(Path::to_path_buf).or(from_env) {
            Some(p) => Self::from_yaml_file(&p)?,
            None => Self::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.check()?;
        Ok(config)
    }

    /// Reads the `ledger:` section of a YAML file.
    pub fn from_yaml_file(path: &Path) -> Result<Self, LedgerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LedgerError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_yaml_str(&text)
            .map_err(|e| LedgerError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses YAML text holding a `ledger:` section. Errors name the key and line.
    pub fn from_yaml_str(text: &str) -> Result<Self, LedgerError> {
        let file: ConfigFile = serde_yaml_ng::from_str(text).map_err(|e| {
            // serde_yaml_ng's message names the key path and line/column; a DSN's password
            // cannot leak through it because `Dsn`'s own error never echoes the input.
            LedgerError::Config(e.to_string())
        })?;
        let config = file.ledger.unwrap_or_default();
        config.check()?;
        Ok(config)
    }

    /// Applies `LEDGER_BACKEND`, `LEDGER_DSN`, `LEDGER_POOL_SIZE` and `LEDGER_TIMEOUT`
    /// (seconds) from `get`, which is `std::env::var` in production and a map in tests.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), LedgerError> {
        if let Some(v) = get("LEDGER_BACKEND") {
            self.backend = v
                .parse()
                .map_err(|e: LedgerError| LedgerError::Config(format!("LEDGER_BACKEND: {e}")))?;
        }
        if let Some(v) = get("LEDGER_DSN") {
            self.dsn =
                Some(Dsn::parse(&v).map_err(|e| LedgerError::Config(format!("LEDGER_DSN: {e}")))?);
        }
        if let Some(v) = get("LEDGER_POOL_SIZE") {
            self.pool_size = v.trim().parse().map_err(|_| {
                LedgerError::Config(format!(
                    "LEDGER_POOL_SIZE: expected a whole number of connections, got {v:?}"
                ))
            })?;
        }
        if let Some(v) = get("LEDGER_TIMEOUT") {
            let secs: f64 = v.trim().parse().map_err(|_| {
                LedgerError::Config(format!("LEDGER_TIMEOUT: expected seconds, got {v:?}"))
            })?;
            self.timeout = Duration::try_from_secs_f64(secs).map_err(|_| {
                LedgerError::Config(format!(
                    "LEDGER_TIMEOUT: expected non-negative seconds, got {v:?}"
                ))
            })?;
        }
        for (key, field) in [
            ("LEDGER_CHECKPOINT_INTERVAL", &mut self.checkpoint_interval),
            ("LEDGER_INTEGRATOR_LEASE", &mut self.integrator_lease),
        ] {
            if let Some(v) = get(key) {
                *field = v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| {
                        LedgerError::Config(format!(
                            "{key}: expected non-negative seconds, got {v:?}"
                        ))
                    })?;
            }
        }
        if let Some(v) = get("LEDGER_CHECKPOINT_KEY") {
            self.checkpoint_key = Some(PathBuf::from(v));
        }
        self.check()
    }

    /// Checks values that parse but make no sense together.
    pub fn check(&self) -> Result<(), LedgerError> {
        let bad = |key: &str, why: &str| Err(LedgerError::Config(format!("{key}: {why}")));
        if self.backend == Backend::Postgres && self.dsn.is_none() {
            return bad("dsn", "backend is postgres but no dsn is set (LEDGER_DSN)");
        }
        if self.pool_size == 0 {
            return bad("pool_size", "must be at least 1");
        }
        if self.timeout.is_zero() {
            return bad("timeout", "must be greater than 0 seconds");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1");
        }
        if self.mailbox_capacity == 0 {
            return bad("mailbox_capacity", "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.max_payload_bytes == 0 {
            return bad("max_payload_bytes", "must be at least 1");
        }
        if self.integrator_lease < Duration::from_millis(300) {
            return bad("integrator_lease", "must be at least 0.3 seconds");
        }
        Ok(())
    }

    /// Number of chain-actor worker threads to start.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(2, usize::from)
        }
    }

    /// The validation limits derived from this configuration.
    pub fn limits(&self) -> ledger_entities::validate::Limits {
        ledger_entities::validate::Limits {
            max_payload_bytes: self.max_payload_bytes,
            ..Default::default()
        }
    }
}
