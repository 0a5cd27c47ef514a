//! What makes a day in nc bearable: `/set` (timestamps, echo, prompt),
//! knowing where one is (who is in a room one joins, every change of the
//! room one's lines go to, `/where`), the date at midnight, and `/search`.

use std::time::Instant;

use super::super::search::{self, Found, Source};
use super::super::settings::Settings;
use super::super::{ConnId, Core, plural};
use crate::proto::{self, Format, RoomRef, ServerLine, Setting, fold};
use crate::record::Record;

/// Others named in the line that says who is in a room one joined.
const PRESENT_NAMED: usize = 8;
/// Results of one `/search` by default, and at most.
const SEARCH_DEFAULT: usize = 20;
const SEARCH_MAX: usize = 100;

impl Core {
    /// `/set` alone lists the settings; `/set NAME on|off` changes one.
    pub(in crate::core) fn set(&mut self, conn: ConnId, change: Option<(Setting, bool)>) {
        let Some(mut s) = self.sessions.get(conn).map(|c| c.settings()) else {
            return;
        };
        let Some((which, on)) = change else {
            let kept = if self.logged_in(conn) {
                "kept for your account"
            } else {
                "for this session; register to keep them"
            };
            let text = format!("settings: {} ({kept})", s.describe());
            self.reply(conn, &ServerLine::ok("set", text));
            return;
        };
        s.set(which, on);
        self.apply_settings(conn, s);
        let mut text = format!("{} {}", which.name(), if on { "on" } else { "off" });
        if which == Setting::Timestamps && on {
            let now = self.out.clock();
            text.push_str(&format!(
                ": times are UTC; today is {} {}",
                proto::line::weekday(now),
                proto::civil_date(now)
            ));
        }
        self.reply(conn, &ServerLine::ok("set", text));
        self.keep_settings(conn);
    }

    /// Gives the session `s`: its lines' format (timestamps), the member
    /// lists that carry that format, and its prompt.
    fn apply_settings(&mut self, conn: ConnId, s: Settings) {
        let format = self.sessions.set_settings(conn, s);
        let rooms = self
            .sessions
            .get(conn)
            .map(|c| c.rooms().to_vec())
            .unwrap_or_default();
        for key in &rooms {
            self.rooms.add_member(key, conn, format);
        }
        self.update_prompt(conn);
    }

    /// Journals the session's settings for its account, if it is logged in.
    pub(in crate::core) fn keep_settings(&mut self, conn: ConnId) {
        if !self.logged_in(conn) {
            return;
        }
        let Some(s) = self.sessions.get(conn).map(|c| c.settings()) else {
            return;
        };
        let nick = self.nick_of(conn);
        let key = fold(&nick);
        if self.accounts.get(&key).map(|a| a.settings()) == Some(s) {
            return;
        }
        self.accounts.set_settings(&key, s);
        self.persist_shared(Record::Settings {
            nick,
            on: s.to_words(),
        });
    }

    /// At login: the account's kept settings replace the session's, and the
    /// session is told so when that changes anything.
    pub(in crate::core) fn restore_settings(&mut self, conn: ConnId, key: &str) {
        let Some(kept) = self.accounts.get(key).map(|a| a.settings()) else {
            return;
        };
        let Some(now) = self.sessions.get(conn).map(|c| c.settings()) else {
            return;
        };
        if kept == now {
            return;
        }
        self.apply_settings(conn, kept);
        let text = format!("your settings: {}", kept.describe());
        self.reply(conn, &ServerLine::ok("set", text));
    }

    /// Says which room plain lines go to now (after every change of it),
    /// and updates the prompt.
    pub(in crate::core) fn tell_current(&mut self, conn: ConnId) {
        let now_in = self
            .sessions
            .get(conn)
            .and_then(|c| c.current())
            .and_then(|k| self.rooms.name_of(k));
        let text = match now_in {
            Some(n) => format!("now talking in {n}"),
            None => "you are in no room now; /join #room".to_string(),
        };
        self.reply(conn, &ServerLine::ok("current", text));
        self.update_prompt(conn);
    }

    /// `/where`: the current room, then the others one is in.
    pub(in crate::core) fn where_am_i(&mut self, conn: ConnId) {
        let Some(c) = self.sessions.get(conn) else {
            return;
        };
        let current = c.current().map(str::to_string);
        let others: Vec<String> = c
            .rooms()
            .iter()
            .filter(|k| Some(&***k) != current.as_deref())
            .filter_map(|k| self.rooms.name_of(k))
            .collect();
        let mut text = match current.as_deref().and_then(|k| self.rooms.name_of(k)) {
            Some(n) => format!("you are talking in {n}: plain lines go there"),
            None => "you are in no room: /join #room".to_string(),
        };
        if !others.is_empty() {
            text.push_str(&format!("; also in {}", others.join(", ")));
        }
        self.reply(conn, &ServerLine::ok("where", text));
    }

    /// Who else is in a room `conn` just joined: a few names and a count,
    /// whatever the room's size (a join costs the same in any room).
    pub(in crate::core) fn present(&mut self, conn: ConnId, key: &str) {
        let Some(room) = self.rooms.get(key) else {
            return;
        };
        let name = room.name().to_string();
        // My other sessions are not someone else.
        let mine: Vec<ConnId> = self.other_sessions(conn);
        let mine_here = mine.iter().filter(|&&m| room.members().contains(m)).count();
        let mut nicks: Vec<String> = room
            .members()
            .conns()
            .filter(|&m| m != conn && !mine.contains(&m))
            .take(PRESENT_NAMED)
            .map(|m| self.sessions.nick_of(m))
            .filter(|n| !n.is_empty())
            .collect();
        let local = room.members().len().saturating_sub(1 + mine_here);
        let remote = self.remote_count(key);
        if nicks.len() < PRESENT_NAMED && remote > 0 {
            let more = self.remote_nicks_in(key);
            nicks.extend(more.into_iter().take(PRESENT_NAMED - nicks.len()));
        }
        nicks.sort_by(|a, b| proto::cmp_folded(a, b));
        let line = ServerLine::Present {
            room: name,
            total: local + remote,
            nicks,
        };
        self.reply(conn, &line);
    }

    /// The prompt the reactor shows after each burst of output to `conn`,
    /// or none (prompt off, or a machine session).
    pub(in crate::core) fn update_prompt(&mut self, conn: ConnId) {
        let Some(c) = self.sessions.get(conn) else {
            return;
        };
        let text = (c.settings().get(Setting::Prompt) && c.format().is_human()).then(|| {
            match c.current().and_then(|k| self.rooms.name_of(k)) {
                Some(n) => format!("[{n}] "),
                None => "[no room] ".to_string(),
            }
        });
        self.out.prompt(conn, text);
    }

    /// Midnight (UTC): sessions with timestamps on are told the new date,
    /// since their stamps show only the time.
    pub(in crate::core) fn new_day(&mut self, now: Instant) {
        let ms = self.unix_ms(now);
        let line = ServerLine::info(
            "day",
            format!(
                "the date is now {} {} (UTC)",
                proto::line::weekday(ms),
                proto::civil_date(ms)
            ),
        );
        let stamped: Vec<ConnId> = self
            .sessions
            .iter()
            .filter(|(_, c)| c.format() == Format::Stamped)
            .map(|(conn, _)| conn)
            .collect();
        for conn in stamped {
            self.reply(conn, &line);
        }
    }

    /// A kept line, shown with its date and time to a human session even
    /// with timestamps off (direct messages that waited, `/dms`).
    pub(in crate::core) fn reply_dated(&mut self, conn: ConnId, line: &ServerLine) {
        let Some(f) = self.sessions.get(conn).map(|c| c.format()) else {
            return;
        };
        if f == Format::Human {
            let data = crate::core::Bytes::from(line.encode_at(Format::Stamped, 0));
            self.out.send_bytes(conn, data);
        } else {
            self.reply(conn, line);
        }
    }

    /// `/search text [#room] [n]`: kept lines that hold `text` (ASCII
    /// letters without regard to case), newest first. Searched: the rooms
    /// one may read (public ones, and private ones one is in) and one's own
    /// kept direct messages; never envelopes. At most
    /// `--search-budget` bytes of kept text are read, newest first, so a
    /// search costs the loop a bounded time whatever the history holds.
    pub(in crate::core) fn search(
        &mut self,
        conn: ConnId,
        text: &str,
        room: Option<&RoomRef>,
        count: Option<usize>,
    ) {
        let n = count.unwrap_or(SEARCH_DEFAULT).clamp(1, SEARCH_MAX);
        let keys: Vec<String> = match room {
            Some(r) => match self.readable_room(conn, Some(r), "search it") {
                Some(k) => vec![k],
                None => return,
            },
            None => self.readable_rooms(conn),
        };
        let mut sources: Vec<Source<'_>> = keys
            .iter()
            .filter_map(|k| self.rooms.get(k))
            .map(|r| Source::room(r.history()))
            .collect();
        let rooms = sources.len();
        let mut convs = 0;
        if room.is_none() && self.logged_in(conn) {
            let me = self.nick_of(conn);
            for q in self.dms.conversations_of(&me) {
                sources.push(Source::dms(q));
                convs += 1;
            }
        }
        let Found {
            lines,
            read,
            exhausted,
        } = search::run(sources, text, n, self.cfg.search_budget);
        let found = lines.len();
        for l in lines {
            self.reply(conn, &ServerLine::Found(Box::new(l)));
        }
        let mut summary = format!(
            "{found} {} for \"{text}\", newest first ({read} kept {} read in {rooms} {}",
            plural(found, "line", "lines"),
            plural(read, "line", "lines"),
            plural(rooms, "room", "rooms"),
        );
        if convs > 0 {
            summary.push_str(&format!(
                " and {convs} {}",
                plural(convs, "conversation", "conversations")
            ));
        }
        summary.push(')');
        if exhausted {
            summary.push_str("; older lines were not searched: name a room to search further back");
        }
        self.reply(conn, &ServerLine::ok("search", summary));
    }

    /// Keys of the rooms `conn` may read: every public room, and the
    /// private ones it is in.
    fn readable_rooms(&self, conn: ConnId) -> Vec<String> {
        let mine: Vec<String> = self
            .sessions
            .get(conn)
            .map(|c| c.rooms().iter().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        let mut keys: Vec<String> = self
            .rooms
            .iter()
            .filter(|(k, r)| !r.private() || mine.contains(k))
            .map(|(k, _)| k.clone())
            .collect();
        // Lines of one millisecond in two rooms come out in one order.
        keys.sort_unstable();
        keys
    }
}

impl Core {
    /// `/ignore nick`, `/unignore nick`, `/ignore` (the list). For a
    /// logged-in account the list is kept and restored at login.
    pub(in crate::core) fn ignore(&mut self, conn: ConnId, nick: Option<&str>, on: bool) {
        let Some(nick) = nick else {
            let list = self
                .sessions
                .get(conn)
                .map(|c| c.ignores().to_vec())
                .unwrap_or_default();
            let text = if list.is_empty() {
                "you ignore nobody".to_string()
            } else {
                format!("you ignore {}", list.join(", "))
            };
            self.reply(conn, &ServerLine::ok("ignore", text));
            return;
        };
        let key = fold(nick);
        if key == fold(&self.nick_of(conn)) {
            self.error(conn, "usage", "you cannot ignore yourself");
            return;
        }
        if !self.sessions.set_ignore(conn, &key, on) {
            let text = if on {
                format!("you ignore {nick} already")
            } else {
                format!("you do not ignore {nick}")
            };
            self.error(conn, "no-change", text);
            return;
        }
        if self.logged_in(conn) {
            let me = self.nick_of(conn);
            if let Some(a) = self.accounts.get_mut(&fold(&me)) {
                a.set_ignore(&key, on);
            }
            self.persist_shared(Record::Ignore {
                nick: me,
                whom: key.clone(),
                on,
            });
        }
        let text = if on {
            format!("you ignore {nick}: their room lines and direct messages are not shown to you")
        } else {
            format!("you no longer ignore {nick}")
        };
        self.reply(conn, &ServerLine::ok("ignore", text));
    }

    /// At login: the account's ignore list joins the session's.
    pub(in crate::core) fn restore_ignores(&mut self, conn: ConnId, key: &str) {
        let list = self
            .accounts
            .get(key)
            .map(|a| a.ignores().to_vec())
            .unwrap_or_default();
        for k in list {
            self.sessions.set_ignore(conn, &k, true);
        }
    }
}
