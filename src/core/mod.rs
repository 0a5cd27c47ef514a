//! The chat state machine: users, nicks, rooms, history, limits — and no I/O.
//!
//! [`Core`] contains no sockets, files, clocks or randomness of its own. The
//! reactor (or the simulator, [`sim`]) feeds it inputs and drains what it
//! wants done.
//!
//! Inputs, each taking `now`:
//!
//! * [`Core::handle_connect`] — a connection was accepted (or is refused);
//! * [`Core::handle_line`] — one complete line from a connection;
//! * [`Core::handle_bad_line`] — a line the codec refused;
//! * [`Core::handle_disconnect`] — the reactor ended a connection;
//! * [`Core::handle_timeout`] — the instant [`Core::poll_timeout`] named came;
//! * [`Core::handle_hash_done`] — a password job finished on the worker;
//! * [`Core::handle_cluster`] — the NATS bridge said something (cluster mode);
//! * [`Core::handle_shutdown`] — the server is going down (no `now`).
//!
//! Outputs, from [`Core::poll_output`] until it returns `None`:
//!
//! * [`Output::Send`] — bytes to queue on one connection;
//! * [`Output::Fanout`] — one line for every member of a room;
//! * [`Output::Close`] — flush, then close a connection the core forgot;
//! * [`Output::Persist`] — a record for the journal;
//! * [`Output::Hash`] — a password job for the worker thread;
//! * [`Output::Cluster`] — a request for the NATS bridge.
//!
//! Drain order: after every input, drain `poll_output` completely, carrying
//! out each output in the order given, before the next input and before
//! `poll_timeout`. Outputs for one connection are in the order they must be
//! written; a `Close` comes after the last bytes for that connection, and
//! nothing for it follows. An input that arises while carrying out outputs
//! (a slow reader cut off while its bytes are queued) is fed after the drain,
//! never from inside it. The records of one loop iteration are made durable
//! before any output of that iteration reaches a socket (the reactor's
//! group commit).
//!
//! Policy lives here, where the state is, so that the simulator sees every
//! rule: the core alone decides what is journaled ([`Output::Persist`]) and
//! what is shared with other nodes ([`Output::Cluster`]), including records
//! that arrive from the cluster. The reactor only carries outputs out.
//!
//! The parts, each owning its data (no other file changes it):
//!
//! * `sessions` — connections, nicks, per-address counts, rate limits and
//!   deadlines;
//! * `rooms` and [`members`] — rooms, their members and history;
//! * `accounts` and `passwords` — registered nicks, login throttles and
//!   password jobs;
//! * `dms` — kept and waiting direct messages;
//! * [`cluster`] — what the core knows of other nodes;
//! * `output` — the outbox and line encoding;
//!
//! and the code that routes between them: `commands/` (one file per kind of
//! command), `durable` (journal replay and snapshots) and `help.rs`.
//!
//! Wall-clock timestamps (shown in machine mode and history) are derived from
//! `now` and the Unix time given to [`Core::new`], so runs are reproducible.

mod accounts;
pub mod cluster;
mod commands;
mod dms;
mod durable;
mod help;
pub mod members;
mod moderation;
mod nicks;
mod output;
mod passwords;
mod rooms;
mod search;
mod sessions;
pub mod settings;
pub mod sim;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_everyday;
#[cfg(test)]
mod tests_memory;
#[cfg(test)]
mod tests_moderation;
mod timers;

pub use cluster::{Claim, ClusterStats, FromCluster, Presence, ToCluster};
pub use output::{Bytes, ConnId, Fanout, Output};
pub use passwords::{
    HASH_ITERATIONS, HashJob, HashOutcome, MAX_HASH_ITERATIONS, PASSWORD_MAX, PASSWORD_MIN,
    run_hash_job,
};

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::codec::LineError;
use crate::proto::{self, Command, ParseError, RoomRef, ServerLine};
use crate::record::Record;
use accounts::Accounts;
use dms::Dms;
use output::{Outbox, Shared};
use rooms::Rooms;
use sessions::{Admission, Due, Paste, Sessions, Verdict};

/// Lines kept for a connection while its nick is claimed in the cluster.
const MAX_HELD: usize = 256;

/// Source of random bytes (private-room codes, password salts). The daemon
/// uses the operating system's generator (`crate::random`); tests use a
/// seeded one.
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
    /// Lines past the burst held and paced (a paste) rather than dropped,
    /// and the bytes they may hold, per connection.
    pub paste_lines: usize,
    pub paste_bytes: usize,
    /// Bytes of kept text one `/search` reads at most (newest first).
    pub search_budget: usize,
    pub name_timeout: Duration,
    /// `None`: never close idle named connections.
    pub idle_timeout: Option<Duration>,
    /// Messages kept per room.
    pub history_keep: usize,
    /// Bytes of history kept per room, and in all rooms together.
    pub history_bytes: usize,
    pub history_total: usize,
    /// An envelope larger than this is kept in history as a notice only.
    pub history_envelope: usize,
    /// Bytes of history sent at once (on join, or per `/history`): within
    /// the connection's output budget, so that history never gets anyone
    /// cut off as a slow reader.
    pub history_burst: usize,
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
    /// Registrations one address may make per hour; 0: no limit.
    pub registrations_per_hour: u32,
    /// Rooms one account may own.
    pub max_owned: usize,
    /// Rooms one address may have made (by joining a new name, or
    /// `/join new`) that still exist.
    pub max_rooms_per_ip: usize,
    /// Folded registered nicks that are server admins (`--admin`).
    pub admins: Vec<String>,
    /// Sessions one account may have at once (laptop, phone, ...).
    pub max_sessions: usize,
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
            paste_lines: 50,
            paste_bytes: 64 * 1024,
            search_budget: 4 * 1024 * 1024,
            name_timeout: Duration::from_secs(60),
            idle_timeout: Some(Duration::from_secs(3600)),
            history_keep: 500,
            history_bytes: 1024 * 1024,
            history_total: 64 * 1024 * 1024,
            history_envelope: 16 * 1024,
            history_burst: 1024 * 1024,
            history_on_join: 50,
            quiet_room: 100,
            max_joined: 50,
            max_rooms: 1000,
            dm_keep: 200,
            hash_iterations: HASH_ITERATIONS,
            max_hash_jobs: 32,
            registrations_per_hour: 5,
            max_owned: 10,
            max_rooms_per_ip: 50,
            admins: Vec::new(),
            max_sessions: 5,
        }
    }
}

impl CoreConfig {
    fn admission(&self) -> Admission {
        Admission {
            max_conns: self.max_conns,
            max_per_ip: self.max_per_ip,
            conn_rate: self.conn_rate,
            conn_burst: self.conn_burst,
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
    /// Bytes of history kept in all rooms.
    pub history_bytes: usize,
    /// Error lines sent, by code.
    pub errors: std::collections::BTreeMap<String, u64>,
}

/// The chat state machine. See the module docs for the calling contract.
pub struct Core {
    cfg: CoreConfig,
    entropy: Box<dyn Entropy>,
    epoch: Instant,
    epoch_unix_ms: u64,
    sessions: Sessions,
    rooms: Rooms,
    accounts: Accounts,
    dms: Dms,
    /// `Some` in cluster mode.
    cluster: Option<cluster::ClusterState>,
    out: Outbox,
    stats: Stats,
    /// The next UTC midnight: sessions with timestamps on are told the date.
    next_day: Option<Instant>,
    /// Server-wide bans (`/gban`), kept like a room's.
    server_rules: moderation::Rules,
}

impl Core {
    pub fn new(cfg: CoreConfig, entropy: Box<dyn Entropy>, now: Instant, unix_ms: u64) -> Core {
        let mut rooms = Rooms::new(rooms::HistoryLimits {
            lines: cfg.history_keep,
            bytes: cfg.history_bytes,
            total: cfg.history_total,
            envelope: cfg.history_envelope,
        });
        for name in &cfg.default_rooms {
            if let Ok(r) = RoomRef::parse(name) {
                rooms.create_permanent(&r);
            }
        }
        let sessions = Sessions::with_capacity(cfg.max_conns, now);
        Core {
            dms: Dms::new(cfg.dm_keep),
            cfg,
            entropy,
            epoch: now,
            epoch_unix_ms: unix_ms,
            sessions,
            rooms,
            accounts: Accounts::default(),
            cluster: None,
            out: Outbox::default(),
            stats: Stats::default(),
            next_day: next_midnight(now, unix_ms),
            server_rules: moderation::Rules::default(),
        }
    }

    /// True while the core knows this connection (it has not closed it).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.sessions.get(conn).is_some()
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.sessions.live(),
            named: self.sessions.named(),
            rooms: self.rooms.len(),
            accounts: self.accounts.len(),
            history_bytes: self.rooms.history_total(),
            ..self.stats.clone()
        }
    }

    /// Public rooms by member count, busiest first (at most `limit`), and
    /// how many private rooms there are.
    pub fn room_counts(&self, limit: usize) -> (Vec<(String, usize)>, usize) {
        self.rooms.counts(limit)
    }

    /// The next thing to do, in order. Drain until `None` after every input.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop()
    }

    /// When `handle_timeout` must next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        match (self.sessions.next_timer(), self.next_day) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A connection was accepted. On `Err` the reactor sends the refusal as an
    /// error line and closes; the core keeps no trace of it.
    pub fn handle_connect(
        &mut self,
        conn: ConnId,
        ip: IpAddr,
        now: Instant,
    ) -> Result<(), Refusal> {
        self.out.set_clock(self.unix_ms(now));
        if let Some(refusal) = self.sessions.refusal(ip, now, self.cfg.admission()) {
            return Err(refusal);
        }
        if self.sessions.get(conn).is_some() {
            // The reactor reused a key without telling us; treat it as closed.
            self.remove_client(conn, "connection replaced");
        }
        self.sessions
            .insert(conn, ip, now, self.cfg.burst, self.cfg.name_timeout);
        let greeting = format!(
            "Welcome to {}! What is your nick? ({}; /login <nick> <password> if registered; /help for help)",
            self.cfg.server_name,
            proto::NICK_RULE
        );
        self.reply(conn, &ServerLine::info("welcome", greeting));
        Ok(())
    }

    /// A connection became a browser's WebSocket (`client`: its address,
    /// a trusted proxy's `X-Forwarded-For` or the peer's). Its lines are in
    /// the machine format from now on, and it is greeted again (the first
    /// greeting was held and dropped with the HTTP request). An address
    /// given by a proxy counts against that address's limits, as if it had
    /// connected itself.
    pub fn handle_web_upgrade(&mut self, conn: ConnId, client: IpAddr, now: Instant) {
        self.out.set_clock(self.unix_ms(now));
        if self.sessions.get(conn).is_none() {
            return;
        }
        self.sessions.set_format(conn, proto::Format::Machine);
        if let Err(refusal) = self
            .sessions
            .move_address(conn, client, self.cfg.admission(), now)
        {
            self.reply(conn, &ServerLine::error("refused", refusal.to_string()));
            self.close(conn, "refused");
            return;
        }
        let greeting = format!(
            "Welcome to {}! What is your nick? ({}; /login <nick> <password> if registered; /help for help)",
            self.cfg.server_name,
            proto::NICK_RULE
        );
        self.reply(conn, &ServerLine::info("welcome", greeting));
    }

    /// One complete line from a connection.
    pub fn handle_line(&mut self, conn: ConnId, line: &str, now: Instant) {
        self.out.set_clock(self.unix_ms(now));
        if self.held_for_claim(conn, line) || !self.admit(conn, Some(line), now) {
            return;
        }
        self.run_line(conn, line, now);
    }

    /// Holds `line` if the connection's nick is being claimed in the
    /// cluster (true: it is held, or the connection was closed).
    fn held_for_claim(&mut self, conn: ConnId, line: &str) -> bool {
        match self.sessions.hold_line(conn, line, MAX_HELD) {
            Some(true) => true,
            Some(false) => {
                self.close(conn, "typed too much while its nick was checked");
                true
            }
            None => false,
        }
    }

    /// A line the rate limit let through (at once, or paced).
    fn run_line(&mut self, conn: ConnId, line: &str, now: Instant) {
        self.stats.messages_in += 1;
        if self.sessions.get(conn).is_some_and(|c| c.awaits()) {
            self.answer(conn, line, now);
            return;
        }
        let named = match self.sessions.get(conn) {
            Some(c) => c.nick().is_some(),
            None => return,
        };
        if !named && !line.starts_with('/') {
            self.first_line_nick(conn, line, now);
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
        self.out.set_clock(self.unix_ms(now));
        if !self.admit(conn, None, now) {
            return;
        }
        self.stats.lines_rejected += 1;
        if let LineError::UploadTooLong { .. } = err {
            let max = self.cfg.max_image;
            let text = format!(
                "too large: an image or file may be at most {} ({max} bytes) decoded; it was discarded",
                proto::human_size(max)
            );
            self.error(conn, "too-large", text);
            return;
        }
        let code = match err {
            LineError::TooLong { .. } => "too-long",
            LineError::UploadTooLong { .. } => "too-large",
            LineError::InvalidUtf8 => "invalid-utf8",
            LineError::ControlChar(_) => "control-char",
            LineError::Busy => "busy",
        };
        self.error(conn, code, err.to_string());
    }

    /// The reactor ended a connection. Unknown ids are ignored.
    pub fn handle_disconnect(&mut self, conn: ConnId, why: Disconnect) {
        let reason = match &why {
            Disconnect::Closed => "connection closed",
            Disconnect::Error(_) => "connection lost",
            Disconnect::SlowReader { .. } => "not reading, disconnected",
        };
        self.remove_client(conn, reason);
    }

    /// Closes connections whose deadline passed (naming, idleness), runs
    /// paced lines whose turn came, and tells the date at midnight.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.out.set_clock(self.unix_ms(now));
        if self.next_day.is_some_and(|d| d <= now) {
            self.next_day = next_midnight(now, self.unix_ms(now));
            self.new_day(now);
        }
        for (conn, line) in self.sessions.release(now, self.cfg.rate, self.cfg.burst) {
            if self.is_open(conn) && !self.held_for_claim(conn, &line) {
                self.run_line(conn, &line, now);
            }
        }
        let due = self
            .sessions
            .due(now, self.cfg.name_timeout, self.cfg.idle_timeout);
        for (conn, kind) in due {
            let (code, secs, reason) = match kind {
                Due::Name => (
                    "name-timeout",
                    self.cfg.name_timeout.as_secs(),
                    "name timeout",
                ),
                Due::Idle => (
                    "idle-timeout",
                    self.cfg.idle_timeout.map_or(0, |d| d.as_secs()),
                    "idle timeout",
                ),
            };
            let unit = plural(secs as usize, "second", "seconds");
            let text = match kind {
                Due::Name => format!("no nick given within {secs} {unit}; closing the connection"),
                Due::Idle => format!("idle for {secs} {unit}; closing the connection"),
            };
            self.error(conn, code, text);
            self.close(conn, reason);
        }
    }

    /// The server is going down: tell everyone (with what the operator
    /// said, if anything: the core does not know whether it comes back),
    /// close everything.
    pub fn handle_shutdown(&mut self, notice: &str) {
        let text = if notice.is_empty() {
            "server is shutting down".to_string()
        } else {
            format!("server is shutting down: {notice}")
        };
        let line = ServerLine::info("shutdown", text);
        let mut shared = Shared::new(&line, self.out.clock());
        for (conn, format) in self.sessions.drain() {
            self.out.send_bytes(conn, shared.get(format));
            self.out.close(conn);
        }
        self.rooms.empty_all();
        self.accounts.forget_jobs();
    }

    /// Checks the invariants the fuzzer relies on; returns what is broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (key, room) in self.rooms.iter() {
            for (m, f) in room.members().iter() {
                let Some(c) = self.sessions.get(m) else {
                    return Err(format!("{key} has dead member {m}"));
                };
                if !c.in_room(key) {
                    return Err(format!("{key} has {m} who does not list it"));
                }
                if c.format() != f {
                    return Err(format!("{key} has a stale format for {m}"));
                }
            }
            if room.members().is_empty() && room.private() {
                return Err(format!("private room {key} is empty but kept"));
            }
        }
        for (conn, c) in self.sessions.iter() {
            for key in c.rooms() {
                if !self
                    .rooms
                    .get(key)
                    .is_some_and(|r| r.members().contains(conn))
                {
                    return Err(format!("{conn} lists {key} but is not a member"));
                }
            }
        }
        self.sessions.check()?;
        self.rooms.check()?;
        if let Some(c) = &self.cluster {
            c.check()?;
        }
        Ok(())
    }

    // ---- what every command uses ------------------------------------------

    fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch).as_millis();
        self.epoch_unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// Applies the line rate limit: true if the line may be processed. The
    /// first refusal in a streak is answered; a flood ends the connection.
    fn admit(&mut self, conn: ConnId, line: Option<&str>, now: Instant) -> bool {
        let paste = Paste {
            lines: self.cfg.paste_lines,
            bytes: self.cfg.paste_bytes,
        };
        let verdict =
            self.sessions
                .admit_line(conn, now, self.cfg.rate, self.cfg.burst, line, paste);
        match verdict {
            None => false,
            Some(Verdict::Pass) => true,
            Some(Verdict::Paced { first }) => {
                if first {
                    let text = format!(
                        "your lines are coming fast: they are sent in order at {} per second (up to {} held)",
                        self.cfg.rate, self.cfg.paste_lines
                    );
                    self.reply(conn, &ServerLine::info("paced", text));
                }
                false
            }
            Some(Verdict::Dropped { first }) => {
                self.stats.rate_limited += 1;
                if first {
                    let held = match self.cfg.paste_lines {
                        0 => String::new(),
                        n => format!(", {n} more held"),
                    };
                    let text = format!(
                        "you are sending too fast (limit {} lines per second, bursts of {}{held}): lines are being dropped; wait a moment",
                        self.cfg.rate, self.cfg.burst
                    );
                    self.error(conn, "rate-limited", text);
                }
                false
            }
            Some(Verdict::Flood) => {
                self.stats.rate_limited += 1;
                self.error(
                    conn,
                    "flood",
                    "flooding: too many lines over the rate limit; disconnecting",
                );
                self.close(conn, "flooding");
                false
            }
        }
    }

    fn nick_of(&self, conn: ConnId) -> String {
        self.sessions.nick_of(conn)
    }

    /// Encodes `line` for one connection and queues it.
    fn reply(&mut self, conn: ConnId, line: &ServerLine) {
        if let Some(c) = self.sessions.get(conn) {
            self.out.send(conn, c.format(), line);
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

    /// Queues `line` for every member of a room, encoded once per format.
    /// `skip_human` is left out if it reads the human format (the sender of a
    /// message already sees what it typed).
    fn broadcast(&mut self, room_key: &str, line: &ServerLine, skip_human: Option<ConnId>) {
        let Some(room) = self.rooms.get(room_key) else {
            return;
        };
        // Members who ignore the sender of a room line are left out.
        // (Nobody ignores anyone, usually: then this costs one check.)
        let sender = match line {
            _ if !self.sessions.anyone_ignores() => None,
            ServerLine::Msg { nick, .. }
            | ServerLine::Action { nick, .. }
            | ServerLine::Upload { nick, .. }
            | ServerLine::Encrypted { nick, .. } => Some(crate::proto::fold(nick)),
            _ => None,
        };
        let skip: Vec<ConnId> = sender
            .map(|s| {
                self.sessions
                    .ignorers_of(&s)
                    .iter()
                    .copied()
                    .filter(|&c| room.members().contains(c) && Some(c) != skip_human)
                    .collect()
            })
            .unwrap_or_default();
        let n = self.out.fanout(room.members(), line, skip_human, skip);
        self.stats.deliveries += n as u64;
    }

    /// Queues `line` once for every member of any of `rooms` (deduplicated),
    /// skipping rooms that are too big to announce comings and goings.
    fn announce<K: AsRef<str>>(&mut self, rooms: &[K], line: &ServerLine, except: Option<ConnId>) {
        let mut shared = Shared::new(line, self.out.clock());
        let quiet = self.cfg.quiet_room;
        let mut audible = rooms
            .iter()
            .filter_map(|key| self.rooms.get(key.as_ref()))
            .filter(|room| room.members().len() <= quiet);
        // Someone in two of the rooms hears it once. A member list has each
        // connection once, so one room (a join, a part) needs no check; for
        // several (a quit, a new nick) a sorted list does it. A hash set of
        // everyone told, grown from empty for every announcement, was a
        // quarter of the daemon's own work in a churn of joins (issue 21).
        let Some(first) = audible.next() else {
            return;
        };
        let told = |(c, _): &(ConnId, proto::Format)| Some(*c) != except;
        let Some(second) = audible.next() else {
            for (conn, format) in first.members().iter().filter(told) {
                self.out.send_bytes(conn, shared.get(format));
            }
            return;
        };
        let mut to: Vec<(ConnId, proto::Format)> =
            Vec::with_capacity(first.members().len() + second.members().len());
        for room in [first, second].into_iter().chain(audible) {
            to.extend(room.members().iter().filter(told));
        }
        to.sort_unstable_by_key(|&(c, _)| c);
        to.dedup_by_key(|&mut (c, _)| c);
        for (conn, format) in to {
            self.out.send_bytes(conn, shared.get(format));
        }
    }

    /// A record for this node's journal only.
    fn persist(&mut self, rec: Record) {
        self.out.persist(rec);
    }

    /// A record for the journal that every node must also have (accounts,
    /// profiles, keys, room owners, deletions by their owner): in cluster
    /// mode it is handed to the bridge too.
    fn persist_shared(&mut self, rec: Record) {
        if self.cluster.is_some() {
            self.out.cluster(ToCluster::State(rec.clone()));
        }
        self.out.persist(rec);
    }

    /// Ends a connection from the core's side: announce, forget, tell the
    /// reactor to flush and close.
    fn close(&mut self, conn: ConnId, reason: &str) {
        if self.remove_client(conn, reason) {
            self.out.close(conn);
        }
    }

    /// Forgets a client, telling its rooms. False if it was not known.
    fn remove_client(&mut self, conn: ConnId, reason: &str) -> bool {
        let Some(c) = self.sessions.remove(conn) else {
            return false;
        };
        let Some(nick) = c.nick() else {
            return true;
        };
        let others = self.sessions.sessions_of(&proto::fold(nick));
        if !others.is_empty() {
            // One session of several ended: the person is still here. Where
            // no other session of it is, the room sees it leave.
            for key in c.rooms() {
                let still = others
                    .iter()
                    .any(|&o| self.sessions.get(o).is_some_and(|s| s.in_room(key)));
                if !still {
                    let name = self.rooms.name_of(key).unwrap_or_default();
                    let line = ServerLine::Part {
                        room: name,
                        nick: nick.to_string(),
                        reason: format!("a session ended: {reason}"),
                    };
                    self.announce(std::slice::from_ref(key), &line, Some(conn));
                }
                self.rooms.remove_member(key, conn);
            }
            return true;
        }
        let line = ServerLine::Quit {
            nick: nick.to_string(),
            reason: reason.to_string(),
        };
        // Announced while the leaver still counts, so a room at the quiet
        // threshold behaves the same for joins and leaves.
        self.announce(c.rooms(), &line, Some(conn));
        for key in c.rooms() {
            self.rooms.remove_member(key, conn);
        }
        if self.cluster.is_some() {
            self.presence(Presence::Offline {
                nick: nick.to_string(),
            });
            self.ask_cluster(ToCluster::Release(nick.to_string()));
            for key in c.rooms() {
                self.cluster_left(key, None);
            }
        }
        true
    }
}

/// The instant of the first UTC midnight after `now` (which is `unix_ms`).
fn next_midnight(now: Instant, unix_ms: u64) -> Option<Instant> {
    const DAY: u64 = 86_400_000;
    let left = DAY - unix_ms % DAY;
    now.checked_add(Duration::from_millis(left))
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
