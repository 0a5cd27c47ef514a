//! A deliberately featureless relay: the practical ceiling chatd is
//! measured against (`chatd-bench relay`). One thread, one mio poll, a slab
//! of connections; each line is encoded once into a shared buffer, and each
//! connection gets one `writev` per loop turn. No greeting, no history, no
//! limits, no accounts, nothing on disk, no validation beyond what the
//! benchmark's clients need: the first line is the nick, `/join #room`
//! moves to a room (answered to the joiner alone, as the benchmark expects),
//! `/quit` closes, anything else goes to the room as `#room <nick> text`.
//! It is for comparison only and not part of the daemon.
//!
//! With a certificate (`--tls-cert`, `--tls-key`) it speaks TLS through
//! rustls with chatd's own server configuration and nothing else: the
//! ceiling for chatd's TLS port, where most of a connection's memory is the
//! TLS library's.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
/// Buffers per `writev` (IOV_MAX).
const IOVECS: usize = 1024;
/// Up to this many come from an array on the stack.
const SMALL: usize = 16;

/// A line as every recipient shares it.
type Line = Rc<Box<[u8]>>;

struct Peer {
    stream: TcpStream,
    /// The TLS session, when the relay speaks TLS.
    tls: Option<Box<rustls::ServerConnection>>,
    /// An unfinished line.
    partial: Vec<u8>,
    nick: Option<Box<str>>,
    room: Option<Rc<str>>,
    /// Shared lines behind one thin pointer each (8 bytes a slot; chatd's
    /// queues hold the same, and a fan-out burst fills a slot per
    /// recipient per line: the ceiling must not pay for fat pointers).
    out: VecDeque<Line>,
    /// Bytes of the front buffer already written.
    head: usize,
    writable: bool,
    closing: bool,
    /// Already in this turn's flush list.
    dirty: bool,
}

/// Marks `key` for this turn's flush, once however many lines it is given.
fn mark(peers: &mut Slab<Peer>, dirty: &mut Vec<usize>, key: usize) {
    if let Some(p) = peers.get_mut(key)
        && !p.dirty
    {
        p.dirty = true;
        dirty.push(key);
    }
}

/// Runs until the process is killed; over TLS with `tls`.
pub fn run(addr: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<()> {
    let mut poll = Poll::new()?;
    // Bound as the daemon binds (its backlog; mio, like std, asks for
    // 128): a crowd connecting at once is compared, not the kernel
    // dropping SYNs.
    let std_listener = chatd::server::startup::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(std_listener);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("relay listening on {}", listener.local_addr()?);
    let mut peers: Slab<Peer> = Slab::new();
    let mut rooms: HashMap<Rc<str>, Vec<usize>> = HashMap::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut dirty: Vec<usize> = Vec::new();
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            // A signal (a tracer attaching, say) is no reason to stop.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.set_nodelay(true);
                            let session = match &tls {
                                Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                                    Ok(c) => Some(Box::new(c)),
                                    Err(_) => continue,
                                },
                                None => None,
                            };
                            let e = peers.vacant_entry();
                            poll.registry().register(
                                &mut s,
                                Token(e.key()),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            e.insert(Peer {
                                stream: s,
                                tls: session,
                                partial: Vec::new(),
                                nick: None,
                                room: None,
                                out: VecDeque::new(),
                                head: 0,
                                writable: true,
                                closing: false,
                                dirty: false,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
                continue;
            }
            let key = ev.token().0;
            if ev.is_writable()
                && let Some(p) = peers.get_mut(key)
            {
                p.writable = true;
                mark(&mut peers, &mut dirty, key);
            }
            if ev.is_readable() || ev.is_read_closed() {
                read(key, &mut peers, &mut rooms, &mut buf, &mut dirty);
            }
        }
        for key in dirty.drain(..) {
            if let Some(p) = peers.get_mut(key) {
                p.dirty = false;
            }
            flush(key, &mut peers, &mut rooms, &poll);
        }
    }
}

fn read(
    key: usize,
    peers: &mut Slab<Peer>,
    rooms: &mut HashMap<Rc<str>, Vec<usize>>,
    buf: &mut [u8],
    dirty: &mut Vec<usize>,
) {
    loop {
        let Some(p) = peers.get_mut(key) else { return };
        if p.tls.is_some() {
            match read_tls(p, buf) {
                TlsRead::Plain(n) => take_lines(key, n, peers, rooms, buf, dirty),
                // Handshake records may wait to be sent: flush this turn.
                TlsRead::More => mark(peers, dirty, key),
                TlsRead::Idle => {
                    mark(peers, dirty, key);
                    return;
                }
                TlsRead::Closed => {
                    p.closing = true;
                    mark(peers, dirty, key);
                    return;
                }
            }
            continue;
        }
        let n = match p.stream.read(buf) {
            Ok(0) => {
                p.closing = true;
                mark(peers, dirty, key);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                p.closing = true;
                mark(peers, dirty, key);
                return;
            }
        };
        take_lines(key, n, peers, rooms, buf, dirty);
    }
}

/// Handles the complete lines of `buf[..n]` after what was left over.
fn take_lines(
    key: usize,
    n: usize,
    peers: &mut Slab<Peer>,
    rooms: &mut HashMap<Rc<str>, Vec<usize>>,
    buf: &[u8],
    dirty: &mut Vec<usize>,
) {
    let Some(p) = peers.get_mut(key) else { return };
    let mut data = std::mem::take(&mut p.partial);
    data.extend_from_slice(buf.get(..n).unwrap_or(&[]));
    let complete = memchr::memrchr(b'\n', &data).map_or(0, |i| i + 1);
    let rest = data.split_off(complete);
    p.partial = rest;
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        handle(key, line, peers, rooms, dirty);
    }
}

/// What one step of reading a TLS peer gave.
enum TlsRead {
    /// Plaintext in the buffer.
    Plain(usize),
    /// Records were taken in: read again.
    More,
    /// Nothing more on the socket now.
    Idle,
    /// EOF, close_notify or a TLS error.
    Closed,
}

fn read_tls(p: &mut Peer, buf: &mut [u8]) -> TlsRead {
    let Some(t) = p.tls.as_mut() else {
        return TlsRead::Closed;
    };
    match t.reader().read(buf) {
        Ok(0) => return TlsRead::Closed,
        Ok(n) => return TlsRead::Plain(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(_) => return TlsRead::Closed,
    }
    match t.read_tls(&mut p.stream) {
        Ok(0) => return TlsRead::Closed,
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return TlsRead::Idle,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return TlsRead::More,
        Err(_) => return TlsRead::Closed,
    }
    if t.process_new_packets().is_err() {
        return TlsRead::Closed;
    }
    TlsRead::More
}

fn handle(
    key: usize,
    line: &[u8],
    peers: &mut Slab<Peer>,
    rooms: &mut HashMap<Rc<str>, Vec<usize>>,
    dirty: &mut Vec<usize>,
) {
    let Some(p) = peers.get_mut(key) else { return };
    let text = String::from_utf8_lossy(line);
    let Some(nick) = p.nick.clone() else {
        p.nick = Some(text.into());
        return;
    };
    if let Some(room) = text.strip_prefix("/join ") {
        let room: Rc<str> = room.trim().into();
        if let Some(old) = p.room.take()
            && let Some(m) = rooms.get_mut(&old)
        {
            m.retain(|&k| k != key);
        }
        p.room = Some(room.clone());
        p.out.push_back(Rc::new(
            format!("*** {nick} joined {room}\n").into_bytes().into(),
        ));
        rooms.entry(room).or_default().push(key);
        mark(peers, dirty, key);
        return;
    }
    if text.starts_with("/quit") {
        p.closing = true;
        mark(peers, dirty, key);
        return;
    }
    let Some(room) = p.room.clone() else { return };
    let shared: Line = Rc::new(format!("{room} <{nick}> {text}\n").into_bytes().into());
    if let Some(members) = rooms.get(&room) {
        for &m in members {
            if let Some(q) = peers.get_mut(m) {
                q.out.push_back(shared.clone());
                if !q.dirty {
                    q.dirty = true;
                    dirty.push(m);
                }
            }
        }
    }
}

fn flush(
    key: usize,
    peers: &mut Slab<Peer>,
    rooms: &mut HashMap<Rc<str>, Vec<usize>>,
    poll: &Poll,
) {
    let Some(p) = peers.get_mut(key) else { return };
    if let Some(t) = p.tls.as_mut() {
        // Plaintext into records (rustls holds them), then records out.
        while let Some(front) = p.out.pop_front() {
            let _ = t.writer().write_all(front.get(p.head..).unwrap_or(&[]));
            p.head = 0;
        }
        while p.writable && t.wants_write() {
            match t.write_tls(&mut p.stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => p.writable = false,
                Err(_) => {
                    p.closing = true;
                    break;
                }
            }
        }
    }
    while p.writable && !p.out.is_empty() {
        let head = p.head;
        let parts = p.out.iter().take(IOVECS).enumerate().map(|(i, b)| {
            IoSlice::new(if i == 0 {
                b.get(head..).unwrap_or(&[])
            } else {
                b
            })
        });
        // A few buffers from the stack, a crowd from one vector per call.
        let mut small = [IoSlice::new(&[]); SMALL];
        let large: Vec<IoSlice<'_>>;
        let slices: &[IoSlice<'_>] = if p.out.len() <= SMALL {
            let mut n = 0;
            for (slot, part) in small.iter_mut().zip(parts) {
                *slot = part;
                n += 1;
            }
            small.get(..n).unwrap_or(&[])
        } else {
            large = parts.collect();
            &large
        };
        match p.stream.write_vectored(slices) {
            Ok(mut n) => {
                while let Some(front) = p.out.front() {
                    let left = front.len() - p.head;
                    if n >= left {
                        n -= left;
                        p.out.pop_front();
                        p.head = 0;
                    } else {
                        p.head += n;
                        break;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => p.writable = false,
            Err(_) => {
                p.closing = true;
                p.out.clear();
            }
        }
    }
    if p.out.capacity() > 16 && p.out.is_empty() {
        p.out = VecDeque::new();
    }
    if p.closing && p.out.is_empty() {
        let mut p = peers.remove(key);
        if let Some(room) = p.room.take()
            && let Some(m) = rooms.get_mut(&room)
        {
            m.retain(|&k| k != key);
            if m.is_empty() {
                rooms.remove(&room);
            }
        }
        let _ = poll.registry().deregister(&mut p.stream);
    }
}
