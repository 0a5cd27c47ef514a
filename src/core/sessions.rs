//! The connections the core knows: one [`Client`] per connection, the index
//! from folded nick to connection, the counts per address, the per-line and
//! per-address token buckets, and the deadlines (naming, idleness). This file
//! owns that data and is the only one that changes it; the rest of the core
//! reads a `Client` and asks `Sessions` for changes.
//!
//! Lookups are constant time: a connection is its slab key, an index into a
//! vector; a nick is one hash lookup.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::nicks::{Nick, NickIndex};
use super::settings::Settings;
use super::timers::{Epoch, Timers};
use super::{ConnId, Refusal};
use crate::proto::{Format, Setting, fold};

/// Address buckets are pruned of full ones past this many addresses.
const CONN_BUCKETS_MAX: usize = 10_000;
/// Wrong private-room codes from one address that cost nothing; after them
/// each doubles the wait (up to five minutes): 36^6 codes cannot be tried.
const FREE_WRONG_CODES: u32 = 10;

/// An address as per-address limits count it: IPv4 whole, IPv6 by its /64
/// (what one host, or one home network, is given).
pub(super) fn addr_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            for b in o.iter_mut().skip(8) {
                *b = 0;
            }
            IpAddr::V6(o.into())
        }
    }
}

/// One connection as the core sees it.
#[derive(Debug)]
pub(super) struct Client {
    /// Unique for the life of the core, so stale timer entries and answers
    /// for a reused `ConnId` are recognised.
    serial: u64,
    ip: IpAddr,
    nick: Option<Nick>,
    format: Format,
    /// Keys of joined rooms, oldest first; at most `max_joined`. Each is the
    /// room's own key, shared (no copy per member); the list is kept at its
    /// exact length (joins are rare; idle connections are many).
    rooms: Box<[Rc<str>]>,
    /// Index in `rooms` of the room its plain lines go to.
    current: Option<u16>,
    tokens: f64,
    /// Times as milliseconds after the core's start ([`Epoch`]): 8 bytes
    /// each, not 16 (issue 21).
    refilled: u64,
    /// Lines dropped since the rate limit last let one through.
    dropped: u32,
    connected: u64,
    last_active: u64,
    /// Logged in as its (registered) nick.
    logged_in: bool,
    /// A password hash for it is queued or running.
    hashing: bool,
    /// It registered a nick already (one per connection).
    registered: bool,
    settings: Settings,
    /// What few sessions have, in one box: an idle guest pays 8 bytes for
    /// all of it (issue 21: idle memory per connection).
    rare: Option<Box<Rare>>,
}

/// The parts of a session most never use.
#[derive(Debug, Default)]
struct Rare {
    /// The folded account this connection last logged in as, kept across
    /// renames: a ban or mute of the account still holds for it.
    account: Option<String>,
    /// Lines that arrived while its nick was being claimed in the cluster,
    /// replayed in order once the claim is answered (so `nc` users who type
    /// ahead, or pipe a script, are served as on one node).
    held: Option<VecDeque<String>>,
    /// Lines past the rate limit's burst, released one per token (a
    /// paste); bounded by [`Paste`].
    paced: Option<Paced>,
    /// `/passwd` asked for a password on the next line.
    awaiting: Option<Awaiting>,
    /// `/away` message, if away.
    away: Option<String>,
    /// Folded nicks whose lines and DMs it does not want (`/ignore`).
    ignores: Vec<String>,
}

impl Client {
    fn rare(&self) -> Option<&Rare> {
        self.rare.as_deref()
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }
}

/// What the next line of a session answers (and is never said in a room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Awaiting {
    OldPassword,
    NewPassword {
        old: String,
    },
    /// `/unregister`: the password, to confirm.
    Unregister,
}

/// Held lines and their bytes.
#[derive(Debug, Default)]
struct Paced {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Client {
    pub(super) fn settings(&self) -> Settings {
        self.settings
    }

    pub(super) fn serial(&self) -> u64 {
        self.serial
    }

    pub(super) fn nick(&self) -> Option<&str> {
        self.nick.as_deref()
    }

    pub(super) fn format(&self) -> Format {
        self.format
    }

    /// Keys of the rooms it is in, oldest first.
    pub(super) fn rooms(&self) -> &[Rc<str>] {
        &self.rooms
    }

    pub(super) fn in_room(&self, key: &str) -> bool {
        self.rooms.iter().any(|k| &**k == key)
    }

    /// Its public rooms (private ones never leave this node).
    pub(super) fn public_rooms(&self) -> Vec<String> {
        self.rooms
            .iter()
            .filter(|k| !k.starts_with('~'))
            .map(|k| k.to_string())
            .collect()
    }

    /// Logged in, and as the folded nick `key`.
    pub(super) fn logged_in_as(&self, key: &str) -> bool {
        self.logged_in && self.nick.as_deref().map(fold).as_deref() == Some(key)
    }

    /// The key of the room its plain lines go to.
    pub(super) fn current(&self) -> Option<&str> {
        self.current
            .and_then(|i| self.rooms.get(usize::from(i)))
            .map(|k| &**k)
    }

    pub(super) fn logged_in(&self) -> bool {
        self.logged_in
    }

    /// The folded nicks it ignores.
    pub(super) fn ignores(&self) -> &[String] {
        self.rare().map_or(&[], |r| r.ignores.as_slice())
    }

    /// What it said with `/away`, if it is away.
    pub(super) fn away(&self) -> Option<&str> {
        self.rare().and_then(|r| r.away.as_deref())
    }

    /// Its next line answers a question (`/passwd`).
    pub(super) fn awaits(&self) -> bool {
        self.rare().is_some_and(|r| r.awaiting.is_some())
    }

    /// The account it logged in as, even if it has another nick now.
    pub(super) fn account(&self) -> Option<&str> {
        self.rare().and_then(|r| r.account.as_deref())
    }

    pub(super) fn hashing(&self) -> bool {
        self.hashing
    }

    pub(super) fn registered(&self) -> bool {
        self.registered
    }

    /// Its address as per-address limits count it.
    pub(super) fn addr(&self) -> IpAddr {
        addr_key(self.ip)
    }

    /// The instant it should be closed at, if ever: unnamed, `name_timeout`
    /// after connecting; named, `idle` after its last line. An absurd timeout
    /// (past what `Instant` holds) means never.
    fn deadline(
        &self,
        e: Epoch,
        name_timeout: Duration,
        idle: Option<Duration>,
    ) -> Option<Instant> {
        if self.nick.is_none() {
            e.at(self.connected)?.checked_add(name_timeout)
        } else {
            idle.and_then(|d| e.at(self.last_active)?.checked_add(d))
        }
    }
}

/// How much of a paste is held to be paced rather than dropped.
#[derive(Debug, Clone, Copy)]
pub(super) struct Paste {
    pub(super) lines: usize,
    pub(super) bytes: usize,
}

/// What the line rate limit says about one more line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Pass,
    /// Held, to be released when the bucket allows (`Sessions::release`);
    /// `first`: the first held since the connection's lines were last on
    /// time.
    Paced {
        first: bool,
    },
    /// Dropped; `first` of a streak (the one that is answered).
    Dropped {
        first: bool,
    },
    /// A streak far past the burst: the connection ends.
    Flood,
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    Name,
    Idle,
}

/// Limits the sessions enforce, from `CoreConfig`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Admission {
    pub(super) max_conns: usize,
    pub(super) max_per_ip: usize,
    /// New connections per second from one address; 0 turns it off.
    pub(super) conn_rate: f64,
    pub(super) conn_burst: u32,
}

#[derive(Debug, Default)]
pub(super) struct Sessions {
    clients: Vec<Option<Client>>,
    live: usize,
    per_ip: HashMap<IpAddr, usize>,
    nicks: NickIndex,
    /// An account's further sessions (issue 18: several at once), by
    /// folded nick; its first is in `nicks`. One person, several
    /// connections.
    more: HashMap<String, Vec<ConnId>>,
    /// New-connection token buckets per address: (tokens, last refill).
    conn_buckets: HashMap<IpAddr, (f64, Instant)>,
    /// What the sessions' times count from.
    epoch: Epoch,
    /// (deadline, serial, conn); validated against the client when popped.
    timers: Timers,
    next_serial: u64,
    /// Registrations per address: (tokens, last refill), refilled per hour.
    registrations: HashMap<IpAddr, (f64, Instant)>,
    /// Wrong private-room codes per address.
    wrong_codes: HashMap<IpAddr, super::passwords::Throttle>,
    /// Who ignores a folded nick: the reverse of each client's `ignores`,
    /// so a room line costs one lookup to find those not to show it to.
    ignorers: HashMap<String, Vec<ConnId>>,
    /// When a connection with paced lines may send the next: (instant,
    /// serial, conn), validated when popped.
    pace_timers: Timers,
}

impl Sessions {
    /// Room for `max_conns` clients reserved at once: the pages are touched
    /// only as connections come, and the vector never doubles (each old
    /// copy would stay in the heap: issue 21, idle memory).
    pub(super) fn with_capacity(max_conns: usize, now: Instant) -> Sessions {
        Sessions {
            clients: Vec::with_capacity(max_conns.saturating_add(64).min(1 << 20)),
            epoch: Epoch::new(now),
            timers: Timers::new(Epoch::new(now)),
            pace_timers: Timers::new(Epoch::new(now)),
            ..Sessions::default()
        }
    }

    pub(super) fn get(&self, conn: ConnId) -> Option<&Client> {
        self.clients.get(conn).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, conn: ConnId) -> Option<&mut Client> {
        self.clients.get_mut(conn).and_then(Option::as_mut)
    }

    /// When the session `c` connected.
    pub(super) fn connected_at(&self, c: &Client) -> Instant {
        self.epoch.instant(c.connected)
    }

    /// Connections known.
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// Connections with a nick.
    pub(super) fn named(&self) -> usize {
        self.nicks.len()
    }

    /// The connection holding a folded nick (an account's first session).
    pub(super) fn by_nick(&self, key: &str) -> Option<ConnId> {
        self.nicks.get(key, |c| self.get(c).and_then(Client::nick))
    }

    /// Every session of a folded nick, first one first.
    pub(super) fn sessions_of(&self, key: &str) -> Vec<ConnId> {
        let mut all: Vec<ConnId> = self.by_nick(key).into_iter().collect();
        if let Some(m) = self.more.get(key) {
            all.extend(m);
        }
        all
    }

    /// Takes `conn` out of the index under `key`: a further session is
    /// dropped from the list, a first one gives its place to the next.
    fn unindex_nick(&mut self, key: &str, conn: ConnId) {
        if self.nicks.holds(key, conn) {
            match self.more.get_mut(key) {
                Some(m) if !m.is_empty() => {
                    let next = m.remove(0);
                    if m.is_empty() {
                        self.more.remove(key);
                    }
                    self.nicks.replace(key, conn, next);
                }
                _ => {
                    self.nicks.remove(key, conn);
                }
            }
        } else {
            unindex(&mut self.more, key, conn);
        }
    }

    /// Gives `conn` the nick `nick` as a further session of the account
    /// that holds it, freeing its own old nick.
    pub(super) fn add_session(&mut self, conn: ConnId, nick: &str, now: Instant) {
        let e = self.epoch;
        let Some(held) = Nick::new(nick) else {
            debug_assert!(false, "not a nick: {nick:?}");
            return;
        };
        let old = self.get(conn).and_then(|c| c.nick);
        if let Some(old) = old {
            self.unindex_nick(&fold(&old), conn);
        }
        let Some(c) = self.get_mut(conn) else {
            return;
        };
        c.nick = Some(held);
        c.last_active = e.ms(now);
        self.more.entry(fold(nick)).or_default().push(conn);
    }

    /// Every named connection, in no particular order.
    pub(super) fn named_conns(&self) -> Vec<ConnId> {
        self.nicks.conns().collect()
    }

    /// The connection's nick, or an empty string.
    pub(super) fn nick_of(&self, conn: ConnId) -> String {
        self.get(conn)
            .and_then(|c| c.nick.as_deref())
            .map(str::to_string)
            .unwrap_or_default()
    }

    /// Why a new connection from `ip` must be refused, if it must. Counts it
    /// against the address's connection bucket when it is let in.
    pub(super) fn refusal(&mut self, ip: IpAddr, now: Instant, a: Admission) -> Option<Refusal> {
        if self.live >= a.max_conns {
            return Some(Refusal::ServerFull { max: a.max_conns });
        }
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= a.max_per_ip {
            return Some(Refusal::TooManyFromAddress { max: a.max_per_ip });
        }
        if !self.take_conn_token(ip, now, a) {
            return Some(Refusal::TooFast {
                rate: a.conn_rate.ceil() as u32,
            });
        }
        None
    }

    /// Per-address token bucket for new connections: reconnecting must not
    /// be a way around the per-connection line rate.
    fn take_conn_token(&mut self, ip: IpAddr, now: Instant, a: Admission) -> bool {
        let rate = a.conn_rate;
        if rate <= 0.0 {
            return true;
        }
        let burst = f64::from(a.conn_burst.max(1));
        if self.conn_buckets.len() > CONN_BUCKETS_MAX {
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

    /// A new, unnamed connection with a full line bucket, to be named by
    /// `now + name_timeout`.
    pub(super) fn insert(
        &mut self,
        conn: ConnId,
        ip: IpAddr,
        now: Instant,
        burst: u32,
        name_timeout: Duration,
    ) {
        self.next_serial += 1;
        let client = Client {
            serial: self.next_serial,
            ip,
            nick: None,
            format: Format::Human,
            rooms: Box::default(),
            current: None,
            tokens: f64::from(burst),
            refilled: self.epoch.ms(now),
            dropped: 0,
            connected: self.epoch.ms(now),
            last_active: self.epoch.ms(now),
            logged_in: false,
            hashing: false,
            registered: false,
            settings: Settings::default(),
            rare: None,
        };
        if self.clients.len() <= conn {
            self.clients.resize_with(conn + 1, || None);
        }
        if let Some(at) = now.checked_add(name_timeout) {
            self.timers.push(at, client.serial, conn);
        }
        if let Some(slot) = self.clients.get_mut(conn) {
            *slot = Some(client);
        }
        self.live += 1;
        *self.per_ip.entry(ip).or_insert(0) += 1;
    }

    /// The connection is really from `ip` (a proxy said so): it counts
    /// there now, refused if that address is already at its limits.
    pub(super) fn move_address(
        &mut self,
        conn: ConnId,
        ip: IpAddr,
        a: Admission,
        now: Instant,
    ) -> Result<(), Refusal> {
        let Some(old) = self.get(conn).map(|c| c.ip) else {
            return Ok(());
        };
        if old == ip {
            return Ok(());
        }
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= a.max_per_ip {
            return Err(Refusal::TooManyFromAddress { max: a.max_per_ip });
        }
        if !self.take_conn_token(ip, now, a) {
            return Err(Refusal::TooFast {
                rate: a.conn_rate.ceil() as u32,
            });
        }
        if let Some(n) = self.per_ip.get_mut(&old) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&old);
            }
        }
        *self.per_ip.entry(ip).or_insert(0) += 1;
        if let Some(c) = self.get_mut(conn) {
            c.ip = ip;
        }
        Ok(())
    }

    /// Forgets a connection; its nick is free again.
    pub(super) fn remove(&mut self, conn: ConnId) -> Option<Client> {
        let c = self.clients.get_mut(conn).and_then(Option::take)?;
        self.live = self.live.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&c.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&c.ip);
            }
        }
        if let Some(nick) = &c.nick {
            self.unindex_nick(&fold(nick), conn);
        }
        for key in c.ignores() {
            unindex(&mut self.ignorers, key, conn);
        }
        Some(c)
    }

    /// Starts (`on`) or stops ignoring the folded nick `key`; false if that
    /// changes nothing.
    pub(super) fn set_ignore(&mut self, conn: ConnId, key: &str, on: bool) -> bool {
        let Some(c) = self.get_mut(conn) else {
            return false;
        };
        let had = c.ignores().iter().any(|k| k == key);
        match (had, on) {
            (false, true) => c.rare_mut().ignores.push(key.to_string()),
            (true, false) => c.rare_mut().ignores.retain(|k| k != key),
            _ => return false,
        }
        if on {
            self.ignorers.entry(key.to_string()).or_default().push(conn);
        } else {
            unindex(&mut self.ignorers, key, conn);
        }
        true
    }

    pub(super) fn anyone_ignores(&self) -> bool {
        !self.ignorers.is_empty()
    }

    /// The connections that ignore the folded nick `key`.
    pub(super) fn ignorers_of(&self, key: &str) -> &[ConnId] {
        self.ignorers.get(key).map_or(&[], Vec::as_slice)
    }

    /// Every connection with its format, and forgets them all (shutdown).
    pub(super) fn drain(&mut self) -> Vec<(ConnId, Format)> {
        let all = self
            .clients
            .iter()
            .enumerate()
            .filter_map(|(conn, c)| c.as_ref().map(|c| (conn, c.format)))
            .collect();
        self.clients.clear();
        self.nicks.clear();
        self.more.clear();
        self.per_ip.clear();
        self.live = 0;
        all
    }

    /// Gives `conn` the nick `nick`, freeing its old one.
    pub(super) fn set_nick(&mut self, conn: ConnId, nick: &str, now: Instant) {
        let e = self.epoch;
        let Some(held) = Nick::new(nick) else {
            debug_assert!(false, "not a nick: {nick:?}");
            return;
        };
        let old = self.get(conn).and_then(|c| c.nick);
        if let Some(old) = old {
            self.unindex_nick(&fold(&old), conn);
        }
        let Some(c) = self.clients.get_mut(conn).and_then(Option::as_mut) else {
            return;
        };
        c.nick = Some(held);
        c.last_active = e.ms(now);
        let clients = &self.clients;
        let names = |c: ConnId| clients.get(c)?.as_ref()?.nick();
        self.nicks.insert(nick, conn, names);
    }

    /// `/format`: `f` is human or machine; a human session with timestamps
    /// on reads the stamped form. Returns the format its lines are now
    /// encoded in.
    pub(super) fn set_format(&mut self, conn: ConnId, f: Format) -> Format {
        let Some(c) = self.get_mut(conn) else {
            return f;
        };
        c.format = match f {
            Format::Machine => Format::Machine,
            Format::Human | Format::Stamped if c.settings.get(Setting::Timestamps) => {
                Format::Stamped
            }
            Format::Human | Format::Stamped => Format::Human,
        };
        c.format
    }

    /// Replaces its settings; returns the format its lines are now encoded
    /// in (timestamps change a human session's).
    pub(super) fn set_settings(&mut self, conn: ConnId, s: Settings) -> Format {
        let Some(c) = self.get_mut(conn) else {
            return Format::Human;
        };
        c.settings = s;
        let f = c.format;
        self.set_format(conn, f)
    }

    pub(super) fn set_logged_in(&mut self, conn: ConnId, yes: bool) {
        if let Some(c) = self.get_mut(conn) {
            c.logged_in = yes;
            if yes && let Some(n) = &c.nick {
                let account = fold(n);
                c.rare_mut().account = Some(account);
            }
        }
    }

    pub(super) fn set_away(&mut self, conn: ConnId, msg: Option<String>) {
        if let Some(c) = self.get_mut(conn)
            && (msg.is_some() || c.rare.is_some())
        {
            c.rare_mut().away = msg;
        }
    }

    /// The next line answers `a` (or nothing, `None`).
    pub(super) fn set_awaiting(&mut self, conn: ConnId, a: Option<Awaiting>) {
        if let Some(c) = self.get_mut(conn)
            && (a.is_some() || c.rare.is_some())
        {
            c.rare_mut().awaiting = a;
        }
    }

    pub(super) fn take_awaiting(&mut self, conn: ConnId) -> Option<Awaiting> {
        self.get_mut(conn)?.rare.as_mut()?.awaiting.take()
    }

    pub(super) fn set_registered(&mut self, conn: ConnId) {
        if let Some(c) = self.get_mut(conn) {
            c.registered = true;
        }
    }

    /// Takes one of an address's registrations (`per_hour`, refilled
    /// evenly); false if it has none left now.
    pub(super) fn take_registration(&mut self, addr: IpAddr, per_hour: u32, now: Instant) -> bool {
        if per_hour == 0 {
            return true;
        }
        let cap = f64::from(per_hour);
        if self.registrations.len() > CONN_BUCKETS_MAX {
            self.registrations.retain(|_, (t, at)| {
                *t + now.saturating_duration_since(*at).as_secs_f64() * cap / 3600.0 < cap
            });
        }
        let (tokens, at) = self.registrations.entry(addr).or_insert((cap, now));
        *tokens =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() * cap / 3600.0).min(cap);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long an address must wait before trying another private-room
    /// code, if at all.
    pub(super) fn code_wait(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        self.wrong_codes.get(&addr).and_then(|t| t.wait(now))
    }

    /// An address tried a code no room has.
    pub(super) fn wrong_code(&mut self, addr: IpAddr, now: Instant) {
        if self.wrong_codes.len() > CONN_BUCKETS_MAX {
            self.wrong_codes.retain(|_, t| t.wait(now).is_some());
        }
        self.wrong_codes
            .entry(addr)
            .or_default()
            .fail(FREE_WRONG_CODES, now);
    }

    pub(super) fn set_hashing(&mut self, conn: ConnId, yes: bool) {
        if let Some(c) = self.get_mut(conn) {
            c.hashing = yes;
        }
    }

    /// It entered the room `key` (the room's own, shared), which becomes
    /// its current room.
    pub(super) fn joined(&mut self, conn: ConnId, key: Rc<str>) {
        if let Some(c) = self.get_mut(conn) {
            let i = match c.rooms.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    let mut rooms = std::mem::take(&mut c.rooms).into_vec();
                    rooms.push(key);
                    c.rooms = rooms.into_boxed_slice();
                    c.rooms.len() - 1
                }
            };
            c.current = u16::try_from(i).ok();
        }
    }

    /// Its plain lines go to `key` (a room it is in) from now on.
    pub(super) fn set_current(&mut self, conn: ConnId, key: &str) {
        if let Some(c) = self.get_mut(conn)
            && let Some(i) = c.rooms.iter().position(|k| &**k == key)
        {
            c.current = u16::try_from(i).ok();
        }
    }

    /// It left the room `key`; if that was its current room, the room it
    /// joined last becomes current.
    pub(super) fn left(&mut self, conn: ConnId, key: &str) {
        if let Some(c) = self.get_mut(conn) {
            let current = c.current().map(str::to_string);
            let mut rooms = std::mem::take(&mut c.rooms).into_vec();
            rooms.retain(|k| &**k != key);
            c.rooms = rooms.into_boxed_slice();
            c.current = match current {
                Some(cur) if cur != key => c.rooms.iter().position(|k| **k == *cur),
                _ => c.rooms.len().checked_sub(1),
            }
            .and_then(|i| u16::try_from(i).ok());
        }
    }

    /// Starts holding its lines (a nick claim is in flight).
    pub(super) fn hold(&mut self, conn: ConnId) {
        if let Some(c) = self.get_mut(conn) {
            c.rare_mut().held.get_or_insert_with(Default::default);
        }
    }

    /// Holds `line` if its lines are held: `Some(true)` if held, `Some(false)`
    /// if it holds `max` already, `None` if its lines are not held.
    pub(super) fn hold_line(&mut self, conn: ConnId, line: &str, max: usize) -> Option<bool> {
        let held = self.get_mut(conn)?.rare.as_mut()?.held.as_mut()?;
        if held.len() >= max {
            return Some(false);
        }
        held.push_back(line.to_string());
        Some(true)
    }

    /// Stops holding: the lines held, in order.
    pub(super) fn take_held(&mut self, conn: ConnId) -> VecDeque<String> {
        self.get_mut(conn)
            .and_then(|c| c.rare.as_mut().and_then(|r| r.held.take()))
            .unwrap_or_default()
    }

    /// Line rate limit: a token bucket of `burst` refilled at `rate` a second
    /// (0: off). Any line counts as activity. A `line` that finds the bucket
    /// empty is held, within `paste`, and released in order as tokens come
    /// (see [`Sessions::release`]); once lines are held every new one queues
    /// behind them, so order is kept.
    pub(super) fn admit_line(
        &mut self,
        conn: ConnId,
        now: Instant,
        rate: f64,
        burst: u32,
        line: Option<&str>,
        paste: Paste,
    ) -> Option<Verdict> {
        let e = self.epoch;
        let c = self.get_mut(conn)?;
        c.last_active = e.ms(now);
        if rate <= 0.0 {
            return Some(Verdict::Pass);
        }
        let cap = f64::from(burst.max(1));
        refill(c, e, now, rate, cap);
        let paced = c.rare().and_then(|r| r.paced.as_ref());
        if paced.is_none() && c.tokens >= 1.0 {
            c.tokens -= 1.0;
            c.dropped = 0;
            return Some(Verdict::Pass);
        }
        let (held, bytes) = paced.map_or((0, 0), |p| (p.lines.len(), p.bytes));
        if let Some(line) = line
            && held < paste.lines
            && bytes + line.len() <= paste.bytes
        {
            let first = held == 0;
            let p = c.rare_mut().paced.get_or_insert_with(Paced::default);
            p.lines.push_back(line.to_string());
            p.bytes += line.len();
            if first {
                let (at, serial) = (next_token(c, e, now, rate), c.serial);
                self.pace_timers.push(at, serial, conn);
            }
            return Some(Verdict::Paced { first });
        }
        c.dropped = c.dropped.saturating_add(1);
        Some(if c.dropped == 1 {
            Verdict::Dropped { first: true }
        } else if u64::from(c.dropped) > 10 * u64::from(burst.max(1)) {
            Verdict::Flood
        } else {
            Verdict::Dropped { first: false }
        })
    }

    /// Held lines whose turn has come by `now`, in order for each
    /// connection; connections with more held are woken again when their
    /// next token is due.
    pub(super) fn release(&mut self, now: Instant, rate: f64, burst: u32) -> Vec<(ConnId, String)> {
        let e = self.epoch;
        let mut out = Vec::new();
        let cap = f64::from(burst.max(1));
        while let Some(armed) = self.pace_timers.peek() {
            if armed.at > now {
                break;
            }
            self.pace_timers.pop();
            let conn = armed.conn;
            let Some(c) = self.get_mut(conn) else {
                continue;
            };
            if !armed.for_serial(c.serial) {
                continue;
            }
            let serial = c.serial;
            if rate > 0.0 {
                refill(c, e, now, rate, cap);
            } else {
                c.tokens = f64::from(u32::MAX);
            }
            let mut tokens = c.tokens;
            if let Some(p) = c.rare.as_mut().and_then(|r| r.paced.as_mut()) {
                while tokens >= 1.0
                    && let Some(line) = p.lines.pop_front()
                {
                    tokens -= 1.0;
                    p.bytes -= line.len();
                    out.push((conn, line));
                }
            }
            c.tokens = tokens;
            if let Some(r) = c.rare.as_mut()
                && r.paced.as_ref().is_some_and(|p| p.lines.is_empty())
            {
                r.paced = None;
            }
            if c.rare().is_some_and(|r| r.paced.is_some()) {
                let next = next_token(c, e, now, rate);
                self.pace_timers.push(next, serial, conn);
            } else {
                c.dropped = 0;
            }
        }
        out
    }

    /// Arms a deadline check for `conn` at `at` (it is closed then only if
    /// its deadline, recomputed, has passed), unless the check armed when
    /// it connected (its naming deadline, `name_timeout` after) comes
    /// first: that one recomputes the deadline and re-arms for it, so a
    /// session holds one entry, not two for its first minute (issue 21: a
    /// crowd that connects at once doubled the heap, and it stayed so).
    pub(super) fn arm(&mut self, conn: ConnId, at: Instant, name_timeout: Duration) {
        let Some(c) = self.get(conn) else { return };
        let naming = self
            .epoch
            .at(c.connected)
            .and_then(|t| t.checked_add(name_timeout));
        if naming.is_some_and(|n| n <= at) {
            return;
        }
        let serial = c.serial;
        self.timers.push(at, serial, conn);
    }

    /// Deadline checks armed (stale ones included).
    #[cfg(test)]
    pub(super) fn armed(&self) -> usize {
        self.timers.len()
    }

    /// The next armed check, dropping entries of connections that are gone
    /// so the answer is not needlessly early.
    pub(super) fn next_timer(&mut self) -> Option<Instant> {
        let deadline = next_valid(&mut self.timers, &self.clients);
        let pace = next_valid(&mut self.pace_timers, &self.clients);
        match (deadline, pace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Connections whose deadline has passed by `now`, in deadline order;
    /// the others that were checked are armed again for their deadline.
    pub(super) fn due(
        &mut self,
        now: Instant,
        name_timeout: Duration,
        idle: Option<Duration>,
    ) -> Vec<(ConnId, Due)> {
        let mut due = Vec::new();
        let mut again = Vec::new();
        while let Some(armed) = self.timers.peek() {
            if armed.at > now {
                break;
            }
            self.timers.pop();
            let conn = armed.conn;
            let Some(c) = self.get(conn) else { continue };
            if !armed.for_serial(c.serial) {
                continue;
            }
            let serial = c.serial;
            match c.deadline(self.epoch, name_timeout, idle) {
                Some(d) if d <= now => {
                    let kind = if c.nick.is_none() {
                        Due::Name
                    } else {
                        Due::Idle
                    };
                    due.push((conn, kind));
                }
                Some(d) => again.push((d, serial, conn)),
                None => {}
            }
        }
        for (d, serial, conn) in again {
            self.timers.push(d, serial, conn);
        }
        due
    }

    /// The nick index agrees with the clients, and the counts with both.
    pub(super) fn check(&self) -> Result<(), String> {
        let mut live = 0;
        for (conn, c) in self.clients.iter().enumerate() {
            let Some(c) = c else { continue };
            live += 1;
            if let Some(n) = &c.nick {
                let key = fold(n);
                let first = self.nicks.holds(&key, conn);
                let further = self.more.get(&key).is_some_and(|m| m.contains(&conn));
                if first == further {
                    return Err(format!(
                        "nick {n} of {conn} is indexed {} times",
                        u8::from(first) + u8::from(further)
                    ));
                }
                if further && self.by_nick(&key).is_none() {
                    return Err(format!("{n} has further sessions and no first one"));
                }
            }
        }
        if live != self.live || self.nicks.len() > live {
            return Err("connection counts disagree".to_string());
        }
        Ok(())
    }

    /// Every known connection with its client.
    pub(super) fn iter(&self) -> impl Iterator<Item = (ConnId, &Client)> + '_ {
        self.clients
            .iter()
            .enumerate()
            .filter_map(|(conn, c)| c.as_ref().map(|c| (conn, c)))
    }
}

/// The earliest entry of `heap` whose connection is still the one it was
/// armed for, dropping stale ones so the answer is not needlessly early.
fn next_valid(timers: &mut Timers, clients: &[Option<Client>]) -> Option<Instant> {
    while let Some(armed) = timers.peek() {
        match clients.get(armed.conn).and_then(Option::as_ref) {
            Some(c) if armed.for_serial(c.serial) => return Some(armed.at),
            _ => timers.pop(),
        }
    }
    None
}

/// Tops up a line bucket for the time since it was last refilled.
/// Whole milliseconds: what a refill leaves out now, the next one counts
/// (the refill time is kept at the same whole millisecond).
fn refill(c: &mut Client, e: Epoch, now: Instant, rate: f64, cap: f64) {
    let now = e.ms(now);
    let elapsed = now.saturating_sub(c.refilled) as f64 / 1000.0;
    c.refilled = now;
    c.tokens = (c.tokens + elapsed * rate).min(cap);
}

/// When the bucket next holds a whole token.
fn next_token(c: &Client, e: Epoch, now: Instant, rate: f64) -> Instant {
    let refilled = e.at(c.refilled).unwrap_or(now);
    if rate <= 0.0 {
        return refilled;
    }
    let wait = ((1.0 - c.tokens).max(0.0) / rate).min(3600.0);
    refilled + Duration::from_secs_f64(wait)
}

/// Takes `conn` out of the list for `key`, and the list if it empties.
fn unindex(map: &mut HashMap<String, Vec<ConnId>>, key: &str, conn: ConnId) {
    if let Some(v) = map.get_mut(key) {
        v.retain(|&c| c != conn);
        if v.is_empty() {
            map.remove(key);
        }
    }
}
