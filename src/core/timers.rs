//! Deadline checks armed for connections: a min-heap of (when, session
//! serial, connection), each entry checked against the session when popped,
//! so a stale one (the connection closed, or its slot reused) is dropped
//! rather than removed when it goes stale.
//!
//! Every connection has one armed from the moment it connects (its naming
//! deadline), so an entry is kept small: milliseconds since the core
//! started, rounded up (a check is never early), and the low 32 bits of the
//! serial and of the connection: 16 bytes, not 40 (issue 21: memory per
//! idle connection). A serial that matches by its low bits alone only makes
//! the caller recompute the real deadline, which it does anyway.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::ConnId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: u64,
    serial: u32,
    conn: u32,
}

/// An armed check as the caller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Armed {
    pub(super) at: Instant,
    serial: u32,
    pub(super) conn: ConnId,
}

impl Armed {
    /// Whether it was armed for the session with this serial.
    pub(super) fn for_serial(&self, serial: u64) -> bool {
        self.serial == serial as u32
    }
}

/// The core's start: times a session keeps are milliseconds after it, 8
/// bytes instead of an `Instant`'s 16. A time before it counts as at it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Epoch(Instant);

impl Default for Epoch {
    fn default() -> Self {
        Epoch(Instant::now())
    }
}

impl Epoch {
    pub(super) fn new(at: Instant) -> Epoch {
        Epoch(at)
    }

    /// Milliseconds to `at`, rounded down (when something happened).
    pub(super) fn ms(self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.0);
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// Milliseconds to `at`, rounded up (a deadline, never early).
    fn ms_up(self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.0);
        u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }

    /// The instant `ms` after the start; `None` past what `Instant` holds.
    pub(super) fn at(self, ms: u64) -> Option<Instant> {
        self.0.checked_add(Duration::from_millis(ms))
    }

    /// As [`Epoch::at`], the start itself past what `Instant` holds (the
    /// core reads no clock of its own).
    pub(super) fn instant(self, ms: u64) -> Instant {
        self.at(ms).unwrap_or(self.0)
    }
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    epoch: Epoch,
}

impl Timers {
    pub(super) fn new(epoch: Epoch) -> Timers {
        Timers {
            heap: BinaryHeap::new(),
            epoch,
        }
    }

    fn tick(&self, at: Instant) -> u64 {
        self.epoch.ms_up(at)
    }

    pub(super) fn push(&mut self, at: Instant, serial: u64, conn: ConnId) {
        let Ok(conn) = u32::try_from(conn) else {
            debug_assert!(false, "connection {conn} past 32 bits");
            return;
        };
        let at = self.tick(at);
        self.heap.push(Reverse(Entry {
            at,
            serial: serial as u32,
            conn,
        }));
    }

    /// The earliest armed check.
    pub(super) fn peek(&self) -> Option<Armed> {
        let Reverse(e) = self.heap.peek()?;
        Some(Armed {
            at: self.epoch.instant(e.at),
            serial: e.serial,
            conn: e.conn as ConnId,
        })
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the earliest; gives memory back once most of a crowd's
    /// entries are gone (a heap never shrinks by itself).
    pub(super) fn pop(&mut self) {
        self.heap.pop();
        let (len, cap) = (self.heap.len(), self.heap.capacity());
        if cap > 1024 && len < cap / 4 {
            self.heap.shrink_to(len * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_never_early_and_shrinks_when_drained() {
        let t0 = Instant::now();
        let mut t = Timers::new(Epoch::new(t0));
        let late = t0 + Duration::from_micros(2_500);
        t.push(late, 7, 3);
        t.push(t0 + Duration::from_millis(1), 1 << 40 | 9, 5);
        let first = t.peek().expect("armed");
        assert_eq!(first.conn, 5);
        assert!(first.for_serial(1 << 40 | 9) && !first.for_serial(8));
        t.pop();
        let second = t.peek().expect("armed");
        assert!(second.at >= late && second.at < late + Duration::from_millis(1));
        t.pop();
        assert_eq!(t.peek(), None);
        for c in 0..10_000 {
            t.push(t0, 0, c);
        }
        while t.heap.len() > 10 {
            t.pop();
        }
        assert!(t.heap.capacity() < 2_048, "{}", t.heap.capacity());
    }
}
