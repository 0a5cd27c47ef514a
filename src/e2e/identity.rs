//! End-to-end direct messages: long-term identities, the key bundles users
//! publish through the server, safety numbers, and the direct-message
//! envelope (`D1.`). chatc(1), "DIRECT MESSAGE ENVELOPE", specifies every
//! byte; this module is its reference.
//!
//! An identity is two keys: Ed25519 (ring) to sign, X25519 to receive.
//! ring's key agreement is ephemeral-only, and a recipient who may be
//! offline needs a *static* X25519 key that others encrypt to, so the X25519
//! half uses x25519-dalek (`StaticSecret`). A published bundle binds the
//! X25519 key and the nick to the Ed25519 key with a signature, so the server
//! cannot swap the encryption key or move a bundle to another nick without
//! the change showing.
//!
//! A direct message is sealed once, for two readers: a fresh message key
//! encrypts the body (AES-256-GCM), and is wrapped for the recipient and for
//! the sender (so the sender can read its own history), each under a key
//! agreed between one fresh ephemeral X25519 key and that reader's static
//! key, through HKDF-SHA256. Inside the ciphertext is the sender's Ed25519
//! signature over everything, including both nicks and the ephemeral key:
//! the server learns who wrote to whom, when and how much, and nothing else,
//! and cannot forge, alter, re-address or misattribute a message.
//!
//! Failures to open are reported only as [`DmError`]; replay detection (by
//! [`OpenedDm::id`]) is the caller's, as for room envelopes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce};
use ring::digest;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use x25519_dalek::{PublicKey, StaticSecret};

use super::aead::{aes_key, hkdf32};
use super::body::{self, Body};
use crate::random::bytes as random;

/// Text prefixes; the digit is the format version.
pub use crate::proto::shapes::{BUNDLE_LEN, BUNDLE_PREFIX, DM_ENVELOPE_PREFIX as DM_PREFIX};
/// Label in signatures, key derivation and authenticated data.
pub const DM_LABEL: &[u8] = b"chatd-dm-v1";
const BUNDLE_LABEL: &[u8] = b"chatd-key-v1";
const SAFETY_LABEL: &[u8] = b"chatd-safety-v1";
const SIG_LEN: usize = 64;
const TAG_LEN: usize = 16;
const ID_LEN: usize = 16;
const SLOT_LEN: usize = 32 + TAG_LEN;
/// Fixed bytes of a DM envelope before its text: ephemeral key, two slots,
/// nonce, tag, message id, signature, and the smallest body.
pub const DM_OVERHEAD: usize = 32 + 2 * SLOT_LEN + NONCE_LEN + TAG_LEN + ID_LEN + SIG_LEN + 10;

/// Case-folds a nick the way the server compares them.
pub fn nick_id(nick: &str) -> String {
    nick.to_ascii_lowercase()
}

/// Why an identity file could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityError(pub String);

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One's own long-term keys. The secret halves never leave this type except
/// through [`Identity::to_file`], for the 0600 file chatc keeps them in.
pub struct Identity {
    sign: Ed25519KeyPair,
    /// PKCS#8 of `sign`, kept for saving.
    pkcs8: Vec<u8>,
    x: StaticSecret,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.public().short())
    }
}

const FILE_HEAD: &str = "chatc-identity-v1";

impl Identity {
    /// A new random identity.
    pub fn generate() -> Identity {
        let rng = crate::random::generator();
        let pkcs8 = match Ed25519KeyPair::generate_pkcs8(&rng) {
            Ok(d) => d.as_ref().to_vec(),
            Err(_) => panic!("no randomness available from the operating system"),
        };
        let x = StaticSecret::from(random::<32>());
        Identity::from_parts(&pkcs8, x).unwrap_or_else(|_| unreachable!("fresh PKCS#8"))
    }

    fn from_parts(pkcs8: &[u8], x: StaticSecret) -> Result<Identity, IdentityError> {
        let sign = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| IdentityError("the signing key is not valid PKCS#8 Ed25519".into()))?;
        Ok(Identity {
            sign,
            pkcs8: pkcs8.to_vec(),
            x,
        })
    }

    /// From the two 32-byte seeds (for test vectors).
    pub fn from_seeds(ed_seed: &[u8; 32], x_secret: [u8; 32]) -> Result<Identity, IdentityError> {
        let sign = Ed25519KeyPair::from_seed_unchecked(ed_seed)
            .map_err(|_| IdentityError("bad Ed25519 seed".into()))?;
        Ok(Identity {
            sign,
            pkcs8: Vec::new(),
            x: StaticSecret::from(x_secret),
        })
    }

    /// The text of the identity file (keep it private).
    pub fn to_file(&self) -> String {
        format!(
            "{FILE_HEAD}\ned25519-pkcs8 {}\nx25519 {}\n",
            URL_SAFE_NO_PAD.encode(&self.pkcs8),
            URL_SAFE_NO_PAD.encode(self.x.to_bytes())
        )
    }

    pub fn from_file(text: &str) -> Result<Identity, IdentityError> {
        let mut lines = text.lines();
        if lines.next() != Some(FILE_HEAD) {
            return Err(IdentityError(format!("not a {FILE_HEAD} file")));
        }
        let mut pkcs8 = None;
        let mut x = None;
        for l in lines {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            let bytes = URL_SAFE_NO_PAD
                .decode(v.trim())
                .map_err(|_| IdentityError(format!("{k}: not base64url")))?;
            match k {
                "ed25519-pkcs8" => pkcs8 = Some(bytes),
                "x25519" => {
                    let arr: [u8; 32] = bytes
                        .try_into()
                        .map_err(|_| IdentityError("x25519: not 32 bytes".into()))?;
                    x = Some(StaticSecret::from(arr));
                }
                _ => {}
            }
        }
        match (pkcs8, x) {
            (Some(p), Some(x)) => Identity::from_parts(&p, x),
            _ => Err(IdentityError("missing a key".into())),
        }
    }

    pub fn public(&self) -> PeerKey {
        let mut ed = [0u8; 32];
        ed.copy_from_slice(self.sign.public_key().as_ref());
        PeerKey {
            ed,
            x: PublicKey::from(&self.x).to_bytes(),
        }
    }

    /// An Ed25519 signature of `msg` (room envelopes, `E2.`).
    pub fn sign(&self, msg: &[u8]) -> [u8; SIG_LEN] {
        let mut out = [0u8; SIG_LEN];
        out.copy_from_slice(self.sign.sign(msg).as_ref());
        out
    }

    /// The bundle to publish for `nick`.
    pub fn bundle(&self, nick: &str) -> String {
        let key = self.public();
        let sig = self.sign.sign(&bundle_signed(nick, &key.x));
        let mut raw = Vec::with_capacity(BUNDLE_LEN);
        raw.extend_from_slice(&key.ed);
        raw.extend_from_slice(&key.x);
        raw.extend_from_slice(sig.as_ref());
        format!("{BUNDLE_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
    }
}

/// Someone's public keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub ed: [u8; 32],
    pub x: [u8; 32],
}

impl PeerKey {
    /// A short form for logs and prompts: the first 8 bytes of SHA-256 of
    /// the Ed25519 key, in hex groups.
    pub fn short(&self) -> String {
        let d = digest::digest(&digest::SHA256, &self.ed);
        d.as_ref()
            .get(..8)
            .unwrap_or(&[])
            .chunks(2)
            .map(|c| c.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// `ed x` in base64url, for a known-keys file.
    pub fn to_text(&self) -> String {
        format!(
            "{} {}",
            URL_SAFE_NO_PAD.encode(self.ed),
            URL_SAFE_NO_PAD.encode(self.x)
        )
    }

    pub fn from_text(s: &str) -> Option<PeerKey> {
        let (a, b) = s.trim().split_once(' ')?;
        Some(PeerKey {
            ed: URL_SAFE_NO_PAD.decode(a).ok()?.try_into().ok()?,
            x: URL_SAFE_NO_PAD.decode(b).ok()?.try_into().ok()?,
        })
    }
}

fn bundle_signed(nick: &str, x: &[u8; 32]) -> Vec<u8> {
    let nick = nick_id(nick);
    let mut m = BUNDLE_LABEL.to_vec();
    m.push(nick.len().min(255) as u8);
    m.extend_from_slice(nick.as_bytes());
    m.extend_from_slice(x);
    m
}

/// Parses a bundle published for `nick` and checks its signature: the
/// X25519 key and the nick must be signed by the Ed25519 key.
pub fn parse_bundle(nick: &str, bundle: &str) -> Option<PeerKey> {
    let raw = URL_SAFE_NO_PAD
        .decode(bundle.strip_prefix(BUNDLE_PREFIX)?)
        .ok()?;
    if raw.len() != BUNDLE_LEN {
        return None;
    }
    let ed: [u8; 32] = raw.get(..32)?.try_into().ok()?;
    let x: [u8; 32] = raw.get(32..64)?.try_into().ok()?;
    let sig = raw.get(64..)?;
    signature::UnparsedPublicKey::new(&signature::ED25519, &ed)
        .verify(&bundle_signed(nick, &x), sig)
        .ok()?;
    Some(PeerKey { ed, x })
}

/// The safety number of two users: the same for both, whoever computes it.
/// Six groups of five digits (about 100 bits) from SHA-256 over both nicks
/// and Ed25519 keys, in nick order.
pub fn safety_number(a: &str, a_key: &PeerKey, b: &str, b_key: &PeerKey) -> String {
    let mut parts = [(nick_id(a), a_key.ed), (nick_id(b), b_key.ed)];
    parts.sort();
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(SAFETY_LABEL);
    for (n, ed) in &parts {
        ctx.update(&[n.len().min(255) as u8]);
        ctx.update(n.as_bytes());
        ctx.update(ed);
    }
    let d = ctx.finish();
    d.as_ref()
        .chunks(5)
        .take(6)
        .map(|c| {
            let v = c.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b));
            format!("{:05}", v % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a direct-message envelope could not be opened. Deliberately coarse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmError {
    /// Not sealed for this reader (or this reader's key changed).
    NotForMe,
    /// Authentication failed: changed in transit, re-addressed, or the
    /// sender shown is not who sealed it.
    Tampered,
    /// It opened, but the signature is not the sender's known key.
    Forged,
    /// Not an envelope of this version.
    Malformed,
    /// Authentic, but of a plaintext version or kind this build does not
    /// know: not shown.
    Unknown,
}

impl std::fmt::Display for DmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DmError::NotForMe => "not encrypted for your key",
            DmError::Tampered => "tampered direct message rejected",
            DmError::Forged => "forged direct message rejected: not signed by the sender's key",
            DmError::Malformed => "malformed direct message rejected",
            DmError::Unknown => {
                "a direct message of a kind this chatc does not know (a newer sender?): not shown; update chatc"
            }
        })
    }
}

/// An opened direct message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedDm {
    pub body: Body,
    /// The sender's clock when sealing (Unix ms).
    pub ts: u64,
    /// Unique per message; the key for replay detection.
    pub id: [u8; ID_LEN],
}

/// Label, then each folded nick behind a length byte: sender, recipient.
fn header(from: &str, to: &str) -> Vec<u8> {
    let mut h = DM_LABEL.to_vec();
    for n in [nick_id(from), nick_id(to)] {
        h.push(n.len().min(255) as u8);
        h.extend_from_slice(n.as_bytes());
    }
    h
}

/// The key that wraps the message key for one reader.
fn slot_key(shared: &[u8; 32], eph: &[u8; 32], reader: &[u8; 32]) -> LessSafeKey {
    aes_key(&hkdf32(DM_LABEL, shared, &[b"slot\0", eph, reader]))
}

/// The secret parts of one sealing, given for test vectors.
pub struct SealSecrets {
    pub eph: [u8; 32],
    pub message_key: [u8; 32],
    pub nonce: [u8; NONCE_LEN],
    pub id: [u8; ID_LEN],
}

/// Seals `body` from `from` (whose identity is `me`) to `to` (`to_key`).
pub fn seal_dm(
    me: &Identity,
    from: &str,
    to: &str,
    to_key: &PeerKey,
    body: &Body,
    ts: u64,
) -> String {
    let s = SealSecrets {
        eph: random(),
        message_key: random(),
        nonce: random(),
        id: random(),
    };
    seal_dm_with(me, from, to, to_key, body, ts, &s)
}

/// [`seal_dm`] with given randomness: for test vectors only.
pub fn seal_dm_with(
    me: &Identity,
    from: &str,
    to: &str,
    to_key: &PeerKey,
    body: &Body,
    ts: u64,
    s: &SealSecrets,
) -> String {
    let eph = StaticSecret::from(s.eph);
    let eph_pub = PublicKey::from(&eph).to_bytes();
    let head = header(from, to);
    let body_enc = body::encode(body, ts);
    let mut signed = head.clone();
    signed.extend_from_slice(&eph_pub);
    signed.extend_from_slice(&s.id);
    signed.extend_from_slice(&body_enc);
    let sig = me.sign.sign(&signed);
    let mut inner = Vec::with_capacity(ID_LEN + SIG_LEN + body_enc.len() + TAG_LEN);
    inner.extend_from_slice(&s.id);
    inner.extend_from_slice(sig.as_ref());
    inner.extend_from_slice(&body_enc);
    let mut out = Vec::with_capacity(32 + 2 * SLOT_LEN + NONCE_LEN + inner.len() + TAG_LEN);
    out.extend_from_slice(&eph_pub);
    let my_x = me.public().x;
    for reader in [&to_key.x, &my_x] {
        let shared = eph.diffie_hellman(&PublicKey::from(*reader)).to_bytes();
        let mut slot = s.message_key.to_vec();
        // Each slot key is used once, so a zero nonce is unique for it.
        if slot_key(&shared, &eph_pub, reader)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; NONCE_LEN]),
                Aad::from(&head),
                &mut slot,
            )
            .is_err()
        {
            panic!("AES-GCM refused 32 bytes");
        }
        out.extend_from_slice(&slot);
    }
    // The body's associated data covers the ephemeral key and both slots
    // too, so that no byte of the envelope can change unnoticed by either
    // reader (a reader opens only its own slot).
    let mut body_aad = head.clone();
    body_aad.extend_from_slice(&out);
    out.extend_from_slice(&s.nonce);
    if aes_key(&s.message_key)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(s.nonce),
            Aad::from(&body_aad),
            &mut inner,
        )
        .is_err()
    {
        panic!("plaintext too large for AES-GCM");
    }
    out.extend_from_slice(&inner);
    format!("{DM_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
}

/// Opens a DM shown by the server as from `from` to `to`, as `me` (one of
/// the two), checking the signature against `from_key` (the sender's key as
/// pinned by the reader).
pub fn open_dm(
    me: &Identity,
    from: &str,
    to: &str,
    from_key: &PeerKey,
    envelope: &str,
) -> Result<OpenedDm, DmError> {
    let raw = URL_SAFE_NO_PAD
        .decode(envelope.strip_prefix(DM_PREFIX).ok_or(DmError::Malformed)?)
        .map_err(|_| DmError::Malformed)?;
    if raw.len() < DM_OVERHEAD {
        return Err(DmError::Malformed);
    }
    let (eph_pub, rest) = raw.split_at(32);
    let (slots, rest) = rest.split_at(2 * SLOT_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let eph_pub: [u8; 32] = eph_pub.try_into().map_err(|_| DmError::Malformed)?;
    let head = header(from, to);
    let my_x = me.public().x;
    let shared = me.x.diffie_hellman(&PublicKey::from(eph_pub)).to_bytes();
    let sk = slot_key(&shared, &eph_pub, &my_x);
    // Which slot is ours is not said: try both (the recipient's first).
    let mut message_key = None;
    for slot in slots.chunks(SLOT_LEN) {
        let mut s = slot.to_vec();
        if let Ok(k) = sk.open_in_place(
            Nonce::assume_unique_for_key([0; NONCE_LEN]),
            Aad::from(&head),
            &mut s,
        ) && let Ok(k) = <[u8; 32]>::try_from(&*k)
        {
            message_key = Some(k);
            break;
        }
    }
    // Neither slot opens: not for this key, or the header (nicks) changed.
    let message_key = message_key.ok_or(DmError::NotForMe)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| DmError::Malformed)?;
    let mut sealed = sealed.to_vec();
    let mut body_aad = head.clone();
    body_aad.extend_from_slice(raw.get(..32 + 2 * SLOT_LEN).ok_or(DmError::Malformed)?);
    let inner = aes_key(&message_key)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&body_aad),
            &mut sealed,
        )
        .map_err(|_| DmError::Tampered)?;
    if inner.len() < ID_LEN + SIG_LEN {
        return Err(DmError::Malformed);
    }
    let (id, rest) = inner.split_at(ID_LEN);
    let (sig, body_enc) = rest.split_at(SIG_LEN);
    let mut signed = head;
    signed.extend_from_slice(&eph_pub);
    signed.extend_from_slice(id);
    signed.extend_from_slice(body_enc);
    signature::UnparsedPublicKey::new(&signature::ED25519, &from_key.ed)
        .verify(&signed, sig)
        .map_err(|_| DmError::Forged)?;
    let (body, ts) = body::decode(body_enc).map_err(|e| match e {
        body::BodyError::Unknown => DmError::Unknown,
        body::BodyError::Malformed => DmError::Malformed,
    })?;
    Ok(OpenedDm {
        body,
        ts,
        id: id.try_into().map_err(|_| DmError::Malformed)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Identity, Identity) {
        (Identity::generate(), Identity::generate())
    }

    /// `env` with one bit of its byte at `at` flipped (counted from the end
    /// if `at` is negative).
    fn flip(env: &str, at: isize) -> String {
        let mut raw = URL_SAFE_NO_PAD.decode(&env[3..]).unwrap();
        let i = if at < 0 {
            raw.len() - at.unsigned_abs()
        } else {
            at as usize
        };
        raw[i] ^= 1;
        format!("D1.{}", URL_SAFE_NO_PAD.encode(&raw))
    }

    #[test]
    fn bundles_bind_nick_and_keys() {
        let a = Identity::generate();
        let b = a.bundle("Alice");
        assert!(crate::proto::shapes::bundle_ok(&b));
        assert_eq!(parse_bundle("alice", &b), Some(a.public()));
        assert_eq!(parse_bundle("mallory", &b), None, "moved to another nick");
        let mut raw = URL_SAFE_NO_PAD.decode(&b[3..]).unwrap();
        raw[40] ^= 1; // another X25519 key under the same signature
        let forged = format!("K1.{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(parse_bundle("alice", &forged), None);
    }

    #[test]
    fn identity_file_round_trips() {
        let a = Identity::generate();
        let back = Identity::from_file(&a.to_file()).unwrap();
        assert_eq!(back.public(), a.public());
        assert!(Identity::from_file("nope").is_err());
    }

    #[test]
    fn safety_numbers_agree_and_differ() {
        let (a, b) = pair();
        let n1 = safety_number("alice", &a.public(), "Bob", &b.public());
        let n2 = safety_number("bob", &b.public(), "ALICE", &a.public());
        assert_eq!(n1, n2);
        assert_eq!(n1.split(' ').count(), 6);
        let c = Identity::generate();
        assert_ne!(n1, safety_number("alice", &a.public(), "bob", &c.public()));
    }

    #[test]
    fn both_parties_open_and_nobody_else() {
        let (a, b) = pair();
        let body = Body::Text("meet at 6".into());
        let env = seal_dm(&a, "alice", "bob", &b.public(), &body, 42);
        assert!(crate::proto::shapes::dm_envelope_ok(&env));
        let got = open_dm(&b, "alice", "bob", &a.public(), &env).unwrap();
        assert_eq!((got.body.clone(), got.ts), (body.clone(), 42));
        // The sender reads its own copy.
        let mine = open_dm(&a, "alice", "bob", &a.public(), &env).unwrap();
        assert_eq!(mine.id, got.id);
        let eve = Identity::generate();
        assert_eq!(
            open_dm(&eve, "alice", "bob", &a.public(), &env),
            Err(DmError::NotForMe)
        );
    }

    #[test]
    fn changing_the_other_readers_slot_is_caught_too() {
        // Found by the dm_open fuzz target: bob opens only his slot, so a
        // changed sender's slot went unnoticed until the slots were bound.
        let (a, b) = pair();
        let env = seal_dm(&a, "alice", "bob", &b.public(), &Body::Text("hi".into()), 1);
        let bent = flip(&env, (32 + SLOT_LEN + 5) as isize);
        assert_eq!(
            open_dm(&b, "alice", "bob", &a.public(), &bent),
            Err(DmError::Tampered)
        );
    }

    #[test]
    fn tampering_readdressing_and_forgery_are_caught() {
        let (a, b) = pair();
        let env = seal_dm(&a, "alice", "bob", &b.public(), &Body::Text("hi".into()), 1);
        let bent = flip(&env, -1);
        assert_eq!(
            open_dm(&b, "alice", "bob", &a.public(), &bent),
            Err(DmError::Tampered)
        );
        // Shown as from someone else: the slots do not open.
        assert_eq!(
            open_dm(&b, "carol", "bob", &a.public(), &env),
            Err(DmError::NotForMe)
        );
        // The right header, but not signed by the key bob has for alice.
        let other = Identity::generate();
        assert_eq!(
            open_dm(&b, "alice", "bob", &other.public(), &env),
            Err(DmError::Forged)
        );
        assert_eq!(
            open_dm(&b, "alice", "bob", &a.public(), "D1.!!"),
            Err(DmError::Malformed)
        );
    }
}

#[cfg(test)]
mod vector {
    use super::*;

    fn seq(start: u8) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = start + i as u8;
        }
        b
    }

    /// The identities, bundles, safety number and envelope of chatc(1)'s
    /// "Test vector" for direct messages.
    pub fn documented() -> (String, String, String, String) {
        let alice = Identity::from_seeds(&seq(0x00), seq(0x20)).unwrap();
        let bob = Identity::from_seeds(&seq(0x40), seq(0x60)).unwrap();
        let s = SealSecrets {
            eph: seq(0x80),
            message_key: seq(0xa0),
            nonce: seq(0xc0)[..12].try_into().unwrap(),
            id: seq(0xd0)[..16].try_into().unwrap(),
        };
        let body = Body::Text("meet at noon".into());
        let env = seal_dm_with(
            &alice,
            "alice",
            "bob",
            &bob.public(),
            &body,
            1_700_000_000_000,
            &s,
        );
        let n = safety_number("alice", &alice.public(), "bob", &bob.public());
        (alice.bundle("alice"), bob.bundle("bob"), n, env)
    }

    #[test]
    fn the_documented_dm_vector() {
        let (a, b, n, env) = documented();
        let bob = Identity::from_seeds(&seq(0x40), seq(0x60)).unwrap();
        let alice_key = parse_bundle("alice", &a).unwrap();
        let got = open_dm(&bob, "alice", "bob", &alice_key, &env).unwrap();
        assert_eq!(got.body, Body::Text("meet at noon".into()));
        let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/chatc.1"))
            .unwrap()
            .replace("\\&", "")
            .replace("\\-", "-");
        let flat: String = man.lines().collect::<Vec<_>>().join("");
        for (what, v) in [
            ("alice's bundle", &a),
            ("bob's bundle", &b),
            ("safety number", &n),
            ("envelope", &env),
        ] {
            assert!(
                flat.contains(v.as_str()),
                "chatc(1) lacks the vector's {what}: {v}"
            );
        }
    }
}
