//! AVL's transparency log, pure: the RFC 6962 / RFC 9162 Merkle tree over every record, its
//! storage as tlog-tiles, inclusion and consistency proofs computed from stored hashes and
//! their verification, C2SP `tlog-checkpoint` texts, C2SP `signed-note` Ed25519 signatures
//! and key formats, and the offline receipt. No actors, no database, no I/O: the ledger's
//! integrator and the `ledger` CLI build on it, and so can any third-party verifier.
//!
//! The exact bytes are specified in `docs/HASHING.md` ("The log").
//!
//! # Layout
//! - [`merkle`]: leaf / node hashing, [`merkle::NodeId`] (a complete subtree), tree hashes,
//!   proof generation from a [`merkle::HashReader`], proof verification.
//! - [`tile`]: tlog-tiles storage math ([`tile::TileId`]), [`tile::TileSet`] (a reader over
//!   fetched tiles) and [`tile::Edge`] (the integrator's right edge: appends leaves, yields
//!   the tiles to write and the root).
//! - [`note`]: checkpoint text, signed notes, signer and verifier keys.
//! - [`receipt`]: the self-contained receipt JSON and its offline verification.
//! - [`api`]: the C2SP `tlog-tiles` HTTP API: paths, tile widths per tree size, entry
//!   bundles, content types and caching.
//! - [`cosig`]: C2SP `tlog-cosignature` (cosignature/v1) keys, signing and verification.
//! - [`witness`]: C2SP `tlog-witness` requests and a witness's checks (pure).
//! - [`Error`]: the crate's one error type.

pub mod api;
pub mod cosig;
pub mod merkle;
pub mod note;
pub mod receipt;
pub mod tile;
pub mod witness;

pub use merkle::{Hash, NodeId};

/// Everything that can go wrong in this crate. Each variant says how a caller should react.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A proof, root or signature does not verify: the data is not what the log committed
    /// to. Report it; never retry.
    #[error("verification failed: {0}")]
    Invalid(String),
    /// Input that cannot be parsed (a note, key, receipt or hash in a wrong format). Fix the
    /// input.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// A request outside the tree (leaf index beyond the size, old size above new size).
    /// Ask for something the tree contains.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// A hash the proof needs is not stored (tile missing or too narrow): storage is
    /// incomplete or corrupt. Report it to an operator.
    #[error("missing stored hash: {0}")]
    Missing(String),
    /// Fewer valid witness cosignatures than the quorum asked for: the checkpoint is not
    /// (yet) witnessed as required. Wait for the witnesses and fetch a newer receipt, or
    /// check which witnesses are down; never accept it.
    #[error(
        "{have} valid cosignature(s) of the {need} required; none from: {}",
        missing.join(", ")
    )]
    QuorumNotMet {
        /// Cosignatures required.
        need: usize,
        /// Valid cosignatures by the given witnesses.
        have: usize,
        /// The given witnesses (key names) without a cosignature in the note.
        missing: Vec<String>,
    },
}
