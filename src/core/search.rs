//! `/search`: the newest kept lines that hold a text, read from several
//! histories at once (rooms, conversations) newest first, within a budget of
//! bytes so that one search costs the loop a bounded time.
//!
//! Each history is already in time order, so the search is a merge: a heap
//! holds the newest unread line of each source, and the newest of those is
//! read next. It stops at `n` matches or when the budget is spent, so the
//! lines it returns are exactly the newest matches among the newest lines
//! it could afford to read. Matching folds ASCII letters only (a line is
//! lowered into one reused buffer, then `str::contains`, which is linear),
//! so a hostile pattern cannot make it quadratic.

use std::collections::BinaryHeap;
use std::rc::Rc;

use crate::proto::{ServerLine, shapes};

/// What a line read costs beyond its text: many short lines are bounded
/// as surely as a few long ones.
const LINE_COST: usize = 32;

/// One history, newest line first.
pub(super) struct Source<'a> {
    lines: Box<dyn Iterator<Item = &'a Rc<ServerLine>> + 'a>,
}

impl<'a> Source<'a> {
    /// A room's history, given oldest first.
    pub(super) fn room(history: impl DoubleEndedIterator<Item = &'a Rc<ServerLine>> + 'a) -> Self {
        Source {
            lines: Box::new(history.rev()),
        }
    }

    /// A kept conversation, oldest first.
    pub(super) fn dms(q: &'a std::collections::VecDeque<Rc<ServerLine>>) -> Self {
        Source {
            lines: Box::new(q.iter().rev()),
        }
    }
}

/// What a search found.
#[derive(Debug)]
pub(super) struct Found {
    /// Newest first.
    pub(super) lines: Vec<ServerLine>,
    /// Lines read.
    pub(super) read: usize,
    /// The budget ran out before every line was read.
    pub(super) exhausted: bool,
}

/// The text of a line a search looks at: what was said, an upload's name;
/// never an envelope (it is opaque) or a notice.
fn searchable(l: &ServerLine) -> Option<&str> {
    match l {
        ServerLine::Msg { text, .. } | ServerLine::Action { text, .. } => Some(text),
        ServerLine::Dm { text, .. } if !shapes::dm_envelope_ok(text) => Some(text),
        ServerLine::Upload { name, .. } => Some(name),
        _ => None,
    }
}

/// The newest `n` lines of `sources` that hold `needle`, reading at most
/// `budget` bytes.
pub(super) fn run(mut sources: Vec<Source<'_>>, needle: &str, n: usize, budget: usize) -> Found {
    let needle = needle.to_ascii_lowercase();
    // (time, source) of each source's next line; the line itself waits in
    // `next` so the heap holds only plain values.
    let mut heap = BinaryHeap::new();
    let mut next: Vec<Option<&Rc<ServerLine>>> = Vec::with_capacity(sources.len());
    for (i, s) in sources.iter_mut().enumerate() {
        let l = s.lines.next();
        if let Some(l) = l {
            heap.push((l.ts().unwrap_or(0), i));
        }
        next.push(l);
    }
    let mut found = Found {
        lines: Vec::new(),
        read: 0,
        exhausted: false,
    };
    let mut spent = 0usize;
    let mut lowered = String::new();
    while let Some((_, i)) = heap.pop() {
        if found.lines.len() >= n {
            break;
        }
        let Some(line) = next.get_mut(i).and_then(Option::take) else {
            continue;
        };
        if let Some(text) = searchable(line) {
            spent = spent.saturating_add(text.len() + LINE_COST);
            if spent > budget {
                found.exhausted = true;
                break;
            }
            found.read += 1;
            lowered.clear();
            lowered.push_str(text);
            lowered.make_ascii_lowercase();
            if lowered.contains(&needle) {
                found.lines.push((**line).clone());
            }
        }
        if let Some(s) = sources.get_mut(i)
            && let Some(l) = s.lines.next()
        {
            heap.push((l.ts().unwrap_or(0), i));
            if let Some(slot) = next.get_mut(i) {
                *slot = Some(l);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(room: &str, ts: u64, text: &str) -> Rc<ServerLine> {
        Rc::new(ServerLine::Msg {
            room: room.into(),
            nick: "a".into(),
            ts,
            text: text.into(),
        })
    }

    #[test]
    fn newest_first_across_sources_and_case_folded() {
        let a = [msg("#a", 1, "North gate"), msg("#a", 5, "the NORTH wind")];
        let b = [msg("#b", 3, "north"), msg("#b", 4, "south")];
        let found = run(
            vec![Source::room(a.iter()), Source::room(b.iter())],
            "north",
            10,
            1 << 20,
        );
        let ts: Vec<u64> = found.lines.iter().filter_map(ServerLine::ts).collect();
        assert_eq!(ts, vec![5, 3, 1]);
        assert_eq!(found.read, 4);
        assert!(!found.exhausted);
        let two = run(
            vec![Source::room(a.iter()), Source::room(b.iter())],
            "north",
            2,
            1 << 20,
        );
        assert_eq!(two.lines.len(), 2);
    }

    #[test]
    fn the_budget_stops_it_and_says_so() {
        let lines: Vec<Rc<ServerLine>> = (0..1000).map(|i| msg("#a", i, "xxxxxxxx")).collect();
        let found = run(vec![Source::room(lines.iter())], "needle", 10, 4000);
        assert!(found.exhausted);
        assert_eq!(found.read, 4000 / (8 + LINE_COST));
    }

    #[test]
    fn envelopes_and_notices_are_never_searched() {
        let enc = Rc::new(ServerLine::Encrypted {
            room: "#a".into(),
            nick: "a".into(),
            ts: 2,
            data: "E1.needle".into(),
        });
        let lines = [msg("#a", 1, "a needle"), enc];
        let found = run(vec![Source::room(lines.iter())], "needle", 10, 1 << 20);
        assert_eq!(found.lines.len(), 1);
        assert_eq!(found.read, 1);
    }
}
