//! Organisation ids: self-certifying names for a root of trust.
//!
//! An `OrgId` is the first 16 bytes of a domain-separated blake3 hash of the
//! org root's Ed25519 public key. Anyone holding the root certificate can check
//! the id without a registry. It prints as 26 characters of lowercase RFC 4648
//! base32 without padding; the two spare bits of the last character must be
//! zero, so every id has exactly one printed form.

use std::fmt;
use std::str::FromStr;

use crate::base32::{self, Base32Error};

/// Bytes in an org id.
pub const ORG_ID_BYTES: usize = 16;
/// Characters in the printed form of an org id.
pub const ORG_ID_TEXT_LEN: usize = base32::encoded_len(ORG_ID_BYTES);

const DOMAIN: &[u8] = b"ferry org id v1\0";

/// The id of an organisation, derived from its root public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrgId([u8; ORG_ID_BYTES]);

/// Why a text is not an org id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgIdError {
    #[error("org id must be {expected} characters, got {len}")]
    Length { len: usize, expected: usize },
    #[error("org id has character {ch:?} at {at}; only a-z and 2-7 are allowed")]
    Character { ch: char, at: usize },
    #[error("org id is not in canonical form (its last character has stray bits)")]
    NotCanonical,
}

impl OrgId {
    /// The org id of a root public key.
    pub fn from_public_key(root_key: &[u8; 32]) -> OrgId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(DOMAIN);
        hasher.update(root_key);
        let hash = hasher.finalize();
        let mut bytes = [0u8; ORG_ID_BYTES];
        bytes.copy_from_slice(&hash.as_bytes()[..ORG_ID_BYTES]);
        OrgId(bytes)
    }

    pub fn from_bytes(bytes: [u8; ORG_ID_BYTES]) -> OrgId {
        OrgId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; ORG_ID_BYTES] {
        &self.0
    }

    /// Whether `root_key` is the key this id was derived from.
    pub fn is_key_of(&self, root_key: &[u8; 32]) -> bool {
        OrgId::from_public_key(root_key) == *self
    }

    /// Parses the printed form.
    pub fn parse(text: &str) -> Result<OrgId, OrgIdError> {
        if text.len() != ORG_ID_TEXT_LEN {
            return Err(OrgIdError::Length { len: text.len(), expected: ORG_ID_TEXT_LEN });
        }
        let bytes = base32::decode(text).map_err(|e| match e {
            Base32Error::Character { ch, at } => OrgIdError::Character { ch, at },
            Base32Error::Length { .. } | Base32Error::NotCanonical => OrgIdError::NotCanonical,
        })?;
        let bytes: [u8; ORG_ID_BYTES] = bytes.try_into().map_err(|_| OrgIdError::NotCanonical)?;
        Ok(OrgId(bytes))
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32::encode(&self.0))
    }
}

impl fmt::Debug for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgId({self})")
    }
}

impl FromStr for OrgId {
    type Err = OrgIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrgId::parse(s)
    }
}

/// Text (the printed id) in human-readable formats such as JSON; 16 bytes
/// in binary ones such as CBOR.
impl serde::Serialize for OrgId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_string())
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for OrgId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = OrgId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{ORG_ID_BYTES} bytes of org id")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<OrgId, E> {
                let bytes: [u8; ORG_ID_BYTES] = v.try_into().map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(OrgId(bytes))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OrgId, E> {
                OrgId::parse(v).map_err(E::custom)
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(Visitor)
        } else {
            deserializer.deserialize_bytes(Visitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_id_prints_as_26_lowercase_base32_characters_and_parses_back() {
        let id = OrgId::from_public_key(&[7u8; 32]);
        let text = id.to_string();
        assert_eq!(text.len(), ORG_ID_TEXT_LEN);
        assert!(text.chars().all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
        assert_eq!(OrgId::parse(&text), Ok(id));
    }

    #[test]
    fn org_id_rejects_stray_bits_in_the_last_character() {
        let id = OrgId::from_bytes([0; ORG_ID_BYTES]);
        let mut text = id.to_string();
        assert_eq!(text, "a".repeat(ORG_ID_TEXT_LEN));
        text.pop();
        text.push('b');
        assert_eq!(OrgId::parse(&text), Err(OrgIdError::NotCanonical));
    }

    #[test]
    fn org_id_rejects_wrong_length_and_alphabet() {
        assert_eq!(OrgId::parse("abc"), Err(OrgIdError::Length { len: 3, expected: ORG_ID_TEXT_LEN }));
        let text = format!("{}1", "a".repeat(ORG_ID_TEXT_LEN - 1));
        assert_eq!(OrgId::parse(&text), Err(OrgIdError::Character { ch: '1', at: 25 }));
    }

    #[test]
    fn org_id_depends_on_every_key_byte() {
        let a = OrgId::from_public_key(&[0u8; 32]);
        let mut key = [0u8; 32];
        key[31] = 1;
        assert_ne!(a, OrgId::from_public_key(&key));
        assert!(a.is_key_of(&[0u8; 32]));
        assert!(!a.is_key_of(&key));
    }
}
