//! `chatd-bench`: load and abuse for a running chatd, on loopback.
//!
//! `idle`, `fanout` and `churn` measure performance (see `perf.rs`), for
//! chatd or, with `--irc`, an IRC daemon, so that both can be compared.
//!
//! `abuse SCENARIO` runs one attack while an honest pair of clients chats in
//! a room of their own, and reports what the honest client saw (probes lost,
//! latency percentiles) and what the daemon cost (resident memory peak,
//! descriptors before and after) from /proc when given its PID.
//! `soak` runs a few hundred well-behaved clients chatting, joining, parting
//! and reconnecting, and samples the same figures over time.
//!
//! Every run is bounded in connections and time, talks to loopback only,
//! and prints one JSON line (for scripts) then a readable summary.
//!
//! Measuring an attack from the same small machine needs care: attacker
//! threads spinning at normal priority starve everything, the daemon
//! included, which says nothing about the daemon. So the honest pair runs
//! as a separate process (`probe`) at normal priority, from its own source
//! address (127.0.0.2, so per-address limits aimed at the attackers do not
//! hit it), and the attack threads run at the lowest CPU priority.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argh::FromArgs;

mod perf;
mod relay;
mod tls;
mod ws;

/// chatd-bench: load and abuse tests for chatd, on loopback only.
#[derive(FromArgs)]
struct Flags {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Idle(Idle),
    Fanout(Fanout),
    Churn(Churn),
    Abuse(Abuse),
    Soak(Soak),
    Probe(Probe),
    Search(Search),
    Relay(Relay),
}

/// run the featureless relay chatd is compared against (for benchmarks only:
/// no greeting, history, limits or disk)
#[derive(FromArgs)]
#[argh(subcommand, name = "relay")]
struct Relay {
    /// address to listen on, loopback only (default 127.0.0.1:16671)
    #[argh(option, default = "String::from(\"127.0.0.1:16671\")")]
    listen: String,
    /// speak TLS with this certificate chain (PEM), as chatd's TLS port does
    #[argh(option)]
    tls_cert: Option<PathBuf>,
    /// the private key for --tls-cert (PEM)
    #[argh(option)]
    tls_key: Option<PathBuf>,
}

/// fill rooms with history, then time /search (which reads up to
/// --search-budget) against /ping, each a round trip
#[derive(FromArgs)]
#[argh(subcommand, name = "search")]
struct Search {
    /// the server, host:port on loopback, started with --rate 0 (default 127.0.0.1:9999)
    #[argh(option, default = "String::from(\"127.0.0.1:9999\")")]
    addr: String,
    /// rooms to fill (default 100)
    #[argh(option, default = "100")]
    rooms: usize,
    /// lines per room (default 500, chatd's --history default)
    #[argh(option, default = "500")]
    lines: usize,
    /// searches to time (default 50)
    #[argh(option, default = "50")]
    searches: usize,
}

/// N connections named and joined; resident memory per connection
#[derive(FromArgs)]
#[argh(subcommand, name = "idle")]
struct Idle {
    /// the server, host:port on loopback (default 127.0.0.1:9999)
    #[argh(option, default = "String::from(\"127.0.0.1:9999\")")]
    addr: String,
    /// speak IRC (NICK/USER/JOIN) instead of chatd's protocol
    #[argh(switch)]
    irc: bool,
    /// speak chatd's protocol over a WebSocket (/ws, one line per frame), as the browser client does
    #[argh(switch)]
    ws: bool,
    /// the server's PID, to read its memory from /proc
    #[argh(option)]
    pid: Option<u32>,
    /// connections (default 1000)
    #[argh(option, default = "1000")]
    connections: usize,
    /// members per room (default 100)
    #[argh(option, default = "100")]
    room_size: usize,
    /// seconds to hold the connections before measuring (default 2)
    #[argh(option, default = "2.0")]
    hold: f64,
    /// connections set up at once (default 200)
    #[argh(option, default = "200")]
    join_workers: usize,
    /// connect to chatd's TLS port, trusting the certificates in this PEM
    /// file (the server's name must be localhost)
    #[argh(option)]
    tls_ca: Option<String>,
}

/// R receivers and S senders in one room: deliveries/s, latency, losses, CPU
#[derive(FromArgs)]
#[argh(subcommand, name = "fanout")]
struct Fanout {
    /// the server, host:port on loopback (default 127.0.0.1:9999)
    #[argh(option, default = "String::from(\"127.0.0.1:9999\")")]
    addr: String,
    /// speak IRC (NICK/USER/JOIN/PRIVMSG, answering PING)
    #[argh(switch)]
    irc: bool,
    /// speak chatd's protocol over a WebSocket (/ws, one line per frame), as the browser client does
    #[argh(switch)]
    ws: bool,
    /// the server's PID, for its CPU time from /proc
    #[argh(option)]
    pid: Option<u32>,
    /// receivers (default 1000)
    #[argh(option, default = "1000")]
    receivers: usize,
    /// senders (default 10)
    #[argh(option, default = "10")]
    senders: usize,
    /// messages in all (default 1000)
    #[argh(option, default = "1000")]
    messages: usize,
    /// messages per second for all senders together; 0 is as fast as allowed (default 0)
    #[argh(option, default = "0.0")]
    rate: f64,
    /// give up after this many seconds (default 120)
    #[argh(option, default = "120")]
    timeout: u64,
    /// IRC operator NAME:PASS for the senders, which then set user mode +F
    #[argh(option)]
    oper: Option<String>,
    /// connections set up at once (default 200)
    #[argh(option, default = "200")]
    join_workers: usize,
    /// another node of a cluster, host:port on loopback (repeatable): receivers and senders are spread over --addr and these in turn
    #[argh(option)]
    also: Vec<String>,
}

/// connect, name, join and quit cycles per second
#[derive(FromArgs)]
#[argh(subcommand, name = "churn")]
struct Churn {
    /// the server, host:port on loopback (default 127.0.0.1:9999)
    #[argh(option, default = "String::from(\"127.0.0.1:9999\")")]
    addr: String,
    /// speak IRC
    #[argh(switch)]
    irc: bool,
    /// speak chatd's protocol over a WebSocket (/ws, one line per frame), as the browser client does
    #[argh(switch)]
    ws: bool,
    /// cycles in parallel (default 100)
    #[argh(option, default = "100")]
    parallel: usize,
    /// seconds to run (default 10)
    #[argh(option, default = "10.0")]
    seconds: f64,
    /// workers per room (default 10; each joins #churnN)
    #[argh(option, default = "10")]
    room_size: usize,
    /// stop after this many cycles instead of after --seconds (0: no bound)
    #[argh(option, default = "0")]
    cycles: u64,
    /// the server's PID, to report its CPU time per cycle
    #[argh(option)]
    pid: Option<u32>,
}

fn dialect(irc: bool, ws: bool) -> perf::Dialect {
    if irc {
        perf::Dialect::Irc
    } else if ws {
        perf::Dialect::Ws
    } else {
        perf::Dialect::Chatd
    }
}

/// Prints a JSON line on stdout and a readable form on stderr.
fn emit(json: String) {
    println!("{json}");
    let readable = json
        .trim_matches(['{', '}'])
        .replace("\"", "")
        .replace(',', ", ")
        .replace(':', " ");
    eprintln!("{readable}");
}

/// the honest pair alone, for `abuse` to run as a separate process
#[derive(FromArgs)]
#[argh(subcommand, name = "probe")]
struct Probe {
    /// the server, host:port on loopback
    #[argh(option)]
    addr: String,
    /// seconds to probe
    #[argh(option)]
    seconds: f64,
    /// a tag for the room and nicks
    #[argh(option, default = "String::from(\"p\")")]
    tag: String,
    /// source address to connect from (default 127.0.0.2)
    #[argh(option, default = "String::from(\"127.0.0.2\")")]
    source: String,
}

/// run one attack while an honest client chats, and report
#[derive(FromArgs)]
#[argh(subcommand, name = "abuse")]
struct Abuse {
    /// slowloris | giant | flood | slowread | storm | garbage
    #[argh(positional)]
    scenario: String,
    /// the server, host:port on loopback (default 127.0.0.1:9999)
    #[argh(option, default = "String::from(\"127.0.0.1:9999\")")]
    addr: String,
    /// the server's PID, to read its memory and descriptors from /proc
    #[argh(option)]
    pid: Option<u32>,
    /// attack size: `short` (for CI) or `long` (the full figures)
    #[argh(option, default = "String::from(\"short\")")]
    size: String,
    /// seconds the attack runs (default: 5 short, 30 long)
    #[argh(option)]
    seconds: Option<u64>,
}

/// many clients chatting, joining, parting and reconnecting for a while
#[derive(FromArgs)]
#[argh(subcommand, name = "soak")]
struct Soak {
    /// the server, host:port on loopback (default 127.0.0.1:9999)
    #[argh(option, default = "String::from(\"127.0.0.1:9999\")")]
    addr: String,
    /// the server's PID, to read its memory and descriptors
    #[argh(option)]
    pid: Option<u32>,
    /// clients (default 300)
    #[argh(option, default = "300")]
    clients: usize,
    /// minutes to run (default 30)
    #[argh(option, default = "30.0")]
    minutes: f64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn loopback(addr: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr}: expected IP:PORT"))?;
    let ok = match a.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback(),
    };
    if ok {
        Ok(a)
    } else {
        Err(format!(
            "{addr} is not loopback; chatd-bench only talks to this machine"
        ))
    }
}

/// Reads the daemon's resident memory (KiB) and open descriptors.
#[derive(Clone, Copy)]
struct Proc(Option<u32>);

impl Proc {
    fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }
    /// Resident anonymous memory (heap, stacks, tables): what connections
    /// cost. Resident memory also counts the program's own code and data
    /// pages, which come in from the file the first time a code path runs,
    /// once, whatever the number of connections: 720 KB of chatd's code
    /// paged in by the first joins made 1,000 connections look 720 bytes
    /// dearer each (issue 21).
    fn anon_kib(&self) -> Option<u64> {
        self.status_kib("RssAnon:")
    }
    fn status_kib(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.0?)).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
    fn fds(&self) -> Option<usize> {
        Some(
            std::fs::read_dir(format!("/proc/{}/fd", self.0?))
                .ok()?
                .count(),
        )
    }
    /// User plus system CPU time, in clock ticks (100 per second).
    fn cpu_ticks(&self) -> Option<u64> {
        self.user_kernel_ticks().map(|(u, k)| u + k)
    }
    /// CPU time in the process's own code and in the kernel on its behalf
    /// (system calls, and the loopback receive path the kernel runs in the
    /// sender's context), in clock ticks (10 ms): which side a gap between
    /// two servers is on.
    fn user_kernel_ticks(&self) -> Option<(u64, u64)> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.0?)).ok()?;
        let after = s.get(s.rfind(')')? + 2..)?;
        let f: Vec<&str> = after.split(' ').collect();
        Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
    }
    /// CPU time of all the process's threads, in seconds: the scheduler's
    /// own count (microseconds) where the kernel shows it, else ticks.
    fn cpu_secs(&self) -> Option<f64> {
        let pid = self.0?;
        let precise = std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()
            .and_then(|tasks| {
                let mut ms = 0.0;
                for t in tasks.flatten() {
                    let s = std::fs::read_to_string(t.path().join("sched")).ok()?;
                    let v = s
                        .lines()
                        .find(|l| l.starts_with("se.sum_exec_runtime"))?
                        .split(':')
                        .nth(1)?
                        .trim()
                        .parse::<f64>()
                        .ok()?;
                    ms += v;
                }
                Some(ms / 1000.0)
            });
        precise.or_else(|| self.cpu_ticks().map(|t| t as f64 / 100.0))
    }
    fn alive(&self) -> bool {
        self.0
            .is_none_or(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    }
}

/// Samples the daemon's memory every 100 ms until stopped.
fn sample_rss(p: Proc, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            max = max.max(p.rss_kib().unwrap_or(0));
            thread::sleep(Duration::from_millis(100));
        }
        max
    })
}

/// Connects from a given source address (loopback has all of 127/8).
fn connect_from(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(src) = source else {
        return TcpStream::connect(addr);
    };
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.bind(&SocketAddr::new(src, 0).into())?;
    s.connect(&addr.into())?;
    Ok(s.into())
}

/// Connects and names itself; waits for the join of `#lobby`.
fn named(addr: SocketAddr, nick: &str) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    named_from(addr, nick, None)
}

fn named_from(
    addr: SocketAddr,
    nick: &str,
    source: Option<IpAddr>,
) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    let s = connect_from(addr, source)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s.try_clone()?;
    w.write_all(format!("{nick}\n").as_bytes())?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other(format!("closed while naming {nick}")));
        }
        if line.contains(" joined #lobby") || line.starts_with("join #lobby") {
            return Ok((s, r));
        }
        if line.starts_with("!!!") {
            return Err(std::io::Error::other(line.trim().to_string()));
        }
    }
}

/// What the honest pair saw.
#[derive(Default)]
struct Honest {
    sent: u64,
    received: u64,
    lat_us: Vec<u64>,
    seqs: Vec<u64>,
}

/// An honest sender and receiver in a room of their own: a probe every
/// 200 ms (under any sane rate limit), latency from the time inside it.
fn honest(
    addr: SocketAddr,
    tag: &str,
    source: Option<IpAddr>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<thread::JoinHandle<Honest>> {
    // A room and nicks of this run only: a room kept from an earlier run
    // would replay old probes as history.
    let run = format!("{:x}", now_us() & 0xff_ffff);
    let tag: String = tag.chars().take(8).collect();
    let room = format!("#h-{tag}-{run}");
    let (txn, rxn) = (format!("hs{tag}{run}"), format!("hr{tag}{run}"));
    let (mut tx, mut tr) = named_from(addr, &txn, source)?;
    let (rx, mut rr) = named_from(addr, &rxn, source)?;
    // Both joins confirmed before the first probe, so none is sent into a
    // room the receiver is not in yet.
    for (s, r, nick) in [(&tx, &mut tr, &txn), (&rx, &mut rr, &rxn)] {
        let mut w: &TcpStream = s;
        w.write_all(format!("/join {room}\n").as_bytes())?;
        let want = format!("{nick} joined {room}");
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("closed while joining"));
            }
            if line.contains(&want) {
                break;
            }
        }
    }
    // The sender reads (and drops) what it is sent, as a real client does;
    // one that never reads is rightly cut off as a slow reader.
    thread::spawn(move || {
        let _ = tr.get_mut().set_read_timeout(None);
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(tr.read(&mut buf), Ok(n) if n > 0) {}
    });
    let got = Arc::new(Mutex::new(Honest::default()));
    let sent = Arc::new(AtomicU64::new(0));
    let (got2, sent2, stop2) = (got.clone(), sent.clone(), stop.clone());
    let reader = thread::spawn(move || {
        let _ = rx.set_read_timeout(Some(Duration::from_millis(200)));
        let mut line = String::new();
        let mut stopped_at: Option<Instant> = None;
        loop {
            if stop2.load(Ordering::Relaxed) {
                let at = *stopped_at.get_or_insert_with(Instant::now);
                let done =
                    got2.lock().map(|g| g.received).unwrap_or(0) >= sent2.load(Ordering::Relaxed);
                if done || at.elapsed() > Duration::from_millis(1500) {
                    return;
                }
            }
            // A line split by a read timeout stays in `line` (read_line
            // appends what it got before the error); it is cleared only once
            // it is complete.
            if line.ends_with('\n') {
                line.clear();
            }
            match rr.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) if !line.ends_with('\n') => {}
                Ok(_) => {
                    let mut f = line.split("probe ").nth(1).unwrap_or("").split_whitespace();
                    let (seq, ts) = (
                        f.next().map(str::parse::<u64>),
                        f.next().map(str::parse::<u64>),
                    );
                    if let (Some(Ok(seq)), Some(Ok(ts))) = (seq, ts)
                        && let Ok(mut g) = got2.lock()
                    {
                        g.received += 1;
                        g.seqs.push(seq);
                        g.lat_us.push(now_us().saturating_sub(ts));
                    }
                }
                Err(_) => {}
            }
        }
    });
    Ok(thread::spawn(move || {
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if tx
                .write_all(format!("probe {seq} {}\n", now_us()).as_bytes())
                .is_err()
            {
                break;
            }
            seq += 1;
            sent.store(seq, Ordering::Relaxed);
            thread::sleep(Duration::from_millis(200));
        }
        let _ = reader.join();
        let mut g = got
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default();
        g.sent = seq;
        g
    }))
}

fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

/// Everything a scenario reports.
struct Report {
    scenario: String,
    size: String,
    seconds: f64,
    rss_before: u64,
    rss_max: u64,
    rss_after: u64,
    fds_before: usize,
    fds_after: usize,
    honest: Honest,
    alive: bool,
    notes: Vec<(String, u64)>,
}

impl Report {
    fn print(&mut self) {
        self.honest.lat_us.sort_unstable();
        let l = &self.honest.lat_us;
        let lost = self.honest.sent.saturating_sub(self.honest.received);
        let notes: Vec<String> = self
            .notes
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        println!(
            "{{\"scenario\":\"{}\",\"size\":\"{}\",\"seconds\":{:.1},\"rss_before_kib\":{},\"rss_max_kib\":{},\"rss_after_kib\":{},\"fds_before\":{},\"fds_after\":{},\"honest_sent\":{},\"honest_lost\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2},\"daemon_alive\":{},{}}}",
            self.scenario,
            self.size,
            self.seconds,
            self.rss_before,
            self.rss_max,
            self.rss_after,
            self.fds_before,
            self.fds_after,
            self.honest.sent,
            lost,
            pct(l, 0.5),
            pct(l, 0.99),
            pct(l, 1.0),
            self.alive,
            notes.join(",")
        );
        eprintln!(
            "{} ({}, {:.0} s): honest client {} probes, {} lost, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; daemon RSS {} -> max {} -> {} KiB, descriptors {} -> {}; {}",
            self.scenario,
            self.size,
            self.seconds,
            self.honest.sent,
            lost,
            pct(l, 0.5),
            pct(l, 0.99),
            pct(l, 1.0),
            self.rss_before,
            self.rss_max,
            self.rss_after,
            self.fds_before,
            self.fds_after,
            self.notes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Waits (bounded) until the daemon's descriptors are back to `want`.
fn settle_fds(p: Proc, want: usize) -> usize {
    let t0 = Instant::now();
    loop {
        let n = p.fds().unwrap_or(0);
        if n <= want || t0.elapsed() > Duration::from_secs(10) {
            return n;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

type Counters = Arc<Vec<AtomicU64>>;

fn counters(n: usize) -> Counters {
    Arc::new((0..n).map(|_| AtomicU64::new(0)).collect())
}

fn bump(c: &Counters, i: usize, by: u64) {
    if let Some(x) = c.get(i) {
        x.fetch_add(by, Ordering::Relaxed);
    }
}

/// 1,000 (long) connections each sending a byte every few seconds, never a
/// newline.
fn slowloris(addr: SocketAddr, long: bool, until: Instant, c: Counters) {
    let n = if long { 1000 } else { 300 };
    let mut socks = Vec::new();
    for _ in 0..n {
        match TcpStream::connect(addr) {
            Ok(s) => socks.push(s),
            Err(_) => bump(&c, 1, 1),
        }
    }
    bump(&c, 0, socks.len() as u64);
    while Instant::now() < until {
        for s in &mut socks {
            if s.write_all(b"x").is_err() {
                bump(&c, 2, 1);
            }
        }
        thread::sleep(Duration::from_secs(2));
    }
}

/// 200 connections each streaming a 50 MB line (long): half plain text, half
/// starting like an image upload, which may be buffered further.
fn giant(addr: SocketAddr, long: bool, until: Instant, c: Counters) {
    let conns = if long { 200 } else { 40 };
    let bytes_each: u64 = if long { 50 << 20 } else { 4 << 20 };
    let threads = 8;
    let mut hs = Vec::new();
    for t in 0..threads {
        let c = c.clone();
        hs.push(thread::spawn(move || {
            let mut socks: Vec<(TcpStream, u64)> = Vec::new();
            for i in (t..conns).step_by(threads) {
                if let Ok(mut s) = TcpStream::connect(addr) {
                    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                    let head: &[u8] = if i % 2 == 0 {
                        b"giant\n"
                    } else {
                        b"giant\n/image "
                    };
                    let _ = s.write_all(head);
                    socks.push((s, 0));
                }
            }
            let chunk = vec![b'A'; 64 * 1024];
            while Instant::now() < until && socks.iter().any(|(_, n)| *n < bytes_each) {
                for (s, n) in &mut socks {
                    if *n >= bytes_each {
                        continue;
                    }
                    match s.write_all(&chunk) {
                        Ok(()) => {
                            *n += chunk.len() as u64;
                            bump(&c, 0, chunk.len() as u64);
                        }
                        Err(_) => {
                            *n = bytes_each;
                            bump(&c, 1, 1);
                        }
                    }
                }
            }
        }));
    }
    for h in hs {
        let _ = h.join();
    }
}

/// 50 connections sending lines as fast as they can; reconnecting when cut.
fn flood(addr: SocketAddr, _long: bool, until: Instant, c: Counters) {
    let mut hs = Vec::new();
    for i in 0..50 {
        let c = c.clone();
        hs.push(thread::spawn(move || {
            let lines = "spam spam spam spam\n".repeat(200);
            while Instant::now() < until {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    thread::sleep(Duration::from_millis(50));
                    continue;
                };
                bump(&c, 0, 1);
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(format!("flood{i}\n").as_bytes());
                while Instant::now() < until {
                    if s.write_all(lines.as_bytes()).is_err() {
                        bump(&c, 1, 1);
                        break;
                    }
                    bump(&c, 2, 200);
                }
            }
        }));
    }
    for h in hs {
        let _ = h.join();
    }
}

/// 200 connections in a busy room that never read; talkers keep it busy.
fn slowread(addr: SocketAddr, long: bool, until: Instant, c: Counters) {
    let n = if long { 200 } else { 60 };
    let mut sleepers = Vec::new();
    for i in 0..n {
        let Ok(sock) = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        ) else {
            continue;
        };
        // A small window, so the daemon's own queue is what fills up.
        let _ = sock.set_recv_buffer_size(4096);
        if sock.connect(&addr.into()).is_err() {
            continue;
        }
        let mut s: TcpStream = sock.into();
        let _ = s.write_all(format!("sleeper{i}\n/join #busy\n").as_bytes());
        sleepers.push(s);
    }
    bump(&c, 0, sleepers.len() as u64);
    // Enough traffic to get past the kernel's socket buffers (several MB
    // on loopback) within the run, at 9 lines a second per talker.
    let talkers = if long { 40 } else { 80 };
    let mut hs = Vec::new();
    for t in 0..talkers {
        let c = c.clone();
        hs.push(thread::spawn(move || {
            let Ok((mut s, mut r)) = named(addr, &format!("talker{t}")) else {
                return;
            };
            // Talkers read, as real clients do; only the sleepers do not.
            thread::spawn(move || {
                let _ = r.get_mut().set_read_timeout(None);
                let mut buf = vec![0u8; 64 * 1024];
                while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
            });
            let _ = s.write_all(b"/join #busy\n");
            let text = "y".repeat(3500);
            while Instant::now() < until {
                if s.write_all(format!("{text}\n").as_bytes()).is_err() {
                    break;
                }
                bump(&c, 1, 1);
                thread::sleep(Duration::from_millis(110));
            }
            // Ends the reader's clone too, so the connection really closes.
            let _ = s.shutdown(std::net::Shutdown::Both);
        }));
    }
    for h in hs {
        let _ = h.join();
    }
    // Which sleepers were cut off: their sockets see EOF or reset once the
    // bytes the kernel still holds for them (megabytes, behind the daemon's
    // close) are read. So each is read to its end, up to a deadline; one
    // that is still open goes quiet instead (a read times out).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 1 << 20];
    for s in &mut sleepers {
        let mut cut = false;
        while Instant::now() < deadline {
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            match s.read(&mut buf) {
                Ok(0) => {
                    cut = true;
                    break;
                }
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    cut = true;
                    break;
                }
            }
        }
        if cut {
            bump(&c, 2, 1);
        }
    }
}

/// 20,000 (long) connects and disconnects from 8 threads, then connections
/// held open until refused, to meet max-conns and max-per-ip.
fn storm(addr: SocketAddr, long: bool, until: Instant, c: Counters) {
    let total: u64 = if long { 20_000 } else { 3_000 };
    let mut hs = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        hs.push(thread::spawn(move || {
            for _ in 0..total / 8 {
                if Instant::now() >= until {
                    return;
                }
                match TcpStream::connect(addr) {
                    Ok(s) => {
                        bump(&c, 0, 1);
                        drop(s);
                    }
                    Err(_) => bump(&c, 1, 1),
                }
            }
        }));
    }
    for h in hs {
        let _ = h.join();
    }
    // Hold connections until the server refuses one with a reason.
    let mut held = Vec::new();
    for _ in 0..200 {
        let Ok(mut s) = TcpStream::connect(addr) else {
            break;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        let _ = BufReader::new(&mut s).read_line(&mut line);
        if line.starts_with("!!! ") {
            bump(&c, 2, 1);
            break;
        }
        held.push(s);
    }
    bump(&c, 3, held.len() as u64);
}

/// Random bytes, invalid UTF-8, NULs, lone CRs, and a megabyte of commands.
fn garbage(addr: SocketAddr, long: bool, until: Instant, c: Counters) {
    let mut seed = now_us() | 1;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let rounds = if long { 200 } else { 40 };
    let slash = "/".repeat(1 << 20);
    let payloads: Vec<Vec<u8>> = vec![
        b"\xff\xfe\xfd\n\xc0\xaf\n\xed\xa0\x80\n".to_vec(),
        b"nul\x00nul\x00\n\x00\x00\x00\n".to_vec(),
        b"lone\rcarriage\rreturns\r\r\r\n".to_vec(),
        slash.clone().into_bytes(),
        format!("{}\n", "/x ".repeat(300_000)).into_bytes(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ];
    for r in 0..rounds {
        if Instant::now() >= until {
            return;
        }
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(format!("junk{r}\n").as_bytes());
        let mut bytes: Vec<u8> = (0..4096).map(|_| rand() as u8).collect();
        if let Some(p) = payloads.get(r % payloads.len()) {
            bytes.extend_from_slice(p);
        }
        if s.write_all(&bytes).is_ok() {
            bump(&c, 0, bytes.len() as u64);
        }
        bump(&c, 1, 1);
    }
}

const SCENARIOS: &[(&str, &[&str])] = &[
    (
        "slowloris",
        &["connections", "connect_failures", "write_failures"],
    ),
    ("giant", &["bytes_sent", "connections_cut"]),
    ("flood", &["connections", "connections_cut", "lines_sent"]),
    ("slowread", &["sleepers", "busy_lines", "sleepers_cut"]),
    (
        "storm",
        &[
            "connects",
            "connect_failures",
            "refused_with_reason",
            "held_before_refusal",
        ],
    ),
    ("garbage", &["bytes_sent", "connections"]),
];

fn abuse(a: Abuse) -> Result<(), String> {
    let addr = loopback(&a.addr)?;
    let long = match a.size.as_str() {
        "short" => false,
        "long" => true,
        s => return Err(format!("--size {s}: short or long")),
    };
    let Some(&(name, labels)) = SCENARIOS.iter().find(|(n, _)| *n == a.scenario) else {
        return Err(format!(
            "unknown scenario {}; one of: {}",
            a.scenario,
            SCENARIOS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let secs = a.seconds.unwrap_or(if long { 30 } else { 5 });
    let p = Proc(a.pid);
    let fds_before = p.fds().unwrap_or(0);
    let rss_before = p.rss_kib().unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(p, stop.clone());
    // The honest pair: a separate process at normal priority.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let probe = std::process::Command::new(exe)
        .args([
            "probe",
            "--addr",
            &a.addr,
            "--seconds",
            &secs.to_string(),
            "--tag",
            name,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| format!("honest probe: {e}"))?;
    // Give it time to connect before the attack starts.
    thread::sleep(Duration::from_millis(800));
    lowest_priority();
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(secs);
    let c = counters(labels.len());
    let attack = {
        let c = c.clone();
        let f: fn(SocketAddr, bool, Instant, Counters) = match name {
            "slowloris" => slowloris,
            "giant" => giant,
            "flood" => flood,
            "slowread" => slowread,
            "storm" => storm,
            _ => garbage,
        };
        thread::spawn(move || f(addr, long, until, c))
    };
    let _ = attack.join();
    // The honest pair keeps going to the end of its window.
    let out = probe
        .wait_with_output()
        .map_err(|e| format!("honest probe: {e}"))?;
    let honest = parse_probe(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| "the honest probe reported nothing (could it connect?)".to_string())?;
    let seconds = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let rss_max = sampler.join().unwrap_or(0);
    // Attack sockets are closed by now (threads ended); wait for the daemon
    // to let go of them.
    let fds_after = settle_fds(p, fds_before);
    let mut r = Report {
        scenario: name.to_string(),
        size: a.size.clone(),
        seconds,
        rss_before,
        rss_max,
        rss_after: p.rss_kib().unwrap_or(0),
        fds_before,
        fds_after,
        honest,
        alive: p.alive(),
        notes: labels
            .iter()
            .zip(c.iter())
            .map(|(l, v)| (l.to_string(), v.load(Ordering::Relaxed)))
            .collect(),
    };
    r.print();
    Ok(())
}

/// A well-behaved user: chats, joins and parts rooms, sometimes reconnects.
fn soak_client(addr: SocketAddr, id: usize, until: Instant, c: Counters) {
    let mut seed = (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    };
    while Instant::now() < until {
        let Ok((mut s, r)) = named(addr, &format!("soak{id}")) else {
            bump(&c, 2, 1);
            thread::sleep(Duration::from_millis(500));
            continue;
        };
        bump(&c, 0, 1);
        // Read and drop everything, as a client does.
        let drain = thread::spawn(move || {
            let mut r = r;
            let mut buf = vec![0u8; 16 * 1024];
            let _ = r.get_mut().set_read_timeout(None);
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        });
        let session_end = Instant::now() + Duration::from_secs(20 + rand(100));
        while Instant::now() < until.min(session_end) {
            let line = match rand(10) {
                0 => format!("/join #room{}", rand(20)),
                1 => "/part".to_string(),
                2 => "/who".to_string(),
                3 => format!("/dm soak{} hello", rand(300)),
                _ => format!("message {} from soak{id}", rand(1_000_000)),
            };
            if s.write_all(format!("{line}\n").as_bytes()).is_err() {
                break;
            }
            bump(&c, 1, 1);
            thread::sleep(Duration::from_millis(500 + rand(2000)));
        }
        let _ = s.write_all(b"/quit\n");
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = drain.join();
    }
}

fn soak(o: Soak) -> Result<(), String> {
    let addr = loopback(&o.addr)?;
    let p = Proc(o.pid);
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(o.minutes * 60.0);
    let fds_start = p.fds().unwrap_or(0);
    let rss_start = p.rss_kib().unwrap_or(0);
    let c = counters(3);
    let probe_stop = Arc::new(AtomicBool::new(false));
    let source = Some(IpAddr::from([127, 0, 0, 2]));
    let h = honest(addr, "soak", source, probe_stop.clone())
        .map_err(|e| format!("honest client: {e}"))?;
    let hs: Vec<_> = (0..o.clients)
        .map(|i| {
            let c = c.clone();
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || soak_client(addr, i, until, c))
        })
        .filter_map(Result::ok)
        .collect();
    let mut samples = Vec::new();
    while Instant::now() < until {
        thread::sleep(Duration::from_secs(10).min(until.saturating_duration_since(Instant::now())));
        let s = (
            t0.elapsed().as_secs(),
            p.rss_kib().unwrap_or(0),
            p.fds().unwrap_or(0),
        );
        eprintln!("soak t={}s rss={} KiB fds={}", s.0, s.1, s.2);
        samples.push(s);
    }
    for h in hs {
        let _ = h.join();
    }
    probe_stop.store(true, Ordering::Relaxed);
    let mut honest = h.join().map_err(|_| "honest thread failed".to_string())?;
    let fds_end = settle_fds(p, fds_start);
    honest.lat_us.sort_unstable();
    let l = &honest.lat_us;
    let rss_max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    // Memory in the middle versus the end shows growth over time.
    let rss_mid = samples.get(samples.len() / 2).map_or(0, |s| s.1);
    let rss_end = p.rss_kib().unwrap_or(0);
    println!(
        "{{\"scenario\":\"soak\",\"clients\":{},\"minutes\":{:.1},\"sessions\":{},\"lines\":{},\"connect_failures\":{},\"rss_start_kib\":{rss_start},\"rss_mid_kib\":{rss_mid},\"rss_max_kib\":{rss_max},\"rss_end_kib\":{rss_end},\"fds_start\":{fds_start},\"fds_end\":{fds_end},\"honest_sent\":{},\"honest_lost\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2},\"daemon_alive\":{}}}",
        o.clients,
        t0.elapsed().as_secs_f64() / 60.0,
        c[0].load(Ordering::Relaxed),
        c[1].load(Ordering::Relaxed),
        c[2].load(Ordering::Relaxed),
        honest.sent,
        honest.sent.saturating_sub(honest.received),
        pct(l, 0.5),
        pct(l, 0.99),
        pct(l, 1.0),
        p.alive()
    );
    Ok(())
}

/// Lowers this thread's CPU priority to the lowest (nice 19); threads it
/// starts afterwards inherit it. Best effort, through renice(1).
fn lowest_priority() {
    // On Linux a thread's id is what setpriority (and renice) act on; the
    // main thread's id is the process id.
    let _ = std::process::Command::new("renice")
        .args(["-n", "19", "-p", &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// `sent received p50_us ...`: what `probe` prints.
fn parse_probe(s: &str) -> Option<Honest> {
    let mut w = s.split_whitespace();
    let sent = w.next()?.parse().ok()?;
    let received = w.next()?.parse().ok()?;
    let lat_us = w.filter_map(|x| x.parse().ok()).collect();
    Some(Honest {
        sent,
        received,
        lat_us,
        seqs: Vec::new(),
    })
}

fn probe(p: Probe) -> Result<(), String> {
    let addr = loopback(&p.addr)?;
    let source: IpAddr = p
        .source
        .parse()
        .map_err(|_| format!("--source {}: not an address", p.source))?;
    let stop = Arc::new(AtomicBool::new(false));
    let h = honest(addr, &p.tag, Some(source), stop.clone())
        .map_err(|e| format!("honest client: {e}"))?;
    thread::sleep(Duration::from_secs_f64(p.seconds));
    stop.store(true, Ordering::Relaxed);
    let g = h.join().map_err(|_| "probe thread failed".to_string())?;
    let missing: Vec<u64> = (0..g.sent).filter(|s| !g.seqs.contains(s)).collect();
    if !missing.is_empty() {
        eprintln!("probe: missing sequence numbers {missing:?}");
    }
    let lat: Vec<String> = g.lat_us.iter().map(u64::to_string).collect();
    println!("{} {} {}", g.sent, g.received, lat.join(" "));
    Ok(())
}

/// One round trip: `line`, then a `/ping`; the time until the pong.
fn round_trip(w: &mut TcpStream, r: &mut impl BufRead, line: &str) -> Result<u64, String> {
    let t = Instant::now();
    write!(w, "{line}\n/ping rt\n").map_err(|e| e.to_string())?;
    let mut l = String::new();
    loop {
        l.clear();
        if r.read_line(&mut l).map_err(|e| e.to_string())? == 0 {
            return Err("server closed".into());
        }
        if l.trim_end() == "*** rt" {
            return Ok(t.elapsed().as_micros() as u64);
        }
    }
}

fn search_bench(addr: SocketAddr, o: &Search) -> Result<String, String> {
    let w = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    w.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(w.try_clone().map_err(|e| e.to_string())?);
    let mut w = w;
    let nick = format!("searcher{}", std::process::id() % 10_000);
    round_trip(&mut w, &mut r, &nick)?;
    let filled = Instant::now();
    for room in 0..o.rooms {
        let mut batch = format!("/join #s{room}\n");
        for i in 0..o.lines {
            batch.push_str(&format!(
                "line {i} of room {room}: some ordinary words of chat, nothing to find\n"
            ));
        }
        w.write_all(batch.as_bytes()).map_err(|e| e.to_string())?;
        round_trip(&mut w, &mut r, "/ping fill")?;
    }
    let fill_secs = filled.elapsed().as_secs_f64();
    let mut ping = Vec::new();
    let mut search = Vec::new();
    for _ in 0..o.searches {
        ping.push(round_trip(&mut w, &mut r, "/ping p")?);
        search.push(round_trip(&mut w, &mut r, "/search zebra-never-said")?);
    }
    ping.sort_unstable();
    search.sort_unstable();
    Ok(format!(
        "{{\"scenario\":\"search\",\"rooms\":{},\"lines_per_room\":{},\"fill_secs\":{fill_secs:.2},\"ping_p50_ms\":{:.2},\"ping_p99_ms\":{:.2},\"search_p50_ms\":{:.2},\"search_p99_ms\":{:.2}}}",
        o.rooms,
        o.lines,
        pct(&ping, 0.5),
        pct(&ping, 0.99),
        pct(&search, 0.5),
        pct(&search, 0.99)
    ))
}

fn main() -> ExitCode {
    let flags: Flags = argh::from_env();
    let r = match flags.cmd {
        Cmd::Idle(o) => loopback(&o.addr).and_then(|addr| {
            let hold = Duration::from_secs_f64(o.hold);
            if let Some(ca) = &o.tls_ca {
                let workers = o.join_workers.min(16);
                return tls::idle(
                    addr,
                    std::path::Path::new(ca),
                    o.connections,
                    o.room_size,
                    Proc(o.pid),
                    hold,
                    workers,
                )
                .map(emit);
            }
            perf::idle(
                addr,
                dialect(o.irc, o.ws),
                o.connections,
                o.room_size,
                Proc(o.pid),
                hold,
                o.join_workers,
            )
            .map(emit)
        }),
        Cmd::Fanout(o) => std::iter::once(&o.addr)
            .chain(&o.also)
            .map(|a| loopback(a))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|addrs| {
                perf::fanout(perf::FanoutArgs {
                    addrs,
                    dialect: dialect(o.irc, o.ws),
                    receivers: o.receivers,
                    senders: o.senders,
                    messages: o.messages,
                    rate: o.rate,
                    pid: Proc(o.pid),
                    timeout: Duration::from_secs(o.timeout),
                    oper: o.oper,
                    join_workers: o.join_workers,
                })
                .map(emit)
            }),
        Cmd::Churn(o) => loopback(&o.addr).and_then(|addr| {
            perf::churn(
                addr,
                dialect(o.irc, o.ws),
                o.parallel,
                o.seconds,
                o.room_size,
                o.cycles,
                Proc(o.pid),
            )
            .map(emit)
        }),
        Cmd::Abuse(a) => abuse(a),
        Cmd::Soak(s) => soak(s),
        Cmd::Probe(p) => probe(p),
        Cmd::Search(o) => loopback(&o.addr)
            .and_then(|a| search_bench(a, &o))
            .map(emit),
        Cmd::Relay(o) => loopback(&o.listen).and_then(|a| {
            let tls = match (&o.tls_cert, &o.tls_key) {
                (Some(c), Some(k)) => {
                    Some(chatd::tls::server_config(c, k).map_err(|e| e.to_string())?)
                }
                (None, None) => None,
                _ => return Err("--tls-cert and --tls-key go together".into()),
            };
            relay::run(a, tls).map_err(|e| format!("relay: {e}"))
        }),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatd-bench: {e}");
            ExitCode::from(2)
        }
    }
}
