//! `ledger migrate up|down|status|fresh`: the database schema, against `LEDGER_DSN` (or the
//! configuration file's `dsn`), or every database of `partitions:` / `LEDGER_PARTITIONS`. Same semantics as sea-orm-cli's `migrate` subcommands.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use ledger_actors::LedgerConfig;
use migration::{Migrator, MigratorTrait, SchemaStatus, schema_status};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};

/// Arguments of `ledger migrate`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Clone)]
enum Action {
    /// Apply pending migrations (all of them, or the first N with -n).
    Up {
        /// Apply at most this many pending migrations.
        #[arg(short, long)]
        num: Option<u32>,
    },
    /// Roll back applied migrations: the last one, the last N with -n, or all with --all.
    Down {
        /// Roll back this many applied migrations.
        #[arg(short, long, default_value_t = 1, conflicts_with = "all")]
        num: u32,
        /// Roll back every applied migration (drops the ledger tables and their records).
        #[arg(long)]
        all: bool,
    },
    /// List every migration as applied or pending, then whether the schema is up to date.
    Status,
    /// DESTRUCTIVE, asks no question: drop every table of the database (all records
    /// included), then apply all migrations. For development and tests only.
    Fresh,
}

/// Runs `ledger migrate`; exit 0 when done, errors are returned (the caller exits 2). With
/// `partitions:` it runs on every partition in list order, each under a `partition N
/// (DSN):` heading, and `up` and `fresh` then write (or check) each database's partition
/// record; it stops at the first partition that fails.
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    if config.partitions.is_empty() {
        let dsn = config
            .dsn
            .as_ref()
            .context("no database: set LEDGER_DSN (or `dsn:` in the configuration file)")?;
        let writes = matches!(args.action, Action::Up { .. } | Action::Fresh);
        let code = on_database(&config, dsn, args.action).await?;
        if writes {
            // A database that records itself as a partition of a longer list is refused.
            ledger_actors::partition::record_partitions(&config).await?;
        }
        return Ok(code);
    }
    let count = config.partitions.len();
    for i in 0..count {
        let part = ledger_actors::partition::partition_config(&config, i)?;
        let dsn = part.dsn.clone().context("a partition without a DSN")?;
        println!("partition {i} of {count} ({dsn}):");
        on_database(&part, &dsn, args.action.clone())
            .await
            .with_context(|| format!("partition {i} ({dsn})"))?;
    }
    if matches!(args.action, Action::Up { .. } | Action::Fresh) {
        let checks = ledger_actors::partition::record_partitions(&config).await?;
        for (i, c) in checks.iter().enumerate() {
            let what = match c {
                ledger_actors::partition::RecordCheck::Written => "written",
                _ => "matches",
            };
            println!("partition {i} of {count}: partition record {what}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn on_database(
    config: &LedgerConfig,
    dsn: &ledger_actors::Dsn,
    action: Action,
) -> anyhow::Result<ExitCode> {
    // Of a multi-host DSN, the host that takes writes.
    let target = ledger_actors::pg::store::writable_endpoint(config)
        .await
        .with_context(|| format!("cannot connect to {dsn}"))?;
    let mut options = ConnectOptions::new(target.expose());
    options
        .max_connections(1)
        .connect_timeout(config.timeout.max(Duration::from_secs(1)))
        .acquire_timeout(config.timeout.max(Duration::from_secs(1)))
        .sqlx_logging(false);
    // The driver's message never contains the DSN; the redacted form names the target.
    let db = Database::connect(options)
        .await
        .with_context(|| format!("cannot connect to {dsn}"))?;
    let result = act(&db, action).await;
    // Best effort: the process exits next anyway.
    let _ = db.close().await;
    result
}

async fn act(db: &DatabaseConnection, action: Action) -> anyhow::Result<ExitCode> {
    match action {
        Action::Up { num } => {
            Migrator::up(db, num).await.context("migrate up")?;
            println!("migrate up: done");
            print_status(db).await
        }
        Action::Down { num, all } => {
            Migrator::down(db, if all { None } else { Some(num) })
                .await
                .context("migrate down")?;
            println!("migrate down: done");
            print_status(db).await
        }
        Action::Status => print_status(db).await,
        Action::Fresh => {
            Migrator::fresh(db).await.context("migrate fresh")?;
            println!("migrate fresh: every table dropped, all migrations applied");
            print_status(db).await
        }
    }
}

/// Prints each migration of this build as applied or pending (read-only), and the overall
/// status.
async fn print_status(db: &DatabaseConnection) -> anyhow::Result<ExitCode> {
    let migrations = Migrator::get_migration_with_status_read_only(db)
        .await
        .context("reading the applied migrations")?;
    for m in &migrations {
        println!("{:<8} {}", m.status().to_string().to_lowercase(), m.name());
    }
    let status = schema_status(db)
        .await
        .context("reading the applied migrations")?;
    if let SchemaStatus::Newer { unknown } = &status {
        for name in unknown {
            println!("{:<8} {name} (unknown to this build)", "applied");
        }
    }
    println!("{status}");
    if status.is_up_to_date()
        && let Some(r) = ledger_actors::partition::read_record(db).await?
    {
        println!("partition record: partition {} of {}", r.index, r.count);
    }
    Ok(ExitCode::SUCCESS)
}
