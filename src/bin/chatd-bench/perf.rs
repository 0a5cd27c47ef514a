//! Performance scenarios: `idle`, `fanout`, `churn`, for chatd or (with
//! `--irc`) any IRC daemon, so that the same load can be compared.
//!
//! A message is recognised by its text alone — `b<run> <sender> <seq>
//! <send-time-µs>` — so the tool needs nothing from the server but a room.
//! Receivers share one mio poll (thousands cost the tool little); senders
//! are threads that also drain what they are sent (a sender that never reads
//! is rightly cut off as a slow reader).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::{Proc, now_us, pct};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Chatd,
    Irc,
}

/// Connects, names itself and joins `room`, answering PINGs on the way.
/// Returns the stream once the server confirmed the join.
pub fn join(addr: SocketAddr, d: Dialect, nick: &str, room: &str) -> io::Result<TcpStream> {
    join_as(addr, d, nick, room, None)
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
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s.try_clone()?);
    match d {
        Dialect::Chatd => w.write_all(format!("{nick}\n/join {room}\n").as_bytes())?,
        Dialect::Irc => {
            w.write_all(format!("NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n").as_bytes())?
        }
    }
    let mut line = String::new();
    let mut registered = d == Dialect::Chatd;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::other(format!(
                "{nick}: closed during the handshake"
            )));
        }
        let l = line.trim_end();
        match d {
            Dialect::Chatd => {
                if l == format!("*** {nick} joined {room}") {
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
                } else if l.starts_with(&format!(":{nick}!")) && l.contains(" JOIN ") {
                    break;
                } else if l.starts_with("ERROR")
                    || l.split(' ').nth(1).is_some_and(|c| c.starts_with('4'))
                {
                    return Err(io::Error::other(format!("{nick}: {l}")));
                }
            }
        }
    }
    s.set_read_timeout(None)?;
    Ok(s)
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

pub struct FanoutArgs {
    pub addr: SocketAddr,
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
}

/// Per-receiver record of which messages arrived, and how fast.
struct Receiver {
    stream: mio::net::TcpStream,
    buf: Vec<u8>,
    seen: Vec<u8>,
}

pub fn fanout(a: FanoutArgs) -> Result<String, String> {
    let run = format!("{:x}", now_us() & 0xffff_ffff);
    let room = format!("#bench{}", &run[..run.len().min(6)]);
    let token = format!("b{run}");
    let per_sender = a.messages.div_ceil(a.senders.max(1));
    let total = per_sender * a.senders;
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut receivers = Vec::with_capacity(a.receivers);
    for i in 0..a.receivers {
        let s = join(a.addr, a.dialect, &format!("r{i}x{}", &run[..4]), &room)
            .map_err(|e| format!("receiver {i}: {e}"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut stream = mio::net::TcpStream::from_std(s);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        receivers.push(Receiver {
            stream,
            buf: Vec::new(),
            seen: vec![0; total],
        });
    }
    let mut senders = Vec::new();
    for i in 0..a.senders {
        let s = join_as(
            a.addr,
            a.dialect,
            &format!("s{i}x{}", &run[..4]),
            &room,
            a.oper.as_deref(),
        )
        .map_err(|e| format!("sender {i}: {e}"))?;
        let d = s.try_clone().map_err(|e| e.to_string())?;
        thread::spawn(move || drain(d));
        senders.push(s);
    }
    // Let join notices settle before the clock starts.
    thread::sleep(Duration::from_millis(500));
    let cpu0 = a.pid.cpu_ticks();
    let go = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for (si, mut s) in senders.into_iter().enumerate() {
        let (go, sent, token, room) = (go.clone(), sent.clone(), token.clone(), room.clone());
        let (dialect, rate, n) = (a.dialect, a.rate, per_sender);
        handles.push(thread::spawn(move || {
            while !go.load(Ordering::Relaxed) {
                thread::yield_now();
            }
            let start = Instant::now();
            let per_sender_rate = rate / a.senders.max(1) as f64;
            for seq in 0..n {
                if per_sender_rate > 0.0 {
                    let due = start + Duration::from_secs_f64(seq as f64 / per_sender_rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                }
                let text = format!("{token} {si} {seq} {}", now_us());
                let line = match dialect {
                    Dialect::Chatd => format!("{text}\n"),
                    Dialect::Irc => format!("PRIVMSG {room} :{text}\r\n"),
                };
                if s.write_all(line.as_bytes()).is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            // Keep the connection until the receivers are done.
            thread::sleep(Duration::from_secs(3600));
        }));
    }
    go.store(true, Ordering::Relaxed);
    let expected = (total * a.receivers) as u64;
    let mut unique = 0u64;
    let mut dups = 0u64;
    let mut lat_us: Vec<u32> = Vec::with_capacity(expected.min(50_000_000) as usize);
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 256 * 1024];
    let mut last_delivery = Instant::now();
    let deadline = t0 + a.timeout;
    while unique < expected && Instant::now() < deadline {
        // Stop waiting once the senders are done and nothing has come for 5 s.
        if sent.load(Ordering::Relaxed) as usize >= total
            && last_delivery.elapsed() > Duration::from_secs(5)
        {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let Some(r) = receivers.get_mut(ev.token().0) else {
                continue;
            };
            loop {
                match r.stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => r.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let now = now_us();
            let mut start = 0;
            while let Some(nl) = r.buf[start..].iter().position(|&b| b == b'\n') {
                let line = &r.buf[start..start + nl];
                start += nl + 1;
                if let Some(p) = line.strip_prefix(b"PING ") {
                    let mut pong = b"PONG ".to_vec();
                    pong.extend_from_slice(p);
                    pong.push(b'\n');
                    let _ = r.stream.write_all(&pong);
                    continue;
                }
                let Some(at) = find(line, token.as_bytes()) else {
                    continue;
                };
                let mut f = std::str::from_utf8(&line[at..])
                    .unwrap_or("")
                    .split_whitespace()
                    .skip(1);
                let (Some(Ok(si)), Some(Ok(seq)), Some(Ok(ts))) = (
                    f.next().map(str::parse::<usize>),
                    f.next().map(str::parse::<usize>),
                    f.next().map(|t| t.trim_end_matches('\r').parse::<u64>()),
                ) else {
                    continue;
                };
                let idx = si * per_sender + seq;
                if let Some(slot) = r.seen.get_mut(idx) {
                    if *slot == 0 {
                        unique += 1;
                        lat_us.push(now.saturating_sub(ts).min(u64::from(u32::MAX)) as u32);
                    } else {
                        dups += 1;
                    }
                    *slot = slot.saturating_add(1);
                    last_delivery = Instant::now();
                }
            }
            r.buf.drain(..start);
        }
    }
    let elapsed = last_delivery
        .saturating_duration_since(t0)
        .as_secs_f64()
        .max(1e-6);
    let cpu = a
        .pid
        .cpu_ticks()
        .zip(cpu0)
        .map(|(b, a)| b.saturating_sub(a) as f64 / 100.0);
    for r in &mut receivers {
        let _ = r.stream.shutdown(Shutdown::Both);
    }
    drop(handles);
    lat_us.sort_unstable();
    let lat: Vec<u64> = lat_us.iter().map(|&x| u64::from(x)).collect();
    let rate = unique as f64 / elapsed;
    let cpu_per_m = cpu.map(|c| c / (unique.max(1) as f64 / 1e6));
    Ok(format!(
        "{{\"scenario\":\"fanout\",\"dialect\":\"{}\",\"receivers\":{},\"senders\":{},\"messages\":{total},\"rate\":{},\"deliveries\":{unique},\"expected\":{expected},\"lost\":{},\"duplicated\":{dups},\"seconds\":{elapsed:.3},\"deliveries_per_sec\":{rate:.0},\"p50_ms\":{:.2},\"p90_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2},\"server_cpu_s\":{},\"cpu_s_per_million\":{}}}",
        if a.dialect == Dialect::Irc {
            "irc"
        } else {
            "chatd"
        },
        a.receivers,
        a.senders,
        a.rate,
        expected - unique,
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        cpu.map_or("null".into(), |c| format!("{c:.2}")),
        cpu_per_m.map_or("null".into(), |c| format!("{c:.3}")),
    ))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// N connections named and joined, in rooms of `room_size`; resident memory
/// per connection from /proc.
pub fn idle(
    addr: SocketAddr,
    d: Dialect,
    n: usize,
    room_size: usize,
    p: Proc,
    hold: Duration,
) -> Result<String, String> {
    let run = format!("{:x}", now_us() & 0xffff);
    let before = p.rss_kib();
    let t0 = Instant::now();
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let room = format!("#idle{run}r{}", i / room_size.max(1));
        let s = join(addr, d, &format!("i{i}x{run}"), &room)
            .map_err(|e| format!("connection {i}: {e}"))?;
        // Drain on the side so notices never back up; one thread per
        // thousand connections would do, but these sockets are quiet.
        held.push(s);
    }
    let setup = t0.elapsed().as_secs_f64();
    // Read what the joins produced, then let the server settle.
    for s in &held {
        let _ = s.set_nonblocking(true);
        let mut buf = [0u8; 65536];
        while matches!((&*s).read(&mut buf), Ok(n) if n > 0) {}
    }
    thread::sleep(hold);
    let after = p.rss_kib();
    let per = match (before, after) {
        (Some(b), Some(a)) => format!("{:.0}", (a.saturating_sub(b) as f64 * 1024.0) / n as f64),
        _ => "null".into(),
    };
    let out = format!(
        "{{\"scenario\":\"idle\",\"dialect\":\"{}\",\"connections\":{n},\"room_size\":{room_size},\"setup_seconds\":{setup:.2},\"rss_before_kib\":{},\"rss_after_kib\":{},\"bytes_per_connection\":{per}}}",
        if d == Dialect::Irc { "irc" } else { "chatd" },
        before.map_or("null".into(), |v| v.to_string()),
        after.map_or("null".into(), |v| v.to_string()),
    );
    drop(held);
    Ok(out)
}

/// Connect, name, join, quit, as fast as `parallel` workers can, for
/// `seconds`.
pub fn churn(
    addr: SocketAddr,
    d: Dialect,
    parallel: usize,
    seconds: f64,
) -> Result<String, String> {
    let run = format!("{:x}", now_us() & 0xffff);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let hs: Vec<_> = (0..parallel)
        .filter_map(|w| {
            let (done, failed, run) = (done.clone(), failed.clone(), run.clone());
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    let mut i = 0u64;
                    while Instant::now() < until {
                        i += 1;
                        let nick = format!("c{w}x{i}y{run}");
                        let ok = join(addr, d, &nick, "#churn").and_then(|mut s| {
                            let quit: &[u8] = if d == Dialect::Irc {
                                b"QUIT :bye\r\n"
                            } else {
                                b"/quit\n"
                            };
                            s.write_all(quit)?;
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
    Ok(format!(
        "{{\"scenario\":\"churn\",\"dialect\":\"{}\",\"parallel\":{parallel},\"seconds\":{secs:.2},\"cycles\":{n},\"failed\":{},\"cycles_per_sec\":{:.0}}}",
        if d == Dialect::Irc { "irc" } else { "chatd" },
        failed.load(Ordering::Relaxed),
        n as f64 / secs
    ))
}
