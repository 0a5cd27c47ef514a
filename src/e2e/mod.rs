//! End-to-end encryption, for chatc (and the web page, which implements the
//! same formats): the server never sees a key or a plaintext of what is
//! sealed here, and only checks the shapes in [`crate::proto::shapes`].
//!
//! * [`room`] — room envelopes (`E1.`): a key derived from a shared secret
//!   and bound to the room, AES-256-GCM, sender and room in the AAD;
//! * [`identity`] — long-term identities, published key bundles (`K1.`),
//!   safety numbers and direct-message envelopes (`D1.`);
//! * [`body`] — the plaintext both envelopes carry;
//! * `aead` — the AES-GCM and HKDF helpers both share.
//!
//! chatc(1) specifies every byte, with test vectors; these modules are its
//! reference, and `tests/envelope_reference.py` is an independent reader.
//! ring's types do not leave this module; failures to open are coarse enums
//! that never say which byte was wrong.

mod aead;
pub mod body;
pub mod identity;
pub mod room;

pub use body::Body;

#[cfg(test)]
mod tests {
    use crate::proto::shapes;

    /// The server's shape checks use sizes written out by hand; they must be
    /// the sizes of what this module makes.
    #[test]
    fn the_server_side_shapes_match_the_formats() {
        assert_eq!(shapes::DM_OVERHEAD, super::identity::DM_OVERHEAD);
        let key = super::room::derive_key(&super::room::new_secret(), "#r");
        let env = super::room::seal(&key, "#r", "a", &super::Body::Text(String::new()), 0);
        let raw_len = (env.len() - shapes::ROOM_ENVELOPE_PREFIX.len()) * 3 / 4;
        assert_eq!(raw_len, shapes::ROOM_ENVELOPE_MIN);
        let id = super::identity::Identity::generate();
        assert!(shapes::bundle_ok(&id.bundle("a")));
    }
}
