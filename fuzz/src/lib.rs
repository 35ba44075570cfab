//! The bodies of ferry's fuzz targets, one function per decoder of untrusted
//! bytes. The cargo-fuzz binaries in `fuzz_targets/` call them, and
//! `tests/smoke.rs` runs each on fixed inputs so none of them rots.
//!
//! Every function must not panic on any input; when a decoder accepts bytes,
//! what it decoded must encode back to the same bytes (each value has one
//! encoding) or at least parse back to the same value.

use certs::{Chain, Revocations, Token};
use partitions::{Filter, OrgId, Partition, Scope, ScopeTemplate};

/// A fixed org for relative partitions.
pub fn fuzz_org() -> OrgId {
    OrgId::from_bytes([7; 16])
}

/// Partition, filter, type-mode and scope-template parsing.
pub fn partitions_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let org = fuzz_org();
    if let Ok(p) = Partition::parse(text) {
        assert_eq!(p.to_string(), text);
        assert_eq!(Partition::from_key(&p.to_key()), Ok(p));
    }
    if let Ok(p) = Partition::resolve(org, text) {
        assert_eq!(Partition::parse(&p.to_string()), Ok(p));
    }
    if let Ok(f) = Filter::parse(org, text) {
        assert_eq!(Filter::parse(org, &f.to_string()), Ok(f));
    }
    if let Ok(types) = Scope::parse_types(text) {
        let scope = Scope { types, ..Scope::default() };
        assert_eq!(Scope::parse_types(&scope.types_text()), Ok(scope.types));
    }
    let mut parts = text.splitn(3, '|');
    let (read, write, types) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if let Ok(template) = ScopeTemplate::parse(read, write, types) {
        let values = template.params().into_iter().map(|p| (p.to_owned(), "v".to_owned())).collect();
        let _ = template.expand(org, &values);
    }
}

/// Certificate chain decoding and verification.
pub fn cert_chain(data: &[u8]) {
    let Ok(chain) = Chain::decode(data) else {
        return;
    };
    assert_eq!(chain.encode(), data);
    let subject = *chain.leaf().subject_key();
    for at in [0, 1_700_000_000, u64::MAX] {
        let _ = chain.verify(Some(&subject), at, &Revocations::default());
    }
}

/// Enrolment token parsing.
pub fn enrol_token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = Token::decode(text) {
        assert_eq!(Token::decode(&token.encode()), Ok(token));
    }
}
