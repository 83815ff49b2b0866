//! C2SP `tlog-checkpoint` texts and C2SP `signed-note` Ed25519 signatures and keys, as Go's
//! `golang.org/x/mod/sumdb/note`, Tessera and Rekor v2 write them.
//!
//! - Checkpoint text: `<origin>\n<tree size, decimal>\n<base64 root>\n`.
//! - Signed note: the text, an empty line, then one line per signature:
//!   `— <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>\n` (U+2014 EM
//!   DASH, space). The signature is over the text's bytes.
//! - Key id: the first 4 bytes of `SHA-256(<key name> || 0x0A || 0x01 || public key)`.
//! - Verifier key: `<name>+<key id, 8 hex digits>+<base64(0x01 || public key)>`.
//! - Signer key: `PRIVATE+KEY+<name>+<key id, 8 hex digits>+<base64(0x01 || seed)>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Error;
use crate::merkle::Hash;

/// The signature algorithm byte of Ed25519 in signed-note keys.
pub const ALG_ED25519: u8 = 0x01;
/// The dash that starts a signature line: U+2014 EM DASH then a space.
pub const SIG_PREFIX: &str = "\u{2014} ";

pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name.contains('+')
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::Malformed(format!(
            "key name {name:?}: must be non-empty, without spaces, control characters or '+'"
        )));
    }
    Ok(())
}

/// The 4-byte key id of an Ed25519 key named `name`.
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    key_id_for(ALG_ED25519, name, public)
}

/// The key id of a key of algorithm `alg` (signed-note: the first 4 bytes of
/// SHA-256(name || 0x0A || alg || key); also cosignature/v1's, with its algorithm byte).
pub(crate) fn key_id_for(alg: u8, name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Parses a verifier key string `<name>+<id>+<base64(alg || key)>` of algorithm `alg`
/// (surrounding whitespace, such as a key file's final newline, ignored; the name ends at the
/// first `+`, the id at the second, the base64 key, which may contain `+`, is the rest).
/// `what` names the key kind in errors; `want` says which algorithm was expected.
pub(crate) fn parse_verifier_key(
    text: &str,
    alg: u8,
    what: &str,
    want: &str,
) -> Result<(String, VerifyingKey), Error> {
    let text = text.trim();
    let bad = |why: &str| Error::Malformed(format!("{what}: {why}"));
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected <name>+<id>+<key>"));
    };
    check_name(name)?;
    let raw = B64.decode(key).map_err(|_| bad("key is not base64"))?;
    if raw.len() != 33 || raw[0] != alg {
        return Err(bad(want));
    }
    let mut public = [0u8; 32];
    public.copy_from_slice(&raw[1..]);
    let key = VerifyingKey::from_bytes(&public).map_err(|_| bad("not a valid Ed25519 point"))?;
    if id != hex::encode(key_id_for(alg, name, &public)) {
        return Err(bad("key id does not match the key"));
    }
    Ok((name.to_owned(), key))
}

/// Parses a signer key string `PRIVATE+KEY+<name>+<id>+<base64(alg || seed)>` of algorithm
/// `alg` (a key file's final newline ignored; the base64 seed may contain `+`). `what` names
/// the key kind in errors, `want` the algorithm expected; no error contains the key.
pub(crate) fn parse_signer_key(
    text: &str,
    alg: u8,
    what: &str,
    want: &str,
) -> Result<(String, SigningKey), Error> {
    let text = text.trim_end_matches(['\n', '\r']);
    let bad = |why: &str| Error::Malformed(format!("{what}: {why}"));
    let rest = text
        .strip_prefix("PRIVATE+KEY+")
        .ok_or_else(|| bad("does not start with PRIVATE+KEY+"))?;
    let mut parts = rest.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected PRIVATE+KEY+<name>+<id>+<key>"));
    };
    check_name(name)?;
    let raw = Zeroizing::new(B64.decode(key).map_err(|_| bad("key is not base64"))?);
    if raw.len() != 33 || raw[0] != alg {
        return Err(bad(want));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&raw[1..]);
    let key = SigningKey::from_bytes(&seed);
    if id != hex::encode(key_id_for(alg, name, key.verifying_key().as_bytes())) {
        return Err(bad("key id does not match the key"));
    }
    Ok((name.to_owned(), key))
}

/// The signer key string of `key` named `name`, algorithm `alg`. Secret.
pub(crate) fn signer_key_string(alg: u8, name: &str, key: &SigningKey) -> Zeroizing<String> {
    let mut raw = Zeroizing::new(Vec::with_capacity(33));
    raw.push(alg);
    raw.extend_from_slice(key.as_bytes());
    Zeroizing::new(format!(
        "PRIVATE+KEY+{name}+{}+{}",
        hex::encode(key_id_for(alg, name, key.verifying_key().as_bytes())),
        B64.encode(&*raw)
    ))
}

/// The verifier key string of `key` named `name`, algorithm `alg`.
pub(crate) fn verifier_key_string(alg: u8, name: &str, key: &VerifyingKey) -> String {
    let mut raw = Vec::with_capacity(33);
    raw.push(alg);
    raw.extend_from_slice(key.as_bytes());
    format!(
        "{name}+{}+{}",
        hex::encode(key_id_for(alg, name, key.as_bytes())),
        B64.encode(raw)
    )
}

/// A checkpoint: the signed statement "the log `origin` has `size` leaves and root `root`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log (and so binds the checkpoint to it).
    pub origin: String,
    /// Tree size (number of leaves).
    pub size: u64,
    /// Root hash of the tree of `size` leaves.
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint's note text.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a checkpoint text (the first three lines; C2SP allows extension lines after
    /// them, which are kept in the signed text but not interpreted).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut lines = text.split('\n');
        let bad = |what: &str| Error::Malformed(format!("checkpoint: {what}"));
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("no origin line"))?;
        let size_line = lines.next().ok_or_else(|| bad("no size line"))?;
        if size_line.is_empty()
            || !size_line.bytes().all(|b| b.is_ascii_digit())
            || (size_line.len() > 1 && size_line.starts_with('0'))
        {
            return Err(bad("size is not a decimal number without leading zeros"));
        }
        let size: u64 = size_line.parse().map_err(|_| bad("size out of range"))?;
        let root_line = lines.next().ok_or_else(|| bad("no root line"))?;
        let root_bytes = B64
            .decode(root_line)
            .map_err(|_| bad("root is not base64"))?;
        let root: Hash = root_bytes
            .try_into()
            .map_err(|_| bad("root is not 32 bytes"))?;
        if !text.ends_with('\n') {
            return Err(bad("text does not end with a newline"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// A signed-note signer: an Ed25519 key and its name. Its `Debug` never shows the key.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl NoteSigner {
    /// A signer named `name` from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, Error> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(seed),
        })
    }

    /// Parses a signer key (`PRIVATE+KEY+name+id+base64`). The error never contains the key.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let (name, key) = parse_signer_key(
            text,
            ALG_ED25519,
            "signer key",
            "not an Ed25519 key (algorithm 1, 32 bytes)",
        )?;
        Ok(Self { name, key })
    }

    /// The key's name (the checkpoint origin, by AVL's convention).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, self.key.verifying_key().as_bytes())
    }

    /// The signer key in signed-note format. Secret: write it only to a 0600 file.
    pub fn to_key_string(&self) -> Zeroizing<String> {
        signer_key_string(ALG_ED25519, &self.name, &self.key)
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` (which must end with a newline): the whole signed note.
    pub fn sign(&self, text: &str) -> Result<String, Error> {
        if !text.ends_with('\n') || text.contains("\n\n") {
            return Err(Error::Malformed(
                "note text must end with one newline and have no empty line".into(),
            ));
        }
        let sig = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.key_id());
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

/// A signed-note verifier: a name and an Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key (`name+id+base64(0x01 || key)`).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let (name, key) = parse_verifier_key(
            text,
            ALG_ED25519,
            "verifier key",
            "not an Ed25519 key (algorithm 1, 32 bytes)",
        )?;
        Ok(Self { name, key })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, self.key.as_bytes())
    }

    /// The verifier key in signed-note format (public).
    pub fn to_key_string(&self) -> String {
        verifier_key_string(ALG_ED25519, &self.name, &self.key)
    }

    /// Opens a signed note: checks that one of its signatures is by this key and valid, and
    /// returns the signed text. Signatures by other keys are ignored (witnesses may add
    /// theirs); a line by this key's name and id that does not verify fails.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, Error> {
        let (text, sigs) = split_note(note)?;
        let id = self.key_id();
        let mut verified = false;
        for line in sigs {
            let (name, blob) = parse_sig_line(line)?;
            if name != self.name || blob.len() < 4 || blob[..4] != id {
                continue;
            }
            let sig = ed25519_dalek::Signature::from_slice(&blob[4..])
                .map_err(|_| Error::Invalid("signature is not 64 bytes".into()))?;
            self.key.verify_strict(text.as_bytes(), &sig).map_err(|_| {
                Error::Invalid(format!("signature by {} does not verify", self.name))
            })?;
            verified = true;
        }
        if !verified {
            return Err(Error::Invalid(format!(
                "no signature by key {}+{}",
                self.name,
                hex::encode(id)
            )));
        }
        Ok(text)
    }
}

/// Splits a note into its text (with its final newline) and its signature lines.
pub fn split_note(note: &str) -> Result<(&str, Vec<&str>), Error> {
    let at = note
        .rfind("\n\n")
        .ok_or_else(|| Error::Malformed("note: no empty line before the signatures".into()))?;
    let text = &note[..=at];
    let sigs = &note[at + 2..];
    if !sigs.ends_with('\n') {
        return Err(Error::Malformed(
            "note: signatures do not end with a newline".into(),
        ));
    }
    let lines: Vec<&str> = sigs[..sigs.len() - 1].split('\n').collect();
    if lines.is_empty() || lines.iter().any(|l| l.is_empty()) {
        return Err(Error::Malformed("note: empty signature line".into()));
    }
    Ok((text, lines))
}

/// Parses `— <name> <base64>` into the name and the decoded blob.
pub(crate) fn parse_sig_line(line: &str) -> Result<(&str, Vec<u8>), Error> {
    let bad = || Error::Malformed(format!("note: bad signature line {line:?}"));
    let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(bad)?;
    let (name, b64) = rest.split_once(' ').ok_or_else(bad)?;
    let blob = B64.decode(b64).map_err(|_| bad())?;
    if blob.len() < 5 {
        return Err(bad());
    }
    Ok((name, blob))
}

/// The checkpoint text of an unsigned note (`None` when `note` has signature lines or is a
/// bare text): for checkpoints a ledger without a key stored.
pub fn unsigned_text(note: &str) -> Option<&str> {
    (note.ends_with('\n') && !note.contains("\n\n")).then_some(note)
}
