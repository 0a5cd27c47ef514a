//! The docs cannot drift from the code: every flag `chatd --help` lists is in
//! the man page, every command /help lists is documented there too, the pages
//! are clean under `mandoc -Tlint`, and the README's promise (nc is enough)
//! holds with the real nc.

use std::process::Command;

fn help_flags() -> Vec<String> {
    flags_of(env!("CARGO_BIN_EXE_chatd"))
}

/// The `--flags` a binary's `--help` lists.
fn flags_of(bin: &str) -> Vec<String> {
    let out = Command::new(bin).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(',').to_string())
        .collect()
}

fn man_page() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/chatd.8")).unwrap()
}

#[test]
fn every_flag_is_in_the_man_page() {
    let man = man_page().replace("\\-", "-");
    let flags = help_flags();
    assert!(flags.len() > 10, "{flags:?}");
    for f in flags {
        assert!(
            man.contains(&format!("Fl {}", &f[1..])) || man.contains(&f),
            "{f} missing from man/chatd.8"
        );
    }
}

#[test]
fn every_command_is_in_the_man_page() {
    let man = man_page();
    for cmd in [
        "help", "nick", "join", "part", "rooms", "who", "online", "dm", "me", "topic", "image",
        "file", "history", "format", "quit", "exit", "ping", "register", "login", "whois", "bio",
        "dms", "key", "create", "delete",
    ] {
        assert!(
            man.contains(&format!("Ic /{cmd}")),
            "/{cmd} missing from man/chatd.8"
        );
    }
}

#[test]
fn every_chatc_flag_is_in_its_man_page() {
    let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/chatc.1")).unwrap();
    let flags = flags_of(env!("CARGO_BIN_EXE_chatc"));
    assert!(flags.len() >= 5, "{flags:?}");
    for f in flags {
        assert!(
            man.contains(&format!("Fl {}", &f[1..])) || man.contains(&format!("Fl -{}", &f[2..])),
            "{f} missing from man/chatc.1"
        );
    }
}

#[test]
fn man_pages_are_clean_under_mandoc_lint() {
    let test = "docs::man_pages_are_clean_under_mandoc_lint";
    if !crate::util::need(
        test,
        crate::util::exists("mandoc"),
        "mandoc",
        "apt-get install mandoc, or contrib/install-test-deps",
    ) {
        return;
    }
    for page in ["chatd.8", "chatc.1"] {
        let path = format!("{}/man/{page}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("mandoc")
            .args(["-Tlint", "-W", "warning", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "mandoc -Tlint {page}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Debian's real nc (netcat-openbsd) through a conversation with the real
/// daemon: tests/nc_session.sh.
#[test]
fn a_conversation_through_the_real_nc() {
    let test = "docs::a_conversation_through_the_real_nc";
    let nc = Command::new("nc").arg("-h").output();
    let openbsd = nc.is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("OpenBSD"));
    if !crate::util::need(
        test,
        openbsd,
        "OpenBSD nc",
        "apt-get install netcat-openbsd, or contrib/install-test-deps",
    ) {
        return;
    }
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nc_session.sh"))
        .arg(env!("CARGO_BIN_EXE_chatd"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nc_session.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
