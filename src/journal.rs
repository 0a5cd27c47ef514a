//! The append-only journal: where [`Record`]s go to survive restarts and
//! crashes.
//!
//! File layout: the 8-byte magic `CHATDJ1\n`, then frames. A frame is the
//! payload's length (`u32` LE), its CRC-32 (`u32` LE), and the payload (one
//! encoded [`Record`]). On open, frames are read one at a time and handed to
//! the caller as they come, so replay needs memory for the state it builds
//! and one frame, not for the file. A frame that is short, too long, fails
//! its checksum or does not decode is damage: from there the rest of the
//! file is searched, byte by byte, for the next place where a whole frame
//! checks out (its length fits, its CRC-32 matches, it decodes), and reading
//! goes on from it, so one flipped bit costs the frames it hit and nothing
//! after. (A false match needs a 32-bit checksum to agree by chance, and a
//! user's text cannot hold a frame header: the length's zero bytes are
//! control characters no line may carry.) The damaged bytes, from the first
//! damage to the end, are kept in `journal.damaged-<unix time>`, the journal
//! is cut at the first damage and the recovered frames are written after it,
//! and each damaged span is reported with its offset and reason.
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
/// Damaged bytes are kept aside in `journal.damaged-<unix time>`.
pub const DAMAGED_PREFIX: &str = "journal.damaged-";
const NOT_A_JOURNAL: &str = "not a chatd journal";

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

/// A damaged span of the journal, and why it is damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub reason: String,
    /// Bytes from `offset` to the next good frame (or the end of the file).
    pub dropped: u64,
}

/// What opening found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Records handed to the caller, in order.
    pub records: usize,
    /// Of them, records found after damage.
    pub recovered: usize,
    pub damage: Vec<Damage>,
    /// Where the bytes from the first damage to the end were kept.
    pub kept: Option<PathBuf>,
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

/// One frame at the front of `rest`: its record and its length, or why it
/// is damage.
fn frame_at(rest: &[u8]) -> Result<(Record, usize), String> {
    let (Some(len), Some(crc)) = (le32(rest.get(0..4)), le32(rest.get(4..8))) else {
        return Err("torn frame header".into());
    };
    let len = len as usize;
    if len > MAX_RECORD {
        return Err(format!("frame length {len} is impossible"));
    }
    let Some(payload) = rest.get(8..8 + len) else {
        let present = rest.len().saturating_sub(8);
        return Err(format!(
            "torn frame: {len} bytes announced, {present} present"
        ));
    };
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    match Record::decode(payload) {
        Ok(r) => Ok((r, 8 + len)),
        Err(e) => Err(format!("undecodable record: {e}")),
    }
}

/// The next offset after `from` in `bytes` where a whole frame checks out.
fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    (from + 1..bytes.len()).find(|&o| bytes.get(o..).is_some_and(|r| frame_at(r).is_ok()))
}

/// Reads frames from `bytes`, starting at `start`, handing each record to
/// `emit` with its raw frame; after damage, goes on from the next good
/// frame. Returns the damaged spans (offsets counted from `base`).
fn scan(bytes: &[u8], start: usize, base: u64, mut emit: impl FnMut(Record, &[u8])) -> Vec<Damage> {
    let mut damage = Vec::new();
    let mut off = start;
    while let Some(rest) = bytes.get(off..).filter(|r| !r.is_empty()) {
        match frame_at(rest) {
            Ok((rec, len)) => {
                emit(rec, rest.get(..len).unwrap_or(&[]));
                off += len;
            }
            Err(reason) => {
                let next = resync(bytes, off).unwrap_or(bytes.len());
                damage.push(Damage {
                    offset: base + off as u64,
                    reason,
                    dropped: (next - off) as u64,
                });
                off = next;
            }
        }
    }
    damage
}

/// Reads a whole journal held in memory (after the magic): the records, in
/// order, and the damaged spans. What `Journal::open` does, without a file.
pub fn parse(bytes: &[u8]) -> (Vec<Record>, Vec<Damage>) {
    let mut records = Vec::new();
    let damage = scan(bytes, HEADER.min(bytes.len()), 0, |r, _| records.push(r));
    (records, damage)
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

/// Replays `file` (positioned anywhere) into `apply`: a new or torn-at-birth
/// file gets its magic; damage is kept aside and cut out. Returns the
/// journal's size afterwards, with the file positioned at its end.
fn replay(dir: &Path, file: &mut File, mut apply: impl FnMut(Record)) -> io::Result<(u64, Replay)> {
    let mut replay = Replay::default();
    let len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let mut magic = Vec::with_capacity(HEADER);
    Read::by_ref(file)
        .take(HEADER as u64)
        .read_to_end(&mut magic)?;
    if magic.len() < HEADER {
        // New, or torn while being created: nothing to keep.
        if !magic.is_empty() && !MAGIC.starts_with(&magic) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, NOT_A_JOURNAL));
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(MAGIC)?;
        file.sync_all()?;
        sync_dir(dir)?;
        return Ok((HEADER as u64, replay));
    }
    if magic != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, NOT_A_JOURNAL));
    }
    // The healthy part, a frame at a time.
    let mut reader = io::BufReader::with_capacity(1 << 16, &mut *file);
    let damaged_at = read_frames(&mut reader, len, |r| {
        apply(r);
        replay.records += 1;
    })?;
    drop(reader);
    let Some(at) = damaged_at else {
        return Ok((len, replay));
    };
    // From the first damage on: in memory (usually a few bytes), searched
    // for good frames.
    file.seek(SeekFrom::Start(at))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    // Kept aside first: from here on the journal is rewritten.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kept = dir.join(format!("{DAMAGED_PREFIX}{secs}"));
    write_synced(&kept, &tail)?;
    sync_dir(dir)?;
    replay.kept = Some(kept);
    file.set_len(at)?;
    file.seek(SeekFrom::End(0))?;
    let mut size = at;
    let mut failed = None;
    let mut out = io::BufWriter::new(&mut *file);
    replay.damage = scan(&tail, 0, at, |r, raw| {
        apply(r);
        replay.records += 1;
        replay.recovered += 1;
        if failed.is_none() {
            match out.write_all(raw) {
                Ok(()) => size += raw.len() as u64,
                Err(e) => failed = Some(e),
            }
        }
    });
    out.flush()?;
    drop(out);
    if let Some(e) = failed {
        return Err(e);
    }
    file.sync_all()?;
    Ok((size, replay))
}

/// Reads frames from `reader`, positioned just after the magic, of a file
/// of `len` bytes, handing each record to `apply`; stops at the end or at
/// the first frame that is not whole and sound, whose offset it returns.
fn read_frames(
    reader: &mut impl Read,
    len: u64,
    mut apply: impl FnMut(Record),
) -> io::Result<Option<u64>> {
    let mut off = HEADER as u64;
    let mut payload = Vec::new();
    loop {
        let mut head = [0u8; 8];
        match read_full(reader, &mut head)? {
            0 => return Ok(None),
            8 => {}
            _ => return Ok(Some(off)),
        }
        let (Some(n), Some(crc)) = (le32(head.get(0..4)), le32(head.get(4..8))) else {
            return Ok(Some(off));
        };
        let n = n as usize;
        if n > MAX_RECORD || off + 8 + n as u64 > len {
            return Ok(Some(off));
        }
        payload.resize(n, 0);
        if read_full(reader, &mut payload)? != n || crc32fast::hash(&payload) != crc {
            return Ok(Some(off));
        }
        match Record::decode(&payload) {
            Ok(r) => apply(r),
            Err(_) => return Ok(Some(off)),
        }
        off += 8 + n as u64;
        if payload.capacity() > 1 << 20 {
            payload = Vec::new();
        }
    }
}

/// What [`read_only`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOnly {
    pub records: u64,
    /// Where reading stopped before the end: a torn last frame (the daemon
    /// may be writing it) or damage the daemon will deal with on its next
    /// start. Nothing is repaired here.
    pub stopped_at: Option<u64>,
}

/// Reads the journal at `path` without changing anything and without the
/// state directory's lock, so it can run beside the daemon (`chatd
/// export`). The file is opened once: a compaction that renames a new
/// journal over it meanwhile leaves this reader the old, complete one.
pub fn read_only(path: &Path, mut apply: impl FnMut(Record)) -> io::Result<ReadOnly> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut magic = [0u8; HEADER];
    if read_full(&mut file, &mut magic)? < HEADER {
        return Ok(ReadOnly {
            records: 0,
            stopped_at: None,
        });
    }
    if &magic != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, NOT_A_JOURNAL));
    }
    let mut records = 0;
    let mut reader = io::BufReader::with_capacity(1 << 16, file);
    let stopped_at = read_frames(&mut reader, len, |r| {
        records += 1;
        apply(r)
    })?;
    Ok(ReadOnly {
        records,
        stopped_at,
    })
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(buf.get_mut(got..).unwrap_or(&mut [])) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` and replays it, handing
    /// each record to `apply` as it is read; damage is handled as the module
    /// docs say.
    pub fn open(
        dir: &Path,
        fsync: FsyncMode,
        apply: impl FnMut(Record),
    ) -> Result<(Journal, Replay), JournalError> {
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
        let (size, replay) = replay(dir, &mut file, apply).map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData && e.to_string() == NOT_A_JOURNAL {
                JournalError::NotAJournal(path.clone())
            } else {
                JournalError::Io(path.clone(), e)
            }
        })?;
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
        Ok((journal, replay))
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

    /// Opens and collects what replay handed over.
    fn open(d: &Path, m: FsyncMode) -> Result<(Journal, Vec<Record>, Replay), JournalError> {
        let mut recs = Vec::new();
        let (j, r) = Journal::open(d, m, |rec| recs.push(rec))?;
        Ok((j, recs, r))
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
            let (mut j, recs, r) = open(&d, FsyncMode::Always).unwrap();
            assert!(recs.is_empty() && r.damage.is_empty());
            for i in 0..10 {
                j.append(&msg(i));
            }
            j.commit(Instant::now()).unwrap();
        }
        let (_j, recs, r) = open(&d, FsyncMode::Always).unwrap();
        assert_eq!(recs, (0..10).map(msg).collect::<Vec<_>>());
        assert!(r.damage.is_empty() && r.kept.is_none());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn one_daemon_per_directory() {
        let d = tmpdir("lock");
        let (_j, _, _) = open(&d, FsyncMode::Never).unwrap();
        assert!(matches!(
            open(&d, FsyncMode::Never),
            Err(JournalError::Locked(_))
        ));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_flipped_byte_costs_only_its_frame() {
        let d = tmpdir("damage");
        let path = d.join(JOURNAL_FILE);
        {
            let (mut j, _, _) = open(&d, FsyncMode::Never).unwrap();
            for i in 0..5 {
                j.append(&msg(i));
            }
            j.commit(Instant::now()).unwrap();
        }
        let full = fs::read(&path).unwrap();
        // Torn: the last frame loses its final 3 bytes.
        fs::write(&path, &full[..full.len() - 3]).unwrap();
        {
            let (_j, recs, r) = open(&d, FsyncMode::Never).unwrap();
            assert_eq!(recs.len(), 4);
            assert_eq!(r.damage.len(), 1);
            assert!(
                r.damage[0].reason.starts_with("torn frame"),
                "{:?}",
                r.damage
            );
            assert_eq!(
                r.damage[0].offset + r.damage[0].dropped,
                full.len() as u64 - 3
            );
            let kept = r.kept.expect("kept aside");
            assert_eq!(
                fs::read(&kept).unwrap(),
                &full[r.damage[0].offset as usize..full.len() - 3]
            );
            let _ = fs::remove_file(kept);
        }
        // The cut was made: reopening finds a clean file.
        let (j, _, r) = open(&d, FsyncMode::Never).unwrap();
        assert!(r.damage.is_empty());
        drop(j);
        // A flipped byte inside the second frame's payload: the other four
        // are recovered, and the file is whole again afterwards.
        let mut bad = full.clone();
        let second = HEADER + 8 + msg(0).encode().len() + 8 + 3;
        bad[second] ^= 0x40;
        fs::write(&path, &bad).unwrap();
        let (j, recs, r) = open(&d, FsyncMode::Never).unwrap();
        assert_eq!(recs, vec![msg(0), msg(2), msg(3), msg(4)]);
        assert_eq!(r.recovered, 3);
        assert_eq!(r.damage.len(), 1);
        assert_eq!(r.damage[0].reason, "checksum mismatch");
        drop(j);
        let (_j, recs, r) = open(&d, FsyncMode::Never).unwrap();
        assert!(r.damage.is_empty(), "{:?}", r.damage);
        assert_eq!(recs, vec![msg(0), msg(2), msg(3), msg(4)]);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn parse_in_memory_finds_the_same() {
        let mut bytes = MAGIC.to_vec();
        for i in 0..3 {
            frame(&msg(i), &mut bytes);
        }
        let cut = bytes.len();
        bytes.extend_from_slice(b"garbage that is no frame at all");
        frame(&msg(9), &mut bytes);
        let (recs, damage) = parse(&bytes);
        assert_eq!(recs, vec![msg(0), msg(1), msg(2), msg(9)]);
        assert_eq!(damage.len(), 1);
        assert_eq!(damage[0].offset, cut as u64);
        assert_eq!(damage[0].dropped, 31);
    }

    #[test]
    fn an_impossible_length_is_damage_not_an_allocation() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let (recs, damage) = parse(&bytes);
        assert!(recs.is_empty());
        assert!(damage[0].reason.contains("impossible"), "{damage:?}");
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let d = tmpdir("foreign");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(JOURNAL_FILE), b"important data of someone else").unwrap();
        assert!(matches!(
            open(&d, FsyncMode::Never),
            Err(JournalError::NotAJournal(_))
        ));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn compaction_replaces_the_file_with_live_state() {
        let d = tmpdir("compact");
        {
            let (mut j, _, _) = open(&d, FsyncMode::Never).unwrap();
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
        let (_j, recs, _) = open(&d, FsyncMode::Never).unwrap();
        assert_eq!(recs, (95..103).map(msg).collect::<Vec<_>>());
        assert!(!d.join(NEW_FILE).exists());
        let _ = fs::remove_dir_all(&d);
    }
}
