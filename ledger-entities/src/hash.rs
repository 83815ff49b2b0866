//! The record hash type [`RecordHash`] (32 bytes, `Copy`), the domain prefix and the
//! canonical (JCS) payload encoding. The preimage of a record is built in
//! [`crate::record::preimage`] (this module does not depend on the record model).
//! `docs/HASHING.md` specifies the bytes for implementers in other languages; the test
//! vectors there are checked by the tests of this crate, so the two cannot drift apart.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// Domain-separation prefix of the v1 encoding: 19 ASCII bytes and a NUL. It names the
/// encoding version so a v1 digest can never be confused with any other SHA-256 use.
pub const DOMAIN_V1: &[u8] = b"AVL-LEDGER-RECORD-V1\0";

/// A record hash: the 32 bytes of a SHA-256 digest. It is `Copy` (no allocation wherever it
/// travels) and is displayed, serialized and parsed as 64 lowercase hex digits, the form
/// stored in PostgreSQL's `CHAR(64)` columns.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordHash(pub [u8; 32]);

impl RecordHash {
    /// The hash with these bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// SHA-256 of `data`.
    pub fn digest(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Parses 64 lowercase hex digits; `field` names the field in the error.
    pub fn parse(field: &'static str, text: &str) -> Result<Self, Error> {
        let malformed = || Error::MalformedHash {
            field,
            value: text.to_owned(),
        };
        if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(malformed());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(|_| malformed())?;
        Ok(Self(out))
    }

    /// The 64 lowercase hex digits as a stack buffer (no allocation).
    pub fn hex_bytes(&self) -> [u8; 64] {
        let mut buf = [0u8; 64];
        // 32 bytes always encode into exactly 64 hex digits, so this cannot fail.
        let _ = hex::encode_to_slice(self.0, &mut buf);
        buf
    }

    /// The 64 lowercase hex digits as a `String`.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for RecordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buf = self.hex_bytes();
        // Hex digits are ASCII, so the buffer is valid UTF-8.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for RecordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for RecordHash {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse("hash", s)
    }
}

impl Serialize for RecordHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let buf = self.hex_bytes();
        serializer.serialize_str(std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for RecordHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse("hash", &text).map_err(serde::de::Error::custom)
    }
}

/// The payload in RFC 8785 (JCS) canonical form, as UTF-8 bytes.
pub fn canonical_payload(payload: &serde_json::Value) -> Result<Vec<u8>, Error> {
    serde_json_canonicalizer::to_vec(payload).map_err(|e| Error::Canonicalization(e.to_string()))
}

/// Decodes a 64-digit lowercase hex hash into its 32 bytes.
pub fn decode_hash(field: &'static str, hex_hash: &str) -> Result<[u8; 32], Error> {
    RecordHash::parse(field, hex_hash).map(|h| h.0)
}
