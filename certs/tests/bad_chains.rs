//! Every way a chain can be bad, each with its exact error; and the good
//! chains they are variations of.

use certs::{
    CertInfo, CertTemplate, Certificate, Chain, DecodeError, IssueError, IssueRequest, Issuer, RawExtension,
    Revocations, SCOPE_EXTENSION_OID, VerifyError, build, create_org, octet_string,
};
use ed25519_dalek::SigningKey;
use partitions::{Filter, OrgId, Partition, RecordType, Scope, TypeMode, Widening};

const T0: u64 = 1_700_000_000;
const DAY: u64 = 86_400;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public(seed: u8) -> [u8; 32] {
    key(seed).verifying_key().to_bytes()
}

fn org() -> OrgId {
    OrgId::from_public_key(&public(1))
}

fn scope(read: &str, write: &str, types: &str) -> Scope {
    Scope {
        read: Filter::parse(org(), read).expect("valid filter"),
        write: Filter::parse(org(), write).expect("valid filter"),
        types: Scope::parse_types(types).expect("valid types"),
    }
}

fn serial(n: u8) -> [u8; 16] {
    [n; 16]
}

/// Root (key 1) → site (key 2, may issue one more level) → device (key 3).
struct Fixture {
    root: Chain,
    site: Chain,
    device: Chain,
}

fn fixture() -> Fixture {
    let root = create_org("Test org", &key(1), T0 - DAY, T0 + 1000 * DAY, serial(1)).expect("org");
    let root_issuer = Issuer::new(root.clone(), key(1)).expect("root issuer");
    let site = root_issuer
        .issue(
            &IssueRequest {
                subject_key: public(2),
                name: "site".into(),
                scope: scope("results,tests", "results", "test=ro"),
                not_before: T0 - DAY,
                not_after: T0 + 100 * DAY,
                can_issue: Some(1),
                authority: Some("central".into()),
            },
            serial(2),
        )
        .expect("site");
    let site_issuer = Issuer::new(site.clone(), key(2)).expect("site issuer");
    let device = site_issuer.issue(&device_request(), serial(3)).expect("device");
    Fixture { root, site, device }
}

fn device_request() -> IssueRequest {
    IssueRequest {
        subject_key: public(3),
        name: "tablet".into(),
        scope: scope("results:tc-1,tests", "results:tc-1", "test=ro"),
        not_before: T0 - DAY,
        not_after: T0 + 10 * DAY,
        can_issue: None,
        authority: None,
    }
}

/// A template for a child of `parent` like the device, to be made bad.
fn device_template(parent: &Certificate) -> CertTemplate {
    let request = device_request();
    CertTemplate {
        subject_key: request.subject_key,
        info: CertInfo { org: parent.info().org, name: request.name, scope: request.scope, authority: None },
        not_before: request.not_before,
        not_after: request.not_after,
        ca: None,
        serial: serial(9),
        extra_extensions: Vec::new(),
    }
}

fn verify(chain: &Chain) -> Result<certs::Verified, VerifyError> {
    chain.verify(Some(&public(3)), T0, &Revocations::default())
}

/// The site chain plus a device built from `template`, signed by the site.
fn with_device(f: &Fixture, template: CertTemplate) -> Result<Chain, VerifyError> {
    let device = build(&template, Some(f.site.leaf()), &key(2)).expect("builds");
    append(&f.site, &[device])
}

/// Decodes `chain` followed by the given DER certificates.
fn append(chain: &Chain, ders: &[Vec<u8>]) -> Result<Chain, VerifyError> {
    let mut bytes = chain.encode();
    for der in ders {
        bytes.extend_from_slice(der);
    }
    Chain::decode(&bytes)
}

fn cert(der: &[u8]) -> Certificate {
    Certificate::from_der(der).expect("decodes")
}

/// Re-decodes a chain after changing one certificate's DER.
fn tamper(chain: &Chain, index: usize, change: impl Fn(&mut Vec<u8>)) -> Result<Chain, VerifyError> {
    let mut bytes = Vec::new();
    for (i, cert) in chain.certs().iter().enumerate() {
        let mut der = cert.der().to_vec();
        if i == index {
            change(&mut der);
        }
        bytes.extend_from_slice(&der);
    }
    Chain::decode(&bytes)
}

fn flip_last_byte(der: &mut Vec<u8>) {
    #![allow(clippy::ptr_arg)] // used where a `Fn(&mut Vec<u8>)` is expected
    let last = der.len() - 1;
    der[last] ^= 1;
}

#[test]
fn good_chain_grants_the_device_scope() {
    let f = fixture();
    let verified = verify(&f.device).expect("verifies");
    assert_eq!(verified.org, org());
    assert_eq!(verified.scope, scope("results:tc-1,tests", "results:tc-1", "test=ro"));
    assert_eq!(verified.subject_key, public(3));
    assert_eq!(verified.not_after, T0 + 10 * DAY);
    let decoded = Chain::decode(&f.device.encode()).expect("decodes");
    assert_eq!(decoded, f.device);
    assert_eq!(
        f.site.verify(Some(&public(2)), T0, &Revocations::default()).expect("site").authority.as_deref(),
        Some("central")
    );
    assert!(f.root.verify(Some(&public(1)), T0, &Revocations::default()).is_ok());
}

#[test]
fn bad_chains_are_rejected_each_with_its_own_error() {
    let f = fixture();
    let other_org = OrgId::from_public_key(&public(7));
    let p = |text: &str| Partition::resolve(org(), text).expect("valid");

    let mut revoked_leaf = Revocations::default();
    revoked_leaf.insert(Issuer::new(f.site.clone(), key(2)).expect("issuer").revoke(f.device.leaf().id(), T0 - 10));
    let mut revoked_site = Revocations::default();
    revoked_site.insert(Issuer::new(f.root.clone(), key(1)).expect("issuer").revoke(f.site.leaf().id(), T0 - 10));

    let wrong_root = {
        let mut template = device_template(f.root.leaf());
        template.subject_key = public(1);
        template.info =
            CertInfo { org: other_org, name: "fake".into(), scope: Scope::full(other_org), authority: None };
        template.ca = Some(None);
        let root = build(&template, None, &key(1)).expect("builds");
        Chain::decode(&root)
    };
    let deep = {
        let mut certs = vec![f.root.root().clone()];
        for i in 0..8u8 {
            let parent = certs.last().expect("non-empty").clone();
            let mut template = device_template(&parent);
            template.subject_key = public(10 + i);
            template.info.scope = Scope::full(org());
            template.ca = Some(None);
            template.serial = serial(10 + i);
            template.not_before = T0 - DAY;
            template.not_after = T0 + DAY;
            certs.push(cert(&build(&template, Some(&parent), &key(if i == 0 { 1 } else { 9 + i })).expect("builds")));
        }
        let bytes: Vec<u8> = certs.iter().flat_map(|c| c.der().to_vec()).collect();
        Chain::decode(&bytes)
    };
    let issued_by_leaf = {
        let mut template = device_template(f.device.leaf());
        template.subject_key = public(4);
        template.info.scope = scope("results:tc-1", "results:tc-1", "test=ro");
        let der = build(&template, Some(f.device.leaf()), &key(3)).expect("builds");
        append(&f.device, &[der])
    };
    let path_too_long = {
        // The site may have one issuing level below it; give it two.
        let mut template = device_template(f.site.leaf());
        template.subject_key = public(5);
        template.ca = Some(None);
        let sub = build(&template, Some(f.site.leaf()), &key(2)).expect("builds");
        let mut template = device_template(&cert(&sub));
        template.subject_key = public(6);
        template.ca = Some(None);
        let subsub = build(&template, Some(&cert(&sub)), &key(5)).expect("builds");
        let leaf = build(&device_template(&cert(&subsub)), Some(&cert(&subsub)), &key(6)).expect("builds");
        append(&f.site, &[sub, subsub, leaf])
    };
    let with_extension = |oid: Vec<u64>, value: Vec<u8>, critical: bool| {
        let mut template = device_template(f.site.leaf());
        template.extra_extensions.push(RawExtension { oid, value, critical });
        with_device(&f, template)
    };

    type Case = (&'static str, Result<Chain, VerifyError>, u64, Revocations, VerifyError);
    let none = Revocations::default;
    let cases: Vec<Case> = vec![
        (
            "bad signature on the root",
            tamper(&f.device, 0, flip_last_byte),
            T0,
            none(),
            VerifyError::BadSignature { index: 0 },
        ),
        (
            "bad signature on the site",
            tamper(&f.device, 1, flip_last_byte),
            T0,
            none(),
            VerifyError::BadSignature { index: 1 },
        ),
        (
            "bad signature on the device",
            tamper(&f.device, 2, flip_last_byte),
            T0,
            none(),
            VerifyError::BadSignature { index: 2 },
        ),
        (
            "read scope widened",
            with_device(&f, {
                let mut t = device_template(f.site.leaf());
                t.info.scope.read = Filter::parse(org(), "results,archive").expect("f");
                t
            }),
            T0,
            none(),
            VerifyError::ScopeWidened { index: 2, widening: Widening::Read { prefix: p("archive") } },
        ),
        (
            "write scope widened",
            with_device(&f, {
                let mut t = device_template(f.site.leaf());
                t.info.scope.write = Filter::parse(org(), "tests").expect("f");
                t
            }),
            T0,
            none(),
            VerifyError::ScopeWidened { index: 2, widening: Widening::Write { prefix: p("tests") } },
        ),
        (
            "type mode widened",
            with_device(&f, {
                let mut t = device_template(f.site.leaf());
                t.info.scope.types.insert(RecordType::parse("test").expect("t"), TypeMode::ReadWrite);
                t
            }),
            T0,
            none(),
            VerifyError::ScopeWidened {
                index: 2,
                widening: Widening::TypeMode {
                    record_type: RecordType::parse("test").expect("t"),
                    child: TypeMode::ReadWrite,
                    parent: TypeMode::ReadOnly,
                },
            },
        ),
        (
            "expired",
            Ok(f.device.clone()),
            T0 + 11 * DAY,
            none(),
            VerifyError::Expired { index: 2, not_after: T0 + 10 * DAY, at: T0 + 11 * DAY },
        ),
        (
            "not yet valid",
            Ok(f.device.clone()),
            T0 - 2 * DAY,
            none(),
            VerifyError::NotYetValid { index: 0, not_before: T0 - DAY, at: T0 - 2 * DAY },
        ),
        (
            "child valid longer than its issuer",
            with_device(&f, {
                let mut t = device_template(f.site.leaf());
                t.not_after = T0 + 200 * DAY;
                t
            }),
            T0,
            none(),
            VerifyError::OutlivesIssuer {
                index: 2,
                not_before: T0 - DAY,
                not_after: T0 + 200 * DAY,
                issuer_not_before: T0 - DAY,
                issuer_not_after: T0 + 100 * DAY,
            },
        ),
        (
            "revoked leaf",
            Ok(f.device.clone()),
            T0,
            revoked_leaf.clone(),
            VerifyError::Revoked { index: 2, cert: f.device.leaf().id(), revoked_at: T0 - 10, by: f.site.leaf().id() },
        ),
        (
            "revoked intermediate",
            Ok(f.device.clone()),
            T0,
            revoked_site,
            VerifyError::Revoked { index: 1, cert: f.site.leaf().id(), revoked_at: T0 - 10, by: f.root.leaf().id() },
        ),
        ("wrong org root", wrong_root, T0, none(), VerifyError::WrongOrgRoot { claimed: other_org, key_org: org() }),
        ("depth exceeded", deep, T0, none(), VerifyError::TooDeep { depth: 9, max: 8 }),
        (
            "issued by a holder without the issue right",
            issued_by_leaf,
            T0,
            none(),
            VerifyError::IssuerNotCa { index: 2 },
        ),
        (
            "path length exceeded",
            path_too_long,
            T0,
            none(),
            VerifyError::PathLengthExceeded { index: 1, allowed: 1, found: 2 },
        ),
        (
            "leaf key is not the peer's key",
            Ok(f.site.clone()),
            T0,
            none(),
            VerifyError::LeafKeyMismatch { expected: certs::key::hex(&public(3)), found: certs::key::hex(&public(2)) },
        ),
        (
            "truncated DER",
            tamper(&f.device, 2, |der| der.truncate(der.len() - 10)),
            T0,
            none(),
            VerifyError::Decode { index: 2, error: DecodeError::Der { reason: String::new() } },
        ),
        (
            "garbled DER",
            tamper(&f.device, 1, |der| der[0] = 0x31),
            T0,
            none(),
            VerifyError::Decode { index: 1, error: DecodeError::Der { reason: String::new() } },
        ),
        (
            "unknown critical extension",
            with_extension(vec![1, 2, 3, 4], vec![0x05, 0x00], true),
            T0,
            none(),
            VerifyError::Decode { index: 2, error: DecodeError::UnknownCriticalExtension { oid: "1.2.3.4".into() } },
        ),
        (
            "scope extension with malformed CBOR",
            with_extension(SCOPE_EXTENSION_OID.to_vec(), octet_string(&[0xa7, 0x00, 0x01, 0xff]), true),
            T0,
            none(),
            VerifyError::Decode {
                index: 2,
                error: DecodeError::Scope(certs::ExtensionError::Cbor { at: 0, reason: String::new() }),
            },
        ),
        (
            "scope extension not critical",
            with_extension(
                SCOPE_EXTENSION_OID.to_vec(),
                octet_string(&device_template(f.site.leaf()).info.encode()),
                false,
            ),
            T0,
            none(),
            VerifyError::Decode { index: 2, error: DecodeError::ScopeNotCritical },
        ),
        (
            "duplicate extension",
            with_extension(vec![1, 2, 3, 4], vec![0x05, 0x00], false).and_then(|_| {
                let mut t = device_template(f.site.leaf());
                t.extra_extensions.push(RawExtension {
                    oid: vec![1, 2, 3, 4],
                    value: vec![0x05, 0x00],
                    critical: false,
                });
                t.extra_extensions.push(RawExtension {
                    oid: vec![1, 2, 3, 4],
                    value: vec![0x05, 0x00],
                    critical: false,
                });
                with_device(&f, t)
            }),
            T0,
            none(),
            VerifyError::Decode { index: 2, error: DecodeError::DuplicateExtension { oid: "1.2.3.4".into() } },
        ),
    ];
    for (name, chain, at, revocations, expected) in cases {
        let got = chain.clone().and_then(|c| c.verify(Some(&public(3)), at, &revocations));
        assert!(same_error(&got, &expected), "{name}: expected {expected:?}, got {got:?}");
        // The two halves a holder may run apart (structure once, the rest at
        // each use) answer exactly as `verify` does.
        if let Ok(c) = &chain {
            let split = c.verify_structure().and_then(|()| c.verify_at(Some(&public(3)), at, &revocations));
            assert_eq!(split, got, "{name}: verify_structure then verify_at");
        }
    }
}

/// Compares errors exactly, except for the text of errors reported by the
/// DER and CBOR parsers, whose wording is theirs.
fn same_error(got: &Result<certs::Verified, VerifyError>, expected: &VerifyError) -> bool {
    use certs::ExtensionError;
    match (got, expected) {
        (
            Err(VerifyError::Decode { index: a, error: DecodeError::Der { .. } }),
            VerifyError::Decode { index: b, error: DecodeError::Der { .. } },
        ) => a == b,
        (
            Err(VerifyError::Decode { index: a, error: DecodeError::Scope(ExtensionError::Cbor { .. }) }),
            VerifyError::Decode { index: b, error: DecodeError::Scope(ExtensionError::Cbor { .. }) },
        ) => a == b,
        (Err(e), expected) => e == expected,
        (Ok(_), _) => false,
    }
}

#[test]
fn revocations_by_someone_not_above_the_certificate_are_ignored() {
    let f = fixture();
    let mut revocations = Revocations::default();
    // The device revoking itself, and a stranger's key, change nothing.
    revocations.insert(certs::Revocation::sign(f.device.leaf().id(), T0 - 10, f.device.leaf().id(), &key(3)));
    revocations.insert(certs::Revocation::sign(f.device.leaf().id(), T0 - 10, f.site.leaf().id(), &key(8)));
    // A revocation from the future has not taken effect yet.
    revocations.insert(Issuer::new(f.site.clone(), key(2)).expect("issuer").revoke(f.device.leaf().id(), T0 + 10));
    assert!(f.device.verify(Some(&public(3)), T0, &revocations).is_ok());
    assert!(matches!(
        f.device.verify(Some(&public(3)), T0 + 10, &revocations),
        Err(VerifyError::Revoked { index: 2, .. })
    ));
    let bytes = revocations.of(f.device.leaf().id())[0].to_bytes();
    assert_eq!(certs::Revocation::from_bytes(&bytes).expect("decodes").to_bytes(), bytes);
}

#[test]
fn issuer_refuses_what_a_verifier_would_reject() {
    let f = fixture();
    let site = Issuer::new(f.site.clone(), key(2)).expect("issuer");
    let device = Issuer::new(f.device.clone(), key(3)).expect("issuer");
    let mut request = device_request();
    request.scope = scope("archive", "", "test=ro");
    assert_eq!(
        site.issue(&request, serial(4)),
        Err(IssueError::ScopeWidened(Widening::Read { prefix: Partition::resolve(org(), "archive").expect("p") }))
    );
    let mut request = device_request();
    request.not_after = T0 + 500 * DAY;
    assert!(matches!(site.issue(&request, serial(4)), Err(IssueError::ValidityOutsideIssuer { .. })));
    assert_eq!(device.issue(&device_request(), serial(4)), Err(IssueError::NotCa));
    assert!(matches!(Issuer::new(f.device.clone(), key(2)), Err(IssueError::KeyMismatch)));
    let mut request = device_request();
    request.subject_key = [0; 32];
    assert_eq!(site.issue(&request, serial(4)), Err(IssueError::BadSubjectKey));
}

#[test]
fn flipping_any_bit_of_any_certificate_in_a_chain_makes_it_fail() {
    let f = fixture();
    let ders: Vec<Vec<u8>> = f.device.certs().iter().map(|c| c.der().to_vec()).collect();
    for (index, der) in ders.iter().enumerate() {
        for bit in 0..der.len() * 8 {
            let mut bytes = Vec::new();
            for (i, other) in ders.iter().enumerate() {
                let mut other = other.clone();
                if i == index {
                    other[bit / 8] ^= 1 << (bit % 8);
                }
                bytes.extend_from_slice(&other);
            }
            let result = Chain::decode(&bytes).and_then(|c| c.verify(Some(&public(3)), T0, &Revocations::default()));
            assert!(result.is_err(), "flipping bit {bit} of certificate {index} still verifies");
        }
    }
}
