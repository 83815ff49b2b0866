//! Metric names, descriptions and the Prometheus exporter.
//!
//! Every metric the ledger emits is named by a `pub const` in this module; nothing else in the
//! workspace may spell a metric name as a string literal. [`ALL`] lists every name and is what the
//! dashboard/alert consistency test (`tests/dashboard_metrics.rs`) checks against, so adding a
//! metric here without a dashboard panel (or referencing an unknown metric from the dashboard or
//! the alert rules) fails the build.
//!
//! Labels are always bounded: the permitted values are the `pub const`s in [`labels`]. Never
//! label a metric with an anchor, a record id or anything else that grows with the data.
//!
//! Names are rendered exactly as written (the exporter's "recommended naming" is left off, so no
//! unit or `_total` suffix is appended): counters already end in `_total` and time histograms in
//! `_seconds`.
//!
//! [`install`] starts the HTTP listener (the text exposition on every path, conventionally
//! `/metrics`; `/health` answers a bare liveness check) on a dedicated thread with
//! its own single-threaded Tokio runtime, so scrapes never compete with the actors and the
//! exporter keeps working whatever happens to the actix `System` that called it.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;

use std::sync::OnceLock;

use std::sync::Arc;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
    counter, describe_counter, describe_gauge, describe_histogram,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::LedgerError;

// ---------------------------------------------------------------------------------------------
// Appends
// ---------------------------------------------------------------------------------------------

/// Counter: appends completed, by outcome (label [`labels::OUTCOME`]).
pub const APPENDS_TOTAL: &str = "ledger_appends_total";
/// Histogram (seconds): end-to-end append latency as the host sees it, from the append request
/// to its acknowledgement (or rejection).
pub const APPEND_DURATION_SECONDS: &str = "ledger_append_duration_seconds";
/// Gauge: appends accepted but not yet acknowledged or rejected.
pub const IN_FLIGHT_APPENDS: &str = "ledger_in_flight_appends";

// ---------------------------------------------------------------------------------------------
// Actors
// ---------------------------------------------------------------------------------------------

/// Gauge: mailbox depth aggregated over all chain actors (label [`labels::STAT`]: sum or max).
pub const CHAIN_MAILBOX_DEPTH: &str = "ledger_chain_mailbox_depth";
/// Gauge: records the PostgreSQL driver's group commit holds unanswered (queued for a batch
/// or in a running batch); 0 on the memory drivers, which answer at once.
pub const WRITER_QUEUED_RECORDS: &str = "ledger_writer_queued_records";
/// Gauge: records the writer has forwarded to PostgreSQL and holds until PostgreSQL
/// answers (not its actix mailbox: those records are the ones a failover moves to the
/// fallback).
pub const WRITER_PENDING_RECORDS: &str = "ledger_writer_pending_records";
/// Gauge: chain actors currently alive (one per active anchor).
pub const ANCHORS_ACTIVE: &str = "ledger_anchors_active";
/// Counter: chain actors stopped after being idle (passivated).
pub const ANCHORS_PASSIVATED_TOTAL: &str = "ledger_anchors_passivated_total";

// ---------------------------------------------------------------------------------------------
// Database
// ---------------------------------------------------------------------------------------------

/// Histogram (records): records per committed database batch.
pub const DB_BATCH_SIZE: &str = "ledger_db_batch_size";
/// Histogram (seconds): duration of one batch transaction, begin to commit.
pub const DB_WRITE_DURATION_SECONDS: &str = "ledger_db_write_duration_seconds";
/// Counter: database errors, by class (label [`labels::CLASS`]).
pub const DB_ERRORS_TOTAL: &str = "ledger_db_errors_total";
/// Gauge: database pool connections, by state (label [`labels::STATE`]).
pub const DB_POOL_CONNECTIONS: &str = "ledger_db_pool_connections";

// ---------------------------------------------------------------------------------------------
// Failover and drain
// ---------------------------------------------------------------------------------------------

/// Gauge: 1 for the backend currently taking writes, 0 for the other (label
/// [`labels::BACKEND`]).
pub const BACKEND_ACTIVE: &str = "ledger_backend_active";
/// Counter: switches from PostgreSQL to the in-memory fallback.
pub const FAILOVERS_TOTAL: &str = "ledger_failovers_total";
/// Gauge: records acknowledged on the memory fallback and not yet written to PostgreSQL.
pub const BUFFERED_RECORDS: &str = "ledger_buffered_records";
/// Counter: records drained from the fallback into PostgreSQL.
pub const DRAIN_RECORDS_TOTAL: &str = "ledger_drain_records_total";
/// Histogram (seconds): duration of one complete drain of the fallback into PostgreSQL, from
/// PostgreSQL answering again to the buffer being empty (recorded once per outage).
pub const DRAIN_DURATION_SECONDS: &str = "ledger_drain_duration_seconds";
/// Histogram (seconds): duration of one drain batch (one round of writes of up to
/// `batch_size` buffered records).
pub const DRAIN_BATCH_DURATION_SECONDS: &str = "ledger_drain_batch_duration_seconds";
/// Gauge: bytes currently held in the on-disk spool.
pub const SPOOL_BYTES: &str = "ledger_spool_bytes";

// ---------------------------------------------------------------------------------------------
// Integrity
// ---------------------------------------------------------------------------------------------

/// Counter: records acknowledged `Buffered` whose hash link was recomputed when the drain
/// moved them onto the PostgreSQL chain (a re-chain: the stored hash differs from the one
/// acknowledged).
pub const RECORDS_RECHAINED_TOTAL: &str = "ledger_records_rechained_total";

/// Counter: records linked again before they were acknowledged, because another process
/// extended their anchor or a drain moved their predecessor (a re-link: the appender only
/// ever sees the final hash).
pub const RECORDS_RELINKED_TOTAL: &str = "ledger_records_relinked_total";
/// Gauge: records this process acknowledged that can never be written to PostgreSQL (their
/// client rid was stored meanwhile with other content). They are kept — listed by
/// `Ledger::outage_records`, in the spool directory's kept file — and `ledger health` is
/// degraded while it is above 0.
pub const RECORDS_KEPT: &str = "ledger_records_kept";
/// Counter: chain breaks found by verification.
pub const CHAIN_BREAKS_TOTAL: &str = "ledger_chain_breaks_total";

// ---------------------------------------------------------------------------------------------
// Transparency log
// ---------------------------------------------------------------------------------------------

/// Gauge: leaves in the transparency log, as this process's integrator last wrote or loaded
/// it (take the maximum over processes).
pub const LOG_LEAVES: &str = "ledger_log_leaves";
/// Gauge: records committed but not yet in the log, as the leading integrator last counted
/// them (at most once a second, capped at 1,000,000); 0 in a process that does not lead.
pub const INTEGRATION_LAG_RECORDS: &str = "ledger_integration_lag_records";
/// Gauge: seconds since the `ts` of the oldest committed record not yet in the log (0 when
/// none); 0 in a process that does not lead.
pub const INTEGRATION_LAG_SECONDS: &str = "ledger_integration_lag_seconds";
/// Counter: checkpoints this process's integrator wrote.
pub const CHECKPOINTS_TOTAL: &str = "ledger_checkpoints_total";
/// Gauge: 1 while this process holds the integrator lease, 0 otherwise (exactly one process
/// per database should show 1).
pub const INTEGRATOR_LEADER: &str = "ledger_integrator_leader";

/// Gauge: 1 while the integrator refuses to go on because the database's log does not extend
/// the last checkpoint this ledger's key signed (a rollback: nothing integrated or signed).
pub const LOG_HALTED: &str = "ledger_log_halted";

/// Gauge: under `replication: synchronous`, the standbys streaming as synchronous (sync or
/// quorum) that a commit waits for; 0 means `Committed` appends wait. Absent under
/// `replication: local`, and while the role may not read `pg_stat_replication`.
pub const REPLICATION_SYNC_STANDBYS: &str = "ledger_replication_sync_standbys";
/// Gauge (seconds): under `replication: synchronous`, the largest `flush_lag` of the
/// synchronous standbys (what each commit waits for, as PostgreSQL last measured it).
pub const REPLICATION_FLUSH_LAG_SECONDS: &str = "ledger_replication_flush_lag_seconds";

// ---------------------------------------------------------------------------------------------
// Subscriptions (`Ledger::subscribe`, `ledger tail`)
// ---------------------------------------------------------------------------------------------

/// Gauge: subscriptions open in this process (their reading task running).
pub const SUBSCRIPTIONS_OPEN: &str = "ledger_subscriptions_open";
/// Counter: records handed to this process's subscribers (each delivery counts, so two
/// subscriptions delivering one record count it twice).
pub const SUBSCRIPTION_DELIVERED_TOTAL: &str = "ledger_subscription_delivered_total";
/// Histogram (seconds): per page handed to a subscriber, the time from its last record's
/// `ts` (when it was sealed) to the hand-over — the live delivery lag while a subscriber is
/// caught up, how far behind it is while it catches up.
pub const SUBSCRIPTION_LAG_SECONDS: &str = "ledger_subscription_lag_seconds";
/// Counter: subscription reads that found the log unreachable and were retried (an outage
/// never ends a subscription; this shows it waiting).
pub const SUBSCRIPTION_READ_RETRIES_TOTAL: &str = "ledger_subscription_read_retries_total";

// ---------------------------------------------------------------------------------------------
// HTTP (`ledger serve`)
// ---------------------------------------------------------------------------------------------

/// Counter: HTTP requests `ledger serve` answered, by route class ([`labels::ROUTE`]) and
/// status class ([`labels::STATUS`]).
pub const HTTP_REQUESTS_TOTAL: &str = "ledger_http_requests_total";
/// Histogram (seconds): time `ledger serve` took to answer a request, by route class
/// ([`labels::ROUTE`]).
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "ledger_http_request_duration_seconds";

// ---------------------------------------------------------------------------------------------
// Witnesses (label [`labels::WITNESS`]: a configured witness's key name, so bounded by the
// configuration)
// ---------------------------------------------------------------------------------------------

/// Gauge: the largest checkpoint size this process stored a cosignature of, per witness.
pub const WITNESS_COSIGNED_SIZE: &str = "ledger_witness_cosigned_size";
/// Gauge: leaves of the latest checkpoint the witness has not cosigned yet (0 when caught up,
/// and in a process that does not lead).
pub const WITNESS_LAG_LEAVES: &str = "ledger_witness_lag_leaves";
/// Gauge: seconds the witness has been behind the latest checkpoint (0 when caught up).
pub const WITNESS_LAG_SECONDS: &str = "ledger_witness_lag_seconds";
/// Counter: failed submissions to a witness (error status, timeout, no connection, a
/// cosignature that does not verify, repeated 409).
pub const WITNESS_FAILURES_TOTAL: &str = "ledger_witness_failures_total";
/// Histogram (seconds): from a checkpoint's signing to its cosignature being stored, per
/// witness.
pub const WITNESS_COSIGN_SECONDS: &str = "ledger_witness_cosign_seconds";
/// Gauge: the largest checkpoint size cosigned by at least `witness_quorum` witnesses (as
/// this process stored them).
pub const WITNESS_QUORUM_SIZE: &str = "ledger_witness_quorum_size";

// ---------------------------------------------------------------------------------------------
// Partitions (a partitioned ledger only; label [`labels::PARTITION`], the index in the list)
// ---------------------------------------------------------------------------------------------

/// Counter: records appended through a partitioned ledger, by partition and durability of
/// the acknowledgement (label [`labels::DURABILITY`]; `failed` for an error).
pub const PARTITION_APPENDS_TOTAL: &str = "ledger_partition_appends_total";
/// Gauge: 1 while the partition's writer writes to its PostgreSQL, 0 during its outage or
/// drain (label [`labels::PARTITION`]).
pub const PARTITION_ON_POSTGRES: &str = "ledger_partition_on_postgres";
/// Gauge: records the partition acknowledged during its outage and has not yet written to
/// its PostgreSQL (label [`labels::PARTITION`]).
pub const PARTITION_BUFFERED_RECORDS: &str = "ledger_partition_buffered_records";

/// Every metric name, without the `_bucket`/`_sum`/`_count` series suffixes of histograms.
pub const ALL: &[&str] = &[
    APPENDS_TOTAL,
    APPEND_DURATION_SECONDS,
    IN_FLIGHT_APPENDS,
    CHAIN_MAILBOX_DEPTH,
    WRITER_QUEUED_RECORDS,
    WRITER_PENDING_RECORDS,
    ANCHORS_ACTIVE,
    ANCHORS_PASSIVATED_TOTAL,
    DB_BATCH_SIZE,
    DB_WRITE_DURATION_SECONDS,
    DB_ERRORS_TOTAL,
    DB_POOL_CONNECTIONS,
    BACKEND_ACTIVE,
    FAILOVERS_TOTAL,
    BUFFERED_RECORDS,
    DRAIN_RECORDS_TOTAL,
    DRAIN_DURATION_SECONDS,
    DRAIN_BATCH_DURATION_SECONDS,
    SPOOL_BYTES,
    RECORDS_RECHAINED_TOTAL,
    RECORDS_RELINKED_TOTAL,
    RECORDS_KEPT,
    CHAIN_BREAKS_TOTAL,
    LOG_LEAVES,
    INTEGRATION_LAG_RECORDS,
    INTEGRATION_LAG_SECONDS,
    CHECKPOINTS_TOTAL,
    INTEGRATOR_LEADER,
    LOG_HALTED,
    REPLICATION_SYNC_STANDBYS,
    REPLICATION_FLUSH_LAG_SECONDS,
    HTTP_REQUESTS_TOTAL,
    HTTP_REQUEST_DURATION_SECONDS,
    WITNESS_COSIGNED_SIZE,
    WITNESS_LAG_LEAVES,
    WITNESS_LAG_SECONDS,
    WITNESS_FAILURES_TOTAL,
    WITNESS_COSIGN_SECONDS,
    WITNESS_QUORUM_SIZE,
    PARTITION_APPENDS_TOTAL,
    PARTITION_ON_POSTGRES,
    PARTITION_BUFFERED_RECORDS,
    SUBSCRIPTIONS_OPEN,
    SUBSCRIPTION_DELIVERED_TOTAL,
    SUBSCRIPTION_LAG_SECONDS,
    SUBSCRIPTION_READ_RETRIES_TOTAL,
];

/// Bucket upper bounds (seconds) for [`APPEND_DURATION_SECONDS`] and
/// [`DB_WRITE_DURATION_SECONDS`]: 100 µs to 5 s, with 25 ms (the latency objective) as a bound.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Bucket upper bounds (records) for [`DB_BATCH_SIZE`].
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];
/// Bucket upper bounds (seconds) for [`DRAIN_DURATION_SECONDS`].
pub const DRAIN_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Bucket upper bounds (seconds) for [`SUBSCRIPTION_LAG_SECONDS`]: 1 ms (live) to an hour
/// (a subscriber catching up on old records), with 50 ms (the live-lag objective) as a bound.
pub const SUBSCRIPTION_LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 3600.0,
];

/// Every histogram with its bucket bounds; [`builder`] configures each of them so that they
/// render as Prometheus histograms (`_bucket` series), not summaries.
pub const HISTOGRAMS: &[(&str, &[f64])] = &[
    (APPEND_DURATION_SECONDS, LATENCY_BUCKETS),
    (DB_WRITE_DURATION_SECONDS, LATENCY_BUCKETS),
    (DB_BATCH_SIZE, BATCH_SIZE_BUCKETS),
    (DRAIN_DURATION_SECONDS, DRAIN_DURATION_BUCKETS),
    (DRAIN_BATCH_DURATION_SECONDS, LATENCY_BUCKETS),
    (HTTP_REQUEST_DURATION_SECONDS, LATENCY_BUCKETS),
    (WITNESS_COSIGN_SECONDS, DRAIN_DURATION_BUCKETS),
    (SUBSCRIPTION_LAG_SECONDS, SUBSCRIPTION_LAG_BUCKETS),
];

/// Label keys and their permitted (bounded) values.
pub mod labels {
    /// Label key on [`APPENDS_TOTAL`](super::APPENDS_TOTAL): how an append ended.
    pub const OUTCOME: &str = "outcome";
    /// Outcome: the record was appended and acknowledged.
    pub const OUTCOME_OK: &str = "ok";
    /// Outcome: the request was rejected as invalid.
    pub const OUTCOME_VALIDATION: &str = "validation";
    /// Outcome: the request conflicted with the current chain head.
    pub const OUTCOME_CONFLICT: &str = "conflict";
    /// Outcome: the request was shed because a mailbox or the in-flight limit was full.
    pub const OUTCOME_OVERLOADED: &str = "overloaded";
    /// Outcome: no backend could accept the record.
    pub const OUTCOME_UNAVAILABLE: &str = "unavailable";
    /// Outcome: any other internal error.
    pub const OUTCOME_ERROR: &str = "error";
    /// Every value of [`OUTCOME`].
    pub const OUTCOMES: &[&str] = &[
        OUTCOME_OK,
        OUTCOME_VALIDATION,
        OUTCOME_CONFLICT,
        OUTCOME_OVERLOADED,
        OUTCOME_UNAVAILABLE,
        OUTCOME_ERROR,
    ];

    /// Label key on [`CHAIN_MAILBOX_DEPTH`](super::CHAIN_MAILBOX_DEPTH): which aggregate.
    pub const STAT: &str = "stat";
    /// Stat: sum over all chain actors.
    pub const STAT_SUM: &str = "sum";
    /// Stat: maximum over all chain actors.
    pub const STAT_MAX: &str = "max";

    /// Label key on [`DB_ERRORS_TOTAL`](super::DB_ERRORS_TOTAL): error class.
    pub const CLASS: &str = "class";
    /// Class: the database could not be reached or the connection broke.
    pub const CLASS_CONNECTIVITY: &str = "connectivity";
    /// Class: the database rejected the data (constraint violation, bad value, ...).
    pub const CLASS_DATA: &str = "data";
    /// Every value of [`CLASS`].
    pub const CLASSES: &[&str] = &[CLASS_CONNECTIVITY, CLASS_DATA];

    /// Label key on [`DB_POOL_CONNECTIONS`](super::DB_POOL_CONNECTIONS): connection state.
    pub const STATE: &str = "state";
    /// State: connections checked out of the pool.
    pub const STATE_IN_USE: &str = "in_use";
    /// State: open connections waiting in the pool.
    pub const STATE_IDLE: &str = "idle";
    /// State: the configured pool maximum.
    pub const STATE_MAX: &str = "max";

    /// Label key on [`BACKEND_ACTIVE`](super::BACKEND_ACTIVE): which backend.
    pub const BACKEND: &str = "backend";
    /// Backend: PostgreSQL.
    pub const BACKEND_POSTGRES: &str = "postgres";
    /// Backend: the in-memory fallback.
    pub const BACKEND_MEMORY: &str = "memory";

    /// Label key on the HTTP metrics: which kind of resource was asked for.
    pub const ROUTE: &str = "route";
    /// Route: `/checkpoint`.
    pub const ROUTE_CHECKPOINT: &str = "checkpoint";
    /// Route: `/tile/<L>/...` (Merkle tree hashes).
    pub const ROUTE_TILE: &str = "tile";
    /// Route: `/tile/entries/...` (entry bundles).
    pub const ROUTE_ENTRIES: &str = "entries";
    /// Route: `/receipt/<rid>`.
    pub const ROUTE_RECEIPT: &str = "receipt";
    /// Route: any other path (answered 404, or 405 for a method other than GET/HEAD).
    pub const ROUTE_OTHER: &str = "other";
    /// Every value of [`ROUTE`].
    pub const ROUTES: &[&str] = &[
        ROUTE_CHECKPOINT,
        ROUTE_TILE,
        ROUTE_ENTRIES,
        ROUTE_RECEIPT,
        ROUTE_OTHER,
    ];

    /// Label key on [`HTTP_REQUESTS_TOTAL`](super::HTTP_REQUESTS_TOTAL): the status class.
    pub const STATUS: &str = "status";
    /// Every value of [`STATUS`]: `2xx` (and 1xx), `3xx`, `4xx`, `5xx` (and anything else).
    pub const STATUSES: &[&str] = &["2xx", "3xx", "4xx", "5xx"];

    /// The [`STATUS`] value of an HTTP status code.
    pub fn status_class(code: u16) -> &'static str {
        match code / 100 {
            0..=2 => STATUSES[0],
            3 => STATUSES[1],
            4 => STATUSES[2],
            _ => STATUSES[3],
        }
    }
    /// Label key on the witness metrics: the witness's key name (from the configuration, so
    /// bounded).
    pub const WITNESS: &str = "witness";
    /// Label: a partition's index in the `partitions` list (bounded by the list's length,
    /// at most 1024).
    pub const PARTITION: &str = "partition";
    /// Label: an acknowledgement's durability, or `failed`.
    pub const DURABILITY: &str = "durability";
    /// The values of [`DURABILITY`], in the order [`super::partition_counters`] returns
    /// them: committed, buffered, spooled, volatile, failed.
    pub const DURABILITIES: &[&str] = &["committed", "buffered", "spooled", "volatile", "failed"];
}

/// A [`PrometheusBuilder`] with the bucket bounds of every histogram in [`HISTOGRAMS`] set, and
/// no listener. [`install`] adds the listener; tests use it to build a local recorder.
///
/// # Errors
/// [`LedgerError::Internal`] if the exporter rejects a bucket list (they are constants, so
/// this is a bug).
pub fn builder() -> Result<PrometheusBuilder, LedgerError> {
    HISTOGRAMS
        .iter()
        .try_fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
            builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
        })
        .map_err(|e| LedgerError::Internal(format!("metrics exporter configuration: {e}")))
}

/// The [`LedgerError::MetricsExporter`] for `addr` with `reason`.
fn exporter_error(addr: SocketAddr, reason: impl Into<String>) -> LedgerError {
    LedgerError::MetricsExporter {
        addr,
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The partition label
// ---------------------------------------------------------------------------------------------
//
// A partitioned ledger runs one whole ledger per partition, and every one of them records the
// same metric names (its writer's buffered records, its integrator's log size, ...). So that
// they do not overwrite each other, each partition's threads (its writer, chain workers,
// integrator and witness publisher Arbiters: see `arbiter`) record through a thread-local
// recorder that adds `partition="<index>"` to every series and forwards to the exporter's.
// Call sites stay unchanged. Series recorded on other threads (an append's own metrics, on
// the host's thread; the per-append handles cached at install) carry no partition label.

/// The exporter's recorder, as [`install`] made it (absent when another recorder was
/// installed, e.g. by a host application: then nothing is labelled).
static PROMETHEUS: OnceLock<Arc<metrics_exporter_prometheus::PrometheusRecorder>> = OnceLock::new();

/// The global recorder: the exporter's, shared with the partition recorders.
struct Shared(Arc<metrics_exporter_prometheus::PrometheusRecorder>);

/// Implements [`Recorder`] for `$ty` by forwarding every call to its `target()`, each key
/// registered as `$labelled` (the key, with the labels it adds).
macro_rules! forward_recorder {
    ($ty:ty, |$this:ident, $key:ident| $labelled:expr) => {
        impl Recorder for $ty {
            fn describe_counter(&self, key: KeyName, unit: Option<Unit>, d: SharedString) {
                self.target().describe_counter(key, unit, d)
            }
            fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, d: SharedString) {
                self.target().describe_gauge(key, unit, d)
            }
            fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, d: SharedString) {
                self.target().describe_histogram(key, unit, d)
            }
            fn register_counter(&self, $key: &Key, metadata: &Metadata<'_>) -> Counter {
                let $this = self;
                self.target().register_counter(&$labelled, metadata)
            }
            fn register_gauge(&self, $key: &Key, metadata: &Metadata<'_>) -> Gauge {
                let $this = self;
                self.target().register_gauge(&$labelled, metadata)
            }
            fn register_histogram(&self, $key: &Key, metadata: &Metadata<'_>) -> Histogram {
                let $this = self;
                self.target().register_histogram(&$labelled, metadata)
            }
        }
    };
}

impl Shared {
    fn target(&self) -> &dyn Recorder {
        self.0.as_ref()
    }
}

forward_recorder!(Shared, |_this, key| key.clone());

/// A recorder that adds `partition="<index>"` to every series and forwards to `target`.
struct PartitionRecorder {
    target: Arc<dyn Recorder + Send + Sync>,
    label: Label,
}

impl PartitionRecorder {
    fn new(target: Arc<dyn Recorder + Send + Sync>, partition: usize) -> Self {
        Self {
            target,
            label: Label::new(labels::PARTITION, partition.to_string()),
        }
    }

    fn target(&self) -> &dyn Recorder {
        self.target.as_ref()
    }
}

forward_recorder!(PartitionRecorder, |this, key| key
    .with_extra_labels(vec![this.label.clone()]));

/// The partition recorders made so far, one per index, for the life of the process (a
/// thread-local recorder is borrowed for as long as it is set, so each is leaked once).
static PARTITION_RECORDERS: std::sync::Mutex<Vec<&'static PartitionRecorder>> =
    std::sync::Mutex::new(Vec::new());

/// Partition `index`'s recorder, if the exporter is installed.
fn partition_recorder(index: usize) -> Option<&'static PartitionRecorder> {
    let target = PROMETHEUS.get()?;
    let mut made = PARTITION_RECORDERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    while made.len() <= index {
        let target: Arc<dyn Recorder + Send + Sync> = Arc::clone(target) as _;
        let next = made.len();
        made.push(Box::leak(Box::new(PartitionRecorder::new(target, next))));
    }
    made.get(index).copied()
}

/// Runs `f` with partition `partition`'s label on what it records (`None`, or no exporter:
/// as it is).
pub(crate) fn in_partition<T>(partition: Option<usize>, f: impl FnOnce() -> T) -> T {
    match partition.and_then(partition_recorder) {
        Some(recorder) => metrics::with_local_recorder(recorder, f),
        None => f(),
    }
}

/// A new Arbiter whose thread records with partition `partition`'s label (`None`: a plain
/// Arbiter). Every Arbiter of a ledger is made here.
pub(crate) fn arbiter(partition: Option<usize>) -> actix::Arbiter {
    let arbiter = actix::Arbiter::new();
    if partition.is_some() {
        // Runs on the Arbiter's thread before anything started on it later.
        arbiter.spawn_fn(move || label_this_thread(partition));
    }
    arbiter
}

/// From now on, the calling thread records with partition `partition`'s label (`None`, or
/// no exporter: nothing changes). For threads a partition owns: its Arbiters ([`arbiter`])
/// and its spool thread.
pub(crate) fn label_this_thread(partition: Option<usize>) {
    if let Some(recorder) = partition.and_then(partition_recorder) {
        // Kept for the thread's life: the recorder is 'static, and restoring the previous
        // recorder (the guard's drop) is never wanted.
        std::mem::forget(metrics::set_default_local_recorder(recorder));
    }
}

/// Why [`install`] failed when a recorder was already installed.
pub const ALREADY_INSTALLED: &str = "a metrics recorder is already installed in this process";

/// Installs the Prometheus exporter as the process-wide metrics recorder and starts its HTTP
/// listener on `addr` (the ledger defaults to loopback, `127.0.0.1:9464`).
///
/// The listener runs on a dedicated thread with its own single-threaded Tokio runtime, so this
/// can be called from inside an actix `System` (or from plain synchronous code); it blocks only
/// until the socket is bound. The exporter then serves for the life of the process.
///
/// After installing it calls [`describe`] and registers every unlabelled counter, and every
/// bounded label combination of the labelled ones, at zero, so that `increase()`/`rate()` see
/// the first event (a counter series that first appears at 1 has no increase).
///
/// It also caches the handles of the per-append metrics (see the "Recording" section), so
/// that recording an append does not look its series up in the registry.
///
/// # Errors
/// [`LedgerError::MetricsExporter`] naming `addr` if the address cannot be bound (`cannot bind:
/// ...`), if a recorder is already installed ([`ALREADY_INSTALLED`]) or if the exporter thread
/// cannot be started.
pub fn install(addr: SocketAddr) -> Result<PrometheusHandle, LedgerError> {
    let builder = builder()?.with_http_listener(addr);
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<PrometheusHandle, LedgerError>>(1);

    // Everything runtime-related (building the exporter spawns its upkeep task, and dropping a
    // runtime is forbidden inside an async context) happens on the exporter thread.
    thread::Builder::new()
        .name("metrics-exporter".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = ready_tx.send(Err(exporter_error(
                        addr,
                        format!("cannot start its runtime: {err}"),
                    )));
                    return;
                }
            };
            let built = {
                let _guard = runtime.enter();
                builder.build()
            };
            let (recorder, exporter) = match built {
                Ok(pair) => pair,
                Err(BuildError::FailedToCreateHTTPListener(reason)) => {
                    let _ =
                        ready_tx.send(Err(exporter_error(addr, format!("cannot bind: {reason}"))));
                    return;
                }
                Err(BuildError::FailedToSetGlobalRecorder(_)) => {
                    let _ = ready_tx.send(Err(exporter_error(addr, ALREADY_INSTALLED)));
                    return;
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(exporter_error(addr, err.to_string())));
                    return;
                }
            };
            let handle = recorder.handle();
            let recorder = Arc::new(recorder);
            // Kept for the partition-labelling recorders (`in_partition`), which forward to
            // it directly: forwarding through `metrics::with_recorder` would find themselves.
            let _ = PROMETHEUS.set(Arc::clone(&recorder));
            if metrics::set_global_recorder(Shared(recorder)).is_err() {
                let _ = ready_tx.send(Err(exporter_error(addr, ALREADY_INSTALLED)));
                return;
            }
            if ready_tx.send(Ok(handle)).is_err() {
                return;
            }
            if let Err(err) = runtime.block_on(exporter) {
                tracing::error!(error = ?err, %addr, "metrics exporter stopped");
            }
        })
        .map_err(|e| exporter_error(addr, format!("cannot start its thread: {e}")))?;

    let handle = ready_rx
        .recv()
        .map_err(|_| exporter_error(addr, "the exporter thread exited before it was ready"))??;
    describe();
    register_counters();
    register_gauges();
    register_histograms();
    cache_handles();
    Ok(handle)
}

/// Registers every counter series at zero (all bounded label combinations of the labelled
/// ones) on the current recorder.
pub fn register_counters() {
    for outcome in labels::OUTCOMES {
        counter!(APPENDS_TOTAL, labels::OUTCOME => *outcome).increment(0);
    }
    for class in labels::CLASSES {
        counter!(DB_ERRORS_TOTAL, labels::CLASS => *class).increment(0);
    }
    for name in [
        ANCHORS_PASSIVATED_TOTAL,
        FAILOVERS_TOTAL,
        DRAIN_RECORDS_TOTAL,
        RECORDS_RECHAINED_TOTAL,
        RECORDS_RELINKED_TOTAL,
        CHAIN_BREAKS_TOTAL,
        CHECKPOINTS_TOTAL,
        SUBSCRIPTION_DELIVERED_TOTAL,
        SUBSCRIPTION_READ_RETRIES_TOTAL,
    ] {
        counter!(name).increment(0);
    }
}

/// Registers every histogram of [`HISTOGRAMS`] with no sample, so that each renders its
/// buckets at 0 from the start: the drain's histograms otherwise appear only after the first
/// drain, and their panels show "No data" on a healthy ledger.
pub fn register_histograms() {
    for (name, _) in HISTOGRAMS {
        // Only `ledger serve` answers HTTP; it registers its series per route
        // ([`register_http`]), so other processes do not show an unlabelled one.
        if *name == HTTP_REQUEST_DURATION_SECONDS {
            continue;
        }
        // Registering creates the series; recording nothing keeps its counts at 0.
        drop(metrics::histogram!(*name));
    }
}

/// Registers the HTTP series of `ledger serve` (every route × status class of
/// [`HTTP_REQUESTS_TOTAL`] at 0, the duration histogram per route with no sample), so its
/// panels and `rate()` see them from the start. `ledger serve` calls it; no other process
/// answers HTTP.
pub fn register_http() {
    describe();
    for route in labels::ROUTES {
        for status in labels::STATUSES {
            counter!(HTTP_REQUESTS_TOTAL, labels::ROUTE => *route, labels::STATUS => *status)
                .increment(0);
        }
        drop(metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, labels::ROUTE => *route));
    }
}

/// One answered HTTP request of `ledger serve`: `route` one of [`labels::ROUTES`].
pub fn http_request(route: &'static str, status: u16, seconds: f64) {
    counter!(HTTP_REQUESTS_TOTAL, labels::ROUTE => route, labels::STATUS => labels::status_class(status))
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, labels::ROUTE => route).record(seconds);
}

/// Sets every gauge series (all bounded label combinations) to 0 on the current recorder, so
/// dashboards and absent-series alerts see each gauge from the start, not from its first
/// change (the buffered records, for one, change only during an outage). [`install`] calls
/// it before any ledger starts; a starting ledger then sets what it knows.
pub fn register_gauges() {
    for stat in [labels::STAT_SUM, labels::STAT_MAX] {
        metrics::gauge!(CHAIN_MAILBOX_DEPTH, labels::STAT => stat).set(0.0);
    }
    for state in [labels::STATE_IN_USE, labels::STATE_IDLE, labels::STATE_MAX] {
        metrics::gauge!(DB_POOL_CONNECTIONS, labels::STATE => state).set(0.0);
    }
    for backend in [labels::BACKEND_POSTGRES, labels::BACKEND_MEMORY] {
        metrics::gauge!(BACKEND_ACTIVE, labels::BACKEND => backend).set(0.0);
    }
    for name in [
        IN_FLIGHT_APPENDS,
        WRITER_QUEUED_RECORDS,
        WRITER_PENDING_RECORDS,
        ANCHORS_ACTIVE,
        BUFFERED_RECORDS,
        SPOOL_BYTES,
        RECORDS_KEPT,
        LOG_LEAVES,
        INTEGRATION_LAG_RECORDS,
        INTEGRATION_LAG_SECONDS,
        INTEGRATOR_LEADER,
        LOG_HALTED,
        SUBSCRIPTIONS_OPEN,
    ] {
        metrics::gauge!(name).set(0.0);
    }
}

/// The append counters of one partition, one per [`labels::DURABILITIES`] value,
/// registered (at 0) on the current recorder: a partitioned ledger takes them at start.
pub fn partition_counters(partition: usize) -> Vec<Counter> {
    let p = partition.to_string();
    labels::DURABILITIES
        .iter()
        .map(|d| {
            let c = counter!(PARTITION_APPENDS_TOTAL, labels::PARTITION => p.clone(), labels::DURABILITY => *d);
            c.increment(0);
            c
        })
        .collect()
}

/// A partition's writer state, sampled by the partitioned ledger every second
/// (`on_postgres`: `None` on the memory backend, which exports no such series).
pub fn partition_writer(partition: usize, on_postgres: Option<bool>, buffered: u64) {
    let p = partition.to_string();
    if let Some(on) = on_postgres {
        metrics::gauge!(PARTITION_ON_POSTGRES, labels::PARTITION => p.clone()).set(if on {
            1.0
        } else {
            0.0
        });
    }
    metrics::gauge!(PARTITION_BUFFERED_RECORDS, labels::PARTITION => p).set(buffered as f64);
}

/// Registers help text and unit for every metric on the current recorder. [`install`] calls it;
/// it is idempotent.
pub fn describe() {
    describe_gauge!(
        SUBSCRIPTIONS_OPEN,
        Unit::Count,
        "Subscriptions open in this process (Ledger::subscribe, ledger tail)."
    );
    describe_counter!(
        SUBSCRIPTION_DELIVERED_TOTAL,
        Unit::Count,
        "Records handed to this process's subscribers (each subscription's delivery counts)."
    );
    describe_histogram!(
        SUBSCRIPTION_LAG_SECONDS,
        Unit::Seconds,
        "Per page handed to a subscriber: from its last record's ts to the hand-over (live lag when caught up)."
    );
    describe_counter!(
        SUBSCRIPTION_READ_RETRIES_TOTAL,
        Unit::Count,
        "Subscription reads retried because the log was unreachable."
    );
    describe_counter!(
        PARTITION_APPENDS_TOTAL,
        Unit::Count,
        "Records appended through a partitioned ledger, by partition and durability (committed, buffered, spooled, volatile, failed)."
    );
    describe_gauge!(
        PARTITION_ON_POSTGRES,
        "1 while the partition's writer writes to its PostgreSQL, 0 during its outage or drain."
    );
    describe_gauge!(
        PARTITION_BUFFERED_RECORDS,
        Unit::Count,
        "Records a partition acknowledged during its outage, not yet in its PostgreSQL."
    );
    describe_counter!(
        APPENDS_TOTAL,
        Unit::Count,
        "Appends completed, by outcome (ok, validation, conflict, overloaded, unavailable, error)."
    );
    describe_histogram!(
        APPEND_DURATION_SECONDS,
        Unit::Seconds,
        "End-to-end append latency as the host sees it, request to acknowledgement or rejection."
    );
    describe_gauge!(
        IN_FLIGHT_APPENDS,
        Unit::Count,
        "Appends accepted but not yet acknowledged or rejected."
    );
    describe_gauge!(
        CHAIN_MAILBOX_DEPTH,
        Unit::Count,
        "Mailbox depth over all chain actors: stat=sum is the total, stat=max the deepest."
    );
    describe_gauge!(
        WRITER_QUEUED_RECORDS,
        Unit::Count,
        "Records the PostgreSQL writer's group commit holds unanswered (queued or in a running batch)."
    );
    describe_gauge!(
        WRITER_PENDING_RECORDS,
        Unit::Count,
        "Records forwarded to PostgreSQL by the writer and not yet answered."
    );
    describe_gauge!(
        ANCHORS_ACTIVE,
        Unit::Count,
        "Chain actors currently alive (one per active anchor)."
    );
    describe_counter!(
        ANCHORS_PASSIVATED_TOTAL,
        Unit::Count,
        "Chain actors stopped after being idle."
    );
    describe_histogram!(
        DB_BATCH_SIZE,
        Unit::Count,
        "Records per committed database batch."
    );
    describe_histogram!(
        DB_WRITE_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one batch transaction, begin to commit."
    );
    describe_counter!(
        DB_ERRORS_TOTAL,
        Unit::Count,
        "Database errors, by class (connectivity, data)."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        Unit::Count,
        "Database pool connections, by state (in_use, idle, max)."
    );
    describe_gauge!(
        BACKEND_ACTIVE,
        Unit::Count,
        "1 for the backend currently taking writes (postgres or memory), 0 for the other."
    );
    describe_counter!(
        FAILOVERS_TOTAL,
        Unit::Count,
        "Switches from PostgreSQL to the in-memory fallback."
    );
    describe_gauge!(
        BUFFERED_RECORDS,
        Unit::Count,
        "Records acknowledged on the memory fallback and not yet written to PostgreSQL."
    );
    describe_counter!(
        DRAIN_RECORDS_TOTAL,
        Unit::Count,
        "Records drained from the memory fallback into PostgreSQL."
    );
    describe_histogram!(
        DRAIN_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one complete drain of the memory fallback into PostgreSQL (once per outage)."
    );
    describe_histogram!(
        DRAIN_BATCH_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one drain batch (up to batch_size buffered records written)."
    );
    describe_gauge!(
        SPOOL_BYTES,
        Unit::Bytes,
        "Bytes currently held in the on-disk spool."
    );
    describe_counter!(
        RECORDS_RECHAINED_TOTAL,
        Unit::Count,
        "Records acknowledged Buffered whose hash link the drain recomputed (re-chained)."
    );
    describe_counter!(
        RECORDS_RELINKED_TOTAL,
        Unit::Count,
        "Records linked again before acknowledgement because their anchor moved (re-linked)."
    );
    describe_counter!(
        CHAIN_BREAKS_TOTAL,
        Unit::Count,
        "Chain breaks found by verification."
    );
    describe_gauge!(
        LOG_LEAVES,
        Unit::Count,
        "Leaves in the transparency log as this process's integrator last wrote or loaded it."
    );
    describe_gauge!(
        INTEGRATION_LAG_RECORDS,
        Unit::Count,
        "Records committed but not yet in the transparency log (leading integrator; 0 elsewhere)."
    );
    describe_gauge!(
        INTEGRATION_LAG_SECONDS,
        Unit::Seconds,
        "Seconds since the oldest committed record not yet in the log (leading integrator)."
    );
    describe_counter!(
        CHECKPOINTS_TOTAL,
        Unit::Count,
        "Checkpoints written by this process's integrator."
    );
    describe_gauge!(
        INTEGRATOR_LEADER,
        Unit::Count,
        "1 while this process holds the integrator lease, 0 otherwise."
    );
    describe_gauge!(
        LOG_HALTED,
        Unit::Count,
        "1 while the integrator halts: the database's log does not extend what the key signed."
    );
    describe_gauge!(
        REPLICATION_SYNC_STANDBYS,
        Unit::Count,
        "Synchronous standbys streaming (replication: synchronous); 0: Committed appends wait."
    );
    describe_gauge!(
        REPLICATION_FLUSH_LAG_SECONDS,
        Unit::Seconds,
        "Largest flush_lag of the synchronous standbys (replication: synchronous)."
    );
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        Unit::Count,
        "HTTP requests ledger serve answered, by route (checkpoint, tile, entries, receipt, other) and status class."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time ledger serve took to answer a request, by route."
    );
    describe_gauge!(
        WITNESS_COSIGNED_SIZE,
        Unit::Count,
        "Largest checkpoint size whose cosignature by this witness is stored."
    );
    describe_gauge!(
        WITNESS_LAG_LEAVES,
        Unit::Count,
        "Leaves of the latest checkpoint this witness has not cosigned yet."
    );
    describe_gauge!(
        WITNESS_LAG_SECONDS,
        Unit::Seconds,
        "Seconds this witness has been behind the latest checkpoint (0 when caught up)."
    );
    describe_counter!(
        WITNESS_FAILURES_TOTAL,
        Unit::Count,
        "Failed submissions to this witness (error status, timeout, no connection, bad cosignature)."
    );
    describe_histogram!(
        WITNESS_COSIGN_SECONDS,
        Unit::Seconds,
        "From a checkpoint's signing to its cosignature by this witness being stored."
    );
    describe_gauge!(
        WITNESS_QUORUM_SIZE,
        Unit::Count,
        "Largest checkpoint size cosigned by at least witness_quorum witnesses."
    );
}

// ---------------------------------------------------------------------------------------
// Recording: the only places the ledger's code touches the `metrics` facade.
// ---------------------------------------------------------------------------------------
//
// `counter!(NAME, KEY => value)` with a non-literal label builds a `Vec` of labels, hashes the
// key and looks the series up in the recorder's registry on every call. The per-append series
// are therefore resolved once, by `install`, into `HANDLES`; without it (a recorder installed
// some other way, or a thread-local recorder in tests) the helpers fall back to the macros.
// Gauges are sampled about once a second (see `crate::observe`), so they use the macros.

/// Handles of the series recorded on every append, resolved against the global recorder.
struct Handles {
    /// `ledger_appends_total`, indexed like [`labels::OUTCOMES`].
    appends: Vec<Counter>,
    append_duration: Histogram,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

/// Resolves [`HANDLES`] against the global recorder. Only [`install`] calls it, after making
/// its recorder the global one.
fn cache_handles() {
    HANDLES.get_or_init(|| Handles {
        appends: labels::OUTCOMES
            .iter()
            .map(|outcome| counter!(APPENDS_TOTAL, labels::OUTCOME => *outcome))
            .collect(),
        append_duration: metrics::histogram!(APPEND_DURATION_SECONDS),
    });
}

// The chain actors' start, stop and passivation run on their worker threads, which carry a
// partition's label in a partitioned ledger: they go through the (thread-local aware)
// macros, not cached handles. They happen per actor, not per append.

pub(crate) fn anchor_started() {
    metrics::gauge!(ANCHORS_ACTIVE).increment(1.0);
}

pub(crate) fn anchor_stopped() {
    metrics::gauge!(ANCHORS_ACTIVE).decrement(1.0);
}

pub(crate) fn anchor_passivated() {
    counter!(ANCHORS_PASSIVATED_TOTAL).increment(1);
}

/// One append ended with `outcome` (a value of [`labels::OUTCOMES`]) after `seconds`.
pub(crate) fn append_finished(outcome: &'static str, seconds: f64) {
    let cached = HANDLES.get().and_then(|h| {
        let i = labels::OUTCOMES.iter().position(|o| *o == outcome)?;
        Some((h.appends.get(i)?, &h.append_duration))
    });
    match cached {
        Some((count, duration)) => {
            count.increment(1);
            duration.record(seconds);
        }
        None => {
            counter!(APPENDS_TOTAL, labels::OUTCOME => outcome).increment(1);
            metrics::histogram!(APPEND_DURATION_SECONDS).record(seconds);
        }
    }
}

pub(crate) fn chain_break_found() {
    counter!(CHAIN_BREAKS_TOTAL).increment(1);
}

/// Appends accepted and not yet answered (sampled).
pub(crate) fn in_flight_appends(appends: usize) {
    metrics::gauge!(IN_FLIGHT_APPENDS).set(appends as f64);
}

/// Chain-actor mailbox depth: the total over all chain actors and the deepest one (sampled).
/// Two series however many anchors there are.
pub(crate) fn chain_mailbox_depth(sum: usize, max: usize) {
    metrics::gauge!(CHAIN_MAILBOX_DEPTH, labels::STAT => labels::STAT_SUM).set(sum as f64);
    metrics::gauge!(CHAIN_MAILBOX_DEPTH, labels::STAT => labels::STAT_MAX).set(max as f64);
}

/// One database batch transaction took `seconds`, begin to commit (or to its failure).
pub(crate) fn db_write_finished(seconds: f64) {
    metrics::histogram!(DB_WRITE_DURATION_SECONDS).record(seconds);
}

/// A database batch of `records` records committed.
pub(crate) fn db_batch_committed(records: usize) {
    metrics::histogram!(DB_BATCH_SIZE).record(records as f64);
}

/// A database statement failed; `connectivity` tells the class.
pub(crate) fn db_error(connectivity: bool) {
    let class = if connectivity {
        labels::CLASS_CONNECTIVITY
    } else {
        labels::CLASS_DATA
    };
    metrics::counter!(DB_ERRORS_TOTAL, labels::CLASS => class).increment(1);
}

/// The database pool has `in_use` connections checked out and `idle` open and waiting, of
/// at most `max`.
pub(crate) fn db_pool_sampled(in_use: usize, idle: usize, max: u32) {
    metrics::gauge!(DB_POOL_CONNECTIONS, labels::STATE => labels::STATE_IN_USE).set(in_use as f64);
    metrics::gauge!(DB_POOL_CONNECTIONS, labels::STATE => labels::STATE_IDLE).set(idle as f64);
    metrics::gauge!(DB_POOL_CONNECTIONS, labels::STATE => labels::STATE_MAX).set(f64::from(max));
}

/// The PostgreSQL writer's group commit holds `records` records not yet answered (see
/// [`WRITER_QUEUED_RECORDS`]); the writer calls it whenever its queue changes.
pub(crate) fn writer_queued(records: usize) {
    metrics::gauge!(WRITER_QUEUED_RECORDS).set(records as f64);
}

/// The active backend: `postgres` when true, the memory fallback when false.
pub(crate) fn backend_active(postgres: bool) {
    let (on, off) = if postgres {
        (labels::BACKEND_POSTGRES, labels::BACKEND_MEMORY)
    } else {
        (labels::BACKEND_MEMORY, labels::BACKEND_POSTGRES)
    };
    metrics::gauge!(BACKEND_ACTIVE, labels::BACKEND => on).set(1.0);
    metrics::gauge!(BACKEND_ACTIVE, labels::BACKEND => off).set(0.0);
}

/// The writer swapped to the memory fallback.
pub(crate) fn failover() {
    metrics::counter!(FAILOVERS_TOTAL).increment(1);
}

/// Records acknowledged on the fallback and not yet in PostgreSQL.
pub(crate) fn buffered(records: usize) {
    metrics::gauge!(BUFFERED_RECORDS).set(records as f64);
}

/// A drain batch settled `records` records in `seconds`.
pub(crate) fn drained(records: usize, seconds: f64) {
    metrics::counter!(DRAIN_RECORDS_TOTAL).increment(records as u64);
    metrics::histogram!(DRAIN_BATCH_DURATION_SECONDS).record(seconds);
}

/// A whole drain (PostgreSQL back to buffer empty) took `seconds`.
pub(crate) fn drain_finished(seconds: f64) {
    metrics::histogram!(DRAIN_DURATION_SECONDS).record(seconds);
}

/// The spool file holds `bytes` bytes.
pub(crate) fn spool_bytes(bytes: u64) {
    metrics::gauge!(SPOOL_BYTES).set(bytes as f64);
}

/// Records kept unwritten (see [`RECORDS_KEPT`]).
pub(crate) fn records_kept(records: u64) {
    metrics::gauge!(RECORDS_KEPT).set(records as f64);
}

/// A record acknowledged `Buffered` was written under a new hash (re-chained by the drain).
pub(crate) fn rechained() {
    metrics::counter!(RECORDS_RECHAINED_TOTAL).increment(1);
}

/// A record not yet acknowledged was linked again onto its anchor's new head (re-linked).
pub(crate) fn relinked() {
    metrics::counter!(RECORDS_RELINKED_TOTAL).increment(1);
}

/// A subscription's reading task started (`open`) or ended.
pub(crate) fn subscription_open(open: bool) {
    let gauge = metrics::gauge!(SUBSCRIPTIONS_OPEN);
    if open {
        gauge.increment(1.0);
    } else {
        gauge.decrement(1.0);
    }
}

/// A subscription handed over a page of `records` records whose last was sealed `lag`
/// seconds ago.
pub(crate) fn subscription_delivered(records: usize, lag: f64) {
    metrics::counter!(SUBSCRIPTION_DELIVERED_TOTAL).increment(records as u64);
    metrics::histogram!(SUBSCRIPTION_LAG_SECONDS).record(lag);
}

/// A subscription read found the log unreachable and will retry.
pub(crate) fn subscription_read_retried() {
    metrics::counter!(SUBSCRIPTION_READ_RETRIES_TOTAL).increment(1);
}

/// Whether the integrator halts on a log that does not extend what the key signed.
/// Publishes what a replication read found (`replication: synchronous` only).
pub(crate) fn replication(state: &crate::store::ReplicationState) {
    if let Some(n) = state.sync_standbys {
        metrics::gauge!(REPLICATION_SYNC_STANDBYS).set(f64::from(n));
    }
    metrics::gauge!(REPLICATION_FLUSH_LAG_SECONDS)
        .set(state.flush_lag.map_or(0.0, |d| d.as_secs_f64()));
}

pub(crate) fn log_halted(halted: bool) {
    metrics::gauge!(LOG_HALTED).set(if halted { 1.0 } else { 0.0 });
}

/// The integrator's state: whether it leads and the log's size as it knows it.
pub(crate) fn integrator_state(leader: bool, leaves: u64) {
    metrics::gauge!(INTEGRATOR_LEADER).set(if leader { 1.0 } else { 0.0 });
    metrics::gauge!(LOG_LEAVES).set(leaves as f64);
}

/// The integration backlog: records not yet in the log and the age of the oldest.
pub(crate) fn integration_lag(records: u64, seconds: f64) {
    metrics::gauge!(INTEGRATION_LAG_RECORDS).set(records as f64);
    metrics::gauge!(INTEGRATION_LAG_SECONDS).set(seconds);
}

/// The witnesses of this process's publisher: their series start at 0.
pub(crate) fn witnesses_configured(names: &[String]) {
    for name in names {
        let w = name.clone();
        metrics::gauge!(WITNESS_COSIGNED_SIZE, labels::WITNESS => w.clone()).set(0.0);
        metrics::gauge!(WITNESS_LAG_LEAVES, labels::WITNESS => w.clone()).set(0.0);
        metrics::gauge!(WITNESS_LAG_SECONDS, labels::WITNESS => w.clone()).set(0.0);
        metrics::counter!(WITNESS_FAILURES_TOTAL, labels::WITNESS => w.clone()).increment(0);
        drop(metrics::histogram!(WITNESS_COSIGN_SECONDS, labels::WITNESS => w));
    }
    metrics::gauge!(WITNESS_QUORUM_SIZE).set(0.0);
}

/// How far a witness is behind the latest checkpoint.
pub(crate) fn witness_lag(witness: &str, leaves: u64, seconds: f64) {
    let w = witness.to_owned();
    metrics::gauge!(WITNESS_LAG_LEAVES, labels::WITNESS => w.clone()).set(leaves as f64);
    metrics::gauge!(WITNESS_LAG_SECONDS, labels::WITNESS => w).set(seconds);
}

/// A submission to a witness failed.
pub(crate) fn witness_failure(witness: &str) {
    metrics::counter!(WITNESS_FAILURES_TOTAL, labels::WITNESS => witness.to_owned()).increment(1);
}

/// A witness's cosignature of a checkpoint of `size` leaves was stored `delay` seconds after
/// the checkpoint was signed; `quorum_size` is the largest size cosigned by a quorum.
pub(crate) fn witness_cosigned(witness: &str, size: u64, delay: f64, quorum_size: u64) {
    let w = witness.to_owned();
    metrics::gauge!(WITNESS_COSIGNED_SIZE, labels::WITNESS => w.clone()).set(size as f64);
    metrics::gauge!(WITNESS_LAG_LEAVES, labels::WITNESS => w.clone()).set(0.0);
    metrics::gauge!(WITNESS_LAG_SECONDS, labels::WITNESS => w.clone()).set(0.0);
    metrics::histogram!(WITNESS_COSIGN_SECONDS, labels::WITNESS => w).record(delay);
    metrics::gauge!(WITNESS_QUORUM_SIZE).set(quorum_size as f64);
}

/// The integrator wrote a checkpoint.
pub(crate) fn checkpoint_written() {
    metrics::counter!(CHECKPOINTS_TOTAL).increment(1);
}

/// Records the writer holds waiting for PostgreSQL's answer.
pub(crate) fn writer_depth(records: usize) {
    metrics::gauge!(WRITER_PENDING_RECORDS).set(records as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{gauge, histogram};

    /// Every name is unique, `ledger_`-prefixed snake case without a series suffix, and every
    /// histogram is in `ALL` with increasing buckets.
    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for name in ALL {
            assert!(seen.insert(*name), "duplicate metric name {name}");
            assert!(
                name.starts_with("ledger_"),
                "{name} lacks the ledger_ prefix"
            );
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name} is not snake_case"
            );
            for suffix in ["_bucket", "_sum", "_count"] {
                assert!(!name.ends_with(suffix), "{name} ends with a series suffix");
            }
        }
        for (name, buckets) in HISTOGRAMS {
            assert!(ALL.contains(name), "histogram {name} missing from ALL");
            assert!(
                buckets.windows(2).all(|w| w[0] < w[1]),
                "{name} buckets not increasing"
            );
        }
        assert_eq!(ALL.len(), 46);
    }

    /// Every gauge is exposed at 0 as soon as the exporter is installed, before any ledger
    /// event (dashboards showed "No data" and absent-series alerts misfired until the
    /// first outage).
    #[test]
    fn every_gauge_exists_from_the_start_at_zero() {
        let recorder = builder()
            .expect("valid exporter configuration")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            register_gauges();
        });
        let text = handle.render();
        let gauges: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" gauge"))
            .collect();
        for name in [
            IN_FLIGHT_APPENDS,
            CHAIN_MAILBOX_DEPTH,
            WRITER_QUEUED_RECORDS,
            WRITER_PENDING_RECORDS,
            ANCHORS_ACTIVE,
            DB_POOL_CONNECTIONS,
            BACKEND_ACTIVE,
            BUFFERED_RECORDS,
            SPOOL_BYTES,
            RECORDS_KEPT,
            LOG_LEAVES,
            INTEGRATION_LAG_RECORDS,
            INTEGRATION_LAG_SECONDS,
            INTEGRATOR_LEADER,
            LOG_HALTED,
            SUBSCRIPTIONS_OPEN,
        ] {
            assert!(gauges.contains(&name), "{name} missing:\n{text}");
            let values: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                .collect();
            assert!(!values.is_empty(), "{name} has no series:\n{text}");
            assert!(values.iter().all(|l| l.ends_with(" 0")), "{values:?}");
        }
        // And no gauge of ALL is left out.
        let all_gauges = ALL
            .iter()
            .filter(|n| text.contains(&format!("# TYPE {n} gauge")));
        assert_eq!(all_gauges.count(), 16);
    }

    /// Through a partition's recorder every series carries `partition="<index>"`, so two
    /// partitions' writers keep separate series of one metric; describing passes through.
    #[test]
    fn a_partition_recorder_labels_every_series() {
        let recorder = Arc::new(
            builder()
                .expect("valid exporter configuration")
                .build_recorder(),
        );
        let handle = recorder.handle();
        let target: Arc<dyn Recorder + Send + Sync> = recorder.clone();
        let (p0, p3) = (
            PartitionRecorder::new(Arc::clone(&target), 0),
            PartitionRecorder::new(target, 3),
        );
        metrics::with_local_recorder(&p0, || {
            describe();
            buffered(2);
            backend_active(true);
        });
        metrics::with_local_recorder(&p3, || {
            buffered(7);
            failover();
            backend_active(false);
            drain_finished(1.5);
        });
        let text = handle.render();
        for line in [
            "ledger_buffered_records{partition=\"0\"} 2",
            "ledger_buffered_records{partition=\"3\"} 7",
            "ledger_failovers_total{partition=\"3\"} 1",
            "ledger_backend_active{backend=\"postgres\",partition=\"0\"} 1",
            "ledger_backend_active{backend=\"memory\",partition=\"3\"} 1",
            "ledger_backend_active{backend=\"postgres\",partition=\"3\"} 0",
            "ledger_drain_duration_seconds_count{partition=\"3\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(text.contains("# HELP ledger_buffered_records "), "{text}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("ledger_buffered_records ")),
            "an unlabelled series:\n{text}"
        );
    }

    /// Every histogram renders its buckets, at 0, once registered: before any sample (a
    /// healthy ledger that never drained still has the drain's series).
    #[test]
    fn every_histogram_exists_from_the_start_at_zero() {
        let recorder = builder()
            .expect("valid exporter configuration")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            register_histograms();
        });
        let text = handle.render();
        for (name, buckets) in HISTOGRAMS {
            if *name == HTTP_REQUEST_DURATION_SECONDS {
                // Registered by `ledger serve` alone (`register_http`, its own test).
                assert!(!text.contains(name), "{name} registered outside serve");
                continue;
            }
            assert!(
                text.contains(&format!("# TYPE {name} histogram")),
                "{name} missing:\n{text}"
            );
            let zeros = text
                .lines()
                .filter(|l| l.starts_with(&format!("{name}_bucket{{")) && l.ends_with(" 0"))
                .count();
            assert_eq!(zeros, buckets.len() + 1, "{name}:\n{text}");
            assert!(text.contains(&format!("{name}_count 0")), "{name}:\n{text}");
        }
    }

    /// `register_http` exposes every route × status class at 0 and the duration histogram
    /// per route; a request counts in its classes.
    #[test]
    fn http_series_exist_from_the_start_and_count() {
        let recorder = builder()
            .expect("valid exporter configuration")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            register_http();
            http_request(labels::ROUTE_TILE, 200, 0.002);
            http_request(labels::ROUTE_OTHER, 404, 0.0001);
            http_request(labels::ROUTE_RECEIPT, 503, 0.1);
        });
        let text = handle.render();
        let counters = text
            .lines()
            .filter(|l| l.starts_with(&format!("{HTTP_REQUESTS_TOTAL}{{")))
            .count();
        assert_eq!(
            counters,
            labels::ROUTES.len() * labels::STATUSES.len(),
            "{text}"
        );
        assert!(text.contains(r#"ledger_http_requests_total{route="tile",status="2xx"} 1"#));
        assert!(text.contains(r#"ledger_http_requests_total{route="other",status="4xx"} 1"#));
        assert!(text.contains(r#"ledger_http_requests_total{route="receipt",status="5xx"} 1"#));
        assert!(text.contains(r#"ledger_http_requests_total{route="checkpoint",status="2xx"} 0"#));
        for route in labels::ROUTES {
            assert!(
                text.contains(&format!(
                    "{HTTP_REQUEST_DURATION_SECONDS}_count{{route=\"{route}\"}}"
                )),
                "{route}:\n{text}"
            );
        }
        assert!(text.contains(
            r#"ledger_http_request_duration_seconds_bucket{route="tile",le="0.0025"} 1"#
        ));
        assert_eq!(labels::status_class(101), "2xx");
        assert_eq!(labels::status_class(304), "3xx");
        assert_eq!(labels::status_class(405), "4xx");
        assert_eq!(labels::status_class(999), "5xx");
    }

    /// Histograms render as `_bucket` series with help text, and counters are pre-registered
    /// at 0.
    #[test]
    fn histograms_render_as_buckets_with_help() {
        let recorder = builder()
            .expect("valid exporter configuration")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            register_counters();
            histogram!(APPEND_DURATION_SECONDS).record(0.003);
            histogram!(DB_WRITE_DURATION_SECONDS).record(0.02);
            histogram!(DB_BATCH_SIZE).record(42.0);
            histogram!(DRAIN_DURATION_SECONDS).record(3.0);
            histogram!(DRAIN_BATCH_DURATION_SECONDS).record(0.5);
            histogram!(HTTP_REQUEST_DURATION_SECONDS, labels::ROUTE => labels::ROUTE_TILE)
                .record(0.001);
            histogram!(WITNESS_COSIGN_SECONDS, labels::WITNESS => "w.example/w").record(0.7);
            subscription_delivered(3, 0.004);
            gauge!(BACKEND_ACTIVE, labels::BACKEND => labels::BACKEND_MEMORY).set(1.0);
        });
        let text = handle.render();
        for (name, buckets) in HISTOGRAMS {
            assert!(
                text.contains(&format!("# TYPE {name} histogram")),
                "{name} is not a histogram:\n{text}"
            );
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no help"
            );
            let rendered = text
                .lines()
                .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
                .count();
            // One line per bound plus +Inf.
            assert_eq!(rendered, buckets.len() + 1, "{name} buckets:\n{text}");
        }
        assert!(text.contains("ledger_append_duration_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("ledger_subscription_lag_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("ledger_subscription_delivered_total 3"));
        assert!(text.contains("ledger_subscription_read_retries_total 0"));
        assert!(text.contains("ledger_appends_total{outcome=\"unavailable\"} 0"));
        assert!(text.contains("ledger_db_errors_total{class=\"data\"} 0"));
        assert!(text.contains("ledger_chain_breaks_total 0"));
        assert!(text.contains("ledger_checkpoints_total 0"));
        assert!(text.contains("ledger_backend_active{backend=\"memory\"} 1"));
        assert!(
            !text.contains("quantile="),
            "a histogram rendered as a summary"
        );
    }
}
