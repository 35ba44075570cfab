//! Lowercase RFC 4648 base32 without padding: the printable form of org ids
//! and enrolment tokens. Easy to read aloud, safe in URLs, file names and
//! shells. Decoding is strict: every character must be in the alphabet and
//! the unused bits of the last character must be zero, so each byte string
//! has exactly one text. `data-encoding` does the work; this module names
//! the alphabet and turns its errors into ours.

use std::sync::LazyLock;

use data_encoding::{DecodeKind, Encoding, Specification};

/// The alphabet, in value order (RFC 4648's, lowercase).
const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz234567";

/// No padding, trailing bits checked, nothing ignored: one text per value.
static LOWER_NOPAD: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str(ALPHABET);
    spec.check_trailing_bits = true;
    spec.encoding().expect("32 distinct ASCII symbols are a valid base32 specification")
});

/// Why a text is not base32.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base32Error {
    #[error("character {ch:?} at {at} is not base32 (a-z, 2-7)")]
    Character { ch: char, at: usize },
    #[error("base32 text has an impossible length {len}")]
    Length { len: usize },
    #[error("base32 text is not in canonical form (its last character has stray bits)")]
    NotCanonical,
}

/// Characters needed for `bytes` bytes.
pub const fn encoded_len(bytes: usize) -> usize {
    (bytes * 8).div_ceil(5)
}

pub fn encode(bytes: &[u8]) -> String {
    LOWER_NOPAD.encode(bytes)
}

pub fn decode(text: &str) -> Result<Vec<u8>, Base32Error> {
    LOWER_NOPAD.decode(text.as_bytes()).map_err(|e| match e.kind {
        DecodeKind::Length => Base32Error::Length { len: text.len() },
        DecodeKind::Trailing => Base32Error::NotCanonical,
        // No padding is defined, so a padding error is a stray character too.
        DecodeKind::Symbol | DecodeKind::Padding => {
            // `position` is a byte offset at the start of the bad character
            // (every symbol is ASCII); `at` counts characters.
            let at = text.get(..e.position).map_or(e.position, |before| before.chars().count());
            let ch = text.get(e.position..).and_then(|rest| rest.chars().next()).unwrap_or('\u{fffd}');
            Base32Error::Character { ch, at }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_round_trips_every_length() {
        for len in 0..40usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = encode(&bytes);
            assert_eq!(text.len(), encoded_len(len));
            assert_eq!(decode(&text), Ok(bytes));
        }
    }

    #[test]
    fn base32_matches_the_rfc_4648_vectors_in_lowercase() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode(encoded), Ok(plain.as_bytes().to_vec()));
        }
    }

    #[test]
    fn base32_rejects_non_canonical_and_foreign_text() {
        assert_eq!(decode("ab"), Err(Base32Error::NotCanonical));
        assert_eq!(decode("a"), Err(Base32Error::Length { len: 1 }));
        assert_eq!(decode("A2"), Err(Base32Error::Character { ch: 'A', at: 0 }));
        assert_eq!(decode("mzé2"), Err(Base32Error::Character { ch: 'é', at: 2 }));
        assert_eq!(decode("mz=q"), Err(Base32Error::Character { ch: '=', at: 2 }));
    }
}
