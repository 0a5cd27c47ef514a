//! The rooms: each one's name, kind, owner, topic, members (see
//! [`super::members`]) and recent history, keyed by folded name (`#lobby`)
//! or `~code`. This file owns that data and is the only one that changes it;
//! commands read a [`Room`] and ask [`Rooms`] for changes.
//!
//! History is kept as the lines themselves (`Rc`, so a line in history and
//! the line just broadcast are one allocation), bounded three ways: at most
//! `--history` lines and `--history-bytes` per room, and `--history-total`
//! in all rooms (past it, the oldest lines of the room holding the most go
//! first). What is kept is the line's notice, not its payload, for an upload
//! and for an envelope over `--history-envelope`: megabytes of images or
//! sealed blobs must not sit in every room's history, nor be sent to every
//! joiner. Private rooms end with their last member and leave no trace.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::rc::Rc;

use super::ConnId;
use super::members::Members;
use super::moderation::Rules;
use crate::proto::{Format, RoomRef, ServerLine, fold};

#[derive(Debug)]
pub(super) struct Room {
    /// Its key, shared with every member's list of joined rooms (one
    /// allocation per room, not one per membership: issue 21).
    key: Rc<str>,
    /// Display name: `#Name` as first created, or `~code`.
    name: String,
    private: bool,
    /// A default room: always exists, cannot be deleted or owned.
    permanent: bool,
    owner: Option<String>,
    /// The address that made it (a new name joined, or `/join new`), for
    /// the per-address limit; `None` for rooms from the journal or owned.
    made_by: Option<IpAddr>,
    /// Unix ms of the last message; the least recently active empty room is
    /// the one dropped when `max_rooms` is reached.
    last_active: u64,
    /// The time of its latest line: lines are stamped strictly after it, so
    /// a room's times are unique and increasing, and serve as a cursor
    /// (`/history ... before TIME`).
    last_ts: u64,
    topic: String,
    /// Members and the format each wants, so fan-out needs no other lookup.
    members: Members,
    history: VecDeque<Kept>,
    /// Bytes of `history`, as [`size_of_line`] counts them.
    history_bytes: usize,
    /// Operators, bans, mutes and the moderation log.
    rules: Rules,
}

/// A line of history and what it counts against the limits.
#[derive(Debug)]
struct Kept {
    line: Rc<ServerLine>,
    bytes: usize,
}

/// The bounds on history (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(super) struct HistoryLimits {
    pub(super) lines: usize,
    pub(super) bytes: usize,
    pub(super) total: usize,
    pub(super) envelope: usize,
}

/// What a line of history costs: its text and a little for the rest (about
/// its machine encoding's length).
fn size_of_line(l: &ServerLine) -> usize {
    l.texts().iter().map(|t| t.len()).sum::<usize>() + 32
}

/// Older lines of a room, as asked for.
#[derive(Debug)]
pub(super) struct Page {
    /// Oldest first.
    pub(super) lines: Vec<Rc<ServerLine>>,
    /// Lines asked for that the byte budget left out (older than these).
    pub(super) left_out: usize,
}

impl Room {
    fn new(r: &RoomRef) -> Room {
        Room {
            key: r.key().into(),
            name: r.display(),
            private: matches!(r, RoomRef::Private(_)),
            permanent: false,
            owner: None,
            made_by: None,
            last_active: 0,
            last_ts: 0,
            topic: String::new(),
            members: Members::default(),
            history: VecDeque::new(),
            history_bytes: 0,
            rules: Rules::default(),
        }
    }

    pub(super) fn rules(&self) -> &Rules {
        &self.rules
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
    pub(super) fn history(&self) -> impl DoubleEndedIterator<Item = &Rc<ServerLine>> + '_ {
        self.history.iter().map(|k| &k.line)
    }

    /// The last `n` lines sent before `before` (Unix ms; all if `None`),
    /// oldest first, as many of them as fit in `budget` bytes.
    pub(super) fn page(&self, n: usize, before: Option<u64>, budget: usize) -> Page {
        let older = self
            .history
            .iter()
            .rev()
            .filter(|k| before.is_none_or(|b| line_ts(&k.line).is_some_and(|t| t < b)));
        let mut lines = Vec::new();
        let mut used = 0usize;
        let mut left_out = 0;
        for k in older.take(n) {
            if left_out > 0 || used.saturating_add(k.bytes) > budget {
                left_out += 1;
                continue;
            }
            used += k.bytes;
            lines.push(k.line.clone());
        }
        lines.reverse();
        Page { lines, left_out }
    }
}

/// Takes one from a count, dropping it at zero.
fn uncount(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
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
    limits: HistoryLimits,
    /// Bytes of history in all rooms.
    history_total: usize,
    /// Rooms with any history.
    with_history: usize,
    /// Existing rooms per address that made them.
    made_by: HashMap<IpAddr, usize>,
    /// Rooms per owner (folded nick).
    owned: HashMap<String, usize>,
}

impl Rooms {
    pub(super) fn new(limits: HistoryLimits) -> Rooms {
        Rooms {
            map: HashMap::new(),
            limits,
            history_total: 0,
            with_history: 0,
            made_by: HashMap::new(),
            owned: HashMap::new(),
        }
    }

    /// Existing rooms `addr` made.
    pub(super) fn made_by(&self, addr: IpAddr) -> usize {
        self.made_by.get(&addr).copied().unwrap_or(0)
    }

    /// Rooms owned by the folded nick `owner`, and by anyone.
    pub(super) fn owned_by(&self, owner: &str) -> usize {
        self.owned.get(owner).copied().unwrap_or(0)
    }

    pub(super) fn owned_total(&self) -> usize {
        self.owned.values().sum()
    }

    /// Makes an empty room for `r` unless it exists, counted against the
    /// address that made it; returns its key.
    pub(super) fn create_by(&mut self, r: &RoomRef, addr: IpAddr) -> String {
        let key = r.key();
        if !self.map.contains_key(&key) {
            let room = Room {
                made_by: Some(addr),
                ..Room::new(r)
            };
            self.map.insert(key.clone(), room);
            *self.made_by.entry(addr).or_default() += 1;
        }
        key
    }

    /// Bytes of history in all rooms.
    pub(super) fn history_total(&self) -> usize {
        self.history_total
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
        let r = self.map.remove(key)?;
        self.forget_history(&r);
        Some(r)
    }

    fn forget_history(&mut self, r: &Room) {
        if let Some(addr) = r.made_by
            && let Some(n) = self.made_by.get_mut(&addr)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.made_by.remove(&addr);
            }
        }
        if let Some(owner) = &r.owner {
            uncount(&mut self.owned, &fold(owner));
        }
        self.history_total = self.history_total.saturating_sub(r.history_bytes);
        if !r.history.is_empty() {
            self.with_history = self.with_history.saturating_sub(1);
        }
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
        match victim.and_then(|k| self.remove(&k)) {
            Some(r) => Ok(Some(r.name)),
            None => Err(()),
        }
    }

    /// Adds a member, or changes the format it reads; returns the room's
    /// shared key.
    pub(super) fn add_member(
        &mut self,
        key: &str,
        conn: ConnId,
        format: Format,
    ) -> Option<Rc<str>> {
        let r = self.map.get_mut(key)?;
        r.members.insert(conn, format);
        Some(r.key.clone())
    }

    /// Removes a member; a private room left empty goes with it.
    pub(super) fn remove_member(&mut self, key: &str, conn: ConnId) {
        let Some(r) = self.map.get_mut(key) else {
            return;
        };
        r.members.remove(conn);
        if r.members.is_empty() && r.private {
            self.remove(key);
        }
    }

    /// At shutdown: nobody is in any room; private rooms are gone.
    pub(super) fn empty_all(&mut self) {
        for r in self.map.values_mut() {
            r.members.clear();
        }
        let private: Vec<String> = self
            .map
            .iter()
            .filter(|(_, r)| r.private)
            .map(|(k, _)| k.clone())
            .collect();
        for k in private {
            self.remove(&k);
        }
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
                if let Some(old) = r.owner.replace(owner.clone()) {
                    uncount(&mut self.owned, &fold(&old));
                }
                *self.owned.entry(fold(&owner)).or_default() += 1;
                true
            }
            _ => false,
        }
    }

    /// The time for a new line of a room at `now_ms`: `now_ms`, or just
    /// after the room's latest line if that is not earlier (several lines in
    /// one millisecond, or a clock that stepped back).
    pub(super) fn stamp(&mut self, key: &str, now_ms: u64) -> u64 {
        let Some(r) = self.map.get_mut(key) else {
            return now_ms;
        };
        let ts = now_ms.max(r.last_ts.saturating_add(1));
        r.last_ts = ts;
        ts
    }

    /// What history keeps of a line: an upload's notice without its data,
    /// an envelope's notice if it is over `--history-envelope`.
    pub(super) fn kept_form(&self, line: Rc<ServerLine>) -> Rc<ServerLine> {
        match &*line {
            ServerLine::Upload { data, .. } if !data.is_empty() => {
                let mut k = (*line).clone();
                if let ServerLine::Upload { data, .. } = &mut k {
                    data.clear();
                }
                Rc::new(k)
            }
            ServerLine::Encrypted { data, .. } if data.len() > self.limits.envelope => {
                let mut k = (*line).clone();
                if let ServerLine::Encrypted { data, .. } = &mut k {
                    data.clear();
                }
                Rc::new(k)
            }
            _ => line,
        }
    }

    /// Rooms owned by the folded `owner` lose their owner (the account is
    /// gone): they become ordinary rooms again.
    pub(super) fn disown(&mut self, owner: &str) {
        for r in self.map.values_mut() {
            if r.owner.as_deref().map(fold).as_deref() == Some(owner) {
                r.owner = None;
            }
            r.rules.set_op(owner, false);
        }
        self.owned.remove(owner);
    }

    /// The moderation state of a room, to change it.
    pub(super) fn rules_mut(&mut self, key: &str) -> Option<&mut Rules> {
        self.map.get_mut(key).map(|r| &mut r.rules)
    }

    /// Keeps `line` in the room's history (in its kept form, which is
    /// returned, for the journal), dropping the oldest lines past the
    /// room's bounds and, if all rooms together hold too much, the oldest
    /// of the room that holds the most.
    pub(super) fn remember(&mut self, key: &str, line: Rc<ServerLine>) -> Rc<ServerLine> {
        let kept = self.kept_form(line);
        let limits = self.limits;
        let Some(r) = self.map.get_mut(key) else {
            return kept;
        };
        if let Some(ts) = line_ts(&kept) {
            r.last_active = r.last_active.max(ts);
            r.last_ts = r.last_ts.max(ts);
        }
        if limits.lines == 0 {
            return kept;
        }
        let bytes = size_of_line(&kept);
        if r.history.is_empty() {
            self.with_history += 1;
        }
        r.history.push_back(Kept {
            line: kept.clone(),
            bytes,
        });
        r.history_bytes += bytes;
        self.history_total += bytes;
        self.trim(key, limits.lines, limits.bytes);
        while self.history_total > limits.total {
            let Some(victim) = self.fullest(key) else {
                break;
            };
            if !self.drop_oldest(&victim) {
                break;
            }
        }
        kept
    }

    /// Drops a room's oldest lines until it is within `lines` and `bytes`
    /// (keeping at least its newest line).
    fn trim(&mut self, key: &str, lines: usize, bytes: usize) {
        loop {
            let over = self.map.get(key).is_some_and(|r| {
                r.history.len() > lines || (r.history_bytes > bytes && r.history.len() > 1)
            });
            if !over || !self.drop_oldest(key) {
                return;
            }
        }
    }

    /// The room to take history from when all rooms hold too much: the one
    /// just written to if it holds at least its share (the common case: one
    /// busy room, found at once), else the one holding the most.
    fn fullest(&self, key: &str) -> Option<String> {
        let share = self.history_total / self.with_history.max(1);
        if self
            .map
            .get(key)
            .is_some_and(|r| r.history_bytes >= share && !r.history.is_empty())
        {
            return Some(key.to_string());
        }
        self.map
            .iter()
            .filter(|(_, r)| !r.history.is_empty())
            .max_by_key(|(_, r)| r.history_bytes)
            .map(|(k, _)| k.clone())
    }

    /// Drops a room's oldest line; false if it had none.
    fn drop_oldest(&mut self, key: &str) -> bool {
        let Some(r) = self.map.get_mut(key) else {
            return false;
        };
        let Some(old) = r.history.pop_front() else {
            return false;
        };
        r.history_bytes = r.history_bytes.saturating_sub(old.bytes);
        self.history_total = self.history_total.saturating_sub(old.bytes);
        if r.history.is_empty() {
            self.with_history = self.with_history.saturating_sub(1);
        }
        true
    }

    /// Replaces a room's history (and topic, if one came) with what a
    /// cluster stream holds.
    pub(super) fn replace_history(&mut self, key: &str, lines: Vec<ServerLine>) {
        let Some(r) = self.map.get_mut(key) else {
            return;
        };
        let old_bytes = std::mem::take(&mut r.history_bytes);
        let had = !std::mem::take(&mut r.history).is_empty();
        self.history_total = self.history_total.saturating_sub(old_bytes);
        if had {
            self.with_history = self.with_history.saturating_sub(1);
        }
        for l in lines {
            if let ServerLine::Topic { text, .. } = l {
                if let Some(r) = self.map.get_mut(key) {
                    r.topic = text;
                }
                continue;
            }
            self.remember(key, Rc::new(l));
        }
    }

    /// History counts agree with the lines (for the invariant checks).
    pub(super) fn check(&self) -> Result<(), String> {
        let mut total = 0;
        let mut with = 0;
        for (k, r) in &self.map {
            let bytes: usize = r.history.iter().map(|h| h.bytes).sum();
            if bytes != r.history_bytes {
                return Err(format!("{k}: history bytes {} != {bytes}", r.history_bytes));
            }
            total += bytes;
            with += usize::from(!r.history.is_empty());
        }
        let mut made: HashMap<IpAddr, usize> = HashMap::new();
        let mut owned: HashMap<String, usize> = HashMap::new();
        for r in self.map.values() {
            if let Some(a) = r.made_by {
                *made.entry(a).or_default() += 1;
            }
            if let Some(o) = &r.owner {
                *owned.entry(fold(o)).or_default() += 1;
            }
        }
        if made != self.made_by || owned != self.owned {
            return Err("room counts per address or owner disagree".to_string());
        }
        if total != self.history_total || with != self.with_history {
            return Err(format!(
                "history total {} in {} rooms, counted {total} in {with}",
                self.history_total, self.with_history
            ));
        }
        Ok(())
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
