//! Subscriptions (`Ledger::subscribe`): the records in log order with their positions, on
//! both backends — from position 0 and resumed from a middle position while appends go on,
//! through a PostgreSQL outage (the fault-injecting proxy), from another process, and a data
//! error that ends a subscription instead of being retried as an outage.

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

mod common;
#[path = "support/proxy.rs"]
mod proxy;

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestContext;
use futures::StreamExt;
use ledger_actors::{
    Backend, Delivered, Dsn, Durability, Ledger, LedgerConfig, LedgerError, SubscribeOptions,
    Subscription,
};
use ledger_entities::NewRecord;
use proxy::{Mode, Proxy, upstream};
use serde_json::json;
use uuid::Uuid;

/// Longest wait for a subscription's next record before the test fails (a guard against a
/// hang, not a speed check).
const STALL: Duration = Duration::from_secs(60);

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "subscribe-test")
}

/// The next `n` records of `sub`.
async fn take(sub: &mut Subscription, n: usize) -> Vec<Delivered> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let item = tokio::time::timeout(STALL, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no record after {} of {n} within {STALL:?}", out.len()))
            .expect("the subscription ended early")
            .expect("the subscription failed");
        out.push(item);
    }
    out
}

/// Positions are `first, first + 1, …` and each record appears once.
fn assert_in_order_once(got: &[Delivered], first: u64) {
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d.position, first + i as u64, "position of the {i}th record");
    }
    let rids: HashSet<Uuid> = got.iter().map(|d| d.record.rid).collect();
    assert_eq!(rids.len(), got.len(), "a record was delivered twice");
}

/// Appends `per_task` records to each of `anchors` from one task per anchor; returns the
/// acknowledged rids.
async fn append_concurrently(ledger: &Ledger, anchors: &[Uuid], per_task: u64) -> Vec<Uuid> {
    let tasks = anchors.iter().map(|a| {
        let ledger = ledger.clone();
        let a = *a;
        async move {
            let mut rids = Vec::new();
            for i in 0..per_task {
                rids.push(ledger.append(rec(a, i)).await.unwrap().record.rid);
            }
            rids
        }
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// A subscription from position 0 and one resumed after a middle position it delivered,
/// both opened before and while appends continue, each deliver every acknowledged record
/// exactly once, in position order; the resumed one exactly the first one's records after
/// its start.
async fn from_zero_and_resumed(ledger: &Ledger) {
    let anchors: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    let mut acked: Vec<Uuid> = append_concurrently(ledger, &anchors, 10).await;
    let mut from_zero = ledger.subscribe(None);
    let early = take(&mut from_zero, 60).await;

    let appender = {
        let ledger = ledger.clone();
        let anchors = anchors.clone();
        actix_rt::spawn(async move { append_concurrently(&ledger, &anchors, 150).await })
    };
    let middle = early[59].position;
    // Small pages: many reads, several of them ahead of delivery, while appends go on.
    let mut resumed = ledger.subscribe_with(SubscribeOptions {
        after: Some(middle),
        page: 16,
        ..SubscribeOptions::default()
    });
    acked.extend(appender.await.unwrap());
    let total = acked.len();

    let mut all = early;
    all.extend(take(&mut from_zero, total - all.len()).await);
    assert_in_order_once(&all, 0);
    let delivered: HashSet<Uuid> = all.iter().map(|d| d.record.rid).collect();
    let want: HashSet<Uuid> = acked.iter().copied().collect();
    assert_eq!(delivered, want, "exactly the acknowledged records");

    let rest = take(&mut resumed, total - 60).await;
    assert_in_order_once(&rest, middle + 1);
    assert_eq!(
        rest.iter().map(|d| d.record.rid).collect::<Vec<_>>(),
        all[60..].iter().map(|d| d.record.rid).collect::<Vec<_>>(),
        "the resumed subscription delivers exactly the records after its position"
    );
    // The records are the stored ones.
    for d in all.iter().step_by(97) {
        assert_eq!(
            ledger.get(d.record.rid).await.unwrap().as_deref(),
            Some(&*d.record)
        );
    }

    // Without following, a subscription ends at the log's size when it started.
    let mut bounded = ledger.subscribe_with(SubscribeOptions {
        after: Some(middle),
        follow: false,
        page: 7,
        ..SubscribeOptions::default()
    });
    let mut n = 0;
    while let Some(item) = tokio::time::timeout(STALL, bounded.next()).await.unwrap() {
        let d = item.unwrap();
        assert_eq!(d.position, middle + 1 + n);
        n += 1;
    }
    assert_eq!(n as usize, total - 60);

    // One anchor: its records only, in chain order, with their log positions.
    let one = anchors[3];
    let mut per_anchor = ledger.subscribe_with(SubscribeOptions {
        anchor: Some(one),
        follow: false,
        ..SubscribeOptions::default()
    });
    let mut chain = Vec::new();
    while let Some(item) = per_anchor.next().await {
        chain.push(item.unwrap());
    }
    let expected: Vec<&Delivered> = all.iter().filter(|d| d.record.anchor_id == one).collect();
    assert_eq!(chain.len(), 160);
    assert_eq!(chain.iter().collect::<Vec<_>>(), expected);
    assert!(
        chain
            .windows(2)
            .all(|w| w[1].record.prev_hash == Some(w[0].record.hash))
    );
}

#[actix_rt::test]
async fn memory_subscriptions_deliver_every_record_once_in_order() {
    let ledger = Ledger::start(LedgerConfig {
        checkpoint_interval: Duration::from_millis(200),
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    from_zero_and_resumed(&ledger).await;
    ledger.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn postgres_subscriptions_deliver_every_record_once_in_order() {
    let ctx = TestContext::new("subscribe_pg").await;
    let ledger = Ledger::start(LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        pool_size: 4,
        checkpoint_interval: Duration::from_millis(200),
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    from_zero_and_resumed(&ledger).await;
    ledger.shutdown().await.unwrap();
    ctx.teardown().await;
}

/// With the transparency log off there are no positions: the subscription says so.
#[actix_rt::test]
async fn a_ledger_without_a_log_refuses_to_subscribe() {
    let ledger = Ledger::start(LedgerConfig {
        checkpoint_interval: Duration::ZERO,
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    let mut sub = ledger.subscribe(None);
    assert!(matches!(
        sub.next().await,
        Some(Err(LedgerError::NotYetLogged(_)))
    ));
    assert!(sub.next().await.is_none(), "an error ends the subscription");
    ledger.shutdown().await.unwrap();
}

/// A subscription from position 0 and one resumed from a middle position, both through the
/// proxy, while appends go on before, during (acknowledged on the memory fallback) and
/// after a PostgreSQL outage: neither ends, and each delivers every record exactly once, in
/// order, once the database is back and the outage buffer has drained.
#[actix_rt::test]
async fn subscriptions_survive_a_postgres_outage() {
    let ctx = TestContext::new("subscribe_outage").await;
    let proxy = Proxy::start(upstream());
    let ledger = Ledger::start(LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&proxy.dsn(&ctx.dsn)).unwrap()),
        pool_size: 4,
        failover_after: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        checkpoint_interval: Duration::from_millis(200),
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    let anchors: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let mut acked = Vec::new();
    for i in 0..10 {
        for a in &anchors {
            acked.push(ledger.append(rec(*a, i)).await.unwrap());
        }
    }
    let mut from_zero = ledger.subscribe(None);
    let first = take(&mut from_zero, 50).await;
    assert_in_order_once(&first, 0);
    let middle = first[29].position;
    let mut resumed = ledger.subscribe(Some(middle));
    let resumed_first = take(&mut resumed, 20).await;
    assert_in_order_once(&resumed_first, middle + 1);

    proxy.set(Mode::Refuse);
    proxy.cut_all();
    for i in 10..20 {
        for a in &anchors {
            acked.push(ledger.append(rec(*a, i)).await.unwrap());
        }
    }
    assert!(
        acked.iter().any(|a| a.durability == Durability::Buffered),
        "no append was acknowledged on the fallback"
    );
    // Long enough for the subscriptions' reads to fail and back off.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.set(Mode::Pass);
    let status = ledger.await_drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(status.buffered, 0, "outage buffer drained");
    for i in 20..25 {
        for a in &anchors {
            acked.push(ledger.append(rec(*a, i)).await.unwrap());
        }
    }
    let total = acked.len();
    let mut all = first;
    all.extend(take(&mut from_zero, total - 50).await);
    assert_in_order_once(&all, 0);
    // The drain may re-chain a buffered record (a new hash); the rid stays.
    let delivered: HashSet<Uuid> = all.iter().map(|d| d.record.rid).collect();
    let want: HashSet<Uuid> = acked.iter().map(|a| a.record.rid).collect();
    assert_eq!(delivered, want, "exactly the acknowledged records");
    let mut rest = resumed_first;
    rest.extend(take(&mut resumed, total - 30 - 20).await);
    assert_in_order_once(&rest, middle + 1);
    assert_eq!(rest, all[30..].to_vec());
    ledger.shutdown().await.unwrap();
    drop(proxy);
    ctx.teardown().await;
}

/// A process that only reads (a ledger opened read-only: no writer, no integrator) sees the
/// records another process appends and integrates, exactly once and in order. Its poll
/// interval is an hour: the records reach it through the other integrator's notification
/// (`LISTEN`), not by polling.
#[actix_rt::test]
async fn a_reader_sees_records_another_process_appends() {
    let ctx = TestContext::new("subscribe_multi").await;
    let reader = Ledger::open_read_only(LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        ..LedgerConfig::default()
    })
    .await
    .unwrap();
    let mut sub = reader.subscribe_with(SubscribeOptions {
        poll: Duration::from_secs(3600),
        ..SubscribeOptions::default()
    });

    let anchors: Vec<String> = (0..4).map(|_| Uuid::now_v7().to_string()).collect();
    let dir = std::env::temp_dir().join(format!("avl-subscribe-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let acks = dir.join("child.acks");
    let mut child = Command::new(env!("CARGO_BIN_EXE_avl-multi-child"))
        .env("LEDGER_BACKEND", "postgres")
        .env("LEDGER_DSN", &ctx.dsn)
        .env("LEDGER_POOL_SIZE", "4")
        .env("LEDGER_CHECKPOINT_INTERVAL", "200ms")
        .env("AVL_ANCHORS", anchors.join(","))
        .env("AVL_TASKS", "8")
        .env("AVL_APPENDS", "60")
        .env("AVL_ACKS", &acks)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "READY");
    writeln!(child.stdin.as_mut().unwrap(), "GO").unwrap();
    // Records arrive while the other process still appends.
    let early = take(&mut sub, 10).await;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&acks).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let want: HashSet<Uuid> = text
        .lines()
        .map(|l| {
            assert!(l.starts_with("ACK "), "the child failed an append: {l}");
            l.split(' ').nth(1).unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(want.len(), 8 * 60);
    let mut all = early;
    all.extend(take(&mut sub, want.len() - 10).await);
    assert_in_order_once(&all, 0);
    let got: HashSet<Uuid> = all.iter().map(|d| d.record.rid).collect();
    assert_eq!(got, want);
    reader.shutdown().await.unwrap();
    ctx.teardown().await;
}

/// A logged record whose row is gone is a data error: delivered once, and the subscription
/// ends (it is not retried as an outage).
#[actix_rt::test]
async fn a_missing_record_ends_the_subscription_with_an_error() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let ctx = TestContext::new("subscribe_data_error").await;
    let config = LedgerConfig {
        backend: Backend::Postgres,
        dsn: Some(Dsn::parse(&ctx.dsn).unwrap()),
        checkpoint_interval: Duration::from_millis(200),
        ..LedgerConfig::default()
    };
    let ledger = Ledger::start(config.clone()).await.unwrap();
    let anchor = Uuid::now_v7();
    let mut rids = Vec::new();
    for i in 0..5 {
        rids.push(ledger.append(rec(anchor, i)).await.unwrap().record.rid);
    }
    let mut sub = ledger.subscribe(None);
    assert_eq!(take(&mut sub, 5).await.len(), 5);
    ledger.shutdown().await.unwrap();

    ctx.db
        .execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("DELETE FROM ledger_records WHERE rid = '{}'", rids[4]),
        ))
        .await
        .unwrap();
    let reader = Ledger::open_read_only(config).await.unwrap();
    let mut sub = reader.subscribe(Some(2));
    let item = tokio::time::timeout(STALL, sub.next()).await.unwrap();
    assert_eq!(item.unwrap().unwrap().position, 3);
    let item = tokio::time::timeout(STALL, sub.next()).await.unwrap();
    assert!(
        matches!(item, Some(Err(LedgerError::Log(_)))),
        "got {item:?}"
    );
    assert!(sub.next().await.is_none());
    reader.shutdown().await.unwrap();
    ctx.teardown().await;
}
