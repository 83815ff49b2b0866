//! SeaORM entities for the tables created by the `migration` crate.
//!
//! The column types mirror the DDL in `migration/src/m20261125_000001_create_ledger_tables.rs`
//! (`CHAR(64)` hashes, `JSONB` payload, `TIMESTAMPTZ` read as UTC); the schema itself comes
//! only from the migration, never from these entities.

pub mod ledger_checkpoints;
pub mod ledger_records;

// Conversions between `crate::record::LedgerRecord` and `ledger_records` rows.
pub mod convert;

pub mod prelude {
    //! The entities under short names, as sea-orm-cli generates them.

    pub use super::ledger_checkpoints::Entity as LedgerCheckpoints;
    pub use super::ledger_records::Entity as LedgerRecords;
}
