//! WebSocket (RFC 6455) framing, sans-IO: bytes a browser sent in, events
//! out; lines in, frames out. Frame headers are parsed and formatted by
//! tungstenite's `FrameHeader` (the length forms, opcodes and reserved
//! bits are where hand-written framing goes wrong); the payload streams
//! through here unmasked in place, straight into the connection's line
//! decoder, so a large upload is held once, under the same limits as a
//! line from nc.
//!
//! One text message is one protocol line. Server frames are never masked
//! and never fragmented: a line queued for a thousand browsers is framed
//! once ([`text_frame`]) and the buffer shared.

use std::io::Cursor;

use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// Control frames carry at most this much (RFC 6455, 5.5).
const MAX_CONTROL: usize = 125;
/// The longest header: 2 bytes, 8 of length, 4 of mask.
const MAX_HEADER: usize = 14;

/// Close codes chatd sends (RFC 6455, 7.4.1).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const UNSUPPORTED: u16 = 1003;
    pub const TOO_BIG: u16 = 1009;
    pub const POLICY: u16 = 1008;
}

/// What the peer did wrong; the connection is closed with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsError {
    pub code: u16,
    pub reason: &'static str,
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebSocket: {} (close {})", self.reason, self.code)
    }
}

fn err(code: u16, reason: &'static str) -> WsError {
    WsError { code, reason }
}

/// What a browser's bytes amounted to.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent<'a> {
    /// Part of the text message in progress (unmasked).
    Text(&'a [u8]),
    /// The text message in progress is complete: one line.
    EndOfLine,
    /// Answer with a pong carrying this.
    Ping(Vec<u8>),
    /// The peer is alive.
    Pong,
    /// The peer closes (its code, if it gave one).
    Close(Option<u16>),
}

enum State {
    /// Collecting a header (at most 14 bytes).
    Header,
    /// Streaming a data frame's payload.
    Data {
        left: u64,
        mask: [u8; 4],
        at: usize,
        fin: bool,
    },
    /// Collecting a control frame's payload.
    Control {
        op: Control,
        left: usize,
        mask: [u8; 4],
        body: Vec<u8>,
    },
}

/// A browser connection's incoming half.
pub struct Decoder {
    state: State,
    /// A header split across reads (at most [`MAX_HEADER`] bytes), inline:
    /// a decoder is kept only while a frame is partial, so this costs no
    /// allocation of its own.
    head: [u8; MAX_HEADER],
    head_len: u8,
    /// A text message was started and not finished (continuations follow).
    in_message: bool,
    /// Payload bytes of the message in progress.
    message_len: u64,
    max_message: u64,
    closed: bool,
}

impl Decoder {
    /// `max_message`: the longest line the connection may send (the bulk
    /// limit: an image's base64 with its command).
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            state: State::Header,
            head: [0; MAX_HEADER],
            head_len: 0,
            in_message: false,
            message_len: 0,
            max_message: max_message as u64,
            closed: false,
        }
    }

    /// Feeds bytes the peer sent (unmasked in place); events go to `out`
    /// in order. After an error or a close, nothing more is read.
    pub fn feed(
        &mut self,
        mut input: &mut [u8],
        out: &mut dyn FnMut(WsEvent<'_>),
    ) -> Result<(), WsError> {
        while !input.is_empty() && !self.closed {
            match &mut self.state {
                State::Header => {
                    let had = usize::from(self.head_len);
                    let take = (MAX_HEADER - had).min(input.len());
                    let filled = had + take;
                    if let (Some(dst), Some(src)) =
                        (self.head.get_mut(had..filled), input.get(..take))
                    {
                        dst.copy_from_slice(src);
                    }
                    let mut cur = Cursor::new(self.head.get(..filled).unwrap_or(&[]));
                    let parsed = FrameHeader::parse(&mut cur)
                        .map_err(|_| err(close::PROTOCOL, "malformed frame header"))?;
                    let Some((header, len)) = parsed else {
                        // At most 14 bytes: `filled` fits.
                        self.head_len = filled as u8;
                        input = input.get_mut(take..).unwrap_or_default();
                        continue;
                    };
                    let used = (cur.position() as usize).saturating_sub(had);
                    self.head_len = 0;
                    input = input.get_mut(used..).unwrap_or_default();
                    self.start_frame(header, len, out)?;
                }
                State::Data {
                    left,
                    mask,
                    at,
                    fin,
                } => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let (chunk, rest) = input.split_at_mut(n);
                    for b in chunk.iter_mut() {
                        *b ^= mask[*at & 3];
                        *at += 1;
                    }
                    *left -= n as u64;
                    let done = *left == 0;
                    let fin = *fin;
                    if !chunk.is_empty() {
                        out(WsEvent::Text(chunk));
                    }
                    input = rest;
                    if done {
                        self.state = State::Header;
                        if fin {
                            self.in_message = false;
                            self.message_len = 0;
                            out(WsEvent::EndOfLine);
                        }
                    }
                }
                State::Control {
                    op,
                    left,
                    mask,
                    body,
                } => {
                    let n = (*left).min(input.len());
                    let (chunk, rest) = input.split_at_mut(n);
                    for b in chunk.iter() {
                        let i = body.len() & 3;
                        body.push(b ^ mask[i]);
                    }
                    *left -= n;
                    input = rest;
                    if *left == 0 {
                        let op = *op;
                        let body = std::mem::take(body);
                        self.state = State::Header;
                        self.control(op, body, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn start_frame(
        &mut self,
        h: FrameHeader,
        len: u64,
        out: &mut dyn FnMut(WsEvent<'_>),
    ) -> Result<(), WsError> {
        if h.rsv1 || h.rsv2 || h.rsv3 {
            return Err(err(
                close::PROTOCOL,
                "reserved bits set (no extension was agreed)",
            ));
        }
        let Some(mask) = h.mask else {
            return Err(err(close::PROTOCOL, "a client frame must be masked"));
        };
        match h.opcode {
            OpCode::Data(d) => {
                match (d, self.in_message) {
                    (Data::Text, false) => self.in_message = true,
                    (Data::Continue, true) => {}
                    (Data::Binary, _) => {
                        return Err(err(
                            close::UNSUPPORTED,
                            "binary frames are not spoken here: send text",
                        ));
                    }
                    (Data::Text, true) => {
                        return Err(err(
                            close::PROTOCOL,
                            "a new message inside a fragmented one",
                        ));
                    }
                    (Data::Continue, false) => {
                        return Err(err(close::PROTOCOL, "a continuation with no message"));
                    }
                    (Data::Reserved(_), _) => {
                        return Err(err(close::PROTOCOL, "reserved opcode"));
                    }
                }
                self.message_len = self.message_len.saturating_add(len);
                if self.message_len > self.max_message {
                    return Err(err(close::TOO_BIG, "message longer than the longest line"));
                }
                if len == 0 {
                    if h.is_final {
                        self.in_message = false;
                        self.message_len = 0;
                        out(WsEvent::EndOfLine);
                    }
                } else {
                    self.state = State::Data {
                        left: len,
                        mask,
                        at: 0,
                        fin: h.is_final,
                    };
                }
            }
            OpCode::Control(op) => {
                if !h.is_final || len > MAX_CONTROL as u64 {
                    return Err(err(close::PROTOCOL, "control frames are short and whole"));
                }
                if matches!(op, Control::Reserved(_)) {
                    return Err(err(close::PROTOCOL, "reserved opcode"));
                }
                let left = len as usize;
                if left == 0 {
                    self.control(op, Vec::new(), out)?;
                } else {
                    self.state = State::Control {
                        op,
                        left,
                        mask,
                        body: Vec::with_capacity(left),
                    };
                }
            }
        }
        Ok(())
    }

    fn control(
        &mut self,
        op: Control,
        body: Vec<u8>,
        out: &mut dyn FnMut(WsEvent<'_>),
    ) -> Result<(), WsError> {
        match op {
            Control::Ping => out(WsEvent::Ping(body)),
            Control::Pong => out(WsEvent::Pong),
            Control::Close => {
                self.closed = true;
                let code = match body.as_slice() {
                    [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
                    _ => None,
                };
                out(WsEvent::Close(code));
            }
            Control::Reserved(_) => return Err(err(close::PROTOCOL, "reserved opcode")),
        }
        Ok(())
    }

    /// Between frames and messages, holding nothing: what it knows is
    /// what a new decoder knows, so it need not be kept.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Header)
            && self.head_len == 0
            && !self.in_message
            && !self.closed
    }
}

/// A browser connection's incoming half as a connection keeps it: the
/// decoder is boxed only while a frame or message is partly read, so an
/// idle browser costs one null pointer (issue 21: a boxed decoder for
/// every idle browser was 160 bytes of its 790). A frame that arrives
/// whole in one read, as most do, is decoded on the stack.
#[derive(Default)]
pub struct Reader {
    partial: Option<Box<Decoder>>,
}

impl Reader {
    /// As [`Decoder::feed`]; `max_message` as for [`Decoder::new`].
    pub fn feed(
        &mut self,
        max_message: usize,
        input: &mut [u8],
        out: &mut dyn FnMut(WsEvent<'_>),
    ) -> Result<(), WsError> {
        let result;
        match self.partial.as_deref_mut() {
            Some(d) => {
                result = d.feed(input, out);
                if d.is_idle() {
                    self.partial = None;
                }
            }
            None => {
                let mut d = Decoder::new(max_message);
                result = d.feed(input, out);
                if !d.is_idle() {
                    self.partial = Some(Box::new(d));
                }
            }
        }
        result
    }

    /// A frame or message is partly read (the decoder is held).
    pub fn is_partial(&self) -> bool {
        self.partial.is_some()
    }
}

fn frame(op: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    let h = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode: op,
        mask: None,
    };
    // Writing into a Vec cannot fail.
    let _ = h.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Frames each line of `lines` (newline-terminated protocol lines, as the
/// core queues them) as one text frame, without its newline.
pub fn text_frames(lines: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.len() + 10);
    for line in lines.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        frame(OpCode::Data(Data::Text), line, &mut out);
    }
    out
}

/// A ping with `payload` (at most 125 bytes).
pub fn ping_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame(
        OpCode::Control(Control::Ping),
        payload.get(..MAX_CONTROL.min(payload.len())).unwrap_or(&[]),
        &mut out,
    );
    out
}

/// A pong echoing `payload`.
pub fn pong_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame(
        OpCode::Control(Control::Pong),
        payload.get(..MAX_CONTROL.min(payload.len())).unwrap_or(&[]),
        &mut out,
    );
    out
}

/// A close frame with a code and a short reason (cut to fit).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    body.extend_from_slice(reason.get(..end).unwrap_or("").as_bytes());
    let mut out = Vec::new();
    frame(OpCode::Control(Control::Close), &body, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame, masked as a browser masks it.
    fn client(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![op | if fin { 0x80 } else { 0 }];
        let n = payload.len();
        if n < 126 {
            out.push(0x80 | n as u8);
        } else if n < 65536 {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn lines(
        d: &mut Decoder,
        bytes: &[u8],
        step: usize,
    ) -> Result<(Vec<String>, Vec<String>), WsError> {
        let mut got = Vec::new();
        let mut other = Vec::new();
        let mut cur = Vec::new();
        let mut buf = bytes.to_vec();
        for chunk in buf.chunks_mut(step) {
            d.feed(chunk, &mut |e| match e {
                WsEvent::Text(t) => cur.extend_from_slice(t),
                WsEvent::EndOfLine => {
                    got.push(String::from_utf8_lossy(&std::mem::take(&mut cur)).into_owned())
                }
                e => other.push(format!("{e:?}")),
            })?;
        }
        Ok((got, other))
    }

    #[test]
    fn masked_text_frames_become_lines_whatever_the_read_sizes() {
        let mut bytes = client(0x1, true, b"hello");
        bytes.extend(client(0x1, false, b"frag"));
        bytes.extend(client(0x9, true, b"p"));
        bytes.extend(client(0x0, true, b"mented"));
        let long = "x".repeat(70_000);
        bytes.extend(client(0x1, true, long.as_bytes()));
        for step in [1, 3, 7, 14, 1000, 1 << 20] {
            let mut d = Decoder::new(100_000);
            let (got, other) = lines(&mut d, &bytes, step).expect("valid");
            assert_eq!(
                got,
                vec!["hello".to_string(), "fragmented".into(), long.clone()],
                "step {step}"
            );
            assert_eq!(other, vec!["Ping([112])".to_string()]);
        }
    }

    #[test]
    fn bad_frames_are_refused_with_the_right_code() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (client(0x2, true, b"bin"), close::UNSUPPORTED),
            (client(0x0, true, b"orphan"), close::PROTOCOL),
            (client(0x1 | 0x40, true, b"rsv"), close::PROTOCOL),
            (client(0x9, false, b"frag ping"), close::PROTOCOL),
            (client(0x9, true, &[0; 126]), close::PROTOCOL),
            (client(0x1, true, &[b'a'; 101]), close::TOO_BIG),
            (
                vec![0x81, 0x05, b'h', b'e', b'l', b'l', b'o'],
                close::PROTOCOL,
            ),
            (client(0x3, true, b""), close::PROTOCOL),
        ];
        for (bytes, code) in cases {
            let mut d = Decoder::new(100);
            let e = lines(&mut d, &bytes, 1000).expect_err("refused");
            assert_eq!(e.code, code, "{e}");
        }
        // Too big across fragments, too.
        let mut d = Decoder::new(100);
        let mut bytes = client(0x1, false, &[b'a'; 60]);
        bytes.extend(client(0x0, true, &[b'a'; 60]));
        assert_eq!(
            lines(&mut d, &bytes, 1000).expect_err("big").code,
            close::TOO_BIG
        );
    }

    #[test]
    fn close_stops_reading_and_reports_the_code() {
        let mut d = Decoder::new(100);
        let mut bytes = client(0x8, true, &1000u16.to_be_bytes());
        bytes.extend(client(0x1, true, b"after"));
        let (got, other) = lines(&mut d, &bytes, 1000).expect("ok");
        assert!(got.is_empty());
        assert_eq!(other, vec!["Close(Some(1000))".to_string()]);
    }

    #[test]
    fn a_reader_holds_a_decoder_only_while_a_frame_is_partial() {
        let mut bytes = client(0x1, true, b"hello");
        bytes.extend(client(0x1, false, b"frag"));
        bytes.extend(client(0x0, true, b"mented"));
        for step in [1, 3, 7, 1000] {
            let mut r = Reader::default();
            let mut got = Vec::new();
            let mut cur = Vec::new();
            let mut buf = bytes.clone();
            for chunk in buf.chunks_mut(step) {
                r.feed(100, chunk, &mut |e| match e {
                    WsEvent::Text(t) => cur.extend_from_slice(t),
                    WsEvent::EndOfLine => got.push(std::mem::take(&mut cur)),
                    _ => {}
                })
                .expect("valid");
            }
            assert_eq!(
                got,
                vec![b"hello".to_vec(), b"fragmented".to_vec()],
                "step {step}"
            );
            assert!(
                !r.is_partial(),
                "step {step}: a decoder kept after the last frame"
            );
        }
        // Half a header, half a payload, a message whose first fragment
        // ended: each keeps the decoder; a whole frame leaves none.
        let whole = client(0x1, true, b"hello");
        for cut in [1, 4, 8] {
            let mut r = Reader::default();
            let mut first = whole[..cut].to_vec();
            r.feed(100, &mut first, &mut |_| {}).expect("valid");
            assert!(r.is_partial(), "cut at {cut}");
            let mut rest = whole[cut..].to_vec();
            r.feed(100, &mut rest, &mut |_| {}).expect("valid");
            assert!(!r.is_partial(), "cut at {cut}");
        }
        let mut r = Reader::default();
        r.feed(100, &mut client(0x1, false, b"frag"), &mut |_| {})
            .expect("valid");
        assert!(r.is_partial(), "a message's first fragment forgotten");
    }

    #[test]
    fn a_reader_counts_a_message_across_reads_and_stays_closed() {
        // The length limit holds across fragments read apart (the decoder
        // is kept while the message is open).
        let mut r = Reader::default();
        r.feed(100, &mut client(0x1, false, &[b'a'; 60]), &mut |_| {})
            .expect("first fragment");
        let e = r
            .feed(100, &mut client(0x0, true, &[b'a'; 60]), &mut |_| {})
            .expect_err("too big");
        assert_eq!(e.code, close::TOO_BIG);
        // After a close, later reads decode nothing.
        let mut r = Reader::default();
        r.feed(
            100,
            &mut client(0x8, true, &1000u16.to_be_bytes()),
            &mut |_| {},
        )
        .expect("close");
        let mut after = 0;
        r.feed(100, &mut client(0x1, true, b"after"), &mut |_| after += 1)
            .expect("ignored");
        assert_eq!(after, 0, "frames decoded after a close");
    }

    #[test]
    fn server_frames_are_unmasked_one_per_line() {
        let f = text_frames(b"msg #a bob 1 hi\nok pong x\n");
        assert_eq!(
            f,
            [
                &[0x81, 15][..],
                b"msg #a bob 1 hi",
                &[0x81, 9],
                b"ok pong x"
            ]
            .concat()
        );
        let big = text_frames(&[b'a'; 300]);
        assert_eq!(&big[..4], &[0x81, 126, 1, 44]);
        assert_eq!(
            close_frame(1000, "bye"),
            vec![0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']
        );
        assert_eq!(ping_frame(b"t"), vec![0x89, 1, b't']);
        assert_eq!(pong_frame(b"t"), vec![0x8a, 1, b't']);
    }
}
