//! The `--ws` dialect: chatd's protocol as the browser client speaks it,
//! one line per WebSocket text frame (machine format). Client frames are
//! masked with a zero key (a valid mask that leaves the payload as it is:
//! the load generator should not spend its core on XOR); server frames are
//! unframed back into lines, and pings answered.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A masked text frame holding `text`.
pub fn frame(text: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(text.len() + 14);
    f.push(0x81);
    let n = text.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(text);
    f
}

/// Each newline-terminated line of `lines` as a frame.
pub fn frames(lines: &[u8]) -> Vec<u8> {
    lines
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .flat_map(frame)
        .collect()
}

/// A masked pong.
pub fn pong() -> Vec<u8> {
    vec![0x8a, 0x80, 0, 0, 0, 0]
}

/// Sends the upgrade request and reads the answer; returns the bytes that
/// came after it (frames).
pub fn handshake(s: &mut TcpStream, addr: SocketAddr) -> io::Result<Vec<u8>> {
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: Y2hhdGQtYmVuY2gtd3MtMQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: chatd.v1\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                let head = String::from_utf8_lossy(buf.get(..end).unwrap_or(&[])).into_owned();
                return Err(io::Error::other(format!("no WebSocket: {head}")));
            }
            return Ok(buf.split_off(end + 4));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("closed during the WebSocket handshake"));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
    }
}

/// Server frames back into newline-terminated lines.
#[derive(Default)]
pub struct Unframer {
    head: Vec<u8>,
    left: u64,
    /// The frame in progress is text (kept), not control (skipped).
    text: bool,
}

impl Unframer {
    /// Appends the text of `input`'s frames to `out`, a newline after each;
    /// returns how many pings came.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut pings = 0;
        while !input.is_empty() {
            if self.left > 0 {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                let (part, rest) = input.split_at(n);
                if self.text {
                    out.extend_from_slice(part);
                }
                self.left -= n as u64;
                if self.left == 0 && self.text {
                    out.push(b'\n');
                }
                input = rest;
                continue;
            }
            // A header: 2 bytes, then 2 or 8 of length (server frames are
            // not masked).
            let need = match self.head.as_slice() {
                [_, l, ..] if l & 0x7f == 126 => 4,
                [_, l, ..] if l & 0x7f == 127 => 10,
                _ => 2,
            };
            if self.head.len() < need {
                let take = (need - self.head.len()).min(input.len());
                self.head
                    .extend_from_slice(input.get(..take).unwrap_or(&[]));
                input = input.get(take..).unwrap_or(&[]);
                let complete = match self.head.as_slice() {
                    [_, l, ..] if l & 0x7f == 126 => self.head.len() == 4,
                    [_, l, ..] if l & 0x7f == 127 => self.head.len() == 10,
                    [_, _] => true,
                    _ => false,
                };
                if !complete {
                    continue;
                }
            }
            let op = self.head.first().map_or(0, |b| b & 0x0f);
            let len = match self.head.as_slice() {
                [_, l, a, b] if l & 0x7f == 126 => u64::from(u16::from_be_bytes([*a, *b])),
                [_, l, rest @ ..] if l & 0x7f == 127 => {
                    rest.try_into().map(u64::from_be_bytes).unwrap_or(0)
                }
                [_, l] => u64::from(l & 0x7f),
                _ => 0,
            };
            self.head.clear();
            self.text = op == 0x1 || op == 0x0;
            if op == 0x9 {
                pings += 1;
            }
            self.left = len;
            if len == 0 && self.text {
                out.push(b'\n');
            }
        }
        pings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_back_as_lines_whatever_the_split() {
        let mut server = vec![0x81, 5];
        server.extend_from_slice(b"hello");
        server.extend_from_slice(&[0x89, 1, b'p']);
        server.extend_from_slice(&[0x81, 126, 1, 0]);
        server.extend_from_slice(&[b'x'; 256]);
        for step in [1, 2, 3, 7, 1000] {
            let mut u = Unframer::default();
            let mut out = Vec::new();
            let pings: usize = server.chunks(step).map(|c| u.feed(c, &mut out)).sum();
            assert_eq!(pings, 1);
            assert_eq!(
                out,
                [&b"hello\n"[..], &[b'x'; 256], b"\n"].concat(),
                "step {step}"
            );
        }
        assert_eq!(frame(b"hi"), vec![0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
    }
}
