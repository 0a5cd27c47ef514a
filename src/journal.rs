//! The append-only journal: where [`Record`]s go to survive restarts and
//! crashes.
//!
//! File layout: the 8-byte magic `CHATDJ1\n`, then frames. A frame is the
//! payload's length (`u32` LE), its CRC-32 (`u32` LE), and the payload (one
//! encoded [`Record`]). On open, frames are read until the first one that is
//! short, too long, fails its checksum or does not decode; that offset and
//! the reason are reported and the file is cut there, keeping everything
//! before it. Nothing after a damaged frame is trusted, since a frame's
//! length may itself be the damaged part.
//!
//! Writes are grouped: the reactor [`append`](Journal::append)s every record
//! of one loop iteration, then [`commit`](Journal::commit)s once — one
//! `write` and, in `always` mode, one `fdatasync` — before any of that
//! iteration's output reaches a socket. A process killed with SIGKILL loses
//! nothing that was written, whatever the mode: the page cache outlives the
//! process. The fsync mode decides what survives a power cut or kernel crash.
//!
//! Compaction rewrites the journal as a snapshot of live state once the file
//! is [`COMPACT_FACTOR`] times its size after the last compaction. The
//! snapshot is encoded in memory on the loop, then a thread writes and syncs
//! it as `journal.new` while the loop goes on appending to the old journal
//! and keeps a copy of what it appends (the tail). When the thread is done,
//! the loop appends the tail to the new file, syncs it, renames it over the
//! old one and syncs the directory. Until the rename the old journal is
//! complete; after it the new one is: a crash at any point leaves one
//! complete journal, and the loop never waits for the big write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use mio::Waker;

use crate::record::Record;

const MAGIC: &[u8; 8] = b"CHATDJ1\n";
const HEADER: usize = 8;
/// No record comes near this; a length past it is damage.
pub const MAX_RECORD: usize = 16 * 1024 * 1024;
/// Compact when the file is this many times its post-compaction size...
pub const COMPACT_FACTOR: u64 = 4;
/// ...and at least this big.
pub const COMPACT_MIN: u64 = 1024 * 1024;
/// In `batch` mode, sync at most this often.
pub const BATCH_INTERVAL: Duration = Duration::from_secs(1);

pub const JOURNAL_FILE: &str = "journal";
const NEW_FILE: &str = "journal.new";
const LOCK_FILE: &str = "lock";

/// When the journal is synced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// Every loop iteration that wrote records syncs before its output is
    /// sent: nothing anyone saw is lost even to a power cut.
    Always,
    /// Sync at most once a second: a power cut may lose the last second; a
    /// crash of the process loses nothing.
    Batch,
    /// Leave it to the kernel's writeback.
    Never,
}

impl std::str::FromStr for FsyncMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncMode::Always),
            "batch" => Ok(FsyncMode::Batch),
            "never" => Ok(FsyncMode::Never),
            _ => Err(format!("--fsync {s}: expected always, batch or never")),
        }
    }
}

/// Where replay stopped early, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub reason: String,
    /// Bytes cut off from `offset` to the old end of the file.
    pub dropped: u64,
}

/// What opening found.
#[derive(Debug)]
pub struct Replay {
    pub records: Vec<Record>,
    pub damage: Option<Damage>,
}

/// A compaction whose snapshot is being written by a thread.
struct Compaction {
    /// Frames committed since the snapshot was taken.
    tail: Vec<u8>,
    done: mpsc::Receiver<io::Result<()>>,
    snapshot_size: u64,
    records: usize,
    started: Instant,
}

/// What a finished compaction did, for the log.
#[derive(Debug)]
pub struct Compacted {
    pub before: u64,
    pub after: u64,
    pub records: usize,
    pub took: Duration,
}

/// The open journal of a state directory.
pub struct Journal {
    dir: PathBuf,
    file: File,
    /// Held for the life of the journal: one daemon per state directory.
    _lock: File,
    pending: Vec<u8>,
    size: u64,
    compacted_size: u64,
    fsync: FsyncMode,
    last_sync: Instant,
    unsynced: bool,
    compacting: Option<Compaction>,
}

fn frame(rec: &Record, out: &mut Vec<u8>) {
    let payload = rec.encode();
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

fn le32(b: Option<&[u8]>) -> Option<u32> {
    Some(u32::from_le_bytes(b?.try_into().ok()?))
}

/// Reads frames from `bytes` (the whole file). Returns the records and, if
/// it stopped before the end, where and why.
pub fn parse(bytes: &[u8]) -> (Vec<Record>, Option<(u64, String)>) {
    let mut records = Vec::new();
    let mut off = HEADER;
    loop {
        let Some(rest) = bytes.get(off..) else {
            return (records, Some((off as u64, "offset past end".into())));
        };
        if rest.is_empty() {
            return (records, None);
        }
        let damage = |why: String| Some((off as u64, why));
        let (Some(len), Some(crc)) = (le32(rest.get(0..4)), le32(rest.get(4..8))) else {
            return (records, damage("torn frame header".into()));
        };
        let len = len as usize;
        if len > MAX_RECORD {
            return (records, damage(format!("frame length {len} is impossible")));
        }
        let Some(payload) = rest.get(8..8 + len) else {
            let present = rest.len().saturating_sub(8);
            return (
                records,
                damage(format!(
                    "torn frame: {len} bytes announced, {present} present"
                )),
            );
        };
        if crc32fast::hash(payload) != crc {
            return (records, damage("checksum mismatch".into()));
        }
        match Record::decode(payload) {
            Ok(r) => records.push(r),
            Err(e) => return (records, damage(format!("undecodable record: {e}"))),
        }
        off += 8 + len;
    }
}

/// A journal problem that stops the daemon from starting or going on.
#[derive(Debug)]
pub enum JournalError {
    Io(PathBuf, io::Error),
    Locked(PathBuf),
    NotAJournal(PathBuf),
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            JournalError::Locked(p) => write!(
                f,
                "{}: another chatd is using this state directory",
                p.display()
            ),
            JournalError::NotAJournal(p) => write!(
                f,
                "{}: not a chatd journal (bad magic); refusing to touch it",
                p.display()
            ),
        }
    }
}

impl std::error::Error for JournalError {}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, replays it, and cuts
    /// off a damaged tail.
    pub fn open(dir: &Path, fsync: FsyncMode) -> Result<(Journal, Replay), JournalError> {
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |e| JournalError::Io(p, e)
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(JournalError::Locked(dir.to_path_buf()));
        }
        // A compaction that crashed before its rename leaves this behind.
        let _ = fs::remove_file(dir.join(NEW_FILE));
        let path = dir.join(JOURNAL_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err(&path))?;
        if bytes.len() < HEADER {
            // New, or torn while being created: nothing to keep.
            if !bytes.is_empty() && !MAGIC.starts_with(&bytes) {
                return Err(JournalError::NotAJournal(path));
            }
            file.set_len(0).map_err(io_err(&path))?;
            file.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
            file.write_all(MAGIC).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            sync_dir(dir).map_err(io_err(dir))?;
            bytes = MAGIC.to_vec();
        } else if bytes.get(..HEADER) != Some(&MAGIC[..]) {
            return Err(JournalError::NotAJournal(path));
        }
        let (records, stop) = parse(&bytes);
        let damage = stop.map(|(offset, reason)| Damage {
            offset,
            reason,
            dropped: bytes.len() as u64 - offset,
        });
        let size = match &damage {
            Some(d) => {
                file.set_len(d.offset).map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
                d.offset
            }
            None => bytes.len() as u64,
        };
        file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        let journal = Journal {
            dir: dir.to_path_buf(),
            file,
            _lock: lock,
            pending: Vec::new(),
            size,
            compacted_size: size,
            fsync,
            last_sync: Instant::now(),
            unsynced: false,
            compacting: None,
        };
        Ok((journal, Replay { records, damage }))
    }

    /// Queues a record for the next commit.
    pub fn append(&mut self, rec: &Record) {
        frame(rec, &mut self.pending);
    }

    /// Bytes in the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes what was appended and syncs as the mode says. Call once per
    /// loop iteration, before flushing output.
    pub fn commit(&mut self, now: Instant) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all(&self.pending)?;
            self.size += self.pending.len() as u64;
            if let Some(c) = self.compacting.as_mut() {
                c.tail.extend_from_slice(&self.pending);
            }
            self.pending.clear();
            if self.pending.capacity() > 1 << 20 {
                self.pending = Vec::new();
            }
            self.unsynced = true;
        }
        if !self.unsynced {
            return Ok(());
        }
        let due = match self.fsync {
            FsyncMode::Always => true,
            FsyncMode::Batch => now.saturating_duration_since(self.last_sync) >= BATCH_INTERVAL,
            FsyncMode::Never => false,
        };
        if due {
            self.sync(now)?;
        }
        Ok(())
    }

    /// Syncs unconditionally (shutdown, or a batch timer).
    pub fn sync(&mut self, now: Instant) -> io::Result<()> {
        self.file.sync_data()?;
        self.unsynced = false;
        self.last_sync = now;
        Ok(())
    }

    /// When a batch-mode sync is next due, if one is owed.
    pub fn sync_deadline(&self) -> Option<Instant> {
        (self.fsync == FsyncMode::Batch && self.unsynced).then(|| self.last_sync + BATCH_INTERVAL)
    }

    /// True once the file has grown past [`COMPACT_FACTOR`] times its size
    /// after the last compaction.
    pub fn needs_compaction(&self) -> bool {
        self.compacting.is_none()
            && self.size >= COMPACT_MIN
            && self.size > self.compacted_size.saturating_mul(COMPACT_FACTOR)
    }

    /// Starts writing `live` (which must include everything committed so
    /// far) as the new journal on a thread; `waker` is woken when it is
    /// written. Finish with [`poll_compaction`](Self::poll_compaction).
    pub fn start_compaction(&mut self, live: &[Record], waker: Option<Arc<Waker>>) {
        let mut buf = MAGIC.to_vec();
        for r in live {
            frame(r, &mut buf);
        }
        let snapshot_size = buf.len() as u64;
        let tmp = self.dir.join(NEW_FILE);
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("chatd-compact".into())
            .spawn(move || {
                let result = write_synced(&tmp, &buf);
                let _ = tx.send(result);
                if let Some(w) = waker {
                    let _ = w.wake();
                }
            });
        if spawned.is_ok() {
            self.compacting = Some(Compaction {
                tail: Vec::new(),
                done: rx,
                snapshot_size,
                records: live.len(),
                started: Instant::now(),
            });
        }
    }

    /// Completes a compaction whose snapshot has been written: appends the
    /// tail, syncs, renames, syncs the directory. `Ok(None)` while nothing
    /// has finished. On `Err` the old journal stays in use, intact.
    pub fn poll_compaction(&mut self) -> io::Result<Option<Compacted>> {
        let Some(c) = self.compacting.as_ref() else {
            return Ok(None);
        };
        let written = match c.done.try_recv() {
            Err(mpsc::TryRecvError::Empty) => return Ok(None),
            Err(mpsc::TryRecvError::Disconnected) => {
                Err(io::Error::other("compaction thread died"))
            }
            Ok(r) => r,
        };
        self.finish_compaction(written).map(Some)
    }

    /// Compacts and waits for it: for shutdown and tests.
    pub fn compact(&mut self, live: &[Record]) -> io::Result<Compacted> {
        self.start_compaction(live, None);
        let written = match self.compacting.as_ref() {
            Some(c) => c
                .done
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("compaction thread died"))),
            None => return Err(io::Error::other("compaction thread did not start")),
        };
        self.finish_compaction(written)
    }

    fn finish_compaction(&mut self, written: io::Result<()>) -> io::Result<Compacted> {
        let Some(c) = self.compacting.take() else {
            return Err(io::Error::other("no compaction in progress"));
        };
        let tmp = self.dir.join(NEW_FILE);
        let finish = || -> io::Result<File> {
            written?;
            let mut f = OpenOptions::new().read(true).append(true).open(&tmp)?;
            f.write_all(&c.tail)?;
            f.sync_data()?;
            fs::rename(&tmp, self.dir.join(JOURNAL_FILE))?;
            sync_dir(&self.dir)?;
            Ok(f)
        };
        match finish() {
            Ok(f) => {
                let before = self.size;
                self.file = f;
                self.size = c.snapshot_size + c.tail.len() as u64;
                self.compacted_size = self.size;
                self.unsynced = false;
                Ok(Compacted {
                    before,
                    after: self.size,
                    records: c.records,
                    took: c.started.elapsed(),
                })
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("chatd-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn msg(i: usize) -> Record {
        Record::Message {
            line: format!("msg #lobby a {i} message {i}"),
        }
    }

    #[test]
    fn append_commit_reopen() {
        let d = tmpdir("reopen");
        {
            let (mut j, r) = Journal::open(&d, FsyncMode::Always).unwrap();
            assert!(r.records.is_empty() && r.damage.is_none());
            for i in 0..10 {
                j.append(&msg(i));
            }
            j.commit(Instant::now()).unwrap();
        }
        let (_j, r) = Journal::open(&d, FsyncMode::Always).unwrap();
        assert_eq!(r.records, (0..10).map(msg).collect::<Vec<_>>());
        assert!(r.damage.is_none());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn one_daemon_per_directory() {
        let d = tmpdir("lock");
        let (_j, _) = Journal::open(&d, FsyncMode::Never).unwrap();
        assert!(matches!(
            Journal::open(&d, FsyncMode::Never),
            Err(JournalError::Locked(_))
        ));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn torn_tail_and_flipped_byte_are_cut_keeping_what_is_before() {
        let d = tmpdir("damage");
        let path = d.join(JOURNAL_FILE);
        {
            let (mut j, _) = Journal::open(&d, FsyncMode::Never).unwrap();
            for i in 0..5 {
                j.append(&msg(i));
            }
            j.commit(Instant::now()).unwrap();
        }
        let full = fs::read(&path).unwrap();
        // Torn: the last frame loses its final 3 bytes.
        fs::write(&path, &full[..full.len() - 3]).unwrap();
        {
            let (_j, r) = Journal::open(&d, FsyncMode::Never).unwrap();
            assert_eq!(r.records.len(), 4);
            let dmg = r.damage.unwrap();
            assert!(dmg.reason.starts_with("torn frame"), "{}", dmg.reason);
        }
        // The cut was made: reopening finds a clean file.
        let (_j, r) = Journal::open(&d, FsyncMode::Never).unwrap();
        assert!(r.damage.is_none());
        drop(_j);
        // A flipped byte inside the second frame's payload.
        let mut bad = full.clone();
        let second = HEADER + 8 + msg(0).encode().len() + 8 + 3;
        bad[second] ^= 0x40;
        fs::write(&path, &bad).unwrap();
        let (_j, r) = Journal::open(&d, FsyncMode::Never).unwrap();
        assert_eq!(r.records, vec![msg(0)]);
        assert_eq!(r.damage.unwrap().reason, "checksum mismatch");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn an_impossible_length_is_damage_not_an_allocation() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let (recs, stop) = parse(&bytes);
        assert!(recs.is_empty());
        assert!(stop.unwrap().1.contains("impossible"));
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let d = tmpdir("foreign");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(JOURNAL_FILE), b"important data of someone else").unwrap();
        assert!(matches!(
            Journal::open(&d, FsyncMode::Never),
            Err(JournalError::NotAJournal(_))
        ));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn compaction_replaces_the_file_with_live_state() {
        let d = tmpdir("compact");
        {
            let (mut j, _) = Journal::open(&d, FsyncMode::Never).unwrap();
            for i in 0..100 {
                j.append(&msg(i));
            }
            j.commit(Instant::now()).unwrap();
            let before = j.size();
            let live: Vec<Record> = (90..100).map(msg).collect();
            j.compact(&live).unwrap();
            assert!(j.size() < before / 5);
            j.append(&msg(100));
            j.commit(Instant::now()).unwrap();
            // In the background: records committed while the snapshot is
            // being written land after it.
            let live: Vec<Record> = (95..101).map(msg).collect();
            j.start_compaction(&live, None);
            j.append(&msg(101));
            j.commit(Instant::now()).unwrap();
            while j.poll_compaction().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
            j.append(&msg(102));
            j.commit(Instant::now()).unwrap();
        }
        let (_j, r) = Journal::open(&d, FsyncMode::Never).unwrap();
        assert_eq!(r.records, (95..103).map(msg).collect::<Vec<_>>());
        assert!(!d.join(NEW_FILE).exists());
        let _ = fs::remove_dir_all(&d);
    }
}
