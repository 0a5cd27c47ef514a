//! What the server sends (machine format v1, or the human greeting that
//! comes before `/format machine` takes effect), turned into events, with
//! the state it tells the client: its nick, its rooms, history blocks.
//!
//! The server is not trusted with where the user is: entering a room the
//! user asked for moves the user there; a room the server moves the user to
//! on its own is announced, and followed only when the user says so (while
//! no room key is held there is nothing to protect, and the client follows
//! as any client would). A plain line in a room with a key is marked
//! [`Trust::Unencrypted`] (or hidden, by `/unencrypted hide`). History
//! already shown (by the room's line times) is not shown again.

use base64::Engine as _;

use super::{Action, ClientCore, Event, Received, Trust, key_of, said, show};
use crate::e2e::room as envelope;
use crate::proto::ServerLine;

impl ClientCore {
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

    /// Whether a room line at `ts` is to be shown (not history already
    /// shown); notes it as shown.
    pub(super) fn first_showing(
        &mut self,
        room: &str,
        ts: u64,
        history: bool,
        out: &mut Vec<Action>,
    ) -> bool {
        let key = key_of(room);
        if history && self.memory.shown_until(&key).is_some_and(|t| ts <= t) {
            return false;
        }
        if let Some(line) = self.memory.shown(&key, ts) {
            out.push(Action::Remember(line));
        }
        true
    }

    /// How a plain line of `room` is trusted: not at all where a key is
    /// held. `None`: hidden.
    fn plain_trust(&self, room: &str) -> Option<Trust> {
        if !self.is_encrypted(room) {
            return Some(Trust::Plain);
        }
        (!self.hide_unencrypted).then_some(Trust::Unencrypted)
    }

    fn hidden(&self, room: &str, nick: &str) -> Action {
        show(Event::Warn(format!(
            "a plain (unencrypted) line from {nick} in {room} was hidden (/unencrypted show)"
        )))
    }

    /// True if `nick` is us.
    pub(super) fn is_me(&self, nick: &str) -> bool {
        self.nick
            .as_deref()
            .is_some_and(|me| me.eq_ignore_ascii_case(nick))
    }

    /// A `/search` result: shown dated, as history is. The server searches
    /// only plain lines, so one from a room we hold a key for is marked as
    /// unencrypted (even with `/unencrypted hide`: it was asked for).
    fn found(&self, line: ServerLine) -> Event {
        let room_trust = |room: &str| self.plain_trust(room).unwrap_or(Trust::Unencrypted);
        match line {
            ServerLine::Msg {
                room,
                nick,
                ts,
                text,
            } => Event::Msg {
                trust: room_trust(&room),
                room,
                nick,
                ts,
                text,
                history: true,
            },
            ServerLine::Action {
                room,
                nick,
                ts,
                text,
            } => Event::Action {
                trust: room_trust(&room),
                room,
                nick,
                ts,
                text,
                history: true,
            },
            ServerLine::Dm { from, to, ts, text } => {
                let pinned = self
                    .pins
                    .contains_key(&crate::e2e::identity::nick_id(&from));
                let trust = if pinned && !self.is_me(&from) {
                    Trust::Unencrypted
                } else {
                    Trust::Plain
                };
                Event::Dm {
                    from,
                    to,
                    ts,
                    text,
                    trust,
                    history: true,
                }
            }
            // `parse_machine` lets nothing else through.
            other => Event::Info(other.encode_human()),
        }
    }

    /// A line from the server (machine format v1). `now_ms` is the local
    /// clock, which judges how fresh an envelope is.
    pub fn server(&mut self, line: &str, now_ms: u64) -> Vec<Action> {
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
            } => self.plain_line(false, room, nick, ts, text),
            ServerLine::Action {
                room,
                nick,
                ts,
                text,
            } => self.plain_line(true, room, nick, ts, text),
            ServerLine::Dm { from, to, ts, text } => {
                let history = self.in_history();
                if crate::proto::shapes::dm_envelope_ok(&text) {
                    return self.incoming_dm(from, to, text, history, now_ms);
                }
                // A plain DM from someone whose key is pinned could have
                // been sealed: say loudly that it was not.
                let pinned = self.pins.contains_key(&crate::e2e::identity::nick_id(&from));
                let trust = if pinned && !self.is_me(&from) {
                    Trust::Unencrypted
                } else {
                    Trust::Plain
                };
                vec![show(Event::Dm {
                    from,
                    to,
                    ts,
                    text,
                    trust,
                    history,
                })]
            }
            ServerLine::Key { nick, bundle } => self.key_answer(nick, &bundle, now_ms),
            ServerLine::Found(inner) => vec![show(self.found(*inner))],
            p @ ServerLine::Present { .. } => {
                let text = p.encode_human();
                let text = text.strip_prefix("*** ").unwrap_or(&text).to_string();
                vec![show(Event::Info(text))]
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
                let mut out = Vec::new();
                if !self.first_showing(&room, ts, history, &mut out) {
                    return out;
                }
                let Some(trust) = self.plain_trust(&room) else {
                    out.push(self.hidden(&room, &nick));
                    return out;
                };
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
                out.push(show(Event::Media {
                    room,
                    nick,
                    ts,
                    kind,
                    name,
                    mime,
                    size,
                    trust,
                    history,
                    has_data,
                }));
                out
            }
            ServerLine::Encrypted {
                room,
                nick,
                ts,
                data,
            } => {
                let history = self.in_history();
                let mut out = Vec::new();
                if !self.first_showing(&room, ts, history, &mut out) {
                    return out;
                }
                out.extend(self.open_envelope(room, nick, &data, history, now_ms));
                out
            }
            ServerLine::Join { room, nick } => {
                let mut out = Vec::new();
                if self.is_me(&nick) {
                    out.extend(self.entered(&room));
                }
                out.insert(0, show(Event::Join { room, nick }));
                out
            }
            ServerLine::Part { room, nick, reason } => {
                let mut out = vec![show(Event::Part {
                    room: room.clone(),
                    nick: nick.clone(),
                    reason,
                })];
                if self.is_me(&nick) {
                    self.rooms.retain(|r| !r.eq_ignore_ascii_case(&room));
                    let was_current = self
                        .current
                        .as_deref()
                        .is_some_and(|c| c.eq_ignore_ascii_case(&room));
                    if self
                        .server_current
                        .as_deref()
                        .is_some_and(|c| c.eq_ignore_ascii_case(&room))
                    {
                        self.server_current = None;
                    }
                    if was_current {
                        if self.guarded() {
                            self.current = None;
                            out.push(show(Event::Status(format!(
                                "you are out of {room}: your lines go nowhere until you /join a room"
                            ))));
                        } else {
                            self.current = self.rooms.last().cloned();
                        }
                    }
                }
                out
            }
            ServerLine::Quit { nick, reason } => vec![show(Event::Quit { nick, reason })],
            ServerLine::NickChange { old, new } => {
                if self.is_me(&old) {
                    self.nick = Some(new.clone());
                    self.want_nick = Some(new.clone());
                }
                vec![show(Event::Nick { old, new })]
            }
            ServerLine::Topic { room, nick, text } => vec![show(Event::Topic { room, nick, text })],
            ServerLine::History { room, count } => {
                self.history = (count > 0).then_some((room.clone(), count));
                let what = if count == 1 {
                    "the last message".to_string()
                } else {
                    format!("last {count} messages")
                };
                vec![show(Event::Info(format!("{what} in {room}:")))]
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
            // Logged in elsewhere: reconnecting would log in again and put
            // that session out in turn, forever.
            ServerLine::Error { code, text } if code == "replaced" => vec![
                show(Event::Error(text)),
                Action::Stop(
                    "this account logged in from somewhere else; chatc stopped here rather than take it back".into(),
                ),
            ],
            ServerLine::Error { text, .. } => vec![show(Event::Error(text))],
        }
    }

    /// A plain room line or action.
    fn plain_line(
        &mut self,
        action: bool,
        room: String,
        nick: String,
        ts: u64,
        text: String,
    ) -> Vec<Action> {
        let history = self.in_history();
        let mut out = Vec::new();
        if !self.first_showing(&room, ts, history, &mut out) {
            return out;
        }
        match self.plain_trust(&room) {
            Some(trust) => out.push(show(said(action, room, nick, ts, text, trust, history))),
            None => out.push(self.hidden(&room, &nick)),
        }
        out
    }

    /// The server says we are in `room` (and talking there).
    fn entered(&mut self, room: &str) -> Vec<Action> {
        if !self.rooms.iter().any(|r| r.eq_ignore_ascii_case(room)) {
            self.rooms.push(room.to_string());
        }
        self.server_current = Some(room.to_string());
        self.follow(room)
    }

    /// The server put us in `room` (or says we talk there): follow if the
    /// user asked for it (or there is nothing to protect), else say so and
    /// stay.
    fn follow(&mut self, room: &str) -> Vec<Action> {
        let key = key_of(room);
        let asked = self.asked.remove(&key)
            || (self.asked_new && room.starts_with('~') && {
                self.asked_new = false;
                true
            });
        let same = self
            .current
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(room));
        if asked || same || !self.guarded() {
            self.current = Some(room.to_string());
            return Vec::new();
        }
        if self.rejoining.remove(&key) {
            // Entered again after a reconnection; the current room is
            // joined last and becomes the server's current again.
            return Vec::new();
        }
        let here = self.current.clone().unwrap_or_else(|| "no room".into());
        vec![show(Event::Warn(format!(
            "the server says you now talk in {room}, which you did not ask for: your lines still go to {here} (type /join {room} to talk there)"
        )))]
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
                        self.rejoining.insert(key_of(r));
                        out.push(Action::Send(format!("/join {r}")));
                    }
                    if let Some(c) = current {
                        self.asked.insert(key_of(&c));
                        out.push(Action::Send(format!("/join {c}")));
                    }
                }
            }
            "current" => {
                if let Some(room) = text.strip_prefix("now talking in ") {
                    let room = room.trim().to_string();
                    self.server_current = Some(room.clone());
                    out.extend(self.follow(&room));
                } else if text.starts_with("you are in no room") {
                    self.server_current = None;
                    if !self.guarded() {
                        self.current = None;
                    }
                }
            }
            "set" => {
                // The server's settings are the account's: chatc honours
                // `timestamps` (echo and prompt are for human sessions).
                if let Some(on) = timestamps_setting(&text) {
                    out.push(Action::Times(on));
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
}

/// `timestamps on|off` from an `ok set` answer, if it says: a change
/// (`timestamps on: times are UTC...`) or the settings restored at login
/// (`your settings: timestamps on, echo off, prompt off`).
fn timestamps_setting(text: &str) -> Option<bool> {
    let rest = text
        .strip_prefix("your settings: ")
        .or_else(|| text.strip_prefix("timestamps ").map(|_| text))?;
    let at = rest.find("timestamps ")?;
    let word = rest.get(at + "timestamps ".len()..)?;
    if word.starts_with("on") {
        Some(true)
    } else if word.starts_with("off") {
        Some(false)
    } else {
        None
    }
}
