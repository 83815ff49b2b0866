//! `ledger loadtest --subscribe`: a subscriber ([`Ledger::subscribe`]) runs beside the
//! appenders and measures, for every record this run appends, the delay from its append's
//! acknowledgement to its delivery to the subscriber (the live lag), plus that every
//! acknowledged record was delivered exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use ledger_actors::Ledger;
use serde_json::{Value, json};
use uuid::Uuid;

/// Longest wait, after the appends, for the subscriber to deliver the last of them.
const DELIVERY_WAIT: Duration = Duration::from_secs(120);

/// Where a record is between its acknowledgement and its delivery (whichever comes first
/// leaves its mark; the second takes it).
enum Seen {
    Acked(Instant),
    Delivered,
}

/// The live-lag measurement shared by the appenders and the subscriber.
pub struct SubscribeLag {
    seen: DashMap<Uuid, Seen>,
    /// Acknowledgement → delivery, microseconds.
    lag: std::sync::Mutex<Histogram<u64>>,
    acked: AtomicU64,
    measured: AtomicU64,
    /// Delivered more than once (a subscription bug).
    duplicates: AtomicU64,
    /// Delivered out of position order or with a gap (a subscription bug).
    disorder: AtomicU64,
}

/// The running subscriber.
pub struct Subscriber {
    lag: Arc<SubscribeLag>,
    task: actix_rt::task::JoinHandle<Option<String>>,
}

impl SubscribeLag {
    /// Called by an appender when `rid`'s append is acknowledged.
    pub fn acked(&self, rid: Uuid) {
        let now = Instant::now();
        self.acked.fetch_add(1, Ordering::Relaxed);
        match self.seen.entry(rid) {
            Entry::Occupied(e) => {
                if let Seen::Delivered = e.get() {
                    // Delivered before the appender ran again: the lag is not positive.
                    e.remove();
                    self.record(Duration::ZERO);
                }
            }
            Entry::Vacant(e) => {
                e.insert(Seen::Acked(now));
            }
        }
    }

    fn delivered(&self, rid: Uuid) {
        let now = Instant::now();
        match self.seen.entry(rid) {
            Entry::Occupied(e) => match e.get() {
                Seen::Acked(at) => {
                    let lag = now.saturating_duration_since(*at);
                    e.remove();
                    self.record(lag);
                }
                Seen::Delivered => {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            },
            Entry::Vacant(e) => {
                e.insert(Seen::Delivered);
            }
        }
    }

    fn record(&self, lag: Duration) {
        self.measured.fetch_add(1, Ordering::Relaxed);
        self.lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturating_record(lag.as_micros().max(1) as u64);
    }
}

impl Subscriber {
    /// Subscribes after the log's current end, before the first append.
    pub async fn start(ledger: &Ledger) -> anyhow::Result<Self> {
        let Some(log) = ledger.log_store() else {
            anyhow::bail!("--subscribe needs the transparency log (checkpoint_interval > 0)");
        };
        let size = log.size().await?;
        let lag = Arc::new(SubscribeLag {
            seen: DashMap::new(),
            // Bounds 1 µs .. 10 min at 3 significant digits are valid constants.
            lag: std::sync::Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
            acked: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            disorder: AtomicU64::new(0),
        });
        let mut stream = ledger.subscribe(size.checked_sub(1));
        let shared = Arc::clone(&lag);
        let task = actix_rt::spawn(async move {
            let mut next = size;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(d) => {
                        if d.position != next {
                            shared.disorder.fetch_add(1, Ordering::Relaxed);
                        }
                        next = d.position + 1;
                        shared.delivered(d.record.rid);
                    }
                    Err(e) => return Some(e.to_string()),
                }
            }
            None
        });
        Ok(Self { lag, task })
    }

    /// What appenders report acknowledgements to.
    pub fn lag(&self) -> &Arc<SubscribeLag> {
        &self.lag
    }

    /// Waits (bounded) until every acknowledged record was delivered, stops the subscriber
    /// and reports: `{delivered, undelivered, duplicates, disorder, ack_to_delivery_ms}`.
    pub async fn finish(self) -> Value {
        let deadline = Instant::now() + DELIVERY_WAIT;
        let lag = &self.lag;
        while lag.measured.load(Ordering::Acquire) < lag.acked.load(Ordering::Acquire)
            && Instant::now() < deadline
            && !self.task.is_finished()
        {
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        self.task.abort();
        let error = self.task.await.ok().flatten();
        let h = lag.lag.lock().unwrap_or_else(|p| p.into_inner());
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let measured = lag.measured.load(Ordering::Acquire);
        json!({
            "delivered": measured,
            "undelivered": lag.acked.load(Ordering::Acquire).saturating_sub(measured),
            "duplicates": lag.duplicates.load(Ordering::Acquire),
            "disorder": lag.disorder.load(Ordering::Acquire),
            "error": error,
            "ack_to_delivery_ms": {
                "p50": ms(0.50), "p99": ms(0.99), "p999": ms(0.999), "max": h.max() as f64 / 1000.0,
            },
        })
    }
}
