//! Configuration: the YAML `ledger:` section, overridden by `LEDGER_*` environment variables.
//!
//! ```yaml
//! ledger:
//!   backend: postgres          # memory | postgres
//!   dsn: postgres://avl:secret@127.0.0.1:5432/avl
//!   pool_size: 10
//!   timeout: 5s                # a plain number means seconds; or "250ms", "2m", ...
//! ```
//!
//! [`LedgerConfig::load`] reads the file (if any), applies the environment, then checks the
//! result once: every value has a range, a file without a `ledger:` section is refused, and
//! no error ever echoes a password (see [`redact_secrets`]).
//!
//! # Layout
//! - [`Backend`], [`Dsn`] (password held in a [`secrecy::SecretString`]).
//! - [`LedgerConfig`]: the settings, their defaults, [`LedgerConfig::load`] and
//!   [`LedgerConfig::check`] (the ranges).
//! - duration fields: a number (seconds, or milliseconds for `batch_linger`) or a
//!   [`humantime`] string.
//! - [`redact_secrets`]: the scrubber every configuration error goes through.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::error::LedgerError;

/// Which store holds the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// In-process memory: fast, lost when the process exits. Never touches the network.
    #[default]
    Memory,
    /// PostgreSQL through SeaORM: appends acknowledged [`crate::Durability::Committed`] are
    /// in PostgreSQL; see [`crate::Durability`] for what outages change.
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

/// What `Committed` promises on PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replication {
    /// Committed on the server the DSN reaches (its WAL flushed there). With PostgreSQL's
    /// default asynchronous streaming replication a failover to a standby that was behind
    /// loses what it had not received.
    #[default]
    Local,
    /// Committed on the primary *and* flushed by a synchronous standby: every connection
    /// sets `synchronous_commit = on`, the start is refused when the server has no
    /// `synchronous_standby_names`, and a write that finds them gone is refused (its
    /// records wait in the outage buffer, acknowledged `Buffered`), so a failover to the
    /// synchronous standby loses no `Committed` record.
    Synchronous,
}

impl Replication {
    /// The lowercase name used in configuration, health and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Replication::Local => "local",
            Replication::Synchronous => "synchronous",
        }
    }
}

impl std::str::FromStr for Replication {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, LedgerError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(Replication::Local),
            "synchronous" | "sync" => Ok(Replication::Synchronous),
            _ => Err(LedgerError::Config(format!(
                "replication: unknown mode {}; expected local or synchronous",
                shown(s)
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Replication {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(|e: LedgerError| match e {
            LedgerError::Config(m) => serde::de::Error::custom(m),
            other => serde::de::Error::custom(other),
        })
    }
}

/// A configuration value shown in an error only when it is a plain short word: anything else
/// (a DSN typed into the wrong place, say) may hold a secret.
fn shown(value: &str) -> String {
    let v = value.trim();
    if !v.is_empty()
        && v.len() <= 24
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        format!("{v:?}")
    } else {
        "a value that is not a backend name (not shown: it may hold a secret)".to_owned()
    }
}

impl std::str::FromStr for Backend {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, LedgerError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" => Ok(Backend::Memory),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(LedgerError::Config(format!(
                "backend: unknown backend {}; expected memory or postgres",
                shown(s)
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Backend {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Not serde's derived enum: its "unknown variant" error quotes the value, which may be
        // a DSN with its password.
        let raw = String::deserialize(d)?;
        raw.parse().map_err(|e: LedgerError| match e {
            LedgerError::Config(m) => serde::de::Error::custom(m),
            other => serde::de::Error::custom(other),
        })
    }
}

/// A PostgreSQL connection string. Accepts `postgres://`, `postgresql://` and the SQLAlchemy
/// form `postgresql+asyncpg://` (same meaning). The full DSN is kept in a
/// [`SecretString`] (zeroed on drop); `Debug`, `Display` and every error see only the
/// redacted form, and only [`Dsn::expose`] returns the password, for connecting.
///
/// Several hosts, as libpq takes them (`postgres://u@h1:5432,h2:5433/db`), with
/// `target_session_attrs` (`read-write`, `primary`, `any`, `read-only`, `standby`,
/// `prefer-standby`; libpq's meanings) make a multi-host DSN: the hosts are tried in order,
/// see [`Dsn::endpoints`]. The driver itself takes one host, so [`Dsn::expose`] is the
/// first host's DSN and the ledger's PostgreSQL code picks the host
/// (`pg::endpoints`).
#[derive(Clone)]
pub struct Dsn {
    /// The DSN with any password replaced by `****` (the first host).
    public: url::Url,
    /// The DSN as the driver needs it, password included (the first host).
    secret: SecretString,
    /// Every host with its port, in the DSN's order (one for a plain DSN).
    hosts: Vec<(String, u16)>,
    /// `target_session_attrs`, if the DSN sets it (taken out of the driver's DSN).
    attrs: Option<SessionAttrs>,
}

/// What kind of server a connection wants (libpq's `target_session_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    /// Any server that answers.
    Any,
    /// A server that takes writes (not in recovery, `transaction_read_only` off).
    ReadWrite,
    /// A server not in recovery.
    Primary,
    /// A server that does not take writes.
    ReadOnly,
    /// A server in recovery.
    Standby,
    /// A standby if one answers, else any server.
    PreferStandby,
}

impl SessionAttrs {
    fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "any" => SessionAttrs::Any,
            "read-write" => SessionAttrs::ReadWrite,
            "primary" => SessionAttrs::Primary,
            "read-only" => SessionAttrs::ReadOnly,
            "standby" => SessionAttrs::Standby,
            "prefer-standby" => SessionAttrs::PreferStandby,
            _ => return None,
        })
    }

    /// Whether a server `in_recovery` / `read_only` (its `transaction_read_only`) is
    /// acceptable (for [`SessionAttrs::PreferStandby`]: on the standby pass).
    pub fn accepts(self, in_recovery: bool, read_only: bool) -> bool {
        match self {
            SessionAttrs::Any => true,
            SessionAttrs::ReadWrite => !in_recovery && !read_only,
            SessionAttrs::Primary => !in_recovery,
            SessionAttrs::ReadOnly => in_recovery || read_only,
            SessionAttrs::Standby | SessionAttrs::PreferStandby => in_recovery,
        }
    }

    /// The value as written in a DSN.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionAttrs::Any => "any",
            SessionAttrs::ReadWrite => "read-write",
            SessionAttrs::Primary => "primary",
            SessionAttrs::ReadOnly => "read-only",
            SessionAttrs::Standby => "standby",
            SessionAttrs::PreferStandby => "prefer-standby",
        }
    }
}

/// A host of a DSN and its port, if written.
type HostPort = (String, Option<u16>);

/// Splits `authority` (`[user[:pw]@]host[:port][,host[:port]]...`) into the user part (with
/// its `@`) and the hosts; `None` when a host or port is malformed.
fn split_hosts(authority: &str) -> Option<(&str, Vec<HostPort>)> {
    let (user, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let mut out = Vec::new();
    for h in hosts.split(',') {
        let (host, port) = if let Some(rest) = h.strip_prefix('[') {
            let close = rest.find(']')?;
            let host = &h[..close + 2];
            match &rest[close + 1..] {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':')?.parse::<u16>().ok()?)),
            }
        } else {
            match h.rsplit_once(':') {
                Some((host, p)) => (host, Some(p.parse::<u16>().ok()?)),
                None => (h, None),
            }
        };
        if host.is_empty() {
            return None;
        }
        out.push((host.to_owned(), port));
    }
    Some((user, out))
}

impl PartialEq for Dsn {
    fn eq(&self, other: &Self) -> bool {
        self.secret.expose_secret() == other.secret.expose_secret()
    }
}

impl Eq for Dsn {}

/// True for a URL scheme as RFC 3986 spells it (letters, digits, `+-.`), short.
fn looks_like_scheme(s: &str) -> bool {
    s.len() <= 32
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

impl Dsn {
    /// Parses and normalizes a DSN. Errors never contain the input (it may hold a password).
    pub fn parse(raw: &str) -> Result<Self, LedgerError> {
        const FORM: &str = "expected postgres://user[:password]@host[:port]/database";
        let raw = raw.trim();
        let Some((scheme, rest)) = raw.split_once("://").filter(|(s, _)| looks_like_scheme(s))
        else {
            return Err(LedgerError::Config(format!("dsn: no URL scheme; {FORM}")));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" | "postgresql+asyncpg" => {}
            other => {
                return Err(LedgerError::Config(format!(
                    "dsn: unsupported scheme {other:?}; expected postgres://, postgresql:// or postgresql+asyncpg://"
                )));
            }
        }
        // Several hosts (`h1:5432,h2:5433`): the URL is built on the first; the others are
        // kept beside it.
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let Some((user, hosts)) = split_hosts(authority) else {
            return Err(LedgerError::Config(format!(
                "dsn: malformed host list; {FORM} (several hosts: host1:port1,host2:port2)"
            )));
        };
        let first = match &hosts[0] {
            (h, Some(p)) => format!("{h}:{p}"),
            (h, None) => h.clone(),
        };
        let mut url = url::Url::parse(&format!("postgres://{user}{first}{tail}"))
            .map_err(|e| LedgerError::Config(format!("dsn: malformed ({e}); {FORM}")))?;
        let mut attrs = None;
        if url.query_pairs().any(|(k, _)| k == "target_session_attrs") {
            let mut kept = Vec::new();
            for (k, v) in url.query_pairs() {
                if k == "target_session_attrs" {
                    attrs = Some(SessionAttrs::parse(&v).ok_or_else(|| {
                        LedgerError::Config(format!(
                            "dsn: target_session_attrs {}: expected any, read-write, primary, read-only, standby or prefer-standby",
                            shown(&v)
                        ))
                    })?);
                } else {
                    kept.push((k.into_owned(), v.into_owned()));
                }
            }
            if kept.is_empty() {
                url.set_query(None);
            } else {
                url.query_pairs_mut().clear().extend_pairs(kept);
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(LedgerError::Config(format!("dsn: no host; {FORM}")));
        }
        if url.path().trim_start_matches('/').is_empty() {
            return Err(LedgerError::Config(format!(
                "dsn: no database name; {FORM}"
            )));
        }
        let port = url.port().unwrap_or(5432);
        let hosts = hosts
            .into_iter()
            .map(|(h, p)| (h, p.unwrap_or(port)))
            .collect();
        let mut dsn = Self::from_url(url);
        dsn.hosts = hosts;
        dsn.attrs = attrs;
        Ok(dsn)
    }

    /// The hosts with their ports, in the DSN's order (one for a plain DSN).
    pub fn hosts(&self) -> &[(String, u16)] {
        &self.hosts
    }

    /// The DSN's `target_session_attrs`, if it sets one.
    pub fn session_attrs(&self) -> Option<SessionAttrs> {
        self.attrs
    }

    /// One single-host DSN per host, in order (the DSN itself for a plain one).
    pub fn endpoints(&self) -> Vec<Dsn> {
        if self.hosts.len() <= 1 {
            return vec![self.clone()];
        }
        self.hosts
            .iter()
            .map(|(host, port)| {
                // `expose` was produced by `url::Url`, so it parses again; a host that was
                // accepted in the list is accepted alone.
                let mut url =
                    url::Url::parse(self.expose()).unwrap_or_else(|_| self.public.clone());
                let _ = url.set_host(Some(host.trim_start_matches('[').trim_end_matches(']')));
                let _ = url.set_port(Some(*port));
                let mut one = Self::from_url(url);
                one.attrs = self.attrs;
                one
            })
            .collect()
    }

    fn from_url(url: url::Url) -> Self {
        let mut public = url.clone();
        if public.password().is_some() {
            // Setting a password fails only for URLs that cannot have one ("cannot-be-a-base"),
            // which `parse` has ruled out by requiring a host.
            let _ = public.set_password(Some("****"));
        }
        let hosts = vec![(
            url.host_str().unwrap_or_default().to_owned(),
            url.port().unwrap_or(5432),
        )];
        Self {
            public,
            secret: SecretString::from(String::from(url)),
            hosts,
            attrs: None,
        }
    }

    /// The full DSN including the password, for the database driver only. Never log it.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    /// The database name.
    pub fn database(&self) -> &str {
        self.public.path().trim_start_matches('/')
    }

    /// The same server with another database name (used by tools and tests).
    pub fn with_database(&self, name: &str) -> Self {
        // `expose` was produced by `url::Url`, so it parses again.
        let mut url = match url::Url::parse(self.expose()) {
            Ok(u) => u,
            Err(_) => self.public.clone(),
        };
        url.set_path(&format!("/{name}"));
        let mut dsn = Self::from_url(url);
        dsn.hosts = self.hosts.clone();
        dsn.attrs = self.attrs;
        dsn
    }

    /// The DSN with any password replaced by `****`: safe for logs.
    pub fn redacted(&self) -> String {
        let mut shown = self.public.clone();
        if let Some(attrs) = self.attrs {
            shown
                .query_pairs_mut()
                .append_pair("target_session_attrs", attrs.as_str());
        }
        let text = shown.to_string();
        if self.hosts.len() <= 1 {
            return text;
        }
        // The URL holds the first host: show the whole list in its place.
        let first = match shown.port() {
            Some(p) => format!("{}:{p}", shown.host_str().unwrap_or_default()),
            None => shown.host_str().unwrap_or_default().to_owned(),
        };
        let all = self
            .hosts
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        match text.find(&format!("@{first}")) {
            Some(i) => format!("{}@{all}{}", &text[..i], &text[i + 1 + first.len()..]),
            None => text.replacen(&format!("//{first}"), &format!("//{all}"), 1),
        }
    }

    /// `text` with this DSN and its password removed: the full DSN becomes the redacted one,
    /// and the password (as written and percent-decoded) becomes `****`; then
    /// [`redact_secrets`] runs for passwords written elsewhere.
    pub fn scrub(&self, text: &str) -> String {
        let secret = self.expose();
        let mut s = text.replace(secret, &self.redacted());
        let password = url::Url::parse(secret)
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
            .filter(|p| !p.is_empty());
        if let Some(p) = password {
            s = s.replace(p.as_str(), "****");
            let decoded = percent_encoding::percent_decode_str(&p).decode_utf8_lossy();
            if !decoded.is_empty() {
                s = s.replace(decoded.as_ref(), "****");
            }
        }
        redact_secrets(&s)
    }
}

/// `text` with anything shaped like a credential replaced by `****`: the password of
/// `user:password@host` (with or without a scheme) and the value of `password=...`. Every
/// configuration error passes through here, so a DSN typed into the wrong key, variable or
/// file never shows its password.
pub fn redact_secrets(text: &str) -> String {
    let is_delim = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',' | ';');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let token_len = rest.find(is_delim).unwrap_or(rest.len());
        let (token, tail) = rest.split_at(token_len);
        out.push_str(&redact_token(token));
        let delim_len = tail.chars().next().map_or(0, char::len_utf8);
        out.push_str(&tail[..delim_len]);
        rest = &tail[delim_len..];
    }
    out
}

fn redact_token(token: &str) -> String {
    let lower = token.to_ascii_lowercase();
    if let Some(at) = lower.find("password=") {
        return format!("{}****", &token[..at + "password=".len()]);
    }
    let Some(at) = token.rfind('@') else {
        return token.to_owned();
    };
    let auth_start = token.find("://").map_or(0, |i| i + 3);
    if auth_start > at {
        return token.to_owned();
    }
    match token[auth_start..at].find(':') {
        Some(colon) => {
            let colon = auth_start + colon;
            format!("{}:****{}", &token[..colon], &token[at..])
        }
        None => token.to_owned(),
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
        Dsn::parse(&raw).map_err(|e| match e {
            LedgerError::Config(m) => serde::de::Error::custom(m),
            other => serde::de::Error::custom(other),
        })
    }
}

/// The ledger's settings. Every field has a default, so an empty `ledger:` section (or none)
/// means the in-memory backend with defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// `memory` (default) or `postgres`. Env: `LEDGER_BACKEND`.
    pub backend: Backend,
    /// PostgreSQL DSN, required for `postgres` (unless `partitions` is set). Env:
    /// `LEDGER_DSN`.
    pub dsn: Option<Dsn>,
    /// The DSNs of a partitioned ledger, used instead of `dsn`: each anchor lives wholly in
    /// one of these databases (see [`crate::partition`]; the order matters and is checked
    /// against what each database records). Empty: not partitioned. Env:
    /// `LEDGER_PARTITIONS` (DSNs separated by whitespace).
    pub partitions: Vec<Dsn>,
    /// Set by [`crate::PartitionedLedger`] on each partition's own configuration (never
    /// read from YAML or the environment): the partition's index, which its threads add to
    /// every metric series they record as the label `partition`.
    #[serde(skip)]
    pub metrics_partition: Option<usize>,
    /// What `Committed` promises: `local` (default) or `synchronous` (also flushed by a
    /// synchronous standby; see [`Replication`]). Env: `LEDGER_REPLICATION`.
    pub replication: Replication,
    /// Database connection pool size. Env: `LEDGER_POOL_SIZE`.
    pub pool_size: u32,
    /// How long to wait for capacity, an append's outcome, or the database (seconds, or a
    /// duration such as `250ms`). Env: `LEDGER_TIMEOUT`.
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
    /// Soft cap on live chain actors: while more are alive, an actor stops as soon as it is
    /// idle (nothing in flight, mailbox empty) instead of after `passivate_after`, so memory
    /// follows the anchors being written, not every anchor written recently. 0: no cap.
    pub max_live_actors: usize,
    /// Worker threads (actix Arbiters) for chain actors; 0 means one per core.
    pub workers: usize,
    /// Most records in one PostgreSQL batch (multi-row INSERT, one transaction).
    pub batch_size: usize,
    /// Milliseconds (a plain number) or a duration (`2ms`) a partial batch may wait for more records before it is written.
    #[serde(deserialize_with = "de_batch_linger")]
    pub batch_linger: Duration,
    /// Run pending migrations at start instead of refusing to start.
    pub auto_migrate: bool,
    /// Most records held on the memory fallback during a PostgreSQL outage.
    pub buffer_capacity: usize,
    /// Seconds a record may wait for PostgreSQL before the writer probes it on a new
    /// connection and, if that fails too, declares an outage (catches black-holed connections
    /// that never error). Default 5 s: well above PostgreSQL's `deadlock_timeout` (1 s), so a
    /// lock wait between processes is never mistaken for an outage.
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
    /// Most records in one atomic append (`Ledger::append_all`); a larger call is refused
    /// with `BatchTooLarge`. Env: `LEDGER_MAX_BATCH_RECORDS`.
    pub max_batch_records: usize,
    /// Most canonical payload bytes in one atomic append, all records together (default
    /// 4 MiB; at most 32 MiB, so a batch fits one spool frame). Env:
    /// `LEDGER_MAX_BATCH_BYTES`.
    pub max_batch_bytes: usize,
    /// C2SP tlog-witnesses that cosign every new checkpoint (see [`WitnessConfig`]); needs a
    /// `checkpoint_key`. Env: `LEDGER_WITNESSES` (see [`parse_witnesses_env`]).
    pub witnesses: Vec<WitnessConfig>,
    /// How many witnesses' cosignatures make a checkpoint count as witnessed (the
    /// `ledger_witness_quorum_size` metric); default: all of them. Env:
    /// `LEDGER_WITNESS_QUORUM`.
    pub witness_quorum: Option<usize>,
}

/// One witness: where its `add-checkpoint` endpoint is and its cosignature/v1 verifier key.
/// `Debug` shows the URL with any password redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct WitnessConfig {
    /// The submission prefix; requests go to `<url>/add-checkpoint`. http or https.
    pub url: url::Url,
    /// The witness's verifier key (`<name>+<id>+<base64(0x04 || key)>`).
    pub key: ledger_tlog::cosig::CosignatureVerifier,
}

impl fmt::Debug for WitnessConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WitnessConfig")
            .field("url", &redact_secrets(self.url.as_str()))
            .field("key", &self.key.to_key_string())
            .finish()
    }
}

impl WitnessConfig {
    /// A witness from its URL and verifier key string; errors name what is wrong (a URL's
    /// credentials are never shown).
    pub fn parse(url: &str, key: &str) -> Result<Self, LedgerError> {
        let url = url::Url::parse(url.trim())
            .map_err(|e| config_error(format!("witnesses: url {}: {e}", redact_secrets(url))))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(config_error(format!(
                "witnesses: url {}: expected http:// or https://",
                redact_secrets(url.as_str())
            )));
        }
        let key = ledger_tlog::cosig::CosignatureVerifier::parse(key)
            .map_err(|e| config_error(format!("witnesses: key: {e}")))?;
        Ok(Self { url, key })
    }

    /// The `add-checkpoint` URL.
    pub fn add_checkpoint_url(&self) -> String {
        format!("{}/add-checkpoint", self.url.as_str().trim_end_matches('/'))
    }
}

impl<'de> Deserialize<'de> for WitnessConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            url: String,
            key: String,
        }
        let raw = Raw::deserialize(d)?;
        WitnessConfig::parse(&raw.url, &raw.key).map_err(|e| match e {
            LedgerError::Config(m) => serde::de::Error::custom(m),
            other => serde::de::Error::custom(other),
        })
    }
}

/// Parses `LEDGER_WITNESSES`: entries separated by commas or newlines, each `<url> <key>`
/// (the URL, whitespace, the verifier key). An empty value means no witnesses (it overrides
/// the file's list).
pub fn parse_witnesses_env(value: &str) -> Result<Vec<WitnessConfig>, LedgerError> {
    value
        .split([',', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let mut parts = entry.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(url), Some(key), None) => WitnessConfig::parse(url, key),
                _ => Err(config_error(
                    "LEDGER_WITNESSES: expected entries `<url> <key>` separated by commas",
                )),
            }
            .map_err(|e| prefix(e, "LEDGER_WITNESSES: "))
        })
        .collect()
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Memory,
            dsn: None,
            partitions: Vec::new(),
            metrics_partition: None,
            replication: Replication::Local,
            pool_size: 10,
            timeout: Duration::from_secs(5),
            max_payload_bytes: ledger_entities::validate::DEFAULT_MAX_PAYLOAD_BYTES,
            max_in_flight: 65_536,
            mailbox_capacity: 64,
            passivate_after: Duration::from_secs(60),
            max_live_actors: 16_384,
            workers: 0,
            batch_size: 1000,
            batch_linger: Duration::from_millis(2),
            auto_migrate: false,
            buffer_capacity: 1_000_000,
            failover_after: Duration::from_secs(5),
            spool_dir: None,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_key: None,
            integrator_lease: Duration::from_secs(3),
            max_batch_records: 1000,
            max_batch_bytes: 4 << 20,
            witnesses: Vec::new(),
            witness_quorum: None,
        }
    }
}

/// A duration written as a plain number of seconds (`5`, `0.25`) or as a [`humantime`]
/// duration (`5s`, `250ms`, `1m 30s`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Number(f64),
    Text(String),
}

/// Parses a duration: a plain number counts `unit` (1 s or 1 ms), text is [`humantime`].
/// The error says what was expected and never quotes text that is not a duration.
fn parse_duration(raw: RawDuration, unit: Duration) -> Result<Duration, String> {
    let unit_name = if unit == Duration::from_millis(1) {
        "milliseconds"
    } else {
        "seconds"
    };
    match raw {
        RawDuration::Number(n) => Duration::try_from_secs_f64(n * unit.as_secs_f64())
            .map_err(|_| format!("expected a non-negative number of {unit_name}, got {n}")),
        RawDuration::Text(t) => {
            let t = t.trim();
            if let Ok(n) = t.parse::<f64>() {
                return parse_duration(RawDuration::Number(n), unit);
            }
            humantime::parse_duration(t).map_err(|e| {
                format!("expected a number of {unit_name} or a duration such as 5s or 250ms ({e})")
            })
        }
    }
}

/// A duration field, named in its errors (serde's custom errors do not carry the key).
fn de_duration<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
    unit: Duration,
) -> Result<Duration, D::Error> {
    let raw = RawDuration::deserialize(d).map_err(|_| {
        serde::de::Error::custom(format!("{key}: expected a number or a duration such as 5s"))
    })?;
    parse_duration(raw, unit).map_err(|e| serde::de::Error::custom(format!("{key}: {e}")))
}

fn de_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    de_duration(d, "timeout", Duration::from_secs(1))
}

fn de_passivate_after<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    de_duration(d, "passivate_after", Duration::from_secs(1))
}

fn de_failover_after<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    de_duration(d, "failover_after", Duration::from_secs(1))
}

fn de_checkpoint_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    de_duration(d, "checkpoint_interval", Duration::from_secs(1))
}

fn de_integrator_lease<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    de_duration(d, "integrator_lease", Duration::from_secs(1))
}

fn de_batch_linger<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    de_duration(d, "batch_linger", Duration::from_millis(1))
}

#[derive(Deserialize)]
struct ConfigFile {
    /// Other top-level sections belong to the host application and are ignored.
    ledger: Option<Option<LedgerConfig>>,
}

/// A configuration error with any credential in `msg` redacted.
fn config_error(msg: impl Into<String>) -> LedgerError {
    LedgerError::Config(redact_secrets(&msg.into()))
}

/// Line (1-based) of the first line of YAML content: not blank, not a comment, not `---`.
fn first_content_line(text: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#') && l != "---"
        })
        .map_or(1, |i| i + 1)
}

// Upper bounds of the numeric settings, checked by [`LedgerConfig::check`].
const MAX_POOL_SIZE: u64 = 10_000;
const MAX_IN_FLIGHT: u64 = 100_000_000;
const MAX_MAILBOX: u64 = 10_000_000;
const MAX_WORKERS: u64 = 1024;
const MAX_LIVE_ACTORS: u64 = 1 << 32;
const MAX_BATCH: u64 = 1_000_000;
const MAX_BUFFER: u64 = 1_000_000_000;
const MAX_BATCH_RECORDS: u64 = 100_000;
/// The spool's largest frame is 64 MiB; a payload must fit in one.
const MAX_PAYLOAD: u64 = 32 << 20;
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

impl LedgerConfig {
    /// Loads the configuration the way the CLI and hosts do: the YAML file named by `path`
    /// or else by `LEDGER_CONFIG` (if any), then the `LEDGER_*` environment variables, then
    /// [`LedgerConfig::check`] once on the result (so a file may leave the DSN to
    /// `LEDGER_DSN`). A DSN given without any backend is ignored with a warning saying so.
    pub fn load(path: Option<&Path>) -> Result<Self, LedgerError> {
        let from_env = std::env::var_os("LEDGER_CONFIG").map(PathBuf::from);
        Self::load_from(path.map(Path::to_path_buf).or(from_env).as_deref(), |k| {
            std::env::var(k).ok()
        })
    }

    /// [`LedgerConfig::load`] for tools that use the DSN whatever the backend (`ledger
    /// migrate`): the same checks, without the warning that a DSN without a backend runs
    /// on memory.
    pub fn load_for_migrations(path: Option<&Path>) -> Result<Self, LedgerError> {
        let from_env = std::env::var_os("LEDGER_CONFIG").map(PathBuf::from);
        Self::load_inner(
            path.map(Path::to_path_buf).or(from_env).as_deref(),
            |k| std::env::var(k).ok(),
            false,
        )
    }

    /// [`LedgerConfig::load`] with the file and the environment given (tests, hosts with
    /// their own environment handling).
    pub fn load_from(
        path: Option<&Path>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, LedgerError> {
        Self::load_inner(path, get, true)
    }

    fn load_inner(
        path: Option<&Path>,
        get: impl Fn(&str) -> Option<String>,
        warn_unused_dsn: bool,
    ) -> Result<Self, LedgerError> {
        let (mut config, backend_in_file) = match path {
            Some(p) => {
                let text = read_file(p)?;
                Self::parse_yaml(&text).map_err(|e| prefix(e, &format!("{}: ", p.display())))?
            }
            None => (Self::default(), false),
        };
        config.apply_env(&get)?;
        if warn_unused_dsn
            && config.backend == Backend::Memory
            && !backend_in_file
            && get("LEDGER_BACKEND").is_none()
            && config.dsn.is_some()
        {
            tracing::warn!(
                dsn = %config.dsn.as_ref().map(Dsn::redacted).unwrap_or_default(),
                "a DSN is set but no backend is: running on the MEMORY backend (records are not durable); set LEDGER_BACKEND=postgres (or backend: postgres) to use the DSN"
            );
        }
        config.check()?;
        Ok(config)
    }

    /// Reads the `ledger:` section of a YAML file and checks it ([`LedgerConfig::check`]).
    pub fn from_yaml_file(path: &Path) -> Result<Self, LedgerError> {
        let text = read_file(path)?;
        Self::from_yaml_str(&text).map_err(|e| prefix(e, &format!("{}: ", path.display())))
    }

    /// Parses YAML text holding a `ledger:` section and checks it. Errors name the key and
    /// line. A document that is empty, not a mapping, or has no `ledger:` key is refused.
    pub fn from_yaml_str(text: &str) -> Result<Self, LedgerError> {
        let (config, _) = Self::parse_yaml(text)?;
        config.check()?;
        Ok(config)
    }

    /// Parses without checking; also says whether the section set `backend`.
    fn parse_yaml(text: &str) -> Result<(Self, bool), LedgerError> {
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
            .map_err(|e| config_error(format!("not valid YAML: {e}")))?;
        let top_keys = match &doc {
            serde_yaml_ng::Value::Null => {
                return Err(config_error(
                    "the file is empty; it needs a `ledger:` section (see docs/OPERATIONS.md)",
                ));
            }
            serde_yaml_ng::Value::Mapping(m) => m
                .keys()
                .map(|k| match k {
                    serde_yaml_ng::Value::String(s) => s.clone(),
                    _ => "(a non-text key)".to_owned(),
                })
                .collect::<Vec<_>>(),
            other => {
                let kind = match other {
                    serde_yaml_ng::Value::Sequence(_) => "a list",
                    serde_yaml_ng::Value::String(_) => "a string",
                    serde_yaml_ng::Value::Number(_) => "a number",
                    serde_yaml_ng::Value::Bool(_) => "a boolean",
                    _ => "not a mapping",
                };
                return Err(config_error(format!(
                    "line {}: the document is {kind}; expected a mapping with a `ledger:` section",
                    first_content_line(text)
                )));
            }
        };
        if !top_keys.iter().any(|k| k == "ledger") {
            let near: Vec<&String> = top_keys
                .iter()
                .filter(|k| k.to_ascii_lowercase().starts_with("led"))
                .collect();
            let hint = if near.is_empty() {
                String::new()
            } else {
                format!(" (did you mean `ledger:` instead of {near:?}?)")
            };
            return Err(config_error(format!(
                "no `ledger:` section at the top level{hint}; a configuration file for the ledger must have one"
            )));
        }
        let file: ConfigFile = serde_yaml_ng::from_str(text).map_err(|e| {
            // serde_yaml_ng's message names the key path and line/column; `config_error`
            // removes any credential the message quotes.
            config_error(e.to_string())
        })?;
        let backend_set = doc
            .get("ledger")
            .and_then(|l| l.get("backend"))
            .is_some_and(|b| !b.is_null());
        Ok((file.ledger.flatten().unwrap_or_default(), backend_set))
    }

    /// Applies `LEDGER_BACKEND`, `LEDGER_DSN`, `LEDGER_REPLICATION`, `LEDGER_POOL_SIZE` and `LEDGER_TIMEOUT`
    /// (seconds, or a duration such as `250ms`) from `get`, which is `std::env::var` in
    /// production and a map in tests. Malformed values are errors naming the variable; the
    /// combination is checked by [`LedgerConfig::check`], which [`LedgerConfig::load`] runs
    /// once after the file and the environment.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), LedgerError> {
        if let Some(v) = get("LEDGER_BACKEND") {
            self.backend = v
                .parse()
                .map_err(|e: LedgerError| config_error(format!("LEDGER_BACKEND: {e}")))?;
        }
        if let Some(v) = get("LEDGER_DSN") {
            self.dsn = Some(Dsn::parse(&v).map_err(|e| config_error(format!("LEDGER_DSN: {e}")))?);
        }
        if let Some(v) = get("LEDGER_PARTITIONS") {
            self.partitions = v
                .split_whitespace()
                .enumerate()
                .map(|(i, d)| {
                    Dsn::parse(d)
                        .map_err(|e| config_error(format!("LEDGER_PARTITIONS: DSN {i}: {e}")))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("LEDGER_REPLICATION") {
            self.replication = v
                .parse()
                .map_err(|e: LedgerError| config_error(format!("LEDGER_REPLICATION: {e}")))?;
        }
        if let Some(v) = get("LEDGER_POOL_SIZE") {
            self.pool_size = v.trim().parse().map_err(|_| {
                config_error(format!(
                    "LEDGER_POOL_SIZE: expected a whole number of connections (1..={MAX_POOL_SIZE}), got {}",
                    shown(&v)
                ))
            })?;
        }
        if let Some(v) = get("LEDGER_TIMEOUT") {
            self.timeout = parse_duration(RawDuration::Text(v), Duration::from_secs(1))
                .map_err(|e| config_error(format!("LEDGER_TIMEOUT: {e}")))?;
        }
        for (key, field) in [
            ("LEDGER_CHECKPOINT_INTERVAL", &mut self.checkpoint_interval),
            ("LEDGER_INTEGRATOR_LEASE", &mut self.integrator_lease),
        ] {
            if let Some(v) = get(key) {
                *field = parse_duration(RawDuration::Text(v), Duration::from_secs(1))
                    .map_err(|e| config_error(format!("{key}: {e}")))?;
            }
        }
        for (key, field, what) in [
            (
                "LEDGER_MAX_BATCH_RECORDS",
                &mut self.max_batch_records,
                "records",
            ),
            ("LEDGER_MAX_BATCH_BYTES", &mut self.max_batch_bytes, "bytes"),
        ] {
            if let Some(v) = get(key) {
                *field = v.trim().parse().map_err(|_| {
                    config_error(format!(
                        "{key}: expected a whole number of {what}, got {}",
                        shown(&v)
                    ))
                })?;
            }
        }
        if let Some(v) = get("LEDGER_CHECKPOINT_KEY") {
            self.checkpoint_key = Some(PathBuf::from(v));
        }
        if let Some(v) = get("LEDGER_WITNESSES") {
            self.witnesses = parse_witnesses_env(&v)?;
        }
        if let Some(v) = get("LEDGER_WITNESS_QUORUM") {
            self.witness_quorum = Some(v.trim().parse().map_err(|_| {
                config_error(format!(
                    "LEDGER_WITNESS_QUORUM: expected a whole number of witnesses, got {}",
                    shown(&v)
                ))
            })?);
        }
        Ok(())
    }

    /// Checks values that parse but make no sense, alone (each number has a range) or
    /// together (postgres needs a DSN). Errors name the key.
    pub fn check(&self) -> Result<(), LedgerError> {
        fn range(key: &str, value: u64, min: u64, max: u64) -> Result<(), LedgerError> {
            if value < min || value > max {
                return Err(config_error(format!(
                    "{key}: {value} is out of range; expected {min}..={max}"
                )));
            }
            Ok(())
        }
        fn span(
            key: &str,
            value: Duration,
            min: Duration,
            max: Duration,
        ) -> Result<(), LedgerError> {
            if value < min || value > max {
                return Err(config_error(format!(
                    "{key}: {} is out of range; expected {}..={}",
                    humantime::format_duration(value),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                )));
            }
            Ok(())
        }
        if self.backend == Backend::Postgres && self.dsn.is_none() && self.partitions.is_empty() {
            return Err(config_error(
                "dsn: backend is postgres but no dsn is set (dsn: in the file or LEDGER_DSN)",
            ));
        }
        check_partitions(self)?;
        if self.replication == Replication::Synchronous && self.backend != Backend::Postgres {
            return Err(config_error(
                "replication: synchronous needs backend: postgres (the memory backend keeps records in this process only)",
            ));
        }
        let ms = Duration::from_millis(1);
        range(
            "pool_size (LEDGER_POOL_SIZE)",
            self.pool_size.into(),
            1,
            MAX_POOL_SIZE,
        )?;
        // Tests use sub-millisecond timeouts to provoke overload; any non-zero value up to an hour.
        span(
            "timeout (LEDGER_TIMEOUT)",
            self.timeout,
            Duration::from_micros(1),
            HOUR,
        )?;
        range(
            "max_payload_bytes",
            self.max_payload_bytes as u64,
            1,
            MAX_PAYLOAD,
        )?;
        range("max_in_flight", self.max_in_flight as u64, 1, MAX_IN_FLIGHT)?;
        range(
            "mailbox_capacity",
            self.mailbox_capacity as u64,
            1,
            MAX_MAILBOX,
        )?;
        span("passivate_after", self.passivate_after, ms, 30 * DAY)?;
        range(
            "max_live_actors",
            self.max_live_actors as u64,
            0,
            MAX_LIVE_ACTORS,
        )?;
        range("workers", self.workers as u64, 0, MAX_WORKERS)?;
        range("batch_size", self.batch_size as u64, 1, MAX_BATCH)?;
        span(
            "batch_linger",
            self.batch_linger,
            Duration::ZERO,
            Duration::from_secs(10),
        )?;
        range(
            "buffer_capacity",
            self.buffer_capacity as u64,
            0,
            MAX_BUFFER,
        )?;
        span("failover_after", self.failover_after, ms, HOUR)?;
        if let Some(dir) = &self.spool_dir {
            let shown = dir.to_string_lossy();
            if shown.is_empty() {
                return Err(config_error(
                    "spool_dir: empty path; omit the key for no spool",
                ));
            }
            if shown.contains("://") || redact_secrets(&shown) != shown {
                // A DSN typed into the wrong key: refuse it (and do not show it).
                return Err(config_error(
                    "spool_dir: expected a directory path, got something shaped like a URL or credentials",
                ));
            }
        }
        span(
            "checkpoint_interval (LEDGER_CHECKPOINT_INTERVAL)",
            self.checkpoint_interval,
            Duration::ZERO,
            DAY,
        )?;
        if let Some(q) = self.witness_quorum {
            range(
                "witness_quorum (LEDGER_WITNESS_QUORUM)",
                q as u64,
                1,
                self.witnesses.len().max(1) as u64,
            )?;
            if self.witnesses.is_empty() {
                return Err(config_error(
                    "witness_quorum: set but no witnesses are configured",
                ));
            }
        }
        for (i, w) in self.witnesses.iter().enumerate() {
            if self.witnesses[..i]
                .iter()
                .any(|o| o.key.name() == w.key.name())
            {
                return Err(config_error(format!(
                    "witnesses: the key name {:?} appears twice (names label the metrics)",
                    w.key.name()
                )));
            }
        }
        if !self.witnesses.is_empty() && self.checkpoint_key.is_none() {
            return Err(config_error(
                "witnesses: configured, but there is no checkpoint_key: witnesses cosign only signed checkpoints",
            ));
        }
        span(
            "integrator_lease (LEDGER_INTEGRATOR_LEASE)",
            self.integrator_lease,
            Duration::from_millis(300),
            HOUR,
        )?;
        range(
            "max_batch_records (LEDGER_MAX_BATCH_RECORDS)",
            self.max_batch_records as u64,
            1,
            MAX_BATCH_RECORDS,
        )?;
        range(
            "max_batch_bytes (LEDGER_MAX_BATCH_BYTES)",
            self.max_batch_bytes as u64,
            1,
            MAX_PAYLOAD,
        )?;
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

/// Most partitions in one list.
pub const MAX_PARTITIONS: usize = 1024;

/// What `checkpoint_key` must contain when there are several partitions: it is replaced by
/// the partition's index.
pub const KEY_PLACEHOLDER: &str = "{partition}";

/// The checks [`LedgerConfig::check`] runs on `partitions` (see [`crate::partition`]).
fn check_partitions(config: &LedgerConfig) -> Result<(), LedgerError> {
    let list = &config.partitions;
    if list.is_empty() {
        return Ok(());
    }
    let refuse = |m: String| Err(LedgerError::Config(m));
    if list.len() > MAX_PARTITIONS {
        return refuse(format!(
            "partitions (LEDGER_PARTITIONS): {} DSNs; at most {MAX_PARTITIONS}",
            list.len()
        ));
    }
    if config.dsn.is_some() {
        return refuse(
            "partitions (LEDGER_PARTITIONS) and dsn (LEDGER_DSN) are both set: a partitioned ledger's databases are its partitions list; remove dsn".into(),
        );
    }
    if config.backend != Backend::Postgres {
        return refuse(
            "partitions (LEDGER_PARTITIONS): needs backend: postgres (LEDGER_BACKEND=postgres)"
                .into(),
        );
    }
    for (i, d) in list.iter().enumerate() {
        if let Some(j) = list[..i]
            .iter()
            .position(|o| o.hosts() == d.hosts() && o.database() == d.database())
        {
            return refuse(format!(
                "partitions: DSNs {j} and {i} name the same database ({}); each partition needs its own",
                d.redacted()
            ));
        }
    }
    if list.len() > 1
        && let Some(key) = &config.checkpoint_key
        && !key.to_string_lossy().contains(KEY_PLACEHOLDER)
    {
        return refuse(format!(
            "checkpoint_key (LEDGER_CHECKPOINT_KEY): with {} partitions each partition's log needs its own key; write the path with {KEY_PLACEHOLDER} where the partition's index goes (e.g. /etc/avl/p{KEY_PLACEHOLDER}/checkpoint.key)",
            list.len()
        ));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<String, LedgerError> {
    std::fs::read_to_string(path)
        .map_err(|e| config_error(format!("cannot read {}: {e}", path.display())))
}

/// The same error with `prefix` before its message (for the file name).
fn prefix(err: LedgerError, prefix: &str) -> LedgerError {
    match err {
        LedgerError::Config(m) => LedgerError::Config(format!("{prefix}{m}")),
        other => other,
    }
}
