//! The receipt: a self-contained proof that one record is in the log, verifiable offline
//! with only the log's verifier key.
//!
//! ```json
//! {
//!   "format": "avl-receipt/v1",
//!   "record": { "rid": "...", "anchor_id": "...", "slot": "...", "kind": "...",
//!               "ts": "RFC 3339", "prev_hash": "hex or null", "hash": "hex",
//!               "payload": <JSON>, "sig": <bytes or null>, "producer": "...", "version": "v1" },
//!   "leaf_index": 41,
//!   "tree_size": 1000,
//!   "inclusion_path": ["hex", ...],
//!   "checkpoint": "<the signed checkpoint note>"
//! }
//! ```
//!
//! Verification ([`Receipt::verify`]): the note's signature by the given key; its size equals
//! `tree_size`; the record's hash recomputed from its fields (the caller supplies that
//! function: it is the record encoding of `docs/HASHING.md`) equals `record.hash`; and
//! `inclusion_path` leads from `leaf_hash(record.hash bytes)` at `leaf_index` to the root.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::merkle::{Hash, leaf_hash, parse_hash, verify_inclusion};
use crate::note::{Checkpoint, NoteVerifier};

/// The receipt format tag.
pub const RECEIPT_FORMAT: &str = "avl-receipt/v1";

/// A receipt (see the module doc for the JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Always [`RECEIPT_FORMAT`].
    pub format: String,
    /// The record with every field.
    pub record: serde_json::Value,
    /// The record's leaf index.
    pub leaf_index: u64,
    /// The tree size of the checkpoint.
    pub tree_size: u64,
    /// The audit path, leaf to root, lowercase hex.
    pub inclusion_path: Vec<String>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

/// What a valid receipt proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The checkpoint that covers the record.
    pub checkpoint: Checkpoint,
    /// The record's hash.
    pub record_hash: String,
    /// The record's leaf index.
    pub leaf_index: u64,
}

impl Receipt {
    /// A receipt.
    pub fn new(
        record: serde_json::Value,
        leaf_index: u64,
        tree_size: u64,
        path: &[Hash],
        checkpoint: String,
    ) -> Self {
        Self {
            format: RECEIPT_FORMAT.to_owned(),
            record,
            leaf_index,
            tree_size,
            inclusion_path: path.iter().map(hex::encode).collect(),
            checkpoint,
        }
    }

    /// Verifies the receipt offline. `record_hash` recomputes a record's hash from its
    /// fields (the JSON under `record`), failing if the record is malformed.
    pub fn verify(
        &self,
        key: &NoteVerifier,
        record_hash: impl FnOnce(&serde_json::Value) -> Result<String, String>,
    ) -> Result<Verified, Error> {
        if self.format != RECEIPT_FORMAT {
            return Err(Error::Malformed(format!(
                "receipt format {:?}",
                self.format
            )));
        }
        let text = key.open(&self.checkpoint)?;
        let checkpoint = Checkpoint::parse(text)?;
        if checkpoint.size != self.tree_size {
            return Err(Error::Invalid(format!(
                "receipt says tree size {}, its checkpoint {}",
                self.tree_size, checkpoint.size
            )));
        }
        let stored = self
            .record
            .get("hash")
            .and_then(|h| h.as_str())
            .ok_or_else(|| Error::Malformed("record has no hash".into()))?;
        let recomputed = record_hash(&self.record).map_err(Error::Invalid)?;
        if recomputed != stored {
            return Err(Error::Invalid(format!(
                "record hash recomputed from its fields is {recomputed}, the record says {stored}"
            )));
        }
        let leaf = leaf_hash(&parse_hash(stored)?);
        let path = self
            .inclusion_path
            .iter()
            .map(|h| parse_hash(h))
            .collect::<Result<Vec<_>, _>>()?;
        verify_inclusion(
            self.leaf_index,
            self.tree_size,
            &leaf,
            &path,
            &checkpoint.root,
        )?;
        Ok(Verified {
            checkpoint,
            record_hash: recomputed,
            leaf_index: self.leaf_index,
        })
    }
}
