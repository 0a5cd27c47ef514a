//! The docs cannot drift from the code: every flag `chatd --help` lists is in
//! the man page, and every command /help lists is documented there too.

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
