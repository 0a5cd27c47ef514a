//! What the nodes say to each other besides room lines: the subjects, the
//! keys of shared state records, and the presence and roster formats. A
//! decoder takes another node's word: it returns `None` (or skips an entry)
//! for anything that does not parse, and never panics.

use crate::core::Presence;
use crate::proto::{ServerLine, fold};
use crate::record::Record;

/// The durable records other nodes need, and their key in `chatd_state`.
/// Room lines and topics travel through the room streams instead.
pub fn shared_key(rec: &Record) -> Option<String> {
    match rec {
        Record::Account { nick, .. } | Record::AccountGone { nick } => {
            Some(format!("acct.{}", fold(nick)))
        }
        Record::Bio { nick, .. } => Some(format!("bio.{}", fold(nick))),
        Record::Key { nick, .. } => Some(format!("key.{}", fold(nick))),
        Record::Settings { nick, .. } => Some(format!("set.{}", fold(nick))),
        Record::Ignore { nick, whom, .. } => Some(format!("ign.{}.{}", fold(nick), fold(whom))),
        // The last word on each thing a room's moderation holds: who is
        // an operator, who is banned or muted, each mode, each invitation.
        // Kicks change nothing lasting and stay on their node.
        Record::Moderation {
            room, action, whom, ..
        } => {
            let thing = match action.as_str() {
                "op" | "deop" => "op",
                "ban" | "unban" => "ban",
                "mute" | "unmute" => "mute",
                "invite" => "invite",
                "mode" => "mode",
                _ => return None,
            };
            let whom = match thing {
                // `+slow:30` and `-slow` are one thing: slow mode.
                "mode" => whom
                    .trim_start_matches(['+', '-'])
                    .split(':')
                    .next()
                    .unwrap_or(""),
                _ => whom.as_str(),
            };
            let room = if room == "*" {
                "server".to_string()
            } else {
                format!("room.{}", room_token(&fold(room)))
            };
            Some(format!("mod.{room}.{thing}.{}", kv_token(&fold(whom))))
        }
        Record::RoomOwned { room, .. } | Record::RoomGone { room } => {
            Some(format!("room.{}", room_token(&fold(room))))
        }
        _ => None,
    }
}

/// A target (`account:bob`, `address:2001:db8::`) as KV key characters.
fn kv_token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(super) fn room_token(key: &str) -> &str {
    key.strip_prefix('#').unwrap_or(key)
}

pub(super) fn room_subject(key: &str) -> String {
    format!("chatd.room.{}", room_token(key))
}

pub(super) fn dm_parties(line: &str) -> (String, String) {
    match ServerLine::parse_machine(line) {
        Some(ServerLine::Dm { from, to, .. }) => (from, to),
        _ => (String::new(), String::new()),
    }
}

pub(super) fn encode_presence(p: &Presence) -> String {
    match p {
        Presence::Online { nick, rooms } => {
            let mut s = format!("online {nick}");
            for r in rooms {
                s.push(' ');
                s.push_str(r);
            }
            s
        }
        Presence::Offline { nick } => format!("offline {nick}"),
        Presence::Join { nick, room } => format!("join {nick} {room}"),
        Presence::Part { nick, room } => format!("part {nick} {room}"),
        Presence::Rename { old, new } => format!("rename {old} {new}"),
    }
}

/// The inverse of `encode_presence`; `None` for anything malformed.
pub fn decode_presence(s: &str) -> Option<Presence> {
    let mut w = s.split(' ');
    let kind = w.next()?;
    let nick = w.next()?.to_string();
    if !crate::proto::valid_nick(&nick) {
        return None;
    }
    let valid_room = |r: &str| crate::proto::RoomRef::parse(r).is_ok();
    Some(match kind {
        "online" => Presence::Online {
            nick,
            rooms: w.filter(|r| valid_room(r)).map(str::to_string).collect(),
        },
        "offline" => Presence::Offline { nick },
        "join" => Presence::Join {
            nick,
            room: w.next().filter(|r| valid_room(r))?.to_string(),
        },
        "part" => Presence::Part {
            nick,
            room: w.next().filter(|r| valid_room(r))?.to_string(),
        },
        "rename" => Presence::Rename {
            old: nick,
            new: w
                .next()
                .filter(|n| crate::proto::valid_nick(n))?
                .to_string(),
        },
        _ => return None,
    })
}

pub(super) fn encode_roster<'a>(people: impl Iterator<Item = &'a (String, Vec<String>)>) -> String {
    let mut s = String::new();
    for (nick, rooms) in people {
        s.push_str(nick);
        for r in rooms {
            s.push(' ');
            s.push_str(r);
        }
        s.push('\n');
    }
    s
}

/// The inverse of `encode_roster`; malformed lines are skipped.
pub fn decode_roster(s: &str) -> Vec<(String, Vec<String>)> {
    s.lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            let nick = w.next()?.to_string();
            crate::proto::valid_nick(&nick).then(|| {
                let rooms = w
                    .filter(|r| crate::proto::RoomRef::parse(r).is_ok())
                    .map(str::to_string)
                    .collect();
                (nick, rooms)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_round_trips_and_rejects_junk() {
        let samples = [
            Presence::Online {
                nick: "alice".into(),
                rooms: vec!["#lobby".into(), "#rust".into()],
            },
            Presence::Offline { nick: "bob".into() },
            Presence::Join {
                nick: "c".into(),
                room: "#x".into(),
            },
            Presence::Part {
                nick: "c".into(),
                room: "#x".into(),
            },
            Presence::Rename {
                old: "c".into(),
                new: "d".into(),
            },
        ];
        for p in samples {
            assert_eq!(decode_presence(&encode_presence(&p)), Some(p));
        }
        for junk in [
            "",
            "online",
            "join a",
            "join a lobby",
            "fly a #x",
            "online a.b",
            "rename a",
            "rename a b!",
        ] {
            assert_eq!(decode_presence(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn roster_round_trips_and_skips_junk() {
        let people = vec![
            ("alice".to_string(), vec!["#lobby".to_string()]),
            ("bob".to_string(), vec![]),
        ];
        let s = encode_roster(people.iter());
        assert_eq!(decode_roster(&s), people);
        assert_eq!(
            decode_roster("bad!nick #a\nok #a nope\n"),
            vec![("ok".to_string(), vec!["#a".to_string()])]
        );
    }

    #[test]
    fn only_shared_records_have_keys() {
        let acct = Record::Bio {
            nick: "Alice".into(),
            text: "hi".into(),
        };
        assert_eq!(shared_key(&acct).as_deref(), Some("bio.alice"));
        let room = Record::RoomGone {
            room: "#Rust".into(),
        };
        assert_eq!(shared_key(&room).as_deref(), Some("room.rust"));
        let msg = Record::Message { line: "x".into() };
        assert_eq!(shared_key(&msg), None);
        // Issue 18: one key per thing moderation holds, in KV characters.
        let m = |room: &str, action: &str, whom: &str| Record::Moderation {
            room: room.into(),
            action: action.into(),
            by: "o".into(),
            whom: whom.into(),
            until: 0,
            reason: String::new(),
            at: 0,
            mode: 3,
        };
        let ban = shared_key(&m("#Club", "ban", "address:2001:db8::"));
        assert_eq!(ban.as_deref(), Some("mod.room.club.ban.address_2001_db8__"));
        assert_eq!(ban, shared_key(&m("#club", "unban", "address:2001:db8::")));
        assert_eq!(
            shared_key(&m("#club", "mode", "+slow:30")),
            shared_key(&m("#club", "mode", "-slow"))
        );
        assert_eq!(
            shared_key(&m("*", "ban", "account:bob")).as_deref(),
            Some("mod.server.ban.account_bob")
        );
        assert_eq!(shared_key(&m("#club", "kick", "bob")), None);
    }
}
