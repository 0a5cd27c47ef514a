//! Arbitrary text opened as an envelope: never a panic, never a success for
//! something not sealed with the key (a forgery would need the key), and a
//! valid envelope with any one byte changed is refused.
#![no_main]

use chatd::e2e::Body;
use chatd::e2e::identity::Identity;
use chatd::e2e::room as envelope;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn key() -> &'static envelope::RoomKey {
    static KEY: OnceLock<envelope::RoomKey> = OnceLock::new();
    KEY.get_or_init(|| envelope::derive_key("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "#r"))
}

fn signer() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| Identity::from_seeds(&[7; 32], [9; 32]).expect("a seed"))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = chatd::proto::shapes::room_envelope_ok(&text, 1 << 20);
    assert!(envelope::open(key(), "#r", "a", &text).is_err() || text.starts_with("E1.") || text.starts_with("E2."));
    for prefix in ["E1.", "E2."] {
        let _ = envelope::open(key(), "#r", "a", &format!("{prefix}{text}"));
    }
    // A genuine envelope of the input's text, with one character changed.
    if let Some((&pos, rest)) = data.split_first() {
        let body = Body::Text(String::from_utf8_lossy(rest).into_owned());
        let signed = envelope::seal_signed(key(), signer(), "#r", "a", &body, 1);
        for env in [envelope::seal(key(), "#r", "a", &body, 1), signed] {
            assert!(envelope::open(key(), "#r", "a", &env).is_ok());
            let mut chars: Vec<char> = env.chars().collect();
            let i = 3 + usize::from(pos) % (chars.len() - 3);
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let changed: String = chars.into_iter().collect();
            assert!(envelope::open(key(), "#r", "a", &changed).is_err(), "a changed envelope opened");
        }
    }
});
