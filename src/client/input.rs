//! What the user types: commands the client handles itself (joining with a
//! secret, sealing for an encrypted room, direct messages), and the lines it
//! passes to the server as they are.
//!
//! The rule that keeps secrets secret: once any room key is held, a plain
//! line goes out only if the room the user believes they are in is known,
//! has no key, and is where the server will put it (if the server's current
//! room differs, the line is preceded by `/join ROOM`). Anything else is not
//! sent, and the user is told why.

use super::{Action, ClientCore, Event, key_of, server_room, show};
use crate::e2e::Body;
use crate::e2e::room as envelope;
use crate::media;
use crate::proto::{self, Upload};

/// Splits a `/join` argument at its first `:` into the room and the secret:
/// everything after the colon, spaces included (a passphrase is used whole).
fn split_invite(args: &str) -> (&str, Option<&str>) {
    match args.split_once(':') {
        Some((room, secret)) if !room.contains(' ') && !secret.trim().is_empty() => {
            (room.trim(), Some(secret.trim()))
        }
        _ => (
            args.split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches(':'),
            None,
        ),
    }
}

impl ClientCore {
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
        // remembering it lets a reconnection name us again. Once a room key
        // is held, a line that cannot be a nick is not sent as one: it may
        // be a message meant for a sealed room, typed too soon.
        if self.nick.is_none() && !line.starts_with('/') {
            if self.guarded() && !proto::valid_nick(trimmed) {
                return vec![show(Event::Warn(format!(
                    "not sent: you have no nick yet on this connection, and this is not one ({})",
                    proto::NICK_RULE
                )))];
            }
            self.want_nick = Some(trimmed.to_string());
            return vec![Action::Send(trimmed.to_string())];
        }
        if let Some(text) = line.strip_prefix("//") {
            return self.say(Body::Text(format!("/{text}")), now_ms);
        }
        // `/passwd` as the front end built it: the command, then the old
        // and the new password, each a line of its own for the server.
        for cmd in ["/passwd", "/unregister"] {
            if let Some(answers) = line.strip_prefix(cmd).and_then(|r| r.strip_prefix('\n')) {
                let mut out = vec![Action::Send(cmd.to_string())];
                out.extend(answers.split('\n').map(|a| Action::Send(a.to_string())));
                return out;
            }
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
            "create" => {
                if let Some(room) = args.split_whitespace().next() {
                    self.asked.insert(key_of(room));
                }
                vec![Action::Send(line.to_string())]
            }
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
            "trust" => self.trust(args, now_ms),
            "unencrypted" => self.unencrypted(args),
            "image" | "file" | "save" => vec![show(Event::Error(format!(
                "/{cmd} is handled by the terminal front end"
            )))],
            _ => vec![Action::Send(line.to_string())],
        }
    }

    /// `/unencrypted show|hide`: how plain lines in keyed rooms appear.
    fn unencrypted(&mut self, args: &str) -> Vec<Action> {
        match args {
            "hide" => self.hide_unencrypted = true,
            "show" => self.hide_unencrypted = false,
            _ => {
                return vec![show(Event::Error(
                    "usage: /unencrypted show|hide (plain lines in encrypted rooms)".into(),
                ))];
            }
        }
        vec![show(Event::Info(format!(
            "plain lines in encrypted rooms are {} from now on",
            if self.hide_unencrypted {
                "hidden (counted)"
            } else {
                "shown, marked UNENCRYPTED"
            }
        )))]
    }

    fn join(&mut self, args: &str) -> Vec<Action> {
        let mut words = args.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.eq_ignore_ascii_case("new") {
            if words.next() == Some("--secret") {
                self.new_secret = Some(envelope::new_secret());
            }
            self.asked_new = true;
            return vec![Action::Send("/join new".into())];
        }
        let (room, secret) = split_invite(args);
        if room.is_empty() {
            return vec![Action::Send("/join".into())];
        }
        let mut out = Vec::new();
        let name = server_room(room);
        if let Some(secret) = secret {
            self.keys
                .insert(key_of(&name), envelope::derive_key(secret, &name));
            let what = if envelope::is_random_secret(secret) {
                "a random secret"
            } else {
                "a passphrase"
            };
            out.push(show(Event::Info(format!(
                "{name} is end-to-end encrypted here (key from {what}): the server sees only envelopes"
            ))));
        }
        self.asked.insert(key_of(&name));
        // Only the room, never the secret, reaches the server.
        out.push(Action::Send(format!("/join {room}")));
        out
    }

    /// Text for the current room: sealed if the room has a key; plain only
    /// where that is provably safe (see the module docs).
    fn say(&mut self, body: Body, now_ms: u64) -> Vec<Action> {
        let Some(room) = self.current.clone() else {
            if self.guarded() {
                return vec![show(Event::Warn(
                    "not sent: you are in no room this client knows of, so it cannot tell whether the line would be sealed; /join a room first".into(),
                ))];
            }
            return plain(body).into_iter().map(Action::Send).collect();
        };
        if let Some(key) = self.keys.get(&key_of(&room)) {
            let Some(nick) = self.nick.clone() else {
                return vec![show(Event::Warn(format!(
                    "not sent: not named on the server yet, so nothing can be sealed for {room}"
                )))];
            };
            let env = match (&self.identity, self.login.is_some()) {
                (Some(id), true) => envelope::seal_signed(key, id, &room, &nick, &body, now_ms),
                _ => envelope::seal(key, &room, &nick, &body, now_ms),
            };
            let mut out: Vec<Action> = self.go_to(&room).into_iter().map(Action::Send).collect();
            out.push(Action::Send(format!("/enc {env}")));
            return out;
        }
        let mut out: Vec<Action> = self.go_to(&room).into_iter().map(Action::Send).collect();
        out.extend(plain(body).into_iter().map(Action::Send));
        out
    }

    /// `/join ROOM` if the server would put the next line elsewhere than
    /// `room` (where the user is): a plain line must not land in another
    /// room, and an envelope would reach people who cannot open it.
    fn go_to(&mut self, room: &str) -> Option<String> {
        if !self.guarded() || self.server_is_in(room) {
            return None;
        }
        self.asked.insert(key_of(room));
        self.server_current = Some(room.to_string());
        Some(format!("/join {room}"))
    }

    /// The server's current room is `room`.
    fn server_is_in(&self, room: &str) -> bool {
        self.server_current
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(room))
    }

    /// An image or file the user wants to send (already read and checked by
    /// the front end): the lines for the server.
    pub fn upload(
        &mut self,
        kind: Upload,
        name: &str,
        mime: &str,
        data: Vec<u8>,
        now_ms: u64,
    ) -> Result<Vec<String>, String> {
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
                let env = match (&self.identity, self.login.is_some()) {
                    (Some(id), true) => envelope::seal_signed(key, id, &room, &nick, &body, now_ms),
                    _ => envelope::seal(key, &room, &nick, &body, now_ms),
                };
                let mut out: Vec<String> = self.go_to(&room).into_iter().collect();
                out.push(format!("/enc {env}"));
                Ok(out)
            }
            None => {
                let cmd = if kind == Upload::Image {
                    "image"
                } else {
                    "file"
                };
                let mut out: Vec<String> = self.go_to(&room).into_iter().collect();
                out.push(format!("/{cmd} {name} {}", media::encode(&data)));
                Ok(out)
            }
        }
    }
}

/// A body as the plain line that says it.
fn plain(body: Body) -> Option<String> {
    match body {
        Body::Text(t) if t.starts_with('/') => Some(format!("/{t}")),
        Body::Text(t) => Some(t),
        Body::Action(t) => Some(format!("/me {t}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::split_invite;

    #[test]
    fn a_passphrase_is_used_whole() {
        assert_eq!(
            split_invite("#r:correct horse battery staple"),
            ("#r", Some("correct horse battery staple"))
        );
        assert_eq!(split_invite("#r"), ("#r", None));
        assert_eq!(split_invite("#r:"), ("#r", None));
        assert_eq!(split_invite("a4b2c1:SECRET"), ("a4b2c1", Some("SECRET")));
    }
}
