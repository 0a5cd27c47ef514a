//! What the server sends (machine format v1, or the human greeting that
//! comes before `/format machine` takes effect), turned into events, with
//! the state it tells the client: its nick, its rooms, history blocks.

use base64::Engine as _;

use super::{Action, ClientCore, Event, Received, key_of, said, show};
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
                vec![show(said(false, room, nick, ts, text, false, history))]
            }
            ServerLine::Action {
                room,
                nick,
                ts,
                text,
            } => {
                let history = self.in_history();
                vec![show(said(true, room, nick, ts, text, false, history))]
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
}
