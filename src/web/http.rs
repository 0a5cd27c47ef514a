//! The HTTP side of the chat port, sans-IO: a request's bytes in, a
//! response's bytes (or a WebSocket upgrade) out. Parsing is httparse's;
//! what is allowed is decided here: GET and HEAD of the page's few files,
//! and the upgrade at `/ws`. No request has a body; a request's head is
//! bounded in size ([`MAX_HEAD`]) and, by the reactor, in time.

use std::net::IpAddr;

use base64::Engine;

use super::WebConfig;
use super::assets::{self, Asset};

/// A request's line and headers may not be longer.
pub const MAX_HEAD: usize = 8 * 1024;
/// Headers a request may carry.
const MAX_HEADERS: usize = 48;
/// The WebSocket protocol chatd speaks.
pub const SUBPROTOCOL: &str = "chatd.v1";
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What a request's bytes amount to so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not complete yet.
    Partial,
    /// A response to send; `close`: close the connection after it.
    /// `used`: the request's length (what follows may be the next one).
    Respond {
        bytes: Vec<u8>,
        close: bool,
        used: usize,
        status: u16,
    },
    /// Switch to WebSocket: send `bytes` (the 101), then frames.
    /// `client`: the address the request was made from (a trusted proxy's
    /// `X-Forwarded-For`, else the peer's).
    Upgrade {
        bytes: Vec<u8>,
        client: IpAddr,
        used: usize,
    },
}

/// Where a request came from, as the reactor knows it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub ip: IpAddr,
    /// It arrived over TLS (the page's origin is https).
    pub tls: bool,
}

/// Parses the request at the start of `buf`.
pub fn parse(buf: &[u8], peer: Peer, cfg: &WebConfig) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parsed::Partial,
        Ok(httparse::Status::Partial) => {
            return error(431, "request head too large", buf.len());
        }
        Err(httparse::Error::TooManyHeaders) => return error(431, "too many headers", buf.len()),
        Err(_) => return error(400, "malformed request", buf.len()),
    };
    if used > MAX_HEAD {
        return error(431, "request head too large", used);
    }
    let method = req.method.unwrap_or("");
    let path = req.path.unwrap_or("");
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let has_body =
        header("content-length").is_some_and(|v| v != "0") || header("transfer-encoding").is_some();
    if has_body {
        return error(413, "requests carry no body here", used);
    }
    let close =
        req.version == Some(0) || header("connection").is_some_and(|v| has_token(v, "close"));
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return with_allow(error(405, "only GET and HEAD", used)),
    };
    let path = path.split('?').next().unwrap_or("");
    if path == "/ws" && !head_only {
        return upgrade(&header, used, peer, cfg);
    }
    match assets::find(path) {
        Some(asset) => Parsed::Respond {
            bytes: response(asset, head_only, close),
            close,
            used,
            status: 200,
        },
        None => {
            // `/health`, `/stats` and `/metrics` among them: those are the
            // status listener's, never the public port's.
            let mut r = error(404, "not found", used);
            if let Parsed::Respond { close: c, .. } = &mut r {
                *c = close;
            }
            r
        }
    }
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn upgrade<'a>(
    header: &dyn Fn(&str) -> Option<&'a str>,
    used: usize,
    peer: Peer,
    cfg: &WebConfig,
) -> Parsed {
    let upgrade_ok = header("upgrade").is_some_and(|v| has_token(v, "websocket"))
        && header("connection").is_some_and(|v| has_token(v, "upgrade"));
    if !upgrade_ok {
        return error(
            426,
            "this is a WebSocket endpoint (Upgrade: websocket)",
            used,
        );
    }
    if header("sec-websocket-version") != Some("13") {
        return error(426, "WebSocket version 13 only", used);
    }
    let Some(key) = header("sec-websocket-key").filter(|k| {
        base64::engine::general_purpose::STANDARD
            .decode(k)
            .is_ok_and(|b| b.len() == 16)
    }) else {
        return error(400, "missing or bad Sec-WebSocket-Key", used);
    };
    let offered = header("sec-websocket-protocol").is_some_and(|v| has_token(v, SUBPROTOCOL));
    if !offered {
        return error(400, "ask for the chatd.v1 subprotocol", used);
    }
    if let Some(origin) = header("origin")
        && !origin_allowed(origin, header("host"), peer.tls, cfg)
    {
        return error(403, "origin not allowed (see --web-origin)", used);
    }
    let client = if cfg.trusted_proxies.contains(&peer.ip) {
        header("x-forwarded-for")
            .and_then(|v| v.rsplit(',').next())
            .and_then(|a| a.trim().parse::<IpAddr>().ok())
            .unwrap_or(peer.ip)
    } else {
        peer.ip
    };
    let bytes = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n",
        accept_key(key)
    )
    .into_bytes();
    Parsed::Upgrade {
        bytes,
        client,
        used,
    }
}

/// Same origin (the scheme this connection speaks and the Host the
/// browser asked for), or one named by `--web-origin` (`*`: any).
fn origin_allowed(origin: &str, host: Option<&str>, tls: bool, cfg: &WebConfig) -> bool {
    if cfg
        .origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let scheme = if tls { "https://" } else { "http://" };
    host.is_some_and(|h| {
        origin
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            && origin
                .get(scheme.len()..)
                .is_some_and(|o| o.eq_ignore_ascii_case(h))
    })
}

/// RFC 6455, 4.2.2: base64 of SHA-1 of the key and the protocol's GUID.
pub fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// Headers every answer carries: nothing of it may be framed, sniffed or
/// run from elsewhere.
const SECURITY_HEADERS: &str = "X-Content-Type-Options: nosniff\r\n\
    X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n";

fn response(asset: &Asset, head_only: bool, close: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: {}\r\n\
         ETag: \"{}\"\r\nContent-Security-Policy: {}\r\n{SECURITY_HEADERS}{}\r\n",
        asset.mime,
        asset.body.len(),
        asset.cache,
        asset.hash,
        assets::CSP,
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(&asset.body);
    }
    r
}

fn error(status: u16, why: &str, used: usize) -> Parsed {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let body = format!("{status} {reason}: {why}\n");
    let bytes = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n{SECURITY_HEADERS}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    Parsed::Respond {
        bytes,
        close: true,
        used,
        status,
    }
}

fn with_allow(p: Parsed) -> Parsed {
    match p {
        Parsed::Respond {
            bytes,
            close,
            used,
            status,
        } => {
            let text =
                String::from_utf8_lossy(&bytes).replacen("\r\n", "\r\nAllow: GET, HEAD\r\n", 1);
            Parsed::Respond {
                bytes: text.into_bytes(),
                close,
                used,
                status,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WebConfig {
        WebConfig {
            origins: vec![],
            trusted_proxies: vec!["127.0.0.9".parse().unwrap()],
            ping_interval: crate::web::PING_INTERVAL,
        }
    }

    fn peer(ip: &str) -> Peer {
        Peer {
            ip: ip.parse().unwrap(),
            tls: false,
        }
    }

    fn status(p: &Parsed) -> u16 {
        match p {
            Parsed::Respond { status, .. } => *status,
            Parsed::Upgrade { .. } => 101,
            Parsed::Partial => 0,
        }
    }

    const WS: &str = "GET /ws HTTP/1.1\r\nHost: chat.lan:9999\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chatd.v1\r\n";

    #[test]
    fn the_rfc_sample_key_gives_the_rfc_answer() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn an_upgrade_from_the_same_origin_is_accepted_and_others_refused() {
        let ok = format!("{WS}Origin: http://chat.lan:9999\r\n\r\n");
        let Parsed::Upgrade { bytes, client, .. } = parse(ok.as_bytes(), peer("10.0.0.1"), &cfg())
        else {
            panic!("not upgraded");
        };
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: chatd.v1\r\n"));
        assert_eq!(client, "10.0.0.1".parse::<IpAddr>().unwrap());
        let evil = format!("{WS}Origin: http://evil.example\r\n\r\n");
        assert_eq!(
            status(&parse(evil.as_bytes(), peer("10.0.0.1"), &cfg())),
            403
        );
        // The https page may not open the plain port's socket, either.
        let tls = format!("{WS}Origin: https://chat.lan:9999\r\n\r\n");
        assert_eq!(
            status(&parse(tls.as_bytes(), peer("10.0.0.1"), &cfg())),
            403
        );
        let mut allowed = cfg();
        allowed.origins.push("http://evil.example".into());
        assert_eq!(
            status(&parse(evil.as_bytes(), peer("10.0.0.1"), &allowed)),
            101
        );
        let no_proto = WS.replace("Sec-WebSocket-Protocol: chatd.v1\r\n", "") + "\r\n";
        assert_eq!(
            status(&parse(no_proto.as_bytes(), peer("10.0.0.1"), &cfg())),
            400
        );
        let bad_key = WS.replace("dGhlIHNhbXBsZSBub25jZQ==", "short") + "\r\n";
        assert_eq!(
            status(&parse(bad_key.as_bytes(), peer("10.0.0.1"), &cfg())),
            400
        );
    }

    #[test]
    fn forwarded_for_counts_only_from_the_trusted_proxy() {
        let req = format!("{WS}X-Forwarded-For: 1.2.3.4, 203.0.113.7\r\n\r\n");
        let client = |from: &str| match parse(req.as_bytes(), peer(from), &cfg()) {
            Parsed::Upgrade { client, .. } => client.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(client("127.0.0.9"), "203.0.113.7");
        assert_eq!(client("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn the_page_is_served_and_everything_else_refused() {
        let p = parse(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET",
            peer("10.0.0.1"),
            &cfg(),
        );
        let Parsed::Respond {
            bytes,
            close,
            used,
            status: code,
        } = p
        else {
            panic!()
        };
        assert_eq!((code, close, used), (200, false, 27));
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("Content-Security-Policy: default-src 'none'"),
            "{text}"
        );
        assert!(text.contains("Cache-Control: no-cache"));
        for (req, want) in [
            (&b"GET /stats HTTP/1.1\r\n\r\n"[..], 404),
            (b"GET /metrics HTTP/1.1\r\n\r\n", 404),
            (b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 413),
            (b"DELETE / HTTP/1.1\r\n\r\n", 405),
            (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
            (b"GET /ws HTTP/1.1\r\n\r\n", 426),
            (b"GET / HTTP/1.1\r\nHost: x\r\n", 0),
        ] {
            assert_eq!(
                status(&parse(req, peer("10.0.0.1"), &cfg())),
                want,
                "{}",
                String::from_utf8_lossy(req)
            );
        }
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            status(&parse(huge.as_bytes(), peer("10.0.0.1"), &cfg())),
            431
        );
        let head = parse(b"HEAD / HTTP/1.1\r\n\r\n", peer("10.0.0.1"), &cfg());
        let Parsed::Respond { bytes, .. } = head else {
            panic!()
        };
        assert!(bytes.ends_with(b"\r\n\r\n"), "HEAD has no body");
    }
}
