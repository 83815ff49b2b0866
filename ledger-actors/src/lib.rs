//! The AVL ledger's moving parts: actors, stores, configuration and metrics.
//!
//! A host holds a [`Ledger`]. Each append goes to the anchor's [`chain::ChainActor`] (one per
//! anchor, started on demand by the [`router::ChainRouter`] and spread over one worker thread
//! per core), which links and hashes the record and hands it to a persistence actor; the
//! append is answered when the persistence actor confirms.
//!
//! # Layout
//! - [`ledger`]: [`Ledger`], the handle: start (or open read-only), append, read, verify, shut
//!   down.
//! - [`chain`]: [`chain::ChainActor`] and its [`chain::Append`] message.
//! - [`router`]: [`router::ChainRouter`], anchor → actor, passivation-safe resends.
//! - [`persistence`]: the persistence actors' messages, the memory persistence actor, the
//!   group-committing [`persistence::PostgresPersistence`] and the refusing
//!   [`persistence::ReadOnlyPersistence`] of [`Ledger::open_read_only`].
//! - [`store`]: the [`store::LedgerStore`] trait, [`store::MemoryLedgerStore`] and
//!   [`store::PostgresLedgerStore`].
//! - [`supervisor`]: [`supervisor::Supervisor`], PostgreSQL failover to the in-memory outage
//!   buffer and the drain back; the spool.
//! - [`transfer`]: export and import as JSON Lines (verified, idempotent, resumable), and
//!   the `ledger append` line format.
//! - [`verify`]: chain verification.
//! - [`config`]: [`LedgerConfig`], the YAML `ledger:` section and `LEDGER_*` variables.
//! - [`metrics`]: metric names and recording.
//! - [`observe`]: mailbox depths, in-flight appends, failover state and the gauge sampler.
//! - [`health`]: [`Health`], the report of [`Ledger::health`], and its rules.
//! - [`error`]: [`LedgerError`], the one error type of this crate.

pub mod chain;
pub mod config;
pub mod error;
pub mod health;
pub mod integrator;
pub mod ledger;
pub mod log_verify;
pub mod metrics;
pub mod observe;
pub mod persistence;
pub mod router;
pub mod store;
pub mod supervisor;
pub mod tlog;
pub mod transfer;
pub mod verify;

pub use chain::{Append, AppendAck};
pub use config::{Backend, Dsn, LedgerConfig};
pub use error::LedgerError;
pub use health::{Health, HealthStatus};
pub use ledger::Ledger;
pub use persistence::Durability;
pub use store::{Head, LedgerStore, RecordRange, ScanKey, create_ledger_store};
