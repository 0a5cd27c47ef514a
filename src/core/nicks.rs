//! The index from folded nick to the connection that holds it, keyed by
//! the nick its session already holds instead of a second, folded copy.
//!
//! A `HashMap<Box<str>, ConnId>` costs every named connection a folded
//! copy of its nick (a 32-byte malloc chunk) and a 24-byte slot; this table
//! holds only the connection, 4 bytes, and hashes and compares through the
//! session's own nick, ASCII-case-folded on the fly ([`fold`] is ASCII
//! lowercase). Issue 21: memory per idle connection.
//!
//! The caller passes `names`, the nick of a connection in the table; every
//! connection in it has one while it is there, which is what a rehash
//! needs. Removal goes by connection, so it works after the session itself
//! is gone.
//!
//! [`fold`]: crate::proto::fold

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU8;
use std::ops::Deref;

use hashbrown::HashTable;

use super::ConnId;
use crate::proto::NICK_MAX;

/// A session's nick, held inline: a nick is at most [`NICK_MAX`] bytes, so
/// the session keeps it in 25 bytes of its own instead of a boxed string's
/// pointer and length and a 32-byte malloc chunk (issue 21: 24 bytes per
/// named connection).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Nick {
    len: NonZeroU8,
    bytes: [u8; NICK_MAX],
}

impl Nick {
    /// `None` for an empty nick or one longer than [`NICK_MAX`] bytes
    /// (the core names sessions with valid nicks only).
    pub(super) fn new(nick: &str) -> Option<Nick> {
        let len = NonZeroU8::new(u8::try_from(nick.len()).ok()?)?;
        let mut bytes = [0; NICK_MAX];
        bytes
            .get_mut(..nick.len())?
            .copy_from_slice(nick.as_bytes());
        Some(Nick { len, bytes })
    }

    pub(super) fn as_str(&self) -> &str {
        let held = self.bytes.get(..usize::from(self.len.get())).unwrap_or(&[]);
        // Copied whole from a `&str`: always valid.
        std::str::from_utf8(held).unwrap_or_default()
    }
}

impl Deref for Nick {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Nick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Nick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[derive(Debug, Default)]
pub(super) struct NickIndex {
    table: HashTable<u32>,
    /// Keyed per process: which nicks share a bucket cannot be planned.
    keys: RandomState,
}

/// The hash of a nick's folded form, without building that form.
fn hash_folded(keys: &RandomState, nick: &str) -> u64 {
    let mut h = keys.build_hasher();
    let mut chunk = [0u8; 32];
    for part in nick.as_bytes().chunks(chunk.len()) {
        let folded = &mut chunk[..part.len()];
        folded.copy_from_slice(part);
        folded.make_ascii_lowercase();
        h.write(folded);
    }
    h.write_u8(0xff);
    h.finish()
}

impl NickIndex {
    fn hash(&self, nick: &str) -> u64 {
        hash_folded(&self.keys, nick)
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The connection holding `key` (a folded nick).
    pub(super) fn get<'a>(
        &self,
        key: &str,
        names: impl Fn(ConnId) -> Option<&'a str>,
    ) -> Option<ConnId> {
        let same = |&id: &u32| names(id as ConnId).is_some_and(|n| n.eq_ignore_ascii_case(key));
        self.table
            .find(self.hash(key), same)
            .map(|&id| id as ConnId)
    }

    /// Whether `conn` is the one indexed under `key`.
    pub(super) fn holds(&self, key: &str, conn: ConnId) -> bool {
        let Ok(c) = u32::try_from(conn) else {
            return false;
        };
        self.table.find(self.hash(key), |&id| id == c).is_some()
    }

    /// Indexes `conn` under `key` (any case), in place of whoever held it. `conn`'s
    /// own nick must already fold to `key`.
    pub(super) fn insert<'a>(
        &mut self,
        key: &str,
        conn: ConnId,
        names: impl Fn(ConnId) -> Option<&'a str>,
    ) {
        let Ok(c) = u32::try_from(conn) else {
            debug_assert!(false, "connection {conn} past 32 bits");
            return;
        };
        let hash = self.hash(key);
        let same = |&id: &u32| names(id as ConnId).is_some_and(|n| n.eq_ignore_ascii_case(key));
        if let Some(slot) = self.table.find_mut(hash, same) {
            *slot = c;
            return;
        }
        let keys = &self.keys;
        let rehash = |&id: &u32| hash_folded(keys, names(id as ConnId).unwrap_or_default());
        self.table.insert_unique(hash, c, rehash);
    }

    /// Puts `next` where `conn` is indexed under `key` (a further session
    /// of the same account taking the first one's place); false if `conn`
    /// is not there.
    pub(super) fn replace(&mut self, key: &str, conn: ConnId, next: ConnId) -> bool {
        let (Ok(c), Ok(n)) = (u32::try_from(conn), u32::try_from(next)) else {
            return false;
        };
        match self.table.find_mut(self.hash(key), |&id| id == c) {
            Some(slot) => {
                *slot = n;
                true
            }
            None => false,
        }
    }

    /// Drops `conn` from under `key`; false if it was not there.
    pub(super) fn remove(&mut self, key: &str, conn: ConnId) -> bool {
        let Ok(c) = u32::try_from(conn) else {
            return false;
        };
        match self.table.find_entry(self.hash(key), |&id| id == c) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Every indexed connection, in no particular order.
    pub(super) fn conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.table.iter().map(|&id| id as ConnId)
    }

    pub(super) fn clear(&mut self) {
        self.table.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nick_is_held_inline_up_to_the_longest_valid_one() {
        let longest = "a".repeat(NICK_MAX);
        assert_eq!(
            Nick::new(&longest).map(|n| n.to_string()),
            Some(longest.clone())
        );
        assert_eq!(Nick::new("Bob-2").as_deref(), Some("Bob-2"));
        assert!(Nick::new("").is_none());
        assert!(Nick::new(&format!("{longest}b")).is_none());
        assert!(Nick::new(&"é".repeat(200)).is_none(), "past a byte's count");
    }

    #[test]
    fn finds_by_any_case_and_removes_by_connection() {
        let names = ["Alice", "bob", "CAROL"];
        let of = |c: ConnId| names.get(c).copied();
        let mut ix = NickIndex::default();
        for (c, n) in names.iter().enumerate() {
            ix.insert(&n.to_ascii_lowercase(), c, of);
        }
        assert_eq!(ix.get("alice", of), Some(0));
        assert_eq!(ix.get("carol", of), Some(2));
        assert_eq!(ix.get("dave", of), None);
        assert!(ix.holds("bob", 1) && !ix.holds("bob", 0));
        assert!(ix.remove("bob", 1));
        assert!(!ix.remove("bob", 1));
        assert_eq!(ix.get("bob", of), None);
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn survives_growth_with_many_nicks() {
        let names: Vec<String> = (0..5_000).map(|i| format!("User{i}")).collect();
        let of = |c: ConnId| names.get(c).map(String::as_str);
        let mut ix = NickIndex::default();
        for (c, n) in names.iter().enumerate() {
            ix.insert(&n.to_ascii_lowercase(), c, of);
        }
        for (c, n) in names.iter().enumerate() {
            assert_eq!(ix.get(&n.to_ascii_lowercase(), of), Some(c));
        }
        // Long nicks hash in several chunks, all folded.
        let long = ["X".repeat(70), "x".repeat(70)];
        let of2 = |c: ConnId| long.get(c).map(String::as_str);
        let mut ix2 = NickIndex::default();
        ix2.insert(&long[1], 0, of2);
        assert_eq!(ix2.get(&long[1], of2), Some(0));
        assert!(ix2.replace(&long[1], 0, 1));
        assert_eq!(ix2.get(&long[1], of2), Some(1));
    }
}
