//! Creating organisations and issuing certificates.
//!
//! `create_org` makes a self-signed root whose key hashes to the org id and
//! whose scope is the whole org. `Issuer::issue` signs a child certificate
//! after checking the rules a verifier will apply: the issuer may issue, the
//! child's scope lies within the issuer's, its validity lies within the
//! issuer's, and the path length allows it. `build` is the unchecked
//! primitive underneath, for tools and tests that need to make any
//! certificate, including bad ones.

use ed25519_dalek::SigningKey;
use partitions::{OrgId, Scope, Widening};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, KeyIdMethod,
    KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;

use crate::cert::{CertId, Certificate, DecodeError, octet_string};
use crate::chain::{Chain, Revocations, VerifyError};
use crate::extension::{CertInfo, SCOPE_EXTENSION_OID};
use crate::key::{EdPublic, EdSigner, hex, is_valid_public_key, key_id};
use crate::limits::{AUTHORITY_BYTES_MAX, CHAIN_DEPTH_MAX, NAME_BYTES_MAX};
use crate::revocation::Revocation;
use crate::rfc3339;

/// What a new certificate should say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueRequest {
    /// The holder's Ed25519 public key (for a node: its libp2p identity key).
    pub subject_key: [u8; 32],
    /// A human-readable name (`tablet 7`, `lab geneva`).
    pub name: String,
    pub scope: Scope,
    /// Validity, in seconds since 1970.
    pub not_before: u64,
    pub not_after: u64,
    /// `Some(n)`: the holder may issue certificates, with at most `n` further
    /// issuing levels below it. `None`: the holder may not issue.
    pub can_issue: Option<u8>,
    /// A tag merge policies can name (`central`, a lab name).
    pub authority: Option<String>,
}

/// The fields of a certificate as `build` writes them, unchecked.
#[derive(Clone, Debug)]
pub struct CertTemplate {
    pub subject_key: [u8; 32],
    pub info: CertInfo,
    pub not_before: u64,
    pub not_after: u64,
    /// `None`: not a CA. `Some(None)`: CA without a path length limit.
    pub ca: Option<Option<u8>>,
    pub serial: [u8; 16],
    /// Extensions written as given, after the standard ones. One with the
    /// scope extension's OID replaces the scope extension built from `info`.
    pub extra_extensions: Vec<RawExtension>,
}

/// An extension exactly as it should appear in a certificate.
#[derive(Clone, Debug)]
pub struct RawExtension {
    pub oid: Vec<u64>,
    /// The DER inside the extension's OCTET STRING.
    pub value: Vec<u8>,
    pub critical: bool,
}

/// Why a certificate could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error("this certificate may not issue certificates (it is not a CA)")]
    NotCa,
    #[error("this certificate may not issue certificates that issue further (path length 0)")]
    PathLength,
    #[error("the chain would be {depth} certificates deep, more than the {max} allowed")]
    TooDeep { depth: usize, max: usize },
    #[error("requested scope is wider than the issuer's: it {0}")]
    ScopeWidened(Widening),
    #[error("requested scope names another org than the issuer's {org}")]
    OtherOrg { org: OrgId },
    #[error(
        "requested validity {}..{} is outside the issuer's {}..{}",
        rfc3339(*not_before),
        rfc3339(*not_after),
        rfc3339(*issuer_not_before),
        rfc3339(*issuer_not_after)
    )]
    ValidityOutsideIssuer { not_before: u64, not_after: u64, issuer_not_before: u64, issuer_not_after: u64 },
    #[error("validity ends ({}) before it starts ({})", rfc3339(*not_after), rfc3339(*not_before))]
    EmptyValidity { not_before: u64, not_after: u64 },
    #[error("time {0} cannot be written in a certificate (years 1970 to 9999)")]
    Time(u64),
    #[error("the subject key is not a valid Ed25519 public key")]
    BadSubjectKey,
    #[error("the signing key does not belong to the issuer certificate")]
    KeyMismatch,
    #[error("{what} is {len} bytes, more than the {max} allowed")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("authority tag {0:?} may only use a-z, 0-9, . _ -")]
    BadAuthority(String),
    #[error("certificate could not be built: {0}")]
    Build(String),
    #[error("certificate could not be read back: {0}")]
    Decode(#[from] DecodeError),
    #[error("issued chain does not verify: {0}")]
    Verify(#[from] VerifyError),
}

/// Creates an organisation: its root certificate, self-signed by `root_key`,
/// with the whole org as its scope. Returns the one-certificate chain.
pub fn create_org(
    name: &str,
    root_key: &SigningKey,
    not_before: u64,
    not_after: u64,
    serial: [u8; 16],
) -> Result<Chain, IssueError> {
    let public = root_key.verifying_key().to_bytes();
    let org = OrgId::from_public_key(&public);
    check_texts(name, None)?;
    if not_after <= not_before {
        return Err(IssueError::EmptyValidity { not_before, not_after });
    }
    let template = CertTemplate {
        subject_key: public,
        info: CertInfo { org, name: name.to_owned(), scope: Scope::full(org), authority: None },
        not_before,
        not_after,
        ca: Some(None),
        serial,
        extra_extensions: Vec::new(),
    };
    let root = Certificate::from_der(&build(&template, None, root_key)?)?;
    let chain = Chain::from_certificates(vec![root])?;
    chain.verify(Some(&public), not_before, &Revocations::default())?;
    Ok(chain)
}

/// The holder of a CA certificate, able to issue and revoke.
pub struct Issuer {
    chain: Chain,
    key: SigningKey,
}

impl Issuer {
    /// `key` must be the key of the chain's last certificate.
    pub fn new(chain: Chain, key: SigningKey) -> Result<Issuer, IssueError> {
        if chain.leaf().subject_key() != &key.verifying_key().to_bytes() {
            return Err(IssueError::KeyMismatch);
        }
        Ok(Issuer { chain, key })
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    pub fn org(&self) -> OrgId {
        self.chain.org()
    }

    /// Issues a child certificate and returns the subject's whole chain.
    pub fn issue(&self, request: &IssueRequest, serial: [u8; 16]) -> Result<Chain, IssueError> {
        let parent = self.chain.leaf();
        if !parent.is_ca() {
            return Err(IssueError::NotCa);
        }
        if request.can_issue.is_some() && parent.path_len() == Some(0) {
            return Err(IssueError::PathLength);
        }
        if self.chain.len() + 1 > CHAIN_DEPTH_MAX {
            return Err(IssueError::TooDeep { depth: self.chain.len() + 1, max: CHAIN_DEPTH_MAX });
        }
        if !is_valid_public_key(&request.subject_key) {
            return Err(IssueError::BadSubjectKey);
        }
        check_texts(&request.name, request.authority.as_deref())?;
        let org = self.org();
        if !request.scope.read.is_within_org(org) || !request.scope.write.is_within_org(org) {
            return Err(IssueError::OtherOrg { org });
        }
        request.scope.check_within(&parent.info().scope).map_err(IssueError::ScopeWidened)?;
        if request.not_after <= request.not_before {
            return Err(IssueError::EmptyValidity { not_before: request.not_before, not_after: request.not_after });
        }
        if request.not_before < parent.not_before() || request.not_after > parent.not_after() {
            return Err(IssueError::ValidityOutsideIssuer {
                not_before: request.not_before,
                not_after: request.not_after,
                issuer_not_before: parent.not_before(),
                issuer_not_after: parent.not_after(),
            });
        }
        // A child's path length never exceeds what its parent leaves.
        let ca = request.can_issue.map(|asked| {
            let left = parent.path_len().map(|p| p.saturating_sub(1));
            Some(match left {
                Some(left) => asked.min(u8::try_from(left).unwrap_or(u8::MAX)),
                None => asked,
            })
        });
        let template = CertTemplate {
            subject_key: request.subject_key,
            info: CertInfo {
                org,
                name: request.name.clone(),
                scope: request.scope.clone(),
                authority: request.authority.clone(),
            },
            not_before: request.not_before,
            not_after: request.not_after,
            ca,
            serial,
            extra_extensions: Vec::new(),
        };
        let child = Certificate::from_der(&build(&template, Some(parent), &self.key)?)?;
        let chain = self.chain.with(child)?;
        chain.verify(Some(&request.subject_key), request.not_before, &Revocations::default())?;
        Ok(chain)
    }

    /// A signed statement that `cert` is revoked from `revoked_at` on. It
    /// takes effect for chains in which this issuer sits above `cert`.
    pub fn revoke(&self, cert: CertId, revoked_at: u64) -> Revocation {
        Revocation::sign(cert, revoked_at, self.chain.leaf().id(), &self.key)
    }
}

fn check_texts(name: &str, authority: Option<&str>) -> Result<(), IssueError> {
    if name.len() > NAME_BYTES_MAX {
        return Err(IssueError::TooLong { what: "name", len: name.len(), max: NAME_BYTES_MAX });
    }
    if let Some(authority) = authority {
        if authority.len() > AUTHORITY_BYTES_MAX {
            return Err(IssueError::TooLong { what: "authority", len: authority.len(), max: AUTHORITY_BYTES_MAX });
        }
        let ok = !authority.is_empty()
            && authority.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
        if !ok {
            return Err(IssueError::BadAuthority(authority.to_owned()));
        }
    }
    Ok(())
}

/// Builds and signs a certificate exactly as the template says, with no
/// policy checks, and returns its DER. `issuer` is the issuing certificate
/// (`None` for a self-signed root) and `signing_key` its key.
pub fn build(
    template: &CertTemplate,
    issuer: Option<&Certificate>,
    signing_key: &SigningKey,
) -> Result<Vec<u8>, IssueError> {
    let params = params(template)?;
    let signer = EdSigner(signing_key);
    let built = match issuer {
        None => params.self_signed(&signer),
        Some(parent) => {
            let mut issuer_params = CertificateParams::default();
            issuer_params.distinguished_name = distinguished_name(parent.info().org, parent.subject_key());
            issuer_params.key_identifier_method = KeyIdMethod::PreSpecified(key_id(parent.subject_key()));
            let issuer = rcgen::Issuer::new(issuer_params, &signer);
            params.signed_by(&EdPublic(&template.subject_key), &issuer)
        }
    }
    .map_err(|e| IssueError::Build(e.to_string()))?;
    Ok(built.der().to_vec())
}

fn params(template: &CertTemplate) -> Result<CertificateParams, IssueError> {
    let time = |t: u64| {
        i64::try_from(t)
            .ok()
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .filter(|d| d.year() <= 9999)
            .ok_or(IssueError::Time(t))
    };
    let mut params = CertificateParams::default();
    params.not_before = time(template.not_before)?;
    params.not_after = time(template.not_after)?;
    // A positive INTEGER: clear the top bit so no padding byte is needed.
    let mut serial = template.serial;
    serial[0] &= 0x7f;
    serial[0] |= 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.distinguished_name = distinguished_name(template.info.org, &template.subject_key);
    params.is_ca = match template.ca {
        None => IsCa::ExplicitNoCa,
        Some(None) => IsCa::Ca(BasicConstraints::Unconstrained),
        Some(Some(n)) => IsCa::Ca(BasicConstraints::Constrained(n)),
    };
    params.key_usages = if template.ca.is_some() {
        vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign]
    } else {
        vec![KeyUsagePurpose::DigitalSignature]
    };
    params.key_identifier_method = KeyIdMethod::PreSpecified(key_id(&template.subject_key));
    params.use_authority_key_identifier_extension = true;
    let replaces_scope = template.extra_extensions.iter().any(|e| e.oid == SCOPE_EXTENSION_OID);
    if !replaces_scope {
        let mut scope = CustomExtension::from_oid_content(SCOPE_EXTENSION_OID, octet_string(&template.info.encode()));
        scope.set_criticality(true);
        params.custom_extensions.push(scope);
    }
    for raw in &template.extra_extensions {
        let mut extension = CustomExtension::from_oid_content(&raw.oid, raw.value.clone());
        extension.set_criticality(raw.critical);
        params.custom_extensions.push(extension);
    }
    Ok(params)
}

/// Subject names are derived from (org, key), so a name always identifies
/// exactly one key in one org: `O=<org id>, CN=<key hex>`.
fn distinguished_name(org: OrgId, key: &[u8; 32]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org.to_string());
    dn.push(DnType::CommonName, hex(key));
    dn
}
