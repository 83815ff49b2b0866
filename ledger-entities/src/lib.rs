//! The AVL record model: what a record is, how it is validated and how it is hashed.
//!
//! A record belongs to one anchor's chain; its `hash` is SHA-256 over a canonical,
//! domain-separated encoding of every field except `hash` and `sig`, and its `prev_hash` is
//! the hash of the anchor's previous record. `docs/HASHING.md` specifies the bytes.
//!
//! # Layout
//! - [`record`]: [`NewRecord`] (what a host supplies), [`LedgerRecord`] (what is stored) and
//!   [`Payload`] (a payload kept once, as its canonical text); the v1 preimage and hash.
//! - [`validate`]: checks run before hashing (NUL characters, numbers the hash cannot record
//!   exactly, duplicate keys, sizes, nesting depth checked iteratively), [`validate::dispose`]
//!   (drops a value without recursion), and [`validate::parse_payload`] for payload text.
//! - [`hash`]: [`RecordHash`] (32 bytes, `Copy`, hex on the wire), the domain prefix and the
//!   canonical (JCS) encoding.
//! - [`error`]: [`Error`], the one error type of this crate.
//! - [`entity`]: SeaORM entities for the `ledger_records` and `ledger_checkpoints` tables.

pub mod entity;
pub mod error;
pub mod hash;
pub mod record;
pub mod validate;

pub use error::Error;
pub use hash::RecordHash;
pub use record::{LedgerRecord, NewRecord, Payload, RECORD_VERSION};
