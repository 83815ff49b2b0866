//! The `migration` crate against a real PostgreSQL: up/down/up, the exact schema of the
//! design, the database-enforced fork guard, [`migration::schema_status`], and agreement
//! between the SeaORM entities and the migrated tables.

mod common;

use chrono::{TimeZone, Utc};
use common::{TestContext, constraint_name, sqlstate};
use ledger_entities::entity::{ledger_checkpoints, ledger_records};
use migration::{Migrator, MigratorTrait, SchemaStatus, schema_status};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    ExecResult, QueryResult, Schema, Statement, Value,
};
use serde_json::json;
use uuid::Uuid;

const MIGRATION_NAME: &str = "m20261125_000001_create_ledger_tables";
const LOG_MIGRATION_NAME: &str = "m20261126_000010_transparency_log";
/// Every table after all migrations.
const ALL_TABLES: [&str; 8] = [
    "ledger_checkpoints",
    "ledger_cosignatures",
    "ledger_integrator",
    "ledger_log",
    "ledger_partition",
    "ledger_records",
    "ledger_tiles",
    "seaql_migrations",
];
const PREV_FK_MIGRATION: &str = "m20261126_000020_prev_fk";
const COSIGNATURES_MIGRATION: &str = "m20261203_000030_cosignatures";
const PARTITION_MIGRATION: &str = "m20261203_000040_partition";
const FOREIGN_KEY_VIOLATION: &str = "23503";
const PREV_FK: &str = "ledger_records_prev_fk";
const UNIQUE_VIOLATION: &str = "23505";
const FORK_GUARD: &str = "ledger_records_no_fork";

// ---------------------------------------------------------------------------------------
// Catalog queries

/// Runs a query with parameters and returns its rows.
async fn query(db: &DatabaseConnection, sql: &str, values: Vec<Value>) -> Vec<QueryResult> {
    db.query_all_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await
    .unwrap_or_else(|err| panic!("query failed: {err}\n{sql}"))
}

fn text(row: &QueryResult, column: &str) -> String {
    row.try_get("", column)
        .unwrap_or_else(|err| panic!("column {column}: {err}"))
}

fn opt_text(row: &QueryResult, column: &str) -> Option<String> {
    row.try_get("", column)
        .unwrap_or_else(|err| panic!("column {column}: {err}"))
}

/// Tables of the `public` schema, sorted.
async fn tables(db: &DatabaseConnection) -> Vec<String> {
    query(
        db,
        "SELECT table_name::text AS name FROM information_schema.tables
         WHERE table_schema = 'public' ORDER BY table_name",
        vec![],
    )
    .await
    .iter()
    .map(|row| text(row, "name"))
    .collect()
}

/// `(index name, definition)` of every index on the two ledger tables, sorted by name.
async fn ledger_indexes(db: &DatabaseConnection) -> Vec<(String, String)> {
    query(
        db,
        "SELECT indexname::text AS name, indexdef AS def FROM pg_indexes
         WHERE schemaname = 'public' AND tablename IN ('ledger_records', 'ledger_checkpoints')
         ORDER BY indexname",
        vec![],
    )
    .await
    .iter()
    .map(|row| (text(row, "name"), text(row, "def")))
    .collect()
}

/// One column as `information_schema.columns` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    data_type: String,
    char_length: Option<i32>,
    nullable: bool,
    default: Option<String>,
}

fn col(name: &str, data_type: &str, nullable: bool) -> Column {
    Column {
        name: name.to_owned(),
        data_type: data_type.to_owned(),
        char_length: None,
        nullable,
        default: None,
    }
}

fn char64(name: &str, nullable: bool) -> Column {
    Column {
        char_length: Some(64),
        ..col(name, "character", nullable)
    }
}

fn with_default(column: Column, default: &str) -> Column {
    Column {
        default: Some(default.to_owned()),
        ..column
    }
}

/// The columns of `table` in declaration order.
async fn columns(db: &DatabaseConnection, table: &str) -> Vec<Column> {
    query(
        db,
        "SELECT column_name::text AS name, data_type::text AS data_type,
                character_maximum_length::int4 AS char_length,
                is_nullable::text AS nullable, column_default::text AS column_default
         FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = $1
         ORDER BY ordinal_position",
        vec![table.into()],
    )
    .await
    .iter()
    .map(|row| Column {
        name: text(row, "name"),
        data_type: text(row, "data_type"),
        char_length: row
            .try_get("", "char_length")
            .unwrap_or_else(|err| panic!("char_length: {err}")),
        nullable: text(row, "nullable") == "YES",
        default: opt_text(row, "column_default"),
    })
    .collect()
}

/// `(constraint name, type letter, definition)` of every constraint on `table`, sorted by
/// name. Type letters: `p` primary key, `u` unique, `c` check, `f` foreign key, `x` exclusion.
async fn constraints(db: &DatabaseConnection, table: &str) -> Vec<(String, String, String)> {
    query(
        db,
        "SELECT conname::text AS name, contype::text AS kind,
                pg_get_constraintdef(oid) AS def
         FROM pg_constraint
         WHERE conrelid = ('public.' || $1)::regclass
         ORDER BY conname",
        vec![table.into()],
    )
    .await
    .iter()
    .map(|row| (text(row, "name"), text(row, "kind"), text(row, "def")))
    .collect()
}

fn triples(expected: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Plain-SQL writes

/// A 64-digit lowercase hex string standing in for a SHA-256 hash.
fn h(n: u32) -> String {
    format!("{n:064x}")
}

/// Inserts a minimal record with plain SQL, bypassing all application code, so only the
/// database's own constraints decide.
async fn insert_record(
    db: &DatabaseConnection,
    anchor: Uuid,
    prev_hash: Option<&str>,
    hash: &str,
) -> Result<ExecResult, DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO ledger_records (rid, anchor_id, slot, kind, ts, prev_hash, hash, payload, producer)
         VALUES ($1, $2, 'slot', 'kind', clock_timestamp(), $3, $4, '{}'::jsonb, 'test')",
        vec![
            Uuid::new_v4().into(),
            anchor.into(),
            prev_hash.map(str::to_owned).into(),
            hash.into(),
        ],
    ))
    .await
}

/// Asserts that `result` is a unique violation (SQLSTATE 23505) of the fork guard.
fn assert_fork_rejected(result: Result<ExecResult, DbErr>, what: &str) {
    let err = match result {
        Ok(_) => panic!("{what}: insert succeeded, expected the fork guard to reject it"),
        Err(err) => err,
    };
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some(UNIQUE_VIOLATION),
        "{what}: {err}"
    );
    assert_eq!(
        constraint_name(&err).as_deref(),
        Some(FORK_GUARD),
        "{what}: {err}"
    );
}

async fn count_records(db: &DatabaseConnection, anchor: Uuid) -> i64 {
    let rows = query(
        db,
        "SELECT count(*) AS n FROM ledger_records WHERE anchor_id = $1",
        vec![anchor.into()],
    )
    .await;
    rows[0]
        .try_get("", "n")
        .unwrap_or_else(|err| panic!("count: {err}"))
}

// ---------------------------------------------------------------------------------------
// Tests

/// Up, down and up again all succeed on a fresh database; down removes both tables and the
/// index, and only sea-orm's own `seaql_migrations` bookkeeping table remains.
#[tokio::test]
async fn up_down_up_on_fresh_database() {
    let ctx = TestContext::new_unmigrated("up_down_up").await;
    assert!(
        tables(&ctx.db).await.is_empty(),
        "fresh database has tables"
    );

    Migrator::up(&ctx.db, None).await.expect("first up");
    assert_eq!(tables(&ctx.db).await, ALL_TABLES);
    assert!(
        ledger_indexes(&ctx.db)
            .await
            .iter()
            .any(|(name, _)| name == "idx_records_anchor_ts"),
        "index missing after up"
    );

    Migrator::down(&ctx.db, None).await.expect("down");
    assert_eq!(tables(&ctx.db).await, ["seaql_migrations"]);
    assert_eq!(ledger_indexes(&ctx.db).await, vec![]);
    assert!(
        Migrator::get_applied_migrations(&ctx.db)
            .await
            .expect("applied migrations")
            .is_empty(),
        "down left a migration marked as applied"
    );

    Migrator::up(&ctx.db, None).await.expect("second up");
    assert_eq!(tables(&ctx.db).await, ALL_TABLES);
    assert_eq!(
        schema_status(&ctx.db).await.expect("status"),
        SchemaStatus::UpToDate
    );

    ctx.teardown().await;
}

/// The migrated schema is exactly the design's: tables, columns (names, order, types,
/// nullability, defaults), constraints (primary keys, the unique hash, the fork guard and
/// nothing else), indexes, and the one trigger (the predecessor check).
#[tokio::test]
async fn schema_matches_design() {
    let ctx = TestContext::new("schema_design").await;
    let db = &ctx.db;

    assert_eq!(tables(db).await, ALL_TABLES);

    assert_eq!(
        columns(db, "ledger_records").await,
        vec![
            col("rid", "uuid", false),
            col("anchor_id", "uuid", false),
            col("slot", "text", false),
            col("kind", "text", false),
            col("ts", "timestamp with time zone", false),
            char64("prev_hash", true),
            char64("hash", false),
            col("payload", "jsonb", false),
            col("sig", "bytea", true),
            col("producer", "text", true),
            with_default(col("version", "text", true), "'v1'::text"),
            // Transparency log (m20261126_000010): integration order.
            with_default(col("tx_id", "xid8", false), "pg_current_xact_id()"),
            col("seq", "bigint", false),
        ]
    );
    assert_eq!(
        columns(db, "ledger_log").await,
        vec![
            col("leaf_index", "bigint", false),
            col("rid", "uuid", false)
        ]
    );
    assert_eq!(
        columns(db, "ledger_tiles").await,
        vec![
            col("level", "smallint", false),
            col("idx", "bigint", false),
            col("width", "smallint", false),
            col("hashes", "bytea", false),
        ]
    );
    assert_eq!(
        columns(db, "ledger_integrator").await,
        vec![
            col("id", "smallint", false),
            col("holder", "uuid", true),
            col("lease_until", "timestamp with time zone", true),
            with_default(col("tree_size", "bigint", false), "0"),
            with_default(col("wm_tx", "xid8", false), "'0'::xid8"),
            with_default(col("wm_seq", "bigint", false), "0"),
        ]
    );
    assert_eq!(
        constraints(db, "ledger_log").await,
        triples(&[
            (
                "ledger_log_leaf_index_check",
                "c",
                "CHECK ((leaf_index >= 0))"
            ),
            ("ledger_log_pkey", "p", "PRIMARY KEY (leaf_index)"),
            ("ledger_log_rid_key", "u", "UNIQUE (rid)"),
        ])
    );
    assert_eq!(
        columns(db, "ledger_checkpoints").await,
        vec![
            col("cid", "uuid", false),
            col("range_start", "text", false),
            col("range_end", "text", false),
            char64("merkle_root", true),
            col("sig", "bytea", true),
            with_default(col("created_at", "timestamp with time zone", true), "now()"),
            with_default(col("record_count", "integer", true), "0"),
        ]
    );

    assert_eq!(
        constraints(db, "ledger_records").await,
        triples(&[
            ("ledger_records_hash_key", "u", "UNIQUE (hash)"),
            (
                FORK_GUARD,
                "u",
                "UNIQUE NULLS NOT DISTINCT (anchor_id, prev_hash)"
            ),
            ("ledger_records_pkey", "p", "PRIMARY KEY (rid)"),
        ])
    );
    assert_eq!(
        constraints(db, "ledger_checkpoints").await,
        triples(&[("ledger_checkpoints_pkey", "p", "PRIMARY KEY (cid)")])
    );
    // Witness cosignatures (m20261203_000030).
    assert_eq!(
        columns(db, "ledger_cosignatures").await,
        vec![
            col("cid", "uuid", false),
            col("witness", "text", false),
            col("line", "text", false),
            col("cosigned_at", "timestamp with time zone", false),
            with_default(
                col("received_at", "timestamp with time zone", false),
                "now()"
            ),
        ]
    );
    assert_eq!(
        constraints(db, "ledger_cosignatures").await,
        triples(&[
            (
                "ledger_cosignatures_cid_fkey",
                "f",
                "FOREIGN KEY (cid) REFERENCES ledger_checkpoints(cid)"
            ),
            (
                "ledger_cosignatures_line_check",
                "c",
                "CHECK (((line <> ''::text) AND (POSITION(('\n'::text) IN (line)) = 0)))"
            ),
            (
                "ledger_cosignatures_pkey",
                "p",
                "PRIMARY KEY (cid, witness)"
            ),
        ])
    );

    // Unique constraints and primary keys are backed by indexes of the same name; the only
    // other index is the anchor/time index.
    let expected_indexes: Vec<(String, String)> = [
        (
            "idx_records_anchor_ts",
            "CREATE INDEX idx_records_anchor_ts ON public.ledger_records USING btree (anchor_id, ts)",
        ),
        (
            "ledger_checkpoints_pkey",
            "CREATE UNIQUE INDEX ledger_checkpoints_pkey ON public.ledger_checkpoints USING btree (cid)",
        ),
        (
            "ledger_records_hash_key",
            "CREATE UNIQUE INDEX ledger_records_hash_key ON public.ledger_records USING btree (hash)",
        ),
        (
            "ledger_records_integration",
            "CREATE INDEX ledger_records_integration ON public.ledger_records USING btree (tx_id, seq)",
        ),
        (
            "ledger_records_no_fork",
            "CREATE UNIQUE INDEX ledger_records_no_fork ON public.ledger_records USING btree (anchor_id, prev_hash) NULLS NOT DISTINCT",
        ),
        (
            "ledger_records_pkey",
            "CREATE UNIQUE INDEX ledger_records_pkey ON public.ledger_records USING btree (rid)",
        ),
    ]
    .iter()
    .map(|(name, def)| (name.to_string(), def.to_string()))
    .collect();
    assert_eq!(ledger_indexes(db).await, expected_indexes);
    let triggers: Vec<String> = query(
        db,
        "SELECT tgname::text AS name FROM pg_trigger
         WHERE tgrelid = 'ledger_records'::regclass AND NOT tgisinternal ORDER BY tgname",
        vec![],
    )
    .await
    .iter()
    .map(|row| text(row, "name"))
    .collect();
    assert_eq!(triggers, [PREV_FK]);

    ctx.teardown().await;
}

/// The database refuses a second genesis record (prev_hash NULL) for one anchor with
/// SQLSTATE 23505 from `ledger_records_no_fork`, and keeps only the first.
#[tokio::test]
async fn second_genesis_of_an_anchor_is_rejected() {
    let ctx = TestContext::new("fork_genesis").await;
    let anchor = Uuid::new_v4();

    insert_record(&ctx.db, anchor, None, &h(1))
        .await
        .expect("first genesis");
    assert_fork_rejected(
        insert_record(&ctx.db, anchor, None, &h(2)).await,
        "second genesis",
    );
    assert_eq!(count_records(&ctx.db, anchor).await, 1);

    ctx.teardown().await;
}

/// Within one anchor a linear chain is accepted, but a second record extending the same
/// predecessor (same prev_hash) is refused with SQLSTATE 23505 from `ledger_records_no_fork`.
#[tokio::test]
async fn two_successors_of_one_record_are_rejected() {
    let ctx = TestContext::new("fork_successor").await;
    let anchor = Uuid::new_v4();

    insert_record(&ctx.db, anchor, None, &h(1))
        .await
        .expect("genesis");
    insert_record(&ctx.db, anchor, Some(&h(1)), &h(2))
        .await
        .expect("successor of genesis");
    insert_record(&ctx.db, anchor, Some(&h(2)), &h(3))
        .await
        .expect("successor of the successor");

    assert_fork_rejected(
        insert_record(&ctx.db, anchor, Some(&h(1)), &h(4)).await,
        "second successor of genesis",
    );
    insert_record(&ctx.db, anchor, Some(&h(3)), &h(5))
        .await
        .expect("successor of the chain head");
    assert_fork_rejected(
        insert_record(&ctx.db, anchor, Some(&h(3)), &h(6)).await,
        "second successor of the chain head",
    );
    assert_eq!(count_records(&ctx.db, anchor).await, 4);

    ctx.teardown().await;
}

/// The fork guard is per anchor: different anchors may each have a genesis record and each
/// extend their own chain.
#[tokio::test]
async fn fork_guard_is_per_anchor() {
    let ctx = TestContext::new("fork_per_anchor").await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());

    insert_record(&ctx.db, a, None, &h(1))
        .await
        .expect("genesis of anchor a");
    insert_record(&ctx.db, b, None, &h(2))
        .await
        .expect("genesis of anchor b");
    insert_record(&ctx.db, a, Some(&h(1)), &h(3))
        .await
        .expect("anchor a extends its genesis");
    insert_record(&ctx.db, b, Some(&h(2)), &h(4))
        .await
        .expect("anchor b extends its genesis");

    assert_eq!(count_records(&ctx.db, a).await, 2);
    assert_eq!(count_records(&ctx.db, b).await, 2);

    ctx.teardown().await;
}

/// The database refuses a record whose predecessor is not stored in its anchor (SQLSTATE
/// 23503 from the check `ledger_records_prev_fk`): a predecessor that does not exist, or one
/// that belongs to another anchor. A predecessor and its successor in one statement are
/// accepted (the check runs at the end of the statement).
#[tokio::test]
async fn record_without_stored_predecessor_is_rejected() {
    let ctx = TestContext::new("prev_fk").await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    insert_record(&ctx.db, a, None, &h(1))
        .await
        .expect("genesis of anchor a");
    for (anchor, prev, what) in [
        (a, h(99), "predecessor not stored"),
        (b, h(1), "predecessor in another anchor"),
    ] {
        let err = insert_record(&ctx.db, anchor, Some(&prev), &h(5))
            .await
            .expect_err(what);
        assert_eq!(
            sqlstate(&err).as_deref(),
            Some(FOREIGN_KEY_VIOLATION),
            "{what}: {err}"
        );
        assert_eq!(
            constraint_name(&err).as_deref(),
            Some(PREV_FK),
            "{what}: {err}"
        );
    }
    ctx.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO ledger_records (rid, anchor_id, slot, kind, ts, prev_hash, hash, payload, producer)
             VALUES ($1, $3, 's', 'k', now(), $4, $5, '{}', 'p'), ($2, $3, 's', 'k', now(), $5, $6, '{}', 'p')",
            vec![
                Uuid::new_v4().into(),
                Uuid::new_v4().into(),
                a.into(),
                h(1).into(),
                h(2).into(),
                h(3).into(),
            ],
        ))
        .await
        .expect("a predecessor and its successor in one statement");
    assert_eq!(count_records(&ctx.db, a).await, 3);
    assert_eq!(count_records(&ctx.db, b).await, 0);

    ctx.teardown().await;
}

/// `schema_status` reports the migration as pending on an empty database without creating
/// anything there, reports up to date after `up`, and reports a database migrated by a newer
/// build (an unknown applied migration) as newer.
#[tokio::test]
async fn schema_status_tracks_migrations_read_only() {
    let ctx = TestContext::new_unmigrated("schema_status").await;

    let status = schema_status(&ctx.db)
        .await
        .expect("status of empty database");
    assert_eq!(
        status,
        SchemaStatus::Pending {
            pending: vec![
                MIGRATION_NAME.to_owned(),
                LOG_MIGRATION_NAME.to_owned(),
                PREV_FK_MIGRATION.to_owned(),
                COSIGNATURES_MIGRATION.to_owned(),
                PARTITION_MIGRATION.to_owned(),
            ]
        }
    );
    assert!(!status.is_up_to_date());
    assert!(
        status.to_string().contains("run `ledger migrate up`"),
        "message does not say how to fix it: {status}"
    );
    assert!(
        tables(&ctx.db).await.is_empty(),
        "schema_status created tables"
    );

    Migrator::up(&ctx.db, None).await.expect("up");
    let status = schema_status(&ctx.db).await.expect("status after up");
    assert_eq!(status, SchemaStatus::UpToDate);
    assert!(status.is_up_to_date());

    ctx.db
        .execute_unprepared(
            "INSERT INTO seaql_migrations (version, applied_at)
             VALUES ('m20991231_000001_from_the_future', 0)",
        )
        .await
        .expect("record an unknown migration");
    assert_eq!(
        schema_status(&ctx.db)
            .await
            .expect("status of newer database"),
        SchemaStatus::Newer {
            unknown: vec!["m20991231_000001_from_the_future".to_owned()]
        }
    );

    ctx.teardown().await;
}

/// The entities read and write the migrated tables: a record with every column set round-
/// trips unchanged (CHAR(64), JSONB, BYTEA, microsecond TIMESTAMPTZ), and columns left
/// unset take the database defaults (`version` 'v1', `created_at` now(), `record_count` 0).
#[tokio::test]
async fn entities_round_trip_through_migrated_tables() {
    let ctx = TestContext::new("entity_round_trip").await;
    let ts = Utc
        .timestamp_micros(1_764_000_000_123_456)
        .single()
        .expect("valid timestamp");

    // The record's predecessor must be stored (`ledger_records_prev_fk`).
    let anchor = Uuid::new_v4();
    insert_record(&ctx.db, anchor, None, &h(1))
        .await
        .expect("predecessor");
    let record = ledger_records::Model {
        rid: Uuid::new_v4(),
        anchor_id: anchor,
        slot: "slot-a".to_owned(),
        kind: "measurement".to_owned(),
        ts,
        prev_hash: Some(h(1)),
        hash: h(2),
        payload: json!({"value": 42, "nested": {"list": [1, "two", null]}}),
        sig: Some(vec![0, 1, 2, 255]),
        producer: Some("sensor-7".to_owned()),
        version: Some("v1".to_owned()),
    };
    let inserted = ledger_records::ActiveModel::from(record.clone())
        .insert(&ctx.db)
        .await
        .expect("insert record");
    assert_eq!(inserted, record);
    let found = ledger_records::Entity::find_by_id(record.rid)
        .one(&ctx.db)
        .await
        .expect("select record")
        .expect("record exists");
    assert_eq!(found, record);

    let defaulted = ledger_records::ActiveModel {
        rid: Set(Uuid::new_v4()),
        anchor_id: Set(Uuid::new_v4()),
        slot: Set("s".to_owned()),
        kind: Set("k".to_owned()),
        ts: Set(ts),
        prev_hash: Set(None),
        hash: Set(h(3)),
        payload: Set(json!([])),
        sig: Set(None),
        producer: Set(None),
        version: NotSet,
    }
    .insert(&ctx.db)
    .await
    .expect("insert record without version");
    assert_eq!(defaulted.version.as_deref(), Some("v1"));

    let before = Utc::now();
    let checkpoint = ledger_checkpoints::ActiveModel {
        cid: Set(Uuid::new_v4()),
        range_start: Set(record.rid.to_string()),
        range_end: Set(record.rid.to_string()),
        merkle_root: Set(Some(h(4))),
        sig: Set(None),
        created_at: NotSet,
        record_count: NotSet,
    }
    .insert(&ctx.db)
    .await
    .expect("insert checkpoint");
    assert_eq!(checkpoint.record_count, Some(0));
    let created_at = checkpoint.created_at.expect("created_at defaulted");
    // Allow for clock differences between the test process and the server.
    assert!(
        (created_at - before).num_seconds().abs() < 60,
        "created_at {created_at} is not about now ({before})"
    );
    assert_eq!(
        ledger_checkpoints::Entity::find_by_id(checkpoint.cid)
            .one(&ctx.db)
            .await
            .expect("select checkpoint"),
        Some(checkpoint)
    );

    ctx.teardown().await;
}

/// The entity definitions declare the same columns as the migration: tables generated
/// from the entities in a second database have the migrated tables' column names, order,
/// types and nullability (defaults live only in the migration).
#[tokio::test]
async fn entities_declare_the_migrated_columns() {
    let migrated = TestContext::new("entity_cols_migrated").await;
    let generated = TestContext::new_unmigrated("entity_cols_generated").await;

    let schema = Schema::new(DbBackend::Postgres);
    generated
        .db
        .execute(&schema.create_table_from_entity(ledger_records::Entity))
        .await
        .expect("create ledger_records from entity");
    generated
        .db
        .execute(&schema.create_table_from_entity(ledger_checkpoints::Entity))
        .await
        .expect("create ledger_checkpoints from entity");

    let without_default = |columns: Vec<Column>| -> Vec<Column> {
        columns
            .into_iter()
            .map(|c| Column { default: None, ..c })
            .collect()
    };
    // The entity leaves out the integration-order columns (`tx_id`, `seq`): the ledger never
    // reads or writes them through SeaORM.
    let design_only = |columns: Vec<Column>| -> Vec<Column> {
        columns
            .into_iter()
            .filter(|c| c.name != "tx_id" && c.name != "seq")
            .collect()
    };
    for table in ["ledger_records", "ledger_checkpoints"] {
        assert_eq!(
            without_default(columns(&generated.db, table).await),
            design_only(without_default(columns(&migrated.db, table).await)),
            "entity and migration disagree on {table}"
        );
    }

    generated.teardown().await;
    migrated.teardown().await;
}
