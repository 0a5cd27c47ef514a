//! Shared helpers for the integration tests: start the real `chatd` binary
//! ([`Daemon`], for what flags, signals, logs and systemd do) or the library's
//! server in this process ([`InProcess`]) on an ephemeral loopback port, and
//! talk to it with plain TCP exactly as `nc` would. Every wait has a
//! deadline; nothing sleeps its way to correctness. Every file a test writes
//! is under [`temp_dir`].

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fresh, empty directory for one test's state, removed by its owner.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "chatd-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// How long any single expectation may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running daemon, killed on drop. Unless a test passes its own
/// `--state-dir` or `--ephemeral`, it gets a private state directory, which
/// is removed on drop.
pub struct Daemon {
    child: Child,
    /// The addresses it said it listens on, in flag order.
    pub addrs: Vec<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    /// How it was started, to start it again on the same state.
    args: Vec<String>,
    pub state: Option<PathBuf>,
    owns_state: bool,
}

impl Daemon {
    /// Starts chatd on 127.0.0.1 port 0 with extra flags.
    pub fn start(extra: &[&str]) -> Daemon {
        Daemon::start_on(&["127.0.0.1:0"], extra)
    }

    /// Starts chatd on the given listen addresses (ports 0) with extra flags.
    pub fn start_on(listen: &[&str], extra: &[&str]) -> Daemon {
        let mut args: Vec<String> = Vec::new();
        for l in listen {
            args.extend(["--listen".to_string(), l.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut state = None;
        let mut owns_state = false;
        if let Some(i) = args.iter().position(|a| a == "--state-dir") {
            state = args.get(i + 1).map(PathBuf::from);
        } else if !args.iter().any(|a| a == "--ephemeral") {
            let d = temp_dir("state");
            args.extend(["--state-dir".to_string(), d.display().to_string()]);
            state = Some(d);
            owns_state = true;
        }
        let mut d = Daemon::spawn(
            Command::new(env!("CARGO_BIN_EXE_chatd")).args(&args),
            listen.len(),
        );
        d.args = args;
        d.state = state;
        d.owns_state = owns_state;
        d
    }

    /// The journal file of this daemon's state directory.
    pub fn journal_path(&self) -> PathBuf {
        self.state
            .as_deref()
            .expect("has a state dir")
            .join("journal")
    }

    /// Sends a signal by name (`TERM`, `HUP`, …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// SIGTERM, then waits (bounded) for the exit; returns the exit code and
    /// how long it took.
    pub fn terminate(&mut self) -> (Option<i32>, Duration) {
        let t0 = Instant::now();
        self.signal("TERM");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), t0.elapsed());
            }
            assert!(t0.elapsed() < WAIT, "chatd did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The status listener's address, from the log.
    pub fn status_addr(&self) -> SocketAddr {
        let line = self.wait_log("status listener on http://");
        let a = line.rsplit("http://").next().unwrap().trim_end_matches('/');
        a.parse().expect("status address")
    }

    /// SIGKILL, no warning: what a crash looks like.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a new daemon with the same flags and state directory, on fresh
    /// ports (the old ones may linger in TIME_WAIT). The old one is killed.
    pub fn restart(self) -> Daemon {
        self.respawn(false)
    }

    /// Kills it and starts it again on the same addresses and state (for
    /// clients that reconnect to a fixed port).
    pub fn restart_same_port(self) -> Daemon {
        self.respawn(true)
    }

    fn respawn(mut self, same_ports: bool) -> Daemon {
        self.kill9();
        let mut args = std::mem::take(&mut self.args);
        let (state, owns) = (self.state.take(), self.owns_state);
        self.owns_state = false;
        let mut listeners = 0;
        for i in 0..args.len() {
            if args[i] == "--listen" && i + 1 < args.len() {
                let old = self.addrs[listeners];
                let new = if same_ports {
                    old
                } else {
                    SocketAddr::new(old.ip(), 0)
                };
                args[i + 1] = new.to_string();
                listeners += 1;
            }
        }
        let mut d = Daemon::spawn(
            Command::new(env!("CARGO_BIN_EXE_chatd")).args(&args),
            listeners,
        );
        d.args = args;
        d.state = state;
        d.owns_state = owns;
        d
    }

    /// Starts a prepared command (for wrappers such as a lowered fd limit).
    pub fn spawn(cmd: &mut Command, listeners: usize) -> Daemon {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .env_remove("STATE_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chatd");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on ") {
                    let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut addrs = Vec::new();
        let deadline = Instant::now() + WAIT;
        while addrs.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(a) => addrs.push(a.parse().expect("address in log")),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "chatd did not report its address; log: {:?}",
                        log.lock().unwrap()
                    );
                }
            }
        }
        Daemon {
            child,
            addrs,
            log,
            args: Vec::new(),
            state: None,
            owns_state: false,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("fd dir")
            .count()
    }

    /// User + system CPU time used so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields overall.
        let after = &stat[stat.rfind(')').expect(")") + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// True while the process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The TLS listener's address (`--tls-listen`).
    pub fn tls_addr(&self) -> SocketAddr {
        let l = self.wait_log("listening for TLS on ");
        let at = l.find("listening for TLS on ").expect("found") + "listening for TLS on ".len();
        l[at..].trim().parse().expect("TLS address in log")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.log().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}: {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.owns_state
            && let Some(d) = &self.state
        {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Sends raw bytes as an HTTP request and reads the response to EOF.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect status");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET path`; returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    );
    let code = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// True if `needle` occurs in any file under `dir`.
pub fn dir_contains(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            dir_contains(&p, needle)
        } else {
            std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

/// A raw TCP client, as nc is.
pub struct Client {
    pub stream: TcpStream,
    pending: Vec<u8>,
    eof: bool,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            pending: Vec::new(),
            eof: false,
        }
    }

    /// Connects from a given loopback address (127.0.0.0/8 is all ours), as
    /// another host would: per-address limits see it as one.
    pub fn connect_from(addr: SocketAddr, local: std::net::Ipv4Addr) -> Client {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.bind(&SocketAddr::from((local, 0)).into())
            .expect("bind");
        sock.connect(&addr.into()).expect("connect");
        let stream: TcpStream = sock.into();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            pending: Vec::new(),
            eof: false,
        }
    }

    /// Connects, gives `nick`, and waits until it is in #lobby.
    pub fn named(addr: SocketAddr, nick: &str) -> Client {
        let mut c = Client::connect(addr);
        c.expect_prefix("*** Welcome");
        c.send(nick);
        c.expect(&format!("*** {nick} joined #lobby"));
        c
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads the next complete line, or `None` at EOF or after `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.eof {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.eof = true,
            }
        }
    }

    /// Waits for a line satisfying `pred`; returns it. Fails with what was seen.
    pub fn expect_by(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(l) if pred(&l) => return l,
                Some(l) => seen.push(l),
                None => panic!("no line {what}; eof={}, seen: {seen:#?}", self.eof),
            }
        }
    }

    pub fn expect(&mut self, exact: &str) -> String {
        self.expect_by(&format!("== {exact:?}"), |l| l == exact)
    }

    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        self.expect_by(&format!("starting {prefix:?}"), |l| l.starts_with(prefix))
    }

    /// Waits for the server to close; returns the lines that came first.
    pub fn expect_closed(&mut self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.next_line(deadline.saturating_duration_since(Instant::now())) {
                Some(l) => seen.push(l),
                None if self.eof => return seen,
                None => {}
            }
        }
        panic!("connection not closed; seen: {seen:#?}");
    }

    /// Round trip: after this, everything the server sent before it has been
    /// read (the server answers in order).
    pub fn sync(&mut self) -> Vec<String> {
        self.send("/ping sync");
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(l) if l == "*** sync" || l == "ok pong sync" => return seen,
                Some(l) => seen.push(l),
                None => panic!("no pong; seen: {seen:#?}"),
            }
        }
    }

    pub fn half_close(&mut self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
    }
}

/// A `chatc` in scriptable mode: commands in on stdin, one line per event out.
pub struct Chatc {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    /// A data directory made for this chatc alone, removed with it.
    own_data: Option<PathBuf>,
}

impl Chatc {
    pub fn start(server: SocketAddr, args: &[&str]) -> Chatc {
        Chatc::start_at(&server.to_string(), args)
    }

    /// [`Chatc::start`] with the server as chatc is given it (a name, a
    /// `chatds://` address).
    pub fn start_at(server: &str, args: &[&str]) -> Chatc {
        let data = temp_dir("chatc-data");
        let mut c = Chatc::start_in(server, args, &data);
        c.own_data = Some(data);
        c
    }

    /// With its files (identity, known keys) in `data` (`XDG_DATA_HOME`).
    pub fn start_in(server: &str, args: &[&str], data: &Path) -> Chatc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatc"))
            .arg(server)
            .args(args)
            .env("XDG_DATA_HOME", data)
            .env_remove("CHATC_SERVER")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chatc");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Chatc {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            own_data: None,
        }
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to chatc");
        stdin.flush().unwrap();
    }

    /// Waits for a line satisfying `pred`.
    pub fn expect_by(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!("chatc printed no line {what}; it printed: {:#?}", self.seen),
            }
        }
    }

    pub fn expect(&mut self, exact: &str) -> String {
        self.expect_by(&format!("== {exact:?}"), |l| l == exact)
    }

    pub fn expect_prefix(&mut self, p: &str) -> String {
        self.expect_by(&format!("starting {p:?}"), |l| l.starts_with(p))
    }

    pub fn expect_contains(&mut self, p: &str) -> String {
        self.expect_by(&format!("containing {p:?}"), |l| l.contains(p))
    }

    /// Waits, bounded, for chatc to exit on its own (stdin still open).
    pub fn exit_code(&mut self) -> Option<i32> {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            if t0.elapsed() > WAIT {
                panic!("chatc did not exit by itself; it printed: {:#?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Closes stdin (chatc then quits) and waits, bounded, for the exit.
    pub fn finish(mut self) -> Option<i32> {
        self.stdin = None;
        let t0 = Instant::now();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            if t0.elapsed() > WAIT {
                let _ = self.child.kill();
                panic!("chatc did not exit after its input ended");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Chatc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.own_data {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A private CA and a certificate for `localhost` and 127.0.0.1 signed by
/// it, as PEM files in a fresh directory.
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    pub fn new(tag: &str) -> Certs {
        Certs::for_names(tag, &["localhost", "127.0.0.1"])
    }

    pub fn for_names(tag: &str, names: &[&str]) -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = temp_dir(tag);
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{tag} test CA"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let c = Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&c.ca, ca.pem()).unwrap();
        std::fs::write(&c.cert, leaf.pem()).unwrap();
        std::fs::write(&c.key, leaf_key.serialize_pem()).unwrap();
        c
    }

    /// The daemon flags that serve TLS with this certificate on port 0.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--tls-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS client that verifies the server against `ca`, then reads and
/// writes lines as `ncat --ssl` would.
pub struct TlsClient {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    pending: Vec<u8>,
}

impl TlsClient {
    pub fn connect(addr: SocketAddr, ca: &Path) -> Result<TlsClient, rustls::Error> {
        let cfg = chatd::tls::client_config(Some(ca)).expect("client config");
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(cfg, name)?;
        let mut sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(WAIT)).unwrap();
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                let inner = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .cloned();
                return Err(inner.unwrap_or(rustls::Error::General(e.to_string())));
            }
        }
        Ok(TlsClient {
            tls: rustls::StreamOwned::new(conn, sock),
            pending: Vec::new(),
        })
    }

    pub fn send(&mut self, line: &str) {
        self.tls.write_all(format!("{line}\n").as_bytes()).unwrap();
        self.tls.flush().unwrap();
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).unwrap();
        self.tls.flush().unwrap();
    }

    /// Reads until `needle` has arrived (or EOF, or the wait); returns all
    /// that came.
    pub fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        while !self.pending.windows(needle.len()).any(|w| w == needle) && Instant::now() < deadline
        {
            let mut buf = [0u8; 16384];
            match self.tls.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
        std::mem::take(&mut self.pending)
    }

    /// Waits for a line equal to `exact`; fails with what was seen.
    pub fn expect(&mut self, exact: &str) {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                let l = String::from_utf8_lossy(&line[..i]).into_owned();
                if l == exact {
                    return;
                }
                seen.push(l);
            }
            assert!(
                Instant::now() < deadline,
                "no line {exact:?}; seen {seen:#?}"
            );
            let mut buf = [0u8; 4096];
            match self.tls.read(&mut buf) {
                Ok(0) => panic!("closed before {exact:?}; seen {seen:#?}"),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read error {e} before {exact:?}; seen {seen:#?}"),
            }
        }
    }
}

/// A server running in this test process on a port-0 listener: the
/// library's `Server`, built from the same flags the binary takes, on a
/// thread of its own (it is single-threaded and not `Send`, so it is built
/// there). It does not take the process's signals. Stopped and joined on
/// drop, as SIGTERM would stop it; its state directory (a fresh temporary
/// one unless the flags say `--ephemeral` or `--state-dir`) is removed.
pub struct InProcess {
    pub addr: SocketAddr,
    stop: Option<chatd::server::StopHandle>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    state: Option<PathBuf>,
}

impl InProcess {
    pub fn start(flags: &[&str]) -> InProcess {
        let mut args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        let mut state = None;
        if !args
            .iter()
            .any(|a| a == "--ephemeral" || a == "--state-dir")
        {
            let d = temp_dir("inproc");
            args.extend(["--state-dir".to_string(), d.display().to_string()]);
            state = Some(d);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let cfg = chatd::config::Flags::parse(&refs)
            .expect("flags")
            .settings(None)
            .validate()
            .expect("valid flags");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut server = match chatd::server::Server::new(cfg, vec![listener], None, None) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return Ok(());
                }
            };
            let _ = tx.send(Ok(server.stop_handle()));
            server.run()
        });
        let stop = rx
            .recv_timeout(WAIT)
            .expect("the server thread answers")
            .expect("the server starts");
        InProcess {
            addr,
            stop: Some(stop),
            thread: Some(thread),
            state,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it as SIGTERM does; returns what `run` returned.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            s.stop();
        }
        match self.thread.take() {
            Some(t) => t.join().expect("server thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop_now();
        if let Some(d) = &self.state {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// True if `program args…` runs and succeeds (a check that something a test
/// needs is installed: `have("nats-server", &["--version"])`).
pub fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True if `program` can be started at all (whatever it then says).
pub fn exists(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Where this run's skips are counted: Cargo's temporary directory for
/// integration tests, one file per `cargo test` (keyed by Cargo's process
/// id, which every test binary of a run shares), read and removed by the
/// `tests_summary` target that runs after this one.
pub fn skip_file() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "skipped-{}.txt",
        std::os::unix::process::parent_id()
    ))
}

/// Gate for a test that needs an outside program. With it, true. Without
/// it: under `CI=true` the test fails (CI installs everything, so it never
/// skips silently); otherwise the skip is said on one line (written past the
/// test harness's capture, so it shows in a passing run), counted for the
/// summary at the end of the run, and false is returned.
pub fn need(test: &str, available: bool, what: &str, install: &str) -> bool {
    if available {
        return true;
    }
    let line = format!("skipped {test}: {what} is not installed ({install})");
    assert!(
        std::env::var_os("CI").is_none(),
        "{line}; CI must have it: contrib/install-test-deps installs it"
    );
    let _ = writeln!(std::io::stderr(), "{line}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skip_file())
    {
        let _ = writeln!(f, "{line}");
    }
    false
}

/// `need` for the programs several tests use.
pub fn need_nats(test: &str) -> bool {
    need(
        test,
        have("nats-server", &["--version"]),
        "nats-server",
        "apt-get install nats-server, or contrib/install-test-deps",
    )
}

pub fn need_chromium(test: &str) -> bool {
    need(
        test,
        have("chromium", &["--version"]),
        "chromium",
        "apt-get install chromium chromium-driver, or contrib/install-test-deps",
    )
}

pub fn need_python(test: &str, modules: &str) -> bool {
    let script = format!(
        "import sys{}",
        if modules.is_empty() {
            String::new()
        } else {
            format!(", {modules}")
        }
    );
    let what = if modules.is_empty() {
        "python3".to_string()
    } else {
        format!("python3 with {modules}")
    };
    need(
        test,
        have("python3", &["-c", &script]),
        &what,
        "apt-get install python3 python3-cryptography, or contrib/install-test-deps",
    )
}

/// A fake server speaking machine v1, for what a real chatd never does: it
/// accepts one chatc and says what a test tells it to.
pub struct FakeServer {
    lines: BufReader<std::net::TcpStream>,
    out: std::net::TcpStream,
}

impl FakeServer {
    pub fn accept(l: &std::net::TcpListener) -> FakeServer {
        let (s, _) = l.accept().expect("chatc connects");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        FakeServer {
            lines: BufReader::new(s.try_clone().expect("clone")),
            out: s,
        }
    }

    /// The next line chatc sent (empty at its end).
    pub fn recv(&mut self) -> String {
        let mut l = String::new();
        self.lines.read_line(&mut l).expect("a line from chatc");
        l.trim_end().to_string()
    }

    /// The lines chatc sent before `marker` (which the test typed after
    /// what it wants to check was not sent).
    pub fn recv_until(&mut self, marker: &str) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            let l = self.recv();
            if l == marker {
                return got;
            }
            assert!(!l.is_empty(), "chatc closed before {marker:?}: {got:?}");
            got.push(l);
        }
    }

    pub fn send(&mut self, l: &str) {
        self.out
            .write_all(format!("{l}\n").as_bytes())
            .expect("write to chatc");
    }

    /// Writes raw bytes (no newline added).
    pub fn send_raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b)
    }
}
