//! Certificate chains and their verification.
//!
//! A chain is the org root first, then each issued certificate, the holder's
//! last. Encoded, it is the certificates' DER one after another (DER is self
//! delimiting). Verification takes the time and the known revocations as
//! arguments and reads no clock. Every way a chain can be bad has its own
//! `VerifyError` variant naming the certificate (by index, root = 0) and the
//! numbers that explain it.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, VerifyingKey};
use partitions::{OrgId, Scope, Widening};
use x509_parser::asn1_rs::{Any, FromDer};

use crate::cert::{CertId, Certificate, DecodeError};
use crate::key::hex;
use crate::limits::{CERT_BYTES_MAX, CHAIN_BYTES_MAX, CHAIN_DEPTH_MAX};
use crate::revocation::Revocation;
use crate::rfc3339;

/// A decoded chain, root first. Not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    certs: Vec<Certificate>,
}

/// What a verified chain grants its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub org: OrgId,
    pub scope: Scope,
    pub authority: Option<String>,
    pub subject_key: [u8; 32],
    pub leaf: CertId,
    /// The earliest end of validity along the chain.
    pub not_after: u64,
}

/// The revocations a verifier knows of, by revoked certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revocations {
    by_revoked: BTreeMap<CertId, Vec<Revocation>>,
}

impl Revocations {
    pub fn insert(&mut self, revocation: Revocation) {
        let list = self.by_revoked.entry(revocation.revoked).or_default();
        if !list.contains(&revocation) {
            list.push(revocation);
            list.sort();
        }
    }

    pub fn of(&self, cert: CertId) -> &[Revocation] {
        self.by_revoked.get(&cert).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.by_revoked.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_revoked.is_empty()
    }
}

/// Why a chain does not grant anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the chain is empty")]
    Empty,
    #[error("the chain is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("the chain has {depth} certificates, more than the {max} allowed")]
    TooDeep { depth: usize, max: usize },
    #[error("certificate {index} cannot be read: {error}")]
    Decode { index: usize, error: DecodeError },
    #[error("the root's key hashes to org {key_org}, but the root claims org {claimed}")]
    WrongOrgRoot { claimed: OrgId, key_org: OrgId },
    #[error("certificate {index} belongs to org {found}, but the chain's root is org {expected}")]
    OrgMismatch { index: usize, expected: OrgId, found: OrgId },
    #[error("the root certificate is not self-issued")]
    RootNotSelfIssued,
    #[error("the root certificate is not a CA")]
    RootNotCa,
    #[error("the root certificate's scope reaches outside its org")]
    RootScopeOutsideOrg,
    #[error("certificate {index} names an issuer that is not certificate {}", index - 1)]
    IssuerMismatch { index: usize },
    #[error("certificate {index}'s authority key id does not match its issuer's key")]
    AuthorityKeyMismatch { index: usize },
    #[error("certificate {index}'s signature does not verify with its issuer's key")]
    BadSignature { index: usize },
    #[error("certificate {index} issued a certificate but may not issue (not a CA)")]
    IssuerNotCa { index: usize },
    #[error("certificate {index} allows {allowed} issuing levels below it, the chain has {found}")]
    PathLengthExceeded { index: usize, allowed: u32, found: u32 },
    #[error("certificate {index} is not valid before {} (time is {})", rfc3339(*not_before), rfc3339(*at))]
    NotYetValid { index: usize, not_before: u64, at: u64 },
    #[error("certificate {index} expired at {} (time is {})", rfc3339(*not_after), rfc3339(*at))]
    Expired { index: usize, not_after: u64, at: u64 },
    #[error(
        "certificate {index} is valid {}..{}, outside its issuer's {}..{}",
        rfc3339(*not_before),
        rfc3339(*not_after),
        rfc3339(*issuer_not_before),
        rfc3339(*issuer_not_after)
    )]
    OutlivesIssuer { index: usize, not_before: u64, not_after: u64, issuer_not_before: u64, issuer_not_after: u64 },
    #[error("certificate {index} is wider than its issuer: it {widening}")]
    ScopeWidened { index: usize, widening: Widening },
    #[error("the chain belongs to key {found}, not to the peer's key {expected}")]
    LeafKeyMismatch { expected: String, found: String },
    #[error("certificate {index} ({cert}) was revoked at {} by {by}", rfc3339(*revoked_at))]
    Revoked { index: usize, cert: CertId, revoked_at: u64, by: CertId },
}

impl Chain {
    /// A chain of already decoded certificates.
    pub fn from_certificates(certs: Vec<Certificate>) -> Result<Chain, VerifyError> {
        if certs.is_empty() {
            return Err(VerifyError::Empty);
        }
        if certs.len() > CHAIN_DEPTH_MAX {
            return Err(VerifyError::TooDeep { depth: certs.len(), max: CHAIN_DEPTH_MAX });
        }
        Ok(Chain { certs })
    }

    /// Decodes concatenated DER certificates, root first.
    pub fn decode(bytes: &[u8]) -> Result<Chain, VerifyError> {
        if bytes.len() > CHAIN_BYTES_MAX {
            return Err(VerifyError::TooLarge { len: bytes.len(), max: CHAIN_BYTES_MAX });
        }
        let mut certs = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let index = certs.len();
            if index == CHAIN_DEPTH_MAX {
                return Err(VerifyError::TooDeep { depth: index + 1, max: CHAIN_DEPTH_MAX });
            }
            let (next, _) = Any::from_der(rest)
                .map_err(|e| VerifyError::Decode { index, error: DecodeError::Der { reason: e.to_string() } })?;
            let len = rest.len() - next.len();
            if len > CERT_BYTES_MAX {
                return Err(VerifyError::Decode { index, error: DecodeError::TooLarge { len, max: CERT_BYTES_MAX } });
            }
            let cert = Certificate::from_der(&rest[..len]).map_err(|error| VerifyError::Decode { index, error })?;
            certs.push(cert);
            rest = next;
        }
        Chain::from_certificates(certs)
    }

    pub fn encode(&self) -> Vec<u8> {
        self.certs.iter().flat_map(|c| c.der().iter().copied()).collect()
    }

    /// The blake3 hash of the encoding: how peers name a chain they cache.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.encode()).as_bytes()
    }

    pub fn certs(&self) -> &[Certificate] {
        &self.certs
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub fn root(&self) -> &Certificate {
        &self.certs[0]
    }

    /// The holder's certificate.
    pub fn leaf(&self) -> &Certificate {
        self.certs.last().expect("a chain is never empty")
    }

    /// The org the root claims.
    pub fn org(&self) -> OrgId {
        self.root().info().org
    }

    /// This chain with one more certificate at the end.
    pub fn with(&self, cert: Certificate) -> Result<Chain, VerifyError> {
        let mut certs = self.certs.clone();
        certs.push(cert);
        Chain::from_certificates(certs)
    }

    /// Verifies the chain at time `at` (seconds since 1970) against the known
    /// revocations, and, if given, that the holder's key is `subject_key`:
    /// `verify_structure`, then `verify_at`.
    pub fn verify(
        &self,
        subject_key: Option<&[u8; 32]>,
        at: u64,
        revocations: &Revocations,
    ) -> Result<Verified, VerifyError> {
        self.verify_structure()?;
        self.verify_at(subject_key, at, revocations)
    }

    /// What `verify` checks that no time, key or revocation can change: the
    /// root, every signature, the links between certificates, path lengths,
    /// nested validity windows and narrowing scopes. This is the expensive
    /// part; a holder that checked it once (its own chains, say) need not
    /// check it again.
    pub fn verify_structure(&self) -> Result<(), VerifyError> {
        let certs = &self.certs;
        let root = self.root();
        let org = root.info().org;
        let key_org = OrgId::from_public_key(root.subject_key());
        if key_org != org {
            return Err(VerifyError::WrongOrgRoot { claimed: org, key_org });
        }
        if root.issuer_dn() != root.subject_dn() {
            return Err(VerifyError::RootNotSelfIssued);
        }
        if !signed_by(root, root.subject_key()) {
            return Err(VerifyError::BadSignature { index: 0 });
        }
        if !root.is_ca() {
            return Err(VerifyError::RootNotCa);
        }
        if !root.info().scope.is_within(&Scope::full(org)) {
            return Err(VerifyError::RootScopeOutsideOrg);
        }
        for index in 1..certs.len() {
            let parent = &certs[index - 1];
            let cert = &certs[index];
            if cert.info().org != org {
                return Err(VerifyError::OrgMismatch { index, expected: org, found: cert.info().org });
            }
            if cert.issuer_dn() != parent.subject_dn() {
                return Err(VerifyError::IssuerMismatch { index });
            }
            if let Some(aki) = cert.authority_key_id()
                && Some(aki) != parent.subject_key_id()
            {
                return Err(VerifyError::AuthorityKeyMismatch { index });
            }
            if !signed_by(cert, parent.subject_key()) {
                return Err(VerifyError::BadSignature { index });
            }
            if !parent.is_ca() {
                return Err(VerifyError::IssuerNotCa { index: index - 1 });
            }
            if let Some(allowed) = parent.path_len() {
                // Issuing certificates strictly between the parent and the leaf.
                let found = u32::try_from(certs.len() - 1 - index).unwrap_or(u32::MAX);
                if found > allowed {
                    return Err(VerifyError::PathLengthExceeded { index: index - 1, allowed, found });
                }
            }
            if cert.not_before() < parent.not_before() || cert.not_after() > parent.not_after() {
                return Err(VerifyError::OutlivesIssuer {
                    index,
                    not_before: cert.not_before(),
                    not_after: cert.not_after(),
                    issuer_not_before: parent.not_before(),
                    issuer_not_after: parent.not_after(),
                });
            }
            cert.info()
                .scope
                .check_within(&parent.info().scope)
                .map_err(|widening| VerifyError::ScopeWidened { index, widening })?;
        }
        Ok(())
    }

    /// The rest of `verify`, in its order: every certificate valid at `at`,
    /// the holder's key (if given), no revocation in effect at `at`. Cheap: a
    /// signature is checked only for a revocation naming a certificate of the
    /// chain. Meaningful only for a chain whose `verify_structure` passed.
    pub fn verify_at(
        &self,
        subject_key: Option<&[u8; 32]>,
        at: u64,
        revocations: &Revocations,
    ) -> Result<Verified, VerifyError> {
        let certs = &self.certs;
        let org = self.root().info().org;
        for (index, cert) in certs.iter().enumerate() {
            if at < cert.not_before() {
                return Err(VerifyError::NotYetValid { index, not_before: cert.not_before(), at });
            }
            if at > cert.not_after() {
                return Err(VerifyError::Expired { index, not_after: cert.not_after(), at });
            }
        }
        let leaf = self.leaf();
        if let Some(expected) = subject_key
            && leaf.subject_key() != expected
        {
            return Err(VerifyError::LeafKeyMismatch { expected: hex(expected), found: hex(leaf.subject_key()) });
        }
        for (index, cert) in certs.iter().enumerate().skip(1) {
            for revocation in revocations.of(cert.id()) {
                if revocation.revoked_at > at {
                    continue;
                }
                let revoker = certs[..index].iter().find(|c| c.id() == revocation.revoker);
                if let Some(revoker) = revoker
                    && revocation.is_signed_by(revoker.subject_key())
                {
                    return Err(VerifyError::Revoked {
                        index,
                        cert: cert.id(),
                        revoked_at: revocation.revoked_at,
                        by: revocation.revoker,
                    });
                }
            }
        }
        Ok(Verified {
            org,
            scope: leaf.info().scope.clone(),
            authority: leaf.info().authority.clone(),
            subject_key: *leaf.subject_key(),
            leaf: leaf.id(),
            not_after: certs.iter().map(Certificate::not_after).min().unwrap_or(0),
        })
    }
}

fn signed_by(cert: &Certificate, key: &[u8; 32]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    key.verify_strict(cert.tbs(), &Signature::from_bytes(cert.signature())).is_ok()
}
