//! chatc's files for end-to-end direct messages, under the XDG data
//! directory (`$XDG_DATA_HOME/chatc`, else `~/.local/share/chatc`):
//!
//! * `identity`: our long-term keys, created on first run, mode 0600 in a
//!   0700 directory; whoever reads it can read our direct messages;
//! * `known_keys`: the key pinned for each nick on first use (like SSH's
//!   `known_hosts`), one `nick ed25519 x25519` line each, base64url.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chatd::e2e::identity::{Identity, PeerKey};

pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("chatc");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/chatc")
}

fn private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Writes `text` to `path` through a 0600 temporary file and a rename, so a
/// crash never leaves half a key file.
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Our identity; made (and saved) the first time. True if it was made now.
pub fn load_or_create_identity(dir: &Path) -> Result<(Identity, bool), String> {
    let path = dir.join("identity");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mode = fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
            if mode.is_ok_and(|m| m & 0o077 != 0) {
                return Err(format!(
                    "{} is readable by others (chmod 600 it)",
                    path.display()
                ));
            }
            Identity::from_file(&text)
                .map(|i| (i, false))
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = Identity::generate();
            private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            write_private(&path, &id.to_file()).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((id, true))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub fn load_pins(dir: &Path) -> HashMap<String, PeerKey> {
    let Ok(text) = fs::read_to_string(dir.join("known_keys")) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|l| {
            let (nick, key) = l.split_once(' ')?;
            Some((nick.to_string(), PeerKey::from_text(key)?))
        })
        .collect()
}

pub fn save_pins(dir: &Path, pins: &HashMap<String, PeerKey>) -> io::Result<()> {
    private_dir(dir)?;
    let mut lines: Vec<String> = pins
        .iter()
        .map(|(n, k)| format!("{n} {}", k.to_text()))
        .collect();
    lines.sort();
    let mut text = lines.join("\n");
    text.push('\n');
    write_private(&dir.join("known_keys"), &text)
}

/// The replay memory (`memory`, see `chatd::client::memory`): what it held,
/// rewritten compacted by `compact`, then appended to by `remember`.
pub struct MemoryFile {
    path: PathBuf,
    file: Option<fs::File>,
    /// Lines appended since the last rewrite.
    appended: usize,
}

/// Appended lines after which the file is rewritten compacted, so that a
/// session of weeks does not grow it without end (what the client
/// remembers is bounded; the appended history of it is not).
const COMPACT_AFTER: usize = 50_000;

impl MemoryFile {
    /// Reads the file (empty if there is none yet).
    pub fn open(dir: &Path) -> (MemoryFile, String) {
        let path = dir.join("memory");
        let text = fs::read_to_string(&path).unwrap_or_default();
        (
            MemoryFile {
                path,
                file: None,
                appended: 0,
            },
            text,
        )
    }

    /// Rewrites it with `text` (what the client remembers, compacted), and
    /// keeps it open for appending.
    pub fn compact(&mut self, text: &str) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            private_dir(dir)?;
        }
        write_private(&self.path, text)?;
        self.file = Some(fs::OpenOptions::new().append(true).open(&self.path)?);
        self.appended = 0;
        Ok(())
    }

    /// Appends one fact; true when it is time to [`MemoryFile::compact`].
    pub fn remember(&mut self, line: &str) -> io::Result<bool> {
        match self.file.as_mut() {
            Some(f) => {
                writeln!(f, "{line}")?;
                self.appended += 1;
                Ok(self.appended >= COMPACT_AFTER)
            }
            None => Ok(false),
        }
    }
}
