//! Putting a room's republished lines back in the stream's order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Puts a room's republished lines back in the stream's order. JetStream's
/// republish delivers every line but, with several publishers, not always
/// in order; each carries its own stream sequence and the sequence of the
/// line before it on the same subject, which is enough to chain them.
#[derive(Debug)]
pub struct Reorder<T> {
    /// The sequence of the last line handed out.
    pub last: u64,
    /// Lines that came before the line they follow, by that line's sequence.
    early: BTreeMap<u64, (u64, T)>,
    /// Since when a line has been missing.
    gap_since: Option<Instant>,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Reorder {
            last: 0,
            early: BTreeMap::new(),
            gap_since: None,
        }
    }
}

impl<T> Reorder<T> {
    /// One line (`seq`, following `prev`); returns what can be shown now,
    /// in order. Lines at or before `last` are duplicates and dropped.
    pub fn push(&mut self, prev: u64, seq: u64, item: T, now: Instant) -> Vec<(u64, T)> {
        if seq <= self.last {
            return Vec::new();
        }
        // A line after one already passed (a fetch went further).
        self.early.insert(prev.max(self.last), (seq, item));
        self.release(now)
    }

    /// After lines up to `last` were fetched and shown another way.
    pub fn skip_to(&mut self, last: u64, now: Instant) -> Vec<(u64, T)> {
        self.last = self.last.max(last);
        let l = self.last;
        self.early.retain(|_, (seq, _)| *seq > l);
        self.gap_since = None;
        self.release(now)
    }

    fn release(&mut self, now: Instant) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        while let Some((seq, item)) = self.early.remove(&self.last) {
            self.last = seq;
            out.push((seq, item));
        }
        self.gap_since = if self.early.is_empty() {
            None
        } else {
            self.gap_since.or(Some(now))
        };
        out
    }

    /// True when a line has been missing for `wait`, or too much waits for
    /// it: time to fetch from the stream.
    pub fn stuck(&self, wait: Duration, max: usize, now: Instant) -> bool {
        self.gap_since
            .is_some_and(|t| now.saturating_duration_since(t) >= wait)
            || self.early.len() > max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorder_chains_lines_by_their_predecessor() {
        let t = Instant::now();
        let mut r = Reorder::default();
        // Subject sequences 3, 7, 8, 12 (other rooms in between), arriving
        // 7, 3, 12, 8, with 3 again.
        assert!(r.push(3, 7, "b", t).is_empty());
        assert!(r.stuck(Duration::ZERO, 100, t));
        let got: Vec<_> = r.push(0, 3, "a", t).into_iter().map(|x| x.1).collect();
        assert_eq!(got, ["a", "b"]);
        assert!(r.push(8, 12, "d", t).is_empty());
        assert!(r.push(0, 3, "a", t).is_empty(), "a duplicate");
        let got: Vec<_> = r.push(7, 8, "c", t).into_iter().map(|x| x.1).collect();
        assert_eq!(got, ["c", "d"]);
        assert_eq!(r.last, 12);
        assert!(!r.stuck(Duration::ZERO, 100, t));
    }

    #[test]
    fn reorder_moves_past_a_fetched_gap() {
        let t = Instant::now();
        let mut r = Reorder::default();
        assert!(r.push(5, 9, "late", t).is_empty());
        assert!(!r.stuck(Duration::from_millis(500), 100, t));
        assert!(r.stuck(Duration::from_millis(500), 100, t + Duration::from_secs(1)));
        // Lines up to 5 were fetched from the stream: 9 follows.
        let got: Vec<_> = r.skip_to(5, t).into_iter().map(|x| x.1).collect();
        assert_eq!(got, ["late"]);
        // A fetch that went past what was waiting drops it as shown.
        let got: Vec<_> = r.push(9, 11, "x", t).into_iter().map(|x| x.1).collect();
        assert_eq!(got, ["x"]);
        let mut r = Reorder::default();
        r.push(4, 6, "six", t);
        assert!(r.skip_to(6, t).is_empty());
        assert_eq!(r.last, 6);
        assert!(!r.stuck(Duration::ZERO, 100, t));
    }
}
