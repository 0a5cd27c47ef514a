//! The TLS listener (issue 8): the same line protocol over TLS, chatc's
//! certificate checks, and handshakes that cannot hold the loop.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::{Certs, Chatc, Client, Daemon, TlsClient};

fn daemon(certs: &Certs, extra: &[&str]) -> Daemon {
    let mut flags: Vec<String> = certs.flags();
    flags.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    Daemon::start(&refs)
}

#[test]
fn issue8_tls_and_plain_users_chat_together() {
    let certs = Certs::new("tls-chat");
    let d = daemon(&certs, &["--ephemeral"]);
    let mut t = TlsClient::connect(d.tls_addr(), &certs.ca).expect("handshake");
    t.send("alice");
    t.expect("*** alice joined #lobby");
    let mut bob = Client::named(d.addr(), "bob");
    t.expect("*** bob joined #lobby");
    t.send("hello over TLS");
    bob.expect("#lobby <alice> hello over TLS");
    bob.send("hello in the clear");
    t.expect("#lobby <bob> hello in the clear");
    t.send("/quit");
    t.expect("*** bye!");
    bob.expect("*** alice quit (quit)");
}

#[test]
fn issue8_plain_text_on_the_tls_port_is_told_so() {
    let certs = Certs::new("tls-plain");
    let d = daemon(&certs, &["--ephemeral"]);
    let mut c = Client::connect(d.tls_addr());
    c.send("alice");
    let seen = c.expect_closed();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("!!! this port speaks TLS")),
        "{seen:?}"
    );
}

#[test]
fn issue8_chatc_over_tls_and_a_certificate_it_must_refuse() {
    let certs = Certs::new("tls-chatc");
    let other = Certs::new("tls-other");
    let d = daemon(&certs, &["--ephemeral"]);
    let port = d.tls_addr().port();
    let ca = certs.ca.display().to_string();
    let mut c = Chatc::start_at(
        &format!("chatds://localhost:{port}"),
        &["--nick", "carol", "--ca", &ca],
    );
    c.expect_contains("connected to localhost:");
    c.expect_contains("carol joined #lobby");
    let mut bob = Client::named(d.addr(), "bob");
    c.send("over tls from chatc");
    bob.expect("#lobby <carol> over tls from chatc");
    assert_eq!(c.finish(), Some(0));

    // Signed by another CA: refused, said plainly, no retrying.
    let other_ca = other.ca.display().to_string();
    let mut c = Chatc::start_at(
        &format!("localhost:{port}"),
        &["--tls", "--nick", "mallory", "--ca", &other_ca],
    );
    c.expect_contains("certificate is not trusted for localhost");
    assert_eq!(c.finish(), Some(1));
    // The right CA, but a certificate for another name.
    let elsewhere = Certs::for_names("tls-name", &["chat.example.org"]);
    let d2 = daemon(&elsewhere, &["--ephemeral"]);
    let ca2 = elsewhere.ca.display().to_string();
    let mut c = Chatc::start_at(
        &format!("localhost:{}", d2.tls_addr().port()),
        &["--tls", "--nick", "eve", "--ca", &ca2],
    );
    c.expect_contains("certificate is not trusted for localhost");
    assert_eq!(c.finish(), Some(1));
}

#[test]
fn issue8_stalled_handshakes_are_cut_off_while_plain_users_chat() {
    let certs = Certs::new("tls-stall");
    let d = daemon(
        &certs,
        &[
            "--ephemeral",
            "--tls-handshake-timeout",
            "1",
            "--max-handshakes",
            "5",
            "--status",
            "127.0.0.1:0",
        ],
    );
    let tls = d.tls_addr();
    // Five connections that never say a word, and one with half a ClientHello.
    let mut stalled: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(tls).unwrap()).collect();
    d.wait_log("connection 4 from");
    // The sixth is over --max-handshakes: closed at once.
    let mut sixth = TcpStream::connect(tls).unwrap();
    sixth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(sixth.read(&mut buf), Ok(0) | Err(_)));
    d.wait_log("TLS handshakes in progress (--max-handshakes)");
    // Plain users chat while the handshakes stall.
    let mut a = Client::named(d.addr(), "ann");
    let mut b = Client::named(d.addr(), "ben");
    a.expect("*** ben joined #lobby");
    let t0 = Instant::now();
    b.send("still here");
    a.expect("#lobby <ben> still here");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "plain chat waited on handshakes"
    );
    // Each stalled connection is closed by the server after its deadline.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    }
    d.wait_log("TLS handshake not finished in time");
    let (code, stats) = crate::util::http_get(d.status_addr(), "/stats");
    assert_eq!(code, 200);
    let failed: u64 = stats
        .split("\"tls_failed\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("tls_failed in /stats");
    assert!(failed >= 5, "{stats}");
    // And TLS works again once they are gone.
    let mut t = TlsClient::connect(tls, &certs.ca).expect("handshake after the stall");
    t.send("tess");
    t.expect("*** tess joined #lobby");
}
