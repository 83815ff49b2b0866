//! Atomic batches in the chain actor ([`AppendBatch`], `Ledger::append_all`).
//!
//! A batch is checked whole before anything is hashed (limits, validation of every record,
//! anchor, rids repeated inside it), then its client rids are looked up (all stored with the
//! same content: a replay answering the stored records; some stored: `BatchOverlap`), then
//! its expected head is compared with the actor's head, and only then are its records
//! sealed one onto the other. On memory they are inserted with one `insert_now` (checked
//! whole, then applied); on PostgreSQL they travel to the writer as one [`Persist`] unit and
//! are answered by one outcome. A batch expecting [`Expect::Any`] that is refused because
//! its anchor moved is re-linked whole ([`RelinkBatch`]); one expecting a head is answered
//! [`LedgerError::HeadMismatch`] with the store's head instead.

use super::*;

impl ChainActor {
    /// Checks a whole batch before anything is hashed: size limits, each record's validation
    /// and anchor, client rids repeated in it. Returns each record's canonical payload.
    fn check_batch(&self, news: &[NewRecord]) -> Result<Vec<Payload>, LedgerError> {
        let s = &self.settings;
        let too_large = |records, bytes| LedgerError::BatchTooLarge {
            records,
            bytes,
            max_records: s.max_batch_records,
            max_bytes: s.max_batch_bytes,
        };
        if news.is_empty() {
            return Err(LedgerError::InvalidBatch(
                "an atomic append needs at least one record".into(),
            ));
        }
        if news.len() > s.max_batch_records {
            return Err(too_large(news.len(), 0));
        }
        let mut canon = Vec::with_capacity(news.len());
        let mut bytes = 0usize;
        let mut rids = std::collections::HashSet::new();
        for (index, new) in news.iter().enumerate() {
            let refuse = |reason: LedgerError| LedgerError::BatchRefused {
                index,
                rid: new.rid,
                reason: Box::new(reason),
            };
            if new.anchor_id != self.anchor_id {
                return Err(refuse(LedgerError::InvalidBatch(format!(
                    "record for anchor {} in a batch for anchor {}",
                    new.anchor_id, self.anchor_id
                ))));
            }
            if let Some(rid) = new.rid
                && !rids.insert(rid)
            {
                return Err(refuse(LedgerError::Conflict {
                    rid,
                    reason: "the rid appears twice in the batch".into(),
                }));
            }
            let c = validate_new_record(new, &s.limits).map_err(|e| refuse(e.into()))?;
            bytes = bytes.saturating_add(c.as_str().len());
            if bytes > s.max_batch_bytes {
                return Err(too_large(index + 1, bytes));
            }
            canon.push(c);
        }
        Ok(canon)
    }

    /// Looks up the batch's client rids (if any), then commits it or answers the replay.
    fn batch_ready(&mut self, job: BatchJob, ctx: &mut Context<Self>) {
        if let State::Failed(e) = &self.state {
            let _ = job.tx.send(Err(e.clone()));
            return;
        }
        let rids: Vec<Uuid> = job.news.iter().filter_map(|n| n.rid).collect();
        if rids.is_empty() {
            return self.batch_commit(job, ctx);
        }
        let store = Arc::clone(self.settings.store());
        let lookup = async move { look_up(store.as_ref(), &rids).await };
        if self.settings.store().backend() == crate::config::Backend::Memory {
            // The memory store answers on the first poll: look-up and insert stay one step
            // of this actor, so concurrent re-sends of a batch find each other.
            if let Some(found) = lookup.now_or_never() {
                return self.batch_looked_up(job, found, ctx);
            }
            let _ = job.tx.send(Err(LedgerError::Internal(
                "the memory store did not answer a rid look-up at once".into(),
            )));
            return;
        }
        // A task of its own, for the reason given in `load_head`.
        let task = actix_rt::spawn(lookup);
        self.busy += 1;
        ctx.spawn(
            fut::wrap_future(task).map(move |found, act: &mut Self, ctx| {
                act.busy -= 1;
                let found = found.unwrap_or_else(|e| {
                    Err(LedgerError::Internal(format!(
                        "rid lookup task failed: {e}"
                    )))
                });
                act.batch_looked_up(job, found, ctx);
            }),
        );
    }

    fn batch_looked_up(
        &mut self,
        job: BatchJob,
        found: Result<Vec<Option<Arc<LedgerRecord>>>, LedgerError>,
        ctx: &mut Context<Self>,
    ) {
        match found {
            // PostgreSQL is down: the rids cannot be checked now (as for a single append;
            // the drain skips a rid stored with the same content).
            Err(LedgerError::Unavailable(_)) => self.batch_commit(job, ctx),
            Err(e) => {
                let _ = job.tx.send(Err(e));
            }
            Ok(found) => {
                let durability = crate::store::durability_of(self.settings.store().backend());
                match replay_batch(&job.news, found, durability) {
                    Some(answer) => {
                        let _ = job.tx.send(answer);
                    }
                    None => self.batch_commit(job, ctx),
                }
            }
        }
    }

    /// Checks the expected head, seals the records one onto the other and stores them
    /// (memory) or hands them to the writer as one unit.
    fn batch_commit(&mut self, mut job: BatchJob, ctx: &mut Context<Self>) {
        if let Some(expected) = job.expect.expected()
            && expected != self.head
            && !job.reloaded
            && self.settings.driver.shared()
            && self.inflight.borrow().is_empty()
            && self.batches.is_empty()
        {
            // On PostgreSQL another process may have moved the anchor since this actor
            // loaded its head: with nothing of this actor in flight the head may be stale,
            // so reload it once and check again (no false refusal, and the mismatch reports
            // the database's head). A new epoch first: a failed reload then keeps the head.
            job.reloaded = true;
            self.epoch += 1;
            self.load_head(ctx);
            // The wait holds the mailbox and every spawned future: this runs after it.
            ctx.spawn(ActorFutureExt::map(
                fut::ready(()),
                move |(), act: &mut Self, ctx| act.batch_commit(job, ctx),
            ));
            return;
        }
        let BatchJob {
            news,
            canon,
            expect,
            wait_committed,
            tx,
            ..
        } = job;
        if let State::Failed(e) = &self.state {
            let _ = tx.send(Err(e.clone()));
            return;
        }
        if let Some(expected) = expect.expected()
            && expected != self.head
        {
            let _ = tx.send(Err(LedgerError::HeadMismatch {
                anchor_id: self.anchor_id,
                expected,
                current: self.head,
            }));
            return;
        }
        let now = chrono::Utc::now().timestamp_micros();
        let mut prev = self.head;
        let mut last_ts = self.last_ts;
        let mut records = Vec::with_capacity(news.len());
        for (index, (new, c)) in news.into_iter().zip(canon).enumerate() {
            let ts = now.max(last_ts.saturating_add(1));
            let client_rid = new.rid;
            let rid = client_rid.unwrap_or_else(Uuid::now_v7);
            let at = ledger_entities::record::micros_to_datetime(ts);
            match LedgerRecord::seal_canonical(new, rid, at, prev, c) {
                Ok(r) => {
                    prev = Some(r.hash);
                    last_ts = ts;
                    records.push(Arc::new(r));
                }
                Err(e) => {
                    let _ = tx.send(Err(LedgerError::BatchRefused {
                        index,
                        rid: client_rid,
                        reason: Box::new(e.into()),
                    }));
                    return;
                }
            }
        }
        if let Some(outcome) = self.settings.driver.write_now(&records) {
            let answer = match outcome {
                Ok(durability) => {
                    self.head = prev;
                    self.last_ts = last_ts;
                    Ok(BatchAck {
                        records,
                        durability,
                        replayed: false,
                    })
                }
                Err(e) => Err(self.refused_now(e)),
            };
            let _ = tx.send(answer);
            return;
        }
        let flight = BatchFlight {
            records,
            expect,
            wait_committed,
            deadline: Instant::now() + self.settings.relink_for,
            attempt: 1,
            epoch: self.epoch,
            tx,
        };
        self.send_batch(flight, ctx);
    }

    /// Hands a sealed batch to the writer as one [`Persist`] unit under a new tag and moves
    /// the head past it; the outcome comes back in an [`Acks`] message.
    fn send_batch(&mut self, mut f: BatchFlight, ctx: &mut Context<Self>) {
        let (Some(first), Some(last)) = (f.records.first().cloned(), f.records.last().cloned())
        else {
            let _ = f.tx.send(Err(LedgerError::Internal(
                "an empty batch was sealed".into(),
            )));
            return;
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        let msg = Persist {
            record: first,
            rest: f.records[1..].to_vec(),
            strict: f.expect != Expect::Any,
            reply: PersistReply::Batched(AckTo::new(ctx.address().recipient(), tag)),
            wait_committed: f.wait_committed,
            accepted: super::accepted_at(f.deadline, self.settings.relink_for),
        };
        self.settings.driver.submit(msg);
        self.head = Some(last.hash);
        self.last_ts = last.ts_micros();
        self.busy += 1;
        f.epoch = self.epoch;
        self.batches.insert(tag, f);
    }

    /// The writer's outcome for a batch: answered; re-linked whole when its anchor moved
    /// and it expects [`Expect::Any`]; answered [`LedgerError::HeadMismatch`] when it
    /// expects a head.
    pub(super) fn settle_batch(
        &mut self,
        f: BatchFlight,
        outcome: crate::driver::Outcome,
        ctx: &mut Context<Self>,
    ) {
        self.busy -= 1;
        self.last_active = Instant::now();
        let e = match outcome {
            Ok(durability) => {
                let _ = f.tx.send(Ok(BatchAck {
                    records: f.records,
                    durability,
                    replayed: false,
                }));
                return;
            }
            Err(e) => e,
        };
        if f.epoch == self.epoch {
            // As for a single record (`settle`): everything sent after it is doomed.
            self.epoch += 1;
            self.head = f.records.first().and_then(|r| r.prev_hash);
            if self.state == State::Ready {
                self.state = State::NeedsReload;
            }
        }
        if crate::error::stored_by_another_write(&e) {
            return self.batch_replay_taken(f, e, ctx);
        }
        if !anchor_moved(&e) {
            let _ = f.tx.send(Err(e));
            return;
        }
        if f.expect != Expect::Any {
            return self.batch_mismatch(f, ctx);
        }
        crate::metrics::relinked();
        if Instant::now() >= f.deadline {
            let _ = f.tx.send(Err(LedgerError::Contended {
                anchor_id: self.anchor_id,
                attempts: f.attempt,
            }));
            return;
        }
        self.busy += 1;
        ctx.address().do_send(RelinkBatch(f));
    }

    /// A batch expecting a head was refused because its anchor moved: answer the head the
    /// store has now (the winner's).
    fn batch_mismatch(&mut self, f: BatchFlight, ctx: &mut Context<Self>) {
        let store = Arc::clone(self.settings.store());
        let anchor = self.anchor_id;
        let task = actix_rt::spawn(async move { store.head(anchor).await });
        self.busy += 1;
        let expected = f.expect.expected().flatten();
        ctx.spawn(
            fut::wrap_future(task).map(move |head, act: &mut Self, _ctx| {
                act.busy -= 1;
                let answer = match head {
                    Ok(Ok(head)) => Err(LedgerError::HeadMismatch {
                        anchor_id: anchor,
                        expected,
                        current: head.map(|h| h.hash),
                    }),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(LedgerError::Internal(format!("head load task failed: {e}"))),
                };
                let _ = f.tx.send(answer);
            }),
        );
    }

    /// A batch refused because a rid of it is stored under another hash (another process
    /// sealed the same batch at the same moment): the stored records answer as a replay if
    /// every one is the same record; else the conflict, naming the record.
    fn batch_replay_taken(
        &mut self,
        f: BatchFlight,
        refusal: LedgerError,
        ctx: &mut Context<Self>,
    ) {
        let store = Arc::clone(self.settings.store());
        let rids: Vec<Uuid> = f.records.iter().map(|r| r.rid).collect();
        let task = actix_rt::spawn(async move { look_up(store.as_ref(), &rids).await });
        self.busy += 1;
        ctx.spawn(
            fut::wrap_future(task).map(move |found, act: &mut Self, _ctx| {
                act.busy -= 1;
                let answer = match found {
                    Ok(Ok(found))
                        if found.len() == f.records.len()
                            && found
                                .iter()
                                .zip(&f.records)
                                .all(|(s, r)| s.as_ref().is_some_and(|s| s.same_record(r))) =>
                    {
                        Ok(BatchAck {
                            records: found.into_iter().flatten().collect(),
                            durability: crate::store::durability_of(act.settings.store().backend()),
                            replayed: true,
                        })
                    }
                    _ => {
                        let rid = match &refusal {
                            LedgerError::Conflict { rid, .. } => Some(*rid),
                            _ => None,
                        };
                        let index = f.records.iter().position(|r| Some(r.rid) == rid);
                        match (index, rid) {
                            (Some(index), Some(rid)) => Err(LedgerError::BatchRefused {
                                index,
                                rid: Some(rid),
                                reason: Box::new(LedgerError::Conflict {
                                    rid,
                                    reason: "stored with different content".into(),
                                }),
                            }),
                            _ => Err(refusal),
                        }
                    }
                };
                let _ = f.tx.send(answer);
            }),
        );
    }

    /// Re-links a refused batch onto the anchor's head, record after record, and sends it
    /// again (the head was reloaded first by the [`RelinkBatch`] handler if needed).
    fn relink_batch_ready(&mut self, mut f: BatchFlight, ctx: &mut Context<Self>) {
        if let State::Failed(e) = &self.state {
            let _ = f.tx.send(Err(e.clone()));
            return;
        }
        let mut head = self.head;
        let mut last_ts = self.last_ts;
        let mut moved = Vec::with_capacity(f.records.len());
        for r in &f.records {
            match relinked(r, head, last_ts) {
                Ok(n) => {
                    head = Some(n.hash);
                    last_ts = n.ts_micros();
                    moved.push(Arc::new(n));
                }
                Err(e) => {
                    let _ = f.tx.send(Err(e));
                    return;
                }
            }
        }
        f.records = moved;
        f.attempt += 1;
        self.send_batch(f, ctx);
    }
}

/// The stored record of each rid (`None`: not stored), in the order of `rids`: one query on
/// PostgreSQL (`get_many`).
async fn look_up(
    store: &dyn LedgerStore,
    rids: &[Uuid],
) -> Result<Vec<Option<Arc<LedgerRecord>>>, LedgerError> {
    let found: HashMap<Uuid, Arc<LedgerRecord>> = store
        .get_many(rids)
        .await?
        .into_iter()
        .map(|r| (r.rid, r))
        .collect();
    Ok(rids.iter().map(|rid| found.get(rid).cloned()).collect())
}

/// A batch on its way through the actor, before it is sealed.
pub(super) struct BatchJob {
    news: Vec<NewRecord>,
    canon: Vec<Payload>,
    expect: Expect,
    wait_committed: bool,
    tx: tokio::sync::oneshot::Sender<Result<BatchAck, LedgerError>>,
    /// The head was reloaded for this batch's expectation already.
    reloaded: bool,
}

/// The answer to a batch whose client rids were looked up (`found`, in the order of the
/// records that have one): `None` when none is stored (a new batch), the stored records
/// when every record is stored with the same content (a replay), else the typed refusal.
fn replay_batch(
    news: &[NewRecord],
    found: Vec<Option<Arc<LedgerRecord>>>,
    durability: Durability,
) -> Option<Result<BatchAck, LedgerError>> {
    let stored = found.iter().flatten().count();
    if stored == 0 {
        return None;
    }
    if stored < news.len() {
        return Some(Err(LedgerError::BatchOverlap {
            stored,
            records: news.len(),
        }));
    }
    let mut records = Vec::with_capacity(news.len());
    for (index, (new, s)) in news.iter().zip(found).enumerate() {
        // Every record has a client rid and is stored (counted above).
        let Some(s) = s else {
            return Some(Err(LedgerError::Internal("rid look-up out of step".into())));
        };
        let refuse = |reason: LedgerError| {
            Some(Err(LedgerError::BatchRefused {
                index,
                rid: new.rid,
                reason: Box::new(reason),
            }))
        };
        match s.same_content(new) {
            Ok(true) if s.anchor_id == new.anchor_id => records.push(s),
            Ok(_) => {
                return refuse(LedgerError::Conflict {
                    rid: s.rid,
                    reason: if s.anchor_id == new.anchor_id {
                        "stored with different content".into()
                    } else {
                        format!("stored in anchor {}", s.anchor_id)
                    },
                });
            }
            Err(e) => return refuse(e.into()),
        }
    }
    Some(Ok(BatchAck {
        records,
        durability,
        replayed: true,
    }))
}

/// Checks, looks up and commits a batch; answers once it is stored (memory) or settled by
/// the writer. The answer is a future of this actor (the batch counts as busy until it is
/// answered, so the actor never passivates under it).
impl Handler<AppendBatch> for ChainActor {
    type Result = ResponseActFuture<Self, Result<BatchAck, LedgerError>>;

    fn handle(&mut self, msg: AppendBatch, ctx: &mut Context<Self>) -> Self::Result {
        self.last_active = Instant::now();
        match &self.state {
            State::Passivating => return Box::pin(fut::ready(Err(LedgerError::Retired))),
            State::Failed(e) => {
                // As for `Append`: leave the records with the sender and retire.
                let e = e.clone();
                self.retire(ctx);
                return Box::pin(fut::ready(Err(e)));
            }
            State::Loading | State::Ready | State::NeedsReload => {}
        }
        let Some(news) = msg.take() else {
            return Box::pin(fut::ready(Err(LedgerError::Internal(
                "append withdrawn by its sender".into(),
            ))));
        };
        let expect = msg.expect;
        let wait_committed = msg.wait_committed;
        drop(msg);
        let canon = match self.check_batch(&news) {
            Ok(c) => c,
            Err(e) => {
                for n in news {
                    // A refused payload may be nested too deep for a recursive drop.
                    ledger_entities::validate::dispose(n.payload);
                }
                return Box::pin(fut::ready(Err(e)));
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = BatchJob {
            news,
            canon,
            expect,
            wait_committed,
            tx,
            reloaded: false,
        };
        self.busy += 1;
        if self.state == State::NeedsReload {
            // The wait holds the mailbox and every spawned future: the continuation below
            // runs after the reload.
            self.load_head(ctx);
        }
        let start = ActorFutureExt::map(fut::ready(()), move |(), act: &mut Self, ctx| {
            act.batch_ready(job, ctx)
        });
        Box::pin(start.then(move |(), _act, _ctx| fut::wrap_future(rx)).map(
            |res, act: &mut Self, _ctx| {
                act.busy -= 1;
                res.unwrap_or_else(|_| {
                    Err(LedgerError::Internal(
                        "chain actor stopped before answering the batch".into(),
                    ))
                })
            },
        ))
    }
}

/// Reloads the head if a refusal asked for it, then re-links the batch onto it and writes
/// it again.
impl Handler<RelinkBatch> for ChainActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: RelinkBatch, ctx: &mut Context<Self>) -> Self::Result {
        self.busy -= 1;
        let f = msg.0;
        if self.state == State::NeedsReload {
            self.load_head(ctx);
            return Box::pin(ActorFutureExt::map(
                fut::ready(()),
                move |(), act: &mut Self, ctx| act.relink_batch_ready(f, ctx),
            ));
        }
        self.relink_batch_ready(f, ctx);
        Box::pin(fut::ready(()))
    }
}
