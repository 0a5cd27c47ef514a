//! Fan-out to a crowd (issue 7): the shared member list, the room lines of
//! one read joined (issue 21) and queue shrinking must never lose,
//! duplicate or reorder a line.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::util::{Client, Daemon};

/// 150 members, three senders blasting 40 lines each: every member gets
/// every line once, each sender's lines in the order sent. A room this size
/// is over the quiet threshold, and lines sent this fast are read several
/// at a time and joined, so this exercises both.
#[test]
fn issue7_a_crowd_gets_every_line_once_and_in_order() {
    let d = Daemon::start(&[
        "--ephemeral",
        "--rate",
        "0",
        "--conn-rate",
        "0",
        "--max-per-ip",
        "1000",
        "--quiet-room",
        "20",
    ]);
    let in_crowd = |nick: String| {
        let mut c = Client::named(d.addr(), &nick);
        c.send("/join #crowd");
        c.expect(&format!("*** {nick} joined #crowd"));
        c
    };
    let mut members: Vec<Client> = (0..150).map(|i| in_crowd(format!("m{i}"))).collect();
    let mut senders: Vec<Client> = (0..3).map(|i| in_crowd(format!("s{i}"))).collect();
    const N: usize = 40;
    for seq in 0..N {
        for (i, s) in senders.iter_mut().enumerate() {
            s.send(&format!("line {i} {seq}"));
        }
    }
    for (m, c) in members.iter_mut().enumerate() {
        let mut next: HashMap<usize, usize> = HashMap::new();
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while got < 3 * N {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(l) = c.next_line(left) else {
                panic!("member {m} got {got} of {} lines", 3 * N);
            };
            let Some(rest) = l.strip_prefix("#crowd <s") else {
                continue;
            };
            let mut f = rest.split(' ');
            let (Some(_), Some("line"), Some(i), Some(seq)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                panic!("member {m}: odd line {l:?}");
            };
            let (i, seq): (usize, usize) = (i.parse().unwrap(), seq.parse().unwrap());
            let want = next.entry(i).or_insert(0);
            assert_eq!(
                seq, *want,
                "member {m}: sender {i} out of order or duplicated"
            );
            *want += 1;
            got += 1;
        }
    }
    // A sender sees the others' lines, never its own (human format).
    let s0 = &mut senders[0];
    let seen = s0.sync();
    assert!(seen.iter().all(|l| !l.starts_with("#crowd <s0>")));
    assert!(seen.iter().any(|l| l.starts_with("#crowd <s1> line 1 ")));
}

/// A burst of room lines in one read is queued joined (issue 21), and
/// nobody can tell: each member gets every line once, in order, in its own
/// format; a browser gets one frame per line; a direct message in the
/// middle of the burst arrives where it was sent; whoever ignores the sender
/// gets none of it, and the human sender does not get its own lines back.
#[test]
fn a_burst_read_at_once_is_joined_without_changing_what_anyone_sees() {
    let d = Daemon::start(&["--ephemeral", "--rate", "0", "--conn-rate", "0"]);
    let mut human = Client::named(d.addr(), "hu");
    let mut machine = Client::connect(d.addr());
    machine.send("/format machine");
    machine.expect("ok format machine 1");
    machine.send("mach");
    machine.expect("join #lobby mach");
    let mut quiet = Client::named(d.addr(), "quiet");
    quiet.send("/ignore sender");
    quiet.expect_prefix("*** you ignore sender");
    let mut ws = crate::web::Ws::connect(d.addr(), None).expect("upgrade");
    ws.send("webby");
    ws.expect("join #lobby webby");
    let mut sender = Client::named(d.addr(), "sender");
    for c in [&mut human, &mut quiet] {
        c.expect("*** sender joined #lobby");
    }
    machine.expect("join #lobby sender");
    ws.expect("join #lobby sender");

    const N: usize = 60;
    let mut burst = String::new();
    for i in 0..N {
        burst.push_str(&format!("burst {i}\n"));
        if i == N / 2 {
            burst.push_str("/dm hu between\n/me waves\n");
        }
    }
    sender.send_raw(burst.as_bytes());

    let mut want_human = Vec::new();
    let mut want_machine = Vec::new();
    for i in 0..N {
        want_human.push(format!("#lobby <sender> burst {i}"));
        want_machine.push(format!(" burst {i}"));
        if i == N / 2 {
            want_human.push("@sender -> hu: between".to_string());
            want_human.push("* #lobby sender waves".to_string());
            want_machine.push(" waves".to_string());
        }
    }
    // Exactly these, in this order: nothing skipped, doubled or moved.
    let upto = |c: &mut Client, last: &str| {
        let mut got = Vec::new();
        loop {
            let l = c.expect_by("a line of the burst", |l| l.contains("sender"));
            let done = l.ends_with(last);
            got.push(l);
            if done {
                return got;
            }
        }
    };
    assert_eq!(upto(&mut human, &format!(" burst {}", N - 1)), want_human);
    let got: Vec<String> = upto(&mut machine, &format!(" burst {}", N - 1))
        .into_iter()
        .map(|l| {
            let rest = l
                .strip_prefix("msg #lobby sender ")
                .or_else(|| l.strip_prefix("act #lobby sender "))
                .unwrap_or_else(|| panic!("not a room line: {l}"));
            // The time stamp goes; the text stays.
            rest.split_once(' ')
                .map_or(String::new(), |(_, t)| format!(" {t}"))
        })
        .collect();
    assert_eq!(got, want_machine);
    for want in &want_machine {
        ws.expect_by(want, |t| {
            assert!(!t.contains('\n'), "two lines in one frame: {t:?}");
            t.contains("#lobby sender ") && t.ends_with(want.as_str())
        });
    }
    let own = sender.sync();
    assert!(
        !own.iter().any(|l| l.contains("burst")),
        "the sender got its own lines: {own:?}"
    );
    human.send("after the burst");
    let seen = quiet.expect_by("hu's line", |l| l.contains("after the burst"));
    assert!(seen.starts_with("#lobby <hu>"), "{seen}");
    let before = quiet.sync();
    assert!(
        !before.iter().any(|l| l.contains("burst")),
        "an ignorer got the burst: {before:?}"
    );
}
