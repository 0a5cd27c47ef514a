//! Encrypted direct messages: publishing our key bundle, pinning peers' keys
//! on first use, refusing changed keys until `/trust`, safety numbers, and
//! sealing and opening `D1.` envelopes (queued while a key is looked up).
//!
//! A peer's published key is fetched again before its first use after every
//! (re)connection, and whenever a direct message does not open under the
//! pinned key: a key that changed is then the loud warning `/trust`
//! answers (the message waits for it), not a "forged" verdict, and nothing
//! is sent to either key meanwhile. What waits for a key is bounded
//! ([`WAITING_PER_PEER`], [`WAITING_PEERS`]).

use super::room_e2e::refuse_replay;
use super::{Action, ClientCore, Event, Trust, WAITING_PEERS, WAITING_PER_PEER, WaitingDm, show};
use crate::e2e::Body;
use crate::e2e::identity::{self, DmError, PeerKey};

impl ClientCore {
    /// After logging in or registering: publish our key bundle for the nick
    /// (the server stores one per registered nick).
    pub(super) fn publish_key(&self) -> Vec<Action> {
        match (&self.identity, &self.nick) {
            (Some(id), Some(nick)) => vec![Action::Send(format!("/key set {}", id.bundle(nick)))],
            _ => Vec::new(),
        }
    }

    /// A key we may use for `peer` now: pinned, not contradicted by what the
    /// server published, and compared with it this session.
    fn usable_key(&self, peer: &str) -> Option<PeerKey> {
        let k = identity::nick_id(peer);
        if self.changed.contains_key(&k) || !self.checked.contains(&k) {
            return None;
        }
        self.pins.get(&k).copied()
    }

    /// `/dm nick text`: sealed to the peer's key; looked up first if needed.
    pub(super) fn dm(&mut self, args: &str, now_ms: u64) -> Vec<Action> {
        let (to, text) = args.split_once(' ').unwrap_or((args, ""));
        let text = text.trim();
        if to.is_empty() || text.is_empty() {
            return vec![Action::Send(format!("/dm {args}"))];
        }
        if self.login.is_none() {
            return vec![show(Event::Warn(format!(
                "not sent: you are not logged in to a registered nick, so {to} could not check who sent an encrypted message. /register <password> (or /login) first, or /dm! {to} <text> to send it unencrypted"
            )))];
        }
        let k = identity::nick_id(to);
        if self.changed.contains_key(&k) {
            return vec![show(Event::Warn(format!(
                "not sent: {to}'s key changed and is not trusted yet (/fingerprint {to}, then /trust {to})"
            )))];
        }
        let body = Body::Text(text.to_string());
        if let Some(key) = self.usable_key(to) {
            return self.seal_dm(to, &key, &body, now_ms);
        }
        let first = !self.outbox.contains_key(&k);
        if !self.room_to_wait(&k) {
            return vec![show(Event::Warn(format!(
                "not sent: too many messages wait for keys ({to}'s is being asked for)"
            )))];
        }
        self.outbox
            .entry(k)
            .or_default()
            .push((to.to_string(), body, now_ms));
        if first {
            vec![Action::Send(format!("/key {to}"))]
        } else {
            Vec::new()
        }
    }

    /// Whether one more message may wait for `k`'s key.
    fn room_to_wait(&self, k: &str) -> bool {
        let peers = self.outbox.len() + self.inbox.len();
        let here = self.outbox.get(k).map_or(0, Vec::len) + self.inbox.get(k).map_or(0, Vec::len);
        let new_peer = !self.outbox.contains_key(k) && !self.inbox.contains_key(k);
        here < WAITING_PER_PEER && !(new_peer && peers >= WAITING_PEERS)
    }

    /// Keeps a direct message until `from`'s key is known (asking for it if
    /// nobody did yet).
    fn wait_for_key(&mut self, w: WaitingDm) -> Vec<Action> {
        let k = identity::nick_id(&w.from);
        if !self.room_to_wait(&k) {
            return vec![show(Event::Warn(format!(
                "a direct message from {} was dropped: too many wait for keys",
                w.from
            )))];
        }
        let first = !self.inbox.contains_key(&k) && !self.outbox.contains_key(&k);
        let from = w.from.clone();
        self.inbox.entry(k).or_default().push(w);
        if first {
            vec![Action::Send(format!("/key {from}"))]
        } else {
            Vec::new()
        }
    }

    fn seal_dm(&self, to: &str, key: &PeerKey, body: &Body, now_ms: u64) -> Vec<Action> {
        let (Some(id), Some(me)) = (&self.identity, &self.nick) else {
            return vec![show(Event::Error("not logged in: nothing sent".into()))];
        };
        let env = identity::seal_dm(id, me, to, key, body, now_ms);
        if env.len() + to.len() + 6 > crate::proto::DM_ENVELOPE_MAX {
            return vec![show(Event::Error(
                "that message is too long to encrypt in one line: split it".into(),
            ))];
        }
        // The server echoes it back; that copy (sealed for us too) is shown.
        vec![Action::Send(format!("/dm {to} {env}"))]
    }

    /// The server's answer to `/key nick`.
    pub(super) fn key_answer(&mut self, nick: String, bundle: &str, now_ms: u64) -> Vec<Action> {
        let k = identity::nick_id(&nick);
        self.checked.insert(k.clone());
        let mut out = Vec::new();
        let published = if bundle.is_empty() {
            None
        } else {
            match identity::parse_bundle(&nick, bundle) {
                Some(p) => Some(p),
                None => {
                    out.push(show(Event::Warn(format!(
                        "{nick}'s published key is not validly signed: it is not used"
                    ))));
                    None
                }
            }
        };
        match (published, self.pins.get(&k).copied()) {
            (Some(p), None) => {
                self.pins.insert(k.clone(), p);
                out.push(Action::Pin {
                    nick: k.clone(),
                    key: p,
                });
                out.push(show(Event::Info(format!(
                    "{nick}'s key {} is now pinned (first use): compare /fingerprint {nick} with them to be sure",
                    p.short()
                ))));
            }
            (Some(p), Some(pin)) if p != pin => {
                self.changed.insert(k.clone(), p);
                out.push(show(Event::Warn(format!(
                    "WARNING: {nick}'s end-to-end key has CHANGED (pinned {}, now {}). Someone may be impersonating {nick}, or {nick} set up chatc again. Nothing is sent to or trusted from the new key until you compare /fingerprint {nick} with them and accept it with /trust {nick}.",
                    pin.short(),
                    p.short()
                ))));
            }
            _ => {}
        }
        let usable = self.usable_key(&nick);
        if self.want_fingerprint.remove(&k) {
            out.extend(self.fingerprint(&nick));
        }
        let queued = self.outbox.remove(&k).unwrap_or_default();
        for (to, body, at) in queued {
            match usable {
                Some(key) => out.extend(self.seal_dm(&to, &key, &body, at)),
                None if published.is_none() && !self.changed.contains_key(&k) => {
                    out.push(show(Event::Warn(format!(
                        "not sent: {to} has no end-to-end key, so the server could read it. To send it unencrypted anyway: /dm! {to} <text>"
                    ))));
                }
                None => out.push(show(Event::Warn(format!(
                    "not sent to {to}: their key is not trusted (/fingerprint {to}, /trust {to})"
                )))),
            }
        }
        if self.changed.contains_key(&k) {
            // They wait for /trust.
            return out;
        }
        let waiting = self.inbox.remove(&k).unwrap_or_default();
        for w in waiting {
            out.extend(self.open_dm_now(w, now_ms));
        }
        out
    }

    /// A direct message that is an envelope: opened now, or after the
    /// sender's key was looked up.
    pub(super) fn incoming_dm(
        &mut self,
        from: String,
        to: String,
        text: String,
        history: bool,
        now_ms: u64,
    ) -> Vec<Action> {
        if self.identity.is_none() {
            return vec![show(Event::Info(format!(
                "@{from} -> {to}: an encrypted message (this client has no identity)"
            )))];
        }
        let w = WaitingDm {
            from,
            to,
            text,
            history,
            retried: false,
        };
        if self.is_me(&w.from) || self.usable_key(&w.from).is_some() {
            return self.open_dm_now(w, now_ms);
        }
        let k = identity::nick_id(&w.from);
        let mut out = Vec::new();
        if self.changed.contains_key(&k) {
            out.push(show(Event::Warn(format!(
                "a direct message from {} waits: their key changed and is not trusted yet (/fingerprint {}, /trust {})",
                w.from, w.from, w.from
            ))));
        }
        out.extend(self.wait_for_key(w));
        out
    }

    fn open_dm_now(&mut self, w: WaitingDm, now_ms: u64) -> Vec<Action> {
        let Some(id) = &self.identity else {
            return Vec::new();
        };
        let from_me = self.is_me(&w.from);
        let key = if from_me {
            Some(id.public())
        } else {
            self.usable_key(&w.from)
        };
        let Some(key) = key else {
            return vec![show(Event::Warn(format!(
                "a direct message from {} cannot be checked: they have no trusted key",
                w.from
            )))];
        };
        let opened = match identity::open_dm(id, &w.from, &w.to, &key, &w.text) {
            Ok(o) => o,
            // Not under the key pinned for them: perhaps they have a new
            // one. Ask again before calling it forged.
            Err(DmError::Forged | DmError::NotForMe) if !from_me && !w.retried => {
                let k = identity::nick_id(&w.from);
                self.checked.remove(&k);
                return self.wait_for_key(WaitingDm { retried: true, ..w });
            }
            Err(DmError::NotForMe) => {
                return vec![show(Event::Warn(format!(
                    "a direct message from {} was not encrypted for this identity (or was re-addressed): not shown",
                    w.from
                )))];
            }
            Err(e) => return vec![show(Event::Warn(format!("{}: {e}", w.from)))],
        };
        let mut out = Vec::new();
        let first = self.memory.dm(&opened.id);
        let fresh = first.is_some();
        out.extend(first.map(Action::Remember));
        let what = format!("direct message from {}", w.from);
        if let Some(refused) = refuse_replay(fresh, w.history, opened.ts, now_ms, "", &what) {
            out.extend(refused);
            return out;
        }
        let text = match opened.body {
            Body::Text(t) => t,
            Body::Action(t) => format!("* {t}"),
            Body::Image { name, .. } | Body::File { name, .. } => format!("(a file: {name})"),
        };
        out.push(show(Event::Dm {
            from: w.from,
            to: w.to,
            ts: opened.ts,
            text,
            trust: Trust::Signed,
            history: w.history,
        }));
        out
    }

    /// `/fingerprint` (our own key) or `/fingerprint nick` (the safety
    /// number both of us see).
    pub(super) fn fingerprint(&mut self, args: &str) -> Vec<Action> {
        let Some(id) = &self.identity else {
            return vec![show(Event::Error("this client has no identity".into()))];
        };
        let mine = id.public();
        let peer = args.trim();
        if peer.is_empty() {
            return vec![show(Event::Info(format!("your key: {}", mine.short())))];
        }
        let k = identity::nick_id(peer);
        let theirs = self.changed.get(&k).or(self.pins.get(&k)).copied();
        let Some(theirs) = theirs.filter(|_| self.checked.contains(&k)) else {
            self.want_fingerprint.insert(k);
            return vec![Action::Send(format!("/key {peer}"))];
        };
        let me = self.nick.clone().unwrap_or_default();
        let n = identity::safety_number(&me, &mine, peer, &theirs);
        let state = if self.changed.contains_key(&k) {
            "NEW key, not trusted yet: /trust to accept it"
        } else {
            "pinned"
        };
        vec![show(Event::Info(format!(
            "safety number with {peer}: {n} ({state}). Compare it with {peer} in person or by another channel: the same digits mean nobody is in between."
        )))]
    }

    /// `/trust nick`: accept a changed key; what waited for it is opened.
    pub(super) fn trust(&mut self, args: &str, now_ms: u64) -> Vec<Action> {
        let peer = args.trim();
        let k = identity::nick_id(peer);
        match self.changed.remove(&k) {
            Some(key) => {
                self.pins.insert(k.clone(), key);
                self.checked.insert(k.clone());
                let mut out = vec![
                    Action::Pin {
                        nick: k.clone(),
                        key,
                    },
                    show(Event::Info(format!(
                        "{peer}'s new key {} is now trusted",
                        key.short()
                    ))),
                ];
                for w in self.inbox.remove(&k).unwrap_or_default() {
                    out.extend(self.open_dm_now(WaitingDm { retried: true, ..w }, now_ms));
                }
                out
            }
            None => vec![show(Event::Info(format!(
                "{peer}'s key has not changed: nothing to trust"
            )))],
        }
    }
}
