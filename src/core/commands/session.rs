//! Commands about the session itself: the first line as a nick, `/nick`,
//! `/format`, `/help`, `/online`, `/quit`.

use std::time::Instant;

use super::super::help::HELP;
use super::super::{ConnId, Core, Presence, ToCluster, truncate};
use crate::proto::{self, Format, RoomRef, ServerLine, fold};

impl Core {
    /// The first line of an unnamed connection that is not a command is its
    /// nick (so `nc host 9999` then typing `alice` works).
    pub(in crate::core) fn first_line_nick(&mut self, conn: ConnId, line: &str, now: Instant) {
        let nick = line.trim();
        if proto::valid_nick(nick) {
            self.set_nick(conn, nick, false, now);
        } else {
            self.error(
                conn,
                "nick-invalid",
                format!(
                    "\"{}\" is not a valid nick: {}. What is your nick?",
                    truncate(nick, 40),
                    proto::NICK_RULE
                ),
            );
        }
    }

    /// Names or renames a connection. `authed`: it just logged in as `nick`.
    pub(in crate::core) fn set_nick(
        &mut self,
        conn: ConnId,
        nick: &str,
        authed: bool,
        now: Instant,
    ) {
        let key = fold(nick);
        let Some(c) = self.sessions.get(conn) else {
            return;
        };
        let renamed = c.nick().map(fold).as_deref() != Some(key.as_str());
        if self.accounts.contains(&key) && !authed && !c.logged_in_as(&key) {
            let text = format!(
                "nick {nick} is registered: log in with /login {nick} <password>, or choose another nick"
            );
            self.error(conn, "nick-registered", text);
            return;
        }
        let taken_here = self.sessions.by_nick(&key).is_some_and(|o| o != conn);
        if taken_here || self.remote(&key).is_some() {
            self.refuse_taken(conn, nick);
            return;
        }
        if !authed && renamed && self.start_claim(conn, nick, false) {
            return;
        }
        self.finish_nick(conn, nick, authed, now);
    }

    fn refuse_taken(&mut self, conn: ConnId, nick: &str) {
        let text = format!("nick {nick} is taken; choose another");
        self.error(conn, "nick-taken", text);
    }

    /// Names or renames a connection once the nick is known to be free.
    pub(in crate::core) fn finish_nick(
        &mut self,
        conn: ConnId,
        nick: &str,
        authed: bool,
        now: Instant,
    ) {
        let key = fold(nick);
        let Some(c) = self.sessions.get(conn) else {
            return;
        };
        let old = c.nick().map(str::to_string);
        let already = c.logged_in_as(&key);
        if self.sessions.by_nick(&key).is_some_and(|o| o != conn) {
            // Taken here while the cluster was asked.
            self.ask_cluster(ToCluster::Release(nick.to_string()));
            self.refuse_taken(conn, nick);
            return;
        }
        match &old {
            Some(old) => {
                if fold(old) != key {
                    self.ask_cluster(ToCluster::Release(old.clone()));
                }
                if old != nick {
                    self.presence(Presence::Rename {
                        old: old.clone(),
                        new: nick.to_string(),
                    });
                }
            }
            None if self.cluster.is_some() => {
                let rooms = c.public_rooms();
                self.presence(Presence::Online {
                    nick: nick.to_string(),
                    rooms,
                });
            }
            None => {}
        }
        self.sessions.set_nick(conn, nick, now);
        self.sessions.set_logged_in(conn, authed || already);
        self.named_now(conn, old, nick, now);
    }

    /// After a connection took `nick`: a first naming is welcomed, a
    /// rename (from `old`) is told to its rooms and to it.
    pub(in crate::core) fn named_now(
        &mut self,
        conn: ConnId,
        old: Option<String>,
        nick: &str,
        now: Instant,
    ) {
        match old {
            None => self.welcome(conn, nick, now),
            Some(old) => {
                let line = ServerLine::NickChange {
                    old,
                    new: nick.to_string(),
                };
                let rooms = self
                    .sessions
                    .get(conn)
                    .map(|c| c.rooms().to_vec())
                    .unwrap_or_default();
                self.announce(&rooms, &line, Some(conn));
                self.reply(conn, &line);
            }
        }
    }

    /// First naming: greet, and join the first default room.
    pub(in crate::core) fn welcome(&mut self, conn: ConnId, nick: &str, now: Instant) {
        if self.shut_out(conn, now) {
            return;
        }
        // The idle deadline replaces the naming one.
        if let Some(at) = self.cfg.idle_timeout.and_then(|d| now.checked_add(d)) {
            self.sessions.arm(conn, at, self.cfg.name_timeout);
        }
        let text = format!(
            "hello {nick}! Type to talk, /help for commands. {} online.",
            self.sessions.named() + self.remote_people()
        );
        self.reply(conn, &ServerLine::ok("nick", text));
        if let Some(first) = self.cfg.default_rooms.first().cloned()
            && let Ok(r) = RoomRef::parse(&first)
        {
            self.join(conn, &r, now);
        }
    }

    pub(in crate::core) fn help(&mut self, conn: ConnId, topic: Option<&str>) {
        let lines: Vec<&str> = match topic {
            None => HELP.to_vec(),
            Some(t) => HELP
                .iter()
                .copied()
                .filter(|l| l.trim_start().starts_with(&format!("/{t}")))
                .collect(),
        };
        if lines.is_empty() {
            self.error(conn, "unknown-command", "no such command; /help lists them");
            return;
        }
        for l in lines {
            self.reply(conn, &ServerLine::info("help", l));
        }
    }

    pub(in crate::core) fn set_format(&mut self, conn: ConnId, f: Format) {
        let Some(c) = self.sessions.get(conn) else {
            return;
        };
        let rooms = c.rooms().to_vec();
        let wire = self.sessions.set_format(conn, f);
        for key in &rooms {
            self.rooms.add_member(key, conn, wire);
        }
        let text = match f {
            Format::Human | Format::Stamped => "human".to_string(),
            Format::Machine => format!("machine {}", proto::MACHINE_VERSION),
        };
        self.reply(conn, &ServerLine::ok("format", text));
        self.update_prompt(conn);
    }

    pub(in crate::core) fn online(&mut self, conn: ConnId) {
        const SHOWN: usize = 200;
        let mut nicks: Vec<String> = self
            .sessions
            .named_conns()
            .into_iter()
            .map(|m| self.sessions.nick_of(m))
            .collect();
        nicks.extend(self.remote_nicks());
        let total = nicks.len();
        nicks.sort_by(|a, b| proto::cmp_folded(a, b));
        nicks.truncate(SHOWN);
        self.reply(conn, &ServerLine::Online { total, nicks });
    }

    pub(in crate::core) fn quit(&mut self, conn: ConnId, reason: Option<String>) {
        let reason = reason
            .map(|r| truncate(&r, proto::REASON_MAX).to_string())
            .unwrap_or_else(|| "quit".to_string());
        self.reply(conn, &ServerLine::ok("bye", "bye!"));
        self.close(conn, &reason);
    }
}
