//! The canonical encoding of a record and its SHA-256 hash. `docs/HASHING.md` specifies the
//! same bytes for implementers in other languages; the test vectors there are checked by the
//! tests of this module, so the two cannot drift apart.

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::record::{LedgerRecord, RECORD_VERSION};

/// Domain-separation prefix of the v1 encoding: 19 ASCII bytes and a NUL. It names the
/// encoding version so a v1 digest can never be confused with any other SHA-256 use.
pub const DOMAIN_V1: &[u8] = b"AVL-LEDGER-RECORD-V1\0";

/// The payload in RFC 8785 (JCS) canonical form, as UTF-8 bytes.
pub fn canonical_payload(payload: &serde_json::Value) -> Result<Vec<u8>, Error> {
    serde_json_canonicalizer::to_vec(payload).map_err(|e| Error::Canonicalization(e.to_string()))
}

/// Decodes a 64-digit lowercase hex hash into its 32 bytes.
pub fn decode_hash(field: &'static str, hex_hash: &str) -> Result<[u8; 32], Error> {
    let malformed = || Error::MalformedHash {
        field,
        value: hex_hash.to_owned(),
    };
    if hex_hash.len() != 64 || hex_hash.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(malformed());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut out).map_err(|_| malformed())?;
    Ok(out)
}

/// The exact bytes that are hashed for `record` (see `docs/HASHING.md`): the domain prefix,
/// then each field as a 4-byte big-endian length followed by its bytes.
pub fn preimage(record: &LedgerRecord) -> Result<Vec<u8>, Error> {
    let payload = canonical_payload(&record.payload)?;
    preimage_with_payload(record, &payload)
}

fn preimage_with_payload(record: &LedgerRecord, payload: &[u8]) -> Result<Vec<u8>, Error> {
    if record.version != RECORD_VERSION {
        return Err(Error::UnsupportedVersion(record.version.clone()));
    }
    let prev = match &record.prev_hash {
        Some(h) => Some(decode_hash("prev_hash", h)?),
        None => None,
    };
    let mut buf = Vec::with_capacity(
        DOMAIN_V1.len()
            + 9 * 4
            + 16
            + 16
            + record.slot.len()
            + record.kind.len()
            + 8
            + 32
            + payload.len()
            + record.producer.len()
            + record.version.len(),
    );
    buf.extend_from_slice(DOMAIN_V1);
    put(&mut buf, record.rid.as_bytes())?;
    put(&mut buf, record.anchor_id.as_bytes())?;
    put(&mut buf, record.slot.as_bytes())?;
    put(&mut buf, record.kind.as_bytes())?;
    put(&mut buf, &record.ts_micros().to_be_bytes())?;
    put(&mut buf, prev.as_ref().map_or(&[][..], |p| &p[..]))?;
    put(&mut buf, payload)?;
    put(&mut buf, record.producer.as_bytes())?;
    put(&mut buf, record.version.as_bytes())?;
    Ok(buf)
}

fn put(buf: &mut Vec<u8>, field: &[u8]) -> Result<(), Error> {
    // Validation caps every field far below 4 GiB; this guards direct callers of `preimage`.
    let len = u32::try_from(field.len()).map_err(|_| Error::FieldTooLong {
        field: "field",
        len: field.len(),
        max: u32::MAX as usize,
    })?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(field);
    Ok(())
}

/// The record's hash: lowercase hex SHA-256 of [`preimage`].
pub fn record_hash(record: &LedgerRecord) -> Result<String, Error> {
    let bytes = preimage(record)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Like [`record_hash`] for a payload already in canonical form (saves a second JCS pass
/// when the caller canonicalized during validation).
pub fn record_hash_with_canonical(record: &LedgerRecord, payload: &[u8]) -> Result<String, Error> {
    let bytes = preimage_with_payload(record, payload)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}
