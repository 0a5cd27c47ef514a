//! What chatc prints, and the one sanitiser everything printed passes.
//!
//! The server filters what its sockets take, but it cannot see inside an
//! envelope, and a hostile server filters nothing: every piece of text an
//! [`Event`] carries (messages, nicks, rooms, file names, MIME types, the
//! server's own words) goes through [`clean`] before it is put on a line.
//! `clean` uses the daemon codec's rule (C0 and C1 controls, ESC, DEL,
//! bidirectional overrides, isolates and marks) and shows what it removed,
//! as `\x1b` or `\u{202e}` (dim, in colour), so that nothing is hidden and
//! nothing is obeyed. A body with line breaks is shown as one block: its
//! later lines are indented behind a bar, so they cannot pass for lines of
//! their own. The only escape sequences chatc writes are its own colours,
//! added after cleaning.

use super::{Event, Trust};
use crate::proto::{Upload, human_size};

/// How to draw.
#[derive(Debug, Clone, Default)]
pub struct Style {
    /// ANSI colours (a terminal without `NO_COLOR`).
    pub color: bool,
    /// `HH:MM` before lines that have a time.
    pub times: bool,
    /// Our nick: a live line from someone else that names it is a mention,
    /// drawn bold (and, with `bell`, rings the terminal bell).
    pub me: Option<String>,
    pub bell: bool,
}

/// True if `text` names `nick` as a word (`alice`, `@alice`, `Alice:`),
/// without regard to case.
pub fn mentions(text: &str, nick: &str) -> bool {
    if nick.is_empty() {
        return false;
    }
    let lower = text.to_lowercase();
    let nick = nick.to_lowercase();
    let is_name = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    lower.match_indices(&nick).any(|(i, m)| {
        let before = lower[..i].chars().next_back();
        let after = lower[i + m.len()..].chars().next();
        !before.is_some_and(is_name) && !after.is_some_and(is_name)
    })
}

/// A live line from someone else that names us.
fn is_mention(e: &Event, me: &str) -> bool {
    let (from, text, history) = match e {
        Event::Msg {
            nick,
            text,
            history,
            ..
        }
        | Event::Action {
            nick,
            text,
            history,
            ..
        } => (nick, text, *history),
        Event::Dm {
            from,
            text,
            history,
            ..
        } => (from, text, *history),
        _ => return false,
    };
    !history && !from.eq_ignore_ascii_case(me) && mentions(text, me)
}

/// Marks the continuation lines of a multi-line body.
const CONTINUED: &str = "\n    \u{2502} ";

/// `s` made safe to print: forbidden characters shown as escapes, line
/// breaks as a marked block (see the module docs). Without colour the
/// result holds no control character at all but the block's newlines.
pub fn clean(s: &str, color: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => out.push_str(CONTINUED),
            '\t' => out.push(' '),
            c if crate::codec::is_forbidden_control(c) => {
                let shown = if (c as u32) < 0x100 {
                    format!("\\x{:02x}", c as u32)
                } else {
                    format!("\\u{{{:04x}}}", c as u32)
                };
                if color {
                    out.push_str("\x1b[2m");
                    out.push_str(&shown);
                    out.push_str("\x1b[22m");
                } else {
                    out.push_str(&shown);
                }
            }
            c => out.push(c),
        }
    }
    out
}

const NICK_COLORS: [u8; 10] = [31, 32, 33, 34, 35, 36, 91, 92, 93, 96];

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// Text from outside, cleaned.
    fn t(&self, s: &str) -> String {
        clean(s, self.color)
    }

    fn nick(&self, n: &str) -> String {
        let h = n
            .to_ascii_lowercase()
            .bytes()
            .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
        let c = NICK_COLORS[(h as usize) % NICK_COLORS.len()];
        self.paint(&c.to_string(), &self.t(n))
    }

    /// `HH:MM ` (and the date, for history: it is not live).
    fn time(&self, ts: u64, history: bool) -> String {
        use chrono::TimeZone;
        let Some(t) = chrono::Local.timestamp_millis_opt(ts as i64).single() else {
            return String::new();
        };
        if history {
            let s = t.format("%Y-%m-%d %H:%M").to_string();
            return format!("{} ", self.paint("2", &s));
        }
        if !self.times {
            return String::new();
        }
        format!("{} ", self.paint("2", &t.format("%H:%M").to_string()))
    }

    /// What a line says of where it came from.
    fn mark(&self, trust: Trust) -> String {
        match (trust, self.color) {
            (Trust::Plain, _) => String::new(),
            (Trust::Sealed, true) => "\u{1f512} ".into(),
            (Trust::Sealed, false) => "[e2e] ".into(),
            (Trust::Signed, true) => format!("\u{1f512}{} ", self.paint("32", "\u{2713}")),
            (Trust::Signed, false) => "[e2e verified] ".into(),
            (Trust::Unencrypted, _) => {
                format!("{} ", self.paint("1;41;97", "UNENCRYPTED"))
            }
        }
    }

    /// History is dimmed: it is not happening now.
    fn dim_if(&self, history: bool, s: String) -> String {
        if history && self.color {
            format!("\x1b[2m{s}\x1b[0m")
        } else {
            s
        }
    }
}

/// One event as the line (or block) to print. In a terminal (colour) a
/// mention of us stands out in bold and may ring the bell, which is chatc's
/// own BEL, never one from a message; plain output (scripts) is unchanged.
pub fn render(e: &Event, st: &Style) -> String {
    let line = render_plain(e, st);
    match st.me.as_deref() {
        Some(me) if st.color && is_mention(e, me) => {
            let bell = if st.bell { "\u{7}" } else { "" };
            format!("\x1b[1m{line}\x1b[0m{bell}")
        }
        _ => line,
    }
}

fn render_plain(e: &Event, st: &Style) -> String {
    match e {
        Event::Msg {
            room,
            nick,
            ts,
            text,
            trust,
            history,
        } => st.dim_if(
            *history,
            format!(
                "{}{} {}<{}> {}",
                st.time(*ts, *history),
                st.t(room),
                st.mark(*trust),
                st.nick(nick),
                st.t(text)
            ),
        ),
        Event::Action {
            room,
            nick,
            ts,
            text,
            trust,
            history,
        } => st.dim_if(
            *history,
            format!(
                "{}* {} {}{} {}",
                st.time(*ts, *history),
                st.t(room),
                st.mark(*trust),
                st.nick(nick),
                st.t(text)
            ),
        ),
        Event::Dm {
            from,
            to,
            ts,
            text,
            trust,
            history,
        } => st.dim_if(
            *history,
            format!(
                "{}{}{} {} -> {}: {}",
                st.time(*ts, *history),
                st.mark(*trust),
                st.paint("1", "@"),
                st.nick(from),
                st.nick(to),
                st.t(text)
            ),
        ),
        Event::Media {
            room,
            nick,
            ts,
            kind,
            name,
            mime,
            size,
            trust,
            history,
            has_data,
        } => {
            let what = if *kind == Upload::Image {
                "an image"
            } else {
                "a file"
            };
            let save = if *has_data { " (/save to keep it)" } else { "" };
            st.dim_if(
                *history,
                format!(
                    "{}*** {}: {}{} sent {what}: {}, {}, {}{save}",
                    st.time(*ts, *history),
                    st.t(room),
                    st.mark(*trust),
                    st.nick(nick),
                    st.t(name),
                    st.t(mime),
                    human_size(*size)
                ),
            )
        }
        Event::Join { room, nick } => st.paint(
            "2",
            &format!("*** {} joined {}", st.t(nick), st.t(room)),
        ),
        Event::Part { room, nick, reason } if reason.is_empty() => {
            st.paint("2", &format!("*** {} left {}", st.t(nick), st.t(room)))
        }
        Event::Part { room, nick, reason } => st.paint(
            "2",
            &format!("*** {} left {} ({})", st.t(nick), st.t(room), st.t(reason)),
        ),
        Event::Quit { nick, reason } => st.paint(
            "2",
            &format!("*** {} quit ({})", st.t(nick), st.t(reason)),
        ),
        Event::Nick { old, new } => st.paint(
            "2",
            &format!("*** {} is now known as {}", st.t(old), st.t(new)),
        ),
        Event::Topic { room, nick, text } if nick.is_empty() => {
            format!("*** topic of {}: {}", st.t(room), st.t(text))
        }
        Event::Topic { room, nick, text } => format!(
            "*** {} set the topic of {}: {}",
            st.t(nick),
            st.t(room),
            st.t(text)
        ),
        Event::Info(t) => format!("*** {}", st.t(t)),
        Event::Error(t) => st.paint("31", &format!("!!! {}", st.t(t))),
        Event::Warn(t) => st.paint("1;31", &format!("!!! {}", st.t(t))),
        Event::Invite(i) => st.paint(
            "1;32",
            &format!(
                "*** invite: {}  (share it privately; the server never sees the part after the colon)",
                st.t(i)
            ),
        ),
        Event::Status(t) => st.paint("33", &format!("--- {}", st.t(t))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Style {
        Style::default()
    }

    #[test]
    fn nothing_hostile_reaches_the_terminal() {
        let evil = "\u{1b}[2J\u{1b}[H\u{1b}]0;owned\u{7}\u{1b}]52;c;aGk=\u{7}\u{202e}txt.exe\u{9b}31m\u{200f}";
        let e = Event::Msg {
            room: "#lobby".into(),
            nick: "mal\u{1b}[31mlory".into(),
            ts: 0,
            text: evil.into(),
            trust: Trust::Sealed,
            history: false,
        };
        for color in [false, true] {
            let st = Style {
                color,
                ..Style::default()
            };
            let out = render(&e, &st);
            // Without colour no control character at all; with it, only
            // chatc's own SGR sequences (ESC [ digits ; m).
            let mut rest = out.as_str();
            while let Some(i) = rest.find('\u{1b}') {
                let after = &rest[i + 1..];
                assert!(color, "an escape in plain output: {out:?}");
                let end = after.find('m').expect("an SGR sequence");
                assert!(after.starts_with('['), "{out:?}");
                assert!(
                    after[1..end]
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == ';'),
                    "{out:?}"
                );
                rest = &after[end..];
            }
            for bad in ['\u{7}', '\u{202e}', '\u{9b}', '\u{200f}'] {
                assert!(!out.contains(bad), "{bad:?} in {out:?}");
            }
            let seen = without_sgr(&out);
            assert!(seen.contains("\\x1b]0;owned\\x07"), "{seen:?}");
            assert!(seen.contains("\\u{202e}txt.exe"), "{seen:?}");
        }
    }

    /// What the terminal shows of `s`: its SGR sequences removed.
    fn without_sgr(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            if c == '\u{1b}' {
                for d in it.by_ref() {
                    if d == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn a_forged_line_inside_a_message_stays_inside_it() {
        let e = Event::Msg {
            room: "#lobby".into(),
            nick: "mallory".into(),
            ts: 0,
            text: "hi\n04:22 #lobby <admin> please run this\r\nand this".into(),
            trust: Trust::Plain,
            history: false,
        };
        let out = render(&e, &plain());
        let lines: Vec<&str> = out.split('\n').collect();
        assert_eq!(lines.len(), 3, "{out:?}");
        assert_eq!(lines[0], "#lobby <mallory> hi");
        for l in &lines[1..] {
            assert!(l.starts_with("    \u{2502} "), "{l:?}");
        }
    }

    #[test]
    fn unencrypted_lines_in_a_keyed_room_are_loud() {
        let e = Event::Msg {
            room: "#club".into(),
            nick: "mallory".into(),
            ts: 0,
            text: "trust me".into(),
            trust: Trust::Unencrypted,
            history: false,
        };
        assert_eq!(render(&e, &plain()), "#club UNENCRYPTED <mallory> trust me");
    }

    #[test]
    fn issue18_mentions_stand_out_and_ring_only_chatcs_own_bell() {
        assert!(mentions("hey Alice, lunch?", "alice"));
        assert!(mentions("@alice", "alice"));
        assert!(!mentions("malice aforethought", "alice"));
        assert!(!mentions("alice_2 is here", "alice"));
        let e = |nick: &str, history| Event::Msg {
            room: "#r".into(),
            nick: nick.into(),
            ts: 0,
            text: "alice: look".into(),
            trust: Trust::Plain,
            history,
        };
        let st = Style {
            color: true,
            me: Some("alice".into()),
            bell: true,
            ..Style::default()
        };
        let live = render(&e("bob", false), &st);
        assert!(
            live.starts_with("\x1b[1m") && live.ends_with("\x1b[0m\u{7}"),
            "{live:?}"
        );
        assert_eq!(
            render(&e("bob", true), &st),
            render_plain(&e("bob", true), &st)
        );
        assert_eq!(
            render(&e("alice", false), &st),
            render_plain(&e("alice", false), &st)
        );
        let quiet = Style {
            bell: false,
            ..st.clone()
        };
        assert!(render(&e("bob", false), &quiet).ends_with("\x1b[0m"));
        let plain = Style {
            color: false,
            ..st.clone()
        };
        assert_eq!(render(&e("bob", false), &plain), "#r <bob> alice: look");
    }
}
