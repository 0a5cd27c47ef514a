//! `chatc`: the terminal client. All protocol and crypto logic is in
//! `chatd::client`; this file owns the terminal, the socket, the files and
//! the clock.
//!
//! Threads: one reads the user's input (rustyline in a terminal, plain
//! stdin otherwise), one owns the connection (connecting, reconnecting with
//! backoff, reading lines); the main thread receives both through one
//! channel, runs them through the client core, writes to the socket and
//! prints. In a terminal, printing goes through rustyline's external
//! printer, so incoming lines appear above the line being typed.

mod keys;
mod link;

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argh::FromArgs;
use chatd::client::{Action, ClientCore, Event, numbered, unsafe_name_reason};
use chatd::media;
use chatd::proto::{Upload, human_size};

/// chatc: the chatd client, with end-to-end encrypted rooms.
#[derive(FromArgs)]
struct Flags {
    /// server as host[:port] (default $CHATC_SERVER, else localhost:9999)
    #[argh(positional)]
    server: Option<String>,
    /// nick to use (otherwise type it when asked)
    #[argh(option)]
    nick: Option<String>,
    /// where /save puts files (default $CHATC_DOWNLOADS, $XDG_DOWNLOAD_DIR, else ~/Downloads)
    #[argh(option)]
    downloads: Option<String>,
    /// largest image or file /image and /file send, in bytes (default 2097152, the server's default)
    #[argh(option, default = "2 * 1024 * 1024")]
    max_image: usize,
    /// do not draw previews of received images
    #[argh(switch)]
    no_preview: bool,
    /// connect over TLS and verify the server's certificate (implied by a chatds:// address; default port 9997)
    #[argh(switch)]
    tls: bool,
    /// trust only the CA certificate(s) in this PEM file for --tls, instead of the system's (a homelab's own CA)
    #[argh(option)]
    ca: Option<String>,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
}

const DEFAULT_PORT: u16 = 9999;
/// The port of chatd's TLS listener in the packaged units and the docs.
const DEFAULT_TLS_PORT: u16 = 9997;
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// After /quit, how long to wait for the server to close.
const QUIT_WAIT: Duration = Duration::from_secs(2);
const PREVIEW_COLS: u32 = 32;

enum Msg {
    User(String),
    InputClosed,
    Connected,
    Line(String),
    Lost(String),
    Retrying(Duration),
    /// The connection cannot work (an untrusted certificate): say why, stop.
    Fatal(String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `host`, `host:port`, `[v6]:port`, optionally `chatd://`-prefixed
/// (`chatds://` for TLS); returns the address and whether it asks for TLS.
fn server_addr(arg: Option<String>, tls: bool) -> (String, bool) {
    let s = arg
        .or_else(|| std::env::var("CHATC_SERVER").ok())
        .unwrap_or_else(|| "localhost".to_string());
    let tls = tls || s.starts_with("chatds://");
    let port = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
    let s = s
        .trim_start_matches("chatds://")
        .trim_start_matches("chatd://")
        .trim_end_matches('/')
        .to_string();
    let has_port = if s.starts_with('[') {
        s.contains("]:")
    } else {
        s.matches(':').count() == 1
    };
    let addr = if has_port {
        s
    } else if s.contains(':') {
        format!("[{s}]:{port}")
    } else {
        format!("{s}:{port}")
    };
    (addr, tls)
}

fn downloads_dir(flag: Option<String>) -> PathBuf {
    if let Some(d) = flag.or_else(|| std::env::var("CHATC_DOWNLOADS").ok()) {
        return PathBuf::from(d);
    }
    if let Ok(d) = std::env::var("XDG_DOWNLOAD_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join("Downloads")
}

/// Random jitter in [0.5, 1.5) from the OS generator.
fn jitter(d: Duration) -> Duration {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    let f = 0.5 + f64::from(u16::from_le_bytes(b)) / 65536.0;
    d.mul_f64(f)
}

/// Owns the connection: connects, reads lines, reconnects with exponential
/// backoff and jitter until told to stop. A certificate that is not trusted
/// ends it (`Msg::Fatal`): retrying would not change the answer.
fn net_thread(
    addr: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    tx: Sender<Msg>,
    writer: Arc<Mutex<Option<link::Writer>>>,
    stop: Arc<AtomicBool>,
) {
    let mut backoff = BACKOFF_START;
    while !stop.load(Ordering::SeqCst) {
        match link::connect(&addr, tls.as_ref()) {
            Ok((reader, w)) => {
                if let Ok(mut slot) = writer.lock() {
                    *slot = Some(w);
                }
                backoff = BACKOFF_START;
                if tx.send(Msg::Connected).is_err() {
                    return;
                }
                let mut lines = BufReader::new(reader);
                let mut buf = Vec::new();
                let why = loop {
                    buf.clear();
                    match lines.read_until(b'\n', &mut buf) {
                        Ok(0) => break "the server closed the connection".to_string(),
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf)
                                .trim_end_matches(['\n', '\r'])
                                .to_string();
                            if tx.send(Msg::Line(line)).is_err() {
                                return;
                            }
                        }
                        Err(e) => break e.to_string(),
                    }
                };
                if let Ok(mut w) = writer.lock() {
                    *w = None;
                }
                if tx.send(Msg::Lost(why)).is_err() {
                    return;
                }
            }
            Err(link::LinkError::Retry(why)) => {
                if tx.send(Msg::Lost(why)).is_err() {
                    return;
                }
            }
            Err(link::LinkError::Fatal(why)) => {
                let _ = tx.send(Msg::Fatal(why));
                return;
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let wait = jitter(backoff);
        let _ = tx.send(Msg::Retrying(wait));
        thread::sleep(wait);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Where lines for the user go.
enum Out {
    Term(Box<dyn rustyline::ExternalPrinter + Send>),
    Plain,
}

impl Out {
    fn line(&mut self, s: String) {
        match self {
            Out::Term(p) => {
                // Before the first prompt rustyline writes messages as they
                // are; during one it adds a newline only if missing.
                let _ = p.print(format!("{s}\n"));
            }
            Out::Plain => {
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{s}");
                let _ = o.flush();
            }
        }
    }
}

struct Ui {
    out: Out,
    color: bool,
    truecolor: bool,
    preview: bool,
    times: bool,
}

const NICK_COLORS: [u8; 10] = [31, 32, 33, 34, 35, 36, 91, 92, 93, 96];

impl Ui {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn nick(&self, n: &str) -> String {
        let h = n
            .to_ascii_lowercase()
            .bytes()
            .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
        let c = NICK_COLORS[(h as usize) % NICK_COLORS.len()];
        self.paint(&c.to_string(), n)
    }

    fn time(&self, ts: u64) -> String {
        if !self.times {
            return String::new();
        }
        use chrono::TimeZone;
        let t = chrono::Local
            .timestamp_millis_opt(ts as i64)
            .single()
            .map(|t| t.format("%H:%M").to_string())
            .unwrap_or_default();
        format!("{} ", self.paint("2", &t))
    }

    fn lock(&self, e2e: bool) -> &'static str {
        match (e2e, self.color) {
            (false, _) => "",
            (true, true) => "🔒 ",
            (true, false) => "[e2e] ",
        }
    }

    fn render(&self, e: &Event) -> String {
        match e {
            Event::Msg { room, nick, ts, text, e2e, .. } => {
                format!("{}{room} {}<{}> {text}", self.time(*ts), self.lock(*e2e), self.nick(nick))
            }
            Event::Action { room, nick, ts, text, e2e, .. } => {
                format!("{}* {room} {}{} {text}", self.time(*ts), self.lock(*e2e), self.nick(nick))
            }
            Event::Dm { from, to, ts, text, e2e, .. } => {
                format!("{}{}{} {} -> {}: {text}", self.time(*ts), self.lock(*e2e), self.paint("1", "@"), self.nick(from), self.nick(to))
            }
            Event::Media { room, nick, ts, kind, name, mime, size, e2e, has_data, .. } => {
                let what = if *kind == Upload::Image { "an image" } else { "a file" };
                let save = if *has_data { " (/save to keep it)" } else { "" };
                format!(
                    "{}*** {room}: {}{} sent {what}: {name}, {mime}, {}{save}",
                    self.time(*ts),
                    self.lock(*e2e),
                    self.nick(nick),
                    human_size(*size)
                )
            }
            Event::Join { room, nick } => self.paint("2", &format!("*** {nick} joined {room}")),
            Event::Part { room, nick, reason } if reason.is_empty() => self.paint("2", &format!("*** {nick} left {room}")),
            Event::Part { room, nick, reason } => self.paint("2", &format!("*** {nick} left {room} ({reason})")),
            Event::Quit { nick, reason } => self.paint("2", &format!("*** {nick} quit ({reason})")),
            Event::Nick { old, new } => self.paint("2", &format!("*** {old} is now known as {new}")),
            Event::Topic { room, nick, text } if nick.is_empty() => format!("*** topic of {room}: {text}"),
            Event::Topic { room, nick, text } => format!("*** {nick} set the topic of {room}: {text}"),
            Event::Info(t) => format!("*** {t}"),
            Event::Error(t) => self.paint("31", &format!("!!! {t}")),
            Event::Warn(t) => self.paint("1;31", &format!("!!! {t}")),
            Event::Invite(i) => self.paint(
                "1;32",
                &format!("*** invite: {i}  (share it privately; the server never sees the part after the colon)"),
            ),
            Event::Status(t) => self.paint("33", &format!("--- {t}")),
        }
    }

    /// Unicode half blocks in colour: two pixel rows per text row.
    fn preview(&self, data: &[u8]) -> Vec<String> {
        if !(self.preview && self.color) {
            return Vec::new();
        }
        let Ok(img) = image::load_from_memory(data) else {
            return Vec::new();
        };
        let (w, h) = (img.width().max(1), img.height().max(1));
        let cols = PREVIEW_COLS.min(w);
        let rows = ((h as f64 / w as f64) * f64::from(cols) / 2.0)
            .ceil()
            .clamp(1.0, 24.0) as u32;
        let small = img
            .resize_exact(cols, rows * 2, image::imageops::FilterType::Triangle)
            .to_rgb8();
        let mut out = Vec::new();
        for r in 0..rows {
            let mut s = String::from("    ");
            for c in 0..cols {
                let top = small.get_pixel(c, r * 2).0;
                let bottom = small.get_pixel(c, (r * 2 + 1).min(rows * 2 - 1)).0;
                if self.truecolor {
                    s.push_str(&format!(
                        "\x1b[38;2;{};{};{}m\x1b[48;2;{};{};{}m▀",
                        top[0], top[1], top[2], bottom[0], bottom[1], bottom[2]
                    ));
                } else {
                    s.push_str(&format!(
                        "\x1b[38;5;{}m\x1b[48;5;{}m▀",
                        cube(top),
                        cube(bottom)
                    ));
                }
            }
            s.push_str("\x1b[0m");
            out.push(s);
        }
        out
    }
}

/// The nearest colour of the 256-colour palette's 6x6x6 cube.
fn cube(p: [u8; 3]) -> u8 {
    let q = |v: u8| (u16::from(v) * 5 / 255) as u8;
    16 + 36 * q(p[0]) + 6 * q(p[1]) + q(p[2])
}

/// Writes a line to the server, with progress for big ones.
fn send(
    writer: &Arc<Mutex<Option<link::Writer>>>,
    line: &str,
    ui: &mut Ui,
    label: Option<&str>,
) -> bool {
    let Ok(mut guard) = writer.lock() else {
        return false;
    };
    let Some(stream) = guard.as_mut() else {
        drop(guard);
        ui.out.line(ui.render(&Event::Status(
            "not connected: this line was not sent".into(),
        )));
        return false;
    };
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(b'\n');
    let total = bytes.len();
    let chunk = 64 * 1024;
    let mut shown = 0;
    for (i, part) in bytes.chunks(chunk).enumerate() {
        if stream.write_all(part).is_err() {
            return false;
        }
        if let Some(l) = label {
            let pct = ((i + 1) * chunk).min(total) * 100 / total;
            if pct >= shown + 25 || pct == 100 {
                shown = pct;
                ui.out
                    .line(ui.render(&Event::Status(format!("sending {l}: {pct}%"))));
            }
        }
    }
    true
}

/// `/image path` and `/file path`: read, check, hand to the core.
fn upload(
    core: &mut ClientCore,
    kind: Upload,
    path: &str,
    max: usize,
) -> Result<(String, String), String> {
    let p = Path::new(path);
    let meta = std::fs::metadata(p).map_err(|e| format!("{path}: {e}"))?;
    if meta.len() as usize > max {
        return Err(format!(
            "{path} is {}, over the limit of {}",
            human_size(meta.len()),
            human_size(max as u64)
        ));
    }
    let data = std::fs::read(p).map_err(|e| format!("{path}: {e}"))?;
    let mime = match (media::sniff_image(&data), kind) {
        (Some(m), _) => m.to_string(),
        (None, Upload::Image) => {
            return Err(format!(
                "{path} is not a PNG, JPEG, GIF, BMP or WebP image (send it with /file)"
            ));
        }
        (None, Upload::File) => "application/octet-stream".to_string(),
    };
    let name: String = p
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '/' && *c != '\\')
                .take(64)
                .collect()
        })
        .filter(|n: &String| !n.is_empty())
        .unwrap_or_else(|| "upload".to_string());
    let size = data.len();
    let line = core.upload(kind, &name, &mime, data, now_ms())?;
    Ok((line, format!("{name} ({})", human_size(size as u64))))
}

/// `/save [path]`: never outside the downloads folder by a sender's name,
/// never over an existing file without saying so.
fn save(core: &ClientCore, arg: &str, downloads: &Path) -> Result<String, String> {
    let r = core.last_received().ok_or("nothing received to save yet")?;
    let target = if arg.is_empty() {
        if let Some(why) = unsafe_name_reason(&r.name) {
            return Err(format!(
                "not saving under the sender's name {:?}: {why}; give a name: /save <path>",
                r.name
            ));
        }
        std::fs::create_dir_all(downloads).map_err(|e| format!("{}: {e}", downloads.display()))?;
        let mut t = downloads.join(&r.name);
        let mut n = 1;
        while t.exists() {
            t = downloads.join(numbered(&r.name, n));
            n += 1;
        }
        t
    } else {
        let t = PathBuf::from(arg);
        if t.exists() {
            return Err(format!(
                "{} exists; not overwriting it (choose another name)",
                t.display()
            ));
        }
        t
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(|e| format!("{}: {e}", target.display()))?;
    f.write_all(&r.data)
        .map_err(|e| format!("{}: {e}", target.display()))?;
    let renamed = target
        .file_name()
        .map(|n| n.to_string_lossy() != r.name.as_str())
        .unwrap_or(false)
        && arg.is_empty();
    let note = if renamed {
        format!(" ({} already existed)", r.name)
    } else {
        String::new()
    };
    Ok(format!(
        "saved {} from {} as {}{note}",
        r.name,
        r.from,
        target.display()
    ))
}

fn input_thread(tx: Sender<Msg>, editor: Option<rustyline::DefaultEditor>) {
    match editor {
        Some(mut ed) => loop {
            match ed.readline("> ") {
                Ok(line) => {
                    let _ = ed.add_history_entry(line.as_str());
                    let line = passphrase_join(line);
                    if tx.send(Msg::User(line)).is_err() {
                        return;
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => continue,
                Err(_) => {
                    let _ = tx.send(Msg::InputClosed);
                    return;
                }
            }
        },
        None => {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(Msg::User(line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Msg::InputClosed);
        }
    }
}

/// `/join #room --passphrase` asks for the passphrase without echoing it.
fn passphrase_join(line: String) -> String {
    let mut w = line.split_whitespace();
    if !matches!(w.next(), Some("/join") | Some("/j")) {
        return line;
    }
    let (Some(room), Some("--passphrase"), None) = (w.next(), w.next(), w.next()) else {
        return line;
    };
    match rpassword::prompt_password(format!("passphrase for {room}: ")) {
        Ok(p) if !p.is_empty() => format!("/join {room}:{p}"),
        _ => format!("/join {room}"),
    }
}

fn main() -> ExitCode {
    let flags: Flags = argh::from_env();
    if flags.version {
        println!("chatc {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let (addr, use_tls) = server_addr(flags.server.clone(), flags.tls);
    let tls = if use_tls {
        match chatd::tls::client_config(flags.ca.as_deref().map(Path::new)) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("chatc: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        if flags.ca.is_some() {
            eprintln!("chatc: --ca is for TLS: add --tls, or use a chatds:// address");
            return ExitCode::from(2);
        }
        None
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let downloads = downloads_dir(flags.downloads.clone());
    let (tx, rx): (Sender<Msg>, Receiver<Msg>) = mpsc::channel();
    let (editor, out) = if interactive {
        match rustyline::DefaultEditor::new() {
            Ok(mut ed) => match ed.create_external_printer() {
                Ok(p) => (Some(ed), Out::Term(Box::new(p))),
                Err(_) => (None, Out::Plain),
            },
            Err(_) => (None, Out::Plain),
        }
    } else {
        (None, Out::Plain)
    };
    let term = matches!(out, Out::Term(_));
    let color = term && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let truecolor = std::env::var("COLORTERM").is_ok_and(|v| v == "truecolor" || v == "24bit");
    let mut ui = Ui {
        out,
        color,
        truecolor,
        preview: !flags.no_preview,
        times: term,
    };
    let writer: Arc<Mutex<Option<link::Writer>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (tx, writer, stop, addr) = (tx.clone(), writer.clone(), stop.clone(), addr.clone());
        thread::spawn(move || net_thread(addr, tls, tx, writer, stop));
    }
    {
        let tx = tx.clone();
        thread::spawn(move || input_thread(tx, editor));
    }
    drop(tx);
    ui.out.line(ui.render(&Event::Status(format!(
        "connecting to {addr}{}…",
        if use_tls { " over TLS" } else { "" }
    ))));
    let mut core = ClientCore::new(flags.nick.clone());
    let data_dir = keys::data_dir();
    let mut pins = keys::load_pins(&data_dir);
    match keys::load_or_create_identity(&data_dir) {
        Ok((id, created)) => {
            if created {
                ui.out.line(ui.render(&Event::Status(format!(
                    "made your end-to-end identity {} in {}",
                    id.public().short(),
                    data_dir.display()
                ))));
            }
            core.set_identity(id);
        }
        Err(e) => ui.out.line(ui.render(&Event::Error(format!(
            "no end-to-end identity ({e}): direct messages will not be encrypted"
        )))),
    }
    core.set_pins(pins.clone());
    let mut quitting: Option<Instant> = None;
    let mut was_connected = false;
    loop {
        let msg = match quitting {
            Some(t) => match rx.recv_timeout(QUIT_WAIT.saturating_sub(t.elapsed())) {
                Ok(m) => m,
                Err(_) => break,
            },
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        let actions = match msg {
            Msg::Connected => {
                let text = if was_connected {
                    format!("reconnected to {addr}; logging in and rejoining")
                } else {
                    format!("connected to {addr}")
                };
                was_connected = true;
                ui.out.line(ui.render(&Event::Status(text)));
                core.connected()
            }
            Msg::Line(l) => core.server(&l),
            Msg::Lost(why) => {
                core.disconnected();
                if quitting.is_some() {
                    break;
                }
                ui.out
                    .line(ui.render(&Event::Status(format!("disconnected: {why}"))));
                Vec::new()
            }
            Msg::Fatal(why) => {
                ui.out.line(ui.render(&Event::Error(why)));
                return ExitCode::from(1);
            }
            Msg::Retrying(d) => {
                if quitting.is_none() {
                    ui.out.line(ui.render(&Event::Status(format!(
                        "reconnecting in {:.1} s…",
                        d.as_secs_f64()
                    ))));
                }
                Vec::new()
            }
            Msg::InputClosed => {
                stop.store(true, Ordering::SeqCst);
                quitting.get_or_insert_with(Instant::now);
                vec![Action::Send("/quit".into())]
            }
            Msg::User(line) => {
                let t = line.trim();
                let (cmd, arg) = t.split_once(' ').unwrap_or((t, ""));
                match cmd.to_ascii_lowercase().as_str() {
                    "/image" | "/img" | "/file" => {
                        let kind = if cmd.eq_ignore_ascii_case("/file") {
                            Upload::File
                        } else {
                            Upload::Image
                        };
                        match upload(&mut core, kind, arg.trim(), flags.max_image) {
                            Ok((l, label)) => {
                                let big = l.len() > 256 * 1024;
                                send(&writer, &l, &mut ui, big.then_some(label.as_str()));
                            }
                            Err(e) => ui.out.line(ui.render(&Event::Error(e))),
                        }
                        Vec::new()
                    }
                    "/save" => {
                        match save(&core, arg.trim(), &downloads) {
                            Ok(m) => ui.out.line(ui.render(&Event::Info(m))),
                            Err(e) => ui.out.line(ui.render(&Event::Error(e))),
                        }
                        Vec::new()
                    }
                    _ => core.user(&line, now_ms()),
                }
            }
        };
        for a in actions {
            match a {
                Action::Send(l) => {
                    send(&writer, &l, &mut ui, None);
                }
                Action::Show(e) => {
                    let preview = match &e {
                        Event::Media {
                            kind: Upload::Image,
                            has_data: true,
                            history: false,
                            ..
                        } => core
                            .last_received()
                            .map(|r| ui.preview(&r.data))
                            .unwrap_or_default(),
                        _ => Vec::new(),
                    };
                    ui.out.line(ui.render(&e));
                    for p in preview {
                        ui.out.line(p);
                    }
                }
                Action::Quit => {
                    stop.store(true, Ordering::SeqCst);
                    quitting.get_or_insert_with(Instant::now);
                }
                Action::Pin { nick, key } => {
                    pins.insert(nick, key);
                    if let Err(e) = keys::save_pins(&data_dir, &pins) {
                        ui.out.line(ui.render(&Event::Error(format!(
                            "cannot save known keys in {}: {e}",
                            data_dir.display()
                        ))));
                    }
                }
            }
        }
    }
    ExitCode::SUCCESS
}
