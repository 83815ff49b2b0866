//! The record model: what a host supplies ([`NewRecord`]) and what the ledger stores
//! ([`LedgerRecord`]).

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;
use crate::hash;

/// The record-format version written by this code. It selects the hash encoding
/// (see `docs/HASHING.md`).
pub const RECORD_VERSION: &str = "v1";

/// What a host application supplies for one append. The ledger assigns `ts`, `prev_hash`,
/// `hash` and `version`; `rid` is generated (UUID v7) unless the host gives one, in which
/// case a repeated append with the same rid is idempotent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRecord {
    /// The chain this record extends.
    pub anchor_id: Uuid,
    /// Host-defined slot name (non-empty, at most [`crate::validate::MAX_LABEL_BYTES`] bytes).
    pub slot: String,
    /// Host-defined record kind (non-empty, at most [`crate::validate::MAX_LABEL_BYTES`] bytes).
    pub kind: String,
    /// Any JSON value; hashed through RFC 8785 (JCS).
    pub payload: serde_json::Value,
    /// Who produced the record (non-empty, at most [`crate::validate::MAX_LABEL_BYTES`] bytes).
    pub producer: String,
    /// Client-chosen record id; makes the append idempotent.
    #[serde(default)]
    pub rid: Option<Uuid>,
    /// Optional detached signature over the record; stored, not hashed.
    #[serde(default)]
    pub sig: Option<Vec<u8>>,
}

impl NewRecord {
    /// A record with a generated rid and no signature.
    pub fn new(
        anchor_id: Uuid,
        slot: impl Into<String>,
        kind: impl Into<String>,
        payload: serde_json::Value,
        producer: impl Into<String>,
    ) -> Self {
        Self {
            anchor_id,
            slot: slot.into(),
            kind: kind.into(),
            payload,
            producer: producer.into(),
            rid: None,
            sig: None,
        }
    }

    /// Sets a client rid, making the append idempotent.
    pub fn with_rid(mut self, rid: Uuid) -> Self {
        self.rid = Some(rid);
        self
    }

    /// Attaches a detached signature (stored, not hashed).
    pub fn with_sig(mut self, sig: Vec<u8>) -> Self {
        self.sig = Some(sig);
        self
    }
}

/// A committed (or committing) record: one link of an anchor's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// Record id (primary key).
    pub rid: Uuid,
    /// The chain this record belongs to.
    pub anchor_id: Uuid,
    /// Host-defined slot name.
    pub slot: String,
    /// Host-defined record kind.
    pub kind: String,
    /// Ledger-assigned time, microsecond precision, strictly increasing within an anchor.
    pub ts: DateTime<Utc>,
    /// Hash of the previous record of the anchor; `None` for the genesis record.
    pub prev_hash: Option<String>,
    /// Lowercase hex SHA-256 of the canonical encoding (see `docs/HASHING.md`).
    pub hash: String,
    /// The host's JSON payload.
    pub payload: serde_json::Value,
    /// Optional detached signature; not covered by `hash`.
    pub sig: Option<Vec<u8>>,
    /// Who produced the record.
    pub producer: String,
    /// Record-format version, [`RECORD_VERSION`] for records written by this code.
    pub version: String,
}

impl LedgerRecord {
    /// Builds and hashes a record. `ts` is truncated to whole microseconds first, because
    /// PostgreSQL keeps microseconds and the hash must survive the round-trip.
    ///
    /// The caller must have validated `new` ([`crate::validate::validate_new_record`]);
    /// this still fails with a typed error if the payload cannot be canonicalized.
    pub fn seal(
        new: NewRecord,
        rid: Uuid,
        ts: DateTime<Utc>,
        prev_hash: Option<String>,
    ) -> Result<Self, Error> {
        let canonical = hash::canonical_payload(&new.payload)?;
        Self::seal_canonical(new, rid, ts, prev_hash, &canonical)
    }

    /// Like [`LedgerRecord::seal`] with the payload's canonical (JCS) bytes already computed,
    /// as [`crate::validate::validate_new_record`] returns them; `canonical` must be the
    /// canonical form of `new.payload`.
    pub fn seal_canonical(
        new: NewRecord,
        rid: Uuid,
        ts: DateTime<Utc>,
        prev_hash: Option<String>,
        canonical: &[u8],
    ) -> Result<Self, Error> {
        let mut record = LedgerRecord {
            rid,
            anchor_id: new.anchor_id,
            slot: new.slot,
            kind: new.kind,
            ts: truncate_to_micros(ts),
            prev_hash,
            hash: String::new(),
            payload: new.payload,
            sig: new.sig,
            producer: new.producer,
            version: RECORD_VERSION.to_owned(),
        };
        record.hash = hash::record_hash_with_canonical(&record, canonical)?;
        Ok(record)
    }

    /// This record moved onto another predecessor (`prev_hash`, whose ts is `prev_ts`): same
    /// rid and content, `ts` raised if needed to stay after the predecessor, hash recomputed.
    /// Used when a record buffered during an outage finds its anchor extended meanwhile.
    pub fn rechained(&self, prev_hash: &str, prev_ts: DateTime<Utc>) -> Result<Self, Error> {
        let mut r = self.clone();
        r.prev_hash = Some(prev_hash.to_owned());
        r.ts = r.ts.max(prev_ts + chrono::Duration::microseconds(1));
        r.hash = hash::record_hash(&r)?;
        Ok(r)
    }

    /// `ts` as microseconds since the Unix epoch (the value that is hashed).
    pub fn ts_micros(&self) -> i64 {
        self.ts.timestamp_micros()
    }

    /// Recomputes the hash from the stored fields; `Ok(true)` when it matches `hash`.
    pub fn hash_matches(&self) -> Result<bool, Error> {
        Ok(hash::record_hash(self)? == self.hash)
    }

    /// True when `new` asks for the same record as this stored one (same anchor, slot, kind,
    /// producer, signature and canonical payload) — the test for an idempotent re-append.
    pub fn same_content(&self, new: &NewRecord) -> Result<bool, Error> {
        Ok(self.anchor_id == new.anchor_id
            && self.slot == new.slot
            && self.kind == new.kind
            && self.producer == new.producer
            && self.sig == new.sig
            && hash::canonical_payload(&self.payload)? == hash::canonical_payload(&new.payload)?)
    }
}

/// Truncates a timestamp to whole microseconds (towards the past), as PostgreSQL stores it.
pub fn truncate_to_micros(ts: DateTime<Utc>) -> DateTime<Utc> {
    let micros = ts.timestamp_micros();
    micros_to_datetime(micros)
}

/// Converts microseconds since the epoch back to a timestamp.
pub fn micros_to_datetime(micros: i64) -> DateTime<Utc> {
    // Every i64 count of microseconds is within chrono's range (about ±292,000 years),
    // so `timestamp_micros` cannot fail; the fallback is unreachable.
    Utc.timestamp_micros(micros)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
