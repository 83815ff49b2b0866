//! Group commit: how the [`Writer`] writes records to PostgreSQL in [`Mode::Primary`].
//!
//! Records from every chain actor are queued in arrival order and written with one
//! [`crate::pg::insert_records`] per batch (a single statement, so one transaction) on the
//! writer's own writer pool; each batch's outcomes are settled together when it ends.
//!
//! # Batching
//! A batch is cut at once when no batch is running, else when `batch_size` records are
//! waiting, when the oldest waiting record has waited `batch_linger`, or at once for a
//! [`crate::driver::handoff::Flush`]. While up to
//! [`MAX_CONCURRENT_BATCHES`] batches run, new records keep arriving and form the next batch,
//! so under load batches grow with the database's latency. Each batch is one task on the
//! writer's Arbiter (one per batch, not per record) that reports back in one
//! `BatchDone` message; the writer never blocks its thread.
//!
//! # Invariants (the chain actor relies on them, see the `chain` module)
//! - Records are written in arrival order, so one anchor's records reach the database in
//!   chain order. With two batches in flight, a record whose predecessor is still in a running
//!   batch waits (with every later record of its anchor) for that batch to settle, so a record
//!   is only ever written with or after its predecessor.
//! - A refused record poisons its hash: a later record whose `prev_hash` is poisoned is
//!   refused too ([`LedgerError::Aborted`]) and poisons its own hash, without a round trip:
//!   the database would refuse it anyway (`ledger_records_prev_fk`), so the poison only saves
//!   the statement; correctness does not depend on it. A record of the anchor whose
//!   `prev_hash` is not poisoned (the chain actor has reloaded its head) clears the anchor's
//!   poison; idle entries expire after [`POISON_TTL`].
//! - A data error in a multi-row batch does not fail the innocent records: the anchor that
//!   moved is taken out, or the batch's records are retried one statement each, in order,
//!   applying the poison rule. A connectivity error leaves the unwritten records pending:
//!   the writer fails over and moves them, in order, to the outage buffer.
//!
//! # Metrics
//! `ledger_db_batch_size` (records per committed transaction, 1 for the one-by-one retries),
//! `ledger_db_write_duration_seconds` (each batch statement, failed ones included),
//! `ledger_db_errors_total` (each failed statement, except the multi-row statement of a batch
//! refused for a data error: its records are retried and each refused one counts),
//! `ledger_db_pool_connections` (sampled every second) and `ledger_writer_queued_records`
//! (records queued or in running batches, set as the queue changes).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ledger_entities::{LedgerRecord, RecordHash};
use sea_orm::sqlx::PgPool;
use sea_orm::sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use super::{Mode, Writer};
use crate::error::LedgerError;
use crate::pg::store::{classify, retry_contention};

/// Most batch transactions in flight at once. Two let the next batch be written while the
/// previous one commits (its WAL flush); records that depend on a running batch wait for it.
pub const MAX_CONCURRENT_BATCHES: usize = 2;

/// How long an anchor's poisoned hashes are kept without being touched. Successors of a
/// refused record are sent before its chain actor learns of the refusal, so they arrive
/// within moments of it; a minute is far beyond that.
pub const POISON_TTL: Duration = Duration::from_secs(60);

/// A unit waiting for (or in) a batch: the writer's number for it, when it arrived, its
/// record (the first of an atomic batch) and the rest of that batch (empty for one record).
/// A unit is never split: it goes into one batch statement whole.
struct Queued {
    seq: u64,
    at: Instant,
    record: Arc<LedgerRecord>,
    rest: Vec<Arc<LedgerRecord>>,
}

impl Queued {
    fn len(&self) -> usize {
        1 + self.rest.len()
    }

    fn records(&self) -> impl Iterator<Item = &Arc<LedgerRecord>> {
        std::iter::once(&self.record).chain(self.rest.iter())
    }
}

/// The refused hashes of one anchor.
struct Poison {
    hashes: HashSet<RecordHash>,
    touched: Instant,
}

/// A batch being written.
struct Running {
    records: Vec<Queued>,
    /// Records in `records` (units may hold several).
    count: usize,
    task: actix_rt::task::JoinHandle<()>,
}

/// How a batch ended.
pub(super) enum BatchOutcome {
    /// Every record committed.
    Committed,
    /// Units were settled one by one: `results[i]` is unit `i`'s outcome (a unit: one
    /// record, or an atomic batch, all or none); from unit `unwritten.0` on (if any)
    /// nothing was written because the database became unreachable (`unwritten.1`) — or,
    /// when `unwritten.2`, only slow ([`crate::pg::store::only_slow`]: the pool or the
    /// statement timed out, too many connections), so the records are written again rather
    /// than failed over.
    Settled {
        results: Vec<Result<(), LedgerError>>,
        unwritten: Option<(usize, LedgerError, bool)>,
    },
}

/// A batch finished (internal: sent by the batch's task to the writer).
pub(super) struct BatchDone {
    id: u64,
    outcome: BatchOutcome,
}

impl Message for BatchDone {
    type Result = ();
}

/// Batch sizes for the summary logged at each flush, in an HDR histogram (sizes 1 to
/// 65,536 at 3 significant digits: exact up to 2,048).
struct BatchStats {
    records: u64,
    sizes: hdrhistogram::Histogram<u64>,
}

impl Default for BatchStats {
    fn default() -> Self {
        Self {
            records: 0,
            // Valid bounds (1 ≤ low, 2·low ≤ high, sigfig ≤ 5): construction cannot fail.
            sizes: hdrhistogram::Histogram::new_with_bounds(1, 65_536, 3)
                .expect("constant, valid histogram bounds"),
        }
    }
}

impl BatchStats {
    fn committed(&mut self, records: usize) {
        self.records += records as u64;
        self.sizes.saturating_record(records.max(1) as u64);
    }

    fn batches(&self) -> u64 {
        self.sizes.len()
    }

    /// The batch size at quantile `q` (0..=1), by batches; 0 before any batch.
    fn quantile(&self, q: f64) -> u64 {
        if self.sizes.is_empty() {
            return 0;
        }
        self.sizes.value_at_quantile(q)
    }
}

/// The group-commit state of [`Mode::Primary`]: the queue, the running batches and the
/// poison. Every record here is also in the writer's `pending` (which holds its reply).
pub(super) struct GroupCommit {
    /// The writer pool ([`MAX_CONCURRENT_BATCHES`] connections, opened on demand), made on
    /// the writer's Arbiter by [`GroupCommit::open`]; `None` outside `Primary`.
    pool: Option<PgPool>,
    batch_size: usize,
    linger: Duration,
    queue: VecDeque<Queued>,
    running: HashMap<u64, Running>,
    running_records: usize,
    next_batch: u64,
    /// Records in running batches, by hash.
    in_flight: HashSet<RecordHash>,
    /// Every waiting record depends on a running batch; wait for one to settle.
    blocked: bool,
    linger_timer: Option<SpawnHandle>,
    poison: HashMap<Uuid, Poison>,
    stats: BatchStats,
    /// How long a statement aborted by a deadlock or serialization failure is retried.
    retry_for: Duration,
    /// What a commit must reach ([`crate::pg::insert_records`]).
    replication: crate::config::Replication,
    /// A batch failed on slowness only and its records were queued again
    /// ([`GroupCommit::take_slow`]).
    slow: bool,
}

/// Pause before records a slow server did not take are written again (so that a server
/// refusing connections for load is not hammered).
const SLOW_RETRY_PAUSE: Duration = Duration::from_millis(100);

impl GroupCommit {
    pub(super) fn new(config: &crate::config::LedgerConfig) -> Self {
        Self {
            pool: None,
            batch_size: config.batch_size.max(1),
            linger: config.batch_linger,
            queue: VecDeque::new(),
            running: HashMap::new(),
            running_records: 0,
            next_batch: 0,
            in_flight: HashSet::new(),
            blocked: false,
            linger_timer: None,
            poison: HashMap::new(),
            stats: BatchStats::default(),
            retry_for: config.timeout,
            replication: config.replication,
            slow: false,
        }
    }

    /// A fresh writer pool of [`MAX_CONCURRENT_BATCHES`] connections, opened on demand (so an
    /// unreachable database shows up as failed batches, not here). Called on the writer's
    /// Arbiter: the connections' sockets then belong to that thread's runtime.
    pub(super) fn open(
        &mut self,
        options: sea_orm::sqlx::postgres::PgConnectOptions,
        timeout: Duration,
    ) {
        self.pool = Some(
            PgPoolOptions::new()
                .max_connections(MAX_CONCURRENT_BATCHES as u32)
                .min_connections(0)
                .acquire_timeout(timeout)
                .connect_lazy_with(options),
        );
    }

    /// Forgets everything (a failover: the writer has moved the records to the buffer).
    /// Running writes are abandoned; the drain finds whatever they committed.
    pub(super) fn reset(&mut self, ctx: &mut Context<Writer>) {
        for (_, run) in self.running.drain() {
            run.task.abort();
        }
        if let Some(timer) = self.linger_timer.take() {
            ctx.cancel_future(timer);
        }
        self.pool = None;
        self.queue.clear();
        self.running_records = 0;
        self.in_flight.clear();
        self.blocked = false;
        self.poison.clear();
    }

    /// Records queued or in running batches.
    pub(super) fn depth(&self) -> usize {
        self.queue.len() + self.running_records
    }

    /// The writer pool, if open (for the pool gauge).
    pub(super) fn pool(&self) -> Option<&PgPool> {
        self.pool.as_ref()
    }

    /// Expires idle poison.
    pub(super) fn sweep(&mut self) {
        self.poison.retain(|_, p| p.touched.elapsed() < POISON_TTL);
    }

    /// Logs the batch-size summary at `info`.
    pub(super) fn log_stats(&self) {
        let s = &self.stats;
        tracing::info!(
            batches = s.batches(),
            records = s.records,
            mean = s.sizes.mean(),
            p50 = s.quantile(0.5),
            p90 = s.quantile(0.9),
            p99 = s.quantile(0.99),
            largest = s.sizes.max(),
            "persistence: batches committed whole so far (sizes in records)"
        );
    }

    fn poison_record(&mut self, record: &LedgerRecord) {
        let entry = self
            .poison
            .entry(record.anchor_id)
            .or_insert_with(|| Poison {
                hashes: HashSet::new(),
                touched: Instant::now(),
            });
        entry.hashes.insert(record.hash);
        entry.touched = Instant::now();
    }

    /// Takes the next batch from the queue in arrival order: refuses records whose
    /// predecessor is poisoned (returned with their refusal), and leaves in the queue (in
    /// order) records whose predecessor is in a running batch or was itself left.
    fn take_batch(&mut self, refused: &mut Vec<(u64, LedgerError)>) -> Vec<Queued> {
        let mut batch = Vec::with_capacity(self.queue.len().min(self.batch_size));
        let mut batch_records = 0;
        let mut left: VecDeque<Queued> = VecDeque::new();
        let mut left_hashes: HashSet<RecordHash> = HashSet::new();
        // Counted in records; a unit goes whole, so a batch may pass `batch_size` by one unit.
        while batch_records < self.batch_size {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            let record = &q.record;
            let poisoned = if self.poison.is_empty() {
                None
            } else {
                self.poison.get_mut(&record.anchor_id)
            };
            if let Some(poison) = poisoned {
                match record.prev_hash {
                    Some(prev) if poison.hashes.contains(&prev) => {
                        poison.hashes.extend(q.records().map(|r| r.hash));
                        poison.touched = Instant::now();
                        let anchor_id = record.anchor_id;
                        refused.push((q.seq, LedgerError::Aborted { anchor_id }));
                        continue;
                    }
                    _ => {
                        // The chain actor has rebased on a stored head: the poison is spent.
                        self.poison.remove(&record.anchor_id);
                    }
                }
            }
            let waits = record
                .prev_hash
                .is_some_and(|prev| self.in_flight.contains(&prev) || left_hashes.contains(&prev));
            if waits {
                left_hashes.extend(q.records().map(|r| r.hash));
                left.push_back(q);
            } else {
                batch_records += q.len();
                batch.push(q);
            }
        }
        if !left.is_empty() {
            left.extend(self.queue.drain(..));
            self.queue = left;
        }
        batch
    }

    /// Takes a settled batch's records and turns its outcome into one outcome per record (by
    /// the writer's number). `None` if the batch is not running (abandoned by a failover).
    fn settle(
        &mut self,
        id: u64,
        outcome: BatchOutcome,
    ) -> Option<Vec<(u64, Result<(), LedgerError>)>> {
        let run = self.running.remove(&id)?;
        self.running_records -= run.count;
        for r in run.records.iter().flat_map(Queued::records) {
            self.in_flight.remove(&r.hash);
        }
        self.blocked = false;
        let mut answers = Vec::with_capacity(run.records.len());
        match outcome {
            BatchOutcome::Committed => {
                self.stats.committed(run.count);
                answers.extend(run.records.into_iter().map(|q| (q.seq, Ok(()))));
            }
            BatchOutcome::Settled { results, unwritten } => {
                let mut records = run.records.into_iter();
                // `results` first: `zip` pulls from its left side first, and a record pulled
                // from `records` without a result would be lost.
                for (result, q) in results.into_iter().zip(records.by_ref()) {
                    if result.is_err() {
                        for r in q.records() {
                            self.poison_record(r);
                        }
                    }
                    answers.push((q.seq, result));
                }
                if let Some((_, err, slow)) = unwritten {
                    if slow {
                        // The server is slow, not known gone: written again (in arrival
                        // order, before anything queued after them); the writer looks for
                        // evidence of an outage meanwhile (`Writer::check_liveness`).
                        self.requeue(records.collect());
                        self.slow = true;
                    } else {
                        // Not written: the writer fails over on the first of these and
                        // moves every pending record (these included) to the outage buffer.
                        answers.extend(records.map(|q| (q.seq, Err(err.clone()))));
                    }
                }
            }
        }
        Some(answers)
    }

    /// Puts unwritten units back into the queue in arrival order (the queue is kept sorted
    /// by arrival number, so one anchor's records still go in chain order).
    fn requeue(&mut self, units: Vec<Queued>) {
        if units.is_empty() {
            return;
        }
        let mut merged = VecDeque::with_capacity(self.queue.len() + units.len());
        let mut back = units.into_iter().peekable();
        for q in self.queue.drain(..) {
            while back.peek().is_some_and(|b| b.seq < q.seq) {
                merged.extend(back.next());
            }
            merged.push_back(q);
        }
        merged.extend(back);
        self.queue = merged;
    }

    /// True (once) when a batch failed on slowness only since the last call.
    pub(super) fn take_slow(&mut self) -> bool {
        std::mem::take(&mut self.slow)
    }
}

impl Writer {
    /// Queues a pending record for the next batch and starts a batch if one is due.
    pub(super) fn enqueue(
        &mut self,
        seq: u64,
        record: Arc<LedgerRecord>,
        rest: Vec<Arc<LedgerRecord>>,
        ctx: &mut Context<Self>,
    ) {
        let c = &mut self.commit;
        c.queue.push_back(Queued {
            seq,
            at: Instant::now(),
            record,
            rest,
        });
        let room = c.running.len() < MAX_CONCURRENT_BATCHES && !c.blocked;
        // The same triggers as `dispatch`'s `due` (a linger timer still armed from an earlier
        // wait must not hold back a record that finds no batch running).
        if room
            && (c.running.is_empty() || c.queue.len() >= c.batch_size || c.linger_timer.is_none())
        {
            self.dispatch(ctx);
        }
    }

    /// Starts batches while there is room: a full batch, an expired linger or a pending
    /// flush; otherwise arms the linger timer. Then answers the flushes that are due.
    pub(super) fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let mut refused = Vec::new();
        while self.mode == Mode::Primary
            && self.commit.running.len() < MAX_CONCURRENT_BATCHES
            && !self.commit.blocked
        {
            let c = &mut self.commit;
            let Some(front) = c.queue.front() else {
                break;
            };
            let waited = front.at.elapsed();
            // With no batch running nothing is gained by waiting: the batch goes at once,
            // and records that arrive while it runs form the next one (group commit by
            // the database's latency). The linger only fills the second slot.
            let due = c.running.is_empty()
                || c.queue.len() >= c.batch_size
                || waited >= c.linger
                || !self.flushes.is_empty();
            if !due {
                if c.linger_timer.is_none() {
                    let handle = ctx.run_later(c.linger - waited, |act, ctx| {
                        act.commit.linger_timer = None;
                        act.dispatch(ctx);
                    });
                    c.linger_timer = Some(handle);
                }
                break;
            }
            let batch = c.take_batch(&mut refused);
            if batch.is_empty() {
                // Everything left waits for a running batch (or was refused just now).
                c.blocked = !c.queue.is_empty();
                continue;
            }
            self.spawn_batch(batch, ctx);
        }
        let mut acks = crate::driver::handoff::AckBatch::default();
        for (seq, err) in refused {
            self.on_primary_answer(seq, Err(err), &mut acks, ctx);
        }
        acks.finish();
        crate::metrics::writer_queued(self.commit.depth());
        self.answer_flushes();
    }

    fn spawn_batch(&mut self, batch: Vec<Queued>, ctx: &mut Context<Self>) {
        let c = &mut self.commit;
        let Some(pool) = c.pool.clone() else {
            // `Primary` always has a pool (opened by `start_primary`); put the batch back.
            tracing::error!("group commit: no writer pool in primary mode");
            for q in batch.into_iter().rev() {
                c.queue.push_front(q);
            }
            c.blocked = true;
            return;
        };
        let id = c.next_batch;
        c.next_batch += 1;
        let units: Vec<Vec<Arc<LedgerRecord>>> = batch
            .iter()
            .map(|q| q.records().cloned().collect())
            .collect();
        let count = units.iter().map(Vec::len).sum();
        c.in_flight.extend(units.iter().flatten().map(|r| r.hash));
        c.running_records += count;
        let retry_for = c.retry_for;
        let replication = c.replication;
        let me = ctx.address();
        // A task of its own, on this Arbiter: the round trips make progress while this busy
        // actor handles its mailbox; one message back per batch.
        let task = actix_rt::spawn(async move {
            let outcome = write_batch(pool, units, retry_for, replication).await;
            me.do_send(BatchDone { id, outcome });
        });
        c.running.insert(
            id,
            Running {
                records: batch,
                count,
                task,
            },
        );
    }
}

/// Settles a batch: answers its records (or fails over on a connectivity error) and starts
/// what can start next.
impl Handler<BatchDone> for Writer {
    type Result = ();

    fn handle(&mut self, msg: BatchDone, ctx: &mut Context<Self>) {
        let Some(answers) = self.commit.settle(msg.id, msg.outcome) else {
            // Abandoned by a failover: its records are in the buffer.
            return;
        };
        if self.commit.take_slow() {
            // Slow, not known gone: look for evidence of an outage, and write the records
            // again after a pause.
            if !self.liveness_running {
                self.check_liveness(ctx);
            }
            self.commit.blocked = true;
            ctx.run_later(SLOW_RETRY_PAUSE, |act, ctx| {
                act.commit.blocked = false;
                act.dispatch(ctx);
            });
        }
        // One `Acks` message per chain actor for the whole batch.
        let mut acks = crate::driver::handoff::AckBatch::default();
        for (seq, result) in answers {
            self.on_primary_answer(
                seq,
                result.map(|()| crate::driver::handoff::Durability::Committed),
                &mut acks,
                ctx,
            );
        }
        acks.finish();
        self.dispatch(ctx);
        crate::metrics::writer_depth(self.pending.len());
    }
}

// ---------------------------------------------------------------------------------------
// Database writes (each batch on its own task)
// ---------------------------------------------------------------------------------------

/// Writes a batch of units (a unit: one record, or an atomic batch) in one statement. When
/// the statement is refused because one anchor moved (another process extended it: fork
/// guard or missing predecessor, named by the server's error), that anchor's units are taken
/// out of the batch — refused with [`LedgerError::ForkRefused`] / [`LedgerError::Aborted`],
/// so their chain actor re-links them — and the rest is written again as one statement:
/// contention on one anchor costs the others one more round trip, not a statement each. Any
/// other data error retries the remaining units one by one. Deadlocks and serialization
/// failures are retried for up to `retry_for`.
///
/// A batch holding an atomic batch of several records is written by one COPY (all rows or
/// none) or, when that is refused for its data, in a transaction that is rolled back if a
/// record of such a batch was skipped (its rid stored under another hash), so an atomic batch
/// is never written without one of its records; the units hit are refused and the rest
/// written again ([`crate::pg::insert_records_unless`]).
async fn write_batch(
    pool: PgPool,
    units: Vec<Vec<Arc<LedgerRecord>>>,
    retry_for: Duration,
    replication: crate::config::Replication,
) -> BatchOutcome {
    let total: usize = units.iter().map(Vec::len).sum();
    let mut results: Vec<Result<(), LedgerError>> = vec![Ok(()); units.len()];
    let mut live: Vec<usize> = (0..units.len()).collect();
    let mut moved_out = false;
    loop {
        // The live units' records, and for each record its unit.
        let mut batch: Vec<Arc<LedgerRecord>> = Vec::with_capacity(total);
        let mut unit_of: Vec<usize> = Vec::with_capacity(total);
        for &u in &live {
            batch.extend(units[u].iter().cloned());
            unit_of.extend(std::iter::repeat_n(u, units[u].len()));
        }
        let single = (batch.len() == 1).then(|| batch[0].as_ref());
        let started = Instant::now();
        let atomic = live.iter().any(|&u| units[u].len() > 1);
        let hits_atomic = |taken: &[usize]| taken.iter().any(|&t| units[unit_of[t]].len() > 1);
        let result = retry_contention(retry_for, || async {
            if atomic {
                crate::pg::insert_records_unless(&pool, &batch, replication, hits_atomic).await
            } else {
                crate::pg::insert_records(&pool, &batch, replication)
                    .await
                    .map(|taken| (taken, true))
            }
        })
        .await;
        crate::metrics::db_write_finished(started.elapsed().as_secs_f64());
        let (err, slow) = match result {
            Ok((taken, _)) if taken.is_empty() && !moved_out => {
                crate::metrics::db_batch_committed(total);
                tracing::debug!(
                    records = total,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "batch committed"
                );
                return BatchOutcome::Committed;
            }
            Ok((taken, false)) => {
                // Rolled back: an atomic batch had a record skipped. Refuse the units hit
                // and write the rest again.
                crate::metrics::db_error(false);
                moved_out = true;
                let mut hit: HashMap<usize, LedgerError> = HashMap::new();
                for t in taken {
                    hit.entry(unit_of[t])
                        .or_insert_with(|| rid_taken(&batch[t]));
                }
                live.retain(|u| match hit.remove(u) {
                    Some(e) => {
                        results[*u] = Err(e);
                        false
                    }
                    None => true,
                });
                if live.is_empty() {
                    return BatchOutcome::Settled {
                        results,
                        unwritten: None,
                    };
                }
                continue;
            }
            Ok((taken, true)) => {
                // Rids stored under another hash are refused, the rest committed (only
                // single-record units can be here: a hit atomic batch rolls back).
                crate::metrics::db_batch_committed(batch.len() - taken.len());
                for t in taken {
                    crate::metrics::db_error(false);
                    results[unit_of[t]] = Err(rid_taken(&batch[t]));
                }
                return BatchOutcome::Settled {
                    results,
                    unwritten: None,
                };
            }
            Err(e) => (classify(&e, single), crate::pg::store::only_slow(&e)),
        };
        match err {
            LedgerError::Unavailable(_) if !moved_out => {
                crate::metrics::db_error(true);
                tracing::warn!(error = %err, records = total, slow, "batch not written: database unavailable");
                return BatchOutcome::Settled {
                    results: Vec::new(),
                    unwritten: Some((0, err, slow)),
                };
            }
            LedgerError::Unavailable(_) => {
                // Part of the batch is settled (an anchor was taken out): the rest is not
                // written; the writer fails over on it.
                crate::metrics::db_error(true);
                for &u in &live {
                    results[u] = Err(err.clone());
                }
                return BatchOutcome::Settled {
                    results,
                    unwritten: None,
                };
            }
            LedgerError::ForkRefused { anchor_id, .. }
                if live.iter().any(|&u| units[u][0].anchor_id == anchor_id) =>
            {
                crate::metrics::db_error(false);
                tracing::debug!(%anchor_id, units = live.len(), "anchor moved under a batch; writing the rest again");
                moved_out = true;
                let mut first = true;
                live.retain(|&u| {
                    if units[u][0].anchor_id != anchor_id {
                        return true;
                    }
                    results[u] = Err(if first {
                        err.clone()
                    } else {
                        LedgerError::Aborted { anchor_id }
                    });
                    first = false;
                    false
                });
                if live.is_empty() {
                    return BatchOutcome::Settled {
                        results,
                        unwritten: None,
                    };
                }
            }
            err if live.len() == 1 => {
                crate::metrics::db_error(false);
                results[live[0]] = Err(err);
                return BatchOutcome::Settled {
                    results,
                    unwritten: None,
                };
            }
            err => {
                tracing::warn!(error = %err, units = live.len(), "batch refused; writing its units one by one");
                let rest: Vec<&[Arc<LedgerRecord>]> =
                    live.iter().map(|&u| units[u].as_slice()).collect();
                return match write_one_by_one(&pool, &rest, retry_for, replication).await {
                    BatchOutcome::Committed => BatchOutcome::Settled {
                        results,
                        unwritten: None,
                    },
                    BatchOutcome::Settled {
                        results: each,
                        unwritten,
                    } => {
                        let settled = each.len();
                        for (k, r) in each.into_iter().enumerate() {
                            results[live[k]] = r;
                        }
                        if let Some((_, err, _)) = unwritten {
                            for &u in &live[settled..] {
                                results[u] = Err(err.clone());
                            }
                        }
                        BatchOutcome::Settled {
                            results,
                            unwritten: None,
                        }
                    }
                };
            }
        }
    }
}

/// Writes each unit in its own statement (an atomic batch in a transaction rolled back if
/// one of its records is skipped), in order. A unit whose predecessor failed here is
/// refused without being written ([`LedgerError::Aborted`]).
async fn write_one_by_one(
    pool: &PgPool,
    units: &[&[Arc<LedgerRecord>]],
    retry_for: Duration,
    replication: crate::config::Replication,
) -> BatchOutcome {
    let mut results = Vec::with_capacity(units.len());
    let mut failed: HashSet<RecordHash> = HashSet::new();
    for (i, unit) in units.iter().enumerate() {
        let (Some(first), Some(last)) = (unit.first(), unit.last()) else {
            results.push(Ok(()));
            continue;
        };
        if first.prev_hash.is_some_and(|p| failed.contains(&p)) {
            failed.extend(unit.iter().map(|r| r.hash));
            results.push(Err(LedgerError::Aborted {
                anchor_id: first.anchor_id,
            }));
            continue;
        }
        let started = Instant::now();
        let result = retry_contention(retry_for, || async {
            if unit.len() > 1 {
                crate::pg::insert_records_unless(pool, unit, replication, |_| true).await
            } else {
                crate::pg::insert_records(pool, unit, replication)
                    .await
                    .map(|taken| (taken, true))
            }
        })
        .await;
        crate::metrics::db_write_finished(started.elapsed().as_secs_f64());
        let single = (unit.len() == 1).then_some(last.as_ref());
        let slow = result
            .as_ref()
            .err()
            .is_some_and(crate::pg::store::only_slow);
        match result.map_err(|e| classify(&e, single)) {
            Ok((taken, _)) if !taken.is_empty() => {
                crate::metrics::db_error(false);
                failed.extend(unit.iter().map(|r| r.hash));
                results.push(Err(rid_taken(&unit[taken[0]])));
            }
            Ok(_) => {
                crate::metrics::db_batch_committed(unit.len());
                results.push(Ok(()));
            }
            Err(err @ LedgerError::Unavailable(_)) => {
                crate::metrics::db_error(true);
                return BatchOutcome::Settled {
                    results,
                    unwritten: Some((i, err, slow)),
                };
            }
            Err(err) => {
                crate::metrics::db_error(false);
                tracing::warn!(rid = %first.rid, anchor = %first.anchor_id, records = unit.len(), error = %err, "record refused by the database");
                failed.extend(unit.iter().map(|r| r.hash));
                results.push(Err(err));
            }
        }
    }
    BatchOutcome::Settled {
        results,
        unwritten: None,
    }
}

/// The refusal of a record whose rid is stored with other content.
fn rid_taken(record: &LedgerRecord) -> LedgerError {
    LedgerError::Conflict {
        rid: record.rid,
        reason: crate::error::RID_TAKEN.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::BatchStats;

    /// Batch-size quantiles are read from the per-size counts.
    #[test]
    fn batch_stats_quantiles() {
        let mut stats = BatchStats::default();
        for size in [1, 2, 2, 3, 10, 10, 10, 10, 500, 1000] {
            stats.committed(size);
        }
        assert_eq!(stats.batches(), 10);
        assert_eq!(stats.records, 1548);
        assert_eq!(stats.quantile(0.5), 10);
        assert_eq!(stats.quantile(0.1), 1);
        assert_eq!(stats.quantile(0.9), 500);
        assert_eq!(stats.quantile(1.0), 1000);
        assert_eq!(BatchStats::default().quantile(0.5), 0);
    }
}
