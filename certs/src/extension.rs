//! The scope extension: what a certificate grants, in CBOR, inside a critical
//! X.509 extension under ferry's own OID.
//!
//! Layout (canonical CBOR: definite lengths, shortest integers, map keys
//! ascending; anything else is rejected):
//!
//! ```text
//! { 0: 1,                      version
//!   1: bytes(16),              org id
//!   2: text,                   human name (may be empty)
//!   3: [text, …],              read prefixes, relative to the org ("" = whole org)
//!   4: [text, …],              write prefixes, relative to the org
//!   5: { text: uint, … },      type modes: 0 none, 1 ro, 2 update-only, 3 rw, 4 wo
//!   6: text }                  authority tag (key absent when there is none)
//! ```
//!
//! The decoder re-encodes what it read and compares bytes, so a certificate
//! has exactly one valid extension value for a given meaning.

use std::collections::BTreeMap;

use minicbor::{Decoder, Encoder};
use partitions::limits::{FILTER_PREFIXES_MAX, SCOPE_TYPES_MAX};
use partitions::{Filter, OrgId, Partition, RecordType, Scope, TypeMode};

use crate::limits::{AUTHORITY_BYTES_MAX, NAME_BYTES_MAX, SCOPE_CBOR_BYTES_MAX};

/// ferry's scope extension: 2.25 (UUID-derived arc, ITU-T X.667) under a
/// random 63-bit number that is ours, then 1.
pub const SCOPE_EXTENSION_OID: &[u64] = &[2, 25, 5_926_412_056_532_370_799, 1];

/// The dotted form of `SCOPE_EXTENSION_OID`.
pub const SCOPE_EXTENSION_OID_TEXT: &str = "2.25.5926412056532370799.1";

const VERSION: u64 = 1;

/// What ferry reads from the scope extension of a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub org: OrgId,
    pub name: String,
    pub scope: Scope,
    pub authority: Option<String>,
}

/// Why an extension value (or the scope part of a token) is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    #[error("scope is {len} bytes, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("malformed CBOR at byte {at}: {reason}")]
    Cbor { at: usize, reason: String },
    #[error("unsupported scope extension version {found}")]
    Version { found: u64 },
    #[error("unexpected key {key} in scope map")]
    UnexpectedKey { key: u64 },
    #[error("missing key {key} in scope map")]
    MissingKey { key: u64 },
    #[error("{what} has {count} entries, more than the {max} allowed")]
    TooMany { what: &'static str, count: u64, max: usize },
    #[error("bad prefix {text:?}: {reason}")]
    Prefix { text: String, reason: String },
    #[error("bad record type {text:?}: {reason}")]
    RecordType { text: String, reason: String },
    #[error("unknown type mode {value}")]
    Mode { value: u64 },
    #[error("{what} is {len} bytes, more than the {max} allowed")]
    TextTooLong { what: &'static str, len: usize, max: usize },
    #[error("scope CBOR is not in canonical form")]
    NotCanonical,
}

impl CertInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new());
        let entries = if self.authority.is_some() { 7 } else { 6 };
        // Writing to a Vec cannot fail.
        let _ = e.map(entries).and_then(|e| e.u64(0)).and_then(|e| e.u64(VERSION));
        let _ = e.u64(1).and_then(|e| e.bytes(self.org.as_bytes()));
        let _ = e.u64(2).and_then(|e| e.str(&self.name));
        write_scope_fields(&mut e, &self.scope, 3);
        if let Some(authority) = &self.authority {
            let _ = e.u64(6).and_then(|e| e.str(authority));
        }
        e.into_writer()
    }

    pub fn decode(bytes: &[u8]) -> Result<CertInfo, ExtensionError> {
        if bytes.len() > SCOPE_CBOR_BYTES_MAX {
            return Err(ExtensionError::TooLong { len: bytes.len(), max: SCOPE_CBOR_BYTES_MAX });
        }
        let mut d = Decoder::new(bytes);
        let entries = definite(d.map(), &d)?;
        if !(6..=7).contains(&entries) {
            return Err(cbor_error(&d, "scope map must have 6 or 7 entries"));
        }
        expect_key(&mut d, 0)?;
        let version = d.u64().map_err(|e| from_minicbor(&d, e))?;
        if version != VERSION {
            return Err(ExtensionError::Version { found: version });
        }
        expect_key(&mut d, 1)?;
        let org_bytes: [u8; 16] = d
            .bytes()
            .map_err(|e| from_minicbor(&d, e))?
            .try_into()
            .map_err(|_| cbor_error(&d, "org id must be 16 bytes"))?;
        let org = OrgId::from_bytes(org_bytes);
        expect_key(&mut d, 2)?;
        let name = bounded_str(&mut d, "name", NAME_BYTES_MAX)?.to_owned();
        let scope = read_scope_fields(&mut d, org, 3)?;
        let authority = if entries == 7 {
            expect_key(&mut d, 6)?;
            Some(bounded_str(&mut d, "authority", AUTHORITY_BYTES_MAX)?.to_owned())
        } else {
            None
        };
        if d.position() != bytes.len() {
            return Err(cbor_error(&d, "trailing bytes after the scope map"));
        }
        let info = CertInfo { org, name, scope, authority };
        if info.encode() != bytes {
            return Err(ExtensionError::NotCanonical);
        }
        Ok(info)
    }
}

/// Writes keys `first`, `first + 1`, `first + 2`: read, write, type modes.
pub(crate) fn write_scope_fields(e: &mut Encoder<Vec<u8>>, scope: &Scope, first: u64) {
    let write_filter = |e: &mut Encoder<Vec<u8>>, filter: &Filter| {
        let _ = e.array(filter.len() as u64);
        for prefix in filter.prefixes() {
            let _ = e.str(prefix.relative());
        }
    };
    let _ = e.u64(first);
    write_filter(e, &scope.read);
    let _ = e.u64(first + 1);
    write_filter(e, &scope.write);
    let _ = e.u64(first + 2).and_then(|e| e.map(scope.types.len() as u64));
    for (record_type, mode) in &scope.types {
        let _ = e.str(record_type.as_str()).and_then(|e| e.u64(mode_number(*mode)));
    }
}

/// Reads what `write_scope_fields` wrote, resolving prefixes against `org`.
pub(crate) fn read_scope_fields(d: &mut Decoder<'_>, org: OrgId, first: u64) -> Result<Scope, ExtensionError> {
    expect_key(d, first)?;
    let read = read_filter(d, org, "read filter")?;
    expect_key(d, first + 1)?;
    let write = read_filter(d, org, "write filter")?;
    expect_key(d, first + 2)?;
    let count = definite(d.map(), d)?;
    if count > SCOPE_TYPES_MAX as u64 {
        return Err(ExtensionError::TooMany { what: "type modes", count, max: SCOPE_TYPES_MAX });
    }
    let mut types = BTreeMap::new();
    for _ in 0..count {
        let text = d.str().map_err(|e| from_minicbor(d, e))?;
        let record_type = RecordType::parse(text)
            .map_err(|e| ExtensionError::RecordType { text: text.to_owned(), reason: e.to_string() })?;
        let value = d.u64().map_err(|e| from_minicbor(d, e))?;
        types.insert(record_type, mode_from_number(value)?);
    }
    Ok(Scope { read, write, types })
}

fn read_filter(d: &mut Decoder<'_>, org: OrgId, what: &'static str) -> Result<Filter, ExtensionError> {
    let count = definite(d.array(), d)?;
    if count > FILTER_PREFIXES_MAX as u64 {
        return Err(ExtensionError::TooMany { what, count, max: FILTER_PREFIXES_MAX });
    }
    let mut prefixes = Vec::new();
    for _ in 0..count {
        let text = d.str().map_err(|e| from_minicbor(d, e))?;
        // Prefixes are stored relative to the org: an absolute one (which
        // could name another org) is not canonical and is refused here.
        let first = text.split(':').next().unwrap_or_default();
        if OrgId::parse(first).is_ok() {
            return Err(ExtensionError::Prefix {
                text: text.to_owned(),
                reason: "prefixes must be relative to the certificate's org".to_owned(),
            });
        }
        let prefix = Partition::resolve(org, text)
            .map_err(|e| ExtensionError::Prefix { text: text.to_owned(), reason: e.to_string() })?;
        prefixes.push(prefix);
    }
    Ok(Filter::new(prefixes))
}

pub(crate) fn mode_number(mode: TypeMode) -> u64 {
    match mode {
        TypeMode::None => 0,
        TypeMode::ReadOnly => 1,
        TypeMode::UpdateOnly => 2,
        TypeMode::ReadWrite => 3,
        TypeMode::WriteOnly => 4,
    }
}

fn mode_from_number(value: u64) -> Result<TypeMode, ExtensionError> {
    Ok(match value {
        0 => TypeMode::None,
        1 => TypeMode::ReadOnly,
        2 => TypeMode::UpdateOnly,
        3 => TypeMode::ReadWrite,
        4 => TypeMode::WriteOnly,
        _ => return Err(ExtensionError::Mode { value }),
    })
}

pub(crate) fn expect_key(d: &mut Decoder<'_>, key: u64) -> Result<(), ExtensionError> {
    let found = d.u64().map_err(|e| from_minicbor(d, e))?;
    if found == key {
        Ok(())
    } else if found > key {
        Err(ExtensionError::MissingKey { key })
    } else {
        Err(ExtensionError::UnexpectedKey { key: found })
    }
}

pub(crate) fn definite(
    length: Result<Option<u64>, minicbor::decode::Error>,
    d: &Decoder<'_>,
) -> Result<u64, ExtensionError> {
    match length {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(cbor_error(d, "indefinite lengths are not allowed")),
        Err(e) => Err(from_minicbor(d, e)),
    }
}

pub(crate) fn bounded_str<'b>(d: &mut Decoder<'b>, what: &'static str, max: usize) -> Result<&'b str, ExtensionError> {
    let text = d.str().map_err(|e| from_minicbor(d, e))?;
    if text.len() > max {
        return Err(ExtensionError::TextTooLong { what, len: text.len(), max });
    }
    Ok(text)
}

pub(crate) fn cbor_error(d: &Decoder<'_>, reason: &str) -> ExtensionError {
    ExtensionError::Cbor { at: d.position(), reason: reason.to_owned() }
}

pub(crate) fn from_minicbor(d: &Decoder<'_>, e: minicbor::decode::Error) -> ExtensionError {
    ExtensionError::Cbor { at: e.position().unwrap_or(d.position()), reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> CertInfo {
        let org = OrgId::from_public_key(&[3; 32]);
        CertInfo {
            org,
            name: "tablet 7".into(),
            scope: Scope {
                read: Filter::parse(org, "results:tc-1,tests").unwrap(),
                write: Filter::parse(org, "results:tc-1").unwrap(),
                types: Scope::parse_types("test=ro,result=update-only").unwrap(),
            },
            authority: Some("central".into()),
        }
    }

    #[test]
    fn scope_extension_round_trips() {
        let info = info();
        assert_eq!(CertInfo::decode(&info.encode()), Ok(info.clone()));
        let plain = CertInfo { authority: None, ..info };
        assert_eq!(CertInfo::decode(&plain.encode()), Ok(plain));
    }

    #[test]
    fn scope_extension_rejects_non_canonical_integers() {
        let mut bytes = info().encode();
        // 0xa7 map(7), then key 0 written as 0x18 0x00 instead of 0x00.
        bytes.splice(1..2, [0x18, 0x00]);
        assert!(CertInfo::decode(&bytes).is_err());
    }

    #[test]
    fn scope_extension_rejects_trailing_bytes_and_truncation() {
        let mut bytes = info().encode();
        bytes.push(0);
        assert!(matches!(CertInfo::decode(&bytes), Err(ExtensionError::Cbor { .. })));
        let bytes = info().encode();
        for cut in 0..bytes.len() {
            assert!(CertInfo::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
