//! What a client sends: one line, parsed into a [`Command`]. The parser takes
//! a line the codec already checked (UTF-8, no control characters, within the
//! length limit) and never panics on anything else.

use super::{Format, NameError, RoomRef, Upload, valid_file_name, valid_nick};

/// What `/join` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinTarget {
    Room(RoomRef),
    /// `/join new`: a fresh private room.
    New,
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
    /// The last `count` lines of a room, or the last `count` sent before
    /// `before` (Unix ms), for paging back through it.
    History {
        room: Option<RoomRef>,
        count: Option<usize>,
        before: Option<u64>,
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
    /// `/set` (list the settings) or `/set NAME on|off`.
    Set(Option<(Setting, bool)>),
    /// `/where`: which room plain lines go to, and the others one is in.
    Where,
    /// A moderation command for the current room: `/op`, `/deop`, `/kick`,
    /// `/ban`, `/unban`, `/mute`, `/unmute`; `target` is its first word,
    /// `rest` what follows (a duration and a reason, checked by the core).
    Moderate {
        action: ModAction,
        target: String,
        rest: String,
    },
    /// `/kill nick [reason]` (server admins): end someone's connection.
    Kill {
        nick: String,
        reason: String,
    },
    /// `/announce text` (server admins): a notice to every connection.
    Announce(String),
    /// `/mode [+|-]invite|registered|slow [seconds]` in the current room,
    /// or `/mode` to show them.
    Mode(Option<(bool, String, Option<u32>)>),
    /// `/invite nick`: let someone into an invite-only room.
    Invite(String),
    /// `/gban target [duration] [reason]` and `/ungban target` (server
    /// admins): bans from the whole server; `/gbans` lists them.
    ServerBan {
        lift: bool,
        target: String,
        rest: String,
    },
    ServerBans,
    /// `/ignore [nick]` (alone: list) and `/unignore nick`.
    Ignore {
        nick: Option<String>,
        on: bool,
    },
    /// `/away [message]`: say one is away (shown in `/whois` and to DM
    /// senders); without a message, back.
    Away(Option<String>),
    /// `/takeover #room` (server admins): become the owner of a room.
    Takeover(RoomRef),
    /// `/sessions`: one's account's sessions.
    Sessions,
    /// `/logout [all|N]`: end this session, all, or one of `/sessions`.
    Logout(Option<String>),
    /// `/unregister`: give up one's registered nick; the password follows
    /// on the next line.
    Unregister,
    /// `/passwd`: change one's password; the old and the new one follow on
    /// the next two lines (so either may hold spaces).
    Passwd,
    /// `/bans [#room]`: the live bans and mutes of a room.
    Bans(Option<RoomRef>),
    /// `/modlog [#room]`: the last moderation actions of a room.
    Modlog(Option<RoomRef>),
    /// `/search text [#room] [n]`: kept lines that contain `text`.
    Search {
        text: String,
        room: Option<RoomRef>,
        count: Option<usize>,
    },
}

/// What a moderation command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModAction {
    Op,
    Deop,
    Kick,
    Ban,
    Unban,
    Mute,
    Unmute,
}

impl ModAction {
    pub fn name(self) -> &'static str {
        match self {
            ModAction::Op => "op",
            ModAction::Deop => "deop",
            ModAction::Kick => "kick",
            ModAction::Ban => "ban",
            ModAction::Unban => "unban",
            ModAction::Mute => "mute",
            ModAction::Unmute => "unmute",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            ModAction::Op => "/op <nick>",
            ModAction::Deop => "/deop <nick>",
            ModAction::Kick => "/kick <nick> [reason]",
            ModAction::Ban => "/ban <nick|address> [duration like 10m, 2h, 7d] [reason]",
            ModAction::Unban => "/unban <nick|account|address>",
            ModAction::Mute => "/mute <nick> [duration like 10m, 2h, 7d] [reason]",
            ModAction::Unmute => "/unmute <nick|account|address>",
        }
    }
}

/// A per-session setting (`/set`), each on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    /// `HH:MM` before every line (human format).
    Timestamps,
    /// One's own room lines come back (human format).
    Echo,
    /// A short `[#room] ` prompt after each burst of output (human format).
    Prompt,
}

impl Setting {
    pub const ALL: [Setting; 3] = [Setting::Timestamps, Setting::Echo, Setting::Prompt];

    pub fn name(self) -> &'static str {
        match self {
            Setting::Timestamps => "timestamps",
            Setting::Echo => "echo",
            Setting::Prompt => "prompt",
        }
    }

    pub fn parse(s: &str) -> Option<Setting> {
        Setting::ALL
            .into_iter()
            .find(|x| x.name().eq_ignore_ascii_case(s))
    }
}

/// `on`, `off` and their usual spellings.
fn on_off(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" | "1" => Some(true),
        "off" | "no" | "false" | "0" => Some(false),
        _ => None,
    }
}

const SET_USAGE: &str = "/set, or /set timestamps|echo|prompt on|off";
const SEARCH_USAGE: &str = "/search <text> [#room] [n]";

/// `/search` arguments: the text, then optionally a room and a count at the
/// end (so `/search meet #rust 5`; the text itself may hold spaces).
fn search_args(args: &str) -> Result<Command, ParseError> {
    let mut words: Vec<&str> = args.split(' ').filter(|w| !w.is_empty()).collect();
    let mut count = None;
    if words.len() > 1
        && let Some(n) = words.last().and_then(|w| w.parse::<usize>().ok())
    {
        count = Some(n);
        words.pop();
    }
    let mut room = None;
    if words.len() > 1
        && let Some(w) = words.last()
        && w.starts_with('#')
    {
        room = Some(RoomRef::parse(w).map_err(ParseError::Name)?);
        words.pop();
    }
    let text = words.join(" ");
    if text.is_empty() {
        return Err(ParseError::Usage(SEARCH_USAGE));
    }
    Ok(Command::Search { text, room, count })
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
                const USAGE: &str = "/history [#room] [n] [before TIME]";
                let mut room = None;
                let mut count = None;
                let mut before = None;
                let mut words = args.split(' ').filter(|w| !w.is_empty());
                while let Some(w) = words.next() {
                    if w.eq_ignore_ascii_case("before") {
                        let ts = words.next().and_then(|t| t.parse::<u64>().ok());
                        if before.is_some() || ts.is_none() {
                            return Err(ParseError::Usage(USAGE));
                        }
                        before = ts;
                    } else if let Ok(n) = w.parse::<usize>() {
                        if count.is_some() {
                            return Err(ParseError::Usage(USAGE));
                        }
                        count = Some(n);
                    } else if room.is_none() {
                        room = Some(RoomRef::parse(w).map_err(ParseError::Name)?);
                    } else {
                        return Err(ParseError::Usage(USAGE));
                    }
                }
                Ok(Command::History {
                    room,
                    count,
                    before,
                })
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
            "set" => {
                let (name, value) = split_word(args);
                if name.is_empty() {
                    return Ok(Command::Set(None));
                }
                let (value, extra) = split_word(value);
                match (Setting::parse(name), on_off(value), extra.is_empty()) {
                    (Some(s), Some(v), true) => Ok(Command::Set(Some((s, v)))),
                    _ => Err(ParseError::Usage(SET_USAGE)),
                }
            }
            "where" => Ok(Command::Where),
            "op" | "deop" | "kick" | "ban" | "unban" | "mute" | "unmute" => {
                let action = match name.as_str() {
                    "op" => ModAction::Op,
                    "deop" => ModAction::Deop,
                    "kick" => ModAction::Kick,
                    "ban" => ModAction::Ban,
                    "unban" => ModAction::Unban,
                    "mute" => ModAction::Mute,
                    _ => ModAction::Unmute,
                };
                let (target, rest) = split_word(args);
                let single = matches!(
                    action,
                    ModAction::Op | ModAction::Deop | ModAction::Unban | ModAction::Unmute
                );
                if target.is_empty() || (single && !rest.trim().is_empty()) {
                    return Err(ParseError::Usage(action.usage()));
                }
                Ok(Command::Moderate {
                    action,
                    target: target.to_string(),
                    rest: rest.trim().to_string(),
                })
            }
            "bans" => Ok(Command::Bans(room_arg(args)?)),
            "gban" | "ungban" => {
                let lift = name == "ungban";
                let (target, rest) = split_word(args);
                if target.is_empty() || (lift && !rest.trim().is_empty()) {
                    return Err(ParseError::Usage(if lift {
                        "/ungban <nick|account:NAME|address>"
                    } else {
                        "/gban <nick|address> [duration like 10m, 2h, 7d] [reason]"
                    }));
                }
                Ok(Command::ServerBan {
                    lift,
                    target: target.to_string(),
                    rest: rest.trim().to_string(),
                })
            }
            "gbans" => Ok(Command::ServerBans),
            "ignore" if args.trim().is_empty() => Ok(Command::Ignore {
                nick: None,
                on: true,
            }),
            "ignore" | "unignore" => {
                let usage = if name == "ignore" {
                    "/ignore [nick]"
                } else {
                    "/unignore <nick>"
                };
                one_nick(args, usage).map(|n| Command::Ignore {
                    nick: Some(n),
                    on: name == "ignore",
                })
            }
            "away" => Ok(Command::Away(opt(args))),
            "back" => Ok(Command::Away(None)),
            "takeover" => match room_arg(args)? {
                Some(r @ RoomRef::Public(_)) => Ok(Command::Takeover(r)),
                Some(RoomRef::Private(_)) => Err(ParseError::Name(NameError::Room)),
                None => Err(ParseError::Usage("/takeover <#room>")),
            },
            "sessions" => Ok(Command::Sessions),
            "logout" => Ok(Command::Logout(opt(args))),
            "unregister" => match args.trim() {
                "" => Ok(Command::Unregister),
                _ => Err(ParseError::Usage(
                    "/unregister alone: your password follows on the next line",
                )),
            },
            "passwd" | "password" => match args.trim() {
                "" => Ok(Command::Passwd),
                _ => Err(ParseError::Usage(
                    "/passwd alone: the old and the new password follow on the next two lines",
                )),
            },
            "kill" => {
                let (nick, reason) = split_word(args);
                if nick.is_empty() {
                    return Err(ParseError::Usage("/kill <nick> [reason]"));
                }
                if !valid_nick(nick) {
                    return Err(ParseError::Name(NameError::Nick));
                }
                Ok(Command::Kill {
                    nick: nick.to_string(),
                    reason: reason.trim().to_string(),
                })
            }
            "announce" | "wall" => match opt(args) {
                Some(t) => Ok(Command::Announce(t)),
                None => Err(ParseError::Usage("/announce <text>")),
            },
            "mode" => {
                const USAGE: &str = "/mode, or /mode +invite|-invite|+registered|-registered|-slow, or /mode +slow <seconds>";
                let (first, rest) = split_word(args);
                if first.is_empty() {
                    return Ok(Command::Mode(None));
                }
                let (on, name) = match first.split_at_checked(1) {
                    Some(("+", n)) => (true, n),
                    Some(("-", n)) => (false, n),
                    _ => return Err(ParseError::Usage(USAGE)),
                };
                let name = name.to_ascii_lowercase();
                let secs = match (name.as_str(), on, rest.trim()) {
                    ("invite" | "registered", _, "") | ("slow", false, "") => None,
                    ("slow", true, n) => match n.parse::<u32>() {
                        Ok(s) if (1..=3600).contains(&s) => Some(s),
                        _ => return Err(ParseError::Usage(USAGE)),
                    },
                    _ => return Err(ParseError::Usage(USAGE)),
                };
                Ok(Command::Mode(Some((on, name, secs))))
            }
            "invite" => one_nick(args, "/invite <nick>").map(Command::Invite),
            "modlog" => Ok(Command::Modlog(room_arg(args)?)),
            "search" | "find" => search_args(args),
            "" => Err(ParseError::Unknown(String::new())),
            _ => Err(ParseError::Unknown(name.chars().take(32).collect())),
        }
    }
}
