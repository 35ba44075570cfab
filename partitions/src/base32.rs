//! Lowercase RFC 4648 base32 without padding: the printable form of org ids
//! and enrolment tokens. Easy to read aloud, safe in URLs, file names and
//! shells. Decoding is strict: every character must be in the alphabet and
//! the unused bits of the last character must be zero, so each byte string
//! has exactly one text.

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

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
    let mut text = String::with_capacity(encoded_len(bytes.len()));
    let mut bits: u32 = 0;
    let mut bit_count = 0u32;
    for &byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        bit_count += 8;
        while bit_count >= 5 {
            bit_count -= 5;
            text.push(ALPHABET[((bits >> bit_count) & 31) as usize] as char);
        }
        bits &= (1 << bit_count) - 1;
    }
    if bit_count > 0 {
        text.push(ALPHABET[((bits << (5 - bit_count)) & 31) as usize] as char);
    }
    text
}

pub fn decode(text: &str) -> Result<Vec<u8>, Base32Error> {
    // Lengths that leave 5 or more spare bits cannot come from `encode`.
    if matches!(text.len() % 8, 1 | 3 | 6) {
        return Err(Base32Error::Length { len: text.len() });
    }
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut bits: u32 = 0;
    let mut bit_count = 0u32;
    for (at, ch) in text.chars().enumerate() {
        let value = match ch {
            'a'..='z' => ch as u32 - 'a' as u32,
            '2'..='7' => ch as u32 - '2' as u32 + 26,
            _ => return Err(Base32Error::Character { ch, at }),
        };
        bits = (bits << 5) | value;
        bit_count += 5;
        if bit_count >= 8 {
            bit_count -= 8;
            out.push((bits >> bit_count) as u8);
            bits &= (1 << bit_count) - 1;
        }
    }
    if bits != 0 {
        return Err(Base32Error::NotCanonical);
    }
    Ok(out)
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
    fn base32_rejects_non_canonical_and_foreign_text() {
        assert_eq!(decode("ab"), Err(Base32Error::NotCanonical));
        assert_eq!(decode("a"), Err(Base32Error::Length { len: 1 }));
        assert_eq!(decode("A2"), Err(Base32Error::Character { ch: 'A', at: 0 }));
    }
}
