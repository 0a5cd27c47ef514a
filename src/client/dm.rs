//! Encrypted direct messages: publishing our key bundle, pinning peers' keys
//! on first use, refusing changed keys until `/trust`, safety numbers, and
//! sealing and opening `D1.` envelopes (queued while a key is looked up).

use super::room_e2e::refuse_replay;
use super::{Action, ClientCore, Event, show};
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
    pub(super) fn key_answer(&mut self, nick: String, bundle: &str) -> Vec<Action> {
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
        let waiting = self.inbox.remove(&k).unwrap_or_default();
        for (from, to, ts, text, history) in waiting {
            out.extend(self.open_dm_now(from, to, ts, &text, history));
        }
        out
    }

    /// A direct message that is an envelope: opened now, or after the
    /// sender's key was looked up.
    pub(super) fn incoming_dm(
        &mut self,
        from: String,
        to: String,
        ts: u64,
        text: String,
        history: bool,
    ) -> Vec<Action> {
        let me = self.nick.clone().unwrap_or_default();
        let from_me = identity::nick_id(&from) == identity::nick_id(&me);
        if self.identity.is_none() {
            return vec![show(Event::Info(format!(
                "@{from} -> {to}: an encrypted message (this client has no identity)"
            )))];
        }
        if from_me || self.usable_key(&from).is_some() {
            return self.open_dm_now(from, to, ts, &text, history);
        }
        let k = identity::nick_id(&from);
        if self.changed.contains_key(&k) {
            return vec![show(Event::Warn(format!(
                "a direct message from {from} is not shown: their key changed and is not trusted yet (/fingerprint {from}, /trust {from})"
            )))];
        }
        let first = !self.inbox.contains_key(&k) && !self.outbox.contains_key(&k);
        self.inbox
            .entry(k)
            .or_default()
            .push((from.clone(), to, ts, text, history));
        if first {
            vec![Action::Send(format!("/key {from}"))]
        } else {
            Vec::new()
        }
    }

    fn open_dm_now(
        &mut self,
        from: String,
        to: String,
        ts: u64,
        text: &str,
        history: bool,
    ) -> Vec<Action> {
        let Some(id) = &self.identity else {
            return Vec::new();
        };
        let me = self.nick.clone().unwrap_or_default();
        let from_me = identity::nick_id(&from) == identity::nick_id(&me);
        let key = if from_me {
            Some(id.public())
        } else {
            self.usable_key(&from)
        };
        let Some(key) = key else {
            return vec![show(Event::Warn(format!(
                "a direct message from {from} cannot be checked: they have no trusted key"
            )))];
        };
        let opened = match identity::open_dm(id, &from, &to, &key, text) {
            Ok(o) => o,
            Err(DmError::NotForMe) => {
                return vec![show(Event::Warn(format!(
                    "a direct message from {from} was not encrypted for this identity (or was re-addressed): not shown"
                )))];
            }
            Err(e) => return vec![show(Event::Warn(format!("{from}: {e}")))],
        };
        let first = self.dm_seen.insert(opened.id);
        let what = format!("direct message from {from}");
        if let Some(refused) = refuse_replay(first, history, opened.ts, ts, "", &what) {
            return refused;
        }
        let text = match opened.body {
            Body::Text(t) => t,
            Body::Action(t) => format!("* {t}"),
            Body::Image { name, .. } | Body::File { name, .. } => format!("(a file: {name})"),
        };
        vec![show(Event::Dm {
            from,
            to,
            ts,
            text,
            e2e: true,
            history,
        })]
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

    /// `/trust nick`: accept a changed key.
    pub(super) fn trust(&mut self, args: &str) -> Vec<Action> {
        let peer = args.trim();
        let k = identity::nick_id(peer);
        match self.changed.remove(&k) {
            Some(key) => {
                self.pins.insert(k.clone(), key);
                vec![
                    Action::Pin { nick: k, key },
                    show(Event::Info(format!(
                        "{peer}'s new key {} is now trusted",
                        key.short()
                    ))),
                ]
            }
            None => vec![show(Event::Info(format!(
                "{peer}'s key has not changed: nothing to trust"
            )))],
        }
    }
}
