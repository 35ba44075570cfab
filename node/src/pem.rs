//! PEM text for certificate chains, so `openssl x509 -text` can read what
//! `ferry cert issue` writes. Base64 (RFC 4648, padded) is written here:
//! thirty lines do not justify a dependency.

use anyhow::{Context, bail};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Bytes of PEM text we read at most (a maximal chain is 768 KiB of DER).
pub const PEM_BYTES_MAX: usize = 1_100_000;

pub fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn decode_base64(text: &str) -> anyhow::Result<Vec<u8>> {
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !clean.len().is_multiple_of(4) {
        bail!("base64 text has a length that is not a multiple of 4");
    }
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' if i >= 2 => {
                    pad += 1;
                    0
                }
                _ => bail!("{:?} is not a base64 character", c as char),
            };
            n = (n << 6) | u32::from(v);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

/// Concatenated DER certificates as PEM blocks.
pub fn encode_chain(ders: &[&[u8]]) -> String {
    let mut out = String::new();
    for der in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = encode_base64(der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// The DER of every certificate block, concatenated (a `certs::Chain` encoding).
pub fn decode_chain(text: &str) -> anyhow::Result<Vec<u8>> {
    if text.len() > PEM_BYTES_MAX {
        bail!("the file is {} bytes, more than a certificate chain can be", text.len());
    }
    let mut der = Vec::new();
    let mut rest = text;
    let mut blocks = 0;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let after = &rest[start + 27..];
        let end = after.find("-----END CERTIFICATE-----").context("a certificate block is not closed")?;
        der.extend(decode_base64(&after[..end]).context("a certificate block is damaged")?);
        rest = &after[end + 25..];
        blocks += 1;
    }
    if blocks == 0 {
        bail!("no certificate found (expected PEM blocks)");
    }
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_the_rfc_examples() {
        for (plain, encoded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(encode_base64(plain.as_bytes()), encoded);
            assert_eq!(decode_base64(encoded).unwrap(), plain.as_bytes());
        }
        assert!(decode_base64("Zm9").is_err());
        assert!(decode_base64("Z!9v").is_err());
    }
}
