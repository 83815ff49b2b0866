//! Subscriptions: the ledger's records in log order, each with its position (its leaf
//! index in the transparency log), from any position on — catch-up from storage, then live.
//!
//! # What a subscriber sees, and when
//!
//! A record's **position** is the leaf index the integrator gave it: positions are 0, 1, 2, …
//! with no gap or duplicate, and once written they never change (the log's invariants). A
//! subscription delivers position `p` only after every position below it, so a consumer
//! that stores the last position it handled and resumes with `after: Some(that)` gets
//! exactly the records after it: no gap, no duplicate, whichever process wrote them.
//!
//! A record becomes **visible** to subscribers once it is integrated (has a position), which
//! is before the next checkpoint covers it: the integrator assigns positions in rounds that
//! an acknowledged append in this process starts at once (at most every
//! [`crate::integrator::WAKE_GAP`]; records written by other processes, drained after an
//! outage or imported wait for the next timed round, a quarter checkpoint interval,
//! 50–250 ms), and checkpoints are signed on their own interval. A consumer that wants only
//! positions a checkpoint covers (so that every record it acts on has a receipt) sets
//! [`SubscribeOptions::checkpointed_only`].
//!
//! # How it reads
//!
//! A task pulls pages of [`SubscribeOptions::page`] records ([`LogStore::records`]: one
//! query per page on PostgreSQL, the log joined to the records) into a channel that holds
//! one page: a slow consumer stops the task, so memory stays at about three pages whatever
//! the backlog. Caught up, it waits for this process's integrator to publish progress, or
//! at most [`SubscribeOptions::poll`] (another process may integrate). A connectivity error
//! ([`LedgerError::Unavailable`]) is retried with back-off for as long as it lasts and
//! never ends the stream; any other error is delivered once and ends it (a data error is
//! not an outage). Dropping the [`Subscription`] stops its task.
//!
//! # Metrics
//!
//! `ledger_subscriptions_open` (reading tasks running), `ledger_subscription_delivered_total`
//! (records handed over), `ledger_subscription_lag_seconds` (per page handed over, from its
//! last record's `ts` to the hand-over: the live lag while caught up) and
//! `ledger_subscription_read_retries_total` (reads that found the log unreachable).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use backon::BackoffBuilder;
use ledger_entities::LedgerRecord;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::error::LedgerError;
use crate::integrator::{LogListener, LogStore, Progress};

/// Records per page read, by default.
pub const DEFAULT_PAGE: usize = 5_000;
/// Longest wait, caught up, before looking for records another process integrated.
pub const DEFAULT_POLL: Duration = Duration::from_millis(100);
/// Pages read ahead while behind (each on its own connection of the subscription's pool).
const READ_AHEAD: usize = 2;
/// Shortest and longest pause between reads while the database is unreachable.
const OUTAGE_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// What to subscribe to.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Deliver the records after this position (`None`: from position 0).
    pub after: Option<u64>,
    /// Go on live after catching up (`true`), or end at the log's size when the
    /// subscription started (`false`: what `ledger tail` without `--follow` prints).
    pub follow: bool,
    /// Deliver a position only once a stored checkpoint covers it (signed, with a
    /// `checkpoint_key`): later than integration by up to the checkpoint interval.
    pub checkpointed_only: bool,
    /// Deliver only this anchor's records (positions keep their log values, so a resumed
    /// per-anchor subscription is as exact as a whole one). The log is still read in full.
    pub anchor: Option<Uuid>,
    /// Records per page read (1..=100,000; also the memory bound, about three pages).
    pub page: usize,
    /// Longest wait, caught up, before reading again.
    pub poll: Duration,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            after: None,
            follow: true,
            checkpointed_only: false,
            anchor: None,
            page: DEFAULT_PAGE,
            poll: DEFAULT_POLL,
        }
    }
}

/// One delivered record and its position in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    /// The record's leaf index in the transparency log (its global position).
    pub position: u64,
    /// The record.
    pub record: Arc<LedgerRecord>,
}

type Page = Result<Vec<Delivered>, LedgerError>;
type ReadAhead = tokio::task::JoinHandle<Result<Vec<(u64, Arc<LedgerRecord>)>, LedgerError>>;

/// Stops every read ahead (their pages are not delivered).
fn drop_all(ahead: &mut VecDeque<(u64, usize, ReadAhead)>) {
    for (_, _, read) in ahead.drain(..) {
        read.abort();
    }
}

/// A running subscription: a [`futures::Stream`] of [`Delivered`] records in log order.
/// An `Err` item is the last one (see the module doc for what ends a subscription; an
/// outage does not). Dropping it stops reading.
pub struct Subscription {
    rx: mpsc::Receiver<Page>,
    page: std::vec::IntoIter<Delivered>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("buffered", &self.page.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl futures::Stream for Subscription {
    type Item = Result<Delivered, LedgerError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(d) = this.page.next() {
                return Poll::Ready(Some(Ok(d)));
            }
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(page))) => this.page = page.into_iter(),
            }
        }
    }
}

impl Subscription {
    /// A subscription that delivers `error` and ends.
    pub fn failed(error: LedgerError) -> Self {
        let (tx, rx) = mpsc::channel(1);
        // A fresh channel of capacity 1 has room for one item.
        let _ = tx.try_send(Err(error));
        Self {
            rx,
            page: Vec::new().into_iter(),
            task: None,
        }
    }
}

/// Subscribes to `log`: its reading task runs on the current tokio runtime (a subscription
/// made outside one delivers [`LedgerError::Internal`]). `progress` is this process's
/// integrator's, when it has one: caught up, the subscription reads again as soon as it
/// publishes.
pub fn subscribe(
    log: Arc<dyn LogStore>,
    progress: Option<watch::Receiver<Progress>>,
    options: SubscribeOptions,
) -> Subscription {
    if options.page == 0 || options.page > 100_000 {
        return Subscription::failed(LedgerError::Config(format!(
            "subscription page of {} records; 1..=100000",
            options.page
        )));
    }
    let Some(next) = options.after.map_or(Some(0), |a| a.checked_add(1)) else {
        return Subscription::failed(LedgerError::Config(
            "subscription after the largest position: none follows it".into(),
        ));
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Subscription::failed(LedgerError::Internal(
            "a subscription needs a tokio runtime (start it inside the ledger's System)".into(),
        ));
    };
    let (tx, rx) = mpsc::channel(1);
    let feed = Feed {
        log,
        progress,
        options,
        next,
        tx,
        listener: Listen::Untried,
    };
    Subscription {
        rx,
        page: Vec::new().into_iter(),
        task: Some(runtime.spawn(feed.run())),
    }
}

/// The reading task of a subscription.
struct Feed {
    log: Arc<dyn LogStore>,
    progress: Option<watch::Receiver<Progress>>,
    options: SubscribeOptions,
    /// The next position to deliver.
    next: u64,
    tx: mpsc::Sender<Page>,
    listener: Listen,
}

/// The log's listener ([`LogStore::listen`]), made at the first wait.
enum Listen {
    Untried,
    Off,
    On(Box<dyn LogListener>),
}

/// Counts an open subscription in [`crate::metrics::SUBSCRIPTIONS_OPEN`] while it lives: the
/// reading task holds it, so an aborted task (a dropped [`Subscription`]) counts down too.
struct Open;

impl Open {
    fn new() -> Self {
        crate::metrics::subscription_open(true);
        Self
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        crate::metrics::subscription_open(false);
    }
}

impl Feed {
    async fn run(mut self) {
        let _open = Open::new();
        let end = if self.options.follow {
            None
        } else {
            match self
                .through_outage(|log| async move { log.size().await })
                .await
            {
                Ok(size) => Some(size),
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
            }
        };
        // How far a checkpoint covers, as last read (with `checkpointed_only`).
        let mut covered = 0u64;
        // Pages being read ahead, in position order: (from, limit, read).
        let mut ahead: VecDeque<(u64, usize, ReadAhead)> = VecDeque::new();
        loop {
            if end.is_some_and(|end| self.next >= end) {
                return;
            }
            if self.options.checkpointed_only && covered <= self.next {
                covered = match self
                    .through_outage(|log| async move { log.latest_checkpoint().await })
                    .await
                {
                    Ok(c) => c.map_or(0, |c| c.size),
                    Err(e) => {
                        let _ = self.tx.send(Err(e)).await;
                        return;
                    }
                };
            }
            let limit = self.limit(self.next, end, covered);
            let from = self.next;
            let read_ahead = match ahead.front() {
                Some((f, l, _)) if *f == from && *l == limit => ahead.pop_front(),
                _ => None,
            };
            let page = match read_ahead {
                Some((_, _, read)) => match read.await {
                    Ok(Ok(rows)) => Some(rows),
                    // An outage or any error: read again below, where outages are waited out
                    // and a data error is reported.
                    _ => None,
                },
                None => None,
            };
            let page = match page {
                Some(rows) => rows,
                None if limit == 0 => Vec::new(),
                None => {
                    drop_all(&mut ahead);
                    match self
                        .through_outage(|log| async move { log.records(from, limit).await })
                        .await
                    {
                        Ok(rows) => rows,
                        Err(e) => {
                            let _ = self.tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
            };
            let Some((last, _)) = page.last() else {
                drop_all(&mut ahead);
                if self.tx.is_closed() {
                    return;
                }
                self.wait().await;
                continue;
            };
            self.next = last + 1;
            if page.len() == limit {
                // Behind: the listener is not read until this subscription catches up, and
                // PostgreSQL keeps every notification an unread listener has not taken
                // (a slow consumer would grow the server's notification queue): give it up
                // now (its connection unlistens), listen again at the next wait.
                if matches!(self.listener, Listen::On(_)) {
                    self.listener = Listen::Untried;
                }
                // Keep the next pages reading while this one is delivered, so the database and
                // the decoding of the rows overlap.
                let mut at = ahead.back().map_or(self.next, |(f, l, _)| f + *l as u64);
                while ahead.len() < READ_AHEAD {
                    let l = self.limit(at, end, covered);
                    if l == 0 {
                        break;
                    }
                    let log = Arc::clone(&self.log);
                    ahead.push_back((at, l, tokio::spawn(async move { log.records(at, l).await })));
                    at += l as u64;
                }
            } else {
                // Caught up: pages read ahead past a short one may not start where the next
                // delivery does.
                drop_all(&mut ahead);
            }
            let out: Vec<Delivered> = page
                .into_iter()
                .filter(|(_, r)| self.options.anchor.is_none_or(|a| r.anchor_id == a))
                .map(|(position, record)| Delivered { position, record })
                .collect();
            // Waits here while the consumer is a page behind: the back-pressure.
            let Some(last_ts) = out.last().map(|d| d.record.ts) else {
                continue;
            };
            let records = out.len();
            if self.tx.send(Ok(out)).await.is_err() {
                drop_all(&mut ahead);
                return;
            }
            let lag = (chrono::Utc::now() - last_ts).to_std().unwrap_or_default();
            crate::metrics::subscription_delivered(records, lag.as_secs_f64());
        }
    }

    /// Records to read from `from`: a page, cut at the end (without `follow`) and at what a
    /// checkpoint covers (with `checkpointed_only`).
    fn limit(&self, from: u64, end: Option<u64>, covered: u64) -> usize {
        let mut limit = self.options.page as u64;
        if let Some(end) = end {
            limit = limit.min(end.saturating_sub(from));
        }
        if self.options.checkpointed_only {
            limit = limit.min(covered.saturating_sub(from));
        }
        usize::try_from(limit).unwrap_or(usize::MAX)
    }

    /// Caught up: until this process's integrator publishes progress, the log's listener
    /// hears another process's integrator grow it, or `poll` passes.
    async fn wait(&mut self) {
        if matches!(self.listener, Listen::Untried) {
            self.listener = match self.log.listen().await {
                // Listening now: read once more before waiting, for what was integrated
                // before the listener was (its notification is not heard).
                Ok(Some(l)) => return self.listener = Listen::On(l),
                Ok(None) => Listen::Off,
                // Unreachable now: this wait polls, the next one tries again.
                Err(_) => Listen::Untried,
            };
        }
        let poll = tokio::time::sleep(self.options.poll);
        tokio::pin!(poll);
        let progress = async {
            match self.progress.as_mut() {
                Some(p) => p.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let listened = async {
            match &mut self.listener {
                Listen::On(l) => l.changed().await.is_ok(),
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            published = progress => {
                if !published {
                    // The integrator stopped: the listener and polling from now on.
                    self.progress = None;
                }
            }
            heard = listened => {
                if !heard {
                    // The listener's database is unreachable: poll this time.
                    poll.await;
                }
            }
            _ = &mut poll => {}
        }
    }

    /// Runs `read` until it succeeds or fails with something other than an outage, waiting
    /// with back-off between tries (and giving up only when the subscriber is gone).
    async fn through_outage<T, F, Fut>(&self, read: F) -> Result<T, LedgerError>
    where
        F: Fn(Arc<dyn LogStore>) -> Fut,
        Fut: std::future::Future<Output = Result<T, LedgerError>>,
    {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(OUTAGE_BACKOFF.0)
            .with_max_delay(OUTAGE_BACKOFF.1)
            .with_jitter()
            .without_max_times()
            .build();
        let mut failures = 0u64;
        loop {
            match read(Arc::clone(&self.log)).await {
                Err(LedgerError::Unavailable(reason)) => {
                    failures += 1;
                    crate::metrics::subscription_read_retried();
                    if failures == 1 {
                        tracing::warn!(%reason, position = self.next, "subscription: the log is unreachable; retrying until it returns");
                    }
                    if self.tx.is_closed() {
                        return Err(LedgerError::Unavailable(reason));
                    }
                    tokio::time::sleep(backoff.next().unwrap_or(OUTAGE_BACKOFF.1)).await;
                }
                other => {
                    if failures > 0 {
                        tracing::info!(
                            failures,
                            position = self.next,
                            "subscription: the log is reachable again"
                        );
                    }
                    return other;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use futures::StreamExt;
    use ledger_entities::NewRecord;
    use ledger_tlog::tile::{TileId, TileSet};

    use super::*;
    use crate::integrator::log::{
        Commit, LeafEntry, LogState, Pending, StoredCheckpoint, Unlogged, Watermark,
    };

    /// A log of `size` leaves (every one the same record), counting its page reads, whose
    /// first `outages` reads fail as an unreachable database would, and whose read of leaf
    /// `broken` fails as a data error.
    struct FakeLog {
        size: u64,
        record: Arc<LedgerRecord>,
        reads: AtomicUsize,
        outages: AtomicUsize,
        broken: Option<u64>,
        froms: Mutex<Vec<u64>>,
    }

    impl FakeLog {
        fn new(size: u64) -> Self {
            let record = LedgerRecord::seal(
                NewRecord::new(Uuid::from_u128(1), "s", "k", serde_json::json!({}), "p"),
                Uuid::from_u128(2),
                DateTime::<Utc>::UNIX_EPOCH,
                None,
            )
            .unwrap();
            Self {
                size,
                record: Arc::new(record),
                reads: AtomicUsize::new(0),
                outages: AtomicUsize::new(0),
                broken: None,
                froms: Mutex::new(Vec::new()),
            }
        }
    }

    fn nothing<T>() -> Result<T, LedgerError> {
        Err(LedgerError::Internal("not used by subscriptions".into()))
    }

    #[async_trait]
    impl LogStore for FakeLog {
        async fn acquire(&self, _: Uuid, _: Duration) -> Result<bool, LedgerError> {
            nothing()
        }
        async fn release(&self, _: Uuid) -> Result<(), LedgerError> {
            nothing()
        }
        async fn load(&self) -> Result<LogState, LedgerError> {
            nothing()
        }
        async fn pending(&self, _: Watermark, _: usize) -> Result<Pending, LedgerError> {
            nothing()
        }
        async fn backlog(
            &self,
            _: Watermark,
            _: u64,
        ) -> Result<(u64, Option<DateTime<Utc>>), LedgerError> {
            nothing()
        }
        async fn commit(&self, _: Uuid, _: Duration, _: Commit) -> Result<(), LedgerError> {
            nothing()
        }
        async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, LedgerError> {
            Ok(None)
        }
        async fn add_cosignature(
            &self,
            _: Uuid,
            _: &str,
            _: &str,
            _: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), LedgerError> {
            nothing()
        }
        async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, LedgerError> {
            nothing()
        }
        async fn leaf_index(&self, _: Uuid) -> Result<Option<u64>, LedgerError> {
            nothing()
        }
        async fn read_tiles(&self, _: &[TileId]) -> Result<TileSet, LedgerError> {
            nothing()
        }
        async fn leaves(&self, _: u64, _: usize) -> Result<Vec<LeafEntry>, LedgerError> {
            nothing()
        }
        async fn records(
            &self,
            from: u64,
            limit: usize,
        ) -> Result<Vec<(u64, Arc<LedgerRecord>)>, LedgerError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.froms.lock().unwrap().push(from);
            if self
                .outages
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(LedgerError::Unavailable("connection refused".into()));
            }
            if self.broken == Some(from) {
                return Err(LedgerError::Database("a row that does not decode".into()));
            }
            let end = (from + limit as u64).min(self.size);
            let end = self
                .broken
                .filter(|b| *b >= from)
                .map_or(end, |b| end.min(b));
            Ok((from..end).map(|i| (i, Arc::clone(&self.record))).collect())
        }
        async fn size(&self) -> Result<u64, LedgerError> {
            Ok(self.size)
        }
        async fn unlogged(&self, _: usize) -> Result<Vec<Unlogged>, LedgerError> {
            nothing()
        }
        async fn misordered(&self, _: usize) -> Result<Vec<(Uuid, Uuid)>, LedgerError> {
            nothing()
        }
        async fn unfaithful_payloads(&self, _: usize) -> Result<Vec<(Uuid, String)>, LedgerError> {
            nothing()
        }
    }

    fn options(page: usize) -> SubscribeOptions {
        SubscribeOptions {
            page,
            follow: false,
            ..SubscribeOptions::default()
        }
    }

    /// A consumer that stops taking records stops the reading: however long the log, the
    /// subscription has read at most the page handed over, one in the channel, the pages
    /// read ahead and one more in flight — bounded memory, no unbounded buffer.
    #[tokio::test]
    async fn a_slow_consumer_stops_the_reading() {
        let log = Arc::new(FakeLog::new(1_000_000));
        let mut sub = subscribe(log.clone(), None, options(10));
        assert_eq!(sub.next().await.unwrap().unwrap().position, 0);
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        let reads = log.reads.load(Ordering::SeqCst);
        assert!(reads <= 3 + READ_AHEAD, "{reads} pages read");
        // Taking more lets it go on, in order, with no gap.
        for want in 1..500 {
            assert_eq!(sub.next().await.unwrap().unwrap().position, want);
        }
    }

    /// An unreachable database is waited out (the stream neither ends nor yields an error);
    /// every position arrives once, in order, and the subscription ends at the log's size.
    #[tokio::test]
    async fn an_outage_is_waited_out() {
        let log = FakeLog::new(95);
        log.outages.store(3, Ordering::SeqCst);
        let mut sub = subscribe(Arc::new(log), None, options(10));
        let mut got = Vec::new();
        while let Some(item) = sub.next().await {
            got.push(item.unwrap().position);
        }
        assert_eq!(got, (0..95).collect::<Vec<_>>());
    }

    /// Resuming after `p` starts at `p + 1`; a data error is delivered once, after every
    /// record before it, and ends the subscription (it is not retried as an outage).
    #[tokio::test]
    async fn resumes_after_its_position_and_a_data_error_ends_it() {
        let mut log = FakeLog::new(100);
        log.broken = Some(57);
        let log = Arc::new(log);
        let mut sub = subscribe(log.clone(), None, {
            let mut o = options(10);
            o.after = Some(41);
            o
        });
        for want in 42..57 {
            assert_eq!(sub.next().await.unwrap().unwrap().position, want);
        }
        assert!(matches!(
            sub.next().await,
            Some(Err(LedgerError::Database(_)))
        ));
        assert!(sub.next().await.is_none());
        let froms = log.froms.lock().unwrap().clone();
        assert_eq!(froms[0], 42);
        assert!(
            froms.iter().filter(|f| **f == 57).count() <= 2,
            "a data error is not retried: {froms:?}"
        );
    }

    /// Options that cannot be served are refused, not panicked on.
    #[tokio::test]
    async fn bad_options_are_refused() {
        let log: Arc<dyn LogStore> = Arc::new(FakeLog::new(1));
        let mut sub = subscribe(Arc::clone(&log), None, options(0));
        assert!(matches!(
            sub.next().await,
            Some(Err(LedgerError::Config(_)))
        ));
        let mut o = options(10);
        o.after = Some(u64::MAX);
        let mut sub = subscribe(log, None, o);
        assert!(matches!(
            sub.next().await,
            Some(Err(LedgerError::Config(_)))
        ));
        assert!(sub.next().await.is_none());
    }
}
