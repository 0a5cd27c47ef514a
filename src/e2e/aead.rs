//! The primitives both envelope formats share, so that each is written once:
//! an AES-256-GCM key from 32 bytes and HKDF-SHA256 to 32 bytes. ring's types
//! stay inside `e2e`.

use ring::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use ring::hkdf;

/// ring's HKDF output length, for 32-byte keys.
struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// An AES-256-GCM key. Infallible: AES-256 takes exactly 32 bytes.
pub fn aes_key(bytes: &[u8; 32]) -> LessSafeKey {
    let unbound = UnboundKey::new(&AES_256_GCM, bytes)
        .unwrap_or_else(|_| unreachable!("a 32-byte AES-256 key"));
    LessSafeKey::new(unbound)
}

/// HKDF-SHA256 (extract with `salt`, expand with the parts of `info`) to 32
/// bytes.
pub fn hkdf32(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> [u8; 32] {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut okm = [0u8; 32];
    // expand and fill fail only for lengths over 255 * 32 bytes.
    if let Ok(o) = prk.expand(info, Len32) {
        let _ = o.fill(&mut okm);
    }
    okm
}
