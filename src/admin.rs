//! `chatd admin reset-password NICK`: the way back into an account whose
//! password is lost, from the host, on the state directory. It takes the
//! state directory's lock, so it refuses while the daemon runs (stop it,
//! reset, start it), appends the account with a new salt and hash to the
//! journal and syncs it; the daemon reads it at its next start like any
//! other record. The new password comes from the terminal without echo, or
//! as the first line of standard input.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use argh::FromArgs;

use crate::core::{
    HASH_ITERATIONS, HashJob, HashOutcome, PASSWORD_MAX, PASSWORD_MIN, run_hash_job,
};
use crate::journal::{FsyncMode, Journal, JournalError};
use crate::proto::{self, fold};
use crate::record::Record;

/// host-side account care for chatd (run it while chatd is stopped)
#[derive(FromArgs, Debug)]
pub struct Flags {
    #[argh(subcommand)]
    pub cmd: Cmd,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Cmd {
    ResetPassword(ResetPassword),
}

/// give a registered nick a new password (its holder lost it)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "reset-password")]
pub struct ResetPassword {
    /// the registered nick
    #[argh(positional)]
    pub nick: String,
    /// state directory holding the journal (default $STATE_DIRECTORY, else ./chatd-state)
    #[argh(option)]
    pub state_dir: Option<String>,
}

/// Why it could not be done; `Display` says what to do.
#[derive(Debug)]
pub enum AdminError {
    Usage(String),
    Journal(JournalError),
    NoSuchAccount(String),
    Io(std::io::Error),
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::Usage(u) => f.write_str(u),
            AdminError::Journal(JournalError::Locked(p)) => write!(
                f,
                "{}: chatd is running on this state directory; stop it first (systemctl stop chatd), reset, then start it",
                p.display()
            ),
            AdminError::Journal(e) => write!(f, "{e}"),
            AdminError::NoSuchAccount(n) => write!(f, "{n} is not a registered nick here"),
            AdminError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The state directory as the daemon would choose it.
pub fn state_dir(flag: Option<String>, env: Option<String>) -> PathBuf {
    let dir = flag
        .or_else(|| {
            env.filter(|e| !e.is_empty())
                .map(|e| e.split(':').next().unwrap_or(&e).to_string())
        })
        .unwrap_or_else(|| crate::config::DEFAULT_STATE_DIR.to_string());
    PathBuf::from(dir)
}

/// Resets `nick`'s password to `password` in the journal of `dir`.
pub fn reset_password(dir: &Path, nick: &str, password: &str) -> Result<(), AdminError> {
    let n = password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        return Err(AdminError::Usage(format!(
            "a password is {PASSWORD_MIN} to {PASSWORD_MAX} characters"
        )));
    }
    if !proto::valid_nick(nick) {
        return Err(AdminError::Usage(format!("{nick}: {}", proto::NICK_RULE)));
    }
    let key = fold(nick);
    let mut found: Option<(String, u64)> = None;
    let (mut journal, _) = Journal::open(dir, FsyncMode::Always, |r| {
        if let Record::Account { nick, created, .. } = r
            && fold(&nick) == key
        {
            found = Some((nick, created));
        }
    })
    .map_err(AdminError::Journal)?;
    let Some((display, created)) = found else {
        return Err(AdminError::NoSuchAccount(nick.to_string()));
    };
    let mut salt = vec![0u8; 16];
    crate::random::fill(&mut salt)
        .map_err(|_| AdminError::Io(std::io::Error::other("no randomness from the OS")))?;
    let job = HashJob {
        id: 0,
        password: password.to_string(),
        salt: salt.clone(),
        iterations: HASH_ITERATIONS,
        expect: None,
    };
    let HashOutcome::Derived(hash) = run_hash_job(&job) else {
        return Err(AdminError::Io(std::io::Error::other("hashing failed")));
    };
    journal.append(&Record::Account {
        nick: display,
        salt,
        hash,
        iterations: HASH_ITERATIONS,
        created,
    });
    let now = Instant::now();
    journal.commit(now).map_err(AdminError::Io)?;
    journal.sync(now).map_err(AdminError::Io)?;
    Ok(())
}

/// The new password: asked twice without echo on a terminal, else the
/// first line of standard input.
pub fn read_password() -> Result<String, AdminError> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("new password: ").map_err(AdminError::Io)?;
        let b = rpassword::prompt_password("the same again: ").map_err(AdminError::Io)?;
        if a != b {
            return Err(AdminError::Usage(
                "the two passwords differ: nothing changed".to_string(),
            ));
        }
        return Ok(a);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(AdminError::Io)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
