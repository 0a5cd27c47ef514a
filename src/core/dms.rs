//! Direct messages the server keeps: the recent history of each conversation
//! between registered users, and the messages waiting for a registered user
//! who is offline. Both are capped per conversation and per recipient
//! (`--dm-history`). This file owns that data; `commands/dm.rs` decides what
//! goes in.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::proto::{ServerLine, fold};

/// The key of a conversation: both folded nicks, in order.
fn pair(a: &str, b: &str) -> (String, String) {
    let (a, b) = (fold(a), fold(b));
    if a <= b { (a, b) } else { (b, a) }
}

/// Appends `item`, dropping the oldest beyond `cap` (nothing is kept at 0).
pub(super) fn push_capped<T>(q: &mut VecDeque<T>, item: T, cap: usize) {
    if cap == 0 {
        return;
    }
    while q.len() >= cap {
        q.pop_front();
    }
    q.push_back(item);
}

#[derive(Debug)]
pub(super) struct Dms {
    conversations: HashMap<(String, String), VecDeque<Rc<ServerLine>>>,
    /// Waiting for a registered user to log in, by folded nick.
    pending: HashMap<String, VecDeque<ServerLine>>,
    cap: usize,
}

impl Dms {
    pub(super) fn new(cap: usize) -> Dms {
        Dms {
            conversations: HashMap::new(),
            pending: HashMap::new(),
            cap,
        }
    }

    /// Keeps `line` in the conversation of `from` and `to`.
    pub(super) fn keep(&mut self, from: &str, to: &str, line: Rc<ServerLine>) {
        let conv = self.conversations.entry(pair(from, to)).or_default();
        push_capped(conv, line, self.cap);
    }

    /// The kept conversation of `a` and `b`, oldest first.
    pub(super) fn conversation(&self, a: &str, b: &str) -> Vec<Rc<ServerLine>> {
        self.conversations
            .get(&pair(a, b))
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every kept conversation `nick` is part of, oldest line first in each.
    pub(super) fn conversations_of(&self, nick: &str) -> Vec<&VecDeque<Rc<ServerLine>>> {
        let me = fold(nick);
        self.conversations
            .iter()
            .filter(|((a, b), _)| *a == me || *b == me)
            .map(|(_, q)| q)
            .collect()
    }

    /// Keeps `line` for `to` until they log in.
    pub(super) fn hold(&mut self, to: &str, line: ServerLine) {
        let queue = self.pending.entry(fold(to)).or_default();
        push_capped(queue, line, self.cap);
    }

    /// What waited for `to`, oldest first; nothing waits afterwards.
    pub(super) fn take_pending(&mut self, to: &str) -> Vec<ServerLine> {
        self.pending
            .remove(&fold(to))
            .map(Vec::from)
            .unwrap_or_default()
    }

    /// Every kept line, conversations in key order, then every waiting line
    /// by recipient: what a snapshot writes out (`true`: waiting).
    pub(super) fn all(&self) -> Vec<(&ServerLine, bool)> {
        let mut convs: Vec<_> = self.conversations.iter().collect();
        convs.sort_by(|a, b| a.0.cmp(b.0));
        let mut pend: Vec<_> = self.pending.iter().collect();
        pend.sort_by(|a, b| a.0.cmp(b.0));
        let kept = convs
            .into_iter()
            .flat_map(|(_, q)| q.iter().map(|l| (&**l, false)));
        let waiting = pend
            .into_iter()
            .flat_map(|(_, q)| q.iter().map(|l| (l, true)));
        kept.chain(waiting).collect()
    }
}
