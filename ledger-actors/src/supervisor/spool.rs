//! The outage spool: buffered records appended to a local file and fsynced before they are
//! acknowledged, so a process killed during an outage loses no acknowledged record.
//!
//! Format: a sequence of frames, each `len: u32 BE | crc32(body): u32 BE | body`, where the
//! body is the record as JSON. A reader accepts frames up to the first one that is truncated
//! or fails its checksum and reports that tail; it never applies part of a frame.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledger_entities::LedgerRecord;

use crate::error::LedgerError;

/// File name of the spool inside `spool_dir`.
pub const SPOOL_FILE: &str = "avl-outage.spool";

/// Largest frame body accepted when reading (a record is at most ~1 MiB of payload).
const MAX_FRAME: u32 = 64 << 20;

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct SpoolContents {
    /// Records of the complete, checksummed frames, in order.
    pub records: Vec<Arc<LedgerRecord>>,
    /// Why reading stopped before the end of the file, and at which byte offset.
    pub corrupt_tail: Option<(u64, String)>,
}

/// An open spool file, appended to by the supervisor.
pub struct Spool {
    path: PathBuf,
    out: BufWriter<File>,
    bytes: u64,
}

fn io_err(path: &Path, what: &str, e: &std::io::Error) -> LedgerError {
    LedgerError::Internal(format!("spool {}: {what}: {e}", path.display()))
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir` for appending.
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, "create directory", &e))?;
        let path = dir.join(SPOOL_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, "open", &e))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path,
            out: BufWriter::new(file),
            bytes,
        })
    }

    /// The spool file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file (including unsynced writes).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends one frame (buffered; call [`Spool::sync`] before acknowledging).
    pub fn append(&mut self, record: &LedgerRecord) -> Result<(), LedgerError> {
        let body = serde_json::to_vec(record)
            .map_err(|e| LedgerError::Internal(format!("spool: encode record: {e}")))?;
        let len = u32::try_from(body.len())
            .map_err(|_| LedgerError::Internal("spool: record too large for a frame".into()))?;
        let crc = crc32fast::hash(&body);
        let path = self.path.clone();
        self.out
            .write_all(&len.to_be_bytes())
            .and_then(|()| self.out.write_all(&crc.to_be_bytes()))
            .and_then(|()| self.out.write_all(&body))
            .map_err(|e| io_err(&path, "write", &e))?;
        self.bytes += 8 + u64::from(len);
        Ok(())
    }

    /// Flushes and fsyncs everything appended so far.
    pub fn sync(&mut self) -> Result<(), LedgerError> {
        let path = self.path.clone();
        self.out.flush().map_err(|e| io_err(&path, "flush", &e))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| io_err(&path, "fsync", &e))
    }

    /// Empties the spool (every record in it reached PostgreSQL).
    pub fn truncate(&mut self) -> Result<(), LedgerError> {
        self.sync()?;
        let path = self.path.clone();
        self.out
            .get_ref()
            .set_len(0)
            .and_then(|()| self.out.get_ref().sync_all())
            .map_err(|e| io_err(&path, "truncate", &e))?;
        self.bytes = 0;
        Ok(())
    }
}

/// Reads the spool in `dir` (an absent file is an empty spool).
pub fn read(dir: &Path) -> Result<SpoolContents, LedgerError> {
    let path = dir.join(SPOOL_FILE);
    let mut data = Vec::new();
    match File::open(&path) {
        Ok(mut f) => {
            f.read_to_end(&mut data)
                .map_err(|e| io_err(&path, "read", &e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SpoolContents::default()),
        Err(e) => return Err(io_err(&path, "open", &e)),
    }
    Ok(decode(&data))
}

/// Decodes frames from `data`; see the module doc.
pub fn decode(data: &[u8]) -> SpoolContents {
    let mut out = SpoolContents::default();
    let mut at = 0usize;
    while at < data.len() {
        let offset = at as u64;
        let Some(header) = data.get(at..at + 8) else {
            out.corrupt_tail = Some((offset, "truncated frame header".into()));
            break;
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_FRAME {
            out.corrupt_tail = Some((offset, format!("frame length {len} is implausible")));
            break;
        }
        let Some(body) = data.get(at + 8..at + 8 + len as usize) else {
            out.corrupt_tail = Some((offset, "truncated frame body".into()));
            break;
        };
        if crc32fast::hash(body) != crc {
            out.corrupt_tail = Some((offset, "checksum mismatch".into()));
            break;
        }
        match serde_json::from_slice::<LedgerRecord>(body) {
            Ok(r) => out.records.push(Arc::new(r)),
            Err(e) => {
                out.corrupt_tail = Some((offset, format!("undecodable record: {e}")));
                break;
            }
        }
        at += 8 + len as usize;
    }
    out
}
