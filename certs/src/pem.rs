//! PEM text for certificate chains (RFC 7468), so `openssl x509 -text` reads
//! what `ferry cert issue` writes and ferry reads what openssl writes. The
//! `pem` crate parses and encodes; this module bounds the text before it is
//! parsed, keeps only `CERTIFICATE` blocks, and writes the form ferry has
//! always written: LF line endings, 64-character lines, one block after
//! another with no blank line between them.

use crate::chain::Chain;
use crate::limits::PEM_BYTES_MAX;

const CERTIFICATE_TAG: &str = "CERTIFICATE";

/// Why a text is not a PEM certificate chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("the file is {len} bytes, more than a certificate chain can be")]
    TooLarge { len: usize, max: usize },
    #[error("no certificate found (expected PEM blocks)")]
    NoCertificate,
    #[error("a certificate block is not closed")]
    NotClosed,
    #[error("a PEM block is damaged: {reason}")]
    Damaged { reason: String },
}

/// The chain's certificates as PEM blocks, root first.
pub fn encode_chain(chain: &Chain) -> String {
    let config = ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF);
    chain
        .certs()
        .iter()
        .map(|cert| ::pem::encode_config(&::pem::Pem::new(CERTIFICATE_TAG, cert.der()), config))
        .collect()
}

/// The DER of every certificate block, concatenated in order: a
/// `Chain::decode` encoding. Other blocks and text around the blocks (such
/// as `openssl x509 -text` output) are ignored.
pub fn decode_chain(text: &str) -> Result<Vec<u8>, PemError> {
    if text.len() > PEM_BYTES_MAX {
        return Err(PemError::TooLarge { len: text.len(), max: PEM_BYTES_MAX });
    }
    let blocks = ::pem::parse_many(text).map_err(|e| PemError::Damaged { reason: e.to_string() })?;
    // The parser stops quietly at a block with no end line.
    if text.matches("-----BEGIN ").count() > blocks.len() {
        return Err(PemError::NotClosed);
    }
    let der: Vec<u8> =
        blocks.iter().filter(|b| b.tag() == CERTIFICATE_TAG).flat_map(|b| b.contents().iter().copied()).collect();
    if der.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(der)
}
