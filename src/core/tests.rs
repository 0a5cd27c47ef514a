//! Scenarios for the core, driven through [`Sim`] with a fake clock.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::sim::Sim;
use super::{CoreConfig, Disconnect, Refusal};
use crate::media;

fn sim() -> Sim {
    Sim::new(CoreConfig::default())
}

fn has(lines: &[String], want: &str) -> bool {
    lines.iter().any(|l| l == want)
}

#[test]
fn first_line_is_the_nick_and_lands_in_lobby() {
    let mut s = sim();
    let a = s.connect();
    let greet = s.take(a);
    assert!(
        greet[0].starts_with("*** Welcome to chatd! What is your nick?"),
        "{greet:?}"
    );
    s.line(a, "alice");
    let got = s.take(a);
    assert!(got[0].starts_with("*** hello alice!"), "{got:?}");
    assert!(has(&got, "*** alice joined #lobby"), "{got:?}");
}

#[test]
fn invalid_and_taken_nicks_are_refused_with_the_rule() {
    let mut s = sim();
    s.named("alice");
    let b = s.connect();
    s.take(b);
    s.line(b, "bad nick!");
    let got = s.take(b);
    assert!(
        got[0].starts_with("!!! \"bad nick!\" is not a valid nick: a nick is 1-24"),
        "{got:?}"
    );
    s.line(b, "ALICE");
    assert_eq!(s.take(b), vec!["!!! nick ALICE is taken; choose another"]);
    s.line(b, "/nick Alice");
    assert_eq!(s.take(b), vec!["!!! nick Alice is taken; choose another"]);
    s.line(b, "/join #x");
    assert_eq!(
        s.take(b),
        vec!["!!! choose a nick first: type it, or /nick <name>"]
    );
    s.line(b, "/nick bob");
    assert!(has(&s.take(b), "*** bob joined #lobby"));
}

#[test]
fn room_messages_reach_members_only_and_not_the_human_sender() {
    let mut s = sim();
    let a = s.named("alice");
    let b = s.named("bob");
    let c = s.named("carol");
    s.take(a);
    s.line(c, "/join #other");
    s.take(a);
    s.take(b);
    s.take(c);
    s.line(a, "hello all");
    assert_eq!(s.take(b), vec!["#lobby <alice> hello all"]);
    assert!(s.take(a).is_empty());
    // carol is still in #lobby too, but talks in #other now.
    assert_eq!(s.take(c), vec!["#lobby <alice> hello all"]);
    s.line(c, "over here");
    assert!(s.take(a).is_empty());
    s.line(a, "//etc/passwd is a path");
    assert_eq!(s.take(b), vec!["#lobby <alice> /etc/passwd is a path"]);
}

#[test]
fn machine_mode_gets_fields_and_its_own_echo() {
    let mut s = sim();
    let a = s.connect();
    s.line(a, "/format machine");
    assert_eq!(
        s.take(a).last().map(String::as_str),
        Some("ok format machine 1")
    );
    s.line(a, "alice");
    let got = s.take(a);
    assert!(has(&got, "join #lobby alice"), "{got:?}");
    let b = s.named("bob");
    assert_eq!(s.take(a), vec!["join #lobby bob"]);
    s.line(b, "hi");
    let ts = 1_700_000_000_000u64;
    assert_eq!(s.take(a), vec![format!("msg #lobby bob {ts} hi")]);
    s.line(a, "yo");
    assert_eq!(s.take(a), vec![format!("msg #lobby alice {ts} yo")]);
}

#[test]
fn history_is_shown_on_join_and_on_request() {
    let mut s = sim();
    let a = s.named("alice");
    for i in 0..60 {
        s.line(a, &format!("m{i}"));
        s.advance(Duration::from_millis(200));
    }
    let b = s.named_keep("bob");
    let got = s.take(b);
    assert!(has(&got, "*** last 50 messages in #lobby:"), "{got:?}");
    assert!(has(&got, "#lobby <alice> m59"));
    assert!(has(&got, "#lobby <alice> m10"));
    assert!(!has(&got, "#lobby <alice> m9"), "only 50 are kept");
    s.line(b, "/history 5");
    let got = s.take(b);
    assert_eq!(got.len(), 6);
    assert_eq!(got[1], "#lobby <alice> m55");
    s.line(b, "/history #lobby 1000");
    assert_eq!(s.take(b).len(), 51, "capped at what is kept");
}

#[test]
fn join_part_rooms_who_online() {
    let mut s = sim();
    let a = s.named("alice");
    let b = s.named("bob");
    s.take(a);
    s.line(a, "/join #Rust");
    let got = s.take(a);
    assert!(has(&got, "*** alice joined #Rust"), "{got:?}");
    s.line(b, "/join #rust");
    assert_eq!(s.take(a), vec!["*** bob joined #Rust"]);
    assert_eq!(s.take(b), vec!["*** bob joined #Rust"]);
    s.line(b, "/rooms");
    let got = s.take(b);
    assert_eq!(got[0], "*** #lobby (2 people)");
    assert_eq!(got[1], "*** #Rust (2 people)");
    s.line(b, "/who");
    assert_eq!(
        s.take(b),
        vec!["*** in #Rust: alice bob", "*** 2 people in #Rust"]
    );
    s.line(b, "/online");
    assert_eq!(s.take(b), vec!["*** online (2): alice bob"]);
    s.line(b, "/part");
    assert_eq!(s.take(a), vec!["*** bob left #Rust"]);
    assert!(has(&s.take(b), "*** now talking in #lobby"));
    s.line(b, "/part #rust");
    assert_eq!(s.take(b), vec!["!!! you are not in #Rust"]);
    s.line(a, "/part #Rust");
    s.line(a, "/rooms");
    let got = s.take(a);
    assert!(
        !got.iter().any(|l| l.contains("#Rust (")),
        "empty room is gone: {got:?}"
    );
}

#[test]
fn private_rooms_are_unlisted_and_joined_by_code() {
    let mut s = sim();
    let a = s.named("alice");
    let b = s.named("bob");
    s.take(a);
    s.line(a, "/join new");
    let got = s.take(a);
    let created = got
        .iter()
        .find(|l| l.contains("created private room"))
        .expect("created");
    let code: String = created.split("/join ").nth(1).expect("code").to_string();
    assert!(crate::proto::valid_code(&code), "{code}");
    s.line(b, "/rooms");
    assert!(!s.take(b).iter().any(|l| l.contains(&code)));
    s.line(b, "/join zzzzzz");
    assert!(s.take(b)[0].starts_with("!!! no private room with code zzzzzz"));
    s.line(b, &format!("/join {code}"));
    assert_eq!(s.take(a), vec![format!("*** bob joined ~{code}")]);
    s.line(b, "psst");
    assert_eq!(s.take(a), vec![format!("~{code} <bob> psst")]);
}

#[test]
fn direct_messages_actions_topics() {
    let mut s = sim();
    let a = s.named("alice");
    let b = s.named("bob");
    s.take(a);
    s.line(a, "/dm BOB hi there");
    assert_eq!(s.take(b), vec!["@alice -> bob: hi there"]);
    assert_eq!(s.take(a), vec!["@alice -> bob: hi there"]);
    s.line(a, "/dm nobody hi");
    assert_eq!(
        s.take(a),
        vec!["!!! nobody is not online; /online lists who is"]
    );
    s.line(a, "/me waves");
    assert_eq!(s.take(b), vec!["* #lobby alice waves"]);
    s.line(a, "/topic welcome all");
    assert_eq!(
        s.take(b),
        vec!["*** alice set the topic of #lobby: welcome all"]
    );
    s.line(b, "/topic");
    assert_eq!(s.take(b), vec!["*** topic of #lobby: welcome all"]);
}

#[test]
fn images_are_validated_and_only_machine_clients_get_data() {
    let mut s = sim();
    let a = s.named("alice");
    let h = s.named("human");
    let m = s.connect();
    s.line(m, "/format machine");
    s.line(m, "robot");
    s.take(a);
    s.take(h);
    s.take(m);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.resize(2000, 7);
    let data = media::encode(&png);
    s.line(a, &format!("/image cat.png {data}"));
    assert_eq!(
        s.take(h),
        vec!["*** #lobby: alice sent an image: cat.png, image/png, 2.0 KB"]
    );
    let got = s.take(m);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("image #lobby alice "),
        "{}",
        &got[0][..40]
    );
    assert!(got[0].ends_with(&data));
    assert!(s.take(a)[0].contains("alice sent an image"));
    s.line(a, "/image notbase64!!");
    assert!(s.take(a)[0].starts_with("!!! image refused: the data is not valid base64"));
    s.line(a, &format!("/image {}", media::encode(b"just text")));
    assert!(s.take(a)[0].starts_with("!!! image refused: not an image"));
    let big = media::encode(&vec![0u8; 2 * 1024 * 1024 + 10]);
    s.line(a, &format!("/file {big}"));
    assert!(s.take(a)[0].starts_with("!!! file refused: too large"));
    s.line(a, &format!("/file notes.txt {}", media::encode(b"hello")));
    assert_eq!(
        s.take(h),
        vec!["*** #lobby: alice sent a file: notes.txt, text/plain, 5 B"]
    );
}

#[test]
fn rate_limit_drops_with_one_error_then_disconnects_a_flood() {
    let mut s = Sim::new(CoreConfig {
        rate: 1.0,
        burst: 3,
        ..CoreConfig::default()
    });
    let a = s.named("alice");
    let b = s.named("bob");
    s.take(a);
    s.take(b);
    // The naming line used one token; two remain.
    for i in 0..5 {
        s.line(a, &format!("x{i}"));
    }
    assert_eq!(s.take(b), vec!["#lobby <alice> x0", "#lobby <alice> x1"]);
    let errs = s.take(a);
    assert_eq!(errs.len(), 1, "one error per streak: {errs:?}");
    assert!(errs[0].starts_with("!!! you are sending too fast"));
    s.advance(Duration::from_secs(1));
    s.line(a, "later");
    assert_eq!(s.take(b), vec!["#lobby <alice> later"]);
    for _ in 0..40 {
        s.line(a, "spam");
    }
    assert!(s.is_closed(a));
    assert!(has(&s.take(b), "*** alice quit (flooding)"));
}

#[test]
fn connection_limits() {
    let mut s = Sim::new(CoreConfig {
        max_conns: 3,
        max_per_ip: 2,
        ..CoreConfig::default()
    });
    let ip1 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let ip2 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let c1 = s.connect_from(ip1).unwrap();
    s.connect_from(ip1).unwrap();
    assert_eq!(
        s.connect_from(ip1),
        Err(Refusal::TooManyFromAddress { max: 2 })
    );
    s.connect_from(ip2).unwrap();
    assert_eq!(s.connect_from(ip2), Err(Refusal::ServerFull { max: 3 }));
    s.disconnect(c1, Disconnect::Closed);
    assert!(s.connect_from(ip1).is_ok());
}

#[test]
fn unnamed_connections_time_out_and_idle_ones_too() {
    let mut s = Sim::new(CoreConfig {
        name_timeout: Duration::from_secs(10),
        idle_timeout: Some(Duration::from_secs(100)),
        ..CoreConfig::default()
    });
    let a = s.connect();
    let b = s.named("bob");
    s.advance(Duration::from_secs(9));
    assert!(!s.is_closed(a));
    s.advance(Duration::from_secs(2));
    assert!(s.is_closed(a));
    assert!(
        s.take(a)
            .iter()
            .any(|l| l.starts_with("!!! no nick given within 10 seconds"))
    );
    s.advance(Duration::from_secs(50));
    s.line(b, "still here");
    s.advance(Duration::from_secs(60));
    assert!(!s.is_closed(b), "activity pushed the idle deadline");
    s.advance(Duration::from_secs(41));
    assert!(s.is_closed(b));
}

#[test]
fn disconnect_tells_the_room_once_even_across_rooms() {
    let mut s = sim();
    let a = s.named("alice");
    let b = s.named("bob");
    s.line(a, "/join #x");
    s.line(b, "/join #x");
    s.take(b);
    s.disconnect(a, Disconnect::Closed);
    assert_eq!(s.take(b), vec!["*** alice quit (connection closed)"]);
    // The nick is free again.
    let c = s.named("alice");
    assert!(!s.is_closed(c));
}

#[test]
fn big_rooms_stop_announcing_joins() {
    let mut s = Sim::new(CoreConfig {
        quiet_room: 4,
        ..CoreConfig::default()
    });
    let a = s.named("a0");
    for i in 1..3 {
        s.named(&format!("a{i}"));
    }
    s.take(a);
    s.named("a3");
    assert_eq!(s.take(a), vec!["*** a3 joined #lobby"]);
    let e = s.named("a4");
    assert!(s.take(a).is_empty(), "5 members > 4: quiet");
    s.disconnect(e, Disconnect::Closed);
    assert!(s.take(a).is_empty());
    s.line(a, "/who");
    assert_eq!(
        s.take(a).last().map(String::as_str),
        Some("*** 4 people in #lobby")
    );
    let f = s.named("a5");
    s.take(a);
    s.line(f, "/part");
    assert!(
        s.take(a).is_empty(),
        "parting a quiet room is not announced"
    );
    assert!(
        has(&s.take(f), "*** a5 left #lobby"),
        "but the leaver is told"
    );
}

#[test]
fn nick_change_is_announced_and_frees_the_old_nick() {
    let mut s = sim();
    let a = s.named("alice");
    let b = s.named("bob");
    s.take(a);
    s.line(a, "/nick alicia");
    assert_eq!(s.take(b), vec!["*** alice is now known as alicia"]);
    assert_eq!(s.take(a), vec!["*** alice is now known as alicia"]);
    let c = s.connect();
    s.line(c, "alice");
    assert!(!s.take(c).iter().any(|l| l.starts_with("!!!")));
}

#[test]
fn quit_says_bye_and_closes() {
    let mut s = sim();
    let a = s.named("alice");
    let b = s.named("bob");
    s.take(a);
    s.line(a, "/quit gotta go");
    assert_eq!(s.take(a), vec!["*** bye!"]);
    assert!(s.is_closed(a));
    assert_eq!(s.take(b), vec!["*** alice quit (gotta go)"]);
}

#[test]
fn bad_bytes_get_errors_and_the_session_goes_on() {
    let mut s = sim();
    let a = s.named("alice");
    let b = s.named("bob");
    s.take(a);
    s.take(b);
    s.bytes(a, b"\xff\xfe bad\n");
    assert!(s.take(a)[0].starts_with("!!! invalid UTF-8"));
    s.bytes(a, b"\x1b]0;pwned\x07\n");
    assert!(s.take(a)[0].starts_with("!!! control character U+001B refused"));
    s.bytes(a, &vec![b'x'; 10_000]);
    s.bytes(a, b"\nok now\n");
    let got = s.take(a);
    assert!(
        got[0].starts_with("!!! line too long: the limit is 4096 bytes"),
        "{got:?}"
    );
    assert_eq!(s.take(b), vec!["#lobby <alice> ok now"]);
    s.line(a, "/bogus");
    assert!(s.take(a)[0].starts_with("!!! unknown command /bogus"));
}

#[test]
fn shutdown_tells_everyone() {
    let mut s = sim();
    let a = s.named("alice");
    let u = s.connect();
    s.take(u);
    s.core.handle_shutdown("maintenance");
    let mut closed = Vec::new();
    while let Some(o) = s.core.poll_output() {
        if let super::Output::Close { conn } = o {
            closed.push(conn);
        }
    }
    closed.sort();
    assert_eq!(closed, vec![a, u]);
    assert_eq!(s.core.stats().connections, 0);
}

#[test]
fn a_room_message_is_one_buffer_shared_by_every_recipient() {
    use super::{Core, Output};
    use std::rc::Rc;
    use std::time::Instant;
    let now = Instant::now();
    let mut core = Core::new(
        CoreConfig::default(),
        Box::new(super::sim::SeededEntropy(1)),
        now,
        0,
    );
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for (conn, nick) in ["a", "b", "c", "d"].iter().enumerate() {
        core.handle_connect(conn, ip, now).unwrap();
        core.handle_line(conn, nick, now);
    }
    while core.poll_output().is_some() {}
    core.handle_line(0, "hello", now);
    let mut bufs = Vec::new();
    while let Some(o) = core.poll_output() {
        if let Output::Send { data, .. } = o {
            bufs.push(data);
        }
    }
    assert_eq!(bufs.len(), 3);
    assert!(
        bufs.windows(2).all(|w| Rc::ptr_eq(&w[0], &w[1])),
        "copied per recipient"
    );
}
