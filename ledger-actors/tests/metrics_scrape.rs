//! End to end: the Prometheus exporter installed on an ephemeral loopback port inside an actix
//! System, a memory ledger doing valid, invalid and conflicting appends, and `/metrics` scraped
//! over HTTP. Every metric of `metrics::ALL` is classified below, so a new metric fails this
//! test until it is.
//!
//! The recorder is process-global, so this binary has exactly ONE test: every assertion about
//! exported values lives in `exporter_reports_what_the_ledger_did`.
//!
//! Checked elsewhere: `ledger_db_errors_total` and `ledger_db_batch_size` values by
//! `integration-tests/tests/postgres_metrics.rs`; every PostgreSQL-backend series
//! (`ledger_db_*`, `ledger_writer_pending_records`, the PostgreSQL persistence depth, the
//! active backend) reaching a real Prometheus by the postgres pass of `grafana/scrape-test.sh`.
//! The outage-only ones (failovers, buffered records, drain, spool, records re-chained) have no
//! value check yet: they need a PostgreSQL outage during a scrape. Here the PostgreSQL and
//! outage metrics are only required to be pre-registered at 0 (counters) or absent (the memory
//! backend never produces them).

#![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::future::join_all;
use ledger_actors::metrics::{self, labels};
use ledger_actors::{Ledger, LedgerConfig, LedgerError};
use ledger_entities::NewRecord;
use serde_json::json;
use uuid::Uuid;

fn free_loopback_addr() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

/// `GET /metrics` over plain HTTP/1.1; the body of a 200 answer.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    body.to_owned()
}

/// Series (`name{labels}` exactly as rendered) → value, for the `ledger_` series.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("ledger_"))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// Series of metric `name` (histograms: its `_bucket`, `_sum` and `_count` series).
fn series_of<'a>(
    all: &'a BTreeMap<String, f64>,
    name: &'a str,
) -> impl Iterator<Item = (&'a String, &'a f64)> {
    all.iter().filter(move |(series, _)| {
        let base = series.split('{').next().unwrap_or_default();
        base == name
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| base.strip_suffix(suffix) == Some(name))
    })
}

fn value(all: &BTreeMap<String, f64>, series: &str) -> f64 {
    *all.get(series)
        .unwrap_or_else(|| panic!("series {series} missing from the scrape:\n{all:#?}"))
}

fn rec(anchor: Uuid, i: u64) -> NewRecord {
    NewRecord::new(anchor, "slot", "event", json!({ "i": i }), "tests")
}

/// What the memory backend must show for a metric after the appends of this test.
enum Expect {
    /// Produced by the memory backend; values checked explicitly below.
    Produced,
    /// PostgreSQL/writer-only series: registered at 0 at install (counters, gauges and
    /// histograms alike), so that dashboards and alerts see them from start.
    RegisteredZero,
    /// Only `ledger serve` exports it (it registers its own series): absent here.
    ServeOnly,
    /// Only a ledger configured `replication: synchronous` exports it: absent here.
    SynchronousOnly,
    /// Witness series: one per configured witness, so none here (no witnesses); whatever is
    /// present (the histogram's unlabelled registration, the quorum gauge) is 0.
    NoWitnessZero,
    /// Only a `PartitionedLedger` exports it (what the CLI runs: one series per partition, an
    /// unpartitioned configuration being partition 0; the integration test `partitions` and
    /// grafana/scrape-test.sh scrape them): absent from a plain `Ledger`, as here.
    PartitionedOnly,
}

fn expectation(name: &str) -> Expect {
    match name {
        metrics::APPENDS_TOTAL
        | metrics::APPEND_DURATION_SECONDS
        | metrics::IN_FLIGHT_APPENDS
        | metrics::CHAIN_MAILBOX_DEPTH
        | metrics::WRITER_QUEUED_RECORDS
        | metrics::ANCHORS_ACTIVE
        | metrics::ANCHORS_PASSIVATED_TOTAL
        | metrics::BACKEND_ACTIVE
        | metrics::CHAIN_BREAKS_TOTAL
        | metrics::LOG_LEAVES
        | metrics::INTEGRATION_LAG_RECORDS
        | metrics::INTEGRATION_LAG_SECONDS
        | metrics::CHECKPOINTS_TOTAL
        | metrics::INTEGRATOR_LEADER
        | metrics::SUBSCRIPTIONS_OPEN
        | metrics::SUBSCRIPTION_DELIVERED_TOTAL
        | metrics::SUBSCRIPTION_LAG_SECONDS => Expect::Produced,
        metrics::SUBSCRIPTION_READ_RETRIES_TOTAL => Expect::RegisteredZero,
        metrics::LOG_HALTED => Expect::RegisteredZero,
        metrics::DB_ERRORS_TOTAL
        | metrics::FAILOVERS_TOTAL
        | metrics::DRAIN_RECORDS_TOTAL
        | metrics::RECORDS_RECHAINED_TOTAL
        | metrics::RECORDS_RELINKED_TOTAL
        | metrics::DB_POOL_CONNECTIONS
        | metrics::WRITER_PENDING_RECORDS
        | metrics::BUFFERED_RECORDS
        | metrics::SPOOL_BYTES
        | metrics::RECORDS_KEPT
        // Histograms are registered at install: their buckets are there at 0 from start.
        | metrics::DB_BATCH_SIZE
        | metrics::DB_WRITE_DURATION_SECONDS
        | metrics::DRAIN_DURATION_SECONDS
        | metrics::DRAIN_BATCH_DURATION_SECONDS => Expect::RegisteredZero,
        metrics::HTTP_REQUESTS_TOTAL | metrics::HTTP_REQUEST_DURATION_SECONDS => Expect::ServeOnly,
        metrics::REPLICATION_SYNC_STANDBYS | metrics::REPLICATION_FLUSH_LAG_SECONDS => {
            Expect::SynchronousOnly
        }
        metrics::WITNESS_COSIGNED_SIZE
        | metrics::WITNESS_LAG_LEAVES
        | metrics::WITNESS_LAG_SECONDS
        | metrics::WITNESS_FAILURES_TOTAL
        | metrics::WITNESS_COSIGN_SECONDS
        | metrics::WITNESS_QUORUM_SIZE => Expect::NoWitnessZero,
        metrics::PARTITION_APPENDS_TOTAL
        | metrics::PARTITION_ON_POSTGRES
        | metrics::PARTITION_BUFFERED_RECORDS => Expect::PartitionedOnly,
        other => panic!("metric {other} is not classified in metrics_scrape.rs"),
    }
}

/// Appends on a memory ledger show up in the scraped exposition with exactly the counts made
/// (by outcome, latency histogram count, anchors, depths back at 0, active backend), every
/// metric of `ALL` is present or accounted for, no series is per anchor, and passivations
/// are counted.
#[test]
fn exporter_reports_what_the_ledger_did() {
    actix::System::new().block_on(async {
        let addr = free_loopback_addr();
        metrics::install(addr).unwrap();

        // Phase 1: a ledger that never passivates during the test.
        let ledger = Ledger::start(LedgerConfig {
            workers: 2,
            passivate_after: Duration::from_secs(3600),
            ..LedgerConfig::default()
        })
        .await
        .unwrap();
        let anchors: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
        let per_anchor = 5u64;
        let valid = join_all(anchors.iter().map(|&anchor| {
            let ledger = ledger.clone();
            async move {
                for i in 0..per_anchor {
                    ledger.append(rec(anchor, i)).await.unwrap();
                }
            }
        }));
        // Invalid records, to anchors that also get valid ones (no extra actors).
        let invalid: Vec<NewRecord> = anchors
            .iter()
            .take(7)
            .map(|&anchor| {
                let mut bad = rec(anchor, 99);
                bad.kind = String::new();
                bad
            })
            .collect();
        let invalid_count = invalid.len() as f64;
        let rejected = join_all(invalid.into_iter().map(|bad| {
            let ledger = ledger.clone();
            async move {
                assert!(matches!(
                    ledger.append(bad).await,
                    Err(LedgerError::Invalid(_))
                ));
            }
        }));
        futures::join!(valid, rejected);
        // One conflict: a client rid repeated with different content.
        let rid = Uuid::new_v4();
        let mut first = rec(anchors[0], 1000);
        first.rid = Some(rid);
        ledger.append(first).await.unwrap();
        let mut second = rec(anchors[0], 1001);
        second.rid = Some(rid);
        assert!(matches!(
            ledger.append(second).await,
            Err(LedgerError::Conflict { .. })
        ));
        let ok = (anchors.len() as u64 * per_anchor + 1) as f64;
        let total = ok + invalid_count + 1.0;
        let summary = ledger.verify_all().await.unwrap();
        assert_eq!(summary.anchors, anchors.len() as u64);

        // The integrator (memory backend, default 1 s interval) has logged every append.
        let covering = ledger
            .await_checkpoint(ok as u64, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(covering.map(|c| c.size), Some(ok as u64));
        // A subscription read to the end, then dropped; another left open for the scrape.
        let mut whole = ledger.subscribe_with(ledger_actors::SubscribeOptions {
            follow: false,
            ..ledger_actors::SubscribeOptions::default()
        });
        let mut delivered = 0u64;
        while let Some(d) = whole.next().await {
            d.unwrap();
            delivered += 1;
        }
        assert_eq!(delivered, ok as u64);
        drop(whole);
        let mut open = ledger.subscribe(Some(ok as u64 - 2));
        assert_eq!(open.next().await.unwrap().unwrap().position, ok as u64 - 1);
        ledger.sample_metrics();
        let text = scrape(addr);
        let all = parse(&text);

        for name in metrics::ALL {
            let present = series_of(&all, name).count();
            match expectation(name) {
                Expect::Produced => {
                    assert!(present > 0, "{name} missing:\n{text}");
                    assert!(
                        text.contains(&format!("# HELP {name} ")),
                        "{name} has no help"
                    );
                }
                Expect::RegisteredZero => {
                    assert!(present > 0, "{name} not pre-registered:\n{text}");
                    for (series, v) in series_of(&all, name) {
                        assert_eq!(*v, 0.0, "{series} on the memory backend");
                    }
                }
                Expect::ServeOnly => {
                    assert_eq!(present, 0, "{name} outside ledger serve:\n{text}");
                }
                Expect::SynchronousOnly => {
                    assert_eq!(
                        present, 0,
                        "{name} without replication: synchronous:\n{text}"
                    );
                }
                Expect::PartitionedOnly => {
                    assert_eq!(present, 0, "{name} without partitions:\n{text}");
                }
                Expect::NoWitnessZero => {
                    for (series, v) in series_of(&all, name) {
                        assert_eq!(*v, 0.0, "{series} without witnesses");
                    }
                }
            }
        }

        let outcome = |o: &str| {
            value(
                &all,
                &format!("{}{{outcome=\"{o}\"}}", metrics::APPENDS_TOTAL),
            )
        };
        assert_eq!(outcome(labels::OUTCOME_OK), ok);
        assert_eq!(outcome(labels::OUTCOME_VALIDATION), invalid_count);
        assert_eq!(outcome(labels::OUTCOME_CONFLICT), 1.0);
        for o in [
            labels::OUTCOME_OVERLOADED,
            labels::OUTCOME_UNAVAILABLE,
            labels::OUTCOME_ERROR,
        ] {
            assert_eq!(outcome(o), 0.0, "outcome {o}");
        }
        // Every record delivered once to the first subscription, one to the second, which
        // alone is still open.
        assert_eq!(value(&all, metrics::SUBSCRIPTION_DELIVERED_TOTAL), ok + 1.0);
        assert_eq!(value(&all, metrics::SUBSCRIPTIONS_OPEN), 1.0);
        let lag = metrics::SUBSCRIPTION_LAG_SECONDS;
        assert!(value(&all, &format!("{lag}_count")) >= 2.0);
        assert_eq!(value(&all, metrics::SUBSCRIPTION_READ_RETRIES_TOTAL), 0.0);
        drop(open);
        let hist = metrics::APPEND_DURATION_SECONDS;
        assert_eq!(value(&all, &format!("{hist}_count")), total);
        assert_eq!(value(&all, &format!("{hist}_bucket{{le=\"+Inf\"}}")), total);
        assert!(value(&all, &format!("{hist}_sum")) > 0.0);
        assert_eq!(value(&all, metrics::IN_FLIGHT_APPENDS), 0.0);
        let depth = metrics::CHAIN_MAILBOX_DEPTH;
        assert_eq!(value(&all, &format!("{depth}{{stat=\"sum\"}}")), 0.0);
        assert_eq!(value(&all, &format!("{depth}{{stat=\"max\"}}")), 0.0);
        assert_eq!(series_of(&all, depth).count(), 2, "exactly sum and max");
        assert_eq!(value(&all, metrics::WRITER_QUEUED_RECORDS), 0.0);
        assert_eq!(value(&all, metrics::ANCHORS_ACTIVE), anchors.len() as f64);
        assert_eq!(value(&all, metrics::ANCHORS_PASSIVATED_TOTAL), 0.0);
        let backend = metrics::BACKEND_ACTIVE;
        assert_eq!(
            value(&all, &format!("{backend}{{backend=\"memory\"}}")),
            1.0
        );
        assert_eq!(
            value(&all, &format!("{backend}{{backend=\"postgres\"}}")),
            0.0
        );
        assert_eq!(value(&all, metrics::CHAIN_BREAKS_TOTAL), 0.0);
        assert_eq!(value(&all, metrics::LOG_LEAVES), ok);
        assert_eq!(value(&all, metrics::INTEGRATOR_LEADER), 1.0);
        assert!(value(&all, metrics::CHECKPOINTS_TOTAL) >= 1.0);
        // Bounded: nothing is labelled with an anchor, whatever the number of anchors.
        for anchor in &anchors {
            assert!(
                !text.contains(&anchor.to_string()),
                "series labelled by anchor"
            );
        }
        let series_phase1 = all.len();

        // Phase 2: a second ledger whose actors passivate at once; its anchors leave the
        // active gauge and are counted as passivated. (The first ledger's stay active.)
        let quick = Ledger::start(LedgerConfig {
            workers: 2,
            passivate_after: Duration::from_millis(10),
            ..LedgerConfig::default()
        })
        .await
        .unwrap();
        let more: Vec<Uuid> = (0..30).map(|_| Uuid::new_v4()).collect();
        for &anchor in &more {
            quick.append(rec(anchor, 0)).await.unwrap();
        }
        // Passivation is timer-driven: wait for it (generously bounded so a broken build
        // fails instead of hanging), then check exact values.
        let give_up = Instant::now() + Duration::from_secs(60);
        let all = loop {
            quick.sample_metrics();
            let all = parse(&scrape(addr));
            if value(&all, metrics::ANCHORS_ACTIVE) == anchors.len() as f64 {
                break all;
            }
            assert!(
                Instant::now() < give_up,
                "actors never passivated:\n{all:#?}"
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            value(&all, metrics::ANCHORS_PASSIVATED_TOTAL) >= more.len() as f64,
            "every passivated actor is counted (revived ones more than once)"
        );
        assert_eq!(
            value(&all, &format!("{hist}_count")),
            total + more.len() as f64
        );
        // Fifty anchors in total, same series as with twenty.
        assert_eq!(all.len(), series_phase1, "series grew with anchors");

        quick.shutdown().await.unwrap();
        ledger.shutdown().await.unwrap();
    });
}
