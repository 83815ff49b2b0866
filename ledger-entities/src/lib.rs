//! The AVL record model: what a record is, how it is validated and how it is hashed.
//!
//! A record belongs to one anchor's chain; its `hash` is SHA-256 over a canonical,
//! domain-separated encoding of every field except `hash` and `sig`, and its `prev_hash` is
//! the hash of the anchor's previous record. `docs/HASHING.md` specifies the bytes.
//!
//! # Layout
//! - [`record`]: [`NewRecord`] (what a host supplies) and [`LedgerRecord`] (what is stored).
//! - [`validate`]: checks run before hashing (NUL characters, numbers the hash cannot record
//!   exactly, duplicate keys, sizes, nesting depth checked iteratively), [`validate::dispose`]
//!   (drops a value without recursion), and [`validate::parse_payload`] for payload text.
//! - [`hash`]: the canonical encoding and the SHA-256 hash.
//! - [`error`]: [`Error`], the one error type of this crate.
//! - [`entity`]: SeaORM entities for the `ledger_records` and `ledger_checkpoints` tables.

pub mod entity;
pub mod error;
pub mod hash;
pub mod record;
pub mod validate;

pub use error::Error;
pub use record::{LedgerRecord, NewRecord, RECORD_VERSION};
