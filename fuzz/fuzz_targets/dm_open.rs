//! Arbitrary text as a direct-message envelope or a key bundle: never a
//! panic, never a success for something the sender did not seal and sign,
//! and a genuine envelope with one character changed, re-addressed or
//! checked against another sender's key is refused.
#![no_main]

use chatd::e2e::Body;
use chatd::e2e::identity::{self, Identity};
use chatd::proto::shapes;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn ids() -> &'static (Identity, Identity) {
    static IDS: OnceLock<(Identity, Identity)> = OnceLock::new();
    IDS.get_or_init(|| (Identity::generate(), Identity::generate()))
}

fuzz_target!(|data: &[u8]| {
    let (alice, bob) = ids();
    let text = String::from_utf8_lossy(data);
    let _ = shapes::dm_envelope_ok(&text);
    let _ = shapes::bundle_ok(&text);
    assert!(identity::parse_bundle("alice", &text).is_none() || text.starts_with("K1."));
    for t in [text.to_string(), format!("D1.{text}")] {
        assert!(identity::open_dm(bob, "alice", "bob", &alice.public(), &t).is_err());
    }
    if let Some((&pos, rest)) = data.split_first() {
        let body = Body::Text(String::from_utf8_lossy(rest).into_owned());
        let env = identity::seal_dm(alice, "alice", "bob", &bob.public(), &body, 1);
        assert!(identity::open_dm(bob, "alice", "bob", &alice.public(), &env).is_ok());
        assert!(identity::open_dm(bob, "carol", "bob", &alice.public(), &env).is_err());
        assert!(identity::open_dm(bob, "alice", "bob", &bob.public(), &env).is_err());
        let mut chars: Vec<char> = env.chars().collect();
        let i = 3 + usize::from(pos) % (chars.len() - 3);
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let changed: String = chars.into_iter().collect();
        assert!(
            identity::open_dm(bob, "alice", "bob", &alice.public(), &changed).is_err(),
            "a changed envelope opened"
        );
    }
});
