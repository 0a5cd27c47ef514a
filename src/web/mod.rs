//! The browser client's transport: HTTP and WebSocket on the chat port
//! (and on `--web-listen` ports), driven by the reactor like any other
//! connection. A connection to a chat port is told apart by its first
//! bytes ([`sniff`]); what it then is, is the reactor's [`Layer`]
//! (`server::conn`).

pub mod assets;
pub mod http;
pub mod ws;

use std::net::IpAddr;
use std::time::Duration;

/// `--web-origin`, `--trusted-proxy`.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// Origins besides the page's own allowed to open `/ws`; `*`: any.
    pub origins: Vec<String>,
    /// The only peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// `--web-ping`: a browser silent this long is pinged, and cut off
    /// when silent for twice as long.
    pub ping_interval: Duration,
}

/// How long a chat port holds its greeting for a first byte that may
/// start an HTTP request (a browser sends its request with the first
/// packet after the handshake).
pub const GREETING_HOLD: Duration = Duration::from_millis(250);
/// A request's head must arrive complete within this (slowloris); also how
/// long a kept-alive connection may sit between requests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests on one kept-alive connection.
pub const MAX_REQUESTS: u32 = 100;
/// The default of `--web-ping`.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// What the first bytes of a connection look like.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Sniffed {
    /// An HTTP request line begins.
    Http,
    /// Anything else: a line client.
    Line,
    /// Too few bytes to tell.
    NeedMore,
}

const METHODS: [&[u8]; 9] = [
    b"GET /",
    b"HEAD /",
    b"POST /",
    b"PUT /",
    b"DELETE /",
    b"OPTIONS ",
    b"PATCH /",
    b"CONNECT ",
    b"TRACE /",
];

/// A method in capitals, a space and a path: no nick looks like it (nicks
/// have no spaces) and no command (they start with `/`).
pub fn sniff(first: &[u8]) -> Sniffed {
    let mut need_more = false;
    for m in METHODS {
        if first.starts_with(m) {
            return Sniffed::Http;
        }
        if m.starts_with(first) {
            need_more = true;
        }
    }
    if need_more {
        Sniffed::NeedMore
    } else {
        Sniffed::Line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_told_from_nicks_and_commands() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniffed::Http);
        assert_eq!(sniff(b"GET /ws HTTP/1.1"), Sniffed::Http);
        assert_eq!(sniff(b"HEAD /"), Sniffed::Http);
        assert_eq!(sniff(b"GE"), Sniffed::NeedMore);
        assert_eq!(sniff(b"GET "), Sniffed::NeedMore);
        for line in [
            &b"alice\n"[..],
            b"GET\n",
            b"GETTY\n",
            b"/nick bob\n",
            b"get / x\n",
            b"\xff\xfb",
        ] {
            assert_eq!(
                sniff(line),
                Sniffed::Line,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
