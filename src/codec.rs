//! The bounded line decoder: bytes from a socket in, complete lines (or
//! per-line errors) out.
//!
//! It does not know about commands, nicks or rooms; it only splits a byte
//! stream into lines a peer cannot use to exhaust memory:
//!
//! * a line longer than `max_line` bytes is never buffered: once the limit is
//!   passed the decoder reports [`LineError::TooLong`] *once* and discards
//!   everything up to the next `\n`, after which the connection is usable again
//!   (the pattern of tokio-util's `LinesCodec`);
//! * the one exception is a *bulk* line — one that starts with `/image `,
//!   `/img `, `/file ` or `/enc ` — which may grow to `max_bulk` bytes (enough for the
//!   base64 of the largest image). The decision is made from the first bytes
//!   of the line, before anything past `max_line` is kept;
//! * `\r\n` is accepted as well as `\n` (telnet, Windows);
//! * a line that is not UTF-8 is reported as [`LineError::InvalidUtf8`];
//! * a line holding control characters (C0, DEL, C1 — which is where ESC, OSC,
//!   CSI and BEL live) is reported as [`LineError::ControlChar`], so nobody can
//!   inject terminal escape sequences into the nc sessions of others. A tab is
//!   not refused: it becomes a space.
//!
//! While a connection is idle between lines the decoder holds no allocation
//! (`partial` is emptied and shrunk after a large line), so idle connections
//! cost little memory.

use std::fmt;

/// Why one line was refused. The connection stays usable after each of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// The line passed `max_line` bytes; it was discarded up to its newline.
    TooLong { max: usize },
    /// An upload line (`/image`, `/file`, `/enc`) passed the bulk limit of
    /// `max` bytes: the upload is larger than the server takes. Discarded.
    UploadTooLong { max: usize },
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line holds a control character (the code point is given).
    ControlChar(u32),
    /// An upload line was abandoned because the server holds too many
    /// partial uploads at once (see [`LineDecoder::abandon`]).
    Busy,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::TooLong { max } => write!(
                f,
                "line too long: the limit is {max} bytes; the line was discarded (send images with /image, at most the image limit)"
            ),
            LineError::UploadTooLong { max } => write!(
                f,
                "too large: the upload's line passed {max} bytes, more than the largest upload this server takes needs; it was discarded"
            ),
            LineError::InvalidUtf8 => {
                write!(
                    f,
                    "invalid UTF-8: lines must be UTF-8 text; the line was discarded"
                )
            }
            LineError::Busy => f.write_str(
                "the server is receiving too many uploads at once: yours was discarded; try again shortly",
            ),
            LineError::ControlChar(c) => write!(
                f,
                "control character U+{c:04X} refused: escape codes, bells and other control characters are not allowed; the line was discarded"
            ),
        }
    }
}

/// One item out of the decoder.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Line(String),
    Error(LineError),
}

/// Splits a byte stream into bounded, validated lines.
#[derive(Debug)]
pub struct LineDecoder {
    /// Limits kept as `u32` (every connection has a decoder; issue 21).
    max_line: u32,
    max_bulk: u32,
    /// Bytes of the current line so far; never longer than `max_line + 1`
    /// (the `+ 1` leaves room for a `\r` that precedes the `\n`).
    partial: Partial,
    /// True once the current line passed the limit: bytes are dropped until
    /// the next `\n`.
    discarding: bool,
    /// Bytes dropped so far from the current over-long line (saturating
    /// at 4 GiB; 32 bits, as every connection has a decoder).
    discarded: u32,
}

/// A line in progress, behind one pointer that is null between lines: every
/// connection has a decoder, and most hold no partial line (8 bytes where a
/// `Vec` takes 24; issue 21). A line split across reads pays one more
/// allocation, for the box.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // the extra allocation is the point: see above
struct Partial(Option<Box<Vec<u8>>>);

impl Partial {
    fn as_slice(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held: the buffer and the box around it.
    fn capacity(&self) -> usize {
        self.0
            .as_deref()
            .map_or(0, |v| v.capacity() + std::mem::size_of::<Vec<u8>>())
    }

    fn extend_from_slice(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            Some(v) => v.extend_from_slice(bytes),
            None if bytes.is_empty() => {}
            None => self.0 = Some(Box::new(bytes.to_vec())),
        }
    }

    /// The line so far, leaving nothing allocated.
    fn take(&mut self) -> Vec<u8> {
        self.0.take().map_or_else(Vec::new, |b| *b)
    }
}

/// Lines that may carry a base64 payload longer than a text line.
const BULK_PREFIXES: [&[u8]; 4] = [b"/image ", b"/img ", b"/file ", b"/enc "];

/// The bulk limit for a given decoded-size limit: its base64 length plus room
/// for the command and a file name.
pub fn bulk_limit(max_decoded: u64) -> usize {
    let b64 = max_decoded.div_ceil(3).saturating_mul(4);
    usize::try_from(b64)
        .unwrap_or(usize::MAX)
        .saturating_add(256)
}

/// A buffer larger than this is released once its line is complete, so a
/// single long line does not pin memory on an idle connection.
const KEEP_CAPACITY: usize = 1024;

impl LineDecoder {
    /// A decoder for text lines only (no bulk allowance).
    pub fn new(max_line: usize) -> Self {
        Self::with_bulk(max_line, max_line)
    }

    /// A decoder whose `/image` and `/file` lines may reach `max_bulk` bytes.
    pub fn with_bulk(max_line: usize, max_bulk: usize) -> Self {
        LineDecoder {
            max_line: clamp_u32(max_line),
            max_bulk: clamp_u32(max_bulk.max(max_line)),
            partial: Partial::default(),
            discarding: false,
            discarded: 0,
        }
    }

    /// Whether the line whose bytes so far are `partial` then `chunk` is an
    /// upload (a bulk line).
    fn is_bulk(&self, chunk: &[u8]) -> bool {
        let mut head = [0u8; 8];
        for (slot, b) in head
            .iter_mut()
            .zip(self.partial.as_slice().iter().chain(chunk))
        {
            *slot = b.to_ascii_lowercase();
        }
        BULK_PREFIXES.iter().any(|p| head.starts_with(p))
    }

    /// The limit for the line whose bytes so far are `partial` then `chunk`.
    fn limit(&self, chunk: &[u8]) -> usize {
        if self.is_bulk(chunk) {
            self.max_bulk as usize
        } else {
            self.max_line as usize
        }
    }

    /// Bytes dropped so far from an over-long line still being received: a
    /// peer that goes on and on is not a chat client (the reactor cuts it
    /// off past a bound).
    pub fn discarded(&self) -> u64 {
        u64::from(self.discarded)
    }

    /// Bytes held for a line not yet complete (for accounting and tests).
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Heap capacity held by the decoder.
    pub fn capacity(&self) -> usize {
        self.partial.capacity()
    }

    /// Feeds `bytes` and calls `out` for each complete line or line error, in
    /// order. Bytes after the last `\n` stay buffered for the next call.
    pub fn feed(&mut self, bytes: &[u8], mut out: impl FnMut(Decoded)) {
        self.feed_while(bytes, |d| {
            out(d);
            true
        });
    }

    /// Like [`feed`](Self::feed), but stops (dropping the rest of `bytes`)
    /// as soon as `out` returns false: a connection being closed need not
    /// have the rest of a flood split into lines.
    pub fn feed_while(&mut self, mut bytes: &[u8], mut out: impl FnMut(Decoded) -> bool) {
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let (chunk, rest, complete) = match newline {
                Some(i) => {
                    let (head, tail) = bytes.split_at(i);
                    (head, tail.get(1..).unwrap_or(&[]), true)
                }
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            if self.discarding {
                self.discarded = self
                    .discarded
                    .saturating_add(u32::try_from(chunk.len()).unwrap_or(u32::MAX));
                if complete {
                    self.discarding = false;
                    self.discarded = 0;
                }
                continue;
            }
            // `+ 1` tolerates the `\r` of a `\r\n` at the limit.
            let bulk = self.is_bulk(chunk);
            let limit = self.limit(chunk);
            if self.partial.len() + chunk.len() > limit.saturating_add(1) {
                self.reset_buffer();
                self.discarding = !complete;
                if !out(Decoded::Error(too_long(limit, bulk))) {
                    return;
                }
                continue;
            }
            self.partial.extend_from_slice(chunk);
            if complete {
                let bulk = self.is_bulk(&[]);
                let limit = self.limit(&[]);
                let line = self.partial.take();
                let decoded = match finish_line(line, limit) {
                    Decoded::Error(LineError::TooLong { max }) => {
                        Decoded::Error(too_long(max, bulk))
                    }
                    d => d,
                };
                if !out(decoded) {
                    return;
                }
            }
        }
        // `take` above leaves no allocation behind; a partial line that grew
        // large and was then cut off as too long is released here.
        if self.partial.is_empty() && self.partial.capacity() > KEEP_CAPACITY {
            self.partial = Partial::default();
        }
    }

    /// Drops the line in progress and discards the rest of it up to its
    /// newline. Returns the bytes of memory released (its capacity). The reactor uses this when the
    /// bytes held across all connections pass their budget.
    pub fn abandon(&mut self) -> usize {
        let released = self.partial.capacity();
        if !self.partial.is_empty() {
            self.reset_buffer();
            self.discarding = true;
        }
        released
    }

    /// Forgets the line in progress (telnet's Ctrl-C), keeping what comes
    /// next; returns the bytes of memory released.
    pub fn drop_partial(&mut self) -> usize {
        let released = self.partial.capacity();
        self.reset_buffer();
        self.discarding = false;
        self.discarded = 0;
        released
    }

    fn reset_buffer(&mut self) {
        self.partial = Partial::default();
    }
}

/// The error for a line past `limit`: an upload's says it is too large.
fn too_long(limit: usize, bulk: bool) -> LineError {
    if bulk {
        LineError::UploadTooLong { max: limit }
    } else {
        LineError::TooLong { max: limit }
    }
}

/// Strips a trailing `\r`, then validates length, UTF-8 and control characters.
/// A limit as the decoder keeps it: 4 GiB is past any line's bound.
fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn finish_line(mut line: Vec<u8>, max_line: usize) -> Decoded {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > max_line {
        return Decoded::Error(LineError::TooLong { max: max_line });
    }
    let text = match String::from_utf8(line) {
        Ok(t) => t,
        Err(_) => return Decoded::Error(LineError::InvalidUtf8),
    };
    if let Some(c) = text.chars().find(|&c| is_forbidden_control(c)) {
        return Decoded::Error(LineError::ControlChar(c as u32));
    }
    if text.contains('\t') {
        return Decoded::Line(text.replace('\t', " "));
    }
    Decoded::Line(text)
}

/// C0 controls except tab, DEL, and C1 controls (U+0080–U+009F, where a
/// single-character CSI lives). Also the Unicode bidirectional overrides,
/// isolates and marks (U+200E, U+200F, U+061C), which can make a line
/// display as something it is not. chatc's sanitiser uses this same rule.
pub fn is_forbidden_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{a}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
        || matches!(
            c,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{61c}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dec: &mut LineDecoder, bytes: &[u8]) -> Vec<Decoded> {
        let mut v = Vec::new();
        dec.feed(bytes, |d| v.push(d));
        v
    }

    fn line(s: &str) -> Decoded {
        Decoded::Line(s.to_string())
    }

    #[test]
    fn splits_lines_and_accepts_crlf() {
        let mut d = LineDecoder::new(100);
        assert_eq!(run(&mut d, b"a\nb\r\nc"), vec![line("a"), line("b")]);
        assert_eq!(d.buffered(), 1);
        assert_eq!(run(&mut d, b"\n"), vec![line("c")]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut d = LineDecoder::new(100);
        let mut got = Vec::new();
        for b in b"hello world\n" {
            got.extend(run(&mut d, &[*b]));
        }
        assert_eq!(got, vec![line("hello world")]);
    }

    #[test]
    fn multibyte_split_across_reads() {
        let mut d = LineDecoder::new(100);
        let bytes = "héllo €\n".as_bytes();
        let mut got = Vec::new();
        for chunk in bytes.chunks(1) {
            got.extend(run(&mut d, chunk));
        }
        assert_eq!(got, vec![line("héllo €")]);
    }

    #[test]
    fn too_long_is_reported_once_and_not_buffered() {
        let mut d = LineDecoder::new(10);
        let mut got = run(&mut d, b"0123456789abc");
        assert_eq!(got, vec![Decoded::Error(LineError::TooLong { max: 10 })]);
        assert_eq!(d.buffered(), 0);
        // Still inside the long line: nothing more reported, nothing buffered.
        got = run(&mut d, &[b'x'; 5000]);
        assert!(got.is_empty());
        assert_eq!(d.buffered(), 0);
        // The newline ends the discarded line; the next one is fine.
        got = run(&mut d, b"yyy\nok\n");
        assert_eq!(got, vec![line("ok")]);
    }

    #[test]
    fn exactly_max_with_crlf_is_accepted() {
        let mut d = LineDecoder::new(3);
        assert_eq!(run(&mut d, b"abc\r\n"), vec![line("abc")]);
        assert_eq!(
            run(&mut d, b"abcd\n"),
            vec![Decoded::Error(LineError::TooLong { max: 3 })]
        );
        assert_eq!(run(&mut d, b"abc\n"), vec![line("abc")]);
    }

    #[test]
    fn invalid_utf8_and_controls() {
        let mut d = LineDecoder::new(100);
        assert_eq!(
            run(&mut d, b"\xff\xfe\n"),
            vec![Decoded::Error(LineError::InvalidUtf8)]
        );
        assert_eq!(
            run(&mut d, b"hi \x1b[31mred\n"),
            vec![Decoded::Error(LineError::ControlChar(0x1b))]
        );
        assert_eq!(
            run(&mut d, b"bell\x07\n"),
            vec![Decoded::Error(LineError::ControlChar(7))]
        );
        assert_eq!(
            run(&mut d, "c1 \u{9b}31m\n".as_bytes()),
            vec![Decoded::Error(LineError::ControlChar(0x9b))]
        );
        assert_eq!(
            run(&mut d, b"lone\rcr\n"),
            vec![Decoded::Error(LineError::ControlChar(0x0d))]
        );
        assert_eq!(run(&mut d, b"a\tb\n"), vec![line("a b")]);
        assert_eq!(run(&mut d, b"still fine\n"), vec![line("still fine")]);
    }

    #[test]
    fn bulk_lines_get_the_bulk_limit_and_others_do_not() {
        let mut d = LineDecoder::with_bulk(10, 100);
        let img = format!("/IMAGE {}\n", "A".repeat(80));
        assert_eq!(run(&mut d, img.as_bytes()), vec![line(img.trim_end())]);
        let text = format!("{}\n", "A".repeat(80));
        assert_eq!(
            run(&mut d, text.as_bytes()),
            vec![Decoded::Error(LineError::TooLong { max: 10 })]
        );
        // The prefix arriving a byte at a time still counts.
        let mut got = Vec::new();
        for b in img.as_bytes() {
            got.extend(run(&mut d, &[*b]));
        }
        assert_eq!(got, vec![line(img.trim_end())]);
        // An upload past the bulk limit is too large, not a long line.
        let huge = format!("/file {}\n", "A".repeat(200));
        assert_eq!(
            run(&mut d, huge.as_bytes()),
            vec![Decoded::Error(LineError::UploadTooLong { max: 100 })]
        );
        assert_eq!(bulk_limit(3), 4 + 256);
    }

    #[test]
    fn feed_while_stops_when_told() {
        let mut d = LineDecoder::new(100);
        let mut got = Vec::new();
        d.feed_while(b"a\nb\nc\nd", |x| {
            got.push(x);
            got.len() < 2
        });
        assert_eq!(got, vec![line("a"), line("b")]);
    }

    #[test]
    fn abandon_discards_to_the_newline() {
        let mut d = LineDecoder::with_bulk(10, 1000);
        assert!(run(&mut d, b"/image AAAAAAAAAAAAAAAAAA").is_empty());
        assert!(d.abandon() >= 25);
        assert_eq!(d.buffered(), 0);
        assert!(run(&mut d, b"AAAA\nnext\n") == vec![line("next")]);
        assert_eq!(d.abandon(), 0, "nothing in progress");
    }

    #[test]
    fn large_buffer_is_released_when_idle() {
        let mut d = LineDecoder::new(1 << 20);
        run(&mut d, &[b'a'; 100_000]);
        assert!(d.capacity() >= 100_000);
        run(&mut d, b"\n");
        assert_eq!(d.capacity(), 0);
    }
}
