//! Registered nicks: the accounts themselves (password hash, profile,
//! published key), the throttles on failed logins, and the password jobs in
//! flight. This file owns that data; the commands that use it are in
//! `commands/account.rs`.
//!
//! Login throttling is built so that guessing cannot lock the owner out:
//! failures count per (nick, address) and per address, and per nick only
//! against addresses that have not logged in as that nick before (the last
//! few that did are remembered, in memory). An attempt in flight counts: at
//! most one per (nick, address) at a time, and one per nick from unknown
//! addresses, so twenty guesses sent at once wait their turn instead of
//! being checked in parallel. Addresses are taken whole for IPv4 and by
//! their /64 for IPv6 (one host's worth).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::ConnId;
use super::passwords::{
    FREE_FAILS_IP, FREE_FAILS_NICK, FREE_FAILS_NICK_UNKNOWN, HASH_LEN, SALT_LEN, Throttle,
};
use crate::record::Record;

/// Throttle tables are pruned of expired entries past this size.
const THROTTLE_TABLE_MAX: usize = 10_000;
/// Addresses remembered per nick as having logged in as it.
const KNOWN_PER_NICK: usize = 8;

/// A registered nick.
#[derive(Debug)]
pub(super) struct Account {
    nick: String,
    salt: Vec<u8>,
    hash: Vec<u8>,
    iterations: u32,
    created: u64,
    bio: String,
    /// The published end-to-end key bundle; empty if none.
    key: String,
    /// What `/set` last said, restored at login.
    settings: super::settings::Settings,
    /// Folded nicks it ignores, restored at login.
    ignores: Vec<String>,
}

impl Account {
    /// The one way an account is made: registered here, replayed from the
    /// journal, or shared by another node. Profile and key come later.
    pub(super) fn new(
        nick: String,
        salt: Vec<u8>,
        hash: Vec<u8>,
        iterations: u32,
        created: u64,
    ) -> Account {
        Account {
            nick,
            salt,
            hash,
            iterations,
            created,
            bio: String::new(),
            key: String::new(),
            settings: Default::default(),
            ignores: Vec::new(),
        }
    }

    pub(super) fn ignores(&self) -> &[String] {
        &self.ignores
    }

    /// Adds or removes an ignored nick; false if that changed nothing.
    pub(super) fn set_ignore(&mut self, key: &str, on: bool) -> bool {
        let had = self.ignores.iter().any(|k| k == key);
        match (had, on) {
            (false, true) => self.ignores.push(key.to_string()),
            (true, false) => self.ignores.retain(|k| k != key),
            _ => return false,
        }
        true
    }

    pub(super) fn settings(&self) -> super::settings::Settings {
        self.settings
    }

    pub(super) fn nick(&self) -> &str {
        &self.nick
    }

    /// Unix ms of the registration.
    pub(super) fn created(&self) -> u64 {
        self.created
    }

    pub(super) fn bio(&self) -> &str {
        &self.bio
    }

    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// The durable record of the account itself (profile and key are
    /// records of their own).
    /// A new password: its salt, hash and iterations replace the old.
    pub(super) fn set_credentials(&mut self, salt: Vec<u8>, hash: Vec<u8>, iterations: u32) {
        self.salt = salt;
        self.hash = hash;
        self.iterations = iterations;
    }

    pub(super) fn record(&self) -> Record {
        Record::Account {
            nick: self.nick.clone(),
            salt: self.salt.clone(),
            hash: self.hash.clone(),
            iterations: self.iterations,
            created: self.created,
        }
    }
}

/// What a password job is for.
#[derive(Debug)]
pub(super) enum JobKind {
    Register {
        nick: String,
        salt: Vec<u8>,
        iterations: u32,
    },
    Login {
        nick: String,
        /// The address, as throttles key it.
        ip: IpAddr,
        /// The address has logged in as this nick before.
        known: bool,
    },
    /// `/unregister`: the password is checked, then the account goes.
    Unregister { nick: String },
    /// `/passwd`: the old password is checked first...
    CheckOld { nick: String, new: String },
    /// ...then the new one is hashed.
    NewPassword {
        nick: String,
        salt: Vec<u8>,
        iterations: u32,
    },
}

/// A password job in flight, and the connection (by serial) waiting for it.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) conn: ConnId,
    pub(super) serial: u64,
    /// The connection's address, as limits key it.
    pub(super) ip: IpAddr,
    pub(super) kind: JobKind,
}

/// Accounts by folded nick, login throttles, and password jobs.
#[derive(Debug, Default)]
pub(super) struct Accounts {
    map: HashMap<String, Account>,
    /// Failures per (folded nick, address).
    pair_throttle: HashMap<(String, IpAddr), Throttle>,
    /// Failures per address, whatever the nick.
    ip_throttle: HashMap<IpAddr, Throttle>,
    /// Failures per nick from addresses it does not know.
    nick_throttle: HashMap<String, Throttle>,
    /// Addresses that logged in as a nick, newest last.
    known: HashMap<String, Vec<IpAddr>>,
    /// Logins being checked: per (nick, address), and per nick from unknown
    /// addresses.
    checking: HashMap<(String, IpAddr), ()>,
    checking_unknown: HashMap<String, ()>,
    /// Password jobs in flight per address.
    jobs_per_ip: HashMap<IpAddr, usize>,
    jobs: HashMap<u64, Job>,
    next_job: u64,
}

/// Why a login may not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// Too many failures: for this long.
    Throttled(Duration),
    /// Another attempt for this nick is being checked.
    Checking,
}

impl Accounts {
    pub(super) fn get(&self, key: &str) -> Option<&Account> {
        self.map.get(key)
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Oldest first, for snapshots.
    pub(super) fn by_age(&self) -> Vec<&Account> {
        let mut all: Vec<&Account> = self.map.values().collect();
        all.sort_by_key(|a| (a.created, a.nick.to_ascii_lowercase()));
        all
    }

    /// Forgets an account; false if there was none.
    pub(super) fn remove(&mut self, key: &str) -> bool {
        self.map.remove(key).is_some()
    }

    /// Adds (or, replayed twice, replaces) an account under `key`.
    pub(super) fn insert(&mut self, key: String, account: Account) {
        self.map.insert(key, account);
    }

    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut Account> {
        self.map.get_mut(key)
    }

    /// Sets the kept settings; false if there is no such account.
    pub(super) fn set_settings(&mut self, key: &str, s: super::settings::Settings) -> bool {
        self.map.get_mut(key).map(|a| a.settings = s).is_some()
    }

    /// Sets a bio; false if there is no such account.
    pub(super) fn set_bio(&mut self, key: &str, text: String) -> bool {
        self.map.get_mut(key).map(|a| a.bio = text).is_some()
    }

    /// Sets the published key bundle; `None` if there is no such account,
    /// `Some(false)` if it was already that.
    pub(super) fn set_key(&mut self, key: &str, bundle: String) -> Option<bool> {
        let a = self.map.get_mut(key)?;
        if a.key == bundle {
            return Some(false);
        }
        a.key = bundle;
        Some(true)
    }

    /// Salt, expected hash and iterations to check a login against. An
    /// unknown nick gets a dummy hash of the same cost, so that the answer and
    /// its timing are the same as for a wrong password.
    pub(super) fn credentials(&self, key: &str, iterations: u32) -> (Vec<u8>, Vec<u8>, u32) {
        match self.map.get(key) {
            Some(a) => (a.salt.clone(), a.hash.clone(), a.iterations),
            None => (vec![0u8; SALT_LEN], vec![0u8; HASH_LEN], iterations),
        }
    }

    /// Whether `ip` has logged in as `key` before (this run).
    pub(super) fn knows(&self, key: &str, ip: IpAddr) -> bool {
        self.known.get(key).is_some_and(|v| v.contains(&ip))
    }

    /// Why a login of `key` from `ip` may not be checked now, if it may not.
    pub(super) fn login_wait(&self, key: &str, ip: IpAddr, now: Instant) -> Option<Wait> {
        let known = self.knows(key, ip);
        let throttled = [
            self.pair_throttle
                .get(&(key.to_string(), ip))
                .and_then(|t| t.wait(now)),
            self.ip_throttle.get(&ip).and_then(|t| t.wait(now)),
            (!known)
                .then(|| self.nick_throttle.get(key).and_then(|t| t.wait(now)))
                .flatten(),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(w) = throttled {
            return Some(Wait::Throttled(w));
        }
        let busy = self.checking.contains_key(&(key.to_string(), ip))
            || (!known && self.checking_unknown.contains_key(key));
        busy.then_some(Wait::Checking)
    }

    /// A login of `key` from `ip` is being checked.
    pub(super) fn login_started(&mut self, key: &str, ip: IpAddr, known: bool) {
        self.checking.insert((key.to_string(), ip), ());
        if !known {
            self.checking_unknown.insert(key.to_string(), ());
        }
    }

    /// Its check is over (whatever the answer).
    fn login_ended(&mut self, key: &str, ip: IpAddr, known: bool) {
        self.checking.remove(&(key.to_string(), ip));
        if !known {
            self.checking_unknown.remove(key);
        }
    }

    pub(super) fn login_failed(&mut self, key: &str, ip: IpAddr, known: bool, now: Instant) {
        self.login_ended(key, ip, known);
        if self.pair_throttle.len() > THROTTLE_TABLE_MAX {
            self.pair_throttle.retain(|_, t| t.wait(now).is_some());
        }
        if self.ip_throttle.len() > THROTTLE_TABLE_MAX {
            self.ip_throttle.retain(|_, t| t.wait(now).is_some());
        }
        if self.nick_throttle.len() > THROTTLE_TABLE_MAX {
            self.nick_throttle.retain(|_, t| t.wait(now).is_some());
        }
        self.pair_throttle
            .entry((key.to_string(), ip))
            .or_default()
            .fail(FREE_FAILS_NICK, now);
        self.ip_throttle
            .entry(ip)
            .or_default()
            .fail(FREE_FAILS_IP, now);
        if !known {
            self.nick_throttle
                .entry(key.to_string())
                .or_default()
                .fail(FREE_FAILS_NICK_UNKNOWN, now);
        }
    }

    pub(super) fn login_succeeded(&mut self, key: &str, ip: IpAddr, known: bool) {
        self.login_ended(key, ip, known);
        self.pair_throttle.remove(&(key.to_string(), ip));
        self.ip_throttle.remove(&ip);
        if self.known.len() > THROTTLE_TABLE_MAX && !self.known.contains_key(key) {
            self.known.clear();
        }
        let v = self.known.entry(key.to_string()).or_default();
        v.retain(|a| *a != ip);
        v.push(ip);
        if v.len() > KNOWN_PER_NICK {
            v.remove(0);
        }
    }

    /// Password jobs in flight for `ip`.
    pub(super) fn jobs_of(&self, ip: IpAddr) -> usize {
        self.jobs_per_ip.get(&ip).copied().unwrap_or(0)
    }

    pub(super) fn next_job_id(&mut self) -> u64 {
        self.next_job += 1;
        self.next_job
    }

    pub(super) fn jobs_in_flight(&self) -> usize {
        self.jobs.len()
    }

    pub(super) fn add_job(&mut self, id: u64, ip: IpAddr, job: Job) {
        *self.jobs_per_ip.entry(ip).or_default() += 1;
        self.jobs.insert(id, job);
    }

    pub(super) fn take_job(&mut self, id: u64) -> Option<Job> {
        let job = self.jobs.remove(&id)?;
        if let Some(n) = self.jobs_per_ip.get_mut(&job.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.jobs_per_ip.remove(&job.ip);
            }
        }
        Some(job)
    }

    /// At shutdown: nobody waits for an answer any more.
    pub(super) fn forget_jobs(&mut self) {
        self.jobs.clear();
        self.jobs_per_ip.clear();
        self.checking.clear();
        self.checking_unknown.clear();
    }
}
