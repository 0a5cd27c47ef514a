//! Several sessions per account (issue 18): a laptop and a phone logged in
//! as one person. Each session has its own rooms; all of them get the
//! account's direct messages and see what the others sent; the others in a
//! room see one person, so a session's join, leave or quit is said only
//! where no other session of it is. `/sessions` lists them, `/logout` ends
//! them. On one node only: in a cluster a nick is claimed cluster-wide, and
//! a second login replaces the first as before.

use std::time::Instant;

use super::super::{ConnId, Core, plural};
use crate::proto::{self, ServerLine, fold};

impl Core {
    /// `conn` logged in as an account that has a session already: it
    /// becomes one more.
    pub(in crate::core) fn another_session(&mut self, conn: ConnId, display: &str, now: Instant) {
        let old = self
            .sessions
            .get(conn)
            .and_then(|c| c.nick().map(str::to_string));
        self.sessions.add_session(conn, display, now);
        self.sessions.set_logged_in(conn, true);
        let n = self.sessions.sessions_of(&fold(display)).len();
        self.named_now(conn, old, display, now);
        let text =
            format!("this is session {n} of {display}; /sessions lists them, /logout ends one");
        self.reply(conn, &ServerLine::info("sessions", text));
    }

    /// True if another session of `conn`'s person is in the room `key`.
    pub(in crate::core) fn other_session_in(&self, conn: ConnId, key: &str) -> bool {
        let Some(nick) = self.sessions.get(conn).and_then(|c| c.nick().map(fold)) else {
            return false;
        };
        self.sessions
            .sessions_of(&nick)
            .into_iter()
            .any(|c| c != conn && self.sessions.get(c).is_some_and(|s| s.in_room(key)))
    }

    /// The other sessions of `conn`'s person.
    pub(in crate::core) fn other_sessions(&self, conn: ConnId) -> Vec<ConnId> {
        let Some(nick) = self.sessions.get(conn).and_then(|c| c.nick().map(fold)) else {
            return Vec::new();
        };
        self.sessions
            .sessions_of(&nick)
            .into_iter()
            .filter(|&c| c != conn)
            .collect()
    }

    /// `/sessions`: this account's sessions, numbered for `/logout N`.
    pub(in crate::core) fn list_sessions(&mut self, conn: ConnId) {
        if !self.require_login(conn, "several sessions") {
            return;
        }
        let mine = self.numbered_sessions(conn);
        for (i, c) in mine.iter().enumerate() {
            let Some(s) = self.sessions.get(*c) else {
                continue;
            };
            let client = if s.format() == proto::Format::Machine {
                "a client program"
            } else {
                "a terminal (human format)"
            };
            let since = proto::line::stamp(self.unix_ms(self.sessions.connected_at(s)), 0);
            let rooms: Vec<String> = s
                .rooms()
                .iter()
                .filter_map(|k| self.rooms.name_of(k))
                .collect();
            let this = if *c == conn { " (this one)" } else { "" };
            let text = format!(
                "session {}{this}: {client} from {}, since {since} UTC, in {}",
                i + 1,
                s.addr(),
                if rooms.is_empty() {
                    "no room".to_string()
                } else {
                    rooms.join(", ")
                }
            );
            self.reply(conn, &ServerLine::info("session", text));
        }
        let n = mine.len();
        let text = format!(
            "{n} {} of at most {}",
            plural(n, "session", "sessions"),
            self.cfg.max_sessions
        );
        self.reply(conn, &ServerLine::ok("sessions", text));
    }

    /// The account's sessions in the order `/sessions` numbers them: by
    /// when they connected.
    fn numbered_sessions(&self, conn: ConnId) -> Vec<ConnId> {
        let Some(nick) = self.sessions.get(conn).and_then(|c| c.nick().map(fold)) else {
            return Vec::new();
        };
        let mut all = self.sessions.sessions_of(&nick);
        all.sort_by_key(|&c| self.sessions.get(c).map(|s| s.serial()));
        all
    }

    /// `/logout` (this session), `/logout N` (one from `/sessions`) or
    /// `/logout all`.
    pub(in crate::core) fn logout(&mut self, conn: ConnId, which: Option<&str>) {
        if !self.require_login(conn, "logging out") {
            return;
        }
        let mine = self.numbered_sessions(conn);
        let ends: Vec<ConnId> = match which {
            None => vec![conn],
            Some(w) if w.eq_ignore_ascii_case("all") => mine.clone(),
            Some(w) => match w.parse::<usize>().ok().and_then(|i| i.checked_sub(1)) {
                Some(i) if i < mine.len() => vec![mine[i]],
                _ => {
                    let text =
                        format!("no session {w}: /sessions numbers them 1 to {}", mine.len());
                    self.error(conn, "usage", text);
                    return;
                }
            },
        };
        for c in ends.iter().copied().filter(|&c| c != conn) {
            self.error(
                c,
                "logged-out",
                "this session was logged out from another one",
            );
            self.close(c, "logged out");
        }
        if ends.contains(&conn) {
            self.reply(conn, &ServerLine::ok("bye", "logged out: bye!"));
            self.close(conn, "logged out");
        } else {
            let n = ends.len();
            let text = format!("{n} {} logged out", plural(n, "session", "sessions"));
            self.reply(conn, &ServerLine::ok("logout", text));
        }
    }
}
