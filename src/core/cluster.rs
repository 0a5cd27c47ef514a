//! The core's side of a cluster: what it asks of the other nodes, what they
//! tell it, and how it folds remote people into `/who`, `/online`, rooms
//! and direct messages.
//!
//! The core still does no I/O. It emits [`ToCluster`] requests as
//! [`Output::Cluster`](super::Output) and takes [`FromCluster`] events in
//! [`Core::handle_cluster`]; the reactor carries them to and from the NATS
//! bridge (`crate::cluster`). Without `--cluster` none of this runs.
//!
//! Who decides what:
//! * the order of a room is the order of its JetStream stream: a line typed
//!   here goes out as [`ToCluster::Post`] and is shown to local members when
//!   it comes back as [`FromCluster::Posted`], like everybody else's;
//! * a nick belongs to whoever won the create-if-absent in the nick bucket
//!   ([`ToCluster::Claim`]); the core's own table only says who is here;
//! * presence of remote people is what their node announced, dropped when
//!   that node stops beating ([`FromCluster::NodeGone`]).
//!
//! While the cluster is unreachable the core serves its own people alone:
//! room lines are shown and journaled here at once and handed to the bridge
//! to publish later (`local: true`), nicks are granted here and claimed when
//! the link returns.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use super::{ConnId, Core, Output};
use crate::proto::{ServerLine, fold};
use crate::record::Record;

/// A request for the cluster bridge. Room keys are folded (`#lobby`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToCluster {
    /// Append a room line (machine v1) to the room's shared stream. `local`:
    /// it was already shown here because the cluster was unreachable.
    Post {
        room: String,
        line: String,
        id: u64,
        local: bool,
    },
    /// Local people are in this room: deliver its lines here, history first.
    Follow(String),
    /// Nobody here is in this room any more.
    Unfollow(String),
    /// Claim a nick cluster-wide; answered by [`FromCluster::Claimed`].
    Claim { id: u64, nick: String },
    /// Give up a nick this node holds.
    Release(String),
    /// What local people did, for the other nodes' presence.
    Presence(Presence),
    /// A direct message for someone on `node`; kept for them if they turn
    /// out to be offline and `store` (they are registered).
    Dm {
        node: String,
        to: String,
        line: String,
        store: bool,
    },
    /// A direct message for a registered user who is offline everywhere.
    Store { to: String, line: String },
    /// A registered user is here: fetch (and then drop) what waits for them.
    TakeInbox(String),
    /// A durable state record (account, profile, key, room owner) to share.
    State(Record),
}

/// A presence change of one person, as nodes tell each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    Online { nick: String, rooms: Vec<String> },
    Offline { nick: String },
    Join { nick: String, room: String },
    Part { nick: String, room: String },
    Rename { old: String, new: String },
}

/// How a nick claim ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Won,
    /// Someone on another node holds it.
    Lost,
    /// The cluster did not answer: granted here, claimed again on return.
    Unreachable,
}

/// Something the cluster tells the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromCluster {
    /// The cluster is reachable (again) and set up.
    Up,
    /// The cluster became unreachable.
    Down,
    /// A room line in the room's order. `id`: this node posted it.
    Posted {
        room: String,
        line: String,
        id: Option<u64>,
    },
    /// A line of ours the cluster could not take before the outage was
    /// known: show it here now; it is published when the cluster returns.
    Unsent {
        room: String,
        line: String,
        id: u64,
    },
    /// The stored lines of a room just followed, oldest first.
    History {
        room: String,
        lines: Vec<String>,
    },
    Claimed {
        id: u64,
        outcome: Claim,
    },
    /// A nick granted here during an outage belongs to someone else.
    NickLost(String),
    /// Another node's person did something.
    Presence {
        node: String,
        presence: Presence,
    },
    /// Everybody on `node`, replacing what was known of it.
    Roster {
        node: String,
        people: Vec<(String, Vec<String>)>,
    },
    /// A node stopped beating: its people are gone.
    NodeGone(String),
    /// A direct message (machine v1 line) for someone here.
    Dm {
        line: String,
    },
    /// A direct message could not reach `to`, who was not registered.
    DmFailed {
        from: String,
        to: String,
    },
    /// Direct messages that waited for `nick`, oldest first.
    Inbox {
        nick: String,
        lines: Vec<String>,
    },
    /// A durable state record written by another node.
    State(Record),
}

/// A person on another node.
#[derive(Debug, Clone)]
pub(super) struct Remote {
    pub nick: String,
    pub node: String,
    /// Folded room keys.
    pub rooms: Vec<String>,
}

/// The core's cluster state; present only in cluster mode.
#[derive(Debug, Default)]
pub(super) struct ClusterState {
    pub node: String,
    pub up: bool,
    /// People elsewhere, by folded nick.
    pub remote: HashMap<String, Remote>,
    /// Remote members per room key.
    pub remote_members: HashMap<String, usize>,
    /// Rooms this node follows.
    pub following: HashSet<String>,
    /// Posts of ours not yet back: the human sender not to echo to, or
    /// `None` when it was shown here already (outage).
    pub posted: HashMap<u64, Option<(ConnId, u64)>>,
    /// Nick claims waiting: (conn, its serial, nick, logged in).
    pub claims: HashMap<u64, (ConnId, u64, String, bool)>,
    /// Local people who joined a followed room before its history came.
    pub waiting_history: HashMap<String, Vec<ConnId>>,
    pub next_id: u64,
    /// Lines delivered that came from other nodes.
    pub received: u64,
}

impl ClusterState {
    /// Remote member counts agree with the remote people's rooms, and a
    /// remote person appears in a room once.
    pub(super) fn check(&self) -> Result<(), String> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (key, r) in &self.remote {
            if fold(&r.nick) != *key {
                return Err(format!("remote {} filed under {key}", r.nick));
            }
            let distinct: HashSet<&String> = r.rooms.iter().collect();
            if distinct.len() != r.rooms.len() {
                return Err(format!("remote {} is in a room twice", r.nick));
            }
            for room in &r.rooms {
                *counts.entry(room.as_str()).or_default() += 1;
            }
        }
        let stored: HashMap<&str, usize> = self
            .remote_members
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        if counts != stored {
            return Err(format!("remote member counts {stored:?} != {counts:?}"));
        }
        Ok(())
    }

    fn add_remote_rooms(&mut self, rooms: &[String]) {
        for r in rooms {
            *self.remote_members.entry(r.clone()).or_default() += 1;
        }
    }
    fn drop_remote_rooms(&mut self, rooms: &[String]) {
        for r in rooms {
            if let Some(n) = self.remote_members.get_mut(r) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.remote_members.remove(r);
                }
            }
        }
    }
}

/// Figures for `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStats {
    pub node: String,
    pub up: bool,
    pub remote_people: usize,
    pub nodes: usize,
    pub received: u64,
}

impl Core {
    /// Turns cluster mode on, as node `node`. The link starts down.
    pub fn enable_cluster(&mut self, node: &str) {
        self.cluster = Some(ClusterState {
            node: node.to_string(),
            ..ClusterState::default()
        });
    }

    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        let c = self.cluster.as_ref()?;
        let nodes: HashSet<&str> = c.remote.values().map(|r| r.node.as_str()).collect();
        Some(ClusterStats {
            node: c.node.clone(),
            up: c.up,
            remote_people: c.remote.len(),
            nodes: nodes.len(),
            received: c.received,
        })
    }

    /// True when room lines go through the cluster rather than straight out.
    pub(super) fn cluster_up(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.up)
    }

    pub(super) fn ask_cluster(&mut self, req: ToCluster) {
        if self.cluster.is_some() {
            self.out.push_back(Output::Cluster(req));
        }
    }

    pub(super) fn presence(&mut self, p: Presence) {
        self.ask_cluster(ToCluster::Presence(p));
    }

    /// A remote person with this folded nick, if any.
    pub(super) fn remote(&self, key: &str) -> Option<&Remote> {
        self.cluster.as_ref()?.remote.get(key)
    }

    /// Remote members of a room.
    pub(super) fn remote_count(&self, room_key: &str) -> usize {
        self.cluster
            .as_ref()
            .and_then(|c| c.remote_members.get(room_key).copied())
            .unwrap_or(0)
    }

    /// Nicks of remote members of a room.
    pub(super) fn remote_nicks_in(&self, room_key: &str) -> Vec<String> {
        let Some(c) = &self.cluster else {
            return Vec::new();
        };
        if !c.remote_members.contains_key(room_key) {
            return Vec::new();
        }
        c.remote
            .values()
            .filter(|r| r.rooms.iter().any(|k| k == room_key))
            .map(|r| r.nick.clone())
            .collect()
    }

    pub(super) fn remote_nicks(&self) -> Vec<String> {
        self.cluster
            .as_ref()
            .map(|c| c.remote.values().map(|r| r.nick.clone()).collect())
            .unwrap_or_default()
    }

    /// Hands a room line to the cluster instead of showing it here; true if
    /// it did (the caller then does nothing more with it).
    pub(super) fn post(&mut self, key: &str, line: &ServerLine, sender: Option<ConnId>) -> bool {
        if !self.cluster_up() || key.starts_with('~') {
            return false;
        }
        let serial = sender.and_then(|c| self.client(c)).map(|c| c.serial);
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        let id = c.next_id;
        c.next_id += 1;
        c.posted.insert(id, sender.zip(serial));
        self.out.push_back(Output::Cluster(ToCluster::Post {
            room: key.to_string(),
            line: line.encode_machine(),
            id,
            local: false,
        }));
        true
    }

    /// A line shown here while the cluster was down: publish it later.
    pub(super) fn post_later(&mut self, key: &str, line: &ServerLine) {
        if key.starts_with('~') {
            return;
        }
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let id = c.next_id;
        c.next_id += 1;
        c.posted.insert(id, None);
        self.out.push_back(Output::Cluster(ToCluster::Post {
            room: key.to_string(),
            line: line.encode_machine(),
            id,
            local: true,
        }));
    }

    /// Someone here entered a room: follow it if it is the first. True if
    /// its history comes later (from the stream) rather than from here.
    pub(super) fn cluster_joined(&mut self, conn: ConnId, key: &str, nick: &str) -> bool {
        if key.starts_with('~') {
            return false;
        }
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        let mut later = false;
        if c.following.insert(key.to_string()) {
            if c.up {
                c.waiting_history
                    .entry(key.to_string())
                    .or_default()
                    .push(conn);
                later = true;
            }
            self.out
                .push_back(Output::Cluster(ToCluster::Follow(key.to_string())));
        } else if let Some(w) = c.waiting_history.get_mut(key) {
            w.push(conn);
            later = true;
        }
        self.presence(Presence::Join {
            nick: nick.to_string(),
            room: key.to_string(),
        });
        later
    }

    /// Someone here left a room: stop following it if it was the last.
    pub(super) fn cluster_left(&mut self, key: &str, nick: Option<&str>) {
        if key.starts_with('~') || self.cluster.is_none() {
            return;
        }
        if let Some(nick) = nick {
            self.presence(Presence::Part {
                nick: nick.to_string(),
                room: key.to_string(),
            });
        }
        if self.rooms.get(key).is_none_or(|r| r.members.is_empty()) {
            self.stop_following(key);
        }
    }

    /// Starts a nick claim; `set_nick` continues when it is answered.
    /// False if there is no cluster to ask (the caller goes on at once).
    pub(super) fn start_claim(&mut self, conn: ConnId, nick: &str, authed: bool) -> bool {
        if !self.cluster_up() {
            return false;
        }
        let Some(serial) = self.client(conn).map(|c| c.serial) else {
            return false;
        };
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        if c.claims.values().any(|(k, ..)| *k == conn) {
            self.error(conn, "busy", "still checking your last nick; one moment");
            return true;
        }
        let id = c.next_id;
        c.next_id += 1;
        c.claims
            .insert(id, (conn, serial, nick.to_string(), authed));
        if let Some(c) = self.client_mut(conn) {
            c.held.get_or_insert_with(Default::default);
        }
        self.out.push_back(Output::Cluster(ToCluster::Claim {
            id,
            nick: nick.to_string(),
        }));
        true
    }

    /// Feeds one cluster event in.
    pub fn handle_cluster(&mut self, ev: FromCluster, now: Instant) {
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
                if let Some(&conn) = self.nicks.get(&fold(&from)) {
                    let text = format!("{to} went offline; your message was not delivered");
                    self.error(conn, "no-such-user", text);
                }
            }
            FromCluster::Inbox { nick, lines } => self.inbox(&nick, &lines),
            FromCluster::State(Record::RoomGone { room }) => self.room_deleted_elsewhere(&room),
            FromCluster::State(rec) => {
                // Accounts may have just appeared: a guest here holding a
                // nick now registered elsewhere keeps it until it leaves,
                // as on one node when an account is made under a guest.
                self.restore(rec);
            }
        }
    }

    /// `/delete` on another node: the room's people here are put out of it
    /// as they would be on that node.
    fn room_deleted_elsewhere(&mut self, name: &str) {
        let key = fold(name);
        let Some(room) = self.rooms.get(&key) else {
            return;
        };
        if room.permanent || room.private {
            return;
        }
        let owner = room.owner.clone().unwrap_or_default();
        self.remove_room(&key, owner);
    }

    /// This node stops following a room (nobody here is in it, or it is gone).
    pub(super) fn stop_following(&mut self, key: &str) {
        if let Some(c) = self.cluster.as_mut()
            && c.following.remove(key)
        {
            c.waiting_history.remove(key);
            self.out
                .push_back(Output::Cluster(ToCluster::Unfollow(key.to_string())));
        }
    }

    fn link_changed(&mut self, up: bool) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if c.up == up {
            return;
        }
        c.up = up;
        let text = if up {
            "the cluster is reachable again: everybody on every node sees your messages"
        } else {
            "the cluster is unreachable: only people on this server see your messages for now; they will reach the others when it returns"
        };
        let line = ServerLine::info("cluster", text);
        let named: Vec<ConnId> = self.nicks.values().copied().collect();
        for conn in named {
            self.reply(conn, &line);
        }
        if !up {
            // Claims in flight will be answered Unreachable by the bridge.
            return;
        }
        // Tell the others who is here, in full.
        let people: Vec<(String, Vec<String>)> = self
            .nicks
            .values()
            .filter_map(|&k| self.client(k))
            .filter_map(|c| {
                let rooms = c
                    .rooms
                    .iter()
                    .filter(|k| !k.starts_with('~'))
                    .cloned()
                    .collect();
                c.nick.clone().map(|n| (n, rooms))
            })
            .collect();
        for (nick, rooms) in people {
            self.presence(Presence::Online { nick, rooms });
        }
    }

    fn posted(&mut self, key: &str, line: &str, id: Option<u64>) {
        let sender = match id.and_then(|id| self.cluster.as_mut()?.posted.remove(&id)) {
            // Shown here during an outage: only its place in the order is new.
            Some(None) => return,
            Some(Some((conn, serial))) => self.live_sender(conn, serial),
            None => None,
        };
        let Some(parsed) = ServerLine::parse_machine(line) else {
            return;
        };
        // A line claiming another room than its subject is not shown.
        if line_room(&parsed).is_none_or(|r| fold(r) != key) {
            return;
        }
        if id.is_none()
            && let Some(c) = self.cluster.as_mut()
        {
            c.received += 1;
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
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        if let ServerLine::Topic { text, .. } = &line {
            room.topic = text.clone();
            self.broadcast(key, &line, None);
            return;
        }
        if let Some(ts) = line_ts(&line) {
            room.last_active = room.last_active.max(ts);
        }
        let line = Rc::new(line);
        self.broadcast(key, &line, sender);
        self.remember(key, line.clone());
        if journal {
            self.persist_message(key, &line);
        }
    }

    /// The connection that posted a line, if it is still the same one.
    fn live_sender(&self, conn: ConnId, serial: u64) -> Option<ConnId> {
        self.client(conn)
            .filter(|c| c.serial == serial)
            .map(|_| conn)
    }

    fn unsent(&mut self, key: &str, line: &str, id: u64) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        // Its echo, when it is published at last, is not shown again.
        let Some(Some((conn, serial))) = c.posted.insert(id, None) else {
            return;
        };
        let sender = self.live_sender(conn, serial);
        let Some(parsed) = ServerLine::parse_machine(line) else {
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
            .and_then(|c| c.waiting_history.remove(key))
            .unwrap_or_default();
        let keep = self.cfg.history_keep;
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        room.history.clear();
        for l in lines {
            match ServerLine::parse_machine(l) {
                Some(ServerLine::Topic { text, .. }) => room.topic = text,
                Some(parsed) => {
                    if let Some(ts) = line_ts(&parsed) {
                        room.last_active = room.last_active.max(ts);
                    }
                    super::accounts::push_capped(&mut room.history, Rc::new(parsed), keep);
                }
                None => {}
            }
        }
        let name = room.name.clone();
        let recent = room.recent(self.cfg.history_on_join);
        for conn in waiting {
            let member = self
                .client(conn)
                .is_some_and(|c| c.rooms.iter().any(|k| k == key));
            if member {
                self.send_history(conn, &name, &recent);
            }
        }
    }

    fn claimed(&mut self, id: u64, outcome: Claim, now: Instant) {
        let Some((conn, serial, nick, authed)) =
            self.cluster.as_mut().and_then(|c| c.claims.remove(&id))
        else {
            return;
        };
        let alive = self.client(conn).is_some_and(|c| c.serial == serial);
        let held = if alive {
            self.client_mut(conn).and_then(|c| c.held.take())
        } else {
            None
        };
        match (alive, outcome) {
            (true, Claim::Won | Claim::Unreachable) => {
                self.finish_nick(conn, &nick, authed, now);
                if authed {
                    self.login_done(conn, &nick);
                }
            }
            (true, Claim::Lost) => {
                let text = format!("nick {nick} is taken; choose another");
                self.error(conn, "nick-taken", text);
            }
            // It left while we asked: give the nick back.
            (false, Claim::Won) => self.ask_cluster(ToCluster::Release(nick)),
            (false, _) => {}
        }
        // What it typed meanwhile, in order; a line that starts another
        // claim holds the rest again.
        let mut rest = held.unwrap_or_default();
        while let Some(line) = rest.pop_front() {
            self.handle_line(conn, &line, now);
            if let Some(h) = self.client_mut(conn).and_then(|c| c.held.as_mut()) {
                h.extend(rest.drain(..));
            }
        }
    }

    fn nick_lost(&mut self, nick: &str) {
        let Some(&conn) = self.nicks.get(&fold(nick)) else {
            return;
        };
        let text = format!(
            "nick {nick} was taken on another server while the cluster was unreachable; reconnect and choose another"
        );
        self.reply(conn, &ServerLine::error("nick-taken", text));
        self.close(conn, "nick collision after a cluster outage");
    }

    fn remote_presence(&mut self, node: &str, p: Presence) {
        match p {
            Presence::Online { nick, rooms } => {
                self.remove_remote(&fold(&nick), None);
                let rooms = public_keys(&rooms);
                self.add_remote(node, &nick, rooms);
            }
            Presence::Offline { nick } => {
                self.remove_remote(&fold(&nick), Some("quit"));
            }
            Presence::Rename { old, new } => {
                let Some(mut r) = self
                    .cluster
                    .as_mut()
                    .and_then(|c| c.remote.remove(&fold(&old)))
                else {
                    return;
                };
                let loud: Vec<String> = r
                    .rooms
                    .iter()
                    .filter(|k| !self.room_is_quiet(k))
                    .cloned()
                    .collect();
                r.nick = new.clone();
                // Whoever had the new nick (stale) or a local holder wins
                // over a rename announced late.
                self.remove_remote(&fold(&new), None);
                if let Some(c) = self.cluster.as_mut() {
                    if self.nicks.contains_key(&fold(&new)) {
                        c.drop_remote_rooms(&r.rooms);
                    } else {
                        c.remote.insert(fold(&new), r);
                    }
                }
                let line = ServerLine::NickChange { old, new };
                self.announce(&loud, &line, None);
            }
            Presence::Join { nick, room } => {
                let Some(key) = public_keys(&[room]).pop() else {
                    return;
                };
                let Some(c) = self.cluster.as_mut() else {
                    return;
                };
                let Some(r) = c.remote.get_mut(&fold(&nick)) else {
                    return;
                };
                if r.rooms.contains(&key) {
                    return;
                }
                r.rooms.push(key.clone());
                c.add_remote_rooms(std::slice::from_ref(&key));
                let name = self.rooms.get(&key).map(|r| r.name.clone());
                if let Some(name) = name
                    && !self.room_is_quiet(&key)
                {
                    let line = ServerLine::Join { room: name, nick };
                    self.announce(std::slice::from_ref(&key), &line, None);
                }
            }
            Presence::Part { nick, room } => {
                let Some(key) = public_keys(&[room]).pop() else {
                    return;
                };
                let Some(c) = self.cluster.as_mut() else {
                    return;
                };
                let Some(r) = c.remote.get_mut(&fold(&nick)) else {
                    return;
                };
                let before = r.rooms.len();
                r.rooms.retain(|k| *k != key);
                if r.rooms.len() == before {
                    return;
                }
                c.drop_remote_rooms(std::slice::from_ref(&key));
                let name = self.rooms.get(&key).map(|r| r.name.clone());
                if let Some(name) = name
                    && !self.room_is_quiet(&key)
                {
                    let line = ServerLine::Part {
                        room: name,
                        nick,
                        reason: String::new(),
                    };
                    self.announce(std::slice::from_ref(&key), &line, None);
                }
            }
        }
    }

    fn room_is_quiet(&self, key: &str) -> bool {
        let local = self.rooms.get(key).map_or(0, |r| r.members.len());
        local + self.remote_count(key) > self.cfg.quiet_room
    }

    /// `rooms`: keys from [`public_keys`] (a room named twice counted
    /// twice before; found by fuzz/cluster_events).
    fn add_remote(&mut self, node: &str, nick: &str, rooms: Vec<String>) {
        let key = fold(nick);
        // Somebody here with the same nick: the nick bucket decides, and a
        // stale claim shows as this (a node that died and came back).
        if self.nicks.contains_key(&key) {
            return;
        }
        // Named again (a roster listing someone twice): the last word wins.
        self.remove_remote(&key, None);
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.add_remote_rooms(&rooms);
        c.remote.insert(
            key,
            Remote {
                nick: nick.to_string(),
                node: node.to_string(),
                rooms,
            },
        );
    }

    /// Forgets a remote person; `quit`: tell the rooms they were in.
    fn remove_remote(&mut self, key: &str, quit: Option<&str>) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let Some(r) = c.remote.remove(key) else {
            return;
        };
        if let Some(reason) = quit {
            let line = ServerLine::Quit {
                nick: r.nick.clone(),
                reason: reason.to_string(),
            };
            let loud: Vec<String> = r
                .rooms
                .iter()
                .filter(|k| !self.room_is_quiet(k))
                .cloned()
                .collect();
            self.announce(&loud, &line, None);
        }
        if let Some(c) = self.cluster.as_mut() {
            c.drop_remote_rooms(&r.rooms);
        }
    }

    /// Folded nicks of everyone known to be on `node`.
    fn people_on(&self, node: &str) -> Vec<String> {
        self.cluster
            .as_ref()
            .map(|c| {
                c.remote
                    .iter()
                    .filter(|(_, r)| r.node == node)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn roster(&mut self, node: &str, people: Vec<(String, Vec<String>)>) {
        for k in self.people_on(node) {
            self.remove_remote(&k, None);
        }
        for (nick, rooms) in people {
            if crate::proto::valid_nick(&nick) {
                let rooms = public_keys(&rooms);
                self.add_remote(node, &nick, rooms);
            }
        }
    }

    fn node_gone(&mut self, node: &str) {
        for k in self.people_on(node) {
            self.remove_remote(&k, Some("server gone"));
        }
    }

    fn remote_dm(&mut self, line: &str) {
        let Some(parsed @ ServerLine::Dm { .. }) = ServerLine::parse_machine(line) else {
            return;
        };
        let ServerLine::Dm { from, to, .. } = &parsed else {
            return;
        };
        let Some(&conn) = self.nicks.get(&fold(to)) else {
            return;
        };
        if let Some(c) = self.cluster.as_mut() {
            c.received += 1;
        }
        self.keep_dm(from, to, &parsed);
        self.reply(conn, &parsed);
    }

    fn inbox(&mut self, nick: &str, lines: &[String]) {
        let Some(&conn) = self.nicks.get(&fold(nick)) else {
            return;
        };
        let parsed: Vec<ServerLine> = lines
            .iter()
            .filter_map(|l| ServerLine::parse_machine(l))
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

    /// Keeps a DM in this node's conversation history if both are registered.
    fn keep_dm(&mut self, from: &str, to: &str, line: &ServerLine) {
        if !(self.accounts.contains_key(&fold(from)) && self.accounts.contains_key(&fold(to))) {
            return;
        }
        if let ServerLine::Dm { ts, text, .. } = line {
            self.persist(Record::Dm {
                from: from.to_string(),
                to: to.to_string(),
                ts: *ts,
                text: text.clone(),
                pending: false,
            });
        }
        let cap = self.cfg.dm_keep;
        let conv = self.dms.entry(super::accounts::pair(from, to)).or_default();
        super::accounts::push_capped(conv, Rc::new(line.clone()), cap);
    }
}

/// Keys of the public rooms named (another node's word: anything else,
/// and repeats, are dropped; private rooms never leave their node).
fn public_keys(names: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = names
        .iter()
        .filter_map(|n| match crate::proto::RoomRef::parse(n) {
            Ok(r @ crate::proto::RoomRef::Public(_)) => Some(r.key()),
            _ => None,
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn line_room(l: &ServerLine) -> Option<&str> {
    match l {
        ServerLine::Msg { room, .. }
        | ServerLine::Action { room, .. }
        | ServerLine::Upload { room, .. }
        | ServerLine::Encrypted { room, .. }
        | ServerLine::Topic { room, .. } => Some(room),
        _ => None,
    }
}

fn line_ts(l: &ServerLine) -> Option<u64> {
    match l {
        ServerLine::Msg { ts, .. }
        | ServerLine::Action { ts, .. }
        | ServerLine::Upload { ts, .. }
        | ServerLine::Encrypted { ts, .. } => Some(*ts),
        _ => None,
    }
}
