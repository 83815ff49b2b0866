//! [`WriterReads`]: PostgreSQL plus the outage buffer, the store a PostgreSQL ledger
//! reads through, so heads and reads include records acknowledged during an outage.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use ledger_entities::{LedgerRecord, RecordHash};
use uuid::Uuid;

use super::buffer::OutageBuffer;
use crate::config::Backend;
use crate::driver::OutageFlag;
use crate::error::LedgerError;
use crate::pg::store::PostgresLedgerStore;
use crate::store::{Head, LedgerStore, RecordRange};

/// Reads PostgreSQL and the outage buffer; a buffered record is newer than anything of its
/// anchor in PostgreSQL, so it wins for heads.
pub struct WriterReads {
    postgres: Arc<PostgresLedgerStore>,
    buffer: Arc<OutageBuffer>,
    /// Raised by the writer while PostgreSQL is not the active backend.
    degraded: Arc<OutageFlag>,
}

fn outage() -> LedgerError {
    LedgerError::Unavailable(
        "PostgreSQL outage in progress; the ledger is running on its memory fallback".into(),
    )
}

impl WriterReads {
    /// A view over `postgres` and `buffer`; while `degraded` is raised, reads that would need
    /// PostgreSQL fail at once with [`LedgerError::Unavailable`] instead of waiting on a dead
    /// (or black-holed) connection for the whole timeout, and a read already waiting on one
    /// fails so when the writer fails over.
    pub(crate) fn new(
        postgres: Arc<PostgresLedgerStore>,
        buffer: Arc<OutageBuffer>,
        degraded: Arc<OutageFlag>,
    ) -> Self {
        Self {
            postgres,
            buffer,
            degraded,
        }
    }

    /// `read` on PostgreSQL, unless an outage is in progress or begins while it runs: a read
    /// waiting on a connection that never answers (a black hole opens new connections that
    /// hang until the connect timeout) must not outlast the writer's failover, or the chain
    /// actor waiting on it (a head load, a client rid's look-up) holds its appends past
    /// their timeout while every other append goes on on the fallback.
    async fn postgres<'a, T, F>(
        &'a self,
        read: impl FnOnce(&'a PostgresLedgerStore) -> F,
    ) -> Result<T, LedgerError>
    where
        F: Future<Output = Result<T, LedgerError>> + 'a,
    {
        if self.degraded.is_raised() {
            return Err(outage());
        }
        tokio::select! {
            // An answer that is already there wins over a failover noticed in the same poll.
            biased;
            answer = read(&self.postgres) => answer,
            () = self.degraded.raised() => Err(outage()),
        }
    }

    /// The outage buffer.
    pub fn buffer(&self) -> &Arc<OutageBuffer> {
        &self.buffer
    }
}

#[async_trait]
impl LedgerStore for WriterReads {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn insert(&self, records: &[Arc<LedgerRecord>]) -> Result<(), LedgerError> {
        self.postgres.insert(records).await
    }

    async fn get(&self, rid: Uuid) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        match self.buffer.get(rid) {
            Some(r) => Ok(Some(r)),
            None => self.postgres(|pg| pg.get(rid)).await,
        }
    }

    async fn get_by_hash(
        &self,
        hash: RecordHash,
    ) -> Result<Option<Arc<LedgerRecord>>, LedgerError> {
        match self.buffer.get_by_hash(hash) {
            Some(r) => Ok(Some(r)),
            None => self.postgres(|pg| pg.get_by_hash(hash)).await,
        }
    }

    async fn get_many(&self, rids: &[Uuid]) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        let mut out = Vec::new();
        let mut rest = Vec::new();
        for rid in rids {
            match self.buffer.get(*rid) {
                Some(r) => out.push(r),
                None => rest.push(*rid),
            }
        }
        if !rest.is_empty() {
            out.extend(self.postgres(|pg| pg.get_many(&rest)).await?);
        }
        Ok(out)
    }

    async fn records(
        &self,
        anchor_id: Uuid,
        range: &RecordRange,
    ) -> Result<Vec<Arc<LedgerRecord>>, LedgerError> {
        let buffered = self.buffer.records(anchor_id, range);
        let mut out = self.postgres(|pg| pg.records(anchor_id, range)).await?;
        if !buffered.is_empty() {
            // A record may be in both while a drain batch commits; keep one copy.
            out.retain(|r| !buffered.iter().any(|b| b.rid == r.rid));
            out.extend(buffered);
            out.sort_by_key(|r| r.ts);
            out.truncate(range.limit);
        }
        Ok(out)
    }

    async fn head(&self, anchor_id: Uuid) -> Result<Option<Head>, LedgerError> {
        match self.buffer.head(anchor_id) {
            Some(h) => Ok(Some(h)),
            None => self.postgres(|pg| pg.head(anchor_id)).await,
        }
    }

    async fn anchors(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<Uuid>, LedgerError> {
        let mut ids = self.postgres(|pg| pg.anchors(after, limit)).await?;
        ids.extend(
            self.buffer
                .anchors()
                .into_iter()
                .filter(|a| after.is_none_or(|x| *a > x)),
        );
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn count(&self) -> Result<u64, LedgerError> {
        Ok(self.postgres(|pg| pg.count()).await? + self.buffer.len() as u64)
    }

    async fn count_anchor(&self, anchor_id: Uuid) -> Result<u64, LedgerError> {
        Ok(self.postgres(|pg| pg.count_anchor(anchor_id)).await?
            + self.buffer.anchor_len(anchor_id) as u64)
    }

    /// Pings PostgreSQL (the buffer needs no check).
    async fn ping(&self) -> Result<(), LedgerError> {
        self.postgres.ping().await
    }

    async fn replication(
        &self,
        limit: std::time::Duration,
    ) -> Option<Result<crate::pg::replication::ReplicationState, LedgerError>> {
        self.postgres.replication(limit).await
    }
}
