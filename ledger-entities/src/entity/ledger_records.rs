//! `ledger_records`: one row per record; each anchor's rows form a hash-linked chain.

use sea_orm::entity::prelude::*;

/// A row of `ledger_records`.
///
/// `producer` and `version` are nullable in the schema although the ledger always writes
/// them; the conversion to the record model treats NULL there as an error.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_records")]
pub struct Model {
    /// Record id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub rid: Uuid,
    /// The chain the record belongs to.
    pub anchor_id: Uuid,
    /// Host-defined slot name.
    #[sea_orm(column_type = "Text")]
    pub slot: String,
    /// Host-defined record kind.
    #[sea_orm(column_type = "Text")]
    pub kind: String,
    /// Ledger-assigned time (PostgreSQL keeps microseconds).
    pub ts: DateTimeUtc,
    /// Hash of the anchor's previous record; NULL for the genesis record.
    #[sea_orm(column_type = "Char(Some(64))", nullable)]
    pub prev_hash: Option<String>,
    /// Hex SHA-256 of the record; unique across the table.
    #[sea_orm(column_type = "Char(Some(64))", unique)]
    pub hash: String,
    /// The host's payload.
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    /// Optional detached signature.
    #[sea_orm(column_type = "VarBinary(StringLen::None)", nullable)]
    pub sig: Option<Vec<u8>>,
    /// Who produced the record.
    #[sea_orm(column_type = "Text", nullable)]
    pub producer: Option<String>,
    /// Record-format version (column default `'v1'`).
    #[sea_orm(column_type = "Text", nullable)]
    pub version: Option<String>,
}

/// `ledger_records` has no foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
