//! The reactor: one thread, one `mio::Poll`, a `slab` of connections, and the
//! [`Core`] doing all of the chat logic.
//!
//! What this file does, and nothing else: accept, read, write, close, feed
//! the core, and carry out what it says. Its rules:
//!
//! * Readiness is drained until `WouldBlock` (mio is edge-triggered), but one
//!   connection reads at most [`READ_BUDGET`] bytes per loop iteration; one with
//!   more left is revisited next iteration, so a flooder cannot starve others.
//! * Output is a queue of shared buffers per connection, written with
//!   `write_vectored`. `WRITABLE` interest is registered only while a queue is
//!   non-empty (interest follows state).
//! * A queue past `max_queue` bytes means the peer does not read: it is cut off
//!   with a reason, and nobody else waits for it.
//! * The core is drained once per input (`Server::drain`): every line, every
//!   connect and disconnect, every worker or bridge answer is followed by a
//!   drain, and nothing feeds the core while its outputs are being carried
//!   out. An input that arises meanwhile (a slow reader cut off as its bytes
//!   are queued, a bridge queue that is full) waits in `Later` and is fed
//!   after, with a drain of its own: a loop, never a recursion.
//! * A slab key is never reused within the iteration in which its connection
//!   died: dead connections are reaped at the end of the iteration, after the
//!   core's outputs for them have been drained and ignored.
//! * `accept` failing for lack of descriptors (EMFILE/ENFILE) pauses accepting
//!   briefly instead of spinning on a listener that stays readable.
//! * Loop order per iteration: poll → handle events (reads feed the core) →
//!   timeouts → **commit the journal** (one write, one sync) → flush queues →
//!   reap. So nothing any client is shown can be lost to a crash: its record
//!   was written first. Password hashing runs on a worker thread
//!   ([`hasher`]), NATS on the bridge's ([`crate::nats`]), both answering
//!   through a `mio::Waker`; the loop waits on disk only for that one commit
//!   per iteration.
//! * Signals and systemd are [`ops`]; the status listener ([`status_http`])
//!   shares the loop with a small slab of its own.
//!
//! The parts: [`conn`] (a connection and its transport), [`startup`]
//! (listeners, TLS, journal replay, the bridge), [`status_http`], [`ops`],
//! [`hasher`], and systemd's socket activation and notifications
//! ([`listenfd`], [`notify`]).

mod batch;
pub mod conn;
pub mod hasher;
pub mod listenfd;
pub mod notify;
pub mod ops;
pub mod startup;
pub mod status_http;
mod web;

pub use startup::TlsSetup;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::codec::{Decoded, LineDecoder, LineError, bulk_limit};
use crate::config::Config;
use crate::core::{
    Bytes, ConnId, Core, Disconnect, Fanout, FromCluster, HashOutcome, Output, ToCluster,
};
use crate::journal::Journal;
use crate::logfile::LogFile;
use crate::nats::Bridge;
use crate::status::Snapshot;
use batch::Batch;
use conn::{Conn, DeadlineTag, Got, Layer, TLS_BUFFER, Tls, Transport};
use hasher::Hasher;
use ops::{Ops, SIGNAL_TOKEN};
use status_http::StatusListener;

/// Bytes one connection may read per loop iteration before others get a turn.
pub const READ_BUDGET: usize = 64 * 1024;
/// Bytes written to one connection per loop iteration; the rest waits for
/// the next. Writing is the kernel copying into the socket's buffer, on
/// this thread: found under the slow-readers attack, where one flush of 200
/// sockets with growing kernel buffers took 450 ms and held every honest
/// line meanwhile.
pub const WRITE_BUDGET: usize = 256 * 1024;
/// A peer still sending one line this far past the limit is cut off: it is
/// not chatting, and reading it costs everyone.
pub const MAX_DISCARD: u64 = 16 * 1024 * 1024;
/// Connections one listener accepts per loop iteration: under a connection
/// storm `accept` may never say WouldBlock, and the chat must go on.
pub const ACCEPT_BUDGET: usize = 64;
/// Size of the one read buffer all connections share.
pub(crate) const SCRATCH: usize = 64 * 1024;
/// How long a closing connection may take to flush its last lines.
const LINGER: Duration = Duration::from_secs(5);
/// Pause after the process ran out of descriptors in `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Worker threads and the bridge wake the loop with this token.
const WAKER_TOKEN: usize = usize::MAX;
/// Chat listener tokens count down from here; connections use their slab key.
const LISTENER_TOKEN_BASE: usize = usize::MAX - 3;
const MAX_LISTENERS: usize = 1024;
/// At shutdown, how long queued output may take to flush.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(700);
/// At shutdown, how long the bridge may take to free this node's nicks.
const BRIDGE_FINISH: Duration = Duration::from_millis(300);

/// Counters the reactor keeps for the status listener.
#[derive(Debug, Default)]
struct Counters {
    /// HTTP requests answered on chat and web ports.
    http_requests: u64,
    /// WebSockets opened.
    websockets: u64,
    bytes_in: u64,
    bytes_out: u64,
    accepted: u64,
    refused: u64,
    slow_readers: u64,
    /// TLS handshakes that failed or timed out.
    tls_failed: u64,
}

/// An input for the core that arose while its outputs were carried out; fed
/// after the drain (see the module docs).
#[derive(Debug)]
enum Later {
    Disconnect(ConnId, Disconnect),
    /// The bridge's queue was full.
    Refused(ToCluster),
    /// The hashing thread is gone: the job fails rather than hangs.
    HashFailed(u64),
}

/// One accept attempt.
enum Accepted {
    Conn(TcpStream, SocketAddr),
    /// Interrupted, or a connection aborted before it was taken: go on.
    Again,
    /// Nothing more to accept now.
    Done,
    /// Out of descriptors or memory, or another error.
    Failed(io::Error),
}

fn accept_one(l: &TcpListener) -> Accepted {
    match l.accept() {
        Ok((s, p)) => Accepted::Conn(s, p),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Accepted::Done,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
            ) =>
        {
            Accepted::Again
        }
        Err(e) => Accepted::Failed(e),
    }
}

/// The TLS listeners' settings, and the handshakes in progress.
struct TlsListeners {
    config: Arc<rustls::ServerConfig>,
    /// Listeners from this index on speak TLS.
    first_listener: usize,
    handshake_timeout: Duration,
    max_handshakes: usize,
    /// Handshakes in progress.
    in_progress: usize,
    /// Their deadlines (entries of connections that finished or died are
    /// dropped when next looked at).
    deadlines: Vec<(Instant, ConnId)>,
}

/// A handle to stop a server running on another thread (tests).
#[derive(Clone)]
pub struct StopHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Asks the loop to shut down as it does for SIGTERM.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// The daemon's event loop.
pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    tls: Option<TlsListeners>,
    conns: Slab<Conn>,
    core: Core,
    max_queue: usize,
    /// `--shutdown-message`.
    shutdown_message: String,
    /// SO_SNDBUF for chat connections; 0 leaves the kernel's autotuning.
    socket_buffer: usize,
    /// Budget for bytes of partial lines across all connections, and use.
    max_pending: usize,
    pending: usize,
    scratch: Vec<u8>,
    /// What the last read decoded, fed to the core line by line.
    decoded: Vec<Decoded>,
    /// Connections with bytes left to read from the last iteration.
    again: Vec<ConnId>,
    /// Listeners with connections left to accept from the last iteration.
    accept_again: Vec<usize>,
    accept_paused_until: Option<Instant>,
    /// Connections with new output this iteration.
    dirty: Vec<ConnId>,
    /// Prompts of the few connections that asked for one (`/set prompt
    /// on`), written after each burst: kept here rather than in every
    /// `Conn` (issue 21: idle memory).
    prompts: HashMap<ConnId, crate::core::Bytes>,
    /// Connections that died this iteration.
    dying: Vec<ConnId>,
    /// Connections flushing their last lines, with their deadlines; short,
    /// so nothing scans every connection per iteration.
    lingering: Vec<(Instant, ConnId)>,
    later: VecDeque<Later>,
    /// Room lines of the read being handled, not yet queued (see [`batch`]).
    batch: Option<Batch>,
    /// Set while a read's lines are handled: room lines are joined then.
    batching: bool,
    /// `None` with `--ephemeral`.
    journal: Option<Journal>,
    hasher: Hasher,
    /// The NATS bridge, with `--cluster`.
    cluster: Option<Bridge>,
    /// Wakes the loop from worker threads (hashing, compaction, the bridge).
    waker: Arc<Waker>,
    ops: Ops,
    status: Option<StatusListener>,
    started: Instant,
    counters: Counters,
    stopping: bool,
    stop: Arc<AtomicBool>,
    /// The browser client's settings; `None` with `--no-web`.
    web: Option<crate::web::WebConfig>,
    /// Listeners (by index) that speak only HTTP and WebSocket.
    web_only: std::ops::Range<usize>,
    /// Greeting holds and HTTP request deadlines (entries of connections
    /// that moved on are dropped when next looked at).
    web_timers: Vec<(Instant, ConnId)>,
    /// WebSockets open, and when they are next checked for silence.
    ws_live: usize,
    next_ping_sweep: Option<Instant>,
    /// Lines a WebSocket read carried, fed like a read's bytes.
    ws_lines: Vec<u8>,
}

impl Server {
    /// Builds a server on already-bound listeners (so tests can bind port 0
    /// and systemd can hand over sockets). Opens and replays the journal,
    /// starts the hashing thread and, in cluster mode, the bridge. Signals
    /// are not taken: see [`Server::handle_signals`].
    pub fn new(
        cfg: Config,
        listeners: Vec<std::net::TcpListener>,
        status: Option<std::net::TcpListener>,
        tls: Option<TlsSetup>,
    ) -> io::Result<Server> {
        let poll = Poll::new()?;
        let status = status
            .map(|l| StatusListener::new(l, poll.registry()))
            .transpose()?;
        let waker = Arc::new(Waker::new(poll.registry(), Token(WAKER_TOKEN))?);
        let hasher = Hasher::spawn(waker.clone())?;
        let mut web_listeners = Vec::new();
        for addr in &cfg.web_listen {
            let l = startup::bind(*addr)?;
            info!(
                "listening for the browser client on {}",
                l.local_addr().map_or(addr.to_string(), |a| a.to_string())
            );
            web_listeners.push(l);
        }
        let web_only = listeners.len()..listeners.len() + web_listeners.len();
        let first_tls = web_only.end;
        let (tls_listeners, tls) = match tls {
            Some(t) => (
                t.listeners,
                Some(TlsListeners {
                    config: t.config,
                    first_listener: first_tls,
                    handshake_timeout: t.handshake_timeout,
                    max_handshakes: t.max_handshakes,
                    in_progress: 0,
                    deadlines: Vec::new(),
                }),
            ),
            None => (Vec::new(), None),
        };
        let mut mio_listeners = Vec::new();
        let all = listeners
            .into_iter()
            .chain(web_listeners)
            .chain(tls_listeners);
        for (i, l) in all.enumerate() {
            if i == MAX_LISTENERS {
                warn!("more than {MAX_LISTENERS} listeners: the rest are not used");
                break;
            }
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Token(LISTENER_TOKEN_BASE - i), Interest::READABLE)?;
            mio_listeners.push(l);
        }
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut core = Core::new(
            cfg.core.clone(),
            Box::new(crate::random::SystemEntropy),
            Instant::now(),
            unix_ms,
        );
        let journal = match &cfg.state_dir {
            None => {
                info!("ephemeral: nothing is written to disk");
                None
            }
            Some(dir) => Some(startup::open_journal(dir, cfg.fsync, &mut core)?),
        };
        let cluster = match &cfg.cluster {
            None => None,
            Some(cc) => {
                info!(
                    "cluster: node {} via {} (replicas {})",
                    cc.node,
                    cc.servers.join(", "),
                    cc.replicas
                );
                core.enable_cluster(&cc.node);
                Some(Bridge::spawn(cc.clone(), waker.clone())?)
            }
        };
        Ok(Server {
            poll,
            listeners: mio_listeners,
            tls,
            // Reserved once for --max-conns (and the few refused ones being
            // told why): the pages are only touched as connections come, and
            // the slab never doubles, which left each old copy in the heap
            // (issue 21: idle memory).
            conns: Slab::with_capacity(cfg.core.max_conns.saturating_add(64).min(1 << 20)),
            core,
            max_queue: cfg.max_queue,
            shutdown_message: cfg.shutdown_message.clone(),
            socket_buffer: cfg.socket_buffer,
            max_pending: cfg.max_pending,
            pending: 0,
            scratch: vec![0; SCRATCH],
            decoded: Vec::new(),
            again: Vec::new(),
            accept_again: Vec::new(),
            accept_paused_until: None,
            dirty: Vec::new(),
            prompts: HashMap::new(),
            dying: Vec::new(),
            lingering: Vec::new(),
            later: VecDeque::new(),
            batch: None,
            batching: false,
            journal,
            hasher,
            cluster,
            waker,
            ops: Ops::new(),
            status,
            started: Instant::now(),
            counters: Counters::default(),
            stopping: false,
            stop: Arc::new(AtomicBool::new(false)),
            web: cfg.web.clone(),
            web_only,
            web_timers: Vec::new(),
            ws_live: 0,
            next_ping_sweep: None,
            ws_lines: Vec::new(),
        })
    }

    /// Takes SIGTERM, SIGINT (stop) and SIGHUP (reopen the log, sync the
    /// journal) for this process. The daemon does; a test's server does not.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        self.ops.handle_signals(self.poll.registry())
    }

    /// Lets SIGHUP reopen this log file.
    pub fn set_log_file(&mut self, f: LogFile) {
        self.ops.set_log_file(f);
    }

    /// A handle that stops the loop from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            stop: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// The status listener's address, if there is one.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status.as_ref().and_then(StatusListener::addr)
    }

    /// The plain-text addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let plain = self.tls.as_ref().map_or(usize::MAX, |t| t.first_listener);
        self.listeners
            .iter()
            .take(plain)
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The TLS addresses actually bound.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        let Some(t) = &self.tls else {
            return Vec::new();
        };
        self.listeners
            .iter()
            .skip(t.first_listener)
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Runs until SIGTERM or SIGINT (or [`StopHandle::stop`]; then returns
    /// `Ok`), or until the journal cannot be written (`Err`).
    pub fn run(&mut self) -> io::Result<()> {
        for a in self.local_addrs() {
            info!("listening on {a}");
        }
        for a in self.tls_addrs() {
            info!("listening for TLS on {a}");
        }
        if let Some(a) = self.status_addr() {
            info!("status listener on http://{a}/");
        }
        let status = self.status_line();
        self.ops.ready(&status, Instant::now());
        let mut events = Events::with_capacity(1024);
        while !self.stopping {
            let timeout = self.next_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.turn(&events)?;
        }
        self.shutdown(&mut events)
    }

    /// One line for systemd's `STATUS=`.
    fn status_line(&self) -> String {
        let s = self.core.stats();
        format!(
            "{} connections, {} users, {} rooms, {} messages in",
            s.connections, s.named, s.rooms, s.messages_in
        )
    }

    /// Tell everyone, make everything durable, flush for a moment, stop.
    fn shutdown(&mut self, events: &mut Events) -> io::Result<()> {
        let now = Instant::now();
        self.ops.stopping("shutting down");
        info!(
            "shutting down: telling {} connections",
            self.core.stats().connections
        );
        let notice = self.shutdown_message.clone();
        self.core.handle_shutdown(&notice);
        self.drain(now);
        if let Some(j) = self.journal.as_mut() {
            j.commit(now)?;
            j.sync(now)?;
        }
        let deadline = now + SHUTDOWN_FLUSH;
        self.flush_dirty();
        self.reap();
        while !self.conns.is_empty() && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.poll.poll(events, Some(left)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                if self.conns.contains(ev.token().0) && ev.is_writable() {
                    self.mark_dirty(ev.token().0);
                }
            }
            self.flush_dirty();
            self.reap();
        }
        info!(
            "stopped; {} connections did not take their last lines",
            self.conns.len()
        );
        if let Some(b) = self.cluster.take() {
            b.finish(BRIDGE_FINISH);
        }
        Ok(())
    }

    /// Counters for the status listener.
    fn snapshot(&self) -> Snapshot {
        let s = self.core.stats();
        let (rooms, private_rooms) = self.core.room_counts(100);
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.started.elapsed().as_secs(),
            connections: s.connections,
            named: s.named,
            accounts: s.accounts,
            rooms,
            rooms_total: s.rooms,
            private_rooms,
            lines_in: s.messages_in,
            deliveries: s.deliveries,
            bytes_in: self.counters.bytes_in,
            bytes_out: self.counters.bytes_out,
            accepted: self.counters.accepted,
            refused: self.counters.refused,
            slow_readers: self.counters.slow_readers,
            tls_handshaking: self.tls.as_ref().map_or(0, |t| t.in_progress),
            tls_failed: self.counters.tls_failed,
            logins_failed: s.logins_failed,
            rejected: s.errors.into_iter().collect(),
            journal_bytes: self.journal.as_ref().map(Journal::size),
            history_bytes: s.history_bytes,
            cluster: self.core.cluster_stats(),
            bridge: self.cluster.as_ref().map(Bridge::stats),
        }
    }

    /// One loop iteration after `poll` returned. An error here is a journal
    /// that cannot be written: the daemon stops rather than show what it
    /// could not keep.
    fn turn(&mut self, events: &Events) -> io::Result<()> {
        let now = Instant::now();
        for key in std::mem::take(&mut self.again) {
            if let Some(c) = self.conns.get_mut(key) {
                c.in_again = false;
            }
            self.read_conn(key, now);
        }
        for index in std::mem::take(&mut self.accept_again) {
            self.accept_all(index, now);
        }
        for ev in events.iter() {
            self.event(ev, now);
        }
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            for i in 0..self.listeners.len() {
                self.accept_all(i, now);
            }
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
            self.drain(now);
        }
        self.expire_lingering(now);
        self.expire_handshakes(now);
        self.expire_web(now);
        if let Some(st) = self.status.as_mut() {
            st.expire(self.poll.registry(), now);
        }
        self.drain(now);
        // Output is never held back to coalesce: a read's room lines are
        // already joined (see [`batch`]), and a busy loop's reads carry more
        // of them the longer its turns take. Holding flushes (after one
        // that took d, wait d, at most 2 ms) saved CPU at a steady 1,000
        // messages a second but cost a fifth more tail latency, and with
        // joined reads it no longer helped a burst (issue 21).
        self.commit(now)?;
        self.flush_dirty();
        // What a write error or a slow reader cut off during the flush made
        // the core say waits for the next iteration's commit.
        self.drain(now);
        self.reap();
        if self.ops.tick(now) {
            let line = self.status_line();
            self.ops.status(&line, now);
        }
        // Each connection is queued for another read at most once; the
        // debug build the tests drive checks it under the abuse tests.
        debug_assert!(
            self.again.len() <= self.conns.len(),
            "read queue holds duplicates"
        );
        Ok(())
    }

    fn event(&mut self, ev: &mio::event::Event, now: Instant) {
        let t = ev.token().0;
        match t {
            WAKER_TOKEN => {
                if self.stop.load(Ordering::SeqCst) {
                    self.stopping = true;
                }
                self.hashes_done(now);
                self.cluster_events(now);
            }
            SIGNAL_TOKEN => {
                let asked = self.ops.signals();
                self.stopping |= asked.stop;
                if asked.sync
                    && let Some(j) = self.journal.as_mut()
                    && let Err(e) = j.sync(now)
                {
                    warn!("SIGHUP: journal sync failed: {e}");
                }
            }
            status_http::LISTENER_TOKEN => {
                if let Some(st) = self.status.as_mut() {
                    st.accept(self.poll.registry(), now);
                }
            }
            t if StatusListener::owns(t) => {
                // Out of `self` for the call, so that the answer can read
                // the server's counters (only when a request asks for them).
                if let Some(mut st) = self.status.take() {
                    st.serve(t, self.poll.registry(), || self.snapshot());
                    self.status = Some(st);
                }
            }
            t if t > LISTENER_TOKEN_BASE - MAX_LISTENERS => {
                self.accept_all(LISTENER_TOKEN_BASE - t, now);
            }
            t => {
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.read_conn(t, now);
                }
                if ev.is_writable() {
                    self.mark_dirty(t);
                }
            }
        }
    }

    /// Makes this iteration's records durable (group commit), then compacts
    /// the journal if it has grown enough.
    fn commit(&mut self, now: Instant) -> io::Result<()> {
        let Some(j) = self.journal.as_mut() else {
            return Ok(());
        };
        j.commit(now)
            .map_err(|e| io::Error::new(e.kind(), format!("journal write failed: {e}")))?;
        match j.poll_compaction() {
            Ok(Some(c)) => info!(
                "journal compacted: {} -> {} bytes, {} records, in {:?}",
                c.before, c.after, c.records, c.took
            ),
            Ok(None) => {}
            // The old journal is intact and still in use; try again later.
            Err(e) => warn!("journal compaction failed, keeping the old journal: {e}"),
        }
        if j.needs_compaction() {
            let live = self.core.snapshot();
            j.start_compaction(&live, Some(self.waker.clone()));
        }
        Ok(())
    }

    /// What the NATS bridge said: each event is one input.
    fn cluster_events(&mut self, now: Instant) {
        let Some(bridge) = &self.cluster else {
            return;
        };
        for ev in bridge.drain() {
            self.core.handle_cluster(ev, now);
            self.drain(now);
        }
    }

    fn hashes_done(&mut self, now: Instant) {
        for (id, outcome) in self.hasher.done() {
            self.core.handle_hash_done(id, outcome, now);
            self.drain(now);
        }
    }

    fn next_timeout(&mut self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty()
            || !self.accept_again.is_empty()
            || self.cluster.as_ref().is_some_and(Bridge::has_more)
        {
            return Some(Duration::ZERO);
        }
        if !self.dirty.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut next = self.core.poll_timeout();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.accept_paused_until);
        consider(self.ops.next_deadline());
        consider(self.status.as_ref().and_then(StatusListener::next_deadline));
        consider(self.journal.as_ref().and_then(Journal::sync_deadline));
        consider(self.lingering.iter().map(|(t, _)| *t).min());
        consider(self.web_timers.iter().map(|(t, _)| *t).min());
        consider(self.next_ping_sweep);
        consider(
            self.tls
                .as_ref()
                .and_then(|t| t.deadlines.iter().map(|(d, _)| *d).min()),
        );
        // Round up a little so a timer is never polled a hair too early and
        // spun on.
        next.map(|t| t.saturating_duration_since(now) + Duration::from_millis(1))
    }

    // ---- the core's inputs and outputs -------------------------------------

    /// Carries out everything the core asked for, then feeds it the inputs
    /// that arose meanwhile ([`Later`]), each followed by its own drain.
    fn drain(&mut self, now: Instant) {
        loop {
            while let Some(out) = self.core.poll_output() {
                self.carry_out(out, now);
            }
            match self.later.pop_front() {
                Some(Later::Disconnect(key, why)) => self.core.handle_disconnect(key, why),
                Some(Later::Refused(req)) => {
                    self.core.handle_cluster(FromCluster::Refused(req), now)
                }
                Some(Later::HashFailed(id)) => {
                    self.core
                        .handle_hash_done(id, HashOutcome::Verified(false), now)
                }
                None => return,
            }
        }
    }

    /// One output. No wildcard arm: a new kind of output does not compile
    /// until the reactor carries it out.
    fn carry_out(&mut self, out: Output, now: Instant) {
        if !matches!(
            out,
            Output::Fanout(_) | Output::Persist(_) | Output::Hash(_) | Output::Cluster(_)
        ) {
            // Whatever reaches a connection goes after the room lines
            // before it.
            self.settle_batch();
        }
        match out {
            Output::Send { conn, data } => self.enqueue(conn, data),
            Output::Fanout(f) => self.fan_out(f),
            Output::Persist(rec) => {
                if let Some(j) = self.journal.as_mut() {
                    j.append(&rec);
                }
            }
            Output::Cluster(req) => {
                let Some(b) = &self.cluster else {
                    return;
                };
                match b.send(req) {
                    Ok(()) => {}
                    Err(crate::nats::SendError::Full(req)) => {
                        self.later.push_back(Later::Refused(*req))
                    }
                    Err(crate::nats::SendError::Gone) => warn!("cluster bridge thread is gone"),
                }
            }
            Output::Hash(job) => {
                let id = job.id;
                if self.hasher.send(job).is_err() {
                    warn!("password hashing thread is gone");
                    self.later.push_back(Later::HashFailed(id));
                }
            }
            Output::Prompt { conn, prompt } => {
                if self.conns.contains(conn) {
                    match prompt {
                        Some(p) => self.prompts.insert(conn, p),
                        None => self.prompts.remove(&conn),
                    };
                }
            }
            Output::Close { conn } => {
                if let Some(c) = self.conns.get(conn) {
                    info!("connection {conn} from {}: closed by the server", c.peer);
                    if c.layer.is_ws() {
                        self.close_ws(conn, web::ws_normal(), "", now);
                    }
                }
                self.start_closing(conn, now);
                self.mark_dirty(conn);
            }
        }
    }

    /// A room line: joined to the lines before it while a read's lines are
    /// being handled (see [`batch`]), queued at once otherwise.
    fn fan_out(&mut self, f: Fanout) {
        if !self.batching {
            self.push_fanout(f);
            return;
        }
        let f = match self.batch.as_mut() {
            None => f,
            Some(b) => match b.join(f) {
                Ok(()) => return,
                Err(f) => {
                    self.settle_batch();
                    f
                }
            },
        };
        self.batch = Some(Batch::new(f));
    }

    /// Queues the joined room lines, if any wait.
    fn settle_batch(&mut self) {
        if let Some(b) = self.batch.take() {
            self.push_fanout(b.into_fanout());
        }
    }

    /// Queues a line on every recipient of a fan-out. The hot loop of a busy
    /// server: one slab lookup and one shared buffer per recipient, the rare
    /// cut-offs after it.
    fn push_fanout(&mut self, f: Fanout) {
        let hard = self.hard_cap();
        let mut over = Vec::new();
        let mut framed = Vec::new();
        for (conn, data) in f.deliveries() {
            let Some(c) = self.conns.get_mut(conn) else {
                continue;
            };
            if c.dead {
                continue;
            }
            let data = match &c.layer {
                Layer::Lines => data.clone(),
                other => match web::for_layer(other, data, &mut framed) {
                    Some(d) => d,
                    None => continue,
                },
            };
            c.out.push(data);
            c.fresh = true;
            if c.out.len() > hard {
                over.push(conn);
            } else if !c.dirty {
                c.dirty = true;
                self.dirty.push(conn);
            }
        }
        for conn in over {
            self.cut_slow_reader(conn);
        }
    }

    /// A queue this long is cut off at once, whatever the flush would do: it
    /// bounds a pathological single iteration. The cap proper is judged
    /// after the flush (see `flush`): a reader that keeps up must not be cut
    /// off for one busy iteration.
    fn hard_cap(&self) -> usize {
        self.max_queue.saturating_mul(4).saturating_add(READ_BUDGET)
    }

    /// Queues bytes on a connection and marks it for flushing; true if that
    /// took it past the hard cap.
    fn queue_on(&mut self, key: ConnId, data: &Bytes) -> bool {
        let hard = self.hard_cap();
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        if c.dead {
            return false;
        }
        let data = match &c.layer {
            Layer::Lines => data.clone(),
            other => match web::for_layer(other, data, &mut Vec::new()) {
                Some(d) => d,
                None => return false,
            },
        };
        c.out.push(data);
        c.fresh = true;
        if c.out.len() > hard {
            return true;
        }
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(key);
        }
        false
    }

    fn enqueue(&mut self, key: ConnId, data: Bytes) {
        if self.queue_on(key, &data) {
            self.cut_slow_reader(key);
        }
    }

    // ---- accepting ----------------------------------------------------------

    fn accept_all(&mut self, index: usize, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match accept_one(listener) {
                Accepted::Conn(stream, peer) => self.admit(index, stream, peer, now),
                Accepted::Again => {}
                Accepted::Done => return,
                Accepted::Failed(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the pending connection
                    // stays in the backlog; try again shortly.
                    warn!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
        if !self.accept_again.contains(&index) {
            self.accept_again.push(index);
        }
    }

    /// A new connection on listener `index`: the core admits it or not.
    fn admit(&mut self, index: usize, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        let transport = match self.tls.as_ref().filter(|t| index >= t.first_listener) {
            None => Transport::Plain,
            Some(t) if t.in_progress >= t.max_handshakes => {
                // No plaintext can be said on a TLS port before the
                // handshake: just close.
                self.counters.refused += 1;
                info!(
                    "refused {peer}: {} TLS handshakes in progress (--max-handshakes)",
                    t.in_progress
                );
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Some(t) => match rustls::ServerConnection::new(t.config.clone()) {
                Ok(mut session) => {
                    session.set_buffer_limit(Some(TLS_BUFFER));
                    Transport::Tls(Box::new(Tls {
                        session,
                        handshake_deadline: Some(now + t.handshake_timeout),
                        peeked: false,
                        close_sent: false,
                    }))
                }
                Err(e) => {
                    warn!("TLS session for {peer}: {e}");
                    return;
                }
            },
        };
        let key = self.conns.vacant_key();
        let layer = self.first_layer(index, key, matches!(transport, Transport::Tls(_)), now);
        let entry = self.conns.vacant_entry();
        if let Err(refusal) = self.core.handle_connect(key, peer.ip(), now) {
            self.counters.refused += 1;
            info!("refused {peer}: {refusal}");
            if matches!(transport, Transport::Plain) {
                // Best effort: the socket is new, so its buffer has room.
                let _ = stream.write(format!("!!! {refusal}\n").as_bytes());
            }
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        self.counters.accepted += 1;
        let _ = stream.set_nodelay(true);
        if self.socket_buffer > 0 {
            // A fixed send buffer instead of the kernel's autotuning (up to
            // 4 MiB a socket): a reader that stops reading then holds at
            // most this much in the kernel, and costs that much copying.
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(self.socket_buffer);
        }
        let registered = self
            .poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE);
        if let Err(e) = registered {
            warn!("cannot register {peer}: {e}");
            self.core
                .handle_disconnect(key, Disconnect::Error(e.to_string()));
            self.drain(now);
            return;
        }
        let tls = matches!(transport, Transport::Tls(_));
        info!(
            "connection {key} from {peer}{}",
            if tls { " (TLS)" } else { "" }
        );
        if let (Transport::Tls(t), Some(l)) = (&transport, self.tls.as_mut())
            && let Some(deadline) = t.handshake_deadline
        {
            l.in_progress += 1;
            l.deadlines.push((deadline, key));
        }
        let cfg = self.core.config();
        let decoder = LineDecoder::with_bulk(cfg.max_line, bulk_limit(cfg.max_image));
        entry.insert(Conn::new(stream, peer.into(), transport, decoder, layer));
        self.drain(now);
    }

    // ---- reading ------------------------------------------------------------

    /// Reads up to the budget, feeding complete lines to the core.
    fn read_conn(&mut self, key: ConnId, now: Instant) {
        let mut budget = READ_BUDGET;
        while self.may_read(key, budget) {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let want = budget.min(self.scratch.len());
            let Some(buf) = self.scratch.get_mut(..want) else {
                return;
            };
            let before = self.counters.bytes_in;
            let got = conn.read(buf, &mut self.counters.bytes_in);
            let read = usize::try_from(self.counters.bytes_in - before).unwrap_or(usize::MAX);
            budget = budget.saturating_sub(read);
            self.handshake_progress(key, now);
            match got {
                Got::Data(0) => {}
                Got::Data(n) => {
                    if self
                        .conns
                        .get(key)
                        .is_some_and(|c| !matches!(c.layer, Layer::Lines))
                    {
                        match self.read_web(key, n, now) {
                            web::WebRead::Done => continue,
                            web::WebRead::Stop => return,
                            web::WebRead::WsLines => {
                                if !self.feed_ws_lines(key, now) {
                                    return;
                                }
                                continue;
                            }
                            web::WebRead::Lines => {}
                        }
                    }
                    let n = self.telnet(key, n);
                    if n > 0 && !self.feed_lines(key, n, now) {
                        return;
                    }
                }
                Got::WouldBlock => return,
                Got::Eof => {
                    self.peer_closed(key, now);
                    return;
                }
                Got::Failed(why) => {
                    if self
                        .conns
                        .get(key)
                        .is_some_and(|c| c.transport.handshaking())
                    {
                        self.counters.tls_failed += 1;
                    }
                    self.kill(key, Disconnect::Error(why));
                    return;
                }
                Got::WrongPort(msg, why) => {
                    if let Some(c) = self.conns.get_mut(key) {
                        info!("connection {key} from {}: {why}", c.peer);
                        let _ = c.stream.write(msg);
                        if matches!(c.transport, Transport::Tls(_)) {
                            self.counters.tls_failed += 1;
                        }
                    }
                    self.kill(key, Disconnect::Error(why.into()));
                    return;
                }
            }
        }
    }

    /// Takes telnet's commands out of `scratch[..n]` (answering its
    /// negotiation, dropping the line being typed at Ctrl-C); returns the
    /// bytes of text left.
    fn telnet(&mut self, key: ConnId, n: usize) -> usize {
        let (Some(c), Some(buf)) = (self.conns.get_mut(key), self.scratch.get_mut(..n)) else {
            return 0;
        };
        let (mut n, found) = c.telnet.filter(buf);
        if let Some(at) = found.drop_at {
            // The line being typed at Ctrl-C goes: its start may already
            // be in the decoder (if no newline came in this read before it).
            let start = buf
                .get(..at)
                .and_then(|b| memchr::memrchr(b'\n', b))
                .map_or(0, |i| i + 1);
            if start == 0 {
                self.pending = self.pending.saturating_sub(c.decoder.drop_partial());
            }
            buf.copy_within(at..n, start);
            n -= at - start;
        }
        if !found.reply.is_empty() {
            let reply: Bytes = found.reply.into();
            self.enqueue(key, reply);
        }
        n
    }

    /// After a read on a TLS connection: a handshake that just finished is
    /// logged and its greeting (waiting in rustls) flushed; records rustls
    /// wants to send (handshake replies, alerts) are flushed like any output.
    fn handshake_progress(&mut self, key: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Transport::Tls(t) = &mut c.transport else {
            return;
        };
        let mut dirty = t.session.wants_write();
        if t.handshake_deadline.is_some() && !t.session.is_handshaking() {
            t.handshake_deadline = None;
            if let Some(l) = self.tls.as_mut() {
                l.in_progress = l.in_progress.saturating_sub(1);
            }
            info!(
                "connection {key} from {}: TLS {:?} {:?}",
                c.peer,
                t.session.protocol_version(),
                t.session.negotiated_cipher_suite().map(|s| s.suite())
            );
            dirty = true;
            self.handshake_done(key, now);
        }
        if dirty {
            self.mark_dirty(key);
        }
    }

    /// Whether to read `key` again now: not while it is dead or closing,
    /// and not past its budget (then it is queued, at most once, for the
    /// next iteration).
    fn may_read(&mut self, key: ConnId, budget: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if conn.dead || conn.closing.is_some() {
            return false;
        }
        if budget == 0 {
            if !conn.in_again {
                conn.in_again = true;
                self.again.push(key);
            }
            return false;
        }
        true
    }

    /// EOF from the peer. Half-close: stop reading, still flush what is owed.
    fn peer_closed(&mut self, key: ConnId, now: Instant) {
        if let Some(conn) = self.conns.get(key) {
            info!("connection {key} from {}: closed by peer", conn.peer);
        }
        self.start_closing(key, now);
        self.core.handle_disconnect(key, Disconnect::Closed);
        self.drain(now);
        self.mark_dirty(key);
    }

    /// Feeds `scratch[..n]`, bytes the peer sent, through the connection's
    /// line decoder into the core, one line (one input, one drain) at a time.
    /// False once the connection is done for (closed by the core, cut off):
    /// the caller stops reading it.
    fn feed_lines(&mut self, key: ConnId, n: usize, now: Instant) -> bool {
        let scratch = std::mem::take(&mut self.scratch);
        let go_on = self.feed_bytes(key, scratch.get(..n).unwrap_or(&[]), now);
        self.scratch = scratch;
        go_on
    }

    /// Feeds `bytes`, protocol lines from a connection (a read's, or those
    /// a WebSocket carried), as [`Server::feed_lines`] says.
    fn feed_bytes(&mut self, key: ConnId, bytes: &[u8], now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        // Capacity, not length: a growing buffer may hold up to twice what
        // it contains, and memory is what is bounded.
        let held = conn.decoder.capacity();
        let mut decoded = std::mem::take(&mut self.decoded);
        conn.decoder.feed(bytes, |d| decoded.push(d));
        self.pending = self
            .pending
            .saturating_sub(held)
            .saturating_add(conn.decoder.capacity());
        let endless = conn.decoder.discarded() > MAX_DISCARD;
        // Lines go to the core until it has closed the connection (a flood,
        // a /quit): the rest is not looked at.
        // The room lines of this read are joined (see [`batch`]).
        let outer = std::mem::replace(&mut self.batching, true);
        for d in decoded.drain(..) {
            if !self.core.is_open(key) {
                break;
            }
            match d {
                Decoded::Line(l) => self.core.handle_line(key, &l, now),
                Decoded::Error(e) => self.core.handle_bad_line(key, e, now),
            }
            self.drain(now);
        }
        self.batching = outer;
        if !outer {
            self.settle_batch();
        }
        // A read of many tiny lines must not keep a big vector for good.
        if decoded.capacity() > 1024 {
            decoded = Vec::new();
        }
        self.decoded = decoded;
        if endless {
            if let Some(c) = self.conns.get_mut(key) {
                info!(
                    "connection {key} from {}: one line over {MAX_DISCARD} bytes, disconnecting",
                    c.peer
                );
                c.say_raw(b"!!! disconnected: you sent one line of more than 16 MiB\n");
            }
            self.kill(key, Disconnect::Error("endless line".into()));
            self.drain(now);
            return false;
        }
        if self.pending > self.max_pending
            && let Some(c) = self.conns.get_mut(key)
        {
            // Whoever pushes the total past the budget loses the line it is
            // sending; everyone else's is kept.
            self.pending = self.pending.saturating_sub(c.decoder.abandon());
            warn!(
                "connection {key} from {}: partial lines over {} bytes in total, upload discarded",
                c.peer, self.max_pending
            );
            self.core.handle_bad_line(key, LineError::Busy, now);
            self.drain(now);
        }
        self.conns
            .get(key)
            .is_some_and(|c| !c.dead && c.closing.is_none())
    }

    // ---- writing and closing ------------------------------------------------

    /// Stops reading; the connection closes once its queue is flushed or its
    /// linger deadline passes.
    fn start_closing(&mut self, key: ConnId, now: Instant) {
        if let Some(c) = self.conns.get_mut(key)
            && !c.dead
            && c.closing.is_none()
        {
            let deadline = now + LINGER;
            c.closing = Some(DeadlineTag::new(deadline, self.started));
            self.lingering.push((deadline, key));
        }
    }

    /// The peer does not read what it is sent: tell it (best effort; its
    /// buffer is likely full) and drop it.
    fn cut_slow_reader(&mut self, key: ConnId) {
        let max = self.max_queue;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        info!(
            "connection {key} from {}: output queue over {max} bytes, disconnecting slow reader",
            c.peer
        );
        self.counters.slow_readers += 1;
        c.say_raw(b"!!! disconnected: you are not reading what the server sends\n");
        self.kill(key, Disconnect::SlowReader { max_queue: max });
    }

    fn mark_dirty(&mut self, key: ConnId) {
        if let Some(c) = self.conns.get_mut(key)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Ends a connection now, without flushing. The core is told after the
    /// current drain (or by the caller's next one).
    fn kill(&mut self, key: ConnId, why: Disconnect) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.dead {
            return;
        }
        c.dead = true;
        c.out.clear();
        info!("connection {key} from {}: {why}", c.peer);
        self.dying.push(key);
        self.later.push_back(Later::Disconnect(key, why));
    }

    /// Flushes every connection given output since the last flush. A
    /// connection killed while flushing makes the core tell its rooms, which
    /// marks others dirty again: those wait for the next iteration (which
    /// polls without waiting), so that whatever records came with them are
    /// committed first.
    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            if let Some(c) = self.conns.get_mut(key) {
                c.dirty = false;
                // The prompt goes after what this turn queued (`/set
                // prompt on`), once per burst.
                if c.fresh {
                    c.fresh = false;
                    if let Some(p) = self.prompts.get(&key)
                        && c.closing.is_none()
                    {
                        c.out.push(p.clone());
                    }
                }
            }
            self.flush(key);
        }
        if self.dirty.is_empty() {
            // Reuse the allocation.
            self.dirty = dirty;
        }
    }

    /// Writes as much of the queue as the socket takes, then sets interest.
    fn flush(&mut self, key: ConnId) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.dead {
            return;
        }
        match c.write(WRITE_BUDGET) {
            Ok(n) => {
                self.counters.bytes_out += n as u64;
                if n >= WRITE_BUDGET && !c.out.is_empty() {
                    // More next turn (edge-triggered readiness will not say
                    // so: the socket may still have room).
                    c.dirty = true;
                    self.dirty.push(key);
                }
            }
            Err(e) => {
                self.kill(key, Disconnect::Error(e.to_string()));
                return;
            }
        }
        if c.out.len() > self.max_queue {
            self.cut_slow_reader(key);
            return;
        }
        c.out.release_idle();
        if c.out.is_empty() && c.closing.is_some() && c.finish_close() {
            let _ = c.stream.shutdown(Shutdown::Write);
            c.dead = true;
            self.dying.push(key);
            return;
        }
        let want = c.wanted_interest();
        if c.interest != Some(want) {
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut c.stream, Token(key), want)
            {
                self.kill(key, Disconnect::Error(e.to_string()));
                return;
            }
            c.interest = Some(want);
        }
    }

    /// Cuts off TLS handshakes that passed their deadline.
    fn expire_handshakes(&mut self, now: Instant) {
        let Some(t) = self.tls.as_mut() else {
            return;
        };
        if t.deadlines.is_empty() {
            return;
        }
        let mut expired = Vec::new();
        let conns = &self.conns;
        t.deadlines.retain(|&(deadline, key)| {
            let Some(c) = conns.get(key) else {
                return false;
            };
            let current =
                matches!(&c.transport, Transport::Tls(t) if t.handshake_deadline == Some(deadline));
            if c.dead || !current {
                return false;
            }
            if deadline <= now {
                expired.push(key);
                return false;
            }
            true
        });
        for key in expired {
            if let Some(c) = self.conns.get(key) {
                info!(
                    "connection {key} from {}: TLS handshake not finished in time, disconnecting",
                    c.peer
                );
            }
            self.counters.tls_failed += 1;
            self.kill(key, Disconnect::Error("TLS handshake timed out".into()));
        }
    }

    /// Closing connections that did not flush in time are dropped.
    fn expire_lingering(&mut self, now: Instant) {
        let conns = &mut self.conns;
        let dying = &mut self.dying;
        let started = self.started;
        self.lingering.retain(|&(deadline, key)| {
            // Entries of connections already gone (or reused keys that are
            // not closing) are dropped here.
            let Some(c) = conns.get_mut(key) else {
                return false;
            };
            if c.dead || c.closing != Some(DeadlineTag::new(deadline, started)) {
                return false;
            }
            if deadline <= now {
                c.dead = true;
                dying.push(key);
                return false;
            }
            true
        });
    }

    /// Removes dead connections; only now may their keys be reused.
    fn reap(&mut self) {
        if self.dying.is_empty() {
            return;
        }
        for key in std::mem::take(&mut self.dying) {
            if self.conns.get(key).is_some_and(|c| c.dead) {
                let mut c = self.conns.remove(key);
                self.prompts.remove(&key);
                self.pending = self.pending.saturating_sub(c.decoder.capacity());
                if c.layer.is_ws() {
                    self.ws_live = self.ws_live.saturating_sub(1);
                }
                if c.transport.handshaking()
                    && let Some(t) = self.tls.as_mut()
                {
                    // Died before its handshake finished.
                    t.in_progress = t.in_progress.saturating_sub(1);
                }
                let _ = self.poll.registry().deregister(&mut c.stream);
            }
        }
        // A reaped key may be reused by the next accept: it must not stay
        // queued for another read.
        let conns = &self.conns;
        self.again.retain(|&k| conns.contains(k));
    }
}
