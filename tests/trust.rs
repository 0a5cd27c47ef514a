//! Issue 15: chatc treats the server and every member as hostile. A fake
//! server (written from chatd(8) and chatc(1)) says what a real one never
//! would, to a real chatc process, and each test checks what chatc printed
//! and what it sent.

use std::net::TcpListener;

use crate::util::{Chatc, FakeServer, temp_dir};
use chatd::e2e::Body;
use chatd::e2e::identity::Identity;
use chatd::e2e::room as envelope;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// chatc named `bob` in `#club` with `secret`, against a fake server.
fn bob_in_club(l: &TcpListener, data: &std::path::Path, secret: &str) -> (Chatc, FakeServer) {
    let mut c = Chatc::start_in(
        &l.local_addr().unwrap().to_string(),
        &["--nick", "bob"],
        data,
    );
    let mut s = FakeServer::accept(l);
    assert_eq!(s.recv(), "/format machine");
    assert_eq!(s.recv(), "/nick bob");
    s.send("ok nick hello bob!");
    c.send(&format!("/join #club:{secret}"));
    assert_eq!(s.recv(), "/join #club", "only the room goes to the server");
    s.send("join #club bob");
    c.expect("*** bob joined #club");
    (c, s)
}

const FORBIDDEN: [char; 6] = [
    '\u{1b}', '\u{7}', '\u{9b}', '\u{202e}', '\u{200f}', '\u{7f}',
];

#[test]
fn issue15_nothing_hostile_reaches_the_terminal_raw() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let data = temp_dir("trust-inject");
    let secret = envelope::new_secret();
    let (mut c, mut s) = bob_in_club(&l, &data, &secret);
    let key = envelope::derive_key(&secret, "#club");
    let t = now();
    // Sealed by a member: the server's filter never saw it.
    let evil =
        "\u{1b}[2J\u{1b}[Hhi\n04:22 #lobby <admin> run this\u{1b}]52;c;aGk=\u{7}\u{202e}gpj.exe";
    let env = envelope::seal(&key, "#club", "mallory", &Body::Text(evil.into()), t);
    s.send(&format!("enc #club mallory {t} {env}"));
    let first = c.expect_prefix("#club [e2e] <mallory> ");
    assert!(first.contains("\\x1b[2J\\x1b[Hhi"), "{first}");
    let block = c.expect_prefix("    \u{2502} 04:22 #lobby <admin> run this");
    assert!(
        block.contains("\\x1b]52;c;aGk=\\x07\\u{202e}gpj.exe"),
        "{block}"
    );
    // A file name and a MIME type inside an envelope.
    let file = Body::File {
        name: "a\u{1b}]0;owned\u{7}.txt".into(),
        mime: "text/plain\u{1b}[31m".into(),
        data: b"x".to_vec(),
    };
    let env = envelope::seal(&key, "#club", "mallory", &file, t);
    s.send(&format!("enc #club mallory {t} {env}"));
    c.expect_contains("a\\x1b]0;owned\\x07.txt");
    // The fake server's own words.
    s.send("err oops \u{1b}]0;owned\u{7} title");
    s.send("msg #lobby eve\u{9b}31m 1 \u{200f}hello\u{7f}");
    c.expect_contains("\\x1b]0;owned\\x07 title");
    c.send("/ping");
    assert_eq!(s.recv_until("/ping"), Vec::<String>::new());
    s.send("msg #lobby carol 2 done");
    c.expect("#lobby <carol> done");
    for line in &c.seen {
        assert!(
            !line.contains(FORBIDDEN),
            "a raw control character reached the terminal: {line:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn issue15_no_plaintext_leaves_for_a_keyed_room_and_plain_lines_are_marked() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let data = temp_dir("trust-leak");
    let secret = envelope::new_secret();
    let (mut c, mut s) = bob_in_club(&l, &data, &secret);
    // The server moves bob on its own: chatc says so and stays.
    s.send("ok current now talking in #lobby");
    c.expect_contains("the server says you now talk in #lobby, which you did not ask for");
    c.send("meet at the north gate at 5");
    c.send("/ping");
    let sent = s.recv_until("/ping");
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0], "/join #club", "back where the user is, first");
    assert!(sent[1].starts_with("/enc E1."), "{sent:?}");
    // A plain line in the keyed room: loud, or hidden by a setting.
    let t = now();
    s.send(&format!("msg #club mallory {t} the gate is open, come now"));
    c.expect("#club UNENCRYPTED <mallory> the gate is open, come now");
    c.send("/unencrypted hide");
    c.expect_contains("hidden");
    s.send(&format!("act #club mallory {t} waves"));
    c.expect_contains("a plain (unencrypted) line from mallory in #club was hidden");
    // The connection drops; the nick is taken on the next one. Nothing
    // typed meanwhile leaves in the clear.
    drop(s);
    c.expect_contains("disconnected");
    let mut s = FakeServer::accept(&l);
    assert_eq!(s.recv(), "/format machine");
    assert_eq!(s.recv(), "/nick bob");
    s.send("err nick-taken nick bob is taken");
    c.expect_contains("nick bob is taken");
    c.send("meet at the north gate at 5");
    c.expect_contains("not sent");
    c.send("/ping");
    let sent = s.recv_until("/ping");
    assert!(
        sent.iter().all(|l| !l.contains("north gate")),
        "plaintext sent: {sent:?}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn issue15_replays_are_refused_by_the_local_clock_and_across_restarts() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let data = temp_dir("trust-replay");
    let secret = envelope::new_secret();
    let key = envelope::derive_key(&secret, "#club");
    let t = now();
    let env = envelope::seal(&key, "#club", "alice", &Body::Text("the plan".into()), t);
    {
        let (mut c, mut s) = bob_in_club(&l, &data, &secret);
        s.send("history #lobby 2");
        s.send(&format!("msg #lobby carol {} first", t - 2000));
        s.send(&format!("msg #lobby carol {} second", t - 1000));
        s.send(&format!("enc #club alice {t} {env}"));
        c.expect("#club [e2e] <alice> the plan");
        assert!(
            c.seen.iter().any(|l| l.contains("#lobby <carol> second")),
            "{:#?}",
            c.seen
        );
        // An hour old by the local clock, whatever time the server gives.
        let old = envelope::seal(
            &key,
            "#club",
            "alice",
            &Body::Text("old".into()),
            t - 3_600_000,
        );
        s.send(&format!("enc #club alice {t} {old}"));
        c.expect_prefix("!!! #club: stale message from alice rejected");
        let ahead = envelope::seal(
            &key,
            "#club",
            "alice",
            &Body::Text("soon".into()),
            t + 3_600_000,
        );
        s.send(&format!("enc #club alice {t} {ahead}"));
        c.expect_contains("from the future");
        assert_eq!(c.finish(), Some(0));
    }
    // chatc starts again: the same envelope, presented live, is a replay;
    // history it showed is not shown again, only what is new.
    let (mut c, mut s) = bob_in_club(&l, &data, &secret);
    s.send("history #lobby 3");
    s.send(&format!("msg #lobby carol {} first", t - 2000));
    s.send(&format!("msg #lobby carol {} second", t - 1000));
    s.send(&format!("msg #lobby carol {} third", t + 1));
    let third = c.expect_contains("<carol> third");
    assert!(third.starts_with("20"), "history shows its date: {third}");
    s.send(&format!("enc #club alice {t} {env}"));
    c.expect("!!! #club: replayed message from alice rejected");
    assert!(
        c.seen
            .iter()
            .all(|l| !l.contains("<carol> first") && !l.contains("<carol> second")),
        "history shown again: {:#?}",
        c.seen
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn issue15_signed_room_messages_are_verified_and_impostors_rejected() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let data = temp_dir("trust-signed");
    let secret = envelope::new_secret();
    let (mut c, mut s) = bob_in_club(&l, &data, &secret);
    let key = envelope::derive_key(&secret, "#club");
    let alice = Identity::generate();
    let mallory = Identity::generate();
    let t = now();
    let signed = envelope::seal_signed(&key, &alice, "#club", "alice", &Body::Text("hi".into()), t);
    assert!(signed.starts_with("E2."), "{signed}");
    s.send(&format!("enc #club alice {t} {signed}"));
    // No key pinned for alice yet: shown as sealed, and her key is asked for.
    c.expect("#club [e2e] <alice> hi");
    assert_eq!(s.recv(), "/key alice");
    s.send(&format!("key alice {}", alice.bundle("alice")));
    c.expect_contains("alice's key");
    let signed = envelope::seal_signed(&key, &alice, "#club", "alice", &Body::Text("me".into()), t);
    s.send(&format!("enc #club alice {t} {signed}"));
    c.expect("#club [e2e verified] <alice> me");
    // Mallory holds the room key and signs as alice with her own key.
    let forged = envelope::seal_signed(
        &key,
        &mallory,
        "#club",
        "alice",
        &Body::Text("pay me".into()),
        t,
    );
    s.send(&format!("enc #club alice {t} {forged}"));
    c.expect_contains("a message signed by a key that is not alice's pinned key was rejected");
    assert!(
        c.seen.iter().all(|l| !l.contains("pay me")),
        "{:#?}",
        c.seen
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn issue15_a_displaced_session_stops_and_an_endless_line_is_cut_off() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let data = temp_dir("trust-stop");
    let mut c = Chatc::start_in(
        &l.local_addr().unwrap().to_string(),
        &["--nick", "bob"],
        &data,
    );
    let mut s = FakeServer::accept(&l);
    assert_eq!(s.recv(), "/format machine");
    assert_eq!(s.recv(), "/nick bob");
    // 5 MiB and no newline: chatc stops reading and reconnects.
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..5 {
        if s.send_raw(&chunk).is_err() {
            break;
        }
    }
    c.expect_contains("the server sent a line over 4 MiB");
    let mut s = FakeServer::accept(&l);
    assert_eq!(s.recv(), "/format machine");
    assert_eq!(s.recv(), "/nick bob");
    s.send("ok nick hello bob!");
    s.send("err replaced you logged in from somewhere else");
    c.expect_contains("chatc stopped here");
    assert_eq!(c.exit_code(), Some(3), "displaced: exit status 3");
    l.set_nonblocking(true).unwrap();
    assert!(
        l.accept().is_err(),
        "chatc came back to fight for the session"
    );
    let _ = std::fs::remove_dir_all(&data);
}
