//! Room commands: `/join` (and `/join new`), `/part`, plain lines and `/me`,
//! `/enc`, `/topic`, `/image` and `/file`, `/history`, `/rooms`, `/who`,
//! `/create` and `/delete`; and what they share: showing, keeping and
//! journaling a room line, and making room for a new room.

use std::rc::Rc;
use std::time::Instant;

use super::super::rooms::{Page, line_ts};
use super::super::{ConnId, Core, ToCluster, plural};
use crate::media;
use crate::proto::{self, RoomRef, ServerLine, Upload, fold};
use crate::record::Record;

/// Room for an envelope's own bytes beyond the image it may carry.
const ENVELOPE_OVERHEAD: usize = 64 * 1024;

impl Core {
    fn too_many_joined(&mut self, conn: ConnId) -> bool {
        let max = self.cfg.max_joined;
        if self
            .sessions
            .get(conn)
            .is_some_and(|c| c.rooms().len() >= max)
        {
            let text = format!("you are in {max} rooms, the limit; /part one first");
            self.error(conn, "too-many-joined", text);
            return true;
        }
        false
    }

    pub(in crate::core) fn join_new(&mut self, conn: ConnId, now: Instant) {
        // Checked before the room exists: a private room nobody joined would
        // never be removed (found by fuzz/core_sequences).
        if self.too_many_joined(conn) || self.made_too_many(conn) {
            return;
        }
        if !self.make_room_space() {
            self.error(
                conn,
                "too-many-rooms",
                "the server has too many rooms; try again later",
            );
            return;
        }
        let Some(addr) = self.sessions.get(conn).map(|c| c.addr()) else {
            return;
        };
        // 36^6 codes; a collision is retried, and after a few tries the
        // entropy source is broken rather than unlucky.
        for _ in 0..16 {
            let code = self.random_code();
            let r = RoomRef::Private(code.clone());
            if self.rooms.contains(&r.key()) {
                continue;
            }
            self.rooms.create_by(&r, addr);
            let text = format!(
                "created private room ~{code}: it is not listed; others join with /join {code}"
            );
            self.reply(conn, &ServerLine::ok("created", text));
            self.join(conn, &r, now);
            return;
        }
        self.error(
            conn,
            "internal",
            "could not create a private room; try again",
        );
    }

    fn random_code(&mut self) -> String {
        const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut code = String::with_capacity(proto::CODE_LEN);
        let mut buf = [0u8; 16];
        while code.len() < proto::CODE_LEN {
            self.entropy.fill(&mut buf);
            for b in buf {
                // 252 = 7 * 36: rejecting above it keeps the choice uniform.
                if b < 252
                    && code.len() < proto::CODE_LEN
                    && let Some(&ch) = ALPHABET.get(usize::from(b % 36))
                {
                    code.push(char::from(ch));
                }
            }
        }
        code
    }

    /// The per-address limit on rooms made: true (and said) if reached.
    fn made_too_many(&mut self, conn: ConnId) -> bool {
        let max = self.cfg.max_rooms_per_ip;
        let Some(addr) = self.sessions.get(conn).map(|c| c.addr()) else {
            return true;
        };
        if self.rooms.made_by(addr) < max {
            return false;
        }
        let text = format!(
            "your address has made {max} rooms that still exist, the limit; join an existing one (/rooms)"
        );
        self.error(conn, "too-many-rooms", text);
        true
    }

    pub(in crate::core) fn join(&mut self, conn: ConnId, r: &RoomRef, now: Instant) {
        let key = r.key();
        let Some(c) = self.sessions.get(conn) else {
            return;
        };
        let (nick, format, addr) = (
            c.nick().unwrap_or_default().to_string(),
            c.format(),
            c.addr(),
        );
        if c.in_room(&key) {
            self.sessions.set_current(conn, &key);
            self.tell_current(conn);
            return;
        }
        if self.too_many_joined(conn) {
            return;
        }
        if let RoomRef::Private(code) = r {
            if let Some(w) = self.sessions.code_wait(addr, now) {
                let text = format!(
                    "too many wrong room codes from your address: try again in {} seconds",
                    w.as_secs().max(1)
                );
                self.error(conn, "throttled", text);
                return;
            }
            if !self.rooms.contains(&key) {
                self.sessions.wrong_code(addr, now);
                let text = format!(
                    "no private room with code {code}; check the code, or /join new to make one"
                );
                self.error(conn, "no-such-room", text);
                return;
            }
        }
        if let Some(text) = self.ban_on(conn, &key, now) {
            self.error(conn, "banned", text);
            return;
        }
        if !self.rooms.contains(&key) {
            if self.made_too_many(conn) {
                return;
            }
            if !self.make_room_space() {
                self.error(
                    conn,
                    "too-many-rooms",
                    "the server has too many rooms; join an existing one (/rooms)",
                );
                return;
            }
            self.rooms.create_by(r, addr);
        }
        if let Some(shared) = self.rooms.add_member(&key, conn, format) {
            self.sessions.joined(conn, shared);
        }
        let Some(room) = self.rooms.get(&key) else {
            return;
        };
        let (name, topic) = (room.name().to_string(), room.topic().to_string());
        let recent = room.page(self.cfg.history_on_join, None, self.cfg.history_burst);
        let quiet = room.members().len() + self.remote_count(&key) > self.cfg.quiet_room;
        let later = self.cluster_joined(conn, &key, &nick);
        let line = ServerLine::Join {
            room: name.clone(),
            nick,
        };
        // Another session of the same person already here: the room sees
        // nobody new.
        if !quiet && !self.other_session_in(conn, &key) {
            self.announce(std::slice::from_ref(&key), &line, Some(conn));
        }
        // The joiner always sees its own join, whatever its format.
        self.reply(conn, &line);
        if !topic.is_empty() {
            let t = ServerLine::Topic {
                room: name.clone(),
                nick: String::new(),
                text: topic,
            };
            self.reply(conn, &t);
        }
        self.present(conn, &key);
        if !later {
            self.send_history(conn, &name, &recent);
        }
        self.tell_current(conn);
    }

    /// A block of earlier lines: a header saying how many, then the lines.
    /// A block of earlier lines: a header saying how many, then the lines,
    /// then, if the byte budget left older ones out, how to ask for them.
    pub(in crate::core) fn send_history(&mut self, conn: ConnId, room: &str, page: &Page) {
        let Some(first) = page.lines.first() else {
            return;
        };
        let header = ServerLine::History {
            room: room.to_string(),
            count: page.lines.len(),
        };
        self.reply(conn, &header);
        for l in &page.lines {
            self.reply(conn, l);
        }
        if page.left_out > 0 {
            let ts = line_ts(first).unwrap_or(0);
            let n = page.left_out;
            let text = format!(
                "{n} older {} in {room} not sent at once: /history {room} {n} before {ts}",
                plural(n, "message", "messages")
            );
            self.reply(conn, &ServerLine::info("history-more", text));
        }
    }

    /// Takes `conn` out of a room, telling the room (unless it is quiet,
    /// or the person is still there in another session).
    pub(in crate::core) fn leave_room(&mut self, conn: ConnId, key: &str, line: &ServerLine) {
        let quiet = self
            .rooms
            .get(key)
            .is_some_and(|r| r.members().len() > self.cfg.quiet_room)
            || self.other_session_in(conn, key);
        if !quiet {
            self.broadcast(key, line, None);
        }
        self.rooms.remove_member(key, conn);
        let nick = self
            .sessions
            .get(conn)
            .and_then(|c| c.nick().map(str::to_string));
        self.cluster_left(key, nick.as_deref());
        self.sessions.left(conn, key);
    }

    /// The key of the room a command names, or of the current room; an error
    /// for the user if there is none.
    fn resolve_room(&mut self, conn: ConnId, r: Option<&RoomRef>) -> Option<String> {
        let key = match r {
            Some(r) => r.key(),
            None => match self
                .sessions
                .get(conn)
                .and_then(|c| c.current().map(str::to_string))
            {
                Some(k) => k,
                None => {
                    self.error(conn, "no-room", "you are not in a room; /join #room first");
                    return None;
                }
            },
        };
        if !self.rooms.contains(&key) {
            let shown = r.map(RoomRef::display).unwrap_or_default();
            self.error(
                conn,
                "no-such-room",
                format!("no room {shown}; /rooms lists them"),
            );
            return None;
        }
        Some(key)
    }

    /// [`Core::resolve_room`] for a command that reads a room: a private
    /// room only for its members (`what` they would want to do there).
    pub(in crate::core) fn readable_room(
        &mut self,
        conn: ConnId,
        r: Option<&RoomRef>,
        what: &str,
    ) -> Option<String> {
        let key = self.resolve_room(conn, r)?;
        let member = self.sessions.get(conn).is_some_and(|c| c.in_room(&key));
        let room = self.rooms.get(&key)?;
        if room.private() && !member {
            let text = format!("join {} to {what}", room.name());
            self.error(conn, "not-in-room", text);
            return None;
        }
        Some(key)
    }

    /// The key of the current room, or an error saying what to do.
    pub(in crate::core) fn current_room(&mut self, conn: ConnId, what: &str) -> Option<String> {
        let key = self
            .sessions
            .get(conn)
            .and_then(|c| c.current().map(str::to_string));
        if key.is_none() {
            self.error(
                conn,
                "no-room",
                format!("you are not in a room{what}; /join #room first"),
            );
        }
        key
    }

    pub(in crate::core) fn part(&mut self, conn: ConnId, r: Option<&RoomRef>) {
        let Some(key) = self.resolve_room(conn, r) else {
            return;
        };
        let member = self.sessions.get(conn).is_some_and(|c| c.in_room(&key));
        let Some(room) = self.rooms.get(&key) else {
            return;
        };
        if !member {
            let text = format!("you are not in {}", room.name());
            self.error(conn, "not-in-room", text);
            return;
        }
        let line = ServerLine::Part {
            room: room.name().to_string(),
            nick: self.nick_of(conn),
            reason: String::new(),
        };
        let quiet = room.members().len() + self.remote_count(&key) > self.cfg.quiet_room
            || self.other_session_in(conn, &key);
        self.leave_room(conn, &key, &line);
        if quiet {
            self.reply(conn, &line);
        }
        self.tell_current(conn);
    }

    pub(in crate::core) fn say(&mut self, conn: ConnId, text: String, action: bool, now: Instant) {
        let Some(key) = self.current_room(conn, "") else {
            return;
        };
        if self.muted(conn, &key, now) {
            return;
        }
        let Some(room_name) = self.rooms.name_of(&key) else {
            return;
        };
        let nick = self.nick_of(conn);
        let ts = self.rooms.stamp(&key, self.unix_ms(now));
        let line = if action {
            ServerLine::Action {
                room: room_name,
                nick,
                ts,
                text,
            }
        } else {
            ServerLine::Msg {
                room: room_name,
                nick,
                ts,
                text,
            }
        };
        self.room_line(&key, Rc::new(line), Some(conn));
    }

    /// Shows a room line to its members, keeps and journals it; in a cluster
    /// it goes to the room's stream instead and is shown when it comes back.
    /// `sender`: the human who typed it does not get it echoed.
    fn room_line(&mut self, key: &str, line: Rc<ServerLine>, sender: Option<ConnId>) {
        // `/set echo on`: the sender gets its own line back like anyone.
        let sender = sender.filter(|&c| {
            !self
                .sessions
                .get(c)
                .is_some_and(|s| s.settings().get(proto::Setting::Echo))
        });
        if self.post(key, &line, sender) {
            return;
        }
        self.broadcast(key, &line, sender);
        // History and the journal keep an upload's notice, not its payload
        // (and a big envelope's): see `Rooms::kept_form`.
        let kept = self.rooms.remember(key, line);
        self.persist_message(key, &kept);
        self.post_later(key, &kept);
    }

    /// Relays an end-to-end envelope to the current room. The server checks
    /// only its shape and size; what it says is unknowable here.
    pub(in crate::core) fn say_encrypted(&mut self, conn: ConnId, data: String, now: Instant) {
        let Some(key) = self.current_room(conn, "") else {
            return;
        };
        if self.muted(conn, &key, now) {
            return;
        }
        let max = usize::try_from(self.cfg.max_image)
            .unwrap_or(usize::MAX)
            .saturating_add(ENVELOPE_OVERHEAD);
        if !proto::shapes::room_envelope_ok(&data, max) {
            self.error(
                conn,
                "bad-envelope",
                "not a valid end-to-end envelope (or too large); update chatc",
            );
            return;
        }
        let Some(room) = self.rooms.name_of(&key) else {
            return;
        };
        let line = Rc::new(ServerLine::Encrypted {
            room,
            nick: self.nick_of(conn),
            ts: self.rooms.stamp(&key, self.unix_ms(now)),
            data,
        });
        self.room_line(&key, line, Some(conn));
    }

    /// Journals a room line, unless the room is private (ephemeral).
    pub(in crate::core) fn persist_message(&mut self, key: &str, line: &ServerLine) {
        if self.rooms.get(key).is_some_and(|r| !r.private()) {
            self.persist(Record::Message {
                line: line.encode_machine(),
            });
        }
    }

    /// Ensures a new room may be created, dropping (and journaling the end
    /// of) the least recently active unused one if the server is full. False
    /// if every room is in use. Dropping an idle room is this node's own
    /// affair: it is not shared with a cluster.
    fn make_room_space(&mut self) -> bool {
        match self.rooms.make_space(self.cfg.max_rooms) {
            Ok(None) => true,
            Ok(Some(name)) => {
                self.persist(Record::RoomGone { room: name });
                true
            }
            Err(()) => false,
        }
    }

    pub(in crate::core) fn topic(&mut self, conn: ConnId, text: Option<String>) {
        let Some(key) = self.resolve_room(conn, None) else {
            return;
        };
        let Some(room) = self.rooms.get(&key) else {
            return;
        };
        let name = room.name().to_string();
        let Some(t) = text else {
            let line = if room.topic().is_empty() {
                ServerLine::info(
                    "topic",
                    format!("{name} has no topic; set one with /topic <text>"),
                )
            } else {
                ServerLine::Topic {
                    room: name,
                    nick: String::new(),
                    text: room.topic().to_string(),
                }
            };
            self.reply(conn, &line);
            return;
        };
        if !self.may_set_topic(conn, &key) {
            let text = format!("the topic of {name} is set by its owner and operators");
            self.error(conn, "not-operator", text);
            return;
        }
        if t.chars().count() > proto::TOPIC_MAX {
            let text = format!("a topic is at most {} characters", proto::TOPIC_MAX);
            self.error(conn, "too-long", text);
            return;
        }
        let private = room.private();
        let text = if t == "-" { String::new() } else { t };
        let line = ServerLine::Topic {
            room: name.clone(),
            nick: self.nick_of(conn),
            text: text.clone(),
        };
        if self.post(&key, &line, None) {
            return;
        }
        self.rooms.set_topic(&key, text.clone());
        if !private {
            self.persist(Record::Topic { room: name, text });
        }
        self.broadcast(&key, &line, None);
    }

    pub(in crate::core) fn upload(
        &mut self,
        conn: ConnId,
        kind: Upload,
        name: Option<String>,
        data: String,
        now: Instant,
    ) {
        let what = match kind {
            Upload::Image => "image",
            Upload::File => "file",
        };
        let Some(key) = self.current_room(conn, &format!(" to send the {what} to")) else {
            return;
        };
        if self.muted(conn, &key, now) {
            return;
        }
        let media = match media::check(&data, self.cfg.max_image, kind == Upload::Image) {
            Ok(m) => m,
            Err(e) => {
                self.stats.lines_rejected += 1;
                self.error(conn, e.code(), format!("{what} refused: {e}"));
                return;
            }
        };
        let name = name.unwrap_or_else(|| default_name(kind, media.mime));
        let room = self.rooms.name_of(&key).unwrap_or_default();
        let line = ServerLine::Upload {
            kind,
            room,
            nick: self.nick_of(conn),
            ts: self.rooms.stamp(&key, self.unix_ms(now)),
            mime: media.mime.to_string(),
            size: media.size,
            name,
            data,
        };
        self.room_line(&key, Rc::new(line), None);
    }

    pub(in crate::core) fn history(
        &mut self,
        conn: ConnId,
        r: Option<&RoomRef>,
        count: Option<usize>,
        before: Option<u64>,
    ) {
        let Some(key) = self.readable_room(conn, r, "read its history") else {
            return;
        };
        let Some(room) = self.rooms.get(&key) else {
            return;
        };
        let name = room.name().to_string();
        let n = count.unwrap_or(self.cfg.history_on_join);
        let page = room.page(n, before, self.cfg.history_burst);
        if page.lines.is_empty() {
            let text = match before {
                None => format!("no messages in {name} yet"),
                Some(_) => format!("no earlier messages in {name}"),
            };
            self.reply(conn, &ServerLine::info("history", text));
        } else {
            self.send_history(conn, &name, &page);
        }
    }

    pub(in crate::core) fn list_rooms(&mut self, conn: ConnId) {
        const SHOWN: usize = 200;
        let mut list: Vec<(String, usize, String)> = self
            .rooms
            .iter()
            .map(|(_, r)| r)
            .filter(|r| !r.private())
            .map(|r| {
                (
                    r.name().to_string(),
                    r.members().len(),
                    r.topic().to_string(),
                )
            })
            .collect();
        // Busiest first, then by name, so the interesting rooms come first.
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| fold(&a.0).cmp(&fold(&b.0))));
        let total = list.len();
        for (room, members, topic) in list.into_iter().take(SHOWN) {
            let line = ServerLine::RoomInfo {
                room,
                members,
                topic,
            };
            self.reply(conn, &line);
        }
        let more = total.saturating_sub(SHOWN);
        let text = if more > 0 {
            format!("{total} rooms ({more} more not shown)")
        } else {
            format!(
                "{total} {}; /join #name to enter or create one",
                plural(total, "room", "rooms")
            )
        };
        self.reply(conn, &ServerLine::ok("rooms", text));
    }

    pub(in crate::core) fn who(&mut self, conn: ConnId, r: Option<&RoomRef>) {
        const PER_LINE: usize = 50;
        const SHOWN: usize = 1000;
        let Some(key) = self.readable_room(conn, r, "see who is there") else {
            return;
        };
        let Some(room) = self.rooms.get(&key) else {
            return;
        };
        let name = room.name().to_string();
        let mut nicks: Vec<String> = room
            .members()
            .conns()
            .filter_map(|m| {
                self.sessions
                    .get(m)
                    .and_then(|c| c.nick().map(str::to_string))
            })
            .collect();
        nicks.extend(self.remote_nicks_in(&key));
        nicks.sort_by(|a, b| proto::cmp_folded(a, b));
        // One person in several sessions is one name.
        nicks.dedup_by(|a, b| proto::eq_folded(a, b));
        let total = nicks.len();
        for chunk in nicks.chunks(PER_LINE).take(SHOWN / PER_LINE) {
            let line = ServerLine::Names {
                room: name.clone(),
                nicks: chunk.to_vec(),
            };
            self.reply(conn, &line);
        }
        if let Some(text) = self.moderators_of(&key) {
            self.reply(conn, &ServerLine::info("roles", text));
        }
        let more = total.saturating_sub(SHOWN);
        let people = plural(total, "person", "people");
        let text = if more > 0 {
            format!("{total} {people} in {name} ({more} not shown)")
        } else {
            format!("{total} {people} in {name}")
        };
        self.reply(conn, &ServerLine::ok("who", text));
    }

    pub(in crate::core) fn create_room(
        &mut self,
        conn: ConnId,
        r: &RoomRef,
        topic: Option<String>,
        now: Instant,
    ) {
        if !self.require_login(conn, "owning a room") {
            return;
        }
        let key = r.key();
        let me = self.nick_of(conn);
        let max = self.cfg.max_owned;
        if self.rooms.owned_by(&fold(&me)) >= max {
            let text = format!("you own {max} rooms, the limit; /delete one first");
            self.error(conn, "too-many-rooms", text);
            return;
        }
        // Owned rooms are never dropped to make space: they may fill three
        // quarters of --max-rooms, the rest is kept for rooms made on demand.
        if self.rooms.owned_total() >= self.cfg.max_rooms * 3 / 4 {
            self.error(
                conn,
                "too-many-rooms",
                "the server has as many owned rooms as it keeps; try again later",
            );
            return;
        }
        if let Some(room) = self.rooms.get(&key) {
            if room.permanent() {
                let text = format!("{} is a default room and has no owner", room.name());
                self.error(conn, "not-owner", text);
                return;
            }
            if let Some(owner) = room.owner() {
                let text = format!("{} already belongs to {owner}", room.name());
                self.error(conn, "room-owned", text);
                return;
            }
        } else if !self.make_room_space() {
            self.error(conn, "too-many-rooms", "the server has too many rooms");
            return;
        } else {
            self.rooms.create(r);
        }
        let ts = self.unix_ms(now);
        self.rooms.set_owner(&key, me.clone());
        let name = self.rooms.name_of(&key).unwrap_or_default();
        self.persist_shared(Record::RoomOwned {
            room: name.clone(),
            owner: me,
            ts,
        });
        self.reply(
            conn,
            &ServerLine::ok(
                "created",
                format!("{name} is yours: it stays when empty, and only you can /delete it"),
            ),
        );
        let member = self.sessions.get(conn).is_some_and(|c| c.in_room(&key));
        if !member {
            self.join(conn, r, now);
        } else {
            self.sessions.set_current(conn, &key);
            self.tell_current(conn);
        }
        if topic.is_some() {
            self.topic(conn, topic);
        }
    }

    pub(in crate::core) fn delete_room(&mut self, conn: ConnId, r: &RoomRef) {
        let key = r.key();
        let me = fold(&self.nick_of(conn));
        let Some(room) = self.rooms.get(&key) else {
            self.error(conn, "no-such-room", format!("no room {}", r.display()));
            return;
        };
        if room.permanent() {
            let text = format!("{} is a default room and cannot be deleted", room.name());
            self.error(conn, "not-owner", text);
            return;
        }
        let owner = room.owner().map(fold);
        if owner.as_deref() != Some(me.as_str()) || !self.logged_in(conn) {
            let text = match room.owner() {
                Some(o) => format!("only {o}, who owns {}, can delete it", room.name()),
                None => format!(
                    "{} has no owner; only an owned room can be deleted",
                    room.name()
                ),
            };
            self.error(conn, "not-owner", text);
            return;
        }
        let name = room.name().to_string();
        self.remove_room(&key, self.nick_of(conn));
        // Every node deletes it (the journal record is written by
        // `remove_room`, here and on each of them).
        self.ask_cluster(ToCluster::State(Record::RoomGone { room: name.clone() }));
        self.reply(
            conn,
            &ServerLine::ok("deleted", format!("{name} is deleted, with its history")),
        );
    }

    /// Deletes a public room: its members are told (`by` deleted it) and
    /// put out of it, and the deletion is journaled.
    pub(in crate::core) fn remove_room(&mut self, key: &str, by: String) {
        let Some(room) = self.rooms.get(key) else {
            return;
        };
        let name = room.name().to_string();
        let line = ServerLine::Part {
            room: name.clone(),
            nick: by,
            reason: "room deleted".to_string(),
        };
        let members: Vec<ConnId> = room.members().conns().collect();
        self.broadcast(key, &line, None);
        let mut moved = Vec::new();
        for m in members {
            let was_current = self
                .sessions
                .get(m)
                .is_some_and(|c| c.current() == Some(key));
            self.sessions.left(m, key);
            if was_current {
                moved.push(m);
            }
        }
        self.rooms.remove(key);
        self.persist(Record::RoomGone { room: name });
        self.stop_following(key);
        // Those whose lines went there are told where they go now.
        for m in moved {
            self.tell_current(m);
        }
    }
}

fn default_name(kind: Upload, mime: &str) -> String {
    let ext = match mime {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/bmp" => "bmp",
        "image/webp" => "webp",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => "bin",
    };
    match kind {
        Upload::Image => format!("image.{ext}"),
        Upload::File => format!("file.{ext}"),
    }
}
