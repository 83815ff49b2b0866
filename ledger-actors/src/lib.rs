//! The AVL ledger's moving parts: actors, stores, configuration and metrics.
//!
//! A host holds a [`Ledger`]. Each append goes to the anchor's chain actor (`chain`: one per
//! anchor, started on demand by the router and spread over one worker thread per core),
//! which links and hashes the record and stores it: into the memory store itself (memory
//! backend, answered at once) or through the writer, which group-commits (PostgreSQL,
//! answered when committed, buffered or spooled).
//!
//! What a host uses is re-exported here; the modules marked private below are internals
//! (their types appear in the API only through these re-exports).
//!
//! # Layout
//! - `ledger` (private): [`Ledger`], the handle: start (or open read-only), append, read, verify, shut
//!   down.
//! - `chain` (private): the chain actor, its [`Append`] message and the registry the router
//!   offers an actor.
//! - `router` (private): the chain router, anchor → actor, passivation-safe resends.
//! - [`driver`]: [`driver::Driver`], the one interface between a chain actor and its storage
//!   (write now, or submit for a later batched answer; flush; the store it reads), and
//!   [`driver::handoff`], the messages and replies of the batched path.
//! - `backend` (private): the drivers: `MemoryDriver` (memory, optionally spooled),
//!   `PostgresDriver` (the writer, group commit, outage buffer, drain) and `ReadOnlyDriver`
//!   (refuses every record, for [`Ledger::open_read_only`]).
//! - [`pg`]: all of PostgreSQL but the transparency log's: [`pg::insert_records`], the one
//!   statement every record is written with; the liveness probes; [`pg::store`]: connect,
//!   error classification, [`pg::store::PostgresLedgerStore`] (head loads, reads).
//! - [`spool`]: the spool file (frames, locking, the kept file) that outage and memory
//!   records survive restarts in.
//! - `recovery` (private): the spool across restarts ([`SpoolRecovery`]): a memory ledger reloads it, a PostgreSQL
//!   ledger writes it to the database at start and reports every re-chained record.
//! - [`store`]: the [`store::LedgerStore`] trait, [`Durability`] and
//!   [`store::MemoryLedgerStore`].
//! - [`writer`]: [`writer::Writer`], the one PostgreSQL writer: group commit,
//!   failover to the in-memory outage buffer and the drain back; [`writer::reads::WriterReads`] (PostgreSQL
//!   plus the buffer). Its module doc tells a record's way to PostgreSQL.
//! - [`transfer`]: export and import as JSON Lines (verified, idempotent, resumable), and
//!   the `ledger append` line format.
//! - [`subscribe`]: [`Subscription`], the records in log order with their positions from
//!   any position on (catch-up, then live; through outages), behind [`Ledger::subscribe`].
//! - `migrate` (private): the copy rounds and checks of the live memory → PostgreSQL migration
//!   ([`Ledger::migrate_to_postgres`]).
//! - [`partition`]: [`partition::PartitionedLedger`], a ledger over several PostgreSQL
//!   databases (one [`Ledger`] each, routed by anchor), the partition map and record.
//! - [`verify`]: chain verification.
//! - [`config`]: [`LedgerConfig`], the YAML `ledger:` section and `LEDGER_*` variables.
//! - [`metrics`]: metric names and recording.
//! - `observe` (private): mailbox depths, in-flight appends, failover state and the gauge sampler.
//! - `health` (private): [`Health`], the report of [`Ledger::health`], and its rules.
//! - `error` (private): [`LedgerError`], the one error type of this crate.

mod backend;
mod chain;
pub mod config;
pub mod driver;
mod error;
mod health;
pub mod integrator;
mod ledger;
pub mod log_verify;
pub mod metrics;
mod migrate;
mod observe;
pub mod partition;
pub mod pg;
mod recovery;
mod router;
pub mod spool;
pub mod store;
pub mod subscribe;
pub mod tlog;
pub mod transfer;
pub mod verify;
pub mod writer;

pub use chain::{Append, AppendAck, AppendBatch, BatchAck, Expect};
pub use config::{Backend, Dsn, LedgerConfig, Replication, SessionAttrs};
pub use error::LedgerError;
pub use health::{Health, HealthStatus, MailboxPressure};
pub use ledger::create_ledger_store;
pub use ledger::{Ledger, ShutdownReport};
pub use migrate::MigrationReport;
pub use partition::PartitionedLedger;
pub use recovery::SpoolRecovery;
pub use store::Durability;
pub use store::RechainedRecord;
pub use store::{Head, LedgerStore, RecordRange, ScanKey};
pub use subscribe::{Delivered, SubscribeOptions, Subscription};
