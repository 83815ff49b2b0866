//! The signer's own memory of what it signed, kept outside the database: a state file beside
//! the checkpoint key. Whoever holds the database can roll it back (a restored backup, a
//! standby promoted while behind, an old primary back after a split brain); a ledger that
//! then signed a checkpoint of the shorter log would have signed a split view — two
//! checkpoints no consistency proof joins. The integrator checks the stored log against this
//! file whenever it (re)loads the log, and never signs one that does not extend it.
//!
//! The file holds two checkpoints, as JSON:
//! - `signed`: the latest checkpoint known to be stored (written after its commit), the one
//!   the database must extend;
//! - `intent`: the checkpoint being signed now, written (fsynced) *before* the note is
//!   stored. A database that lacks it at the next load either never stored it (the commit
//!   failed: nobody has seen the note) or lost it in a rollback just after — told apart only
//!   by `signed`, so a crash between the commit and the promotion followed by a rollback of
//!   that one checkpoint goes unnoticed (two faults at once). An intent the database does
//!   have must match it.
//!
//! Every write goes to a temporary file, is fsynced, renamed over the state file, and the
//! directory is fsynced: a crash leaves the old state or the new one, never a torn file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ledger_tlog::Hash;
use serde::{Deserialize, Serialize};

use crate::error::LedgerError;

/// One checkpoint as the state file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root hash, hex.
    pub root: String,
}

impl SignedCheckpoint {
    /// The checkpoint of `size` leaves with `root`.
    pub fn new(size: u64, root: &Hash) -> Self {
        Self {
            size,
            root: hex::encode(root),
        }
    }
}

/// What the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The latest checkpoint known stored; the log must extend it.
    pub signed: Option<SignedCheckpoint>,
    /// The checkpoint being signed (not yet known stored).
    pub intent: Option<SignedCheckpoint>,
}

/// The state file of one signing key.
#[derive(Debug, Clone)]
pub struct SignedStateFile {
    path: PathBuf,
}

impl SignedStateFile {
    /// The state file beside `key`: `<key>.signed`.
    pub fn beside(key: &Path) -> Self {
        let mut name = key.as_os_str().to_owned();
        name.push(".signed");
        Self {
            path: PathBuf::from(name),
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state, empty when there is no file yet (a new key). An unreadable or malformed
    /// file is an error: the ledger cannot know what it signed, so it signs nothing.
    pub fn load(&self) -> Result<State, LedgerError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                LedgerError::Config(format!(
                    "signed-checkpoint state {}: not readable ({e}); restore it from a backup",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(LedgerError::Io(format!(
                "signed-checkpoint state {}: {e}",
                self.path.display()
            ))),
        }
    }

    /// Replaces the state, durably (temporary file, fsync, rename, directory fsync).
    pub fn store(&self, state: &State) -> Result<(), LedgerError> {
        let io = |e: std::io::Error| {
            LedgerError::Io(format!(
                "signed-checkpoint state {}: {e}",
                self.path.display()
            ))
        };
        let bytes = serde_json::to_vec(state)
            .map_err(|e| LedgerError::Internal(format!("signed state does not serialize: {e}")))?;
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut file = std::fs::File::create(&tmp).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_missing_file_is_empty() {
        let dir = std::env::temp_dir().join(format!("avl-signed-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = SignedStateFile::beside(&dir.join("checkpoint.key"));
        assert!(file.path().ends_with("checkpoint.key.signed"));
        assert_eq!(file.load().expect("no file yet"), State::default());
        let state = State {
            signed: Some(SignedCheckpoint::new(7, &[1; 32])),
            intent: Some(SignedCheckpoint::new(9, &[2; 32])),
        };
        file.store(&state).expect("store");
        assert_eq!(file.load().expect("load"), state);
        std::fs::write(file.path(), b"{not json").expect("corrupt it");
        assert!(matches!(file.load(), Err(LedgerError::Config(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
