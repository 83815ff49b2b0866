//! [`Writer`]: the one writer of the `postgres` backend. It group-commits records to
//! PostgreSQL and swaps to the in-memory outage buffer when PostgreSQL fails, then drains
//! the buffer back when it returns.
//!
//! Chain actors send their records here. In [`Mode::Primary`] each record is queued for
//! group commit ([`commit`]) and stays in `pending` until PostgreSQL confirms it. A
//! connectivity failure (refused/reset connection, pool timeout, shutdown, statement timeout)
//! or a record pending longer than `failover_after` *and* a failed liveness probe on a new
//! connection (`Writer::check_liveness`: a lock wait or a slow statement is not an
//! outage) swaps to [`Mode::Outage`]: every
//! pending record moves, in order, to the front of the [`OutageBuffer`], and new records are
//! buffered behind them and acknowledged as [`Durability::Buffered`] (or
//! [`Durability::Spooled`] once fsynced to the spool). A data error is answered to its
//! appender and never causes a swap. PostgreSQL is probed with exponential back-off and
//! jitter; when it answers, [`Mode::Draining`] writes the buffer in order (skipping rids
//! already stored, so a batch that committed just before the failure is not written twice)
//! while new records keep queueing behind, and the writer swaps back to `Primary` (with
//! a fresh writer pool) when the buffer is empty.
//!
//! # A record's way to PostgreSQL
//! 1. Its chain actor seals it and hands a [`Persist`] to the inbox, a tokio mpsc channel
//!    ([`Writer::sender`]) that this actor drains up to 1,024 messages at a time with
//!    `recv_many` (no actor message per record; one channel, so one anchor's records arrive
//!    in chain order). Its reply names the chain actor and the actor's number for it.
//! 2. Primary: it is numbered, kept in `pending`, and queued for group commit
//!    ([`commit`]): batches of up to `batch_size` records, at most two in flight, each
//!    written by one [`crate::pg::insert_records`] statement (the ledger's only insert; the
//!    database refuses forks, gaps and duplicate hashes) on a task of its own, which reports
//!    the whole batch back in one message.
//! 3. Here the batch's outcomes settle their `pending` entries and go back to the chain
//!    actors in one [`crate::driver::handoff::Acks`] message per chain actor per batch
//!    ([`crate::driver::handoff::AckBatch`]); each chain actor answers its appenders. A
//!    connectivity error instead fails over (below).
//! 4. Outage: it goes to the [`OutageBuffer`] and to the spool thread ([`SpoolWriter`]:
//!    frames written and fsynced once per group, off this thread), and is acknowledged
//!    `Spooled` after that fsync (`Buffered` without a spool), again one `Acks` message per
//!    chain actor per group; the drain ([`drain`]) writes it later through the same
//!    [`crate::pg::insert_records`]; at start, spool recovery does the same.
//!
//! # Layout
//! - [`commit`]: group commit in `Primary`: batching, the poison rule, the batch write.
//! - [`buffer`]: the outage buffer, shared with the store reads go through.
//! - [`spool`]: the fsynced outage spool file, written on its own thread ([`SpoolWriter`]).
//! - [`drain`]: writing the buffer to PostgreSQL; the re-chain and quarantine policy.
//! - [`reads`]: [`reads::WriterReads`], PostgreSQL plus the buffer, for reads.

pub mod buffer;
pub mod commit;
pub mod drain;
pub mod reads;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use ledger_entities::{LedgerRecord, RecordHash};
use sea_orm::sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use self::buffer::OutageBuffer;
use self::commit::GroupCommit;
use self::drain::{DrainOutcome, DrainState, drain_batch};
use crate::chain::Rebase;
use crate::config::LedgerConfig;
use crate::driver::OutageFlag;
use crate::driver::handoff::{
    AckBatch, Durability, Flush, Inbox, Persist, PersistReply, WriterSender,
};
use crate::error::LedgerError;
use crate::pg::store::PostgresLedgerStore;
use crate::router::ChainRouter;
use crate::spool::{self, SpoolWriter};

/// First probe delay after a failover (before jitter); doubles per failed probe up to
/// [`PROBE_MAX`].
const PROBE_BASE: Duration = Duration::from_millis(25);
/// Longest delay between probes before jitter (backon's jitter adds up to 100 %, so at most
/// 2 s).
const PROBE_MAX: Duration = Duration::from_secs(1);
/// How often pending records are checked against `failover_after`.
const WATCHDOG_EVERY: Duration = Duration::from_millis(50);
/// How often the replication gauges are read under `replication: synchronous`, and how
/// long one read may take.
const REPLICATION_SAMPLE_EVERY: Duration = Duration::from_secs(1);
const REPLICATION_READ_LIMIT: Duration = Duration::from_secs(2);
/// Most inbox messages taken per `recv_many`.
const INBOX_BATCH: usize = 1024;
/// How often pool and depth gauges are sampled and expired poison is swept.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Exponential back-off with jitter between probes of PostgreSQL (backon): from
/// [`PROBE_BASE`], doubling, at most [`PROBE_MAX`], each delay plus a random 0–100 %
/// (25–50 ms first, 1–2 s at most), never giving up.
fn probe_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(PROBE_BASE)
        .with_max_delay(PROBE_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Most quarantined rids remembered for reports (every kept record stays in
/// [`OutageRecords::kept`]; every re-chain in the uncapped [`RechainLog`]).
const REPORT_LIMIT: usize = 10_000;

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// Which persistence is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Records go to PostgreSQL.
    Primary,
    /// PostgreSQL is unreachable: records are buffered in memory (and spooled).
    Outage,
    /// PostgreSQL is back: the buffer is being written to it; new records still queue behind.
    Draining,
}

/// A snapshot of the writer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutageStatus {
    /// The active mode.
    pub mode: Mode,
    /// Records acknowledged but not yet in PostgreSQL.
    pub buffered: usize,
    /// The spool file holding them, if spooling.
    pub spool: Option<PathBuf>,
    /// Failovers since start.
    pub failovers: u64,
    /// Times a write waited long enough to be suspect but a probe found PostgreSQL slow, not
    /// gone (no failover), since start.
    pub slow_not_down: u64,
    /// Drains started since start: one per end of an outage, plus one per drain that failed
    /// again and restarted (many per outage mean the probe took a server that cannot take
    /// writes for recovered).
    pub drains: u64,
    /// Records written under a new hash after their anchor moved, since start (the records
    /// themselves: [`GetOutageRecords`]).
    pub rechained: u64,
    /// Records refused for good during a drain, since start (the records:
    /// [`GetOutageRecords`]).
    pub quarantined: u64,
}

/// The re-chained and quarantined records the writer remembers: every re-chained record
/// (uncapped), at most 10,000 quarantine reasons, every kept record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutageRecords {
    /// Every record re-chained since start, in the order first re-chained: (rid, hash it
    /// was acknowledged with, hash it is stored with now). A record re-chained more than
    /// once (e.g. moved onto a new head when it reached the writer, then again by the
    /// drain) appears once, acknowledged hash → final hash.
    pub rechained: Vec<(Uuid, RecordHash, RecordHash)>,
    /// (rid, why the database refuses it).
    pub quarantined: Vec<(Uuid, String)>,
    /// Every record acknowledged and quarantined (all of them, not only the first 10,000):
    /// kept here and, with a `spool_dir`, in its [`spool::KEPT_FILE`].
    pub kept: Vec<Arc<LedgerRecord>>,
}

/// Every record the writer re-chained since start, by rid, transitively: the hash it was
/// acknowledged with → the hash it has in PostgreSQL (or in the buffer, until drained).
/// Uncapped: one entry per re-chained record (about 100 bytes), and only outages with
/// another process writing the same anchors re-chain.
#[derive(Debug, Default)]
pub struct RechainLog {
    entries: Vec<crate::store::RechainedRecord>,
    by_rid: HashMap<Uuid, usize>,
}

impl RechainLog {
    /// Notes that the record `rid` of `anchor_id`, which had hash `from`, now has `to`. A
    /// rid already in the log keeps the hash it was first acknowledged with.
    pub fn note(&mut self, rid: Uuid, anchor_id: Uuid, from: RecordHash, to: RecordHash) {
        match self.by_rid.get(&rid) {
            Some(&i) => self.entries[i].new_hash = to,
            None => {
                self.by_rid.insert(rid, self.entries.len());
                self.entries.push(crate::store::RechainedRecord {
                    rid,
                    anchor_id,
                    old_hash: from,
                    new_hash: to,
                });
            }
        }
    }

    /// The re-chain of `rid`, if it was re-chained.
    pub fn get(&self, rid: Uuid) -> Option<&crate::store::RechainedRecord> {
        self.by_rid.get(&rid).map(|&i| &self.entries[i])
    }

    /// Every entry, in the order first re-chained.
    pub fn entries(&self) -> &[crate::store::RechainedRecord] {
        &self.entries
    }

    /// Records in the log.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was re-chained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Answer the [`OutageRecords`] (a copy; the status has the counts).
pub struct GetOutageRecords;

impl Message for GetOutageRecords {
    type Result = OutageRecords;
}

/// Answer the re-chain of one rid: its acknowledged and current hash, or `None` if the
/// writer never re-chained it.
pub struct GetRechain(pub Uuid);

impl Message for GetRechain {
    type Result = Option<crate::store::RechainedRecord>;
}

/// A drain batch finished (internal).
struct DrainDone {
    batch: Vec<Arc<LedgerRecord>>,
    state: DrainState,
    out: DrainOutcome,
    started: Instant,
}

impl Message for DrainDone {
    type Result = ();
}

/// Answer the current [`OutageStatus`].
pub struct GetStatus;

impl Message for GetStatus {
    type Result = OutageStatus;
}

/// Answer once nothing is buffered and PostgreSQL is active, or after `timeout`, with the
/// status then.
pub struct AwaitDrain {
    /// Longest wait.
    pub timeout: Duration,
}

impl Message for AwaitDrain {
    type Result = OutageStatus;
}

// ---------------------------------------------------------------------------------------
// Actor
// ---------------------------------------------------------------------------------------

/// A unit (one record, or an atomic batch: `rest` non-empty) not yet answered.
struct Pending {
    record: Arc<LedgerRecord>,
    rest: Vec<Arc<LedgerRecord>>,
    /// It expected a head: never buffered or re-chained (see [`Persist::strict`]).
    strict: bool,
    reply: PersistReply,
    wait_committed: bool,
    sent: Instant,
    /// See [`Persist::accepted`].
    accepted: Instant,
}

impl Pending {
    fn new(msg: Persist) -> Self {
        Self {
            record: msg.record,
            rest: msg.rest,
            strict: msg.strict,
            reply: msg.reply,
            wait_committed: msg.wait_committed,
            sent: Instant::now(),
            accepted: msg.accepted,
        }
    }

    fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// The unit's last record (its replies are keyed by this rid: a unit is settled when
    /// its last record is).
    fn last(&self) -> &Arc<LedgerRecord> {
        self.rest.last().unwrap_or(&self.record)
    }
}

/// When a held acknowledgement of an append first taken at `accepted` is released at the
/// latest: half the append `timeout` after it, so the hold never runs past the timeout as
/// its appender counts it (re-links and mailbox waits included).
fn hold_until(accepted: Instant, timeout: Duration) -> Instant {
    accepted + timeout / 2
}

/// Acknowledgements held back during a drain (see [`Writer::held`]): each with the rid it
/// was spooled under (if any) and when its hold ends.
#[derive(Default)]
struct HeldAcks {
    held: std::collections::VecDeque<(PersistReply, Option<Uuid>, Instant)>,
}

impl HeldAcks {
    fn hold(&mut self, reply: PersistReply, spooled: Option<Uuid>, until: Instant) {
        self.held.push_back((reply, spooled, until));
    }

    /// Every held acknowledgement, in the order held.
    fn take_all(&mut self) -> Vec<(PersistReply, Option<Uuid>)> {
        self.held.drain(..).map(|(r, s, _)| (r, s)).collect()
    }

    /// Those whose hold ended by `now`, in the order held. Holds end in about the order
    /// held, not exactly (an append re-linked before it reached the writer ends earlier),
    /// so every one is looked at.
    fn take_due(&mut self, now: Instant) -> Vec<(PersistReply, Option<Uuid>)> {
        if self.held.iter().all(|(_, _, until)| *until > now) {
            return Vec::new();
        }
        let mut due = Vec::new();
        for (reply, spooled, until) in std::mem::take(&mut self.held) {
            if until <= now {
                due.push((reply, spooled));
            } else {
                self.held.push_back((reply, spooled, until));
            }
        }
        due
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.len()
    }
}

/// The writer actor. Start it with [`Writer::new`] on its own Arbiter.
pub struct Writer {
    config: LedgerConfig,
    /// Connection options for the group commit's writer pool (a fresh one per `Primary`).
    writer_options: sea_orm::sqlx::postgres::PgConnectOptions,
    pool: PgPool,
    store: Arc<PostgresLedgerStore>,
    mode: Mode,
    /// The inbox chain actors send records to ([`Writer::sender`]); taken by `started`.
    inbox: Option<tokio::sync::mpsc::UnboundedReceiver<Inbox>>,
    sender: WriterSender,
    /// Primary: the queue and running batches ([`commit`]).
    commit: GroupCommit,
    next_seq: u64,
    /// Primary: every record not yet answered, by arrival number (its reply is here).
    pending: BTreeMap<u64, Pending>,
    /// Flushes waiting for every record numbered below theirs to be answered.
    flushes: Vec<(u64, oneshot::Sender<Result<(), LedgerError>>)>,
    buffer: Arc<OutageBuffer>,
    /// The spool, written and fsynced on its own thread ([`SpoolWriter`]).
    spool: Option<SpoolWriter>,
    /// Replies of `wait_committed` records, answered when they reach PostgreSQL.
    waiters: HashMap<Uuid, PersistReply>,
    /// Acknowledgements of records buffered while draining, held so that appenders cannot
    /// refill the buffer as fast as it drains (the drain would never finish): each is
    /// answered when the drain ends, or half the append timeout after its chain actor first
    /// took the append ([`Persist::accepted`]), whichever is first. With the record's rid if
    /// it was spooled, and when its hold ends.
    held: HeldAcks,
    drain_state: DrainState,
    drain_running: bool,
    /// Delays between probes of PostgreSQL during an outage.
    probe: backon::ExponentialBackoff,
    outage_started: Option<Instant>,
    /// When the running drain began (PostgreSQL answered again), for
    /// `ledger_drain_duration_seconds`.
    drain_started: Option<Instant>,
    failovers: u64,
    /// See [`OutageStatus::slow_not_down`].
    slow_not_down: u64,
    /// Every re-chain since start (uncapped), by rid.
    rechains: RechainLog,
    quarantined: Vec<(Uuid, String)>,
    rechained_count: u64,
    /// Drains started (see [`OutageStatus::drains`]).
    drains: u64,
    quarantined_count: u64,
    /// Quarantined records, kept (never dropped).
    kept: Vec<Arc<LedgerRecord>>,
    drain_waiters: Vec<oneshot::Sender<OutageStatus>>,
    router: Arc<OnceLock<Weak<ChainRouter>>>,
    /// Set while not in `Primary`: chain actors do not passivate, so they keep their heads.
    degraded: Arc<OutageFlag>,
    /// A liveness probe (see [`Writer::check_liveness`]) is running.
    liveness_running: bool,
    /// When the last liveness probe found the server alive while records were slow.
    alive_at: Option<Instant>,
}

impl Writer {
    /// A writer writing through `store`'s pool. `buffer` is shared with the reads; the
    /// spool is opened in `config.spool_dir` if set; `router` is filled in once the router
    /// exists (to tell chain actors to reload re-chained heads); `degraded` is set during
    /// outages.
    pub fn new(
        config: LedgerConfig,
        store: Arc<PostgresLedgerStore>,
        buffer: Arc<OutageBuffer>,
        router: Arc<OnceLock<Weak<ChainRouter>>>,
        degraded: Arc<OutageFlag>,
    ) -> Result<Self, LedgerError> {
        let spool = match &config.spool_dir {
            Some(dir) => Some(SpoolWriter::open(dir, config.metrics_partition)?),
            None => None,
        };
        let pool = store.connection().get_postgres_connection_pool().clone();
        let commit = GroupCommit::new(&config);
        let writer_options = crate::pg::store::sqlx_options(&config)?;
        let (tx, inbox) = tokio::sync::mpsc::unbounded_channel();
        Ok(Self {
            inbox: Some(inbox),
            sender: WriterSender(tx),
            writer_options,
            pool,
            store,
            config,
            mode: Mode::Primary,
            commit,
            next_seq: 0,
            pending: BTreeMap::new(),
            flushes: Vec::new(),
            buffer,
            spool,
            waiters: HashMap::new(),
            held: HeldAcks::default(),
            drain_state: DrainState::default(),
            drain_running: false,
            probe: probe_backoff(),
            outage_started: None,
            drain_started: None,
            failovers: 0,
            slow_not_down: 0,
            rechains: RechainLog::default(),
            quarantined: Vec::new(),
            rechained_count: 0,
            drains: 0,
            quarantined_count: 0,
            kept: Vec::new(),
            drain_waiters: Vec::new(),
            router,
            degraded,
            liveness_running: false,
            alive_at: None,
        })
    }

    /// The inbox: chain actors hand records here (drained in batches with `recv_many`, in
    /// the order sent); flushes go the same way so that they follow the records before them.
    pub fn sender(&self) -> WriterSender {
        self.sender.clone()
    }

    /// Takes the next batch of inbox messages (up to [`INBOX_BATCH`]) and handles them, then
    /// waits for the next; ends when every sender is gone.
    fn listen(
        &mut self,
        mut inbox: tokio::sync::mpsc::UnboundedReceiver<Inbox>,
        ctx: &mut Context<Self>,
    ) {
        ctx.spawn(
            fut::wrap_future(async move {
                let mut batch = Vec::with_capacity(INBOX_BATCH);
                let n = inbox.recv_many(&mut batch, INBOX_BATCH).await;
                (inbox, batch, n)
            })
            .map(|(inbox, batch, n), act: &mut Self, ctx| {
                if n == 0 {
                    return;
                }
                for msg in batch {
                    match msg {
                        Inbox::Record(record) => act.accept(record, ctx),
                        Inbox::Flush(reply) => act.flush_now(reply, ctx),
                    }
                }
                crate::metrics::writer_depth(act.pending.len());
                act.listen(inbox, ctx);
            }),
        );
    }

    /// Routes a record to group commit (primary) or the outage buffer (fallback, draining).
    fn accept(&mut self, msg: Persist, ctx: &mut Context<Self>) {
        let msg = if self.drain_state.affects(msg.record.prev_hash) {
            match self.follow_moves(msg) {
                Some(m) => m,
                None => return,
            }
        } else {
            msg
        };
        match self.mode {
            Mode::Primary => self.forward(msg, ctx),
            _ => self.buffer_record(Pending::new(msg), false),
        }
    }

    /// Primary: writes out every queued record (without waiting for the linger) and answers
    /// once all records received before the flush are answered; logs a batch-size summary at
    /// `info`. Outage: fsyncs the spool and answers.
    fn flush_now(
        &mut self,
        reply: oneshot::Sender<Result<(), LedgerError>>,
        ctx: &mut Context<Self>,
    ) {
        if self.mode == Mode::Primary {
            self.commit.log_stats();
            self.flushes.push((self.next_seq, reply));
            self.dispatch(ctx);
        } else {
            self.sync_spool(reply);
        }
    }

    /// A record has waited half of `failover_after` without an answer. A slow statement, a
    /// lock wait (another process's transaction, a deadlock PostgreSQL has not broken yet) or
    /// a starved machine is not an outage, so the writer looks for evidence first: it probes
    /// the server on *new* connections (not the busy pool's), again and again over a whole
    /// `failover_after` ([`crate::pg::unreachable_over`]). It fails over only if the server
    /// is found gone (a refused or reset connection, a shutdown) or read-only, or no probe
    /// answered in that window; if one answers, records are left to finish and the next
    /// check is due `failover_after` later. A black-holed server is so detected within
    /// 1.5 × `failover_after`.
    fn check_liveness(&mut self, ctx: &mut Context<Self>) {
        self.liveness_running = true;
        // The current host's options (a multi-host DSN may have switched since start).
        let options = match crate::pg::store::sqlx_options(&self.config) {
            Ok(o) => o,
            Err(_) => self.writer_options.clone(),
        };
        let window = self.config.failover_after;
        ctx.spawn(
            fut::wrap_future(crate::pg::unreachable_over(options, window)).map(
                |alive, act: &mut Self, ctx| {
                    act.liveness_running = false;
                    match alive {
                        Ok(()) => {
                            tracing::info!(
                                pending = act.pending.len(),
                                "PostgreSQL is slow but alive (a new connection answers): no failover"
                            );
                            act.slow_not_down += 1;
                            act.alive_at = Some(Instant::now());
                        }
                        Err(why) => {
                            act.failover(&format!("PostgreSQL did not answer writes: {why}"), ctx);
                        }
                    }
                },
            ),
        );
    }

    fn status(&self) -> OutageStatus {
        OutageStatus {
            mode: self.mode,
            buffered: self.buffer.len(),
            spool: self.spool.as_ref().map(|s| s.path().to_path_buf()),
            failovers: self.failovers,
            slow_not_down: self.slow_not_down,
            drains: self.drains,
            rechained: self.rechained_count,
            quarantined: self.quarantined_count,
        }
    }

    fn start_primary(&mut self) {
        let options = match crate::pg::store::sqlx_options(&self.config) {
            Ok(o) => o,
            Err(_) => self.writer_options.clone(),
        };
        self.commit.open(options, self.config.timeout);
        self.mode = Mode::Primary;
        self.degraded.set(false);
        crate::metrics::backend_active(true);
    }

    /// Queues a record for group commit and keeps it pending until confirmed.
    fn forward(&mut self, msg: Persist, ctx: &mut Context<Self>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let record = Arc::clone(&msg.record);
        let rest = msg.rest.clone();
        self.pending.insert(seq, Pending::new(msg));
        self.enqueue(seq, record, rest, ctx);
    }

    /// Answers the flushes whose records are all answered.
    fn answer_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let settled_below = self.pending.keys().next().copied().unwrap_or(self.next_seq);
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(target, _)| *target <= settled_below);
        self.flushes = waiting;
        for (_, tx) in done {
            // The flusher may have stopped waiting; then nobody reads the answer.
            let _ = tx.send(Ok(()));
        }
    }

    /// Samples the pool and depth gauges and expires idle poison.
    fn sample(&mut self) {
        // sqlx keeps the idle count in an atomic that can briefly read past the pool's size
        // (even wrap below zero) while connections churn: clamp it, and add saturating (an
        // overflow here panicked the writer in a debug build under multi-process load).
        let counts = |pool: &PgPool| {
            let open = pool.size() as usize;
            (open, pool.num_idle().min(open))
        };
        let (mut open, mut idle) = counts(&self.pool);
        if let Some(writer) = self.commit.pool() {
            let (o, i) = counts(writer);
            open = open.saturating_add(o);
            idle = idle.saturating_add(i);
        }
        let max = self
            .config
            .pool_size
            .saturating_add(commit::MAX_CONCURRENT_BATCHES as u32);
        crate::metrics::db_pool_sampled(open.saturating_sub(idle), idle, max);
        crate::metrics::writer_queued(self.commit.depth());
        self.commit.sweep();
    }

    /// Settles a pending record: its outcome joins `acks` (sent one message per chain actor
    /// when the caller finishes), or a connectivity error fails over.
    fn on_primary_answer(
        &mut self,
        seq: u64,
        res: Result<Durability, LedgerError>,
        acks: &mut AckBatch,
        ctx: &mut Context<Self>,
    ) {
        if !self.pending.contains_key(&seq) {
            // Moved to the buffer by a failover; the drain will find it stored (or not).
            return;
        }
        match res {
            Err(LedgerError::Unavailable(reason)) => self.failover(&reason, ctx),
            other => {
                if let Some(p) = self.pending.remove(&seq) {
                    // The appender may have given up waiting; then nobody reads this.
                    acks.answer(p.reply, other);
                }
            }
        }
        crate::metrics::writer_depth(self.pending.len());
    }

    /// Swaps to the memory fallback: pending records go to the buffer first, in order.
    fn failover(&mut self, reason: &str, ctx: &mut Context<Self>) {
        if self.mode != Mode::Primary {
            return;
        }
        tracing::warn!(%reason, pending = self.pending.len(), "PostgreSQL failed: switching to the memory fallback");
        self.mode = Mode::Outage;
        self.degraded.set(true);
        self.failovers += 1;
        self.outage_started = Some(Instant::now());
        // Its records are moved here; abandon the running batches. Whatever they commit is
        // found by the drain and not written twice.
        self.commit.reset(ctx);
        crate::metrics::failover();
        crate::metrics::backend_active(false);
        let pending = std::mem::take(&mut self.pending);
        for (_, p) in pending {
            self.buffer_record(p, true);
        }
        crate::metrics::writer_depth(0);
        crate::metrics::writer_queued(0);
        // Every record sent before a waiting flush is now answered or buffered: answer the
        // flushes once the spool is fsynced.
        for (_, tx) in std::mem::take(&mut self.flushes) {
            self.sync_spool(tx);
        }
        self.schedule_probe(ctx);
    }

    /// Buffers an acknowledged-on-fallback unit (an atomic batch as one unit: one spool
    /// frame, drained whole). `accepted` units (moved from pending) are taken even beyond
    /// `buffer_capacity`: they were already accepted. A unit that expected a head is
    /// refused instead: while PostgreSQL is unreachable no other process's append can be
    /// checked against it, and the drain could only re-chain it.
    fn buffer_record(&mut self, p: Pending, accepted: bool) {
        if p.strict {
            let why = if accepted {
                "PostgreSQL failed while writing an append that expects a head; it may or may not be committed: re-send it with the same client rids to learn which"
            } else {
                "PostgreSQL is unreachable: an append that expects a head is not buffered (other processes cannot be checked); retry when it is back"
            };
            let _ = p.reply.send(Err(LedgerError::Unavailable(why.into())));
            return;
        }
        if !accepted && self.buffer.len() + p.len() > self.config.buffer_capacity {
            let _ = p.reply.send(Err(LedgerError::Overloaded {
                waited: Duration::ZERO,
            }));
            return;
        }
        let rid = p.last().rid;
        let Pending {
            record,
            rest,
            reply,
            wait_committed,
            accepted,
            ..
        } = p;
        // Buffered first: a reader must find it once it is acknowledged (the spool thread
        // may answer before this returns).
        let unit = if rest.is_empty() {
            self.buffer.push_back(Arc::clone(&record));
            None
        } else {
            let mut unit = Vec::with_capacity(1 + rest.len());
            unit.push(record.clone());
            unit.extend(rest);
            self.buffer.push_unit(&unit);
            Some(unit)
        };
        crate::metrics::buffered(self.buffer.len());
        // Written and fsynced on the spool thread; answered there if not held here.
        let spooled = self.spool.is_some().then_some(rid);
        let to_spool = |spool: &SpoolWriter, reply: Option<PersistReply>| match unit {
            None => spool.append(record, reply),
            Some(unit) => spool.append_unit(unit, reply),
        };
        if wait_committed || self.mode == Mode::Draining {
            if let Some(spool) = &self.spool {
                to_spool(spool, None);
            }
            if wait_committed {
                self.waiters.insert(rid, reply);
            } else {
                self.held
                    .hold(reply, spooled, hold_until(accepted, self.config.timeout));
            }
        } else {
            match &self.spool {
                Some(spool) => to_spool(spool, Some(reply)),
                None => {
                    let _ = reply.send(Ok(Durability::Buffered));
                }
            }
        }
    }

    /// Acknowledges a buffered record: `Spooled` after its fsync if it was spooled (by the
    /// spool thread), else `Buffered` now.
    fn acknowledge(&mut self, reply: PersistReply, spooled: Option<Uuid>) {
        match (spooled, &self.spool) {
            (Some(rid), Some(spool)) => spool.ack(rid, reply),
            _ => {
                let _ = reply.send(Ok(Durability::Buffered));
            }
        }
    }

    /// Releases held acknowledgements: all of them, or those whose hold has ended (see
    /// [`hold_until`]).
    fn release_held(&mut self, all: bool) {
        let released = if all {
            self.held.take_all()
        } else {
            self.held.take_due(Instant::now())
        };
        for (reply, spooled) in released {
            self.acknowledge(reply, spooled);
        }
    }

    /// Answers `reply` once everything spooled so far is fsynced (at once without a spool).
    fn sync_spool(&self, reply: oneshot::Sender<Result<(), LedgerError>>) {
        match &self.spool {
            Some(spool) => spool.sync(reply),
            None => {
                // The flusher may have stopped waiting; then nobody reads the answer.
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn schedule_probe(&mut self, ctx: &mut Context<Self>) {
        // The back-off never runs out (`without_max_times`); the fallback is unreachable.
        let delay = self.probe.next().unwrap_or(PROBE_MAX);
        ctx.run_later(delay, |act, ctx| {
            let pool = act.pool.clone();
            let config = act.config.clone();
            // A probe on a black-holed connection must not hang for the full timeout.
            let timeout = act.config.failover_after.min(act.config.timeout);
            ctx.spawn(
                fut::wrap_future(async move {
                    crate::pg::store::takes_writes(&config, &pool, timeout).await
                })
                .map(|up, act: &mut Self, ctx| {
                    if up {
                        tracing::info!(
                            buffered = act.buffer.len(),
                            "PostgreSQL answers again: draining the buffer"
                        );
                        act.probe = probe_backoff();
                        act.drains += 1;
                        act.mode = Mode::Draining;
                        act.drain_started.get_or_insert_with(Instant::now);
                        act.drain_next(ctx);
                    } else {
                        act.schedule_probe(ctx);
                    }
                }),
            );
        });
    }

    fn drain_next(&mut self, ctx: &mut Context<Self>) {
        if self.drain_running || self.mode != Mode::Draining {
            return;
        }
        let (batch, units) = self.buffer.front_units(self.config.batch_size);
        if batch.is_empty() {
            self.finish_outage();
            return;
        }
        self.drain_running = true;
        let mut state = std::mem::take(&mut self.drain_state);
        let pool = self.pool.clone();
        let store = Arc::clone(&self.store);
        let started = Instant::now();
        // A task of its own: the database round-trips must not wait for this busy actor's
        // context to be polled.
        let me = ctx.address();
        actix_rt::spawn(async move {
            let out = drain_batch(&pool, &store, &batch, &units, &mut state).await;
            me.do_send(DrainDone {
                batch,
                state,
                out,
                started,
            });
        });
    }

    fn drained(
        &mut self,
        batch: &[Arc<LedgerRecord>],
        out: DrainOutcome,
        started: Instant,
        ctx: &mut Context<Self>,
    ) {
        tracing::debug!(
            batch = batch.len(),
            settled = out.settled,
            rechained = out.rechained.len(),
            quarantined = out.quarantined.len(),
            unavailable = out.unavailable.is_some(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            buffered = self.buffer.len(),
            "drain batch settled"
        );
        self.buffer.pop_front(out.settled);
        crate::metrics::buffered(self.buffer.len());
        crate::metrics::drained(out.settled, started.elapsed().as_secs_f64());
        let quarantined: HashMap<Uuid, LedgerError> = out
            .quarantined
            .iter()
            .map(|(r, e)| (r.rid, e.clone()))
            .collect();
        let moved: std::collections::HashSet<Uuid> =
            out.rechained.iter().map(|(_, r)| r.rid).collect();
        let mut acks = AckBatch::default();
        for r in &batch[..out.settled] {
            if let Some(reply) = self.waiters.remove(&r.rid) {
                acks.answer(
                    reply,
                    match quarantined.get(&r.rid) {
                        Some(e) => Err(e.clone()),
                        // Committed under another hash than the chain actor sealed: the
                        // "rid stored" answer makes it read the stored record and answer
                        // that (a replay), so `Committed` never carries a stale hash.
                        None if moved.contains(&r.rid) || self.rechains.get(r.rid).is_some() => {
                            Err(LedgerError::Conflict {
                                rid: r.rid,
                                reason: crate::error::RID_TAKEN.into(),
                            })
                        }
                        None => Ok(Durability::Committed),
                    },
                );
            }
        }
        acks.finish();
        let mut rebase = Vec::new();
        if let Some((old, first)) = out.rechained.first() {
            // One line per batch (an outage with another process on the same anchors can
            // re-chain every buffered record); each re-chain is in the re-chain log, which
            // `Ledger::rechained` and `Ledger::outage_records` answer from.
            tracing::warn!(records = out.rechained.len(), first_rid = %first.rid, first_anchor = %first.anchor_id,
                first_buffered_hash = %old, first_new_hash = %first.hash,
                "re-chained buffered records onto the database's heads (another writer extended their anchors)");
        }
        for (old, new) in &out.rechained {
            tracing::debug!(rid = %new.rid, anchor = %new.anchor_id, buffered_hash = %old, new_hash = %new.hash,
                "re-chained a buffered record onto the database's head");
            crate::metrics::rechained();
            self.rechained_count += 1;
            self.rechains.note(new.rid, new.anchor_id, *old, new.hash);
            rebase.push(new.anchor_id);
        }
        for (r, e) in &out.quarantined {
            tracing::error!(rid = %r.rid, anchor = %r.anchor_id, error = %e,
                "quarantined a buffered record the database refuses; it is not in PostgreSQL");
            self.quarantined_count += 1;
            if self.quarantined.len() < REPORT_LIMIT {
                self.quarantined.push((r.rid, e.to_string()));
            }
            rebase.push(r.anchor_id);
        }
        if !out.quarantined.is_empty() {
            let records: Vec<_> = out.quarantined.iter().map(|(r, _)| Arc::clone(r)).collect();
            self.keep(records);
        }
        self.rebase(rebase);
        if let Some(e) = out.unavailable {
            tracing::warn!(error = %e, "PostgreSQL failed again while draining");
            self.mode = Mode::Outage;
            self.schedule_probe(ctx);
            return;
        }
        self.drain_next(ctx);
    }

    /// Keeps acknowledged records the database will never take: in memory (listed by
    /// [`GetOutageRecords`]) and, with a `spool_dir`, fsynced to its [`spool::KEPT_FILE`].
    fn keep(&mut self, records: Vec<Arc<LedgerRecord>>) {
        if let Some(dir) = &self.config.spool_dir {
            match spool::keep(dir, &records) {
                Ok(path) => tracing::error!(records = records.len(), file = %path.display(),
                    "acknowledged records that cannot be written are kept in this file"),
                Err(e) => tracing::error!(error = %e, records = records.len(),
                    "could not write kept records to the spool directory; kept in memory only"),
            }
        }
        self.kept.extend(records);
        crate::metrics::records_kept(self.kept.len() as u64);
    }

    /// Tells the chain actors of `anchors` to reload their heads (their records moved).
    fn rebase(&self, mut anchors: Vec<Uuid>) {
        anchors.sort_unstable();
        anchors.dedup();
        let Some(router) = self.router.get().and_then(Weak::upgrade) else {
            return;
        };
        for a in anchors {
            if let Some(addr) = router.existing(a) {
                addr.do_send(Rebase);
            }
        }
    }

    fn finish_outage(&mut self) {
        self.release_held(true);
        if let Some(spool) = &self.spool {
            // After the acknowledgements just released: the spool thread answers them first.
            spool.truncate();
        }
        if let Some(t) = self.drain_started.take() {
            crate::metrics::drain_finished(t.elapsed().as_secs_f64());
        }
        if let Some(t) = self.outage_started.take() {
            tracing::info!(
                seconds = t.elapsed().as_secs_f64(),
                "outage over: PostgreSQL is active again"
            );
        }
        self.start_primary();
        let status = self.status();
        for w in self.drain_waiters.drain(..) {
            let _ = w.send(status.clone());
        }
    }

    /// A record whose predecessor was re-chained moves onto the new head before it is
    /// buffered (its acknowledgement is provisional, and the move is noted in the
    /// [`RechainLog`]); in `Primary` it is refused instead, as one whose predecessor was
    /// quarantined is: its chain actor re-links it onto the reloaded head, so that a
    /// `Committed` acknowledgement always carries the hash stored.
    fn follow_moves(&mut self, msg: Persist) -> Option<Persist> {
        let Some(prev) = msg.record.prev_hash else {
            return Some(msg);
        };
        if let Some(head) = self.drain_state.moved.get(&prev).cloned() {
            if msg.strict || self.mode == Mode::Primary {
                // Expected a head that the drain moved: never re-chained; its chain actor
                // answers the head mismatch. In `Primary` (a `Committed` answer is due) its
                // chain actor re-links it onto the reloaded head, so the answer carries the
                // hash stored.
                let anchor_id = msg.record.anchor_id;
                let _ = msg.reply.send(Err(LedgerError::Aborted { anchor_id }));
                return None;
            }
            // The unit's records move one onto the other, the first onto the moved head.
            let mut head = head;
            let mut moved = Vec::with_capacity(msg.len());
            let mut failed = None;
            for r in msg.records() {
                match r.rechained(head.hash, head.ts) {
                    Ok(n) => {
                        head = crate::store::Head::of(&n);
                        self.drain_state.moved.insert(r.hash, head.clone());
                        self.rechains.note(r.rid, r.anchor_id, r.hash, n.hash);
                        crate::metrics::relinked();
                        moved.push(Arc::new(n));
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                let _ = msg.reply.send(Err(e.into()));
                return None;
            }
            let mut moved = moved.into_iter();
            let Some(record) = moved.next() else {
                return Some(msg);
            };
            return Some(Persist {
                record,
                rest: moved.collect(),
                ..msg
            });
        }
        if self.drain_state.dropped.contains(&prev) {
            let anchor_id = msg.record.anchor_id;
            let _ = msg.reply.send(Err(LedgerError::Aborted { anchor_id }));
            return None;
        }
        Some(msg)
    }
}

impl Actor for Writer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.start_primary();
        if let Some(inbox) = self.inbox.take() {
            self.listen(inbox, ctx);
        }
        if self.config.replication == crate::config::Replication::Synchronous {
            // The replication gauges: one read at a time, for as long as the writer runs.
            let store = Arc::clone(&self.store);
            ctx.spawn(
                async move {
                    use crate::store::LedgerStore as _;
                    loop {
                        if let Some(Ok(state)) = store.replication(REPLICATION_READ_LIMIT).await {
                            crate::metrics::replication(&state);
                        }
                        tokio::time::sleep(REPLICATION_SAMPLE_EVERY).await;
                    }
                }
                .into_actor(self),
            );
        }
        let limit = self.config.failover_after;
        // Probing starts when a write has waited half of `failover_after` (see
        // `check_liveness`): with the probes' window, a dead server is detected within 1.5 ×.
        let stall = limit / 2;
        ctx.run_interval(SAMPLE_EVERY, |act, _ctx| act.sample());
        ctx.run_interval(WATCHDOG_EVERY, move |act, ctx| {
            // A black-holed connection never errors; a record waiting this long may mean the
            // database is not answering — or only that it is slow: probe before failing over.
            let stalled = act
                .pending
                .values()
                .next()
                .is_some_and(|p| p.sent.elapsed() > stall)
                && act.alive_at.is_none_or(|t| t.elapsed() > limit);
            if act.mode == Mode::Primary && stalled && !act.liveness_running {
                act.check_liveness(ctx);
            }
            act.release_held(act.mode != Mode::Draining);
        });
    }
}

// ---------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------

/// A record sent as an actor message rather than through the inbox (tests): handled like one
/// from the inbox.
impl Handler<Persist> for Writer {
    type Result = ();

    fn handle(&mut self, msg: Persist, ctx: &mut Context<Self>) {
        self.accept(msg, ctx);
        crate::metrics::writer_depth(self.pending.len());
    }
}

/// Goes through the inbox, behind every record sent before it: see
/// `Writer::flush_now`.
impl Handler<Flush> for Writer {
    type Result = ResponseFuture<Result<(), LedgerError>>;

    fn handle(&mut self, _msg: Flush, _ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.sender.flush(tx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(LedgerError::Internal(
                    "writer stopped before the flush completed".into(),
                ))
            })
        })
    }
}

/// Takes a drain batch's outcome: settles its records and drains on (or falls back).
impl Handler<DrainDone> for Writer {
    type Result = ();

    fn handle(&mut self, msg: DrainDone, ctx: &mut Context<Self>) {
        self.drain_running = false;
        self.drain_state = msg.state;
        self.drained(&msg.batch, msg.out, msg.started, ctx);
    }
}

/// Answers the current status.
impl Handler<GetStatus> for Writer {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}

/// Copies the remembered re-chained and quarantined records.
impl Handler<GetOutageRecords> for Writer {
    type Result = MessageResult<GetOutageRecords>;

    fn handle(&mut self, _msg: GetOutageRecords, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(OutageRecords {
            rechained: self
                .rechains
                .entries()
                .iter()
                .map(|r| (r.rid, r.old_hash, r.new_hash))
                .collect(),
            quarantined: self.quarantined.clone(),
            kept: self.kept.clone(),
        })
    }
}

/// Answers one rid's re-chain.
impl Handler<GetRechain> for Writer {
    type Result = MessageResult<GetRechain>;

    fn handle(&mut self, msg: GetRechain, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.rechains.get(msg.0).cloned())
    }
}

/// Answers when the buffer is drained and PostgreSQL active, or after the timeout.
impl Handler<AwaitDrain> for Writer {
    type Result = ResponseActFuture<Self, OutageStatus>;

    fn handle(&mut self, msg: AwaitDrain, _ctx: &mut Context<Self>) -> Self::Result {
        if self.mode == Mode::Primary && self.buffer.is_empty() {
            return Box::pin(fut::ready(self.status()));
        }
        let (tx, rx) = oneshot::channel();
        self.drain_waiters.push(tx);
        Box::pin(fut::wrap_future(tokio::time::timeout(msg.timeout, rx)).map(
            |res, act: &mut Self, _ctx| match res {
                Ok(Ok(status)) => status,
                _ => act.status(),
            },
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly by design")]
mod tests {
    use super::RechainLog;
    use ledger_entities::RecordHash;
    use uuid::Uuid;

    fn h(n: u8) -> RecordHash {
        RecordHash::from_bytes([n; 32])
    }

    /// A held acknowledgement is released half the timeout after its append was first
    /// taken — not after the writer got it — and one whose hold ends first is released
    /// first even when it was held later (a re-linked append).
    #[test]
    fn held_acknowledgements_end_by_the_appends_own_clock() {
        use super::{HeldAcks, hold_until};
        use crate::driver::handoff::PersistReply;
        use std::time::{Duration, Instant};

        let timeout = Duration::from_secs(10);
        let now = Instant::now();
        let mut held = HeldAcks::default();
        let mut answers = Vec::new();
        let mut reply = || {
            let (tx, rx) = tokio::sync::oneshot::channel();
            answers.push(rx);
            PersistReply::Oneshot(tx)
        };
        // Taken just now: held until 5 s from now.
        held.hold(reply(), None, hold_until(now, timeout));
        // Taken 6 s ago (it was re-linked before it reached the writer): already due.
        let relinked = Uuid::new_v4();
        held.hold(
            reply(),
            Some(relinked),
            hold_until(now - Duration::from_secs(6), timeout),
        );
        // Taken 4 s ago: due in 1 s.
        held.hold(
            reply(),
            None,
            hold_until(now - Duration::from_secs(4), timeout),
        );

        let due = held.take_due(now);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, Some(relinked));
        assert_eq!(held.len(), 2);
        assert!(held.take_due(now).is_empty());
        let later = held.take_due(now + Duration::from_millis(1500));
        assert_eq!(later.len(), 1);
        assert_eq!(held.len(), 1);
        assert_eq!(held.take_all().len(), 1);
        assert_eq!(held.len(), 0);
        assert_eq!(answers.len(), 3);
    }

    /// A record re-chained twice keeps the hash it was acknowledged with and gets its last
    /// hash; nothing is capped.
    #[test]
    fn rechain_log_is_transitive_by_rid_and_uncapped() {
        let mut log = RechainLog::default();
        let (rid, anchor) = (Uuid::new_v4(), Uuid::new_v4());
        log.note(rid, anchor, h(1), h(2));
        log.note(rid, anchor, h(2), h(3));
        let entry = log.get(rid).unwrap();
        assert_eq!((entry.old_hash, entry.new_hash), (h(1), h(3)));
        assert_eq!(log.len(), 1);
        for _ in 0..20_000 {
            log.note(Uuid::new_v4(), anchor, h(4), h(5));
        }
        assert_eq!(log.len(), 20_001);
        assert_eq!(log.entries()[0].rid, rid);
        assert!(log.get(Uuid::new_v4()).is_none());
    }
}
