//! Lowercase hex for ids and keys in text (certificate ids, instance ids).
//! Decoding also takes uppercase digits: people type ids. `data-encoding`
//! does the work.

use data_encoding::{HEXLOWER, HEXLOWER_PERMISSIVE};

pub fn encode(bytes: &[u8]) -> String {
    HEXLOWER.encode(bytes)
}

/// Exactly `N` bytes written as `2 * N` hex digits, or `None`.
pub fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    HEXLOWER_PERMISSIVE.decode_mut(text.as_bytes(), &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_out_and_either_case_in() {
        assert_eq!(encode(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(decode::<3>("00ab7f"), Some([0x00, 0xab, 0x7f]));
        assert_eq!(decode::<3>("00AB7F"), Some([0x00, 0xab, 0x7f]));
        assert_eq!(decode::<3>("00ab7"), None);
        assert_eq!(decode::<3>("00ab7g"), None);
        assert_eq!(decode::<2>("00ab7f"), None);
    }
}
