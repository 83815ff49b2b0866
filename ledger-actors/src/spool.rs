//! The outage spool: buffered records appended to a local file and fsynced before they are
//! acknowledged, so a process killed during an outage loses no acknowledged record.
//!
//! Format: a sequence of frames, each `len: u32 BE | crc32(body): u32 BE | body`, where the
//! body is the record as JSON, or the JSON array of an atomic batch's records (written
//! and read as one frame, so a batch is never half-applied). A reader accepts frames up to the first one that is truncated
//! or fails its checksum and reports that tail; it never applies part of a frame.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledger_entities::LedgerRecord;

use crate::driver::handoff::{AckBatch, Durability, PersistReply};
use crate::error::LedgerError;

/// File name of the spool inside `spool_dir`.
pub const SPOOL_FILE: &str = "avl-outage.spool";

/// File name, inside `spool_dir`, of the records the ledger acknowledged but can never write
/// (their client rid was stored meanwhile with other content): same frame format as the
/// spool, appended and fsynced, never truncated by the ledger. An operator reads it (for
/// example with [`read_file`]) and decides; see docs/OPERATIONS.md.
pub const KEPT_FILE: &str = "avl-kept.spool";

/// File name of the lock a ledger holds on `spool_dir` for as long as it owns the spool.
pub const LOCK_FILE: &str = "avl-outage.lock";

/// An exclusive lock on a spool directory (fd-lock: `flock(LOCK_EX)` / `LockFileEx`), held
/// by the ledger that owns the spool from before it replays it until it shuts down. A second
/// process configured with the same `spool_dir` gets [`LedgerError::SpoolLocked`] instead of
/// replaying or truncating a spool another ledger is writing. The operating system releases
/// the lock when the file is closed: on drop, or when the process dies.
pub struct SpoolLock {
    path: PathBuf,
    _lock: fd_lock::RwLock<File>,
}

impl SpoolLock {
    /// Takes the lock without waiting (creating `dir` and the lock file if needed).
    pub fn acquire(dir: &Path) -> Result<Self, LedgerError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, "create directory", &e))?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, "open lock file", &e))?;
        let mut lock = fd_lock::RwLock::new(file);
        match lock.try_write() {
            // fd-lock's guard borrows the lock, so it cannot live beside it in this struct;
            // forgetting it skips only its unlock call, and the OS lock is released when the
            // file inside `lock` is closed (this struct dropped, or the process gone).
            Ok(guard) => std::mem::forget(guard),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(LedgerError::SpoolLocked(dir.to_path_buf()));
            }
            Err(e) => return Err(io_err(&path, "lock", &e)),
        }
        Ok(Self { path, _lock: lock })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Largest frame body accepted when reading (a record is at most ~1 MiB of payload).
const MAX_FRAME: u32 = 64 << 20;

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct SpoolContents {
    /// Records of the complete, checksummed frames, in order.
    pub records: Vec<Arc<LedgerRecord>>,
    /// Records per frame, in order (sum: `records.len()`): more than 1 for an atomic batch.
    pub units: Vec<usize>,
    /// Why reading stopped before the end of the file, and at which byte offset.
    pub corrupt_tail: Option<(u64, String)>,
}

/// An open spool file, appended to by the writer.
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
        Self::open_file(dir, SPOOL_FILE)
    }

    /// Opens (creating if needed) the frame file `name` in `dir` for appending.
    fn open_file(dir: &Path, name: &str) -> Result<Self, LedgerError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, "create directory", &e))?;
        let path = dir.join(name);
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
        self.append_body(&body)
    }

    /// Appends an atomic unit (the records of one `Ledger::append_all`) as one frame, whose
    /// body is the JSON array of its records: a reader takes the whole unit or, if the frame
    /// is torn, none of it. A unit of one record is an ordinary record frame.
    pub fn append_unit(&mut self, records: &[Arc<LedgerRecord>]) -> Result<(), LedgerError> {
        match records {
            [one] => self.append(one),
            _ => {
                let body = serde_json::to_vec(records)
                    .map_err(|e| LedgerError::Internal(format!("spool: encode batch: {e}")))?;
                self.append_body(&body)
            }
        }
    }

    fn append_body(&mut self, body: &[u8]) -> Result<(), LedgerError> {
        let len = u32::try_from(body.len())
            .map_err(|_| LedgerError::Internal("spool: record too large for a frame".into()))?;
        let crc = crc32fast::hash(body);
        let path = self.path.clone();
        self.out
            .write_all(&len.to_be_bytes())
            .and_then(|()| self.out.write_all(&crc.to_be_bytes()))
            .and_then(|()| self.out.write_all(body))
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

/// What the spool thread is asked to do, in order.
enum SpoolCmd {
    /// Append the unit (one record, or an atomic batch) as one frame; with a reply, answer
    /// it once the frame is fsynced.
    Append(Vec<Arc<LedgerRecord>>, Option<PersistReply>),
    /// Answer once the record `rid` (appended earlier) is fsynced.
    Ack(uuid::Uuid, PersistReply),
    /// Answer once everything appended before is fsynced.
    Sync(tokio::sync::oneshot::Sender<Result<(), LedgerError>>),
    /// Empty the file (every record in it reached PostgreSQL).
    Truncate,
}

/// The spool on a thread of its own: the writer hands it records and replies without
/// blocking; the thread takes every command waiting, writes the frames (encoding them
/// there), fsyncs **once** for the group, and only then answers the group's replies
/// [`Durability::Spooled`] (or [`Durability::Buffered`] if the record could not be written
/// or the fsync failed: the record is then held in memory only). Dropping it lets the
/// thread finish what it was given (the last fsync included) and waits for it.
pub struct SpoolWriter {
    path: PathBuf,
    tx: Option<std::sync::mpsc::Sender<SpoolCmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SpoolWriter {
    /// Opens (creating if needed) the spool in `dir` and starts its thread, which records
    /// its metrics with `metrics_partition`'s label (see `crate::metrics::label_this_thread`).
    pub fn open(dir: &Path, metrics_partition: Option<usize>) -> Result<Self, LedgerError> {
        let spool = Spool::open(dir)?;
        let path = spool.path.clone();
        crate::metrics::in_partition(metrics_partition, || {
            crate::metrics::spool_bytes(spool.bytes())
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("avl-spool".into())
            .spawn(move || {
                crate::metrics::label_this_thread(metrics_partition);
                spool_thread(spool, rx)
            })
            .map_err(|e| io_err(&path, "start the spool thread", &e))?;
        Ok(Self {
            path,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// The spool file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, cmd: SpoolCmd) {
        let Some(tx) = &self.tx else { return };
        if let Err(std::sync::mpsc::SendError(cmd)) = tx.send(cmd) {
            // The thread is gone (it only ends when this writer is dropped, or if it
            // panicked): the records stay in memory; answer as such.
            tracing::error!("spool thread gone; records held in memory only");
            match cmd {
                SpoolCmd::Append(_, Some(reply)) | SpoolCmd::Ack(_, reply) => {
                    let _ = reply.send(Ok(Durability::Buffered));
                }
                SpoolCmd::Sync(reply) => {
                    let _ = reply.send(Ok(()));
                }
                SpoolCmd::Append(_, None) | SpoolCmd::Truncate => {}
            }
        }
    }

    /// Appends `record`; `reply` (if any) is answered once it is fsynced.
    pub fn append(&self, record: Arc<LedgerRecord>, reply: Option<PersistReply>) {
        self.send(SpoolCmd::Append(vec![record], reply));
    }

    /// Appends an atomic batch as one frame ([`Spool::append_unit`]); `reply` (if any) is
    /// answered once it is fsynced.
    pub fn append_unit(&self, records: Vec<Arc<LedgerRecord>>, reply: Option<PersistReply>) {
        self.send(SpoolCmd::Append(records, reply));
    }

    /// Answers `reply` once the record `rid`, appended earlier, is fsynced.
    pub fn ack(&self, rid: uuid::Uuid, reply: PersistReply) {
        self.send(SpoolCmd::Ack(rid, reply));
    }

    /// Answers `reply` once everything appended so far is fsynced.
    pub fn sync(&self, reply: tokio::sync::oneshot::Sender<Result<(), LedgerError>>) {
        self.send(SpoolCmd::Sync(reply));
    }

    /// Empties the spool once everything appended so far is written.
    pub fn truncate(&self) {
        self.send(SpoolCmd::Truncate);
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            // The thread ends once it has handled every command (its channel is closed).
            let _ = thread.join();
        }
    }
}

/// The spool thread: groups the waiting commands, one fsync per group.
fn spool_thread(mut spool: Spool, rx: std::sync::mpsc::Receiver<SpoolCmd>) {
    // Records whose frame could not be written since the last truncate (acknowledged
    // `Buffered`, not `Spooled`).
    let mut failed: std::collections::HashSet<uuid::Uuid> = std::collections::HashSet::new();
    let mut replies: Vec<(PersistReply, bool)> = Vec::new();
    let mut syncs: Vec<tokio::sync::oneshot::Sender<Result<(), LedgerError>>> = Vec::new();
    let mut dirty = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(cmd) = next {
            match cmd {
                SpoolCmd::Append(records, reply) => {
                    let written = match spool.append_unit(&records) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::error!(error = %e, "spool write failed; record held in memory only");
                            failed.extend(records.iter().map(|r| r.rid));
                            false
                        }
                    };
                    dirty = true;
                    if let Some(reply) = reply {
                        replies.push((reply, written));
                    }
                }
                SpoolCmd::Ack(rid, reply) => replies.push((reply, !failed.contains(&rid))),
                SpoolCmd::Sync(reply) => syncs.push(reply),
                SpoolCmd::Truncate => {
                    settle(&mut spool, &mut dirty, &mut replies, &mut syncs);
                    if let Err(e) = spool.truncate() {
                        tracing::error!(error = %e, "could not empty the spool after the drain");
                    }
                    failed.clear();
                }
            }
            next = rx.try_recv().ok();
        }
        settle(&mut spool, &mut dirty, &mut replies, &mut syncs);
        crate::metrics::spool_bytes(spool.bytes());
    }
    settle(&mut spool, &mut dirty, &mut replies, &mut syncs);
}

/// Fsyncs what was written (once) and answers the waiting replies.
fn settle(
    spool: &mut Spool,
    dirty: &mut bool,
    replies: &mut Vec<(PersistReply, bool)>,
    syncs: &mut Vec<tokio::sync::oneshot::Sender<Result<(), LedgerError>>>,
) {
    let synced = if *dirty {
        *dirty = false;
        match spool.sync() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "spool fsync failed; records held in memory only");
                false
            }
        }
    } else {
        true
    };
    // One `Acks` message per chain actor for the whole group.
    let mut acks = AckBatch::default();
    for (reply, written) in replies.drain(..) {
        let durability = if synced && written {
            Durability::Spooled
        } else {
            Durability::Buffered
        };
        acks.answer(reply, Ok(durability));
    }
    acks.finish();
    for reply in syncs.drain(..) {
        let _ = reply.send(Ok(()));
    }
}

/// Appends `records` to the [`KEPT_FILE`] in `dir` and fsyncs it; returns its path.
pub fn keep(dir: &Path, records: &[Arc<LedgerRecord>]) -> Result<PathBuf, LedgerError> {
    let mut kept = Spool::open_file(dir, KEPT_FILE)?;
    for r in records {
        kept.append(r)?;
    }
    kept.sync()?;
    Ok(kept.path)
}

/// Reads the spool in `dir` (an absent file is an empty spool).
pub fn read(dir: &Path) -> Result<SpoolContents, LedgerError> {
    read_file(&dir.join(SPOOL_FILE))
}

/// Reads a frame file (the spool, or the [`KEPT_FILE`]); an absent file is empty.
pub fn read_file(path: &Path) -> Result<SpoolContents, LedgerError> {
    let path = path.to_path_buf();
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
        // An array body is an atomic batch: all of its records, or (undecodable) none.
        let decoded = if body.first() == Some(&b'[') {
            serde_json::from_slice::<Vec<LedgerRecord>>(body)
        } else {
            serde_json::from_slice::<LedgerRecord>(body).map(|r| vec![r])
        };
        match decoded {
            Ok(rs) => {
                out.units.push(rs.len());
                out.records.extend(rs.into_iter().map(Arc::new));
            }
            Err(e) => {
                out.corrupt_tail = Some((offset, format!("undecodable record: {e}")));
                break;
            }
        }
        at += 8 + len as usize;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly by design")]

    use super::*;
    use ledger_entities::NewRecord;

    fn records(n: u128) -> Vec<LedgerRecord> {
        (0..n)
            .map(|i| {
                LedgerRecord::seal(
                    NewRecord::new(
                        uuid::Uuid::nil(),
                        "s",
                        "k",
                        serde_json::json!({ "i": i as u64 }),
                        "p",
                    ),
                    uuid::Uuid::from_u128(i + 1),
                    chrono::Utc::now(),
                    None,
                )
                .unwrap()
            })
            .collect()
    }

    fn spool_bytes(records: &[LedgerRecord]) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!("avl-spool-test-{}", uuid::Uuid::new_v4()));
        let mut spool = Spool::open(&dir).unwrap();
        for r in records {
            spool.append(r).unwrap();
        }
        spool.sync().unwrap();
        let bytes = std::fs::read(spool.path()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        bytes
    }

    /// The spool thread answers a record `Spooled` only once its frame is in the file; an
    /// `ack` for an earlier record and a `sync` are answered after the same group fsync;
    /// `truncate` empties the file after answering what came before it.
    #[test]
    fn spool_thread_acknowledges_after_the_frames_are_written() {
        let dir = std::env::temp_dir().join(format!("avl-spool-thread-{}", uuid::Uuid::new_v4()));
        let writer = SpoolWriter::open(&dir, None).unwrap();
        let recs: Vec<Arc<LedgerRecord>> = records(3).into_iter().map(Arc::new).collect();
        let mut answers = Vec::new();
        for r in &recs[..2] {
            let (tx, rx) = tokio::sync::oneshot::channel();
            writer.append(Arc::clone(r), Some(PersistReply::Oneshot(tx)));
            answers.push(rx);
        }
        // Appended without a reply (a held acknowledgement), acknowledged later by rid.
        writer.append(Arc::clone(&recs[2]), None);
        let (tx, rx) = tokio::sync::oneshot::channel();
        writer.ack(recs[2].rid, PersistReply::Oneshot(tx));
        answers.push(rx);
        let (sync_tx, sync_rx) = tokio::sync::oneshot::channel();
        writer.sync(sync_tx);
        for rx in answers {
            assert_eq!(rx.blocking_recv().unwrap().unwrap(), Durability::Spooled);
        }
        sync_rx.blocking_recv().unwrap().unwrap();
        let on_disk = read(&dir).unwrap();
        assert!(on_disk.corrupt_tail.is_none());
        assert_eq!(on_disk.records, recs);
        writer.truncate();
        drop(writer); // waits for the thread to finish the truncate
        assert!(read(&dir).unwrap().records.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A spool directory is owned by one ledger at a time: a second lock fails with
    /// `SpoolLocked` until the first is dropped.
    #[test]
    fn spool_lock_is_exclusive() {
        let dir = std::env::temp_dir().join(format!("avl-spool-lock-{}", uuid::Uuid::new_v4()));
        let first = SpoolLock::acquire(&dir).unwrap();
        match SpoolLock::acquire(&dir) {
            Err(LedgerError::SpoolLocked(d)) => assert_eq!(d, dir),
            Err(e) => panic!("expected SpoolLocked, got {e:?}"),
            Ok(_) => panic!("expected SpoolLocked, got the lock twice"),
        }
        drop(first);
        let again = SpoolLock::acquire(&dir).unwrap();
        assert!(again.path().ends_with(LOCK_FILE));
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Complete frames come back exactly, in order, with no corrupt tail.
    #[test]
    fn frames_round_trip() {
        let rs = records(3);
        let got = decode(&spool_bytes(&rs));
        assert!(got.corrupt_tail.is_none());
        let got: Vec<LedgerRecord> = got.records.iter().map(|r| (**r).clone()).collect();
        assert_eq!(got, rs);
    }

    /// A tail cut anywhere inside the last frame is reported at that frame's offset, and
    /// only the complete frames before it are returned.
    #[test]
    fn truncated_tail_is_reported_never_half_applied() {
        let rs = records(3);
        let bytes = spool_bytes(&rs);
        let last_start = spool_bytes(&rs[..2]).len();
        for cut in [last_start + 3, last_start + 8, bytes.len() - 1] {
            let got = decode(&bytes[..cut]);
            assert_eq!(got.records.len(), 2, "cut at {cut}");
            assert_eq!(got.corrupt_tail.map(|(at, _)| at), Some(last_start as u64));
        }
    }

    /// A flipped byte inside a frame fails its checksum: that frame and everything after it
    /// are refused and reported.
    #[test]
    fn corrupt_frame_fails_its_checksum() {
        let rs = records(3);
        let mut bytes = spool_bytes(&rs);
        let second = spool_bytes(&rs[..1]).len();
        bytes[second + 20] ^= 0x40;
        let got = decode(&bytes);
        assert_eq!(got.records.len(), 1);
        let (at, why) = got.corrupt_tail.unwrap();
        assert_eq!(at, second as u64);
        assert!(why.contains("checksum"), "{why}");
    }
}
