//! The end-to-end formats as the server sees them: without a key it can check
//! only a prefix, the alphabet and a plausible length. The layouts behind the
//! lengths are chatc(1)'s ("ENVELOPE FORMAT", "DIRECT MESSAGE ENVELOPE", "KEY
//! BUNDLES"); `crate::e2e` builds and opens them, and its tests check that the
//! sizes here match what it makes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A room envelope starts with this; the digit is the format version.
pub const ROOM_ENVELOPE_PREFIX: &str = "E1.";
/// A room envelope signed by its sender (version 2).
pub const SIGNED_ENVELOPE_PREFIX: &str = "E2.";
/// The smallest room envelope: key id (4), nonce (12), tag (16), and the
/// smallest body (version, kind, 8-byte time).
pub const ROOM_ENVELOPE_MIN: usize = 4 + 12 + 16 + 2 + 8;
/// A direct-message envelope starts with this.
pub const DM_ENVELOPE_PREFIX: &str = "D1.";
/// Fixed bytes of a DM envelope before its text: ephemeral key (32), two key
/// slots (2 x 48), nonce (12), tag (16), message id (16), signature (64), and
/// the smallest body (10).
pub const DM_OVERHEAD: usize = 32 + 2 * (32 + 16) + 12 + 16 + 16 + 64 + 10;
/// A published key bundle starts with this.
pub const BUNDLE_PREFIX: &str = "K1.";
/// Bytes of a bundle: Ed25519 public key, X25519 public key, signature.
pub const BUNDLE_LEN: usize = 32 + 32 + 64;

fn base64url(s: &str) -> bool {
    s.bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// A room envelope of at most `max_bytes` decoded bytes, by its shape.
pub fn room_envelope_ok(envelope: &str, max_bytes: usize) -> bool {
    let Some(b64) = envelope
        .strip_prefix(ROOM_ENVELOPE_PREFIX)
        .or_else(|| envelope.strip_prefix(SIGNED_ENVELOPE_PREFIX))
    else {
        return false;
    };
    if b64.len() > max_bytes.saturating_mul(4) / 3 + 4 {
        return false;
    }
    URL_SAFE_NO_PAD
        .decode(b64)
        .is_ok_and(|raw| raw.len() >= ROOM_ENVELOPE_MIN)
}

/// True if a DM's text has the shape of an envelope: the server then shows nc
/// users a notice instead of base64.
pub fn dm_envelope_ok(text: &str) -> bool {
    text.strip_prefix(DM_ENVELOPE_PREFIX)
        .is_some_and(|b| b.len() >= DM_OVERHEAD * 4 / 3 && base64url(b))
}

/// A published key bundle, by its shape.
pub fn bundle_ok(bundle: &str) -> bool {
    bundle
        .strip_prefix(BUNDLE_PREFIX)
        .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
        .is_some_and(|raw| raw.len() == BUNDLE_LEN)
}
