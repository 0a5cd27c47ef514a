//! Registered nicks: the accounts themselves (password hash, profile,
//! published key), the throttle on failed logins, and the password jobs in
//! flight. This file owns that data; the commands that use it are in
//! `commands/account.rs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::ConnId;
use super::passwords::{FREE_FAILS_IP, FREE_FAILS_NICK, HASH_LEN, SALT_LEN, Throttle};
use crate::record::Record;

/// Throttle tables are pruned of expired entries past this size.
const THROTTLE_TABLE_MAX: usize = 10_000;

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
        }
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
        ip: IpAddr,
    },
}

/// A password job in flight, and the connection (by serial) waiting for it.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) conn: ConnId,
    pub(super) serial: u64,
    pub(super) kind: JobKind,
}

/// Accounts by folded nick, login throttles, and password jobs.
#[derive(Debug, Default)]
pub(super) struct Accounts {
    map: HashMap<String, Account>,
    nick_throttle: HashMap<String, Throttle>,
    ip_throttle: HashMap<IpAddr, Throttle>,
    jobs: HashMap<u64, Job>,
    next_job: u64,
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

    /// Adds (or, replayed twice, replaces) an account under `key`.
    pub(super) fn insert(&mut self, key: String, account: Account) {
        self.map.insert(key, account);
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

    /// How long a login of `key` from `ip` must still wait, if at all.
    pub(super) fn throttled(&self, key: &str, ip: IpAddr, now: Instant) -> Option<Duration> {
        [
            self.nick_throttle.get(key).and_then(|t| t.wait(now)),
            self.ip_throttle.get(&ip).and_then(|t| t.wait(now)),
        ]
        .into_iter()
        .flatten()
        .max()
    }

    pub(super) fn login_failed(&mut self, key: &str, ip: IpAddr, now: Instant) {
        if self.nick_throttle.len() > THROTTLE_TABLE_MAX {
            self.nick_throttle.retain(|_, t| t.wait(now).is_some());
        }
        if self.ip_throttle.len() > THROTTLE_TABLE_MAX {
            self.ip_throttle.retain(|_, t| t.wait(now).is_some());
        }
        self.nick_throttle
            .entry(key.to_string())
            .or_default()
            .fail(FREE_FAILS_NICK, now);
        self.ip_throttle
            .entry(ip)
            .or_default()
            .fail(FREE_FAILS_IP, now);
    }

    pub(super) fn login_succeeded(&mut self, key: &str, ip: IpAddr) {
        self.nick_throttle.remove(key);
        self.ip_throttle.remove(&ip);
    }

    pub(super) fn next_job_id(&mut self) -> u64 {
        self.next_job += 1;
        self.next_job
    }

    pub(super) fn jobs_in_flight(&self) -> usize {
        self.jobs.len()
    }

    pub(super) fn add_job(&mut self, id: u64, job: Job) {
        self.jobs.insert(id, job);
    }

    pub(super) fn take_job(&mut self, id: u64) -> Option<Job> {
        self.jobs.remove(&id)
    }

    /// At shutdown: nobody waits for an answer any more.
    pub(super) fn forget_jobs(&mut self) {
        self.jobs.clear();
    }
}
