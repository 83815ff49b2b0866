//! The storage drivers, one per backend, each implementing [`crate::driver::Driver`]:
//!
//! - [`memory::MemoryDriver`]: the memory store, with or without the fsynced spool;
//! - [`postgres::PostgresDriver`]: the PostgreSQL writer ([`crate::writer::Writer`]: group
//!   commit, failover to the outage buffer, the drain) and its reads (PostgreSQL plus the
//!   buffer);
//! - [`read_only::ReadOnlyDriver`]: reads only; every record refused.

pub(crate) mod memory;
pub(crate) mod postgres;
pub(crate) mod read_only;
