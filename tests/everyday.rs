//! Issue 19: a day's use from nc — timestamps and a prompt, where one is,
//! a pasted block, a search after a restart, and the logs exported while
//! the daemon runs.

use std::process::Command;
use std::time::Duration;

use crate::util::{Client, Daemon};

/// `HH:MM ` at the start of a line.
fn stamped(l: &str) -> bool {
    let b = l.as_bytes();
    b.len() > 6
        && b[2] == b':'
        && b[5] == b' '
        && [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit())
}

#[test]
fn issue19_timestamps_prompt_and_knowing_where_lines_go() {
    let d = Daemon::start(&[]);
    let mut a = Client::named(d.addr(), "alice");
    a.expect("*** in #lobby: nobody else yet");
    a.expect("*** now talking in #lobby");
    let mut b = Client::named(d.addr(), "bob");
    b.expect("*** in #lobby: alice");
    a.send("/set timestamps on");
    let on = a.expect_by("timestamps on", |l| {
        l.contains("*** timestamps on: times are UTC")
    });
    assert!(stamped(&on), "{on}");
    b.send("good morning");
    let got = a.expect_by("bob's line", |l| l.ends_with("#lobby <bob> good morning"));
    assert!(stamped(&got), "{got}");
    // The prompt follows each burst, without a newline: the next line the
    // server sends starts after it.
    a.send("/set prompt on");
    a.expect_by("prompt on", |l| l.ends_with("*** prompt on"));
    a.send("/join #rust");
    a.expect_by("the join, after a prompt", |l| {
        l.ends_with("*** alice joined #rust") && l.starts_with("[#lobby] ")
    });
    b.send("/join #rust");
    a.expect_by("bob's join after the #rust prompt", |l| {
        l.starts_with("[#rust] ") && l.ends_with("*** bob joined #rust")
    });
    // A deleted room's members are told where their lines go now.
    let mut owner = Client::named(d.addr(), "olga");
    owner.send("/register a long password");
    owner.expect_prefix("*** registered olga");
    owner.send("/create #plans");
    owner.expect_prefix("*** #plans is yours");
    b.send("/join #plans");
    b.expect("*** in #plans: olga");
    b.expect("*** now talking in #plans");
    owner.send("/delete #plans");
    b.expect("*** olga left #plans (room deleted)");
    b.expect("*** now talking in #rust");
    b.send("/where");
    b.expect("*** you are talking in #rust: plain lines go there; also in #lobby");
}

#[test]
fn issue19_a_pasted_block_arrives_whole_and_in_order() {
    let d = Daemon::start(&[]);
    let mut a = Client::named(d.addr(), "alice");
    let mut b = Client::named(d.addr(), "bob");
    a.sync();
    let paste: String = (0..40).map(|i| format!("pasted line {i}\n")).collect();
    a.send_raw(paste.as_bytes());
    a.expect_prefix("*** your lines are coming fast: they are sent in order at 10 per second");
    for i in 0..40 {
        b.expect_by(&format!("line {i}"), |l| {
            l.starts_with("#lobby <alice> pasted line")
                && l == format!("#lobby <alice> pasted line {i}")
        });
    }
    let rest = a.sync();
    assert!(rest.iter().all(|l| !l.starts_with("!!!")), "{rest:?}");
}

#[test]
fn issue19_search_after_a_restart_and_small_fixes() {
    let d = Daemon::start(&["--max-image", "1000"]);
    let mut a = Client::named(d.addr(), "alice");
    a.send("the picnic is at the old mill");
    a.send("/join #rust");
    a.send("picnic food: bring bread");
    a.sync();
    let d = d.restart();
    let mut c = Client::named(d.addr(), "carol");
    c.sync();
    c.send("/search PICNIC");
    let mut found = Vec::new();
    loop {
        let l = c
            .next_line(Duration::from_secs(10))
            .expect("search results");
        if l.starts_with("*** 2 lines for \"PICNIC\", newest first") {
            break;
        }
        found.push(l);
    }
    // Newest first; two lines in one millisecond may come in either order.
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found
            .iter()
            .all(|l| l.starts_with("20") && l.as_bytes()[10] == b' '),
        "dated: {found:?}"
    );
    assert!(
        found
            .iter()
            .any(|l| l.ends_with("#rust <alice> picnic food: bring bread"))
    );
    assert!(
        found
            .iter()
            .any(|l| l.ends_with("#lobby <alice> the picnic is at the old mill"))
    );
    // One message of history reads as one.
    c.send("/history #rust 1");
    c.expect("*** last message in #rust:");
    // An image past the limit says so, with sizes that differ.
    let big = "A".repeat(100_000);
    c.send(&format!("/image {big}"));
    c.expect("!!! too large: an image or file may be at most 1000 B (1000 bytes) decoded; it was discarded");
    let near = "AAAA".repeat(334);
    c.send(&format!("/image {near}"));
    c.expect("!!! image refused: too large: 1002 bytes (1002 B) decoded, the limit is 1000 bytes (1000 B)");
}

#[test]
fn issue19_the_shutdown_notice_says_what_the_operator_said() {
    let mut d = Daemon::start(&["--shutdown-message", "back at 10:00 after the upgrade"]);
    let mut a = Client::named(d.addr(), "alice");
    a.sync();
    let (code, _) = d.terminate();
    assert_eq!(code, Some(0));
    let lines = a.expect_closed();
    assert!(
        lines
            .iter()
            .any(|l| l == "*** server is shutting down: back at 10:00 after the upgrade"),
        "{lines:?}"
    );
}

fn export(d: &Daemon, args: &[&str]) -> (String, String) {
    let state = d.state.as_ref().expect("a state directory");
    let out = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("export")
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .expect("run chatd export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn issue19_export_while_the_daemon_runs_as_text_and_json_lines() {
    let d = Daemon::start(&[]);
    let mut a = Client::named(d.addr(), "alice");
    a.send("/register alices password");
    a.expect_prefix("*** registered alice");
    let mut b = Client::named(d.addr(), "bob");
    b.send("/register bobs password");
    b.expect_prefix("*** registered bob");
    let said = ["hello \"world\" \\ ü", "second line", "/me waves"];
    for s in said {
        a.send(s);
    }
    a.send("/join #other");
    a.send("elsewhere");
    a.send("/dm bob a private word");
    a.send("/join new");
    a.send("never on disk");
    a.sync();
    b.sync();
    let (text, note) = export(&d, &["--room", "#lobby"]);
    let lines: Vec<&str> = text.lines().collect();
    let tails: Vec<&str> = lines.iter().map(|l| &l[20..]).collect();
    assert_eq!(
        tails,
        vec![
            "#lobby <alice> hello \"world\" \\ ü",
            "#lobby <alice> second line",
            "* #lobby alice waves"
        ],
        "{text}"
    );
    assert!(
        note.contains("3 room lines from 1 rooms, 0 direct messages"),
        "{note}"
    );
    let (jsonl, _) = export(&d, &["--format", "jsonl"]);
    let rows: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(rows.len(), 4, "{jsonl}");
    assert_eq!(rows[0]["text"], "hello \"world\" \\ ü");
    assert_eq!(rows[2]["kind"], "action");
    assert_eq!(rows[3]["room"], "#other");
    assert!(!jsonl.contains("never on disk") && !jsonl.contains("private word"));
    let (dms, _) = export(&d, &["--dms", "--account", "bob", "--since", "2000-01-01"]);
    assert!(dms.contains("@alice -> bob: a private word"), "{dms}");
    let (later, _) = export(&d, &["--since", "2999-01-01"]);
    assert!(later.is_empty(), "{later}");
    // The daemon never noticed.
    a.send("/join #lobby");
    a.send("still here");
    b.expect("#lobby <alice> still here");
}
