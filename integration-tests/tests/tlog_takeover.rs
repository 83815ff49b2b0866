//! Two processes on one database, both appending: one integrator at a time; when the leader
//! is killed with SIGKILL the other takes over within 2 × the lease; the log has no gap and
//! no duplicate, holds every acknowledged record, and every checkpoint is consistent with
//! the previous one (the whole tree recomputed matches each checkpoint).

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TestContext;
use ledger_actors::log_verify::verify_log;
use ledger_actors::tlog::open_log;
use ledger_actors::{Backend, Dsn, LedgerConfig};
use ledger_tlog::note::NoteSigner;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(2);

enum Line {
    Ack(Uuid),
    Leader(bool),
    Stopped,
}

struct Proc {
    child: Child,
    lines: mpsc::Receiver<(Instant, Line)>,
    acks: HashSet<Uuid>,
    leader: bool,
    became_leader: Option<Instant>,
}

fn spawn(dsn: &str, key: &std::path::Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_avl-tlog-child"))
        .env("LEDGER_BACKEND", "postgres")
        .env("LEDGER_DSN", dsn)
        .env("LEDGER_CHECKPOINT_KEY", key)
        .env("LEDGER_CHECKPOINT_INTERVAL", "0.2")
        .env("LEDGER_INTEGRATOR_LEASE", LEASE.as_secs_f64().to_string())
        .env_remove("LEDGER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let parsed = if let Some(rid) = line.strip_prefix("ACK ") {
                Line::Ack(rid.parse().unwrap())
            } else if let Some(rest) = line.strip_prefix("LEADER ") {
                Line::Leader(rest.starts_with("true"))
            } else if line == "STOPPED" {
                Line::Stopped
            } else {
                continue;
            };
            if tx.send((Instant::now(), parsed)).is_err() {
                break;
            }
        }
    });
    Proc {
        child,
        lines: rx,
        acks: HashSet::new(),
        leader: false,
        became_leader: None,
    }
}

impl Proc {
    /// Reads what the process printed so far; true when it printed STOPPED.
    fn pump(&mut self) -> bool {
        let mut stopped = false;
        while let Ok((at, line)) = self.lines.try_recv() {
            match line {
                Line::Ack(rid) => {
                    self.acks.insert(rid);
                }
                Line::Leader(l) => {
                    if l && !self.leader {
                        self.became_leader = Some(at);
                    }
                    self.leader = l;
                }
                Line::Stopped => stopped = true,
            }
        }
        stopped
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// See the module doc.
#[actix_rt::test]
async fn sigkill_of_the_integrator_hands_over_within_two_leases() {
    let ctx = TestContext::new("tlog_takeover").await;
    let signer = NoteSigner::from_seed(
        "example.com/avl-takeover",
        Uuid::new_v4().as_bytes().repeat(2)[..32]
            .try_into()
            .unwrap(),
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("avl-takeover-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("checkpoint.key");
    std::fs::write(&key, signer.to_key_string().as_bytes()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    let mut a = spawn(&ctx.dsn, &key);
    wait_until("the first process to lead", Duration::from_secs(30), || {
        a.pump();
        a.leader
    });
    let mut b = spawn(&ctx.dsn, &key);
    wait_until("both processes appending", Duration::from_secs(30), || {
        a.pump();
        b.pump();
        a.acks.len() > 50 && b.acks.len() > 50
    });
    // Let them run together for a while: the second must stay standby.
    std::thread::sleep(Duration::from_secs(1));
    a.pump();
    b.pump();
    assert!(a.leader && !b.leader, "exactly one integrator leads");

    a.child.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    a.child.wait().unwrap();
    a.pump();
    wait_until("the standby to take over", LEASE * 3, || {
        b.pump();
        b.leader
    });
    let takeover = b.became_leader.unwrap().duration_since(killed);
    assert!(
        takeover <= LEASE * 2,
        "takeover took {takeover:?}, more than 2 × the lease ({LEASE:?})"
    );

    // Let the new leader integrate, then stop it cleanly (final checkpoint).
    std::thread::sleep(Duration::from_millis(500));
    drop(b.child.stdin.take());
    wait_until(
        "the second process to stop",
        Duration::from_secs(30),
        || b.pump(),
    );
    b.child.wait().unwrap();

    let config = LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        ..LedgerConfig::default()
    };
    let log = open_log(&config).unwrap();
    let report = verify_log(log.as_ref(), Some(&signer.verifier()), None)
        .await
        .unwrap();
    assert_eq!(
        report.problems,
        vec![],
        "no gap, no duplicate, checkpoints consistent"
    );
    assert_eq!(report.pending, 0, "every committed record is integrated");
    let leaves = log.leaves(0, 1_000_000).await.unwrap();
    let logged: HashSet<Uuid> = leaves.iter().map(|l| l.rid).collect();
    assert_eq!(logged.len(), leaves.len(), "no record logged twice");
    assert!(
        leaves.iter().enumerate().all(|(i, l)| l.index == i as u64),
        "no gap"
    );
    for rid in a.acks.iter().chain(&b.acks) {
        assert!(
            logged.contains(rid),
            "acknowledged record {rid} is in the log"
        );
    }
    assert!(report.checkpoints >= 2);
    let _ = std::io::stdout().flush();
    ctx.teardown().await;
}
