//! C2SP `tlog-cosignature` (Ed25519, `cosignature/v1`): the signatures witnesses add to a
//! checkpoint after checking it is consistent with everything they saw of the log before.
//!
//! - Key id: the first 4 bytes of `SHA-256(<name> || 0x0A || 0x04 || public key)`.
//! - Verifier key (a signed-note vkey of type 0x04):
//!   `<name>+<key id, 8 hex digits>+<base64(0x04 || public key)>`.
//! - Signer key (this crate's format for the test witness, like the log's):
//!   `PRIVATE+KEY+<name>+<key id>+<base64(0x04 || seed)>`.
//! - Signed message: `cosignature/v1\ntime <timestamp>\n` followed by the checkpoint's
//!   note text (its body with the final newline, no signature lines).
//! - Signature line: `— <name> <base64(key id (4) || timestamp (8, big-endian u64 seconds)
//!   || Ed25519 signature (64))>\n`, 76 bytes before base64.
//!
//! Go's `golang.org/x/mod/sumdb/note` does not know type 0x04, so the ledger verifies
//! cosignatures itself ([`CosignatureVerifier`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::Error;
use crate::note::{SIG_PREFIX, check_name, parse_sig_line, split_note};

/// The signature type byte of Ed25519 cosignatures (`cosignature/v1`).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// The header line of the signed message (domain separation).
pub const HEADER: &str = "cosignature/v1";
/// Length of a decoded cosignature: key id, timestamp, Ed25519 signature.
pub const BLOB_LEN: usize = 4 + 8 + 64;
/// Largest timestamp the spec allows (2^63 - 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// The 4-byte key id of a cosignature/v1 key named `name`.
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    crate::note::key_id_for(ALG_COSIGNATURE_V1, name, public)
}

/// The message a cosignature signs: the header, the time line, the checkpoint text.
pub fn message(text: &str, timestamp: u64) -> String {
    format!("{HEADER}\ntime {timestamp}\n{text}")
}

/// A cosignature/v1 signer (a witness's key). Its `Debug` never shows the key.
pub struct CosignatureSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for CosignatureSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosignatureSigner")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl CosignatureSigner {
    /// A signer named `name` from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, Error> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(seed),
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64(0x04 || seed)>`. Errors never hold the key.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let (name, key) = crate::note::parse_signer_key(
            text,
            ALG_COSIGNATURE_V1,
            "cosigner key",
            "not a cosignature/v1 key (type 0x04, 32 bytes)",
        )?;
        Ok(Self { name, key })
    }

    /// The signer key string. Secret: write it only to a 0600 file.
    pub fn to_key_string(&self) -> Zeroizing<String> {
        crate::note::signer_key_string(ALG_COSIGNATURE_V1, &self.name, &self.key)
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, self.key.verifying_key().as_bytes())
    }

    /// The matching verifier.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The cosignature line (with its final newline) over the checkpoint note text `text`
    /// (the note body, ending with a newline) at `timestamp` (Unix seconds).
    pub fn cosign(&self, text: &str, timestamp: u64) -> Result<String, Error> {
        if !text.ends_with('\n') || text.contains("\n\n") {
            return Err(Error::Malformed(
                "note text must end with one newline and have no empty line".into(),
            ));
        }
        if timestamp > MAX_TIMESTAMP {
            return Err(Error::OutOfRange(
                "cosignature timestamp above 2^63-1".into(),
            ));
        }
        let sig = self.key.sign(message(text, timestamp).as_bytes());
        let mut blob = Vec::with_capacity(BLOB_LEN);
        blob.extend_from_slice(&self.key_id());
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(blob)))
    }
}

/// A cosignature/v1 verifier: a witness's name and Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// Parses a verifier key `<name>+<id>+<base64(0x04 || key)>` (surrounding whitespace,
    /// such as a key file's final newline, is ignored). The name ends at the first `+`, the
    /// id at the second; the base64 key (which may contain `+`) is the rest.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let (name, key) = crate::note::parse_verifier_key(
            text,
            ALG_COSIGNATURE_V1,
            "cosigner verifier key",
            "not a cosignature/v1 key (type 0x04, 32 bytes)",
        )?;
        Ok(Self { name, key })
    }

    /// The witness's key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, self.key.as_bytes())
    }

    /// The verifier key string.
    pub fn to_key_string(&self) -> String {
        crate::note::verifier_key_string(ALG_COSIGNATURE_V1, &self.name, &self.key)
    }

    /// Checks one signature line (without or with its final newline) over the note text
    /// `text`. `Ok(None)`: the line is by another key (its name or key id differ), to be
    /// ignored. `Ok(Some(timestamp))`: a valid cosignature by this key.
    /// [`Error::Invalid`]: the line names this key but does not verify.
    pub fn verify_line(&self, text: &str, line: &str) -> Result<Option<u64>, Error> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let (name, blob) = parse_sig_line(line)?;
        if name != self.name || blob.len() < 4 || blob[..4] != self.key_id() {
            return Ok(None);
        }
        let invalid = |what: &str| Error::Invalid(format!("cosignature by {}: {what}", self.name));
        if blob.len() != BLOB_LEN {
            return Err(invalid("not 76 bytes (key id, timestamp, signature)"));
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&blob[4..12]);
        let timestamp = u64::from_be_bytes(ts);
        if timestamp > MAX_TIMESTAMP {
            return Err(invalid("timestamp above 2^63-1"));
        }
        let sig = ed25519_dalek::Signature::from_slice(&blob[12..])
            .map_err(|_| invalid("signature is not 64 bytes"))?;
        self.key
            .verify_strict(message(text, timestamp).as_bytes(), &sig)
            .map_err(|_| invalid("does not verify"))?;
        Ok(Some(timestamp))
    }

    /// The timestamp of a valid cosignature by this key in the signed note `note` (`None`
    /// when the note has none). A line by this key that does not verify is an error
    /// ([`Error::Invalid`]): a forged or corrupted cosignature is never silently skipped.
    pub fn verify_note(&self, note: &str) -> Result<Option<u64>, Error> {
        let (text, lines) = split_note(note)?;
        let mut found = None;
        for line in lines {
            if let Some(ts) = self.verify_line(text, line)? {
                found = found.max(Some(ts));
            }
        }
        Ok(found)
    }
}

/// How many of `witnesses` have a valid cosignature in `note` and which do not; a line by
/// one of them that does not verify is an error ([`Error::Invalid`]). Duplicate keys among
/// `witnesses` count once.
pub fn count_cosigners<'a>(
    note: &str,
    witnesses: &'a [CosignatureVerifier],
) -> Result<(usize, Vec<&'a CosignatureVerifier>), Error> {
    let mut seen: Vec<&CosignatureVerifier> = Vec::new();
    let mut missing = Vec::new();
    for w in witnesses {
        if seen.contains(&w) || missing.contains(&w) {
            continue;
        }
        match w.verify_note(note)? {
            Some(_) => seen.push(w),
            None => missing.push(w),
        }
    }
    Ok((seen.len(), missing))
}

/// Checks that at least `quorum` of `witnesses` cosigned `note` (a line by one of them
/// that does not verify is [`Error::Invalid`]); [`Error::QuorumNotMet`] names the witnesses
/// without a cosignature. Returns the number of valid cosignatures.
pub fn check_quorum(
    note: &str,
    witnesses: &[CosignatureVerifier],
    quorum: usize,
) -> Result<usize, Error> {
    let (have, missing) = count_cosigners(note, witnesses)?;
    if have < quorum {
        return Err(Error::QuorumNotMet {
            need: quorum,
            have,
            missing: missing.iter().map(|w| w.name().to_owned()).collect(),
        });
    }
    Ok(have)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{Checkpoint, NoteSigner};
    use sha2::{Digest, Sha256};

    fn note() -> (NoteSigner, String) {
        let log = NoteSigner::from_seed("example.com/log", &[7; 32]).expect("log key");
        let text = Checkpoint {
            origin: "example.com/log".into(),
            size: 5,
            root: [9; 32],
        }
        .text();
        let note = log.sign(&text).expect("sign");
        (log, note)
    }

    #[test]
    fn cosignature_bytes_follow_the_spec() {
        let w = CosignatureSigner::from_seed("witness.example/w1", &[3; 32]).expect("key");
        let (_, note) = note();
        let (text, _) = split_note(&note).expect("split");
        let line = w.cosign(text, 1_679_315_147).expect("cosign");
        let b64 = line
            .strip_prefix("\u{2014} witness.example/w1 ")
            .and_then(|l| l.strip_suffix('\n'))
            .expect("line layout");
        let blob = B64.decode(b64).expect("base64");
        assert_eq!(blob.len(), 76);
        assert_eq!(blob[..4], w.key_id());
        assert_eq!(blob[4..12], 1_679_315_147u64.to_be_bytes());
        // The signature is over the header, the time line and the note text, byte for byte.
        let msg = format!("cosignature/v1\ntime 1679315147\n{text}");
        let sig = ed25519_dalek::Signature::from_slice(&blob[12..]).expect("sig");
        w.key
            .verifying_key()
            .verify_strict(msg.as_bytes(), &sig)
            .expect("verifies");
        // Key id: SHA-256(name || \n || 0x04 || key)[:4].
        let mut h = Sha256::new();
        h.update(b"witness.example/w1\n\x04");
        h.update(w.key.verifying_key().as_bytes());
        assert_eq!(h.finalize()[..4], w.key_id());
    }

    /// The vector of docs/HASHING.md ("Witness cosignatures"), computed there with Python's
    /// `cryptography` from the spec.
    #[test]
    fn hashing_document_vector() {
        let w = CosignatureSigner::from_seed("witness.example/avl-vectors", &[2; 32]).expect("key");
        assert_eq!(
            w.verifier().to_key_string(),
            "witness.example/avl-vectors+4395096c+BIE5dw6ofRdfVqNUZsNMfszLjYqRtO43ol32D1uPybOU"
        );
        assert_eq!(
            &*w.to_key_string(),
            "PRIVATE+KEY+witness.example/avl-vectors+4395096c+BAICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIC"
        );
        let text = "example.com/avl-vectors\n7\nJ52+zofZX4/1G54Md4Allz175qUvgleWaIjDHqnBcAk=\n";
        assert_eq!(
            w.cosign(text, 1_700_000_000).expect("cosign"),
            "\u{2014} witness.example/avl-vectors Q5UJbAAAAABlU/EA/4kYLgzYMZP/dyIAEGk2Oc9wv7/lHcpZKLuL78RrR/y14EasVtfMjm0Y1EaqQrAsP+R40t0zsGILRYbKg/pMCQ==\n"
        );
    }

    #[test]
    fn keys_round_trip_and_bad_keys_are_refused() {
        let w = CosignatureSigner::from_seed("w.example/a", &[5; 32]).expect("key");
        let vkey = w.verifier().to_key_string();
        let v = CosignatureVerifier::parse(&format!("{vkey}\n")).expect("parse vkey");
        assert_eq!(v, w.verifier());
        let skey = w.to_key_string();
        let back = CosignatureSigner::parse(&skey).expect("parse skey");
        assert_eq!(back.verifier(), w.verifier());
        // A log key (type 0x01) is not a cosigner key.
        let log = NoteSigner::from_seed("w.example/a", &[5; 32]).expect("log key");
        assert!(matches!(
            CosignatureVerifier::parse(&log.verifier().to_key_string()),
            Err(Error::Malformed(_))
        ));
        // A wrong key id.
        let mut parts: Vec<&str> = vkey.splitn(3, '+').collect();
        parts[1] = "00000000";
        assert!(CosignatureVerifier::parse(&parts.join("+")).is_err());
        assert!(CosignatureVerifier::parse("no-plus").is_err());
        assert!(!format!("{w:?}").contains(&B64.encode([5u8; 32])));
    }

    #[test]
    fn verification_finds_accepts_and_refuses() {
        let (log, note) = note();
        let (text, _) = split_note(&note).expect("split");
        let w1 = CosignatureSigner::from_seed("w1", &[1; 32]).expect("w1");
        let w2 = CosignatureSigner::from_seed("w2", &[2; 32]).expect("w2");
        let cosigned = format!("{note}{}", w1.cosign(text, 100).expect("cosign"));
        // The log's own signature still verifies with the extra line.
        assert_eq!(log.verifier().open(&cosigned).expect("log sig"), text);
        assert_eq!(w1.verifier().verify_note(&cosigned), Ok(Some(100)));
        assert_eq!(w2.verifier().verify_note(&cosigned), Ok(None));
        let ws = [w1.verifier(), w2.verifier(), w1.verifier()];
        let (n, missing) = count_cosigners(&cosigned, &ws).expect("count");
        assert_eq!(n, 1);
        assert_eq!(missing, vec![&ws[1]]);
        assert_eq!(check_quorum(&cosigned, &ws, 1), Ok(1));
        assert_eq!(
            check_quorum(&cosigned, &ws, 2),
            Err(Error::QuorumNotMet {
                need: 2,
                have: 1,
                missing: vec!["w2".into()]
            })
        );
        // A forged line under w1's name and id: an error, not a skip.
        let forged_line = w1.cosign(text, 101).expect("cosign");
        let mut blob = B64
            .decode(forged_line.trim_end().rsplit(' ').next().expect("b64"))
            .expect("b64");
        blob[20] ^= 1;
        let forged = format!("{note}\u{2014} w1 {}\n", B64.encode(&blob));
        assert!(matches!(
            w1.verifier().verify_note(&forged),
            Err(Error::Invalid(_))
        ));
        // A cosignature over another checkpoint does not verify for this one.
        let other = Checkpoint {
            origin: "example.com/log".into(),
            size: 6,
            root: [9; 32],
        }
        .text();
        let moved = format!("{note}{}", w1.cosign(&other, 100).expect("cosign"));
        assert!(w1.verifier().verify_note(&moved).is_err());
        assert!(w1.cosign("no newline", 1).is_err());
        assert!(w1.cosign(text, u64::MAX).is_err());
    }
}
