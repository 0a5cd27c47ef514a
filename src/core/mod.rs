//! The chat state machine: users, nicks, rooms, history, limits — and no I/O.
//!
//! [`Core`] contains no sockets, files, clocks or randomness of its own. The
//! reactor (or a test) feeds it events and drains what it wants done:
//!
//! * inputs: [`Core::handle_connect`], [`Core::handle_line`],
//!   [`Core::handle_bad_line`], [`Core::handle_disconnect`],
//!   [`Core::handle_timeout`], [`Core::handle_shutdown`] — each takes `now`;
//! * outputs: [`Core::poll_output`] until it returns `None` (bytes to queue on a
//!   connection, or a connection to close), then [`Core::poll_timeout`] for the
//!   next instant at which `handle_timeout` must be called.
//!
//! Drain order: after any `handle_*` call, drain `poll_output` completely
//! before calling `poll_timeout`. Outputs for one connection are in the order
//! they must be written; a `Close` comes after the last bytes for that
//! connection, and nothing for it follows.
//!
//! A line that goes to many people is encoded once per [`Format`] and the same
//! reference-counted buffer is handed out for every recipient. A room message
//! is one [`Output::Fanout`] holding the room's shared member list, so its cost
//! to the core does not grow with the room (see [`members`]).
//!
//! Wall-clock timestamps (shown in machine mode and history) are derived from
//! `now` and the Unix time given to [`Core::new`], so runs are reproducible.

mod accounts;
pub mod cluster;
#[cfg(test)]
mod cluster_tests;
mod durable;
pub mod members;
pub mod sim;
#[cfg(test)]
mod tests;

pub use accounts::{HashJob, HashOutcome, run_hash_job};
pub use cluster::{Claim, ClusterStats, FromCluster, Presence, ToCluster};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::codec::LineError;
use crate::media;
use crate::proto::{
    self, Command, Format, JoinTarget, ParseError, RoomRef, ServerLine, Upload, fold,
};
use crate::record::Record;
use members::Members;

/// Lines kept for a connection while its nick is claimed in the cluster.
const MAX_HELD: usize = 256;

/// Room for an envelope's own bytes beyond the image it may carry.
const ENVELOPE_OVERHEAD: usize = 64 * 1024;

/// The reactor's handle for a connection (its slab key).
pub type ConnId = usize;

/// An encoded line, shared by every recipient.
pub type Bytes = Rc<[u8]>;

/// Something the core wants the reactor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Queue these bytes on the connection.
    Send { conn: ConnId, data: Bytes },
    /// Queue one line on every connection of a shared member list.
    Fanout(Fanout),
    /// Flush what is queued, then close the connection. The core has already
    /// forgotten it; do not call `handle_disconnect` for it.
    Close { conn: ConnId },
    /// Make this durable before any output of the same input is flushed.
    Persist(Record),
    /// Hash or verify a password off the event loop, then hand the outcome
    /// to [`Core::handle_hash_done`].
    Hash(HashJob),
    /// Hand this to the cluster bridge (cluster mode only).
    Cluster(ToCluster),
}

/// One line for every member of a room, as one output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fanout {
    /// The room's member list when the line was sent (shared, not copied).
    pub members: Rc<Vec<(ConnId, Format)>>,
    /// The line in each format; `None` where no member reads that format.
    pub human: Option<Bytes>,
    pub machine: Option<Bytes>,
    /// Left out if it reads the human format: it typed the line.
    pub skip_human: Option<ConnId>,
}

impl Fanout {
    /// What each recipient gets, in member order.
    pub fn deliveries(&self) -> impl Iterator<Item = (ConnId, &Bytes)> + '_ {
        self.members.iter().filter_map(move |&(conn, f)| {
            if f == Format::Human && Some(conn) == self.skip_human {
                return None;
            }
            let data = match f {
                Format::Human => self.human.as_ref(),
                Format::Machine => self.machine.as_ref(),
            };
            data.map(|d| (conn, d))
        })
    }
}

/// Source of random bytes (private-room codes). The daemon uses the operating
/// system's generator; tests use a seeded one.
pub trait Entropy {
    fn fill(&mut self, buf: &mut [u8]);
}

/// Settings the core enforces. Defaults are the daemon's defaults.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Shown in the greeting.
    pub server_name: String,
    /// Rooms that always exist; everyone joins the first when named.
    pub default_rooms: Vec<String>,
    pub max_line: usize,
    pub max_image: u64,
    pub max_conns: usize,
    pub max_per_ip: usize,
    /// New connections per second from one address; 0 turns it off.
    pub conn_rate: f64,
    pub conn_burst: u32,
    /// Lines per second; 0 turns rate limiting off.
    pub rate: f64,
    pub burst: u32,
    pub name_timeout: Duration,
    /// `None`: never close idle named connections.
    pub idle_timeout: Option<Duration>,
    /// Messages kept per room.
    pub history_keep: usize,
    /// Messages shown on join.
    pub history_on_join: usize,
    /// Rooms with more members than this stop announcing joins and leaves.
    pub quiet_room: usize,
    pub max_joined: usize,
    pub max_rooms: usize,
    /// Direct messages kept per conversation, and pending per recipient.
    pub dm_keep: usize,
    /// PBKDF2 iterations for new password hashes.
    pub hash_iterations: u32,
    /// Password hashes queued or running at once, server-wide.
    pub max_hash_jobs: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            server_name: "chatd".to_string(),
            default_rooms: vec!["#lobby".to_string()],
            max_line: 4096,
            max_image: 2 * 1024 * 1024,
            max_conns: 10_000,
            max_per_ip: 20,
            conn_rate: 20.0,
            conn_burst: 50,
            rate: 10.0,
            burst: 20,
            name_timeout: Duration::from_secs(60),
            idle_timeout: Some(Duration::from_secs(3600)),
            history_keep: 500,
            history_on_join: 50,
            quiet_room: 100,
            max_joined: 50,
            max_rooms: 1000,
            dm_keep: 200,
            hash_iterations: accounts::HASH_ITERATIONS,
            max_hash_jobs: 32,
        }
    }
}

/// Why a new connection was turned away; `Display` is the line sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ServerFull {
        max: usize,
    },
    TooManyFromAddress {
        max: usize,
    },
    /// New connections from one address arrive faster than `--conn-rate`.
    TooFast {
        rate: u32,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ServerFull { max } => write!(
                f,
                "server full: {max} connections is the limit; try again later"
            ),
            Refusal::TooManyFromAddress { max } => write!(
                f,
                "too many connections from your address: {max} is the limit; close one and try again"
            ),
            Refusal::TooFast { rate } => write!(
                f,
                "connecting too fast from your address (limit {rate} per second); wait a moment"
            ),
        }
    }
}

/// Why the reactor ended a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// The peer closed its side (EOF, including a half-close).
    Closed,
    /// A read or write failed (reset, broken pipe, …).
    Error(String),
    /// Its output queue passed the cap: it does not read what it is sent.
    SlowReader { max_queue: usize },
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disconnect::Closed => f.write_str("connection closed"),
            Disconnect::Error(e) => write!(f, "connection error: {e}"),
            Disconnect::SlowReader { .. } => f.write_str("too slow reading, disconnected"),
        }
    }
}

/// Counters for logs and the status listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub connections: usize,
    pub named: usize,
    pub rooms: usize,
    pub messages_in: u64,
    pub deliveries: u64,
    pub lines_rejected: u64,
    pub rate_limited: u64,
    pub accounts: usize,
    pub logins_failed: u64,
    /// Error lines sent, by code.
    pub errors: std::collections::BTreeMap<String, u64>,
}

struct Client {
    /// Unique for the life of the core, so stale timer entries for a reused
    /// `ConnId` are recognised.
    serial: u64,
    ip: IpAddr,
    nick: Option<String>,
    format: Format,
    /// Keys of joined rooms, oldest first; at most `max_joined`.
    rooms: Vec<String>,
    current: Option<String>,
    tokens: f64,
    refilled: Instant,
    /// Lines dropped since the rate limit last let one through.
    dropped: u32,
    connected: Instant,
    last_active: Instant,
    /// Logged in as its (registered) nick.
    logged_in: bool,
    /// A password hash for it is queued or running.
    hashing: bool,
    /// Lines that arrived while its nick was being claimed in the cluster,
    /// replayed in order once the claim is answered (so `nc` users who
    /// type ahead, or pipe a script, are served as on one node).
    held: Option<VecDeque<String>>,
}

struct Room {
    /// Display name: `#Name` as first created, or `~code`.
    name: String,
    private: bool,
    /// A default room: always exists, cannot be deleted or owned.
    permanent: bool,
    owner: Option<String>,
    /// Unix ms of the last message; the least recently active empty room is
    /// the one dropped when `max_rooms` is reached.
    last_active: u64,
    topic: String,
    /// Members and the format each wants, so fan-out needs no other lookup.
    members: Members,
    history: VecDeque<Rc<ServerLine>>,
}

impl Room {
    /// The last `n` (or fewer) history lines, oldest first.
    fn recent(&self, n: usize) -> Vec<Rc<ServerLine>> {
        let skip = self.history.len().saturating_sub(n);
        self.history.iter().skip(skip).cloned().collect()
    }
}

/// A line encoded lazily, at most once per format.
struct Shared<'a> {
    line: &'a ServerLine,
    human: Option<Bytes>,
    machine: Option<Bytes>,
}

impl<'a> Shared<'a> {
    fn new(line: &'a ServerLine) -> Self {
        Shared {
            line,
            human: None,
            machine: None,
        }
    }
    fn get(&mut self, f: Format) -> Bytes {
        let slot = match f {
            Format::Human => &mut self.human,
            Format::Machine => &mut self.machine,
        };
        slot.get_or_insert_with(|| Rc::from(self.line.encode(f)))
            .clone()
    }
}

/// The chat state machine. See the module docs for the calling contract.
pub struct Core {
    cfg: CoreConfig,
    entropy: Box<dyn Entropy>,
    epoch: Instant,
    epoch_unix_ms: u64,
    clients: Vec<Option<Client>>,
    live: usize,
    per_ip: HashMap<IpAddr, usize>,
    nicks: HashMap<String, ConnId>,
    rooms: HashMap<String, Room>,
    out: VecDeque<Output>,
    /// (deadline, serial, conn); validated against the client when popped.
    timers: BinaryHeap<Reverse<(Instant, u64, ConnId)>>,
    next_serial: u64,
    stats: Stats,
    accounts: HashMap<String, accounts::Account>,
    /// Direct-message history per conversation (keyed by both folded nicks).
    dms: HashMap<(String, String), VecDeque<Rc<ServerLine>>>,
    /// Direct messages waiting for a registered user to log in.
    pending: HashMap<String, VecDeque<ServerLine>>,
    jobs: HashMap<u64, accounts::Job>,
    next_job: u64,
    nick_throttle: HashMap<String, accounts::Throttle>,
    ip_throttle: HashMap<IpAddr, accounts::Throttle>,
    /// New-connection token buckets per address: (tokens, last refill).
    conn_buckets: HashMap<IpAddr, (f64, Instant)>,
    /// `Some` in cluster mode.
    cluster: Option<cluster::ClusterState>,
}

impl Core {
    pub fn new(cfg: CoreConfig, entropy: Box<dyn Entropy>, now: Instant, unix_ms: u64) -> Core {
        let mut core = Core {
            cfg,
            entropy,
            epoch: now,
            epoch_unix_ms: unix_ms,
            clients: Vec::new(),
            live: 0,
            per_ip: HashMap::new(),
            nicks: HashMap::new(),
            rooms: HashMap::new(),
            out: VecDeque::new(),
            timers: BinaryHeap::new(),
            next_serial: 0,
            stats: Stats::default(),
            accounts: HashMap::new(),
            dms: HashMap::new(),
            pending: HashMap::new(),
            jobs: HashMap::new(),
            next_job: 0,
            nick_throttle: HashMap::new(),
            ip_throttle: HashMap::new(),
            conn_buckets: HashMap::new(),
            cluster: None,
        };
        for name in core.cfg.default_rooms.clone() {
            if let Ok(r) = RoomRef::parse(&name) {
                let room = core.new_room(&r);
                core.rooms.insert(
                    r.key(),
                    Room {
                        permanent: true,
                        ..room
                    },
                );
            }
        }
        core
    }

    /// True while the core knows this connection (it has not closed it).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.client(conn).is_some()
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.live,
            named: self.nicks.len(),
            rooms: self.rooms.len(),
            accounts: self.accounts.len(),
            ..self.stats.clone()
        }
    }

    /// The next thing to do, in order. Drain until `None` after every input.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When `handle_timeout` must next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // Drop entries whose client is gone so the answer is not needlessly early.
        while let Some(Reverse((at, serial, conn))) = self.timers.peek().copied() {
            match self.client(conn) {
                Some(c) if c.serial == serial => return Some(at),
                _ => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    /// A connection was accepted. On `Err` the reactor sends the refusal as an
    /// error line and closes; the core keeps no trace of it.
    pub fn handle_connect(
        &mut self,
        conn: ConnId,
        ip: IpAddr,
        now: Instant,
    ) -> Result<(), Refusal> {
        if self.live >= self.cfg.max_conns {
            return Err(Refusal::ServerFull {
                max: self.cfg.max_conns,
            });
        }
        let from_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.cfg.max_per_ip {
            return Err(Refusal::TooManyFromAddress {
                max: self.cfg.max_per_ip,
            });
        }
        if !self.admit_connection(ip, now) {
            return Err(Refusal::TooFast {
                rate: self.cfg.conn_rate.ceil() as u32,
            });
        }
        if self.client(conn).is_some() {
            // The reactor reused a key without telling us; treat it as closed.
            self.remove_client(conn, "connection replaced");
        }
        self.next_serial += 1;
        let client = Client {
            serial: self.next_serial,
            ip,
            nick: None,
            format: Format::Human,
            rooms: Vec::new(),
            current: None,
            tokens: f64::from(self.cfg.burst),
            refilled: now,
            dropped: 0,
            connected: now,
            last_active: now,
            logged_in: false,
            hashing: false,
            held: None,
        };
        if self.clients.len() <= conn {
            self.clients.resize_with(conn + 1, || None);
        }
        self.timers
            .push(Reverse((now + self.cfg.name_timeout, client.serial, conn)));
        if let Some(slot) = self.clients.get_mut(conn) {
            *slot = Some(client);
        }
        self.live += 1;
        *self.per_ip.entry(ip).or_insert(0) += 1;
        let greeting = format!(
            "Welcome to {}! What is your nick? ({}; /login <nick> <password> if registered; /help for help)",
            self.cfg.server_name,
            proto::NICK_RULE
        );
        self.reply(conn, &ServerLine::info("welcome", greeting));
        Ok(())
    }

    /// One complete line from a connection.
    pub fn handle_line(&mut self, conn: ConnId, line: &str, now: Instant) {
        if let Some(held) = self.client_mut(conn).and_then(|c| c.held.as_mut()) {
            if held.len() < MAX_HELD {
                held.push_back(line.to_string());
            } else {
                self.close(conn, "typed too much while its nick was checked");
            }
            return;
        }
        if !self.admit(conn, now) {
            return;
        }
        self.stats.messages_in += 1;
        let named = match self.client(conn) {
            Some(c) => c.nick.is_some(),
            None => return,
        };
        if !named && !line.starts_with('/') {
            let nick = line.trim();
            if proto::valid_nick(nick) {
                self.set_nick(conn, nick, false, now);
            } else {
                self.error(
                    conn,
                    "nick-invalid",
                    format!(
                        "\"{}\" is not a valid nick: {}. What is your nick?",
                        truncate(nick, 40),
                        proto::NICK_RULE
                    ),
                );
            }
            return;
        }
        match Command::parse(line) {
            Ok(cmd) => self.command(conn, cmd, now),
            Err(ParseError::Empty) => {}
            Err(e) => {
                self.stats.lines_rejected += 1;
                self.error(conn, e.code(), e.to_string())
            }
        }
    }

    /// A line the codec refused (too long, not UTF-8, control characters).
    pub fn handle_bad_line(&mut self, conn: ConnId, err: LineError, now: Instant) {
        if !self.admit(conn, now) {
            return;
        }
        self.stats.lines_rejected += 1;
        let code = match err {
            LineError::TooLong { .. } => "too-long",
            LineError::InvalidUtf8 => "invalid-utf8",
            LineError::ControlChar(_) => "control-char",
            LineError::Busy => "busy",
        };
        self.error(conn, code, err.to_string());
    }

    /// The reactor ended a connection. Unknown ids are ignored.
    pub fn handle_disconnect(&mut self, conn: ConnId, why: Disconnect) {
        let reason = match &why {
            Disconnect::Closed => "connection closed".to_string(),
            Disconnect::Error(_) => "connection lost".to_string(),
            Disconnect::SlowReader { .. } => "not reading, disconnected".to_string(),
        };
        self.remove_client(conn, &reason);
    }

    /// Closes connections whose deadline passed (naming, idleness).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, serial, conn))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.client(conn) else { continue };
            if c.serial != serial {
                continue;
            }
            let due = self.deadline(c);
            match due {
                Some(d) if d <= now => {
                    let (code, text, reason) = if c.nick.is_none() {
                        let secs = self.cfg.name_timeout.as_secs();
                        (
                            "name-timeout",
                            format!(
                                "no nick given within {secs} {}; closing the connection",
                                plural(secs as usize, "second", "seconds")
                            ),
                            "name timeout".to_string(),
                        )
                    } else {
                        let secs = self.cfg.idle_timeout.map_or(0, |d| d.as_secs());
                        (
                            "idle-timeout",
                            format!(
                                "idle for {secs} {}; closing the connection",
                                plural(secs as usize, "second", "seconds")
                            ),
                            "idle timeout".to_string(),
                        )
                    };
                    self.error(conn, code, text);
                    self.close(conn, &reason);
                }
                Some(d) => self.timers.push(Reverse((d, serial, conn))),
                None => {}
            }
        }
    }

    /// The server is going down: tell everyone, close everything.
    pub fn handle_shutdown(&mut self, reason: &str) {
        let line = ServerLine::info("shutdown", format!("server is shutting down: {reason}"));
        let mut shared = Shared::new(&line);
        for conn in 0..self.clients.len() {
            if let Some(c) = self.client(conn) {
                let data = shared.get(c.format);
                self.out.push_back(Output::Send { conn, data });
                self.out.push_back(Output::Close { conn });
            }
        }
        self.clients.clear();
        self.nicks.clear();
        self.per_ip.clear();
        self.live = 0;
        for room in self.rooms.values_mut() {
            room.members.clear();
        }
        self.rooms.retain(|_, r| !r.private);
        self.jobs.clear();
    }

    // ---- internals -------------------------------------------------------

    fn client(&self, conn: ConnId) -> Option<&Client> {
        self.clients.get(conn).and_then(Option::as_ref)
    }

    fn client_mut(&mut self, conn: ConnId) -> Option<&mut Client> {
        self.clients.get_mut(conn).and_then(Option::as_mut)
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch).as_millis();
        self.epoch_unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// The instant this client should be closed at, if any.
    fn deadline(&self, c: &Client) -> Option<Instant> {
        if c.nick.is_none() {
            Some(c.connected + self.cfg.name_timeout)
        } else {
            self.cfg.idle_timeout.map(|d| c.last_active + d)
        }
    }

    /// Per-address token bucket for new connections: reconnecting must not
    /// be a way around the per-connection line rate.
    fn admit_connection(&mut self, ip: IpAddr, now: Instant) -> bool {
        let rate = self.cfg.conn_rate;
        if rate <= 0.0 {
            return true;
        }
        let burst = f64::from(self.cfg.conn_burst.max(1));
        if self.conn_buckets.len() > 10_000 {
            // Full buckets carry no information: forget them.
            self.conn_buckets.retain(|_, (t, at)| {
                *t + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = self.conn_buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Token bucket: true if the line may be processed. The first refusal in a
    /// streak is answered; a streak far past the burst ends the connection.
    fn admit(&mut self, conn: ConnId, now: Instant) -> bool {
        let rate = self.cfg.rate;
        let burst = f64::from(self.cfg.burst.max(1));
        let Some(c) = self.client_mut(conn) else {
            return false;
        };
        c.last_active = now;
        if rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(c.refilled).as_secs_f64();
        c.refilled = now;
        c.tokens = (c.tokens + elapsed * rate).min(burst);
        if c.tokens >= 1.0 {
            c.tokens -= 1.0;
            c.dropped = 0;
            return true;
        }
        c.dropped = c.dropped.saturating_add(1);
        let dropped = c.dropped;
        self.stats.rate_limited += 1;
        if dropped == 1 {
            let text = format!(
                "you are sending too fast (limit {} lines per second, bursts of {}): lines are being dropped; wait a moment",
                self.cfg.rate, self.cfg.burst
            );
            self.error(conn, "rate-limited", text);
        } else if u64::from(dropped) > 10 * u64::from(self.cfg.burst.max(1)) {
            self.error(
                conn,
                "flood",
                "flooding: too many lines over the rate limit; disconnecting",
            );
            self.close(conn, "flooding");
        }
        false
    }

    fn command(&mut self, conn: ConnId, cmd: Command, now: Instant) {
        let named = self.client(conn).is_some_and(|c| c.nick.is_some());
        if !named
            && !matches!(
                cmd,
                Command::Nick(_)
                    | Command::Help(_)
                    | Command::Quit(_)
                    | Command::Format(_)
                    | Command::Ping(_)
                    | Command::Login { .. }
            )
        {
            self.error(
                conn,
                "no-nick",
                "choose a nick first: type it, or /nick <name>",
            );
            return;
        }
        match cmd {
            Command::Say(text) => self.say(conn, text, false, now),
            Command::Me(text) => self.say(conn, text, true, now),
            Command::Help(topic) => self.help(conn, topic.as_deref()),
            Command::Nick(n) => self.set_nick(conn, &n, false, now),
            Command::Join(JoinTarget::New) => self.join_new(conn),
            Command::Join(JoinTarget::Room(r)) => self.join(conn, &r),
            Command::Part(r) => self.part(conn, r.as_ref()),
            Command::Rooms => self.list_rooms(conn),
            Command::Who(r) => self.who(conn, r.as_ref()),
            Command::Online => self.online(conn),
            Command::Dm { to, text } => self.dm(conn, &to, text, now),
            Command::Topic(t) => self.topic(conn, t),
            Command::Upload { kind, name, data } => self.upload(conn, kind, name, data, now),
            Command::History { room, count } => self.history(conn, room.as_ref(), count),
            Command::Quit(reason) => self.quit(conn, reason),
            Command::Format(f) => self.set_format(conn, f),
            Command::Ping(arg) => {
                let line = ServerLine::ok("pong", arg.unwrap_or_default());
                self.reply(conn, &line)
            }
            Command::Register(pw) => self.register(conn, pw),
            Command::Login { nick, password } => self.login(conn, &nick, password, now),
            Command::Whois(nick) => self.whois(conn, &nick),
            Command::Bio(text) => self.set_bio(conn, text),
            Command::Dms(nick) => self.show_dms(conn, &nick),
            Command::Create { room, topic } => self.create_room(conn, &room, topic, now),
            Command::Delete(room) => self.delete_room(conn, &room),
            Command::Encrypted(env) => self.say_encrypted(conn, env, now),
            Command::Key(k) => self.key(conn, k),
        }
    }

    /// Encodes `line` for one connection and queues it.
    fn reply(&mut self, conn: ConnId, line: &ServerLine) {
        if let Some(c) = self.client(conn) {
            let data: Bytes = Rc::from(line.encode(c.format));
            self.out.push_back(Output::Send { conn, data });
        }
    }

    fn error(&mut self, conn: ConnId, code: &str, text: impl Into<String>) {
        match self.stats.errors.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                self.stats.errors.insert(code.to_string(), 1);
            }
        }
        self.reply(conn, &ServerLine::error(code, text));
    }

    /// Public rooms by member count, busiest first (at most `limit`), and
    /// how many private rooms there are. Private rooms are never named: their
    /// names are their invitation codes.
    pub fn room_counts(&self, limit: usize) -> (Vec<(String, usize)>, usize) {
        let mut public: Vec<(String, usize)> = Vec::new();
        let mut private = 0;
        for r in self.rooms.values() {
            if r.private {
                private += 1;
            } else {
                public.push((r.name.clone(), r.members.len()));
            }
        }
        public.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| fold(&a.0).cmp(&fold(&b.0))));
        public.truncate(limit);
        (public, private)
    }

    /// Queues `line` for every member of `room`, encoded once per format.
    /// `skip_human` is left out if it reads the human format (the sender of a
    /// message already sees what it typed).
    fn broadcast(&mut self, room_key: &str, line: &ServerLine, skip_human: Option<ConnId>) {
        let Some(room) = self.rooms.get(room_key) else {
            return;
        };
        let m = &room.members;
        let human = m
            .reads(Format::Human)
            .then(|| Rc::from(line.encode(Format::Human)));
        let machine = m
            .reads(Format::Machine)
            .then(|| Rc::from(line.encode(Format::Machine)));
        let skipped = skip_human.is_some_and(|c| m.format_of(c) == Some(Format::Human));
        self.stats.deliveries += (m.len() - usize::from(skipped)) as u64;
        self.out.push_back(Output::Fanout(Fanout {
            members: m.shared(),
            human,
            machine,
            skip_human,
        }));
    }

    /// Queues `line` once for every member of any of `rooms` (deduplicated),
    /// skipping rooms that are too big to announce comings and goings.
    fn announce(&mut self, rooms: &[String], line: &ServerLine, except: Option<ConnId>) {
        let mut seen: HashSet<ConnId> = HashSet::new();
        let mut shared = Shared::new(line);
        for key in rooms {
            let Some(room) = self.rooms.get(key) else {
                continue;
            };
            if room.members.len() > self.cfg.quiet_room {
                continue;
            }
            for (conn, format) in room.members.iter() {
                if Some(conn) == except || !seen.insert(conn) {
                    continue;
                }
                let data = shared.get(format);
                self.out.push_back(Output::Send { conn, data });
            }
        }
    }

    /// Names or renames a connection. `authed`: it just logged in as `nick`.
    fn set_nick(&mut self, conn: ConnId, nick: &str, authed: bool, now: Instant) {
        let key = fold(nick);
        let Some(c) = self.client(conn) else { return };
        let old = c.nick.clone();
        let already = c.logged_in && old.as_deref().map(fold) == Some(key.clone());
        if self.accounts.contains_key(&key) && !authed && !already {
            let text = format!(
                "nick {nick} is registered: log in with /login {nick} <password>, or choose another nick"
            );
            self.error(conn, "nick-registered", text);
            return;
        }
        let taken_here = matches!(self.nicks.get(&key), Some(&owner) if owner != conn);
        if taken_here || self.remote(&key).is_some() {
            let text = format!("nick {nick} is taken; choose another");
            self.error(conn, "nick-taken", text);
            return;
        }
        if !authed && old.as_deref().map(fold) != Some(key) && self.start_claim(conn, nick, false) {
            return;
        }
        self.finish_nick(conn, nick, authed, now);
    }

    /// Names or renames a connection once the nick is known to be free.
    fn finish_nick(&mut self, conn: ConnId, nick: &str, authed: bool, now: Instant) {
        let key = fold(nick);
        let Some(c) = self.client(conn) else { return };
        let old = c.nick.clone();
        let already = c.logged_in && old.as_deref().map(fold) == Some(key.clone());
        if matches!(self.nicks.get(&key), Some(&owner) if owner != conn) {
            // Taken here while the cluster was asked.
            self.ask_cluster(ToCluster::Release(nick.to_string()));
            let text = format!("nick {nick} is taken; choose another");
            self.error(conn, "nick-taken", text);
            return;
        }
        if let Some(old) = &old {
            self.nicks.remove(&fold(old));
            if fold(old) != key {
                self.ask_cluster(ToCluster::Release(old.clone()));
            }
            if old != nick {
                self.presence(Presence::Rename {
                    old: old.clone(),
                    new: nick.to_string(),
                });
            }
        } else if self.cluster.is_some() {
            let rooms = self
                .client(conn)
                .map(|c| {
                    c.rooms
                        .iter()
                        .filter(|k| !k.starts_with('~'))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            self.presence(Presence::Online {
                nick: nick.to_string(),
                rooms,
            });
        }
        self.nicks.insert(key, conn);
        if let Some(c) = self.client_mut(conn) {
            c.nick = Some(nick.to_string());
            c.last_active = now;
            c.logged_in = authed || already;
        }
        match old {
            None => self.welcome(conn, nick, now),
            Some(old) => {
                let line = ServerLine::NickChange {
                    old,
                    new: nick.to_string(),
                };
                let rooms = self
                    .client(conn)
                    .map(|c| c.rooms.clone())
                    .unwrap_or_default();
                self.announce(&rooms, &line, Some(conn));
                self.reply(conn, &line);
            }
        }
    }

    /// First naming: greet, and join the first default room.
    fn welcome(&mut self, conn: ConnId, nick: &str, now: Instant) {
        // The idle deadline replaces the naming one.
        if let Some(c) = self.client(conn)
            && let Some(d) = self.cfg.idle_timeout
        {
            let serial = c.serial;
            self.timers.push(Reverse((now + d, serial, conn)));
        }
        let text = format!(
            "hello {nick}! Type to talk, /help for commands. {} online.",
            self.nicks.len() + self.cluster.as_ref().map_or(0, |c| c.remote.len())
        );
        self.reply(conn, &ServerLine::ok("nick", text));
        if let Some(first) = self.cfg.default_rooms.first().cloned()
            && let Ok(r) = RoomRef::parse(&first)
        {
            self.join(conn, &r);
        }
    }

    fn new_room(&self, r: &RoomRef) -> Room {
        Room {
            name: r.display(),
            private: matches!(r, RoomRef::Private(_)),
            permanent: false,
            owner: None,
            last_active: 0,
            topic: String::new(),
            members: Members::default(),
            history: VecDeque::new(),
        }
    }

    fn join_new(&mut self, conn: ConnId) {
        // Checked before the room exists: a private room nobody joined would
        // never be removed (found by fuzz/core_sequences).
        if self
            .client(conn)
            .is_some_and(|c| c.rooms.len() >= self.cfg.max_joined)
        {
            let text = format!(
                "you are in {} rooms, the limit; /part one first",
                self.cfg.max_joined
            );
            self.error(conn, "too-many-joined", text);
            return;
        }
        if !self.make_room_space() {
            self.error(
                conn,
                "too-many-rooms",
                "the server has too many rooms; try again later",
            );
            return;
        }
        // 36^6 codes; a collision is retried, and after a few tries the
        // entropy source is broken rather than unlucky.
        for _ in 0..16 {
            let code = self.random_code();
            let r = RoomRef::Private(code.clone());
            if self.rooms.contains_key(&r.key()) {
                continue;
            }
            let room = self.new_room(&r);
            self.rooms.insert(r.key(), room);
            let text = format!(
                "created private room ~{code}: it is not listed; others join with /join {code}"
            );
            self.reply(conn, &ServerLine::ok("created", text));
            self.join(conn, &r);
            return;
        }
        self.error(
            conn,
            "internal",
            "could not create a private room; try again",
        );
    }

    fn random_code(&mut self) -> String {
        const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut code = String::with_capacity(proto::CODE_LEN);
        let mut buf = [0u8; 16];
        while code.len() < proto::CODE_LEN {
            self.entropy.fill(&mut buf);
            for b in buf {
                // 252 = 7 * 36: rejecting above it keeps the choice uniform.
                if b < 252
                    && code.len() < proto::CODE_LEN
                    && let Some(&ch) = ALPHABET.get(usize::from(b % 36))
                {
                    code.push(char::from(ch));
                }
            }
        }
        code
    }

    fn join(&mut self, conn: ConnId, r: &RoomRef) {
        let key = r.key();
        let Some(c) = self.client(conn) else { return };
        let nick = c.nick.clone().unwrap_or_default();
        let (joined, format) = (c.rooms.len(), c.format);
        if c.rooms.contains(&key) {
            if let Some(c) = self.client_mut(conn) {
                c.current = Some(key.clone());
            }
            let name = self
                .rooms
                .get(&key)
                .map(|r| r.name.clone())
                .unwrap_or_default();
            self.reply(
                conn,
                &ServerLine::ok("current", format!("now talking in {name}")),
            );
            return;
        }
        if joined >= self.cfg.max_joined {
            let text = format!(
                "you are in {} rooms, the limit; /part one first",
                self.cfg.max_joined
            );
            self.error(conn, "too-many-joined", text);
            return;
        }
        if !self.rooms.contains_key(&key) {
            if let RoomRef::Private(code) = r {
                let text = format!(
                    "no private room with code {code}; check the code, or /join new to make one"
                );
                self.error(conn, "no-such-room", text);
                return;
            }
            if !self.make_room_space() {
                self.error(
                    conn,
                    "too-many-rooms",
                    "the server has too many rooms; join an existing one (/rooms)",
                );
                return;
            }
            let room = self.new_room(r);
            self.rooms.insert(key.clone(), room);
        }
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        room.members.insert(conn, format);
        let name = room.name.clone();
        let topic = room.topic.clone();
        let local = room.members.len();
        let recent: Vec<Rc<ServerLine>> = { room.recent(self.cfg.history_on_join) };
        let quiet = local + self.remote_count(&key) > self.cfg.quiet_room;
        if let Some(c) = self.client_mut(conn) {
            c.rooms.push(key.clone());
            c.current = Some(key.clone());
        }
        let later = self.cluster_joined(conn, &key, &nick);
        let line = ServerLine::Join {
            room: name.clone(),
            nick,
        };
        if !quiet {
            self.announce(std::slice::from_ref(&key), &line, Some(conn));
        }
        // The joiner always sees its own join, whatever its format.
        self.reply(conn, &line);
        if !topic.is_empty() {
            let t = ServerLine::Topic {
                room: name.clone(),
                nick: String::new(),
                text: topic,
            };
            self.reply(conn, &t);
        }
        if !later {
            self.send_history(conn, &name, &recent);
        }
    }

    fn send_history(&mut self, conn: ConnId, room: &str, lines: &[Rc<ServerLine>]) {
        if lines.is_empty() {
            return;
        }
        let header = ServerLine::History {
            room: room.to_string(),
            count: lines.len(),
        };
        self.reply(conn, &header);
        for l in lines {
            self.reply(conn, l);
        }
    }

    fn leave_room(&mut self, conn: ConnId, key: &str, line: &ServerLine) {
        let quiet = self
            .rooms
            .get(key)
            .is_some_and(|r| r.members.len() > self.cfg.quiet_room);
        if !quiet {
            self.broadcast(key, line, None);
        }
        let mut drop_room = false;
        if let Some(room) = self.rooms.get_mut(key) {
            room.members.remove(conn);
            // Private rooms end with their last member and leave no trace;
            // public ones keep their history for whoever comes next.
            drop_room = room.members.is_empty() && room.private;
        }
        if drop_room {
            self.rooms.remove(key);
        }
        let nick = self.client(conn).and_then(|c| c.nick.clone());
        self.cluster_left(key, nick.as_deref());
        if let Some(c) = self.client_mut(conn) {
            c.rooms.retain(|k| k != key);
            if c.current.as_deref() == Some(key) {
                c.current = c.rooms.last().cloned();
            }
        }
    }

    fn resolve_room(&mut self, conn: ConnId, r: Option<&RoomRef>) -> Option<String> {
        let key = match r {
            Some(r) => r.key(),
            None => match self.client(conn).and_then(|c| c.current.clone()) {
                Some(k) => k,
                None => {
                    self.error(conn, "no-room", "you are not in a room; /join #room first");
                    return None;
                }
            },
        };
        if !self.rooms.contains_key(&key) {
            let shown = r.map(RoomRef::display).unwrap_or_default();
            self.error(
                conn,
                "no-such-room",
                format!("no room {shown}; /rooms lists them"),
            );
            return None;
        }
        Some(key)
    }

    fn part(&mut self, conn: ConnId, r: Option<&RoomRef>) {
        let Some(key) = self.resolve_room(conn, r) else {
            return;
        };
        let member = self.client(conn).is_some_and(|c| c.rooms.contains(&key));
        let Some(room) = self.rooms.get(&key) else {
            return;
        };
        if !member {
            let text = format!("you are not in {}", room.name);
            self.error(conn, "not-in-room", text);
            return;
        }
        let line = ServerLine::Part {
            room: room.name.clone(),
            nick: self.nick_of(conn),
            reason: String::new(),
        };
        let quiet = room.members.len() + self.remote_count(&key) > self.cfg.quiet_room;
        self.leave_room(conn, &key, &line);
        if quiet {
            self.reply(conn, &line);
        }
        let now_in = self
            .client(conn)
            .and_then(|c| c.current.clone())
            .and_then(|k| self.rooms.get(&k).map(|r| r.name.clone()));
        let text = match now_in {
            Some(n) => format!("now talking in {n}"),
            None => "you are in no room now; /join #room".to_string(),
        };
        self.reply(conn, &ServerLine::ok("current", text));
    }

    fn nick_of(&self, conn: ConnId) -> String {
        self.client(conn)
            .and_then(|c| c.nick.clone())
            .unwrap_or_default()
    }

    fn say(&mut self, conn: ConnId, text: String, action: bool, now: Instant) {
        let Some(key) = self.client(conn).and_then(|c| c.current.clone()) else {
            self.error(conn, "no-room", "you are not in a room; /join #room first");
            return;
        };
        let Some(room) = self.rooms.get(&key) else {
            return;
        };
        let (room_name, nick, ts) = (room.name.clone(), self.nick_of(conn), self.unix_ms(now));
        let line = if action {
            ServerLine::Action {
                room: room_name,
                nick,
                ts,
                text,
            }
        } else {
            ServerLine::Msg {
                room: room_name,
                nick,
                ts,
                text,
            }
        };
        self.room_line(&key, Rc::new(line), Some(conn));
    }

    /// Shows a room line to its members, keeps and journals it; in a cluster
    /// it goes to the room's stream instead and is shown when it comes back.
    /// `sender`: the human who typed it does not get it echoed.
    fn room_line(&mut self, key: &str, line: Rc<ServerLine>, sender: Option<ConnId>) {
        if self.post(key, &line, sender) {
            return;
        }
        self.broadcast(key, &line, sender);
        // History keeps an upload's notice, not its payload: images would
        // pin megabytes per room.
        let kept = match &*line {
            ServerLine::Upload { data, .. } if !data.is_empty() => {
                let mut k = (*line).clone();
                if let ServerLine::Upload { data, .. } = &mut k {
                    data.clear();
                }
                Rc::new(k)
            }
            _ => line,
        };
        self.remember(key, kept.clone());
        self.persist_message(key, &kept);
        self.post_later(key, &kept);
    }

    /// Relays an end-to-end envelope to the current room. The server checks
    /// only its shape and size; what it says is unknowable here.
    fn say_encrypted(&mut self, conn: ConnId, data: String, now: Instant) {
        let Some(key) = self.client(conn).and_then(|c| c.current.clone()) else {
            self.error(conn, "no-room", "you are not in a room; /join #room first");
            return;
        };
        let max = usize::try_from(self.cfg.max_image)
            .unwrap_or(usize::MAX)
            .saturating_add(ENVELOPE_OVERHEAD);
        if !crate::proto::shapes::room_envelope_ok(&data, max) {
            self.error(
                conn,
                "bad-envelope",
                "not a valid end-to-end envelope (or too large); update chatc",
            );
            return;
        }
        let Some(room) = self.rooms.get(&key) else {
            return;
        };
        let line = Rc::new(ServerLine::Encrypted {
            room: room.name.clone(),
            nick: self.nick_of(conn),
            ts: self.unix_ms(now),
            data,
        });
        self.room_line(&key, line, Some(conn));
    }

    fn persist(&mut self, rec: Record) {
        self.out.push_back(Output::Persist(rec));
    }

    /// Journals a room line, unless the room is private (ephemeral).
    fn persist_message(&mut self, key: &str, line: &ServerLine) {
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        if let ServerLine::Msg { ts, .. }
        | ServerLine::Action { ts, .. }
        | ServerLine::Upload { ts, .. }
        | ServerLine::Encrypted { ts, .. } = line
        {
            room.last_active = *ts;
        }
        if !room.private {
            self.persist(Record::Message {
                line: line.encode_machine(),
            });
        }
    }

    /// Ensures a new room may be created: under `max_rooms`, or by dropping
    /// the least recently active empty public room that has no owner and is
    /// not a default room. False if the server is full of rooms in use.
    fn make_room_space(&mut self) -> bool {
        if self.rooms.len() < self.cfg.max_rooms {
            return true;
        }
        let victim = self
            .rooms
            .iter()
            .filter(|(_, r)| r.members.is_empty() && !r.permanent && r.owner.is_none())
            .min_by_key(|(_, r)| r.last_active)
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                if let Some(r) = self.rooms.remove(&k) {
                    self.persist(Record::RoomGone { room: r.name });
                }
                true
            }
            None => false,
        }
    }

    fn remember(&mut self, key: &str, line: Rc<ServerLine>) {
        let keep = self.cfg.history_keep;
        if let Some(room) = self.rooms.get_mut(key) {
            accounts::push_capped(&mut room.history, line, keep);
        }
    }

    fn topic(&mut self, conn: ConnId, text: Option<String>) {
        let Some(key) = self.resolve_room(conn, None) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        let name = room.name.clone();
        match text {
            None => {
                let line = if room.topic.is_empty() {
                    ServerLine::info(
                        "topic",
                        format!("{name} has no topic; set one with /topic <text>"),
                    )
                } else {
                    ServerLine::Topic {
                        room: name,
                        nick: String::new(),
                        text: room.topic.clone(),
                    }
                };
                self.reply(conn, &line);
            }
            Some(t) => {
                if t.chars().count() > proto::TOPIC_MAX {
                    let text = format!("a topic is at most {} characters", proto::TOPIC_MAX);
                    self.error(conn, "too-long", text);
                    return;
                }
                let text = if t == "-" { String::new() } else { t };
                let line = ServerLine::Topic {
                    room: name.clone(),
                    nick: self.nick_of(conn),
                    text: text.clone(),
                };
                if self.post(&key, &line, None) {
                    return;
                }
                let Some(room) = self.rooms.get_mut(&key) else {
                    return;
                };
                room.topic = text.clone();
                if !room.private {
                    let rec = Record::Topic {
                        room: name.clone(),
                        text: text.clone(),
                    };
                    self.persist(rec);
                }
                let line = ServerLine::Topic {
                    room: name,
                    nick: self.nick_of(conn),
                    text,
                };
                self.broadcast(&key, &line, None);
            }
        }
    }

    fn upload(
        &mut self,
        conn: ConnId,
        kind: Upload,
        name: Option<String>,
        data: String,
        now: Instant,
    ) {
        let what = match kind {
            Upload::Image => "image",
            Upload::File => "file",
        };
        let Some(key) = self.client(conn).and_then(|c| c.current.clone()) else {
            self.error(
                conn,
                "no-room",
                format!("you are not in a room to send the {what} to; /join #room first"),
            );
            return;
        };
        let media = match media::check(&data, self.cfg.max_image, kind == Upload::Image) {
            Ok(m) => m,
            Err(e) => {
                self.stats.lines_rejected += 1;
                self.error(conn, e.code(), format!("{what} refused: {e}"));
                return;
            }
        };
        let name = name.unwrap_or_else(|| default_name(kind, media.mime));
        let room = self
            .rooms
            .get(&key)
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let line = ServerLine::Upload {
            kind,
            room,
            nick: self.nick_of(conn),
            ts: self.unix_ms(now),
            mime: media.mime.to_string(),
            size: media.size,
            name,
            data,
        };
        self.room_line(&key, Rc::new(line), None);
    }

    fn history(&mut self, conn: ConnId, r: Option<&RoomRef>, count: Option<usize>) {
        let Some(key) = self.resolve_room(conn, r) else {
            return;
        };
        let member = self.client(conn).is_some_and(|c| c.rooms.contains(&key));
        let Some(room) = self.rooms.get(&key) else {
            return;
        };
        if room.private && !member {
            self.error(
                conn,
                "not-in-room",
                format!("join {} to read its history", room.name),
            );
            return;
        }
        let lines = room.recent(count.unwrap_or(self.cfg.history_on_join));
        let name = room.name.clone();
        if lines.is_empty() {
            self.reply(
                conn,
                &ServerLine::info("history", format!("no messages in {name} yet")),
            );
        } else {
            self.send_history(conn, &name, &lines);
        }
    }

    fn list_rooms(&mut self, conn: ConnId) {
        const SHOWN: usize = 200;
        let mut list: Vec<(&String, usize, &String)> = self
            .rooms
            .values()
            .filter(|r| !r.private)
            .map(|r| (&r.name, r.members.len(), &r.topic))
            .collect();
        // Busiest first, then by name, so the interesting rooms come first.
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| fold(a.0).cmp(&fold(b.0))));
        let total = list.len();
        let lines: Vec<ServerLine> = list
            .into_iter()
            .take(SHOWN)
            .map(|(room, members, topic)| ServerLine::RoomInfo {
                room: room.clone(),
                members,
                topic: topic.clone(),
            })
            .collect();
        for l in &lines {
            self.reply(conn, l);
        }
        let more = total.saturating_sub(SHOWN);
        let text = if more > 0 {
            format!("{total} rooms ({more} more not shown)")
        } else {
            format!(
                "{total} {}; /join #name to enter or create one",
                plural(total, "room", "rooms")
            )
        };
        self.reply(conn, &ServerLine::ok("rooms", text));
    }

    fn who(&mut self, conn: ConnId, r: Option<&RoomRef>) {
        const PER_LINE: usize = 50;
        const SHOWN: usize = 1000;
        let Some(key) = self.resolve_room(conn, r) else {
            return;
        };
        let member = self.client(conn).is_some_and(|c| c.rooms.contains(&key));
        let Some(room) = self.rooms.get(&key) else {
            return;
        };
        if room.private && !member {
            self.error(
                conn,
                "not-in-room",
                format!("join {} to see who is there", room.name),
            );
            return;
        }
        let mut nicks: Vec<String> = room
            .members
            .conns()
            .filter_map(|m| self.client(m).and_then(|c| c.nick.clone()))
            .collect();
        nicks.extend(self.remote_nicks_in(&key));
        nicks.sort_by_key(|n| fold(n));
        let total = nicks.len();
        let name = room.name.clone();
        let lines: Vec<ServerLine> = nicks
            .chunks(PER_LINE)
            .take(SHOWN / PER_LINE)
            .map(|c| ServerLine::Names {
                room: name.clone(),
                nicks: c.to_vec(),
            })
            .collect();
        for l in &lines {
            self.reply(conn, l);
        }
        let more = total.saturating_sub(SHOWN);
        let people = plural(total, "person", "people");
        let text = if more > 0 {
            format!("{total} {people} in {name} ({more} not shown)")
        } else {
            format!("{total} {people} in {name}")
        };
        self.reply(conn, &ServerLine::ok("who", text));
    }

    fn online(&mut self, conn: ConnId) {
        const SHOWN: usize = 200;
        let mut nicks: Vec<String> = self
            .nicks
            .values()
            .filter_map(|&m| self.client(m).and_then(|c| c.nick.clone()))
            .collect();
        nicks.extend(self.remote_nicks());
        let total = nicks.len();
        nicks.sort_by_key(|n| fold(n));
        nicks.truncate(SHOWN);
        self.reply(conn, &ServerLine::Online { total, nicks });
    }

    fn help(&mut self, conn: ConnId, topic: Option<&str>) {
        let lines: Vec<&str> = match topic {
            None => HELP.to_vec(),
            Some(t) => HELP
                .iter()
                .copied()
                .filter(|l| l.trim_start().starts_with(&format!("/{t}")))
                .collect(),
        };
        if lines.is_empty() {
            self.error(conn, "unknown-command", "no such command; /help lists them");
            return;
        }
        for l in lines {
            self.reply(conn, &ServerLine::info("help", l));
        }
    }

    fn set_format(&mut self, conn: ConnId, f: Format) {
        let Some(c) = self.client_mut(conn) else {
            return;
        };
        c.format = f;
        let rooms = c.rooms.clone();
        for key in rooms {
            if let Some(room) = self.rooms.get_mut(&key) {
                room.members.insert(conn, f);
            }
        }
        let text = match f {
            Format::Human => "human".to_string(),
            Format::Machine => format!("machine {}", proto::MACHINE_VERSION),
        };
        self.reply(conn, &ServerLine::ok("format", text));
    }

    fn quit(&mut self, conn: ConnId, reason: Option<String>) {
        let reason = reason
            .map(|r| truncate(&r, proto::REASON_MAX).to_string())
            .unwrap_or_else(|| "quit".to_string());
        self.reply(conn, &ServerLine::ok("bye", "bye!"));
        self.close(conn, &reason);
    }

    /// Ends a connection from the core's side: announce, forget, tell the
    /// reactor to flush and close.
    fn close(&mut self, conn: ConnId, reason: &str) {
        if self.remove_client(conn, reason) {
            self.out.push_back(Output::Close { conn });
        }
    }

    /// Forgets a client, telling its rooms. False if it was not known.
    fn remove_client(&mut self, conn: ConnId, reason: &str) -> bool {
        let Some(c) = self.clients.get_mut(conn).and_then(Option::take) else {
            return false;
        };
        self.live = self.live.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&c.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&c.ip);
            }
        }
        if let Some(nick) = &c.nick {
            self.nicks.remove(&fold(nick));
            let line = ServerLine::Quit {
                nick: nick.clone(),
                reason: reason.to_string(),
            };
            // Announced while the leaver still counts, so a room at the quiet
            // threshold behaves the same for joins and leaves.
            self.announce(&c.rooms, &line, Some(conn));
            for key in &c.rooms {
                if let Some(room) = self.rooms.get_mut(key) {
                    room.members.remove(conn);
                }
            }
            for key in &c.rooms {
                if self
                    .rooms
                    .get(key)
                    .is_some_and(|r| r.members.is_empty() && r.private)
                {
                    self.rooms.remove(key);
                }
            }
            if self.cluster.is_some() {
                self.presence(Presence::Offline { nick: nick.clone() });
                self.ask_cluster(ToCluster::Release(nick.clone()));
                for key in &c.rooms {
                    self.cluster_left(key, None);
                }
            }
        }
        true
    }

    /// Checks the invariants the fuzzer relies on; returns what is broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (key, room) in &self.rooms {
            for (m, f) in room.members.iter() {
                let Some(c) = self.client(m) else {
                    return Err(format!("{key} has dead member {m}"));
                };
                if !c.rooms.contains(key) {
                    return Err(format!("{key} has {m} who does not list it"));
                }
                if c.format != f {
                    return Err(format!("{key} has a stale format for {m}"));
                }
            }
            if room.members.is_empty() && room.private {
                return Err(format!("private room {key} is empty but kept"));
            }
        }
        let mut live = 0;
        for (conn, c) in self.clients.iter().enumerate() {
            let Some(c) = c else { continue };
            live += 1;
            for key in &c.rooms {
                if !self
                    .rooms
                    .get(key)
                    .is_some_and(|r| r.members.contains(conn))
                {
                    return Err(format!("{conn} lists {key} but is not a member"));
                }
            }
            if let Some(n) = &c.nick
                && self.nicks.get(&fold(n)) != Some(&conn)
            {
                return Err(format!("nick {n} of {conn} is not indexed"));
            }
        }
        if live != self.live || self.nicks.len() > live {
            return Err("connection counts disagree".to_string());
        }
        if let Some(c) = &self.cluster {
            c.check()?;
        }
        Ok(())
    }
}

fn default_name(kind: Upload, mime: &str) -> String {
    let ext = match mime {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/bmp" => "bmp",
        "image/webp" => "webp",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => "bin",
    };
    match kind {
        Upload::Image => format!("image.{ext}"),
        Upload::File => format!("file.{ext}"),
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// At most `max` characters of `s`.
fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `/help` text; `/help <cmd>` shows the lines that start with that command.
const HELP: &[&str] = &[
    "commands (a line without / is said in your current room; // sends a line starting with /):",
    "/nick <name>            change your nick",
    "/join <#room>           join or create a room, and talk there",
    "/join new               create a private room with a random code",
    "/join <code>            join a private room by its code",
    "/part [#room]           leave a room (default: the current one)",
    "/rooms                  list public rooms",
    "/who [#room]            who is in a room",
    "/online                 who is online",
    "/dm <nick> <text>       send a direct message",
    "/me <action>            act in the current room (* alice waves)",
    "/topic [text]           show or set the room topic (/topic - clears it)",
    "/image [name] <base64>  send an image (PNG, JPEG, GIF, BMP, WebP)",
    "/file [name] <base64>   send any other file",
    "/history [#room] [n]    show the last n messages",
    "/register <password>    keep your nick: nobody else can use it",
    "/login <nick> <password> log in as a registered nick",
    "/whois <nick>           who someone is, where, since when",
    "/bio <text>             set your bio (registered nicks)",
    "/dms <nick>             your direct messages with someone (registered nicks)",
    "/key <nick>             the end-to-end key someone published (chatc uses it)",
    "/create <#room> [topic] own a room: it stays, and only you can delete it",
    "/delete <#room>         delete a room you own",
    "/format machine|human   switch this session's line format",
    "/quit [reason]          leave (also /exit)",
];
