//! The rollback runbook of docs/OPERATIONS.md ("Rollback and roll-forward"), executed
//! exactly as written: its `sh` blocks are read from the document and run in order with
//! `sh -e`, against real PostgreSQL, while a host appends throughout. The host is `ledger
//! append` run again and again from the runbook's configuration file (each run is a restart
//! of the host process); `$AVL_HOST_STOP` / `$AVL_HOST_START` pause and resume it.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

#[path = "../../integration-tests/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestContext;
use serde_json::{Value, json};
use support::temp_dir;
use uuid::Uuid;

/// The `sh` blocks of the runbook section, in document order.
fn runbook_steps() -> Vec<String> {
    let doc = include_str!("../../docs/OPERATIONS.md");
    let start = doc
        .find("\n## Rollback and roll-forward\n")
        .expect("OPERATIONS.md has the runbook section");
    let section = &doc[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let mut steps = Vec::new();
    let mut lines = section[..end].lines();
    while let Some(line) = lines.next() {
        if line.trim() == "```sh" {
            let mut block = String::new();
            for l in lines.by_ref() {
                if l.trim() == "```" {
                    break;
                }
                block.push_str(l);
                block.push('\n');
            }
            steps.push(block);
        }
    }
    steps
}

/// `ledger` with no LEDGER_* variable from the test's environment: the configuration file
/// alone decides, as for the host the runbook describes.
fn ledger_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledger"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LEDGER_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// One acknowledged record: rid, hash, durability, which host run acknowledged it.
#[derive(Debug, Clone)]
struct Ack {
    rid: Uuid,
    hash: String,
    durability: String,
    run: usize,
}

/// The host: `ledger --config CFG append` with two records per anchor, run again and again
/// until `done`, paused while `dir/stopped` exists (`dir/running` marks a run in progress).
struct Host {
    anchors: Arc<Mutex<Vec<Uuid>>>,
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<Mutex<Vec<String>>>,
    runs: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
}

impl Host {
    fn start(dir: &Path, config: &Path, anchors: Vec<Uuid>) -> (Self, std::thread::JoinHandle<()>) {
        let host = Host {
            anchors: Arc::new(Mutex::new(anchors)),
            acks: Arc::default(),
            failures: Arc::default(),
            runs: Arc::default(),
            done: Arc::default(),
        };
        let (anchors, acks, failures, runs, done) = (
            Arc::clone(&host.anchors),
            Arc::clone(&host.acks),
            Arc::clone(&host.failures),
            Arc::clone(&host.runs),
            Arc::clone(&host.done),
        );
        let (dir, config) = (dir.to_path_buf(), config.to_path_buf());
        let thread = std::thread::spawn(move || {
            let (running, stopped) = (dir.join("running"), dir.join("stopped"));
            let mut i = 0u64;
            while !done.load(Ordering::Acquire) {
                std::fs::write(&running, b"").unwrap();
                if stopped.exists() {
                    std::fs::remove_file(&running).unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let lines: Vec<String> = anchors
                    .lock()
                    .unwrap()
                    .iter()
                    .flat_map(|a| [*a, *a])
                    .map(|a| {
                        i += 1;
                        json!({ "anchor_id": a, "slot": "s", "kind": "k", "payload": { "i": i }, "producer": "runbook-host" })
                            .to_string()
                    })
                    .collect();
                let out = run_with_stdin(
                    ledger_cmd().arg("--config").arg(&config).arg("append"),
                    &lines.join("\n"),
                );
                std::fs::remove_file(&running).unwrap();
                let run = runs.load(Ordering::Acquire);
                if out.status.code() != Some(0) {
                    failures.lock().unwrap().push(format!(
                        "host run {run}: exit {:?}: {}",
                        out.status.code(),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let v: Value = serde_json::from_str(line).unwrap();
                    if let Some(rid) = v["rid"].as_str() {
                        acks.lock().unwrap().push(Ack {
                            rid: rid.parse().unwrap(),
                            hash: v["hash"].as_str().unwrap().to_owned(),
                            durability: v["durability"].as_str().unwrap().to_owned(),
                            run,
                        });
                    }
                }
                runs.fetch_add(1, Ordering::AcqRel);
            }
        });
        (host, thread)
    }

    /// Waits until the host has finished `n` more runs.
    fn wait_runs(&self, n: usize) {
        let target = self.runs.load(Ordering::Acquire) + n;
        while self.runs.load(Ordering::Acquire) < target {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ledger starts");
    let mut stdin = child.stdin.take().unwrap();
    let text = input.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn write_script(path: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

/// Every runbook step, executed as written while the host appends before, during and after
/// the rollback window: every acknowledged record is in PostgreSQL once (nothing lost,
/// nothing twice, by rid), records spooled by several memory-host runs (restarts) all
/// arrive, every chain verifies, and the re-chained records reported by `recover-spool`
/// (stdout and the report file in `spool_dir`) are exactly those whose hash changed, with
/// their acknowledged and stored hashes.
#[test]
fn rollback_runbook_as_written_keeps_every_record() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = rt.block_on(TestContext::new("rollback_runbook"));
    let dir = temp_dir("rollback-runbook");
    let spool = dir.join("spool");
    let config = dir.join("ledger.yaml");
    std::fs::write(
        &config,
        format!(
            "ledger:\n  backend: postgres\n  dsn: {}\n  spool_dir: {}\n  timeout: 10s\n  checkpoint_interval: 0\n",
            ctx.dsn,
            spool.display()
        ),
    )
    .unwrap();
    let stop = write_script(
        &dir.join("host-stop.sh"),
        &format!(
            "touch '{d}/stopped'\nwhile [ -e '{d}/running' ]; do sleep 0.05; done\n",
            d = dir.display()
        ),
    );
    let start = write_script(
        &dir.join("host-start.sh"),
        &format!("rm -f '{}/stopped'\n", dir.display()),
    );
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ledger")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let steps = runbook_steps();
    assert_eq!(steps.len(), 3, "the runbook has three steps: {steps:?}");
    let anchors: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let (host, thread) = Host::start(&dir, &config, anchors);
    host.wait_runs(2);
    for (n, step) in steps.iter().enumerate() {
        let out = ledger_cmd()
            .env_remove("LEDGER_CONFIG")
            .env("PATH", &path)
            .env("AVL_CONFIG", &config)
            .env("AVL_HOST_STOP", &stop)
            .env("AVL_HOST_START", &start)
            .current_dir(&dir)
            .output_of_sh(step);
        assert!(
            out.status.success(),
            "runbook step {} failed:\n{step}\nstdout: {}\nstderr: {}",
            n + 1,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if n == 1 {
            // An anchor that first appears in the rollback window.
            host.anchors.lock().unwrap().push(Uuid::now_v7());
            host.wait_runs(3);
        } else {
            host.wait_runs(2);
        }
    }
    host.done.store(true, Ordering::Release);
    thread.join().unwrap();
    let failures = host.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "host failures: {failures:?}");
    let acks = host.acks.lock().unwrap().clone();

    // The window's records were spooled by several host runs (each a restart).
    let spooled: Vec<&Ack> = acks.iter().filter(|a| a.durability == "spooled").collect();
    let spooled_runs: HashSet<usize> = spooled.iter().map(|a| a.run).collect();
    assert!(
        spooled_runs.len() >= 3,
        "memory host runs: {spooled_runs:?}"
    );
    assert!(acks.iter().any(|a| a.durability == "committed"));
    assert!(
        acks.iter()
            .all(|a| a.durability == "spooled" || a.durability == "committed"),
        "{acks:?}"
    );

    // Everything in PostgreSQL: one line per record, nothing else.
    let out = ledger_cmd()
        .arg("--config")
        .arg(&config)
        .arg("export")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored: HashMap<Uuid, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let rid = v["rid"].as_str()?.parse().unwrap();
            Some((rid, v["hash"].as_str().unwrap().to_owned()))
        })
        .collect();
    let rids: HashSet<Uuid> = acks.iter().map(|a| a.rid).collect();
    assert_eq!(rids.len(), acks.len(), "a rid acknowledged twice");
    assert_eq!(
        stored.keys().copied().collect::<HashSet<_>>(),
        rids,
        "PostgreSQL holds exactly the acknowledged records"
    );

    // Re-chained as reported: exactly the records whose hash changed.
    let changed: HashMap<Uuid, (&str, &str)> = acks
        .iter()
        .filter(|a| stored[&a.rid] != a.hash)
        .map(|a| (a.rid, (a.hash.as_str(), stored[&a.rid].as_str())))
        .collect();
    eprintln!(
        "acknowledged {}, spooled {} in {} memory-host runs, re-chained {}",
        acks.len(),
        spooled.len(),
        spooled_runs.len(),
        changed.len()
    );
    assert!(!changed.is_empty(), "the window re-chained nothing");
    assert!(changed.keys().all(|r| spooled.iter().any(|a| a.rid == *r)));
    let report_of = |v: &Value| -> HashMap<Uuid, (String, String)> {
        v["rechained"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["rid"].as_str().unwrap().parse().unwrap(),
                    (
                        r["old_hash"].as_str().unwrap().to_owned(),
                        r["new_hash"].as_str().unwrap().to_owned(),
                    ),
                )
            })
            .collect()
    };
    let want: HashMap<Uuid, (String, String)> = changed
        .iter()
        .map(|(r, (o, n))| (*r, ((*o).to_owned(), (*n).to_owned())))
        .collect();
    let printed = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("avl-recovery-"))
        .expect("the runbook saved recover-spool's output");
    let printed: Value = serde_json::from_slice(&std::fs::read(printed).unwrap()).unwrap();
    assert_eq!(report_of(&printed), want, "recover-spool --json output");
    assert_eq!(printed["kept"], json!([]));
    let file = printed["report_file"].as_str().expect("a report file");
    let filed: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    assert_eq!(report_of(&filed), want, "report file in spool_dir");

    // Zero breaks (step 3 ran `ledger verify` too).
    let out = ledger_cmd()
        .arg("--config")
        .arg(&config)
        .args(["verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["continuity_breaks"], 0);
    assert_eq!(summary["records"], acks.len() as u64);
    rt.block_on(ctx.teardown());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a runbook block with `sh -e`, with the command's environment and directory.
trait ShellStep {
    fn output_of_sh(&mut self, script: &str) -> Output;
}

impl ShellStep for Command {
    fn output_of_sh(&mut self, script: &str) -> Output {
        let mut sh = Command::new("sh");
        sh.arg("-e").arg("-c").arg(script);
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        if let Some(d) = self.get_current_dir() {
            sh.current_dir(d);
        }
        sh.output().unwrap()
    }
}
