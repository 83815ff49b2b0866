//! Signed notes and keys: interoperability with Go's `sumdb/note`, round trips, and
//! tamper detection on every byte of a signed checkpoint.

use ledger_tlog::note::{Checkpoint, NoteSigner, NoteVerifier};
use proptest::prelude::*;

const GO_SIGNER: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VERIFIER: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";

fn signer() -> NoteSigner {
    NoteSigner::from_seed("example.com/avl-test", &[7u8; 32]).expect("signer")
}

/// The example keys of Go's `golang.org/x/mod/sumdb/note` parse, match each other, and a
/// note signed here verifies with the Go verifier key (same key id and signature bytes).
#[test]
fn go_note_keys_interoperate() {
    let s = NoteSigner::parse(GO_SIGNER).expect("Go signer key parses");
    let v = NoteVerifier::parse(GO_VERIFIER).expect("Go verifier key parses");
    assert_eq!(s.verifier(), v);
    assert_eq!(s.verifier().to_key_string(), GO_VERIFIER);
    assert_eq!(s.to_key_string().as_str(), GO_SIGNER);
    let note = s.sign(GO_TEXT).expect("sign");
    assert_eq!(v.open(&note).expect("verifies"), GO_TEXT);
    assert!(note.starts_with(GO_TEXT));
    // Ed25519 is deterministic: the note is byte for byte Go's.
    assert_eq!(
        note,
        format!(
            "{GO_TEXT}\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        )
    );
}

/// A checkpoint's text is `origin\nsize\nbase64(root)\n` and parses back.
#[test]
fn checkpoint_text_round_trips() {
    let c = Checkpoint {
        origin: "example.com/avl-test".into(),
        size: 42,
        root: [0xab; 32],
    };
    assert_eq!(
        c.text(),
        "example.com/avl-test\n42\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n"
    );
    assert_eq!(Checkpoint::parse(&c.text()).expect("parses"), c);
    assert!(Checkpoint::parse("o\n042\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n").is_err());
    assert!(Checkpoint::parse("o\n-1\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n").is_err());
    assert!(Checkpoint::parse("o\n1\nq6ur\n").is_err());
}

/// Another key with the same name, or a verifier of another name, rejects the note; keys
/// with a wrong id or algorithm are refused; the signer's Debug hides the key.
#[test]
fn wrong_keys_are_refused() {
    let note = signer()
        .sign("example.com/avl-test\n1\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n")
        .expect("sign");
    let other = NoteSigner::from_seed("example.com/avl-test", &[8u8; 32]).expect("signer");
    assert!(other.verifier().open(&note).is_err());
    let renamed = NoteSigner::from_seed("example.com/other", &[7u8; 32]).expect("signer");
    assert!(renamed.verifier().open(&note).is_err());
    let vk = signer().verifier().to_key_string();
    let wrong_id = vk.replacen('+', "+0", 1).replacen("+0", "+", 1);
    assert!(
        NoteVerifier::parse(&wrong_id.replace(&hex::encode(signer().key_id()), "00000000"))
            .is_err()
    );
    let debug = format!("{:?}", signer());
    let secret = signer().to_key_string();
    assert!(!debug.contains(secret.rsplit('+').next().expect("key part")));
    assert!(debug.contains("redacted"));
    assert!(NoteSigner::from_seed("has space", &[1; 32]).is_err());
    assert!(NoteSigner::from_seed("has+plus", &[1; 32]).is_err());
}

proptest! {
    /// Flipping any bit anywhere in a signed checkpoint note (text, name, key id or
    /// signature) makes it fail to open as a checkpoint of the same origin, size and root.
    #[test]
    fn any_flipped_bit_in_a_note_fails(byte in any::<usize>(), bit in 0u8..8, size in 0u64..1_000_000, root in any::<[u8; 32]>()) {
        let s = signer();
        let c = Checkpoint { origin: s.name().to_owned(), size, root };
        let note = s.sign(&c.text()).expect("sign");
        let mut bytes = note.clone().into_bytes();
        let i = byte % bytes.len();
        bytes[i] ^= 1 << bit;
        let Ok(tampered) = String::from_utf8(bytes) else { return Ok(()); };
        let opened = s.verifier().open(&tampered).ok().map(Checkpoint::parse);
        prop_assert!(!matches!(opened, Some(Ok(ref got)) if *got == c && tampered != note));
    }
}
