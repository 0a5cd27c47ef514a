//! The line protocol: what a client may send ([`Command`]) and what the server
//! sends back ([`ServerLine`]), with their parsers and encoders.
//!
//! This module is shared by the daemon and the client. It does no I/O and keeps
//! no state. Every server line has two encodings:
//!
//! * **human** (the default, for nc users): a marker first, then readable text —
//!   `#room <nick> text`, `* #room nick action`, `@peer <nick> text`,
//!   `*** notice`, `!!! error`;
//! * **machine v1** (`/format machine`): a lower-case kind word first, then
//!   fields that never contain spaces, then free text last. [`ServerLine::parse_machine`]
//!   reads it back, and `parse_machine(encode_machine(x)) == x` for every line.
//!
//! Names are validated here so that the rules (and the error that states them)
//! live in one place. The parts:
//!
//! * [`command`] — [`Command`], what a client sends, and its parser;
//! * [`line`](mod@line) — [`ServerLine`], what the server sends, with both encodings;
//! * [`shapes`] — the end-to-end formats as the server sees them: prefixes and
//!   plausible lengths, checked without any key.

pub mod command;
pub mod line;
pub mod shapes;
#[cfg(test)]
mod tests;

pub use command::{Command, JoinTarget, KeyCmd, ModAction, ParseError, Setting};
pub use line::{ServerLine, civil_date, human_size};

/// Protocol version of the machine-readable format.
pub const MACHINE_VERSION: u32 = 1;

pub const NICK_MAX: usize = 24;
pub const ROOM_MAX: usize = 32;
pub const CODE_LEN: usize = 6;
pub const TOPIC_MAX: usize = 300;
pub const REASON_MAX: usize = 200;
pub const FILE_NAME_MAX: usize = 64;
/// chatc keeps an encrypted direct-message line within the default
/// `--max-line`, so any server takes it.
pub const DM_ENVELOPE_MAX: usize = 4096;

pub const NICK_RULE: &str = "a nick is 1-24 letters (a-z, A-Z), digits, _ or -";
pub const ROOM_RULE: &str = "a room name is # followed by 1-32 letters (a-z, A-Z), digits, _ or -, like #lobby; a private room is joined by its 6-character code, like a4b2c1";
pub const FILE_NAME_RULE: &str = "a file name is 1-64 characters without spaces, / or \\";

/// How a session wants its lines encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Human,
    Machine,
    /// The human form with the time before each line (`HH:MM` UTC, the
    /// date too for a line from another day): what `/set timestamps on`
    /// gives a human session. Never asked for with `/format`.
    Stamped,
}

impl Format {
    /// Read by a person (human or stamped), not a program.
    pub fn is_human(self) -> bool {
        self != Format::Machine
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Checks a nick against [`NICK_RULE`].
pub fn valid_nick(s: &str) -> bool {
    (1..=NICK_MAX).contains(&s.len()) && s.chars().all(is_name_char)
}

/// The case-folded form under which nicks and rooms are unique.
pub fn fold(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// Orders as `fold(a).cmp(&fold(b))` does, without building either: a sort
/// by `fold` as its key built two strings per comparison, which was a sixth
/// of the daemon's own work in a churn of joins (the who-is-here list).
pub fn cmp_folded(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// Whether two names are the same under [`fold`], without building either.
pub fn eq_folded(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// A reference to a room as a user typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomRef {
    /// `#name`, stored as typed (display form); compare with [`RoomRef::key`].
    Public(String),
    /// A private room's code, without the `~` it is displayed with.
    Private(String),
}

impl RoomRef {
    /// Parses `#name`, `~code` or a bare `code`.
    pub fn parse(s: &str) -> Result<RoomRef, NameError> {
        if let Some(name) = s.strip_prefix('#') {
            if (1..=ROOM_MAX).contains(&name.len()) && name.chars().all(is_name_char) {
                return Ok(RoomRef::Public(s.to_string()));
            }
            return Err(NameError::Room);
        }
        let code = s.strip_prefix('~').unwrap_or(s);
        if valid_code(code) {
            return Ok(RoomRef::Private(code.to_string()));
        }
        Err(NameError::Room)
    }

    /// The unique key: `#name` folded to lower case, or `~code`.
    pub fn key(&self) -> String {
        match self {
            RoomRef::Public(n) => fold(n),
            RoomRef::Private(c) => format!("~{c}"),
        }
    }

    /// The form shown to users: `#Name` or `~code`.
    pub fn display(&self) -> String {
        match self {
            RoomRef::Public(n) => n.clone(),
            RoomRef::Private(c) => format!("~{c}"),
        }
    }
}

/// A private-room code: 6 lower-case letters and digits.
pub fn valid_code(s: &str) -> bool {
    s.len() == CODE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A name that broke its rule; `Display` states the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Nick,
    Room,
    FileName,
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameError::Nick => NICK_RULE,
            NameError::Room => ROOM_RULE,
            NameError::FileName => FILE_NAME_RULE,
        })
    }
}

/// Checks the name a sender gives an image or file. It is only ever shown, but
/// a client that saves it must still treat it as hostile.
pub fn valid_file_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= FILE_NAME_MAX
        && !s.chars().any(|c| {
            c.is_whitespace() || c == '/' || c == '\\' || crate::codec::is_forbidden_control(c)
        })
}

/// Whether `/image` or `/file` was used; they differ only in the type check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Image,
    File,
}
