//! What the service manager and the operator see of the loop: signals as a
//! mio source (SIGTERM and SIGINT stop, SIGHUP reopens the log file and syncs
//! the journal), and systemd's notifications (READY, STOPPING, STATUS lines
//! every `STATUS_EVERY`, and the watchdog, fed from the loop itself so a
//! stuck loop is noticed).

use std::io;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::notify::Notifier;
use crate::logfile::LogFile;

/// The signal source's token.
pub const SIGNAL_TOKEN: usize = usize::MAX - 1;
/// How often `STATUS=` is refreshed for systemd.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// What a batch of signals asks of the loop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Asked {
    pub stop: bool,
    /// SIGHUP: the journal should be synced too.
    pub sync: bool,
}

pub struct Ops {
    signals: Option<Signals>,
    notifier: Notifier,
    next_watchdog: Option<Instant>,
    next_status: Instant,
    log_file: Option<LogFile>,
}

impl Ops {
    /// Without signals (an in-process server in a test must not take the
    /// test process's SIGINT); `with_signals` adds them.
    pub fn new() -> Ops {
        Ops {
            signals: None,
            notifier: Notifier::from_env(),
            next_watchdog: None,
            next_status: Instant::now(),
            log_file: None,
        }
    }

    /// Takes SIGTERM, SIGINT and SIGHUP for this process.
    pub fn handle_signals(&mut self, registry: &Registry) -> io::Result<()> {
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        registry.register(&mut signals, Token(SIGNAL_TOKEN), Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    pub fn set_log_file(&mut self, f: LogFile) {
        self.log_file = Some(f);
    }

    /// Reads pending signals; reopens the log file for SIGHUP.
    pub fn signals(&mut self) -> Asked {
        let mut asked = Asked::default();
        let Some(signals) = self.signals.as_mut() else {
            return asked;
        };
        for sig in signals.pending() {
            match sig {
                SIGTERM | SIGINT => {
                    let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                    info!("signal {name}: stopping");
                    asked.stop = true;
                }
                SIGHUP => {
                    match &self.log_file {
                        Some(f) => match f.reopen() {
                            Ok(()) => info!("SIGHUP: reopened log file {}", f.path().display()),
                            Err(e) => warn!("SIGHUP: cannot reopen {}: {e}", f.path().display()),
                        },
                        None => info!("SIGHUP: logging to stderr, nothing to reopen"),
                    }
                    asked.sync = true;
                }
                _ => {}
            }
        }
        asked
    }

    /// READY=1, with a first status line; arms the watchdog.
    pub fn ready(&mut self, status: &str, now: Instant) {
        self.notifier.ready(status);
        self.next_watchdog = self.notifier.watchdog_interval().map(|_| now);
    }

    pub fn stopping(&self, why: &str) {
        self.notifier.stopping(why);
    }

    /// Pings the watchdog when due; true when a `STATUS=` line is due
    /// (then call [`Ops::status`]).
    pub fn tick(&mut self, now: Instant) -> bool {
        if !self.notifier.enabled() {
            return false;
        }
        if let (Some(at), Some(every)) = (self.next_watchdog, self.notifier.watchdog_interval())
            && at <= now
        {
            self.notifier.watchdog();
            self.next_watchdog = Some(now + every);
        }
        self.next_status <= now
    }

    /// Sends a `STATUS=` line; the next is due in `STATUS_EVERY`.
    pub fn status(&mut self, line: &str, now: Instant) {
        self.notifier.status(line);
        self.next_status = now + STATUS_EVERY;
    }

    /// The next instant `tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.notifier.enabled() {
            return None;
        }
        let status = Some(self.next_status);
        [self.next_watchdog, status].into_iter().flatten().min()
    }
}

impl Default for Ops {
    fn default() -> Self {
        Ops::new()
    }
}
