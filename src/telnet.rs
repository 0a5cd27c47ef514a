//! telnet's in-band commands (RFC 854), taken out of the byte stream before
//! the line decoder sees it, so that `telnet host 9999` works as chatd(8)
//! promises.
//!
//! A telnet client sends `IAC` (255) sequences among the text: option
//! negotiation (`WILL`, `WONT`, `DO`, `DONT` and an option byte),
//! subnegotiation (`SB` … `IAC SE`), and commands such as `IP` (Ctrl-C)
//! followed by `DO TIMING-MARK`, after which telnet shows nothing until the
//! server answers the timing mark. This filter removes every sequence,
//! refuses every option (`DONT` to `WILL`, `WONT` to `DO`) except the timing
//! mark, which it answers with `WILL TIMING-MARK`, and reports where `IP`,
//! `BRK`, `AO` or `EL` came, to drop the line being typed there. `WONT` and `DONT` are never
//! answered, so two refusing ends cannot loop.
//!
//! Nothing is lost for anyone else: 255 never occurs in UTF-8, so a stream
//! without it (every line client but telnet) passes through untouched, and
//! the filter costs one `memchr` per read. State carries across reads, so a
//! sequence split between two reads is handled.

const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const EL: u8 = 248;
const AO: u8 = 245;
const IP: u8 = 244;
const BRK: u8 = 243;
const SE: u8 = 240;
const TIMING_MARK: u8 = 6;

/// Where the filter is in the byte stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Data,
    /// After `IAC`.
    Iac,
    /// After `IAC WILL/WONT/DO/DONT`: the option byte comes next.
    Option(u8),
    /// Inside `IAC SB`, until `IAC SE`.
    Sub,
    /// `IAC` inside a subnegotiation.
    SubIac,
}

/// What one pass of the filter found besides text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Bytes to send back (negotiation answers).
    pub reply: Vec<u8>,
    /// The user interrupted the line being typed (`IP`, `BRK`, `AO`, `EL`)
    /// where the text left has this length: what was typed before it on
    /// that line is to be dropped.
    pub drop_at: Option<usize>,
}

/// The per-connection telnet state: one byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Telnet {
    state: State,
}

impl Telnet {
    /// Removes telnet sequences from `buf` in place; returns how many bytes
    /// of text are left at its front, and what else was found.
    pub fn filter(&mut self, buf: &mut [u8]) -> (usize, Found) {
        let mut found = Found::default();
        if self.state == State::Data && memchr::memchr(IAC, buf).is_none() {
            return (buf.len(), found);
        }
        let mut out = 0;
        for i in 0..buf.len() {
            let b = buf[i];
            self.state = match (self.state, b) {
                (State::Data, IAC) => State::Iac,
                (State::Data, _) => {
                    buf[out] = b;
                    out += 1;
                    State::Data
                }
                // `IAC IAC` is a literal 255: not text chatd takes, but the
                // decoder is the one to say so.
                (State::Iac, IAC) => {
                    buf[out] = IAC;
                    out += 1;
                    State::Data
                }
                (State::Iac, WILL | WONT | DO | DONT) => State::Option(b),
                (State::Iac, SB) => State::Sub,
                (State::Iac, IP | BRK | AO | EL) => {
                    found.drop_at = Some(out);
                    State::Data
                }
                (State::Iac, _) => State::Data,
                (State::Option(verb), option) => {
                    match verb {
                        DO if option == TIMING_MARK => found.reply.extend([IAC, WILL, option]),
                        DO => found.reply.extend([IAC, WONT, option]),
                        WILL => found.reply.extend([IAC, DONT, option]),
                        _ => {}
                    }
                    State::Data
                }
                (State::Sub, IAC) => State::SubIac,
                (State::Sub, _) => State::Sub,
                (State::SubIac, SE) => State::Data,
                (State::SubIac, _) => State::Sub,
            };
        }
        (out, found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut Telnet, input: &[u8]) -> (Vec<u8>, Found) {
        let mut buf = input.to_vec();
        let (n, found) = t.filter(&mut buf);
        buf.truncate(n);
        (buf, found)
    }

    #[test]
    fn plain_text_passes_untouched() {
        let mut t = Telnet::default();
        let (text, found) = run(&mut t, "héllo\r\n".as_bytes());
        assert_eq!(text, "héllo\r\n".as_bytes());
        assert_eq!(found, Found::default());
    }

    #[test]
    fn ctrl_c_drops_the_line_and_the_timing_mark_is_answered() {
        let mut t = Telnet::default();
        let (text, found) = run(&mut t, &[b'a', IAC, IP, IAC, DO, TIMING_MARK, b'b']);
        assert_eq!(text, b"ab");
        assert_eq!(found.drop_at, Some(1));
        assert_eq!(found.reply, [IAC, WILL, TIMING_MARK]);
    }

    #[test]
    fn options_are_refused_and_refusals_not_answered() {
        let mut t = Telnet::default();
        let (text, found) = run(
            &mut t,
            &[IAC, WILL, 1, IAC, DO, 3, IAC, WONT, 5, IAC, DONT, 24],
        );
        assert!(text.is_empty());
        assert_eq!(found.reply, [IAC, DONT, 1, IAC, WONT, 3]);
    }

    #[test]
    fn sequences_split_across_reads_and_subnegotiation() {
        let mut t = Telnet::default();
        let (a, _) = run(&mut t, &[b'x', IAC]);
        let (b, found) = run(&mut t, &[DO]);
        let (c, found2) = run(
            &mut t,
            &[
                TIMING_MARK,
                b'y',
                IAC,
                SB,
                24,
                0,
                IAC,
                IAC,
                9,
                IAC,
                SE,
                b'z',
            ],
        );
        assert_eq!([a, b, c].concat(), b"xyz");
        assert!(found.reply.is_empty());
        assert_eq!(found2.reply, [IAC, WILL, TIMING_MARK]);
        let (lit, _) = run(&mut t, &[IAC, IAC]);
        assert_eq!(lit, [IAC]);
    }
}
