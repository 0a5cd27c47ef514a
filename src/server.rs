//! The reactor: one thread, one `mio::Poll`, a `slab` of connections, and the
//! [`Core`] doing all of the chat logic.
//!
//! What this file does, and nothing else: accept, read, write, close, and feed
//! the core. Its rules:
//!
//! * Readiness is drained until `WouldBlock` (mio is edge-triggered), but one
//!   connection reads at most [`READ_BUDGET`] bytes per loop iteration; one with
//!   more left is revisited next iteration, so a flooder cannot starve others.
//! * Output is a queue of shared buffers per connection, written with
//!   `write_vectored`. `WRITABLE` interest is registered only while a queue is
//!   non-empty (interest follows state).
//! * A queue past `max_queue` bytes means the peer does not read: it is cut off
//!   with a reason, and nobody else waits for it.
//! * A slab key is never reused within the iteration in which its connection
//!   died: dead connections are reaped at the end of the iteration, after the
//!   core's outputs for them have been drained and ignored.
//! * `accept` failing for lack of descriptors (EMFILE/ENFILE) pauses accepting
//!   briefly instead of spinning on a listener that stays readable.
//! * Loop order per iteration: poll → handle events (reads feed the core) →
//!   timeouts → drain core outputs (bytes into queues, records into the
//!   journal's buffer) → **commit the journal** (one write, one sync) →
//!   flush queues → reap. So nothing any client is shown can be lost to a
//!   crash: its record was written first. Password hashing runs on a worker
//!   thread, whose results come back through a `mio::Waker`; the loop waits
//!   on disk only for that one commit per iteration.
//! * Signals arrive as a mio source: SIGTERM and SIGINT shut down in order
//!   (tell everyone, commit and sync the journal, flush, exit 0 within a
//!   second); SIGHUP reopens the log file and syncs the journal.
//! * The optional status listener shares the loop, with its own small slab:
//!   a handful of connections, each with a deadline, one response each.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::codec::{Decoded, LineDecoder, LineError, bulk_limit};
use crate::config::Config;
use crate::core::{Bytes, ConnId, Core, Disconnect, HashJob, HashOutcome, Output, run_hash_job};
use crate::journal::Journal;
use crate::logfile::LogFile;
use crate::notify::Notifier;
use crate::status::{self, Parsed, Snapshot};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

/// Bytes one connection may read per loop iteration before others get a turn.
pub const READ_BUDGET: usize = 64 * 1024;
/// A peer still sending one line this far past the limit is cut off: it is
/// not chatting, and reading it costs everyone.
pub const MAX_DISCARD: u64 = 16 * 1024 * 1024;
/// Connections one listener accepts per loop iteration: under a connection
/// storm `accept` may never say WouldBlock, and the chat must go on.
pub const ACCEPT_BUDGET: usize = 64;
/// Size of the one read buffer all connections share.
const SCRATCH: usize = 64 * 1024;
/// How long a closing connection may take to flush its last lines.
const LINGER: Duration = Duration::from_secs(5);
/// Pause after the process ran out of descriptors in `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most this many buffers go into one `write_vectored` call (IOV_MAX).
const MAX_IOVECS: usize = 1024;
/// Up to this many come from an array on the stack.
const SMALL_IOVECS: usize = 16;
/// Worker threads wake the loop with this token.
const WAKER_TOKEN: usize = usize::MAX;
const SIGNAL_TOKEN: usize = usize::MAX - 1;
const STATUS_LISTENER_TOKEN: usize = usize::MAX - 2;
/// Chat listener tokens count down from here; connections use their slab key.
const LISTENER_TOKEN_BASE: usize = usize::MAX - 3;
const MAX_LISTENERS: usize = 1024;
/// Status connections use this plus their key; chat keys never get near it.
const STATUS_CONN_BASE: usize = usize::MAX / 2;
const MAX_STATUS_CONNS: usize = 64;
/// A status request must arrive and be answered within this.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// At shutdown, how long queued output may take to flush.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(700);
/// Output is coalesced once flushing gets expensive. Writing to a crowd is
/// most of a busy relay's work, nearly all of it in the kernel, and it costs
/// per `writev`, not per byte: one message to 1,000 members is 1,000 calls
/// whether it carries one line or twenty. So after a flush that took `d`
/// (at least `COALESCE_FROM`), the next one waits until `d` (at most
/// `COALESCE_MAX`) has passed, reading meanwhile, and whatever arrived in
/// that window goes out in the same calls. A flush to a few connections
/// takes microseconds and is never held; a 1,000-member room at 1,000
/// messages a second gets a few lines per call instead of one, which halves
/// the daemon's CPU and, on a busy machine, its tail latency.
const COALESCE_FROM: Duration = Duration::from_micros(200);
const COALESCE_MAX: Duration = Duration::from_millis(2);
/// Plaintext rustls may hold for one connection beyond its queue (its own
/// buffer of records to send is bounded by this too).
const TLS_BUFFER: usize = 64 * 1024;
/// An empty output queue keeps at most this many slots allocated.
const IDLE_QUEUE_CAPACITY: usize = 4;
/// How often `STATUS=` is refreshed for systemd.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Counters the reactor keeps for the status listener.
#[derive(Debug, Default)]
struct Counters {
    bytes_in: u64,
    bytes_out: u64,
    accepted: u64,
    refused: u64,
    slow_readers: u64,
    /// TLS handshakes that failed or timed out.
    tls_failed: u64,
}

/// One HTTP request on the status listener.
struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The response, once there is one.
    out: Option<Vec<u8>>,
    written: usize,
    deadline: Instant,
}

struct StatusListener {
    listener: TcpListener,
    conns: Slab<HttpConn>,
}

fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    decoder: LineDecoder,
    queue: VecDeque<Bytes>,
    /// Bytes of the front buffer already written.
    head_written: usize,
    /// Unwritten bytes across the queue.
    queued: usize,
    /// What is registered with the poller now.
    interest: Option<Interest>,
    /// Set once the core closed it or the peer sent EOF: no more reads; flush,
    /// then close by this deadline.
    closing: Option<Instant>,
    /// Reaped at the end of the iteration.
    dead: bool,
    /// No byte read yet (for the TLS-on-plaintext check).
    fresh: bool,
    /// rustls's state, for a connection accepted on a TLS listener. (For
    /// these, `fresh` means "handshake not finished".)
    tls: Option<Box<rustls::ServerConnection>>,
    /// Set while a TLS handshake is in progress: it must end by then.
    handshake_deadline: Option<Instant>,
    /// The TLS close_notify alert has been queued.
    close_sent: bool,
    /// The first byte on a TLS port was looked at.
    peeked: bool,

    /// Already in `Server::dirty`: a connection is flushed once per
    /// iteration however many lines it was given (a fan-out of 1,000
    /// messages would otherwise list each recipient 1,000 times).
    dirty: bool,
    /// Already in `Server::again`: a connection is queued at most once, or
    /// the list grows with every turn and the same sockets are read over and
    /// over (found under the giant-lines attack: 3,507 entries for 200
    /// connections, 70-100 ms loop turns).
    in_again: bool,
}

/// The password-hashing worker: jobs in, outcomes out, a wake-up each time.
struct Hasher {
    jobs: mpsc::Sender<HashJob>,
    done: mpsc::Receiver<(u64, HashOutcome)>,
}

impl Hasher {
    fn spawn(waker: Arc<Waker>) -> io::Result<Hasher> {
        let (job_tx, job_rx) = mpsc::channel::<HashJob>();
        let (done_tx, done_rx) = mpsc::channel();
        thread::Builder::new()
            .name("chatd-hash".into())
            .spawn(move || {
                // Ends when the server (the only sender) is dropped.
                while let Ok(job) = job_rx.recv() {
                    let outcome = run_hash_job(&job);
                    if done_tx.send((job.id, outcome)).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(Hasher {
            jobs: job_tx,
            done: done_rx,
        })
    }
}

/// The daemon's event loop.
pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    conns: Slab<Conn>,
    core: Core,
    max_queue: usize,
    /// Budget for bytes of partial lines across all connections, and use.
    max_pending: usize,
    pending: usize,
    scratch: Vec<u8>,
    /// Connections with bytes left to read from the last iteration.
    again: Vec<ConnId>,
    /// Listeners with connections left to accept from the last iteration.
    accept_again: Vec<usize>,
    /// Connections with new output this iteration.
    dirty: Vec<ConnId>,
    /// Connections that died this iteration.
    dying: Vec<ConnId>,
    accept_paused_until: Option<Instant>,
    /// Connections flushing their last lines, with their deadlines; short,
    /// so nothing scans every connection per iteration.
    lingering: Vec<(Instant, ConnId)>,
    /// `None` with `--ephemeral`.
    journal: Option<Journal>,
    hasher: Hasher,
    /// Wakes the loop from worker threads (hashing, compaction).
    waker: Arc<Waker>,
    signals: Signals,
    status: Option<StatusListener>,
    notifier: Notifier,
    next_watchdog: Option<Instant>,
    next_status: Instant,
    started: Instant,
    counters: Counters,
    log_file: Option<LogFile>,
    stopping: bool,
    /// While set and in the future, output waits (see `COALESCE_FROM`).
    flush_not_before: Option<Instant>,
    /// The TLS listeners' settings, if any.
    tls: Option<TlsListeners>,
    /// TLS handshakes in progress, and their deadlines (entries of
    /// connections that finished or died are dropped when next looked at).
    handshaking: usize,
    handshakes: Vec<(Instant, ConnId)>,
    /// The NATS bridge, with `--cluster`.
    cluster: Option<crate::cluster::Bridge>,
}

/// Listeners from `first_listener` on in `Server::listeners` speak TLS.
struct TlsListeners {
    config: Arc<rustls::ServerConfig>,
    first_listener: usize,
    handshake_timeout: Duration,
    max_handshakes: usize,
}

/// What `Server::new` needs to serve TLS: bound listeners and rustls's
/// configuration.
pub struct TlsSetup {
    pub listeners: Vec<std::net::TcpListener>,
    pub config: Arc<rustls::ServerConfig>,
    pub handshake_timeout: Duration,
    pub max_handshakes: usize,
}

/// Says something to a peer that is about to be cut off, outside its queue
/// (which is full or about to be dropped): best effort, never blocking.
fn say_raw(c: &mut Conn, msg: &[u8]) {
    match c.tls.as_mut() {
        Some(tls) => {
            if !tls.is_handshaking() {
                let _ = tls.writer().write(msg);
                let _ = tls.write_tls(&mut c.stream);
            }
        }
        None => {
            let _ = c.stream.write(msg);
        }
    }
}

impl Server {
    /// Builds a server on already-bound listeners (so tests can bind port 0
    /// and systemd can hand over sockets). Opens and replays the journal.
    pub fn new(
        cfg: Config,
        listeners: Vec<std::net::TcpListener>,
        status: Option<std::net::TcpListener>,
        tls: Option<TlsSetup>,
    ) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        poll.registry()
            .register(&mut signals, Token(SIGNAL_TOKEN), Interest::READABLE)?;
        let status = match status {
            Some(l) => {
                l.set_nonblocking(true)?;
                let mut l = TcpListener::from_std(l);
                poll.registry().register(
                    &mut l,
                    Token(STATUS_LISTENER_TOKEN),
                    Interest::READABLE,
                )?;
                Some(StatusListener {
                    listener: l,
                    conns: Slab::new(),
                })
            }
            None => None,
        };
        let waker = Arc::new(Waker::new(poll.registry(), Token(WAKER_TOKEN))?);
        let hasher = Hasher::spawn(waker.clone())?;
        let mut mio_listeners = Vec::new();
        let first_tls = listeners.len();
        let (tls_listeners, tls_setup) = match tls {
            Some(t) => (
                t.listeners,
                Some(TlsListeners {
                    config: t.config,
                    first_listener: first_tls,
                    handshake_timeout: t.handshake_timeout,
                    max_handshakes: t.max_handshakes,
                }),
            ),
            None => (Vec::new(), None),
        };
        let all = listeners.into_iter().chain(tls_listeners);
        for (i, l) in all.enumerate().take(MAX_LISTENERS) {
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
            Some(dir) => {
                let started = Instant::now();
                let (journal, replay) =
                    Journal::open(dir, cfg.fsync).map_err(|e| io::Error::other(e.to_string()))?;
                if let Some(d) = &replay.damage {
                    warn!(
                        "journal {}: damaged at offset {} ({}): cut off {} bytes; everything before it is kept",
                        dir.join(crate::journal::JOURNAL_FILE).display(),
                        d.offset,
                        d.reason,
                        d.dropped
                    );
                }
                let n = replay.records.len();
                for r in replay.records {
                    core.restore(r);
                }
                let stats = core.stats();
                info!(
                    "journal {}: replayed {n} records ({} bytes) in {:?}: {} rooms, {} accounts",
                    dir.display(),
                    journal.size(),
                    started.elapsed(),
                    stats.rooms,
                    stats.accounts
                );
                Some(journal)
            }
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
                Some(crate::cluster::Bridge::spawn(cc.clone(), waker.clone())?)
            }
        };
        Ok(Server {
            poll,
            listeners: mio_listeners,
            conns: Slab::new(),
            core,
            max_queue: cfg.max_queue,
            max_pending: cfg.max_pending,
            pending: 0,
            scratch: vec![0; SCRATCH],
            again: Vec::new(),
            accept_again: Vec::new(),
            dirty: Vec::new(),
            dying: Vec::new(),
            accept_paused_until: None,
            lingering: Vec::new(),
            journal,
            hasher,
            waker,
            signals,
            status,
            notifier: Notifier::from_env(),
            next_watchdog: None,
            next_status: Instant::now(),
            started: Instant::now(),
            counters: Counters::default(),
            log_file: None,
            stopping: false,
            flush_not_before: None,
            tls: tls_setup,
            handshaking: 0,
            handshakes: Vec::new(),
            cluster,
        })
    }

    /// Uses the sockets systemd passed if socket-activated, else binds
    /// `cfg.listen` (and `cfg.status`).
    pub fn from_config(cfg: Config) -> io::Result<Server> {
        if let Some(act) = crate::listenfd::take()? {
            if act.chat.is_empty() {
                return Err(io::Error::other(
                    "socket-activated without a chat socket (only one named \"status\")",
                ));
            }
            info!("socket-activated: {} chat socket(s)", act.chat.len());
            let status = match (act.status, cfg.status) {
                (Some(s), _) => Some(s),
                (None, Some(addr)) => Some(bind(addr)?),
                (None, None) => None,
            };
            let tls = Self::tls_setup(&cfg, Some(act.tls))?;
            return Server::new(cfg, act.chat, status, tls);
        }
        let mut ls = Vec::new();
        for addr in &cfg.listen {
            ls.push(bind(*addr)?);
        }
        let status = cfg.status.map(bind).transpose()?;
        let tls = Self::tls_setup(&cfg, None)?;
        Server::new(cfg, ls, status, tls)
    }

    /// Loads the certificate and binds `--tls-listen` (unless systemd passed
    /// sockets named "tls").
    fn tls_setup(
        cfg: &Config,
        activated: Option<Vec<std::net::TcpListener>>,
    ) -> io::Result<Option<TlsSetup>> {
        let Some(t) = &cfg.tls else {
            if activated.is_some_and(|a| !a.is_empty()) {
                return Err(io::Error::other(
                    "systemd passed a socket named \"tls\" but --tls-cert and --tls-key are not set",
                ));
            }
            return Ok(None);
        };
        let config = crate::tls::server_config(&t.cert, &t.key)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let listeners = match activated.filter(|a| !a.is_empty()) {
            Some(a) => a,
            None if t.listen.is_empty() => {
                return Err(io::Error::other(
                    "--tls-cert and --tls-key are set but there is nowhere to serve TLS: add --tls-listen ADDR (or a socket named \"tls\" from systemd)",
                ));
            }
            None => t
                .listen
                .iter()
                .map(|a| bind(*a))
                .collect::<io::Result<_>>()?,
        };
        Ok(Some(TlsSetup {
            listeners,
            config,
            handshake_timeout: t.handshake_timeout,
            max_handshakes: t.max_handshakes,
        }))
    }

    /// Lets SIGHUP reopen this log file.
    pub fn set_log_file(&mut self, f: LogFile) {
        self.log_file = Some(f);
    }

    /// The status listener's address, if there is one.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status
            .as_ref()
            .and_then(|s| s.listener.local_addr().ok())
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

    /// Runs until SIGTERM or SIGINT (then returns `Ok`), or until the
    /// journal cannot be written (`Err`).
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
        self.notifier.ready(&self.status_line());
        let now = Instant::now();
        self.next_watchdog = self.notifier.watchdog_interval().map(|_| now);
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
        self.notifier.stopping("shutting down");
        info!(
            "shutting down: telling {} connections",
            self.core.stats().connections
        );
        self.core.handle_shutdown("it will be back soon");
        self.drain_core(now);
        if let Some(j) = self.journal.as_mut() {
            j.commit(now)?;
            j.sync(now)?;
        }
        let deadline = now + SHUTDOWN_FLUSH;
        self.flush_dirty(now);
        self.reap();
        while !self.conns.is_empty() && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.poll.poll(events, Some(left)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for ev in events.iter() {
                if ev.token().0 < STATUS_CONN_BASE && ev.is_writable() {
                    self.mark_dirty(ev.token().0);
                }
            }
            self.flush_dirty(now);
            self.reap();
        }
        info!(
            "stopped; {} connections did not take their last lines",
            self.conns.len()
        );
        if let Some(b) = self.cluster.take() {
            b.finish(Duration::from_millis(300));
        }
        Ok(())
    }

    fn on_signals(&mut self, now: Instant) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGTERM | SIGINT => {
                    info!(
                        "signal {}: stopping",
                        if sig == SIGTERM { "SIGTERM" } else { "SIGINT" }
                    );
                    self.stopping = true;
                }
                SIGHUP => {
                    if let Some(f) = &self.log_file {
                        match f.reopen() {
                            Ok(()) => info!("SIGHUP: reopened log file {}", f.path().display()),
                            Err(e) => warn!("SIGHUP: cannot reopen {}: {e}", f.path().display()),
                        }
                    } else {
                        info!("SIGHUP: logging to stderr, nothing to reopen");
                    }
                    if let Some(j) = self.journal.as_mut()
                        && let Err(e) = j.sync(now)
                    {
                        warn!("SIGHUP: journal sync failed: {e}");
                    }
                }
                _ => {}
            }
        }
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
            tls_handshaking: self.handshaking,
            tls_failed: self.counters.tls_failed,
            logins_failed: s.logins_failed,
            rejected: s.errors.into_iter().collect(),
            journal_bytes: self.journal.as_ref().map(Journal::size),
            cluster: self.core.cluster_stats(),
        }
    }

    /// One loop iteration after `poll` returned. An error here is a journal
    /// that cannot be written: the daemon stops rather than show what it
    /// could not keep.
    fn turn(&mut self, events: &Events) -> io::Result<()> {
        let now = Instant::now();
        let again = std::mem::take(&mut self.again);
        for key in again {
            if let Some(c) = self.conns.get_mut(key) {
                c.in_again = false;
            }
            self.read_conn(key, now);
        }
        let accept_again = std::mem::take(&mut self.accept_again);
        for index in accept_again {
            self.accept_all(index, now);
        }
        for ev in events.iter() {
            let t = ev.token().0;
            if t == WAKER_TOKEN {
                self.hashes_done(now);
                self.cluster_events(now);
                continue;
            }
            if t == SIGNAL_TOKEN {
                self.on_signals(now);
                continue;
            }
            if t == STATUS_LISTENER_TOKEN {
                self.accept_status(now);
                continue;
            }
            if (STATUS_CONN_BASE..LISTENER_TOKEN_BASE - MAX_LISTENERS).contains(&t) {
                self.serve_status(t - STATUS_CONN_BASE, now);
                continue;
            }
            if t > LISTENER_TOKEN_BASE - MAX_LISTENERS {
                self.accept_all(LISTENER_TOKEN_BASE - t, now);
                continue;
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                self.read_conn(t, now);
            }
            if ev.is_writable() {
                self.mark_dirty(t);
            }
        }
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            for i in 0..self.listeners.len() {
                self.accept_all(i, now);
            }
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
            self.drain_core(now);
        }
        self.expire_lingering(now);
        self.expire_handshakes(now);
        self.expire_status(now);
        if self.flush_not_before.is_none_or(|t| t <= now) {
            self.commit(now)?;
            let started = Instant::now();
            self.flush_dirty(now);
            let took = started.elapsed();
            self.flush_not_before =
                (took >= COALESCE_FROM).then(|| Instant::now() + took.min(COALESCE_MAX));
        }
        self.reap();
        self.tell_systemd(now);
        // Each connection is queued for another read at most once; the
        // debug build the tests drive checks it under the abuse tests.
        debug_assert!(
            self.again.len() <= self.conns.len(),
            "read queue holds duplicates"
        );
        Ok(())
    }

    /// Watchdog pings and periodic `STATUS=` lines. The watchdog is fed from
    /// the loop itself, so a stuck loop is noticed.
    fn tell_systemd(&mut self, now: Instant) {
        if !self.notifier.enabled() {
            return;
        }
        if let (Some(at), Some(every)) = (self.next_watchdog, self.notifier.watchdog_interval())
            && at <= now
        {
            self.notifier.watchdog();
            self.next_watchdog = Some(now + every);
        }
        if self.next_status <= now {
            self.notifier.status(&self.status_line());
            self.next_status = now + STATUS_EVERY;
        }
    }

    fn accept_status(&mut self, now: Instant) {
        let Some(st) = self.status.as_mut() else {
            return;
        };
        loop {
            let (mut stream, _) = match st.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    warn!("status accept failed: {e}");
                    return;
                }
            };
            if st.conns.len() >= MAX_STATUS_CONNS {
                let _ = stream.write(&status::error(503));
                continue;
            }
            let entry = st.conns.vacant_entry();
            let token = Token(STATUS_CONN_BASE + entry.key());
            if self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE)
                .is_err()
            {
                continue;
            }
            entry.insert(HttpConn {
                stream,
                buf: Vec::new(),
                out: None,
                written: 0,
                deadline: now + STATUS_TIMEOUT,
            });
        }
    }

    /// Reads a request, answers it, closes. Nothing here can block the loop:
    /// the head is capped, the connection has a deadline.
    fn serve_status(&mut self, key: usize, _now: Instant) {
        // Read what is there (bounded) before deciding anything.
        let parsed = {
            let Some(st) = self.status.as_mut() else {
                return;
            };
            let Some(c) = st.conns.get_mut(key) else {
                return;
            };
            if c.out.is_none() {
                let mut chunk = [0u8; 2048];
                let mut eof = false;
                loop {
                    match c.stream.read(&mut chunk) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => {
                            c.buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                            if c.buf.len() >= status::MAX_REQUEST {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            eof = true;
                            break;
                        }
                    }
                }
                match status::parse(&c.buf) {
                    Parsed::Incomplete if eof => Some(Parsed::Bad(400)),
                    Parsed::Incomplete => None,
                    p => Some(p),
                }
            } else {
                None
            }
        };
        if let Some(p) = parsed {
            let response = match p {
                Parsed::Request { method, path } => {
                    status::route(&method, &path, || self.snapshot())
                }
                Parsed::Bad(code) => status::error(code),
                Parsed::Incomplete => status::error(400),
            };
            if let Some(c) = self.status.as_mut().and_then(|st| st.conns.get_mut(key)) {
                c.out = Some(response);
            }
        }
        self.write_status(key);
    }

    fn write_status(&mut self, key: usize) {
        let Some(st) = self.status.as_mut() else {
            return;
        };
        let Some(c) = st.conns.get_mut(key) else {
            return;
        };
        let Some(out) = c.out.as_ref() else { return };
        while c.written < out.len() {
            match c.stream.write(out.get(c.written..).unwrap_or(&[])) {
                Ok(0) => break,
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let token = Token(STATUS_CONN_BASE + key);
                    let _ =
                        self.poll
                            .registry()
                            .reregister(&mut c.stream, token, Interest::WRITABLE);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let mut c = st.conns.remove(key);
        let _ = c.stream.shutdown(Shutdown::Both);
        let _ = self.poll.registry().deregister(&mut c.stream);
    }

    fn expire_status(&mut self, now: Instant) {
        let Some(st) = self.status.as_mut() else {
            return;
        };
        if st.conns.is_empty() {
            return;
        }
        let late: Vec<usize> = st
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            let mut c = st.conns.remove(key);
            if c.out.is_none() {
                let _ = c.stream.write(&status::error(408));
            }
            let _ = self.poll.registry().deregister(&mut c.stream);
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

    /// What the NATS bridge said. State records from other nodes are also
    /// journaled here, so this node restarts with them even without NATS.
    fn cluster_events(&mut self, now: Instant) {
        let Some(bridge) = &self.cluster else {
            return;
        };
        let events = bridge.drain();
        if events.is_empty() {
            return;
        }
        for ev in events {
            // A deletion is journaled by the core, which also acts on it.
            if let crate::core::FromCluster::State(rec) = &ev
                && !matches!(rec, crate::record::Record::RoomGone { .. })
                && let Some(j) = self.journal.as_mut()
            {
                j.append(rec);
            }
            self.core.handle_cluster(ev, now);
        }
        self.drain_core(now);
    }

    fn hashes_done(&mut self, now: Instant) {
        while let Ok((id, outcome)) = self.hasher.done.try_recv() {
            self.core.handle_hash_done(id, outcome, now);
        }
        self.drain_core(now);
    }

    fn next_timeout(&mut self, now: Instant) -> Option<Duration> {
        if !self.again.is_empty() || !self.accept_again.is_empty() {
            return Some(Duration::ZERO);
        }
        if !self.dirty.is_empty() {
            let hold = self
                .flush_not_before
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
            return Some(hold);
        }
        let mut next = self.core.poll_timeout();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.accept_paused_until);
        // A held flush also holds the journal write; wake for both.
        consider(self.flush_not_before.filter(|&t| t > now));
        consider(self.next_watchdog);
        if self.notifier.enabled() {
            consider(Some(self.next_status));
        }
        if let Some(st) = &self.status {
            consider(st.conns.iter().map(|(_, c)| c.deadline).min());
        }
        consider(self.journal.as_ref().and_then(Journal::sync_deadline));
        consider(self.lingering.iter().map(|(t, _)| *t).min());
        consider(self.handshakes.iter().map(|(t, _)| *t).min());
        // Round up a little so a timer is never polled a hair too early and
        // spun on.
        next.map(|t| t.saturating_duration_since(now) + Duration::from_millis(1))
    }

    fn accept_all(&mut self, index: usize, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        for n in 0.. {
            if n == ACCEPT_BUDGET {
                if !self.accept_again.contains(&index) {
                    self.accept_again.push(index);
                }
                return;
            }
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the pending connection
                    // stays in the backlog; try again shortly.
                    warn!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            };
            let tls = match self.tls.as_ref().filter(|t| index >= t.first_listener) {
                None => None,
                Some(t) if self.handshaking >= t.max_handshakes => {
                    // No plaintext can be said on a TLS port before the
                    // handshake: just close.
                    self.counters.refused += 1;
                    info!(
                        "refused {peer}: {} TLS handshakes in progress (--max-handshakes)",
                        self.handshaking
                    );
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                Some(t) => match rustls::ServerConnection::new(t.config.clone()) {
                    Ok(mut c) => {
                        c.set_buffer_limit(Some(TLS_BUFFER));
                        Some((Box::new(c), now + t.handshake_timeout))
                    }
                    Err(e) => {
                        warn!("TLS session for {peer}: {e}");
                        continue;
                    }
                },
            };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(refusal) = self.core.handle_connect(key, peer.ip(), now) {
                self.counters.refused += 1;
                info!("refused {peer}: {refusal}");
                if tls.is_none() {
                    // Best effort: the socket is new, so its buffer has room.
                    let _ = stream.write(format!("!!! {refusal}\n").as_bytes());
                }
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            self.counters.accepted += 1;
            let _ = stream.set_nodelay(true);
            let registered =
                self.poll
                    .registry()
                    .register(&mut stream, Token(key), Interest::READABLE);
            if let Err(e) = registered {
                warn!("cannot register {peer}: {e}");
                self.core
                    .handle_disconnect(key, Disconnect::Error(e.to_string()));
                self.drain_core(now);
                continue;
            }
            info!(
                "connection {key} from {peer}{}",
                if tls.is_some() { " (TLS)" } else { "" }
            );
            let (tls, handshake_deadline) = match tls {
                Some((c, deadline)) => {
                    self.handshaking += 1;
                    self.handshakes.push((deadline, key));
                    (Some(c), Some(deadline))
                }
                None => (None, None),
            };
            let max_line = self.core.config().max_line;
            let bulk = bulk_limit(self.core.config().max_image);
            entry.insert(Conn {
                stream,
                peer,
                decoder: LineDecoder::with_bulk(max_line, bulk),
                queue: VecDeque::new(),
                head_written: 0,
                queued: 0,
                interest: Some(Interest::READABLE),
                closing: None,
                dead: false,
                fresh: true,
                dirty: false,
                in_again: false,
                tls,
                handshake_deadline,
                close_sent: false,
                peeked: false,
            });
            self.drain_core(now);
        }
    }

    /// Reads up to the budget, feeding complete lines to the core.
    fn read_conn(&mut self, key: ConnId, now: Instant) {
        if self.conns.get(key).is_some_and(|c| c.tls.is_some()) {
            self.read_tls_conn(key, now);
            return;
        }
        let mut budget = READ_BUDGET;
        while self.may_read(key, budget) {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let want = budget.min(self.scratch.len());
            let Some(buf) = self.scratch.get_mut(..want) else {
                return;
            };
            match conn.stream.read(buf) {
                Ok(0) => {
                    self.peer_closed(key, now);
                    return;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.counters.bytes_in += n as u64;
                    if conn.fresh {
                        conn.fresh = false;
                        if n >= 2 && buf.first() == Some(&0x16) && buf.get(1) == Some(&0x03) {
                            info!(
                                "connection {key} from {}: TLS handshake on the plain-text port",
                                conn.peer
                            );
                            let _ = conn.stream.write(
                                b"!!! this port speaks plain text, not TLS: connect with nc or telnet\n",
                            );
                            self.kill(key, Disconnect::Error("TLS on plain-text port".into()), now);
                            return;
                        }
                    }
                    if !self.feed_lines(key, n, now) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.kill(key, Disconnect::Error(e.to_string()), now);
                    return;
                }
            }
        }
    }

    /// The same for a TLS connection: records from the socket into rustls,
    /// plaintext out of it into the same line decoder. Handshake replies
    /// and alerts rustls wants to send are flushed like any output.
    fn read_tls_conn(&mut self, key: ConnId, now: Instant) {
        let mut budget = READ_BUDGET;
        while self.may_read(key, budget) {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.fresh && !conn.peeked {
                // A person typing at the TLS port with plain nc deserves a
                // sentence, not a TLS alert.
                let mut first = [0u8; 1];
                match conn.stream.peek(&mut first) {
                    Ok(1) if first != [0x16] => {
                        info!(
                            "connection {key} from {}: plain text on the TLS port",
                            conn.peer
                        );
                        let _ = conn.stream.write(
                            b"!!! this port speaks TLS: connect with ncat --ssl, openssl s_client or chatc --tls\n",
                        );
                        self.counters.tls_failed += 1;
                        self.kill(key, Disconnect::Error("plain text on TLS port".into()), now);
                        return;
                    }
                    Ok(_) => conn.peeked = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => conn.peeked = true,
                }
            }
            let Some(tls) = conn.tls.as_mut() else {
                return;
            };
            let n = match tls.read_tls(&mut conn.stream) {
                Ok(0) => {
                    self.peer_closed(key, now);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.kill(key, Disconnect::Error(e.to_string()), now);
                    return;
                }
            };
            budget = budget.saturating_sub(n);
            self.counters.bytes_in += n as u64;
            if let Err(e) = tls.process_new_packets() {
                // Best effort: the alert that says why.
                let _ = tls.write_tls(&mut conn.stream);
                if conn.fresh {
                    self.counters.tls_failed += 1;
                }
                info!("connection {key} from {}: TLS: {e}", conn.peer);
                self.kill(key, Disconnect::Error(format!("TLS: {e}")), now);
                return;
            }
            if conn.fresh && !tls.is_handshaking() {
                conn.fresh = false;
                self.handshaking = self.handshaking.saturating_sub(1);
                info!(
                    "connection {key} from {}: TLS {:?} {:?}",
                    conn.peer,
                    tls.protocol_version(),
                    tls.negotiated_cipher_suite().map(|s| s.suite())
                );
                // The greeting waited in rustls for the handshake to end.
                self.mark_dirty(key);
            }
            loop {
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                let Some(tls) = conn.tls.as_mut() else {
                    return;
                };
                match tls.reader().read(&mut self.scratch) {
                    Ok(0) => {
                        // close_notify: the peer is done sending.
                        self.peer_closed(key, now);
                        return;
                    }
                    Ok(m) => {
                        if !self.feed_lines(key, m, now) {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        self.kill(key, Disconnect::Error(format!("TLS: {e}")), now);
                        return;
                    }
                }
            }
            if self
                .conns
                .get(key)
                .and_then(|c| c.tls.as_ref())
                .is_some_and(|t| t.wants_write())
            {
                self.mark_dirty(key);
            }
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
        self.drain_core(now);
        self.mark_dirty(key);
    }

    /// Feeds `scratch[..n]`, bytes the peer sent, through the connection's
    /// line decoder into the core. False once the connection is done for
    /// (closed by the core, cut off): the caller stops reading it.
    fn feed_lines(&mut self, key: ConnId, n: usize, now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let Some(bytes) = self.scratch.get(..n) else {
            return false;
        };
        // Capacity, not length: a growing buffer may hold up to twice what
        // it contains, and memory is what is bounded.
        let held = conn.decoder.capacity();
        // Lines go straight to the core; once it has closed the connection
        // (a flood, a /quit), the rest is not parsed.
        let core = &mut self.core;
        conn.decoder.feed_while(bytes, |d| {
            match d {
                Decoded::Line(l) => core.handle_line(key, &l, now),
                Decoded::Error(e) => core.handle_bad_line(key, e, now),
            }
            core.is_open(key)
        });
        self.pending = self
            .pending
            .saturating_sub(held)
            .saturating_add(conn.decoder.capacity());
        if conn.decoder.discarded() > MAX_DISCARD {
            info!(
                "connection {key} from {}: one line over {MAX_DISCARD} bytes, disconnecting",
                conn.peer
            );
            say_raw(
                conn,
                b"!!! disconnected: you sent one line of more than 16 MiB\n",
            );
            self.kill(key, Disconnect::Error("endless line".into()), now);
            return false;
        }
        if self.pending > self.max_pending {
            // Whoever pushes the total past the budget loses the line it is
            // sending; everyone else's is kept.
            self.pending = self.pending.saturating_sub(conn.decoder.abandon());
            warn!(
                "connection {key} from {}: partial lines over {} bytes in total, upload discarded",
                conn.peer, self.max_pending
            );
            self.core.handle_bad_line(key, LineError::Busy, now);
        }
        self.drain_core(now);
        self.conns
            .get(key)
            .is_some_and(|c| !c.dead && c.closing.is_none())
    }

    /// Applies everything the core asked for.
    fn drain_core(&mut self, now: Instant) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Send { conn, data } => self.enqueue(conn, data, now),
                Output::Fanout(f) => self.enqueue_fanout(&f, now),
                Output::Persist(rec) => {
                    if let Some(j) = self.journal.as_mut() {
                        j.append(&rec);
                    }
                    if let Some(b) = &self.cluster
                        && crate::cluster::replicated(&rec)
                    {
                        b.send(crate::core::ToCluster::State(rec));
                    }
                }
                Output::Cluster(req) => {
                    if let Some(b) = &self.cluster
                        && !b.send(req)
                    {
                        warn!("cluster bridge thread is gone");
                    }
                }
                Output::Hash(job) => {
                    let id = job.id;
                    if self.hasher.jobs.send(job).is_err() {
                        // The worker died (it cannot panic on any input, but
                        // if it did): fail the job instead of hanging it.
                        warn!("password hashing thread is gone");
                        self.core
                            .handle_hash_done(id, HashOutcome::Verified(false), now);
                    }
                }
                Output::Close { conn } => {
                    if let Some(c) = self.conns.get(conn) {
                        info!("connection {conn} from {}: closed by the server", c.peer);
                    }
                    self.start_closing(conn, now);
                    self.mark_dirty(conn);
                }
            }
        }
    }

    /// [`Server::enqueue`] for every recipient of a room line, in one tight
    /// loop: one slab lookup per recipient, and the rare cut-offs after it.
    fn enqueue_fanout(&mut self, f: &crate::core::Fanout, now: Instant) {
        let max = self.max_queue;
        let hard = max.saturating_mul(4).saturating_add(READ_BUDGET);
        let mut over = Vec::new();
        for (conn, data) in f.deliveries() {
            let Some(c) = self.conns.get_mut(conn) else {
                continue;
            };
            if c.dead {
                continue;
            }
            c.queued += data.len();
            c.queue.push_back(data.clone());
            if c.queued > hard {
                over.push(conn);
            } else if !c.dirty {
                c.dirty = true;
                self.dirty.push(conn);
            }
        }
        for conn in over {
            self.cut_slow_reader(conn, max, now);
        }
    }

    fn enqueue(&mut self, key: ConnId, data: Bytes, now: Instant) {
        let max = self.max_queue;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.dead {
            return;
        }
        c.queued += data.len();
        c.queue.push_back(data);
        // The cap is judged after this iteration's flush (see `flush`): a
        // reader that keeps up must not be cut off for one busy iteration.
        // This hard stop only bounds a pathological single iteration.
        if c.queued > max.saturating_mul(4).saturating_add(READ_BUDGET) {
            self.cut_slow_reader(key, max, now);
            return;
        }
        self.mark_dirty(key);
    }

    /// Stops reading; the connection closes once its queue is flushed or its
    /// linger deadline passes.
    fn start_closing(&mut self, key: ConnId, now: Instant) {
        if let Some(c) = self.conns.get_mut(key)
            && !c.dead
            && c.closing.is_none()
        {
            c.closing = Some(now + LINGER);
            self.lingering.push((now + LINGER, key));
        }
    }

    /// The peer does not read what it is sent: tell it (best effort; its
    /// buffer is likely full) and drop it.
    fn cut_slow_reader(&mut self, key: ConnId, max: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        info!(
            "connection {key} from {}: output queue over {max} bytes, disconnecting slow reader",
            c.peer
        );
        self.counters.slow_readers += 1;
        say_raw(
            c,
            b"!!! disconnected: you are not reading what the server sends\n",
        );
        self.kill(key, Disconnect::SlowReader { max_queue: max }, now);
    }

    fn mark_dirty(&mut self, key: ConnId) {
        if let Some(c) = self.conns.get_mut(key)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Ends a connection now, without flushing, and tells the core.
    fn kill(&mut self, key: ConnId, why: Disconnect, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.dead {
            return;
        }
        c.dead = true;
        c.queue.clear();
        c.queued = 0;
        info!("connection {key} from {}: {why}", c.peer);
        self.dying.push(key);
        self.core.handle_disconnect(key, why);
        self.drain_core(now);
    }

    /// Flushes every connection given output since the last flush. A
    /// connection killed while flushing makes the core tell its rooms, which
    /// marks others dirty again: those wait for the next iteration (which
    /// polls without waiting), so that whatever records came with them are
    /// committed first.
    fn flush_dirty(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            if let Some(c) = self.conns.get_mut(key) {
                c.dirty = false;
            }
            self.flush(key, now);
        }
        if self.dirty.is_empty() {
            // Reuse the allocation.
            self.dirty = dirty;
        }
    }

    /// Writes as much of the queue as the socket takes, then sets interest.
    fn flush(&mut self, key: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.dead {
            return;
        }
        let written = if c.tls.is_some() {
            write_tls(c)
        } else {
            write_plain(c)
        };
        match written {
            Ok(n) => self.counters.bytes_out += n as u64,
            Err(e) => {
                self.kill(key, Disconnect::Error(e.to_string()), now);
                return;
            }
        }
        if c.queued > self.max_queue {
            let max = self.max_queue;
            self.cut_slow_reader(key, max, now);
            return;
        }
        // An idle connection holds no queue: the burst of a welcome and its
        // history, or of a busy minute, would otherwise stay allocated for
        // as long as the connection lives. Freed at once: freeing later
        // (tried) lets every connection's burst be allocated at the same
        // time, and the heap keeps that peak.
        if c.queue.is_empty() && c.queue.capacity() > IDLE_QUEUE_CAPACITY {
            c.queue = VecDeque::new();
        }
        if c.queue.is_empty() && c.closing.is_some() {
            if let Some(tls) = c.tls.as_mut()
                && !c.close_sent
                && !tls.is_handshaking()
            {
                c.close_sent = true;
                tls.send_close_notify();
                let _ = write_tls(c);
            }
            if !c.tls.as_ref().is_some_and(|t| t.wants_write()) {
                let _ = c.stream.shutdown(Shutdown::Write);
                c.dead = true;
                self.dying.push(key);
                return;
            }
        }
        // WRITABLE only while something can be written: a TLS connection
        // whose plaintext waits for its handshake waits on reading.
        let can_write = match c.tls.as_ref() {
            Some(t) => t.wants_write() || (!c.queue.is_empty() && !t.is_handshaking()),
            None => !c.queue.is_empty(),
        };
        let want = match (c.closing.is_some(), can_write) {
            (false, false) => Interest::READABLE,
            (false, true) => Interest::READABLE | Interest::WRITABLE,
            (true, _) => Interest::WRITABLE,
        };
        if c.interest != Some(want) {
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut c.stream, Token(key), want)
            {
                self.kill(key, Disconnect::Error(e.to_string()), now);
                return;
            }
            c.interest = Some(want);
        }
    }

    /// Cuts off TLS handshakes that passed their deadline.
    fn expire_handshakes(&mut self, now: Instant) {
        if self.handshakes.is_empty() {
            return;
        }
        let mut expired = Vec::new();
        let conns = &self.conns;
        self.handshakes.retain(|&(deadline, key)| {
            let Some(c) = conns.get(key) else {
                return false;
            };
            if c.dead || c.handshake_deadline != Some(deadline) || !c.fresh {
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
            self.kill(
                key,
                Disconnect::Error("TLS handshake timed out".into()),
                now,
            );
        }
    }

    /// Closing connections that did not flush in time are dropped.
    fn expire_lingering(&mut self, now: Instant) {
        let conns = &mut self.conns;
        let dying = &mut self.dying;
        self.lingering.retain(|&(deadline, key)| {
            // Entries of connections already gone (or reused keys that are
            // not closing) are dropped here.
            let Some(c) = conns.get_mut(key) else {
                return false;
            };
            if c.dead || c.closing != Some(deadline) {
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
                self.pending = self.pending.saturating_sub(c.decoder.capacity());
                if c.tls.is_some() && c.fresh {
                    // Died before its handshake finished.
                    self.handshaking = self.handshaking.saturating_sub(1);
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

/// Writes as much of a plain connection's queue as the socket takes, up to
/// `MAX_IOVECS` buffers per call; returns the bytes written.
fn write_plain(c: &mut Conn) -> io::Result<usize> {
    let mut total = 0;
    // Most flushes carry a few buffers: those go from a small array on the
    // stack. Preparing the 1,024-slot array (16 KiB) for each of them cost
    // more than the lines themselves at a steady rate into a big room.
    while !c.queue.is_empty() {
        let mut small: [IoSlice<'_>; SMALL_IOVECS] = [IoSlice::new(&[]); SMALL_IOVECS];
        let large: Vec<IoSlice<'_>>;
        let n = c.queue.len().min(MAX_IOVECS);
        let parts = c.queue.iter().take(n).enumerate().map(|(i, b)| {
            if i == 0 {
                b.get(c.head_written..).unwrap_or(&[])
            } else {
                b
            }
        });
        let slices: &[IoSlice<'_>] = if n <= SMALL_IOVECS {
            for (slot, part) in small.iter_mut().zip(parts) {
                *slot = IoSlice::new(part);
            }
            small.get(..n).unwrap_or(&[])
        } else {
            large = parts.map(IoSlice::new).collect();
            &large
        };
        match c.stream.write_vectored(slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "write returned zero",
                ));
            }
            Ok(written) => {
                total += written;
                consume(&mut c.queue, &mut c.head_written, &mut c.queued, written);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Drops `written` bytes from the front of a connection's queue.
fn consume(queue: &mut VecDeque<Bytes>, head: &mut usize, queued: &mut usize, mut written: usize) {
    *queued = queued.saturating_sub(written);
    while let Some(front) = queue.front() {
        let left = front.len().saturating_sub(*head);
        if written >= left {
            written -= left;
            queue.pop_front();
            *head = 0;
        } else {
            *head += written;
            break;
        }
    }
}

/// For a TLS connection: sends the records rustls has ready, moves more
/// of the queue in as plaintext (rustls holds at most `TLS_BUFFER`), and
/// repeats until the socket or rustls is full; returns the bytes written
/// to the socket.
fn write_tls(c: &mut Conn) -> io::Result<usize> {
    let mut total = 0;
    let Conn {
        tls,
        stream,
        queue,
        head_written,
        queued,
        ..
    } = c;
    let Some(tls) = tls.as_mut() else {
        return Ok(0);
    };
    loop {
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write returned zero",
                    ));
                }
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let Some(front) = queue.front() else {
            return Ok(total);
        };
        let part = front.get(*head_written..).unwrap_or(&[]);
        if part.is_empty() {
            queue.pop_front();
            *head_written = 0;
            continue;
        }
        let n = tls.writer().write(part)?;
        if n == 0 {
            // rustls is full: its handshake is not done yet.
            return Ok(total);
        }
        consume(queue, head_written, queued, n);
    }
}
