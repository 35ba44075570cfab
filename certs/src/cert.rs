//! One decoded certificate: the parts of an X.509 v3 certificate ferry uses,
//! read strictly.
//!
//! Decoding checks the form of a single certificate: DER with no trailing or
//! hidden bytes, version 3, Ed25519 key and signature, times after 1970, no
//! duplicate extensions, no critical extension we do not understand, and a
//! well-formed critical scope extension. Whether the certificate is *valid*
//! (signatures, issuers, times, scopes) is the chain's business.

use std::fmt;

use x509_parser::asn1_rs::{Any, FromDer};
use x509_parser::der_parser::Oid;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::{
    OID_SIG_ED25519, OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};

use crate::extension::{CertInfo, ExtensionError, SCOPE_EXTENSION_OID};
use crate::key::{hex, is_valid_public_key};
use crate::limits::CERT_BYTES_MAX;

/// The id of a certificate: the first 16 bytes of the blake3 hash of its
/// signed part (the TBS). The signature covers exactly those bytes and strict
/// Ed25519 signatures are not malleable, so nobody can make a second valid
/// encoding of a certificate with another id (to dodge a revocation, say).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CertId(pub [u8; 16]);

impl CertId {
    pub fn of_tbs(tbs: &[u8]) -> CertId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"ferry certificate id v1\0");
        hasher.update(tbs);
        let mut id = [0u8; 16];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        CertId(id)
    }

    /// Parses the 32-character hex form.
    pub fn parse(text: &str) -> Option<CertId> {
        crate::key::parse_hex::<16>(text).map(CertId)
    }
}

impl fmt::Display for CertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for CertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertId({self})")
    }
}

/// A decoded certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    der: Vec<u8>,
    id: CertId,
    tbs: Vec<u8>,
    signature: [u8; 64],
    subject_key: [u8; 32],
    subject_dn: Vec<u8>,
    issuer_dn: Vec<u8>,
    subject_key_id: Option<Vec<u8>>,
    authority_key_id: Option<Vec<u8>>,
    not_before: u64,
    not_after: u64,
    ca: bool,
    path_len: Option<u32>,
    info: CertInfo,
}

/// Why bytes are not a well-formed ferry certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("certificate is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("certificate is not valid DER: {reason}")]
    Der { reason: String },
    #[error("certificate has {count} bytes after its end")]
    TrailingBytes { count: usize },
    #[error("certificate hides bytes inside {part}")]
    HiddenBytes { part: &'static str },
    #[error("certificate is X.509 version {found}, not 3")]
    Version { found: u32 },
    #[error("certificate is signed with {oid}, not Ed25519")]
    SignatureAlgorithm { oid: String },
    #[error("certificate's inner and outer signature algorithms differ")]
    AlgorithmMismatch,
    #[error("certificate's public key is not a valid Ed25519 key: {reason}")]
    PublicKey { reason: &'static str },
    #[error("certificate's signature is not 64 bytes")]
    SignatureLength,
    #[error("certificate's validity {which} is before 1970")]
    Time { which: &'static str },
    #[error("certificate repeats extension {oid}")]
    DuplicateExtension { oid: String },
    #[error("certificate has unknown critical extension {oid}")]
    UnknownCriticalExtension { oid: String },
    #[error("certificate's extension {oid} is malformed: {reason}")]
    MalformedExtension { oid: String, reason: String },
    #[error("certificate has no ferry scope extension")]
    MissingScope,
    #[error("certificate's scope extension is not marked critical")]
    ScopeNotCritical,
    #[error("certificate's scope extension: {0}")]
    Scope(#[from] ExtensionError),
}

impl Certificate {
    pub fn from_der(der: &[u8]) -> Result<Certificate, DecodeError> {
        if der.len() > CERT_BYTES_MAX {
            return Err(DecodeError::TooLarge { len: der.len(), max: CERT_BYTES_MAX });
        }
        check_outer_structure(der)?;
        let (rest, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| DecodeError::Der { reason: e.to_string() })?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes { count: rest.len() });
        }
        if cert.version().0 != 2 {
            return Err(DecodeError::Version { found: cert.version().0 + 1 });
        }
        if cert.signature_algorithm.algorithm != OID_SIG_ED25519 || cert.signature_algorithm.parameters.is_some() {
            return Err(DecodeError::SignatureAlgorithm { oid: cert.signature_algorithm.algorithm.to_id_string() });
        }
        if cert.tbs_certificate.signature != cert.signature_algorithm {
            return Err(DecodeError::AlgorithmMismatch);
        }
        let spki = cert.public_key();
        if spki.algorithm.algorithm != OID_SIG_ED25519 || spki.algorithm.parameters.is_some() {
            return Err(DecodeError::PublicKey { reason: "algorithm is not Ed25519" });
        }
        check_complete_tlv(spki.raw, "the public key")?;
        let subject_key: [u8; 32] = spki
            .subject_public_key
            .data
            .as_ref()
            .try_into()
            .map_err(|_| DecodeError::PublicKey { reason: "key is not 32 bytes" })?;
        if spki.subject_public_key.unused_bits != 0 || !is_valid_public_key(&subject_key) {
            return Err(DecodeError::PublicKey { reason: "not a canonical point of full order" });
        }
        if cert.signature_value.unused_bits != 0 {
            return Err(DecodeError::SignatureLength);
        }
        let signature: [u8; 64] =
            cert.signature_value.data.as_ref().try_into().map_err(|_| DecodeError::SignatureLength)?;
        let subject_dn = cert.subject().as_raw().to_vec();
        let issuer_dn = cert.issuer().as_raw().to_vec();
        check_complete_tlv(&subject_dn, "the subject name")?;
        check_complete_tlv(&issuer_dn, "the issuer name")?;
        let not_before =
            u64::try_from(cert.validity().not_before.timestamp()).map_err(|_| DecodeError::Time { which: "start" })?;
        let not_after =
            u64::try_from(cert.validity().not_after.timestamp()).map_err(|_| DecodeError::Time { which: "end" })?;

        let scope_oid = Oid::from(SCOPE_EXTENSION_OID).map_err(|_| DecodeError::MissingScope)?;
        let mut seen: Vec<&Oid<'_>> = Vec::new();
        let mut info = None;
        let mut subject_key_id = None;
        let mut authority_key_id = None;
        let mut ca = false;
        let mut path_len = None;
        for ext in cert.extensions() {
            if seen.contains(&&ext.oid) {
                return Err(DecodeError::DuplicateExtension { oid: ext.oid.to_id_string() });
            }
            seen.push(&ext.oid);
            let malformed = |reason: String| DecodeError::MalformedExtension { oid: ext.oid.to_id_string(), reason };
            if ext.oid == scope_oid {
                if !ext.critical {
                    return Err(DecodeError::ScopeNotCritical);
                }
                info = Some(CertInfo::decode(unwrap_octet_string(ext.value).map_err(malformed)?)?);
                continue;
            }
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) if ext.oid == OID_X509_EXT_BASIC_CONSTRAINTS => {
                    ca = bc.ca;
                    path_len = bc.path_len_constraint;
                }
                ParsedExtension::SubjectKeyIdentifier(id) if ext.oid == OID_X509_EXT_SUBJECT_KEY_IDENTIFIER => {
                    subject_key_id = Some(id.0.to_vec());
                }
                ParsedExtension::AuthorityKeyIdentifier(aki) if ext.oid == OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER => {
                    authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec());
                }
                ParsedExtension::KeyUsage(_) if ext.oid == OID_X509_EXT_KEY_USAGE => {}
                ParsedExtension::ParseError { error } => return Err(malformed(error.to_string())),
                _ if ext.critical => {
                    return Err(DecodeError::UnknownCriticalExtension { oid: ext.oid.to_id_string() });
                }
                _ => {}
            }
        }
        let info = info.ok_or(DecodeError::MissingScope)?;
        Ok(Certificate {
            der: der.to_vec(),
            id: CertId::of_tbs(cert.tbs_certificate.as_ref()),
            tbs: cert.tbs_certificate.as_ref().to_vec(),
            signature,
            subject_key,
            subject_dn,
            issuer_dn,
            subject_key_id,
            authority_key_id,
            not_before,
            not_after,
            ca,
            path_len,
            info,
        })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }
    pub fn id(&self) -> CertId {
        self.id
    }
    /// The raw Ed25519 public key of the holder.
    pub fn subject_key(&self) -> &[u8; 32] {
        &self.subject_key
    }
    pub fn not_before(&self) -> u64 {
        self.not_before
    }
    pub fn not_after(&self) -> u64 {
        self.not_after
    }
    /// Whether the holder may issue certificates (basic constraints CA flag).
    pub fn is_ca(&self) -> bool {
        self.ca
    }
    /// How many CA certificates may follow this one in a chain, if limited.
    pub fn path_len(&self) -> Option<u32> {
        self.path_len
    }
    pub fn info(&self) -> &CertInfo {
        &self.info
    }
    pub(crate) fn tbs(&self) -> &[u8] {
        &self.tbs
    }
    pub(crate) fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
    pub(crate) fn subject_dn(&self) -> &[u8] {
        &self.subject_dn
    }
    pub(crate) fn issuer_dn(&self) -> &[u8] {
        &self.issuer_dn
    }
    pub(crate) fn subject_key_id(&self) -> Option<&[u8]> {
        self.subject_key_id.as_deref()
    }
    pub(crate) fn authority_key_id(&self) -> Option<&[u8]> {
        self.authority_key_id.as_deref()
    }
}

/// The certificate is one SEQUENCE of exactly three complete parts. x509-parser
/// drops bytes hidden after the last element of a SEQUENCE; a certificate
/// whose bytes mean more than what we read is refused.
fn check_outer_structure(der: &[u8]) -> Result<(), DecodeError> {
    let der_error =
        |e: x509_parser::asn1_rs::Err<x509_parser::asn1_rs::Error>| DecodeError::Der { reason: e.to_string() };
    // DER leaves one encoding per value; the parsers below are more lenient
    // about tags, so check each outer tag byte here.
    let tag = |raw: &[u8], expected: u8, part: &'static str| match raw.first() {
        Some(&t) if t == expected => Ok(()),
        _ => Err(DecodeError::Der { reason: format!("{part} has the wrong tag") }),
    };
    tag(der, 0x30, "the certificate")?;
    let (rest, outer) = Any::from_der(der).map_err(der_error)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { count: rest.len() });
    }
    tag(outer.data, 0x30, "the signed part")?;
    let (rest, tbs) = Any::from_der(outer.data).map_err(der_error)?;
    // Ed25519's AlgorithmIdentifier has exactly one DER encoding.
    const ED25519_ALGORITHM: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
    if !rest.starts_with(ED25519_ALGORITHM) {
        return Err(DecodeError::SignatureAlgorithm { oid: "not exactly Ed25519".to_owned() });
    }
    let rest = &rest[ED25519_ALGORITHM.len()..];
    tag(rest, 0x03, "the signature")?;
    let (rest, _signature) = Any::from_der(rest).map_err(der_error)?;
    if !rest.is_empty() {
        return Err(DecodeError::HiddenBytes { part: "the certificate" });
    }
    // Walk the TBS: every element must be complete, and nothing may follow
    // the last one.
    let mut rest = tbs.data;
    while !rest.is_empty() {
        let (next, _) = Any::from_der(rest).map_err(der_error)?;
        rest = next;
    }
    Ok(())
}

fn check_complete_tlv(raw: &[u8], part: &'static str) -> Result<(), DecodeError> {
    match Any::from_der(raw) {
        Ok(([], _)) => Ok(()),
        _ => Err(DecodeError::HiddenBytes { part }),
    }
}

/// The extension value is a DER OCTET STRING holding the CBOR.
fn unwrap_octet_string(value: &[u8]) -> Result<&[u8], String> {
    let (rest, any) = Any::from_der(value).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err("bytes after the octet string".to_owned());
    }
    if any.header.tag().0 != 4 || any.header.is_constructed() {
        return Err("value is not an octet string".to_owned());
    }
    Ok(any.data)
}

/// Wraps bytes in a DER OCTET STRING (the form of the scope extension's value).
pub fn octet_string(content: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}
