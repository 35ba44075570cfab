//! Ed25519 keys as rcgen sees them, and key identifiers.
//!
//! rcgen signs through the `SigningKey` trait; we implement it with
//! ed25519-dalek so no other crypto library is involved. A key identifier is
//! the first 20 bytes of a domain-separated blake3 hash of the raw key.

use ed25519_dalek::Signer as _;

/// Bytes of a key identifier (the size of the customary SHA-1 identifiers).
pub const KEY_ID_BYTES: usize = 20;

/// The identifier written into the subject and authority key identifier
/// extensions for a public key.
pub fn key_id(public_key: &[u8; 32]) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"ferry key id v1\0");
    hasher.update(public_key);
    hasher.finalize().as_bytes()[..KEY_ID_BYTES].to_vec()
}

/// A signing key rcgen can sign with.
pub(crate) struct EdSigner<'a>(pub &'a ed25519_dalek::SigningKey);

impl rcgen::PublicKeyData for EdSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        AsRef::<ed25519_dalek::VerifyingKey>::as_ref(self.0).as_bytes()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl rcgen::SigningKey for EdSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.0.sign(msg).to_bytes().to_vec())
    }
}

/// A subject known only by its public key.
pub(crate) struct EdPublic<'a>(pub &'a [u8; 32]);

impl rcgen::PublicKeyData for EdPublic<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

/// Whether 32 bytes are a usable Ed25519 public key: a canonical encoding of
/// a point that is not of small order.
pub fn is_valid_public_key(bytes: &[u8; 32]) -> bool {
    match ed25519_dalek::VerifyingKey::from_bytes(bytes) {
        Ok(key) => !key.is_weak() && key.to_edwards().compress().to_bytes() == *bytes,
        Err(_) => false,
    }
}

/// Lowercase hex, for ids and keys in messages.
pub fn hex(bytes: &[u8]) -> String {
    partitions::hex::encode(bytes)
}

/// Parses hex of exactly `N` bytes.
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    partitions::hex::decode::<N>(text)
}
