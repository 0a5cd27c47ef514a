//! The core in cluster mode, with the bridge played by the test: what it
//! asks of the cluster, and what it shows when the cluster answers.

use super::{Claim, FromCluster, Presence, ToCluster};
use crate::core::CoreConfig;
use crate::core::sim::Sim;
use crate::record::Record;

fn cluster_sim() -> Sim {
    let mut s = Sim::new(CoreConfig::default());
    s.core.enable_cluster("here");
    s.cluster_event(FromCluster::Up);
    s
}

/// Names a connection, answering its nick claim as won.
fn named(s: &mut Sim, nick: &str) -> usize {
    let c = s.connect();
    s.take(c);
    s.line(c, nick);
    let id = s
        .cluster
        .iter()
        .rev()
        .find_map(|r| match r {
            ToCluster::Claim { id, nick: n } if n == nick => Some(*id),
            _ => None,
        })
        .expect("a claim");
    assert!(s.take(c).is_empty(), "named before the claim was won");
    s.cluster_event(FromCluster::Claimed {
        id,
        outcome: Claim::Won,
    });
    s.take(c);
    c
}

fn posts(s: &Sim) -> Vec<(String, String, u64, bool)> {
    s.cluster
        .iter()
        .filter_map(|r| match r {
            ToCluster::Post {
                room,
                line,
                id,
                local,
            } => Some((room.clone(), line.clone(), *id, *local)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_room_line_is_shown_when_it_comes_back_from_the_stream() {
    let mut s = cluster_sim();
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    assert!(s.cluster.contains(&ToCluster::Follow("#lobby".into())));
    s.take(a);
    s.line(a, "hi");
    assert!(s.take(b).is_empty(), "shown before the stream ordered it");
    let (room, line, id, local) = posts(&s).pop().expect("posted");
    assert_eq!((room.as_str(), local), ("#lobby", false));
    s.cluster_event(FromCluster::Posted {
        room,
        line,
        id: Some(id),
    });
    assert_eq!(s.take(b), vec!["#lobby <alice> hi"]);
    assert!(s.take(a).is_empty(), "the human sender is not echoed");
    // Nothing of the line is journaled here: the stream keeps it.
    assert!(
        !s.journal
            .iter()
            .any(|r| matches!(r, crate::record::Record::Message { .. }))
    );
}

#[test]
fn while_the_cluster_is_down_lines_are_local_and_published_later_once() {
    let mut s = cluster_sim();
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    s.take(a);
    s.cluster_event(FromCluster::Down);
    assert!(s.take(a)[0].starts_with("*** the cluster is unreachable"));
    s.take(b);
    s.line(a, "alone");
    assert_eq!(s.take(b), vec!["#lobby <alice> alone"]);
    let (room, line, id, local) = posts(&s).pop().expect("queued");
    assert!(local);
    s.cluster_event(FromCluster::Up);
    s.take(b);
    // Its echo, once published, is not shown a second time.
    s.cluster_event(FromCluster::Posted {
        room,
        line,
        id: Some(id),
    });
    assert!(s.take(b).is_empty());
}

#[test]
fn a_line_the_cluster_never_took_is_shown_when_the_outage_is_known() {
    let mut s = cluster_sim();
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    s.take(a);
    s.line(a, "into the void");
    let (room, line, id, _) = posts(&s).pop().expect("posted");
    assert!(s.take(b).is_empty());
    s.cluster_event(FromCluster::Down);
    s.take(a);
    s.take(b);
    s.cluster_event(FromCluster::Unsent {
        room: room.clone(),
        line: line.clone(),
        id,
    });
    assert_eq!(s.take(b), vec!["#lobby <alice> into the void"]);
    assert!(s.take(a).is_empty(), "the human sender is not echoed");
    // Published when the cluster returns: not shown twice.
    s.cluster_event(FromCluster::Up);
    s.take(b);
    s.cluster_event(FromCluster::Posted {
        room,
        line,
        id: Some(id),
    });
    assert!(s.take(b).is_empty());
}

#[test]
fn remote_people_are_in_who_online_and_get_direct_messages() {
    let mut s = cluster_sim();
    let a = named(&mut s, "alice");
    s.cluster_event(FromCluster::Presence {
        node: "there".into(),
        presence: Presence::Online {
            nick: "zoe".into(),
            rooms: vec![],
        },
    });
    s.cluster_event(FromCluster::Presence {
        node: "there".into(),
        presence: Presence::Join {
            nick: "zoe".into(),
            room: "#lobby".into(),
        },
    });
    assert_eq!(s.take(a), vec!["*** zoe joined #lobby"]);
    s.line(a, "/who");
    let who = s.take(a);
    assert_eq!(who[0], "*** in #lobby: alice zoe", "{who:?}");
    s.line(a, "/dm zoe hello");
    assert!(s.cluster.iter().any(|r| matches!(
        r,
        ToCluster::Dm { to, store: false, .. } if to == "zoe"
    )));
    // A remote nick cannot be taken here.
    let c = s.connect();
    s.take(c);
    s.line(c, "zoe");
    assert_eq!(s.take(c), vec!["!!! nick zoe is taken; choose another"]);
    // Its node goes silent: zoe leaves.
    s.take(a);
    s.cluster_event(FromCluster::NodeGone("there".into()));
    assert_eq!(s.take(a), vec!["*** zoe quit (server gone)"]);
    s.line(a, "/online");
    assert_eq!(s.take(a), vec!["*** online (1): alice"]);
}

#[test]
fn a_lost_claim_is_refused_and_a_claim_for_someone_gone_is_given_back() {
    let mut s = cluster_sim();
    let c = s.connect();
    s.take(c);
    s.line(c, "alice");
    let Some(ToCluster::Claim { id, .. }) = s.cluster.last().cloned() else {
        panic!("no claim");
    };
    s.cluster_event(FromCluster::Claimed {
        id,
        outcome: Claim::Lost,
    });
    assert_eq!(s.take(c), vec!["!!! nick alice is taken; choose another"]);
    s.line(c, "bob");
    let Some(ToCluster::Claim { id, .. }) = s.cluster.last().cloned() else {
        panic!("no claim");
    };
    s.disconnect(c, crate::core::Disconnect::Closed);
    s.cluster_event(FromCluster::Claimed {
        id,
        outcome: Claim::Won,
    });
    assert_eq!(s.cluster.last(), Some(&ToCluster::Release("bob".into())));
}

#[test]
fn offline_direct_messages_go_to_the_cluster_inbox() {
    let mut s = cluster_sim();
    let a = named(&mut s, "alice");
    s.cluster_event(FromCluster::State(crate::record::Record::Account {
        nick: "bob".into(),
        salt: vec![0; 16],
        hash: vec![0; 32],
        iterations: 1000,
        created: 1,
    }));
    s.line(a, "/dm bob later");
    assert!(s.cluster.iter().any(|r| matches!(
        r,
        ToCluster::Store { to, .. } if to == "bob"
    )));
    let got = s.take(a);
    assert!(got.iter().any(|l| l.contains("offline")), "{got:?}");
}

#[test]
fn lines_typed_while_a_nick_is_claimed_wait_for_it_in_order() {
    let mut s = cluster_sim();
    let c = s.connect();
    s.take(c);
    s.line(c, "alice");
    s.line(c, "/join #rust");
    s.line(c, "/topic typed ahead");
    assert!(s.take(c).is_empty(), "nothing happens before the claim");
    let Some(ToCluster::Claim { id, .. }) = s
        .cluster
        .iter()
        .find(|r| matches!(r, ToCluster::Claim { .. }))
        .cloned()
    else {
        panic!("no claim");
    };
    s.cluster_event(FromCluster::Claimed {
        id,
        outcome: Claim::Won,
    });
    let got = s.take(c);
    assert!(got[0].starts_with("*** hello alice!"), "{got:?}");
    assert!(
        got.contains(&"*** alice joined #rust".to_string()),
        "{got:?}"
    );
    // The topic went to #rust's stream, not #lobby's.
    assert!(s.cluster.iter().any(|r| matches!(
        r,
        ToCluster::Post { room, line, .. } if room == "#rust" && line.contains("typed ahead")
    )));
}

#[test]
fn another_nodes_word_is_counted_once_whatever_it_repeats() {
    // Found by fuzz/cluster_events: a room named twice, a person listed
    // twice, private codes and junk in a roster.
    let mut s = cluster_sim();
    let a = named(&mut s, "alice");
    s.cluster_event(FromCluster::Roster {
        node: "there".into(),
        people: vec![
            ("ne".into(), vec!["#a".into(), "#a".into(), "abc123".into()]),
            ("ine".into(), vec!["#a".into()]),
            ("ne".into(), vec!["#n".into()]),
        ],
    });
    s.cluster_event(FromCluster::Presence {
        node: "there".into(),
        presence: Presence::Online {
            nick: "zed".into(),
            rooms: vec!["#lobby".into(), "#LOBBY".into()],
        },
    });
    s.take(a);
    s.line(a, "/who");
    let who = s.take(a);
    assert_eq!(who[0], "*** in #lobby: alice zed", "{who:?}");
    assert_eq!(who[1], "*** 2 people in #lobby");
    // The Sim checked the remote member counts after every step.
    s.cluster_event(FromCluster::NodeGone("there".into()));
    s.line(a, "/online");
    assert_eq!(
        s.take(a).last().map(String::as_str),
        Some("*** online (1): alice")
    );
}

/// A record another node wrote.
fn account_from_elsewhere(nick: &str) -> FromCluster {
    FromCluster::State(Record::Account {
        nick: nick.into(),
        salt: vec![1; 16],
        hash: vec![2; 32],
        iterations: 1000,
        created: 5,
    })
}

#[test]
fn an_account_that_arrived_from_the_cluster_survives_a_restart() {
    let mut s = cluster_sim();
    s.cluster_event(account_from_elsewhere("Dora"));
    s.cluster_event(FromCluster::State(Record::Bio {
        nick: "dora".into(),
        text: "from node b".into(),
    }));
    // The core journaled both itself: the simulated journal holds them.
    assert!(
        s.journal
            .iter()
            .any(|r| matches!(r, Record::Account { nick, .. } if nick == "Dora")),
        "{:?}",
        s.journal
    );
    s.restart();
    let c = s.connect();
    s.take(c);
    s.line(c, "dora");
    let got = s.take(c);
    assert_eq!(
        got,
        vec![
            "!!! nick dora is registered: log in with /login dora <password>, or choose another nick"
        ]
    );
    let w = s.named("watcher");
    s.line(w, "/whois dora");
    assert!(
        s.take(w).iter().any(|l| l.contains("from node b")),
        "the bio came back too"
    );
}

#[test]
fn a_record_that_does_not_fit_is_neither_applied_nor_journaled() {
    let mut s = cluster_sim();
    let before = s.journal.len();
    s.cluster_event(FromCluster::State(Record::Bio {
        nick: "nobody".into(),
        text: "x".into(),
    }));
    s.cluster_event(account_from_elsewhere("not a nick"));
    assert_eq!(s.journal.len(), before, "{:?}", s.journal);
}

#[test]
fn the_core_decides_what_is_shared_with_the_cluster() {
    let mut s = cluster_sim();
    let a = named(&mut s, "alice");
    s.cluster.clear();
    s.line(a, "/register hunter2hunter2");
    s.line(a, "/bio hello");
    s.line(a, "/create #mine");
    let shared: Vec<&Record> = s
        .cluster
        .iter()
        .filter_map(|r| match r {
            ToCluster::State(rec) => Some(rec),
            _ => None,
        })
        .collect();
    assert!(matches!(shared[0], Record::Account { nick, .. } if nick == "alice"));
    assert!(matches!(shared[1], Record::Bio { text, .. } if text == "hello"));
    assert!(matches!(shared[2], Record::RoomOwned { room, .. } if room == "#mine"));
    assert_eq!(shared.len(), 3, "{shared:?}");
    // The same records went to this node's journal.
    for rec in shared {
        assert!(s.journal.contains(rec));
    }
}

#[test]
fn a_post_the_bridge_refused_is_shown_here_and_kept() {
    let mut s = cluster_sim();
    let a = named(&mut s, "alice");
    let b = named(&mut s, "bob");
    s.take(a);
    s.line(a, "still here?");
    let (room, line, id, local) = posts(&s).pop().expect("posted");
    assert!(s.take(b).is_empty());
    s.cluster_event(FromCluster::Refused(ToCluster::Post {
        room,
        line,
        id,
        local,
    }));
    assert_eq!(s.take(b), vec!["#lobby <alice> still here?"]);
    assert!(s.take(a).is_empty(), "no echo for the sender");
    assert!(
        s.journal
            .iter()
            .any(|r| matches!(r, Record::Message { line } if line.contains("still here?")))
    );
    assert_eq!(s.core.cluster_stats().map(|c| c.refused), Some(1));
}

#[test]
fn a_claim_the_bridge_refused_says_busy_and_replays_what_was_typed() {
    let mut s = cluster_sim();
    let c = s.connect();
    s.take(c);
    s.line(c, "carol");
    s.line(c, "/help nick");
    let id = s
        .cluster
        .iter()
        .find_map(|r| match r {
            ToCluster::Claim { id, .. } => Some(*id),
            _ => None,
        })
        .expect("a claim");
    s.cluster_event(FromCluster::Refused(ToCluster::Claim {
        id,
        nick: "carol".into(),
    }));
    let got = s.take(c);
    assert_eq!(
        got[0],
        "!!! the cluster is busy: nick carol could not be checked; try again in a moment"
    );
    assert!(got[1].starts_with("*** /nick"), "{got:?}");
}

#[test]
fn lines_from_the_cluster_pass_a_sockets_rules() {
    let mut s = cluster_sim();
    let a = named(&mut s, "alice");
    s.take(a);
    for line in [
        "msg #lobby mallory 1 \u{1b}[2J\u{1b}[Hgotcha",
        "msg #lobby mallory 1 fine",
    ] {
        s.cluster_event(FromCluster::Posted {
            room: "#lobby".into(),
            line: line.into(),
            id: None,
        });
    }
    s.cluster_event(FromCluster::Dm {
        line: "dm mallory alice 1 \u{9b}31mred".into(),
    });
    assert_eq!(s.take(a), vec!["#lobby <mallory> fine"]);
}

/// Issue 18: a ban set on another node holds here (joins refused, and a
/// member still here is not heard), and this node's own bans are handed to
/// the bridge.
#[test]
fn issue18_moderation_is_shared_with_the_cluster() {
    let mut s = cluster_sim();
    let t = named(&mut s, "troll");
    s.line(t, "/join #club");
    s.take(t);
    s.cluster_event(FromCluster::State(Record::Moderation {
        room: "#club".into(),
        action: "ban".into(),
        by: "olga".into(),
        whom: "address:127.0.0.1".into(),
        until: 0,
        reason: "spam".into(),
        at: 1,
        mode: 3,
    }));
    s.line(t, "am I heard?");
    let got = s.take(t);
    assert!(
        got.iter()
            .any(|l| l.starts_with("!!! you are banned from #club (spam)")),
        "{got:?}"
    );
    assert!(
        !s.cluster
            .iter()
            .any(|r| matches!(r, ToCluster::Post { line, .. } if line.contains("am I heard"))),
        "not posted"
    );
    s.line(t, "/part #club");
    s.line(t, "/join #club");
    assert!(
        s.take(t)
            .iter()
            .any(|l| l.starts_with("!!! you are banned from #club"))
    );
    // Seen again (a restart of the watch), it is not logged twice.
    s.cluster_event(FromCluster::State(Record::Moderation {
        room: "#club".into(),
        action: "ban".into(),
        by: "olga".into(),
        whom: "address:127.0.0.1".into(),
        until: 0,
        reason: "spam".into(),
        at: 1,
        mode: 3,
    }));
    assert_eq!(
        s.journal
            .iter()
            .filter(|r| matches!(r, Record::Moderation { .. }))
            .count(),
        2,
        "journaled as it came, twice at most; the log holds it once"
    );
}
