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

use crate::e2e::Body;
use crate::e2e::identity::{self, DmError, Identity, PeerKey};
use crate::e2e::room::{self as envelope, OpenError, RoomKey};
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
        /// Opened from an end-to-end envelope (else the server could read it).
        e2e: bool,
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
    /// Remember `key` as the one trusted for `nick` (folded): the front end
    /// keeps these pins across runs.
    Pin {
        nick: String,
        key: PeerKey,
    },
}

/// The last image or file received, for `/save`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub name: String,
    pub mime: String,
    pub data: Vec<u8>,
    pub from: String,
}

struct Seen<const N: usize = 12> {
    set: HashSet<[u8; N]>,
    order: VecDeque<[u8; N]>,
}

impl<const N: usize> Seen<N> {
    fn new() -> Seen<N> {
        Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }
    /// False if the nonce was seen before.
    fn insert(&mut self, n: [u8; N]) -> bool {
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

/// An envelope waiting for its sender's key: from, to, ts, envelope, and
/// whether it came in a history block.
type WaitingDm = (String, String, u64, String, bool);

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
    /// Our long-term keys, for end-to-end direct messages.
    identity: Option<Identity>,
    /// Keys trusted per (folded) nick: pinned on first use.
    pins: HashMap<String, PeerKey>,
    /// Published keys that differ from the pin, waiting for `/trust`.
    changed: HashMap<String, PeerKey>,
    /// Nicks whose published key was compared with the pin this session.
    checked: HashSet<String>,
    /// Direct messages and envelopes waiting for a key lookup.
    outbox: HashMap<String, Vec<(String, Body, u64)>>,
    inbox: HashMap<String, Vec<WaitingDm>>,
    /// `/fingerprint nick` waiting for a key lookup.
    want_fingerprint: HashSet<String>,
    /// Direct-message ids already shown (replay detection).
    dm_seen: Seen<16>,
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
            identity: None,
            pins: HashMap::new(),
            changed: HashMap::new(),
            checked: HashSet::new(),
            outbox: HashMap::new(),
            inbox: HashMap::new(),
            want_fingerprint: HashSet::new(),
            dm_seen: Seen::new(),
        }
    }

    /// Our identity, for end-to-end direct messages; without one, direct
    /// messages go as the server shows them.
    pub fn set_identity(&mut self, id: Identity) {
        self.identity = Some(id);
    }

    /// Keys trusted from earlier runs (folded nick, key).
    pub fn set_pins(&mut self, pins: HashMap<String, PeerKey>) {
        self.pins = pins;
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
            "register" => {
                if let (Some(nick), false) = (self.nick.clone(), args.is_empty()) {
                    self.login = Some((nick, args.to_string()));
                }
                vec![Action::Send(line.to_string())]
            }
            "dm" | "msg" if self.identity.is_some() => self.dm(args, now_ms),
            "dm!" | "msg!" => vec![Action::Send(format!("/dm {args}"))],
            "fingerprint" | "fp" => self.fingerprint(args),
            "trust" => self.trust(args),
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
                if crate::proto::shapes::dm_envelope_ok(&text) {
                    return self.incoming_dm(from, to, ts, text, history);
                }
                vec![show(Event::Dm {
                    from,
                    to,
                    ts,
                    text,
                    e2e: false,
                    history,
                })]
            }
            ServerLine::Key { nick, bundle } => self.key_answer(nick, &bundle),
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
            "key" => return out,
            "registered" => {
                out.extend(self.publish_key());
            }
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
                if what == "login" {
                    out.extend(self.publish_key());
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

    /// After logging in or registering: publish our key bundle for the nick
    /// (the server stores one per registered nick).
    fn publish_key(&self) -> Vec<Action> {
        match (&self.identity, &self.nick) {
            (Some(id), Some(nick)) => vec![Action::Send(format!("/key set {}", id.bundle(nick)))],
            _ => Vec::new(),
        }
    }

    /// A key we may use for `peer` now: pinned, not contradicted by what the
    /// server published, and compared with it this session.
    fn usable_key(&self, peer: &str) -> Option<PeerKey> {
        let k = identity::nick_id(peer);
        if self.changed.contains_key(&k) || !self.checked.contains(&k) {
            return None;
        }
        self.pins.get(&k).copied()
    }

    /// `/dm nick text`: sealed to the peer's key; looked up first if needed.
    fn dm(&mut self, args: &str, now_ms: u64) -> Vec<Action> {
        let (to, text) = args.split_once(' ').unwrap_or((args, ""));
        let text = text.trim();
        if to.is_empty() || text.is_empty() {
            return vec![Action::Send(format!("/dm {args}"))];
        }
        if self.login.is_none() {
            return vec![show(Event::Warn(format!(
                "not sent: you are not logged in to a registered nick, so {to} could not check who sent an encrypted message. /register <password> (or /login) first, or /dm! {to} <text> to send it unencrypted"
            )))];
        }
        let k = identity::nick_id(to);
        if self.changed.contains_key(&k) {
            return vec![show(Event::Warn(format!(
                "not sent: {to}'s key changed and is not trusted yet (/fingerprint {to}, then /trust {to})"
            )))];
        }
        let body = Body::Text(text.to_string());
        if let Some(key) = self.usable_key(to) {
            return self.seal_dm(to, &key, &body, now_ms);
        }
        let first = !self.outbox.contains_key(&k);
        self.outbox
            .entry(k)
            .or_default()
            .push((to.to_string(), body, now_ms));
        if first {
            vec![Action::Send(format!("/key {to}"))]
        } else {
            Vec::new()
        }
    }

    fn seal_dm(&self, to: &str, key: &PeerKey, body: &Body, now_ms: u64) -> Vec<Action> {
        let (Some(id), Some(me)) = (&self.identity, &self.nick) else {
            return vec![show(Event::Error("not logged in: nothing sent".into()))];
        };
        let env = identity::seal_dm(id, me, to, key, body, now_ms);
        if env.len() + to.len() + 6 > crate::proto::DM_ENVELOPE_MAX {
            return vec![show(Event::Error(
                "that message is too long to encrypt in one line: split it".into(),
            ))];
        }
        // The server echoes it back; that copy (sealed for us too) is shown.
        vec![Action::Send(format!("/dm {to} {env}"))]
    }

    /// The server's answer to `/key nick`.
    fn key_answer(&mut self, nick: String, bundle: &str) -> Vec<Action> {
        let k = identity::nick_id(&nick);
        self.checked.insert(k.clone());
        let mut out = Vec::new();
        let published = if bundle.is_empty() {
            None
        } else {
            match identity::parse_bundle(&nick, bundle) {
                Some(p) => Some(p),
                None => {
                    out.push(show(Event::Warn(format!(
                        "{nick}'s published key is not validly signed: it is not used"
                    ))));
                    None
                }
            }
        };
        match (published, self.pins.get(&k).copied()) {
            (Some(p), None) => {
                self.pins.insert(k.clone(), p);
                out.push(Action::Pin {
                    nick: k.clone(),
                    key: p,
                });
                out.push(show(Event::Info(format!(
                    "{nick}'s key {} is now pinned (first use): compare /fingerprint {nick} with them to be sure",
                    p.short()
                ))));
            }
            (Some(p), Some(pin)) if p != pin => {
                self.changed.insert(k.clone(), p);
                out.push(show(Event::Warn(format!(
                    "WARNING: {nick}'s end-to-end key has CHANGED (pinned {}, now {}). Someone may be impersonating {nick}, or {nick} set up chatc again. Nothing is sent to or trusted from the new key until you compare /fingerprint {nick} with them and accept it with /trust {nick}.",
                    pin.short(),
                    p.short()
                ))));
            }
            _ => {}
        }
        let usable = self.usable_key(&nick);
        if self.want_fingerprint.remove(&k) {
            out.extend(self.fingerprint(&nick));
        }
        let queued = self.outbox.remove(&k).unwrap_or_default();
        for (to, body, at) in queued {
            match usable {
                Some(key) => out.extend(self.seal_dm(&to, &key, &body, at)),
                None if published.is_none() && !self.changed.contains_key(&k) => {
                    out.push(show(Event::Warn(format!(
                        "not sent: {to} has no end-to-end key, so the server could read it. To send it unencrypted anyway: /dm! {to} <text>"
                    ))));
                }
                None => out.push(show(Event::Warn(format!(
                    "not sent to {to}: their key is not trusted (/fingerprint {to}, /trust {to})"
                )))),
            }
        }
        let waiting = self.inbox.remove(&k).unwrap_or_default();
        for (from, to, ts, text, history) in waiting {
            out.extend(self.open_dm_now(from, to, ts, &text, history));
        }
        out
    }

    /// A direct message that is an envelope: opened now, or after the
    /// sender's key was looked up.
    fn incoming_dm(
        &mut self,
        from: String,
        to: String,
        ts: u64,
        text: String,
        history: bool,
    ) -> Vec<Action> {
        let me = self.nick.clone().unwrap_or_default();
        let from_me = identity::nick_id(&from) == identity::nick_id(&me);
        if self.identity.is_none() {
            return vec![show(Event::Info(format!(
                "@{from} -> {to}: an encrypted message (this client has no identity)"
            )))];
        }
        if from_me || self.usable_key(&from).is_some() {
            return self.open_dm_now(from, to, ts, &text, history);
        }
        let k = identity::nick_id(&from);
        if self.changed.contains_key(&k) {
            return vec![show(Event::Warn(format!(
                "a direct message from {from} is not shown: their key changed and is not trusted yet (/fingerprint {from}, /trust {from})"
            )))];
        }
        let first = !self.inbox.contains_key(&k) && !self.outbox.contains_key(&k);
        self.inbox
            .entry(k)
            .or_default()
            .push((from.clone(), to, ts, text, history));
        if first {
            vec![Action::Send(format!("/key {from}"))]
        } else {
            Vec::new()
        }
    }

    fn open_dm_now(
        &mut self,
        from: String,
        to: String,
        ts: u64,
        text: &str,
        history: bool,
    ) -> Vec<Action> {
        let Some(id) = &self.identity else {
            return Vec::new();
        };
        let me = self.nick.clone().unwrap_or_default();
        let from_me = identity::nick_id(&from) == identity::nick_id(&me);
        let key = if from_me {
            Some(id.public())
        } else {
            self.usable_key(&from)
        };
        let Some(key) = key else {
            return vec![show(Event::Warn(format!(
                "a direct message from {from} cannot be checked: they have no trusted key"
            )))];
        };
        let opened = match identity::open_dm(id, &from, &to, &key, text) {
            Ok(o) => o,
            Err(DmError::NotForMe) => {
                return vec![show(Event::Warn(format!(
                    "a direct message from {from} was not encrypted for this identity (or was re-addressed): not shown"
                )))];
            }
            Err(e) => return vec![show(Event::Warn(format!("{from}: {e}")))],
        };
        let first = self.dm_seen.insert(opened.id);
        let what = format!("direct message from {from}");
        if let Some(refused) = refuse_replay(first, history, opened.ts, ts, "", &what) {
            return refused;
        }
        let text = match opened.body {
            Body::Text(t) => t,
            Body::Action(t) => format!("* {t}"),
            Body::Image { name, .. } | Body::File { name, .. } => format!("(a file: {name})"),
        };
        vec![show(Event::Dm {
            from,
            to,
            ts,
            text,
            e2e: true,
            history,
        })]
    }

    /// `/fingerprint` (our own key) or `/fingerprint nick` (the safety
    /// number both of us see).
    fn fingerprint(&mut self, args: &str) -> Vec<Action> {
        let Some(id) = &self.identity else {
            return vec![show(Event::Error("this client has no identity".into()))];
        };
        let mine = id.public();
        let peer = args.trim();
        if peer.is_empty() {
            return vec![show(Event::Info(format!("your key: {}", mine.short())))];
        }
        let k = identity::nick_id(peer);
        let theirs = self.changed.get(&k).or(self.pins.get(&k)).copied();
        let Some(theirs) = theirs.filter(|_| self.checked.contains(&k)) else {
            self.want_fingerprint.insert(k);
            return vec![Action::Send(format!("/key {peer}"))];
        };
        let me = self.nick.clone().unwrap_or_default();
        let n = identity::safety_number(&me, &mine, peer, &theirs);
        let state = if self.changed.contains_key(&k) {
            "NEW key, not trusted yet: /trust to accept it"
        } else {
            "pinned"
        };
        vec![show(Event::Info(format!(
            "safety number with {peer}: {n} ({state}). Compare it with {peer} in person or by another channel: the same digits mean nobody is in between."
        )))]
    }

    /// `/trust nick`: accept a changed key.
    fn trust(&mut self, args: &str) -> Vec<Action> {
        let peer = args.trim();
        let k = identity::nick_id(peer);
        match self.changed.remove(&k) {
            Some(key) => {
                self.pins.insert(k.clone(), key);
                vec![
                    Action::Pin { nick: k, key },
                    show(Event::Info(format!(
                        "{peer}'s new key {} is now trusted",
                        key.short()
                    ))),
                ]
            }
            None => vec![show(Event::Info(format!(
                "{peer}'s key has not changed: nothing to trust"
            )))],
        }
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
        let what = format!("message from {nick}");
        if let Some(refused) =
            refuse_replay(fresh, history, opened.ts, ts, &format!("{room}: "), &what)
        {
            return refused;
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

/// The replay rules for room and direct-message envelopes alike: an
/// envelope seen before is skipped in history (it was shown then) and
/// refused live; a live one sealed more than [`STALE_AFTER_MS`] from the
/// server's time for it is refused as stale. `None`: show it.
fn refuse_replay(
    first: bool,
    history: bool,
    sealed: u64,
    arrived: u64,
    prefix: &str,
    what: &str,
) -> Option<Vec<Action>> {
    if !first {
        if history {
            return Some(Vec::new());
        }
        return Some(vec![show(Event::Warn(format!(
            "{prefix}replayed {what} rejected"
        )))]);
    }
    let drift = sealed.abs_diff(arrived);
    if !history && drift > STALE_AFTER_MS {
        return Some(vec![show(Event::Warn(format!(
            "{prefix}stale {what} rejected (sealed {} minutes before it arrived: a replay?)",
            drift / 60_000
        )))]);
    }
    None
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

    /// A named client with an identity, as chatc runs it.
    fn dm_client(me: &str) -> (ClientCore, String) {
        let mut c = client(me, "#x", None);
        c.login = Some((me.to_string(), "password".to_string()));
        let id = Identity::generate();
        let bundle = id.bundle(me);
        c.set_identity(id);
        (c, bundle)
    }

    fn one_send(a: &[Action]) -> String {
        let s = sends(a);
        assert_eq!(s.len(), 1, "{a:?}");
        s[0].clone()
    }

    fn warnings(a: &[Action]) -> Vec<String> {
        events(a)
            .into_iter()
            .filter_map(|e| match e {
                Event::Warn(w) => Some(w),
                _ => None,
            })
            .collect()
    }

    /// Alice sends bob `text`; returns the server's line for it.
    fn alice_to_bob(alice: &mut ClientCore, bob_bundle: &str, text: &str, ts: u64) -> String {
        let out = alice.user(&format!("/dm bob {text}"), ts);
        let mut line = one_send(&out);
        if line == "/key bob" {
            line = one_send(&alice.server(&format!("key bob {bob_bundle}")));
        }
        let env = line.strip_prefix("/dm bob ").expect("a DM").to_string();
        assert!(env.starts_with("D1."), "{env}");
        assert!(!env.contains(text), "plaintext on the wire");
        format!("dm alice bob {ts} {env}")
    }

    #[test]
    fn encrypted_dms_open_only_for_the_right_people_once() {
        let (mut alice, alice_bundle) = dm_client("alice");
        let (mut bob, bob_bundle) = dm_client("bob");
        let line = alice_to_bob(&mut alice, &bob_bundle, "meet at noon", 5_000);
        // Bob does not know alice's key yet: he looks it up, then shows it.
        assert_eq!(one_send(&bob.server(&line)), "/key alice");
        let out = bob.server(&format!("key alice {alice_bundle}"));
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Pin { nick, .. } if nick == "alice"))
        );
        assert!(events(&out).contains(&Event::Dm {
            from: "alice".into(),
            to: "bob".into(),
            ts: 5_000,
            text: "meet at noon".into(),
            e2e: true,
            history: false,
        }));
        // The echo alice gets is sealed for her too.
        let echo = events(&alice.server(&line));
        assert!(matches!(&echo[..], [Event::Dm { e2e: true, text, .. }] if text == "meet at noon"));
        // The same envelope again: a replay.
        assert_eq!(
            warnings(&bob.server(&line)),
            vec!["replayed direct message from alice rejected"]
        );
        // In a history block, a repeat is just skipped.
        bob.server("history @alice 1");
        assert!(bob.server(&line).is_empty());
        // Tampered in transit.
        let fresh = alice_to_bob(&mut alice, &bob_bundle, "second", 6_000);
        let mut bent: Vec<u8> = fresh.clone().into_bytes();
        let n = bent.len() - 3;
        bent[n] = if bent[n] == b'A' { b'B' } else { b'A' };
        let w = warnings(&bob.server(&String::from_utf8(bent).unwrap()));
        assert!(w[0].contains("tampered"), "{w:?}");
        // Shown by the server as from carol: not for bob as addressed.
        let moved = fresh.replacen("dm alice bob", "dm carol bob", 1);
        let out = bob.server(&moved);
        assert_eq!(one_send(&out), "/key carol");
        let carol = Identity::generate();
        let w = warnings(&bob.server(&format!("key carol {}", carol.bundle("carol"))));
        assert!(w.iter().any(|w| w.contains("re-addressed")), "{w:?}");
        // Sealed long before it arrived: a replay from another session.
        let old =
            alice_to_bob(&mut alice, &bob_bundle, "old", 1_000).replacen(" 1000 ", " 9999999 ", 1);
        assert!(warnings(&bob.server(&old))[0].contains("stale"));
        // And a real one still gets through.
        let ok = alice_to_bob(&mut alice, &bob_bundle, "third", 7_000);
        assert!(
            matches!(&events(&bob.server(&ok))[..], [Event::Dm { text, .. }] if text == "third")
        );
    }

    #[test]
    fn a_guest_cannot_send_what_nobody_could_verify() {
        let (mut guest, _) = dm_client("guest");
        guest.login = None;
        let out = guest.user("/dm bob hi", 1);
        assert!(sends(&out).is_empty());
        assert!(warnings(&out)[0].contains("/register"));
    }

    #[test]
    fn no_key_means_not_sent_until_confirmed() {
        let (mut alice, _) = dm_client("alice");
        assert_eq!(one_send(&alice.user("/dm guest hello", 1)), "/key guest");
        let out = alice.server("key guest -");
        assert!(sends(&out).is_empty(), "sent unencrypted without asking");
        assert!(warnings(&out)[0].contains("/dm! guest"));
        assert_eq!(
            one_send(&alice.user("/dm! guest hello", 2)),
            "/dm guest hello"
        );
    }

    #[test]
    fn a_changed_key_is_refused_until_trusted() {
        let (mut alice, _) = dm_client("alice");
        let bob1 = Identity::generate();
        let bob2 = Identity::generate();
        let mut pins = HashMap::new();
        pins.insert("bob".to_string(), bob1.public());
        alice.set_pins(pins);
        alice.user("/dm bob hi", 1);
        let out = alice.server(&format!("key bob {}", bob2.bundle("bob")));
        assert!(sends(&out).is_empty(), "sent to a changed key");
        assert!(warnings(&out).iter().any(|w| w.contains("CHANGED")));
        assert!(warnings(&alice.user("/dm bob again", 2))[0].contains("not trusted"));
        let fp = events(&alice.user("/fingerprint bob", 3));
        assert!(
            matches!(&fp[..], [Event::Info(t)] if t.contains("NEW key")),
            "{fp:?}"
        );
        let out = alice.user("/trust bob", 4);
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Pin { key, .. } if *key == bob2.public()))
        );
        let line = one_send(&alice.user("/dm bob now", 5));
        assert!(line.starts_with("/dm bob D1."));
    }

    #[test]
    fn logging_in_publishes_the_key_and_fingerprints_agree() {
        let (mut alice, _) = dm_client("alice");
        let out = alice.server("ok login logged in as alice");
        let s = sends(&out);
        assert!(s.iter().any(|l| l.starts_with("/key set K1.")), "{s:?}");
        let (mut bob, bob_bundle) = dm_client("bob");
        let alice_bundle = s[0].strip_prefix("/key set ").unwrap().to_string();
        assert_eq!(one_send(&alice.user("/fingerprint bob", 1)), "/key bob");
        let a = events(&alice.server(&format!("key bob {bob_bundle}")));
        bob.user("/fingerprint alice", 1);
        let b = events(&bob.server(&format!("key alice {alice_bundle}")));
        let number = |ev: &[Event]| {
            ev.iter()
                .find_map(|e| match e {
                    Event::Info(t) if t.starts_with("safety number") => {
                        Some(t.split(": ").nth(1).unwrap()[..35].to_string())
                    }
                    _ => None,
                })
                .expect("a safety number")
        };
        assert_eq!(number(&a), number(&b));
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
