//! Password hashing and the throttle on failed logins.
//!
//! Hashing is PBKDF2-HMAC-SHA256 with a random 16-byte salt per account and
//! [`HASH_ITERATIONS`] iterations (OWASP's figure). It takes a noticeable
//! fraction of a second, so the core never does it: it emits a [`HashJob`]
//! and waits for `Core::handle_hash_done`. [`run_hash_job`] is what a worker
//! thread runs (and what the simulator runs inline).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// OWASP's current recommendation for PBKDF2-HMAC-SHA256.
pub const HASH_ITERATIONS: u32 = 600_000;
/// The most iterations a stored hash may ask for: about four seconds of the
/// hashing thread. A record asking for more (a crafted journal, another
/// node) is refused; `--hash-iterations` cannot exceed it either.
pub const MAX_HASH_ITERATIONS: u32 = 5_000_000;
pub(super) const SALT_LEN: usize = 16;
pub(super) const HASH_LEN: usize = 32;
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 256;
/// Failed logins per nick (and per address) that cost nothing; after them
/// each failure doubles the wait, up to [`THROTTLE_MAX`].
pub(super) const FREE_FAILS_NICK: u32 = 3;
pub(super) const FREE_FAILS_IP: u32 = 10;
/// Failures per nick from all addresses it does not know, before those wait.
pub(super) const FREE_FAILS_NICK_UNKNOWN: u32 = 20;
const THROTTLE_MAX: Duration = Duration::from_secs(300);

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

/// Failed logins of one nick or one address, and the wait they earned.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    fails: u32,
    until: Option<Instant>,
}

impl Throttle {
    pub(super) fn wait(&self, now: Instant) -> Option<Duration> {
        self.until
            .and_then(|u| (u > now).then(|| u.saturating_duration_since(now)))
    }

    pub(super) fn fail(&mut self, free: u32, now: Instant) {
        self.fails = self.fails.saturating_add(1);
        if self.fails > free {
            let exp = (self.fails - free - 1).min(16);
            let wait = Duration::from_secs(1u64 << exp).min(THROTTLE_MAX);
            self.until = Some(now + wait);
        }
    }
}
