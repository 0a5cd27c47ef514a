//! Performance scenarios: `idle`, `fanout`, `churn`, for chatd or (with
//! `--irc`) any IRC daemon, so that the same load can be compared.
//!
//! A message is recognised by its text alone — `b<run> <sender> <seq>
//! <send-time-µs>` — so the tool needs nothing from the server but a room.
//!
//! The tool must be faster than what it measures, or every server looks
//! alike. So:
//!
//! * connections are set up by a pool of threads at once (ngircd, for one,
//!   answers a new client's registration only after a pause of about a
//!   second; one at a time, 10,000 connections would take hours);
//! * all receivers share one mio poll on one thread, which is draining them
//!   from the moment each has joined (an IRC room announces every join to
//!   every member, and a receiver that does not read would be cut off or
//!   would bloat the server's queues before the run starts);
//! * the receiver does not split lines: it searches each read for the run's
//!   token with `memchr::memmem` and parses the three numbers after it by
//!   hand, keeping only an unfinished last line between reads;
//! * send times are microseconds on one monotonic clock the whole process
//!   shares;
//! * server CPU comes from `se.sum_exec_runtime` in `/proc/PID/task/*/sched`
//!   (microsecond resolution; ticks, at 10 ms, are too coarse for a run of a
//!   fraction of a second), falling back to `/proc/PID/stat`.
//!
//! Senders are threads that also drain what they are sent (a sender that
//! never reads is rightly cut off as a slow reader).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use memchr::memmem;
use mio::{Events, Interest, Poll, Token, Waker};

use super::{Proc, pct};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Chatd,
    Irc,
    /// chatd's protocol over a WebSocket, as the browser client speaks it.
    Ws,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Dialect::Chatd => "chatd",
            Dialect::Irc => "irc",
            Dialect::Ws => "ws",
        }
    }
}

/// A tag unique to this run, so nicks and tokens never meet an earlier
/// run's (an IRC daemon may still be processing the last run's quits).
fn run_tag() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(16)
        });
    format!("{:08x}", ns ^ std::process::id().rotate_left(8))
}

/// Microseconds since the first call, on a clock every thread shares.
fn mono_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let e = EPOCH.get_or_init(Instant::now);
    u64::try_from(e.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Connects, names itself and joins `room`, answering PINGs on the way.
/// Returns the stream once the server confirmed the join.
pub fn join(addr: SocketAddr, d: Dialect, nick: &str, room: &str) -> io::Result<TcpStream> {
    join_within(addr, d, nick, room, None, Duration::from_secs(30))
}

/// [`join`], and for IRC optionally `OPER name pass` then user mode `+F`
/// (ngircd's relaxed flood protection, which only operators may set).
pub fn join_as(
    addr: SocketAddr,
    d: Dialect,
    nick: &str,
    room: &str,
    oper: Option<&str>,
) -> io::Result<TcpStream> {
    // ngircd, joining a crowd into one room, can take minutes to answer.
    join_within(addr, d, nick, room, oper, Duration::from_secs(300))
}

/// [`join_as`], giving up when the server is silent for `patience`.
fn join_within(
    addr: SocketAddr,
    d: Dialect,
    nick: &str,
    room: &str,
    oper: Option<&str>,
    patience: Duration,
) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(patience))?;
    if d == Dialect::Ws {
        return join_ws(s, addr, nick, room);
    }
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s.try_clone()?);
    match d {
        Dialect::Chatd => w.write_all(format!("{nick}\n/join {room}\n").as_bytes())?,
        Dialect::Irc => {
            w.write_all(format!("NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n").as_bytes())?
        }
        Dialect::Ws => {}
    }
    let mut line = String::new();
    let mut registered = d != Dialect::Irc;
    let joined_chatd = format!("*** {nick} joined {room}");
    let joined_irc = format!(":{nick}!");
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::other(format!(
                "{nick}: closed during the handshake"
            )));
        }
        let l = line.trim_end();
        match d {
            Dialect::Chatd | Dialect::Ws => {
                if l == joined_chatd {
                    break;
                }
                if l.starts_with("!!!") {
                    return Err(io::Error::other(format!("{nick}: {l}")));
                }
            }
            Dialect::Irc => {
                if let Some(p) = l.strip_prefix("PING ") {
                    w.write_all(format!("PONG {p}\r\n").as_bytes())?;
                } else if !registered && l.split(' ').nth(1) == Some("001") {
                    registered = true;
                    if let Some((name, pass)) = oper.and_then(|o| o.split_once(':')) {
                        w.write_all(
                            format!("OPER {name} {pass}\r\nMODE {nick} +F\r\n").as_bytes(),
                        )?;
                    }
                    w.write_all(format!("JOIN {room}\r\n").as_bytes())?;
                } else if l.starts_with(&joined_irc) && l.contains(" JOIN ") {
                    break;
                } else if l.starts_with("ERROR")
                    // Error numerics are 4xx; 422 only says there is no MOTD.
                    || l
                        .split(' ')
                        .nth(1)
                        .is_some_and(|c| c.len() == 3 && c.starts_with('4') && c != "422")
                {
                    return Err(io::Error::other(format!("{nick}: {l}")));
                }
            }
        }
    }
    // Whatever the reader buffered past the join line is dropped: it is
    // notices, never a measured message (none has been sent yet).
    s.set_read_timeout(None)?;
    Ok(s)
}

/// [`join_within`] over a WebSocket: the upgrade, the nick and the join as
/// frames, then frames until the machine-format join line.
fn join_ws(mut s: TcpStream, addr: SocketAddr, nick: &str, room: &str) -> io::Result<TcpStream> {
    let mut first = crate::ws::handshake(&mut s, addr)?;
    s.write_all(&crate::ws::frames(
        format!("{nick}\n/join {room}\n").as_bytes(),
    ))?;
    let want = format!("join {room} {nick}");
    let mut u = crate::ws::Unframer::default();
    let mut lines = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = if first.is_empty() {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::other(format!(
                    "{nick}: closed during the handshake"
                )));
            }
            n
        } else {
            let n = first.len().min(chunk.len());
            chunk
                .get_mut(..n)
                .unwrap_or(&mut [])
                .copy_from_slice(first.get(..n).unwrap_or(&[]));
            first.drain(..n);
            n
        };
        u.feed(chunk.get(..n).unwrap_or(&[]), &mut lines);
        for l in lines.split(|&b| b == b'\n') {
            if l == want.as_bytes() {
                s.set_read_timeout(None)?;
                return Ok(s);
            }
            if l.starts_with(b"err ") {
                return Err(io::Error::other(format!(
                    "{nick}: {}",
                    String::from_utf8_lossy(l)
                )));
            }
        }
        let keep = memchr::memrchr(b'\n', &lines).map_or(0, |p| p + 1);
        lines.drain(..keep);
    }
}

/// [`join_as`], again (up to 5 times) if the server reset or dropped the
/// connection before it was in: a daemon with a short listen backlog (ngircd
/// listens with 10) drops connections that arrive while it is busy, and
/// setting up is not what is measured.
fn join_retrying(
    addr: SocketAddr,
    d: Dialect,
    nick: &str,
    room: &str,
    oper: Option<&str>,
) -> io::Result<TcpStream> {
    let mut tries = 0;
    loop {
        match join_as(addr, d, nick, room, oper) {
            Err(e)
                if tries < 5
                    && (matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    ) || e.to_string().contains("closed during the handshake")) =>
            {
                tries += 1;
                thread::sleep(Duration::from_millis(200 * tries));
            }
            r => return r,
        }
    }
}

/// Joins connections `0..n` (nick and room from `name(i)`) with up to
/// `workers` threads at once, handing each to `done` as soon as it is in.
/// Connection `i` goes to `addrs[i % addrs.len()]` (the nodes of a cluster).
/// Stops at the first failure and returns it.
fn join_parallel(
    addrs: &[SocketAddr],
    d: Dialect,
    n: usize,
    workers: usize,
    name: &(dyn Fn(usize) -> (String, String) + Sync),
    oper: Option<&str>,
    done: &(dyn Fn(usize, TcpStream) + Sync),
) -> Result<(), String> {
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    thread::scope(|sc| {
        for _ in 0..workers.clamp(1, n.max(1)) {
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(sc, || {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return;
                        }
                        let (nick, room) = name(i);
                        let Some(&addr) = addrs.get(i % addrs.len().max(1)) else {
                            return;
                        };
                        match join_retrying(addr, d, &nick, &room, oper) {
                            Ok(s) => done(i, s),
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                if let Ok(mut f) = failed.lock() {
                                    f.get_or_insert(format!("connection {i} ({nick}): {e}"));
                                }
                                return;
                            }
                        }
                    }
                })
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })?;
    match failed.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Reads and drops everything, answering PINGs, until the socket closes.
fn drain(s: TcpStream) {
    let Ok(w) = s.try_clone() else { return };
    let mut w = w;
    let mut r = BufReader::new(s);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if let Some(p) = line.strip_prefix(b"PING ") {
                    let mut pong = b"PONG ".to_vec();
                    pong.extend_from_slice(p);
                    let _ = w.write_all(&pong);
                }
            }
        }
    }
}

/// Answers every `PING ` that starts a line in `data` on `w`.
fn answer_pings(data: &[u8], w: &mut impl Write) {
    for at in memmem::find_iter(data, b"PING ") {
        if at != 0 && data.get(at - 1) != Some(&b'\n') {
            continue;
        }
        let rest = data.get(at + 5..).unwrap_or(&[]);
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |e| e + 1);
        let mut pong = b"PONG ".to_vec();
        pong.extend_from_slice(rest.get(..end).unwrap_or(&[]));
        let _ = w.write_all(&pong);
    }
}

/// Parses an unsigned decimal at the start of `s`; returns it and the rest.
fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut v = 0u64;
    for &b in s.get(..digits)? {
        v = v * 10 + u64::from(b - b'0');
    }
    Some((v, s.get(digits..)?))
}

/// `<sender> <seq> <time>` after a token.
fn fields(s: &[u8]) -> Option<(usize, usize, u64)> {
    let (si, s) = number(s)?;
    let (seq, s) = number(s.strip_prefix(b" ")?)?;
    let (ts, _) = number(s.strip_prefix(b" ")?)?;
    Some((usize::try_from(si).ok()?, usize::try_from(seq).ok()?, ts))
}

pub struct FanoutArgs {
    /// The server, or the nodes of a cluster: receivers and senders are
    /// spread over them in turn.
    pub addrs: Vec<SocketAddr>,
    pub dialect: Dialect,
    pub receivers: usize,
    pub senders: usize,
    pub messages: usize,
    /// Messages per second for all senders together; 0: as fast as allowed.
    pub rate: f64,
    pub pid: Proc,
    pub timeout: Duration,
    /// IRC `name:pass` for senders to become operators and set +F.
    pub oper: Option<String>,
    /// Threads setting up connections at once.
    pub join_workers: usize,
}

/// One receiver: what is left of an unfinished line, and which messages
/// arrived (a count each, to see duplicates).
struct Receiver {
    stream: mio::net::TcpStream,
    partial: Vec<u8>,
    seen: Vec<u8>,
    /// `--ws`: frames back into lines.
    unframer: Option<crate::ws::Unframer>,
}

/// What the receiving side counted.
#[derive(Default)]
struct Tally {
    unique: u64,
    dups: u64,
    lat_us: Vec<u32>,
    last_delivery: Option<Instant>,
}

impl Tally {
    /// Counts every token occurrence in `data` (complete lines only).
    fn scan(
        &mut self,
        data: &[u8],
        finder: &memmem::Finder<'_>,
        per_sender: usize,
        seen: &mut [u8],
        now_us: u64,
    ) -> bool {
        let mut any = false;
        for at in finder.find_iter(data) {
            let Some((si, seq, ts)) = data.get(at + finder.needle().len()..).and_then(fields)
            else {
                continue;
            };
            let Some(slot) = si
                .checked_mul(per_sender)
                .and_then(|b| b.checked_add(seq))
                .filter(|_| seq < per_sender)
                .and_then(|i| seen.get_mut(i))
            else {
                continue;
            };
            if *slot == 0 {
                self.unique += 1;
                self.lat_us
                    .push(u32::try_from(now_us.saturating_sub(ts)).unwrap_or(u32::MAX));
            } else {
                self.dups += 1;
            }
            *slot = slot.saturating_add(1);
            any = true;
        }
        any
    }
}

const WAKE: Token = Token(usize::MAX);

/// The receiving side of a fan-out: every receiver on one poll, drained
/// whenever it is pumped, counted only once the run has started.
struct Inbox {
    poll: Poll,
    events: Events,
    receivers: Vec<Option<Receiver>>,
    tally: Tally,
    /// One read buffer for all receivers; an unfinished line is carried in
    /// the receiver's `partial`.
    chunk: Vec<u8>,
    finder: memmem::Finder<'static>,
    per_sender: usize,
    /// Messages in the run, for each receiver's `seen`.
    total: usize,
    irc: bool,
    ws: bool,
}

impl Inbox {
    fn add(&mut self, i: usize, s: TcpStream) -> Result<bool, String> {
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut stream = mio::net::TcpStream::from_std(s);
        self.poll
            .registry()
            .register(&mut stream, Token(i), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        let Some(slot) = self.receivers.get_mut(i) else {
            return Ok(false);
        };
        *slot = Some(Receiver {
            stream,
            partial: Vec::new(),
            seen: vec![0; self.total],
            unframer: self.ws.then(crate::ws::Unframer::default),
        });
        Ok(true)
    }

    /// Waits up to `timeout` for data, reads everything that came, and
    /// (when `counting`) tallies the messages in it.
    fn pump(&mut self, counting: bool, timeout: Duration) -> Result<(), String> {
        self.poll
            .poll(&mut self.events, Some(timeout))
            .map_err(|e| e.to_string())?;
        let chunk = &mut self.chunk;
        for ev in self.events.iter() {
            let Some(Some(r)) = self.receivers.get_mut(ev.token().0) else {
                continue;
            };
            if let Some(u) = r.unframer.as_mut() {
                // Frames: their text, a newline after each, into `partial`.
                loop {
                    let n = match r.stream.read(chunk) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    if u.feed(chunk.get(..n).unwrap_or(&[]), &mut r.partial) > 0 {
                        let _ = r.stream.write_all(&crate::ws::pong());
                    }
                    let complete = memchr::memrchr(b'\n', &r.partial).map_or(0, |p| p + 1);
                    if counting
                        && self.tally.scan(
                            r.partial.get(..complete).unwrap_or(&[]),
                            &self.finder,
                            self.per_sender,
                            &mut r.seen,
                            mono_us(),
                        )
                    {
                        self.tally.last_delivery = Some(Instant::now());
                    }
                    r.partial.drain(..complete);
                    if n < chunk.len() {
                        break;
                    }
                }
                continue;
            }
            loop {
                let keep = r.partial.len().min(chunk.len() / 2);
                if let (Some(dst), Some(src)) = (chunk.get_mut(..keep), r.partial.get(..keep)) {
                    dst.copy_from_slice(src);
                }
                r.partial.clear();
                let room = chunk.len() - keep;
                let n = match r.stream.read(chunk.get_mut(keep..).unwrap_or(&mut [])) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let data = chunk.get(..keep + n).unwrap_or(&[]);
                let complete = memchr::memrchr(b'\n', data).map_or(0, |p| p + 1);
                let (done, rest) = data.split_at(complete);
                r.partial.extend_from_slice(rest);
                if self.irc {
                    answer_pings(done, &mut r.stream);
                }
                if counting
                    && self
                        .tally
                        .scan(done, &self.finder, self.per_sender, &mut r.seen, mono_us())
                {
                    self.tally.last_delivery = Some(Instant::now());
                }
                // A short read emptied the socket: TCP returns all it has.
                // Data arriving later raises a new edge, so the read that
                // would only say WouldBlock is saved (half the calls).
                if n < room {
                    break;
                }
            }
        }
        Ok(())
    }
}

pub fn fanout(a: FanoutArgs) -> Result<String, String> {
    let run = run_tag();
    let short = run.get(4..).unwrap_or("0000").to_string();
    let room = format!("#bench{}", run.get(..6).unwrap_or("0"));
    let token = format!("b{run} ");
    let per_sender = a.messages.div_ceil(a.senders.max(1));
    let total = per_sender * a.senders;
    let poll = Poll::new().map_err(|e| e.to_string())?;
    let waker = Waker::new(poll.registry(), WAKE).map_err(|e| e.to_string())?;
    let mut inbox = Inbox {
        poll,
        events: Events::with_capacity(4096),
        receivers: (0..a.receivers).map(|_| None).collect(),
        tally: Tally {
            lat_us: Vec::with_capacity((total * a.receivers).min(50_000_000)),
            ..Tally::default()
        },
        chunk: vec![0u8; 256 * 1024],
        finder: memmem::Finder::new(token.as_bytes()).into_owned(),
        per_sender,
        total,
        irc: a.dialect == Dialect::Irc,
        ws: a.dialect == Dialect::Ws,
    };

    // Receivers join on worker threads and are drained here from the start.
    let (tx, rx) = mpsc::channel::<(usize, TcpStream)>();
    let t_join = Instant::now();
    let waker = Arc::new(waker);
    let joiner = {
        let tx = Mutex::new(tx);
        let (addrs, d, n, workers) = (a.addrs.clone(), a.dialect, a.receivers, a.join_workers);
        let (room, short, waker) = (room.clone(), short.clone(), waker.clone());
        thread::spawn(move || {
            let r = join_parallel(
                &addrs,
                d,
                n,
                workers,
                &|i| (format!("r{i}x{short}"), room.clone()),
                None,
                &|i, s| {
                    if let Ok(tx) = tx.lock() {
                        let _ = tx.send((i, s));
                    }
                    let _ = waker.wake();
                },
            );
            let _ = waker.wake();
            r
        })
    };
    let mut joined = 0usize;
    loop {
        let finished = joiner.is_finished();
        inbox.pump(false, Duration::from_millis(50))?;
        for (i, s) in rx.try_iter() {
            if inbox.add(i, s)? {
                joined += 1;
            }
        }
        // Checked before the channel was emptied, so nothing sent is left.
        if finished {
            break;
        }
    }
    joiner
        .join()
        .unwrap_or_else(|_| Err("join thread panicked".into()))?;
    if joined < a.receivers {
        return Err(format!("only {joined} of {} receivers joined", a.receivers));
    }
    let mut senders = Vec::new();
    let sender_streams = Mutex::new(Vec::new());
    join_parallel(
        &a.addrs,
        a.dialect,
        a.senders,
        a.join_workers,
        &|i| (format!("s{i}x{short}"), room.clone()),
        a.oper.as_deref(),
        &|i, s| {
            if let Ok(mut v) = sender_streams.lock() {
                v.push((i, s));
            }
        },
    )?;
    let mut streams = sender_streams.into_inner().map_err(|e| e.to_string())?;
    streams.sort_by_key(|(i, _)| *i);
    for (_, s) in streams {
        let d = s.try_clone().map_err(|e| e.to_string())?;
        thread::spawn(move || drain(d));
        senders.push(s);
    }
    let join_secs = t_join.elapsed().as_secs_f64();
    // Let join notices settle (still draining) before the clock starts.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        inbox.pump(false, Duration::from_millis(20))?;
    }
    let cpu0 = a.pid.cpu_secs();
    let ticks0 = a.pid.user_kernel_ticks();
    let go = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let hold = Arc::new(AtomicBool::new(true));
    let mut handles = Vec::new();
    for (si, mut s) in senders.into_iter().enumerate() {
        let (go, sent, hold, token, room) = (
            go.clone(),
            sent.clone(),
            hold.clone(),
            token.clone(),
            room.clone(),
        );
        let (dialect, rate, n, nsend) = (a.dialect, a.rate, per_sender, a.senders);
        handles.push(thread::spawn(move || {
            while !go.load(Ordering::Relaxed) {
                thread::yield_now();
            }
            let start = Instant::now();
            let per_sender_rate = rate / nsend.max(1) as f64;
            let mut line = String::with_capacity(128);
            for seq in 0..n {
                if per_sender_rate > 0.0 {
                    let due = start + Duration::from_secs_f64(seq as f64 / per_sender_rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                }
                line.clear();
                let text = format!("{token}{si} {seq} {}", mono_us());
                match dialect {
                    Dialect::Chatd => {
                        line.push_str(&text);
                        line.push('\n');
                    }
                    Dialect::Irc => {
                        line.push_str("PRIVMSG ");
                        line.push_str(&room);
                        line.push_str(" :");
                        line.push_str(&text);
                        line.push_str("\r\n");
                    }
                    Dialect::Ws => {}
                }
                let written = if dialect == Dialect::Ws {
                    s.write_all(&crate::ws::frame(text.as_bytes()))
                } else {
                    s.write_all(line.as_bytes())
                };
                if written.is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            // Keep the connection until the receivers are done.
            while hold.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = s.shutdown(Shutdown::Both);
        }));
    }
    let t0 = Instant::now();
    go.store(true, Ordering::Relaxed);
    let expected = (total * a.receivers) as u64;
    let deadline = t0 + a.timeout;
    let mut sends_done: Option<Instant> = None;
    while inbox.tally.unique < expected && Instant::now() < deadline {
        // Stop waiting once the senders are done and nothing has come for 5 s.
        if sends_done.is_none() && sent.load(Ordering::Relaxed) as usize >= total {
            sends_done = Some(Instant::now());
        }
        let quiet_since = inbox.tally.last_delivery.max(sends_done);
        if sends_done.is_some() && quiet_since.is_some_and(|t| t.elapsed() > Duration::from_secs(5))
        {
            break;
        }
        inbox.pump(true, Duration::from_millis(100))?;
    }
    let cpu1 = a.pid.cpu_secs();
    let ticks = a
        .pid
        .user_kernel_ticks()
        .zip(ticks0)
        .map(|((u1, k1), (u0, k0))| (u1.saturating_sub(u0), k1.saturating_sub(k0)));
    let mut tally = std::mem::take(&mut inbox.tally);
    let elapsed = tally
        .last_delivery
        .unwrap_or(t0)
        .saturating_duration_since(t0)
        .as_secs_f64()
        .max(1e-6);
    hold.store(false, Ordering::Relaxed);
    for r in inbox.receivers.iter_mut().flatten() {
        let _ = r.stream.shutdown(Shutdown::Both);
    }
    for h in handles {
        let _ = h.join();
    }
    let cpu = cpu1.zip(cpu0).map(|(b, a)| (b - a).max(0.0));
    let unique = tally.unique;
    let mut lat = std::mem::take(&mut tally.lat_us);
    lat.sort_unstable();
    let lat: Vec<u64> = lat.iter().map(|&x| u64::from(x)).collect();
    let rate = unique as f64 / elapsed;
    let cpu_per_m = cpu.map(|c| c / (unique.max(1) as f64 / 1e6));
    Ok(format!(
        "{{\"scenario\":\"fanout\",\"dialect\":\"{}\",\"receivers\":{},\"senders\":{},\"messages\":{total},\"rate\":{},\"join_seconds\":{join_secs:.2},\"deliveries\":{unique},\"expected\":{expected},\"lost\":{},\"duplicated\":{},\"seconds\":{elapsed:.3},\"deliveries_per_sec\":{rate:.0},\"p50_ms\":{:.2},\"p90_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2},\"server_cpu_s\":{},\"cpu_s_per_million\":{},\"server_user_s\":{},\"server_kernel_s\":{}}}",
        a.dialect.name(),
        a.receivers,
        a.senders,
        a.rate,
        expected - unique,
        tally.dups,
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        cpu.map_or("null".into(), |c| format!("{c:.4}")),
        cpu_per_m.map_or("null".into(), |c| format!("{c:.4}")),
        ticks.map_or("null".into(), |(u, _)| format!("{:.2}", u as f64 / 100.0)),
        ticks.map_or("null".into(), |(_, k)| format!("{:.2}", k as f64 / 100.0)),
    ))
}

/// Holds connections and throws away whatever they are sent (answering
/// PINGs), on one thread, so that nothing backs up in the server while it
/// is measured.
struct Holder {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Holder {
    fn start(streams: Vec<TcpStream>, ws: bool) -> Result<Holder, String> {
        let mut poll = Poll::new().map_err(|e| e.to_string())?;
        let mut held = Vec::with_capacity(streams.len());
        for (i, s) in streams.into_iter().enumerate() {
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            let mut m = mio::net::TcpStream::from_std(s);
            poll.registry()
                .register(&mut m, Token(i), Interest::READABLE)
                .map_err(|e| e.to_string())?;
            held.push(m);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = thread::spawn(move || {
            let mut events = Events::with_capacity(1024);
            let mut buf = vec![0u8; 64 * 1024];
            let mut unframers: std::collections::HashMap<usize, crate::ws::Unframer> =
                std::collections::HashMap::new();
            let mut sink = Vec::new();
            while !s2.load(Ordering::Relaxed) {
                if poll
                    .poll(&mut events, Some(Duration::from_millis(50)))
                    .is_err()
                {
                    return;
                }
                for ev in events.iter() {
                    let i = ev.token().0;
                    let Some(s) = held.get_mut(i) else {
                        continue;
                    };
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) if ws => {
                                let u = unframers.entry(i).or_default();
                                if u.feed(buf.get(..n).unwrap_or(&[]), &mut sink) > 0 {
                                    let _ = s.write_all(&crate::ws::pong());
                                }
                                sink.clear();
                            }
                            Ok(n) => answer_pings(buf.get(..n).unwrap_or(&[]), s),
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                }
            }
        });
        Ok(Holder {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The daemon's memory at one moment (KiB; `None` without a pid).
#[derive(Clone, Copy)]
pub struct Memory {
    rss: Option<u64>,
    anon: Option<u64>,
}

impl Memory {
    pub fn of(p: &Proc) -> Memory {
        Memory {
            rss: p.rss_kib(),
            anon: p.anon_kib(),
        }
    }
}

/// The idle scenario's result line: memory per connection from /proc,
/// anonymous resident memory (`bytes_per_connection`) and all resident
/// memory (`rss_bytes_per_connection`, which also counts the program's code
/// paged in by the setup). `mid`: the connections joined at a first stop and
/// the memory then; what the rest cost each (`marginal_bytes_per_connection`)
/// leaves out what a server pays once (tables, allocator caches, the first
/// room), which spread over a few connections looks like a cost of each.
pub fn idle_line(
    dialect: &str,
    n: usize,
    room_size: usize,
    setup: f64,
    before: Memory,
    mid: Option<(usize, Memory)>,
    after: Memory,
) -> String {
    let kib = |v: Option<u64>| v.map_or("null".into(), |v| v.to_string());
    let per = |b: Option<u64>, a: Option<u64>, n: usize| match (b, a) {
        (Some(b), Some(a)) if n > 0 => {
            format!("{:.0}", (a.saturating_sub(b) as f64 * 1024.0) / n as f64)
        }
        _ => "null".into(),
    };
    let marginal = mid.map_or("null".into(), |(k, m)| {
        per(m.anon, after.anon, n.saturating_sub(k))
    });
    let mid_kib = mid.map_or("null".into(), |(_, m)| kib(m.anon));
    format!(
        "{{\"scenario\":\"idle\",\"dialect\":\"{dialect}\",\"connections\":{n},\"room_size\":{room_size},\"setup_seconds\":{setup:.2},\"rss_before_kib\":{},\"rss_after_kib\":{},\"anon_before_kib\":{},\"anon_mid_kib\":{mid_kib},\"anon_after_kib\":{},\"bytes_per_connection\":{},\"rss_bytes_per_connection\":{},\"marginal_bytes_per_connection\":{marginal}}}",
        kib(before.rss),
        kib(after.rss),
        kib(before.anon),
        kib(after.anon),
        per(before.anon, after.anon, n),
        per(before.rss, after.rss, n),
    )
}

/// Where the idle scenarios stop to measure first: half the connections,
/// rounded to whole rooms, so that the second half joins the same kind of
/// rooms (and, with one room, the same room) as the first.
pub fn idle_midpoint(n: usize, room_size: usize) -> usize {
    let half = n / 2;
    if room_size >= n {
        half
    } else {
        half - half % room_size.max(1)
    }
}

/// An idle scenario's two stops: joins the first [`idle_midpoint`]
/// connections (`join(from, count)` returns whatever holds them open), waits
/// `hold`, measures, joins the rest, waits, measures again; the result line
/// (see [`idle_line`]). Setup time leaves out the first wait.
pub fn idle_in_two_stops<H>(
    dialect: &str,
    n: usize,
    room_size: usize,
    p: &Proc,
    hold: Duration,
    join: impl Fn(usize, usize) -> Result<H, String>,
) -> Result<String, String> {
    let before = Memory::of(p);
    let t0 = Instant::now();
    let first = idle_midpoint(n, room_size);
    let first_half = join(0, first)?;
    thread::sleep(hold);
    let mid = Memory::of(p);
    let second_half = join(first, n - first)?;
    let setup = t0.elapsed().as_secs_f64() - hold.as_secs_f64();
    thread::sleep(hold);
    let after = Memory::of(p);
    drop((second_half, first_half));
    Ok(idle_line(
        dialect,
        n,
        room_size,
        setup,
        before,
        Some((first, mid)),
        after,
    ))
}

/// N connections named and joined, in rooms of `room_size`; memory per
/// connection (see [`idle_line`]), measured at half and at all of them.
pub fn idle(
    addr: SocketAddr,
    d: Dialect,
    n: usize,
    room_size: usize,
    p: Proc,
    hold: Duration,
    workers: usize,
) -> Result<String, String> {
    let run = run_tag();
    let ws = d == Dialect::Ws;
    idle_in_two_stops(d.name(), n, room_size, &p, hold, |from, count| {
        let held: Mutex<Vec<TcpStream>> = Mutex::new(Vec::with_capacity(count));
        join_parallel(
            &[addr],
            d,
            count,
            workers,
            &|i| {
                let i = from + i;
                (
                    format!("i{i}x{run}"),
                    format!("#idle{run}r{}", i / room_size.max(1)),
                )
            },
            None,
            &|_, s| {
                if let Ok(mut h) = held.lock() {
                    h.push(s);
                }
            },
        )?;
        Holder::start(held.into_inner().map_err(|e| e.to_string())?, ws)
    })
}

/// Connect, name, join, quit, as fast as `parallel` workers can, for
/// `seconds`. Workers share rooms `room_size` at a time: one big shared room
/// measures how a daemon announces joins to a crowd more than how it
/// handles connections.
pub fn churn(
    addr: SocketAddr,
    d: Dialect,
    parallel: usize,
    seconds: f64,
    room_size: usize,
    cycles: u64,
    pid: Proc,
) -> Result<String, String> {
    let run = run_tag();
    // With a bound, the workers claim cycles from one counter, so exactly
    // `cycles` are attempted however the parallel workers race.
    let claimed = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let cpu0 = pid.cpu_secs();
    let hs: Vec<_> = (0..parallel)
        .filter_map(|w| {
            let (done, failed, run) = (done.clone(), failed.clone(), run.clone());
            let claimed = claimed.clone();
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    let mut i = 0u64;
                    loop {
                        let more = if cycles > 0 {
                            claimed.fetch_add(1, Ordering::Relaxed) < cycles
                        } else {
                            Instant::now() < until
                        };
                        if !more {
                            break;
                        }
                        i += 1;
                        let nick = format!("c{w}x{i}y{run}");
                        let room = format!("#churn{}", w / room_size.max(1));
                        let ok = join(addr, d, &nick, &room).and_then(|mut s| {
                            let quit: Vec<u8> = match d {
                                Dialect::Irc => b"QUIT :bye\r\n".to_vec(),
                                Dialect::Chatd => b"/quit\n".to_vec(),
                                Dialect::Ws => crate::ws::frame(b"/quit"),
                            };
                            s.write_all(&quit)?;
                            s.set_read_timeout(Some(Duration::from_secs(10)))?;
                            let mut buf = [0u8; 4096];
                            while s.read(&mut buf)? > 0 {}
                            Ok(())
                        });
                        match ok {
                            Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
                .ok()
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    // The server's CPU per cycle: steadier than cycles/s, which the load
    // generator's own 1,000 threads on one core mostly decide.
    let cpu = cpu0.zip(pid.cpu_secs()).map(|(a, b)| b - a);
    let per = cpu.map(|c| c * 1e6 / n.max(1) as f64);
    Ok(format!(
        "{{\"scenario\":\"churn\",\"dialect\":\"{}\",\"parallel\":{parallel},\"room_size\":{room_size},\"seconds\":{secs:.2},\"cycles\":{n},\"failed\":{},\"cycles_per_sec\":{:.0},\"server_cpu_s\":{},\"cpu_us_per_cycle\":{}}}",
        d.name(),
        failed.load(Ordering::Relaxed),
        n as f64 / secs,
        cpu.map_or("null".into(), |c| format!("{c:.4}")),
        per.map_or("null".into(), |c| format!("{c:.1}")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_counts_tokens_duplicates_and_ignores_junk() {
        let finder = memmem::Finder::new(b"bff ");
        let mut seen = vec![0u8; 4];
        let mut t = Tally::default();
        let data =
            b"#r <s> bff 0 1 90\n:x PRIVMSG #r :bff 1 0 80\r\nbff 9 9 1\nbff 0 1 90\nbff x\n";
        assert!(t.scan(data, &finder, 2, &mut seen, 100));
        assert_eq!((t.unique, t.dups), (2, 1));
        assert_eq!(t.lat_us, vec![10, 20]);
        assert_eq!(seen, vec![0, 2, 1, 0]);
    }

    #[test]
    fn the_idle_midpoint_keeps_rooms_whole() {
        // One room: half its members first, the rest join the same room.
        assert_eq!(idle_midpoint(1000, 1000), 500);
        assert_eq!(idle_midpoint(1000, 5000), 500);
        // Rooms of 100: whole rooms in each half.
        assert_eq!(idle_midpoint(10_000, 100), 5000);
        assert_eq!(idle_midpoint(1050, 100), 500);
        assert_eq!(idle_midpoint(1, 1), 0);
    }

    #[test]
    fn the_marginal_cost_leaves_out_what_is_paid_once() {
        let kib = |anon| Memory {
            rss: Some(anon),
            anon: Some(anon),
        };
        // 200 KiB paid once by the first half, then 1 KiB per connection.
        let line = idle_line(
            "chatd",
            1000,
            1000,
            0.1,
            kib(100),
            Some((500, kib(800))),
            kib(1300),
        );
        assert!(line.contains("\"bytes_per_connection\":1229"), "{line}");
        assert!(
            line.contains("\"marginal_bytes_per_connection\":1024"),
            "{line}"
        );
        assert!(line.contains("\"anon_mid_kib\":800"), "{line}");
        let none = idle_line("chatd", 0, 1, 0.0, kib(1), None, kib(1));
        assert!(
            none.contains("\"marginal_bytes_per_connection\":null"),
            "{none}"
        );
        assert!(none.contains("\"bytes_per_connection\":null"), "{none}");
    }

    #[test]
    fn pings_at_line_starts_are_answered() {
        let mut out = Vec::new();
        answer_pings(b"PING :a\r\nx PING :no\nPING :b\n", &mut out);
        assert_eq!(out, b"PONG :a\r\nPONG :b\n");
    }
}
