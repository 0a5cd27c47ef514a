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
//! It treats the server and every other member as hostile: everything it
//! shows passes one sanitiser ([`render`]); once it holds any room key it
//! never sends a plain line it cannot prove is for a room without one (it
//! decides by the room the user believes they are in, and asks before
//! following the server to another room); plain lines in a keyed room are
//! shown as unencrypted, loudly; freshness and replays are judged by its own
//! clock and its own memory ([`memory`]), which survives restarts; senders
//! with identities sign their room envelopes, checked against pinned keys.
//!
//! It keeps what survives a reconnection — the nick (and password, if the
//! user logged in), the rooms joined, the keys of encrypted rooms — so that
//! [`ClientCore::connected`] can log in again and rejoin.

mod dm;
pub mod files;
mod incoming;
mod input;
pub mod memory;
pub mod render;
mod room_e2e;
#[cfg(test)]
mod tests;

pub use files::{numbered, unsafe_name_reason};

use std::collections::{HashMap, HashSet};

use crate::e2e::Body;
use crate::e2e::identity::{Identity, PeerKey};
use crate::e2e::room::{self as envelope, RoomKey};
use crate::proto::Upload;
use memory::Memory;

/// A live envelope sealed this long before the local clock's now (or after
/// it) is refused as a possible replay (or as from the future).
pub const STALE_AFTER_MS: u64 = 10 * 60 * 1000;
/// Messages that may wait for one peer's key, and peers that may have
/// messages waiting: a hostile server that never answers `/key` fills
/// nothing but these.
pub const WAITING_PER_PEER: usize = 16;
pub const WAITING_PEERS: usize = 64;

/// What a line's reader may believe about who wrote it and who read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// A plain line, where none was expected to be sealed: the server (and
    /// anyone on the path) could read or write it.
    Plain,
    /// Opened from an envelope: only holders of the room's secret (or the
    /// two parties) could have written or read it; the sender's nick is the
    /// server's word, bound by the envelope.
    Sealed,
    /// Sealed, and signed by the sender's pinned key: the sender is proven.
    Signed,
    /// A plain line in a room this client holds a key for (or a plain DM
    /// from a peer whose key is pinned): shown loudly, never beside sealed
    /// lines as if it were one.
    Unencrypted,
}

/// Something to show the user. `ts` is Unix ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Msg {
        room: String,
        nick: String,
        ts: u64,
        text: String,
        trust: Trust,
        history: bool,
    },
    Action {
        room: String,
        nick: String,
        ts: u64,
        text: String,
        trust: Trust,
        history: bool,
    },
    Dm {
        from: String,
        to: String,
        ts: u64,
        text: String,
        trust: Trust,
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
        trust: Trust,
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
    /// Stop reconnecting, and say why (this session was displaced by a
    /// login elsewhere: reconnecting would only displace that one).
    Stop(String),
    /// Show (or stop showing) the time before live lines: the account's
    /// `timestamps` setting, as the server said it.
    Times(bool),
    /// Append this line to the memory file (see [`memory`]).
    Remember(String),
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

/// A direct-message envelope waiting for its sender's key.
#[derive(Debug, Clone)]
struct WaitingDm {
    from: String,
    to: String,
    text: String,
    history: bool,
    /// It failed to open under the pinned key once already (the key was
    /// asked for again to see whether it changed).
    retried: bool,
}

/// The client's state.
pub struct ClientCore {
    /// Our nick, once the server confirmed it.
    nick: Option<String>,
    /// The nick to ask for when (re)connecting.
    want_nick: Option<String>,
    login: Option<(String, String)>,
    /// Rooms we are in, as the server names them, in join order.
    rooms: Vec<String>,
    /// The room the user believes they are talking in: what the prompt
    /// shows, and what decides whether a line is sealed.
    current: Option<String>,
    /// Where the server last said plain lines go.
    server_current: Option<String>,
    /// Rooms the user asked to enter (folded), until the server answers:
    /// entering them is following the user, not the server.
    asked: HashSet<String>,
    /// `/join new` was asked for: the next private room entered is ours.
    asked_new: bool,
    /// Rooms entered again after a reconnection (folded): not a move.
    rejoining: HashSet<String>,
    keys: HashMap<String, RoomKey>,
    /// `/join new --secret` waiting for the server's code.
    new_secret: Option<String>,
    /// Replay memory and lines shown, across reconnections and restarts.
    memory: Memory,
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
    /// Nicks whose published key was compared with the pin since the last
    /// (re)connection.
    checked: HashSet<String>,
    /// Nicks whose key was asked for (room signatures to check).
    asked_keys: HashSet<String>,
    /// Direct messages and envelopes waiting for a key lookup.
    outbox: HashMap<String, Vec<(String, Body, u64)>>,
    inbox: HashMap<String, Vec<WaitingDm>>,
    /// `/fingerprint nick` waiting for a key lookup.
    want_fingerprint: HashSet<String>,
    /// Plain lines in keyed rooms are hidden rather than shown loudly.
    hide_unencrypted: bool,
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
    trust: Trust,
    history: bool,
) -> Event {
    if action {
        Event::Action {
            room,
            nick,
            ts,
            text,
            trust,
            history,
        }
    } else {
        Event::Msg {
            room,
            nick,
            ts,
            text,
            trust,
            history,
        }
    }
}

fn key_of(room: &str) -> String {
    envelope::room_id(room)
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
            server_current: None,
            asked: HashSet::new(),
            asked_new: false,
            rejoining: HashSet::new(),
            keys: HashMap::new(),
            new_secret: None,
            memory: Memory::default(),
            history: None,
            last: None,
            rejoin_pending: false,
            identity: None,
            pins: HashMap::new(),
            changed: HashMap::new(),
            checked: HashSet::new(),
            asked_keys: HashSet::new(),
            outbox: HashMap::new(),
            inbox: HashMap::new(),
            want_fingerprint: HashSet::new(),
            hide_unencrypted: false,
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

    /// What the prompt shows: the room the user's next line goes to, and
    /// whether it is sealed there.
    pub fn prompt(&self) -> String {
        match &self.current {
            Some(r) if self.is_encrypted(r) => format!("[{r} e2e] "),
            Some(r) => format!("[{r}] "),
            None => "[no room] ".to_string(),
        }
    }

    /// What the memory file held (see [`memory`]).
    pub fn load_memory(&mut self, text: &str) {
        self.memory.load(text);
    }

    /// Everything remembered, compacted, to rewrite the memory file.
    pub fn dump_memory(&self) -> String {
        self.memory.dump()
    }

    /// True once any room key is held: from then on plain lines need proof
    /// of where they go.
    fn guarded(&self) -> bool {
        !self.keys.is_empty()
    }

    pub fn is_encrypted(&self, room: &str) -> bool {
        self.keys.contains_key(&key_of(room))
    }

    /// The last image or file received, for `/save`.
    /// Our nick, as the server last said it.
    pub fn my_nick(&self) -> Option<&str> {
        self.nick.as_deref()
    }

    pub fn last_received(&self) -> Option<&Received> {
        self.last.as_ref()
    }

    /// A connection was made: switch to machine lines, name ourselves (or
    /// log in again), and rejoin once named.
    pub fn connected(&mut self) -> Vec<Action> {
        self.history = None;
        self.nick = None;
        self.server_current = None;
        // Published keys are compared again before they are used: a peer
        // may have set chatc up again meanwhile.
        self.checked.clear();
        self.asked_keys.clear();
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
