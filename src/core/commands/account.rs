//! Account commands: `/register`, `/login` (and the password jobs behind
//! them), `/whois`, `/bio`, `/key`.
//!
//! A failed login says the same thing whether or not the nick exists, and
//! costs the same (an unknown nick is checked against a dummy hash). Failures
//! slow further attempts down (see `accounts.rs` for how, without locking
//! the owner out). Registering costs a hash too, so it is limited per
//! connection (one) and per address (`--register-per-hour`), and no address
//! may have more than [`JOBS_PER_ADDRESS`] hashes queued at once.

use std::net::IpAddr;
use std::time::Instant;

use super::super::accounts::{Account, Job, JobKind, Wait};
use super::super::passwords::{HashJob, HashOutcome, PASSWORD_MAX, PASSWORD_MIN, SALT_LEN};
use super::super::sessions::Awaiting;
use super::super::{ConnId, Core, ToCluster};
use super::BIO_MAX;
use crate::proto::{KeyCmd, ServerLine, fold};
use crate::record::Record;

/// Password jobs one address may have queued or running at once.
const JOBS_PER_ADDRESS: usize = 2;

impl Core {
    pub(in crate::core) fn logged_in(&self, conn: ConnId) -> bool {
        self.sessions.get(conn).is_some_and(|c| c.logged_in())
    }

    pub(in crate::core) fn require_login(&mut self, conn: ConnId, what: &str) -> bool {
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
        let Some(c) = self.sessions.get(conn).filter(|c| !c.hashing()) else {
            self.error(
                conn,
                "busy",
                "a login or registration of yours is still being checked; wait for it",
            );
            return false;
        };
        let (serial, ip) = (c.serial(), c.addr());
        if self.accounts.jobs_in_flight() >= self.cfg.max_hash_jobs {
            self.error(
                conn,
                "busy",
                "the server is busy checking passwords; try again in a few seconds",
            );
            return false;
        }
        if self.accounts.jobs_of(ip) >= JOBS_PER_ADDRESS {
            self.error(
                conn,
                "busy",
                "passwords from your address are still being checked; try again in a moment",
            );
            return false;
        }
        if let JobKind::Login { nick, ip, known } = &kind {
            self.accounts.login_started(&fold(nick), *ip, *known);
        }
        self.sessions.set_hashing(conn, true);
        self.accounts.add_job(
            job.id,
            ip,
            Job {
                conn,
                serial,
                ip,
                kind,
            },
        );
        self.out.hash(job);
        true
    }

    pub(in crate::core) fn register(&mut self, conn: ConnId, password: String, now: Instant) {
        let nick = self.nick_of(conn);
        if self.accounts.contains(&fold(&nick)) {
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
        let Some(c) = self.sessions.get(conn) else {
            return;
        };
        if c.registered() {
            self.error(
                conn,
                "limit",
                "one registration per connection: to register another nick, connect again",
            );
            return;
        }
        let addr = c.addr();
        let per_hour = self.cfg.registrations_per_hour;
        if !self.sessions.take_registration(addr, per_hour, now) {
            let text = format!(
                "too many registrations from your address ({per_hour} an hour); try again later"
            );
            self.error(conn, "limit", text);
            return;
        }
        let mut salt = vec![0u8; SALT_LEN];
        self.entropy.fill(&mut salt);
        let iterations = self.cfg.hash_iterations;
        let id = self.accounts.next_job_id();
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

    pub(in crate::core) fn login(
        &mut self,
        conn: ConnId,
        nick: &str,
        password: String,
        now: Instant,
    ) {
        let Some(ip) = self.sessions.get(conn).map(|c| c.addr()) else {
            return;
        };
        let key = fold(nick);
        match self.accounts.login_wait(&key, ip, now) {
            Some(Wait::Throttled(w)) => {
                let text = format!(
                    "too many failed logins: try again in {} seconds",
                    w.as_secs().max(1)
                );
                self.error(conn, "throttled", text);
                return;
            }
            Some(Wait::Checking) => {
                let text = format!("a login as {nick} is being checked; try again in a moment");
                self.error(conn, "busy", text);
                return;
            }
            None => {}
        }
        let known = self.accounts.knows(&key, ip);
        let job = self.verify_job(&key, password);
        let kind = JobKind::Login {
            nick: nick.to_string(),
            ip,
            known,
        };
        self.start_job(conn, kind, job);
    }

    /// A hash job finished. Unknown ids (a job of a connection that has
    /// gone) are ignored.
    pub fn handle_hash_done(&mut self, id: u64, outcome: HashOutcome, now: Instant) {
        self.out.set_clock(self.unix_ms(now));
        let Some(job) = self.accounts.take_job(id) else {
            return;
        };
        let alive = self
            .sessions
            .get(job.conn)
            .is_some_and(|c| c.serial() == job.serial);
        if alive {
            self.sessions.set_hashing(job.conn, false);
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
                    let account = Account::new(nick, salt, hash, iterations, self.unix_ms(now));
                    self.finish_register(job.conn, account);
                }
            }
            (JobKind::Login { nick, ip, known }, HashOutcome::Verified(ok)) => {
                self.login_checked(job.conn, alive, &nick, (ip, known), ok, now)
            }
            (JobKind::CheckOld { nick, new }, HashOutcome::Verified(ok)) => {
                let key = fold(&nick);
                if ok {
                    self.accounts.login_succeeded(&key, job.ip, true);
                    if alive {
                        self.hash_new_password(job.conn, nick, new);
                    }
                } else {
                    self.stats.logins_failed += 1;
                    self.accounts.login_failed(&key, job.ip, true, now);
                    if alive {
                        self.error(
                            job.conn,
                            "wrong-password",
                            "that is not your current password: nothing changed",
                        );
                    }
                }
            }
            (JobKind::Unregister { nick }, HashOutcome::Verified(ok)) => {
                let key = fold(&nick);
                if !ok {
                    self.stats.logins_failed += 1;
                    self.accounts.login_failed(&key, job.ip, true, now);
                    if alive {
                        self.error(
                            job.conn,
                            "wrong-password",
                            "that is not your password: nothing changed",
                        );
                    }
                } else if self.account_gone(&key) {
                    self.persist_shared(Record::AccountGone { nick: nick.clone() });
                    if alive {
                        let text = format!(
                            "{nick} is no longer registered: anyone may take it once you leave; what you said stays"
                        );
                        self.reply(job.conn, &ServerLine::ok("unregistered", text));
                    }
                }
            }
            (
                JobKind::NewPassword {
                    nick,
                    salt,
                    iterations,
                },
                HashOutcome::Derived(hash),
            ) => {
                if alive {
                    self.password_changed(job.conn, &nick, salt, hash, iterations);
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

    fn login_checked(
        &mut self,
        conn: ConnId,
        alive: bool,
        nick: &str,
        (ip, known): (IpAddr, bool),
        ok: bool,
        now: Instant,
    ) {
        let key = fold(nick);
        if ok && self.accounts.contains(&key) {
            self.accounts.login_succeeded(&key, ip, known);
            if alive {
                self.finish_login(conn, nick, now);
            }
            return;
        }
        self.stats.logins_failed += 1;
        self.accounts.login_failed(&key, ip, known, now);
        if alive {
            self.error(conn, "login-failed", "login failed: wrong nick or password");
        }
    }

    fn finish_register(&mut self, conn: ConnId, account: Account) {
        let nick = account.nick().to_string();
        let key = fold(&nick);
        // The nick may have changed or been registered while hashing.
        if fold(&self.nick_of(conn)) != key || self.accounts.contains(&key) {
            self.error(
                conn,
                "registered",
                format!("{nick} could not be registered; try again"),
            );
            return;
        }
        self.persist_shared(account.record());
        self.accounts.insert(key, account);
        self.sessions.set_logged_in(conn, true);
        self.sessions.set_registered(conn);
        let text = format!("registered {nick}: from now on, log in with /login {nick} <password>");
        self.reply(conn, &ServerLine::ok("registered", text));
        // What this session set before it registered is the account's now.
        self.keep_settings(conn);
    }

    fn finish_login(&mut self, conn: ConnId, nick: &str, now: Instant) {
        let key = fold(nick);
        let Some(display) = self.accounts.get(&key).map(|a| a.nick().to_string()) else {
            return;
        };
        // Another session of the same account: this one joins it, up to
        // --max-sessions (on one node; in a cluster the newer replaces the
        // older, as a nick is claimed cluster-wide).
        if let Some(other) = self.sessions.by_nick(&key)
            && other != conn
            && self.cluster.is_none()
            && self.cfg.max_sessions > 1
            && self
                .sessions
                .get(other)
                .is_some_and(|c| c.logged_in_as(&key))
        {
            let n = self.sessions.sessions_of(&key).len();
            if n >= self.cfg.max_sessions {
                let text = format!(
                    "{display} has {n} sessions already, the limit: /logout one of them (/sessions lists them)"
                );
                self.error(conn, "too-many-sessions", text);
                return;
            }
            self.another_session(conn, &display, now);
            self.login_done(conn, &display, now);
            return;
        }
        // Another session of the same account gives way to the new one.
        if let Some(other) = self.sessions.by_nick(&key)
            && other != conn
        {
            self.error(
                other,
                "replaced",
                "you logged in from somewhere else; closing this session",
            );
            self.close(other, "logged in elsewhere");
        }
        let already = self
            .sessions
            .get(conn)
            .is_some_and(|c| c.logged_in_as(&key));
        if !already {
            // In a cluster the nick is claimed first; the login ends when
            // the claim is won (`Core::claimed`).
            if fold(&self.nick_of(conn)) != key && self.start_claim(conn, &display, true) {
                return;
            }
            self.set_nick(conn, &display, true, now);
        }
        self.login_done(conn, &display, now);
    }

    /// The end of a login, once the connection carries the nick.
    pub(in crate::core) fn login_done(&mut self, conn: ConnId, display: &str, now: Instant) {
        let key = fold(display);
        if fold(&self.nick_of(conn)) != key {
            return;
        }
        self.sessions.set_logged_in(conn, true);
        if self.shut_out(conn, now) {
            return;
        }
        self.reply(
            conn,
            &ServerLine::ok("login", format!("logged in as {display}")),
        );
        self.restore_settings(conn, &key);
        self.restore_ignores(conn, &key);
        self.deliver_pending(conn, &key);
        self.ask_cluster(ToCluster::TakeInbox(display.to_string()));
    }

    pub(in crate::core) fn whois(&mut self, conn: ConnId, nick: &str) {
        let key = fold(nick);
        let online = self.sessions.by_nick(&key);
        let account = self.accounts.get(&key);
        let (registered, bio) =
            account.map_or((0, String::new()), |a| (a.created(), a.bio().to_string()));
        if online.is_none()
            && let Some(r) = self.remote(&key)
        {
            let line = ServerLine::Whois {
                nick: r.nick().to_string(),
                online: true,
                room: String::new(),
                registered,
                bio,
            };
            self.reply(conn, &line);
            return;
        }
        let display = match (online, account) {
            (Some(c), _) => self.nick_of(c),
            (None, Some(a)) => a.nick().to_string(),
            (None, None) => {
                self.error(conn, "no-such-user", format!("nobody is called {nick}"));
                return;
            }
        };
        let room = online
            .and_then(|c| self.sessions.get(c))
            .and_then(|c| c.current())
            .and_then(|k| self.rooms.get(k))
            .filter(|r| !r.private())
            .map(|r| r.name().to_string())
            .unwrap_or_default();
        let roles = self.roles_of(&fold(&display));
        let away = online
            .and_then(|c| self.sessions.get(c))
            .and_then(|c| c.away().map(str::to_string));
        let line = ServerLine::Whois {
            nick: display.clone(),
            online: online.is_some(),
            room,
            registered,
            bio,
        };
        self.reply(conn, &line);
        if !roles.is_empty() {
            let text = format!("{display}: {}", roles.join("; "));
            self.reply(conn, &ServerLine::info("roles", text));
        }
        if let Some(msg) = away {
            let text = format!("{display} is away: {msg}");
            self.reply(conn, &ServerLine::info("away", text));
        }
    }

    /// `/away [message]`: away with a message, or back without one.
    pub(in crate::core) fn away(&mut self, conn: ConnId, msg: Option<String>) {
        let msg = msg.map(|m| super::super::truncate(&m, crate::proto::REASON_MAX).to_string());
        let text = match &msg {
            Some(m) => format!("you are away: {m} (/away alone when you are back)"),
            None => "you are back".to_string(),
        };
        self.sessions.set_away(conn, msg);
        self.reply(conn, &ServerLine::ok("away", text));
    }

    /// `/key`: publish, withdraw or look up an end-to-end key bundle. The
    /// server checks only a bundle's shape; chatc checks its signature and
    /// pins what it first saw, so a server that swaps keys is noticed.
    pub(in crate::core) fn key(&mut self, conn: ConnId, cmd: KeyCmd) {
        match cmd {
            KeyCmd::Get(nick) => {
                // Only registered nicks have keys; for anyone else the
                // answer is the same "none", so a client never waits.
                let line = match self.accounts.get(&fold(&nick)) {
                    Some(a) => ServerLine::Key {
                        nick: a.nick().to_string(),
                        bundle: a.key().to_string(),
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
        match self.accounts.set_key(&fold(&nick), bundle.clone()) {
            None => return,
            Some(false) => {
                self.reply(conn, &ServerLine::ok("key", "key unchanged"));
                return;
            }
            Some(true) => {}
        }
        let text = if bundle.is_empty() {
            "end-to-end key withdrawn"
        } else {
            "end-to-end key published; others can now send you encrypted direct messages"
        };
        self.persist_shared(Record::Key { nick, bundle });
        self.reply(conn, &ServerLine::ok("key", text));
    }

    pub(in crate::core) fn set_bio(&mut self, conn: ConnId, text: String) {
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
        self.accounts.set_bio(&fold(&nick), text.clone());
        self.persist_shared(Record::Bio { nick, text });
        self.reply(conn, &ServerLine::ok("bio", "bio saved; /whois shows it"));
    }
}

impl Core {
    /// `/passwd`: the next two lines are the old and the new password.
    pub(in crate::core) fn passwd(&mut self, conn: ConnId) {
        if !self.require_login(conn, "changing a password") {
            return;
        }
        self.sessions
            .set_awaiting(conn, Some(Awaiting::OldPassword));
        self.reply(
            conn,
            &ServerLine::info(
                "passwd",
                "type your current password on the next line (an empty line cancels)",
            ),
        );
    }

    /// A line that answers a question the session was asked: never a
    /// message, never echoed, never logged.
    pub(in crate::core) fn answer(&mut self, conn: ConnId, line: &str, now: Instant) {
        let Some(asked) = self.sessions.take_awaiting(conn) else {
            return;
        };
        if line.trim().is_empty() {
            self.reply(
                conn,
                &ServerLine::info("passwd", "cancelled: nothing changed"),
            );
            return;
        }
        match asked {
            Awaiting::OldPassword => {
                self.sessions.set_awaiting(
                    conn,
                    Some(Awaiting::NewPassword {
                        old: line.to_string(),
                    }),
                );
                let text = format!(
                    "now the new password ({PASSWORD_MIN} to {PASSWORD_MAX} characters) on the next line"
                );
                self.reply(conn, &ServerLine::info("passwd", text));
            }
            Awaiting::Unregister => {
                let nick = self.nick_of(conn);
                self.check_password(conn, line.to_string(), JobKind::Unregister { nick }, now);
            }
            Awaiting::NewPassword { old } => {
                let n = line.chars().count();
                if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
                    let text = format!(
                        "a password is {PASSWORD_MIN} to {PASSWORD_MAX} characters: nothing changed"
                    );
                    self.error(conn, "usage", text);
                    return;
                }
                self.check_old_password(conn, old, line.to_string(), now);
            }
        }
    }

    /// Checks the old password on the worker, as a login is checked (and
    /// throttled the same way: `/passwd` is no way to guess one).
    fn check_old_password(&mut self, conn: ConnId, old: String, new: String, now: Instant) {
        let nick = self.nick_of(conn);
        self.check_password(conn, old, JobKind::CheckOld { nick, new }, now);
    }

    /// `/unregister`: the password is asked for on the next line.
    pub(in crate::core) fn unregister(&mut self, conn: ConnId) {
        if !self.require_login(conn, "giving up a nick") {
            return;
        }
        self.sessions.set_awaiting(conn, Some(Awaiting::Unregister));
        let text = "to give up your registered nick, type your password on the next line (an empty line cancels)";
        self.reply(conn, &ServerLine::info("unregister", text));
    }

    /// The account is gone: rooms it owned are nobody's, its roles go, and
    /// a session logged in as it is a guest now. What it said stays.
    pub(in crate::core) fn account_gone(&mut self, key: &str) -> bool {
        if !self.accounts.remove(key) {
            return false;
        }
        self.rooms.disown(key);
        if let Some(c) = self.sessions.by_nick(key) {
            self.sessions.set_logged_in(c, false);
        }
        true
    }

    /// Checks `password` against the session's account on the worker, for
    /// `kind`; throttled like a login.
    fn check_password(&mut self, conn: ConnId, password: String, kind: JobKind, now: Instant) {
        let nick = self.nick_of(conn);
        let key = fold(&nick);
        let Some(ip) = self.sessions.get(conn).map(|c| c.addr()) else {
            return;
        };
        if let Some(Wait::Throttled(w)) = self.accounts.login_wait(&key, ip, now) {
            let text = format!(
                "too many wrong passwords: try again in {} seconds",
                w.as_secs().max(1)
            );
            self.error(conn, "throttled", text);
            return;
        }
        let job = self.verify_job(&key, password);
        self.start_job(conn, kind, job);
    }

    /// A job that checks `password` against the account `key` (a dummy of
    /// the same cost for an unknown one).
    fn verify_job(&mut self, key: &str, password: String) -> HashJob {
        let (salt, expect, iterations) = self.accounts.credentials(key, self.cfg.hash_iterations);
        HashJob {
            id: self.accounts.next_job_id(),
            password,
            salt,
            iterations,
            expect: Some(expect),
        }
    }

    /// The old password was right: hash the new one.
    fn hash_new_password(&mut self, conn: ConnId, nick: String, new: String) {
        let mut salt = vec![0u8; SALT_LEN];
        self.entropy.fill(&mut salt);
        let iterations = self.cfg.hash_iterations;
        let id = self.accounts.next_job_id();
        let job = HashJob {
            id,
            password: new,
            salt: salt.clone(),
            iterations,
            expect: None,
        };
        self.start_job(
            conn,
            JobKind::NewPassword {
                nick,
                salt,
                iterations,
            },
            job,
        );
    }

    /// The new password's hash replaces the old, everywhere.
    fn password_changed(
        &mut self,
        conn: ConnId,
        nick: &str,
        salt: Vec<u8>,
        hash: Vec<u8>,
        iterations: u32,
    ) {
        let key = fold(nick);
        let Some(a) = self.accounts.get_mut(&key) else {
            return;
        };
        a.set_credentials(salt, hash, iterations);
        let rec = a.record();
        self.persist_shared(rec);
        self.reply(
            conn,
            &ServerLine::ok("passwd", "password changed: use the new one from now on"),
        );
    }
}
