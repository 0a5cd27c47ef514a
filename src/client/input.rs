//! What the user types: commands the client handles itself (joining with a
//! secret, sealing for an encrypted room, direct messages), and the lines it
//! passes to the server as they are.

use super::{Action, ClientCore, Event, key_of, server_room, show, split_invite};
use crate::e2e::Body;
use crate::e2e::room as envelope;
use crate::media;
use crate::proto::Upload;

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
}
