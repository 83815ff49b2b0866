//! [`PostgresPersistence`]: the persistence actor of the `postgres` backend. It group-commits:
//! records from every chain actor are collected and written with one
//! [`crate::pg::insert_records`] per batch (a single statement, so one transaction), and each
//! record is answered when its batch has committed — records forwarded by the supervisor in
//! one [`super::Answers`] message per batch.
//!
//! # Batching
//! A batch is cut when `batch_size` records are waiting, when the oldest waiting record has
//! waited `batch_linger`, or at once for a [`Flush`]. While up to [`MAX_CONCURRENT_BATCHES`]
//! batches run, new records keep arriving and form the next batch, so under load batches grow
//! with the database's latency. Every database call is a future spawned on the actor's
//! context; the actor never blocks its thread.
//!
//! # Invariants (the chain actor relies on them, see [`crate::chain`])
//! - Records are written in arrival order, so one anchor's records reach the database in
//!   chain order. With two batches in flight, a record whose predecessor is still in a running
//!   batch waits (with every later record of its anchor) for that batch to settle, so a record
//!   is only ever written with or after its predecessor.
//! - A refused record poisons its hash: a later record whose `prev_hash` is poisoned is
//!   refused too ([`LedgerError::Aborted`]) and poisons its own hash, without a round trip:
//!   the database would refuse it anyway (`ledger_records_prev_fk`), so the poison only saves
//!   the statement; correctness no longer depends on it. A record of the anchor whose
//!   `prev_hash` is not poisoned (the chain actor has reloaded its head) clears the anchor's
//!   poison; idle entries expire after [`POISON_TTL`].
//! - A data error in a multi-row batch does not fail the innocent records: the batch's
//!   records are retried one statement each, in order, applying the poison rule. A
//!   connectivity error fails the unwritten records with [`LedgerError::Unavailable`]
//!   (see [`PostgresPersistence::unwritten`]).
//! - [`Flush`] answers once every record received before it is answered.
//!
//! # Metrics
//! `ledger_db_batch_size` (records per committed transaction, 1 for the one-by-one retries),
//! `ledger_db_write_duration_seconds` (each batch statement, failed ones included),
//! `ledger_db_errors_total` (each failed statement, except the multi-row statement of a batch
//! refused for a data error: its records are retried and each refused one counts),
//! `ledger_db_pool_connections` and `ledger_persistence_mailbox_depth` (sampled every second;
//! the depth is records held unanswered, see [`PostgresPersistence`]).
//!
//! # For the supervisor (a later issue)
//! [`PostgresPersistence::unwritten`] is where a connectivity failure's records leave the
//! actor. It poisons their hashes so that no successor is written without them; a supervisor
//! that re-sends them instead must also re-send (not fail) their queued successors.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ledger_entities::{LedgerRecord, RecordHash};
use sea_orm::DatabaseConnection;
use sea_orm::sqlx::PgPool;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{AnswerBatch, Durability, Flush, Persist, Retire};
use crate::config::LedgerConfig;
use crate::error::LedgerError;
use crate::store::postgres::{classify, retry_contention};

/// Most batch transactions in flight at once. Two let the next batch be written while the
/// previous one commits (its WAL flush); records that depend on a running batch wait for it.
pub const MAX_CONCURRENT_BATCHES: usize = 2;

/// How long an anchor's poisoned hashes are kept without being touched. Successors of a
/// refused record are sent before its chain actor learns of the refusal, so they arrive
/// within moments of it; a minute is far beyond that.
pub const POISON_TTL: Duration = Duration::from_secs(60);

/// How often pool and depth gauges are sampled and expired poison is swept.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// A record waiting in the actor, with its arrival number and time.
struct Queued {
    seq: u64,
    at: Instant,
    msg: Persist,
}

/// The refused hashes of one anchor.
struct Poison {
    hashes: HashSet<RecordHash>,
    touched: Instant,
}

/// How a batch ended.
enum BatchOutcome {
    /// Every record committed.
    Committed,
    /// Records were settled one by one: `results[i]` is record `i`'s outcome; from index
    /// `unwritten.0` on (if any) nothing was written because the database became unreachable
    /// (`unwritten.1`).
    Settled {
        results: Vec<Result<(), LedgerError>>,
        unwritten: Option<(usize, LedgerError)>,
    },
}

/// Batch sizes for the summary logged at each [`Flush`], in an HDR histogram (sizes 1 to
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

/// The PostgreSQL persistence actor. Start it on its own Arbiter; it speaks [`Persist`] and
/// [`Flush`] like every persistence actor.
///
/// Gauge `ledger_persistence_mailbox_depth` here measures the records this actor holds and
/// has not answered yet: waiting for a batch plus in running batches (not the messages still
/// in the actix mailbox, which it drains continuously).
pub struct PostgresPersistence {
    /// Where batches are written.
    pool: PgPool,
    /// The pools `ledger_db_pool_connections` reports (summed), and their total maximum.
    sampled: Vec<PgPool>,
    sampled_max: u32,
    batch_size: usize,
    linger: Duration,
    queue: VecDeque<Queued>,
    next_seq: u64,
    running: HashMap<u64, Vec<Queued>>,
    running_records: usize,
    next_batch: u64,
    /// Records in running batches, by hash.
    in_flight: HashSet<RecordHash>,
    /// Every waiting record depends on a running batch; wait for one to settle.
    blocked: bool,
    linger_timer: Option<SpawnHandle>,
    poison: HashMap<Uuid, Poison>,
    /// Flushes waiting for every record numbered below theirs to be answered.
    flushes: Vec<(u64, oneshot::Sender<Result<(), LedgerError>>)>,
    stats: BatchStats,
    /// How long a statement aborted by a deadlock or serialization failure is retried.
    retry_for: Duration,
}

impl PostgresPersistence {
    /// An actor writing through `db`'s pool with `config.batch_size` and
    /// `config.batch_linger`.
    pub fn new(db: &DatabaseConnection, config: &LedgerConfig) -> Self {
        let pool = db.get_postgres_connection_pool().clone();
        Self::from_pool(pool.clone(), vec![pool], config.pool_size, config)
    }

    fn from_pool(
        pool: PgPool,
        sampled: Vec<PgPool>,
        sampled_max: u32,
        config: &LedgerConfig,
    ) -> Self {
        Self {
            pool,
            sampled,
            sampled_max,
            batch_size: config.batch_size.max(1),
            linger: config.batch_linger,
            queue: VecDeque::new(),
            next_seq: 0,
            running: HashMap::new(),
            running_records: 0,
            next_batch: 0,
            in_flight: HashSet::new(),
            blocked: false,
            linger_timer: None,
            poison: HashMap::new(),
            flushes: Vec::new(),
            stats: BatchStats::default(),
            retry_for: config.timeout,
        }
    }

    /// An actor writing through its own pool of [`MAX_CONCURRENT_BATCHES`] connections,
    /// opened on demand (so an unreachable database shows up as failed batches, not here).
    /// Call it on the Arbiter the actor will run on (e.g. inside the closure of
    /// `start_in_arbiter`): the connections' sockets then belong to that thread's runtime
    /// and the actor's I/O never waits on another thread. `options` come from
    /// [`crate::store::postgres::sqlx_options`]; `reads` is the store's pool, reported with
    /// the actor's own in `ledger_db_pool_connections` (max: `pool_size` +
    /// [`MAX_CONCURRENT_BATCHES`]).
    pub fn with_own_pool(
        options: PgConnectOptions,
        reads: &DatabaseConnection,
        config: &LedgerConfig,
    ) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONCURRENT_BATCHES as u32)
            .min_connections(0)
            .acquire_timeout(config.timeout)
            .connect_lazy_with(options);
        let sampled = vec![pool.clone(), reads.get_postgres_connection_pool().clone()];
        let max = config
            .pool_size
            .saturating_add(MAX_CONCURRENT_BATCHES as u32);
        Self::from_pool(pool, sampled, max, config)
    }

    /// Starts batches while there is room: a full batch, an expired linger or a pending
    /// flush; otherwise arms the linger timer.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        while self.running.len() < MAX_CONCURRENT_BATCHES && !self.blocked {
            let Some(front) = self.queue.front() else {
                break;
            };
            let waited = front.at.elapsed();
            let due = self.queue.len() >= self.batch_size
                || waited >= self.linger
                || !self.flushes.is_empty();
            if !due {
                if self.linger_timer.is_none() {
                    let handle = ctx.run_later(self.linger - waited, |act, ctx| {
                        act.linger_timer = None;
                        act.dispatch(ctx);
                    });
                    self.linger_timer = Some(handle);
                }
                break;
            }
            let batch = self.take_batch();
            if batch.is_empty() {
                // Everything left waits for a running batch (or was refused just now).
                self.blocked = !self.queue.is_empty();
                continue;
            }
            self.spawn_batch(batch, ctx);
        }
        self.answer_flushes();
    }

    /// Takes the next batch from the queue in arrival order: refuses records whose
    /// predecessor is poisoned, and leaves in the queue (in order) records whose predecessor
    /// is in a running batch or was itself left.
    fn take_batch(&mut self) -> Vec<Queued> {
        let mut batch = Vec::with_capacity(self.queue.len().min(self.batch_size));
        let mut left: VecDeque<Queued> = VecDeque::new();
        let mut left_hashes: HashSet<RecordHash> = HashSet::new();
        while batch.len() < self.batch_size {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            let record = &q.msg.record;
            let poisoned = if self.poison.is_empty() {
                None
            } else {
                self.poison.get_mut(&record.anchor_id)
            };
            if let Some(poison) = poisoned {
                match record.prev_hash {
                    Some(prev) if poison.hashes.contains(&prev) => {
                        poison.hashes.insert(record.hash);
                        poison.touched = Instant::now();
                        let anchor_id = record.anchor_id;
                        // The appender may have given up waiting; then nobody reads this.
                        let _ = q.msg.reply.send(Err(LedgerError::Aborted { anchor_id }));
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
                left_hashes.insert(record.hash);
                left.push_back(q);
            } else {
                batch.push(q);
            }
        }
        if !left.is_empty() {
            left.extend(self.queue.drain(..));
            self.queue = left;
        }
        batch
    }

    fn spawn_batch(&mut self, batch: Vec<Queued>, ctx: &mut Context<Self>) {
        let id = self.next_batch;
        self.next_batch += 1;
        let records: Vec<Arc<LedgerRecord>> =
            batch.iter().map(|q| Arc::clone(&q.msg.record)).collect();
        self.in_flight.extend(records.iter().map(|r| r.hash));
        self.running_records += batch.len();
        self.running.insert(id, batch);
        crate::metrics::persistence_depth(self.queue.len() + self.running_records);
        let pool = self.pool.clone();
        ctx.spawn(
            fut::wrap_future(write_batch(pool, records, self.retry_for))
                .map(move |outcome, act: &mut Self, ctx| act.finish(id, outcome, ctx)),
        );
    }

    /// Answers a settled batch's records and starts what can start next.
    fn finish(&mut self, id: u64, outcome: BatchOutcome, ctx: &mut Context<Self>) {
        let Some(batch) = self.running.remove(&id) else {
            tracing::error!(batch = id, "persistence: settled batch is not running");
            return;
        };
        self.running_records -= batch.len();
        for q in &batch {
            self.in_flight.remove(&q.msg.record.hash);
        }
        let mut answers = AnswerBatch::default();
        match outcome {
            BatchOutcome::Committed => {
                self.stats.committed(batch.len());
                for q in batch {
                    answers.answer(q.msg.reply, Ok(Durability::Committed));
                }
            }
            BatchOutcome::Settled { results, unwritten } => {
                let mut batch = batch.into_iter();
                // `results` first: `zip` pulls from its left side first, and a record pulled
                // from `batch` without a result would be dropped unanswered.
                for (result, q) in results.into_iter().zip(batch.by_ref()) {
                    if result.is_err() {
                        self.poison_record(&q.msg.record);
                    }
                    answers.answer(q.msg.reply, result.map(|()| Durability::Committed));
                }
                if let Some((_, err)) = unwritten {
                    for q in batch {
                        self.poison_record(&q.msg.record);
                        answers.answer(q.msg.reply, Err(err.clone()));
                    }
                }
            }
        }
        answers.finish();
        self.blocked = false;
        self.dispatch(ctx);
        crate::metrics::persistence_depth(self.queue.len() + self.running_records);
    }

    /// Records of a batch that were not written because the database became unreachable,
    /// in arrival order. Each is answered `err` ([`LedgerError::Unavailable`]) and its hash
    /// poisoned, so no successor is written without it.
    ///
    /// This is the one place a failed batch's records leave the actor: a supervisor that
    /// retries instead (a later issue) takes `msgs` here, unanswered, rather than failing
    /// them.
    pub fn unwritten(&mut self, msgs: Vec<Persist>, err: LedgerError) {
        let mut answers = AnswerBatch::default();
        for msg in msgs {
            self.poison_record(&msg.record);
            answers.answer(msg.reply, Err(err.clone()));
        }
        answers.finish();
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

    /// Answers the flushes whose records are all answered.
    fn answer_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let oldest_running = self
            .running
            .values()
            .filter_map(|b| b.first())
            .map(|q| q.seq)
            .min();
        let oldest_queued = self.queue.front().map(|q| q.seq);
        let settled_below = match (oldest_running, oldest_queued) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => self.next_seq,
        };
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(target, _)| *target <= settled_below);
        self.flushes = waiting;
        for (_, tx) in done {
            // The flusher may have stopped waiting; then nobody reads the answer.
            let _ = tx.send(Ok(()));
        }
    }

    fn sample(&mut self) {
        let (mut open, mut idle) = (0, 0);
        for pool in &self.sampled {
            open += pool.size() as usize;
            idle += pool.num_idle();
        }
        crate::metrics::db_pool_sampled(open.saturating_sub(idle), idle, self.sampled_max);
        crate::metrics::persistence_depth(self.queue.len() + self.running_records);
        self.poison.retain(|_, p| p.touched.elapsed() < POISON_TTL);
    }
}

impl Actor for PostgresPersistence {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SAMPLE_EVERY, |act, _ctx| act.sample());
    }
}

/// Answers everything queued as unavailable and stops (running writes are dropped).
impl Handler<Retire> for PostgresPersistence {
    type Result = ();

    fn handle(&mut self, _msg: Retire, ctx: &mut Context<Self>) {
        let queued: Vec<Persist> = self.queue.drain(..).map(|q| q.msg).collect();
        self.unwritten(
            queued,
            LedgerError::Unavailable("persistence actor retired by the supervisor".into()),
        );
        ctx.stop();
    }
}

/// Queues the record for the next batch.
impl Handler<Persist> for PostgresPersistence {
    type Result = ();

    fn handle(&mut self, msg: Persist, ctx: &mut Context<Self>) {
        self.queue.push_back(Queued {
            seq: self.next_seq,
            at: Instant::now(),
            msg,
        });
        self.next_seq += 1;
        let room = self.running.len() < MAX_CONCURRENT_BATCHES && !self.blocked;
        if room && (self.queue.len() >= self.batch_size || self.linger_timer.is_none()) {
            self.dispatch(ctx);
        }
    }
}

/// Writes out everything received before the flush (without waiting for the linger) and
/// answers once all of it is answered. Logs a batch-size summary at `info`.
impl Handler<Flush> for PostgresPersistence {
    type Result = ResponseFuture<Result<(), LedgerError>>;

    fn handle(&mut self, _msg: Flush, ctx: &mut Context<Self>) -> Self::Result {
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
        let (tx, rx) = oneshot::channel();
        self.flushes.push((self.next_seq, tx));
        self.dispatch(ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(LedgerError::Internal(
                    "persistence actor stopped before the flush completed".into(),
                ))
            })
        })
    }
}

// ---------------------------------------------------------------------------------------
// Database writes (futures run on the actor's thread)
// ---------------------------------------------------------------------------------------

/// Writes a batch in one statement; on a data error retries its records one by one.
/// Deadlocks and serialization failures are retried for up to `retry_for`.
async fn write_batch(
    pool: PgPool,
    records: Vec<Arc<LedgerRecord>>,
    retry_for: Duration,
) -> BatchOutcome {
    let single = (records.len() == 1).then(|| records[0].as_ref());
    let started = Instant::now();
    let result = retry_contention(retry_for, || crate::pg::insert_records(&pool, &records)).await;
    crate::metrics::db_write_finished(started.elapsed().as_secs_f64());
    let err = match result {
        Ok(taken) if !taken.is_empty() => {
            // Rids stored under another hash: those records are refused, the rest committed.
            crate::metrics::db_batch_committed(records.len() - taken.len());
            let mut results = vec![Ok(()); records.len()];
            for i in taken {
                crate::metrics::db_error(false);
                results[i] = Err(rid_taken(&records[i]));
            }
            return BatchOutcome::Settled {
                results,
                unwritten: None,
            };
        }
        Ok(_) => {
            crate::metrics::db_batch_committed(records.len());
            tracing::debug!(
                records = records.len(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                "batch committed"
            );
            return BatchOutcome::Committed;
        }
        Err(e) => classify(&e, single),
    };
    if let LedgerError::Unavailable(_) = err {
        crate::metrics::db_error(true);
        tracing::warn!(error = %err, records = records.len(), "batch not written: database unavailable");
        return BatchOutcome::Settled {
            results: Vec::new(),
            unwritten: Some((0, err)),
        };
    }
    if records.len() == 1 {
        crate::metrics::db_error(false);
        return BatchOutcome::Settled {
            results: vec![Err(err)],
            unwritten: None,
        };
    }
    tracing::warn!(error = %err, records = records.len(), "batch refused; writing its records one by one");
    write_one_by_one(&pool, &records, retry_for).await
}

/// Writes each record in its own statement, in order. A record whose predecessor failed
/// here is refused without being written ([`LedgerError::Aborted`]).
async fn write_one_by_one(
    pool: &PgPool,
    records: &[Arc<LedgerRecord>],
    retry_for: Duration,
) -> BatchOutcome {
    let mut results = Vec::with_capacity(records.len());
    let mut failed: HashSet<RecordHash> = HashSet::new();
    for (i, record) in records.iter().enumerate() {
        if record.prev_hash.is_some_and(|p| failed.contains(&p)) {
            failed.insert(record.hash);
            results.push(Err(LedgerError::Aborted {
                anchor_id: record.anchor_id,
            }));
            continue;
        }
        let started = Instant::now();
        let result = retry_contention(retry_for, || {
            crate::pg::insert_records(pool, std::slice::from_ref(record))
        })
        .await;
        crate::metrics::db_write_finished(started.elapsed().as_secs_f64());
        match result.map_err(|e| classify(&e, Some(record))) {
            Ok(taken) if !taken.is_empty() => {
                crate::metrics::db_error(false);
                failed.insert(record.hash);
                results.push(Err(rid_taken(record)));
            }
            Ok(_) => {
                crate::metrics::db_batch_committed(1);
                results.push(Ok(()));
            }
            Err(err @ LedgerError::Unavailable(_)) => {
                crate::metrics::db_error(true);
                return BatchOutcome::Settled {
                    results,
                    unwritten: Some((i, err)),
                };
            }
            Err(err) => {
                crate::metrics::db_error(false);
                tracing::warn!(rid = %record.rid, anchor = %record.anchor_id, error = %err, "record refused by the database");
                failed.insert(record.hash);
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
        reason: "rid already stored".into(),
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
