//! systemd socket activation: listening sockets handed over as descriptors
//! 3, 4, … with `LISTEN_PID` and `LISTEN_FDS` (and optionally
//! `LISTEN_FDNAMES`) in the environment, as `sd_listen_fds(3)` describes.
//!
//! This is the one module allowed `unsafe`: turning an inherited descriptor
//! number into an owned socket cannot be done otherwise. It checks that the
//! variables are meant for this process, takes each descriptor exactly once,
//! and verifies that it is a listening TCP socket before using it.

#![allow(unsafe_code)]

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;
/// More than this is a misconfiguration, not a socket unit.
const MAX_FDS: usize = 64;

/// Sockets passed by systemd, sorted by their `FileDescriptorName=`.
#[derive(Debug, Default)]
pub struct Activated {
    /// Chat listeners: every socket not named `status`.
    pub chat: Vec<TcpListener>,
    /// A socket named `status`, for the status listener.
    pub status: Option<TcpListener>,
    /// Sockets named "tls": the chat over TLS.
    pub tls: Vec<TcpListener>,
}

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes the sockets systemd passed, if any were passed to this process.
/// Returns `Ok(None)` when not socket-activated. May be called once; later
/// calls return `Ok(None)`, so no descriptor is ever owned twice.
pub fn take() -> io::Result<Option<Activated>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        // Meant for another process (our parent, say).
        return Ok(None);
    }
    let n: usize = fds
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("LISTEN_FDS={fds} is not a number")))?;
    if n > MAX_FDS {
        return Err(io::Error::other(format!(
            "LISTEN_FDS={n}: too many sockets"
        )));
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let mut out = Activated::default();
    for i in 0..n {
        let fd = FIRST_FD + i as RawFd;
        // A descriptor that is not open (or not a socket) is refused before
        // anything owns it: owning a closed descriptor would abort on drop.
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}"));
        let is_socket = target
            .as_ref()
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            return Err(io::Error::other(format!(
                "LISTEN_FDS={n}, but descriptor {fd} is not an open socket ({target:?})"
            )));
        }
        // SAFETY: with LISTEN_PID naming this process, systemd guarantees
        // that descriptors FIRST_FD..FIRST_FD+LISTEN_FDS are open and ours;
        // nothing else in chatd refers to them by number, and TAKEN makes
        // sure each is wrapped only once, so the OwnedFd is the sole owner.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = TcpListener::from(owned);
        listener.local_addr().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("socket-activated fd {fd} is not a TCP socket: {e}"),
            )
        })?;
        if names.get(i).map(String::as_str) == Some("status") {
            out.status = Some(listener);
        } else if names.get(i).map(String::as_str) == Some("tls") {
            out.tls.push(listener);
        } else {
            out.chat.push(listener);
        }
    }
    Ok(Some(out))
}
