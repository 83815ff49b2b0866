//! `ledger_checkpoints`: a signed Merkle root over a range of records.

use sea_orm::entity::prelude::*;

/// A row of `ledger_checkpoints`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_checkpoints")]
pub struct Model {
    /// Checkpoint id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub cid: Uuid,
    /// First record of the covered range.
    #[sea_orm(column_type = "Text")]
    pub range_start: String,
    /// Last record of the covered range.
    #[sea_orm(column_type = "Text")]
    pub range_end: String,
    /// Hex SHA-256 Merkle root over the range.
    #[sea_orm(column_type = "Char(Some(64))", nullable)]
    pub merkle_root: Option<String>,
    /// Optional signature over the checkpoint.
    #[sea_orm(column_type = "VarBinary(StringLen::None)", nullable)]
    pub sig: Option<Vec<u8>>,
    /// When the checkpoint was written (column default `now()`).
    pub created_at: Option<DateTimeUtc>,
    /// Number of records in the range (column default `0`).
    pub record_count: Option<i32>,
}

/// `ledger_checkpoints` has no foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
