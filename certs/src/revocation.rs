//! Revocations: signed statements that a certificate is no longer valid.
//!
//! A revocation names the revoked certificate, the time from which it is
//! revoked, and the certificate of the revoker, and is signed with the
//! revoker's key. It takes effect in a chain only when the revoker's
//! certificate sits above the revoked one in that same chain, so only those
//! who could vouch for a certificate can withdraw it. The encoding is fixed:
//!
//! ```text
//! revoked cert id (16) | revoked_at, u64 big-endian (8) | revoker cert id (16) | signature (64)
//! ```
//!
//! and the signature covers `"ferry revocation v1\0"` followed by the first
//! 40 bytes.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::cert::CertId;

/// Bytes of an encoded revocation.
pub const REVOCATION_BYTES: usize = 16 + 8 + 16 + 64;

const DOMAIN: &[u8] = b"ferry revocation v1\0";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revocation {
    pub revoked: CertId,
    /// Seconds since 1970 from which the certificate is revoked.
    pub revoked_at: u64,
    pub revoker: CertId,
    pub signature: [u8; 64],
}

/// Why bytes are not a revocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a revocation is exactly {REVOCATION_BYTES} bytes, got {len}")]
pub struct RevocationError {
    pub len: usize,
}

impl Revocation {
    pub fn sign(revoked: CertId, revoked_at: u64, revoker: CertId, key: &SigningKey) -> Revocation {
        let message = signed_part(revoked, revoked_at, revoker);
        Revocation { revoked, revoked_at, revoker, signature: key.sign(&message).to_bytes() }
    }

    /// Whether `revoker_key` signed this statement.
    pub fn is_signed_by(&self, revoker_key: &[u8; 32]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(revoker_key) else {
            return false;
        };
        let message = signed_part(self.revoked, self.revoked_at, self.revoker);
        key.verify_strict(&message, &Signature::from_bytes(&self.signature)).is_ok()
    }

    pub fn to_bytes(&self) -> [u8; REVOCATION_BYTES] {
        let mut out = [0u8; REVOCATION_BYTES];
        out[..40].copy_from_slice(&signed_part(self.revoked, self.revoked_at, self.revoker)[DOMAIN.len()..]);
        out[40..].copy_from_slice(&self.signature);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Revocation, RevocationError> {
        let bytes: &[u8; REVOCATION_BYTES] = bytes.try_into().map_err(|_| RevocationError { len: bytes.len() })?;
        let mut revoked = [0u8; 16];
        let mut at = [0u8; 8];
        let mut revoker = [0u8; 16];
        let mut signature = [0u8; 64];
        revoked.copy_from_slice(&bytes[..16]);
        at.copy_from_slice(&bytes[16..24]);
        revoker.copy_from_slice(&bytes[24..40]);
        signature.copy_from_slice(&bytes[40..]);
        Ok(Revocation {
            revoked: CertId(revoked),
            revoked_at: u64::from_be_bytes(at),
            revoker: CertId(revoker),
            signature,
        })
    }
}

fn signed_part(revoked: CertId, revoked_at: u64, revoker: CertId) -> Vec<u8> {
    let mut message = Vec::with_capacity(DOMAIN.len() + 40);
    message.extend_from_slice(DOMAIN);
    message.extend_from_slice(&revoked.0);
    message.extend_from_slice(&revoked_at.to_be_bytes());
    message.extend_from_slice(&revoker.0);
    message
}
