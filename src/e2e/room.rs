//! End-to-end envelopes for encrypted rooms: AES-256-GCM (ring), keys from a
//! shared secret bound to the room, authenticated data binding protocol
//! version, room and sender. The server relays envelopes as opaque text.
//!
//! Two versions: `E1.` (anyone with the secret can write it under any
//! nick: all members share the key) and `E2.`, which also carries the
//! sender's Ed25519 public key and signature inside the ciphertext, so a
//! reader who pinned that nick's key (as for direct messages) knows who
//! wrote it. chatc writes `E2.` whenever it is logged in with an identity,
//! and reads both.
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
use super::body::{self, Body, BodyError};
use super::identity::Identity;
pub use crate::proto::shapes::ROOM_ENVELOPE_PREFIX as PREFIX;
pub use crate::proto::shapes::SIGNED_ENVELOPE_PREFIX as PREFIX2;

/// Protocol label mixed into keys and authenticated data.
pub const LABEL: &[u8] = b"chatd-e2e-v1";
/// Label of the signed version's authenticated data.
pub const LABEL2: &[u8] = b"chatd-e2e-v2";
/// What an `E2.` signature starts with.
const SIG_LABEL: &[u8] = b"chatd-e2e-v2 sig";
const SIG_LEN: usize = 64;
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
    /// Not an envelope of this version, or a plaintext that does not hold
    /// together.
    Malformed,
    /// Authentic, but of a plaintext version or kind this build does not
    /// know: not shown.
    Unknown,
}

impl From<BodyError> for OpenError {
    fn from(e: BodyError) -> OpenError {
        match e {
            BodyError::Unknown => OpenError::Unknown,
            BodyError::Malformed => OpenError::Malformed,
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpenError::WrongKey => "wrong room key",
            OpenError::Tampered => "tampered envelope rejected",
            OpenError::Malformed => "malformed envelope rejected",
            OpenError::Unknown => {
                "an envelope of a kind this chatc does not know (a newer sender?): not shown; update chatc"
            }
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
    /// `E2.`: the Ed25519 key whose signature checked out. Whose key it is
    /// is for the reader to know (its pins); `None` for `E1.`.
    pub signer: Option<[u8; 32]>,
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
    key_from_bytes(&room_key_bytes(secret, room))
}

/// The 32 bytes of `room`'s key (the intermediate value of chatc(1)'s test
/// vectors; chatc itself keeps only the [`RoomKey`]).
pub fn room_key_bytes(secret: &str, room: &str) -> [u8; 32] {
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
    okm
}

/// A new random secret, as shared in invites.
pub fn new_secret() -> String {
    URL_SAFE_NO_PAD.encode(crate::random::bytes::<SECRET_LEN>())
}

/// The authenticated data: label (of the version), 0, folded room, 0,
/// sender as the server will show it.
fn aad_with(label: &[u8], room: &str, sender: &str) -> Vec<u8> {
    let mut a = label.to_vec();
    a.push(0);
    a.extend_from_slice(room_id(room).as_bytes());
    a.push(0);
    a.extend_from_slice(sender.as_bytes());
    a
}

fn aad(room: &str, sender: &str) -> Vec<u8> {
    aad_with(LABEL, room, sender)
}

/// What an `E2.` signature covers: label, 0, folded room, 0, folded sender,
/// 0, key id, nonce, and the plaintext body.
fn signed_part(room: &str, sender: &str, id: &[u8], nonce: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = SIG_LABEL.to_vec();
    for part in [room_id(room), sender.to_ascii_lowercase()] {
        m.push(0);
        m.extend_from_slice(part.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(id);
    m.extend_from_slice(nonce);
    m.extend_from_slice(body);
    m
}

/// Seals `body` as `E2.`, signed by `me` (whose nick `sender` is).
pub fn seal_signed(
    key: &RoomKey,
    me: &Identity,
    room: &str,
    sender: &str,
    body: &Body,
    ts: u64,
) -> String {
    seal_signed_with_nonce(key, me, room, sender, body, ts, crate::random::bytes())
}

/// [`seal_signed`] with a given nonce: for test vectors only.
pub fn seal_signed_with_nonce(
    key: &RoomKey,
    me: &Identity,
    room: &str,
    sender: &str,
    body: &Body,
    ts: u64,
    nonce: [u8; NONCE_LEN],
) -> String {
    let plain = body::encode(body, ts);
    let sig = me.sign(&signed_part(room, sender, &key.id, &nonce, &plain));
    let mut data = Vec::with_capacity(32 + SIG_LEN + plain.len() + 16);
    data.extend_from_slice(&me.public().ed);
    data.extend_from_slice(&sig);
    data.extend_from_slice(&plain);
    let aad = aad_with(LABEL2, room, sender);
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
    format!("{PREFIX2}{}", URL_SAFE_NO_PAD.encode(out))
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

/// Opens an envelope (`E1.` or `E2.`) received for `room` from `sender`.
pub fn open(key: &RoomKey, room: &str, sender: &str, envelope: &str) -> Result<Opened, OpenError> {
    let (signed, b64) = match (
        envelope.strip_prefix(PREFIX),
        envelope.strip_prefix(PREFIX2),
    ) {
        (Some(b), _) => (false, b),
        (None, Some(b)) => (true, b),
        (None, None) => return Err(OpenError::Malformed),
    };
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
    let aad = if signed {
        aad_with(LABEL2, room, sender)
    } else {
        aad(room, sender)
    };
    let plain = key
        .aead
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), sealed)
        .map_err(|_| OpenError::Tampered)?;
    if !signed {
        let (body, ts) = body::decode(plain)?;
        return Ok(Opened {
            body,
            ts,
            nonce,
            signer: None,
        });
    }
    if plain.len() < 32 + SIG_LEN {
        return Err(OpenError::Tampered);
    }
    let (ed, rest) = plain.split_at(32);
    let (sig, body_bytes) = rest.split_at(SIG_LEN);
    let ed: [u8; 32] = ed.try_into().map_err(|_| OpenError::Tampered)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &ed)
        .verify(&signed_part(room, sender, &key.id, &nonce, body_bytes), sig)
        .map_err(|_| OpenError::Tampered)?;
    let (body, ts) = body::decode(body_bytes)?;
    Ok(Opened {
        body,
        ts,
        nonce,
        signer: Some(ed),
    })
}

/// The room key's id, for test vectors and debugging (it says nothing of
/// the key).
pub fn key_id(key: &RoomKey) -> [u8; KEY_ID_LEN] {
    key.id
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

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// chatc(1)'s further vectors, as (what, value) pairs that must all be
    /// printed there: a passphrase with spaces, a private room, a
    /// mixed-case nick, a file body and a signed envelope, with their room
    /// keys and key ids.
    fn further_vectors() -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let text = Body::Text(VECTOR_TEXT.into());
        let mut add = |what,
                       secret: &str,
                       room: &str,
                       sender: &str,
                       body: &Body,
                       signer: Option<&Identity>| {
            let raw = room_key_bytes(secret, room);
            let key = derive_key(secret, room);
            out.push((what, hex(&raw)));
            out.push((what, hex(&key_id(&key))));
            let env = match signer {
                Some(id) => {
                    seal_signed_with_nonce(&key, id, room, sender, body, VECTOR_TS, VECTOR_NONCE)
                }
                None => seal_with_nonce(&key, room, sender, body, VECTOR_TS, VECTOR_NONCE),
            };
            let opened = open(&key, room, sender, &env).expect("opens");
            assert_eq!(&opened.body, body);
            assert_eq!(opened.signer, signer.map(|id| id.public().ed));
            out.push((what, env));
        };
        add(
            "passphrase",
            "correct horse battery staple",
            VECTOR_ROOM,
            "alice",
            &text,
            None,
        );
        add(
            "private room",
            VECTOR_SECRET,
            "~Qx7Kp2",
            "alice",
            &text,
            None,
        );
        add(
            "mixed-case nick",
            VECTOR_SECRET,
            VECTOR_ROOM,
            "Alice",
            &text,
            None,
        );
        let file = Body::File {
            name: "notes.txt".into(),
            mime: "text/plain".into(),
            data: b"hello\n".to_vec(),
        };
        add("file", VECTOR_SECRET, VECTOR_ROOM, "alice", &file, None);
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = i as u8;
        }
        let alice = Identity::from_seeds(&seed, [0x20; 32]).expect("seed");
        add(
            "signed",
            VECTOR_SECRET,
            VECTOR_ROOM,
            "Alice",
            &text,
            Some(&alice),
        );
        out
    }

    #[test]
    fn the_further_documented_vectors() {
        let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/chatc.1"))
            .unwrap_or_default();
        let in_man = man
            .replace("\\&", "")
            .replace("\\-", "-")
            .replace("\n.Li ", "")
            .replace('\n', "");
        let missing: Vec<String> = further_vectors()
            .into_iter()
            .filter(|(_, value)| !in_man.contains(value))
            .map(|(what, value)| format!("{what}: {value}"))
            .collect();
        assert!(
            missing.is_empty(),
            "chatc.1 must print:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn the_signer_is_bound_and_the_sender_folded_only_in_the_signature() {
        let key = derive_key(VECTOR_SECRET, VECTOR_ROOM);
        let id = Identity::generate();
        let env = seal_signed(&key, &id, "#r", "Alice", &Body::Text("x".into()), 1);
        assert!(open(&key, "#r", "Alice", &env).is_ok());
        // The associated data has the nick as shown: another case is another sender.
        assert_eq!(open(&key, "#r", "alice", &env), Err(OpenError::Tampered));
        // An E1 reader's label does not open E2, nor the reverse.
        let e1 = format!("E1.{}", env.trim_start_matches("E2."));
        assert_eq!(open(&key, "#r", "Alice", &e1), Err(OpenError::Tampered));
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
