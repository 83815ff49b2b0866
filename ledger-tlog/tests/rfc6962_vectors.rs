//! RFC 6962 reference-tree vectors (the 8-leaf tree of the Certificate Transparency
//! reference implementation, also used by Go's `sumdb/tlog` and Trillian).

use ledger_tlog::merkle::{
    Hash, LeafHashes, consistency_proof, empty_root, inclusion_proof, leaf_hash, tree_root,
    verify_consistency, verify_inclusion,
};

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn h(s: &str) -> Hash {
    ledger_tlog::merkle::parse_hash(s).expect("vector hash")
}

fn leaves() -> Vec<Hash> {
    LEAVES
        .iter()
        .map(|l| leaf_hash(&hex::decode(l).expect("vector leaf")))
        .collect()
}

/// The empty tree's root is SHA-256 of nothing.
#[test]
fn empty_tree_root() {
    assert_eq!(
        hex::encode(empty_root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        tree_root(0, &LeafHashes(&[])).expect("empty root"),
        empty_root()
    );
}

/// The root of every prefix of the reference tree matches the reference roots.
#[test]
fn reference_roots() {
    let leaves = leaves();
    for (size, want) in ROOTS.iter().enumerate() {
        let got = tree_root(size as u64 + 1, &LeafHashes(&leaves)).expect("root");
        assert_eq!(hex::encode(got), *want, "root of size {}", size + 1);
    }
}

/// The reference inclusion proofs are produced exactly, and verify.
#[test]
fn reference_inclusion_proofs() {
    let leaves = leaves();
    let cases: &[(u64, u64, &[&str])] = &[
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (index, size, want) in cases {
        let got = inclusion_proof(*index, *size, &LeafHashes(&leaves)).expect("proof");
        let got_hex: Vec<String> = got.iter().map(hex::encode).collect();
        assert_eq!(got_hex, *want, "inclusion of {index} in {size}");
        let root = h(ROOTS[*size as usize - 1]);
        verify_inclusion(*index, *size, &leaves[*index as usize], &got, &root)
            .expect("reference proof verifies");
    }
}

/// The reference consistency proofs are produced exactly, and verify.
#[test]
fn reference_consistency_proofs() {
    let leaves = leaves();
    let cases: &[(u64, u64, &[&str])] = &[
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (old, new, want) in cases {
        let got = consistency_proof(*old, *new, &LeafHashes(&leaves)).expect("proof");
        let got_hex: Vec<String> = got.iter().map(hex::encode).collect();
        assert_eq!(got_hex, *want, "consistency {old} -> {new}");
        verify_consistency(
            *old,
            *new,
            &h(ROOTS[*old as usize - 1]),
            &h(ROOTS[*new as usize - 1]),
            &got,
        )
        .expect("reference proof verifies");
    }
}
