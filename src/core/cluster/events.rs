//! What the core does with each [`FromCluster`] event: room lines in the
//! stream's order, history for rooms just followed, nick claims answered,
//! other nodes' people coming and going, direct messages, shared records,
//! and requests the bridge refused.

use std::rc::Rc;
use std::time::Instant;

use super::state::Post;
use super::{Claim, FromCluster, Presence, ToCluster, line_room, public_keys};
use crate::core::{ConnId, Core};
use crate::proto::{ServerLine, fold};
use crate::record::Record;

impl Core {
    /// Feeds one cluster event in.
    pub fn handle_cluster(&mut self, ev: FromCluster, now: Instant) {
        self.out.set_clock(self.unix_ms(now));
        if self.cluster.is_none() {
            return;
        }
        match ev {
            FromCluster::Up => self.link_changed(true),
            FromCluster::Down => self.link_changed(false),
            FromCluster::Posted { room, line, id } => self.posted(&room, &line, id),
            FromCluster::History { room, lines } => self.history_came(&room, &lines),
            FromCluster::Unsent { room, line, id } => self.unsent(&room, &line, id),
            FromCluster::Claimed { id, outcome } => self.claimed(id, outcome, now),
            FromCluster::NickLost(nick) => self.nick_lost(&nick),
            FromCluster::Presence { node, presence } => self.remote_presence(&node, presence),
            FromCluster::Roster { node, people } => self.roster(&node, people),
            FromCluster::NodeGone(node) => self.node_gone(&node),
            FromCluster::Dm { line } => self.remote_dm(&line),
            FromCluster::DmFailed { from, to } => {
                let text = format!("{to} went offline; your message was not delivered");
                self.tell_sender(&from, "no-such-user", &text);
            }
            FromCluster::Inbox { nick, lines } => self.inbox(&nick, &lines),
            FromCluster::State(Record::RoomGone { room }) => self.room_deleted_elsewhere(&room),
            FromCluster::State(rec) => self.shared_record(rec),
            FromCluster::Refused(req) => self.refused(req, now),
        }
    }

    /// An error line for a local person by nick, if they are here.
    fn tell_sender(&mut self, nick: &str, code: &str, text: &str) {
        if let Some(conn) = self.sessions.by_nick(&fold(nick)) {
            self.error(conn, code, text);
        }
    }

    /// A record another node wrote (an account, a profile, a key, a room
    /// owner): applied here and journaled here, so this node restarts with
    /// it even without NATS. A guest here holding a nick now registered
    /// elsewhere keeps it until it leaves, as on one node when an account is
    /// made under a guest.
    fn shared_record(&mut self, rec: Record) {
        if self.restore(rec.clone()) {
            self.persist(rec);
        }
    }

    /// The bridge's queue was full and `req` never reached it. What that
    /// means for people here: a room line is shown here only (other nodes
    /// miss it), a nick claim is answered "busy", a direct message is
    /// reported undelivered; everything else is counted and dropped (the
    /// periodic presence and roster exchanges repair presence).
    fn refused(&mut self, req: ToCluster, now: Instant) {
        if let Some(c) = self.cluster.as_mut() {
            c.count_refused();
        }
        match req {
            ToCluster::Post {
                room,
                line,
                id,
                local,
            } => {
                let post = self.cluster.as_mut().and_then(|c| c.take_post(id));
                let Some(Post::Waiting(sender)) = post.filter(|_| !local) else {
                    return;
                };
                let sender = self.live_sender(sender);
                if let Some(parsed) = ServerLine::parse_foreign(&line)
                    && line_room(&parsed).is_some_and(|r| fold(r) == room)
                {
                    self.show_room_line(&room, parsed, sender, true);
                }
            }
            ToCluster::Claim { id, .. } => self.claimed(id, Claim::Busy, now),
            ToCluster::Dm { to, line, .. } | ToCluster::Store { to, line } => {
                if let Some(ServerLine::Dm { from, .. }) = ServerLine::parse_foreign(&line) {
                    let text = format!(
                        "the cluster is busy: your message to {to} was not delivered; try again"
                    );
                    self.tell_sender(&from, "busy", &text);
                }
            }
            ToCluster::Follow(_)
            | ToCluster::Unfollow(_)
            | ToCluster::Release(_)
            | ToCluster::Presence(_)
            | ToCluster::TakeInbox(_)
            | ToCluster::State(_) => {}
        }
    }

    /// `/delete` on another node: the room's people here are put out of it
    /// as they would be on that node.
    fn room_deleted_elsewhere(&mut self, name: &str) {
        let key = fold(name);
        let Some(room) = self.rooms.get(&key) else {
            return;
        };
        if room.permanent() || room.private() {
            return;
        }
        let owner = room.owner().unwrap_or_default().to_string();
        self.remove_room(&key, owner);
    }

    fn link_changed(&mut self, up: bool) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if !c.set_up(up) {
            return;
        }
        let text = if up {
            "the cluster is reachable again: everybody on every node sees your messages"
        } else {
            "the cluster is unreachable: only people on this server see your messages for now; they will reach the others when it returns"
        };
        let line = ServerLine::info("cluster", text);
        let named = self.sessions.named_conns();
        for &conn in &named {
            self.reply(conn, &line);
        }
        if !up {
            // Claims in flight will be answered Unreachable by the bridge.
            return;
        }
        // Tell the others who is here, in full.
        let people: Vec<(String, Vec<String>)> = named
            .iter()
            .filter_map(|&k| self.sessions.get(k))
            .filter_map(|c| c.nick().map(|n| (n.to_string(), c.public_rooms())))
            .collect();
        for (nick, rooms) in people {
            self.presence(Presence::Online { nick, rooms });
        }
    }

    fn posted(&mut self, key: &str, line: &str, id: Option<u64>) {
        let post = id.and_then(|id| self.cluster.as_mut()?.take_post(id));
        let sender = match post {
            // Shown here during an outage: only its place in the order is new.
            Some(Post::Shown) => return,
            Some(Post::Waiting(sender)) => self.live_sender(sender),
            None => None,
        };
        let Some(parsed) = ServerLine::parse_foreign(line) else {
            return;
        };
        // A line claiming another room than its subject is not shown.
        if line_room(&parsed).is_none_or(|r| fold(r) != key) {
            return;
        }
        if id.is_none()
            && let Some(c) = self.cluster.as_mut()
        {
            c.count_received();
        }
        // The stream keeps it: nothing to journal here.
        self.show_room_line(key, parsed, sender, false);
    }

    /// Shows a room line that the cluster ordered (or handed back), keeps
    /// it in the room's history, and journals it if `journal`. A topic
    /// line sets the topic instead.
    fn show_room_line(
        &mut self,
        key: &str,
        line: ServerLine,
        sender: Option<ConnId>,
        journal: bool,
    ) {
        if !self.rooms.contains(key) {
            return;
        }
        if let ServerLine::Topic { room, text, .. } = &line {
            self.rooms.set_topic(key, text.clone());
            if journal && self.rooms.get(key).is_some_and(|r| !r.private()) {
                self.persist(Record::Topic {
                    room: room.clone(),
                    text: text.clone(),
                });
            }
            self.broadcast(key, &line, None);
            return;
        }
        let line = Rc::new(line);
        self.broadcast(key, &line, sender);
        let kept = self.rooms.remember(key, line);
        if journal {
            self.persist_message(key, &kept);
        }
    }

    fn unsent(&mut self, key: &str, line: &str, id: u64) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        // Its echo, when it is published at last, is not shown again. (A
        // topic or an upload has no sender to spare the echo; it is shown
        // all the same: found while splitting the core, they were not.)
        let Some(Post::Waiting(sender)) = c.shown(id) else {
            return;
        };
        let sender = self.live_sender(sender);
        let Some(parsed) = ServerLine::parse_foreign(line) else {
            return;
        };
        if line_room(&parsed).is_none_or(|r| fold(r) != key) {
            return;
        }
        // Not in the stream yet: this node's journal keeps it meanwhile.
        self.show_room_line(key, parsed, sender, true);
    }

    fn history_came(&mut self, key: &str, lines: &[String]) {
        let waiting = self
            .cluster
            .as_mut()
            .map(|c| c.take_waiting(key))
            .unwrap_or_default();
        if !self.rooms.contains(key) {
            return;
        }
        let parsed = lines
            .iter()
            .filter_map(|l| ServerLine::parse_foreign(l))
            .collect();
        self.rooms.replace_history(key, parsed);
        let Some(room) = self.rooms.get(key) else {
            return;
        };
        let name = room.name().to_string();
        let recent = room.page(self.cfg.history_on_join, None, self.cfg.history_burst);
        for conn in waiting {
            if self.sessions.get(conn).is_some_and(|c| c.in_room(key)) {
                self.send_history(conn, &name, &recent);
            }
        }
    }

    fn claimed(&mut self, id: u64, outcome: Claim, now: Instant) {
        let Some(claim) = self.cluster.as_mut().and_then(|c| c.take_claim(id)) else {
            return;
        };
        let (conn, nick, authed) = (claim.conn, claim.nick, claim.authed);
        let alive = self
            .sessions
            .get(conn)
            .is_some_and(|c| c.serial() == claim.serial);
        let mut rest = if alive {
            self.sessions.take_held(conn)
        } else {
            Default::default()
        };
        match (alive, outcome) {
            (true, Claim::Won | Claim::Unreachable) => {
                self.finish_nick(conn, &nick, authed, now);
                if authed {
                    self.login_done(conn, &nick, now);
                }
            }
            (true, Claim::Lost) => {
                let text = format!("nick {nick} is taken; choose another");
                self.error(conn, "nick-taken", text);
            }
            (true, Claim::Busy) => {
                let text = format!(
                    "the cluster is busy: nick {nick} could not be checked; try again in a moment"
                );
                self.error(conn, "busy", text);
            }
            // It left while we asked: give the nick back.
            (false, Claim::Won) => self.ask_cluster(ToCluster::Release(nick)),
            (false, _) => {}
        }
        // What it typed meanwhile, in order; a line that starts another
        // claim holds the rest again.
        while let Some(line) = rest.pop_front() {
            self.handle_line(conn, &line, now);
            if self.cluster.as_ref().is_some_and(|c| c.claiming(conn)) {
                for l in rest.drain(..) {
                    let _ = self.sessions.hold_line(conn, &l, usize::MAX);
                }
            }
        }
    }

    fn nick_lost(&mut self, nick: &str) {
        let Some(conn) = self.sessions.by_nick(&fold(nick)) else {
            return;
        };
        let text = format!(
            "nick {nick} was taken on another server while the cluster was unreachable; reconnect and choose another"
        );
        self.reply(conn, &ServerLine::error("nick-taken", text));
        self.close(conn, "nick collision after a cluster outage");
    }

    fn remote_presence(&mut self, node: &str, p: Presence) {
        // Another node's word, checked here as a socket's would be.
        let named_right = match &p {
            Presence::Online { nick, .. }
            | Presence::Offline { nick }
            | Presence::Join { nick, .. }
            | Presence::Part { nick, .. } => crate::proto::valid_nick(nick),
            Presence::Rename { old, new } => {
                crate::proto::valid_nick(old) && crate::proto::valid_nick(new)
            }
        };
        if !named_right {
            return;
        }
        match p {
            Presence::Online { nick, rooms } => {
                self.remove_remote(&fold(&nick), None);
                self.add_remote(node, &nick, public_keys(&rooms));
            }
            Presence::Offline { nick } => {
                self.remove_remote(&fold(&nick), Some("quit"));
            }
            Presence::Rename { old, new } => self.remote_renamed(&old, &new),
            Presence::Join { nick, room } => self.remote_moved(nick, room, true),
            Presence::Part { nick, room } => self.remote_moved(nick, room, false),
        }
    }

    /// Another node's person entered (`joined`) or left a room: counted,
    /// and announced unless the room is quiet.
    fn remote_moved(&mut self, nick: String, room: String, joined: bool) {
        let Some(key) = public_keys(&[room]).pop() else {
            return;
        };
        let nick_key = fold(&nick);
        let changed = self.cluster.as_mut().is_some_and(|c| {
            if joined {
                c.remote_joined(&nick_key, &key)
            } else {
                c.remote_left(&nick_key, &key)
            }
        });
        let Some(name) = self.rooms.name_of(&key) else {
            return;
        };
        if !changed || self.room_is_quiet(&key) {
            return;
        }
        let line = if joined {
            ServerLine::Join { room: name, nick }
        } else {
            ServerLine::Part {
                room: name,
                nick,
                reason: String::new(),
            }
        };
        self.announce(std::slice::from_ref(&key), &line, None);
    }

    fn remote_renamed(&mut self, old: &str, new: &str) {
        let (old_key, new_key) = (fold(old), fold(new));
        let Some(r) = self.remote(&old_key) else {
            return;
        };
        let loud: Vec<String> = r
            .rooms()
            .iter()
            .filter(|k| !self.room_is_quiet(k))
            .cloned()
            .collect();
        let local_holder = self.sessions.by_nick(&new_key).is_some();
        if let Some(c) = self.cluster.as_mut() {
            // Whoever had the new nick (stale) or a local holder wins over a
            // rename announced late.
            if new_key != old_key {
                c.remove_remote(&new_key);
            }
            if local_holder {
                c.remove_remote(&old_key);
            } else {
                c.rename_remote(&old_key, new);
            }
        }
        let line = ServerLine::NickChange {
            old: old.to_string(),
            new: new.to_string(),
        };
        self.announce(&loud, &line, None);
    }

    fn room_is_quiet(&self, key: &str) -> bool {
        let local = self.rooms.get(key).map_or(0, |r| r.members().len());
        local + self.remote_count(key) > self.cfg.quiet_room
    }

    /// `rooms`: keys from [`public_keys`] (a room named twice counted
    /// twice before; found by fuzz/cluster_events).
    fn add_remote(&mut self, node: &str, nick: &str, rooms: Vec<String>) {
        // Somebody here with the same nick: the nick bucket decides, and a
        // stale claim shows as this (a node that died and came back).
        if self.sessions.by_nick(&fold(nick)).is_some() {
            return;
        }
        // Named again (a roster listing someone twice): the last word wins.
        if let Some(c) = self.cluster.as_mut() {
            c.add_remote(node, nick, rooms);
        }
    }

    /// Forgets a remote person; `quit`: tell the rooms they were in.
    fn remove_remote(&mut self, key: &str, quit: Option<&str>) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let Some(r) = c.remote(key) else {
            return;
        };
        if let Some(reason) = quit {
            let line = ServerLine::Quit {
                nick: r.nick().to_string(),
                reason: reason.to_string(),
            };
            let loud: Vec<String> = r
                .rooms()
                .iter()
                .filter(|k| !self.room_is_quiet(k))
                .cloned()
                .collect();
            self.announce(&loud, &line, None);
        }
        if let Some(c) = self.cluster.as_mut() {
            c.remove_remote(key);
        }
    }

    fn roster(&mut self, node: &str, people: Vec<(String, Vec<String>)>) {
        for k in self.people_on(node) {
            self.remove_remote(&k, None);
        }
        for (nick, rooms) in people {
            if crate::proto::valid_nick(&nick) {
                self.add_remote(node, &nick, public_keys(&rooms));
            }
        }
    }

    fn people_on(&self, node: &str) -> Vec<String> {
        self.cluster
            .as_ref()
            .map(|c| c.people_on(node))
            .unwrap_or_default()
    }

    fn node_gone(&mut self, node: &str) {
        for k in self.people_on(node) {
            self.remove_remote(&k, Some("server gone"));
        }
    }

    fn remote_dm(&mut self, line: &str) {
        let Some(parsed @ ServerLine::Dm { .. }) = ServerLine::parse_foreign(line) else {
            return;
        };
        let ServerLine::Dm { from, to, .. } = &parsed else {
            return;
        };
        let Some(conn) = self.sessions.by_nick(&fold(to)) else {
            return;
        };
        if let Some(c) = self.cluster.as_mut() {
            c.count_received();
        }
        self.keep_dm(from, to, &parsed);
        self.reply(conn, &parsed);
    }

    fn inbox(&mut self, nick: &str, lines: &[String]) {
        let Some(conn) = self.sessions.by_nick(&fold(nick)) else {
            return;
        };
        let parsed: Vec<ServerLine> = lines
            .iter()
            .filter_map(|l| ServerLine::parse_foreign(l))
            .filter(|l| matches!(l, ServerLine::Dm { .. }))
            .collect();
        if parsed.is_empty() {
            return;
        }
        for l in &parsed {
            if let ServerLine::Dm { from, to, .. } = l {
                self.keep_dm(from, to, l);
            }
        }
        self.deliver_waiting(conn, parsed);
    }
}
