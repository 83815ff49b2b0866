//! What the ledger measures about itself, for the gauges and for [`crate::Ledger::health`]:
//! mailbox depths, appends in flight and the active backend, and the [`Sampler`] actor that
//! publishes the gauges about once a second.
//!
//! Counters here are plain atomics, cheap enough to keep on every append whether or not a
//! metrics exporter is installed; only the sampler touches the metrics facade (through
//! [`crate::metrics`]'s recording helpers).
//!
//! # Chain mailboxes
//! Each [`crate::chain::Append`] sent by the router carries a [`QueueTicket`] that counts one
//! message against its anchor in [`ChainMailboxes`]; the ticket is dropped when the chain actor's
//! handler has taken the message, or when the message is dropped unhandled (actor stopped, send
//! withdrawn), so the count never drifts. The per-anchor counters are kept only for anchors with
//! messages queued or sent to since the last sample: the sampler prunes idle ones, so the map
//! stays bounded by the live actors however many anchors exist, and metrics always aggregate it
//! into two series (`stat="sum"` and `stat="max"`).
//!
//! # Several ledgers in one process
//! Metrics are process-wide. Counters and `ledger_anchors_active` add up over the ledgers of a
//! process; the sampled gauges show whichever ledger sampled last. Run one ledger per process
//! when its gauges matter (the CLI and a typical host do).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::config::Backend;

/// How often the [`Sampler`] publishes the gauges.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------
// Chain mailbox depths
// ---------------------------------------------------------------------------------------

/// Mailbox depth of a ledger's chain actors, per anchor, aggregated on demand.
#[derive(Debug, Default)]
pub struct ChainMailboxes {
    per_anchor: DashMap<Uuid, Arc<AtomicUsize>>,
}

/// Mailbox depth over all chain actors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MailboxDepth {
    /// Messages queued over all chain actors.
    pub sum: usize,
    /// Messages queued in the deepest chain actor's mailbox.
    pub max: usize,
}

impl ChainMailboxes {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one message about to be sent to `anchor_id`'s actor; dropping the ticket
    /// uncounts it.
    pub fn enqueue(&self, anchor_id: Uuid) -> QueueTicket {
        // Incremented while the map guard is held, so `prune` (which needs the shard's write
        // lock) never removes a counter between the look-up and the increment.
        if let Some(counter) = self.per_anchor.get(&anchor_id) {
            counter.fetch_add(1, Ordering::Relaxed);
            return QueueTicket {
                counter: Arc::clone(counter.value()),
            };
        }
        let counter = self.per_anchor.entry(anchor_id).or_default();
        counter.fetch_add(1, Ordering::Relaxed);
        QueueTicket {
            counter: Arc::clone(counter.value()),
        }
    }

    /// Messages counted for `anchor_id` and not yet taken by its actor's handler.
    pub fn queued(&self, anchor_id: Uuid) -> usize {
        self.per_anchor
            .get(&anchor_id)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Sum and maximum over every anchor's queue. Walks the counters of anchors sent to since
    /// the last [`ChainMailboxes::prune`].
    pub fn depth(&self) -> MailboxDepth {
        self.per_anchor
            .iter()
            .fold(MailboxDepth::default(), |acc, entry| {
                let n = entry.value().load(Ordering::Relaxed);
                MailboxDepth {
                    sum: acc.sum + n,
                    max: acc.max.max(n),
                }
            })
    }

    /// Forgets the anchors with nothing queued (their counters are re-created by the next
    /// send), then returns [`ChainMailboxes::depth`].
    pub fn prune(&self) -> MailboxDepth {
        self.per_anchor
            .retain(|_, counter| counter.load(Ordering::Relaxed) > 0);
        self.depth()
    }

    /// Anchors currently tracked (the map's size; bounded by the live actors between prunes).
    pub fn tracked(&self) -> usize {
        self.per_anchor.len()
    }
}

/// One message counted in [`ChainMailboxes`]; uncounted when dropped.
#[derive(Debug)]
pub struct QueueTicket {
    counter: Arc<AtomicUsize>,
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------
// Active backend
// ---------------------------------------------------------------------------------------

/// Which backend takes the writes.
#[derive(Debug, Clone)]
pub enum ActiveBackend {
    /// Always this one: a memory ledger, or a `postgres` ledger that started on the memory
    /// fallback because the database was unreachable at start (no writer).
    Fixed(Backend),
    /// A `postgres` ledger run by its writer: the writer's flag, set while it is not writing to
    /// PostgreSQL (failover or drain), when the memory fallback takes the writes.
    Writer(Arc<crate::driver::OutageFlag>),
}

impl ActiveBackend {
    /// The backend taking the writes now.
    pub fn get(&self) -> Backend {
        match self {
            ActiveBackend::Fixed(backend) => *backend,
            ActiveBackend::Writer(degraded) if degraded.is_raised() => Backend::Memory,
            ActiveBackend::Writer(_) => Backend::Postgres,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Observer and sampler
// ---------------------------------------------------------------------------------------

/// Everything one ledger measures about itself. The ledger, its router, its chain actors and
/// its storage driver share it.
#[derive(Debug)]
pub struct Observer {
    configured: Backend,
    max_in_flight: usize,
    permits: Arc<Semaphore>,
    mailboxes: Arc<ChainMailboxes>,
    active: ActiveBackend,
    finished: AtomicBool,
}

impl Observer {
    /// An observer of a ledger configured for `configured`, writing to `active`, whose
    /// in-flight appends are the permits taken from `permits` (of `max_in_flight`).
    pub fn new(
        configured: Backend,
        active: ActiveBackend,
        permits: Arc<Semaphore>,
        max_in_flight: usize,
        mailboxes: Arc<ChainMailboxes>,
    ) -> Self {
        Self {
            configured,
            max_in_flight,
            permits,
            mailboxes,
            active,
            finished: AtomicBool::new(false),
        }
    }

    /// The configured backend.
    pub fn configured(&self) -> Backend {
        self.configured
    }

    /// The backend taking the writes now.
    pub fn active(&self) -> Backend {
        self.active.get()
    }

    /// The chain actors' mailbox counters.
    pub fn mailboxes(&self) -> &Arc<ChainMailboxes> {
        &self.mailboxes
    }

    /// Appends holding an in-flight permit (0 once the ledger has shut down).
    pub fn in_flight(&self) -> usize {
        if self.finished.load(Ordering::Acquire) {
            return 0;
        }
        self.max_in_flight
            .saturating_sub(self.permits.available_permits())
    }

    /// The in-flight limit (`max_in_flight`).
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Marks the ledger shut down (shutdown holds every permit while it drains, which is not
    /// appends in flight) and publishes the gauges a last time.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        self.publish();
    }

    /// Publishes the sampled gauges this ledger owns: in-flight appends, chain mailbox depth
    /// (and prunes idle anchors' counters).
    /// (`ledger_backend_active` is set once at start, or by the writer on every swap; the
    /// writer publishes its own gauges.)
    pub fn publish(&self) {
        crate::metrics::in_flight_appends(self.in_flight());
        let chain = self.mailboxes.prune();
        crate::metrics::chain_mailbox_depth(chain.sum, chain.max);
    }
}

/// Calls [`Observer::publish`] every [`SAMPLE_EVERY`] until its Arbiter stops.
pub struct Sampler {
    observer: Arc<Observer>,
}

impl Sampler {
    /// A sampler of `observer`.
    pub fn new(observer: Arc<Observer>) -> Self {
        Self { observer }
    }
}

impl Actor for Sampler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.observer.publish();
        ctx.run_interval(SAMPLE_EVERY, |act, _ctx| act.observer.publish());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tickets count per anchor; dropping them uncounts; sum and max aggregate; prune drops
    /// only idle anchors.
    #[test]
    fn tickets_count_until_dropped_and_prune_keeps_busy_anchors() {
        let boxes = ChainMailboxes::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let t1 = boxes.enqueue(a);
        let t2 = boxes.enqueue(a);
        let t3 = boxes.enqueue(b);
        assert_eq!(boxes.depth(), MailboxDepth { sum: 3, max: 2 });
        drop(t3);
        assert_eq!(boxes.prune(), MailboxDepth { sum: 2, max: 2 });
        assert_eq!(
            boxes.tracked(),
            1,
            "idle anchor b is forgotten, busy a kept"
        );
        drop((t1, t2));
        assert_eq!(boxes.prune(), MailboxDepth::default());
        assert_eq!(boxes.tracked(), 0);
        // A ticket for a pruned anchor starts a fresh counter.
        let _t = boxes.enqueue(a);
        assert_eq!(boxes.depth(), MailboxDepth { sum: 1, max: 1 });
    }

    /// Many anchors sent to once each and answered leave nothing tracked after a prune: the
    /// map is bounded by busy anchors, not by anchors ever seen.
    #[test]
    fn counters_stay_bounded_by_busy_anchors() {
        let boxes = ChainMailboxes::new();
        for _ in 0..10_000 {
            drop(boxes.enqueue(Uuid::new_v4()));
        }
        assert_eq!(boxes.tracked(), 10_000);
        assert_eq!(boxes.prune(), MailboxDepth::default());
        assert_eq!(boxes.tracked(), 0);
    }

    /// A writer-run ledger's active backend follows the writer's flag; a fixed one never
    /// changes.
    #[test]
    fn active_backend_follows_the_writer_flag() {
        let degraded = Arc::new(crate::driver::OutageFlag::default());
        let active = ActiveBackend::Writer(Arc::clone(&degraded));
        assert_eq!(active.get(), Backend::Postgres);
        degraded.set(true);
        assert_eq!(active.get(), Backend::Memory);
        assert_eq!(ActiveBackend::Fixed(Backend::Memory).get(), Backend::Memory);
    }

    /// In-flight appends are the permits taken, and 0 once the ledger has finished.
    #[test]
    fn in_flight_is_permits_taken_until_finished() {
        let permits = Arc::new(Semaphore::new(8));
        let observer = Observer::new(
            Backend::Memory,
            ActiveBackend::Fixed(Backend::Memory),
            Arc::clone(&permits),
            8,
            Arc::new(ChainMailboxes::new()),
        );
        let held = permits
            .try_acquire_many(3)
            .expect("3 of 8 permits are free");
        assert_eq!(observer.in_flight(), 3);
        observer.finish();
        assert_eq!(observer.in_flight(), 0);
        drop(held);
    }
}
