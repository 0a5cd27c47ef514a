//! The status listener's connections (`--status`): each reads one bounded
//! HTTP request, gets one response, and closes. They share the loop with the
//! chat but have a small slab of their own, with tokens of their own, and a
//! deadline each, so nothing here can hold the loop or the chat. What the
//! request means and what the answer says is `crate::status` (no I/O).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::{Accepted, accept_one};
use crate::status::{self, Parsed, Snapshot};

/// The listener's own token.
pub const LISTENER_TOKEN: usize = usize::MAX - 2;
/// Status connections use this plus their key; chat keys never get near it.
pub const CONN_BASE: usize = usize::MAX / 2;
const MAX_CONNS: usize = 64;
/// Unanswered requests from one address; past it its oldest makes room.
const MAX_PER_ADDRESS: usize = 8;
/// A status request must arrive and be answered within this. A health probe
/// sends its request in one packet; two seconds is ample on any network.
const TIMEOUT: Duration = Duration::from_secs(2);

/// One HTTP request on the status listener.
struct HttpConn {
    stream: TcpStream,
    ip: IpAddr,
    accepted: Instant,
    buf: Vec<u8>,
    /// The response, once there is one.
    out: Option<Vec<u8>>,
    written: usize,
    deadline: Instant,
}

pub struct StatusListener {
    listener: TcpListener,
    conns: Slab<HttpConn>,
}

impl StatusListener {
    pub fn new(l: std::net::TcpListener, registry: &Registry) -> io::Result<StatusListener> {
        l.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(l);
        registry.register(&mut listener, Token(LISTENER_TOKEN), Interest::READABLE)?;
        Ok(StatusListener {
            listener,
            conns: Slab::new(),
        })
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Whether a token belongs to one of this listener's connections.
    pub fn owns(token: usize) -> bool {
        (CONN_BASE..CONN_BASE + MAX_CONNS).contains(&token)
    }

    /// The earliest deadline of a request in progress.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().map(|(_, c)| c.deadline).min()
    }

    pub fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let (mut stream, peer) = match accept_one(&self.listener) {
                Accepted::Conn(s, p) => (s, p),
                Accepted::Again => continue,
                Accepted::Done => return,
                Accepted::Failed(e) => {
                    log::warn!("status accept failed: {e}");
                    return;
                }
            };
            // Idle connections must not lock health probes out: the newest
            // request is served, and the oldest unanswered one (of its
            // address when that has many, else of all) makes room.
            let ip = peer.ip();
            let from_ip = self.conns.iter().filter(|(_, c)| c.ip == ip).count();
            if from_ip >= MAX_PER_ADDRESS {
                self.evict_oldest(registry, Some(ip));
            }
            if self.conns.len() >= MAX_CONNS {
                self.evict_oldest(registry, None);
            }
            if self.conns.len() >= MAX_CONNS {
                let _ = stream.write(&status::error(503));
                continue;
            }
            let entry = self.conns.vacant_entry();
            let token = Token(CONN_BASE + entry.key());
            if registry
                .register(&mut stream, token, Interest::READABLE)
                .is_err()
            {
                continue;
            }
            entry.insert(HttpConn {
                stream,
                ip,
                accepted: now,
                buf: Vec::new(),
                out: None,
                written: 0,
                deadline: now + TIMEOUT,
            });
        }
    }

    /// Closes the oldest connection still without an answer (of `ip`, if
    /// given), with a 503.
    fn evict_oldest(&mut self, registry: &Registry, ip: Option<IpAddr>) {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, c)| c.out.is_none() && ip.is_none_or(|ip| c.ip == ip))
            .min_by_key(|(_, c)| c.accepted)
            .map(|(k, _)| k);
        if let Some(key) = oldest {
            let mut c = self.conns.remove(key);
            let _ = c.stream.write(&status::error(503));
            let _ = registry.deregister(&mut c.stream);
        }
    }

    /// Reads a request, answers it, closes. The head is capped and the
    /// connection has a deadline.
    pub fn serve(
        &mut self,
        token: usize,
        registry: &Registry,
        snapshot: impl FnOnce() -> Snapshot,
    ) {
        let key = token - CONN_BASE;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.out.is_none()
            && let Some(p) = read_request(c)
        {
            c.out = Some(match p {
                Parsed::Request { method, path } => status::route(&method, &path, snapshot),
                Parsed::Bad(code) => status::error(code),
                Parsed::Incomplete => status::error(400),
            });
        }
        self.write(key, registry);
    }

    fn write(&mut self, key: usize, registry: &Registry) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Some(out) = c.out.as_ref() else { return };
        while c.written < out.len() {
            match c.stream.write(out.get(c.written..).unwrap_or(&[])) {
                Ok(0) => break,
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let token = Token(CONN_BASE + key);
                    let _ = registry.reregister(&mut c.stream, token, Interest::WRITABLE);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let mut c = self.conns.remove(key);
        let _ = c.stream.shutdown(Shutdown::Both);
        let _ = registry.deregister(&mut c.stream);
    }

    /// Requests past their deadline get a 408 (if not answered) and go.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        if self.conns.is_empty() {
            return;
        }
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            let mut c = self.conns.remove(key);
            if c.out.is_none() {
                let _ = c.stream.write(&status::error(408));
            }
            let _ = registry.deregister(&mut c.stream);
        }
    }
}

/// Reads what is there (bounded); the parsed request once it is whole (or
/// can never be).
fn read_request(c: &mut HttpConn) -> Option<Parsed> {
    let mut chunk = [0u8; 2048];
    let mut eof = false;
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                c.buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                if c.buf.len() >= status::MAX_REQUEST {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                eof = true;
                break;
            }
        }
    }
    match status::parse(&c.buf) {
        Parsed::Incomplete if eof => Some(Parsed::Bad(400)),
        Parsed::Incomplete => None,
        p => Some(p),
    }
}
