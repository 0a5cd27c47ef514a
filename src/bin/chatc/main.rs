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
use chatd::client::render::{Style, render};
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
    /// no terminal bell when a line names you (mentions are still drawn bold)
    #[argh(switch)]
    no_bell: bool,
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
/// The longest line accepted from the server: an envelope of the largest
/// image the server takes (2 MiB, base64) and then some. A server sending
/// more is cut off, not buffered without end.
const MAX_SERVER_LINE: usize = 4 * 1024 * 1024;
/// Images larger than this, in pixels a side or in decoded bytes, get no
/// preview (a 380 KB PNG can claim 20000 x 20000 pixels).
const PREVIEW_MAX_SIDE: u32 = 4096;
const PREVIEW_MAX_ALLOC: u64 = 64 * 1024 * 1024;

enum Msg {
    User(String),
    InputClosed,
    Connected,
    Line(String),
    Lost(String),
    Retrying(Duration),
    /// The connection cannot work (an untrusted certificate): say why, stop.
    Fatal(String),
    /// A preview drawn off the main thread.
    Preview(Vec<String>),
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
    let mut b = [0u8; 2];
    let _ = chatd::random::fill(&mut b);
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
                    match read_line(&mut lines, &mut buf, MAX_SERVER_LINE) {
                        Ok(None) => {
                            break format!(
                                "the server sent a line over {} MiB; not listening to it",
                                MAX_SERVER_LINE >> 20
                            );
                        }
                        Ok(Some(0)) => break "the server closed the connection".to_string(),
                        Ok(Some(_)) => {
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

/// Reads one line into `buf`, at most `max` bytes: `Some(n)` (0 at the end
/// of the stream), or `None` if the line is longer (its start is dropped;
/// the caller gives up on the connection).
fn read_line(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<usize>> {
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok(Some(buf.len()));
        }
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if buf.len() + take > max {
            return Ok(None);
        }
        buf.extend_from_slice(avail.get(..take).unwrap_or(&[]));
        r.consume(take);
        if done {
            return Ok(Some(buf.len()));
        }
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
    style: Style,
    truecolor: bool,
    preview: bool,
}

impl Ui {
    fn render(&self, e: &Event) -> String {
        render(e, &self.style)
    }

    /// Draws a preview on a thread of its own (a hostile image must not
    /// hold the interface), within pixel and memory limits; the lines come
    /// back as `Msg::Preview`.
    fn preview(&self, data: Vec<u8>, tx: Sender<Msg>) {
        if !(self.preview && self.style.color) {
            return;
        }
        let truecolor = self.truecolor;
        thread::spawn(move || {
            let lines = preview_lines(&data, truecolor);
            if !lines.is_empty() {
                let _ = tx.send(Msg::Preview(lines));
            }
        });
    }
}

/// Unicode half blocks in colour: two pixel rows per text row. Nothing for
/// an image that does not decode within the limits.
fn preview_lines(data: &[u8], truecolor: bool) -> Vec<String> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(PREVIEW_MAX_SIDE);
    limits.max_image_height = Some(PREVIEW_MAX_SIDE);
    limits.max_alloc = Some(PREVIEW_MAX_ALLOC);
    let Ok(mut reader) = image::ImageReader::new(std::io::Cursor::new(data)).with_guessed_format()
    else {
        return Vec::new();
    };
    reader.limits(limits);
    let Ok(img) = reader.decode() else {
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
            if truecolor {
                s.push_str(&format!(
                    "\x1b[38;2;{};{};{}m\x1b[48;2;{};{};{}m\u{2580}",
                    top[0], top[1], top[2], bottom[0], bottom[1], bottom[2]
                ));
            } else {
                s.push_str(&format!(
                    "\x1b[38;5;{}m\x1b[48;5;{}m\u{2580}",
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
) -> Result<(Vec<String>, String), String> {
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
    let lines = core.upload(kind, &name, &mime, data, now_ms())?;
    Ok((lines, format!("{name} ({})", human_size(size as u64))))
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

/// What the prompt shows, kept by the main thread: the room the next line
/// goes to. rustyline draws a prompt when a line is begun, so after a line
/// that changes rooms the input thread waits (at most [`SETTLE_WAIT`]) for
/// the server's answer before beginning the next one: the prompt is never
/// the room just left.
#[derive(Default)]
struct Prompt {
    text: String,
    /// User lines the main thread has handled.
    handled: u64,
    /// A room change was sent and no server line has come since.
    settling: bool,
}

type SharedPrompt = Arc<(Mutex<Prompt>, std::sync::Condvar)>;

const SETTLE_WAIT: Duration = Duration::from_secs(1);

/// A line that may move the user to another room.
fn changes_room(line: &str) -> bool {
    let w = line.split_whitespace().next().unwrap_or("");
    ["/join", "/j", "/part", "/leave", "/create"]
        .iter()
        .any(|c| w.eq_ignore_ascii_case(c))
}

/// Reads what the user types. In a terminal the prompt shows the room the
/// next line goes to (see [`Prompt`]); secrets are asked for without echo
/// and never enter the line history.
fn input_thread(tx: Sender<Msg>, editor: Option<rustyline::DefaultEditor>, prompt: SharedPrompt) {
    let mut sent: u64 = 0;
    match editor {
        Some(mut ed) => loop {
            let p = {
                let (lock, cv) = &*prompt;
                let text = lock.lock().ok().and_then(|g| {
                    cv.wait_timeout_while(g, SETTLE_WAIT, |st| st.handled < sent || st.settling)
                        .ok()
                        .map(|(st, _)| st.text.clone())
                });
                text.filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "> ".to_string())
            };
            match ed.readline(&p) {
                Ok(line) => {
                    let line = secrets(line, &p);
                    if !holds_secret(&line) {
                        let _ = ed.add_history_entry(line.as_str());
                    }
                    sent += 1;
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

/// A line the line history must not keep: a password, or a room secret.
fn holds_secret(line: &str) -> bool {
    let mut w = line.split_whitespace();
    match w.next().map(str::to_ascii_lowercase).as_deref() {
        Some("/login" | "/register" | "/passwd" | "/unregister") => true,
        Some("/join" | "/j") => w.next().is_some_and(|r| r.contains(':')),
        _ => false,
    }
}

/// Asks, without echo, for what a command left out: the password of
/// `/login nick` and `/register`, the passphrase of `/join #room
/// --passphrase`. A password typed on the line itself is taken too, but the
/// terminal has shown it: the line is overwritten.
fn secrets(line: String, prompt: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let cmd = words.first().map(|w| w.to_ascii_lowercase());
    let ask = |what: &str| {
        rpassword::prompt_password(what)
            .ok()
            .filter(|p| !p.is_empty())
    };
    match (cmd.as_deref(), words.as_slice()) {
        (Some("/join" | "/j"), [_, room, "--passphrase"]) => {
            match ask(&format!("passphrase for {room}: ")) {
                Some(p) => format!("/join {room}:{p}"),
                None => format!("/join {room}"),
            }
        }
        (Some("/login"), [_, nick]) => match ask(&format!("password for {nick}: ")) {
            Some(p) => format!("/login {nick} {p}"),
            None => String::new(),
        },
        (Some("/passwd"), [_]) => {
            let old = ask("current password: ");
            let (Some(old), Some(a), Some(b)) =
                (old, ask("new password: "), ask("the same again: "))
            else {
                return String::new();
            };
            if a != b {
                eprintln!("the two passwords differ: nothing changed");
                return String::new();
            }
            format!("/passwd\n{old}\n{a}")
        }
        (Some("/unregister"), [_]) => match ask("your password, to give up this nick: ") {
            Some(p) => format!("/unregister\n{p}"),
            None => String::new(),
        },
        (Some("/register"), [_]) => {
            let (Some(a), Some(b)) = (ask("new password: "), ask("the same again: ")) else {
                return String::new();
            };
            if a != b {
                eprintln!("the two passwords differ: nothing registered");
                return String::new();
            }
            format!("/register {a}")
        }
        (Some("/join" | "/j"), [_, room, ..]) if room.contains(':') => {
            let shown = format!("/join {}:********", room.split(':').next().unwrap_or(""));
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "\x1b[1A\x1b[2K{prompt}{shown}");
            let _ = o.flush();
            line
        }
        (Some("/login" | "/register"), [_, _, ..]) => {
            // Up one line, clear it, and say what was typed without the
            // password.
            let shown = match words.as_slice() {
                [_, nick, _, ..] if cmd.as_deref() == Some("/login") => {
                    format!("/login {nick} ********")
                }
                _ => format!("{} ********", words.first().copied().unwrap_or_default()),
            };
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "\x1b[1A\x1b[2K{prompt}{shown}");
            let _ = o.flush();
            line
        }
        _ => line,
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
        style: Style {
            color,
            times: term,
            me: None,
            bell: term && !flags.no_bell,
        },
        truecolor,
        preview: !flags.no_preview,
    };
    let prompt: SharedPrompt = Arc::default();
    let writer: Arc<Mutex<Option<link::Writer>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (tx, writer, stop, addr) = (tx.clone(), writer.clone(), stop.clone(), addr.clone());
        thread::spawn(move || net_thread(addr, tls, tx, writer, stop));
    }
    {
        let (tx, prompt) = (tx.clone(), prompt.clone());
        thread::spawn(move || input_thread(tx, editor, prompt));
    }
    // Kept for the preview threads; the loop ends on /quit, not on the
    // channel closing.
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
    let (mut memory, remembered) = keys::MemoryFile::open(&data_dir);
    core.load_memory(&remembered);
    if let Err(e) = memory.compact(&core.dump_memory()) {
        ui.out.line(ui.render(&Event::Error(format!(
            "cannot keep the memory of messages seen in {}: {e}; a replayed message will be caught only until chatc exits",
            data_dir.display()
        ))));
    }
    let mut stopped: Option<String> = None;
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
            Msg::Line(l) => {
                if let Ok(mut p) = prompt.0.lock() {
                    p.settling = false;
                }
                core.server(&l, now_ms())
            }
            Msg::Preview(lines) => {
                for l in lines {
                    ui.out.line(l);
                }
                Vec::new()
            }
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
                if let Ok(mut p) = prompt.0.lock() {
                    p.handled += 1;
                    p.settling = changes_room(&line);
                }
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
                            Ok((lines, label)) => {
                                for l in lines {
                                    let big = l.len() > 256 * 1024;
                                    send(&writer, &l, &mut ui, big.then_some(label.as_str()));
                                }
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
                    if ui.style.me.as_deref() != core.my_nick() {
                        ui.style.me = core.my_nick().map(str::to_string);
                    }
                    ui.out.line(ui.render(&e));
                    if let Event::Media {
                        kind: Upload::Image,
                        has_data: true,
                        history: false,
                        ..
                    } = &e
                        && let Some(r) = core.last_received()
                    {
                        ui.preview(r.data.clone(), tx.clone());
                    }
                }
                Action::Remember(line) => {
                    let kept = memory.remember(&line).and_then(|full| match full {
                        true => memory.compact(&core.dump_memory()),
                        false => Ok(()),
                    });
                    if let Err(e) = kept {
                        ui.out.line(ui.render(&Event::Error(format!(
                            "cannot write the memory of messages seen: {e}"
                        ))));
                    }
                }
                Action::Times(on) => ui.style.times = on,
                Action::Stop(why) => {
                    ui.out.line(ui.render(&Event::Error(why.clone())));
                    stopped = Some(why);
                    stop.store(true, Ordering::SeqCst);
                    quitting.get_or_insert_with(Instant::now);
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
        if let Ok(mut p) = prompt.0.lock() {
            p.text = core.prompt();
            prompt.1.notify_all();
        }
    }
    if stopped.is_some() {
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::new(w, h);
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("encode");
        out.into_inner()
    }

    #[test]
    fn a_preview_is_drawn_only_within_the_pixel_limit() {
        assert!(!preview_lines(&png(64, 64), false).is_empty());
        // A few kilobytes claiming more pixels a side than the limit: not
        // decoded at all (a 20000 x 20000 one took 406 MB before).
        let wide = png(PREVIEW_MAX_SIDE + 1, 1);
        assert!(wide.len() < 64 * 1024);
        assert!(preview_lines(&wide, false).is_empty());
        assert!(preview_lines(b"\x89PNG\r\n\x1a\n garbage", true).is_empty());
    }

    #[test]
    fn a_line_without_end_is_cut_at_the_cap() {
        let mut r =
            std::io::BufReader::with_capacity(7, &b"short\nlonger than ten bytes\nok\n"[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf, 10).unwrap(), Some(6));
        buf.clear();
        assert_eq!(read_line(&mut r, &mut buf, 10).unwrap(), None);
        assert!(buf.len() <= 10);
    }

    #[test]
    fn secrets_never_enter_the_line_history() {
        assert!(holds_secret("/login bob bobpassword1"));
        assert!(holds_secret("/LOGIN bob x"));
        assert!(holds_secret("/register hunter22"));
        assert!(holds_secret("/join #r:correct horse"));
        assert!(holds_secret("/j ~ab12cd:SECRET"));
        assert!(!holds_secret("/join #rust"));
        assert!(!holds_secret("hello /login"));
    }
}
