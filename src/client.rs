//! The sans-IO core of `chatc`: what the user types and what the server
//! sends go in; lines to send and events to show come out. No sockets,
//! files, terminals or clocks: the front end (`src/bin/chatc.rs`) owns those
//! and passes `now` in.
//!
//! It keeps what survives a reconnection — the nick (and password, if the
//! user logged in), the rooms joined, the keys of encrypted rooms — so that
//! [`ClientCore::connected`] can log in again and rejoin.
//!
//! Encrypted rooms: a room with a key here has every outgoing message sealed
//! into an envelope (`/enc`), and every incoming envelope opened. A message
//! that fails is reported (wrong key, tampering, replay), never shown as
//! text. Replays are refused by nonce while connected, and by the sender's
//! clock for envelopes presented as new but older than [`STALE_AFTER_MS`].

use std::collections::{HashMap, HashSet, VecDeque};

use base64::Engine as _;

use crate::envelope::{self, Body, OpenError, RoomKey};
use crate::media;
use crate::proto::{ServerLine, Upload};

/// A live envelope this much older (or newer) than the server's time for
/// it is refused as a possible replay.
pub const STALE_AFTER_MS: u64 = 10 * 60 * 1000;
/// Nonces remembered per room for replay detection.
const SEEN_PER_ROOM: usize = 10_000;

/// Something to show the user. `ts` is Unix ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Msg {
        room: String,
        nick: String,
        ts: u64,
        text: String,
        e2e: bool,
        history: bool,
    },
    Action {
        room: String,
        nick: String,
        ts: u64,
        text: String,
        e2e: bool,
        history: bool,
    },
    Dm {
        from: String,
        to: String,
        ts: u64,
        text: String,
        history: bool,
    },
    /// An image or file arrived (its bytes, if any, are kept for `/save`).
    Media {
        room: String,
        nick: String,
        ts: u64,
        kind: Upload,
        name: String,
        mime: String,
        size: u64,
        e2e: bool,
        history: bool,
        has_data: bool,
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
    Nick {
        old: String,
        new: String,
    },
    Topic {
        room: String,
        nick: String,
        text: String,
    },
    /// Information from the server.
    Info(String),
    /// An error from the server.
    Error(String),
    /// A problem found by the client: wrong key, tampering, replay.
    Warn(String),
    /// An invitation to share: `room:secret`.
    Invite(String),
    /// Connection state, said by the client.
    Status(String),
}

/// What the front end must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this line (no newline) to the server.
    Send(String),
    Show(Event),
    /// The user asked to leave; stop reconnecting.
    Quit,
}

/// The last image or file received, for `/save`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub name: String,
    pub mime: String,
    pub data: Vec<u8>,
    pub from: String,
}

struct Seen {
    set: HashSet<[u8; 12]>,
    order: VecDeque<[u8; 12]>,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }
    /// False if the nonce was seen before.
    fn insert(&mut self, n: [u8; 12]) -> bool {
        if !self.set.insert(n) {
            return false;
        }
        self.order.push_back(n);
        if self.order.len() > SEEN_PER_ROOM
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// The client's state.
pub struct ClientCore {
    /// Our nick, once the server confirmed it.
    nick: Option<String>,
    /// The nick to ask for when (re)connecting.
    want_nick: Option<String>,
    login: Option<(String, String)>,
    /// Rooms we are in, as the server names them, in join order.
    rooms: Vec<String>,
    current: Option<String>,
    keys: HashMap<String, RoomKey>,
    /// `/join new --secret` waiting for the server's code.
    new_secret: Option<String>,
    seen: HashMap<String, Seen>,
    /// Inside a `history` block: its room and the lines left.
    history: Option<(String, usize)>,
    last: Option<Received>,
    /// Rejoin after naming (set on connect).
    rejoin_pending: bool,
}

impl Default for ClientCore {
    fn default() -> Self {
        Self::new(None)
    }
}

fn show(e: Event) -> Action {
    Action::Show(e)
}

fn key_of(room: &str) -> String {
    envelope::room_id(room)
}

/// Splits `/join target` into the room and the secret after its first `:`.
fn split_invite(target: &str) -> (&str, Option<&str>) {
    match target.split_once(':') {
        Some((room, secret)) if !secret.is_empty() => (room, Some(secret)),
        _ => (target, None),
    }
}

/// The room name the server uses for a `/join` argument: `#name` as is, a
/// private code with its `~`.
fn server_room(target: &str) -> String {
    if target.starts_with('#') || target.starts_with('~') {
        target.to_string()
    } else {
        format!("~{target}")
    }
}

impl ClientCore {
    pub fn new(nick: Option<String>) -> ClientCore {
        ClientCore {
            nick: None,
            want_nick: nick,
            login: None,
            rooms: Vec::new(),
            current: None,
            keys: HashMap::new(),
            new_secret: None,
            seen: HashMap::new(),
            history: None,
            last: None,
            rejoin_pending: false,
        }
    }

    pub fn nick(&self) -> Option<&str> {
        self.nick.as_deref()
    }

    pub fn current_room(&self) -> Option<&str> {
        self.current.as_deref()
    }

    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    pub fn is_encrypted(&self, room: &str) -> bool {
        self.keys.contains_key(&key_of(room))
    }

    /// The last image or file received, for `/save`.
    pub fn last_received(&self) -> Option<&Received> {
        self.last.as_ref()
    }

    /// A connection was made: switch to machine lines, name ourselves (or
    /// log in again), and rejoin once named.
    pub fn connected(&mut self) -> Vec<Action> {
        self.history = None;
        self.nick = None;
        let mut out = vec![Action::Send("/format machine".into())];
        if let Some((nick, pw)) = &self.login {
            out.push(Action::Send(format!("/login {nick} {pw}")));
        } else if let Some(n) = &self.want_nick {
            out.push(Action::Send(format!("/nick {n}")));
        }
        self.rejoin_pending = !self.rooms.is_empty();
        out
    }

    /// The connection dropped; rooms and keys are kept for the next one.
    pub fn disconnected(&mut self) {
        self.nick = None;
        self.history = None;
    }

    /// A line the user typed.
    pub fn user(&mut self, line: &str, now_ms: u64) -> Vec<Action> {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Vec::new();
        }
        let lower = trimmed.to_ascii_lowercase();
        if lower == "quit" || lower == "exit" {
            return vec![Action::Send("/quit".into()), Action::Quit];
        }
        // Before naming, a plain line is the nick (as it is for nc users);
        // remembering it lets a reconnection name us again.
        if self.nick.is_none() && !line.starts_with('/') {
            self.want_nick = Some(trimmed.to_string());
            return vec![Action::Send(trimmed.to_string())];
        }
        if let Some(text) = line.strip_prefix("//") {
            return self.say(Body::Text(format!("/{text}")), now_ms);
        }
        let Some(rest) = line.strip_prefix('/') else {
            return self.say(Body::Text(line.to_string()), now_ms);
        };
        let (cmd, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let args = args.trim();
        match cmd.to_ascii_lowercase().as_str() {
            "quit" | "exit" | "bye" => vec![Action::Send(line.to_string()), Action::Quit],
            "me" if !args.is_empty() => self.say(Body::Action(args.to_string()), now_ms),
            "join" | "j" => self.join(args),
            "nick" => {
                if !args.is_empty() && !args.contains(' ') {
                    self.want_nick = Some(args.to_string());
                    self.login = None;
                }
                vec![Action::Send(line.to_string())]
            }
            "login" => {
                if let Some((nick, pw)) = args.split_once(' ') {
                    self.login = Some((nick.to_string(), pw.trim().to_string()));
                    self.want_nick = Some(nick.to_string());
                }
                vec![Action::Send(line.to_string())]
            }
            "image" | "file" | "save" => vec![show(Event::Error(format!(
                "/{cmd} is handled by the terminal front end"
            )))],
            _ => vec![Action::Send(line.to_string())],
        }
    }

    fn join(&mut self, args: &str) -> Vec<Action> {
        let mut words = args.split_whitespace();
        let target = words.next().unwrap_or("");
        let flag = words.next();
        if target.eq_ignore_ascii_case("new") {
            if flag == Some("--secret") {
                self.new_secret = Some(envelope::new_secret());
            }
            return vec![Action::Send("/join new".into())];
        }
        let (room, secret) = split_invite(target);
        if room.is_empty() {
            return vec![Action::Send("/join".into())];
        }
        let mut out = Vec::new();
        if let Some(secret) = secret {
            let name = server_room(room);
            self.keys
                .insert(key_of(&name), envelope::derive_key(secret, &name));
            out.push(show(Event::Info(format!(
                "{name} is end-to-end encrypted here: the server sees only envelopes"
            ))));
        }
        // Only the room, never the secret, reaches the server.
        out.push(Action::Send(format!("/join {room}")));
        out
    }

    /// Text for the current room: sealed if the room has a key.
    fn say(&mut self, body: Body, now_ms: u64) -> Vec<Action> {
        let (Some(room), Some(nick)) = (self.current.clone(), self.nick.clone()) else {
            return match body {
                Body::Text(t) => vec![Action::Send(if t.starts_with('/') {
                    format!("/{t}")
                } else {
                    t
                })],
                Body::Action(t) => vec![Action::Send(format!("/me {t}"))],
                _ => Vec::new(),
            };
        };
        match self.keys.get(&key_of(&room)) {
            Some(key) => {
                let env = envelope::seal(key, &room, &nick, &body, now_ms);
                vec![Action::Send(format!("/enc {env}"))]
            }
            None => match body {
                Body::Text(t) if t.starts_with('/') => vec![Action::Send(format!("/{t}"))],
                Body::Text(t) => vec![Action::Send(t)],
                Body::Action(t) => vec![Action::Send(format!("/me {t}"))],
                _ => Vec::new(),
            },
        }
    }

    /// An image or file the user wants to send (already read and checked by
    /// the front end): one line for the server.
    pub fn upload(
        &mut self,
        kind: Upload,
        name: &str,
        mime: &str,
        data: Vec<u8>,
        now_ms: u64,
    ) -> Result<String, String> {
        let room = self
            .current
            .clone()
            .ok_or_else(|| "you are not in a room; /join #room first".to_string())?;
        let nick = self
            .nick
            .clone()
            .ok_or_else(|| "not connected".to_string())?;
        match self.keys.get(&key_of(&room)) {
            Some(key) => {
                let body = match kind {
                    Upload::Image => Body::Image {
                        name: name.to_string(),
                        mime: mime.to_string(),
                        data,
                    },
                    Upload::File => Body::File {
                        name: name.to_string(),
                        mime: mime.to_string(),
                        data,
                    },
                };
                Ok(format!(
                    "/enc {}",
                    envelope::seal(key, &room, &nick, &body, now_ms)
                ))
            }
            None => {
                let cmd = if kind == Upload::Image {
                    "image"
                } else {
                    "file"
                };
                Ok(format!("/{cmd} {name} {}", media::encode(&data)))
            }
        }
    }

    /// Counts a line of a history block; true if it belongs to one.
    fn in_history(&mut self) -> bool {
        match &mut self.history {
            Some((_, left)) if *left > 0 => {
                *left -= 1;
                if *left == 0 {
                    self.history = None;
                }
                true
            }
            _ => {
                self.history = None;
                false
            }
        }
    }

    /// A line from the server (machine format v1).
    pub fn server(&mut self, line: &str) -> Vec<Action> {
        let Some(parsed) = ServerLine::parse_machine(line) else {
            // The greeting arrives before `/format machine` takes effect.
            if let Some(text) = line.strip_prefix("*** ") {
                return vec![show(Event::Info(text.to_string()))];
            }
            if let Some(text) = line.strip_prefix("!!! ") {
                return vec![show(Event::Error(text.to_string()))];
            }
            return Vec::new();
        };
        match parsed {
            ServerLine::Msg {
                room,
                nick,
                ts,
                text,
            } => {
                let history = self.in_history();
                vec![show(Event::Msg {
                    room,
                    nick,
                    ts,
                    text,
                    e2e: false,
                    history,
                })]
            }
            ServerLine::Action {
                room,
                nick,
                ts,
                text,
            } => {
                let history = self.in_history();
                vec![show(Event::Action {
                    room,
                    nick,
                    ts,
                    text,
                    e2e: false,
                    history,
                })]
            }
            ServerLine::Dm { from, to, ts, text } => {
                let history = self.in_history();
                vec![show(Event::Dm {
                    from,
                    to,
                    ts,
                    text,
                    history,
                })]
            }
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
                let history = self.in_history();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&data)
                    .ok()
                    .filter(|b| !b.is_empty());
                let has_data = bytes.is_some();
                if let Some(data) = bytes {
                    self.last = Some(Received {
                        name: name.clone(),
                        mime: mime.clone(),
                        data,
                        from: nick.clone(),
                    });
                }
                vec![show(Event::Media {
                    room,
                    nick,
                    ts,
                    kind,
                    name,
                    mime,
                    size,
                    e2e: false,
                    history,
                    has_data,
                })]
            }
            ServerLine::Encrypted {
                room,
                nick,
                ts,
                data,
            } => {
                let history = self.in_history();
                self.open_envelope(room, nick, ts, &data, history)
            }
            ServerLine::Join { room, nick } => {
                let mut out = Vec::new();
                if self
                    .nick
                    .as_deref()
                    .is_some_and(|me| me.eq_ignore_ascii_case(&nick))
                {
                    if !self.rooms.iter().any(|r| r.eq_ignore_ascii_case(&room)) {
                        self.rooms.push(room.clone());
                    }
                    self.current = Some(room.clone());
                }
                out.push(show(Event::Join { room, nick }));
                out
            }
            ServerLine::Part { room, nick, reason } => {
                if self
                    .nick
                    .as_deref()
                    .is_some_and(|me| me.eq_ignore_ascii_case(&nick))
                {
                    self.rooms.retain(|r| !r.eq_ignore_ascii_case(&room));
                    if self
                        .current
                        .as_deref()
                        .is_some_and(|c| c.eq_ignore_ascii_case(&room))
                    {
                        self.current = self.rooms.last().cloned();
                    }
                }
                vec![show(Event::Part { room, nick, reason })]
            }
            ServerLine::Quit { nick, reason } => vec![show(Event::Quit { nick, reason })],
            ServerLine::NickChange { old, new } => {
                if self
                    .nick
                    .as_deref()
                    .is_some_and(|me| me.eq_ignore_ascii_case(&old))
                {
                    self.nick = Some(new.clone());
                    self.want_nick = Some(new.clone());
                }
                vec![show(Event::Nick { old, new })]
            }
            ServerLine::Topic { room, nick, text } => vec![show(Event::Topic { room, nick, text })],
            ServerLine::History { room, count } => {
                self.history = (count > 0).then_some((room.clone(), count));
                vec![show(Event::Info(format!(
                    "last {count} messages in {room}:"
                )))]
            }
            ServerLine::RoomInfo {
                room,
                members,
                topic,
            } => {
                let t = if topic.is_empty() {
                    String::new()
                } else {
                    format!(": {topic}")
                };
                vec![show(Event::Info(format!("{room} ({members}){t}")))]
            }
            ServerLine::Names { room, nicks } => {
                vec![show(Event::Info(format!("in {room}: {}", nicks.join(" "))))]
            }
            ServerLine::Online { total, nicks } => {
                vec![show(Event::Info(format!(
                    "online ({total}): {}",
                    nicks.join(" ")
                )))]
            }
            ServerLine::Whois {
                nick,
                online,
                room,
                registered,
                bio,
            } => {
                let mut l = ServerLine::Whois {
                    nick,
                    online,
                    room,
                    registered,
                    bio,
                }
                .encode_human();
                if let Some(s) = l.strip_prefix("*** ") {
                    l = s.to_string();
                }
                vec![show(Event::Info(l))]
            }
            ServerLine::Ok { what, text } => self.ok(&what, text),
            ServerLine::Info { text, .. } => vec![show(Event::Info(text))],
            ServerLine::Error { text, .. } => vec![show(Event::Error(text))],
        }
    }

    fn ok(&mut self, what: &str, text: String) -> Vec<Action> {
        let mut out = Vec::new();
        match what {
            "format" | "pong" => return out,
            "nick" | "login" => {
                // "hello NICK! ..." / "logged in as NICK".
                let nick = text
                    .strip_prefix("hello ")
                    .and_then(|t| t.split('!').next())
                    .or_else(|| text.strip_prefix("logged in as "))
                    .map(|n| n.trim().to_string());
                if let Some(n) = nick {
                    self.nick = Some(n.clone());
                    self.want_nick = Some(n);
                }
                if self.rejoin_pending {
                    self.rejoin_pending = false;
                    let rooms = self.rooms.clone();
                    let current = self.current.clone();
                    for r in &rooms {
                        out.push(Action::Send(format!("/join {r}")));
                    }
                    if let Some(c) = current {
                        out.push(Action::Send(format!("/join {c}")));
                    }
                }
            }
            "current" => {
                if let Some(room) = text.strip_prefix("now talking in ") {
                    self.current = Some(room.trim().to_string());
                } else if text.starts_with("you are in no room") {
                    self.current = None;
                }
            }
            "created" => {
                // "created private room ~code: ..."
                if let Some(secret) = self.new_secret.take()
                    && let Some(code) = text
                        .strip_prefix("created private room ")
                        .and_then(|t| t.split(':').next())
                {
                    let code = code.trim().to_string();
                    self.keys
                        .insert(key_of(&code), envelope::derive_key(&secret, &code));
                    out.push(show(Event::Invite(format!("{code}:{secret}"))));
                }
            }
            _ => {}
        }
        out.push(show(Event::Info(text)));
        out
    }

    fn open_envelope(
        &mut self,
        room: String,
        nick: String,
        ts: u64,
        data: &str,
        history: bool,
    ) -> Vec<Action> {
        let Some(key) = self.keys.get(&key_of(&room)) else {
            return vec![show(Event::Info(format!(
                "{room}: {nick} sent an encrypted message (you have no key for {room}: /join {room}:<secret>)"
            )))];
        };
        let opened = match envelope::open(key, &room, &nick, data) {
            Ok(o) => o,
            Err(e @ (OpenError::WrongKey | OpenError::Tampered | OpenError::Malformed)) => {
                return vec![show(Event::Warn(format!(
                    "{room}: message from {nick}: {e}"
                )))];
            }
        };
        let fresh = self
            .seen
            .entry(key_of(&room))
            .or_insert_with(Seen::new)
            .insert(opened.nonce);
        if !fresh {
            // History repeats what a connected client already showed.
            if history {
                return Vec::new();
            }
            return vec![show(Event::Warn(format!(
                "{room}: replayed message from {nick} rejected"
            )))];
        }
        if !history && opened.ts.abs_diff(ts) > STALE_AFTER_MS {
            return vec![show(Event::Warn(format!(
                "{room}: stale message from {nick} rejected (sealed {} minutes before it arrived: a replay?)",
                opened.ts.abs_diff(ts) / 60_000
            )))];
        }
        let ev = match opened.body {
            Body::Text(text) => Event::Msg {
                room,
                nick,
                ts,
                text,
                e2e: true,
                history,
            },
            Body::Action(text) => Event::Action {
                room,
                nick,
                ts,
                text,
                e2e: true,
                history,
            },
            Body::Image { name, mime, data } | Body::File { name, mime, data } => {
                let kind = if media::sniff_image(&data).is_some() {
                    Upload::Image
                } else {
                    Upload::File
                };
                let size = data.len() as u64;
                self.last = Some(Received {
                    name: name.clone(),
                    mime: mime.clone(),
                    data,
                    from: nick.clone(),
                });
                Event::Media {
                    room,
                    nick,
                    ts,
                    kind,
                    name,
                    mime,
                    size,
                    e2e: true,
                    history,
                    has_data: true,
                }
            }
        };
        vec![show(ev)]
    }
}

/// Why a received file cannot be saved under the sender's name.
pub fn unsafe_name_reason(name: &str) -> Option<&'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Some("it is empty or a directory name");
    }
    if name.contains('/') || name.contains('\\') || name.contains("..") {
        return Some("it contains a path (/ \\ or ..)");
    }
    if name.starts_with('.') {
        return Some("it would be a hidden file");
    }
    if name.chars().any(crate::codec::is_forbidden_control)
        || name.chars().count() > crate::proto::FILE_NAME_MAX
    {
        return Some("it has control characters or is too long");
    }
    None
}

/// `name (1).ext`, `name (2).ext`, … for the n-th alternative.
pub fn numbered(name: &str, n: u32) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
        _ => format!("{name} ({n})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sends(a: &[Action]) -> Vec<String> {
        a.iter()
            .filter_map(|x| match x {
                Action::Send(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn events(a: &[Action]) -> Vec<Event> {
        a.iter()
            .filter_map(|x| match x {
                Action::Show(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    /// A client named `me`, in `room`, with `secret` if given.
    fn client(me: &str, room: &str, secret: Option<&str>) -> ClientCore {
        let mut c = ClientCore::new(Some(me.into()));
        assert_eq!(
            sends(&c.connected()),
            vec!["/format machine".to_string(), format!("/nick {me}")]
        );
        c.server(&format!("ok nick hello {me}! Type to talk"));
        c.server(&format!("join #lobby {me}"));
        let target = match secret {
            Some(s) => format!("{room}:{s}"),
            None => room.to_string(),
        };
        let out = c.user(&format!("/join {target}"), 0);
        assert_eq!(
            sends(&out),
            vec![format!("/join {room}")],
            "the secret stays here"
        );
        c.server(&format!("join {room} {me}"));
        c
    }

    #[test]
    fn plain_rooms_pass_text_through() {
        let mut c = client("alice", "#r", None);
        assert_eq!(sends(&c.user("hello", 1)), vec!["hello"]);
        assert_eq!(sends(&c.user("//etc", 1)), vec!["//etc"]);
        assert_eq!(sends(&c.user("/me waves", 1)), vec!["/me waves"]);
        assert_eq!(sends(&c.user("exit", 1)), vec!["/quit"]);
        let ev = events(&c.server("msg #r bob 5 hi"));
        assert_eq!(
            ev,
            vec![Event::Msg {
                room: "#r".into(),
                nick: "bob".into(),
                ts: 5,
                text: "hi".into(),
                e2e: false,
                history: false
            }]
        );
    }

    #[test]
    fn encrypted_rooms_seal_and_open_and_refuse_replays() {
        let secret = envelope::new_secret();
        let mut a = client("alice", "#club", Some(&secret));
        let mut b = client("bob", "#club", Some(&secret));
        let out = sends(&a.user("the plan", 1_000));
        assert!(out[0].starts_with("/enc E1."), "{out:?}");
        assert!(!out[0].contains("the plan"));
        let line = format!(
            "enc #club alice 1000 {}",
            out[0].trim_start_matches("/enc ")
        );
        let ev = events(&b.server(&line));
        assert_eq!(
            ev,
            vec![Event::Msg {
                room: "#club".into(),
                nick: "alice".into(),
                ts: 1000,
                text: "the plan".into(),
                e2e: true,
                history: false
            }]
        );
        // The same envelope again, live: a replay.
        let ev = events(&b.server(&line));
        assert!(
            matches!(&ev[0], Event::Warn(w) if w.contains("replayed")),
            "{ev:?}"
        );
        // Again inside a history block: silently skipped.
        b.server("history #club 1");
        assert!(events(&b.server(&line)).is_empty());
        // Presented as new long after it was sealed: stale.
        let mut c = client("carol", "#club", Some(&secret));
        let late = format!(
            "enc #club alice {} {}",
            1000 + STALE_AFTER_MS + 1,
            out[0].trim_start_matches("/enc ")
        );
        assert!(matches!(&events(&c.server(&late))[0], Event::Warn(w) if w.contains("stale")));
    }

    #[test]
    fn wrong_key_tampering_and_misattribution_are_reported_never_shown() {
        let secret = envelope::new_secret();
        let mut a = client("alice", "#club", Some(&secret));
        let mut wrong = client("eve", "#club", Some("a wrong guess"));
        let env = sends(&a.user("psst", 1))[0]
            .trim_start_matches("/enc ")
            .to_string();
        let ev = events(&wrong.server(&format!("enc #club alice 1 {env}")));
        assert_eq!(
            ev,
            vec![Event::Warn(
                "#club: message from alice: wrong room key".into()
            )]
        );
        let mut b = client("bob", "#club", Some(&secret));
        let ev = events(&b.server(&format!("enc #club mallory 1 {env}")));
        assert_eq!(
            ev,
            vec![Event::Warn(
                "#club: message from mallory: tampered envelope rejected".into()
            )]
        );
        let mut flipped: Vec<char> = env.chars().collect();
        let i = flipped.len() - 5;
        flipped[i] = if flipped[i] == 'x' { 'y' } else { 'x' };
        let flipped: String = flipped.into_iter().collect();
        let ev = events(&b.server(&format!("enc #club alice 1 {flipped}")));
        assert_eq!(
            ev,
            vec![Event::Warn(
                "#club: message from alice: tampered envelope rejected".into()
            )]
        );
        let mut nokey = client("dan", "#club", None);
        assert!(
            matches!(&events(&nokey.server(&format!("enc #club alice 1 {env}")))[0], Event::Info(i) if i.contains("no key"))
        );
    }

    #[test]
    fn join_new_secret_gives_an_invite_and_keys_the_room() {
        let mut c = client("alice", "#lobby", None);
        assert_eq!(sends(&c.user("/join new --secret", 1)), vec!["/join new"]);
        let ev = events(&c.server("ok created created private room ~abc123: it is not listed; others join with /join abc123"));
        let invite = ev.iter().find_map(|e| match e {
            Event::Invite(i) => Some(i.clone()),
            _ => None,
        });
        let invite = invite.expect("an invite");
        assert!(invite.starts_with("~abc123:"));
        assert!(c.is_encrypted("~abc123"));
        let mut b = ClientCore::new(Some("bob".into()));
        b.connected();
        b.server("ok nick hello bob!");
        assert_eq!(
            sends(&b.user(&format!("/join {invite}"), 1)),
            vec!["/join ~abc123"]
        );
        assert!(b.is_encrypted("~abc123"));
    }

    #[test]
    fn reconnecting_logs_in_again_and_rejoins() {
        let mut c = ClientCore::new(None);
        c.connected();
        c.user("/login alice my password", 1);
        c.server("ok login logged in as alice");
        c.server("join #lobby alice");
        c.server("join #rust alice");
        c.server("join #lobby alice");
        c.disconnected();
        let out = sends(&c.connected());
        assert_eq!(out, vec!["/format machine", "/login alice my password"]);
        let out = sends(&c.server("ok login logged in as alice"));
        assert_eq!(out, vec!["/join #lobby", "/join #rust", "/join #lobby"]);
    }

    #[test]
    fn images_inside_envelopes_and_safe_names() {
        let secret = envelope::new_secret();
        let mut a = client("alice", "#club", Some(&secret));
        let mut b = client("bob", "#club", Some(&secret));
        let png = b"\x89PNG\r\n\x1a\nrest".to_vec();
        let line = a
            .upload(Upload::Image, "cat.png", "image/png", png.clone(), 1)
            .unwrap();
        assert!(line.starts_with("/enc "));
        let ev = events(&b.server(&format!(
            "enc #club alice 1 {}",
            line.trim_start_matches("/enc ")
        )));
        assert!(matches!(&ev[0], Event::Media { name, e2e: true, .. } if name == "cat.png"));
        assert_eq!(b.last_received().map(|r| r.data.clone()), Some(png));
        assert!(unsafe_name_reason("../../etc/passwd").is_some());
        assert!(unsafe_name_reason(".bashrc").is_some());
        assert!(unsafe_name_reason("a/b.png").is_some());
        assert_eq!(unsafe_name_reason("cat.png"), None);
        assert_eq!(numbered("cat.png", 2), "cat (2).png");
        assert_eq!(numbered("README", 1), "README (1)");
    }
}
