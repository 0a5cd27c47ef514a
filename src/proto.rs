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
//! live in one place.

use std::fmt::Write as _;

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

/// What `/join` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinTarget {
    Room(RoomRef),
    /// `/join new`: a fresh private room.
    New,
}

/// Whether `/image` or `/file` was used; they differ only in the type check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Image,
    File,
}

/// One line from a client, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Text for the current room (a `//` escape already undone).
    Say(String),
    Help(Option<String>),
    Nick(String),
    Join(JoinTarget),
    Part(Option<RoomRef>),
    Rooms,
    Who(Option<RoomRef>),
    Online,
    Dm {
        to: String,
        text: String,
    },
    Me(String),
    Topic(Option<String>),
    Upload {
        kind: Upload,
        name: Option<String>,
        data: String,
    },
    History {
        room: Option<RoomRef>,
        count: Option<usize>,
    },
    Quit(Option<String>),
    Format(Format),
    /// A no-op a client may send to keep an idle session alive.
    Ping(Option<String>),
    Register(String),
    Login {
        nick: String,
        password: String,
    },
    Whois(String),
    Bio(String),
    Dms(String),
    Create {
        room: RoomRef,
        topic: Option<String>,
    },
    Delete(RoomRef),
    /// An end-to-end envelope for the current room, relayed opaque.
    Encrypted(String),
    /// `/key <nick>`, `/key set <bundle>`, `/key clear`.
    Key(KeyCmd),
}

/// What `/key` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCmd {
    /// The end-to-end key bundle `nick` published.
    Get(String),
    /// Publish this bundle for one's own registered nick.
    Set(String),
    /// Withdraw one's published bundle.
    Clear,
}

/// Why a line could not be parsed into a [`Command`]; `Display` says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    Unknown(String),
    Usage(&'static str),
    Name(NameError),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty line ignored"),
            ParseError::Unknown(c) => write!(
                f,
                "unknown command /{c}: type /help for the list; to send a line starting with /, write //"
            ),
            ParseError::Usage(u) => write!(f, "usage: {u}"),
            ParseError::Name(e) => write!(f, "{e}"),
        }
    }
}

impl ParseError {
    /// The machine-readable error code.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::Empty => "empty",
            ParseError::Unknown(_) => "unknown-command",
            ParseError::Usage(_) => "usage",
            ParseError::Name(NameError::Nick) => "nick-invalid",
            ParseError::Name(NameError::Room) => "room-invalid",
            ParseError::Name(NameError::FileName) => "name-invalid",
        }
    }
}

/// Splits off the first space-separated word.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches(' ');
    match s.find(' ') {
        Some(i) => (&s[..i], s[i + 1..].trim_start_matches(' ')),
        None => (s, ""),
    }
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim_matches(' ');
    (!s.is_empty()).then(|| s.to_string())
}

fn one_nick(s: &str, usage: &'static str) -> Result<String, ParseError> {
    let (nick, extra) = split_word(s);
    if nick.is_empty() || !extra.is_empty() {
        return Err(ParseError::Usage(usage));
    }
    if !valid_nick(nick) {
        return Err(ParseError::Name(NameError::Nick));
    }
    Ok(nick.to_string())
}

fn room_arg(s: &str) -> Result<Option<RoomRef>, ParseError> {
    let s = s.trim_matches(' ');
    if s.is_empty() {
        return Ok(None);
    }
    RoomRef::parse(s).map(Some).map_err(ParseError::Name)
}

impl Command {
    /// Parses one line (already free of newlines and control characters).
    pub fn parse(line: &str) -> Result<Command, ParseError> {
        let Some(rest) = line.strip_prefix('/') else {
            if line.trim().is_empty() {
                return Err(ParseError::Empty);
            }
            return Ok(Command::Say(line.to_string()));
        };
        if rest.starts_with('/') {
            return Ok(Command::Say(rest.to_string()));
        }
        let (name, args) = split_word(rest);
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "help" | "?" => Ok(Command::Help(
                opt(args).map(|a| a.trim_start_matches('/').to_ascii_lowercase()),
            )),
            "nick" => {
                let (nick, extra) = split_word(args);
                if nick.is_empty() || !extra.is_empty() {
                    return Err(ParseError::Usage("/nick <name>"));
                }
                if !valid_nick(nick) {
                    return Err(ParseError::Name(NameError::Nick));
                }
                Ok(Command::Nick(nick.to_string()))
            }
            "join" | "j" => {
                let (target, extra) = split_word(args);
                if target.is_empty() || !extra.is_empty() {
                    return Err(ParseError::Usage(
                        "/join <#room> | /join new | /join <code>",
                    ));
                }
                if target.eq_ignore_ascii_case("new") {
                    return Ok(Command::Join(JoinTarget::New));
                }
                RoomRef::parse(target)
                    .map(|r| Command::Join(JoinTarget::Room(r)))
                    .map_err(ParseError::Name)
            }
            "part" | "leave" => Ok(Command::Part(room_arg(args)?)),
            "rooms" | "list" => Ok(Command::Rooms),
            "who" | "names" => Ok(Command::Who(room_arg(args)?)),
            "online" | "users" => Ok(Command::Online),
            "dm" | "msg" => {
                let (to, text) = split_word(args);
                if to.is_empty() || text.trim().is_empty() {
                    return Err(ParseError::Usage("/dm <nick> <text>"));
                }
                if !valid_nick(to) {
                    return Err(ParseError::Name(NameError::Nick));
                }
                Ok(Command::Dm {
                    to: to.to_string(),
                    text: text.to_string(),
                })
            }
            "me" => match opt(args) {
                Some(a) => Ok(Command::Me(a)),
                None => Err(ParseError::Usage("/me <action>")),
            },
            "topic" => Ok(Command::Topic(opt(args))),
            "image" | "img" | "file" => {
                let kind = if name == "file" {
                    Upload::File
                } else {
                    Upload::Image
                };
                let usage = if kind == Upload::File {
                    "/file [name] <base64>"
                } else {
                    "/image [name] <base64>"
                };
                let (first, more) = split_word(args);
                let (name_arg, data) = if more.is_empty() {
                    (None, first)
                } else {
                    (Some(first), more.trim_end_matches(' '))
                };
                if data.is_empty() || data.contains(' ') {
                    return Err(ParseError::Usage(usage));
                }
                if let Some(n) = name_arg
                    && !valid_file_name(n)
                {
                    return Err(ParseError::Name(NameError::FileName));
                }
                Ok(Command::Upload {
                    kind,
                    name: name_arg.map(str::to_string),
                    data: data.to_string(),
                })
            }
            "history" | "hist" => {
                let mut room = None;
                let mut count = None;
                for w in args.split(' ').filter(|w| !w.is_empty()) {
                    if let Ok(n) = w.parse::<usize>() {
                        if count.is_some() {
                            return Err(ParseError::Usage("/history [#room] [n]"));
                        }
                        count = Some(n);
                    } else if room.is_none() {
                        room = Some(RoomRef::parse(w).map_err(ParseError::Name)?);
                    } else {
                        return Err(ParseError::Usage("/history [#room] [n]"));
                    }
                }
                Ok(Command::History { room, count })
            }
            "quit" | "exit" | "bye" => Ok(Command::Quit(opt(args))),
            "format" => match args.trim().to_ascii_lowercase().as_str() {
                "human" => Ok(Command::Format(Format::Human)),
                "machine" | "machine 1" | "machine1" => Ok(Command::Format(Format::Machine)),
                _ => Err(ParseError::Usage("/format human | /format machine")),
            },
            "ping" => Ok(Command::Ping(opt(args))),
            "enc" => {
                let env = args.trim_matches(' ');
                if env.is_empty() || env.contains(' ') {
                    return Err(ParseError::Usage("/enc <envelope> (sent by chatc)"));
                }
                Ok(Command::Encrypted(env.to_string()))
            }
            "register" => match opt(args) {
                Some(p) => Ok(Command::Register(p)),
                None => Err(ParseError::Usage("/register <password>")),
            },
            "login" => {
                let (nick, password) = split_word(args);
                let password = password.trim_matches(' ');
                if nick.is_empty() || password.is_empty() {
                    return Err(ParseError::Usage("/login <nick> <password>"));
                }
                if !valid_nick(nick) {
                    return Err(ParseError::Name(NameError::Nick));
                }
                Ok(Command::Login {
                    nick: nick.to_string(),
                    password: password.to_string(),
                })
            }
            "whois" => one_nick(args, "/whois <nick>").map(Command::Whois),
            "key" => {
                let (first, rest) = split_word(args);
                match (first.to_ascii_lowercase().as_str(), rest.trim()) {
                    ("set", b) if !b.is_empty() && !b.contains(' ') => {
                        Ok(Command::Key(KeyCmd::Set(b.to_string())))
                    }
                    ("clear", "") => Ok(Command::Key(KeyCmd::Clear)),
                    (_, "") if valid_nick(first) => {
                        Ok(Command::Key(KeyCmd::Get(first.to_string())))
                    }
                    _ => Err(ParseError::Usage(
                        "/key <nick> | /key set <bundle> | /key clear",
                    )),
                }
            }
            "dms" => one_nick(args, "/dms <nick>").map(Command::Dms),
            "bio" => Ok(Command::Bio(args.trim_matches(' ').to_string())),
            "create" => {
                let (room, topic) = split_word(args);
                if room.is_empty() {
                    return Err(ParseError::Usage("/create <#room> [topic]"));
                }
                match RoomRef::parse(room) {
                    Ok(r @ RoomRef::Public(_)) => Ok(Command::Create {
                        room: r,
                        topic: opt(topic),
                    }),
                    _ => Err(ParseError::Name(NameError::Room)),
                }
            }
            "delete" => match room_arg(args)? {
                Some(r @ RoomRef::Public(_)) => Ok(Command::Delete(r)),
                Some(RoomRef::Private(_)) => Err(ParseError::Name(NameError::Room)),
                None => Err(ParseError::Usage("/delete <#room>")),
            },
            "" => Err(ParseError::Unknown(String::new())),
            _ => Err(ParseError::Unknown(name.chars().take(32).collect())),
        }
    }
}

/// An event or answer the server sends to one or more sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    /// A message in a room. `ts` is Unix time in milliseconds.
    Msg {
        room: String,
        nick: String,
        ts: u64,
        text: String,
    },
    Action {
        room: String,
        nick: String,
        ts: u64,
        text: String,
    },
    Dm {
        from: String,
        to: String,
        ts: u64,
        text: String,
    },
    /// An image or file in a room. `data` is base64 and is only sent to
    /// machine-mode sessions; humans get a one-line notice.
    Upload {
        kind: Upload,
        room: String,
        nick: String,
        ts: u64,
        mime: String,
        size: u64,
        name: String,
        data: String,
    },
    /// An end-to-end envelope in a room: opaque to the server; humans get a
    /// notice, machine clients the envelope.
    Encrypted {
        room: String,
        nick: String,
        ts: u64,
        data: String,
    },
    Join {
        room: String,
        nick: String,
    },
    Part {
        room: String,
        nick: String,
        reason: String,
    },
    Quit {
        nick: String,
        reason: String,
    },
    NickChange {
        old: String,
        new: String,
    },
    Topic {
        room: String,
        nick: String,
        text: String,
    },
    /// Start of a block of `count` earlier messages of `room`.
    History {
        room: String,
        count: usize,
    },
    /// One entry of a `/rooms` answer.
    RoomInfo {
        room: String,
        members: usize,
        topic: String,
    },
    /// Some members of a room (`/who`); several lines for a big room.
    Names {
        room: String,
        nicks: Vec<String>,
    },
    /// Some online users (`/online`).
    Online {
        total: usize,
        nicks: Vec<String>,
    },
    /// Answer to `/whois`. `registered` is Unix ms, 0 if not registered;
    /// `room` is empty when offline or in no room.
    Whois {
        nick: String,
        online: bool,
        room: String,
        registered: u64,
        bio: String,
    },
    /// Answer to `/key <nick>`: the bundle `nick` published, empty if none.
    Key {
        nick: String,
        bundle: String,
    },
    /// The request succeeded; `what` is a word, `text` says it for humans.
    Ok {
        what: String,
        text: String,
    },
    /// Information for a human (greeting, help, counts).
    Info {
        code: String,
        text: String,
    },
    Error {
        code: String,
        text: String,
    },
}

/// `2026-11-24` for a Unix time in milliseconds (UTC), without a date crate:
/// Howard Hinnant's days-to-civil algorithm.
pub fn civil_date(unix_ms: u64) -> String {
    let days = (unix_ms / 86_400_000) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `245.3 KB`-style size for notices.
pub fn human_size(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if b >= K * K {
        format!("{:.1} MB", b / (K * K))
    } else if b >= K {
        format!("{:.1} KB", b / K)
    } else {
        format!("{bytes} B")
    }
}

fn word(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

impl ServerLine {
    pub fn error(code: &str, text: impl Into<String>) -> ServerLine {
        ServerLine::Error {
            code: code.to_string(),
            text: text.into(),
        }
    }

    pub fn info(code: &str, text: impl Into<String>) -> ServerLine {
        ServerLine::Info {
            code: code.to_string(),
            text: text.into(),
        }
    }

    pub fn ok(what: &str, text: impl Into<String>) -> ServerLine {
        ServerLine::Ok {
            what: what.to_string(),
            text: text.into(),
        }
    }

    /// Encodes for `format`, newline included.
    pub fn encode(&self, format: Format) -> Vec<u8> {
        let mut s = match format {
            Format::Human => self.encode_human(),
            Format::Machine => self.encode_machine(),
        };
        s.push('\n');
        s.into_bytes()
    }

    /// The human form, without newline.
    pub fn encode_human(&self) -> String {
        match self {
            ServerLine::Msg {
                room, nick, text, ..
            } => format!("{room} <{nick}> {text}"),
            ServerLine::Action {
                room, nick, text, ..
            } => format!("* {room} {nick} {text}"),
            // One line serves both ends of the conversation. An end-to-end
            // envelope is not shown as base64 to people reading raw text.
            ServerLine::Dm { from, to, text, .. } if crate::identity::looks_like_dm(text) => {
                format!("@{from} -> {to}: {from} sent an encrypted message (read it with chatc)")
            }
            ServerLine::Dm { from, to, text, .. } => format!("@{from} -> {to}: {text}"),
            ServerLine::Key { nick, bundle } if bundle.is_empty() => {
                format!("*** {nick} has published no end-to-end key")
            }
            ServerLine::Key { nick, bundle } => {
                format!("*** {nick}'s end-to-end key: {bundle}")
            }
            ServerLine::Upload {
                kind,
                room,
                nick,
                mime,
                size,
                name,
                ..
            } => {
                let what = match kind {
                    Upload::Image => "an image",
                    Upload::File => "a file",
                };
                format!(
                    "*** {room}: {nick} sent {what}: {name}, {mime}, {}",
                    human_size(*size)
                )
            }
            ServerLine::Encrypted { room, nick, .. } => {
                format!("*** {room}: {nick} sent an encrypted message")
            }
            ServerLine::Join { room, nick } => format!("*** {nick} joined {room}"),
            ServerLine::Part { room, nick, reason } if reason.is_empty() => {
                format!("*** {nick} left {room}")
            }
            ServerLine::Part { room, nick, reason } => {
                format!("*** {nick} left {room} ({reason})")
            }
            ServerLine::Quit { nick, reason } if reason.is_empty() => format!("*** {nick} quit"),
            ServerLine::Quit { nick, reason } => format!("*** {nick} quit ({reason})"),
            ServerLine::NickChange { old, new } => format!("*** {old} is now known as {new}"),
            ServerLine::Topic { room, nick, text } if text.is_empty() => {
                format!("*** {nick} cleared the topic of {room}")
            }
            ServerLine::Topic { room, nick, text } if nick.is_empty() => {
                format!("*** topic of {room}: {text}")
            }
            ServerLine::Topic { room, nick, text } => {
                format!("*** {nick} set the topic of {room}: {text}")
            }
            ServerLine::History { room, count } => {
                format!("*** last {count} messages in {room}:")
            }
            ServerLine::RoomInfo {
                room,
                members,
                topic,
            } => {
                let people = if *members == 1 { "person" } else { "people" };
                if topic.is_empty() {
                    format!("*** {room} ({members} {people})")
                } else {
                    format!("*** {room} ({members} {people}): {topic}")
                }
            }
            ServerLine::Names { room, nicks } => format!("*** in {room}: {}", nicks.join(" ")),
            ServerLine::Online { total, nicks } => {
                format!("*** online ({total}): {}", nicks.join(" "))
            }
            ServerLine::Whois {
                nick,
                online,
                room,
                registered,
                bio,
            } => {
                let mut s = format!("*** {nick} is ");
                match (online, room.is_empty()) {
                    (true, false) => s.push_str(&format!("online in {room}")),
                    (true, true) => s.push_str("online"),
                    (false, _) => s.push_str("offline"),
                }
                if *registered > 0 {
                    s.push_str(&format!("; registered since {}", civil_date(*registered)));
                } else {
                    s.push_str("; not registered");
                }
                if !bio.is_empty() {
                    s.push_str(&format!("; bio: {bio}"));
                }
                s
            }
            ServerLine::Ok { text, .. } | ServerLine::Info { text, .. } => format!("*** {text}"),
            ServerLine::Error { text, .. } => format!("!!! {text}"),
        }
    }

    /// The machine v1 form, without newline: `kind field… text`.
    pub fn encode_machine(&self) -> String {
        let mut s = String::new();
        // `write!` to a String cannot fail.
        let _ = match self {
            ServerLine::Msg {
                room,
                nick,
                ts,
                text,
            } => write!(s, "msg {room} {nick} {ts} {text}"),
            ServerLine::Action {
                room,
                nick,
                ts,
                text,
            } => {
                write!(s, "act {room} {nick} {ts} {text}")
            }
            ServerLine::Dm { from, to, ts, text } => write!(s, "dm {from} {to} {ts} {text}"),
            ServerLine::Upload {
                kind,
                room,
                nick,
                ts,
                mime,
                size,
                name,
                data,
            } => {
                let k = match kind {
                    Upload::Image => "image",
                    Upload::File => "file",
                };
                write!(s, "{k} {room} {nick} {ts} {mime} {size} {name} {data}")
            }
            ServerLine::Encrypted {
                room,
                nick,
                ts,
                data,
            } => write!(s, "enc {room} {nick} {ts} {data}"),
            ServerLine::Join { room, nick } => write!(s, "join {room} {nick}"),
            ServerLine::Part { room, nick, reason } => write!(s, "part {room} {nick} {reason}"),
            ServerLine::Quit { nick, reason } => write!(s, "quit {nick} {reason}"),
            ServerLine::NickChange { old, new } => write!(s, "nick {old} {new}"),
            ServerLine::Topic { room, nick, text } => {
                write!(s, "topic {room} {} {text}", word(nick))
            }
            ServerLine::History { room, count } => write!(s, "history {room} {count}"),
            ServerLine::RoomInfo {
                room,
                members,
                topic,
            } => write!(s, "room {room} {members} {topic}"),
            ServerLine::Names { room, nicks } => write!(s, "names {room} {}", nicks.join(" ")),
            ServerLine::Online { total, nicks } => write!(s, "online {total} {}", nicks.join(" ")),
            ServerLine::Whois {
                nick,
                online,
                room,
                registered,
                bio,
            } => write!(
                s,
                "whois {nick} {} {} {registered} {bio}",
                if *online { "online" } else { "offline" },
                word(room)
            ),
            ServerLine::Key { nick, bundle } => write!(s, "key {nick} {}", word(bundle)),
            ServerLine::Ok { what, text } => write!(s, "ok {} {text}", word(what)),
            ServerLine::Info { code, text } => write!(s, "info {} {text}", word(code)),
            ServerLine::Error { code, text } => write!(s, "err {} {text}", word(code)),
        };
        // Free text may be empty; a trailing space is never significant.
        while s.ends_with(' ') {
            s.pop();
        }
        s
    }

    /// Parses a machine v1 line (without newline). Unknown kinds and missing
    /// fields are `None`, so a client can skip lines from a newer server.
    pub fn parse_machine(line: &str) -> Option<ServerLine> {
        let mut f = Fields(line);
        let kind = f.word()?;
        let line = match kind {
            "msg" | "act" => {
                let (room, nick, ts) = (f.string()?, f.string()?, f.num()?);
                let text = f.rest();
                if kind == "msg" {
                    ServerLine::Msg {
                        room,
                        nick,
                        ts,
                        text,
                    }
                } else {
                    ServerLine::Action {
                        room,
                        nick,
                        ts,
                        text,
                    }
                }
            }
            "dm" => ServerLine::Dm {
                from: f.string()?,
                to: f.string()?,
                ts: f.num()?,
                text: f.rest(),
            },
            "image" | "file" => ServerLine::Upload {
                kind: if kind == "image" {
                    Upload::Image
                } else {
                    Upload::File
                },
                room: f.string()?,
                nick: f.string()?,
                ts: f.num()?,
                mime: f.string()?,
                size: f.num()?,
                name: f.string()?,
                data: f.rest(),
            },
            "enc" => ServerLine::Encrypted {
                room: f.string()?,
                nick: f.string()?,
                ts: f.num()?,
                data: f.rest(),
            },
            "join" => ServerLine::Join {
                room: f.string()?,
                nick: f.string()?,
            },
            "part" => ServerLine::Part {
                room: f.string()?,
                nick: f.string()?,
                reason: f.rest(),
            },
            "quit" => ServerLine::Quit {
                nick: f.string()?,
                reason: f.rest(),
            },
            "nick" => ServerLine::NickChange {
                old: f.string()?,
                new: f.string()?,
            },
            "topic" => ServerLine::Topic {
                room: f.string()?,
                nick: f.dash()?,
                text: f.rest(),
            },
            "history" => ServerLine::History {
                room: f.string()?,
                count: f.num::<usize>()?,
            },
            "room" => ServerLine::RoomInfo {
                room: f.string()?,
                members: f.num()?,
                topic: f.rest(),
            },
            "names" => ServerLine::Names {
                room: f.string()?,
                nicks: f.words(),
            },
            "online" => ServerLine::Online {
                total: f.num()?,
                nicks: f.words(),
            },
            "whois" => ServerLine::Whois {
                nick: f.string()?,
                online: match f.word()? {
                    "online" => true,
                    "offline" => false,
                    _ => return None,
                },
                room: f.dash()?,
                registered: f.num()?,
                bio: f.rest(),
            },
            "key" => ServerLine::Key {
                nick: f.string()?,
                bundle: f.dash()?,
            },
            "ok" => ServerLine::Ok {
                what: f.dash()?,
                text: f.rest(),
            },
            "info" => ServerLine::Info {
                code: f.dash()?,
                text: f.rest(),
            },
            "err" => ServerLine::Error {
                code: f.dash()?,
                text: f.rest(),
            },
            _ => return None,
        };
        f.finish().then_some(line)
    }
}

/// A cursor over space-separated fields of a machine line.
struct Fields<'a>(&'a str);

impl<'a> Fields<'a> {
    fn word(&mut self) -> Option<&'a str> {
        if self.0.is_empty() {
            return None;
        }
        let (w, rest) = match self.0.find(' ') {
            Some(i) => (&self.0[..i], &self.0[i + 1..]),
            None => (self.0, ""),
        };
        self.0 = rest;
        (!w.is_empty()).then_some(w)
    }
    fn string(&mut self) -> Option<String> {
        self.word().map(str::to_string)
    }
    /// A word where `-` stands for empty.
    fn dash(&mut self) -> Option<String> {
        self.word().map(|w| {
            if w == "-" {
                String::new()
            } else {
                w.to_string()
            }
        })
    }
    fn num<T: std::str::FromStr>(&mut self) -> Option<T> {
        self.word()?.parse().ok()
    }
    fn rest(&mut self) -> String {
        std::mem::take(&mut self.0).to_string()
    }
    fn words(&mut self) -> Vec<String> {
        let r = self.rest();
        r.split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    }
    /// True when every byte was consumed (no trailing junk after fixed fields).
    fn finish(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicks_and_rooms() {
        assert!(valid_nick("alice"));
        assert!(valid_nick("A_b-9"));
        assert!(valid_nick(&"x".repeat(24)));
        assert!(!valid_nick(&"x".repeat(25)));
        assert!(!valid_nick(""));
        assert!(!valid_nick("al ice"));
        assert!(!valid_nick("élise"));
        assert_eq!(RoomRef::parse("#Lobby").unwrap().key(), "#lobby");
        assert_eq!(
            RoomRef::parse("a4b2c1"),
            Ok(RoomRef::Private("a4b2c1".into()))
        );
        assert_eq!(
            RoomRef::parse("~a4b2c1"),
            Ok(RoomRef::Private("a4b2c1".into()))
        );
        assert_eq!(RoomRef::parse("lobby"), Err(NameError::Room));
        assert_eq!(RoomRef::parse("#"), Err(NameError::Room));
        assert_eq!(
            RoomRef::parse(&format!("#{}", "r".repeat(33))),
            Err(NameError::Room)
        );
        assert_eq!(RoomRef::parse("A4B2C1"), Err(NameError::Room));
    }

    #[test]
    fn commands() {
        assert_eq!(Command::parse("hello"), Ok(Command::Say("hello".into())));
        assert_eq!(Command::parse("//etc"), Ok(Command::Say("/etc".into())));
        assert_eq!(Command::parse("/NICK bob"), Ok(Command::Nick("bob".into())));
        assert_eq!(
            Command::parse("/join new"),
            Ok(Command::Join(JoinTarget::New))
        );
        assert_eq!(
            Command::parse("/dm bob  hi there"),
            Ok(Command::Dm {
                to: "bob".into(),
                text: "hi there".into()
            })
        );
        assert_eq!(
            Command::parse("/dm bob"),
            Err(ParseError::Usage("/dm <nick> <text>"))
        );
        assert_eq!(
            Command::parse("/history #a 20"),
            Ok(Command::History {
                room: Some(RoomRef::Public("#a".into())),
                count: Some(20)
            })
        );
        assert_eq!(
            Command::parse("/image cat.png AAAA"),
            Ok(Command::Upload {
                kind: Upload::Image,
                name: Some("cat.png".into()),
                data: "AAAA".into()
            })
        );
        assert_eq!(
            Command::parse("/image ../x AAAA").map_err(|e| e.code()),
            Err("name-invalid")
        );
        assert!(matches!(
            Command::parse("/frobnicate"),
            Err(ParseError::Unknown(_))
        ));
        assert_eq!(Command::parse("   "), Err(ParseError::Empty));
        assert_eq!(Command::parse("/exit"), Ok(Command::Quit(None)));
        assert_eq!(
            Command::parse("/format machine"),
            Ok(Command::Format(Format::Machine))
        );
    }

    fn samples() -> Vec<ServerLine> {
        vec![
            ServerLine::Msg {
                room: "#lobby".into(),
                nick: "alice".into(),
                ts: 1,
                text: "hi there ".into(),
            },
            ServerLine::Action {
                room: "~abc123".into(),
                nick: "bob".into(),
                ts: 2,
                text: "waves".into(),
            },
            ServerLine::Dm {
                from: "a".into(),
                to: "b".into(),
                ts: 3,
                text: "x".into(),
            },
            ServerLine::Upload {
                kind: Upload::Image,
                room: "#r".into(),
                nick: "a".into(),
                ts: 4,
                mime: "image/png".into(),
                size: 10,
                name: "c.png".into(),
                data: "AAAA".into(),
            },
            ServerLine::Part {
                room: "#r".into(),
                nick: "a".into(),
                reason: "bye now".into(),
            },
            ServerLine::Topic {
                room: "#r".into(),
                nick: String::new(),
                text: "t t".into(),
            },
            ServerLine::Names {
                room: "#r".into(),
                nicks: vec!["a".into(), "b".into()],
            },
            ServerLine::Online {
                total: 3,
                nicks: vec!["a".into()],
            },
            ServerLine::error("nick-taken", "nick alice is taken"),
            ServerLine::Encrypted {
                room: "#r".into(),
                nick: "a".into(),
                ts: 9,
                data: "E1.AAAA".into(),
            },
            ServerLine::Whois {
                nick: "alice".into(),
                online: true,
                room: String::new(),
                registered: 0,
                bio: "likes tea".into(),
            },
            ServerLine::info("", "welcome"),
            ServerLine::Key {
                nick: "bob".into(),
                bundle: "K1.abc".into(),
            },
            ServerLine::Key {
                nick: "bob".into(),
                bundle: String::new(),
            },
        ]
    }

    #[test]
    fn machine_round_trip() {
        for l in samples() {
            let enc = l.encode_machine();
            let back = ServerLine::parse_machine(&enc);
            // Trailing spaces of free text are not significant on the wire.
            let mut want = l.clone();
            if let ServerLine::Msg { text, .. } = &mut want {
                *text = text.trim_end().to_string();
            }
            assert_eq!(back, Some(want), "{enc}");
        }
        assert_eq!(ServerLine::parse_machine("nick a b c"), None);
        assert_eq!(ServerLine::parse_machine("msg #r a notanumber x"), None);
        assert_eq!(ServerLine::parse_machine(""), None);
    }

    #[test]
    fn human_markers() {
        let h: Vec<String> = samples().iter().map(|l| l.encode_human()).collect();
        assert_eq!(h[0], "#lobby <alice> hi there ");
        assert_eq!(h[1], "* ~abc123 bob waves");
        assert_eq!(h[2], "@a -> b: x");
        assert_eq!(h[3], "*** #r: a sent an image: c.png, image/png, 10 B");
        assert!(h[8].starts_with("!!! "));
        assert_eq!(human_size(245 * 1024 + 300), "245.3 KB");
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(1_795_478_400_000), "2026-11-24");
        assert_eq!(civil_date(951_782_400_000), "2000-02-29");
    }
}
