//! What the core knows of the other nodes, and of its own requests to them:
//! the people elsewhere and the rooms they are in, the rooms this node
//! follows, its room lines and nick claims in flight. This file owns that
//! data; the event handlers in `events.rs` ask it for changes.

use std::collections::{HashMap, HashSet};

use super::super::ConnId;
use crate::proto::fold;

/// A person on another node.
#[derive(Debug, Clone)]
pub(in crate::core) struct Remote {
    nick: String,
    node: String,
    /// Folded room keys, each once.
    rooms: Vec<String>,
}

impl Remote {
    pub(in crate::core) fn nick(&self) -> &str {
        &self.nick
    }

    pub(in crate::core) fn node(&self) -> &str {
        &self.node
    }

    pub(in crate::core) fn rooms(&self) -> &[String] {
        &self.rooms
    }
}

/// A nick claim waiting for the cluster's answer.
#[derive(Debug, Clone)]
pub(in crate::core) struct PendingClaim {
    pub(in crate::core) conn: ConnId,
    pub(in crate::core) serial: u64,
    pub(in crate::core) nick: String,
    /// The claim is for a login (the account is proven).
    pub(in crate::core) authed: bool,
}

/// A line of ours that has not come back from the stream yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::core) enum Post {
    /// Not shown here yet; the human sender not to echo it to (connection
    /// and serial), if any (uploads and topics have none).
    Waiting(Option<(ConnId, u64)>),
    /// Shown here already (during an outage): only its place in the order
    /// is still to come.
    Shown,
}

/// The core's cluster state; present only in cluster mode.
#[derive(Debug, Default)]
pub(in crate::core) struct ClusterState {
    node: String,
    up: bool,
    /// People elsewhere, by folded nick.
    remote: HashMap<String, Remote>,
    /// Remote members per room key.
    remote_members: HashMap<String, usize>,
    /// Rooms this node follows.
    following: HashSet<String>,
    /// Posts of ours not yet back from the stream.
    posted: HashMap<u64, Post>,
    claims: HashMap<u64, PendingClaim>,
    /// Local people who joined a followed room before its history came.
    waiting_history: HashMap<String, Vec<ConnId>>,
    next_id: u64,
    /// Lines delivered that came from other nodes.
    received: u64,
    /// Requests the bridge could not take (its queue was full).
    refused: u64,
}

impl ClusterState {
    pub(in crate::core) fn new(node: &str) -> ClusterState {
        ClusterState {
            node: node.to_string(),
            ..ClusterState::default()
        }
    }

    pub(in crate::core) fn node(&self) -> &str {
        &self.node
    }

    pub(in crate::core) fn up(&self) -> bool {
        self.up
    }

    /// Records whether the link is up; false if that is no change.
    pub(in crate::core) fn set_up(&mut self, up: bool) -> bool {
        let changed = self.up != up;
        self.up = up;
        changed
    }

    pub(in crate::core) fn received(&self) -> u64 {
        self.received
    }

    pub(in crate::core) fn count_received(&mut self) {
        self.received += 1;
    }

    pub(in crate::core) fn refused(&self) -> u64 {
        self.refused
    }

    pub(in crate::core) fn count_refused(&mut self) {
        self.refused += 1;
    }

    /// A fresh id for a post or a claim.
    pub(in crate::core) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ---- people elsewhere ----

    pub(in crate::core) fn remote(&self, key: &str) -> Option<&Remote> {
        self.remote.get(key)
    }

    pub(in crate::core) fn remote_people(&self) -> usize {
        self.remote.len()
    }

    pub(in crate::core) fn remote_count(&self, room_key: &str) -> usize {
        self.remote_members.get(room_key).copied().unwrap_or(0)
    }

    pub(in crate::core) fn nodes(&self) -> usize {
        let nodes: HashSet<&str> = self.remote.values().map(|r| r.node.as_str()).collect();
        nodes.len()
    }

    /// Nicks of remote members of a room.
    pub(in crate::core) fn nicks_in(&self, room_key: &str) -> Vec<String> {
        if !self.remote_members.contains_key(room_key) {
            return Vec::new();
        }
        self.remote
            .values()
            .filter(|r| r.rooms.iter().any(|k| k == room_key))
            .map(|r| r.nick.clone())
            .collect()
    }

    pub(in crate::core) fn nicks(&self) -> Vec<String> {
        self.remote.values().map(|r| r.nick.clone()).collect()
    }

    /// Folded nicks of everyone known to be on `node`.
    pub(in crate::core) fn people_on(&self, node: &str) -> Vec<String> {
        self.remote
            .iter()
            .filter(|(_, r)| r.node == node)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Adds a person elsewhere, replacing whoever had the nick; `rooms` are
    /// distinct room keys.
    pub(in crate::core) fn add_remote(&mut self, node: &str, nick: &str, rooms: Vec<String>) {
        let key = fold(nick);
        self.remove_remote(&key);
        for r in &rooms {
            *self.remote_members.entry(r.clone()).or_default() += 1;
        }
        self.remote.insert(
            key,
            Remote {
                nick: nick.to_string(),
                node: node.to_string(),
                rooms,
            },
        );
    }

    /// Forgets a person elsewhere.
    pub(in crate::core) fn remove_remote(&mut self, key: &str) -> Option<Remote> {
        let r = self.remote.remove(key)?;
        self.drop_rooms(&r.rooms);
        Some(r)
    }

    /// A person elsewhere entered a room; false if unknown or already in it.
    pub(in crate::core) fn remote_joined(&mut self, key: &str, room: &str) -> bool {
        let Some(r) = self.remote.get_mut(key) else {
            return false;
        };
        if r.rooms.iter().any(|k| k == room) {
            return false;
        }
        r.rooms.push(room.to_string());
        *self.remote_members.entry(room.to_string()).or_default() += 1;
        true
    }

    /// A person elsewhere left a room; false if unknown or not in it.
    pub(in crate::core) fn remote_left(&mut self, key: &str, room: &str) -> bool {
        let Some(r) = self.remote.get_mut(key) else {
            return false;
        };
        let before = r.rooms.len();
        r.rooms.retain(|k| k != room);
        if r.rooms.len() == before {
            return false;
        }
        self.drop_rooms(&[room.to_string()]);
        true
    }

    /// A person elsewhere took a new nick: the same person under `new`.
    pub(in crate::core) fn rename_remote(&mut self, old_key: &str, new: &str) -> Option<Remote> {
        let mut r = self.remote.remove(old_key)?;
        r.nick = new.to_string();
        self.remote.insert(fold(new), r.clone());
        Some(r)
    }

    fn drop_rooms(&mut self, rooms: &[String]) {
        for r in rooms {
            if let Some(n) = self.remote_members.get_mut(r) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.remote_members.remove(r);
                }
            }
        }
    }

    // ---- rooms followed ----

    /// Starts following a room; false if it was followed already.
    pub(in crate::core) fn follow(&mut self, key: &str) -> bool {
        self.following.insert(key.to_string())
    }

    /// Stops following a room; false if it was not followed.
    pub(in crate::core) fn unfollow(&mut self, key: &str) -> bool {
        let was = self.following.remove(key);
        if was {
            self.waiting_history.remove(key);
        }
        was
    }

    /// `conn` waits for a followed room's history; false if nobody waits for
    /// it (it came already).
    pub(in crate::core) fn wait_for_history(
        &mut self,
        key: &str,
        conn: ConnId,
        first: bool,
    ) -> bool {
        match self.waiting_history.get_mut(key) {
            Some(w) => {
                w.push(conn);
                true
            }
            None if first => {
                self.waiting_history.insert(key.to_string(), vec![conn]);
                true
            }
            None => false,
        }
    }

    pub(in crate::core) fn take_waiting(&mut self, key: &str) -> Vec<ConnId> {
        self.waiting_history.remove(key).unwrap_or_default()
    }

    // ---- requests in flight ----

    pub(in crate::core) fn posted(&mut self, id: u64, post: Post) {
        self.posted.insert(id, post);
    }

    /// What became of `id`, forgetting it (it came back, or was refused).
    pub(in crate::core) fn take_post(&mut self, id: u64) -> Option<Post> {
        self.posted.remove(&id)
    }

    /// Marks `id` as shown here, returning what it was before.
    pub(in crate::core) fn shown(&mut self, id: u64) -> Option<Post> {
        self.posted.insert(id, Post::Shown)
    }

    pub(in crate::core) fn claiming(&self, conn: ConnId) -> bool {
        self.claims.values().any(|c| c.conn == conn)
    }

    pub(in crate::core) fn add_claim(&mut self, id: u64, claim: PendingClaim) {
        self.claims.insert(id, claim);
    }

    pub(in crate::core) fn take_claim(&mut self, id: u64) -> Option<PendingClaim> {
        self.claims.remove(&id)
    }

    /// Remote member counts agree with the remote people's rooms, and a
    /// remote person appears in a room once.
    pub(in crate::core) fn check(&self) -> Result<(), String> {
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
}
