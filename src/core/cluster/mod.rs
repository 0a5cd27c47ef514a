//! The core's side of a cluster: what it asks of the other nodes, what they
//! tell it, and how it folds remote people into `/who`, `/online`, rooms
//! and direct messages.
//!
//! The core still does no I/O. It emits [`ToCluster`] requests as
//! [`Output::Cluster`](super::Output) and takes [`FromCluster`] events in
//! [`Core::handle_cluster`]; the reactor carries them to and from the NATS
//! bridge (`crate::nats`). Without `--cluster` none of this runs.
//!
//! Who decides what:
//! * the order of a room is the order of its JetStream stream: a line typed
//!   here goes out as [`ToCluster::Post`] and is shown to local members when
//!   it comes back as [`FromCluster::Posted`], like everybody else's;
//! * a nick belongs to whoever won the create-if-absent in the nick bucket
//!   ([`ToCluster::Claim`]); the core's own table only says who is here;
//! * presence of remote people is what their node announced, dropped when
//!   that node stops beating ([`FromCluster::NodeGone`]).
//!
//! * what is shared is decided here too: durable records go out as
//!   [`ToCluster::State`] (see `Core::persist_shared`), and records that come
//!   in as [`FromCluster::State`] are applied and journaled by the core, so
//!   the simulator sees both rules.
//!
//! While the cluster is unreachable the core serves its own people alone:
//! room lines are shown and journaled here at once and handed to the bridge
//! to publish later (`local: true`), nicks are granted here and claimed when
//! the link returns. A request the bridge's bounded queue cannot take comes
//! back as [`FromCluster::Refused`], and the core says what it means for the
//! people concerned (see `events.rs`).
//!
//! The parts: the messages (here), `state.rs` (what is known of the other
//! nodes, owned there) and `events.rs` (what the core does with each event).

mod events;
mod state;
#[cfg(test)]
mod tests;

pub(super) use state::ClusterState;
use state::{PendingClaim, Post, Remote};

use super::{ConnId, Core};
use crate::proto::ServerLine;
use crate::record::Record;

/// A request for the cluster bridge. Room keys are folded (`#lobby`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToCluster {
    /// Append a room line (machine v1) to the room's shared stream. `local`:
    /// it was already shown here because the cluster was unreachable.
    Post {
        room: String,
        line: String,
        id: u64,
        local: bool,
    },
    /// Local people are in this room: deliver its lines here, history first.
    Follow(String),
    /// Nobody here is in this room any more.
    Unfollow(String),
    /// Claim a nick cluster-wide; answered by [`FromCluster::Claimed`].
    Claim { id: u64, nick: String },
    /// Give up a nick this node holds.
    Release(String),
    /// What local people did, for the other nodes' presence.
    Presence(Presence),
    /// A direct message for someone on `node`; kept for them if they turn
    /// out to be offline and `store` (they are registered).
    Dm {
        node: String,
        to: String,
        line: String,
        store: bool,
    },
    /// A direct message for a registered user who is offline everywhere.
    Store { to: String, line: String },
    /// A registered user is here: fetch (and then drop) what waits for them.
    TakeInbox(String),
    /// A durable state record (account, profile, key, room owner) to share.
    State(Record),
}

/// A presence change of one person, as nodes tell each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    Online { nick: String, rooms: Vec<String> },
    Offline { nick: String },
    Join { nick: String, room: String },
    Part { nick: String, room: String },
    Rename { old: String, new: String },
}

/// How a nick claim ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Won,
    /// Someone on another node holds it.
    Lost,
    /// The cluster did not answer: granted here, claimed again on return.
    Unreachable,
    /// The bridge was too busy to ask: the user is told to try again.
    Busy,
}

/// Something the cluster tells the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromCluster {
    /// The cluster is reachable (again) and set up.
    Up,
    /// The cluster became unreachable.
    Down,
    /// A room line in the room's order. `id`: this node posted it.
    Posted {
        room: String,
        line: String,
        id: Option<u64>,
    },
    /// A line of ours the cluster could not take before the outage was
    /// known: show it here now; it is published when the cluster returns.
    Unsent {
        room: String,
        line: String,
        id: u64,
    },
    /// The stored lines of a room just followed, oldest first.
    History {
        room: String,
        lines: Vec<String>,
    },
    Claimed {
        id: u64,
        outcome: Claim,
    },
    /// A nick granted here during an outage belongs to someone else.
    NickLost(String),
    /// Another node's person did something.
    Presence {
        node: String,
        presence: Presence,
    },
    /// Everybody on `node`, replacing what was known of it.
    Roster {
        node: String,
        people: Vec<(String, Vec<String>)>,
    },
    /// A node stopped beating: its people are gone.
    NodeGone(String),
    /// A direct message (machine v1 line) for someone here.
    Dm {
        line: String,
    },
    /// A direct message could not reach `to`, who was not registered.
    DmFailed {
        from: String,
        to: String,
    },
    /// Direct messages that waited for `nick`, oldest first.
    Inbox {
        nick: String,
        lines: Vec<String>,
    },
    /// A durable state record written by another node.
    State(Record),
    /// The bridge's queue was full: this request never reached it.
    Refused(ToCluster),
}

/// Figures for `/stats` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStats {
    pub node: String,
    pub up: bool,
    pub remote_people: usize,
    pub nodes: usize,
    pub received: u64,
    /// Requests the bridge's full queue refused.
    pub refused: u64,
}

impl Core {
    /// Turns cluster mode on, as node `node`. The link starts down.
    pub fn enable_cluster(&mut self, node: &str) {
        self.cluster = Some(ClusterState::new(node));
    }

    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        let c = self.cluster.as_ref()?;
        Some(ClusterStats {
            node: c.node().to_string(),
            up: c.up(),
            remote_people: c.remote_people(),
            nodes: c.nodes(),
            received: c.received(),
            refused: c.refused(),
        })
    }

    /// True when room lines go through the cluster rather than straight out.
    fn cluster_up(&self) -> bool {
        self.cluster.as_ref().is_some_and(ClusterState::up)
    }

    pub(super) fn ask_cluster(&mut self, req: ToCluster) {
        if self.cluster.is_some() {
            self.out.cluster(req);
        }
    }

    pub(super) fn presence(&mut self, p: Presence) {
        self.ask_cluster(ToCluster::Presence(p));
    }

    /// A remote person with this folded nick, if any.
    pub(super) fn remote(&self, key: &str) -> Option<&Remote> {
        self.cluster.as_ref()?.remote(key)
    }

    /// How many people are on other nodes.
    pub(super) fn remote_people(&self) -> usize {
        self.cluster.as_ref().map_or(0, ClusterState::remote_people)
    }

    /// Remote members of a room.
    pub(super) fn remote_count(&self, room_key: &str) -> usize {
        self.cluster
            .as_ref()
            .map_or(0, |c| c.remote_count(room_key))
    }

    /// Nicks of remote members of a room.
    pub(super) fn remote_nicks_in(&self, room_key: &str) -> Vec<String> {
        self.cluster
            .as_ref()
            .map(|c| c.nicks_in(room_key))
            .unwrap_or_default()
    }

    pub(super) fn remote_nicks(&self) -> Vec<String> {
        self.cluster
            .as_ref()
            .map(ClusterState::nicks)
            .unwrap_or_default()
    }

    /// Hands a room line to the cluster instead of showing it here; true if
    /// it did (the caller then does nothing more with it).
    pub(super) fn post(&mut self, key: &str, line: &ServerLine, sender: Option<ConnId>) -> bool {
        if !self.cluster_up() || key.starts_with('~') {
            return false;
        }
        let serial = sender
            .and_then(|c| self.sessions.get(c))
            .map(|c| c.serial());
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        let id = c.next_id();
        c.posted(id, Post::Waiting(sender.zip(serial)));
        self.out.cluster(ToCluster::Post {
            room: key.to_string(),
            line: line.encode_machine(),
            id,
            local: false,
        });
        true
    }

    /// A line shown here while the cluster was down: publish it later.
    pub(super) fn post_later(&mut self, key: &str, line: &ServerLine) {
        if key.starts_with('~') {
            return;
        }
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let id = c.next_id();
        c.posted(id, Post::Shown);
        self.out.cluster(ToCluster::Post {
            room: key.to_string(),
            line: line.encode_machine(),
            id,
            local: true,
        });
    }

    /// Someone here entered a room: follow it if it is the first. True if
    /// its history comes later (from the stream) rather than from here.
    pub(super) fn cluster_joined(&mut self, conn: ConnId, key: &str, nick: &str) -> bool {
        if key.starts_with('~') {
            return false;
        }
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        let first = c.follow(key);
        let later = if first {
            c.up() && c.wait_for_history(key, conn, true)
        } else {
            c.wait_for_history(key, conn, false)
        };
        if first {
            self.out.cluster(ToCluster::Follow(key.to_string()));
        }
        self.presence(Presence::Join {
            nick: nick.to_string(),
            room: key.to_string(),
        });
        later
    }

    /// Someone here left a room: stop following it if it was the last.
    pub(super) fn cluster_left(&mut self, key: &str, nick: Option<&str>) {
        if key.starts_with('~') || self.cluster.is_none() {
            return;
        }
        if let Some(nick) = nick {
            self.presence(Presence::Part {
                nick: nick.to_string(),
                room: key.to_string(),
            });
        }
        if self.rooms.get(key).is_none_or(|r| r.members().is_empty()) {
            self.stop_following(key);
        }
    }

    /// This node stops following a room (nobody here is in it, or it is gone).
    pub(super) fn stop_following(&mut self, key: &str) {
        if let Some(c) = self.cluster.as_mut()
            && c.unfollow(key)
        {
            self.out.cluster(ToCluster::Unfollow(key.to_string()));
        }
    }

    /// Starts a nick claim; `finish_nick` continues when it is answered.
    /// False if there is no cluster to ask (the caller goes on at once).
    pub(super) fn start_claim(&mut self, conn: ConnId, nick: &str, authed: bool) -> bool {
        if !self.cluster_up() {
            return false;
        }
        let Some(serial) = self.sessions.get(conn).map(|c| c.serial()) else {
            return false;
        };
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        if c.claiming(conn) {
            self.error(conn, "busy", "still checking your last nick; one moment");
            return true;
        }
        let id = c.next_id();
        c.add_claim(
            id,
            PendingClaim {
                conn,
                serial,
                nick: nick.to_string(),
                authed,
            },
        );
        self.sessions.hold(conn);
        self.out.cluster(ToCluster::Claim {
            id,
            nick: nick.to_string(),
        });
        true
    }

    /// The connection that posted a line, if it is still the same one.
    fn live_sender(&self, sender: Option<(ConnId, u64)>) -> Option<ConnId> {
        let (conn, serial) = sender?;
        self.sessions
            .get(conn)
            .filter(|c| c.serial() == serial)
            .map(|_| conn)
    }
}

/// Keys of the public rooms named (another node's word: anything else,
/// and repeats, are dropped; private rooms never leave their node).
fn public_keys(names: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = names
        .iter()
        .filter_map(|n| match crate::proto::RoomRef::parse(n) {
            Ok(r @ crate::proto::RoomRef::Public(_)) => Some(r.key()),
            _ => None,
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn line_room(l: &ServerLine) -> Option<&str> {
    match l {
        ServerLine::Msg { room, .. }
        | ServerLine::Action { room, .. }
        | ServerLine::Upload { room, .. }
        | ServerLine::Encrypted { room, .. }
        | ServerLine::Topic { room, .. } => Some(room),
        _ => None,
    }
}
