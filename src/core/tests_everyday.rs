//! Issue 19: a day in nc — settings, knowing where one is, search, pastes.
//! The simulator's clock starts at 2023-11-14 22:13:20 UTC.

use std::time::Duration;

use super::CoreConfig;
use super::sim::Sim;

fn sim() -> Sim {
    Sim::new(CoreConfig::default())
}

fn registered(s: &mut Sim, nick: &str) -> usize {
    let c = s.named(nick);
    s.line(c, "/register a long password");
    s.take(c);
    c
}

#[test]
fn issue19_set_lists_and_changes_settings_and_timestamps_stamp_every_line() {
    let mut s = sim();
    let a = s.named("alice");
    let b = s.named("bob");
    s.take(a);
    s.line(a, "/set");
    assert_eq!(
        s.take(a),
        vec![
            "*** settings: timestamps off, echo off, prompt off (for this session; register to keep them)"
        ]
    );
    s.line(a, "/set timestamps on");
    assert_eq!(
        s.take(a),
        vec!["22:13 *** timestamps on: times are UTC; today is Tuesday 2023-11-14"]
    );
    s.line(b, "hello");
    assert_eq!(s.take(a), vec!["22:13 #lobby <bob> hello"]);
    // bob is unaffected, and a machine session is never stamped.
    s.line(a, "hi");
    assert_eq!(s.take(b), vec!["#lobby <alice> hi"]);
    s.line(a, "/format machine");
    s.take(a);
    s.line(b, "again");
    assert!(s.take(a)[0].starts_with("msg #lobby bob "));
    s.line(a, "/format human");
    s.take(a);
    s.line(b, "stamped again");
    assert_eq!(s.take(a), vec!["22:13 #lobby <bob> stamped again"]);
    s.line(a, "/set timestamps off");
    s.take(a);
    s.line(b, "plain");
    assert_eq!(s.take(a), vec!["#lobby <bob> plain"]);
    s.line(a, "/set colour on");
    assert!(s.take(a)[0].starts_with("!!! usage: /set"));
}

#[test]
fn issue19_history_from_another_day_carries_its_date_and_midnight_is_announced() {
    let mut s = Sim::new(CoreConfig {
        idle_timeout: None,
        ..CoreConfig::default()
    });
    let a = s.named("alice");
    s.line(a, "/set timestamps on");
    s.line(a, "before midnight");
    s.take(a);
    // 1 h 47 min later it is the 15th.
    s.advance(Duration::from_secs(107 * 60));
    assert_eq!(
        s.take(a),
        vec!["00:00 *** the date is now Wednesday 2023-11-15 (UTC)"]
    );
    s.line(a, "/history");
    let got = s.take(a);
    assert_eq!(got[1], "2023-11-14 22:13 #lobby <alice> before midnight");
}

#[test]
fn issue19_echo_brings_ones_own_lines_back() {
    let mut s = sim();
    let a = s.named("alice");
    s.line(a, "mine");
    assert_eq!(s.take(a), Vec::<String>::new());
    s.line(a, "/set echo on");
    s.take(a);
    s.line(a, "mine again");
    assert_eq!(s.take(a), vec!["#lobby <alice> mine again"]);
    s.line(a, "/me waves");
    assert_eq!(s.take(a), vec!["* #lobby alice waves"]);
}

#[test]
fn issue19_the_prompt_names_the_room_lines_go_to() {
    let mut s = sim();
    let a = s.named("alice");
    assert_eq!(s.prompt(a), None);
    s.line(a, "/set prompt on");
    assert_eq!(s.prompt(a), Some("[#lobby] "));
    s.line(a, "/join #rust");
    assert_eq!(s.prompt(a), Some("[#rust] "));
    s.line(a, "/join #lobby");
    assert_eq!(s.prompt(a), Some("[#lobby] "));
    s.line(a, "/part");
    assert_eq!(s.prompt(a), Some("[#rust] "));
    s.line(a, "/part");
    assert_eq!(s.prompt(a), Some("[no room] "));
    s.line(a, "/format machine");
    assert_eq!(s.prompt(a), None, "a program gets no prompt");
    s.line(a, "/format human");
    s.line(a, "/set prompt off");
    assert_eq!(s.prompt(a), None);
}

#[test]
fn issue19_settings_are_kept_for_an_account_and_restored_at_login() {
    let mut s = sim();
    let a = registered(&mut s, "alice");
    s.line(a, "/set timestamps on");
    s.line(a, "/set prompt on");
    s.line(a, "/set");
    assert!(s.take(a).last().is_some_and(|l| {
        l.ends_with("timestamps on, echo off, prompt on (kept for your account)")
    }));
    // A guest's settings are its session's only.
    let g = s.named("guest");
    s.line(g, "/set echo on");
    s.compact();
    s.restart();
    let a = s.connect();
    s.line(a, "/login alice a long password");
    let got = s.take(a);
    assert!(
        got.iter()
            .any(|l| l.ends_with("*** your settings: timestamps on, echo off, prompt on")),
        "{got:?}"
    );
    assert_eq!(s.prompt(a), Some("[#lobby] "));
    let b = s.named("bob");
    s.take(a);
    s.line(b, "welcome back");
    assert_eq!(s.take(a), vec!["22:13 #lobby <bob> welcome back"]);
    let g = s.named("guest");
    s.line(g, "/set");
    assert!(s.take(g)[0].contains("echo off"));
}

#[test]
fn issue19_settings_made_before_registering_become_the_accounts() {
    let mut s = sim();
    let a = s.named("alice");
    s.line(a, "/set echo on");
    s.line(a, "/register a long password");
    s.restart();
    let a = s.connect();
    s.line(a, "/login alice a long password");
    assert!(s.take(a).iter().any(|l| l.contains("echo on")));
}

#[test]
fn issue19_joining_says_who_is_there_and_every_room_change_says_where_lines_go() {
    let mut s = sim();
    let mut others = Vec::new();
    for i in 0..12 {
        let c = s.named(&format!("n{i:02}"));
        s.line(c, "/join #rust");
        others.push(c);
    }
    let a = s.named("alice");
    s.line(a, "/join #rust");
    let got = s.take(a);
    assert_eq!(got[0], "*** alice joined #rust");
    assert_eq!(
        got[1],
        "*** in #rust: n00, n01, n02, n03, n04, n05, n06, n07 and 4 others"
    );
    assert_eq!(
        got.last().map(String::as_str),
        Some("*** now talking in #rust")
    );
    s.line(a, "/join #empty");
    assert!(
        s.take(a)
            .contains(&"*** in #empty: nobody else yet".to_string())
    );
    s.line(a, "/where");
    assert_eq!(
        s.take(a),
        vec!["*** you are talking in #empty: plain lines go there; also in #lobby, #rust"]
    );
    s.line(a, "/join #lobby");
    assert_eq!(s.take(a), vec!["*** now talking in #lobby"]);
}

#[test]
fn issue19_search_finds_what_was_said_newest_first_with_dates() {
    let mut s = sim();
    let a = registered(&mut s, "alice");
    let b = registered(&mut s, "bob");
    s.line(a, "meet at the North gate");
    s.advance(Duration::from_millis(5));
    s.line(b, "/join #rust");
    s.line(b, "the north wind blows");
    s.advance(Duration::from_millis(5));
    s.line(b, "nothing here");
    s.line(a, "/dm bob north by north-west");
    s.line(b, "/enc E1.north.north");
    s.line(b, "/join new");
    s.line(b, "north in private");
    s.take(a);
    s.take(b);
    s.advance(Duration::from_secs(60));
    s.line(a, "/search north");
    let got = s.take(a);
    assert_eq!(
        got,
        vec![
            "2023-11-14 22:13 @alice -> bob: north by north-west",
            "2023-11-14 22:13 #rust <bob> the north wind blows",
            "2023-11-14 22:13 #lobby <alice> meet at the North gate",
            "*** 3 lines for \"north\", newest first (4 kept lines read in 2 rooms and 1 conversation)"
        ]
    );
    s.line(a, "/search north #rust 5");
    assert_eq!(s.take(a).len(), 2);
    s.line(a, "/format machine");
    s.take(a);
    s.line(a, "/search gate");
    let got = s.take(a);
    assert!(got[0].starts_with("found msg #lobby alice "), "{got:?}");
    // It survives a restart: history and DMs come back from the journal.
    s.restart();
    let c = s.named("carol");
    s.line(c, "/search north");
    let got = s.take(c);
    assert_eq!(got.len(), 3, "a guest sees no one's DMs: {got:?}");
    s.line(c, "/search nothing #nowhere");
    assert!(s.take(c)[0].starts_with("!!! no room #nowhere"));
}

#[test]
fn issue19_search_reads_within_its_budget_and_says_when_it_stopped() {
    let mut s = Sim::new(CoreConfig {
        rate: 0.0,
        search_budget: 4096,
        ..CoreConfig::default()
    });
    let a = s.named("alice");
    s.line(a, "needle in the oldest line");
    for i in 0..200 {
        s.line(a, &format!("hay {i}"));
    }
    s.line(a, "/search needle");
    let got = s.take(a);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].ends_with("older lines were not searched: name a room to search further back"),
        "{got:?}"
    );
}

#[test]
fn issue19_a_paste_of_forty_lines_arrives_whole_in_order_and_paced() {
    let mut s = sim();
    let a = s.named("alice");
    let b = s.named("bob");
    s.take(a);
    s.take(b);
    for i in 0..40 {
        s.line(a, &format!("line {i}"));
    }
    // The burst (20, less the naming line) goes at once; the rest is held.
    let mut all = s.take(b);
    assert_eq!(all.len(), 19);
    let told = s.take(a);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].starts_with("*** your lines are coming fast"));
    // The rate still holds: ten a second.
    s.advance(Duration::from_secs(1));
    let second = s.take(b);
    assert_eq!(second.len(), 10);
    all.extend(second);
    for _ in 0..20 {
        s.advance(Duration::from_millis(100));
        all.extend(s.take(b));
    }
    let want: Vec<String> = (0..40)
        .map(|i| format!("#lobby <alice> line {i}"))
        .collect();
    assert_eq!(all, want);
    assert!(s.take(a).is_empty(), "no error for a paste");
    // Once the paste is out, lines go at once again.
    s.advance(Duration::from_secs(5));
    s.line(a, "after");
    assert_eq!(s.take(b), vec!["#lobby <alice> after"]);
}

#[test]
fn issue19_past_the_held_lines_a_flood_is_still_dropped_and_cut_off() {
    let mut s = sim();
    let a = s.named("alice");
    let b = s.named("bob");
    s.take(a);
    s.take(b);
    for i in 0..80 {
        s.line(a, &format!("x{i}"));
    }
    let told = s.take(a);
    assert!(told[0].starts_with("*** your lines are coming fast"));
    assert!(told[1].starts_with("!!! you are sending too fast"));
    for _ in 0..300 {
        s.line(a, "spam");
    }
    assert!(s.is_closed(a));
}
