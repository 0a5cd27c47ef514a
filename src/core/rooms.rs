//! The rooms: each one's name, kind, owner, topic, members (see
//! [`super::members`]) and recent history, keyed by folded name (`#lobby`)
//! or `~code`. This file owns that data and is the only one that changes it;
//! commands read a [`Room`] and ask [`Rooms`] for changes.
//!
//! History is kept as the lines themselves (`Rc`, so a line in history and
//! the line just broadcast are one allocation), at most `--history` per
//! room. Private rooms end with their last member and leave no trace.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use super::ConnId;
use super::dms::push_capped;
use super::members::Members;
use crate::proto::{Format, RoomRef, ServerLine, fold};

#[derive(Debug)]
pub(super) struct Room {
    /// Display name: `#Name` as first created, or `~code`.
    name: String,
    private: bool,
    /// A default room: always exists, cannot be deleted or owned.
    permanent: bool,
    owner: Option<String>,
    /// Unix ms of the last message; the least recently active empty room is
    /// the one dropped when `max_rooms` is reached.
    last_active: u64,
    topic: String,
    /// Members and the format each wants, so fan-out needs no other lookup.
    members: Members,
    history: VecDeque<Rc<ServerLine>>,
}

impl Room {
    fn new(r: &RoomRef) -> Room {
        Room {
            name: r.display(),
            private: matches!(r, RoomRef::Private(_)),
            permanent: false,
            owner: None,
            last_active: 0,
            topic: String::new(),
            members: Members::default(),
            history: VecDeque::new(),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn private(&self) -> bool {
        self.private
    }

    pub(super) fn permanent(&self) -> bool {
        self.permanent
    }

    pub(super) fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    pub(super) fn topic(&self) -> &str {
        &self.topic
    }

    pub(super) fn members(&self) -> &Members {
        &self.members
    }

    /// Every kept line, oldest first.
    pub(super) fn history(&self) -> impl Iterator<Item = &Rc<ServerLine>> + '_ {
        self.history.iter()
    }

    /// The last `n` (or fewer) history lines, oldest first.
    pub(super) fn recent(&self, n: usize) -> Vec<Rc<ServerLine>> {
        let skip = self.history.len().saturating_sub(n);
        self.history.iter().skip(skip).cloned().collect()
    }
}

/// The time of a room line that has one.
pub(super) fn line_ts(l: &ServerLine) -> Option<u64> {
    match l {
        ServerLine::Msg { ts, .. }
        | ServerLine::Action { ts, .. }
        | ServerLine::Upload { ts, .. }
        | ServerLine::Encrypted { ts, .. } => Some(*ts),
        _ => None,
    }
}

/// Every room, by key.
#[derive(Debug)]
pub(super) struct Rooms {
    map: HashMap<String, Room>,
    /// Lines kept per room (`--history`).
    keep: usize,
}

impl Rooms {
    pub(super) fn new(keep: usize) -> Rooms {
        Rooms {
            map: HashMap::new(),
            keep,
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&Room> {
        self.map.get(key)
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &Room)> + '_ {
        self.map.iter()
    }

    /// The display name of a room, if it exists.
    pub(super) fn name_of(&self, key: &str) -> Option<String> {
        self.map.get(key).map(|r| r.name.clone())
    }

    /// Makes an empty room for `r` unless it exists; returns its key.
    pub(super) fn create(&mut self, r: &RoomRef) -> String {
        let key = r.key();
        self.map.entry(key.clone()).or_insert_with(|| Room::new(r));
        key
    }

    /// A default room: it always exists and has no owner.
    pub(super) fn create_permanent(&mut self, r: &RoomRef) {
        let room = Room {
            permanent: true,
            ..Room::new(r)
        };
        self.map.insert(r.key(), room);
    }

    /// The key of a public room named `name`, made empty if needed (replay
    /// and cluster state name rooms that may not exist yet). `None` for
    /// anything but a valid public room name.
    pub(super) fn ensure_public(&mut self, name: &str) -> Option<String> {
        let r @ RoomRef::Public(_) = RoomRef::parse(name).ok()? else {
            return None;
        };
        Some(self.create(&r))
    }

    pub(super) fn remove(&mut self, key: &str) -> Option<Room> {
        self.map.remove(key)
    }

    /// Ensures a new room fits: under `max`, or by dropping the least
    /// recently active empty public room that has no owner and is not a
    /// default room. `Err` if every room is in use; `Ok(Some(name))` names
    /// the room dropped.
    pub(super) fn make_space(&mut self, max: usize) -> Result<Option<String>, ()> {
        if self.map.len() < max {
            return Ok(None);
        }
        let victim = self
            .map
            .iter()
            .filter(|(_, r)| r.members.is_empty() && !r.permanent && r.owner.is_none())
            .min_by_key(|(_, r)| r.last_active)
            .map(|(k, _)| k.clone());
        match victim.and_then(|k| self.map.remove(&k)) {
            Some(r) => Ok(Some(r.name)),
            None => Err(()),
        }
    }

    /// Adds a member, or changes the format it reads.
    pub(super) fn add_member(&mut self, key: &str, conn: ConnId, format: Format) {
        if let Some(r) = self.map.get_mut(key) {
            r.members.insert(conn, format);
        }
    }

    /// Removes a member; a private room left empty goes with it.
    pub(super) fn remove_member(&mut self, key: &str, conn: ConnId) {
        let Some(r) = self.map.get_mut(key) else {
            return;
        };
        r.members.remove(conn);
        if r.members.is_empty() && r.private {
            self.map.remove(key);
        }
    }

    /// At shutdown: nobody is in any room; private rooms are gone.
    pub(super) fn empty_all(&mut self) {
        for r in self.map.values_mut() {
            r.members.clear();
        }
        self.map.retain(|_, r| !r.private);
    }

    pub(super) fn set_topic(&mut self, key: &str, text: String) {
        if let Some(r) = self.map.get_mut(key) {
            r.topic = text;
        }
    }

    /// Gives a room an owner (never a default room); false if it did not.
    pub(super) fn set_owner(&mut self, key: &str, owner: String) -> bool {
        match self.map.get_mut(key) {
            Some(r) if !r.permanent => {
                r.owner = Some(owner);
                true
            }
            _ => false,
        }
    }

    /// Keeps `line` in the room's history, dropping the oldest beyond the cap.
    pub(super) fn remember(&mut self, key: &str, line: Rc<ServerLine>) {
        let keep = self.keep;
        if let Some(r) = self.map.get_mut(key) {
            if let Some(ts) = line_ts(&line) {
                r.last_active = r.last_active.max(ts);
            }
            push_capped(&mut r.history, line, keep);
        }
    }

    /// Replaces a room's history (and topic, if one came) with what a
    /// cluster stream holds.
    pub(super) fn replace_history(&mut self, key: &str, lines: Vec<ServerLine>) {
        let keep = self.keep;
        let Some(r) = self.map.get_mut(key) else {
            return;
        };
        r.history.clear();
        for l in lines {
            if let ServerLine::Topic { text, .. } = l {
                r.topic = text;
                continue;
            }
            if let Some(ts) = line_ts(&l) {
                r.last_active = r.last_active.max(ts);
            }
            push_capped(&mut r.history, Rc::new(l), keep);
        }
    }

    /// Public rooms by member count, busiest first (at most `limit`), and
    /// how many private rooms there are. Private rooms are never named: their
    /// names are their invitation codes.
    pub(super) fn counts(&self, limit: usize) -> (Vec<(String, usize)>, usize) {
        let mut public: Vec<(String, usize)> = Vec::new();
        let mut private = 0;
        for r in self.map.values() {
            if r.private {
                private += 1;
            } else {
                public.push((r.name.clone(), r.members.len()));
            }
        }
        public.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| fold(&a.0).cmp(&fold(&b.0))));
        public.truncate(limit);
        (public, private)
    }
}
