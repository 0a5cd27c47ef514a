//! The status listener's HTTP side, without sockets: parse a request, route
//! it, render the answer from a [`Snapshot`] of the daemon's counters.
//!
//! Endpoints: `GET /health` (`ok`), `GET /stats` (JSON), `GET /metrics`
//! (Prometheus text format 0.0.4) and `GET /` (a self-contained dashboard
//! that polls `/stats`). `HEAD` is answered like `GET` without a body.
//! Nothing here ever sees a message body, a password or a key, and private
//! rooms appear only as a count (their names are their invitation codes).
//!
//! Requests are parsed with httparse and bounded: [`MAX_REQUEST`] bytes of
//! head, [`MAX_HEADERS`] headers; the reactor adds a deadline and a cap on
//! connections, and closes each connection after one response.

use std::fmt::Write as _;

/// Largest request head accepted; a larger one gets 431 and is closed.
pub const MAX_REQUEST: usize = 8192;
pub const MAX_HEADERS: usize = 32;

/// The dashboard page: HTML, CSS and JavaScript in one file, no external
/// assets.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// Counters at one instant, gathered by the reactor.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: &'static str,
    pub uptime_secs: u64,
    pub connections: usize,
    pub named: usize,
    pub accounts: usize,
    /// Public rooms with their member counts, busiest first (capped).
    pub rooms: Vec<(String, usize)>,
    pub rooms_total: usize,
    pub private_rooms: usize,
    pub lines_in: u64,
    pub deliveries: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub accepted: u64,
    pub refused: u64,
    pub slow_readers: u64,
    /// TLS handshakes in progress, and those that failed or timed out.
    pub tls_handshaking: usize,
    pub tls_failed: u64,
    pub logins_failed: u64,
    /// Error lines sent, by code (`too-long`, `rate-limited`, …).
    pub rejected: Vec<(String, u64)>,
    /// `None` when ephemeral.
    pub journal_bytes: Option<u64>,
    /// Bytes of history kept in all rooms.
    pub history_bytes: usize,
    /// `None` without `--cluster`.
    pub cluster: Option<crate::core::ClusterStats>,
    /// The bridge's queues; `None` without `--cluster`.
    pub bridge: Option<crate::nats::BridgeStats>,
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed (not an error).
    Incomplete,
    Request {
        method: String,
        path: String,
    },
    /// Not HTTP, or too big: answer with this status and close.
    Bad(u16),
}

pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => Parsed::Request {
            method: req.method.unwrap_or("").to_string(),
            path: req.path.unwrap_or("").to_string(),
        },
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST => Parsed::Bad(431),
        Ok(httparse::Status::Partial) => Parsed::Incomplete,
        Err(httparse::Error::TooManyHeaders) => Parsed::Bad(431),
        Err(_) => Parsed::Bad(400),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A complete HTTP/1.1 response that closes the connection.
pub fn response(code: u16, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        reason(code),
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// An error response with a one-line plain-text body.
pub fn error(code: u16) -> Vec<u8> {
    response(
        code,
        "text/plain; charset=utf-8",
        &format!("{code} {}\n", reason(code)),
        false,
    )
}

/// Routes a parsed request. `snap` is only called when a page needs it.
pub fn route(method: &str, path: &str, snap: impl FnOnce() -> Snapshot) -> Vec<u8> {
    let head = method == "HEAD";
    if method != "GET" && !head {
        return error(405);
    }
    // The query string is ignored (the dashboard may add one to bust caches).
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/health" => response(200, "text/plain; charset=utf-8", "ok\n", head),
        "/stats" => response(200, "application/json", &to_json(&snap()), head),
        "/metrics" => response(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            &to_metrics(&snap()),
            head,
        ),
        "/" | "/index.html" => response(200, "text/html; charset=utf-8", DASHBOARD, head),
        _ => error(404),
    }
}

/// `/stats`: the snapshot as one JSON object, written by serde_json (so
/// escaping is never hand-rolled).
pub fn to_json(s: &Snapshot) -> String {
    use serde_json::{Map, Value, json};
    let rooms: Vec<Value> = s
        .rooms
        .iter()
        .map(|(n, m)| json!({"name": n, "members": m}))
        .collect();
    let rejected: Map<String, Value> = s
        .rejected
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let cluster = s.cluster.as_ref().map(|c| {
        json!({
            "node": c.node,
            "reachable": c.up,
            "other_nodes": c.nodes,
            "remote_users": c.remote_people,
            "received": c.received,
            "requests_refused": c.refused,
            "bridge_waits": s.bridge.map_or(0, |b| b.waits),
        })
    });
    let v = json!({
        "version": s.version,
        "uptime_secs": s.uptime_secs,
        "connections": s.connections,
        "users": s.named,
        "accounts": s.accounts,
        "rooms_total": s.rooms_total,
        "private_rooms": s.private_rooms,
        "rooms": rooms,
        "messages_in": s.lines_in,
        "messages_out": s.deliveries,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "connections_accepted": s.accepted,
        "connections_refused": s.refused,
        "slow_readers": s.slow_readers,
        "tls_handshaking": s.tls_handshaking,
        "tls_failed": s.tls_failed,
        "logins_failed": s.logins_failed,
        "rejected": rejected,
        "journal_bytes": s.journal_bytes,
        "history_bytes": s.history_bytes,
        "cluster": cluster,
    });
    format!("{v}\n")
}

/// A Prometheus label value (`\`, `"` and newlines escaped).
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn to_metrics(s: &Snapshot) -> String {
    let mut m = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            m,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric("chatd_up", "gauge", "1 while the daemon runs.", "1".into());
    metric(
        "chatd_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        s.uptime_secs.to_string(),
    );
    metric(
        "chatd_connections",
        "gauge",
        "Open chat connections.",
        s.connections.to_string(),
    );
    metric(
        "chatd_users",
        "gauge",
        "Connections that have chosen a nick.",
        s.named.to_string(),
    );
    metric(
        "chatd_accounts",
        "gauge",
        "Registered nicks.",
        s.accounts.to_string(),
    );
    metric(
        "chatd_rooms",
        "gauge",
        "Rooms, public and private.",
        s.rooms_total.to_string(),
    );
    metric(
        "chatd_private_rooms",
        "gauge",
        "Private rooms.",
        s.private_rooms.to_string(),
    );
    metric(
        "chatd_messages_in_total",
        "counter",
        "Lines received from clients.",
        s.lines_in.to_string(),
    );
    metric(
        "chatd_messages_out_total",
        "counter",
        "Room messages delivered to recipients.",
        s.deliveries.to_string(),
    );
    metric(
        "chatd_bytes_in_total",
        "counter",
        "Bytes read from chat connections.",
        s.bytes_in.to_string(),
    );
    metric(
        "chatd_bytes_out_total",
        "counter",
        "Bytes written to chat connections.",
        s.bytes_out.to_string(),
    );
    metric(
        "chatd_connections_accepted_total",
        "counter",
        "Chat connections accepted.",
        s.accepted.to_string(),
    );
    metric(
        "chatd_connections_refused_total",
        "counter",
        "Chat connections refused by limits.",
        s.refused.to_string(),
    );
    metric(
        "chatd_slow_readers_total",
        "counter",
        "Connections cut off for not reading.",
        s.slow_readers.to_string(),
    );
    metric(
        "chatd_tls_handshakes_in_progress",
        "gauge",
        "TLS handshakes not finished yet.",
        s.tls_handshaking.to_string(),
    );
    metric(
        "chatd_tls_failed_total",
        "counter",
        "TLS handshakes that failed or timed out, and plain text sent to the TLS port.",
        s.tls_failed.to_string(),
    );
    metric(
        "chatd_logins_failed_total",
        "counter",
        "Failed logins.",
        s.logins_failed.to_string(),
    );
    if let Some(c) = &s.cluster {
        metric(
            "chatd_cluster_reachable",
            "gauge",
            "1 while the NATS cluster is reachable, 0 while this node serves alone.",
            u8::from(c.up).to_string(),
        );
        metric(
            "chatd_cluster_nodes",
            "gauge",
            "Other chatd nodes with people on them.",
            c.nodes.to_string(),
        );
        metric(
            "chatd_cluster_remote_users",
            "gauge",
            "People connected to other nodes.",
            c.remote_people.to_string(),
        );
        metric(
            "chatd_cluster_received_total",
            "counter",
            "Room lines and direct messages that came from other nodes.",
            c.received.to_string(),
        );
        metric(
            "chatd_cluster_requests_refused_total",
            "counter",
            "Requests for the NATS bridge refused because its queue was full.",
            c.refused.to_string(),
        );
        metric(
            "chatd_cluster_bridge_waits_total",
            "counter",
            "Times the NATS bridge waited for the loop to take its events.",
            s.bridge.map_or(0, |b| b.waits).to_string(),
        );
    }
    metric(
        "chatd_history_bytes",
        "gauge",
        "Bytes of room history kept in memory (bounded by --history-total).",
        s.history_bytes.to_string(),
    );
    if let Some(b) = s.journal_bytes {
        metric(
            "chatd_journal_bytes",
            "gauge",
            "Size of the journal file.",
            b.to_string(),
        );
    }
    let _ = writeln!(
        m,
        "# HELP chatd_room_members Members of a public room.\n# TYPE chatd_room_members gauge"
    );
    for (name, n) in &s.rooms {
        let _ = writeln!(m, "chatd_room_members{{room=\"{}\"}} {n}", label(name));
    }
    let _ = writeln!(
        m,
        "# HELP chatd_rejected_total Error lines sent to clients, by code.\n# TYPE chatd_rejected_total counter"
    );
    for (code, n) in &s.rejected {
        let _ = writeln!(m, "chatd_rejected_total{{code=\"{}\"}} {n}", label(code));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            version: "0.1.0",
            uptime_secs: 5,
            connections: 3,
            named: 2,
            rooms: vec![("#lobby".into(), 2), ("#a\"b".into(), 1)],
            rooms_total: 3,
            private_rooms: 1,
            rejected: vec![("too-long".into(), 4)],
            journal_bytes: Some(100),
            ..Snapshot::default()
        }
    }

    #[test]
    fn parsing_is_incomplete_until_the_blank_line() {
        assert_eq!(
            parse(b"GET /health HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Incomplete
        );
        assert_eq!(
            parse(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"),
            Parsed::Request {
                method: "GET".into(),
                path: "/health".into()
            }
        );
        assert_eq!(parse(b"\x16\x03\x01garbage\r\n\r\n"), Parsed::Bad(400));
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.resize(MAX_REQUEST, b'a');
        assert_eq!(parse(&big), Parsed::Bad(431));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Parsed::Bad(431));
    }

    #[test]
    fn routes() {
        let ok = String::from_utf8(route("GET", "/health", snap)).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nok\n"));
        let nf = String::from_utf8(route("GET", "/nope", snap)).unwrap();
        assert!(nf.starts_with("HTTP/1.1 404 "));
        let post = String::from_utf8(route("POST", "/stats", snap)).unwrap();
        assert!(post.starts_with("HTTP/1.1 405 "));
        let head = String::from_utf8(route("HEAD", "/", snap)).unwrap();
        assert!(head.ends_with("\r\n\r\n"), "no body for HEAD");
        let page = String::from_utf8(route("GET", "/?t=1", snap)).unwrap();
        assert!(
            page.contains("<canvas") && !page.contains("http://") && !page.contains("https://")
        );
    }

    #[test]
    fn json_escapes_and_counts() {
        let j: serde_json::Value = serde_json::from_str(&to_json(&snap())).unwrap();
        assert_eq!(j["connections"], 3);
        let rooms = j["rooms"].as_array().unwrap();
        assert!(rooms.contains(&serde_json::json!({"name": "#a\"b", "members": 1})));
        assert_eq!(j["rejected"]["too-long"], 4);
        assert_eq!(j["journal_bytes"], 100);
        assert!(to_json(&Snapshot::default()).contains("\"journal_bytes\":null"));
    }

    #[test]
    fn metrics_have_help_and_type_for_every_family() {
        let m = to_metrics(&snap());
        for line in m.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(m.contains(&format!("# TYPE {name} ")), "{name}");
            assert!(m.contains(&format!("# HELP {name} ")), "{name}");
        }
        assert!(m.contains("chatd_room_members{room=\"#a\\\"b\"} 1"));
    }

    #[test]
    fn cluster_state_is_in_stats_and_metrics_only_in_a_cluster() {
        let mut s = snap();
        assert!(to_json(&s).contains("\"cluster\":null"));
        assert!(!to_metrics(&s).contains("chatd_cluster_reachable"));
        s.cluster = Some(crate::core::ClusterStats {
            node: "n\"1".into(),
            up: false,
            remote_people: 7,
            nodes: 2,
            received: 9,
            refused: 0,
        });
        let j: serde_json::Value = serde_json::from_str(&to_json(&s)).unwrap();
        assert_eq!(
            j["cluster"],
            serde_json::json!({"node": "n\"1", "reachable": false, "other_nodes": 2,
                "remote_users": 7, "received": 9, "requests_refused": 0, "bridge_waits": 0})
        );
        let m = to_metrics(&s);
        assert!(m.contains("chatd_cluster_reachable 0"), "{m}");
        assert!(m.contains("chatd_cluster_remote_users 7"), "{m}");
    }
}
