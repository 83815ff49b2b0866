//! [`Health`]: what [`crate::Ledger::health`] reports, and the rules that grade it.
//!
//! # What is probed
//! - the storage driver: for a `postgres` ledger the [`Writer`] must answer
//!   [`GetStatus`] (which also gives its mode and the buffered records), otherwise the
//!   driver must answer a flush, within the probe timeout;
//! - every chain worker thread: a no-op task must run within the probe timeout;
//! - the database, for a ledger configured for `postgres` whose store is PostgreSQL:
//!   [`LedgerStore::ping`] within the probe timeout;
//! - from [`Observer`]: in-flight appends, chain mailbox depths, the active backend.
//!
//! The probe timeout is [`PROBE_TIMEOUT`], or the configured `timeout` if that is shorter. The
//! probes run concurrently, so a report takes at most one probe timeout.
//!
//! # Rules
//! **Down** (the ledger cannot take appends), if any of:
//! - the ledger is shutting down or shut down;
//! - the writer is gone (its mailbox is closed), or the storage driver does not answer in
//!   time;
//! - a chain worker thread is gone or does not run the probe in time;
//! - the transparency log is halted: the database's log does not extend the last checkpoint
//!   the key signed (a rollback: nothing is integrated or signed, appends still work, but the
//!   ledger's tamper-evidence cannot go on until an operator restores the log).
//!
//! **Degraded** (appends work, but not as configured or close to the limit), if not down and
//! any of:
//! - the `postgres` backend is configured but the memory fallback takes the writes;
//! - the `postgres` backend is configured and the database does not answer the ping;
//! - records are buffered on the memory fallback, waiting for PostgreSQL;
//! - the storage driver answered the flush with an error;
//! - in-flight appends are at or above [`SATURATION`] of `max_in_flight` (new appends are
//!   about to wait for capacity and then be shed as `overloaded`).
//!
//! **Healthy** otherwise. A `memory` ledger whose actors answer is healthy.
//!
//! Every rule that applies adds one line to [`Health::reasons`] (empty when healthy).

use std::fmt;
use std::time::Duration;

use actix::{ArbiterHandle, MailboxError};
use serde::{Serialize, Serializer};

use crate::config::{Backend, LedgerConfig};
use crate::driver::Driver;
use crate::observe::{MailboxDepth, Observer};
use crate::store::LedgerStore;
use crate::writer::{GetStatus, Mode};

/// The longest a single probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Share of `max_in_flight` at which in-flight appends count as saturated (degraded).
pub const SATURATION: f64 = 0.9;

/// The overall grade of a [`Health`] report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Everything works as configured.
    Healthy,
    /// Appends work, but not as configured (fallback, database unreachable, buffered
    /// records) or close to the in-flight limit.
    Degraded,
    /// Appends cannot be taken: an actor or worker is gone or unresponsive, or the ledger is
    /// shutting down.
    Down,
}

impl HealthStatus {
    /// The lowercase name: `healthy`, `degraded` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Down => "down",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How full the ledger's queues are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MailboxPressure {
    /// Appends accepted and not yet answered.
    pub in_flight_appends: usize,
    /// The configured limit of in-flight appends (`max_in_flight`).
    pub max_in_flight: usize,
    /// Messages queued over all chain actors, and in the deepest one. (What the PostgreSQL
    /// writer holds is the `ledger_writer_unanswered_records` gauge.)
    pub chain_mailbox: MailboxDepth,
}

/// The ledger's health, as reported by [`crate::Ledger::health`]. Serializes to JSON with
/// backends and status as lowercase strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The grade; see the module documentation for the rules.
    pub status: HealthStatus,
    /// One line per rule that made the status worse than healthy (empty when healthy).
    pub reasons: Vec<String>,
    /// The backend in the configuration.
    #[serde(serialize_with = "backend_name")]
    pub backend_configured: Backend,
    /// The backend taking the writes now (`memory` when a `postgres` ledger runs on the
    /// fallback).
    #[serde(serialize_with = "backend_name")]
    pub backend_active: Backend,
    /// Whether the database answered the ping: `None` for the `memory` backend. A `postgres`
    /// ledger that started on the memory fallback (the database was unreachable at start)
    /// has no database connection to ping: `Some(false)`.
    pub database_reachable: Option<bool>,
    /// Records acknowledged on the memory fallback and not yet in PostgreSQL, as the
    /// writer reports them (0 without a writer).
    pub buffered_records: u64,
    /// Records acknowledged that can never be written (their rid was stored meanwhile with
    /// other content), kept by the writer (see `Ledger::outage_records`); 0 without a
    /// writer.
    pub kept_records: u64,
    /// Whether the storage driver answered in time: the writer its status request, or
    /// another driver a flush (with success or an error).
    pub storage_responding: bool,
    /// Chain worker threads that ran the probe in time.
    pub workers_responding: usize,
    /// Chain worker threads.
    pub workers: usize,
    /// Queue fill levels.
    pub pressure: MailboxPressure,
    /// Under `replication: synchronous`, the server's replication as last read (`None`:
    /// `replication: local`, or it could not be read: then a reason says why).
    pub replication: Option<crate::pg::replication::ReplicationState>,
}

fn backend_name<S: Serializer>(backend: &Backend, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(backend.as_str())
}

impl fmt::Display for Health {
    /// A multi-line report, one `key: value` per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "status: {}", self.status)?;
        writeln!(
            f,
            "backend: configured {}, active {}",
            self.backend_configured.as_str(),
            self.backend_active.as_str()
        )?;
        let reachable = match self.database_reachable {
            None => "n/a (memory backend)",
            Some(true) => "yes",
            Some(false) => "no",
        };
        writeln!(f, "database reachable: {reachable}")?;
        writeln!(f, "buffered records: {}", self.buffered_records)?;
        writeln!(
            f,
            "kept records (acknowledged, cannot be written): {}",
            self.kept_records
        )?;
        writeln!(
            f,
            "storage driver: {}",
            if self.storage_responding {
                "responding"
            } else {
                "NOT responding"
            }
        )?;
        writeln!(
            f,
            "chain workers responding: {}/{}",
            self.workers_responding, self.workers
        )?;
        let p = &self.pressure;
        writeln!(
            f,
            "in-flight appends: {}/{}",
            p.in_flight_appends, p.max_in_flight
        )?;
        writeln!(
            f,
            "chain mailboxes: sum {}, max {}",
            p.chain_mailbox.sum, p.chain_mailbox.max
        )?;
        if self.reasons.is_empty() {
            write!(f, "reasons: none")
        } else {
            write!(f, "reasons:")?;
            for reason in &self.reasons {
                write!(f, "\n  - {reason}")?;
            }
            Ok(())
        }
    }
}

/// What [`assess`] looks at: borrowed from the ledger.
pub(crate) struct Probe<'a> {
    pub(crate) config: &'a LedgerConfig,
    pub(crate) store: &'a dyn LedgerStore,
    pub(crate) observer: &'a Observer,
    pub(crate) driver: &'a dyn Driver,
    /// The PostgreSQL writer, if the driver is PostgreSQL's.
    pub(crate) writer: Option<&'a actix::Addr<crate::writer::Writer>>,
    pub(crate) workers: &'a [ArbiterHandle],
    pub(crate) closing: bool,
    /// Why the integrator halted, if it did (see [`crate::integrator::Progress::halted`]).
    pub(crate) log_halted: Option<String>,
}

/// The outcome of one storage-driver probe.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StorageProbe {
    /// Answered the flush with success.
    Ok,
    /// Answered the flush with this error.
    Failed(String),
    /// Its mailbox is closed: the actor is gone.
    Gone,
    /// No answer within the probe timeout.
    Silent,
}

/// Everything measured, before grading.
#[derive(Debug, Clone)]
struct Observation {
    closing: bool,
    configured: Backend,
    active: Backend,
    /// The writer's mode, when there is a writer and it answered.
    mode: Option<Mode>,
    database_reachable: Option<bool>,
    /// False when a `postgres` ledger started on the memory fallback: no connection exists.
    database_connected: bool,
    buffered_records: u64,
    kept_records: u64,
    storage: StorageProbe,
    workers_responding: usize,
    workers: usize,
    pressure: MailboxPressure,
    log_halted: Option<String>,
    /// Under `replication: synchronous`: the server's replication, or why it could not be
    /// read.
    replication: Option<Result<crate::pg::replication::ReplicationState, crate::LedgerError>>,
}

/// Runs the probes (concurrently) and grades the result.
pub(crate) async fn assess(probe: Probe<'_>) -> Health {
    let timeout = PROBE_TIMEOUT.min(probe.config.timeout);
    let observer = probe.observer;
    let configured = observer.configured();
    let storage = async {
        if probe.closing {
            // The actors are being stopped; a flush now would race the shutdown's own.
            return (StorageProbe::Gone, None);
        }
        if let Some(writer) = probe.writer {
            // A status request, not a flush: a flush waits for PostgreSQL, which is what
            // the writer's failover is for.
            return match tokio::time::timeout(timeout, writer.send(GetStatus)).await {
                Err(_) | Ok(Err(MailboxError::Timeout)) => (StorageProbe::Silent, None),
                Ok(Err(MailboxError::Closed)) => (StorageProbe::Gone, None),
                Ok(Ok(status)) => (StorageProbe::Ok, Some(status)),
            };
        }
        let probe = match tokio::time::timeout(timeout, probe.driver.flush()).await {
            Err(_) => StorageProbe::Silent,
            Ok(Ok(())) => StorageProbe::Ok,
            Ok(Err(e)) => StorageProbe::Failed(e.to_string()),
        };
        (probe, None)
    };
    let workers = async {
        let probes = probe.workers.iter().map(|worker| async move {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            if !worker.spawn(async move {
                let _ = tx.send(());
            }) {
                return false;
            }
            matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())))
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    };
    let database = async {
        match configured {
            Backend::Memory => None,
            Backend::Postgres if probe.store.backend() != Backend::Postgres => Some(false),
            Backend::Postgres => Some(matches!(
                tokio::time::timeout(timeout, probe.store.ping()).await,
                Ok(Ok(()))
            )),
        }
    };
    let replication = probe.store.replication(timeout);
    let ((storage, status), workers_responding, database_reachable, replication) =
        futures::join!(storage, workers, database, replication);
    let mode = status.as_ref().map(|s| s.mode);
    let active = match mode {
        Some(Mode::Primary) => Backend::Postgres,
        Some(Mode::Outage | Mode::Draining) => Backend::Memory,
        None => observer.active(),
    };
    grade(Observation {
        closing: probe.closing,
        configured,
        active,
        mode,
        database_reachable,
        database_connected: probe.store.backend() == Backend::Postgres,
        buffered_records: status.as_ref().map_or(0, |s| s.buffered as u64),
        kept_records: status.map_or(0, |s| s.quarantined),
        storage,
        workers_responding,
        workers: probe.workers.len(),
        pressure: MailboxPressure {
            in_flight_appends: observer.in_flight(),
            max_in_flight: observer.max_in_flight(),
            chain_mailbox: observer.mailboxes().depth(),
        },
        log_halted: probe.log_halted,
        replication,
    })
}

/// Applies the rules of the module documentation.
fn grade(o: Observation) -> Health {
    let mut down = Vec::new();
    let mut degraded = Vec::new();
    if o.closing {
        down.push("the ledger is shutting down".to_owned());
    }
    match &o.storage {
        StorageProbe::Ok => {}
        StorageProbe::Gone if o.closing => {}
        StorageProbe::Gone => down.push("the PostgreSQL writer is gone".to_owned()),
        StorageProbe::Silent => {
            down.push("the storage driver did not answer in time".to_owned());
        }
        StorageProbe::Failed(e) => {
            degraded.push(format!("the storage driver's flush failed: {e}"));
        }
    }
    if !o.closing && o.workers_responding < o.workers {
        down.push(format!(
            "{} of {} chain worker threads did not answer in time",
            o.workers - o.workers_responding,
            o.workers
        ));
    }
    if let Some(why) = &o.log_halted {
        down.push(format!("the transparency log is halted: {why}"));
    }
    if o.configured == Backend::Postgres && o.active == Backend::Memory {
        degraded.push(match o.mode {
            Some(Mode::Draining) => {
                "postgres is back; the memory fallback takes the writes until the drain ends".into()
            }
            Some(_) => "postgres is unavailable; the memory fallback takes the writes".into(),
            None => "postgres is configured but the memory fallback takes the writes".into(),
        });
    }
    if o.database_reachable == Some(false) {
        degraded.push(if o.database_connected {
            "the database did not answer the ping".to_owned()
        } else {
            "the database was unreachable at start; this process has no connection to it".to_owned()
        });
    }
    match &o.replication {
        None => {}
        Some(Ok(state)) => {
            if let Some(problem) = state.problem() {
                degraded.push(problem);
            }
        }
        Some(Err(e)) => {
            degraded.push(format!(
                "replication: synchronous, but the replication state could not be read: {e}"
            ));
        }
    }
    if o.buffered_records > 0 {
        degraded.push(format!(
            "{} records are buffered on the memory fallback, not yet in PostgreSQL",
            o.buffered_records
        ));
    }
    if o.kept_records > 0 {
        degraded.push(format!(
            "{} acknowledged records cannot be written (rid stored with other content); kept, see the spool directory's kept file",
            o.kept_records
        ));
    }
    let p = &o.pressure;
    if p.in_flight_appends as f64 >= SATURATION * p.max_in_flight as f64 {
        degraded.push(format!(
            "in-flight appends saturated: {} of {} (new appends wait, then are shed)",
            p.in_flight_appends, p.max_in_flight
        ));
    }
    let status = if !down.is_empty() {
        HealthStatus::Down
    } else if !degraded.is_empty() {
        HealthStatus::Degraded
    } else {
        HealthStatus::Healthy
    };
    down.extend(degraded);
    Health {
        status,
        reasons: down,
        backend_configured: o.configured,
        backend_active: o.active,
        database_reachable: o.database_reachable,
        buffered_records: o.buffered_records,
        kept_records: o.kept_records,
        storage_responding: !matches!(o.storage, StorageProbe::Gone | StorageProbe::Silent),
        workers_responding: o.workers_responding,
        workers: o.workers,
        pressure: o.pressure,
        replication: o.replication.and_then(Result::ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy_memory() -> Observation {
        Observation {
            closing: false,
            configured: Backend::Memory,
            active: Backend::Memory,
            mode: None,
            database_reachable: None,
            database_connected: false,
            buffered_records: 0,
            kept_records: 0,
            storage: StorageProbe::Ok,
            workers_responding: 2,
            workers: 2,
            pressure: MailboxPressure {
                in_flight_appends: 0,
                max_in_flight: 100,
                chain_mailbox: MailboxDepth::default(),
            },
            log_halted: None,
            replication: None,
        }
    }

    /// A halted transparency log (the database rolled back under the signer) is Down, with
    /// the integrator's reason.
    #[test]
    fn a_halted_log_is_down() {
        let h = grade(Observation {
            log_halted: Some("log rollback: signed size 9, database has 3".into()),
            ..healthy_memory()
        });
        assert_eq!(h.status, HealthStatus::Down);
        assert_eq!(
            h.reasons,
            ["the transparency log is halted: log rollback: signed size 9, database has 3"]
        );
    }

    /// A memory ledger whose actors answer is healthy, with no reasons.
    #[test]
    fn memory_with_answering_actors_is_healthy() {
        let h = grade(healthy_memory());
        assert_eq!(h.status, HealthStatus::Healthy);
        assert!(h.reasons.is_empty(), "{:?}", h.reasons);
        assert!(h.storage_responding);
    }

    /// Postgres configured but the memory fallback active is degraded, and so is an
    /// unreachable database.
    #[test]
    fn postgres_on_the_memory_fallback_is_degraded() {
        let h = grade(Observation {
            configured: Backend::Postgres,
            active: Backend::Memory,
            database_reachable: Some(false),
            ..healthy_memory()
        });
        assert_eq!(h.status, HealthStatus::Degraded);
        assert_eq!(h.reasons.len(), 2, "{:?}", h.reasons);
        assert!(h.reasons[0].contains("memory fallback"));
        assert!(
            h.reasons[1].contains("unreachable at start"),
            "{:?}",
            h.reasons
        );
        let connected = grade(Observation {
            configured: Backend::Postgres,
            active: Backend::Postgres,
            database_reachable: Some(false),
            database_connected: true,
            ..healthy_memory()
        });
        assert_eq!(
            connected.reasons,
            vec!["the database did not answer the ping"]
        );
    }

    /// A writer in failover or draining is degraded, with its mode in the reason.
    #[test]
    fn writer_outage_and_drain_are_degraded() {
        for (mode, word) in [(Mode::Outage, "unavailable"), (Mode::Draining, "drain")] {
            let h = grade(Observation {
                configured: Backend::Postgres,
                active: Backend::Memory,
                mode: Some(mode),
                database_reachable: Some(true),
                database_connected: true,
                buffered_records: 3,
                ..healthy_memory()
            });
            assert_eq!(h.status, HealthStatus::Degraded);
            assert!(h.reasons[0].contains(word), "{:?}", h.reasons);
            assert!(
                h.reasons[1].contains("3 records are buffered"),
                "{:?}",
                h.reasons
            );
        }
    }

    /// Postgres configured and active, database reachable: healthy.
    #[test]
    fn postgres_active_and_reachable_is_healthy() {
        let h = grade(Observation {
            configured: Backend::Postgres,
            active: Backend::Postgres,
            mode: Some(Mode::Primary),
            database_reachable: Some(true),
            database_connected: true,
            storage: StorageProbe::Ok,
            ..healthy_memory()
        });
        assert_eq!(h.status, HealthStatus::Healthy, "{:?}", h.reasons);
    }

    /// Acknowledged records kept because they can never be written make the ledger degraded,
    /// with their count in the reason and the report.
    #[test]
    fn kept_records_are_degraded() {
        let h = grade(Observation {
            kept_records: 2,
            ..healthy_memory()
        });
        assert_eq!(h.status, HealthStatus::Degraded);
        assert_eq!(h.kept_records, 2);
        assert!(
            h.reasons[0].starts_with("2 acknowledged records cannot be written"),
            "{:?}",
            h.reasons
        );
    }

    /// Buffered records and a failed flush are degraded, not down.
    #[test]
    fn buffered_records_and_failed_flush_are_degraded() {
        let h = grade(Observation {
            buffered_records: 7,
            storage: StorageProbe::Failed("database unavailable".into()),
            ..healthy_memory()
        });
        assert_eq!(h.status, HealthStatus::Degraded);
        assert!(h.storage_responding);
        assert_eq!(h.reasons.len(), 2, "{:?}", h.reasons);
    }

    /// In-flight appends at 90 % of the limit are degraded; just below it is healthy.
    #[test]
    fn saturation_threshold_is_ninety_percent() {
        let at = |in_flight| {
            grade(Observation {
                pressure: MailboxPressure {
                    in_flight_appends: in_flight,
                    ..healthy_memory().pressure
                },
                ..healthy_memory()
            })
            .status
        };
        assert_eq!(at(89), HealthStatus::Healthy);
        assert_eq!(at(90), HealthStatus::Degraded);
        assert_eq!(at(100), HealthStatus::Degraded);
    }

    /// A gone writer or a silent storage driver, or a silent worker, is down; down reasons come
    /// before degraded ones.
    #[test]
    fn unresponsive_actors_are_down() {
        for storage in [StorageProbe::Gone, StorageProbe::Silent] {
            let h = grade(Observation {
                storage,
                ..healthy_memory()
            });
            assert_eq!(h.status, HealthStatus::Down);
            assert!(!h.storage_responding);
        }
        let h = grade(Observation {
            workers_responding: 1,
            buffered_records: 1,
            ..healthy_memory()
        });
        assert_eq!(h.status, HealthStatus::Down);
        assert!(
            h.reasons[0].contains("1 of 2 chain worker"),
            "{:?}",
            h.reasons
        );
        assert!(h.reasons[1].contains("buffered"), "{:?}", h.reasons);
    }

    /// A shutting-down ledger is down with that one reason, not a list of missing actors.
    #[test]
    fn shutting_down_is_down_with_one_reason() {
        let h = grade(Observation {
            closing: true,
            storage: StorageProbe::Gone,
            workers_responding: 0,
            ..healthy_memory()
        });
        assert_eq!(h.status, HealthStatus::Down);
        assert_eq!(h.reasons, vec!["the ledger is shutting down".to_owned()]);
    }

    /// The JSON form has lowercase status and backends and nests the pressure.
    #[test]
    fn json_uses_lowercase_names() {
        let h = grade(healthy_memory());
        let json = serde_json::to_value(&h).expect("serializes");
        assert_eq!(json["status"], "healthy");
        assert_eq!(json["backend_configured"], "memory");
        assert_eq!(json["database_reachable"], serde_json::Value::Null);
        assert_eq!(json["pressure"]["max_in_flight"], 100);
        assert_eq!(json["pressure"]["chain_mailbox"]["max"], 0);
    }
}
