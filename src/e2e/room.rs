//! End-to-end envelopes for encrypted rooms (`E1.`): AES-256-GCM (ring), keys
//! from a shared secret bound to the room, authenticated data binding protocol
//! version, room and sender. The server relays envelopes as opaque text.
//!
//! This module is the specification's reference (chatc(1), "ENVELOPE FORMAT"
//! has every byte). ring's types stay inside it, and a failure to open is
//! reported only as [`OpenError`]: a wrong key (detected by the key id, never
//! shown as garbage), a tampered or misattributed envelope, or a malformed
//! one — never which byte was wrong.
//!
//! Replay detection is the caller's: [`Opened::nonce`] identifies a message,
//! and [`Opened::ts`] is the sender's clock, so that a client that forgot its
//! nonces (after a restart) can still refuse an old envelope presented as new.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce};
use ring::hmac;
use std::num::NonZeroU32;

use super::aead::{aes_key, hkdf32};
use super::body::{self, Body};
pub use crate::proto::shapes::ROOM_ENVELOPE_PREFIX as PREFIX;

/// Protocol label mixed into keys and authenticated data.
pub const LABEL: &[u8] = b"chatd-e2e-v1";
/// PBKDF2 iterations for passphrases.
pub const PASSPHRASE_ITERATIONS: u32 = 600_000;
/// A random secret is this many bytes, written as 43 base64url characters.
pub const SECRET_LEN: usize = 32;
const KEY_ID_LEN: usize = 4;

/// A room key, derived once per room; the raw bytes never leave this type.
pub struct RoomKey {
    aead: LessSafeKey,
    id: [u8; KEY_ID_LEN],
}

impl std::fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RoomKey(id {:02x?})", self.id)
    }
}

/// Why an envelope could not be opened. Deliberately coarse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed under another key: the reader's secret is not the sender's.
    WrongKey,
    /// The key matches but authentication failed: changed in transit, or
    /// moved to another room or sender.
    Tampered,
    /// Not an envelope of this version.
    Malformed,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpenError::WrongKey => "wrong room key",
            OpenError::Tampered => "tampered envelope rejected",
            OpenError::Malformed => "malformed envelope rejected",
        })
    }
}

/// A successfully opened envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub body: Body,
    /// The sender's clock when sealing (Unix ms).
    pub ts: u64,
    /// Unique per message; the key for replay detection.
    pub nonce: [u8; NONCE_LEN],
}

/// Case-folds a room name the way the server compares them.
pub fn room_id(room: &str) -> String {
    room.to_ascii_lowercase()
}

fn key_from_bytes(bytes: &[u8; 32]) -> RoomKey {
    let mac = hmac::Key::new(hmac::HMAC_SHA256, bytes);
    let tag = hmac::sign(&mac, b"chatd-e2e-v1 key id");
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&tag.as_ref()[..KEY_ID_LEN]);
    RoomKey {
        aead: aes_key(bytes),
        id,
    }
}

/// True if `secret` is a random secret (43 base64url characters, 32 bytes);
/// anything else is a passphrase.
pub fn is_random_secret(secret: &str) -> bool {
    secret.len() == 43
        && URL_SAFE_NO_PAD
            .decode(secret)
            .is_ok_and(|b| b.len() == SECRET_LEN)
}

/// Derives the key of `room` from a shared secret: HKDF-SHA256 for a random
/// secret, PBKDF2-HMAC-SHA256 for a passphrase.
pub fn derive_key(secret: &str, room: &str) -> RoomKey {
    let room = room_id(room);
    let mut okm = [0u8; 32];
    if is_random_secret(secret) {
        let ikm = URL_SAFE_NO_PAD.decode(secret).unwrap_or_default();
        okm = hkdf32(LABEL, &ikm, &[b"room key\0", room.as_bytes()]);
    } else {
        let mut salt = LABEL.to_vec();
        salt.extend_from_slice(b" passphrase\0");
        salt.extend_from_slice(room.as_bytes());
        let iterations = NonZeroU32::new(PASSPHRASE_ITERATIONS).unwrap_or(NonZeroU32::MIN);
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            secret.as_bytes(),
            &mut okm,
        );
    }
    key_from_bytes(&okm)
}

/// A new random secret, as shared in invites.
pub fn new_secret() -> String {
    URL_SAFE_NO_PAD.encode(crate::random::bytes::<SECRET_LEN>())
}

/// The authenticated data: label, 0, folded room, 0, sender as the server
/// will show it.
fn aad(room: &str, sender: &str) -> Vec<u8> {
    let mut a = LABEL.to_vec();
    a.push(0);
    a.extend_from_slice(room_id(room).as_bytes());
    a.push(0);
    a.extend_from_slice(sender.as_bytes());
    a
}

/// Seals `body` for `room` as sent by `sender`, with a fresh random nonce.
pub fn seal(key: &RoomKey, room: &str, sender: &str, body: &Body, ts: u64) -> String {
    seal_with_nonce(key, room, sender, body, ts, crate::random::bytes())
}

/// [`seal`] with a given nonce: for test vectors only. Reusing a nonce with
/// the same key destroys GCM's security.
pub fn seal_with_nonce(
    key: &RoomKey,
    room: &str,
    sender: &str,
    body: &Body,
    ts: u64,
    nonce: [u8; NONCE_LEN],
) -> String {
    let mut data = body::encode(body, ts);
    let aad = aad(room, sender);
    // Only fails if the plaintext is beyond GCM's 64 GiB limit.
    if key
        .aead
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut data,
        )
        .is_err()
    {
        panic!("plaintext too large for AES-GCM");
    }
    let mut out = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + data.len());
    out.extend_from_slice(&key.id);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&data);
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
}

/// Opens an envelope received for `room` from `sender`.
pub fn open(key: &RoomKey, room: &str, sender: &str, envelope: &str) -> Result<Opened, OpenError> {
    let b64 = envelope.strip_prefix(PREFIX).ok_or(OpenError::Malformed)?;
    let mut raw = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| OpenError::Malformed)?;
    if raw.len() < crate::proto::shapes::ROOM_ENVELOPE_MIN {
        return Err(OpenError::Malformed);
    }
    let (id, rest) = raw.split_at(KEY_ID_LEN);
    if id != key.id {
        return Err(OpenError::WrongKey);
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&rest[..NONCE_LEN]);
    let start = KEY_ID_LEN + NONCE_LEN;
    let sealed = &mut raw[start..];
    let aad = aad(room, sender);
    let plain = key
        .aead
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), sealed)
        .map_err(|_| OpenError::Tampered)?;
    let (body, ts) = body::decode(plain).ok_or(OpenError::Tampered)?;
    Ok(Opened { body, ts, nonce })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector printed in chatc(1). If this changes, the man page
    /// must change with it, and old clients can no longer read new messages.
    pub const VECTOR_SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    pub const VECTOR_ROOM: &str = "#Secret-Club";
    pub const VECTOR_SENDER: &str = "alice";
    pub const VECTOR_TS: u64 = 1_700_000_000_000;
    pub const VECTOR_NONCE: [u8; 12] = [
        0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab,
    ];
    pub const VECTOR_TEXT: &str = "meet at noon";

    #[test]
    fn the_documented_test_vector() {
        assert!(is_random_secret(VECTOR_SECRET));
        let key = derive_key(VECTOR_SECRET, VECTOR_ROOM);
        let env = seal_with_nonce(
            &key,
            VECTOR_ROOM,
            VECTOR_SENDER,
            &Body::Text(VECTOR_TEXT.into()),
            VECTOR_TS,
            VECTOR_NONCE,
        );
        let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/chatc.1"))
            .unwrap_or_default();
        let in_man = man.replace("\\&", "").replace("\\-", "-");
        assert!(
            in_man.contains(&env),
            "chatc.1 must print this envelope: {env}"
        );
        let opened = open(&key, VECTOR_ROOM, VECTOR_SENDER, &env).unwrap();
        assert_eq!(opened.body, Body::Text(VECTOR_TEXT.into()));
        assert_eq!(opened.ts, VECTOR_TS);
    }

    #[test]
    fn round_trips_every_body_and_binds_room_and_sender() {
        let key = derive_key(&new_secret(), "#r");
        for body in [
            Body::Text("hello ✓".into()),
            Body::Action("waves".into()),
            Body::Image {
                name: "c.png".into(),
                mime: "image/png".into(),
                data: vec![1, 2, 3],
            },
            Body::File {
                name: "n.txt".into(),
                mime: "text/plain".into(),
                data: vec![],
            },
        ] {
            let env = seal(&key, "#R", "bob", &body, 5);
            assert!(crate::proto::shapes::room_envelope_ok(&env, 1 << 20));
            assert_eq!(open(&key, "#r", "bob", &env).map(|o| o.body), Ok(body));
            assert_eq!(open(&key, "#other", "bob", &env), Err(OpenError::Tampered));
            assert_eq!(open(&key, "#r", "mallory", &env), Err(OpenError::Tampered));
        }
    }

    #[test]
    fn nonces_are_fresh() {
        let key = derive_key(&new_secret(), "#r");
        let a = open(
            &key,
            "#r",
            "a",
            &seal(&key, "#r", "a", &Body::Text("x".into()), 1),
        )
        .unwrap();
        let b = open(
            &key,
            "#r",
            "a",
            &seal(&key, "#r", "a", &Body::Text("x".into()), 1),
        )
        .unwrap();
        assert_ne!(a.nonce, b.nonce);
    }

    #[test]
    fn wrong_key_tampering_and_garbage() {
        let key = derive_key(&new_secret(), "#r");
        let other = derive_key(&new_secret(), "#r");
        let env = seal(&key, "#r", "a", &Body::Text("secret".into()), 1);
        assert_eq!(open(&other, "#r", "a", &env), Err(OpenError::WrongKey));
        // Flip one character of the ciphertext (after the key id and nonce).
        let mut chars: Vec<char> = env.chars().collect();
        let i = PREFIX.len() + 30;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let bad: String = chars.into_iter().collect();
        assert_eq!(open(&key, "#r", "a", &bad), Err(OpenError::Tampered));
        assert_eq!(open(&key, "#r", "a", "E1.!!!"), Err(OpenError::Malformed));
        assert_eq!(open(&key, "#r", "a", "hello"), Err(OpenError::Malformed));
        assert!(!crate::proto::shapes::room_envelope_ok("E1.AAAA", 100));
    }

    #[test]
    fn passphrases_and_room_binding() {
        assert!(!is_random_secret("correct horse battery staple"));
        let k1 = derive_key("correct horse battery staple", "#club");
        let k2 = derive_key("correct horse battery staple", "#CLUB");
        let k3 = derive_key("correct horse battery staple", "#other");
        let env = seal(&k1, "#club", "a", &Body::Text("x".into()), 1);
        assert!(open(&k2, "#club", "a", &env).is_ok(), "room names fold");
        assert_eq!(open(&k3, "#club", "a", &env), Err(OpenError::WrongKey));
    }
}
