//! Room envelopes as the client sees them: opened with the room's key,
//! refused when they fail (wrong key, tampered, malformed) and when they
//! replay one seen before or are not fresh by the local clock; signed ones
//! (`E2.`) checked against the sender's pinned key; and the replay rules
//! direct messages share.

use super::{Action, ClientCore, Event, Received, STALE_AFTER_MS, Trust, key_of, said, show};
use crate::e2e::Body;
use crate::e2e::identity::nick_id;
use crate::e2e::room::{self as envelope, OpenError};
use crate::media;
use crate::proto::Upload;

impl ClientCore {
    /// An `enc` line for `room`, opened (or refused) and shown, dated by the
    /// sender's clock sealed inside (not the server's word). `now_ms` is the
    /// local clock.
    pub(super) fn open_envelope(
        &mut self,
        room: String,
        nick: String,
        data: &str,
        history: bool,
        now_ms: u64,
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
            Err(
                e @ (OpenError::WrongKey
                | OpenError::Tampered
                | OpenError::Malformed
                | OpenError::Unknown),
            ) => {
                return vec![show(Event::Warn(format!(
                    "{room}: message from {nick}: {e}"
                )))];
            }
        };
        let mut out = Vec::new();
        let first = self.memory.room_envelope(&key_of(&room), &opened.nonce);
        let fresh = first.is_some();
        out.extend(first.map(Action::Remember));
        let what = format!("message from {nick}");
        if let Some(refused) = refuse_replay(
            fresh,
            history,
            opened.ts,
            now_ms,
            &format!("{room}: "),
            &what,
        ) {
            out.extend(refused);
            return out;
        }
        let trust = match opened.signer {
            None => Trust::Sealed,
            Some(signer) => match self.signed_by(&nick, &signer, &mut out) {
                Some(t) => t,
                None => {
                    out.push(show(Event::Warn(format!(
                        "{room}: a message signed by a key that is not {nick}'s pinned key was rejected (someone in the room, or the server, is posing as {nick}; /fingerprint {nick})"
                    ))));
                    return out;
                }
            },
        };
        // The sender's own clock, bound inside the envelope, dates it.
        let ts = opened.ts;
        let ev = match opened.body {
            Body::Text(text) => said(false, room, nick, ts, text, trust, history),
            Body::Action(text) => said(true, room, nick, ts, text, trust, history),
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
                    trust,
                    history,
                    has_data: true,
                }
            }
        };
        out.push(show(ev));
        out
    }

    /// How far a room message signed by `signer` as `nick` is trusted:
    /// `Signed` if that is `nick`'s pinned key; `Sealed` if no key is pinned
    /// for `nick` yet (it is asked for, to pin on first use); `None` if the
    /// pinned key is another (the message is rejected).
    fn signed_by(&mut self, nick: &str, signer: &[u8; 32], out: &mut Vec<Action>) -> Option<Trust> {
        let k = nick_id(nick);
        if self.is_me(nick) {
            let mine = self.identity.as_ref().map(|id| id.public().ed);
            return (mine.as_ref() == Some(signer)).then_some(Trust::Signed);
        }
        match self.pins.get(&k) {
            Some(pin) if &pin.ed == signer && !self.changed.contains_key(&k) => Some(Trust::Signed),
            Some(_) => None,
            None => {
                if self.asked_keys.insert(k) {
                    out.push(Action::Send(format!("/key {nick}")));
                }
                Some(Trust::Sealed)
            }
        }
    }
}

/// The replay rules for room and direct-message envelopes alike, judged by
/// the local clock and memory: an envelope seen before is skipped in history
/// (it was shown then) and refused live; a live one sealed more than
/// [`STALE_AFTER_MS`] before the local time is refused as stale, and one
/// sealed more than that after it as from the future. History is shown as
/// history, with its date, whatever its age. `None`: show it.
pub(super) fn refuse_replay(
    first: bool,
    history: bool,
    sealed: u64,
    now: u64,
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
    if history {
        return None;
    }
    if now > sealed.saturating_add(STALE_AFTER_MS) {
        return Some(vec![show(Event::Warn(format!(
            "{prefix}stale {what} rejected (sealed {} minutes ago by your clock: a replay?)",
            (now - sealed) / 60_000
        )))]);
    }
    if sealed > now.saturating_add(STALE_AFTER_MS) {
        return Some(vec![show(Event::Warn(format!(
            "{prefix}{what} from the future rejected (sealed {} minutes ahead of your clock)",
            (sealed - now) / 60_000
        )))]);
    }
    None
}
