//! The reactor's side of the browser client: telling a browser from a line
//! client on a chat port, answering its HTTP requests, and carrying its
//! WebSocket frames. HTTP parsing and WebSocket framing are sans-IO in
//! [`crate::web`]; this file moves their bytes and keeps their deadlines.
//!
//! Timing of the greeting: a chat port's connection is greeted only once
//! its first bytes came and are not an HTTP request, or after
//! [`GREETING_HOLD`] of silence (nc's user, waiting to be asked for a
//! nick). A browser sends its request in the first packet after the TCP
//! (or TLS) handshake, so no greeting is ever written before a request.

use std::time::Instant;

use log::info;

use super::Server;
use super::conn::{DeadlineTag, HttpConn, Layer, Transport};
use crate::core::{Bytes, ConnId, Disconnect};
use crate::web::http::{self, Parsed, Peer};
use crate::web::ws::{self, WsEvent};
use crate::web::{GREETING_HOLD, MAX_REQUESTS, REQUEST_TIMEOUT, Sniffed, sniff};

/// What reading a browser's bytes left to do.
pub(super) enum WebRead {
    /// Done with these bytes; go on reading.
    Done,
    /// The first bytes were a line client's: feed `scratch[..n]` as lines.
    Lines,
    /// Lines the WebSocket carried are in `ws_lines`: feed them.
    WsLines,
    /// Stop reading this connection.
    Stop,
}

impl Server {
    /// The layer a new connection on listener `index` starts in.
    pub(super) fn first_layer(
        &mut self,
        index: usize,
        key: ConnId,
        tls: bool,
        now: Instant,
    ) -> Layer {
        if self.web.is_none() {
            return Layer::Lines;
        }
        if self.web_only.contains(&index) {
            let deadline = now + REQUEST_TIMEOUT;
            self.web_timers.push((deadline, key));
            return Layer::Http(Box::new(HttpConn {
                buf: Vec::new(),
                deadline,
                served: 0,
                undecided: false,
            }));
        }
        if tls {
            // Armed when the handshake is done (`handshake_done`).
            return Layer::Sniff { until: None };
        }
        let until = now + GREETING_HOLD;
        self.web_timers.push((until, key));
        Layer::Sniff {
            until: Some(DeadlineTag::new(until, self.started)),
        }
    }

    /// A TLS handshake finished: the greeting hold starts now.
    pub(super) fn handshake_done(&mut self, key: ConnId, now: Instant) {
        if let Some(c) = self.conns.get_mut(key)
            && let Layer::Sniff { until } = &mut c.layer
            && until.is_none()
        {
            let at = now + GREETING_HOLD;
            *until = Some(DeadlineTag::new(at, self.started));
            self.web_timers.push((at, key));
        }
    }

    /// Bytes `scratch[..n]` from a connection that is not (yet) a line
    /// client's.
    pub(super) fn read_web(&mut self, key: ConnId, n: usize, now: Instant) -> WebRead {
        let Some(c) = self.conns.get_mut(key) else {
            return WebRead::Stop;
        };
        match &c.layer {
            Layer::Lines => WebRead::Lines,
            Layer::Http(_) => self.read_http(key, n, now),
            Layer::Ws(_) => self.read_ws(key, n, now),
            Layer::WsClosing => WebRead::Done,
            Layer::Sniff { .. } => {
                let first = self.scratch.get(..n).unwrap_or(&[]);
                let seen = sniff(first);
                if seen == Sniffed::Line {
                    c.layer = Layer::Lines;
                    // The held greeting goes out now, before any answer.
                    self.mark_dirty(key);
                    return WebRead::Lines;
                }
                let undecided = seen == Sniffed::NeedMore;
                let deadline = now + REQUEST_TIMEOUT;
                c.layer = Layer::Http(Box::new(HttpConn {
                    buf: first.to_vec(),
                    deadline,
                    served: 0,
                    undecided,
                }));
                if !undecided {
                    // The greeting was for a line client.
                    c.out.clear();
                }
                self.web_timers.push((deadline, key));
                self.serve_http(key, now)
            }
        }
    }

    fn read_http(&mut self, key: ConnId, n: usize, now: Instant) -> WebRead {
        let Some(c) = self.conns.get_mut(key) else {
            return WebRead::Stop;
        };
        let Layer::Http(h) = &mut c.layer else {
            return WebRead::Stop;
        };
        h.buf
            .extend_from_slice(self.scratch.get(..n).unwrap_or(&[]));
        if h.undecided {
            match sniff(&h.buf) {
                Sniffed::NeedMore => return WebRead::Done,
                Sniffed::Http => {
                    h.undecided = false;
                    c.out.clear();
                }
                Sniffed::Line => {
                    // Everything so far was a line client's text.
                    let seen = std::mem::take(&mut h.buf);
                    c.layer = Layer::Lines;
                    self.ws_lines.clear();
                    self.ws_lines.extend_from_slice(&seen);
                    self.mark_dirty(key);
                    return WebRead::WsLines;
                }
            }
        }
        self.serve_http(key, now)
    }

    fn read_ws(&mut self, key: ConnId, n: usize, now: Instant) -> WebRead {
        let max_message = {
            let cfg = self.core.config();
            crate::codec::bulk_limit(cfg.max_image).max(cfg.max_line)
        };
        let Some(c) = self.conns.get_mut(key) else {
            return WebRead::Stop;
        };
        let Layer::Ws(w) = &mut c.layer else {
            return WebRead::Stop;
        };
        let Some(bytes) = self.scratch.get_mut(..n) else {
            return WebRead::Stop;
        };
        c.quiet_sweeps = 0;
        let lines = &mut self.ws_lines;
        lines.clear();
        let mut replies: Vec<Vec<u8>> = Vec::new();
        let mut closed = None;
        let result = w.feed(max_message, bytes, &mut |e| match e {
            WsEvent::Text(t) => lines.extend_from_slice(t),
            WsEvent::EndOfLine => lines.push(b'\n'),
            WsEvent::Ping(p) => replies.push(ws::pong_frame(&p)),
            WsEvent::Pong => {}
            WsEvent::Close(code) => closed = Some(code),
        });
        let peer = c.peer;
        for r in replies {
            c.out.push(r.into());
        }
        if let Err(e) = result {
            info!("connection {key} from {peer}: {e}");
            self.close_ws(key, e.code, e.reason, now);
            self.core
                .handle_disconnect(key, Disconnect::Error(e.to_string()));
            self.drain(now);
            return WebRead::Stop;
        }
        if let Some(code) = closed {
            // Lines before the close are still the peer's.
            if !self.ws_lines.is_empty() {
                self.feed_ws_lines(key, now);
            }
            info!(
                "connection {key} from {peer}: WebSocket closed by peer ({})",
                code.unwrap_or(ws::close::NORMAL)
            );
            self.close_ws(key, ws::close::NORMAL, "", now);
            self.core.handle_disconnect(key, Disconnect::Closed);
            self.drain(now);
            return WebRead::Stop;
        }
        self.mark_dirty(key);
        if self.ws_lines.is_empty() {
            WebRead::Done
        } else {
            WebRead::WsLines
        }
    }

    /// Feeds the lines a WebSocket carried, as `feed_lines` feeds a read.
    pub(super) fn feed_ws_lines(&mut self, key: ConnId, now: Instant) -> bool {
        let lines = std::mem::take(&mut self.ws_lines);
        let go_on = self.feed_bytes(key, &lines, now);
        self.ws_lines = lines;
        self.ws_lines.clear();
        if self.ws_lines.capacity() > super::SCRATCH {
            self.ws_lines = Vec::new();
        }
        go_on
    }

    /// Answers the requests complete in the connection's buffer.
    fn serve_http(&mut self, key: ConnId, now: Instant) -> WebRead {
        let Some(web) = self.web.clone() else {
            return WebRead::Stop;
        };
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return WebRead::Stop;
            };
            let peer = Peer {
                ip: c.peer.ip(),
                tls: matches!(c.transport, Transport::Tls(_)),
            };
            let Layer::Http(h) = &mut c.layer else {
                return WebRead::Stop;
            };
            if h.undecided {
                return WebRead::Done;
            }
            match http::parse(&h.buf, peer, &web) {
                Parsed::Partial => return WebRead::Done,
                Parsed::Respond {
                    bytes,
                    close,
                    used,
                    status,
                } => {
                    self.counters.http_requests += 1;
                    info!("connection {key} from {}: HTTP {status}", c.peer);
                    h.buf.drain(..used.min(h.buf.len()));
                    h.served += 1;
                    h.deadline = now + REQUEST_TIMEOUT;
                    let last = close || h.served >= MAX_REQUESTS;
                    let deadline = h.deadline;
                    c.out.push(bytes.into());
                    self.mark_dirty(key);
                    if last {
                        self.start_closing(key, now);
                        self.core.handle_disconnect(key, Disconnect::Closed);
                        self.drain(now);
                        return WebRead::Stop;
                    }
                    self.web_timers.push((deadline, key));
                }
                Parsed::Upgrade {
                    bytes,
                    client,
                    used,
                } => {
                    let rest = h.buf.split_off(used.min(h.buf.len()));
                    c.out.push(bytes.into());
                    c.layer = Layer::Ws(ws::Reader::default());
                    c.quiet_sweeps = 0;
                    self.counters.websockets += 1;
                    self.ws_live += 1;
                    if self.next_ping_sweep.is_none() {
                        self.next_ping_sweep = Some(now + web.ping_interval / 2);
                    }
                    info!("connection {key} from {}: WebSocket for {client}", c.peer);
                    self.mark_dirty(key);
                    self.core.handle_web_upgrade(key, client, now);
                    self.drain(now);
                    if rest.is_empty() {
                        return WebRead::Done;
                    }
                    // Frames sent right behind the request.
                    let n = rest.len().min(self.scratch.len());
                    if let (Some(dst), Some(src)) = (self.scratch.get_mut(..n), rest.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                    return self.read_web(key, n, now);
                }
            }
        }
    }

    /// Queues a close frame (once) and closes after it.
    pub(super) fn close_ws(&mut self, key: ConnId, code: u16, reason: &str, now: Instant) {
        if let Some(c) = self.conns.get_mut(key)
            && let Layer::Ws(_) = c.layer
        {
            c.layer = Layer::WsClosing;
            c.out.push(ws::close_frame(code, reason).into());
        }
        self.start_closing(key, now);
        self.mark_dirty(key);
    }

    /// Greetings whose hold passed, and HTTP requests not complete in time.
    pub(super) fn expire_web(&mut self, now: Instant) {
        if self.next_ping_sweep.is_some_and(|t| t <= now) {
            self.ping_sweep(now);
        }
        if self.web_timers.is_empty() {
            return;
        }
        let mut greet = Vec::new();
        let mut late = Vec::new();
        let conns = &self.conns;
        let started = self.started;
        self.web_timers.retain(|&(at, key)| {
            let Some(c) = conns.get(key) else {
                return false;
            };
            let current = match &c.layer {
                Layer::Sniff { until } => *until == Some(DeadlineTag::new(at, started)),
                Layer::Http(h) => h.deadline == at,
                Layer::Lines | Layer::Ws(_) | Layer::WsClosing => false,
            };
            if c.dead || c.closing.is_some() || !current {
                return false;
            }
            if at > now {
                return true;
            }
            match c.layer {
                Layer::Sniff { .. } => greet.push(key),
                _ => late.push(key),
            }
            false
        });
        for key in greet {
            if let Some(c) = self.conns.get_mut(key) {
                c.layer = Layer::Lines;
            }
            self.mark_dirty(key);
        }
        for key in late {
            if let Some(c) = self.conns.get(key) {
                info!(
                    "connection {key} from {}: HTTP request not complete in time",
                    c.peer
                );
            }
            self.kill(key, Disconnect::Error("HTTP request timed out".into()));
        }
    }

    /// Pings browsers that said nothing for an interval; cuts off those
    /// that said nothing for two.
    fn ping_sweep(&mut self, now: Instant) {
        let interval = self
            .web
            .as_ref()
            .map_or(crate::web::PING_INTERVAL, |w| w.ping_interval);
        self.next_ping_sweep = (self.ws_live > 0).then(|| now + interval / 2);
        let mut silent = Vec::new();
        let mut ping = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            if !matches!(c.layer, Layer::Ws(_)) || c.dead || c.closing.is_some() {
                continue;
            }
            c.quiet_sweeps = c.quiet_sweeps.saturating_add(1);
            match c.quiet_sweeps {
                3 => ping.push(key),
                5.. => silent.push(key),
                _ => {}
            }
        }
        let frame: Bytes = ws::ping_frame(b"chatd").into();
        for key in ping {
            self.enqueue_raw(key, frame.clone());
        }
        for key in silent {
            if let Some(c) = self.conns.get(key) {
                info!(
                    "connection {key} from {}: no answer to ping, disconnecting",
                    c.peer
                );
            }
            self.close_ws(key, ws::close::POLICY, "no answer to ping", now);
            self.core
                .handle_disconnect(key, Disconnect::Error("no answer to ping".into()));
            self.drain(now);
        }
    }

    /// Queues bytes as they are (already framed, or HTTP).
    fn enqueue_raw(&mut self, key: ConnId, data: Bytes) {
        if let Some(c) = self.conns.get_mut(key) {
            c.out.push(data);
        }
        self.mark_dirty(key);
    }
}

/// The close code for a connection the server ends normally.
pub(super) fn ws_normal() -> u16 {
    ws::close::NORMAL
}

/// What a line buffer becomes on a connection's layer: framed for a
/// WebSocket, dropped for HTTP (the core's lines are not for it), as it is
/// otherwise. `cache` holds the frames of buffers seen before in this
/// fan-out, so that a line to many browsers is framed once.
pub(super) fn for_layer(
    layer: &Layer,
    data: &Bytes,
    cache: &mut Vec<(Bytes, Bytes)>,
) -> Option<Bytes> {
    match layer {
        Layer::Lines | Layer::Sniff { .. } => Some(data.clone()),
        Layer::Http(_) | Layer::WsClosing => None,
        Layer::Ws(_) => {
            if let Some((_, framed)) = cache.iter().find(|(d, _)| Bytes::ptr_eq(d, data)) {
                return Some(framed.clone());
            }
            let framed: Bytes = ws::text_frames(data).into();
            cache.push((data.clone(), framed.clone()));
            Some(framed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_to_many_browsers_is_framed_once() {
        let ws = || Layer::Ws(ws::Reader::default());
        let (a, b) = (ws(), ws());
        let line: Bytes = b"msg #a bob 1 hi\n".to_vec().into();
        let mut cache = Vec::new();
        let fa = for_layer(&a, &line, &mut cache).expect("framed");
        let fb = for_layer(&b, &line, &mut cache).expect("framed");
        assert!(Bytes::ptr_eq(&fa, &fb), "framed twice");
        assert_eq!(&fa[..2], &[0x81, 15]);
        let plain = for_layer(&Layer::Lines, &line, &mut cache).expect("as is");
        assert!(Bytes::ptr_eq(&plain, &line));
        let http = Layer::Http(Box::new(HttpConn {
            buf: Vec::new(),
            deadline: Instant::now(),
            served: 0,
            undecided: false,
        }));
        assert!(
            for_layer(&http, &line, &mut cache).is_none(),
            "lines reached an HTTP client"
        );
    }
}
