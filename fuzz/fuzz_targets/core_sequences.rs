//! The whole chat core fed arbitrary sequences of events from several
//! connections: connects from a few addresses, lines, raw bytes through the
//! decoder, disconnects, clock jumps, restarts from the journal. The Sim
//! checks the core's invariants after every step (every room member is a
//! live connection that lists the room, nicks are unique and indexed,
//! counts agree, no output after a close) and panics if one breaks.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use chatd::core::sim::Sim;
use chatd::core::{CoreConfig, Disconnect};
use libfuzzer_sys::fuzz_target;

/// Lines the input can pick by number, so that short inputs reach deep
/// states (rooms, accounts, envelopes) quickly.
const LINES: &[&str] = &[
    "alice", "bob", "/nick carol", "hello", "/join #a", "/join new", "/part", "/rooms", "/who",
    "/online", "/dm alice hi", "/dm bob hi", "/me waves", "/topic t", "/topic", "/history 3",
    "/quit", "/format machine", "/format human", "/register password1", "/login alice password1",
    "/login bob wrongpass", "/whois alice", "/bio hi", "/dms bob", "/create #b topic",
    "/delete #b", "/image aGVsbG8=", "/file x.txt aGVsbG8=", "//slash", "/ping", "/enc E1.AAAA",
    "/join #b", "/part #a", "/help nick", "/key alice", "/key clear",
    "/set timestamps on", "/set echo on", "/set prompt on", "/set", "/set timestamps off",
    "/where", "/search hello", "/search hi #a 2", "/find waves",
    "/op bob", "/deop bob", "/kick bob", "/kick alice rude", "/ban bob 10m spam", "/ban 127.0.0.1",
    "/unban bob", "/mute alice 1h", "/unmute alice", "/bans", "/modlog", "/modlog #b",
    "/mode +invite", "/mode +slow 5", "/mode -slow", "/mode +registered", "/invite bob", "/mode",
    "/kill bob", "/announce hi", "/takeover #b", "/gban bob 1h", "/ungban bob", "/gbans",
    "/away lunch", "/away", "/ignore bob", "/unignore bob", "/ignore", "/passwd", "password1",
    "/unregister", "/sessions", "/logout 2", "/logout", "/logout all", "/login alice password1",
    "/key set K1.A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg1gHLWNliA0a7qMprfkSE4OFHtIaKOO3XpZdDSzRZiVGEj22LOyUugNC3aVpjHHvbfyAG_fxL4zFynb2YhKbwhTNizlnquzHpwOeJqSbB_RnW549GlThC2DI1QBWBn9QY",
];

fuzz_target!(|data: &[u8]| {
    let mut s = Sim::new(CoreConfig {
        max_conns: 6,
        max_per_ip: 4,
        max_rooms: 5,
        max_joined: 3,
        history_keep: 4,
        dm_keep: 3,
        burst: 8,
        hash_iterations: 1000,
        quiet_room: 2,
        admins: vec!["alice".into()],
        ..CoreConfig::default()
    });
    let mut conns: Vec<usize> = Vec::new();
    let mut it = data.iter().copied();
    let mut steps = 0;
    while let Some(op) = it.next() {
        steps += 1;
        if steps > 400 {
            break;
        }
        let pick = |n: u8, len: usize| if len == 0 { 0 } else { usize::from(n) % len };
        match op % 8 {
            0 => {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, it.next().unwrap_or(1) % 3 + 1));
                if let Ok(c) = s.connect_from(ip) {
                    conns.push(c);
                }
            }
            1 | 2 => {
                let (Some(c), Some(l)) = (it.next(), it.next()) else { break };
                if let Some(&conn) = conns.get(pick(c, conns.len())) {
                    if !s.is_closed(conn) {
                        s.line(conn, LINES[pick(l, LINES.len())]);
                    }
                }
            }
            3 => {
                let Some(c) = it.next() else { break };
                let n = usize::from(it.next().unwrap_or(0) % 40);
                let bytes: Vec<u8> = it.by_ref().take(n).collect();
                if let Some(&conn) = conns.get(pick(c, conns.len())) {
                    if !s.is_closed(conn) {
                        s.bytes(conn, &bytes);
                    }
                }
            }
            4 => {
                let Some(c) = it.next() else { break };
                if let Some(&conn) = conns.get(pick(c, conns.len())) {
                    if !s.is_closed(conn) {
                        s.disconnect(conn, Disconnect::Closed);
                    }
                }
            }
            5 => {
                let secs = u64::from(it.next().unwrap_or(0));
                s.advance(Duration::from_secs(secs * 30));
            }
            6 => {
                if it.next().unwrap_or(0) % 4 == 0 {
                    s.restart();
                    conns.clear();
                }
            }
            _ => {
                if it.next().unwrap_or(0) % 4 == 0 {
                    s.compact();
                }
            }
        }
        conns.retain(|&c| !s.is_closed(c));
        for &c in &conns {
            // Bounded output: whatever a step produced was drained.
            assert!(s.take(c).len() < 10_000);
        }
    }
});
