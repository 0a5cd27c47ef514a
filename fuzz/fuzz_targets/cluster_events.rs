//! The chat core in cluster mode, fed arbitrary interleavings of local
//! lines and what the other nodes and the bridge may say: lines echoed or
//! made up, presence and rosters decoded from arbitrary text, claims won,
//! lost or unanswered, nodes gone, outages, state records decoded from
//! arbitrary bytes. The Sim checks the core's invariants (including remote
//! member counts) after every step.
#![no_main]

use chatd::nats::wire::{decode_presence, decode_roster};
use chatd::core::sim::Sim;
use chatd::core::{Claim, CoreConfig, Disconnect, FromCluster, ToCluster};
use chatd::record::Record;
use libfuzzer_sys::fuzz_target;

const LINES: &[&str] = &[
    "alice", "bob", "zoe", "/nick carol", "/nick zoe", "hello", "/join #a", "/join new",
    "/part", "/who", "/who #a", "/online", "/dm zoe hi", "/dm bob hi", "/me waves", "/topic t",
    "/register password1", "/login zoe password1", "/whois zoe", "/create #b topic",
    "/delete #b", "/join #b", "/quit", "/format machine",
];
const ROOMS: &[&str] = &["#lobby", "#a", "#b", "#c"];
const NODES: &[&str] = &["n1", "n2"];

fn text(it: &mut impl Iterator<Item = u8>) -> String {
    let n = usize::from(it.next().unwrap_or(0) % 48);
    let bytes: Vec<u8> = it.take(n).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let mut s = Sim::new(CoreConfig {
        max_conns: 6,
        max_rooms: 5,
        max_joined: 3,
        history_keep: 4,
        dm_keep: 3,
        hash_iterations: 1000,
        quiet_room: 2,
        ..CoreConfig::default()
    });
    s.core.enable_cluster("here");
    s.cluster_event(FromCluster::Up);
    let mut conns: Vec<usize> = Vec::new();
    let mut it = data.iter().copied();
    let mut steps = 0;
    while let Some(op) = it.next() {
        steps += 1;
        if steps > 300 {
            break;
        }
        let pick = |n: u8, len: usize| if len == 0 { 0 } else { usize::from(n) % len };
        let b = it.next().unwrap_or(0);
        let room = ROOMS[pick(b, ROOMS.len())].to_string();
        let node = NODES[pick(b >> 4, NODES.len())].to_string();
        match op % 12 {
            0 => {
                if let Ok(c) = s.connect_from(std::net::IpAddr::from([127, 0, 0, 1])) {
                    conns.push(c);
                }
            }
            1 | 2 => {
                let l = it.next().unwrap_or(0);
                if let Some(&conn) = conns.get(pick(b, conns.len())) {
                    s.line(conn, LINES[pick(l, LINES.len())]);
                }
            }
            3 => {
                if let Some(&conn) = conns.get(pick(b, conns.len())) {
                    s.disconnect(conn, Disconnect::Closed);
                }
            }
            4 => {
                // Answer a claim, or echo a post, from what the core asked.
                let asked: Vec<ToCluster> = std::mem::take(&mut s.cluster);
                for req in asked {
                    match req {
                        ToCluster::Claim { id, .. } => {
                            let outcome = [Claim::Won, Claim::Lost, Claim::Unreachable]
                                [pick(it.next().unwrap_or(0), 3)];
                            s.cluster_event(FromCluster::Claimed { id, outcome });
                        }
                        ToCluster::Post { room, line, id, .. } => {
                            let ev = if it.next().unwrap_or(0) % 5 == 0 {
                                FromCluster::Unsent { room, line, id }
                            } else {
                                FromCluster::Posted { room, line, id: Some(id) }
                            };
                            s.cluster_event(ev);
                        }
                        _ => {}
                    }
                }
            }
            5 => {
                let line = text(&mut it);
                s.cluster_event(FromCluster::Posted { room, line, id: None });
            }
            6 => {
                if let Some(presence) = decode_presence(&text(&mut it)) {
                    s.cluster_event(FromCluster::Presence { node, presence });
                }
            }
            7 => {
                let people = decode_roster(&text(&mut it));
                s.cluster_event(FromCluster::Roster { node, people });
            }
            8 => s.cluster_event(FromCluster::NodeGone(node)),
            9 => {
                let ev = if b % 2 == 0 { FromCluster::Down } else { FromCluster::Up };
                s.cluster_event(ev);
            }
            10 => {
                let n = usize::from(it.next().unwrap_or(0) % 64);
                let bytes: Vec<u8> = it.by_ref().take(n).collect();
                if let Ok(rec) = Record::decode(&bytes) {
                    s.cluster_event(FromCluster::State(rec));
                }
            }
            _ => {
                let lines = vec![text(&mut it), text(&mut it)];
                let ev = match b % 3 {
                    0 => FromCluster::History { room, lines },
                    1 => FromCluster::Dm { line: lines[0].clone() },
                    _ => FromCluster::Inbox { nick: "zoe".into(), lines },
                };
                s.cluster_event(ev);
            }
        }
        conns.retain(|&c| !s.is_closed(c));
        for &c in &conns {
            assert!(s.take(c).len() < 10_000);
        }
        if s.cluster.len() > 1000 {
            s.cluster.clear();
        }
    }
});
