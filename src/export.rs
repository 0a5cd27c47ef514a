//! `chatd export`: the room history (and, when asked, some accounts' direct
//! messages) that the journal holds, written as plain text or JSON lines.
//!
//! It reads the journal the way [`crate::journal::read_only`] does: without
//! the state directory's lock and without repairing anything, so it runs
//! beside the daemon. It reads the file twice from one open descriptor —
//! first to learn where each room was last deleted (a deleted room's earlier
//! lines are gone for the daemon too, and must not come back in an export),
//! then to write — and the second pass stops at the record count of the
//! first, so lines the daemon appends meanwhile do not tear the output.
//!
//! What it writes is what the journal holds: every room line since the last
//! compaction, and after it the lines each room kept (`--history`). Private
//! rooms are never in the journal, so never here. Topics, accounts and keys
//! are not history and are left out.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::PathBuf;

use argh::FromArgs;

use crate::journal::{self, JOURNAL_FILE};
use crate::proto::{self, RoomRef, ServerLine, Upload, fold};
use crate::record::Record;

/// write a room's history from the journal as text or JSON lines (reads it safely while chatd runs)
#[derive(FromArgs, Debug)]
pub struct Flags {
    /// state directory holding the journal (default $STATE_DIRECTORY, else ./chatd-state)
    #[argh(option)]
    pub state_dir: Option<String>,
    /// only this room, like #lobby (default: every room)
    #[argh(option)]
    pub room: Option<String>,
    /// only lines sent at or after this time: YYYY-MM-DD, "YYYY-MM-DD HH:MM[:SS]" (UTC) or Unix milliseconds
    #[argh(option)]
    pub since: Option<String>,
    /// text (default) or jsonl, one JSON object per line
    #[argh(option, default = "String::from(\"text\")")]
    pub format: String,
    /// also write direct messages, of the accounts named with --account only
    #[argh(switch)]
    pub dms: bool,
    /// an account whose direct messages --dms writes; repeatable
    #[argh(option)]
    pub account: Vec<String>,
}

/// The export, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub journal: PathBuf,
    /// Folded room key.
    pub room: Option<String>,
    /// Unix ms.
    pub since: Option<u64>,
    pub jsonl: bool,
    /// Folded nicks whose direct messages are written; empty: none.
    pub dm_accounts: HashSet<String>,
}

/// Why an export could not be made; `Display` says what to do.
#[derive(Debug)]
pub enum ExportError {
    Usage(String),
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::Usage(u) => f.write_str(u),
            ExportError::Io(p, e) if e.kind() == io::ErrorKind::NotFound => write!(
                f,
                "{}: no journal here; give the daemon's --state-dir",
                p.display()
            ),
            ExportError::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

/// How much was written, for the closing line on stderr.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    pub lines: u64,
    pub rooms: usize,
    pub dms: u64,
    /// Where the journal's readable part ended early (a frame the daemon
    /// was writing, or damage it will cut on its next start).
    pub stopped_at: Option<u64>,
}

impl Flags {
    /// Checks the flags; `state_env` is `$STATE_DIRECTORY`, if set.
    pub fn options(self, state_env: Option<String>) -> Result<Options, ExportError> {
        let usage = |s: String| ExportError::Usage(s);
        let dir = crate::admin::state_dir(self.state_dir, state_env);
        let room = match self.room.as_deref() {
            None => None,
            Some(r) => match RoomRef::parse(r) {
                Ok(RoomRef::Public(n)) => Some(fold(&n)),
                _ => {
                    return Err(usage(format!(
                        "--room {r}: {} (private rooms are never on disk)",
                        proto::ROOM_RULE
                    )));
                }
            },
        };
        let since = match self.since.as_deref() {
            None => None,
            Some(t) => Some(parse_time(t).ok_or_else(|| {
                usage(format!(
                    "--since {t}: expected YYYY-MM-DD, \"YYYY-MM-DD HH:MM\" (UTC) or Unix milliseconds"
                ))
            })?),
        };
        let jsonl = match self.format.as_str() {
            "text" => false,
            "jsonl" | "json" => true,
            f => return Err(usage(format!("--format {f}: expected text or jsonl"))),
        };
        if self.dms && self.account.is_empty() {
            return Err(usage(
                "--dms writes the direct messages of the accounts named with --account NICK only; name at least one".to_string(),
            ));
        }
        if !self.dms && !self.account.is_empty() {
            return Err(usage("--account goes with --dms".to_string()));
        }
        let mut dm_accounts = HashSet::new();
        for a in &self.account {
            if !proto::valid_nick(a) {
                return Err(usage(format!("--account {a}: {}", proto::NICK_RULE)));
            }
            dm_accounts.insert(fold(a));
        }
        Ok(Options {
            journal: dir.join(JOURNAL_FILE),
            room,
            since,
            jsonl,
            dm_accounts,
        })
    }
}

/// A time as `--since` takes it, in Unix ms (UTC).
pub fn parse_time(t: &str) -> Option<u64> {
    use chrono::{NaiveDate, NaiveDateTime};
    let t = t.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok();
    }
    let at = if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)?
    } else {
        [
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M",
        ]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(t.trim_end_matches('Z'), f).ok())?
    };
    u64::try_from(at.and_utc().timestamp_millis()).ok()
}

/// `2026-12-01 14:03:05` (UTC).
fn date_time(ts: u64) -> String {
    let secs = (ts / 1000) % 60;
    format!(
        "{} {}:{secs:02}",
        proto::civil_date(ts),
        proto::line::clock_time(ts)
    )
}

/// `2026-12-01T14:03:05.120Z`.
fn iso(ts: u64) -> String {
    format!(
        "{}T{}:{:02}.{:03}Z",
        proto::civil_date(ts),
        proto::line::clock_time(ts),
        (ts / 1000) % 60,
        ts % 1000
    )
}

/// One room line as an export line (without newline).
fn room_entry(line: &ServerLine, jsonl: bool) -> Option<String> {
    use serde_json::json;
    let ts = line.ts()?;
    if !jsonl {
        return Some(format!("{} {}", date_time(ts), line.encode_human()));
    }
    let v = match line {
        ServerLine::Msg {
            room, nick, text, ..
        } => {
            json!({"ts": ts, "time": iso(ts), "room": room, "kind": "msg", "nick": nick, "text": text})
        }
        ServerLine::Action {
            room, nick, text, ..
        } => {
            json!({"ts": ts, "time": iso(ts), "room": room, "kind": "action", "nick": nick, "text": text})
        }
        ServerLine::Upload {
            kind,
            room,
            nick,
            mime,
            size,
            name,
            ..
        } => json!({
            "ts": ts, "time": iso(ts), "room": room,
            "kind": if *kind == Upload::Image { "image" } else { "file" },
            "nick": nick, "name": name, "mime": mime, "size": size,
        }),
        ServerLine::Encrypted {
            room, nick, data, ..
        } => json!({
            "ts": ts, "time": iso(ts), "room": room, "kind": "encrypted", "nick": nick,
            // Empty when the envelope was too big to keep (--history-envelope).
            "envelope": data,
        }),
        _ => return None,
    };
    Some(v.to_string())
}

fn dm_entry(from: &str, to: &str, ts: u64, text: &str, jsonl: bool) -> String {
    if jsonl {
        return serde_json::json!({
            "ts": ts, "time": iso(ts), "kind": "dm", "from": from, "to": to, "text": text,
        })
        .to_string();
    }
    let line = ServerLine::Dm {
        from: from.to_string(),
        to: to.to_string(),
        ts,
        text: text.to_string(),
    };
    format!("{} {}", date_time(ts), line.encode_human())
}

/// Writes the export of `opts.journal` to `out`.
pub fn run(opts: &Options, out: &mut impl Write) -> Result<Summary, ExportError> {
    let io_err = |e| ExportError::Io(opts.journal.clone(), e);
    // Pass 1: where each room was last deleted, and how far to read.
    let mut gone: HashMap<String, u64> = HashMap::new();
    let mut i = 0u64;
    let first = journal::read_only(&opts.journal, |r| {
        if let Record::RoomGone { room } = &r {
            gone.insert(fold(room), i);
        }
        i += 1;
    })
    .map_err(io_err)?;
    // Pass 2: the lines.
    let mut summary = Summary {
        stopped_at: first.stopped_at,
        ..Summary::default()
    };
    let mut rooms: HashSet<String> = HashSet::new();
    let mut seen_dms: HashSet<(String, String, u64)> = HashSet::new();
    let mut failed: Option<io::Error> = None;
    let mut i = 0u64;
    journal::read_only(&opts.journal, |r| {
        let at = i;
        i += 1;
        if at >= first.records || failed.is_some() {
            return;
        }
        let entry = match &r {
            Record::Message { line } => {
                let Some(l) = ServerLine::parse_foreign(line) else {
                    return;
                };
                let Some(room) = room_of(&l) else { return };
                let key = fold(room);
                if key.starts_with('~')
                    || opts.room.as_ref().is_some_and(|k| *k != key)
                    || gone.get(&key).is_some_and(|&g| g > at)
                    || opts.since.is_some_and(|s| l.ts().is_none_or(|t| t < s))
                {
                    return;
                }
                let Some(e) = room_entry(&l, opts.jsonl) else {
                    return;
                };
                rooms.insert(key);
                summary.lines += 1;
                e
            }
            Record::Dm {
                from, to, ts, text, ..
            } => {
                let (f, t) = (fold(from), fold(to));
                let named = opts.dm_accounts.contains(&f) || opts.dm_accounts.contains(&t);
                if !named
                    || opts.since.is_some_and(|s| *ts < s)
                    || !seen_dms.insert((f, t, *ts))
                    || text.chars().any(crate::codec::is_forbidden_control)
                {
                    return;
                }
                summary.dms += 1;
                dm_entry(from, to, *ts, text, opts.jsonl)
            }
            _ => return,
        };
        if let Err(e) = writeln!(out, "{entry}") {
            failed = Some(e);
        }
    })
    .map_err(io_err)?;
    if let Some(e) = failed {
        return Err(ExportError::Io(PathBuf::from("-"), e));
    }
    out.flush()
        .map_err(|e| ExportError::Io(PathBuf::from("-"), e))?;
    summary.rooms = rooms.len();
    Ok(summary)
}

fn room_of(l: &ServerLine) -> Option<&str> {
    match l {
        ServerLine::Msg { room, .. }
        | ServerLine::Action { room, .. }
        | ServerLine::Upload { room, .. }
        | ServerLine::Encrypted { room, .. } => Some(room),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_dates_times_and_milliseconds() {
        assert_eq!(parse_time("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_time("1970-01-01 00:01"), Some(60_000));
        assert_eq!(parse_time("1970-01-01T00:00:02Z"), Some(2_000));
        assert_eq!(parse_time("1234"), Some(1234));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2026-13-01"), None);
    }

    #[test]
    fn flags_are_checked() {
        let f = |args: &[&str]| Flags::from_args(&["chatd export"], args).unwrap();
        assert!(f(&["--dms"]).options(None).is_err());
        assert!(f(&["--account", "bob"]).options(None).is_err());
        assert!(f(&["--room", "abc123"]).options(None).is_err());
        assert!(f(&["--format", "xml"]).options(None).is_err());
        let o = f(&["--room", "#Lobby", "--format", "jsonl"])
            .options(Some("/var/lib/chatd".into()))
            .unwrap();
        assert_eq!(o.room.as_deref(), Some("#lobby"));
        assert_eq!(o.journal, std::path::Path::new("/var/lib/chatd/journal"));
        assert!(o.jsonl);
    }

    #[test]
    fn entries_in_both_formats() {
        let l = ServerLine::Msg {
            room: "#r".into(),
            nick: "al\"ice".into(),
            ts: 61_001,
            text: "say \"hi\" \\ ünïcode".into(),
        };
        assert_eq!(
            room_entry(&l, false).unwrap(),
            "1970-01-01 00:01:01 #r <al\"ice> say \"hi\" \\ ünïcode"
        );
        let j: serde_json::Value = serde_json::from_str(&room_entry(&l, true).unwrap()).unwrap();
        assert_eq!(j["text"], "say \"hi\" \\ ünïcode");
        assert_eq!(j["time"], "1970-01-01T00:01:01.001Z");
        assert_eq!(j["kind"], "msg");
    }
}
