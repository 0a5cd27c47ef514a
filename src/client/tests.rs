//! The client core driven by hand: plain and encrypted rooms, direct
//! messages, reconnection, hostile input.

use super::*;

/// The local clock in these tests: messages are sealed at small times and
/// judged at this one, well inside [`STALE_AFTER_MS`].
const NOW: u64 = 10_000;

/// `server` at [`NOW`].
trait Srv {
    fn srv(&mut self, line: &str) -> Vec<Action>;
}

impl Srv for ClientCore {
    fn srv(&mut self, line: &str) -> Vec<Action> {
        self.server(line, NOW)
    }
}

fn sends(a: &[Action]) -> Vec<String> {
    a.iter()
        .filter_map(|x| match x {
            Action::Send(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn events(a: &[Action]) -> Vec<Event> {
    a.iter()
        .filter_map(|x| match x {
            Action::Show(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// A client named `me`, in `room`, with `secret` if given.
fn client(me: &str, room: &str, secret: Option<&str>) -> ClientCore {
    let mut c = ClientCore::new(Some(me.into()));
    assert_eq!(
        sends(&c.connected()),
        vec!["/format machine".to_string(), format!("/nick {me}")]
    );
    c.srv(&format!("ok nick hello {me}! Type to talk"));
    c.srv(&format!("join #lobby {me}"));
    let target = match secret {
        Some(s) => format!("{room}:{s}"),
        None => room.to_string(),
    };
    let out = c.user(&format!("/join {target}"), 0);
    assert_eq!(
        sends(&out),
        vec![format!("/join {room}")],
        "the secret stays here"
    );
    c.srv(&format!("join {room} {me}"));
    c
}

/// A named client with an identity, as chatc runs it.
fn dm_client(me: &str) -> (ClientCore, String) {
    let mut c = client(me, "#x", None);
    c.login = Some((me.to_string(), "password".to_string()));
    let id = Identity::generate();
    let bundle = id.bundle(me);
    c.set_identity(id);
    (c, bundle)
}

fn one_send(a: &[Action]) -> String {
    let s = sends(a);
    assert_eq!(s.len(), 1, "{a:?}");
    s[0].clone()
}

fn warnings(a: &[Action]) -> Vec<String> {
    events(a)
        .into_iter()
        .filter_map(|e| match e {
            Event::Warn(w) => Some(w),
            _ => None,
        })
        .collect()
}

/// Alice sends bob `text`; returns the server's line for it.
fn alice_to_bob(alice: &mut ClientCore, bob_bundle: &str, text: &str, ts: u64) -> String {
    let out = alice.user(&format!("/dm bob {text}"), ts);
    let mut line = one_send(&out);
    if line == "/key bob" {
        line = one_send(&alice.srv(&format!("key bob {bob_bundle}")));
    }
    let env = line.strip_prefix("/dm bob ").expect("a DM").to_string();
    assert!(env.starts_with("D1."), "{env}");
    assert!(!env.contains(text), "plaintext on the wire");
    format!("dm alice bob {ts} {env}")
}

#[test]
fn encrypted_dms_open_only_for_the_right_people_once() {
    let (mut alice, alice_bundle) = dm_client("alice");
    let (mut bob, bob_bundle) = dm_client("bob");
    let line = alice_to_bob(&mut alice, &bob_bundle, "meet at noon", 5_000);
    // Bob does not know alice's key yet: he looks it up, then shows it.
    assert_eq!(one_send(&bob.srv(&line)), "/key alice");
    let out = bob.srv(&format!("key alice {alice_bundle}"));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Pin { nick, .. } if nick == "alice"))
    );
    assert!(events(&out).contains(&Event::Dm {
        from: "alice".into(),
        to: "bob".into(),
        ts: 5_000,
        text: "meet at noon".into(),
        trust: Trust::Signed,
        history: false,
    }));
    // The echo alice gets is sealed for her too.
    let echo = events(&alice.srv(&line));
    assert!(
        matches!(&echo[..], [Event::Dm { trust: Trust::Signed, text, .. }] if text == "meet at noon")
    );
    // The same envelope again: a replay.
    assert_eq!(
        warnings(&bob.srv(&line)),
        vec!["replayed direct message from alice rejected"]
    );
    // In a history block, a repeat is just skipped.
    bob.srv("history @alice 1");
    assert!(bob.srv(&line).is_empty());
    // Tampered in transit.
    let fresh = alice_to_bob(&mut alice, &bob_bundle, "second", 6_000);
    let mut bent: Vec<u8> = fresh.clone().into_bytes();
    let n = bent.len() - 3;
    bent[n] = if bent[n] == b'A' { b'B' } else { b'A' };
    let w = warnings(&bob.srv(&String::from_utf8(bent).unwrap()));
    assert!(w[0].contains("tampered"), "{w:?}");
    // Shown by the server as from carol: not for bob as addressed.
    let moved = fresh.replacen("dm alice bob", "dm carol bob", 1);
    let out = bob.srv(&moved);
    assert_eq!(one_send(&out), "/key carol");
    let carol = Identity::generate();
    let answer = format!("key carol {}", carol.bundle("carol"));
    // Not under carol's key: perhaps she has a new one; asked once more.
    assert_eq!(one_send(&bob.srv(&answer)), "/key carol");
    let w = warnings(&bob.srv(&answer));
    assert!(w.iter().any(|w| w.contains("re-addressed")), "{w:?}");
    // Sealed long before it arrived by bob's clock (whatever the server
    // says): a replay from another session.
    let old = alice_to_bob(&mut alice, &bob_bundle, "old", 1_000);
    let w = warnings(&bob.server(&old, 1_000 + STALE_AFTER_MS + 1));
    assert!(w[0].contains("stale"), "{w:?}");
    // And a real one still gets through.
    let ok = alice_to_bob(&mut alice, &bob_bundle, "third", 7_000);
    assert!(matches!(&events(&bob.srv(&ok))[..], [Event::Dm { text, .. }] if text == "third"));
}

#[test]
fn a_guest_cannot_send_what_nobody_could_verify() {
    let (mut guest, _) = dm_client("guest");
    guest.login = None;
    let out = guest.user("/dm bob hi", 1);
    assert!(sends(&out).is_empty());
    assert!(warnings(&out)[0].contains("/register"));
}

#[test]
fn no_key_means_not_sent_until_confirmed() {
    let (mut alice, _) = dm_client("alice");
    assert_eq!(one_send(&alice.user("/dm guest hello", 1)), "/key guest");
    let out = alice.srv("key guest -");
    assert!(sends(&out).is_empty(), "sent unencrypted without asking");
    assert!(warnings(&out)[0].contains("/dm! guest"));
    assert_eq!(
        one_send(&alice.user("/dm! guest hello", 2)),
        "/dm guest hello"
    );
}

#[test]
fn a_changed_key_is_refused_until_trusted() {
    let (mut alice, _) = dm_client("alice");
    let bob1 = Identity::generate();
    let bob2 = Identity::generate();
    let mut pins = HashMap::new();
    pins.insert("bob".to_string(), bob1.public());
    alice.set_pins(pins);
    alice.user("/dm bob hi", 1);
    let out = alice.srv(&format!("key bob {}", bob2.bundle("bob")));
    assert!(sends(&out).is_empty(), "sent to a changed key");
    assert!(warnings(&out).iter().any(|w| w.contains("CHANGED")));
    assert!(warnings(&alice.user("/dm bob again", 2))[0].contains("not trusted"));
    let fp = events(&alice.user("/fingerprint bob", 3));
    assert!(
        matches!(&fp[..], [Event::Info(t)] if t.contains("NEW key")),
        "{fp:?}"
    );
    let out = alice.user("/trust bob", 4);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Pin { key, .. } if *key == bob2.public()))
    );
    let line = one_send(&alice.user("/dm bob now", 5));
    assert!(line.starts_with("/dm bob D1."));
}

#[test]
fn logging_in_publishes_the_key_and_fingerprints_agree() {
    let (mut alice, _) = dm_client("alice");
    let out = alice.srv("ok login logged in as alice");
    let s = sends(&out);
    assert!(s.iter().any(|l| l.starts_with("/key set K1.")), "{s:?}");
    let (mut bob, bob_bundle) = dm_client("bob");
    let alice_bundle = s[0].strip_prefix("/key set ").unwrap().to_string();
    assert_eq!(one_send(&alice.user("/fingerprint bob", 1)), "/key bob");
    let a = events(&alice.srv(&format!("key bob {bob_bundle}")));
    bob.user("/fingerprint alice", 1);
    let b = events(&bob.srv(&format!("key alice {alice_bundle}")));
    let number = |ev: &[Event]| {
        ev.iter()
            .find_map(|e| match e {
                Event::Info(t) if t.starts_with("safety number") => {
                    Some(t.split(": ").nth(1).unwrap()[..35].to_string())
                }
                _ => None,
            })
            .expect("a safety number")
    };
    assert_eq!(number(&a), number(&b));
}

#[test]
fn plain_rooms_pass_text_through() {
    let mut c = client("alice", "#r", None);
    assert_eq!(sends(&c.user("hello", 1)), vec!["hello"]);
    assert_eq!(sends(&c.user("//etc", 1)), vec!["//etc"]);
    assert_eq!(sends(&c.user("/me waves", 1)), vec!["/me waves"]);
    assert_eq!(sends(&c.user("exit", 1)), vec!["/quit"]);
    let ev = events(&c.srv("msg #r bob 5 hi"));
    assert_eq!(
        ev,
        vec![Event::Msg {
            room: "#r".into(),
            nick: "bob".into(),
            ts: 5,
            text: "hi".into(),
            trust: Trust::Plain,
            history: false
        }]
    );
}

#[test]
fn encrypted_rooms_seal_and_open_and_refuse_replays() {
    let secret = envelope::new_secret();
    let mut a = client("alice", "#club", Some(&secret));
    let mut b = client("bob", "#club", Some(&secret));
    let out = sends(&a.user("the plan", 1_000));
    assert!(out[0].starts_with("/enc E1."), "{out:?}");
    assert!(!out[0].contains("the plan"));
    let line = format!(
        "enc #club alice 1000 {}",
        out[0].trim_start_matches("/enc ")
    );
    let ev = events(&b.srv(&line));
    assert_eq!(
        ev,
        vec![Event::Msg {
            room: "#club".into(),
            nick: "alice".into(),
            ts: 1000,
            text: "the plan".into(),
            trust: Trust::Sealed,
            history: false
        }]
    );
    // The same envelope again, live: a replay.
    let ev = events(&b.srv(&line));
    assert!(
        matches!(&ev[0], Event::Warn(w) if w.contains("replayed")),
        "{ev:?}"
    );
    // Again inside a history block: silently skipped.
    b.srv("history #club 1");
    assert!(events(&b.srv(&line)).is_empty());
    // Presented as new long after it was sealed, by the local clock
    // (whatever time the server puts on it): stale.
    let mut c = client("carol", "#club", Some(&secret));
    let late = c.server(&line, 1000 + STALE_AFTER_MS + 1);
    assert!(
        matches!(&events(&late)[0], Event::Warn(w) if w.contains("stale")),
        "{late:?}"
    );
    // Sealed far ahead of the local clock: from the future.
    let mut d = client("dave", "#club", Some(&secret));
    let ahead = sends(&a.user("later", 1000 + 2 * STALE_AFTER_MS))[0]
        .trim_start_matches("/enc ")
        .to_string();
    let early = d.server(&format!("enc #club alice 1000 {ahead}"), 1000);
    assert!(
        matches!(&events(&early)[0], Event::Warn(w) if w.contains("future")),
        "{early:?}"
    );
}

#[test]
fn wrong_key_tampering_and_misattribution_are_reported_never_shown() {
    let secret = envelope::new_secret();
    let mut a = client("alice", "#club", Some(&secret));
    let mut wrong = client("eve", "#club", Some("a wrong guess"));
    let env = sends(&a.user("psst", 1))[0]
        .trim_start_matches("/enc ")
        .to_string();
    let ev = events(&wrong.srv(&format!("enc #club alice 1 {env}")));
    assert_eq!(
        ev,
        vec![Event::Warn(
            "#club: message from alice: wrong room key".into()
        )]
    );
    let mut b = client("bob", "#club", Some(&secret));
    let ev = events(&b.srv(&format!("enc #club mallory 1 {env}")));
    assert_eq!(
        ev,
        vec![Event::Warn(
            "#club: message from mallory: tampered envelope rejected".into()
        )]
    );
    let mut flipped: Vec<char> = env.chars().collect();
    let i = flipped.len() - 5;
    flipped[i] = if flipped[i] == 'x' { 'y' } else { 'x' };
    let flipped: String = flipped.into_iter().collect();
    let ev = events(&b.srv(&format!("enc #club alice 1 {flipped}")));
    assert_eq!(
        ev,
        vec![Event::Warn(
            "#club: message from alice: tampered envelope rejected".into()
        )]
    );
    let mut nokey = client("dan", "#club", None);
    assert!(
        matches!(&events(&nokey.srv(&format!("enc #club alice 1 {env}")))[0], Event::Info(i) if i.contains("no key"))
    );
}

#[test]
fn join_new_secret_gives_an_invite_and_keys_the_room() {
    let mut c = client("alice", "#lobby", None);
    assert_eq!(sends(&c.user("/join new --secret", 1)), vec!["/join new"]);
    let ev = events(&c.srv(
        "ok created created private room ~abc123: it is not listed; others join with /join abc123",
    ));
    let invite = ev.iter().find_map(|e| match e {
        Event::Invite(i) => Some(i.clone()),
        _ => None,
    });
    let invite = invite.expect("an invite");
    assert!(invite.starts_with("~abc123:"));
    assert!(c.is_encrypted("~abc123"));
    let mut b = ClientCore::new(Some("bob".into()));
    b.connected();
    b.srv("ok nick hello bob!");
    assert_eq!(
        sends(&b.user(&format!("/join {invite}"), 1)),
        vec!["/join ~abc123"]
    );
    assert!(b.is_encrypted("~abc123"));
}

#[test]
fn reconnecting_logs_in_again_and_rejoins() {
    let mut c = ClientCore::new(None);
    c.connected();
    c.user("/login alice my password", 1);
    c.srv("ok login logged in as alice");
    c.srv("join #lobby alice");
    c.srv("join #rust alice");
    c.srv("join #lobby alice");
    c.disconnected();
    let out = sends(&c.connected());
    assert_eq!(out, vec!["/format machine", "/login alice my password"]);
    let out = sends(&c.srv("ok login logged in as alice"));
    assert_eq!(out, vec!["/join #lobby", "/join #rust", "/join #lobby"]);
}

#[test]
fn images_inside_envelopes_and_safe_names() {
    let secret = envelope::new_secret();
    let mut a = client("alice", "#club", Some(&secret));
    let mut b = client("bob", "#club", Some(&secret));
    let png = b"\x89PNG\r\n\x1a\nrest".to_vec();
    let lines = a
        .upload(Upload::Image, "cat.png", "image/png", png.clone(), 1)
        .unwrap();
    assert_eq!(lines.len(), 1, "already in #club on the server: {lines:?}");
    let line = &lines[0];
    assert!(line.starts_with("/enc "));
    let ev = events(&b.srv(&format!(
        "enc #club alice 1 {}",
        line.trim_start_matches("/enc ")
    )));
    assert!(matches!(&ev[0], Event::Media { name, trust: Trust::Sealed, .. } if name == "cat.png"));
    assert_eq!(b.last_received().map(|r| r.data.clone()), Some(png));
    assert!(unsafe_name_reason("../../etc/passwd").is_some());
    assert!(unsafe_name_reason(".bashrc").is_some());
    assert!(unsafe_name_reason("a/b.png").is_some());
    assert_eq!(unsafe_name_reason("cat.png"), None);
    assert_eq!(numbered("cat.png", 2), "cat (2).png");
    assert_eq!(numbered("README", 1), "README (1)");
}

/// Issue 15, item 7: bob sets chatc up again. His first DM under the new
/// key is not called forged: the key is fetched again, the change is the
/// loud warning, the DM waits for /trust, and nothing goes to either key
/// meanwhile.
#[test]
fn a_dm_under_a_new_key_refetches_it_and_waits_for_trust() {
    let (mut alice, alice_bundle) = dm_client("alice");
    let bob_old = Identity::generate();
    let (mut bob, bob_bundle) = dm_client("bob");
    let mut pins = HashMap::new();
    pins.insert("bob".to_string(), bob_old.public());
    alice.set_pins(pins);
    alice.checked.insert("bob".into());
    bob.srv(&format!("key alice {alice_bundle}"));
    let line = one_send(&bob.user("/dm alice it is me, new laptop", 5_000));
    let arrived = line.replacen("/dm alice ", "dm bob alice 5000 ", 1);
    let out = alice.srv(&arrived);
    assert_eq!(
        one_send(&out),
        "/key bob",
        "looked up again, not called forged"
    );
    assert!(warnings(&out).is_empty(), "{out:?}");
    let out = alice.srv(&format!("key bob {bob_bundle}"));
    assert!(
        warnings(&out).iter().any(|w| w.contains("CHANGED")),
        "{out:?}"
    );
    assert!(events(&out).iter().all(|e| !matches!(e, Event::Dm { .. })));
    assert!(sends(&alice.user("/dm bob hello?", 6_000)).is_empty());
    let out = alice.user("/trust bob", 7_000);
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, Event::Dm { text, trust: Trust::Signed, .. } if text == "it is me, new laptop")),
        "{out:?}"
    );
}

/// Issue 15, item 8: what waits for a key answer is bounded, per peer and
/// in peers.
#[test]
fn messages_waiting_for_keys_are_bounded() {
    let (mut alice, _) = dm_client("alice");
    for i in 0..WAITING_PER_PEER + 5 {
        alice.user(&format!("/dm bob {i}"), 1);
    }
    let w = warnings(&alice.user("/dm bob one more", 1));
    assert!(w[0].contains("too many"), "{w:?}");
    for p in 0..WAITING_PEERS + 5 {
        alice.user(&format!("/dm peer{p} hi"), 1);
    }
    assert!(alice.outbox.len() <= WAITING_PEERS);
    let mallory = Identity::generate();
    for i in 0..WAITING_PER_PEER + 5 {
        let env = crate::e2e::identity::seal_dm(
            &mallory,
            "mallory",
            "alice",
            &alice.identity.as_ref().unwrap().public(),
            &Body::Text(format!("{i}")),
            i as u64,
        );
        alice.srv(&format!("dm mallory alice {i} {env}"));
    }
    assert!(alice.inbox.values().all(|v| v.len() <= WAITING_PER_PEER));
}

/// Issue 15, items 2 and 11 without sockets: after a reconnection where
/// the nick is taken, nothing typed leaves in the clear; the server moving
/// us is not followed; history already shown is not shown again.
#[test]
fn after_reconnecting_no_plain_line_leaks_and_old_history_is_skipped() {
    let secret = envelope::new_secret();
    let mut c = client("bob", "#club", Some(&secret));
    c.srv("history #lobby 1");
    assert_eq!(events(&c.srv("msg #lobby carol 500 old")).len(), 1);
    c.disconnected();
    c.connected();
    c.srv("err nick-taken nick bob is taken");
    let out = c.user("meet at the north gate at 5", 9_000);
    assert!(sends(&out).is_empty(), "{out:?}");
    c.srv("ok nick hello bob2!");
    c.srv("ok current now talking in #lobby");
    let out = sends(&c.user("meet at the north gate at 5", 9_000));
    assert_eq!(out[0], "/join #club");
    assert!(out[1].starts_with("/enc "), "{out:?}");
    assert!(out.iter().all(|l| !l.contains("north gate")));
    assert_eq!(c.prompt(), "[#club e2e] ");
    c.srv("history #lobby 2");
    assert!(c.srv("msg #lobby carol 500 old").is_empty(), "shown again");
    assert_eq!(events(&c.srv("msg #lobby carol 600 new")).len(), 1);
}

/// Issue 15, item 5: the memory of what was seen outlives the process.
#[test]
fn replay_memory_survives_a_restart() {
    let secret = envelope::new_secret();
    let mut a = client("alice", "#club", Some(&secret));
    let mut b = client("bob", "#club", Some(&secret));
    let env = sends(&a.user("once", 1_000))[0]
        .trim_start_matches("/enc ")
        .to_string();
    let line = format!("enc #club alice 1000 {env}");
    let out = b.srv(&line);
    let mut file = b.dump_memory();
    for a in &out {
        if let Action::Remember(l) = a {
            file.push_str(l);
            file.push('\n');
        }
    }
    let mut again = client("bob", "#club", Some(&secret));
    again.load_memory(&file);
    let w = warnings(&again.srv(&line));
    assert!(w[0].contains("replayed"), "{w:?}");
}

/// Issue 19: search results come through the machine format and are shown
/// dated, marked when they are plain lines of a keyed room; the account's
/// `timestamps` setting reaches the display.
#[test]
fn issue19_search_results_and_the_timestamps_setting() {
    let mut c = client("me", "#sec", Some("a-long-enough-secret-for-the-room"));
    let got = events(&c.srv("found msg #lobby bob 5000 meet at the gate"));
    assert_eq!(
        got,
        vec![Event::Msg {
            room: "#lobby".into(),
            nick: "bob".into(),
            ts: 5000,
            text: "meet at the gate".into(),
            trust: Trust::Plain,
            history: true,
        }]
    );
    let got = events(&c.srv("found msg #sec bob 6000 plain in a keyed room"));
    assert!(
        matches!(
            &got[..],
            [Event::Msg {
                trust: Trust::Unencrypted,
                ..
            }]
        ),
        "{got:?}"
    );
    // Only room lines and DMs can be results.
    assert!(events(&c.srv("found join #lobby bob")).is_empty());
    let got = events(&c.srv("present #lobby 3 bob carol"));
    assert_eq!(
        got,
        vec![Event::Info("in #lobby: bob, carol and 1 other".into())]
    );
    let times = |a: Vec<Action>| {
        a.into_iter().find_map(|x| match x {
            Action::Times(t) => Some(t),
            _ => None,
        })
    };
    assert_eq!(times(c.srv("ok set timestamps off")), Some(false));
    assert_eq!(
        times(c.srv("ok set timestamps on: times are UTC; today is Tuesday 2023-11-14")),
        Some(true)
    );
    assert_eq!(
        times(c.srv("ok set your settings: timestamps off, echo off, prompt on")),
        Some(false)
    );
    assert_eq!(times(c.srv("ok set echo on")), None);
}

/// Issue 18: chatc sends `/passwd` and its two answers as lines of their
/// own, never as a room message.
#[test]
fn issue18_passwd_goes_out_as_three_lines() {
    let mut c = client("me", "#x", None);
    let out = c.user("/passwd\nold secret\nnew secret here", NOW);
    assert_eq!(
        sends(&out),
        vec!["/passwd", "old secret", "new secret here"]
    );
    let out = c.user("/unregister\nmy password", NOW);
    assert_eq!(sends(&out), vec!["/unregister", "my password"]);
}
