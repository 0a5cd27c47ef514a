//! Room envelopes as the client sees them: opened with the room's key,
//! refused when they fail (wrong key, tampered, malformed) and when they
//! replay one seen before or arrive stale; and the replay rules direct
//! messages share.

use std::collections::{HashSet, VecDeque};

use super::{Action, ClientCore, Event, Received, STALE_AFTER_MS, key_of, said, show};
use crate::e2e::Body;
use crate::e2e::room::{self as envelope, OpenError};
use crate::media;
use crate::proto::Upload;

/// Nonces remembered per room for replay detection.
const SEEN_PER_ROOM: usize = 10_000;

/// Message ids seen, oldest forgotten first past [`SEEN_PER_ROOM`]: the
/// replay memory of one room (or of all direct messages).
pub(super) struct Seen<const N: usize = 12> {
    set: HashSet<[u8; N]>,
    order: VecDeque<[u8; N]>,
}

impl<const N: usize> Seen<N> {
    pub(super) fn new() -> Seen<N> {
        Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }
    /// False if the nonce was seen before.
    pub(super) fn insert(&mut self, n: [u8; N]) -> bool {
        if !self.set.insert(n) {
            return false;
        }
        self.order.push_back(n);
        if self.order.len() > SEEN_PER_ROOM
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

impl ClientCore {
    /// A `enc` line for `room`, opened (or refused) and shown.
    pub(super) fn open_envelope(
        &mut self,
        room: String,
        nick: String,
        ts: u64,
        data: &str,
        history: bool,
    ) -> Vec<Action> {
        if data.is_empty() {
            // The server keeps an envelope over --history-envelope as a
            // notice only (chatd(8), "STATE AND DURABILITY").
            return vec![show(Event::Info(format!(
                "{room}: {nick} sent an encrypted message too large for the server to keep in history"
            )))];
        }
        let Some(key) = self.keys.get(&key_of(&room)) else {
            return vec![show(Event::Info(format!(
                "{room}: {nick} sent an encrypted message (you have no key for {room}: /join {room}:<secret>)"
            )))];
        };
        let opened = match envelope::open(key, &room, &nick, data) {
            Ok(o) => o,
            Err(e @ (OpenError::WrongKey | OpenError::Tampered | OpenError::Malformed)) => {
                return vec![show(Event::Warn(format!(
                    "{room}: message from {nick}: {e}"
                )))];
            }
        };
        let fresh = self
            .seen
            .entry(key_of(&room))
            .or_insert_with(Seen::new)
            .insert(opened.nonce);
        let what = format!("message from {nick}");
        if let Some(refused) =
            refuse_replay(fresh, history, opened.ts, ts, &format!("{room}: "), &what)
        {
            return refused;
        }
        let ev = match opened.body {
            Body::Text(text) => said(false, room, nick, ts, text, true, history),
            Body::Action(text) => said(true, room, nick, ts, text, true, history),
            Body::Image { name, mime, data } | Body::File { name, mime, data } => {
                let kind = if media::sniff_image(&data).is_some() {
                    Upload::Image
                } else {
                    Upload::File
                };
                let size = data.len() as u64;
                self.last = Some(Received {
                    name: name.clone(),
                    mime: mime.clone(),
                    data,
                    from: nick.clone(),
                });
                Event::Media {
                    room,
                    nick,
                    ts,
                    kind,
                    name,
                    mime,
                    size,
                    e2e: true,
                    history,
                    has_data: true,
                }
            }
        };
        vec![show(ev)]
    }
}

/// The replay rules for room and direct-message envelopes alike: an
/// envelope seen before is skipped in history (it was shown then) and
/// refused live; a live one sealed more than [`STALE_AFTER_MS`] from the
/// server's time for it is refused as stale. `None`: show it.
pub(super) fn refuse_replay(
    first: bool,
    history: bool,
    sealed: u64,
    arrived: u64,
    prefix: &str,
    what: &str,
) -> Option<Vec<Action>> {
    if !first {
        if history {
            return Some(Vec::new());
        }
        return Some(vec![show(Event::Warn(format!(
            "{prefix}replayed {what} rejected"
        )))]);
    }
    let drift = sealed.abs_diff(arrived);
    if !history && drift > STALE_AFTER_MS {
        return Some(vec![show(Event::Warn(format!(
            "{prefix}stale {what} rejected (sealed {} minutes before it arrived: a replay?)",
            drift / 60_000
        )))]);
    }
    None
}
