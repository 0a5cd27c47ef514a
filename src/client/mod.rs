//! The sans-IO core of `chatc`: what the user types and what the server
//! sends go in; lines to send and events to show come out. No sockets,
//! files, terminals or clocks: the front end (`src/bin/chatc/`) owns those
//! and passes `now` in.
//!
//! The parts: `input.rs` (what the user types), `incoming.rs` (what the
//! server sends), `room_e2e.rs` (opening room envelopes, replay rules),
//! `dm.rs` (encrypted direct messages, key pins, safety numbers) and
//! [`files`] (names of received files).
//!
//! It keeps what survives a reconnection — the nick (and password, if the
//! user logged in), the rooms joined, the keys of encrypted rooms — so that
//! [`ClientCore::connected`] can log in again and rejoin.
//!
//! Encrypted rooms: a room with a key here has every outgoing message sealed
//! into an envelope (`/enc`), and every incoming envelope opened. A message
//! that fails is reported (wrong key, tampering, replay), never shown as
//! text. Replays are refused by nonce while connected, and by the sender's
//! clock for envelopes presented as new but older than [`STALE_AFTER_MS`].

mod dm;
pub mod files;
mod incoming;
mod input;
mod room_e2e;
#[cfg(test)]
mod tests;

pub use files::{numbered, unsafe_name_reason};

use std::collections::{HashMap, HashSet};

use crate::e2e::Body;
use crate::e2e::identity::{Identity, PeerKey};
use crate::e2e::room::{self as envelope, RoomKey};
use crate::proto::Upload;
use room_e2e::Seen;

/// A live envelope this much older (or newer) than the server's time for
/// it is refused as a possible replay.
pub const STALE_AFTER_MS: u64 = 10 * 60 * 1000;

/// Something to show the user. `ts` is Unix ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Msg {
        room: String,
        nick: String,
        ts: u64,
        text: String,
        e2e: bool,
        history: bool,
    },
    Action {
        room: String,
        nick: String,
        ts: u64,
        text: String,
        e2e: bool,
        history: bool,
    },
    Dm {
        from: String,
        to: String,
        ts: u64,
        text: String,
        /// Opened from an end-to-end envelope (else the server could read it).
        e2e: bool,
        history: bool,
    },
    /// An image or file arrived (its bytes, if any, are kept for `/save`).
    Media {
        room: String,
        nick: String,
        ts: u64,
        kind: Upload,
        name: String,
        mime: String,
        size: u64,
        e2e: bool,
        history: bool,
        has_data: bool,
    },
    Join {
        room: String,
        nick: String,
    },
    Part {
        room: String,
        nick: String,
        reason: String,
    },
    Quit {
        nick: String,
        reason: String,
    },
    Nick {
        old: String,
        new: String,
    },
    Topic {
        room: String,
        nick: String,
        text: String,
    },
    /// Information from the server.
    Info(String),
    /// An error from the server.
    Error(String),
    /// A problem found by the client: wrong key, tampering, replay.
    Warn(String),
    /// An invitation to share: `room:secret`.
    Invite(String),
    /// Connection state, said by the client.
    Status(String),
}

/// What the front end must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this line (no newline) to the server.
    Send(String),
    Show(Event),
    /// The user asked to leave; stop reconnecting.
    Quit,
    /// Remember `key` as the one trusted for `nick` (folded): the front end
    /// keeps these pins across runs.
    Pin {
        nick: String,
        key: PeerKey,
    },
}

/// The last image or file received, for `/save`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub name: String,
    pub mime: String,
    pub data: Vec<u8>,
    pub from: String,
}

/// An envelope waiting for its sender's key: from, to, ts, envelope, and
/// whether it came in a history block.
type WaitingDm = (String, String, u64, String, bool);

/// The client's state.
pub struct ClientCore {
    /// Our nick, once the server confirmed it.
    nick: Option<String>,
    /// The nick to ask for when (re)connecting.
    want_nick: Option<String>,
    login: Option<(String, String)>,
    /// Rooms we are in, as the server names them, in join order.
    rooms: Vec<String>,
    current: Option<String>,
    keys: HashMap<String, RoomKey>,
    /// `/join new --secret` waiting for the server's code.
    new_secret: Option<String>,
    seen: HashMap<String, Seen>,
    /// Inside a `history` block: its room and the lines left.
    history: Option<(String, usize)>,
    last: Option<Received>,
    /// Rejoin after naming (set on connect).
    rejoin_pending: bool,
    /// Our long-term keys, for end-to-end direct messages.
    identity: Option<Identity>,
    /// Keys trusted per (folded) nick: pinned on first use.
    pins: HashMap<String, PeerKey>,
    /// Published keys that differ from the pin, waiting for `/trust`.
    changed: HashMap<String, PeerKey>,
    /// Nicks whose published key was compared with the pin this session.
    checked: HashSet<String>,
    /// Direct messages and envelopes waiting for a key lookup.
    outbox: HashMap<String, Vec<(String, Body, u64)>>,
    inbox: HashMap<String, Vec<WaitingDm>>,
    /// `/fingerprint nick` waiting for a key lookup.
    want_fingerprint: HashSet<String>,
    /// Direct-message ids already shown (replay detection).
    dm_seen: Seen<16>,
}

impl Default for ClientCore {
    fn default() -> Self {
        Self::new(None)
    }
}

fn show(e: Event) -> Action {
    Action::Show(e)
}

/// A room line of text: a message, or (`action`) a `/me`. One place for
/// what the server's plain lines and opened envelopes both become.
fn said(
    action: bool,
    room: String,
    nick: String,
    ts: u64,
    text: String,
    e2e: bool,
    history: bool,
) -> Event {
    if action {
        Event::Action {
            room,
            nick,
            ts,
            text,
            e2e,
            history,
        }
    } else {
        Event::Msg {
            room,
            nick,
            ts,
            text,
            e2e,
            history,
        }
    }
}

fn key_of(room: &str) -> String {
    envelope::room_id(room)
}

/// Splits `/join target` into the room and the secret after its first `:`.
fn split_invite(target: &str) -> (&str, Option<&str>) {
    match target.split_once(':') {
        Some((room, secret)) if !secret.is_empty() => (room, Some(secret)),
        _ => (target, None),
    }
}

/// The room name the server uses for a `/join` argument: `#name` as is, a
/// private code with its `~`.
fn server_room(target: &str) -> String {
    if target.starts_with('#') || target.starts_with('~') {
        target.to_string()
    } else {
        format!("~{target}")
    }
}

impl ClientCore {
    pub fn new(nick: Option<String>) -> ClientCore {
        ClientCore {
            nick: None,
            want_nick: nick,
            login: None,
            rooms: Vec::new(),
            current: None,
            keys: HashMap::new(),
            new_secret: None,
            seen: HashMap::new(),
            history: None,
            last: None,
            rejoin_pending: false,
            identity: None,
            pins: HashMap::new(),
            changed: HashMap::new(),
            checked: HashSet::new(),
            outbox: HashMap::new(),
            inbox: HashMap::new(),
            want_fingerprint: HashSet::new(),
            dm_seen: Seen::new(),
        }
    }

    /// Our identity, for end-to-end direct messages; without one, direct
    /// messages go as the server shows them.
    pub fn set_identity(&mut self, id: Identity) {
        self.identity = Some(id);
    }

    /// Keys trusted from earlier runs (folded nick, key).
    pub fn set_pins(&mut self, pins: HashMap<String, PeerKey>) {
        self.pins = pins;
    }

    pub fn nick(&self) -> Option<&str> {
        self.nick.as_deref()
    }

    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    pub fn is_encrypted(&self, room: &str) -> bool {
        self.keys.contains_key(&key_of(room))
    }

    /// The last image or file received, for `/save`.
    pub fn last_received(&self) -> Option<&Received> {
        self.last.as_ref()
    }

    /// A connection was made: switch to machine lines, name ourselves (or
    /// log in again), and rejoin once named.
    pub fn connected(&mut self) -> Vec<Action> {
        self.history = None;
        self.nick = None;
        let mut out = vec![Action::Send("/format machine".into())];
        if let Some((nick, pw)) = &self.login {
            out.push(Action::Send(format!("/login {nick} {pw}")));
        } else if let Some(n) = &self.want_nick {
            out.push(Action::Send(format!("/nick {n}")));
        }
        self.rejoin_pending = !self.rooms.is_empty();
        out
    }

    /// The connection dropped; rooms and keys are kept for the next one.
    pub fn disconnected(&mut self) {
        self.nick = None;
        self.history = None;
    }
}
