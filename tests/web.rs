//! The browser client: HTTP and WebSocket on the chat port as a browser
//! speaks them (a WebSocket client written here, frames masked as the RFC
//! says), and the page itself in headless Chromium next to nc and chatc.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::browser::Driver;
use crate::util::{Chatc, Client, Daemon, WAIT, http_raw, need_chromium, temp_dir};

/// A WebSocket client: the handshake, masked text frames out, frames in.
pub struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
}

pub enum Frame {
    Text(String),
    Ping,
    Pong,
    Close(u16),
}

impl Ws {
    pub fn connect(addr: SocketAddr, origin: Option<&str>) -> Result<Ws, String> {
        let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(WAIT)).ok();
        let origin = origin
            .map(|o| format!("Origin: {o}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: chatd.v1\r\n{origin}\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head);
        }
        assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(head.contains("Sec-WebSocket-Protocol: chatd.v1\r\n"));
        Ok(Ws {
            stream,
            buf: buf[end..].to_vec(),
        })
    }

    pub fn send_frame(&mut self, op: u8, payload: &[u8]) {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![0x80 | op];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n < 65536 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let _ = self.stream.write_all(&f);
    }

    pub fn send(&mut self, line: &str) {
        self.send_frame(0x1, line.as_bytes());
    }

    /// The next frame, or `None` at EOF or after the wait.
    pub fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let op = self.buf[0] & 0x0f;
                    let payload: Vec<u8> = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some(match op {
                        0x1 => Frame::Text(String::from_utf8(payload).expect("UTF-8 text")),
                        0x9 => Frame::Ping,
                        0xa => Frame::Pong,
                        0x8 => Frame::Close(
                            payload
                                .get(..2)
                                .map_or(1005, |b| u16::from_be_bytes([b[0], b[1]])),
                        ),
                        other => panic!("unexpected opcode {other}"),
                    });
                }
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Waits for a text frame satisfying `pred`.
    pub fn expect_by(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.next() {
                Some(Frame::Text(t)) if pred(&t) => return t,
                Some(Frame::Text(t)) => seen.push(t),
                Some(Frame::Ping | Frame::Pong) => {}
                Some(Frame::Close(c)) => panic!("closed ({c}) before {what}; seen {seen:#?}"),
                None => break,
            }
        }
        panic!("no frame {what}; seen {seen:#?}");
    }

    pub fn expect(&mut self, exact: &str) -> String {
        self.expect_by(&format!("== {exact:?}"), |t| t == exact)
    }

    /// The close code the server ends with, skipping text before it.
    pub fn expect_close(&mut self) -> u16 {
        loop {
            match self.next() {
                Some(Frame::Close(c)) => return c,
                Some(_) => {}
                None => panic!("no close frame"),
            }
        }
    }
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 30) as u8, (y * 30) as u8, 200])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

#[test]
fn the_chat_port_serves_the_page_and_nc_still_gets_its_greeting() {
    let d = Daemon::start(&[]);
    let page = http_raw(
        d.addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("Content-Security-Policy: default-src 'none'; script-src 'self'"));
    assert!(
        !page.contains("Welcome"),
        "the greeting leaked into HTTP: {page}"
    );
    let script = page
        .split('"')
        .find(|s| s.starts_with("/app.") && s.ends_with(".js"))
        .expect("script named by hash")
        .to_string();
    let js = http_raw(
        d.addr(),
        format!("GET {script} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(
        js.contains("Cache-Control: public, max-age=31536000, immutable"),
        "{js}"
    );
    for path in ["/stats", "/metrics", "/health"] {
        let r = http_raw(
            d.addr(),
            format!("GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(
            r.starts_with("HTTP/1.1 404"),
            "{path} on the chat port: {r}"
        );
    }
    // A line client that speaks first is greeted at once; one that waits is
    // greeted after the hold.
    let mut eager = Client::connect(d.addr());
    eager.send("eager");
    eager.expect_prefix("*** Welcome");
    eager.expect("*** eager joined #lobby");
    let t0 = Instant::now();
    let mut nc = Client::connect(d.addr());
    nc.expect_prefix("*** Welcome");
    let held = t0.elapsed();
    assert!(held >= Duration::from_millis(200), "greeted after {held:?}");
    nc.send("patient");
    nc.expect("*** patient joined #lobby");
    // With --no-web the greeting is immediate and HTTP is just a bad nick.
    let plain = Daemon::start(&["--no-web"]);
    let mut c = Client::connect(plain.addr());
    c.send_raw(b"GET / HTTP/1.1\r\n");
    c.expect_prefix("*** Welcome");
    c.expect_prefix("!!!");
}

#[test]
fn a_websocket_speaks_the_machine_format_one_line_per_frame() {
    let d = Daemon::start(&[]);
    let mut ws = Ws::connect(d.addr(), Some(&format!("http://{}", d.addr()))).expect("upgrade");
    ws.expect_by("the greeting", |t| t.starts_with("info welcome "));
    ws.send("webby");
    ws.expect_by("named", |t| t.starts_with("ok nick "));
    ws.expect("join #lobby webby");
    let mut nc = Client::named(d.addr(), "nina");
    ws.expect("join #lobby nina");
    nc.send("hi <b>web</b>");
    ws.expect_by("nina's line", |t| {
        t.starts_with("msg #lobby nina ") && t.ends_with(" hi <b>web</b>")
    });
    // Two lines in one frame are two lines, as from nc; a frame split in
    // fragments is one.
    ws.send("from the browser");
    nc.expect("#lobby <webby> from the browser");
    // Fragmented: "/me " then "waves".
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x01, 0x80 | 4];
    f.extend_from_slice(&mask);
    f.extend(b"/me ".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f.extend_from_slice(&[0x80, 0x80 | 5]);
    f.extend_from_slice(&mask);
    f.extend(b"waves".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    ws.stream.write_all(&f).unwrap();
    nc.expect("* #lobby webby waves");
    // A ping from the browser is answered; a binary frame is refused.
    ws.send_frame(0x9, b"are you there");
    ws.send_frame(0x2, b"\x00\x01");
    assert_eq!(ws.expect_close(), 1003);
    nc.expect("*** webby quit (connection lost)");
}

#[test]
fn websocket_limits_origins_and_slow_requests() {
    let d = Daemon::start(&[
        "--max-line",
        "1000",
        "--max-image",
        "1000",
        "--name-timeout",
        "1",
    ]);
    // Another origin is refused unless named.
    let refused = Ws::connect(d.addr(), Some("http://evil.example"))
        .err()
        .expect("refused");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let allowed = Daemon::start(&["--web-origin", "http://evil.example"]);
    Ws::connect(allowed.addr(), Some("http://evil.example")).expect("allowed origin");
    // A frame longer than the longest line closes with 1009 before its
    // payload is read.
    let mut ws = Ws::connect(d.addr(), None).expect("upgrade");
    ws.send("bigsender");
    ws.expect_by("named", |t| t.starts_with("ok nick "));
    let mut f = vec![0x81, 0x80 | 127];
    f.extend_from_slice(&(1u64 << 40).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    ws.stream.write_all(&f).unwrap();
    assert_eq!(ws.expect_close(), 1009);
    // An unmasked frame is a protocol error.
    let mut ws = Ws::connect(d.addr(), None).expect("upgrade");
    ws.stream.write_all(b"\x81\x02hi").unwrap();
    assert_eq!(ws.expect_close(), 1002);
    // Slowloris on the HTTP path: a request head that never ends is cut
    // off by the naming deadline, as a silent line client is.
    let mut slow = TcpStream::connect(d.addr()).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    let t0 = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "slow request held {:?}",
        t0.elapsed()
    );
    assert!(!String::from_utf8_lossy(&rest).contains("Welcome"));
    // A head over 8 KiB is refused.
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    assert!(http_raw(d.addr(), big.as_bytes()).starts_with("HTTP/1.1 431"));
}

#[test]
fn a_silent_browser_is_pinged_then_cut_off_and_one_that_answers_stays() {
    let d = Daemon::start(&["--web-ping", "1"]);
    let mut quiet = Ws::connect(d.addr(), None).expect("upgrade");
    let mut lively = Ws::connect(d.addr(), None).expect("upgrade");
    quiet.send("quiet");
    lively.send("lively");
    // The lively one answers its pings, as browsers do, on a thread of its
    // own while the quiet one is watched here.
    let answering = std::thread::spawn(move || {
        lively
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut pings = 0;
        while Instant::now() < deadline {
            if let Some(Frame::Ping) = lively.next() {
                pings += 1;
                lively.send_frame(0xa, b"chatd");
            }
        }
        lively.stream.set_read_timeout(Some(WAIT)).unwrap();
        lively.send("/ping still");
        lively.expect_by("the pong", |t| t == "ok pong still");
        pings
    });
    let t0 = Instant::now();
    let mut pinged = false;
    let code = loop {
        match quiet.next() {
            Some(Frame::Ping) => pinged = true,
            Some(Frame::Close(c)) => break c,
            Some(_) => {}
            None => panic!("closed without a close frame"),
        }
    };
    assert!(pinged, "no ping before the cut-off");
    assert_eq!(code, 1008);
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "cut off after {:?}",
        t0.elapsed()
    );
    let pings = answering.join().expect("the lively one stayed");
    assert!(pings >= 1, "the lively one was never pinged");
}

#[test]
fn a_web_port_and_a_trusted_proxy() {
    let d = Daemon::start(&[
        "--web-listen",
        "127.0.0.1:0",
        "--trusted-proxy",
        "127.0.0.1",
        "--max-per-ip",
        "2",
    ]);
    let web: SocketAddr = d
        .wait_log("listening for the browser client on ")
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("web port in the log");
    let page = http_raw(web, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    // Behind the proxy, the forwarded address is the one limits count.
    let mut a = Ws::connect_with(web, "X-Forwarded-For: 198.51.100.7\r\n").expect("first");
    a.expect_by("greeting", |t| t.starts_with("info welcome "));
    let mut b = Ws::connect_with(web, "X-Forwarded-For: 198.51.100.7\r\n").expect("second");
    b.expect_by("greeting", |t| t.starts_with("info welcome "));
    let mut c = Ws::connect_with(web, "X-Forwarded-For: 198.51.100.7\r\n").expect("third");
    c.expect_by("refused", |t| t.starts_with("err refused "));
    let mut other = Ws::connect_with(web, "X-Forwarded-For: 203.0.113.9\r\n").expect("other");
    other.expect_by("greeting", |t| t.starts_with("info welcome "));
    other.send("/whois nobody");
}

impl Ws {
    fn connect_with(addr: SocketAddr, extra: &str) -> Result<Ws, String> {
        let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(WAIT)).ok();
        write!(
            stream,
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: chatd.v1\r\n{extra}\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut ws = Ws {
            stream,
            buf: Vec::new(),
        };
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&ws.buf[..end]).into_owned();
                ws.buf.drain(..end + 4);
                return if head.starts_with("HTTP/1.1 101") {
                    Ok(ws)
                } else {
                    Err(head)
                };
            }
            let n = ws.stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed".into());
            }
            ws.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[test]
fn the_tls_port_serves_https_and_wss() {
    let certs = crate::util::Certs::new("web-tls");
    let d = Daemon::start(&certs.flags().iter().map(String::as_str).collect::<Vec<_>>());
    let mut t = crate::util::TlsClient::connect(d.tls_addr(), &certs.ca).expect("handshake");
    t.write_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let page = String::from_utf8_lossy(&t.read_until(b"</html>")).into_owned();
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(!page.contains("Welcome"));
    // wss: the same upgrade, the https origin is the page's own.
    let mut t = crate::util::TlsClient::connect(d.tls_addr(), &certs.ca).expect("handshake");
    let port = d.tls_addr().port();
    t.write_raw(
        format!(
            "GET /ws HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: chatd.v1\r\nOrigin: https://localhost:{port}\r\n\r\n"
        )
        .as_bytes(),
    );
    let got = t.read_until(b"info welcome");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(text.contains("info welcome Welcome"), "{text}");
    // A plain-http origin may not open the TLS port's socket.
    let mut t = crate::util::TlsClient::connect(d.tls_addr(), &certs.ca).expect("handshake");
    t.write_raw(
        format!(
            "GET /ws HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: chatd.v1\r\nOrigin: http://localhost:{port}\r\n\r\n"
        )
        .as_bytes(),
    );
    let refused = t.read_until(b"\r\n\r\n");
    assert!(
        refused.starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
}

// ---- in a real browser ------------------------------------------------------

fn base(d: &Daemon) -> String {
    format!("http://{}/", d.addr())
}

#[test]
fn a_browser_user_and_an_nc_user_chat_and_html_stays_text() {
    if !need_chromium("web::a_browser_user_and_an_nc_user_chat_and_html_stays_text") {
        return;
    }
    let d = Daemon::start(&[]);
    let driver = Driver::start();
    let b = driver.browser(1200, 800);
    let mut nc = Client::named(d.addr(), "nina");
    b.sign_in(&base(&d), "webby");
    nc.expect("*** webby joined #lobby");
    let hostile =
        "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script> <b>bold</b>";
    nc.send(hostile);
    b.wait_text("<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>");
    let injected = b.eval("return [document.querySelectorAll('#log img, #log script, #log b').length, window.pwned === undefined]");
    assert_eq!(injected, serde_json::json!([0, true]), "markup got through");
    b.say("hello from the web");
    nc.expect("#lobby <webby> hello from the web");
    // A mention elsewhere is counted and marked in the sidebar, and marked
    // in the room.
    b.type_in("#join-input", "#garden\u{E007}");
    b.wait_for(
        "in #garden",
        "return window.chatdState().view === '#garden'",
    );
    nc.send("/join #garden");
    b.wait_text("nina joined");
    b.click("#rooms li:first-child button");
    b.wait_for(
        "back in #lobby",
        "return window.chatdState().view === '#lobby'",
    );
    nc.send("hey webby, look");
    b.wait_for(
        "an unread mention",
        "return [...document.querySelectorAll('#rooms .count.mention')].some(e => e.innerText === '1')",
    );
    b.eval("[...document.querySelectorAll('#rooms button')].find(e => e.innerText.includes('#garden')).click()");
    b.wait_text("hey webby, look");
    b.wait_for(
        "mention marked",
        "return document.querySelectorAll('#log .line.mention').length === 1",
    );
    nc.send("/join #lobby");
    // DMs both ways.
    nc.send("/dm webby psst");
    b.wait_for("a DM conversation", "return [...document.querySelectorAll('#dms button')].some(e => e.innerText.includes('@nina'))");
    b.eval("[...document.querySelectorAll('#dms button')].find(e => e.innerText.includes('@nina')).click()");
    b.wait_text("psst");
    // A guest cannot sign: the page says so and sends in the clear only
    // when the line is sent again.
    b.say("psst back");
    b.wait_text("not sent: you are not logged in to a registered nick");
    b.type_in("#text", "\u{E007}");
    nc.expect_by("the DM", |l| l.contains("webby") && l.contains("psst back"));
    if let Some(dir) = std::env::var_os("CHATD_SCREENSHOTS") {
        b.click("#rooms li:first-child button");
        b.wait_text("hello from the web");
        let _ = std::fs::write(
            std::path::Path::new(&dir).join("web-client.png"),
            b.screenshot(),
        );
    }
    // A phone-sized window: the sidebar folds behind a menu button.
    let phone = driver.browser(390, 800);
    phone.sign_in(&base(&d), "pocket");
    let layout = phone.eval("const s = getComputedStyle; return [s(document.getElementById('menu')).display !== 'none', s(document.getElementById('side')).display]");
    assert_eq!(
        layout,
        serde_json::json!([true, "none"]),
        "no menu button on a phone"
    );
    phone.click("#menu");
    let open = phone.eval("return getComputedStyle(document.getElementById('side')).display");
    assert_eq!(open, serde_json::json!("flex"));
}

#[test]
fn a_browser_and_chatc_read_each_other_in_an_encrypted_room() {
    if !need_chromium("web::a_browser_and_chatc_read_each_other_in_an_encrypted_room") {
        return;
    }
    let d = Daemon::start(&[]);
    let mut a = Chatc::start(d.addr(), &["--nick", "alice"]);
    a.expect("*** alice joined #lobby");
    a.send("/join new --secret");
    let invite = a.expect_prefix("*** invite: ");
    let invite = invite.split_whitespace().nth(2).unwrap().to_string();
    let code = invite.split(':').next().unwrap().to_string();
    let driver = Driver::start();
    let b = driver.browser(1000, 800);
    // The invite link carries the secret in the fragment, which the browser
    // never sends; the page is on 127.0.0.1, a secure context.
    let link = format!(
        "{}#join={}",
        base(&d),
        invite.replace('~', "%7E").replace(':', "%3A")
    );
    b.open(&link);
    b.wait_for(
        "the page",
        "return !!document.getElementById('guest') && !document.getElementById('guest').disabled",
    );
    assert_eq!(
        b.eval("return location.hash"),
        serde_json::json!(""),
        "the secret stays in the address bar"
    );
    b.type_in("#nick", "webby");
    b.click("#guest");
    a.expect(&format!("*** webby joined {code}"));
    b.wait_for(
        "the room's key",
        "return !document.getElementById('room-lock').hidden",
    );
    a.send("the treasure is under the oak");
    b.wait_text("the treasure is under the oak");
    b.wait_text("[e2e]");
    b.say("found it, thanks");
    a.expect(&format!("{code} [e2e] <webby> found it, thanks"));
    // The server kept nothing it could read.
    assert!(
        !d.log()
            .iter()
            .any(|l| l.contains("found it") || l.contains("treasure"))
    );
    // An nc user in the room sees only that something was sent.
    let mut nc = Client::named(d.addr(), "carol");
    nc.send(&format!("/join {}", code.trim_start_matches('~')));
    nc.expect(&format!("*** carol joined {code}"));
    b.say("secret plans");
    nc.expect(&format!("*** {code}: webby sent an encrypted message"));
    // A plain line into the keyed room is flagged, never shown as sealed.
    nc.send("plain words");
    b.wait_text("plain words");
    b.wait_text("[UNENCRYPTED]");
}

#[test]
fn images_and_files_cross_between_browsers_and_the_page_survives_a_restart() {
    if !need_chromium(
        "web::images_and_files_cross_between_browsers_and_the_page_survives_a_restart",
    ) {
        return;
    }
    let d = Daemon::start(&[]);
    let driver = Driver::start();
    let a = driver.browser(1000, 800);
    let b = driver.browser(1000, 800);
    a.sign_in(&base(&d), "anna");
    b.sign_in(&base(&d), "bert");
    let dir = temp_dir("web-upload");
    let image = dir.join("dot.png");
    std::fs::write(&image, png(12, 9)).unwrap();
    a.type_in("#file", &image.display().to_string());
    b.wait_for(
        "the image inline",
        "const i = document.querySelector('#log img'); return i && i.complete && i.naturalWidth === 12",
    );
    let file = dir.join("notes.bin");
    let content: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    a.type_in("#file", &file.display().to_string());
    b.wait_for(
        "the file link",
        "return [...document.querySelectorAll('#log a')].some(a => a.download === 'notes.bin')",
    );
    b.eval(
        "[...document.querySelectorAll('#log a')].find(a => a.download === 'notes.bin').click()",
    );
    let saved = b.downloads.join("notes.bin");
    let deadline = Instant::now() + crate::browser::PAGE_WAIT;
    while std::fs::metadata(&saved).map(|m| m.len()).unwrap_or(0) < content.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "no download in {}",
            b.downloads.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = std::fs::read(&saved).unwrap();
    assert_eq!(got, content, "the downloaded file differs");
    // The daemon restarts: the page comes back by itself, and what it had
    // shown is not shown twice.
    b.say("before the restart");
    a.wait_text("before the restart");
    let d = d.restart_same_port();
    a.wait_for(
        "reconnected",
        "return window.chatdState().connected && window.chatdState().named",
    );
    let mut nc = Client::named(d.addr(), "nick");
    a.wait_for(
        "rejoined",
        "return document.getElementById('status').innerText === 'connected'",
    );
    nc.send("after the restart");
    a.wait_text("after the restart");
    let count = a.eval(
        "return document.getElementById('log').innerText.split('before the restart').length - 1",
    );
    assert_eq!(
        count,
        serde_json::json!(1),
        "a line shown twice:\n{}",
        a.log_text()
    );
}

#[test]
fn a_browser_and_chatc_exchange_encrypted_direct_messages() {
    if !need_chromium("web::a_browser_and_chatc_exchange_encrypted_direct_messages") {
        return;
    }
    let d = Daemon::start(&["--hash-iterations", "1000"]);
    let data = temp_dir("web-dm-alice");
    let mut alice = Chatc::start_in(&d.addr().to_string(), &[], &data);
    alice.expect_contains("connected to");
    alice.send("alice");
    alice.expect_contains("alice joined #lobby");
    alice.send("/register password-alice");
    alice.expect_contains("registered");
    let driver = Driver::start();
    let b = driver.browser(1000, 800);
    b.open(&base(&d));
    b.wait_for(
        "the page",
        "return !!document.getElementById('guest') && !document.getElementById('guest').disabled",
    );
    b.type_in("#nick", "webby");
    b.type_in("#password", "password-webby");
    b.click("#register");
    b.wait_for("registered", "return window.chatdState().named");
    let mut q = Client::named(d.addr(), "keyq");
    for nick in ["webby", "alice"] {
        let deadline = Instant::now() + WAIT;
        loop {
            q.send(&format!("/key {nick}"));
            let l = q.expect_by("a key answer", |l| l.contains("end-to-end key"));
            if l.contains("K1.") {
                break;
            }
            assert!(Instant::now() < deadline, "{nick} never published a key");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    alice.send("/dm webby the eagle lands at dawn");
    alice.expect_contains("alice -> webby: the eagle lands at dawn");
    b.wait_for(
        "the DM conversation",
        "return [...document.querySelectorAll('#dms button')].some(e => e.innerText.includes('@alice'))",
    );
    b.eval("[...document.querySelectorAll('#dms button')].find(e => e.innerText.includes('@alice')).click()");
    b.wait_text("the eagle lands at dawn");
    b.wait_text("[e2e verified]");
    b.say("copy that, at dawn");
    let got = alice.expect_contains("webby -> alice: copy that, at dawn");
    assert!(got.contains("[e2e verified]"), "{got}");
    // Both see the same safety number.
    alice.send("/fingerprint webby");
    let fp = alice.expect_contains("safety number");
    let number: String = fp
        .split(|c: char| !c.is_ascii_digit() && c != ' ')
        .map(str::trim)
        .find(|s| s.len() == 35)
        .unwrap_or_else(|| panic!("no safety number in {fp:?}"))
        .to_string();
    let shown = b.wait_for(
        "the safety number",
        "return document.getElementById('room-topic').innerText",
    );
    assert!(
        shown.as_str().is_some_and(|t| t.contains(&number)),
        "chatc says {number}, the page says {shown}"
    );
    // The server saw neither text.
    let state = d.state.clone().unwrap();
    for needle in [&b"eagle"[..], b"copy that"] {
        assert!(!crate::util::dir_contains(&state, needle));
    }
    assert!(
        !d.log()
            .iter()
            .any(|l| l.contains("eagle") || l.contains("copy that"))
    );
}

#[test]
fn scrolling_up_fetches_older_history_once_each() {
    if !need_chromium("web::scrolling_up_fetches_older_history_once_each") {
        return;
    }
    let d = Daemon::start(&["--history-on-join", "5"]);
    let mut nc = Client::named(d.addr(), "nina");
    for i in 1..=30 {
        nc.send(&format!("old line {i:02}"));
    }
    nc.sync();
    let driver = Driver::start();
    let b = driver.browser(1000, 800);
    b.sign_in(&base(&d), "webby");
    b.wait_text("old line 30");
    let shown = b.eval("return document.getElementById('log').innerText.includes('old line 25')");
    assert_eq!(
        shown,
        serde_json::json!(false),
        "more than the joining history at first"
    );
    b.eval("const l = document.getElementById('log'); l.scrollTop = 0; l.dispatchEvent(new Event('scroll'))");
    b.wait_text("old line 01");
    let lines = b.eval(
        "return [...document.querySelectorAll('#log .line .body')].map(e => e.innerText).filter(t => t.startsWith('old line'))",
    );
    let want: Vec<String> = (1..=30).map(|i| format!("old line {i:02}")).collect();
    assert_eq!(
        lines,
        serde_json::json!(want),
        "history out of order or repeated"
    );
}
