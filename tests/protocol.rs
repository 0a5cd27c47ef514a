//! The wire protocol's fixed points, end to end over real sockets, against a
//! server running in the test process (`InProcess`) on a port-0 listener.

use crate::util::{Client, InProcess};

#[test]
fn two_people_chat_join_a_room_and_direct_message() {
    let d = InProcess::start(&[]);
    let mut alice = Client::named(d.addr(), "alice");
    let mut bob = Client::named(d.addr(), "bob");
    alice.expect("*** bob joined #lobby");
    alice.send("hello bob");
    bob.expect("#lobby <alice> hello bob");
    bob.send("/join #rust");
    bob.expect("*** bob joined #rust");
    bob.send("/me is in rust now");
    alice.send("/join #rust");
    alice.expect("*** alice joined #rust");
    // History shown on join holds bob's action.
    alice.expect("* #rust bob is in rust now");
    bob.expect("*** alice joined #rust");
    bob.send("/dm alice psst");
    alice.expect("@bob -> alice: psst");
    bob.expect("@bob -> alice: psst");
    bob.send("/quit see you");
    bob.expect("*** bye!");
    bob.expect_closed();
    alice.expect("*** bob quit (see you)");
}

#[test]
fn crlf_and_a_command_as_first_line() {
    let d = InProcess::start(&[]);
    let mut c = Client::connect(d.addr());
    c.expect_prefix("*** Welcome");
    c.send_raw(b"/help\r\n");
    c.expect_prefix("*** /nick <name>");
    c.send_raw(b"/nick Carol\r\n");
    c.expect("*** Carol joined #lobby");
    c.send_raw(b"/rooms\r\n");
    c.expect("*** #lobby (1 person)");
}

#[test]
fn machine_mode_lines_have_fields() {
    let d = InProcess::start(&[]);
    let mut m = Client::connect(d.addr());
    m.send("/format machine");
    m.expect("ok format machine 1");
    m.send("robot");
    m.expect("join #lobby robot");
    let mut h = Client::named(d.addr(), "human");
    m.expect("join #lobby human");
    h.send("hi robot");
    let line = m.expect_prefix("msg #lobby human ");
    let ts: u64 = line.split(' ').nth(3).unwrap().parse().unwrap();
    assert!(ts > 1_600_000_000_000, "{line}");
    assert!(line.ends_with(" hi robot"));
    m.send("/nick taken");
    m.send("/nick human");
    m.expect("err nick-taken nick human is taken; choose another");
}

#[test]
fn private_room_by_code() {
    let d = InProcess::start(&[]);
    let mut a = Client::named(d.addr(), "alice");
    let mut b = Client::named(d.addr(), "bob");
    a.send("/join new");
    let created = a.expect_prefix("*** created private room ~");
    let code = created.rsplit(' ').next().unwrap().to_string();
    b.send("/rooms");
    let listing = b.sync();
    assert!(!listing.iter().any(|l| l.contains(&code)), "{listing:?}");
    b.send(&format!("/join {code}"));
    a.expect(&format!("*** bob joined ~{code}"));
    b.send("secret plans");
    a.expect(&format!("~{code} <bob> secret plans"));
}

#[test]
fn images_become_notices_for_nc_users() {
    let d = InProcess::start(&[]);
    let mut a = Client::named(d.addr(), "alice");
    let mut b = Client::named(d.addr(), "bob");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.resize(250_000, 1);
    let data = chatd::media::encode(&png);
    a.send(&format!("/image cat.png {data}"));
    b.expect("*** #lobby: alice sent an image: cat.png, image/png, 244.1 KB");
    a.send("/image dog.png bm90IGFuIGltYWdl");
    a.expect_prefix("!!! image refused: not an image");
}

#[test]
fn eof_after_lines_still_gets_answers_then_leaves() {
    // What `printf 'dave\n/online\n' | nc -N host port` does.
    let d = InProcess::start(&[]);
    let mut a = Client::named(d.addr(), "alice");
    let mut c = Client::connect(d.addr());
    c.send("dave\n/online");
    c.half_close();
    let lines = c.expect_closed();
    assert!(
        lines.iter().any(|l| l == "*** online (2): alice dave"),
        "{lines:?}"
    );
    a.expect("*** dave quit (connection closed)");
}

#[test]
fn a_reset_connection_leaves_cleanly() {
    let d = InProcess::start(&[]);
    let mut a = Client::named(d.addr(), "alice");
    {
        let mut e = Client::named(d.addr(), "eve");
        e.send("/help");
        // Dropped with unread data: the kernel sends a reset.
    }
    a.expect_prefix("*** eve quit (");
    a.send("/online");
    a.expect("*** online (1): alice");
}

/// telnet's Ctrl-C sends `IAC IP IAC DO TIMING-MARK`; telnet then shows
/// nothing until the timing mark is answered. The session must go on: no
/// error, the mark answered, the next line delivered (issue 16).
#[test]
fn telnet_ctrl_c_is_answered_and_the_session_goes_on() {
    use std::io::Read;
    let d = InProcess::start(&["--ephemeral"]);
    let mut t = Client::named(d.addr(), "tel");
    let mut other = Client::named(d.addr(), "other");
    t.expect("*** other joined #lobby");
    t.send_raw(b"half a li");
    t.send_raw(&[255, 244, 255, 253, 6]);
    // Option negotiation a telnet client may start with: refused.
    t.send_raw(&[255, 251, 1]);
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + crate::util::WAIT;
    t.stream
        .set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap();
    while got.len() < 6 && std::time::Instant::now() < deadline {
        let mut buf = [0u8; 64];
        if let Ok(n) = t.stream.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(
        got,
        [255, 251, 6, 255, 254, 1],
        "WILL TIMING-MARK, DONT ECHO"
    );
    t.send("back again");
    other.expect("#lobby <tel> back again");
    t.send("/ping ok");
    let seen = t.sync();
    assert!(!seen.iter().any(|l| l.starts_with("!!!")), "{seen:?}");
}
