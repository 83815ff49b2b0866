//! The record model: what a host supplies ([`NewRecord`]) and what the ledger stores
//! ([`LedgerRecord`]).

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;
use crate::hash::{self, DOMAIN_V1, RecordHash};

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

/// A record's payload, kept once as its RFC 8785 (JCS) canonical JSON text: the exact bytes
/// that are hashed. Serialized as the JSON value itself (not a string); deserialized from any
/// JSON value, which is canonicalized. [`Payload::to_value`] parses it back when a
/// `serde_json::Value` is wanted.
///
/// Held through a thin pointer (8 bytes, the text in a box of its own) so that a
/// [`LedgerRecord`] in an `Arc` fits mimalloc's 256-byte size class instead of the 320-byte
/// one: 64 bytes saved per stored record for 16 spent on the extra box (the memory
/// goal; a compile-time assertion beside [`LedgerRecord`] guards it).
#[derive(Clone, PartialEq, Eq, Hash)]
#[allow(clippy::box_collection, clippy::redundant_allocation)]
pub struct Payload(Box<Box<str>>);

impl Payload {
    /// The canonical form of `value`.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, Error> {
        Self::from_canonical(hash::canonical_payload(value)?)
    }

    /// Wraps bytes already in canonical form (as [`crate::validate::validate_new_record`]
    /// returns them). Fails only if they are not UTF-8, which JCS output always is.
    pub fn from_canonical(canonical: Vec<u8>) -> Result<Self, Error> {
        String::from_utf8(canonical)
            .map(|s| Self(Box::new(s.into_boxed_str())))
            .map_err(|e| Error::Canonicalization(format!("canonical payload is not UTF-8: {e}")))
    }

    /// The canonical JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical bytes (what is hashed).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The payload as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        // The text was produced by the JCS serializer (or canonicalized on deserialization),
        // so it is always valid JSON; `Null` is unreachable.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Without serde_json's `raw_value` feature the text cannot be spliced in as is; the
        // value is re-read (only spool frames and JSON output serialize records).
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Self::from_value(&value).map_err(serde::de::Error::custom)
    }
}

/// A committed (or committing) record: one link of an anchor's chain.
///
/// Lean by design: hashes are [`RecordHash`] (32 bytes, `Copy`) and the payload is kept once,
/// as its canonical text ([`Payload`]).
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
    pub prev_hash: Option<RecordHash>,
    /// SHA-256 of the canonical encoding (see `docs/HASHING.md`).
    pub hash: RecordHash,
    /// The host's JSON payload, in canonical form.
    pub payload: Payload,
    /// Optional detached signature; not covered by `hash`.
    pub sig: Option<Vec<u8>>,
    /// Who produced the record.
    pub producer: String,
    /// Record-format version, [`RECORD_VERSION`] for records written by this code.
    pub version: String,
}

// A stored record is an `Arc<LedgerRecord>`: the two reference counts (16 bytes) and the
// record must fit mimalloc's 256-byte size class (the next one is 320 bytes, 64 more per
// record; see `Payload`).
const _: () = assert!(std::mem::size_of::<LedgerRecord>() + 16 <= 256);

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
        prev_hash: Option<RecordHash>,
    ) -> Result<Self, Error> {
        let payload = Payload::from_value(&new.payload)?;
        Self::seal_canonical(new, rid, ts, prev_hash, payload)
    }

    /// Like [`LedgerRecord::seal`] with the payload already in canonical form, as
    /// [`crate::validate::validate_new_record`] returns it; `payload` must be the canonical
    /// form of `new.payload` (which is dropped: the record keeps only the canonical text).
    pub fn seal_canonical(
        new: NewRecord,
        rid: Uuid,
        ts: DateTime<Utc>,
        prev_hash: Option<RecordHash>,
        payload: Payload,
    ) -> Result<Self, Error> {
        let mut record = LedgerRecord {
            rid,
            anchor_id: new.anchor_id,
            slot: new.slot,
            kind: new.kind,
            ts: truncate_to_micros(ts),
            prev_hash,
            hash: RecordHash([0; 32]),
            payload,
            sig: new.sig,
            producer: new.producer,
            version: RECORD_VERSION.to_owned(),
        };
        record.hash = record_hash(&record)?;
        Ok(record)
    }

    /// This record moved onto another predecessor (`prev_hash`, whose ts is `prev_ts`): same
    /// rid and content, `ts` raised if needed to stay after the predecessor, hash recomputed.
    /// Used when a record buffered during an outage finds its anchor extended meanwhile.
    pub fn rechained(&self, prev_hash: RecordHash, prev_ts: DateTime<Utc>) -> Result<Self, Error> {
        let mut r = self.clone();
        r.prev_hash = Some(prev_hash);
        r.ts = r.ts.max(prev_ts + chrono::Duration::microseconds(1));
        r.hash = record_hash(&r)?;
        Ok(r)
    }

    /// `ts` as microseconds since the Unix epoch (the value that is hashed).
    pub fn ts_micros(&self) -> i64 {
        self.ts.timestamp_micros()
    }

    /// Recomputes the hash from the stored fields; `Ok(true)` when it matches `hash`.
    pub fn hash_matches(&self) -> Result<bool, Error> {
        Ok(record_hash(self)? == self.hash)
    }

    /// True when `other` is the same record apart from its place in the chain (same rid,
    /// anchor, slot, kind, producer, signature and payload; `prev_hash`, `ts` and `hash` may
    /// differ, as after a re-chain).
    pub fn same_record(&self, other: &LedgerRecord) -> bool {
        self.rid == other.rid
            && self.anchor_id == other.anchor_id
            && self.slot == other.slot
            && self.kind == other.kind
            && self.producer == other.producer
            && self.sig == other.sig
            && self.payload == other.payload
    }

    /// True when `new` asks for the same record as this stored one (same anchor, slot, kind,
    /// producer, signature and canonical payload) — the test for an idempotent re-append.
    pub fn same_content(&self, new: &NewRecord) -> Result<bool, Error> {
        Ok(self.anchor_id == new.anchor_id
            && self.slot == new.slot
            && self.kind == new.kind
            && self.producer == new.producer
            && self.sig == new.sig
            && self.payload.as_bytes() == hash::canonical_payload(&new.payload)?.as_slice())
    }
}

/// The exact bytes that are hashed for `record` (see `docs/HASHING.md`): the domain prefix,
/// then each field as a 4-byte big-endian length followed by its bytes. The payload enters
/// as its canonical bytes, which the record keeps ([`crate::record::Payload`]).
pub fn preimage(record: &LedgerRecord) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::with_capacity(
        DOMAIN_V1.len()
            + 9 * 4
            + 16
            + 16
            + record.slot.len()
            + record.kind.len()
            + 8
            + 32
            + record.payload.as_bytes().len()
            + record.producer.len()
            + record.version.len(),
    );
    write_preimage(record, &mut |part| buf.extend_from_slice(part))?;
    Ok(buf)
}

/// The record's hash: SHA-256 of [`preimage`], fed part by part (no copy of the payload).
pub fn record_hash(record: &LedgerRecord) -> Result<RecordHash, Error> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    write_preimage(record, &mut |part| hasher.update(part))?;
    Ok(RecordHash(hasher.finalize().into()))
}

/// The one definition of the preimage's layout: hands its parts, in order, to `out` (a
/// buffer for [`preimage`], the running hash for [`record_hash`]).
fn write_preimage(record: &LedgerRecord, out: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
    if record.version != RECORD_VERSION {
        return Err(Error::UnsupportedVersion(record.version.clone()));
    }
    let prev = record.prev_hash.as_ref().map_or(&[][..], |p| &p.0[..]);
    let ts = record.ts_micros().to_be_bytes();
    let fields: [&[u8]; 9] = [
        record.rid.as_bytes(),
        record.anchor_id.as_bytes(),
        record.slot.as_bytes(),
        record.kind.as_bytes(),
        &ts,
        prev,
        record.payload.as_bytes(),
        record.producer.as_bytes(),
        record.version.as_bytes(),
    ];
    // Validation caps every field far below 4 GiB; this guards direct callers. Checked
    // before anything is written, so a refusal leaves `out` untouched.
    let mut lengths = [[0u8; 4]; 9];
    for (len, field) in lengths.iter_mut().zip(fields) {
        *len = u32::try_from(field.len())
            .map_err(|_| Error::FieldTooLong {
                field: "field",
                len: field.len(),
                max: u32::MAX as usize,
            })?
            .to_be_bytes();
    }
    out(DOMAIN_V1);
    for (len, field) in lengths.iter().zip(fields) {
        out(len);
        out(field);
    }
    Ok(())
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
