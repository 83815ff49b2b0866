//! The transparency log's side of [`crate::Ledger`] (whose methods are in
//! `ledger/log.rs`): starting the [`Integrator`], the latest
//! checkpoint, receipts (inclusion proofs), consistency proofs, appends that answer with a
//! receipt, and offline receipt verification. The pure parts (hashing, tiles, proofs,
//! notes) are the `ledger-tlog` crate.

use std::sync::Arc;

use ledger_entities::LedgerRecord;
use ledger_tlog::merkle::{
    consistency_nodes, consistency_proof, inclusion_nodes, inclusion_proof, root_nodes, tree_root,
};
use ledger_tlog::note::NoteVerifier;
use ledger_tlog::receipt::{Receipt, Verified};
use ledger_tlog::tile::tiles_for;
use ledger_tlog::{Hash, NodeId};
use uuid::Uuid;

use crate::config::LedgerConfig;
use crate::error::LedgerError;
use crate::integrator::{Integrator, LogStore, Settings, load_signer};
use crate::store::{LedgerStore, MemoryLedgerStore};

/// A consistency proof between two tree sizes, with both roots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsistencyProof {
    /// The older size.
    pub old_size: u64,
    /// Root of the older tree (hex).
    pub old_root: String,
    /// The newer size.
    pub new_size: u64,
    /// Root of the newer tree (hex).
    pub new_root: String,
    /// The proof hashes (hex), RFC 9162 §2.1.4.
    pub proof: Vec<String>,
}

/// Starts the integrator for `config` over `log`, unless `checkpoint_interval` is 0.
pub(crate) fn start_integrator(
    config: &LedgerConfig,
    log: Arc<dyn LogStore>,
    wake: Arc<tokio::sync::Notify>,
) -> Result<Option<Arc<Integrator>>, LedgerError> {
    if config.checkpoint_interval.is_zero() {
        return Ok(None);
    }
    let signer = match &config.checkpoint_key {
        Some(path) => Some(load_signer(path)?),
        None => {
            tracing::warn!(
                "no checkpoint_key (LEDGER_CHECKPOINT_KEY): checkpoints are stored unsigned; run `ledger keygen`"
            );
            None
        }
    };
    let witnesses =
        (!config.witnesses.is_empty()).then(|| crate::integrator::witness::WitnessSettings {
            witnesses: config.witnesses.clone(),
            quorum: config.witness_quorum.unwrap_or(config.witnesses.len()),
        });
    Ok(Some(Arc::new(Integrator::start(
        log,
        signer,
        Settings {
            witnesses,
            checkpoint_interval: config.checkpoint_interval,
            lease: config.integrator_lease,
            // The memory log starts empty at every start: there is nothing to roll back.
            signed_state: match (&config.backend, &config.checkpoint_key) {
                (crate::config::Backend::Postgres, Some(key)) => {
                    Some(crate::integrator::signed::SignedStateFile::beside(key))
                }
                _ => None,
            },
            wake: Some(wake),
            metrics_partition: config.metrics_partition,
        },
    )?)))
}

/// The log of a memory-backend ledger.
pub(crate) fn memory_log(store: &Arc<MemoryLedgerStore>) -> Arc<dyn LogStore> {
    Arc::new(crate::integrator::memory::MemoryLog::new(Arc::clone(store)))
}

/// The log of a PostgreSQL ledger (its own pool of two connections).
pub(crate) fn postgres_log(config: &LedgerConfig) -> Result<Arc<dyn LogStore>, LedgerError> {
    Ok(Arc::new(crate::integrator::postgres::PostgresLog::connect(
        config,
    )?))
}

/// The log a PostgreSQL subscription reads (a pool of its own: two readers, one listener).
pub(crate) fn subscription_log(config: &LedgerConfig) -> Result<Arc<dyn LogStore>, LedgerError> {
    Ok(Arc::new(
        crate::integrator::postgres::PostgresLog::for_subscription(config)?,
    ))
}

/// Recomputes a receipt record's hash from its fields (the record encoding of
/// `docs/HASHING.md`).
pub fn receipt_record_hash(record: &serde_json::Value) -> Result<String, String> {
    let r: LedgerRecord = serde_json::from_value(record.clone())
        .map_err(|e| format!("the receipt's record is malformed: {e}"))?;
    // Every field but the payload must be written exactly as the ledger writes it: a field
    // that decodes to the same value in another form (upper-case hex, another `ts` layout)
    // would still hash the same, and a verifier written from docs/HASHING.md refuses it.
    // The payload's numbers are checked literal by literal on the receipt's text
    // ([`verify_receipt_text`]); its values here decode exactly.
    let canonical = serde_json::to_value(&r).map_err(|e| format!("record does not encode: {e}"))?;
    let (Some(given), Some(canonical)) = (record.as_object(), canonical.as_object()) else {
        return Err("the receipt's record is not an object".into());
    };
    for (name, value) in given {
        match canonical.get(name) {
            None => {
                return Err(format!(
                    "the receipt's record has an unknown field {name:?}"
                ));
            }
            Some(c) if name != "payload" && c != value => {
                return Err(format!(
                    "the receipt's record field {name:?} is {value}, not in the form the hash rules define ({c})"
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(name) = canonical.keys().find(|k| !given.contains_key(*k)) {
        return Err(format!("the receipt's record lacks the field {name:?}"));
    }
    ledger_entities::record::record_hash(&r)
        .map(|h| h.to_hex())
        .map_err(|e| e.to_string())
}

/// Verifies a receipt offline with the log's verifier key: signature, the checkpoint's
/// origin (it must be the key's name), record fields in the form the hash rules define,
/// record hash, inclusion path (see [`Receipt::verify`]).
pub fn verify_receipt(receipt: &Receipt, key: &NoteVerifier) -> Result<Verified, LedgerError> {
    verify_receipt_for(receipt, key, None)
}

/// [`verify_receipt`], the checkpoint's origin line required to be `origin` (default: the
/// key's name). A note signed by the log's key whose origin names another log is refused:
/// [`LedgerError::Log`].
pub fn verify_receipt_for(
    receipt: &Receipt,
    key: &NoteVerifier,
    origin: Option<&str>,
) -> Result<Verified, LedgerError> {
    let verified = receipt.verify(key, receipt_record_hash)?;
    let expected = origin.unwrap_or(key.name());
    if verified.checkpoint.origin != expected {
        return Err(LedgerError::Log(ledger_tlog::Error::Invalid(format!(
            "the checkpoint's origin is {:?}, not {expected:?} (the key's name{})",
            verified.checkpoint.origin,
            if origin.is_some() { " or --origin" } else { "" }
        ))));
    }
    Ok(verified)
}

/// Verifies a receipt from its text, as a verifier written from docs/HASHING.md does: the
/// text is parsed with the number rule applied literal by literal (a number the hash would
/// not record exactly — `30.00000000000000000001` in place of `30` — is refused, though it
/// decodes to the same double and the hash would match) and duplicate keys refused; then
/// [`verify_receipt_for`]. [`LedgerError::Invalid`] names the JSON pointer of a refused
/// literal.
pub fn verify_receipt_text(
    text: &str,
    key: &NoteVerifier,
    origin: Option<&str>,
) -> Result<(Receipt, Verified), LedgerError> {
    let value = ledger_entities::validate::parse_json_strict(text, "")?;
    let receipt: Receipt = serde_json::from_value(value).map_err(|e| {
        LedgerError::Log(ledger_tlog::Error::Malformed(format!("not a receipt: {e}")))
    })?;
    let verified = verify_receipt_for(&receipt, key, origin)?;
    Ok((receipt, verified))
}

/// Opens the PostgreSQL log of `config` for tools that read it without running a ledger
/// (`ledger checkpoint`, `ledger prove`, `ledger verify`). The memory backend has no log
/// outside a running process: [`LedgerError::Config`].
pub fn open_log(config: &LedgerConfig) -> Result<Arc<dyn LogStore>, LedgerError> {
    match config.backend {
        crate::config::Backend::Postgres => postgres_log(config),
        crate::config::Backend::Memory => Err(LedgerError::Config(
            "the memory backend keeps its log inside the running process; use backend: postgres"
                .into(),
        )),
    }
}

/// A stored checkpoint's note, exactly as `ledger checkpoint` prints it and `ledger serve`
/// answers `/checkpoint` (one function, so the two cannot differ): the stored note as is —
/// the log's signature and any further signature lines stored with it — or, for a ledger
/// without a key, the unsigned checkpoint text (origin [`crate::integrator::UNSIGNED_ORIGIN`]).
pub fn checkpoint_note(checkpoint: &crate::integrator::StoredCheckpoint) -> String {
    checkpoint.note.clone().unwrap_or_else(|| {
        ledger_tlog::note::Checkpoint {
            origin: crate::integrator::UNSIGNED_ORIGIN.into(),
            size: checkpoint.size,
            root: checkpoint.root,
        }
        .text()
    })
}

/// A receipt for `rid` under the latest checkpoint (see [`crate::Ledger::prove`]).
pub async fn prove(
    store: &dyn LedgerStore,
    log: &dyn LogStore,
    rid: Uuid,
) -> Result<Receipt, LedgerError> {
    let record = store
        .get(rid)
        .await?
        .ok_or_else(|| LedgerError::NotYetLogged(format!("no record {rid}")))?;
    let index = log
        .leaf_index(rid)
        .await?
        .ok_or_else(|| LedgerError::NotYetLogged(format!("record {rid} is not integrated yet")))?;
    let checkpoint = log
        .latest_checkpoint()
        .await?
        .filter(|c| c.size > index)
        .ok_or_else(|| {
            LedgerError::NotYetLogged(format!("no checkpoint covers leaf {index} yet"))
        })?;
    let tiles = read_nodes(log, &inclusion_nodes(index, checkpoint.size)?).await?;
    let path = inclusion_proof(index, checkpoint.size, &tiles)?;
    let note = checkpoint_note(&checkpoint);
    let value = serde_json::to_value(record.as_ref())
        .map_err(|e| LedgerError::Internal(format!("record to JSON: {e}")))?;
    Ok(Receipt::new(value, index, checkpoint.size, &path, note))
}

/// The consistency proof from `old_size` to `new_size` (see [`crate::Ledger::prove_consistency`]).
pub async fn prove_consistency(
    log: &dyn LogStore,
    old_size: u64,
    new_size: Option<u64>,
) -> Result<ConsistencyProof, LedgerError> {
    let latest = log
        .latest_checkpoint()
        .await?
        .ok_or_else(|| LedgerError::NotYetLogged("no checkpoint yet".into()))?;
    let new_size = new_size.unwrap_or(latest.size);
    if new_size > latest.size {
        return Err(LedgerError::NotYetLogged(format!(
            "size {new_size} is beyond the latest checkpoint ({})",
            latest.size
        )));
    }
    let mut nodes = consistency_nodes(old_size, new_size)?;
    nodes.extend(root_nodes(old_size));
    nodes.extend(root_nodes(new_size));
    let tiles = read_nodes(log, &nodes).await?;
    let proof = consistency_proof(old_size, new_size, &tiles)?;
    let hex = |h: Hash| hex::encode(h);
    Ok(ConsistencyProof {
        old_size,
        old_root: hex(tree_root(old_size, &tiles)?),
        new_size,
        new_root: hex(tree_root(new_size, &tiles)?),
        proof: proof.into_iter().map(hex).collect(),
    })
}

async fn read_nodes(
    log: &dyn LogStore,
    nodes: &[NodeId],
) -> Result<ledger_tlog::tile::TileSet, LedgerError> {
    log.read_tiles(&tiles_for(nodes)).await
}
