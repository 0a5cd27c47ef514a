//! The bridge between one chatd node and a NATS cluster.
//!
//! The reactor stays a single-threaded mio loop. NATS is spoken by the
//! async-nats client library on a thread of its own, with a one-thread tokio
//! runtime; the two talk through two bounded queues:
//!
//! * requests, loop to bridge, at most [`REQUESTS_MAX`]: the loop never
//!   waits, so a request that finds the queue full is handed back to the
//!   core as `FromCluster::Refused`, and the core decides what that means
//!   (a room line is shown on this node only, a nick claim is answered
//!   "busy", a direct message is reported undelivered; the rest is counted).
//!   It fills only when NATS stalls the bridge for long under heavy traffic;
//!   `chatd_cluster_requests_refused_total` counts it;
//! * events, bridge to loop, at most [`EVENTS_MAX`], followed by a
//!   `mio::Waker` (one wake-up per batch): when it is full the bridge waits
//!   for the loop (which drains at most [`EVENTS_PER_TURN`] per iteration),
//!   so a burst from NATS pushes back into the NATS client's own buffers
//!   instead of growing memory here; a room line NATS then drops as a slow
//!   consumer is fetched again from the stream as a gap.
//!   `chatd_cluster_bridge_waits_total` counts the waits.
//!
//! Why a library and not a client on the reactor: JetStream (streams,
//! ordered consumers, key-value with compare-and-set) and reconnection over
//! a list of servers are most of a NATS client's code, and async-nats is the
//! NATS maintainers' own Rust client.
//!
//! Subjects (room tokens are room keys without `#`, nick tokens folded):
//!
//! | subject | what |
//! |---|---|
//! | `chatd.room.<room>` | stream `CHATD_ROOMS`: a room's lines, its order and history |
//! | `chatd.live.<room>` | the same lines republished by the stream, to nodes following the room |
//! | `chatd.inbox.<nick>` | stream `CHATD_INBOX`: direct messages waiting for a registered user |
//! | `chatd.dm.<node>.<nick>` | request to the node where a nick is; answered `ok` when shown |
//! | `chatd.presence.<node>` | a node's people coming, going, joining, parting |
//! | `chatd.hb.<node>` | a node's heartbeat, every second |
//! | `chatd.roster.<node>` | request: everybody on that node |
//!
//! Key-value buckets: `chatd_nicks` (folded nick -> node; create-if-absent
//! decides races) and `chatd_state` (accounts, profiles, keys, room owners,
//! as journal records).
//!
//! The parts: this file (the loop's handle), `link.rs` (the actor that owns
//! the NATS connection), `reorder.rs` (putting republished lines back in
//! stream order) and [`wire`] (subjects, state keys, presence and roster
//! formats). Which records are shared is the core's decision
//! (`Core::persist_shared`); the bridge only carries them.

mod link;
mod reorder;
pub mod wire;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use log::{info, warn};
use mio::Waker;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{Sender, channel};

use crate::core::{FromCluster, ToCluster};

/// Requests waiting for the bridge, at most. Each is a line of at most
/// `--max-line` bytes or a small record: 64 MiB at the default line cap.
pub const REQUESTS_MAX: usize = 16 * 1024;
/// Events waiting for the loop, at most.
pub const EVENTS_MAX: usize = 16 * 1024;
/// Events the loop takes per iteration, so that a burst from the cluster
/// does not hold the loop in one long turn.
pub const EVENTS_PER_TURN: usize = 4096;

/// Settings for the bridge.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub servers: Vec<String>,
    pub node: String,
    /// Messages kept per room (the single-node cap).
    pub history_keep: i64,
    /// Direct messages kept waiting per user.
    pub dm_keep: i64,
    pub replicas: usize,
    /// A node not heard from for this long is gone, with its people.
    pub expire: Duration,
}

/// A request the bridge did not take.
#[derive(Debug)]
pub enum SendError {
    /// Its queue is full: the request is handed back.
    Full(Box<ToCluster>),
    /// The bridge thread has ended.
    Gone,
}

/// What the bridge's queues did, for `/stats` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Times the bridge waited because the loop had not taken its events.
    pub waits: u64,
}

/// The loop's end of the bridge.
pub struct Bridge {
    tx: Sender<ToCluster>,
    rx: mpsc::Receiver<FromCluster>,
    woken: Arc<AtomicBool>,
    queued: Arc<AtomicUsize>,
    waits: Arc<AtomicU64>,
    /// Says the bridge thread has finished its last requests.
    done: mpsc::Receiver<()>,
}

impl Bridge {
    /// Starts the bridge thread. It connects in the background: the loop
    /// learns of the cluster through [`FromCluster::Up`].
    pub fn spawn(cfg: ClusterConfig, waker: Arc<Waker>) -> io::Result<Bridge> {
        let (tx, cmds) = channel(REQUESTS_MAX);
        let (out_tx, rx) = mpsc::sync_channel(EVENTS_MAX);
        let woken = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let waits = Arc::new(AtomicU64::new(0));
        let out = Out {
            tx: out_tx,
            waker,
            woken: woken.clone(),
            queued: queued.clone(),
            waits: waits.clone(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (done_tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("chatd-cluster".into())
            .spawn(move || {
                rt.block_on(link::run(cfg, cmds, out));
                let _ = done_tx.send(());
            })?;
        Ok(Bridge {
            tx,
            rx,
            woken,
            queued,
            waits,
            done,
        })
    }

    /// At shutdown: lets the bridge carry out what it was given (the nicks
    /// of everyone who just left are freed) for at most `within`.
    pub fn finish(self, within: Duration) {
        let Bridge { tx, rx, done, .. } = self;
        // A bridge waiting for room in the event queue gives up at once.
        drop(rx);
        drop(tx);
        if done.recv_timeout(within).is_err() {
            info!(
                "cluster: not every nick was freed within {within:?}; the other nodes take the rest over when they miss this node's heartbeat"
            );
        }
    }

    /// Hands a request over without waiting.
    pub fn send(&self, req: ToCluster) -> Result<(), SendError> {
        self.tx.try_send(req).map_err(|e| match e {
            TrySendError::Full(req) => SendError::Full(Box::new(req)),
            TrySendError::Closed(_) => SendError::Gone,
        })
    }

    /// What the bridge has said since the last call, at most
    /// [`EVENTS_PER_TURN`] of it.
    pub fn drain(&self) -> Vec<FromCluster> {
        self.woken.store(false, Ordering::SeqCst);
        let events: Vec<FromCluster> = self.rx.try_iter().take(EVENTS_PER_TURN).collect();
        self.queued.fetch_sub(events.len(), Ordering::SeqCst);
        events
    }

    /// True while events wait that the last drain did not take.
    pub fn has_more(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > 0
    }

    pub fn stats(&self) -> BridgeStats {
        BridgeStats {
            waits: self.waits.load(Ordering::Relaxed),
        }
    }
}

/// The bridge's end: events for the loop, one wake-up per batch.
#[derive(Clone)]
struct Out {
    tx: mpsc::SyncSender<FromCluster>,
    waker: Arc<Waker>,
    woken: Arc<AtomicBool>,
    /// Events sent and not yet taken by the loop.
    queued: Arc<AtomicUsize>,
    waits: Arc<AtomicU64>,
}

impl Out {
    /// Hands an event to the loop; waits while the loop's queue is full.
    fn send(&self, ev: FromCluster) {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let sent = match self.tx.try_send(ev) {
            Ok(()) => true,
            Err(mpsc::TrySendError::Full(ev)) => {
                self.waits.fetch_add(1, Ordering::Relaxed);
                // The loop is behind: make sure it is awake, then wait.
                let _ = self.waker.wake();
                self.tx.send(ev).is_ok()
            }
            Err(mpsc::TrySendError::Disconnected(_)) => false,
        };
        if !sent {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        if !self.woken.swap(true, Ordering::SeqCst)
            && let Err(e) = self.waker.wake()
        {
            warn!("cluster: cannot wake the event loop: {e}");
        }
    }
}
