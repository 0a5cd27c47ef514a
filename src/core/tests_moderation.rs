//! Issue 18 (room moderation): the rules, each in the simulator.

use std::time::Duration;

use super::CoreConfig;
use super::sim::Sim;

fn account(s: &mut Sim, nick: &str) -> usize {
    let c = s.named(nick);
    s.line(c, &format!("/register {nick}s password"));
    s.take(c);
    c
}

fn login(s: &mut Sim, nick: &str) -> usize {
    let c = s.connect();
    s.line(c, &format!("/login {nick} {nick}s password"));
    s.take(c);
    c
}

/// olga owns #club; bob is registered; both are in it.
fn club() -> (Sim, usize, usize) {
    let mut s = Sim::new(CoreConfig {
        admins: vec!["root".into()],
        ..CoreConfig::default()
    });
    let o = account(&mut s, "olga");
    s.line(o, "/create #club");
    let b = account(&mut s, "bob");
    s.line(b, "/join #club");
    s.take(o);
    s.take(b);
    (s, o, b)
}

fn has_prefix(lines: &[String], p: &str) -> bool {
    lines.iter().any(|l| l.starts_with(p))
}

#[test]
fn issue18_operators_are_named_by_the_owner_and_are_accounts() {
    let (mut s, o, b) = club();
    let g = s.named("guest");
    s.line(g, "/join #club");
    s.take(g);
    s.line(b, "/op guest");
    assert!(has_prefix(
        &s.take(b),
        "!!! only its owner (or a server admin) can op in #club"
    ));
    s.line(o, "/op guest");
    assert!(has_prefix(&s.take(o), "!!! guest is not a registered nick"));
    s.line(o, "/op bob");
    assert_eq!(s.take(b), vec!["*** olga made bob an operator of #club"]);
    // An operator kicks a guest; the guest is told where it is now.
    s.line(b, "/kick guest flooding");
    let got = s.take(g);
    assert!(
        got.contains(&"*** bob kicked guest out of #club (flooding)".to_string()),
        "{got:?}"
    );
    assert!(
        got.contains(&"*** guest left #club (kicked by bob: flooding)".to_string()),
        "{got:?}"
    );
    assert_eq!(
        got.last().map(String::as_str),
        Some("*** now talking in #lobby")
    );
    // A guest who renames gains nothing, and cannot kick.
    s.line(g, "/nick olga2");
    s.line(g, "/join #club");
    s.take(g);
    s.line(g, "/kick bob");
    assert!(has_prefix(
        &s.take(g),
        "!!! only its owner and operators can kick in #club"
    ));
    s.line(b, "/whois bob");
    assert!(
        s.take(b)
            .contains(&"*** bob: operator of #club".to_string())
    );
}

#[test]
fn issue18_an_operator_cannot_touch_the_owner_or_another_operator() {
    let (mut s, o, b) = club();
    let c = account(&mut s, "carol");
    s.line(c, "/join #club");
    s.line(o, "/op bob");
    s.line(o, "/op carol");
    s.take(b);
    s.line(b, "/ban olga");
    assert!(has_prefix(
        &s.take(b),
        "!!! olga is the owner of #club: you cannot ban them"
    ));
    s.line(b, "/kick carol");
    assert!(has_prefix(
        &s.take(b),
        "!!! carol is an operator of #club: you cannot kick them"
    ));
    s.line(b, "/deop carol");
    assert!(has_prefix(&s.take(b), "!!! only its owner"));
    // A server admin outranks the owner.
    let r = account(&mut s, "root");
    s.line(r, "/join #club");
    s.line(r, "/mute olga 1h");
    assert!(has_prefix(&s.take(o), "*** root muted olga in #club until"));
}

#[test]
fn issue18_a_ban_by_account_holds_across_nick_changes_and_reconnects_then_expires() {
    let (mut s, o, b) = club();
    s.line(o, "/ban bob 10m spamming links");
    let got = s.take(b);
    assert!(
        has_prefix(
            &got,
            "*** olga banned bob from #club until 2023-11-14 22:23 UTC (spamming links)"
        ),
        "{got:?}"
    );
    assert!(
        got.contains(&"*** bob left #club (banned by olga: spamming links)".to_string()),
        "{got:?}"
    );
    s.line(b, "/join #club");
    assert!(has_prefix(
        &s.take(b),
        "!!! you are banned from #club until 2023-11-14 22:23 UTC (spamming links)"
    ));
    s.line(b, "/quit");
    let b = login(&mut s, "bob");
    s.line(b, "/nick bobby");
    s.line(b, "/join #club");
    assert!(has_prefix(&s.take(b), "!!! you are banned from #club"));
    s.line(o, "/bans");
    let got = s.take(o);
    assert!(
        has_prefix(&got, "*** #club: account bob banned by olga until"),
        "{got:?}"
    );
    assert_eq!(
        got.last().map(String::as_str),
        Some("*** 1 ban and 0 mutes in #club")
    );
    // Ten minutes later it is over, with nothing done.
    s.advance(Duration::from_secs(601));
    s.line(b, "/join #club");
    assert!(s.take(b).contains(&"*** bobby joined #club".to_string()));
}

#[test]
fn issue18_a_guest_is_banned_by_address_whatever_it_is_called() {
    let (mut s, o, _) = club();
    let g = s.named("troll");
    s.line(g, "/join #club");
    s.take(g);
    s.line(o, "/ban troll");
    assert!(has_prefix(
        &s.take(g),
        "*** olga banned troll (127.0.0.1) from #club"
    ));
    s.line(g, "/nick angel");
    s.line(g, "/join #club");
    assert!(has_prefix(&s.take(g), "!!! you are banned from #club"));
    s.line(o, "/unban 127.0.0.1");
    s.line(g, "/join #club");
    assert!(s.take(g).contains(&"*** angel joined #club".to_string()));
}

#[test]
fn issue18_a_muted_member_is_told_once_and_an_expired_mute_lifts_itself() {
    let (mut s, o, b) = club();
    s.line(o, "/mute bob 5m");
    s.take(o);
    s.take(b);
    s.line(b, "one");
    s.line(b, "two");
    s.line(b, "/me three");
    assert_eq!(s.take(o), Vec::<String>::new(), "the lines go nowhere");
    let told = s.take(b);
    assert_eq!(told.len(), 1, "told once: {told:?}");
    assert!(told[0].starts_with("!!! you are muted in #club until"));
    // Only in that room.
    s.line(b, "/join #lobby");
    s.line(b, "free here");
    s.advance(Duration::from_secs(301));
    s.line(b, "/join #club");
    s.take(o);
    s.line(b, "back");
    assert_eq!(s.take(o), vec!["#club <bob> back"]);
}

#[test]
fn issue18_the_topic_of_an_owned_room_is_its_moderators() {
    let (mut s, o, b) = club();
    s.line(b, "/topic mine now");
    assert!(has_prefix(
        &s.take(b),
        "!!! the topic of #club is set by its owner and operators"
    ));
    s.line(o, "/op bob");
    s.line(b, "/topic agreed");
    assert!(
        s.take(o)
            .contains(&"*** bob set the topic of #club: agreed".to_string())
    );
    // A room nobody owns stays open to all.
    s.line(b, "/join #open");
    s.line(b, "/topic anyone may");
    assert!(
        s.take(b)
            .contains(&"*** bob set the topic of #open: anyone may".to_string())
    );
}

#[test]
fn issue18_moderation_is_logged_and_survives_restart_and_compaction() {
    let (mut s, o, b) = club();
    s.line(o, "/op bob");
    let g = s.named("troll");
    s.line(g, "/join #club");
    s.line(b, "/mute troll 1h shouting");
    s.line(o, "/ban troll 1d");
    s.take(o);
    s.line(o, "/modlog");
    let log = s.take(o);
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log[0].ends_with("olga op bob"), "{log:?}");
    assert!(
        log[1].contains("bob mute address 127.0.0.1 until"),
        "{log:?}"
    );
    assert!(log[1].ends_with("(shouting)"), "{log:?}");
    assert_eq!(log[3], "*** 3 moderation actions in #club");
    let g2 = s.named("guest");
    s.line(g2, "/modlog #club");
    assert!(has_prefix(
        &s.take(g2),
        "!!! only the owner and operators of #club"
    ));
    for compact in [false, true] {
        if compact {
            s.compact();
        }
        s.restart();
        let o = login(&mut s, "olga");
        s.line(o, "/join #club");
        s.line(o, "/modlog");
        let again = s.take(o);
        assert!(
            again.iter().any(|l| l.ends_with("olga op bob")),
            "{again:?}"
        );
        assert!(
            again.contains(&"*** 3 moderation actions in #club".to_string()),
            "{again:?}"
        );
        s.line(o, "/bans");
        assert!(
            s.take(o)
                .contains(&"*** 1 ban and 1 mute in #club".to_string())
        );
        let t = s.named("troll2");
        s.line(t, "/join #club");
        assert!(has_prefix(&s.take(t), "!!! you are banned from #club"));
        let b = login(&mut s, "bob");
        s.line(b, "/join #club");
        s.line(b, "/kick olga");
        assert!(
            has_prefix(&s.take(b), "!!! olga is the owner of #club"),
            "bob is still an operator"
        );
        s.line(b, "/quit");
        s.line(o, "/quit");
    }
}

#[test]
fn issue18_invite_only_registered_only_and_slow_rooms() {
    let (mut s, o, b) = club();
    s.line(b, "/mode +invite");
    assert!(has_prefix(
        &s.take(b),
        "!!! only its owner and operators can change the modes"
    ));
    s.line(o, "/mode +invite");
    assert!(
        s.take(b)
            .contains(&"*** olga made it invite-only in #club".to_string())
    );
    let c = account(&mut s, "carol");
    s.line(c, "/join #club");
    assert!(has_prefix(
        &s.take(c),
        "!!! #club is invite-only: ask one of its moderators to /invite you"
    ));
    s.line(o, "/invite carol");
    assert!(
        s.take(c)
            .contains(&"*** olga invites you to #club: /join #club".to_string())
    );
    s.line(c, "/join #club");
    assert!(s.take(c).contains(&"*** carol joined #club".to_string()));
    // Registered-only speakers: a guest (let in) may read but not speak.
    s.line(o, "/mode -invite");
    s.line(o, "/mode +registered");
    let g = s.named("guest");
    s.line(g, "/join #club");
    s.take(g);
    s.line(g, "hello?");
    assert!(has_prefix(
        &s.take(g),
        "!!! only registered nicks may speak in #club"
    ));
    s.line(c, "registered, so heard");
    assert!(
        s.take(g)
            .contains(&"#club <carol> registered, so heard".to_string())
    );
    // Slow mode: one line per 30 s each; moderators are not slowed.
    s.line(o, "/mode -registered");
    s.line(o, "/mode +slow 30");
    s.take(b);
    s.line(c, "one");
    s.line(c, "two");
    assert!(has_prefix(
        &s.take(c),
        "!!! #club is in slow mode: one line every 30 seconds; wait 30 more"
    ));
    assert_eq!(s.take(b), vec!["#club <carol> one"]);
    s.line(o, "moderator one");
    s.line(o, "moderator two");
    assert_eq!(s.take(b).len(), 2);
    s.advance(Duration::from_secs(30));
    s.line(c, "three");
    assert_eq!(s.take(b), vec!["#club <carol> three"]);
    s.line(o, "/mode");
    assert!(
        s.take(o)
            .contains(&"*** modes of #club: +slow:30".to_string())
    );
    // Modes and invitations are durable.
    s.line(o, "/mode +invite");
    s.line(o, "/invite carol");
    s.compact();
    s.restart();
    let o = login(&mut s, "olga");
    s.line(o, "/join #club");
    s.line(o, "/mode");
    assert!(
        s.take(o)
            .contains(&"*** modes of #club: +invite +slow:30".to_string())
    );
    let c = login(&mut s, "carol");
    s.line(c, "/join #club");
    assert!(s.take(c).contains(&"*** carol joined #club".to_string()));
}

#[test]
fn issue18_admins_kill_and_announce() {
    let (mut s, o, b) = club();
    s.line(o, "/kill bob");
    assert!(has_prefix(&s.take(o), "!!! only a server admin can /kill"));
    let r = account(&mut s, "root");
    s.line(r, "/announce back in five minutes");
    assert!(
        s.take(b)
            .contains(&"*** announcement from root: back in five minutes".to_string())
    );
    s.line(r, "/kill bob enough");
    assert!(
        s.take(b)
            .contains(&"!!! killed by root: enough; disconnecting".to_string())
    );
    assert!(s.is_closed(b));
    assert!(
        s.take(o)
            .contains(&"*** bob quit (killed by root: enough)".to_string())
    );
}

#[test]
fn issue18_passwd_takes_the_old_and_the_new_password_on_lines_of_their_own() {
    let mut s = Sim::new(CoreConfig::default());
    let a = account(&mut s, "alice");
    let b = s.named("bob");
    s.take(b);
    s.line(a, "/passwd");
    assert!(has_prefix(
        &s.take(a),
        "*** type your current password on the next line"
    ));
    s.line(a, "not my password");
    s.line(a, "brand new secret");
    assert!(has_prefix(&s.take(a), "*** now the new password"));
    let _ = s.take(a);
    assert!(s.take(b).is_empty(), "the answers were said nowhere");
    s.line(a, "/passwd");
    s.line(a, "");
    assert!(
        s.take(a)
            .contains(&"*** cancelled: nothing changed".to_string())
    );
    s.line(a, "/passwd");
    s.line(a, "wrong old one");
    s.line(a, "brand new secret");
    assert!(
        s.take(a)
            .contains(&"!!! that is not your current password: nothing changed".to_string())
    );
    s.line(a, "/passwd");
    s.line(a, "alices password");
    s.line(a, "brand new secret");
    assert!(
        s.take(a)
            .contains(&"*** password changed: use the new one from now on".to_string())
    );
    assert!(s.take(b).is_empty());
    s.compact();
    s.restart();
    let c = s.connect();
    s.line(c, "/login alice alices password");
    assert!(
        s.take(c)
            .contains(&"!!! login failed: wrong nick or password".to_string())
    );
    let c = s.connect();
    s.line(c, "/login alice brand new secret");
    assert!(s.take(c).contains(&"*** logged in as alice".to_string()));
    let g = s.named("guest");
    s.line(g, "/passwd");
    assert!(has_prefix(
        &s.take(g),
        "!!! changing a password needs a registered nick"
    ));
}

#[test]
fn issue18_away_takeover_and_who_shows_the_moderators() {
    let (mut s, o, b) = club();
    s.line(o, "/op bob");
    s.line(b, "/who");
    assert!(
        s.take(b)
            .contains(&"*** moderators of #club: olga (owner), bob (operator)".to_string())
    );
    s.line(b, "/away at lunch");
    assert!(
        s.take(b)
            .contains(&"*** you are away: at lunch (/away alone when you are back)".to_string())
    );
    s.line(o, "/dm bob are you there?");
    assert!(s.take(o).contains(&"*** bob is away: at lunch".to_string()));
    s.line(o, "/whois bob");
    assert!(s.take(o).contains(&"*** bob is away: at lunch".to_string()));
    s.line(b, "/away");
    s.take(b);
    s.line(o, "/dm bob back?");
    assert!(!s.take(o).iter().any(|l| l.contains("is away")));
    // An admin takes over a room whose owner is gone.
    s.line(o, "/quit");
    let r = account(&mut s, "root");
    s.line(b, "/takeover #club");
    assert!(has_prefix(
        &s.take(b),
        "!!! only a server admin can /takeover"
    ));
    s.line(r, "/takeover #club");
    assert!(
        s.take(b)
            .contains(&"*** root took over #club from olga: root owns it now".to_string())
    );
    s.restart();
    let r = login(&mut s, "root");
    s.line(r, "/whois root");
    assert!(
        s.take(r)
            .contains(&"*** root: server admin; owner of #club".to_string())
    );
}

#[test]
fn issue18_server_wide_bans_by_account_hold_at_login_and_lift() {
    let (mut s, _o, b) = club();
    let r = account(&mut s, "root");
    s.line(b, "/gban olga");
    assert!(has_prefix(
        &s.take(b),
        "!!! only a server admin can ban from the server"
    ));
    s.line(r, "/gban bob 1d abuse");
    assert!(s.take(b).contains(
        &"!!! you are banned from this server until 2023-11-15 22:13 UTC (abuse)".to_string()
    ));
    assert!(s.is_closed(b));
    s.line(r, "/gban root");
    assert!(has_prefix(&s.take(r), "!!! root is a server admin"));
    s.restart();
    let c = s.connect();
    s.line(c, "/login bob bobs password");
    assert!(
        s.take(c)
            .iter()
            .any(|l| l.starts_with("!!! you are banned from this server"))
    );
    assert!(s.is_closed(c));
    let r = login(&mut s, "root");
    s.line(r, "/gbans");
    let got = s.take(r);
    assert!(
        has_prefix(&got, "*** account bob banned from the server by root until"),
        "{got:?}"
    );
    s.line(r, "/ungban bob");
    assert!(
        s.take(r)
            .contains(&"*** bob may use this server again".to_string())
    );
    let c = login(&mut s, "bob");
    s.line(c, "/whois bob");
    assert!(has_prefix(&s.take(c), "*** bob is online"));
}

#[test]
fn issue18_ignore_hides_room_lines_and_dms_and_is_kept_for_an_account() {
    let (mut s, o, b) = club();
    let t = s.named("troll");
    s.line(t, "/join #club");
    s.take(b);
    s.line(b, "/ignore troll");
    assert!(has_prefix(&s.take(b), "*** you ignore troll"));
    s.line(t, "noise");
    s.line(t, "/me shouts");
    s.line(t, "/dm bob psst");
    assert!(s.take(b).is_empty(), "nothing from troll");
    assert!(
        s.take(o).contains(&"#club <troll> noise".to_string()),
        "others still see it"
    );
    s.line(o, "hello all");
    assert_eq!(s.take(b), vec!["#club <olga> hello all"]);
    s.line(b, "/ignore bob");
    assert!(has_prefix(&s.take(b), "!!! you cannot ignore yourself"));
    // Kept for the account: after a restart and a new login it holds.
    s.restart();
    let b = login(&mut s, "bob");
    let t = s.named("troll");
    s.take(b);
    s.line(t, "still here");
    assert!(s.take(b).is_empty());
    s.line(b, "/ignore");
    assert_eq!(s.take(b), vec!["*** you ignore troll"]);
    s.line(b, "/unignore troll");
    s.take(b);
    s.line(t, "heard now");
    assert_eq!(s.take(b), vec!["#lobby <troll> heard now"]);
}

#[test]
fn issue18_unregister_frees_the_nick_and_its_rooms_but_keeps_what_was_said() {
    let (mut s, o, b) = club();
    s.line(o, "/op bob");
    s.line(b, "/unregister");
    assert!(has_prefix(
        &s.take(b),
        "*** to give up your registered nick, type your password"
    ));
    s.line(b, "wrong password");
    assert!(
        s.take(b)
            .contains(&"!!! that is not your password: nothing changed".to_string())
    );
    s.line(o, "said while owning");
    s.line(o, "/unregister");
    s.line(o, "olgas password");
    let got = s.take(o);
    assert!(
        has_prefix(&got, "*** olga is no longer registered"),
        "{got:?}"
    );
    // The room is nobody's now; its history stays; olga is a guest.
    s.line(o, "/topic anyone can now");
    assert!(
        s.take(b)
            .contains(&"*** olga set the topic of #club: anyone can now".to_string())
    );
    s.compact();
    s.restart();
    let n = s.named("olga");
    s.line(n, "/join #club");
    let got = s.take(n);
    assert!(
        got.iter().any(|l| l == "#club <olga> said while owning"),
        "{got:?}"
    );
    s.line(n, "/register a new owner here");
    assert!(
        s.take(n)
            .iter()
            .any(|l| l.starts_with("*** registered olga"))
    );
    s.line(n, "/delete #club");
    assert!(
        has_prefix(&s.take(n), "!!! #club has no owner"),
        "ownership did not come back with the nick"
    );
    let b = login(&mut s, "bob");
    s.line(b, "/join #club");
    // bob's role was his own account's, and stays; the new olga has none.
    s.line(b, "/kick olga");
    assert!(
        s.take(b)
            .contains(&"*** bob kicked olga out of #club".to_string())
    );
}

#[test]
fn issue18_several_sessions_of_one_account_are_one_person() {
    let mut s = Sim::new(CoreConfig {
        max_sessions: 3,
        ..CoreConfig::default()
    });
    let laptop = account(&mut s, "alice");
    let b = account(&mut s, "bob");
    s.take(laptop);
    let phone = s.connect();
    s.line(phone, "/login alice alices password");
    let got = s.take(phone);
    assert!(
        got.contains(&"*** logged in as alice".to_string()),
        "{got:?}"
    );
    assert!(got.contains(
        &"*** this is session 2 of alice; /sessions lists them, /logout ends one".to_string()
    ));
    assert!(!s.is_closed(laptop), "the first session stays");
    assert!(s.take(b).is_empty(), "bob sees no second alice join #lobby");
    // Each session has its own rooms.
    s.line(phone, "/join #phone-only");
    s.line(laptop, "/who #lobby");
    assert!(
        s.take(laptop)
            .contains(&"*** in #lobby: alice bob".to_string()),
        "one name for one person"
    );
    // Direct messages reach every session, and each sees what the other sent.
    s.take(phone);
    s.line(b, "/dm alice hello you");
    assert!(
        s.take(laptop)
            .contains(&"@bob -> alice: hello you".to_string())
    );
    assert!(
        s.take(phone)
            .contains(&"@bob -> alice: hello you".to_string())
    );
    s.line(laptop, "/dm bob from the laptop");
    assert!(
        s.take(phone)
            .contains(&"@alice -> bob: from the laptop".to_string())
    );
    s.line(phone, "/sessions");
    let list = s.take(phone);
    assert!(
        list[0].starts_with("*** session 1: a terminal (human format) from 127.0.0.1"),
        "{list:?}"
    );
    assert!(list[1].starts_with("*** session 2 (this one):"), "{list:?}");
    assert_eq!(list[2], "*** 2 sessions of at most 3");
    // Ending one is not a quit: bob sees nothing in #lobby, where the
    // laptop still is.
    s.take(b);
    s.line(phone, "/logout 1");
    assert!(s.is_closed(laptop));
    assert!(s.take(b).is_empty(), "{:?}", s.take(b));
    // The limit.
    let c2 = s.connect();
    s.line(c2, "/login alice alices password");
    let c3 = s.connect();
    s.line(c3, "/login alice alices password");
    let c4 = s.connect();
    s.line(c4, "/login alice alices password");
    assert!(has_prefix(
        &s.take(c4),
        "!!! alice has 3 sessions already, the limit"
    ));
    s.line(phone, "/logout all");
    assert!(s.is_closed(phone) && s.is_closed(c2) && s.is_closed(c3));
    assert!(
        s.take(b)
            .contains(&"*** alice quit (logged out)".to_string())
    );
}
