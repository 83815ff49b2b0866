//! `ledger loadtest`: append N×M records with C in flight, then verify every chain written.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use ledger_actors::writer::OutageStatus;
use ledger_actors::{Durability, Expect, LedgerConfig, PartitionedLedger, RecordRange};
use ledger_entities::{LedgerRecord, NewRecord, RecordHash};
use serde_json::{Value, json};
use uuid::Uuid;

/// Arguments of `ledger loadtest`.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Number of anchors (chains) written.
    #[arg(long, default_value_t = 1000)]
    anchors: usize,
    /// Appends per anchor (ignored with --duration, which runs until time is up).
    #[arg(long, default_value_t = 100)]
    appends_per_anchor: u64,
    /// Appends in flight at once, spread over the anchors.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Size of the filler string in each payload.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Keep appending for this long instead of N×M appends (e.g. 90s, 10m, 1h).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Derive the anchors from this seed (anchor i is the same UUID for the same seed in every
    /// process), so several processes started with one seed append to the same anchors. The
    /// end-of-run check then waits for this process's outage drain, reads each whole chain
    /// (other processes' records included) and checks every record this process
    /// acknowledged by rid: stored exactly once, in its anchor, with the content appended and
    /// the hash of its acknowledgement — or, for a provisional acknowledgement (`Buffered`,
    /// `Spooled`) the drain re-chained, the final hash `Ledger::rechained` names. Default:
    /// random anchors.
    #[arg(long, value_name = "SEED")]
    anchor_seed: Option<u64>,
    /// Records per call: each call appends this many records to one anchor atomically
    /// (`Ledger::append_all`); 1 (default) uses single appends. When it does not divide
    /// --appends-per-anchor, each anchor's last call is smaller. Rates are then given in
    /// records/s and calls/s, latencies per call.
    #[arg(long, default_value_t = 1, value_name = "N")]
    batch: u64,
    /// Run a subscriber beside the appenders and report the delay from each append's
    /// acknowledgement to its delivery to the subscriber (JSON `subscription`).
    #[arg(long)]
    subscribe: bool,
}

/// Anchor `index` of `seed`: a version-8 UUID from two SplitMix64 outputs, the same in every
/// process (and every run) with the same seed.
pub fn seeded_anchor(seed: u64, index: u64) -> Uuid {
    fn splitmix64(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let hi = splitmix64(seed ^ 0x4156_4c5f_616e_6368); // "AVL_anch"
    let lo = splitmix64(hi ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// `--duration`: humantime's syntax (`90s`, `10m`, `1h 30m`, `500ms`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e} (try 30s, 10m, 1h)"))
}

/// Longest wait for an outage drain before verifying.
const DRAIN_WAIT: Duration = Duration::from_secs(120);

struct Shared {
    ledger: PartitionedLedger,
    /// Per partition: records acknowledged `Committed`, and otherwise (buffered, spooled,
    /// volatile).
    by_partition: Vec<[AtomicU64; 2]>,
    anchors: Vec<Uuid>,
    acked: Vec<AtomicU32>,
    next: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    /// Records acknowledged or attempted (calls × their sizes).
    records: AtomicU64,
    /// Calls to make (appends, or batches with `--batch`).
    total: u64,
    /// Records per call.
    batch: u64,
    /// Records per anchor (without `--duration`).
    per_anchor: u64,
    deadline: Option<Instant>,
    filler: String,
    first_error: std::sync::Mutex<Option<String>>,
    /// Failed appends by error kind ([`ledger_actors::LedgerError::kind`]).
    errors_by_kind: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// With `--anchor-seed`: every acknowledgement.
    acks: Option<std::sync::Mutex<Vec<Acked>>>,
    /// With `--subscribe`: where acknowledgements are reported for the live lag.
    lag: Option<Arc<crate::loadtest_subscribe::SubscribeLag>>,
}

/// One acknowledged record, as the end-of-run check compares it with the store.
struct Acked {
    rid: Uuid,
    /// Index of its anchor in `Shared::anchors`.
    anchor: usize,
    /// The `seq` of its payload (the rest of the payload is the shared filler).
    seq: u64,
    /// The hash acknowledged.
    hash: RecordHash,
    /// The acknowledgement said the hash may still change (`AppendAck::provisional`).
    provisional: bool,
}

/// Runs the load test; exit 1 when any append failed or any chain broke.
pub async fn run(mut config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.anchors > 0, "--anchors must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(
        args.batch as usize <= config.max_batch_records,
        "--batch {} is above max_batch_records ({})",
        args.batch,
        config.max_batch_records
    );
    let backend = config.backend;
    let ephemeral = crate::loadtest_log::ephemeral_key(&mut config)?;
    let partitioned = !config.partitions.is_empty();
    anyhow::ensure!(
        !(args.subscribe && config.partitions.len() > 1),
        "--subscribe follows one log; a partitioned ledger has one per partition"
    );
    let ledger = PartitionedLedger::start(config)
        .await
        .context("starting the ledger")?;
    // One watch per partition: each has its own integrator and log.
    let lag_watches: Vec<crate::loadtest_log::LagWatch> = ledger
        .partitions()
        .iter()
        .map(crate::loadtest_log::LagWatch::start)
        .collect();
    let subscriber = match (args.subscribe, ledger.partitions().first()) {
        (true, Some(one)) => Some(crate::loadtest_subscribe::Subscriber::start(one).await?),
        _ => None,
    };
    let total = if args.duration.is_some() {
        u64::MAX
    } else {
        args.anchors as u64 * args.appends_per_anchor.div_ceil(args.batch)
    };
    let shared = Arc::new(Shared {
        ledger: ledger.clone(),
        by_partition: (0..ledger.count())
            .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
            .collect(),
        anchors: (0..args.anchors)
            .map(|i| match args.anchor_seed {
                Some(seed) => seeded_anchor(seed, i as u64),
                None => Uuid::new_v4(),
            })
            .collect(),
        acked: (0..args.anchors).map(|_| AtomicU32::new(0)).collect(),
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        records: AtomicU64::new(0),
        total,
        batch: args.batch,
        per_anchor: args.appends_per_anchor,
        deadline: args.duration.map(|d| Instant::now() + d),
        filler: "x".repeat(args.payload_bytes),
        first_error: std::sync::Mutex::new(None),
        errors_by_kind: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        acks: args
            .anchor_seed
            .map(|_| std::sync::Mutex::new(Vec::with_capacity(total.min(1 << 24) as usize))),
        lag: subscriber.as_ref().map(|s| Arc::clone(s.lag())),
    });

    let show_progress = !args.json && std::io::stdout().is_terminal();
    let finished = Arc::new(AtomicBool::new(false));
    let progress = show_progress.then(|| spawn_progress(&shared, &finished, args.duration));

    let started = Instant::now();
    // Appenders run on the ledger's worker threads, beside the chain actors, so both cores
    // work and most hand-offs stay on one thread.
    let threads = ledger.workers();
    let mut results = Vec::with_capacity(args.concurrency);
    for i in 0..args.concurrency {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = Arc::clone(&shared);
        let task = async move {
            let _ = tx.send(worker(shared).await);
        };
        if threads.is_empty() || !threads[i % threads.len()].spawn(task) {
            anyhow::bail!("the ledger's worker threads are gone");
        }
        results.push(rx);
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for r in results {
        latency.add(r.await.context("an appender task died")?)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let appends_ended = Instant::now();
    finished.store(true, Ordering::Release);
    if let Some(p) = progress {
        p.await?;
    }

    // After a PostgreSQL outage, records acknowledged on the memory fallback are written back
    // by the writer; wait for that (bounded) so what is verified is what is durable, and check
    // again if the database became unreachable during the check (a stop may come late).
    let acks = shared
        .acks
        .as_ref()
        .map(|a| std::mem::take(&mut *a.lock().unwrap_or_else(|p| p.into_inner())));
    let until = Instant::now() + DRAIN_WAIT;
    let (status, checked) = loop {
        let status = Drain::of(
            ledger
                .await_drain(until.saturating_duration_since(Instant::now()))
                .await,
        );
        let again = match check_all(&ledger, &shared, acks.as_deref(), args.json).await {
            Ok(checked) => {
                let now = Drain::of(ledger.outage_status().await);
                let moved = match (&status, &now) {
                    (Some(before), Some(now)) => {
                        now.failovers != before.failovers || now.buffered > 0
                    }
                    _ => false,
                };
                if !moved || Instant::now() >= until {
                    break (now.or(status), checked);
                }
                "the ledger failed over during the check".to_owned()
            }
            Err(ledger_actors::LedgerError::Unavailable(why)) if Instant::now() < until => why,
            Err(e) => return Err(e.into()),
        };
        if !args.json {
            eprintln!("checking again after the drain: {again}");
        }
        actix_rt::time::sleep(Duration::from_millis(500)).await;
    };
    let Checked {
        verified,
        breaks,
        missing,
        rechained: rechained_acks,
        read,
    } = checked;
    let Drain {
        buffered,
        failovers,
        slow_not_down,
    } = status.unwrap_or_default();
    if buffered > 0 && !args.json {
        eprintln!("{buffered} acknowledged records still not in PostgreSQL after {DRAIN_WAIT:?}");
    }

    let subscription = match subscriber {
        Some(s) => s.finish().await,
        None => Value::Null,
    };
    let mut checkpoints = Vec::new();
    let mut integrations = Vec::new();
    for (watch, part) in lag_watches.into_iter().zip(ledger.partitions()) {
        let (c, i) = watch
            .finish(part, appends_ended, ephemeral.as_ref())
            .await?;
        checkpoints.push(c);
        integrations.push(i);
    }
    let uncovered = integrations
        .iter()
        .any(|i| i["covers_all_appends"] == json!(false));
    // Partitioned: one checkpoint and integration per partition (each its own log).
    let (checkpoint, integration) = if partitioned {
        (Value::Array(checkpoints), Value::Array(integrations))
    } else {
        (
            checkpoints.pop().unwrap_or(Value::Null),
            integrations.pop().unwrap_or(Value::Null),
        )
    };
    ledger.shutdown().await?;

    let appends = shared.records.load(Ordering::Acquire);
    let calls = shared.done.load(Ordering::Acquire);
    let errors = shared.errors.load(Ordering::Acquire);
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let result = json!({
        "backend": backend.as_str(),
        "anchors": args.anchors,
        "appends": appends,
        "errors": errors,
        "errors_by_kind": *shared.errors_by_kind.lock().unwrap_or_else(|p| p.into_inner()),
        "seconds": seconds,
        "appends_per_sec": appends as f64 / seconds,
        "batch": args.batch,
        "calls": calls,
        "calls_per_sec": calls as f64 / seconds,
        "records_per_sec": appends as f64 / seconds,
        "latency_ms": { "p50": ms(0.50), "p95": ms(0.95), "p99": ms(0.99), "max": latency.max() as f64 / 1000.0 },
        "anchors_verified": verified,
        "continuity_breaks": breaks,
        "records_missing": missing,
        "acks_rechained": rechained_acks,
        "chain_records_read": read,
        "anchor_seed": args.anchor_seed,
        "failovers": failovers,
        "slow_not_down": slow_not_down,
        "buffered_not_in_postgres": buffered,
        "checkpoint": checkpoint,
        "integration": integration,
        "subscription": subscription,
        "partitions": ledger.count(),
        "records_by_partition": shared.by_partition.iter().enumerate().map(|(i, [c, o])| json!({
            "partition": i,
            "committed": c.load(Ordering::Acquire),
            "other": o.load(Ordering::Acquire),
        })).collect::<Vec<_>>(),
    });
    if args.json {
        println!("{result}");
    } else {
        println!(
            "backend {}: {} appends to {} anchors in {:.2} s = {:.0} appends/s, {} errors",
            backend.as_str(),
            appends,
            args.anchors,
            seconds,
            appends as f64 / seconds,
            errors
        );
        if args.batch > 1 {
            println!(
                "batches of {}: {} calls = {:.0} calls/s, {:.0} records/s (errors and latencies are per call)",
                args.batch,
                calls,
                calls as f64 / seconds,
                appends as f64 / seconds
            );
        }
        if errors > 0 {
            let kinds = shared
                .errors_by_kind
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!("errors by kind: {}", kinds.join(", "));
        }
        println!(
            "latency ms: p50 {:.3}  p95 {:.3}  p99 {:.3}  max {:.3}",
            ms(0.50),
            ms(0.95),
            ms(0.99),
            latency.max() as f64 / 1000.0
        );
        println!(
            "verified {verified} anchors ({read} records): {breaks} continuity breaks, {missing} acknowledged records missing or wrong"
        );
        let pairs: Vec<(String, &Value, &Value)> = match (&checkpoint, &integration) {
            (Value::Array(c), Value::Array(i)) => c
                .iter()
                .zip(i)
                .enumerate()
                .map(|(p, (c, i))| (format!("partition {p} "), c, i))
                .collect(),
            (c, i) => vec![(String::new(), c, i)],
        };
        for (part, checkpoint, integration) in pairs {
            if checkpoint.is_null() {
                continue;
            }
            println!(
                "{part}checkpoint: size {} root {}; appends end -> covering checkpoint {:.0} ms, commit -> checkpoint p99 {} ms, max {:.0} ms",
                checkpoint["size"],
                checkpoint["root"].as_str().unwrap_or("?"),
                integration["appends_end_to_checkpoint_ms"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                integration["commit_to_checkpoint_ms"]["p99"],
                integration["commit_to_checkpoint_max_ms"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
            );
            if let Some(k) = checkpoint["verifier_key"].as_str() {
                println!("ephemeral verifier key: {k}");
            }
        }
        if !subscription.is_null() {
            println!(
                "subscription: {} delivered, {} undelivered, {} duplicates; ack -> delivery ms p50 {} p99 {} max {}",
                subscription["delivered"],
                subscription["undelivered"],
                subscription["duplicates"],
                subscription["ack_to_delivery_ms"]["p50"],
                subscription["ack_to_delivery_ms"]["p99"],
                subscription["ack_to_delivery_ms"]["max"],
            );
        }
        if let Some(e) = shared
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            println!("first error: {e}");
        }
    }
    Ok(
        if errors == 0
            && breaks == 0
            && missing == 0
            && buffered == 0
            && !uncovered
            && subscription_ok(&subscription)
        {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}

/// What the end-of-run check found.
#[derive(Default)]
struct Checked {
    /// Chains verified.
    verified: u64,
    /// Chains with a continuity break.
    breaks: u64,
    /// Acknowledged records missing or wrong.
    missing: u64,
    /// Acknowledged records found right after a re-chain (with `--anchor-seed`).
    rechained: u64,
    /// Records read from the chains (with `--anchor-seed`).
    read: u64,
}

/// The outage state summed over partitions (`None` when no partition has a writer).
#[derive(Default, Clone, Copy)]
struct Drain {
    buffered: usize,
    failovers: u64,
    slow_not_down: u64,
}

impl Drain {
    fn of(statuses: Vec<Option<OutageStatus>>) -> Option<Drain> {
        statuses.into_iter().flatten().fold(None, |sum, s| {
            let d = sum.unwrap_or_default();
            Some(Drain {
                buffered: d.buffered + s.buffered,
                failovers: d.failovers + s.failovers,
                slow_not_down: d.slow_not_down + s.slow_not_down,
            })
        })
    }
}

/// Verifies every chain written and compares its length with the acknowledged appends — or,
/// with a seed (other processes write the same anchors), each acknowledgement in `acks` by
/// rid against the final stored record.
async fn check_all(
    ledger: &PartitionedLedger,
    shared: &Shared,
    acks: Option<&[Acked]>,
    quiet: bool,
) -> Result<Checked, ledger_actors::LedgerError> {
    let mut out = Checked::default();
    let mut check = AckCheck::default();
    for (anchor, acked) in shared.anchors.iter().zip(&shared.acked) {
        let acked = u64::from(acked.load(Ordering::Acquire));
        if acked == 0 && acks.is_none() {
            continue;
        }
        let report = match ledger.verify(*anchor).await {
            Ok((_, r)) => r,
            Err(ledger_actors::LedgerError::UnknownAnchor(_)) if acked == 0 => continue,
            Err(e) => return Err(e),
        };
        out.verified += 1;
        if let Some(b) = &report.broken {
            out.breaks += 1;
            if !quiet {
                eprintln!("BROKEN anchor {anchor} at {} : {}", b.rid, b.reason);
            }
        }
        if acks.is_none() {
            out.missing += acked.saturating_sub(report.records);
        } else {
            check.read_chain(ledger, *anchor).await?;
        }
    }
    out.read = check.read;
    if let Some(acks) = acks {
        // Every re-chain of this process, by rid (uncapped): acknowledged hash -> final.
        let moved: std::collections::HashMap<Uuid, (RecordHash, RecordHash)> = ledger
            .outage_records()
            .await
            .into_iter()
            .flatten()
            .flat_map(|o| {
                o.rechained
                    .into_iter()
                    .map(|(rid, old, new)| (rid, (old, new)))
            })
            .collect();
        let expected = Expected {
            anchors: &shared.anchors,
            filler: &shared.filler,
            moved: &moved,
        };
        (out.missing, out.rechained) = check.compare(acks, &expected);
    }
    Ok(out)
}

/// No subscriber, or one that delivered every acknowledged record once, in order.
fn subscription_ok(s: &Value) -> bool {
    s.is_null()
        || (s["undelivered"] == 0
            && s["duplicates"] == 0
            && s["disorder"] == 0
            && s["error"].is_null())
}

async fn worker(shared: Arc<Shared>) -> Histogram<u64> {
    // Bounds cover 1 µs .. 60 s at 3 significant digits; constant arguments cannot fail.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.total || shared.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let anchors = shared.anchors.len() as u64;
        let a = (i % anchors) as usize;
        // The call's records: the anchor's `i / anchors`-th call, the last one of an anchor
        // smaller when --batch does not divide --appends-per-anchor.
        let n = if shared.deadline.is_some() {
            shared.batch
        } else {
            let done_before = (i / anchors) * shared.batch;
            shared
                .batch
                .min(shared.per_anchor.saturating_sub(done_before))
        };
        let make = |k: u64| {
            NewRecord::new(
                shared.anchors[a],
                "loadtest",
                "event",
                json!({ "seq": i * shared.batch + k, "data": shared.filler }),
                "ledger-loadtest",
            )
        };
        let t = Instant::now();
        let result = if shared.batch == 1 {
            shared
                .ledger
                .append(make(0))
                .await
                .map(|ack| (vec![ack.record], ack.durability))
        } else {
            shared
                .ledger
                .append_all(shared.anchors[a], (0..n).map(make).collect(), Expect::Any)
                .await
                .map(|ack| (ack.records, ack.durability))
        };
        match result {
            Ok((records, durability)) => {
                shared.acked[a].fetch_add(records.len() as u32, Ordering::AcqRel);
                let p = shared.ledger.partition_of(shared.anchors[a]);
                let slot = usize::from(durability != Durability::Committed);
                shared.by_partition[p][slot].fetch_add(records.len() as u64, Ordering::Relaxed);
                if let Some(lag) = &shared.lag {
                    for r in &records {
                        lag.acked(r.rid);
                    }
                }
                if let Some(acks) = &shared.acks {
                    let provisional = !durability.hash_is_final();
                    acks.lock().unwrap_or_else(|p| p.into_inner()).extend(
                        records.iter().enumerate().map(|(k, r)| Acked {
                            rid: r.rid,
                            anchor: a,
                            seq: i * shared.batch + k as u64,
                            hash: r.hash,
                            provisional,
                        }),
                    );
                }
            }
            Err(e) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                *shared
                    .errors_by_kind
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(e.kind())
                    .or_default() += 1;
                let mut first = shared.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
        shared.records.fetch_add(n, Ordering::Relaxed);
        hist.saturating_record(t.elapsed().as_micros().max(1) as u64);
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    hist
}

fn spawn_progress(
    shared: &Arc<Shared>,
    finished: &Arc<AtomicBool>,
    duration: Option<Duration>,
) -> actix_rt::task::JoinHandle<()> {
    let shared = Arc::clone(shared);
    let finished = Arc::clone(finished);
    actix_rt::spawn(async move {
        let bar = match duration {
            Some(d) => indicatif::ProgressBar::new(d.as_secs()),
            None => indicatif::ProgressBar::new(shared.total),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let started = Instant::now();
        while !finished.load(Ordering::Acquire) {
            match duration {
                Some(_) => bar.set_position(started.elapsed().as_secs()),
                None => bar.set_position(shared.done.load(Ordering::Relaxed)),
            }
            bar.set_message(format!("{} errors", shared.errors.load(Ordering::Relaxed)));
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        bar.finish_and_clear();
    })
}

/// What the end-of-run check expects of each acknowledged record.
struct Expected<'a> {
    anchors: &'a [Uuid],
    filler: &'a str,
    /// This process's re-chains by rid: (acknowledged hash, final hash).
    moved: &'a std::collections::HashMap<Uuid, (RecordHash, RecordHash)>,
}

/// The end-of-run check with `--anchor-seed`: every record of the seeded anchors, by rid.
#[derive(Default)]
struct AckCheck {
    /// rid -> (stored record, times seen).
    stored: std::collections::HashMap<Uuid, (Arc<LedgerRecord>, u32)>,
    /// Records read from the chains (every process's).
    read: u64,
}

impl AckCheck {
    /// Reads one anchor's whole chain, page by page.
    async fn read_chain(
        &mut self,
        ledger: &PartitionedLedger,
        anchor: Uuid,
    ) -> Result<(), ledger_actors::LedgerError> {
        let mut range = RecordRange {
            limit: 10_000,
            ..RecordRange::default()
        };
        loop {
            let page = match ledger.records(anchor, &range).await {
                Ok(p) => p,
                Err(ledger_actors::LedgerError::UnknownAnchor(_)) => return Ok(()),
                Err(e) => return Err(e),
            };
            for r in &page {
                let e = self.stored.entry(r.rid).or_insert((Arc::clone(r), 0));
                e.1 += 1;
                self.read += 1;
            }
            match page.last() {
                Some(last) if page.len() == range.limit => range = range.after(last),
                _ => return Ok(()),
            }
        }
    }

    /// Why `ack` does not match what is stored, if it does not: it must be stored exactly
    /// once, in its anchor, with the payload appended, and with the acknowledged hash — or,
    /// for a provisional acknowledgement, the final hash of its re-chain.
    fn mismatch(&self, ack: &Acked, want: &Expected<'_>) -> Option<String> {
        let Some((stored, n)) = self.stored.get(&ack.rid) else {
            return Some("not stored".into());
        };
        if *n != 1 {
            return Some(format!("stored {n} times"));
        }
        if stored.anchor_id != want.anchors[ack.anchor] {
            return Some(format!("stored in anchor {}", stored.anchor_id));
        }
        if stored.payload.to_value() != json!({ "seq": ack.seq, "data": want.filler }) {
            return Some(format!("stored with other content: {}", stored.payload));
        }
        let final_hash = match want.moved.get(&ack.rid) {
            Some((from, to)) if ack.provisional && *from == ack.hash => *to,
            _ => ack.hash,
        };
        (stored.hash != final_hash).then(|| {
            format!(
                "stored with hash {}, acknowledged {}{} ({})",
                stored.hash,
                ack.hash,
                if final_hash == ack.hash {
                    String::new()
                } else {
                    format!(", re-chained to {final_hash}")
                },
                if ack.provisional {
                    "provisional"
                } else {
                    "final"
                }
            )
        })
    }

    /// Acknowledged records missing or wrong (see [`AckCheck::mismatch`]), and how many of
    /// those found right were re-chained. The first 10 wrong ones are named on stderr.
    fn compare(&self, acks: &[Acked], want: &Expected<'_>) -> (u64, u64) {
        let mut wrong = 0;
        let mut rechained = 0;
        for ack in acks {
            match self.mismatch(ack, want) {
                None => rechained += u64::from(want.moved.contains_key(&ack.rid)),
                Some(why) => {
                    wrong += 1;
                    if wrong <= 10 {
                        eprintln!("WRONG acknowledged record {}: {why}", ack.rid);
                    }
                }
            }
        }
        (wrong, rechained)
    }
}
