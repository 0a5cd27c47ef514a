//! End-to-end encrypted direct messages between two real chatc processes
//! through the real daemon (issue 8): online and offline, nothing readable
//! in the journal, a notice for nc users, and a changed key caught.

use std::path::Path;

use crate::util::{Chatc, Client, Daemon, dir_contains, temp_dir};

fn daemon() -> Daemon {
    Daemon::start(&["--hash-iterations", "1000"])
}

/// A chatc with its own data directory, logged in (registering first if
/// `register`) as `nick`.
fn chatc(d: &Daemon, data: &Path, nick: &str, register: bool) -> Chatc {
    let mut c = Chatc::start_in(&d.addr().to_string(), &[], data);
    c.expect_contains("connected to");
    if register {
        c.send(nick);
        c.expect_contains(&format!("{nick} joined #lobby"));
        c.send(&format!("/register password-{nick}"));
        c.expect_contains("registered");
    } else {
        c.send(&format!("/login {nick} password-{nick}"));
        c.expect_contains(&format!("logged in as {nick}"));
    }
    c
}

/// Waits until the server holds a key for `nick` (chatc publishes it right
/// after logging in).
fn wait_key(d: &Daemon, nick: &str) {
    let mut q = Client::named(d.addr(), &format!("q{}", nick.len()));
    for _ in 0..100 {
        q.send(&format!("/key {nick}"));
        let l = q.expect_by("a key answer", |l| l.contains("end-to-end key"));
        if l.contains("K1.") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{nick} never published a key");
}

#[test]
fn issue8_encrypted_dms_online_offline_and_never_in_the_journal() {
    let d = daemon();
    let (da, db) = (temp_dir("dm-alice"), temp_dir("dm-bob"));
    let mut alice = chatc(&d, &da, "alice", true);
    let mut bob = chatc(&d, &db, "bob", true);
    wait_key(&d, "bob");
    wait_key(&d, "alice");

    alice.send("/dm bob meet at the north gate");
    let got = bob.expect_contains("alice -> bob: meet at the north gate");
    assert!(got.contains("[e2e verified]"), "{got}");
    alice.expect_contains("alice -> bob: meet at the north gate");
    bob.send("/dm alice see you there");
    alice.expect_contains("bob -> alice: see you there");

    // Offline: bob leaves, alice writes, bob comes back and reads it.
    assert_eq!(bob.finish(), Some(0));
    alice.send("/dm bob bring the lantern");
    alice.expect_contains("alice -> bob: bring the lantern");
    let mut bob = chatc(&d, &db, "bob", false);
    let got = bob.expect_contains("alice -> bob: bring the lantern");
    assert!(got.contains("[e2e verified]"), "{got}");
    assert_eq!(bob.finish(), Some(0));

    // What the operator has: ciphertext in the journal, notices for nc.
    let state = d.journal_path();
    let dir = state.parent().unwrap();
    for secret in ["north gate", "see you there", "lantern"] {
        assert!(
            !dir_contains(dir, secret.as_bytes()),
            "{secret:?} in the journal"
        );
    }
    assert!(dir_contains(dir, b"D1."), "the envelopes are kept");
    let mut nc = Client::connect(d.addr());
    nc.expect_prefix("*** Welcome");
    nc.send("/login bob password-bob");
    nc.expect("*** logged in as bob");
    nc.send("/dms alice");
    nc.expect_by("the waiting envelope's notice, dated", |l| {
        l.ends_with(" @alice -> bob: alice sent an encrypted message (read it with chatc)")
    });
    let rest = nc.sync();
    assert!(rest.iter().all(|l| !l.contains("D1.")), "{rest:?}");
    let _ = alice.finish();
    for dd in [da, db] {
        let _ = std::fs::remove_dir_all(dd);
    }
}

#[test]
fn issue8_a_changed_key_is_caught_and_no_key_needs_consent() {
    let d = daemon();
    let (da, db, db2) = (
        temp_dir("ck-alice"),
        temp_dir("ck-bob"),
        temp_dir("ck-bob2"),
    );
    let mut alice = chatc(&d, &da, "alice", true);
    let bob = chatc(&d, &db, "bob", true);
    wait_key(&d, "bob");
    alice.send("/dm bob first contact");
    alice.expect_contains("bob's key");
    alice.expect_contains("alice -> bob: first contact");
    let pinned = std::fs::read_to_string(da.join("chatc/known_keys")).unwrap();
    assert!(pinned.starts_with("bob "), "{pinned}");
    let _ = bob.finish();
    let _ = alice.finish();

    // Bob comes back with another identity (or someone does, as bob).
    let bob2 = chatc(&d, &db2, "bob", false);
    let mut q = Client::named(d.addr(), "watcher");
    let fresh = std::fs::read_to_string(db2.join("chatc/identity")).unwrap();
    assert!(fresh.starts_with("chatc-identity-v1"));
    // Wait until the new key replaced the old one on the server.
    let old_key = pinned.split(' ').nth(1).unwrap().to_string();
    let mut replaced = false;
    for _ in 0..100 {
        q.send("/key bob");
        let l = q.expect_by("a key answer", |l| l.contains("end-to-end key"));
        if !l.contains(&old_key) && l.contains("K1.") {
            replaced = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(replaced, "bob's new key was not published");
    let mut alice = chatc(&d, &da, "alice", false);
    alice.send("/dm bob are you really bob?");
    alice.expect_contains("WARNING: bob's end-to-end key has CHANGED");
    alice.send("/dm bob still there?");
    alice.expect_contains("not sent: bob's key changed");
    alice.send("/fingerprint bob");
    alice.expect_contains("safety number with bob:");
    alice.send("/trust bob");
    alice.expect_contains("new key");
    alice.send("/dm bob ok now");
    alice.expect_contains("alice -> bob: ok now");

    // A peer without a key: told, and nothing goes until confirmed.
    let mut guest = Client::named(d.addr(), "guest");
    alice.send("/dm guest psst");
    alice.expect_contains("guest has no end-to-end key");
    alice.send("/dm! guest in the clear, knowingly");
    guest.expect("@alice -> guest: in the clear, knowingly");
    let _ = bob2.finish();
    let _ = alice.finish();
    for dd in [da, db, db2] {
        let _ = std::fs::remove_dir_all(dd);
    }
}

/// Issue 15 through the real daemon: a passphrase with spaces is used
/// whole, registered senders sign their room messages, and the receiver
/// shows them verified once the sender's key is pinned; a member with a
/// wrong guess (the first word) reads nothing.
#[test]
fn issue15_signed_messages_in_a_room_keyed_by_a_whole_passphrase() {
    let d = daemon();
    let (da, db, dc) = (
        temp_dir("e2-alice"),
        temp_dir("e2-bob"),
        temp_dir("e2-carol"),
    );
    let mut alice = chatc(&d, &da, "alice", true);
    let mut bob = chatc(&d, &db, "bob", true);
    wait_key(&d, "alice");
    let mut carol = Chatc::start_in(&d.addr().to_string(), &["--nick", "carol"], &dc);
    carol.expect_contains("carol joined #lobby");
    bob.send("/fingerprint alice");
    bob.expect_contains("alice's key");
    for (c, who, secret) in [
        (&mut alice, "alice", "correct horse battery staple"),
        (&mut bob, "bob", "correct horse battery staple"),
        (&mut carol, "carol", "correct"),
    ] {
        c.send(&format!("/join #vault:{secret}"));
        c.expect(&format!("*** {who} joined #vault"));
    }
    alice.send("the code is 1234");
    bob.expect("#vault [e2e verified] <alice> the code is 1234");
    carol.expect("!!! #vault: message from alice: wrong room key");
    let journal = d.journal_path();
    let state = journal.parent().unwrap();
    assert!(
        !dir_contains(state, b"the code is"),
        "plaintext in the journal"
    );
    assert!(dir_contains(state, b"E2."), "the signed envelope is kept");
    for dir in [da, db, dc] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
