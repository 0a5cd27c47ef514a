//! An optional log file (`--log-file`) that SIGHUP reopens, so that a
//! log-rotating admin can move the file away and have chatd write a new one.
//! Without it, logs go to stderr (the systemd journal under systemd).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A shared handle: one clone is the logger's writer, another is kept by the
/// server to reopen the file.
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    pub fn open(path: &Path) -> io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(open(path)?)),
        })
    }

    /// Opens the path again (after rotation moved the old file away).
    pub fn reopen(&self) -> io::Result<()> {
        let new = open(&self.path)?;
        match self.file.lock() {
            Ok(mut f) => *f = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.lock() {
            Ok(mut f) => f.write(buf),
            Err(poisoned) => poisoned.into_inner().write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.file.lock() {
            Ok(mut f) => f.flush(),
            Err(poisoned) => poisoned.into_inner().flush(),
        }
    }
}
