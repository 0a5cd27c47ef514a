//! Issue 18 (room moderation) with real connections: an owner names an
//! operator, a troll is muted then banned, and all of it holds after a
//! restart.

use std::net::Ipv4Addr;

use crate::util::{Client, Daemon};

fn registered(d: &Daemon, nick: &str) -> Client {
    let mut c = Client::named(d.addr(), nick);
    c.send(&format!("/register {nick}s password"));
    c.expect_prefix(&format!("*** registered {nick}"));
    c
}

fn troll(d: &Daemon, nick: &str) -> Client {
    let mut t = Client::connect_from(d.addr(), Ipv4Addr::new(127, 0, 0, 66));
    t.expect_prefix("*** Welcome");
    t.send(nick);
    t.expect(&format!("*** {nick} joined #lobby"));
    t
}

#[test]
fn issue18_an_owner_an_operator_a_troll_and_a_restart() {
    let d = Daemon::start(&[]);
    let mut olga = registered(&d, "olga");
    olga.send("/create #club a quiet club");
    olga.expect_prefix("*** #club is yours");
    let mut bob = registered(&d, "bob");
    bob.send("/join #club");
    bob.expect("*** now talking in #club");
    olga.send("/op bob");
    bob.expect("*** olga made bob an operator of #club");
    let mut t = troll(&d, "troll");
    t.send("/join #club");
    t.expect("*** now talking in #club");
    t.send("/topic trolled");
    t.expect("!!! the topic of #club is set by its owner and operators");
    bob.send("/mute troll 10m shouting");
    t.expect_prefix("*** bob muted troll (127.0.0.66) in #club until ");
    t.send("LOUD NOISES");
    t.expect_prefix("!!! you are muted in #club until ");
    t.send("more");
    olga.send("/ban troll 1d");
    t.expect_prefix("*** olga banned troll (127.0.0.66) from #club until ");
    t.expect("*** troll left #club (banned by olga)");
    let seen = bob.sync();
    assert!(
        seen.iter()
            .all(|l| !l.contains("LOUD") && !l.contains("<troll> more")),
        "muted lines went nowhere: {seen:?}"
    );
    let d = d.restart();
    let mut t = troll(&d, "angel");
    t.send("/join #club");
    t.expect_prefix("!!! you are banned from #club until ");
    let mut olga = Client::connect(d.addr());
    olga.expect_prefix("*** Welcome");
    olga.send("/login olga olgas password");
    olga.expect("*** logged in as olga");
    olga.send("/join #club");
    olga.send("/modlog");
    olga.expect_by("the op in the log", |l| l.ends_with(" olga op bob"));
    olga.expect("*** 3 moderation actions in #club");
    olga.send("/bans");
    olga.expect("*** 1 ban and 1 mute in #club");
    olga.send("/unban 127.0.0.66");
    olga.expect("*** olga lifted the ban on address 127.0.0.66 in #club");
    t.send("/join #club");
    t.expect("*** angel joined #club");
}

fn reset_password(d: &Daemon, nick: &str, new: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["admin", "reset-password", nick, "--state-dir"])
        .arg(d.state.as_ref().expect("a state directory"))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run chatd admin");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{new}");
    }
    let out = child.wait_with_output().expect("chatd admin ends");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn issue18_passwd_and_an_admin_reset_from_the_host() {
    let mut d = Daemon::start(&[]);
    let mut a = registered(&d, "alice");
    a.send("/passwd");
    a.expect_prefix("*** type your current password on the next line");
    a.send("alices password");
    a.expect_prefix("*** now the new password");
    a.send("changed it myself");
    a.expect("*** password changed: use the new one from now on");
    // Refused while the daemon runs.
    let (ok, err) = reset_password(&d, "alice", "set by the admin");
    assert!(
        !ok && err.contains("chatd is running on this state directory"),
        "{err}"
    );
    let (code, _) = d.terminate();
    assert_eq!(code, Some(0));
    let (ok, err) = reset_password(&d, "nobody", "set by the admin");
    assert!(
        !ok && err.contains("nobody is not a registered nick"),
        "{err}"
    );
    let (ok, err) = reset_password(&d, "alice", "set by the admin");
    assert!(ok, "{err}");
    let d = d.restart();
    let mut c = Client::connect(d.addr());
    c.expect_prefix("*** Welcome");
    c.send("/login alice changed it myself");
    c.expect("!!! login failed: wrong nick or password");
    c.send("/login alice set by the admin");
    c.expect("*** logged in as alice");
}

#[test]
fn issue18_a_laptop_and_a_phone_logged_in_at_once() {
    let d = Daemon::start(&[]);
    let mut laptop = registered(&d, "alice");
    let mut bob = registered(&d, "bob");
    laptop.sync();
    let data = crate::util::temp_dir("phone");
    let mut phone = crate::util::Chatc::start_in(&d.addr().to_string(), &[], &data);
    phone.expect_contains("connected to");
    phone.send("/login alice alices password");
    phone.expect_contains("this is session 2 of alice");
    phone.expect_contains("logged in as alice");
    bob.send("/dm alice hello both of you");
    laptop.expect("@bob -> alice: hello both of you");
    phone.expect_contains("hello both of you");
    // What one session sends, the other sees.
    laptop.send("/dm bob from my laptop");
    bob.expect("@alice -> bob: from my laptop");
    phone.expect_contains("from my laptop");
    laptop.send("/sessions");
    laptop.expect("*** 2 sessions of at most 5");
    let _ = phone.finish();
    laptop.send("/sessions");
    laptop.expect("*** 1 session of at most 5");
    let seen = bob.sync();
    assert!(!seen.iter().any(|l| l.contains("alice quit")), "{seen:?}");
    let _ = std::fs::remove_dir_all(data);
}
