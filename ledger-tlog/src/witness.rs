//! C2SP `tlog-witness`: the `add-checkpoint` request body, and a witness's logic (the
//! server side, pure: no I/O) — what the ledger's publisher sends and what the test witness
//! answers.
//!
//! Request body: `old <size>\n`, zero to 63 consistency proof lines (one base64 hash each),
//! an empty line, then the signed checkpoint note. The witness answers:
//! - 200 with one or more cosignature lines;
//! - 404: unknown origin; 403: no signature by a key it trusts for the origin;
//! - 400: malformed body, or `old` above the checkpoint's size;
//! - 409 with body `<size>\n` (`Content-Type: text/x.tlog.size`): `old` is not the size it
//!   last cosigned (or the sizes match and the roots differ);
//! - 422: the consistency proof does not verify.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::Error;
use crate::cosig::CosignatureSigner;
use crate::merkle::{Hash, empty_root, verify_consistency};
use crate::note::{Checkpoint, NoteVerifier, split_note};

/// Most consistency proof lines a request may carry.
pub const MAX_PROOF_LINES: usize = 63;
/// The media type of a 409 answer's body.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// An `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size the client believes the witness last cosigned.
    pub old: u64,
    /// The consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note.
    pub note: String,
}

fn parse_size(text: &str) -> Option<u64> {
    if text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

impl AddCheckpoint {
    /// The request body.
    pub fn to_body(&self) -> String {
        let mut body = format!("old {}\n", self.old);
        for h in &self.proof {
            body.push_str(&B64.encode(h));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&self.note);
        body
    }

    /// Parses a request body ([`Error::Malformed`] for anything off the format).
    pub fn parse(body: &str) -> Result<Self, Error> {
        let bad = |what: &str| Error::Malformed(format!("add-checkpoint: {what}"));
        let (head, note) = body
            .split_once("\n\n")
            .ok_or_else(|| bad("no empty line before the checkpoint"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(parse_size)
            .ok_or_else(|| bad("the first line is not `old <decimal size>`"))?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let raw = B64
                .decode(line)
                .map_err(|_| bad("a proof line is not base64"))?;
            let h: Hash = raw
                .try_into()
                .map_err(|_| bad("a proof line is not a 32-byte hash"))?;
            proof.push(h);
        }
        Ok(Self {
            old,
            proof,
            note: note.to_owned(),
        })
    }
}

/// A witness's answer to `add-checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: the cosignature lines.
    Cosigned(String),
    /// 409: the size the witness last cosigned for this origin.
    Conflict(u64),
    /// 404: the origin is not a log this witness knows.
    UnknownLog,
    /// 403: no signature by a key trusted for the origin verifies.
    Forbidden,
    /// 400: malformed request.
    BadRequest(String),
    /// 422: the consistency proof does not verify.
    BadProof(String),
}

impl Answer {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Cosigned(_) => 200,
            Answer::Conflict(_) => 409,
            Answer::UnknownLog => 404,
            Answer::Forbidden => 403,
            Answer::BadRequest(_) => 400,
            Answer::BadProof(_) => 422,
        }
    }

    /// The response body.
    pub fn body(&self) -> String {
        match self {
            Answer::Cosigned(lines) => lines.clone(),
            Answer::Conflict(size) => format!("{size}\n"),
            Answer::UnknownLog => "unknown log\n".into(),
            Answer::Forbidden => "no valid signature by a trusted key\n".into(),
            Answer::BadRequest(m) | Answer::BadProof(m) => format!("{m}\n"),
        }
    }
}

/// A witness: the logs it trusts (by origin), the latest checkpoint it cosigned for each,
/// and its cosigner key. Callers serialize [`Witness::add_checkpoint`] (one `&mut`), which
/// makes the check of `old` and the update of the state atomic, as the spec requires.
#[derive(Debug)]
pub struct Witness {
    signer: CosignatureSigner,
    logs: HashMap<String, NoteVerifier>,
    latest: HashMap<String, (u64, Hash)>,
}

impl Witness {
    /// A witness signing with `signer` that trusts `logs` (each log's origin is its key's
    /// name, AVL's convention).
    pub fn new(signer: CosignatureSigner, logs: Vec<NoteVerifier>) -> Self {
        Self {
            signer,
            logs: logs.into_iter().map(|k| (k.name().to_owned(), k)).collect(),
            latest: HashMap::new(),
        }
    }

    /// The cosigner key.
    pub fn signer(&self) -> &CosignatureSigner {
        &self.signer
    }

    /// The latest size and root cosigned for `origin`.
    pub fn latest(&self, origin: &str) -> Option<(u64, Hash)> {
        self.latest.get(origin).copied()
    }

    /// Handles one `add-checkpoint` body at time `now` (Unix seconds), per the spec's order
    /// of checks; the state changes only when the answer is [`Answer::Cosigned`].
    pub fn add_checkpoint(&mut self, body: &[u8], now: u64) -> Answer {
        let Ok(body) = std::str::from_utf8(body) else {
            return Answer::BadRequest("body is not UTF-8".into());
        };
        let req = match AddCheckpoint::parse(body) {
            Ok(r) => r,
            Err(e) => return Answer::BadRequest(e.to_string()),
        };
        let Ok((text, _)) = split_note(&req.note) else {
            return Answer::BadRequest("the checkpoint is not a signed note".into());
        };
        let cp = match Checkpoint::parse(text) {
            Ok(c) => c,
            Err(e) => return Answer::BadRequest(e.to_string()),
        };
        let Some(key) = self.logs.get(&cp.origin) else {
            return Answer::UnknownLog;
        };
        if key.open(&req.note).is_err() {
            return Answer::Forbidden;
        }
        if req.old > cp.size {
            return Answer::BadRequest("old size above the checkpoint's size".into());
        }
        let (size, root) = self.latest(&cp.origin).unwrap_or((0, empty_root()));
        if req.old != size {
            return Answer::Conflict(size);
        }
        if req.old == cp.size && root != cp.root {
            return Answer::Conflict(size);
        }
        if req.old == 0 && !req.proof.is_empty() {
            return Answer::BadProof("the proof from size 0 must be empty".into());
        }
        if let Err(e) = verify_consistency(req.old, cp.size, &root, &cp.root, &req.proof) {
            return Answer::BadProof(e.to_string());
        }
        let line = match self.signer.cosign(text, now) {
            Ok(l) => l,
            Err(e) => return Answer::BadRequest(e.to_string()),
        };
        self.latest.insert(cp.origin, (cp.size, cp.root));
        Answer::Cosigned(line)
    }
}

/// Parses a 409 answer's body (`<size>\n`).
pub fn parse_conflict_size(body: &str) -> Result<u64, Error> {
    body.strip_suffix('\n')
        .and_then(parse_size)
        .ok_or_else(|| Error::Malformed("409 body is not `<decimal size>\\n`".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{LeafHashes, consistency_proof, leaf_hash, tree_root};
    use crate::note::NoteSigner;

    struct Log {
        key: NoteSigner,
        leaves: Vec<Hash>,
    }

    impl Log {
        fn note(&self, size: u64) -> String {
            let text = Checkpoint {
                origin: self.key.name().into(),
                size,
                root: tree_root(size, &LeafHashes(&self.leaves)).expect("root"),
            }
            .text();
            self.key.sign(&text).expect("sign")
        }
        fn req(&self, old: u64, size: u64) -> String {
            let proof = if old == 0 {
                Vec::new()
            } else {
                consistency_proof(old, size, &LeafHashes(&self.leaves)).expect("proof")
            };
            AddCheckpoint {
                old,
                proof,
                note: self.note(size),
            }
            .to_body()
        }
    }

    fn setup() -> (Log, Witness) {
        let key = NoteSigner::from_seed("example.com/log", &[1; 32]).expect("key");
        let leaves = (0..40u8).map(|i| leaf_hash(&[i])).collect();
        let w = Witness::new(
            CosignatureSigner::from_seed("witness.example/w", &[2; 32]).expect("w"),
            vec![key.verifier()],
        );
        (Log { key, leaves }, w)
    }

    #[test]
    fn request_round_trips() {
        let req = AddCheckpoint {
            old: 20,
            proof: vec![[1; 32], [2; 32]],
            note: "o\n1\nAAAA\n\n\u{2014} o x\n".into(),
        };
        assert_eq!(AddCheckpoint::parse(&req.to_body()), Ok(req));
        assert!(AddCheckpoint::parse("old 01\n\nx").is_err());
        assert!(AddCheckpoint::parse("new 1\n\nx").is_err());
        assert!(AddCheckpoint::parse("old 1\nnot-b64!\n\nx").is_err());
        let many = format!(
            "old 1\n{}\nx",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n".repeat(64)
        );
        assert!(AddCheckpoint::parse(&many).is_err());
    }

    #[test]
    fn witness_cosigns_refuses_and_conflicts() {
        let (log, mut w) = setup();
        let v = w.signer().verifier();
        // First checkpoint from 0, then extended with a proof.
        let a = w.add_checkpoint(log.req(0, 10).as_bytes(), 1000);
        let Answer::Cosigned(line) = &a else {
            panic!("not cosigned: {a:?}")
        };
        let note10 = log.note(10);
        assert_eq!(v.verify_note(&format!("{note10}{line}")), Ok(Some(1000)));
        assert_eq!(w.latest("example.com/log").map(|l| l.0), Some(10));
        assert_eq!(
            w.add_checkpoint(log.req(10, 25).as_bytes(), 1001).status(),
            200
        );
        // A stale old: 409 with the witness's size.
        let stale = w.add_checkpoint(log.req(10, 30).as_bytes(), 1002);
        assert_eq!(stale, Answer::Conflict(25));
        assert_eq!(parse_conflict_size(&stale.body()), Ok(25));
        assert_eq!(
            w.add_checkpoint(log.req(0, 30).as_bytes(), 1002),
            Answer::Conflict(25)
        );
        // A bad proof: 422, state unchanged.
        let mut bad = AddCheckpoint::parse(&log.req(25, 30)).expect("req");
        bad.proof[0][0] ^= 1;
        assert_eq!(
            w.add_checkpoint(bad.to_body().as_bytes(), 1003).status(),
            422
        );
        // An inconsistent checkpoint: a forked log signed by the same key.
        let mut fork = Log {
            key: NoteSigner::from_seed("example.com/log", &[1; 32]).expect("key"),
            leaves: log.leaves.clone(),
        };
        fork.leaves[3] = leaf_hash(b"rewritten");
        assert_eq!(
            w.add_checkpoint(fork.req(25, 30).as_bytes(), 1003).status(),
            422
        );
        // Same size, other root: 409.
        assert_eq!(
            w.add_checkpoint(fork.req(25, 25).as_bytes(), 1003),
            Answer::Conflict(25)
        );
        assert_eq!(w.latest("example.com/log").map(|l| l.0), Some(25));
        // Old above the size: 400. Unknown log: 404. Foreign key: 403.
        assert_eq!(
            w.add_checkpoint(log.req(25, 30).replace("old 25", "old 31").as_bytes(), 1)
                .status(),
            400
        );
        let other = NoteSigner::from_seed("other.example/log", &[3; 32]).expect("key");
        let text = Checkpoint {
            origin: "other.example/log".into(),
            size: 1,
            root: [0; 32],
        }
        .text();
        let body = AddCheckpoint {
            old: 0,
            proof: vec![],
            note: other.sign(&text).expect("sign"),
        };
        assert_eq!(w.add_checkpoint(body.to_body().as_bytes(), 1).status(), 404);
        let impostor = NoteSigner::from_seed("example.com/log", &[4; 32]).expect("key");
        let text = Checkpoint {
            origin: "example.com/log".into(),
            size: 30,
            root: [0; 32],
        }
        .text();
        let body = AddCheckpoint {
            old: 25,
            proof: vec![],
            note: impostor.sign(&text).expect("sign"),
        };
        assert_eq!(w.add_checkpoint(body.to_body().as_bytes(), 1).status(), 403);
        assert_eq!(w.add_checkpoint(b"\xff", 1).status(), 400);
        // Still extends normally.
        assert_eq!(
            w.add_checkpoint(log.req(25, 40).as_bytes(), 1004).status(),
            200
        );
    }
}
