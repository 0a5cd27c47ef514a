//! Fan-out to a crowd (issue 7): the shared member list, coalesced flushes
//! and queue shrinking must never lose, duplicate or reorder a line.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::util::{Client, Daemon};

/// 150 members, three senders blasting 40 lines each: every member gets
/// every line once, each sender's lines in the order sent. A room this size
/// is over the quiet threshold and its flushes are long enough to be held
/// for coalescing, so this exercises both.
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
