//! Witness cosignatures through the `ledger` CLI against a real PostgreSQL
//! (`LEDGER_TEST_DSN`): a ledger with one witness (the test witness over HTTP) configured
//! by `LEDGER_WITNESSES` runs a load test; `ledger checkpoint` prints the cosigned note;
//! `ledger prove` writes a receipt carrying it; `ledger verify-receipt --witness/--quorum`
//! accepts it, and refuses a missing quorum (naming the witness) and a forged cosignature;
//! malformed witness settings are refused at start.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ledger_tlog::cosig::CosignatureSigner;
use ledger_tlog::note::NoteVerifier;
use ledger_tlog::witness::Witness;
use sea_orm::{ConnectionTrait, Database};

const DEFAULT_DSN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn ledger(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledger"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LEDGER_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("LEDGER_CHECKPOINT_INTERVAL", "0.2");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// See the module doc.
#[test]
fn cosigned_checkpoints_through_the_cli() {
    let admin = std::env::var("LEDGER_TEST_DSN").unwrap_or_else(|_| DEFAULT_DSN.to_owned());
    let name = format!("avl_cli_witness_{}", uuid::Uuid::new_v4().simple());
    let dsn = {
        let mut u = url::Url::parse(&admin).unwrap();
        u.set_path(&format!("/{name}"));
        u.to_string()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin_db = rt.block_on(Database::connect(&admin)).unwrap_or_else(|e| {
        panic!("PostgreSQL not reachable: set LEDGER_TEST_DSN=postgres://user@host:port/db ({e})")
    });
    rt.block_on(admin_db.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")))
        .unwrap();
    let dir = std::env::temp_dir().join(format!("avl-cli-witness-{}", uuid::Uuid::new_v4()));
    let out = ledger(
        &[],
        &[
            "keygen",
            "--origin",
            "example.com/avl-cli-w",
            "--out",
            path(&dir),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let key = dir.join("checkpoint.key");
    let public = dir.join("checkpoint.pub");
    let log_key = NoteVerifier::parse(&std::fs::read_to_string(&public).unwrap()).unwrap();
    let db_env = [("LEDGER_BACKEND", "postgres"), ("LEDGER_DSN", dsn.as_str())];
    let out = ledger(&db_env, &["migrate", "up"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let signer = CosignatureSigner::from_seed("witness.example/cli", &[41; 32]).unwrap();
    let w_key = signer.verifier();
    let running = integration_tests::witness::spawn(
        Witness::new(signer, vec![log_key.clone()]),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let w_pub = dir.join("w.pub");
    std::fs::write(&w_pub, format!("{}\n", w_key.to_key_string())).unwrap();
    let absent = CosignatureSigner::from_seed("witness.example/absent", &[42; 32])
        .unwrap()
        .verifier();
    let absent_pub = dir.join("absent.pub");
    std::fs::write(&absent_pub, format!("{}\n", absent.to_key_string())).unwrap();

    // Malformed settings are refused at start, naming the variable.
    let mut env = db_env.to_vec();
    env.push(("LEDGER_CHECKPOINT_KEY", path(&key)));
    let bad = [
        env.clone(),
        vec![("LEDGER_WITNESSES", "http://127.0.0.1:1")],
    ]
    .concat();
    let out = ledger(
        &bad,
        &["loadtest", "--anchors", "1", "--appends-per-anchor", "1"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("LEDGER_WITNESSES"), "{}", text(&out));
    let log_as_witness = format!("http://127.0.0.1:1 {}", log_key.to_key_string());
    let bad = [
        env.clone(),
        vec![("LEDGER_WITNESSES", log_as_witness.as_str())],
    ]
    .concat();
    let out = ledger(
        &bad,
        &["loadtest", "--anchors", "1", "--appends-per-anchor", "1"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a log key is not a cosigner key: {}",
        text(&out)
    );

    // A load test with the witness configured through the environment.
    let witnesses = format!("{} {}", running.url(), w_key.to_key_string());
    env.push(("LEDGER_WITNESSES", witnesses.as_str()));
    env.push(("LEDGER_WITNESS_QUORUM", "1"));
    let out = ledger(
        &env,
        &[
            "loadtest",
            "--anchors",
            "4",
            "--appends-per-anchor",
            "10",
            "--concurrency",
            "4",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The witness cosigns what the load test's ledger submitted before it stopped; wait
    // (bounded) for a stored cosignature of the latest checkpoint, submitted by a second,
    // idle ledger run if the first stopped before its last checkpoint was cosigned.
    let start = Instant::now();
    let note = loop {
        let out = ledger(&db_env, &["checkpoint"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let note = String::from_utf8(out.stdout).unwrap();
        if w_key.verify_note(&note).unwrap().is_some() {
            break note;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never cosigned: {note}"
        );
        // Appends nothing; its integrator loads the latest checkpoint and its publisher
        // submits it.
        let out = ledger(
            &env,
            &[
                "loadtest",
                "--anchors",
                "1",
                "--appends-per-anchor",
                "1",
                "--json",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    };
    assert!(log_key.open(&note).is_ok());
    assert!(note.contains("\n\u{2014} witness.example/cli "), "{note}");
    let size: u64 = note.lines().nth(1).unwrap().parse().unwrap();
    assert_eq!(
        running
            .witness
            .lock()
            .unwrap()
            .latest(log_key.name())
            .map(|l| l.0),
        Some(size)
    );

    // A receipt of the last leaf carries the cosigned note.
    let db = rt.block_on(Database::connect(&dsn)).unwrap();
    let row = rt
        .block_on(db.query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT rid::text AS rid FROM ledger_log ORDER BY leaf_index DESC LIMIT 1",
        )))
        .unwrap()
        .unwrap();
    let rid: String = row.try_get("", "rid").unwrap();
    let out = ledger(&db_env, &["prove", &rid]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let receipt = dir.join("receipt.json");
    std::fs::write(&receipt, &out.stdout).unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["checkpoint"].as_str().unwrap(), note);

    let verify = |file: &Path, extra: &[&str]| {
        let mut args = vec!["verify-receipt", path(file), "--key", path(&public)];
        args.extend_from_slice(extra);
        ledger(&[], &args)
    };
    let out = verify(&receipt, &["--witness", path(&w_pub)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("witnessed: 1 of 1"), "{}", text(&out));
    // Quorum 2 (the default: every --witness) with a witness that never cosigned.
    let out = verify(
        &receipt,
        &["--witness", path(&w_pub), "--witness", path(&absent_pub)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "1 valid cosignature(s) of the 2 required; none from: witness.example/absent"
        ),
        "{}",
        text(&out)
    );
    let out = verify(
        &receipt,
        &[
            "--witness",
            path(&w_pub),
            "--witness",
            path(&absent_pub),
            "--quorum",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = verify(&receipt, &["--witness", path(&w_pub), "--quorum", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // A forged cosignature (one bit of the signature flipped) is refused.
    let forged_note: String = note
        .lines()
        .map(|l| {
            if let Some(b64) = l.strip_prefix("\u{2014} witness.example/cli ") {
                let mut chars: Vec<char> = b64.chars().collect();
                chars[40] = if chars[40] == 'A' { 'B' } else { 'A' };
                format!(
                    "\u{2014} witness.example/cli {}",
                    chars.into_iter().collect::<String>()
                )
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let mut forged = r.clone();
    forged["checkpoint"] = serde_json::Value::String(forged_note);
    let forged_path = dir.join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let out = verify(&forged_path, &["--witness", path(&w_pub)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("cosignature by witness.example/cli"),
        "{}",
        text(&out)
    );
    // Without --witness the log's own signature is all that is checked.
    assert_eq!(verify(&forged_path, &[]).status.code(), Some(0));

    running.stop();
    drop(db);
    rt.block_on(admin_db.execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)")))
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
