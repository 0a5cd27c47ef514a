//! A room's member list, built so that a message to a room costs the core
//! the same whatever the room's size.
//!
//! The list is a vector behind an `Rc`: a broadcast hands the reactor a
//! clone of the `Rc` (see [`super::Fanout`]) instead of one output per
//! member, and the reactor walks it. Joins and leaves change the vector in
//! place (`Rc::make_mut`), which copies it only if a broadcast of the same
//! input is still waiting to be drained; the reactor drains after every
//! input, so in practice a join or a leave costs O(1) whatever the size.
//! An index from connection to position makes removal O(1) (swap-remove).
//!
//! The list holds a connection as 32 bits (the reactor's slab never holds
//! more than `--max-conns`, at most about a million), and the index only a
//! position, 4 bytes, found through the list's own entry (as [`NickIndex`]
//! finds a nick through the session): a membership is 8 bytes in the list
//! and 4 in the index, not 16 and 16 (issue 21: every idle connection is a
//! member of one room or two).
//!
//! [`NickIndex`]: super::nicks::NickIndex

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::rc::Rc;

use hashbrown::HashTable;

use super::ConnId;
use crate::proto::Format;

/// One member as the list holds it: its connection and the format it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    conn: u32,
    format: Format,
}

impl Member {
    /// `None` for a connection past 32 bits (see [`short`]).
    pub fn new(conn: ConnId, format: Format) -> Option<Member> {
        Some(Member {
            conn: short(conn)?,
            format,
        })
    }

    pub fn conn(self) -> ConnId {
        self.conn as ConnId
    }

    pub fn format(self) -> Format {
        self.format
    }
}

/// A connection as the list holds it; `None` for one past 32 bits, which
/// the reactor never makes (its slab is bounded by `--max-conns`).
fn short(conn: ConnId) -> Option<u32> {
    u32::try_from(conn).ok()
}

#[derive(Debug, Default)]
pub struct Members {
    list: Rc<Vec<Member>>,
    /// Positions in `list`, hashed by the connection at each.
    index: HashTable<u32>,
    /// Keyed per room: which connections share a bucket cannot be planned.
    keys: RandomState,
    /// How many read the machine and the stamped format, so a broadcast
    /// encodes only the formats someone reads.
    machine: usize,
    stamped: usize,
}

/// Where `conn` is in `list`, through `index`.
fn position(index: &HashTable<u32>, keys: &RandomState, list: &[Member], conn: u32) -> Option<u32> {
    index
        .find(keys.hash_one(conn), |&i| at(list, i) == Some(conn))
        .copied()
}

/// The connection at position `i`.
fn at(list: &[Member], i: u32) -> Option<u32> {
    list.get(i as usize).map(|m| m.conn)
}

impl Members {
    /// Adds `conn`, or updates the format it reads.
    pub fn insert(&mut self, conn: ConnId, format: Format) {
        let Some(conn) = short(conn) else {
            debug_assert!(false, "connection {conn} past 32 bits");
            return;
        };
        let found = position(&self.index, &self.keys, &self.list, conn);
        let list = Rc::make_mut(&mut self.list);
        match found {
            Some(i) => {
                if let Some(slot) = list.get_mut(i as usize) {
                    let old = slot.format;
                    slot.format = format;
                    self.uncount(old);
                }
            }
            None => {
                let Ok(i) = u32::try_from(list.len()) else {
                    return;
                };
                list.push(Member { conn, format });
                let (list, keys) = (&*list, &self.keys);
                self.index.insert_unique(keys.hash_one(conn), i, |&j| {
                    keys.hash_one(at(list, j).unwrap_or(u32::MAX))
                });
            }
        }
        match format {
            Format::Machine => self.machine += 1,
            Format::Stamped => self.stamped += 1,
            Format::Human => {}
        }
    }

    fn uncount(&mut self, format: Format) {
        match format {
            Format::Machine => self.machine -= 1,
            Format::Stamped => self.stamped -= 1,
            Format::Human => {}
        }
    }

    /// Removes `conn` if it is a member.
    pub fn remove(&mut self, conn: ConnId) {
        let Some(conn) = short(conn) else { return };
        let keys = &self.keys;
        let shared = &self.list;
        let Ok(entry) = self
            .index
            .find_entry(keys.hash_one(conn), |&i| at(shared, i) == Some(conn))
        else {
            return;
        };
        let (i, _) = entry.remove();
        let list = Rc::make_mut(&mut self.list);
        let (i, last) = (i as usize, list.len().saturating_sub(1));
        if i >= list.len() {
            return;
        }
        // The last member moves into the gap: its index entry follows.
        if i != last
            && let Some(moved) = list.get(last).map(|m| m.conn)
            && let Some(p) = self
                .index
                .find_mut(keys.hash_one(moved), |&p| p as usize == last)
        {
            *p = i as u32;
        }
        let Member { format, .. } = list.swap_remove(i);
        // A room that emptied after a crowd gives the memory back.
        if list.capacity() > 64 && list.len() < list.capacity() / 4 {
            list.shrink_to(list.len() * 2);
            let list = &*list;
            self.index.shrink_to(list.len() * 2, |&j| {
                keys.hash_one(at(list, j).unwrap_or(u32::MAX))
            });
        }
        self.uncount(format);
    }

    pub fn clear(&mut self) {
        self.list = Rc::default();
        self.index = HashTable::new();
        self.machine = 0;
        self.stamped = 0;
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn find(&self, conn: ConnId) -> Option<u32> {
        position(&self.index, &self.keys, &self.list, short(conn)?)
    }

    pub fn contains(&self, conn: ConnId) -> bool {
        self.find(conn).is_some()
    }

    pub fn format_of(&self, conn: ConnId) -> Option<Format> {
        let i = self.find(conn)?;
        self.list.get(i as usize).map(|m| m.format)
    }

    /// Members and their formats, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, Format)> + '_ {
        self.list.iter().map(|m| (m.conn(), m.format))
    }

    pub fn conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.list.iter().map(|m| m.conn())
    }

    /// Whether anyone reads `f`.
    pub fn reads(&self, f: Format) -> bool {
        match f {
            Format::Machine => self.machine > 0,
            Format::Stamped => self.stamped > 0,
            Format::Human => self.machine + self.stamped < self.list.len(),
        }
    }

    /// The list itself, shared: what a broadcast hands the reactor.
    pub fn shared(&self) -> Rc<Vec<Member>> {
        self.list.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(m: &Members) {
        assert_eq!(m.index.len(), m.list.len());
        for (i, p) in m.list.iter().enumerate() {
            assert_eq!(m.find(p.conn()), Some(i as u32));
        }
        let machine = m
            .list
            .iter()
            .filter(|p| p.format == Format::Machine)
            .count();
        assert_eq!(m.machine, machine);
    }

    #[test]
    fn insert_remove_keep_index_and_counts() {
        let mut m = Members::default();
        for c in 0..10 {
            m.insert(
                c,
                if c % 3 == 0 {
                    Format::Machine
                } else {
                    Format::Human
                },
            );
            check(&m);
        }
        m.insert(1, Format::Machine);
        m.insert(0, Format::Human);
        check(&m);
        for c in [0, 9, 4, 4, 42] {
            m.remove(c);
            check(&m);
        }
        assert_eq!(m.len(), 7);
        assert!(!m.contains(4) && m.contains(5));
        assert_eq!(m.format_of(1), Some(Format::Machine));
        assert!(m.reads(Format::Machine) && m.reads(Format::Human));
    }

    #[test]
    fn a_snapshot_is_not_changed_by_later_joins() {
        let mut m = Members::default();
        m.insert(1, Format::Human);
        let snap = m.shared();
        m.insert(2, Format::Human);
        m.remove(1);
        assert_eq!(
            snap.iter()
                .map(|m| (m.conn(), m.format()))
                .collect::<Vec<_>>(),
            vec![(1, Format::Human)]
        );
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(2, Format::Human)]);
    }

    #[test]
    fn a_crowd_leaving_gives_memory_back() {
        let mut m = Members::default();
        for c in 0..10_000 {
            m.insert(c, Format::Human);
        }
        for c in 0..9_990 {
            m.remove(c);
        }
        check(&m);
        assert!(m.list.capacity() < 1_000);
        assert!(m.index.capacity() < 1_000);
    }

    #[test]
    fn the_index_follows_every_swap_of_a_long_mixed_run() {
        let mut m = Members::default();
        let mut model = std::collections::BTreeSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let conn = (x % 300) as ConnId;
            if x & (1 << 40) == 0 {
                m.insert(conn, Format::Human);
                model.insert(conn);
            } else {
                m.remove(conn);
                model.remove(&conn);
            }
        }
        check(&m);
        let mut got: Vec<_> = m.conns().collect();
        got.sort_unstable();
        assert_eq!(got, model.into_iter().collect::<Vec<_>>());
    }
}
