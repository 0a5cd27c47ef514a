//! What the client remembers across reconnections and restarts, so that a
//! hostile server cannot replay old messages as new, and a reconnection does
//! not show again what was already shown.
//!
//! * The envelopes seen: per room, the nonces of the last
//!   [`SEEN_PER_ROOM`] room envelopes, in at most [`ROOMS_REMEMBERED`] rooms
//!   (the rooms used longest ago are forgotten first); and the ids of the
//!   last [`SEEN_DMS`] direct messages. An envelope seen before is refused as
//!   a replay when it comes as live, and skipped in history.
//! * Per room, the time of the newest line shown (a room's times are unique
//!   and increasing on the server: chatd(8), `/history`): history lines at or
//!   before it are not shown again.
//!
//! The front end keeps this in a file of its own: each new fact comes out as
//! an [`super::Action::Remember`] line to append, and at start the file is
//! read back ([`Memory::load`]) and rewritten compacted ([`Memory::dump`]).
//! The text format, one fact per line: `r ROOM HEX` (a room envelope's nonce),
//! `d HEX` (a direct message's id), `s ROOM TIME` (newest line shown).

use std::collections::{HashMap, HashSet, VecDeque};

/// Nonces remembered per room.
pub const SEEN_PER_ROOM: usize = 10_000;
/// Rooms whose nonces are remembered.
pub const ROOMS_REMEMBERED: usize = 64;
/// Direct-message ids remembered.
pub const SEEN_DMS: usize = 10_000;
/// The file's first line.
const HEAD: &str = "chatc-memory-v1";

/// Ids seen, oldest forgotten first past a cap.
#[derive(Debug, Default)]
struct Seen {
    set: HashSet<Vec<u8>>,
    order: VecDeque<Vec<u8>>,
}

impl Seen {
    /// False if `id` was seen before.
    fn insert(&mut self, id: &[u8], cap: usize) -> bool {
        if self.set.contains(id) {
            return false;
        }
        self.set.insert(id.to_vec());
        self.order.push_back(id.to_vec());
        while self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[derive(Debug, Default)]
pub struct Memory {
    rooms: HashMap<String, Seen>,
    /// Rooms in the order they were last used, for forgetting.
    room_order: VecDeque<String>,
    dms: Seen,
    shown: HashMap<String, u64>,
}

impl Memory {
    fn touch(&mut self, room: &str) {
        if self.room_order.back().is_some_and(|r| r == room) {
            return;
        }
        self.room_order.retain(|r| r != room);
        self.room_order.push_back(room.to_string());
        while self.room_order.len() > ROOMS_REMEMBERED {
            if let Some(old) = self.room_order.pop_front() {
                self.rooms.remove(&old);
                self.shown.remove(&old);
            }
        }
    }

    /// A room envelope's nonce; `Some(line to remember)` if it is new,
    /// `None` if seen before.
    pub fn room_envelope(&mut self, room: &str, nonce: &[u8]) -> Option<String> {
        self.touch(room);
        let fresh = self
            .rooms
            .entry(room.to_string())
            .or_default()
            .insert(nonce, SEEN_PER_ROOM);
        fresh.then(|| format!("r {room} {}", hex(nonce)))
    }

    /// A direct message's id, likewise.
    pub fn dm(&mut self, id: &[u8]) -> Option<String> {
        self.dms
            .insert(id, SEEN_DMS)
            .then(|| format!("d {}", hex(id)))
    }

    /// The newest line time shown in `room`.
    pub fn shown_until(&self, room: &str) -> Option<u64> {
        self.shown.get(room).copied()
    }

    /// A line of `room` at `ts` was shown; `Some(line)` if that is news.
    pub fn shown(&mut self, room: &str, ts: u64) -> Option<String> {
        if self.shown.get(room).is_some_and(|&t| t >= ts) {
            return None;
        }
        self.touch(room);
        self.shown.insert(room.to_string(), ts);
        Some(format!("s {room} {ts}"))
    }

    /// Reads what a file holds; lines that do not parse are skipped.
    pub fn load(&mut self, text: &str) {
        let mut lines = text.lines();
        if lines.next() != Some(HEAD) {
            return;
        }
        for l in lines {
            let mut w = l.split(' ');
            match (w.next(), w.next(), w.next(), w.next()) {
                (Some("r"), Some(room), Some(h), None) => {
                    if let Some(n) = unhex(h) {
                        let _ = self.room_envelope(room, &n);
                    }
                }
                (Some("d"), Some(h), None, None) => {
                    if let Some(n) = unhex(h) {
                        let _ = self.dm(&n);
                    }
                }
                (Some("s"), Some(room), Some(t), None) => {
                    if let Ok(ts) = t.parse() {
                        let _ = self.shown(room, ts);
                    }
                }
                _ => {}
            }
        }
    }

    /// Everything remembered, as a file's text.
    pub fn dump(&self) -> String {
        let mut out = format!("{HEAD}\n");
        for room in &self.room_order {
            if let Some(seen) = self.rooms.get(room) {
                for n in &seen.order {
                    out.push_str(&format!("r {room} {}\n", hex(n)));
                }
            }
            if let Some(ts) = self.shown.get(room) {
                out.push_str(&format!("s {room} {ts}\n"));
            }
        }
        for n in &self.dms.order {
            out.push_str(&format!("d {}\n", hex(n)));
        }
        out
    }

    /// The first line of a new file.
    pub fn head() -> &'static str {
        HEAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_across_a_dump_and_bounds_itself() {
        let mut m = Memory::default();
        assert!(m.room_envelope("#a", &[1; 12]).is_some());
        assert!(m.room_envelope("#a", &[1; 12]).is_none());
        assert!(m.dm(&[2; 16]).is_some());
        assert!(m.shown("#a", 10).is_some());
        assert!(m.shown("#a", 9).is_none());
        let mut back = Memory::default();
        back.load(&m.dump());
        assert!(back.room_envelope("#a", &[1; 12]).is_none());
        assert!(back.dm(&[2; 16]).is_none());
        assert_eq!(back.shown_until("#a"), Some(10));
        // Appended lines read back the same as a dump.
        let mut log = format!("{}\n", Memory::head());
        let mut fresh = Memory::default();
        log.push_str(&fresh.room_envelope("#b", &[3; 12]).unwrap());
        log.push('\n');
        let mut again = Memory::default();
        again.load(&log);
        assert!(again.room_envelope("#b", &[3; 12]).is_none());
        for r in 0..ROOMS_REMEMBERED + 5 {
            m.room_envelope(&format!("#r{r}"), &[9; 12]);
        }
        assert!(m.rooms.len() <= ROOMS_REMEMBERED);
        assert!(
            m.room_envelope("#a", &[1; 12]).is_some(),
            "#a was forgotten first"
        );
        back.load("not a memory file\nr #x 00");
        back.load(&format!("{HEAD}\nr #x zz\nd 0\ns #y notanumber\n"));
    }
}
