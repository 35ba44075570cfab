//! Enrolment tokens: TAO's "generate credentials on the central server, enter
//! them on the client", as one line to copy and paste.
//!
//! The issuer keeps a `TokenRecord` (the hash of the secret, the scope to
//! grant, expiry, uses left); the device gets a `Token` naming the issuer's
//! peer key and addresses, the secret, the org and the scope it will get.
//! `redeem` is the pure check the issuer runs when a device presents a
//! secret and its key: right secret, not expired, uses left, then a
//! certificate. The network exchange lives in `node`.
//!
//! The printed token is `ferry-enrol-` followed by lowercase base32 of this
//! canonical CBOR map:
//!
//! ```text
//! { 0: 1, 1: bytes(32) issuer key, 2: [text address, …], 3: bytes(32) secret,
//!   4: uint expires_at, 5: bytes(16) org id, 6: [read prefix…], 7: [write prefix…],
//!   8: { type: mode } }
//! ```

use ed25519_dalek::SigningKey;
use minicbor::{Decoder, Encoder};
use partitions::{OrgId, Scope, base32};
use rand_core::CryptoRng;

use crate::chain::Chain;
use crate::extension::{
    ExtensionError, bounded_str, cbor_error, definite, expect_key, from_minicbor, read_scope_fields, write_scope_fields,
};
use crate::issue::{IssueError, IssueRequest, Issuer};
use crate::key::{hex, is_valid_public_key};
use crate::limits::{TOKEN_ADDRESS_BYTES_MAX, TOKEN_ADDRESSES_MAX, TOKEN_TEXT_MAX};

const PREFIX: &str = "ferry-enrol-";
const VERSION: u64 = 1;

/// What a device needs to enrol: who to contact and what to prove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The issuer's Ed25519 key, which is also its libp2p identity.
    pub issuer_key: [u8; 32],
    /// Where the issuer listens (multiaddrs as text).
    pub addresses: Vec<String>,
    pub secret: [u8; 32],
    /// Seconds since 1970 after which the token is refused.
    pub expires_at: u64,
    pub org: OrgId,
    /// What the certificate will grant.
    pub scope: Scope,
}

/// The issuer's record of a token it handed out.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    /// Hex of the first 16 bytes of the secret's hash: names the token in
    /// listings without revealing it.
    pub id: String,
    pub secret_hash: [u8; 32],
    pub org: OrgId,
    pub scope: Scope,
    pub can_issue: Option<u8>,
    pub authority: Option<String>,
    /// How long certificates issued with this token are valid, in seconds.
    pub certificate_validity: u64,
    pub expires_at: u64,
    pub uses_left: u32,
}

/// Why a token line cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a token starts with {PREFIX:?}")]
    Prefix,
    #[error("the token is {len} characters, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("the token is damaged (not base32): {0}")]
    Base32(#[from] partitions::base32::Base32Error),
    #[error("the token is damaged: {0}")]
    Content(#[from] ExtensionError),
}

/// Why the issuer refuses to enrol a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrolError {
    #[error("the token's secret is wrong")]
    WrongSecret,
    #[error("the token expired at {} (time is {})", crate::rfc3339(*expires_at), crate::rfc3339(*now))]
    Expired { expires_at: u64, now: u64 },
    #[error("the token has been used up")]
    UsedUp,
    #[error("the device key is not a valid Ed25519 public key")]
    BadSubjectKey,
    #[error("the issuer cannot issue this certificate: {0}")]
    Issue(#[from] IssueError),
}

impl Token {
    pub fn encode(&self) -> String {
        let mut e = Encoder::new(Vec::new());
        let _ = e.map(9).and_then(|e| e.u64(0)).and_then(|e| e.u64(VERSION));
        let _ = e.u64(1).and_then(|e| e.bytes(&self.issuer_key));
        let _ = e.u64(2).and_then(|e| e.array(self.addresses.len() as u64));
        for address in &self.addresses {
            let _ = e.str(address);
        }
        let _ = e.u64(3).and_then(|e| e.bytes(&self.secret));
        let _ = e.u64(4).and_then(|e| e.u64(self.expires_at));
        let _ = e.u64(5).and_then(|e| e.bytes(self.org.as_bytes()));
        write_scope_fields(&mut e, &self.scope, 6);
        format!("{PREFIX}{}", base32::encode(&e.into_writer()))
    }

    pub fn decode(text: &str) -> Result<Token, TokenError> {
        let text = text.trim();
        if text.len() > TOKEN_TEXT_MAX {
            return Err(TokenError::TooLong { len: text.len(), max: TOKEN_TEXT_MAX });
        }
        let body = text.strip_prefix(PREFIX).ok_or(TokenError::Prefix)?;
        let bytes = base32::decode(body)?;
        let token = decode_cbor(&bytes)?;
        if token.encode() != text {
            return Err(TokenError::Content(ExtensionError::NotCanonical));
        }
        Ok(token)
    }
}

fn decode_cbor(bytes: &[u8]) -> Result<Token, ExtensionError> {
    let mut d = Decoder::new(bytes);
    if definite(d.map(), &d)? != 9 {
        return Err(cbor_error(&d, "token map must have 9 entries"));
    }
    expect_key(&mut d, 0)?;
    let version = d.u64().map_err(|e| from_minicbor(&d, e))?;
    if version != VERSION {
        return Err(ExtensionError::Version { found: version });
    }
    expect_key(&mut d, 1)?;
    let issuer_key = fixed::<32>(&mut d, "issuer key")?;
    expect_key(&mut d, 2)?;
    let count = definite(d.array(), &d)?;
    if count > TOKEN_ADDRESSES_MAX as u64 {
        return Err(ExtensionError::TooMany { what: "addresses", count, max: TOKEN_ADDRESSES_MAX });
    }
    let mut addresses = Vec::new();
    for _ in 0..count {
        addresses.push(bounded_str(&mut d, "address", TOKEN_ADDRESS_BYTES_MAX)?.to_owned());
    }
    expect_key(&mut d, 3)?;
    let secret = fixed::<32>(&mut d, "secret")?;
    expect_key(&mut d, 4)?;
    let expires_at = d.u64().map_err(|e| from_minicbor(&d, e))?;
    expect_key(&mut d, 5)?;
    let org = OrgId::from_bytes(fixed::<16>(&mut d, "org id")?);
    let scope = read_scope_fields(&mut d, org, 6)?;
    if d.position() != bytes.len() {
        return Err(cbor_error(&d, "trailing bytes after the token"));
    }
    Ok(Token { issuer_key, addresses, secret, expires_at, org, scope })
}

fn fixed<const N: usize>(d: &mut Decoder<'_>, what: &str) -> Result<[u8; N], ExtensionError> {
    let bytes = d.bytes().map_err(|e| from_minicbor(d, e))?;
    bytes.try_into().map_err(|_| cbor_error(d, &format!("{what} must be {N} bytes")))
}

/// The hash the issuer keeps instead of the secret.
pub fn secret_hash(secret: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"ferry enrolment secret v1\0");
    hasher.update(secret);
    *hasher.finalize().as_bytes()
}

/// What an issuer wants a token to grant.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub scope: Scope,
    pub can_issue: Option<u8>,
    pub authority: Option<String>,
    pub certificate_validity: u64,
    pub expires_at: u64,
    pub uses: u32,
}

/// Creates a token and the issuer's record of it. The scope must lie
/// within the issuer's own, checked here so that a bad token is never
/// handed out.
pub fn create_token(
    issuer: &Issuer,
    issuer_key: &SigningKey,
    addresses: Vec<String>,
    request: &TokenRequest,
    rng: &mut impl CryptoRng,
) -> Result<(Token, TokenRecord), IssueError> {
    request.scope.check_within(&issuer.chain().leaf().info().scope).map_err(IssueError::ScopeWidened)?;
    if !issuer.chain().leaf().is_ca() {
        return Err(IssueError::NotCa);
    }
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let hash = secret_hash(&secret);
    let org = issuer.org();
    let token = Token {
        issuer_key: issuer_key.verifying_key().to_bytes(),
        addresses,
        secret,
        expires_at: request.expires_at,
        org,
        scope: request.scope.clone(),
    };
    let record = TokenRecord {
        id: hex(&hash[..16]),
        secret_hash: hash,
        org,
        scope: request.scope.clone(),
        can_issue: request.can_issue,
        authority: request.authority.clone(),
        certificate_validity: request.certificate_validity,
        expires_at: request.expires_at,
        uses_left: request.uses,
    };
    Ok((token, record))
}

/// Checks a presented secret and device key against the issuer's record and
/// issues the device's chain, valid from `now`. Counts a use only when a
/// certificate is issued.
pub fn redeem(
    record: &mut TokenRecord,
    secret: &[u8; 32],
    subject_key: &[u8; 32],
    subject_name: &str,
    now: u64,
    issuer: &Issuer,
    serial: [u8; 16],
) -> Result<Chain, EnrolError> {
    redeem_at(record, secret, subject_key, subject_name, now, now, issuer, serial)
}

/// Like `redeem`, with the certificate valid from `not_before` (at most
/// `now`): an issuer backdates the start a little so a device whose clock
/// is behind its own can use the certificate at once.
#[allow(clippy::too_many_arguments)]
pub fn redeem_at(
    record: &mut TokenRecord,
    secret: &[u8; 32],
    subject_key: &[u8; 32],
    subject_name: &str,
    now: u64,
    not_before: u64,
    issuer: &Issuer,
    serial: [u8; 16],
) -> Result<Chain, EnrolError> {
    // blake3::Hash compares in constant time.
    if blake3::Hash::from(secret_hash(secret)) != blake3::Hash::from(record.secret_hash) {
        return Err(EnrolError::WrongSecret);
    }
    if now > record.expires_at {
        return Err(EnrolError::Expired { expires_at: record.expires_at, now });
    }
    if record.uses_left == 0 {
        return Err(EnrolError::UsedUp);
    }
    if !is_valid_public_key(subject_key) {
        return Err(EnrolError::BadSubjectKey);
    }
    let issuer_end = issuer.chain().leaf().not_after();
    let request = IssueRequest {
        subject_key: *subject_key,
        name: subject_name.to_owned(),
        scope: record.scope.clone(),
        not_before: not_before.min(now),
        not_after: now.saturating_add(record.certificate_validity).min(issuer_end),
        can_issue: record.can_issue,
        authority: record.authority.clone(),
    };
    let chain = issuer.issue(&request, serial)?;
    record.uses_left -= 1;
    Ok(chain)
}
