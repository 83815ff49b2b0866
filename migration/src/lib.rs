//! AVL database schema migrations, in sea-orm-cli's layout.
//!
//! The schema is two tables, `ledger_records` (the hash-linked records, one chain per
//! `anchor_id`) and `ledger_checkpoints` (signed Merkle roots over record ranges), plus the
//! index `idx_records_anchor_ts` and the fork guard `ledger_records_no_fork`, a unique
//! constraint that lets the database itself refuse a second genesis record or a second
//! successor of one record within an anchor.
//!
//! # Layout
//!
//! - `src/lib.rs`: [`Migrator`], the ordered list of migrations, and [`schema_status`], which
//!   tells a ledger process whether the database is ready without changing it.
//! - `src/main.rs`: the `migration` binary, sea-orm-migration's command line
//!   (`up`, `down`, `status`, `fresh`, ...) for this [`Migrator`].
//! - `src/m20261125_000001_create_ledger_tables.rs`: the initial schema, as raw SQL so it is
//!   exactly the design's.
//! - `src/m20261126_000010_transparency_log.rs`: the transparency log's tables and the
//!   integration order columns of `ledger_records`.
//! - `src/m20261126_000020_prev_fk.rs`: the statement-level check `ledger_records_prev_fk` (a
//!   record's predecessor must be stored in its anchor; SQLSTATE 23503).
//! - `src/m20261203_000030_cosignatures.rs`: `ledger_cosignatures`, witness cosignatures of
//!   checkpoints.
//! - `src/m20261203_000040_partition.rs`: `ledger_partition`, the partition record of a
//!   partitioned ledger's database (its index and the partition count).
//!
//! # Example
//!
//! ```no_run
//! use migration::{Migrator, MigratorTrait, SchemaStatus, schema_status};
//! use sea_orm_migration::sea_orm::Database;
//!
//! # async fn run() -> Result<(), sea_orm_migration::DbErr> {
//! let db = Database::connect("postgres://postgres@127.0.0.1:5432/avl").await?;
//! if let status @ SchemaStatus::Pending { .. } = schema_status(&db).await? {
//!     eprintln!("{status}");
//!     Migrator::up(&db, None).await?;
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::fmt;

pub use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DatabaseConnection, EntityTrait};
use sea_orm_migration::seaql_migrations;

mod m20261125_000001_create_ledger_tables;
mod m20261126_000010_transparency_log;
mod m20261126_000020_prev_fk;
mod m20261203_000030_cosignatures;
mod m20261203_000040_partition;

/// Runs a migration's raw SQL statements in order (every migration here is plain DDL). On
/// PostgreSQL sea-orm-migration wraps each migration in a transaction (DDL is transactional
/// there), so a failure part-way leaves nothing behind.
async fn run_all(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

/// All AVL migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_ledger_tables::Migration),
            Box::new(m20261126_000010_transparency_log::Migration),
            Box::new(m20261126_000020_prev_fk::Migration),
            Box::new(m20261203_000030_cosignatures::Migration),
            Box::new(m20261203_000040_partition::Migration),
        ]
    }
}

/// Whether a database's schema matches the migrations compiled into this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    /// Every migration of this build is applied and the database records no others.
    UpToDate,
    /// Some migrations of this build are not applied (all of them on an empty database).
    Pending {
        /// Names of the missing migrations, oldest first.
        pending: Vec<String>,
    },
    /// The database records migrations this build does not know: it was migrated by a newer
    /// build, and this one must not write to it.
    Newer {
        /// Names of the unknown applied migrations, in name (= time) order.
        unknown: Vec<String>,
    },
}

impl SchemaStatus {
    /// True when the ledger can run against the database as it is.
    pub fn is_up_to_date(&self) -> bool {
        matches!(self, SchemaStatus::UpToDate)
    }
}

impl fmt::Display for SchemaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaStatus::UpToDate => f.write_str("database schema is up to date"),
            SchemaStatus::Pending { pending } => write!(
                f,
                "database schema is not up to date: {} migration(s) pending ({}); \
                 run `ledger migrate up`",
                pending.len(),
                pending.join(", ")
            ),
            SchemaStatus::Newer { unknown } => write!(
                f,
                "database schema is newer than this build: unknown migration(s) applied ({}); \
                 upgrade the ledger binary",
                unknown.join(", ")
            ),
        }
    }
}

/// Compares the migrations applied to `db` with those of [`Migrator`].
///
/// Read-only: unlike [`MigratorTrait::get_pending_migrations`], which first creates the
/// `seaql_migrations` table, this only reads, so it works for a database user without DDL
/// rights and leaves an empty database empty. A missing `seaql_migrations` table means
/// nothing is applied.
pub async fn schema_status(db: &DatabaseConnection) -> Result<SchemaStatus, DbErr> {
    let applied: HashSet<String> = if SchemaManager::new(db)
        .has_table(Migrator::migration_table_name().to_string())
        .await?
    {
        seaql_migrations::Entity::find()
            .all(db)
            .await?
            .into_iter()
            .map(|row| row.version)
            .collect()
    } else {
        HashSet::new()
    };

    let known: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();

    let mut unknown: Vec<String> = applied
        .iter()
        .filter(|name| !known.contains(name))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Ok(SchemaStatus::Newer { unknown });
    }

    let pending: Vec<String> = known
        .into_iter()
        .filter(|name| !applied.contains(name))
        .collect();
    if pending.is_empty() {
        Ok(SchemaStatus::UpToDate)
    } else {
        Ok(SchemaStatus::Pending { pending })
    }
}
