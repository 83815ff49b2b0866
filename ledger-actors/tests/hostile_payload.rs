//! A hostile payload cannot crash the host: payloads nested 15,000
//! levels deep (objects) and 20,000 (arrays) are refused with `NestingTooDeep` before they
//! reach an actor and dropped without recursion. Each case runs in a child process (this test
//! binary again, filtered to one test) so a stack overflow shows as the child's abort
//! instead of killing the test run.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::process::Command;

use ledger_actors::{Ledger, LedgerConfig, LedgerError};
use ledger_entities::{Error, NewRecord};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Set in the child: which payload to append.
const CHILD: &str = "AVL_HOSTILE_PAYLOAD_CHILD";

/// A value nested `depth` levels deep, built without recursion.
fn nested(depth: usize, objects: bool) -> Value {
    let mut v = Value::Null;
    for _ in 0..depth {
        v = if objects {
            let mut m = Map::new();
            m.insert("a".into(), v);
            Value::Object(m)
        } else {
            Value::Array(vec![v])
        };
    }
    v
}

/// In the child: append the hostile payload through `Ledger::append` (and
/// `append_durable`) on a memory ledger, on a thread with a normal 2 MiB stack.
fn child(kind: &str) {
    let (depth, objects) = match kind {
        "objects" => (15_000, true),
        _ => (20_000, false),
    };
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            actix::System::new().block_on(async move {
                let ledger = Ledger::start(LedgerConfig::default()).await.unwrap();
                for durable in [false, true] {
                    let record =
                        NewRecord::new(Uuid::new_v4(), "s", "k", nested(depth, objects), "p");
                    let got = if durable {
                        ledger
                            .append_durable(record, std::time::Duration::from_secs(1))
                            .await
                    } else {
                        ledger.append(record).await
                    };
                    match got {
                        Err(LedgerError::Invalid(Error::NestingTooDeep { field, limit })) => {
                            assert_eq!(limit, 64);
                            assert!(field.starts_with("payload/"), "{field}");
                        }
                        other => panic!("expected NestingTooDeep, got {:?}", other.map(|_| ())),
                    }
                }
                // The ledger still works.
                let ok = NewRecord::new(Uuid::new_v4(), "s", "k", nested(10, objects), "p");
                ledger.append(ok).await.unwrap();
                ledger.shutdown().await.unwrap();
            });
        })
        .unwrap()
        .join()
        .unwrap();
    println!("AVL-CHILD-SURVIVED");
}

fn run_child(test: &str, kind: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, kind)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("AVL-CHILD-SURVIVED"),
        "child {kind} exited {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
}

/// 15,000 nested objects: refused with `NestingTooDeep`, the host process survives.
#[test]
fn objects_nested_15000_deep_are_refused_without_crashing() {
    match std::env::var(CHILD).as_deref() {
        Ok("objects") => child("objects"),
        Ok(_) => {}
        Err(_) => run_child(
            "objects_nested_15000_deep_are_refused_without_crashing",
            "objects",
        ),
    }
}

/// 20,000 nested arrays: refused with `NestingTooDeep`, the host process survives.
#[test]
fn arrays_nested_20000_deep_are_refused_without_crashing() {
    match std::env::var(CHILD).as_deref() {
        Ok("arrays") => child("arrays"),
        Ok(_) => {}
        Err(_) => run_child(
            "arrays_nested_20000_deep_are_refused_without_crashing",
            "arrays",
        ),
    }
}

/// `check_depth` and `dispose` work iteratively on a value far deeper than any stack allows
/// recursion for, and the depth error names the JSON pointer where the limit is crossed.
#[test]
fn depth_check_and_dispose_are_iterative() {
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(|| {
            let deep = nested(200_000, true);
            let err = ledger_entities::validate::check_depth(&deep, 3).unwrap_err();
            assert_eq!(
                err,
                Error::NestingTooDeep {
                    field: "payload/a/a/a".into(),
                    limit: 3
                }
            );
            assert!(ledger_entities::validate::check_depth(&nested(3, false), 3).is_ok());
            ledger_entities::validate::dispose(deep);
            ledger_entities::validate::dispose(nested(200_000, false));
        })
        .unwrap()
        .join()
        .unwrap();
}
