//! Accounts, logins, profiles, direct messages and room ownership.
//!
//! Password hashing is PBKDF2-HMAC-SHA256 with a random 16-byte salt per
//! account and [`HASH_ITERATIONS`] iterations (OWASP's figure). It takes a
//! noticeable fraction of a second, so the core never does it: it emits a
//! [`HashJob`] and waits for [`Core::handle_hash_done`]. [`run_hash_job`] is
//! what a worker runs.
//!
//! A failed login says the same thing whether or not the nick exists, and
//! costs the same (an unknown nick is checked against a dummy hash). Failures
//! slow further attempts down per nick and per address.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{ConnId, Core, Output, fold};
use crate::proto::{KeyCmd, RoomRef, ServerLine};
use crate::record::Record;

/// OWASP's current recommendation for PBKDF2-HMAC-SHA256.
pub const HASH_ITERATIONS: u32 = 600_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
const PASSWORD_MIN: usize = 8;
const PASSWORD_MAX: usize = 256;
const BIO_MAX: usize = 300;
/// Failed logins per nick (and per address) that cost nothing; after them
/// each failure doubles the wait, up to [`THROTTLE_MAX`].
const FREE_FAILS_NICK: u32 = 3;
const FREE_FAILS_IP: u32 = 10;
const THROTTLE_MAX: Duration = Duration::from_secs(300);
/// Throttle tables are pruned of expired entries past this size.
const THROTTLE_TABLE_MAX: usize = 10_000;

/// A registered nick.
pub(super) struct Account {
    pub nick: String,
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
    pub iterations: u32,
    pub created: u64,
    pub bio: String,
    /// The published end-to-end key bundle; empty if none.
    pub key: String,
}

/// Work for the hashing thread. `expect`: verify against it; otherwise
/// derive a new hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashJob {
    pub id: u64,
    pub password: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub expect: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOutcome {
    Derived(Vec<u8>),
    Verified(bool),
}

/// Runs a job: this is the slow part, for a worker thread.
pub fn run_hash_job(job: &HashJob) -> HashOutcome {
    let iterations = NonZeroU32::new(job.iterations).unwrap_or(NonZeroU32::MIN);
    let alg = ring::pbkdf2::PBKDF2_HMAC_SHA256;
    match &job.expect {
        Some(expected) => HashOutcome::Verified(
            ring::pbkdf2::verify(
                alg,
                iterations,
                &job.salt,
                job.password.as_bytes(),
                expected,
            )
            .is_ok(),
        ),
        None => {
            let mut out = vec![0u8; HASH_LEN];
            ring::pbkdf2::derive(
                alg,
                iterations,
                &job.salt,
                job.password.as_bytes(),
                &mut out,
            );
            HashOutcome::Derived(out)
        }
    }
}

pub(super) enum JobKind {
    Register {
        nick: String,
        salt: Vec<u8>,
        iterations: u32,
    },
    Login {
        nick: String,
        ip: IpAddr,
    },
}

pub(super) struct Job {
    conn: ConnId,
    serial: u64,
    kind: JobKind,
}

#[derive(Default)]
pub(super) struct Throttle {
    fails: u32,
    until: Option<Instant>,
}

impl Throttle {
    fn wait(&self, now: Instant) -> Option<Duration> {
        self.until
            .and_then(|u| (u > now).then(|| u.saturating_duration_since(now)))
    }
    fn fail(&mut self, free: u32, now: Instant) {
        self.fails = self.fails.saturating_add(1);
        if self.fails > free {
            let exp = (self.fails - free - 1).min(16);
            let wait = Duration::from_secs(1u64 << exp).min(THROTTLE_MAX);
            self.until = Some(now + wait);
        }
    }
}

/// The key of a conversation: both folded nicks, in order.
pub(super) fn pair(a: &str, b: &str) -> (String, String) {
    let (a, b) = (fold(a), fold(b));
    if a <= b { (a, b) } else { (b, a) }
}

impl Core {
    fn logged_in(&self, conn: ConnId) -> bool {
        self.client(conn).is_some_and(|c| c.logged_in)
    }

    fn require_login(&mut self, conn: ConnId, what: &str) -> bool {
        if self.logged_in(conn) {
            return true;
        }
        let text = format!(
            "{what} needs a registered nick: /register <password> first, or /login <nick> <password>"
        );
        self.error(conn, "not-logged-in", text);
        false
    }

    /// Queues a hash job, unless this connection already has one running or
    /// the server has too many.
    fn start_job(&mut self, conn: ConnId, kind: JobKind, job: HashJob) -> bool {
        let busy = self.client(conn).is_none_or(|c| c.hashing);
        if busy {
            self.error(
                conn,
                "busy",
                "a login or registration of yours is still being checked; wait for it",
            );
            return false;
        }
        if self.jobs.len() >= self.cfg.max_hash_jobs {
            self.error(
                conn,
                "busy",
                "the server is busy checking passwords; try again in a few seconds",
            );
            return false;
        }
        let serial = match self.client_mut(conn) {
            Some(c) => {
                c.hashing = true;
                c.serial
            }
            None => return false,
        };
        self.jobs.insert(job.id, Job { conn, serial, kind });
        self.out.push_back(Output::Hash(job));
        true
    }

    fn new_job_id(&mut self) -> u64 {
        self.next_job += 1;
        self.next_job
    }

    pub(super) fn register(&mut self, conn: ConnId, password: String) {
        let nick = self.nick_of(conn);
        if self.accounts.contains_key(&fold(&nick)) {
            let text = if self.logged_in(conn) {
                format!("{nick} is already registered, and you are logged in")
            } else {
                format!("{nick} is already registered")
            };
            self.error(conn, "registered", text);
            return;
        }
        let n = password.chars().count();
        if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
            let text = format!("a password is {PASSWORD_MIN} to {PASSWORD_MAX} characters");
            self.error(conn, "usage", text);
            return;
        }
        let mut salt = vec![0u8; SALT_LEN];
        self.entropy.fill(&mut salt);
        let iterations = self.cfg.hash_iterations;
        let id = self.new_job_id();
        let job = HashJob {
            id,
            password,
            salt: salt.clone(),
            iterations,
            expect: None,
        };
        let kind = JobKind::Register {
            nick,
            salt,
            iterations,
        };
        self.start_job(conn, kind, job);
    }

    pub(super) fn login(&mut self, conn: ConnId, nick: &str, password: String, now: Instant) {
        let Some(ip) = self.client(conn).map(|c| c.ip) else {
            return;
        };
        let key = fold(nick);
        let wait = [
            self.nick_throttle.get(&key).and_then(|t| t.wait(now)),
            self.ip_throttle.get(&ip).and_then(|t| t.wait(now)),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(w) = wait {
            let text = format!(
                "too many failed logins: try again in {} seconds",
                w.as_secs().max(1)
            );
            self.error(conn, "throttled", text);
            return;
        }
        // An unknown nick is checked against a dummy hash so that the answer
        // and its timing are the same as for a wrong password.
        let (salt, expect, iterations) = match self.accounts.get(&key) {
            Some(a) => (a.salt.clone(), a.hash.clone(), a.iterations),
            None => (
                vec![0u8; SALT_LEN],
                vec![0u8; HASH_LEN],
                self.cfg.hash_iterations,
            ),
        };
        let id = self.new_job_id();
        let job = HashJob {
            id,
            password,
            salt,
            iterations,
            expect: Some(expect),
        };
        let kind = JobKind::Login {
            nick: nick.to_string(),
            ip,
        };
        self.start_job(conn, kind, job);
    }

    /// A hash job finished. Unknown ids (a job of a connection that has
    /// gone) are ignored.
    pub fn handle_hash_done(&mut self, id: u64, outcome: HashOutcome, now: Instant) {
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        let alive = self
            .client(job.conn)
            .is_some_and(|c| c.serial == job.serial);
        if alive && let Some(c) = self.client_mut(job.conn) {
            c.hashing = false;
        }
        match (job.kind, outcome) {
            (
                JobKind::Register {
                    nick,
                    salt,
                    iterations,
                },
                HashOutcome::Derived(hash),
            ) => {
                if alive {
                    self.finish_register(job.conn, nick, salt, hash, iterations, now);
                }
            }
            (JobKind::Login { nick, ip }, HashOutcome::Verified(ok)) => {
                let known = self.accounts.contains_key(&fold(&nick));
                if ok && known {
                    self.nick_throttle.remove(&fold(&nick));
                    self.ip_throttle.remove(&ip);
                    if alive {
                        self.finish_login(job.conn, &nick, now);
                    }
                } else {
                    self.stats.logins_failed += 1;
                    self.login_failed(&nick, ip, now);
                    if alive {
                        self.error(
                            job.conn,
                            "login-failed",
                            "login failed: wrong nick or password",
                        );
                    }
                }
            }
            // A worker answering the wrong kind of job is a bug elsewhere;
            // the job is dropped rather than guessed at.
            _ => {
                if alive {
                    self.error(
                        job.conn,
                        "internal",
                        "internal error checking the password; try again",
                    );
                }
            }
        }
    }

    fn login_failed(&mut self, nick: &str, ip: IpAddr, now: Instant) {
        if self.nick_throttle.len() > THROTTLE_TABLE_MAX {
            self.nick_throttle.retain(|_, t| t.wait(now).is_some());
        }
        if self.ip_throttle.len() > THROTTLE_TABLE_MAX {
            self.ip_throttle.retain(|_, t| t.wait(now).is_some());
        }
        self.nick_throttle
            .entry(fold(nick))
            .or_default()
            .fail(FREE_FAILS_NICK, now);
        self.ip_throttle
            .entry(ip)
            .or_default()
            .fail(FREE_FAILS_IP, now);
    }

    fn finish_register(
        &mut self,
        conn: ConnId,
        nick: String,
        salt: Vec<u8>,
        hash: Vec<u8>,
        iterations: u32,
        now: Instant,
    ) {
        let key = fold(&nick);
        // The nick may have changed or been registered while hashing.
        if fold(&self.nick_of(conn)) != key || self.accounts.contains_key(&key) {
            self.error(
                conn,
                "registered",
                format!("{nick} could not be registered; try again"),
            );
            return;
        }
        let created = self.unix_ms(now);
        self.persist(Record::Account {
            nick: nick.clone(),
            salt: salt.clone(),
            hash: hash.clone(),
            iterations,
            created,
        });
        self.accounts.insert(
            key,
            Account {
                nick: nick.clone(),
                salt,
                hash,
                iterations,
                created,
                bio: String::new(),
                key: String::new(),
            },
        );
        if let Some(c) = self.client_mut(conn) {
            c.logged_in = true;
        }
        let text = format!("registered {nick}: from now on, log in with /login {nick} <password>");
        self.reply(conn, &ServerLine::ok("registered", text));
    }

    fn finish_login(&mut self, conn: ConnId, nick: &str, now: Instant) {
        let key = fold(nick);
        let Some(display) = self.accounts.get(&key).map(|a| a.nick.clone()) else {
            return;
        };
        // Another session of the same account gives way to the new one.
        if let Some(&other) = self.nicks.get(&key)
            && other != conn
        {
            self.error(
                other,
                "replaced",
                "you logged in from somewhere else; closing this session",
            );
            self.close(other, "logged in elsewhere");
        }
        let already =
            self.client(conn).is_some_and(|c| c.logged_in) && fold(&self.nick_of(conn)) == key;
        if !already {
            // In a cluster the nick is claimed first; the login ends when
            // the claim is won (`Core::claimed`).
            if fold(&self.nick_of(conn)) != key && self.start_claim(conn, &display, true) {
                return;
            }
            self.set_nick(conn, &display, true, now);
        }
        self.login_done(conn, &display);
    }

    /// The end of a login, once the connection carries the nick.
    pub(super) fn login_done(&mut self, conn: ConnId, display: &str) {
        let key = fold(display);
        if fold(&self.nick_of(conn)) != key {
            return;
        }
        if let Some(c) = self.client_mut(conn) {
            c.logged_in = true;
        }
        self.reply(
            conn,
            &ServerLine::ok("login", format!("logged in as {display}")),
        );
        self.deliver_pending(conn, &key);
        self.ask_cluster(super::ToCluster::TakeInbox(display.to_string()));
    }

    /// Hands over direct messages that arrived while the user was away.
    fn deliver_pending(&mut self, conn: ConnId, key: &str) {
        let Some(lines) = self.pending.remove(key) else {
            return;
        };
        self.deliver_waiting(conn, lines.into_iter().collect());
    }

    /// Shows direct messages that waited, and records that they were.
    pub(super) fn deliver_waiting(&mut self, conn: ConnId, lines: Vec<ServerLine>) {
        if lines.is_empty() {
            return;
        }
        let n = lines.len();
        self.reply(
            conn,
            &ServerLine::History {
                room: format!("@{}", self.nick_of(conn)),
                count: n,
            },
        );
        for l in &lines {
            self.reply(conn, l);
        }
        let text = format!(
            "{n} direct {} arrived while you were away",
            if n == 1 { "message" } else { "messages" }
        );
        self.reply(conn, &ServerLine::info("offline", text));
        self.persist(Record::DmDelivered {
            to: self.nick_of(conn),
        });
    }

    pub(super) fn dm(&mut self, conn: ConnId, to: &str, text: String, now: Instant) {
        let from = self.nick_of(conn);
        let ts = self.unix_ms(now);
        let to_key = fold(to);
        let target = self.nicks.get(&to_key).copied();
        let remote = self
            .remote(&to_key)
            .map(|r| (r.nick.clone(), r.node.clone()));
        let to_display = match (target, self.accounts.get(&to_key)) {
            (Some(t), _) => self.nick_of(t),
            (None, _) if remote.is_some() => remote.clone().unwrap_or_default().0,
            (None, Some(a)) => a.nick.clone(),
            (None, None) => {
                let text = format!("{to} is not online and not registered; /online lists who is");
                self.error(conn, "no-such-user", text);
                return;
            }
        };
        let line = ServerLine::Dm {
            from: from.clone(),
            to: to_display.clone(),
            ts,
            text: text.clone(),
        };
        // History is kept for conversations between registered users only:
        // an unregistered nick may belong to someone else tomorrow.
        let keep = self.logged_in(conn) && self.accounts.contains_key(&to_key);
        if keep {
            self.persist(Record::Dm {
                from: from.clone(),
                to: to_display.clone(),
                ts,
                text: text.clone(),
                pending: false,
            });
            let cap = self.cfg.dm_keep;
            let conv = self.dms.entry(pair(&from, &to_display)).or_default();
            push_capped(conv, Rc::new(line.clone()), cap);
        }
        let registered = self.accounts.contains_key(&to_key);
        match target {
            Some(t) => {
                self.reply(t, &line);
                if t != conn {
                    self.reply(conn, &line);
                }
            }
            None if remote.is_some() => {
                self.ask_cluster(super::ToCluster::Dm {
                    node: remote.map(|r| r.1).unwrap_or_default(),
                    to: to_display.clone(),
                    line: line.encode_machine(),
                    store: registered,
                });
                self.reply(conn, &line);
            }
            None if self.cluster.is_some() => {
                // Offline everywhere: it waits in the cluster's inbox, so
                // whichever server they log in to hands it over.
                self.ask_cluster(super::ToCluster::Store {
                    to: to_display.clone(),
                    line: line.encode_machine(),
                });
                self.reply(conn, &line);
                let note =
                    format!("{to_display} is offline and will get this when they next log in");
                self.reply(conn, &ServerLine::info("offline", note));
            }
            None => {
                self.persist(Record::Dm {
                    from,
                    to: to_display.clone(),
                    ts,
                    text,
                    pending: true,
                });
                let cap = self.cfg.dm_keep;
                let queue = self.pending.entry(to_key).or_default();
                push_capped(queue, line.clone(), cap);
                self.reply(conn, &line);
                let note =
                    format!("{to_display} is offline and will get this when they next log in");
                self.reply(conn, &ServerLine::info("offline", note));
            }
        }
    }

    pub(super) fn whois(&mut self, conn: ConnId, nick: &str) {
        let key = fold(nick);
        let online = self.nicks.get(&key).copied();
        if online.is_none()
            && let Some(r) = self.remote(&key)
        {
            let nick = r.nick.clone();
            let account = self.accounts.get(&key);
            let line = ServerLine::Whois {
                nick,
                online: true,
                room: String::new(),
                registered: account.map_or(0, |a| a.created),
                bio: account.map(|a| a.bio.clone()).unwrap_or_default(),
            };
            self.reply(conn, &line);
            return;
        }
        let account = self.accounts.get(&key);
        if online.is_none() && account.is_none() {
            self.error(conn, "no-such-user", format!("nobody is called {nick}"));
            return;
        }
        let display = match (online, account) {
            (Some(c), _) => self.nick_of(c),
            (None, Some(a)) => a.nick.clone(),
            (None, None) => nick.to_string(),
        };
        let room = online
            .and_then(|c| self.client(c))
            .and_then(|c| c.current.as_ref())
            .and_then(|k| self.rooms.get(k))
            .filter(|r| !r.private)
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let line = ServerLine::Whois {
            nick: display,
            online: online.is_some(),
            room,
            registered: account.map_or(0, |a| a.created),
            bio: account.map(|a| a.bio.clone()).unwrap_or_default(),
        };
        self.reply(conn, &line);
    }

    /// `/key`: publish, withdraw or look up an end-to-end key bundle. The
    /// server checks only a bundle's shape; chatc checks its signature and
    /// pins what it first saw, so a server that swaps keys is noticed.
    pub(super) fn key(&mut self, conn: ConnId, cmd: KeyCmd) {
        match cmd {
            KeyCmd::Get(nick) => {
                // Only registered nicks have keys; for anyone else the
                // answer is the same "none", so a client never waits.
                let line = match self.accounts.get(&fold(&nick)) {
                    Some(a) => ServerLine::Key {
                        nick: a.nick.clone(),
                        bundle: a.key.clone(),
                    },
                    None => ServerLine::Key {
                        nick,
                        bundle: String::new(),
                    },
                };
                self.reply(conn, &line);
            }
            KeyCmd::Set(bundle) => {
                if !self.require_login(conn, "a key") {
                    return;
                }
                if !crate::proto::shapes::bundle_ok(&bundle) {
                    self.error(
                        conn,
                        "bad-key",
                        "not a key bundle (K1. and 128 bytes in base64url); chatc makes it",
                    );
                    return;
                }
                self.store_key(conn, bundle);
            }
            KeyCmd::Clear => {
                if self.require_login(conn, "a key") {
                    self.store_key(conn, String::new());
                }
            }
        }
    }

    fn store_key(&mut self, conn: ConnId, bundle: String) {
        let nick = self.nick_of(conn);
        let Some(a) = self.accounts.get_mut(&fold(&nick)) else {
            return;
        };
        if a.key == bundle {
            self.reply(conn, &ServerLine::ok("key", "key unchanged"));
            return;
        }
        a.key = bundle.clone();
        let text = if bundle.is_empty() {
            "end-to-end key withdrawn"
        } else {
            "end-to-end key published; others can now send you encrypted direct messages"
        };
        self.persist(Record::Key { nick, bundle });
        self.reply(conn, &ServerLine::ok("key", text));
    }

    pub(super) fn set_bio(&mut self, conn: ConnId, text: String) {
        if !self.require_login(conn, "a bio") {
            return;
        }
        if text.chars().count() > BIO_MAX {
            self.error(
                conn,
                "too-long",
                format!("a bio is at most {BIO_MAX} characters"),
            );
            return;
        }
        let nick = self.nick_of(conn);
        if let Some(a) = self.accounts.get_mut(&fold(&nick)) {
            a.bio = text.clone();
        }
        self.persist(Record::Bio { nick, text });
        self.reply(conn, &ServerLine::ok("bio", "bio saved; /whois shows it"));
    }

    pub(super) fn show_dms(&mut self, conn: ConnId, other: &str) {
        if !self.require_login(conn, "direct-message history") {
            return;
        }
        let me = self.nick_of(conn);
        let lines: Vec<Rc<ServerLine>> = self
            .dms
            .get(&pair(&me, other))
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default();
        if lines.is_empty() {
            self.reply(
                conn,
                &ServerLine::info("dms", format!("no direct messages with {other} kept")),
            );
            return;
        }
        self.reply(
            conn,
            &ServerLine::History {
                room: format!("@{other}"),
                count: lines.len(),
            },
        );
        for l in &lines {
            self.reply(conn, l);
        }
    }

    pub(super) fn create_room(
        &mut self,
        conn: ConnId,
        r: &RoomRef,
        topic: Option<String>,
        now: Instant,
    ) {
        if !self.require_login(conn, "owning a room") {
            return;
        }
        let key = r.key();
        let me = self.nick_of(conn);
        if let Some(room) = self.rooms.get(&key) {
            if room.permanent {
                let text = format!("{} is a default room and has no owner", room.name);
                self.error(conn, "not-owner", text);
                return;
            }
            if let Some(owner) = &room.owner {
                let text = format!("{} already belongs to {owner}", room.name);
                self.error(conn, "room-owned", text);
                return;
            }
        } else if !self.make_room_space() {
            self.error(conn, "too-many-rooms", "the server has too many rooms");
            return;
        } else {
            let room = self.new_room(r);
            self.rooms.insert(key.clone(), room);
        }
        let ts = self.unix_ms(now);
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        room.owner = Some(me.clone());
        let name = room.name.clone();
        self.persist(Record::RoomOwned {
            room: name.clone(),
            owner: me,
            ts,
        });
        self.reply(
            conn,
            &ServerLine::ok(
                "created",
                format!("{name} is yours: it stays when empty, and only you can /delete it"),
            ),
        );
        let member = self.client(conn).is_some_and(|c| c.rooms.contains(&key));
        if !member {
            self.join(conn, r);
        } else if let Some(c) = self.client_mut(conn) {
            c.current = Some(key.clone());
        }
        if topic.is_some() {
            self.topic(conn, topic);
        }
    }

    pub(super) fn delete_room(&mut self, conn: ConnId, r: &RoomRef) {
        let key = r.key();
        let me = fold(&self.nick_of(conn));
        let Some(room) = self.rooms.get(&key) else {
            self.error(conn, "no-such-room", format!("no room {}", r.display()));
            return;
        };
        if room.permanent {
            let text = format!("{} is a default room and cannot be deleted", room.name);
            self.error(conn, "not-owner", text);
            return;
        }
        let owner = room.owner.as_deref().map(fold);
        if owner.as_deref() != Some(me.as_str()) || !self.logged_in(conn) {
            let text = match &room.owner {
                Some(o) => format!("only {o}, who owns {}, can delete it", room.name),
                None => format!(
                    "{} has no owner; only an owned room can be deleted",
                    room.name
                ),
            };
            self.error(conn, "not-owner", text);
            return;
        }
        let name = room.name.clone();
        self.remove_room(&key, self.nick_of(conn));
        self.ask_cluster(super::ToCluster::State(Record::RoomGone {
            room: name.clone(),
        }));
        self.reply(
            conn,
            &ServerLine::ok("deleted", format!("{name} is deleted, with its history")),
        );
    }
}

impl Core {
    /// Deletes a public room: its members are told (`by` deleted it) and
    /// put out of it, and the deletion is journaled.
    pub(super) fn remove_room(&mut self, key: &str, by: String) {
        let Some(room) = self.rooms.get(key) else {
            return;
        };
        let name = room.name.clone();
        let line = ServerLine::Part {
            room: name.clone(),
            nick: by,
            reason: "room deleted".to_string(),
        };
        let members: Vec<ConnId> = room.members.conns().collect();
        self.broadcast(key, &line, None);
        for m in members {
            if let Some(c) = self.client_mut(m) {
                c.rooms.retain(|k| k != key);
                if c.current.as_deref() == Some(key) {
                    c.current = c.rooms.last().cloned();
                }
            }
        }
        self.rooms.remove(key);
        self.persist(Record::RoomGone { room: name });
        self.stop_following(key);
    }
}

pub(super) fn push_capped<T>(q: &mut VecDeque<T>, item: T, cap: usize) {
    if cap == 0 {
        return;
    }
    while q.len() >= cap {
        q.pop_front();
    }
    q.push_back(item);
}
