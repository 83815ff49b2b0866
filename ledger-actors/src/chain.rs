//! [`ChainActor`]: one per anchor; it serializes that anchor's appends.
//!
//! The actor owns the anchor's head. For each [`Append`] it validates the record, assigns
//! `ts = max(now, last_ts + 1 µs)` and `prev_hash = head`, and hashes it. On the memory
//! backend it stores the record itself and answers in the same handler. On PostgreSQL it
//! hands the record to the writer's inbox under a tag and moves its head forward at once, so
//! appends to one anchor pipeline while earlier ones are being written; the writer answers
//! all of this actor's records of a batch in one [`Acks`] message, and each appender's reply
//! (the channel `Addr::send` made) waits with its record in the actor's in-flight map until
//! then ([`AppendAnswer`]): no channel, task or future per record. If a record is refused,
//! the actor bumps its epoch, reloads its head from the store before the next append, and
//! records still in flight behind the refused one are refused too (their predecessor is
//! missing); a record refused because its anchor moved is re-linked onto the new head and
//! written again ([`Relink`]) until `relink_for` runs out.
//!
//! # Layout
//! - messages: [`Append`], [`Rebase`], [`Relink`], [`AppendAck`]; [`ChainSettings`] (with the
//!   storage driver, [`crate::driver::Driver`], where records go);
//! - the actor: [`ChainActor`] (head load, passivation, commit → send → settle → finish);
//! - handlers: `Append` (answered through [`AppendAnswer`]), `Acks`, `Rebase`, `Relink`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;
use futures::future::{BoxFuture, FutureExt, Shared};
use ledger_entities::validate::{Limits, validate_new_record};
use ledger_entities::{LedgerRecord, NewRecord, Payload, RecordHash};
use uuid::Uuid;

mod batch;
#[cfg(test)]
mod tests;

use crate::driver::Driver;
use crate::driver::handoff::{AckTo, Acks, Durability, Persist, PersistReply};
use crate::error::LedgerError;
use crate::observe::{ChainMailboxes, QueueTicket};
use crate::store::{Head, LedgerStore};

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// Append one record to the actor's anchor.
///
/// The record sits in a take-once slot shared by every clone of the message: if the actor
/// stops before taking it (passivation raced the send), the sender still holds it and can
/// resend it to the anchor's next actor without copying the payload.
pub struct Append {
    slot: Arc<Mutex<Option<NewRecord>>>,
    wait_committed: bool,
    /// Counts this message in the chain mailbox depth until it is handled or dropped.
    queued: Option<QueueTicket>,
}

/// A clone shares the record slot but not the mailbox ticket: each sent copy gets its own
/// through [`Append::counted`].
impl Clone for Append {
    fn clone(&self) -> Self {
        Self {
            slot: Arc::clone(&self.slot),
            wait_committed: self.wait_committed,
            queued: None,
        }
    }
}

impl Append {
    /// A message carrying `record`.
    pub fn new(record: NewRecord) -> Self {
        Self {
            slot: Arc::new(Mutex::new(Some(record))),
            wait_committed: false,
            queued: None,
        }
    }

    /// A message whose answer waits until the record is committed in PostgreSQL, even
    /// through an outage (not merely buffered).
    pub fn durable(record: NewRecord) -> Self {
        Self {
            wait_committed: true,
            ..Self::new(record)
        }
    }

    /// This message, counted in the chain mailbox depth by `ticket` until the handler has
    /// taken it (or it is dropped unhandled).
    pub fn counted(mut self, ticket: QueueTicket) -> Self {
        self.queued = Some(ticket);
        self
    }

    /// Takes the record out; `None` once an actor (or another taker) has it.
    pub fn take(&self) -> Option<NewRecord> {
        // The lock is only held for a `take`; a poisoned lock still holds a valid Option.
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// True while no actor has taken the record.
    pub fn is_pending(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

impl Message for Append {
    type Result = Result<AppendAck, LedgerError>;
}

/// What an append expects of its anchor's head before it lands (optimistic concurrency:
/// a host that decided on the state it read appends only if nothing moved meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expect {
    /// Wherever the chain is now. On PostgreSQL a record refused because another process
    /// extended the anchor is re-linked onto the new head and written again.
    #[default]
    Any,
    /// The anchor must have no records yet.
    NoStream,
    /// The anchor's head must be this record. Refused with [`LedgerError::HeadMismatch`]
    /// (carrying the current head) otherwise, never re-linked.
    Head(RecordHash),
}

impl Expect {
    /// `Head(h)` for `Some(h)`, `NoStream` for `None` (the `expected_head` of an input line).
    pub fn head(head: Option<RecordHash>) -> Self {
        head.map_or(Expect::NoStream, Expect::Head)
    }

    /// The head expected, or `None` for [`Expect::Any`].
    pub fn expected(self) -> Option<Option<RecordHash>> {
        match self {
            Expect::Any => None,
            Expect::NoStream => Some(None),
            Expect::Head(h) => Some(Some(h)),
        }
    }
}

/// Append several records to the actor's anchor atomically: contiguous in its chain, all or
/// none ([`crate::Ledger::append_all`]). Resendable like [`Append`] (take-once slot).
pub struct AppendBatch {
    slot: Arc<Mutex<Option<Vec<NewRecord>>>>,
    expect: Expect,
    wait_committed: bool,
    /// Counts this message in the chain mailbox depth until it is handled or dropped.
    #[allow(dead_code, reason = "held for its Drop, which ends the count")]
    queued: Option<QueueTicket>,
}

impl AppendBatch {
    /// A message carrying `records` (all of one anchor), expecting `expect`.
    pub fn new(records: Vec<NewRecord>, expect: Expect) -> Self {
        Self {
            slot: Arc::new(Mutex::new(Some(records))),
            expect,
            wait_committed: false,
            queued: None,
        }
    }

    /// A message whose answer waits until the batch is committed in PostgreSQL.
    pub fn durable(records: Vec<NewRecord>, expect: Expect) -> Self {
        Self {
            wait_committed: true,
            ..Self::new(records, expect)
        }
    }

    fn take(&self) -> Option<Vec<NewRecord>> {
        // Held only for a `take`; a poisoned lock still holds a valid Option.
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Message for AppendBatch {
    type Result = Result<BatchAck, LedgerError>;
}

/// Answer to an [`AppendBatch`]. Like [`AppendAck`], its hashes are final only when
/// [`BatchAck::hash_is_final`] (not `Buffered`/`Spooled`).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchAck {
    /// The records as hashed and stored, in chain order (contiguous).
    pub records: Vec<Arc<LedgerRecord>>,
    /// How durable they are now (all alike: one durability for the batch).
    pub durability: Durability,
    /// True when the batch repeated stored client rids and the stored records are returned.
    pub replayed: bool,
}

/// An append message the router can resend when the actor retired before taking it
/// ([`Append`], [`AppendBatch`]).
pub trait Routed: Message + Send + 'static {
    /// A copy sharing the take-once slot, counted in the mailbox depth by `ticket`.
    fn resend(&self, ticket: QueueTicket) -> Self;
    /// True while no actor has taken the records.
    fn pending(&self) -> bool;
    /// Takes the records back; true if they were still there (so certainly not written).
    fn withdraw(&self) -> bool;
}

impl Routed for Append {
    fn resend(&self, ticket: QueueTicket) -> Self {
        self.clone().counted(ticket)
    }
    fn pending(&self) -> bool {
        self.is_pending()
    }
    fn withdraw(&self) -> bool {
        self.take().is_some()
    }
}

impl Routed for AppendBatch {
    fn resend(&self, ticket: QueueTicket) -> Self {
        Self {
            slot: Arc::clone(&self.slot),
            expect: self.expect,
            wait_committed: self.wait_committed,
            queued: Some(ticket),
        }
    }
    fn pending(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
    fn withdraw(&self) -> bool {
        self.take().is_some()
    }
}

/// Re-link a refused in-flight batch onto the anchor's (reloaded) head and write it again
/// (internal; only batches expecting [`Expect::Any`]).
struct RelinkBatch(BatchFlight);

impl Message for RelinkBatch {
    type Result = ();
}

/// An atomic batch handed to the writer and not yet settled.
struct BatchFlight {
    records: Vec<Arc<LedgerRecord>>,
    expect: Expect,
    wait_committed: bool,
    deadline: Instant,
    attempt: u32,
    epoch: u64,
    tx: tokio::sync::oneshot::Sender<Result<BatchAck, LedgerError>>,
}

/// The anchor's records were moved (re-chained) by the writer: reload the head from the
/// store before the next append.
pub struct Rebase;

impl Message for Rebase {
    type Result = ();
}

/// Re-link a refused in-flight record onto the anchor's (reloaded) head and write it again
/// (internal: sent by the actor to itself).
pub struct Relink {
    record: Arc<LedgerRecord>,
    wait_committed: bool,
    deadline: Instant,
    attempt: u32,
    answer: Answer,
}

impl Message for Relink {
    type Result = ();
}

/// Answer to an [`Append`].
///
/// Its `record.hash` (with `ts` and `prev_hash`) is final only when [`AppendAck::hash_is_final`]:
/// a `Buffered` or `Spooled` record (acknowledged during a PostgreSQL outage) may be
/// re-chained by the drain onto a head another process wrote meanwhile (same rid and
/// content, new hash). Keep the rid; learn the final record with `Ledger::get(rid)` after the
/// drain (`Ledger::await_drain`), and the hash it moved from and to with
/// `Ledger::rechained(rid)`.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendAck {
    /// The record as hashed — and, unless [`AppendAck::provisional`], as stored.
    pub record: Arc<LedgerRecord>,
    /// How durable it is now.
    pub durability: Durability,
    /// True when the append repeated a stored client rid and the stored record is returned.
    pub replayed: bool,
}

impl AppendAck {
    /// True when `record` is stored as acknowledged (`Committed`, `Volatile`).
    pub fn hash_is_final(&self) -> bool {
        self.durability.hash_is_final()
    }

    /// True when `record.hash` may still change (`Buffered`, `Spooled`): see the type.
    pub fn provisional(&self) -> bool {
        !self.hash_is_final()
    }
}

impl BatchAck {
    /// True when `records` are stored as acknowledged (`Committed`, `Volatile`).
    pub fn hash_is_final(&self) -> bool {
        self.durability.hash_is_final()
    }

    /// True when the records' hashes may still change (`Buffered`, `Spooled`).
    pub fn provisional(&self) -> bool {
        !self.hash_is_final()
    }
}

// ---------------------------------------------------------------------------------------
// Actor
// ---------------------------------------------------------------------------------------

/// The registry an actor leaves when it retires (the [`crate::router::ChainRouter`]); a trait
/// so that the chain module does not depend on the router (the router depends on it).
pub trait Registry: Send + Sync {
    /// Removes `addr` as the anchor's actor (no-op if another actor has replaced it).
    fn forget(&self, anchor_id: Uuid, addr: &Addr<ChainActor>);
    /// Records that an actor left because it was idle.
    fn note_passivated(&self);
    /// Actors registered now (compared with [`ChainSettings::max_live_actors`]).
    fn live(&self) -> usize;
}

/// Settings shared by every chain actor of a ledger.
#[derive(Clone)]
pub struct ChainSettings {
    /// The storage driver: where sealed records go, and where heads are loaded from and
    /// idempotency is checked.
    pub driver: Arc<dyn Driver>,
    /// Validation limits.
    pub limits: Limits,
    /// Mailbox capacity (back-pressure on senders).
    pub mailbox_capacity: usize,
    /// Idle time after which the actor stops.
    pub passivate_after: Duration,
    /// Soft cap on live actors: above it an actor passivates as soon as it is idle (see
    /// `ChainActor::retire_if_crowded`); 0: no cap.
    pub max_live_actors: usize,
    /// While set (a PostgreSQL outage), actors do not passivate: a revived actor would need
    /// its head from the unreachable database ([`Driver::suspend_passivation`]).
    pub suspend_passivation: Arc<crate::driver::OutageFlag>,
    /// Mailbox depth of every chain actor (the router counts each [`Append`] it sends).
    pub mailboxes: Arc<ChainMailboxes>,
    /// How long an append is re-linked and written again while other writers keep moving its
    /// anchor, before it fails with [`LedgerError::Contended`] (less than the append timeout,
    /// so that the typed error reaches the caller before its wait ends).
    pub relink_for: Duration,
    /// Most records in one [`AppendBatch`] (`max_batch_records`).
    pub max_batch_records: usize,
    /// Most canonical payload bytes in one [`AppendBatch`] (`max_batch_bytes`).
    pub max_batch_bytes: usize,
}

impl ChainSettings {
    /// The store heads are loaded from and idempotency is checked in (the driver's).
    pub fn store(&self) -> &Arc<dyn LedgerStore> {
        self.driver.store()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Loading the head; the mailbox waits.
    Loading,
    Ready,
    /// A refusal moved the head back; reload it from the store before the next append.
    NeedsReload,
    /// The head could not be loaded; appends get this error and the actor retires.
    Failed(LedgerError),
    /// Removed from the router and stopping; appends are bounced back to the router.
    Passivating,
}

/// The final answer of an in-flight append with a client rid, shared with repeats of it.
type Outcome = Shared<BoxFuture<'static, Result<AppendAck, LedgerError>>>;

/// Where an append's answer goes: the sender's reply channel (the one `Addr::send` made;
/// `None` for `do_send`).
type Reply = OneshotSender<Result<AppendAck, LedgerError>>;

/// Who an in-flight append answers when it is settled.
#[derive(Default)]
struct Answer {
    /// The appender; attached as the handler's answer goes out ([`AppendAnswer`]).
    tx: Option<Reply>,
    /// A client rid's repeats waiting for this append (see [`ChainActor::replay_pending`]).
    repeats: Option<(
        Uuid,
        tokio::sync::oneshot::Sender<Result<AppendAck, LedgerError>>,
    )>,
}

/// A record handed to the writer and not yet settled, by its tag.
struct InFlight {
    record: Arc<LedgerRecord>,
    wait_committed: bool,
    deadline: Instant,
    attempt: u32,
    /// The actor's epoch when it was sent: only a refusal of the current epoch moves the
    /// head back.
    epoch: u64,
    answer: Answer,
}

/// Pause before reading a taken rid again while the store answers `Unavailable`.
const REPLAY_RETRY: Duration = Duration::from_millis(50);

/// The in-flight records of one actor, shared with the answers of its [`Append`]s (which
/// attach each appender's reply as it goes out; one thread, never borrowed across a call).
type InFlightMap = Rc<RefCell<HashMap<u64, InFlight>>>;

/// Where an append stands when the actor has done what it can now.
enum Step {
    /// Answered (memory: stored; or refused).
    Done(Result<AppendAck, LedgerError>),
    /// Handed to the writer under this tag; the answer comes with its [`Acks`].
    Sent(u64),
    /// Waiting for a head load or a rid look-up; the future yields the next step.
    Wait(ResponseActFuture<ChainActor, Step>),
}

/// The answer of [`Handler<Append>`]: sent at once when the append is settled in the handler
/// (every memory append), else kept with the record until the writer's [`Acks`] settles it —
/// no channel, task or future of its own per record.
pub struct AppendAnswer(Answering);

enum Answering {
    Now(Result<AppendAck, LedgerError>),
    Sent { tag: u64, inflight: InFlightMap },
    Later(ResponseActFuture<ChainActor, Step>),
}

/// Attaches `tx` to the in-flight record `tag`. Runs as the handler's answer goes out, before
/// the actor handles another message, so the record cannot have been settled yet.
fn attach(inflight: &InFlightMap, tag: u64, tx: Option<Reply>) {
    if let Some(entry) = inflight.borrow_mut().get_mut(&tag) {
        entry.answer.tx = tx;
    }
}

impl MessageResponse<ChainActor, Append> for AppendAnswer {
    fn handle(self, ctx: &mut Context<ChainActor>, tx: Option<Reply>) {
        match self.0 {
            Answering::Now(res) => {
                if let Some(tx) = tx {
                    // The appender may have given up waiting; then nobody reads this.
                    let _ = tx.send(res);
                }
            }
            Answering::Sent { tag, inflight } => attach(&inflight, tag, tx),
            Answering::Later(next) => {
                ctx.spawn(
                    next.map(move |step, act: &mut ChainActor, ctx| act.deliver(step, tx, ctx)),
                );
            }
        }
    }
}

/// True for a refusal that only says the anchor moved under the record: another writer
/// extended it (fork guard, missing predecessor), or an earlier in-flight record of the
/// anchor was refused so this one's predecessor is not stored. Nothing was written and
/// nobody has seen the record's hash, so it can be re-linked onto the new head.
fn anchor_moved(e: &LedgerError) -> bool {
    matches!(
        e,
        LedgerError::ForkRefused { .. } | LedgerError::Aborted { .. }
    )
}

/// `record` moved onto `head` (or made the anchor's first record): same rid and content,
/// new `prev_hash`, a `ts` after `last_ts`, new hash.
/// When an append whose re-link deadline is `deadline` was first taken: the deadline is
/// set `relink_for` after it.
pub(crate) fn accepted_at(deadline: Instant, relink_for: Duration) -> Instant {
    deadline
        .checked_sub(relink_for)
        .unwrap_or_else(Instant::now)
}

fn relinked(
    record: &LedgerRecord,
    head: Option<RecordHash>,
    last_ts: i64,
) -> Result<LedgerRecord, LedgerError> {
    let mut r = record.clone();
    r.prev_hash = head;
    let after = ledger_entities::record::micros_to_datetime(last_ts.saturating_add(1));
    r.ts = r.ts.max(after);
    r.hash = ledger_entities::record::record_hash(&r)?;
    Ok(r)
}

/// The per-anchor actor. Create it through [`crate::router::ChainRouter`], which guarantees at most one
/// live actor per anchor.
pub struct ChainActor {
    anchor_id: Uuid,
    /// Shared by every actor of the ledger (one pointer per actor).
    settings: Arc<ChainSettings>,
    router: Option<std::sync::Weak<dyn Registry>>,
    state: State,
    head: Option<RecordHash>,
    /// `ts` of the last record sent, in µs since the epoch.
    last_ts: i64,
    /// Bumped whenever the head is reset; outcomes of older epochs do not touch the head.
    epoch: u64,
    /// Appends accepted and not yet answered (including rid look-ups).
    busy: usize,
    /// Answers to [`Append`]s not yet delivered: each is a future spawned in this actor's
    /// context, which a stop would drop unanswered, so the actor never stops early while
    /// one is pending.
    unanswered: usize,
    /// In-flight records with a client rid, so a repeat can wait for the original.
    pending: HashMap<Uuid, (Arc<LedgerRecord>, Outcome)>,
    last_active: Instant,
    /// The next tag given to a record handed to the writer.
    next_tag: u64,
    /// Records handed to the writer and not yet settled, by tag: [`Acks`] (one message per
    /// settled batch) settles each in [`ChainActor::settle`].
    inflight: InFlightMap,
    /// Atomic batches handed to the writer and not yet settled, by tag (tags shared with
    /// `inflight`).
    batches: HashMap<u64, BatchFlight>,
}

impl ChainActor {
    /// An actor for `anchor_id`. `router` is the registry it removes itself from when it
    /// passivates (none: it never passivates).
    pub fn new(
        anchor_id: Uuid,
        settings: Arc<ChainSettings>,
        router: Option<std::sync::Weak<dyn Registry>>,
    ) -> Self {
        Self {
            anchor_id,
            settings,
            router,
            state: State::Loading,
            head: None,
            last_ts: i64::MIN,
            epoch: 0,
            busy: 0,
            unanswered: 0,
            pending: HashMap::new(),
            last_active: Instant::now(),
            next_tag: 0,
            inflight: Rc::new(RefCell::new(HashMap::new())),
            batches: HashMap::new(),
        }
    }

    /// Loads the head from the store while the mailbox waits.
    fn load_head(&mut self, ctx: &mut Context<Self>) {
        self.state = State::Loading;
        let store = Arc::clone(self.settings.store());
        let anchor = self.anchor_id;
        // On a task of its own: the store shares connections and batches head loads across
        // actors, so a lookup must make progress even while this actor's context is not
        // polling it (a connection held by an unpolled future stalls every other actor).
        let load = actix_rt::spawn(async move { store.head(anchor).await });
        ctx.wait(
            fut::wrap_future(async move {
                load.await.unwrap_or_else(|e| {
                    Err(LedgerError::Internal(format!("head load task failed: {e}")))
                })
            })
            .map(
                |res: Result<Option<Head>, LedgerError>, act: &mut Self, _ctx| match res {
                    Ok(head) => {
                        act.last_ts = act
                            .last_ts
                            .max(head.as_ref().map_or(i64::MIN, |h| h.ts.timestamp_micros()));
                        act.head = head.map(|h| h.hash);
                        act.state = State::Ready;
                    }
                    // A reload (not the first load) while PostgreSQL is unreachable: keep
                    // the local head. Records sent on it are buffered on the outage fallback,
                    // and the drain re-chains them onto the database's head when it returns.
                    Err(LedgerError::Unavailable(reason)) if act.epoch > 0 => {
                        tracing::debug!(anchor = %act.anchor_id, %reason,
                            "head reload failed: database unavailable; keeping the local head");
                        act.state = State::Ready;
                    }
                    Err(e) => act.state = State::Failed(e),
                },
            ),
        );
    }

    fn retire(&mut self, ctx: &mut Context<Self>) {
        if let Some(router) = self.router.as_ref().and_then(std::sync::Weak::upgrade) {
            router.forget(self.anchor_id, &ctx.address());
        }
        self.state = State::Passivating;
        ctx.stop();
    }

    fn maybe_passivate(&mut self, ctx: &mut Context<Self>) {
        if self.state == State::Ready
            && self.busy == 0
            && !self.settings.suspend_passivation.is_raised()
            && self.last_active.elapsed() >= self.settings.passivate_after
        {
            crate::metrics::anchor_passivated();
            if let Some(router) = self.router.as_ref().and_then(std::sync::Weak::upgrade) {
                router.note_passivated();
            }
            self.retire(ctx);
        }
    }

    /// Passivates now, without waiting for `passivate_after`, when more actors are alive
    /// than [`ChainSettings::max_live_actors`] and this one is idle: ready, nothing in
    /// flight, no answer still to deliver and no message queued for it. Called as the last
    /// step of an append's answer, so that answer is sent (in the same poll) before the
    /// stop. Safe like timed passivation: the actor leaves the router before it stops, with
    /// every record settled, and an append that races the stop is resent by the router to
    /// a fresh actor, which loads the head from the store.
    fn retire_if_crowded(&mut self, ctx: &mut Context<Self>) {
        let cap = self.settings.max_live_actors;
        if cap == 0
            || self.state != State::Ready
            || self.busy != 0
            || self.unanswered != 0
            || self.settings.suspend_passivation.is_raised()
        {
            return;
        }
        let Some(router) = self.router.as_ref().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        if router.live() <= cap || self.settings.mailboxes.queued(self.anchor_id) != 0 {
            return;
        }
        crate::metrics::anchor_passivated();
        router.note_passivated();
        self.retire(ctx);
    }

    /// Hashes `new` onto the head and stores it (memory) or hands it to the writer and moves
    /// the head; see [`ChainActor::settle`] for what happens when the anchor moved meanwhile.
    fn commit(
        &mut self,
        new: NewRecord,
        rid: Uuid,
        canonical: Payload,
        wait_committed: bool,
        ctx: &mut Context<Self>,
    ) -> Step {
        let now = chrono::Utc::now().timestamp_micros();
        let ts = now.max(self.last_ts.saturating_add(1));
        let has_client_rid = new.rid.is_some();
        let record = match LedgerRecord::seal_canonical(
            new,
            rid,
            ledger_entities::record::micros_to_datetime(ts),
            self.head,
            canonical,
        ) {
            Ok(r) => Arc::new(r),
            Err(e) => return Step::Done(Err(e.into())),
        };
        // A driver that writes now (memory, spool, read-only) stores it on this thread: the
        // append is answered without another hop.
        if let Some(outcome) = self
            .settings
            .driver
            .write_now(std::slice::from_ref(&record))
        {
            return Step::Done(match outcome {
                Ok(durability) => {
                    self.head = Some(record.hash);
                    self.last_ts = ts;
                    Ok(AppendAck {
                        record,
                        durability,
                        replayed: false,
                    })
                }
                Err(e) => Err(self.refused_now(e)),
            });
        }
        let deadline = Instant::now() + self.settings.relink_for;
        let mut answer = Answer::default();
        if has_client_rid {
            // A client rid can be repeated while in flight: the repeat waits for this
            // append's final answer (after any re-links), which `finish` sends it.
            let (final_tx, final_rx) = tokio::sync::oneshot::channel();
            let shared: Outcome = async move {
                final_rx.await.unwrap_or_else(|_| {
                    Err(LedgerError::Internal(
                        "chain actor stopped before answering".into(),
                    ))
                })
            }
            .boxed()
            .shared();
            self.pending.insert(rid, (Arc::clone(&record), shared));
            answer.repeats = Some((rid, final_tx));
        }
        Step::Sent(self.send(record, wait_committed, deadline, 1, answer, ctx))
    }

    /// Hands a sealed record (attempt `attempt`) to the writer, numbered by a new tag, and
    /// moves the head; its outcome comes back in an [`Acks`] message and is settled by
    /// [`ChainActor::settle`]. Returns the tag.
    fn send(
        &mut self,
        record: Arc<LedgerRecord>,
        wait_committed: bool,
        deadline: Instant,
        attempt: u32,
        answer: Answer,
        ctx: &mut Context<Self>,
    ) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        // A strong address made from the context: it works even when every other address
        // of this actor is gone (a retired actor finishing its mailbox).
        let reply = PersistReply::Batched(AckTo::new(ctx.address().recipient(), tag));
        let msg = Persist {
            record: Arc::clone(&record),
            rest: Vec::new(),
            strict: false,
            reply,
            wait_committed,
            accepted: accepted_at(deadline, self.settings.relink_for),
        };
        self.settings.driver.submit(msg);
        self.head = Some(record.hash);
        self.last_ts = record.ts_micros();
        self.busy += 1;
        self.inflight.borrow_mut().insert(
            tag,
            InFlight {
                record,
                wait_committed,
                deadline,
                attempt,
                epoch: self.epoch,
                answer,
            },
        );
        tag
    }

    /// The outcome of an in-flight record: answered, or — when the record was refused
    /// because its anchor moved (see [`anchor_moved`]) — re-linked onto the reloaded head and
    /// sent again until it commits or its deadline passes.
    fn settle(&mut self, f: InFlight, outcome: crate::driver::Outcome, ctx: &mut Context<Self>) {
        self.busy -= 1;
        self.last_active = Instant::now();
        let e = match outcome {
            Ok(durability) => {
                let ack = AppendAck {
                    record: f.record,
                    durability,
                    replayed: false,
                };
                return self.finish(f.answer, Ok(ack), ctx);
            }
            Err(e) => e,
        };
        if f.epoch == self.epoch {
            // The first refusal of this epoch: everything sent after it is doomed (its
            // predecessor is missing), so start a new epoch from the store's head.
            self.epoch += 1;
            self.head = f.record.prev_hash;
            if self.state == State::Ready {
                self.state = State::NeedsReload;
            }
        }
        if crate::error::stored_by_another_write(&e) {
            return self.replay_taken(f, e, ctx);
        }
        if !anchor_moved(&e) {
            return self.finish(f.answer, Err(e), ctx);
        }
        crate::metrics::relinked();
        if Instant::now() >= f.deadline {
            let contended = LedgerError::Contended {
                anchor_id: f.record.anchor_id,
                attempts: f.attempt,
            };
            return self.finish(f.answer, Err(contended), ctx);
        }
        // Through the mailbox: the handler reloads the head with `ctx.wait`, like a new
        // append, so every head load runs in a future the actor keeps polling (the store
        // batches head loads across actors).
        self.busy += 1;
        ctx.address().do_send(Relink {
            record: f.record,
            wait_committed: f.wait_committed,
            deadline: f.deadline,
            attempt: f.attempt + 1,
            answer: f.answer,
        });
    }

    /// A unit the driver refused at once: a fork refusal means another writer extended the
    /// anchor in the store, so the head is reloaded before the next append.
    pub(crate) fn refused_now(&mut self, e: LedgerError) -> LedgerError {
        if matches!(e, LedgerError::ForkRefused { .. }) {
            self.epoch += 1;
            self.state = State::NeedsReload;
        }
        e
    }

    /// A record refused because its rid is stored under another hash: another process
    /// sealed the same client rid at the same moment (each checked the store before either
    /// committed). The stored record with the same content answers as a replay, as a repeat
    /// in one process does; other content stays the [`LedgerError::Conflict`].
    fn replay_taken(&mut self, f: InFlight, refusal: LedgerError, ctx: &mut Context<Self>) {
        let store = Arc::clone(self.settings.store());
        let rid = f.record.rid;
        // A task of its own, like the rid look-up of a new append: the store's future is not
        // tied to this actor's thread.
        let task = actix_rt::spawn(async move { store.get(rid).await });
        self.busy += 1;
        ctx.spawn(
            fut::wrap_future(task).map(move |found, act: &mut Self, ctx| {
                act.busy -= 1;
                let res = match found {
                    Ok(Ok(Some(stored))) if stored.same_record(&f.record) => Ok(AppendAck {
                        record: stored,
                        durability: crate::store::durability_of(act.settings.store().backend()),
                        replayed: true,
                    }),
                    // The drain answers a durable append it re-chained while the ledger
                    // still reads from its fallback (the drain's last batch): the record is
                    // in PostgreSQL, readable once the drain ends. Read again shortly.
                    Ok(Err(LedgerError::Unavailable(_))) if Instant::now() < f.deadline => {
                        act.busy += 1;
                        ctx.run_later(REPLAY_RETRY, move |act, ctx| {
                            act.busy -= 1;
                            act.replay_taken(f, refusal, ctx);
                        });
                        return;
                    }
                    _ => Err(refusal),
                };
                act.finish(f.answer, res, ctx);
            }),
        );
    }

    /// Delivers an append's final answer to its sender (and to repeats of its client rid).
    fn finish(
        &mut self,
        answer: Answer,
        res: Result<AppendAck, LedgerError>,
        ctx: &mut Context<Self>,
    ) {
        self.unanswered -= 1;
        if let Some((rid, repeats)) = answer.repeats {
            self.pending.remove(&rid);
            // Nobody may be waiting on a repeat; then nobody reads this.
            let _ = repeats.send(res.clone());
        }
        if let Some(tx) = answer.tx {
            // The appender may have given up waiting; then nobody reads this.
            let _ = tx.send(res);
        }
        self.retire_if_crowded(ctx);
    }

    /// Continues an append whose first step was asynchronous (a head load or a rid
    /// look-up), now that `step` is known; `tx` answers its sender.
    fn deliver(&mut self, step: Step, tx: Option<Reply>, ctx: &mut Context<Self>) {
        match step {
            Step::Done(res) => self.finish(Answer { tx, repeats: None }, res, ctx),
            Step::Sent(tag) => attach(&self.inflight, tag, tx),
            Step::Wait(next) => {
                ctx.spawn(next.map(move |step, act: &mut Self, ctx| act.deliver(step, tx, ctx)));
            }
        }
    }

    /// Re-links a refused record onto the anchor's head and sends it again (the head was
    /// reloaded first by the [`Relink`] handler if needed).
    fn relink_ready(
        &mut self,
        record: Arc<LedgerRecord>,
        wait_committed: bool,
        deadline: Instant,
        attempt: u32,
        answer: Answer,
        ctx: &mut Context<Self>,
    ) {
        let relinked = match &self.state {
            State::Failed(e) => Err(e.clone()),
            _ => relinked(&record, self.head, self.last_ts),
        };
        match relinked {
            Ok(r) => {
                self.send(Arc::new(r), wait_committed, deadline, attempt, answer, ctx);
            }
            Err(e) => self.finish(answer, Err(e), ctx),
        }
    }

    /// The append continues once the actor is ready: either now or after a head reload.
    fn process(&mut self, new: NewRecord, wait_committed: bool, ctx: &mut Context<Self>) -> Step {
        let canonical = match validate_new_record(&new, &self.settings.limits) {
            Ok(c) => c,
            Err(e) => {
                // A refused payload may be nested too deep for a recursive drop.
                ledger_entities::validate::dispose(new.payload);
                return Step::Done(Err(e.into()));
            }
        };
        if new.anchor_id != self.anchor_id {
            return Step::Done(Err(LedgerError::Internal(format!(
                "record for anchor {} sent to the actor of {}",
                new.anchor_id, self.anchor_id
            ))));
        }
        if self.state == State::NeedsReload {
            self.load_head(ctx);
            // The wait above holds the mailbox and every spawned future, so this continuation
            // runs after the reload.
            return Step::Wait(Box::pin(ActorFutureExt::map(
                fut::ready(()),
                move |(), act: &mut Self, ctx| {
                    act.process_ready(new, canonical, wait_committed, ctx)
                },
            )));
        }
        self.process_ready(new, canonical, wait_committed, ctx)
    }

    fn process_ready(
        &mut self,
        new: NewRecord,
        canonical: Payload,
        wait_committed: bool,
        ctx: &mut Context<Self>,
    ) -> Step {
        if let State::Failed(e) = &self.state {
            return Step::Done(Err(e.clone()));
        }
        let Some(rid) = new.rid else {
            return self.commit(new, Uuid::now_v7(), canonical, wait_committed, ctx);
        };
        if let Some(replay) = self.replay_pending(rid, &new) {
            return replay;
        }
        // A client rid: look it up in the store before committing (idempotency).
        self.busy += 1;
        let store = Arc::clone(self.settings.store());
        // On PostgreSQL a task of its own, for the reason given in `load_head`. The memory
        // store answers on the first poll: there the look-up and the insert stay one step of
        // this actor, so concurrent repeats of a rid find each other.
        let lookup: BoxFuture<'static, Result<Option<Arc<LedgerRecord>>, LedgerError>> =
            if store.backend() == crate::config::Backend::Memory {
                async move { store.get(rid).await }.boxed()
            } else {
                let task = actix_rt::spawn(async move { store.get(rid).await });
                async move {
                    task.await.unwrap_or_else(|e| {
                        Err(LedgerError::Internal(format!(
                            "rid lookup task failed: {e}"
                        )))
                    })
                }
                .boxed()
            };
        Step::Wait(Box::pin(fut::wrap_future(lookup).map(
            move |found, act: &mut Self, ctx| {
                act.busy -= 1;
                match found {
                    // PostgreSQL is down (the writer is buffering): the rid cannot be
                    // checked now. The drain skips a rid already stored (same content), so
                    // the record still lands exactly once.
                    Err(LedgerError::Unavailable(_)) => match act.replay_pending(rid, &new) {
                        Some(replay) => replay,
                        None => act.commit(new, rid, canonical, wait_committed, ctx),
                    },
                    Err(e) => Step::Done(Err(e)),
                    Ok(Some(stored)) => {
                        let durability =
                            crate::store::durability_of(act.settings.store().backend());
                        Step::Done(replay_stored(stored, &new, durability))
                    }
                    Ok(None) => match act.replay_pending(rid, &new) {
                        Some(replay) => replay,
                        None => act.commit(new, rid, canonical, wait_committed, ctx),
                    },
                }
            },
        )))
    }

    /// An in-flight record with this rid answers the repeat once it is settled.
    fn replay_pending(&self, rid: Uuid, new: &NewRecord) -> Option<Step> {
        let (record, outcome) = self.pending.get(&rid)?;
        let record = Arc::clone(record);
        match record.same_content(new) {
            Ok(true) => Some(Step::Wait(Box::pin(fut::wrap_future(outcome.clone()).map(
                |res: Result<AppendAck, LedgerError>, _act: &mut Self, _ctx| {
                    Step::Done(res.map(|ack| AppendAck {
                        replayed: true,
                        ..ack
                    }))
                },
            )))),
            Ok(false) => Some(Step::Done(Err(LedgerError::Conflict {
                rid,
                reason: "an in-flight record has this rid with different content".into(),
            }))),
            Err(e) => Some(Step::Done(Err(e.into()))),
        }
    }
}

/// Answer for a repeated client rid that is already stored.
fn replay_stored(
    stored: Arc<LedgerRecord>,
    new: &NewRecord,
    durability: Durability,
) -> Result<AppendAck, LedgerError> {
    if stored.same_content(new)? {
        Ok(AppendAck {
            record: stored,
            durability,
            replayed: true,
        })
    } else {
        Err(LedgerError::Conflict {
            rid: stored.rid,
            reason: if stored.anchor_id == new.anchor_id {
                "stored with different content".into()
            } else {
                format!("stored in anchor {}", stored.anchor_id)
            },
        })
    }
}

impl Actor for ChainActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.settings.mailbox_capacity);
        crate::metrics::anchor_started();
        self.load_head(ctx);
        if self.router.is_some() {
            let every = (self.settings.passivate_after / 4)
                .clamp(Duration::from_millis(1), Duration::from_secs(5));
            ctx.run_interval(every, |act, ctx| act.maybe_passivate(ctx));
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        crate::metrics::anchor_stopped();
    }
}

// ---------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------

/// Validates, hashes and persists one record; answers when it is stored (memory: at once,
/// in this handler) or when the writer settles it (an [`Acks`] message, see
/// [`AppendAnswer`]). A stored or in-flight client rid with the same content returns that
/// record (`replayed`); with other content it is a [`LedgerError::Conflict`].
impl Handler<Append> for ChainActor {
    type Result = AppendAnswer;

    fn handle(&mut self, msg: Append, ctx: &mut Context<Self>) -> Self::Result {
        self.last_active = Instant::now();
        match &self.state {
            State::Passivating => {
                return AppendAnswer(Answering::Now(Err(LedgerError::Retired)));
            }
            State::Failed(e) => {
                // Leave the record with the sender and retire, so the next append starts a
                // fresh actor that tries to load the head again. The answer is sent right
                // after this handler returns, so the typed error reaches the caller although
                // the actor is stopping.
                let e = e.clone();
                self.retire(ctx);
                return AppendAnswer(Answering::Now(Err(e)));
            }
            State::Loading | State::Ready | State::NeedsReload => {}
        }
        let Some(new) = msg.take() else {
            return AppendAnswer(Answering::Now(Err(LedgerError::Internal(
                "append withdrawn by its sender".into(),
            ))));
        };
        let wait_committed = msg.wait_committed;
        // Taken: the message leaves the mailbox depth now (its ticket), so that
        // `retire_if_crowded` below sees only appends still queued.
        drop(msg);
        self.unanswered += 1;
        match self.process(new, wait_committed, ctx) {
            Step::Done(res) => {
                self.unanswered -= 1;
                self.retire_if_crowded(ctx);
                AppendAnswer(Answering::Now(res))
            }
            Step::Sent(tag) => AppendAnswer(Answering::Sent {
                tag,
                inflight: Rc::clone(&self.inflight),
            }),
            Step::Wait(next) => AppendAnswer(Answering::Later(next)),
        }
    }
}

/// Outcomes of this actor's records from the writer (one message per settled batch): each
/// is settled — answered, or re-linked — in `ChainActor::settle`.
impl Handler<Acks> for ChainActor {
    type Result = ();

    fn handle(&mut self, msg: Acks, ctx: &mut Context<Self>) {
        for (tag, outcome) in msg.0 {
            let entry = self.inflight.borrow_mut().remove(&tag);
            if let Some(entry) = entry {
                self.settle(entry, outcome, ctx);
            } else if let Some(batch) = self.batches.remove(&tag) {
                self.settle_batch(batch, outcome, ctx);
            }
        }
    }
}

/// Starts a new epoch and reloads the head from the store before the next append: the
/// writer moved this anchor's records. Outcomes of records already in flight no longer
/// move the head.
impl Handler<Rebase> for ChainActor {
    type Result = ();

    fn handle(&mut self, _msg: Rebase, _ctx: &mut Context<Self>) {
        self.epoch += 1;
        if self.state == State::Ready {
            self.state = State::NeedsReload;
        }
    }
}

/// Reloads the head if a refusal asked for it (holding the mailbox, like an append), then
/// re-links the record onto it and writes it again; the original append is answered when
/// that settles.
impl Handler<Relink> for ChainActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Relink, ctx: &mut Context<Self>) -> Self::Result {
        self.busy -= 1;
        let Relink {
            record,
            wait_committed,
            deadline,
            attempt,
            answer,
        } = msg;
        if self.state == State::NeedsReload {
            self.load_head(ctx);
            // The wait holds the mailbox and every spawned future: this runs after the reload.
            return Box::pin(ActorFutureExt::map(
                fut::ready(()),
                move |(), act: &mut Self, ctx| {
                    act.relink_ready(record, wait_committed, deadline, attempt, answer, ctx)
                },
            ));
        }
        self.relink_ready(record, wait_committed, deadline, attempt, answer, ctx);
        Box::pin(fut::ready(()))
    }
}
