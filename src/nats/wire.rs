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
        Record::Account { nick, .. } => Some(format!("acct.{}", fold(nick))),
        Record::Bio { nick, .. } => Some(format!("bio.{}", fold(nick))),
        Record::Key { nick, .. } => Some(format!("key.{}", fold(nick))),
        Record::Settings { nick, .. } => Some(format!("set.{}", fold(nick))),
        Record::Ignore { nick, whom, .. } => Some(format!("ign.{}.{}", fold(nick), fold(whom))),
        Record::RoomOwned { room, .. } | Record::RoomGone { room } => {
            Some(format!("room.{}", room_token(&fold(room))))
        }
        _ => None,
    }
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
    }
}
