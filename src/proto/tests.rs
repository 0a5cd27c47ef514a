//! Round trips and refusals of the protocol's parsers and encoders.

use super::*;

#[test]
fn nicks_and_rooms() {
    assert!(valid_nick("alice"));
    assert!(valid_nick("A_b-9"));
    assert!(valid_nick(&"x".repeat(24)));
    assert!(!valid_nick(&"x".repeat(25)));
    assert!(!valid_nick(""));
    assert!(!valid_nick("al ice"));
    assert!(!valid_nick("élise"));
    assert_eq!(RoomRef::parse("#Lobby").unwrap().key(), "#lobby");
    assert_eq!(
        RoomRef::parse("a4b2c1"),
        Ok(RoomRef::Private("a4b2c1".into()))
    );
    assert_eq!(
        RoomRef::parse("~a4b2c1"),
        Ok(RoomRef::Private("a4b2c1".into()))
    );
    assert_eq!(RoomRef::parse("lobby"), Err(NameError::Room));
    assert_eq!(RoomRef::parse("#"), Err(NameError::Room));
    assert_eq!(
        RoomRef::parse(&format!("#{}", "r".repeat(33))),
        Err(NameError::Room)
    );
    assert_eq!(RoomRef::parse("A4B2C1"), Err(NameError::Room));
}

#[test]
fn commands() {
    assert_eq!(Command::parse("hello"), Ok(Command::Say("hello".into())));
    assert_eq!(Command::parse("//etc"), Ok(Command::Say("/etc".into())));
    assert_eq!(Command::parse("/NICK bob"), Ok(Command::Nick("bob".into())));
    assert_eq!(
        Command::parse("/join new"),
        Ok(Command::Join(JoinTarget::New))
    );
    assert_eq!(
        Command::parse("/dm bob  hi there"),
        Ok(Command::Dm {
            to: "bob".into(),
            text: "hi there".into()
        })
    );
    assert_eq!(
        Command::parse("/dm bob"),
        Err(ParseError::Usage("/dm <nick> <text>"))
    );
    assert_eq!(
        Command::parse("/history #a 20"),
        Ok(Command::History {
            room: Some(RoomRef::Public("#a".into())),
            count: Some(20),
            before: None,
        })
    );
    assert_eq!(
        Command::parse("/history 5 before 1700000000000"),
        Ok(Command::History {
            room: None,
            count: Some(5),
            before: Some(1_700_000_000_000),
        })
    );
    assert!(Command::parse("/history before x").is_err());
    assert_eq!(
        Command::parse("/image cat.png AAAA"),
        Ok(Command::Upload {
            kind: Upload::Image,
            name: Some("cat.png".into()),
            data: "AAAA".into()
        })
    );
    assert_eq!(
        Command::parse("/image ../x AAAA").map_err(|e| e.code()),
        Err("name-invalid")
    );
    assert!(matches!(
        Command::parse("/frobnicate"),
        Err(ParseError::Unknown(_))
    ));
    assert_eq!(Command::parse("   "), Err(ParseError::Empty));
    assert_eq!(Command::parse("/exit"), Ok(Command::Quit(None)));
    assert_eq!(
        Command::parse("/format machine"),
        Ok(Command::Format(Format::Machine))
    );
}

fn samples() -> Vec<ServerLine> {
    vec![
        ServerLine::Msg {
            room: "#lobby".into(),
            nick: "alice".into(),
            ts: 1,
            text: "hi there ".into(),
        },
        ServerLine::Action {
            room: "~abc123".into(),
            nick: "bob".into(),
            ts: 2,
            text: "waves".into(),
        },
        ServerLine::Dm {
            from: "a".into(),
            to: "b".into(),
            ts: 3,
            text: "x".into(),
        },
        ServerLine::Upload {
            kind: Upload::Image,
            room: "#r".into(),
            nick: "a".into(),
            ts: 4,
            mime: "image/png".into(),
            size: 10,
            name: "c.png".into(),
            data: "AAAA".into(),
        },
        ServerLine::Part {
            room: "#r".into(),
            nick: "a".into(),
            reason: "bye now".into(),
        },
        ServerLine::Topic {
            room: "#r".into(),
            nick: String::new(),
            text: "t t".into(),
        },
        ServerLine::Names {
            room: "#r".into(),
            nicks: vec!["a".into(), "b".into()],
        },
        ServerLine::Online {
            total: 3,
            nicks: vec!["a".into()],
        },
        ServerLine::error("nick-taken", "nick alice is taken"),
        ServerLine::Encrypted {
            room: "#r".into(),
            nick: "a".into(),
            ts: 9,
            data: "E1.AAAA".into(),
        },
        ServerLine::Whois {
            nick: "alice".into(),
            online: true,
            room: String::new(),
            registered: 0,
            bio: "likes tea".into(),
        },
        ServerLine::info("", "welcome"),
        ServerLine::Key {
            nick: "bob".into(),
            bundle: "K1.abc".into(),
        },
        ServerLine::Key {
            nick: "bob".into(),
            bundle: String::new(),
        },
    ]
}

#[test]
fn machine_round_trip() {
    for l in samples() {
        let enc = l.encode_machine();
        let back = ServerLine::parse_machine(&enc);
        // Trailing spaces of free text are not significant on the wire.
        let mut want = l.clone();
        if let ServerLine::Msg { text, .. } = &mut want {
            *text = text.trim_end().to_string();
        }
        assert_eq!(back, Some(want), "{enc}");
    }
    assert_eq!(ServerLine::parse_machine("nick a b c"), None);
    assert_eq!(ServerLine::parse_machine("msg #r a notanumber x"), None);
    assert_eq!(ServerLine::parse_machine(""), None);
}

#[test]
fn human_markers() {
    let h: Vec<String> = samples().iter().map(|l| l.encode_human()).collect();
    assert_eq!(h[0], "#lobby <alice> hi there ");
    assert_eq!(h[1], "* ~abc123 bob waves");
    assert_eq!(h[2], "@a -> b: x");
    assert_eq!(h[3], "*** #r: a sent an image: c.png, image/png, 10 B");
    assert!(h[8].starts_with("!!! "));
    assert_eq!(human_size(245 * 1024 + 300), "245.3 KB");
    assert_eq!(civil_date(0), "1970-01-01");
    assert_eq!(civil_date(1_795_478_400_000), "2026-11-24");
    assert_eq!(civil_date(951_782_400_000), "2000-02-29");
}

/// `cmp_folded` orders as comparing the folded strings does (the lists of
/// who is here were sorted by a key built per comparison).
#[test]
fn folded_comparison_matches_comparing_folded_strings() {
    let names = [
        "alice",
        "Alice",
        "ALICE",
        "bob",
        "Bob_2",
        "bob-1",
        "b",
        "",
        "Zed",
        "zed",
        "_x",
        "-y",
        "a1",
        "A10",
        "a9",
        "caf\u{e9}",
        "CAF\u{c9}",
    ];
    for a in names {
        for b in names {
            assert_eq!(
                super::cmp_folded(a, b),
                super::fold(a).cmp(&super::fold(b)),
                "{a:?} against {b:?}"
            );
            assert_eq!(super::eq_folded(a, b), super::fold(a) == super::fold(b));
        }
    }
    let mut sorted = names.to_vec();
    sorted.sort_by(|a, b| super::cmp_folded(a, b));
    let mut by_key = names.to_vec();
    by_key.sort_by_key(|n| super::fold(n));
    assert_eq!(sorted, by_key, "the same order, ties kept as they came");
}
