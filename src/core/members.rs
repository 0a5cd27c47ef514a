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
//! Both hold a connection as 32 bits (the reactor's slab never holds more
//! than `--max-conns`, at most about a million): a membership is 8 bytes in
//! the list and 8 in the index, not 16 and 16 (issue 21: every idle
//! connection is a member of one room or two).

use std::collections::HashMap;
use std::rc::Rc;

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
    index: HashMap<u32, u32>,
    /// How many read the machine and the stamped format, so a broadcast
    /// encodes only the formats someone reads.
    machine: usize,
    stamped: usize,
}

impl Members {
    /// Adds `conn`, or updates the format it reads.
    pub fn insert(&mut self, conn: ConnId, format: Format) {
        let Some(conn) = short(conn) else {
            debug_assert!(false, "connection {conn} past 32 bits");
            return;
        };
        let list = Rc::make_mut(&mut self.list);
        match self.index.get(&conn) {
            Some(&i) => {
                if let Some(slot) = list.get_mut(i as usize) {
                    let old = slot.format;
                    slot.format = format;
                    self.uncount(old);
                }
            }
            None => {
                let Ok(at) = u32::try_from(list.len()) else {
                    return;
                };
                self.index.insert(conn, at);
                list.push(Member { conn, format });
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
        let Some(i) = short(conn).and_then(|c| self.index.remove(&c)) else {
            return;
        };
        let list = Rc::make_mut(&mut self.list);
        let i = i as usize;
        if i >= list.len() {
            return;
        }
        let Member { format, .. } = list.swap_remove(i);
        if let Some(moved) = list.get(i) {
            self.index.insert(moved.conn, i as u32);
        }
        // A room that emptied after a crowd gives the memory back.
        if list.capacity() > 64 && list.len() < list.capacity() / 4 {
            list.shrink_to(list.len() * 2);
            self.index.shrink_to(list.len() * 2);
        }
        self.uncount(format);
    }

    pub fn clear(&mut self) {
        self.list = Rc::default();
        self.index = HashMap::new();
        self.machine = 0;
        self.stamped = 0;
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn contains(&self, conn: ConnId) -> bool {
        short(conn).is_some_and(|c| self.index.contains_key(&c))
    }

    pub fn format_of(&self, conn: ConnId) -> Option<Format> {
        let &i = self.index.get(&short(conn)?)?;
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
            assert_eq!(m.index.get(&p.conn), Some(&(i as u32)));
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
    }
}
