//! What the server sends: [`ServerLine`], with its human encoding (for nc)
//! and its machine encoding (v1: a kind word, fields without spaces, free text
//! last), and the machine parser that reads it back.

use std::fmt::Write as _;

use super::{Format, Upload};

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
    /// One `/search` result: a kept room line or direct message, shown with
    /// its date and time whatever the session's settings.
    Found(Box<ServerLine>),
    /// Who else is in a room one just joined: `total` others, some named.
    Present {
        room: String,
        total: usize,
        nicks: Vec<String>,
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

/// `14:03` (UTC) for a Unix time in milliseconds.
pub fn clock_time(unix_ms: u64) -> String {
    let mins = (unix_ms / 60_000) % (24 * 60);
    format!("{:02}:{:02}", mins / 60, mins % 60)
}

/// The UTC day number of a Unix time in milliseconds.
pub fn day_of(unix_ms: u64) -> u64 {
    unix_ms / 86_400_000
}

/// `Wednesday` for a Unix time in milliseconds (UTC).
pub fn weekday(unix_ms: u64) -> &'static str {
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    // 1970-01-01 was a Thursday.
    DAYS[(day_of(unix_ms) % 7) as usize]
}

/// The stamp a timestamped session sees before a line sent at `ts`: the
/// time alone on the day it is `now`, the date and time otherwise.
pub fn stamp(ts: u64, now: u64) -> String {
    if day_of(ts) == day_of(now) {
        clock_time(ts)
    } else {
        format!("{} {}", civil_date(ts), clock_time(ts))
    }
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

    /// Encodes for `format`, newline included. A stamped line takes its
    /// time from the line, or is a line of `now_ms` (Unix ms).
    pub fn encode_at(&self, format: Format, now_ms: u64) -> Vec<u8> {
        let mut s = match format {
            Format::Human => self.encode_human(),
            Format::Machine => self.encode_machine(),
            // A search result carries its own date and time.
            Format::Stamped if matches!(self, ServerLine::Found(_)) => self.encode_human(),
            Format::Stamped => {
                let at = self.ts().unwrap_or(now_ms);
                format!("{} {}", stamp(at, now_ms), self.encode_human())
            }
        };
        s.push('\n');
        s.into_bytes()
    }

    /// [`ServerLine::encode_at`] for the human and machine formats, which
    /// do not depend on the time.
    pub fn encode(&self, format: Format) -> Vec<u8> {
        self.encode_at(format, self.ts().unwrap_or(0))
    }

    /// When the line was sent (Unix ms), for the lines that say.
    pub fn ts(&self) -> Option<u64> {
        match self {
            ServerLine::Msg { ts, .. }
            | ServerLine::Action { ts, .. }
            | ServerLine::Dm { ts, .. }
            | ServerLine::Upload { ts, .. }
            | ServerLine::Encrypted { ts, .. } => Some(*ts),
            ServerLine::Found(l) => l.ts(),
            _ => None,
        }
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
            ServerLine::Dm { from, to, text, .. } if super::shapes::dm_envelope_ok(text) => {
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
            ServerLine::History { room, count: 1 } => {
                format!("*** last message in {room}:")
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
            ServerLine::Found(l) => {
                let ts = l.ts().unwrap_or(0);
                format!("{} {} {}", civil_date(ts), clock_time(ts), l.encode_human())
            }
            ServerLine::Present { room, total, nicks } => {
                let shown = nicks.len().min(*total);
                let names = nicks[..shown].join(", ");
                let rest = total - shown;
                match (shown, rest) {
                    (0, _) if *total == 0 => format!("*** in {room}: nobody else yet"),
                    (0, _) => format!("*** in {room}: {total} others"),
                    (_, 0) if shown == 1 => format!("*** in {room}: {names}"),
                    (_, 0) => {
                        let (init, last) = nicks[..shown].split_at(shown - 1);
                        format!("*** in {room}: {} and {}", init.join(", "), last.join(""))
                    }
                    (_, 1) => format!("*** in {room}: {names} and 1 other"),
                    (_, r) => format!("*** in {room}: {names} and {r} others"),
                }
            }
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
            ServerLine::Found(l) => write!(s, "found {}", l.encode_machine()),
            ServerLine::Present { room, total, nicks } => {
                write!(s, "present {room} {total} {}", nicks.join(" "))
            }
        };
        // Free text may be empty; a trailing space is never significant.
        while s.ends_with(' ') {
            s.pop();
        }
        s
    }

    /// Every piece of text the line carries, names included.
    pub fn texts(&self) -> Vec<&str> {
        match self {
            ServerLine::Msg {
                room, nick, text, ..
            }
            | ServerLine::Action {
                room, nick, text, ..
            }
            | ServerLine::Topic { room, nick, text } => vec![room, nick, text],
            ServerLine::Dm { from, to, text, .. } => vec![from, to, text],
            ServerLine::Upload {
                room,
                nick,
                mime,
                name,
                data,
                ..
            } => vec![room, nick, mime, name, data],
            ServerLine::Encrypted {
                room, nick, data, ..
            } => vec![room, nick, data],
            ServerLine::Join { room, nick } => vec![room, nick],
            ServerLine::Part { room, nick, reason } => vec![room, nick, reason],
            ServerLine::Quit { nick, reason } => vec![nick, reason],
            ServerLine::NickChange { old, new } => vec![old, new],
            ServerLine::History { room, .. } => vec![room],
            ServerLine::RoomInfo { room, topic, .. } => vec![room, topic],
            ServerLine::Names { room, nicks } => {
                let mut v: Vec<&str> = nicks.iter().map(String::as_str).collect();
                v.push(room);
                v
            }
            ServerLine::Online { nicks, .. } => nicks.iter().map(String::as_str).collect(),
            ServerLine::Whois {
                nick, room, bio, ..
            } => vec![nick, room, bio],
            ServerLine::Key { nick, bundle } => vec![nick, bundle],
            ServerLine::Ok { what, text } => vec![what, text],
            ServerLine::Info { code, text } | ServerLine::Error { code, text } => vec![code, text],
            ServerLine::Found(l) => l.texts(),
            ServerLine::Present { room, nicks, .. } => {
                let mut v: Vec<&str> = nicks.iter().map(String::as_str).collect();
                v.push(room);
                v
            }
        }
    }

    /// True if no text of the line holds what a socket's line may not: a
    /// control, escape or bidi character (the codec's rule). Lines that come
    /// from the journal or another node pass this before anyone sees them.
    pub fn is_clean(&self) -> bool {
        self.texts().iter().all(|t| {
            !t.chars()
                .any(|c| crate::codec::is_forbidden_control(c) || c == '\t')
        })
    }

    /// [`ServerLine::parse_machine`], for lines that did not come from this
    /// server's own sockets (the journal, the cluster): `None` unless the
    /// line is clean too.
    pub fn parse_foreign(line: &str) -> Option<ServerLine> {
        Self::parse_machine(line).filter(ServerLine::is_clean)
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
            "found" => {
                let inner = ServerLine::parse_machine(&f.rest())?;
                if !matches!(
                    inner,
                    ServerLine::Msg { .. } | ServerLine::Action { .. } | ServerLine::Dm { .. }
                ) {
                    return None;
                }
                ServerLine::Found(Box::new(inner))
            }
            "present" => ServerLine::Present {
                room: f.string()?,
                total: f.num()?,
                nicks: f.words(),
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
