//! RFC 6962 / RFC 9162 Merkle tree hashing, proofs from stored subtree hashes, and proof
//! verification.
//!
//! A [`NodeId`] `(level, index)` names the complete subtree over leaves
//! `[index << level, (index + 1) << level)`; level 0 are the leaf hashes. Only complete
//! subtrees are ever stored (they never change once the log has grown past them); the hash
//! of any other range is folded from at most `2·log2(n)` of them. Proof functions first name
//! the nodes they need ([`inclusion_nodes`], [`consistency_nodes`]) so a store can fetch them
//! in one round trip, then compute the proof from a [`HashReader`].

use sha2::{Digest, Sha256};

use crate::Error;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// A complete subtree: leaves `[index << level, (index + 1) << level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves (0 = a leaf hash).
    pub level: u8,
    /// Position among the nodes of that level, left to right.
    pub index: u64,
}

impl NodeId {
    /// The node `(level, index)`.
    pub const fn new(level: u8, index: u64) -> Self {
        Self { level, index }
    }
}

/// Reads stored hashes of complete subtrees.
pub trait HashReader {
    /// The hashes of `nodes`, in the same order. Fails with [`Error::Missing`] when one is
    /// not stored.
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Error>;
}

/// RFC 6962 leaf hash: `SHA-256(0x00 || data)`. For AVL, `data` is the record's 32-byte hash.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// RFC 6962 interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The complete subtrees whose fold is the hash of leaves `[lo, hi)`, left to right. Valid
/// for the ranges RFC 6962 recursion produces (`lo` a multiple of a power of two at least
/// `hi - lo`), which are the only ones used here.
pub fn range_nodes(lo: u64, hi: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut at = lo;
    let mut left = hi - lo;
    while left > 0 {
        let level = 63 - left.leading_zeros();
        let size = 1u64 << level;
        out.push(NodeId::new(level as u8, at >> level));
        at += size;
        left -= size;
    }
    out
}

/// Folds subtree hashes (as [`range_nodes`] lists them) into the range's hash: right to
/// left, each left neighbour becomes the left child.
pub fn fold(hashes: &[Hash]) -> Option<Hash> {
    let (last, rest) = hashes.split_last()?;
    Some(rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)))
}

/// The hash of a complete subtree from its leaf hashes (a power-of-two count), pairwise.
pub fn complete_hash(leaves: &[Hash]) -> Hash {
    let mut level: Vec<Hash> = leaves.to_vec();
    while level.len() > 1 {
        level = level.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
    }
    level.first().copied().unwrap_or_else(empty_root)
}

/// The nodes needed for the root of a tree of `size` leaves.
pub fn root_nodes(size: u64) -> Vec<NodeId> {
    range_nodes(0, size)
}

/// The root of the tree of `size` leaves (MTH), from stored hashes.
pub fn tree_root(size: u64, reader: &impl HashReader) -> Result<Hash, Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    let hashes = reader.read_hashes(&root_nodes(size))?;
    fold(&hashes).ok_or_else(|| Error::Missing("root of a non-empty tree".into()))
}

/// The leaf ranges whose hashes form PATH(m, D[lo:hi]), in proof order.
fn inclusion_ranges(m: u64, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
    if hi - lo <= 1 {
        return;
    }
    let k = split(hi - lo);
    if m < lo + k {
        inclusion_ranges(m, lo, lo + k, out);
        out.push((lo + k, hi));
    } else {
        inclusion_ranges(m, lo + k, hi, out);
        out.push((lo, lo + k));
    }
}

/// The leaf ranges whose hashes form SUBPROOF(m, D[lo:hi], b) (RFC 9162 §2.1.4.1).
fn consistency_ranges(m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<(u64, u64)>) {
    let n = hi - lo;
    if m == n {
        if !complete {
            out.push((lo, hi));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        consistency_ranges(m, lo, lo + k, complete, out);
        out.push((lo + k, hi));
    } else {
        consistency_ranges(m - k, lo + k, hi, false, out);
        out.push((lo, lo + k));
    }
}

fn flatten(ranges: &[(u64, u64)]) -> Vec<NodeId> {
    ranges
        .iter()
        .flat_map(|&(lo, hi)| range_nodes(lo, hi))
        .collect()
}

fn fold_ranges(ranges: &[(u64, u64)], reader: &impl HashReader) -> Result<Vec<Hash>, Error> {
    let nodes = flatten(ranges);
    let hashes = reader.read_hashes(&nodes)?;
    if hashes.len() != nodes.len() {
        return Err(Error::Missing(format!(
            "reader returned {} hashes for {} nodes",
            hashes.len(),
            nodes.len()
        )));
    }
    let mut at = 0;
    let mut out = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges {
        let count = (hi - lo).count_ones() as usize;
        let h = fold(&hashes[at..at + count])
            .ok_or_else(|| Error::Missing(format!("empty range {lo}..{hi}")))?;
        out.push(h);
        at += count;
    }
    Ok(out)
}

fn check_inclusion_args(index: u64, size: u64) -> Result<(), Error> {
    if index >= size {
        return Err(Error::OutOfRange(format!(
            "leaf {index} is not in a tree of {size} leaves"
        )));
    }
    Ok(())
}

/// The stored nodes an inclusion proof of leaf `index` in a tree of `size` leaves reads.
pub fn inclusion_nodes(index: u64, size: u64) -> Result<Vec<NodeId>, Error> {
    check_inclusion_args(index, size)?;
    let mut ranges = Vec::new();
    inclusion_ranges(index, 0, size, &mut ranges);
    Ok(flatten(&ranges))
}

/// The inclusion proof (audit path, RFC 9162 §2.1.3.1) of leaf `index` in the tree of `size`
/// leaves, from stored hashes.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    reader: &impl HashReader,
) -> Result<Vec<Hash>, Error> {
    check_inclusion_args(index, size)?;
    let mut ranges = Vec::new();
    inclusion_ranges(index, 0, size, &mut ranges);
    fold_ranges(&ranges, reader)
}

fn consistency_plan(old: u64, new: u64) -> Result<Vec<(u64, u64)>, Error> {
    if old > new {
        return Err(Error::OutOfRange(format!(
            "old size {old} is above new size {new}"
        )));
    }
    let mut ranges = Vec::new();
    if old > 0 && old < new {
        consistency_ranges(old, 0, new, true, &mut ranges);
    }
    Ok(ranges)
}

/// The stored nodes a consistency proof from `old` to `new` leaves reads.
pub fn consistency_nodes(old: u64, new: u64) -> Result<Vec<NodeId>, Error> {
    Ok(flatten(&consistency_plan(old, new)?))
}

/// The consistency proof (RFC 9162 §2.1.4.1) that the tree of `new` leaves extends the tree
/// of `old` leaves; empty when `old` is 0 or equals `new`.
pub fn consistency_proof(old: u64, new: u64, reader: &impl HashReader) -> Result<Vec<Hash>, Error> {
    fold_ranges(&consistency_plan(old, new)?, reader)
}

fn invalid(what: &str) -> Error {
    Error::Invalid(what.to_owned())
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2): `leaf` (a [`leaf_hash`]) is leaf `index`
/// of the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    path: &[Hash],
    root: &Hash,
) -> Result<(), Error> {
    if index >= size {
        return Err(invalid("inclusion: leaf index not below tree size"));
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return Err(invalid("inclusion: path longer than the tree is deep"));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(invalid("inclusion: path shorter than the tree is deep"));
    }
    if &r != root {
        return Err(invalid("inclusion: path does not lead to the root"));
    }
    Ok(())
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2): the tree of `new` leaves with root
/// `new_root` extends the tree of `old` leaves with root `old_root`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), Error> {
    if old > new {
        return Err(invalid("consistency: old size above new size"));
    }
    if old == new {
        if !proof.is_empty() || old_root != new_root {
            return Err(invalid(
                "consistency: equal sizes need equal roots and no proof",
            ));
        }
        return Ok(());
    }
    if old == 0 {
        if !proof.is_empty() || old_root != &empty_root() {
            return Err(invalid("consistency: the empty tree needs no proof"));
        }
        return Ok(());
    }
    let mut nodes: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        nodes.push(*old_root);
    }
    nodes.extend_from_slice(proof);
    let Some((first, rest)) = nodes.split_first() else {
        return Err(invalid("consistency: empty proof"));
    };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return Err(invalid("consistency: proof too long"));
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(invalid("consistency: proof too short"));
    }
    if &fr != old_root {
        return Err(invalid("consistency: proof does not lead to the old root"));
    }
    if &sr != new_root {
        return Err(invalid("consistency: proof does not lead to the new root"));
    }
    Ok(())
}

/// A reader over all leaf hashes in memory (recomputes every subtree it is asked for): for
/// tests, small logs and full re-verification (`ledger verify` recomputes the tree).
pub struct LeafHashes<'a>(pub &'a [Hash]);

impl HashReader for LeafHashes<'_> {
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Error> {
        nodes
            .iter()
            .map(|n| {
                let lo = usize::try_from(n.index << n.level).ok();
                let hi = lo.and_then(|lo| lo.checked_add(1usize << n.level));
                match (lo, hi) {
                    (Some(lo), Some(hi)) if hi <= self.0.len() => {
                        Ok(complete_hash(&self.0[lo..hi]))
                    }
                    _ => Err(Error::Missing(format!("node {n:?} beyond the leaves"))),
                }
            })
            .collect()
    }
}

/// Parses a 64-digit hex hash.
pub fn parse_hash(hex_text: &str) -> Result<Hash, Error> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out)
        .map_err(|e| Error::Malformed(format!("hash {hex_text:?}: {e}")))?;
    Ok(out)
}
