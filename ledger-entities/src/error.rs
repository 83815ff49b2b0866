//! The one error type of this crate.

/// Why a record was refused or could not be hashed. Every variant is caused by the input, not
/// by the environment: retrying the same input gives the same error, so a caller should fix the
/// input (or report it to whoever supplied it) rather than retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A text field or a payload string/key contains U+0000, which PostgreSQL TEXT and JSONB
    /// refuse. Handle: strip or escape NUL characters before appending.
    #[error("{field} contains a NUL character (U+0000), which the ledger cannot store")]
    NulCharacter {
        /// The field, or a JSON pointer into the payload (`payload/a/0`).
        field: String,
    },
    /// A payload number that the hash cannot record exactly: JCS (RFC 8785) writes every
    /// number as the shortest form of the nearest IEEE-754 double, and this number's value
    /// differs from that (an integer beyond what a double holds, such as 2^53 + 1 or
    /// 18446744073709551617, or a decimal with more digits than a double keeps, such as
    /// `0.10000000000000000001`). Its hash would verify a different number. Handle: send it
    /// as a string.
    #[error(
        "{field} holds the number {value}, which the hash would record as {hashed_as}; send it as a string"
    )]
    InexactNumber {
        /// JSON pointer of the number (`payload/a/0`).
        field: String,
        /// The number as written.
        value: String,
        /// What JCS would write for it (and so what a verifier would read back).
        hashed_as: String,
    },
    /// A payload parsed from text has the same key twice in one object; JSON parsers disagree
    /// on which one wins, so the ledger refuses it. Handle: remove the duplicate.
    #[error("{field} has the key {key:?} twice")]
    DuplicateKey {
        /// JSON pointer of the object.
        field: String,
        /// The repeated key.
        key: String,
    },
    /// The payload is not valid JSON. Handle: fix the producer of the text.
    #[error("payload is not valid JSON: {0}")]
    InvalidJson(String),
    /// The canonical (JCS) payload is larger than the configured limit. Handle: store large
    /// blobs elsewhere and append a reference (e.g. a content hash) instead.
    #[error("payload is {size} bytes in canonical form, over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Canonical size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The payload nests arrays/objects deeper than the limit. Handle: flatten the payload.
    #[error("{field} nests deeper than {limit} levels")]
    NestingTooDeep {
        /// JSON pointer where the limit was crossed.
        field: String,
        /// The nesting limit.
        limit: usize,
    },
    /// A required text field is empty. Handle: supply a value.
    #[error("{field} must not be empty")]
    EmptyField {
        /// The field name.
        field: &'static str,
    },
    /// A text or byte field is longer than allowed. Handle: shorten it.
    #[error("{field} is {len} bytes, over the maximum of {max}")]
    FieldTooLong {
        /// The field name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The maximum in bytes.
        max: usize,
    },
    /// A hash field is not 64 lowercase hex digits. Handle: the stored record is corrupt or
    /// was not written by the ledger; report it.
    #[error("{field} is not 64 lowercase hex digits: {value:?}")]
    MalformedHash {
        /// The field name.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// The record names a format version this code cannot hash. Handle: upgrade the ledger.
    #[error("record version {0:?} is not supported (this build hashes \"v1\")")]
    UnsupportedVersion(String),
    /// JCS canonicalization failed (for example a number it cannot represent). Handle: as for
    /// [`Error::InexactNumber`], send the value as a string.
    #[error("payload cannot be canonicalized with RFC 8785: {0}")]
    Canonicalization(String),
}

impl Error {
    /// The field (or JSON pointer into the payload, `payload/a/0`) the error is about, when
    /// it names one: what a caller reporting errors per field shows.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::NulCharacter { field }
            | Error::InexactNumber { field, .. }
            | Error::DuplicateKey { field, .. }
            | Error::NestingTooDeep { field, .. } => Some(field),
            Error::EmptyField { field }
            | Error::FieldTooLong { field, .. }
            | Error::MalformedHash { field, .. } => Some(field),
            Error::InvalidJson(_) | Error::PayloadTooLarge { .. } | Error::Canonicalization(_) => {
                Some("payload")
            }
            Error::UnsupportedVersion(_) => Some("version"),
        }
    }
}
