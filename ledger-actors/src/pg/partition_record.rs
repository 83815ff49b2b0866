//! The partition record a partitioned ledger's database keeps (`ledger_partition`, see
//! `crate::partition`): read here, below both the partitioned ledger and the single
//! `Ledger`, which refuses to start alone on a partition's database.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::config::LedgerConfig;
use crate::error::LedgerError;

/// What a partition's database records about its place (`ledger_partition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionRecord {
    /// Its index in the list.
    pub index: u32,
    /// The list's length.
    pub count: u32,
}

/// Reads the partition record of the database behind `db` (`None`: the table is empty).
pub async fn read_record(db: &DatabaseConnection) -> Result<Option<PartitionRecord>, LedgerError> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT partition_index, partition_count FROM ledger_partition",
        ))
        .await
        .map_err(|e| LedgerError::SchemaMissing(format!("reading ledger_partition: {e}")))?;
    let Some(row) = row else { return Ok(None) };
    let get = |col: &str| {
        row.try_get::<i32>("", col)
            .map_err(|e| LedgerError::Database(format!("ledger_partition.{col}: {e}")))
    };
    Ok(Some(PartitionRecord {
        index: u32::try_from(get("partition_index")?).unwrap_or(u32::MAX),
        count: u32::try_from(get("partition_count")?).unwrap_or(u32::MAX),
    }))
}

/// A ledger started alone (`Ledger::start`, no `partitions` list) on the database `db`:
/// refused with [`LedgerError::PartitionMismatch`] when that database was migrated as a
/// partition of a partitioned ledger (its record names more than one partition), since the
/// ledger would take appends of anchors the map puts on other servers. A database without a
/// record, or with `0 of 1`, is an unpartitioned ledger's.
pub(crate) async fn refuse_partition_alone(
    config: &LedgerConfig,
    db: &DatabaseConnection,
) -> Result<(), LedgerError> {
    match read_record(db).await? {
        Some(found) if found.count > 1 || found.index != 0 => {
            let dsn = config
                .dsn
                .as_ref()
                .map(|d| d.redacted())
                .unwrap_or_default();
            Err(LedgerError::PartitionMismatch(format!(
                "{dsn}: its database records partition {} of {}, but this ledger was started on it alone (no partitions list): it would take appends of anchors that live on the other partitions. Start it with the partitions list it was migrated with (PartitionedLedger, or the CLI with `partitions:`)",
                found.index, found.count
            )))
        }
        _ => Ok(()),
    }
}
