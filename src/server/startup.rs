//! Everything before the loop: choosing listeners (systemd's sockets, or the
//! addresses configured), loading the TLS certificate, opening the journal
//! and replaying it into the core, and starting the NATS bridge. Each step
//! fails with an error that names what to fix; none of it runs again once
//! the loop is going.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::Server;
use crate::config::Config;
use crate::core::Core;
use crate::journal::{FsyncMode, Journal};

/// What `Server::new` needs to serve TLS: bound listeners and rustls's
/// configuration.
pub struct TlsSetup {
    pub listeners: Vec<std::net::TcpListener>,
    pub config: Arc<rustls::ServerConfig>,
    pub handshake_timeout: Duration,
    pub max_handshakes: usize,
}

/// Connections the kernel may hold ready for `accept` (capped by
/// `net.core.somaxconn`, 4096 by default). The standard library asks for
/// 128: a crowd connecting at once (1,000 in the churn benchmark, a class
/// after a restart) overflowed it while the loop accepted its 64 a turn,
/// and every dropped SYN cost its client a one-second retransmission
/// (issue 21: a third of the churn runs took three times as long).
const BACKLOG: i32 = 4096;

/// A listening socket on `addr` with [`BACKLOG`] (blocking, as std's; the
/// reactor and the benchmark's relay make it non-blocking for mio).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let listen = || -> io::Result<std::net::TcpListener> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        // As std does on Unix: a restart may bind while old connections
        // linger in TIME_WAIT.
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(BACKLOG)?;
        Ok(s.into())
    };
    listen().map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

impl Server {
    /// Uses the sockets systemd passed if socket-activated, else binds
    /// `cfg.listen` (and `cfg.status`). Takes the process's signals.
    pub fn from_config(cfg: Config) -> io::Result<Server> {
        let mut server = if let Some(act) = super::listenfd::take()? {
            if act.chat.is_empty() {
                return Err(io::Error::other(
                    "socket-activated without a chat socket (only one named \"status\")",
                ));
            }
            info!("socket-activated: {} chat socket(s)", act.chat.len());
            let status = match (act.status, cfg.status) {
                (Some(s), _) => Some(s),
                (None, Some(addr)) => Some(bind(addr)?),
                (None, None) => None,
            };
            let tls = tls_setup(&cfg, Some(act.tls))?;
            Server::new(cfg, act.chat, status, tls)?
        } else {
            let mut ls = Vec::new();
            for addr in &cfg.listen {
                ls.push(bind(*addr)?);
            }
            let status = cfg.status.map(bind).transpose()?;
            let tls = tls_setup(&cfg, None)?;
            Server::new(cfg, ls, status, tls)?
        };
        server.handle_signals()?;
        Ok(server)
    }
}

/// Loads the certificate and binds `--tls-listen` (unless systemd passed
/// sockets named "tls").
fn tls_setup(
    cfg: &Config,
    activated: Option<Vec<std::net::TcpListener>>,
) -> io::Result<Option<TlsSetup>> {
    let Some(t) = &cfg.tls else {
        if activated.is_some_and(|a| !a.is_empty()) {
            return Err(io::Error::other(
                "systemd passed a socket named \"tls\" but --tls-cert and --tls-key are not set",
            ));
        }
        return Ok(None);
    };
    let config =
        crate::tls::server_config(&t.cert, &t.key).map_err(|e| io::Error::other(e.to_string()))?;
    let listeners = match activated.filter(|a| !a.is_empty()) {
        Some(a) => a,
        None if t.listen.is_empty() => {
            return Err(io::Error::other(
                "--tls-cert and --tls-key are set but there is nowhere to serve TLS: add --tls-listen ADDR (or a socket named \"tls\" from systemd)",
            ));
        }
        None => t
            .listen
            .iter()
            .map(|a| bind(*a))
            .collect::<io::Result<_>>()?,
    };
    Ok(Some(TlsSetup {
        listeners,
        config,
        handshake_timeout: t.handshake_timeout,
        max_handshakes: t.max_handshakes,
    }))
}

/// Opens the journal in `dir` and replays it into `core`, reporting damage.
pub(super) fn open_journal(dir: &Path, fsync: FsyncMode, core: &mut Core) -> io::Result<Journal> {
    let started = Instant::now();
    let (journal, replay) = Journal::open(dir, fsync, |r| {
        core.restore(r);
    })
    .map_err(|e| io::Error::other(e.to_string()))?;
    let file = dir.join(crate::journal::JOURNAL_FILE);
    for d in &replay.damage {
        warn!(
            "journal {}: damaged at offset {} ({}): cut off {} bytes",
            file.display(),
            d.offset,
            d.reason,
            d.dropped
        );
    }
    if let Some(kept) = &replay.kept {
        warn!(
            "journal {}: the damaged part is kept in {}; {} later records were recovered, everything before the damage is kept",
            file.display(),
            kept.display(),
            replay.recovered
        );
    }
    let n = replay.records;
    let stats = core.stats();
    info!(
        "journal {}: replayed {n} records ({} bytes) in {:?}: {} rooms, {} accounts",
        dir.display(),
        journal.size(),
        started.elapsed(),
        stats.rooms,
        stats.accounts
    );
    Ok(journal)
}
