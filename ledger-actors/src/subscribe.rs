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

impl Feed {
    async fn run(mut self) {
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
                // Behind: keep the next pages reading while this one is delivered, so the
                // database and the decoding of the rows overlap.
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
            if !out.is_empty() && self.tx.send(Ok(out)).await.is_err() {
                drop_all(&mut ahead);
                return;
            }
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
