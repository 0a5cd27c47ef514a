//! A small WebDriver client for Debian's chromedriver: enough to open the
//! page, type, click, read what is shown, and take a screenshot, as a
//! person would. Each `Browser` is a fresh headless Chromium with a new
//! profile; chromedriver itself is started once per test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::temp_dir;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a wait for the page may take.
pub const PAGE_WAIT: Duration = Duration::from_secs(20);

pub struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    pub fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let d = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            if let Ok(v) = d.call("GET", "/status", None)
                && v["value"]["ready"] == json!(true)
            {
                return d;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One HTTP request to chromedriver; its JSON answer.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let mut s = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        // chromedriver keeps the connection open: read the head, then
        // exactly Content-Length bytes.
        let mut out = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if out.len() >= end + 4 + len {
                    let body = &out[end + 4..end + 4 + len];
                    return serde_json::from_slice(body)
                        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(body)));
                }
            }
            let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("closed: {}", String::from_utf8_lossy(&out)));
            }
            out.extend_from_slice(&chunk[..n]);
        }
    }

    /// A new browser window (its own headless Chromium and profile).
    pub fn browser(&self, width: u32, height: u32) -> Browser<'_> {
        let profile = temp_dir("chromium-profile");
        let downloads = temp_dir("chromium-downloads");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                }
            }
        }}});
        let v = self
            .call("POST", "/session", Some(&caps))
            .expect("new session");
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            driver: self,
            id,
            profile,
            downloads,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Browser<'a> {
    driver: &'a Driver,
    id: String,
    profile: std::path::PathBuf,
    /// Where its downloads land.
    pub downloads: std::path::PathBuf,
}

impl Browser<'_> {
    fn cmd(&self, method: &str, what: &str, body: Value) -> Value {
        let path = format!("/session/{}{what}", self.id);
        let v = self
            .driver
            .call(method, &path, (method != "GET").then_some(&body))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if v["value"].get("error").is_some() {
            panic!("{what}: {}", v["value"]);
        }
        v["value"].clone()
    }

    pub fn open(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT].as_str().expect("element id").to_string()
    }

    /// Types into the element (a file input takes a path).
    pub fn type_in(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        );
    }

    pub fn click(&self, css: &str) {
        let e = self.element(css);
        self.cmd("POST", &format!("/element/{e}/click"), json!({}));
    }

    /// Types a line into the message box and sends it with Enter.
    pub fn say(&self, text: &str) {
        self.type_in("#text", &format!("{text}\u{E007}"));
    }

    pub fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    /// Waits until `script` returns something truthy; returns it.
    pub fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let v = self.eval(script);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let state = self.eval(
                    "return [window.chatdState ? window.chatdState() : null, \
                     (document.getElementById('signin-error') || {}).textContent, \
                     (document.getElementById('status') || {}).textContent]",
                );
                panic!(
                    "{what}: not seen; page state, sign-in error, status: {state}; the log shows:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the message log shows, as text.
    pub fn log_text(&self) -> String {
        self.eval("return document.getElementById('log') ? document.getElementById('log').innerText : document.body.innerText")
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits until the log shows `text`.
    pub fn wait_text(&self, text: &str) {
        let script = format!(
            "return document.getElementById('log').innerText.includes({})",
            json!(text)
        );
        self.wait_for(&format!("text {text:?}"), &script);
    }

    /// Signs in as a guest and waits to be in #lobby.
    pub fn sign_in(&self, base: &str, nick: &str) {
        self.open(base);
        // The buttons are enabled by the page's script, once it can act on them.
        self.wait_for(
            "the page",
            "return !!document.getElementById('guest') && !document.getElementById('guest').disabled",
        );
        self.type_in("#nick", nick);
        self.click("#guest");
        self.wait_for(
            "signed in",
            "return window.chatdState && window.chatdState().named && window.chatdState().view === '#lobby'",
        );
    }

    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", json!({}));
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("png")
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.id);
        let _ = self.driver.call("DELETE", &path, None);
        let _ = std::fs::remove_dir_all(&self.profile);
        let _ = std::fs::remove_dir_all(&self.downloads);
    }
}
