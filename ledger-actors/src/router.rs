//! [`ChainRouter`]: starts chain actors on demand and finds the one for an anchor.
//!
//! At most one live actor per anchor: the map entry is created under the shard lock, and an
//! actor leaves the map (passivation, failed head load) before it stops and after its last
//! record is settled, so its successor loads a head that nothing in flight can change.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use uuid::Uuid;

use crate::chain::{ChainActor, ChainSettings, Registry, Routed};
use crate::error::LedgerError;

/// How often an append is resent after racing an actor's passivation. Each resend finds a
/// fresh actor, so more than a couple means something is wrong.
const MAX_ATTEMPTS: usize = 8;

impl Registry for ChainRouter {
    fn forget(&self, anchor_id: Uuid, addr: &Addr<ChainActor>) {
        if self
            .actors
            .remove_if(&anchor_id, |_, a| a == addr)
            .is_some()
        {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    fn note_passivated(&self) {
        self.passivated.fetch_add(1, Ordering::Relaxed);
    }
}

/// The anchor → chain actor registry.
pub struct ChainRouter {
    actors: DashMap<Uuid, Addr<ChainActor>>,
    workers: Vec<ArbiterHandle>,
    next: AtomicUsize,
    settings: Arc<ChainSettings>,
    /// The settings of actors started after [`ChainRouter::switch_settings`] (the memory →
    /// PostgreSQL migration); set at most once.
    switched: std::sync::OnceLock<Arc<ChainSettings>>,
    passivated: std::sync::atomic::AtomicU64,
    /// Entries in `actors`, kept beside the map because `DashMap::len` locks every shard
    /// and chain actors read this after each append (the soft cap,
    /// [`ChainSettings::max_live_actors`]).
    live: AtomicUsize,
}

impl ChainRouter {
    /// A router spreading new chain actors round-robin over `workers`.
    pub fn new(settings: ChainSettings, workers: Vec<ArbiterHandle>) -> Arc<Self> {
        Arc::new(Self {
            actors: DashMap::new(),
            workers,
            next: AtomicUsize::new(0),
            settings: Arc::new(settings),
            switched: std::sync::OnceLock::new(),
            passivated: std::sync::atomic::AtomicU64::new(0),
            live: AtomicUsize::new(0),
        })
    }

    /// The anchor's actor, started if there is none.
    pub fn addr(self: &Arc<Self>, anchor_id: Uuid) -> Addr<ChainActor> {
        if let Some(addr) = self.actors.get(&anchor_id) {
            return addr.clone();
        }
        self.actors
            .entry(anchor_id)
            .or_insert_with(|| {
                self.live.fetch_add(1, Ordering::Relaxed);
                let settings = Arc::clone(self.settings());
                let router: std::sync::Weak<dyn Registry> = Arc::downgrade(self) as _;
                let make = move |_: &mut Context<ChainActor>| {
                    ChainActor::new(anchor_id, settings, Some(router))
                };
                if self.workers.is_empty() {
                    ChainActor::create(make)
                } else {
                    let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
                    ChainActor::start_in_arbiter(&self.workers[i], make)
                }
            })
            .clone()
    }

    /// The settings new chain actors start with.
    fn settings(&self) -> &Arc<ChainSettings> {
        self.switched.get().unwrap_or(&self.settings)
    }

    /// A copy of the settings new chain actors start with (to derive switched ones from).
    pub(crate) fn current_settings(&self) -> ChainSettings {
        ChainSettings::clone(self.settings())
    }

    /// Starts every later chain actor with `settings` and drops the current actors (they
    /// stop once idle), so the next append of each anchor starts a fresh actor that loads
    /// its head from the new store. Call it only while no append is in flight (the ledger
    /// holds every append permit). Once per router: a second switch is an
    /// [`LedgerError::Internal`] and changes nothing.
    pub(crate) fn switch_settings(&self, settings: ChainSettings) -> Result<(), LedgerError> {
        self.switched
            .set(Arc::new(settings))
            .map_err(|_| LedgerError::Internal("chain settings already switched".into()))?;
        self.drop_all();
        Ok(())
    }

    /// The anchor's live actor, if any (never starts one).
    pub fn existing(&self, anchor_id: Uuid) -> Option<Addr<ChainActor>> {
        self.actors.get(&anchor_id).map(|a| a.clone())
    }

    /// Chain actors passivated since start.
    pub fn passivated(&self) -> u64 {
        self.passivated.load(Ordering::Relaxed)
    }

    /// Number of live chain actors.
    pub fn active(&self) -> usize {
        self.actors.len()
    }

    /// The worker threads chain actors are started on.
    pub fn workers(&self) -> &[ArbiterHandle] {
        &self.workers
    }

    /// Drops every actor address; idle actors then stop.
    pub fn clear(&self) {
        self.drop_all();
    }

    /// Empties the map and the live count with it (the dropped actors stop once idle and
    /// find nothing to remove).
    fn drop_all(&self) {
        self.actors.retain(|_, _| {
            self.live.fetch_sub(1, Ordering::Relaxed);
            false
        });
    }

    /// Sends an append to the anchor's actor, resending when the actor retired before
    /// taking it. After `timeout`: [`LedgerError::Overloaded`] if no actor took the record
    /// (it is withdrawn, so it is certainly not written), else [`LedgerError::Timeout`].
    pub async fn append<M, R>(
        self: &Arc<Self>,
        msg: M,
        anchor_id: Uuid,
        timeout: Duration,
    ) -> Result<R, LedgerError>
    where
        M: Routed<Result = Result<R, LedgerError>>,
        ChainActor: Handler<M>,
        R: Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        for _ in 0..MAX_ATTEMPTS {
            let addr = self.addr(anchor_id);
            let sent = msg.resend(self.settings().mailboxes.enqueue(anchor_id));
            match tokio::time::timeout_at(deadline, addr.send(sent)).await {
                Err(_elapsed) => {
                    return Err(if msg.withdraw() {
                        LedgerError::Overloaded { waited: timeout }
                    } else {
                        LedgerError::Timeout { waited: timeout }
                    });
                }
                Ok(Ok(Err(LedgerError::Retired))) if msg.pending() => {
                    self.forget(anchor_id, &addr);
                }
                Ok(Ok(result)) => return result,
                Ok(Err(MailboxError::Closed)) if msg.pending() => {
                    self.forget(anchor_id, &addr);
                }
                Ok(Err(_)) => {
                    return Err(LedgerError::Internal(
                        "chain actor stopped while handling the append; outcome unknown".into(),
                    ));
                }
            }
        }
        Err(LedgerError::Internal(format!(
            "no chain actor of anchor {anchor_id} took the append in {MAX_ATTEMPTS} attempts"
        )))
    }
}
