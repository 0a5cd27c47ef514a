//! One chat connection as the reactor holds it: the socket, its transport
//! (plain text, or TLS through rustls; a WebSocket is one more variant), the
//! line decoder for what it sends, and the queue of shared buffers it is
//! owed. Nothing here knows about the chat: bytes in, bytes out.
//!
//! The output queue is written with `write_vectored` (plain) or moved into
//! rustls as plaintext (TLS, at most [`TLS_BUFFER`] held there). A queue is
//! bounded by the reactor (`--max-queue`), not here.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Instant;

use mio::Interest;
use mio::net::TcpStream;

use crate::codec::LineDecoder;
use crate::core::Bytes;
use crate::telnet::Telnet;

/// At most this many buffers go into one `write_vectored` call (IOV_MAX).
const MAX_IOVECS: usize = 1024;
/// Up to this many come from an array on the stack.
const SMALL_IOVECS: usize = 16;
/// Slots an empty output queue starts with when a line comes: a burst's
/// worth (a welcome, a join), 128 bytes, freed again when written.
const FIRST_SLOTS: usize = 16;
/// Plaintext rustls may hold for one connection beyond its queue (its own
/// buffer of records to send is bounded by this too).
pub const TLS_BUFFER: usize = 64 * 1024;

/// A TLS connection's state beside its socket.
pub struct Tls {
    pub session: rustls::ServerConnection,
    /// Set while the handshake is in progress: it must end by then.
    pub handshake_deadline: Option<Instant>,
    /// The first byte was looked at (a person typing plain text at the TLS
    /// port is told so in words).
    pub peeked: bool,
    /// The close_notify alert has been queued.
    pub close_sent: bool,
}

/// How bytes travel on a connection: one pointer (plain is the null one).
pub enum Transport {
    /// Plain lines.
    Plain,
    Tls(Box<Tls>),
}

/// A peer's address as a connection keeps it, for the log and the web
/// layer: the address as IPv6 (IPv4 mapped) and the port, 18 bytes where
/// `SocketAddr` takes 32 (issue 21: every connection has one). An IPv6
/// scope id and flow label are not kept; no log line needs them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    ip: [u8; 16],
    port: u16,
}

impl Peer {
    pub fn ip(&self) -> IpAddr {
        Ipv6Addr::from(self.ip).to_canonical()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.port)
    }
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Peer {
        let ip = match a.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        Peer {
            ip: ip.octets(),
            port: a.port(),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr().fmt(f)
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr().fmt(f)
    }
}

/// A deadline as a connection keeps it: only to recognise its own entry in
/// a timer list, which holds the instant itself. Four bytes where
/// `Option<Instant>` takes 16 (issue 21). Milliseconds after the reactor's
/// start, wrapping every 49 days: two deadlines of one slot that share a tag
/// are 49 days apart, and no timer entry lives that long.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DeadlineTag(NonZeroU32);

impl DeadlineTag {
    pub fn new(at: Instant, epoch: Instant) -> DeadlineTag {
        // Truncation is the wrap described above.
        let ms = at.saturating_duration_since(epoch).as_millis() as u32;
        DeadlineTag(NonZeroU32::new(ms).unwrap_or(NonZeroU32::MIN))
    }
}

impl Transport {
    /// A TLS connection whose handshake has not finished.
    pub fn handshaking(&self) -> bool {
        matches!(self, Transport::Tls(t) if t.handshake_deadline.is_some())
    }
}

/// What the bytes of a connection carry, above its transport.
pub enum Layer {
    /// Protocol lines (nc, telnet, chatc; every connection without the web).
    Lines,
    /// A chat port's connection whose first bytes have not come yet: its
    /// greeting is held (not written) until they come or `until` passes.
    /// `None`: a TLS handshake is still in progress.
    Sniff { until: Option<DeadlineTag> },
    /// HTTP requests (a browser loading the page), or bytes too few to
    /// tell (`undecided`).
    Http(Box<HttpConn>),
    /// A browser's WebSocket: frames in and out, protocol lines inside.
    /// Its decoder is held only while a frame is partial: an idle browser's
    /// layer is one null pointer (issue 21), and its liveness is
    /// [`Conn::quiet_sweeps`], beside it, so that the layer stays 16 bytes.
    Ws(crate::web::ws::Reader),
    /// A WebSocket whose close frame is queued: nothing more is framed or
    /// read.
    WsClosing,
}

/// An HTTP connection's request in progress.
pub struct HttpConn {
    pub buf: Vec<u8>,
    /// The request's head must be complete by then.
    pub deadline: Instant,
    pub served: u32,
    /// The first bytes of a chat port's connection could still start a
    /// request or a nick: decided when more come.
    pub undecided: bool,
}

impl Layer {
    pub fn is_ws(&self) -> bool {
        matches!(self, Layer::Ws(_) | Layer::WsClosing)
    }

    /// Output waits (the greeting, while the first bytes may be HTTP).
    pub fn holds_output(&self) -> bool {
        matches!(self, Layer::Sniff { .. }) || matches!(self, Layer::Http(h) if h.undecided)
    }
}

/// Bytes owed to the peer: shared buffers, the first partly written.
#[derive(Default)]
pub struct OutQueue {
    bufs: VecDeque<Bytes>,
    /// Bytes of the front buffer already written. This and `queued` are
    /// 32 bits (issue 21: every connection has a queue): a buffer is at
    /// most an upload's line, and the queue is cut off at the output cap,
    /// far below 4 GiB.
    head_written: u32,
    /// Unwritten bytes across the queue (saturating).
    queued: u32,
}

impl OutQueue {
    pub fn push(&mut self, data: Bytes) {
        self.queued = self.queued.saturating_add(short(data.len()));
        if self.bufs.capacity() == 0 {
            // An idle connection holds no queue (`release_idle`), so every
            // burst starts from none: a welcome of a dozen lines grew it
            // three times (4, 8, 16 slots), a realloc each, in every
            // connection's first seconds (issue 21: churn).
            self.bufs.reserve(FIRST_SLOTS);
        }
        self.bufs.push_back(data);
    }

    /// Unwritten bytes.
    pub fn len(&self) -> usize {
        self.queued as usize
    }

    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    pub fn clear(&mut self) {
        self.bufs.clear();
        self.head_written = 0;
        self.queued = 0;
    }

    /// An idle connection holds no queue: the burst of a welcome and its
    /// history, or of a busy minute, would otherwise stay allocated for as
    /// long as the connection lives. Freed at once: freeing later (tried)
    /// lets every connection's burst be allocated at the same time, and the
    /// heap keeps that peak.
    pub fn release_idle(&mut self) {
        // Not even a few slots are kept (80 bytes of heap per idle
        // connection, issue 21): a busy connection pays one small
        // allocation per flush instead, next to a `writev` that costs
        // a hundred times more.
        if self.bufs.is_empty() && self.bufs.capacity() > 0 {
            self.bufs = VecDeque::new();
        }
    }

    /// Drops `written` bytes from the front.
    fn consume(&mut self, mut written: usize) {
        self.queued = self.queued.saturating_sub(short(written));
        while let Some(front) = self.bufs.front() {
            let left = front.len().saturating_sub(self.head_written as usize);
            if written >= left {
                written -= left;
                self.bufs.pop_front();
                self.head_written = 0;
            } else {
                self.head_written = self.head_written.saturating_add(short(written));
                break;
            }
        }
    }

    /// Writes as much as `w` takes, up to `MAX_IOVECS` buffers per call;
    /// returns the bytes written.
    fn write_vectored_to(&mut self, w: &mut impl Write, budget: usize) -> io::Result<usize> {
        let mut total = 0;
        // Most flushes carry a few buffers: those go from a small array on
        // the stack. Preparing the 1,024-slot array (16 KiB) for each of them
        // cost more than the lines themselves at a steady rate into a big
        // room.
        while !self.bufs.is_empty() && total < budget {
            let mut small: [IoSlice<'_>; SMALL_IOVECS] = [IoSlice::new(&[]); SMALL_IOVECS];
            let large: Vec<IoSlice<'_>>;
            let n = self.bufs.len().min(MAX_IOVECS);
            let head = self.head_written as usize;
            let parts = self.bufs.iter().take(n).enumerate().map(|(i, b)| {
                if i == 0 {
                    b.get(head..).unwrap_or(&[])
                } else {
                    b
                }
            });
            let slices: &[IoSlice<'_>] = if n <= SMALL_IOVECS {
                for (slot, part) in small.iter_mut().zip(parts) {
                    *slot = IoSlice::new(part);
                }
                small.get(..n).unwrap_or(&[])
            } else {
                large = parts.map(IoSlice::new).collect();
                &large
            };
            match w.write_vectored(slices) {
                Ok(0) => return Err(write_zero()),
                Ok(written) => {
                    total += written;
                    self.consume(written);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// The front of the queue not yet written.
    fn front(&mut self) -> Option<&[u8]> {
        while let Some(front) = self.bufs.front() {
            if (self.head_written as usize) < front.len() {
                break;
            }
            self.bufs.pop_front();
            self.head_written = 0;
        }
        let head = self.head_written as usize;
        self.bufs.front().map(|b| b.get(head..).unwrap_or(&[]))
    }
}

/// A length as the queue counts it, saturating at 4 GiB.
fn short(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn write_zero() -> io::Error {
    io::Error::new(io::ErrorKind::WriteZero, "write returned zero")
}

/// A chat connection.
pub struct Conn {
    pub stream: TcpStream,
    pub peer: Peer,
    pub transport: Transport,
    pub decoder: LineDecoder,
    /// telnet's commands, taken out of what it sends.
    pub telnet: Telnet,
    pub out: OutQueue,
    /// What is registered with the poller now.
    pub interest: Option<Interest>,
    /// Set once the core closed it or the peer sent EOF: no more reads; flush,
    /// then close by this deadline (kept in the reactor's lingering list).
    pub closing: Option<DeadlineTag>,
    /// Reaped at the end of the iteration.
    pub dead: bool,
    /// Already in the reactor's dirty list: a connection is flushed once
    /// per iteration however many lines it was given (a fan-out of 1,000
    /// messages would otherwise list each recipient 1,000 times).
    pub dirty: bool,
    /// Already in the reactor's read-again list: a connection is queued at
    /// most once, or the list grows with every turn and the same sockets are
    /// read over and over (found under the giant-lines attack: 3,507 entries
    /// for 200 connections, 70-100 ms loop turns).
    pub in_again: bool,
    /// Lines were queued this turn: the prompt, if any, follows them.
    pub fresh: bool,
    /// A WebSocket's ping sweeps since its browser last sent anything
    /// (pongs included): pinged at the third, cut off at the fifth. Sweeps
    /// come every half interval, so that is silent for more than one
    /// interval and more than two.
    pub quiet_sweeps: u8,
    /// A plain connection's first bytes were checked for a TLS handshake
    /// sent to the plain port by mistake.
    pub looked: bool,
    pub layer: Layer,
}

/// What one read from a connection gave.
pub enum Got {
    /// `n` bytes of plain text in the scratch buffer.
    Data(usize),
    /// Nothing now.
    WouldBlock,
    /// The peer finished sending (EOF or TLS close_notify).
    Eof,
    /// The connection is unusable; the reason, for the log.
    Failed(String),
    /// A protocol mismatch the peer is told about in words before it is
    /// cut off (TLS on the plain port, plain text on the TLS port).
    WrongPort(&'static [u8], &'static str),
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        peer: Peer,
        transport: Transport,
        decoder: LineDecoder,
        layer: Layer,
    ) -> Conn {
        Conn {
            stream,
            peer,
            transport,
            decoder,
            telnet: Telnet::default(),
            out: OutQueue::default(),
            interest: Some(Interest::READABLE),
            closing: None,
            dead: false,
            dirty: false,
            in_again: false,
            fresh: false,
            quiet_sweeps: 0,
            looked: false,
            layer,
        }
    }

    /// Says something to a peer that is about to be cut off, outside its
    /// queue (which is full or about to be dropped): best effort, never
    /// blocking.
    pub fn say_raw(&mut self, msg: &[u8]) {
        let framed;
        let msg = match &self.layer {
            Layer::Ws(_) => {
                framed = crate::web::ws::text_frames(msg);
                &framed[..]
            }
            Layer::Http(_) | Layer::WsClosing => return,
            Layer::Lines | Layer::Sniff { .. } => msg,
        };
        match &mut self.transport {
            Transport::Tls(t) => {
                if !t.session.is_handshaking() {
                    let _ = t.session.writer().write(msg);
                    let _ = t.session.write_tls(&mut self.stream);
                }
            }
            Transport::Plain => {
                let _ = self.stream.write(msg);
            }
        }
    }

    /// Reads once into `buf`, through TLS if it is a TLS connection. For
    /// TLS, `Data` is plaintext rustls had ready; `bytes_in` counts the
    /// bytes read from the socket.
    pub fn read(&mut self, buf: &mut [u8], bytes_in: &mut u64) -> Got {
        match &mut self.transport {
            Transport::Plain => match self.stream.read(buf) {
                Ok(0) => Got::Eof,
                Ok(n) => {
                    *bytes_in += n as u64;
                    if !self.looked {
                        self.looked = true;
                        if n >= 2 && buf.first() == Some(&0x16) && buf.get(1) == Some(&0x03) {
                            return Got::WrongPort(
                                b"!!! this port speaks plain text, not TLS: connect with nc or telnet\n",
                                "TLS on plain-text port",
                            );
                        }
                    }
                    Got::Data(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Got::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Got::Data(0),
                Err(e) => Got::Failed(e.to_string()),
            },
            Transport::Tls(t) => read_tls(&mut self.stream, t, buf, bytes_in),
        }
    }

    /// Writes as much of the queue as the socket takes, stopping once about
    /// `budget` bytes went; returns the bytes written to the socket.
    pub fn write(&mut self, budget: usize) -> io::Result<usize> {
        let hold = self.layer.holds_output();
        match &mut self.transport {
            Transport::Plain if hold => Ok(0),
            Transport::Plain => self.out.write_vectored_to(&mut self.stream, budget),
            Transport::Tls(t) => write_tls(
                &mut self.stream,
                &mut t.session,
                &mut self.out,
                budget,
                hold,
            ),
        }
    }

    /// Called once the queue is empty on a closing connection: sends TLS's
    /// close_notify once. True when nothing more is to be written.
    pub fn finish_close(&mut self) -> bool {
        match &mut self.transport {
            Transport::Plain => true,
            Transport::Tls(t) => {
                if !t.close_sent && !t.session.is_handshaking() {
                    t.close_sent = true;
                    t.session.send_close_notify();
                    let _ = write_tls(
                        &mut self.stream,
                        &mut t.session,
                        &mut self.out,
                        TLS_BUFFER,
                        false,
                    );
                }
                !t.session.wants_write()
            }
        }
    }

    /// Interest follows state: WRITABLE only while something can be
    /// written (a TLS connection whose plaintext waits for its handshake
    /// waits on reading); only WRITABLE while closing.
    pub fn wanted_interest(&self) -> Interest {
        let queued = !self.out.is_empty() && !self.layer.holds_output();
        let can_write = match &self.transport {
            Transport::Tls(t) => t.session.wants_write() || (queued && !t.session.is_handshaking()),
            Transport::Plain => queued,
        };
        match (self.closing.is_some(), can_write) {
            (false, false) => Interest::READABLE,
            (false, true) => Interest::READABLE | Interest::WRITABLE,
            (true, _) => Interest::WRITABLE,
        }
    }

    /// A TLS connection rustls has records for (handshake replies, alerts).
    pub fn tls_wants_write(&self) -> bool {
        matches!(&self.transport, Transport::Tls(t) if t.session.wants_write())
    }
}

/// One step of a TLS read: plaintext rustls has ready first; otherwise
/// records from the socket into rustls.
fn read_tls(stream: &mut TcpStream, t: &mut Tls, buf: &mut [u8], bytes_in: &mut u64) -> Got {
    match t.session.reader().read(buf) {
        Ok(0) => return Got::Eof,
        Ok(n) => return Got::Data(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Got::Failed(format!("TLS: {e}")),
    }
    if !t.peeked {
        // A person typing at the TLS port with plain nc deserves a sentence,
        // not a TLS alert.
        let mut first = [0u8; 1];
        match stream.peek(&mut first) {
            Ok(1) if first != [0x16] => {
                return Got::WrongPort(
                    b"!!! this port speaks TLS: connect with ncat --ssl, openssl s_client or chatc --tls\n",
                    "plain text on TLS port",
                );
            }
            Ok(_) => t.peeked = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Got::WouldBlock,
            Err(_) => t.peeked = true,
        }
    }
    match t.session.read_tls(stream) {
        Ok(0) => Got::Eof,
        Ok(n) => {
            *bytes_in += n as u64;
            if let Err(e) = t.session.process_new_packets() {
                // Best effort: the alert that says why.
                let _ = t.session.write_tls(stream);
                return Got::Failed(format!("TLS: {e}"));
            }
            // Plaintext, if any, is read on the next call.
            Got::Data(0)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Got::WouldBlock,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Got::Data(0),
        Err(e) => Got::Failed(e.to_string()),
    }
}

/// For a TLS connection: sends the records rustls has ready, moves more of
/// the queue in as plaintext (rustls holds at most `TLS_BUFFER`), and
/// repeats until the socket or rustls is full; returns the bytes written to
/// the socket. `hold`: only rustls's own records go (the queue waits).
fn write_tls(
    stream: &mut TcpStream,
    tls: &mut rustls::ServerConnection,
    out: &mut OutQueue,
    budget: usize,
    hold: bool,
) -> io::Result<usize> {
    let mut total = 0;
    loop {
        if total >= budget {
            return Ok(total);
        }
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return Err(write_zero()),
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if hold {
            return Ok(total);
        }
        let Some(part) = out.front() else {
            return Ok(total);
        };
        let n = tls.writer().write(part)?;
        if n == 0 {
            // rustls is full: its handshake is not done yet.
            return Ok(total);
        }
        out.consume(n);
    }
}

#[cfg(test)]
mod tests {
    /// The slab holds one `Conn` per connection, idle or not (issue 21:
    /// 224 bytes before it was trimmed, 200, then 184 with 32-bit counts
    /// in the decoder and the output queue, 176, then 128 once the peer's
    /// address, the deadlines, the transport and the decoder's partial line
    /// were packed).
    #[test]
    fn a_connection_fits_its_budget() {
        let size = std::mem::size_of::<super::Conn>();
        // mio's socket carries a selector id in debug builds, to check
        // registrations: 8 bytes the daemon as shipped does not have.
        let budget = if cfg!(debug_assertions) { 136 } else { 128 };
        assert!(size <= budget, "Conn grew to {size} bytes");
    }

    #[test]
    fn a_peer_keeps_its_address_and_port() {
        for a in [
            "127.0.0.1:9999",
            "[::1]:9999",
            "[2001:db8::7]:1",
            "10.1.2.3:65535",
        ] {
            let addr: std::net::SocketAddr = a.parse().expect("an address");
            let p = super::Peer::from(addr);
            assert_eq!(p.addr(), addr);
            assert_eq!(p.ip(), addr.ip());
            assert_eq!(p.to_string(), a);
        }
    }

    #[test]
    fn a_deadline_tag_tells_deadlines_apart_and_is_never_zero() {
        use super::DeadlineTag;
        use std::time::{Duration, Instant};
        let epoch = Instant::now();
        let at = epoch + Duration::from_millis(1500);
        assert_eq!(DeadlineTag::new(at, epoch), DeadlineTag::new(at, epoch));
        assert_ne!(
            DeadlineTag::new(at, epoch),
            DeadlineTag::new(at + Duration::from_millis(1), epoch)
        );
        // At the epoch itself (or before it) the tag is still a tag.
        let zero = DeadlineTag::new(epoch, epoch);
        assert_eq!(
            Some(zero),
            Some(DeadlineTag::new(epoch, epoch + Duration::from_secs(1)))
        );
        assert_eq!(std::mem::size_of::<Option<DeadlineTag>>(), 4);
    }

    /// An idle connection holds no queue, so every burst (a welcome, a
    /// join's lines) starts from none: it gets a burst's worth of slots at
    /// once instead of growing through 4 and 8 (issue 21: churn).
    #[test]
    fn a_burst_into_an_empty_queue_allocates_once() {
        let line = crate::core::Bytes::from(&b"*** hello\n"[..]);
        let mut q = super::OutQueue::default();
        let before = crate::heapcount::live();
        q.push(line.clone());
        let first = crate::heapcount::live();
        assert_eq!(first.0 - before.0, (super::FIRST_SLOTS * 8) as isize);
        for _ in 1..super::FIRST_SLOTS {
            q.push(line.clone());
        }
        assert_eq!(crate::heapcount::live(), first, "no growth within a burst");
        q.clear();
        q.release_idle();
        assert_eq!(crate::heapcount::live(), before);
    }

    /// A burst into a big room queues a slot per line on every recipient:
    /// one pointer each (issue 21: `Rc<[u8]>`'s 16 bytes made the queues of
    /// a 1,000-member fan-out 64 MB at their peak, and growing them into
    /// fresh pages was a tenth of the server's time).
    #[test]
    fn a_queued_line_costs_its_queue_one_pointer() {
        let line = crate::core::Bytes::from(&b"#bench <s1> hello\n"[..]);
        let mut q = super::OutQueue::default();
        let before = crate::heapcount::live();
        for _ in 0..4096 {
            q.push(line.clone());
        }
        let after = crate::heapcount::live();
        assert_eq!(after.0 - before.0, 4096 * 8, "bytes asked for 4,096 slots");
        assert_eq!(q.len(), 4096 * 18);
        q.clear();
        q.release_idle();
        assert_eq!(
            crate::heapcount::live().0,
            before.0,
            "an emptied queue is freed"
        );
    }
}
