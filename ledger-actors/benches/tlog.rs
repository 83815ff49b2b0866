//! Transparency-log benchmarks, `cargo bench -p ledger-actors --bench tlog`:
//!
//! 1. an inclusion proof in a 10-million-leaf log, from tiles held in memory (the pure cost:
//!    locate the tiles, fold the path);
//! 2. the same against PostgreSQL when `LEDGER_BENCH_DSN` is set: the tiles those proofs
//!    need written to `ledger_tiles` of a fresh database, then `read_tiles` (one round trip)
//!    + proof;
//! 3. offline receipt verification (`ledger_actors::tlog::verify_receipt`: note signature,
//!    record hash, inclusion path).
//!
//! Each figure is the median (and p99) of many runs; nothing is asserted. With
//! `LEDGER_BENCH_RECEIPT_DIR` set, the receipt of (3) and its verifier key are written there,
//! to time `ledger verify-receipt` as a whole process on the same input.

use std::time::{Duration, Instant};

use ledger_actors::integrator::LogStore;
use ledger_tlog::merkle::{inclusion_nodes, inclusion_proof, leaf_hash};
use ledger_tlog::note::{Checkpoint, NoteSigner};
use ledger_tlog::receipt::Receipt;
use ledger_tlog::tile::{Edge, TileSet, tiles_for};

const LEAVES: u64 = 10_000_000;

fn median_p99(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn leaf(i: u64) -> [u8; 32] {
    leaf_hash(&i.to_be_bytes())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut edge = Edge::new();
    let mut tiles = TileSet::default();
    let chunk: Vec<u64> = (0..100_000).collect();
    let mut at = 0u64;
    while at < LEAVES {
        let leaves: Vec<[u8; 32]> = chunk.iter().map(|i| leaf(at + i)).collect();
        for (id, hashes) in edge.append(&leaves) {
            tiles.insert(id, hashes);
        }
        at += chunk.len() as u64;
    }
    let root = edge.root();
    println!(
        "built a {LEAVES}-leaf tree: {} tiles in {:.1} s",
        tiles.tiles.len(),
        started.elapsed().as_secs_f64()
    );

    let mut times = Vec::new();
    for k in 0..2000u64 {
        let index = (k * 2_654_435_761 + 12_345) % LEAVES;
        let t = Instant::now();
        let path = inclusion_proof(index, LEAVES, &tiles)?;
        times.push(t.elapsed());
        assert!(
            ledger_tlog::merkle::verify_inclusion(index, LEAVES, &leaf(index), &path, &root)
                .is_ok()
        );
    }
    let (m, p) = median_p99(times);
    println!("inclusion proof, 10M leaves, tiles in memory: median {m:?}, p99 {p:?} (2000 runs)");

    if let Ok(dsn) = std::env::var("LEDGER_BENCH_DSN") {
        actix::System::new().block_on(postgres(&dsn, &tiles, &root))?;
    } else {
        println!("(set LEDGER_BENCH_DSN=postgres://... to measure against PostgreSQL)");
    }

    // Receipt verification: a real record, a signed checkpoint of the 10M-leaf tree.
    let signer = NoteSigner::from_seed("example.com/avl-bench", &[5; 32])?;
    let mut record = ledger_entities::LedgerRecord::seal(
        ledger_entities::NewRecord::new(
            uuid::Uuid::nil(),
            "slot",
            "kind",
            serde_json::json!({"amount": 100, "currency": "EUR", "note": "x".repeat(64)}),
            "bench",
        ),
        uuid::Uuid::nil(),
        chrono::Utc::now(),
        None,
    )?;
    record.sig = None;
    // Put the record at leaf 0 of a fresh 10M tree whose other leaves are the synthetic ones.
    let bytes = record.hash.0;
    let mut edge2 = Edge::new();
    let mut tiles2 = TileSet::default();
    let mut at = 0u64;
    while at < LEAVES {
        let leaves: Vec<[u8; 32]> = chunk
            .iter()
            .map(|i| {
                if at + i == 0 {
                    leaf_hash(&bytes)
                } else {
                    leaf(at + i)
                }
            })
            .collect();
        for (id, hashes) in edge2.append(&leaves) {
            tiles2.insert(id, hashes);
        }
        at += chunk.len() as u64;
    }
    let path = inclusion_proof(0, LEAVES, &tiles2)?;
    let note = signer.sign(
        &Checkpoint {
            origin: signer.name().into(),
            size: LEAVES,
            root: edge2.root(),
        }
        .text(),
    )?;
    let receipt = Receipt::new(serde_json::to_value(&record)?, 0, LEAVES, &path, note);
    let key = signer.verifier();
    // For timing `ledger verify-receipt` as a whole process on the same receipt.
    if let Ok(dir) = std::env::var("LEDGER_BENCH_RECEIPT_DIR") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("receipt.json"), serde_json::to_vec(&receipt)?)?;
        std::fs::write(dir.join("checkpoint.pub"), key.to_key_string())?;
        println!("wrote receipt.json and checkpoint.pub to {}", dir.display());
    }
    let mut times = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        ledger_actors::tlog::verify_receipt(&receipt, &key)?;
        times.push(t.elapsed());
    }
    let (m, p) = median_p99(times);
    println!("verify_receipt (library, 10M-leaf tree): median {m:?}, p99 {p:?} (2000 runs)");
    Ok(())
}

async fn postgres(
    dsn: &str,
    tiles: &TileSet,
    root: &[u8; 32],
) -> Result<(), Box<dyn std::error::Error>> {
    use sea_orm::{ConnectionTrait, Database};
    let name = format!("avl_bench_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(dsn).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    let mut url = url::Url::parse(dsn)?;
    url.set_path(&format!("/{name}"));
    let db = Database::connect(url.as_str()).await?;
    <migration::Migrator as migration::MigratorTrait>::up(&db, None).await?;
    let config = ledger_actors::LedgerConfig {
        backend: ledger_actors::Backend::Postgres,
        dsn: Some(ledger_actors::Dsn::parse(url.as_str())?),
        timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let log = ledger_actors::integrator::postgres::PostgresLog::connect(&config)?;
    let t = Instant::now();
    // Only the tiles the measured proofs read are written (a full 10M-leaf log is 320 MB of
    // tiles): each lookup is still one primary-key probe per tile.
    let probes: Vec<u64> = (0..1000u64)
        .map(|k| (k * 2_654_435_761 + 13) % LEAVES)
        .collect();
    let mut needed = std::collections::BTreeSet::new();
    for index in &probes {
        needed.extend(tiles_for(&inclusion_nodes(*index, LEAVES)?));
    }
    let all: Vec<_> = tiles
        .tiles
        .iter()
        .filter(|(id, _)| needed.contains(*id))
        .collect();
    for batch in all.chunks(500) {
        let levels: Vec<i16> = batch.iter().map(|(id, _)| i16::from(id.level)).collect();
        let idxs: Vec<i64> = batch.iter().map(|(id, _)| id.index as i64).collect();
        let widths: Vec<i16> = batch.iter().map(|(_, h)| h.len() as i16).collect();
        let bytes: Vec<Vec<u8>> = batch
            .iter()
            .map(|(_, h)| ledger_tlog::tile::encode(h))
            .collect();
        sea_orm::sqlx::query(
            "INSERT INTO ledger_tiles (level, idx, width, hashes) \
             SELECT * FROM UNNEST($1::smallint[], $2::bigint[], $3::smallint[], $4::bytea[])",
        )
        .bind(&levels)
        .bind(&idxs)
        .bind(&widths)
        .bind(&bytes)
        .execute(log.pool())
        .await?;
    }
    sea_orm::sqlx::query("ANALYZE ledger_tiles")
        .execute(log.pool())
        .await?;
    println!(
        "wrote {} tiles to PostgreSQL in {:.1} s",
        all.len(),
        t.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    for index in probes {
        let t = Instant::now();
        let set = log
            .read_tiles(&tiles_for(&inclusion_nodes(index, LEAVES)?))
            .await?;
        let path = inclusion_proof(index, LEAVES, &set)?;
        times.push(t.elapsed());
        assert!(
            ledger_tlog::merkle::verify_inclusion(index, LEAVES, &leaf(index), &path, root).is_ok()
        );
    }
    let (m, p) = median_p99(times);
    println!(
        "inclusion proof, 10M leaves, tiles read from PostgreSQL (one query): median {m:?}, p99 {p:?} (1000 runs)"
    );
    log.pool().close().await;
    db.close().await?;
    admin
        .execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await?;
    Ok(())
}
