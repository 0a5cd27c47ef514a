//! The operating system's random generator, read in this one place.
//!
//! Two kinds of callers want randomness, and they want different things when
//! the generator fails (it does not on a booted Linux, but the choice must be
//! written down somewhere):
//!
//! * the daemon ([`SystemEntropy`], handed to the core for private-room codes
//!   and password salts) goes on, says so in the log, and uses the clock: a
//!   crash would drop everyone, and a predictable room code is the lesser harm;
//! * the end-to-end code ([`bytes`]: nonces, secrets, keys) stops, because a
//!   predictable key is worse than no message at all.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

use crate::core::Entropy;

/// The generator failed: nothing it could give is fit for a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no randomness available from the operating system")
    }
}

impl std::error::Error for Unavailable {}

/// Fills `buf` from the operating system.
pub fn fill(buf: &mut [u8]) -> Result<(), Unavailable> {
    SystemRandom::new().fill(buf).map_err(|_| Unavailable)
}

/// The generator itself, for ring calls that take one (key generation).
pub fn generator() -> SystemRandom {
    SystemRandom::new()
}

/// `N` random bytes for a secret. Panics if the operating system has none to
/// give: every caller would otherwise make a key anyone could guess.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if let Err(e) = fill(&mut b) {
        panic!("{e}");
    }
    b
}

/// The daemon's source for the core: the operating system, or (logged) the
/// clock if it ever fails.
#[derive(Debug, Default)]
pub struct SystemEntropy;

impl Entropy for SystemEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        if fill(buf).is_ok() {
            return;
        }
        log::error!(
            "the operating system's random generator failed: private-room codes and password salts made now are predictable"
        );
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8;
        }
    }
}
