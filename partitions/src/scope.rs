//! Scopes: what a certificate grants.
//!
//! A scope is a read filter, a write filter and per-record-type modes. A type
//! the scope does not list is read-write (within the filters). Modes are
//! totally ordered, `none < ro < update-only < rw`, so narrowing is a simple
//! comparison; `is_within` is the rule every certificate hop must satisfy.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::filter::Filter;
use crate::limits::{RECORD_TYPE_BYTES_MAX, SCOPE_TYPES_MAX};
use crate::org::OrgId;
use crate::partition::{Partition, is_segment_char};

/// The name of a kind of record (`result`, `sample.analysis`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordType(String);

/// Why a text is not a record type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordTypeError {
    #[error("record type is empty")]
    Empty,
    #[error("record type is {len} bytes, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("record type has character {ch:?}; only A-Z a-z 0-9 . _ - are allowed")]
    Character { ch: char },
}

impl RecordType {
    pub fn parse(text: &str) -> Result<RecordType, RecordTypeError> {
        if text.is_empty() {
            return Err(RecordTypeError::Empty);
        }
        if text.len() > RECORD_TYPE_BYTES_MAX {
            return Err(RecordTypeError::TooLong { len: text.len(), max: RECORD_TYPE_BYTES_MAX });
        }
        if let Some(ch) = text.chars().find(|&c| !is_segment_char(c)) {
            return Err(RecordTypeError::Character { ch });
        }
        Ok(RecordType(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordType({})", self.0)
    }
}

impl FromStr for RecordType {
    type Err = RecordTypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordType::parse(s)
    }
}

impl serde::Serialize for RecordType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RecordType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RecordType;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a record type")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RecordType, E> {
                RecordType::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// What a scope allows for one record type: SENAITE's skipped, read-only and
/// update-only content types, TAO's write-only results, and plain
/// read-write. The modes are not a chain: `wo` and `ro` grant disjoint
/// things, so narrowing and intersecting go through `within` and `meet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum TypeMode {
    /// Neither read nor written: records of the type never reach the holder.
    #[serde(rename = "none")]
    None,
    /// Read only.
    #[serde(rename = "ro")]
    ReadOnly,
    /// Read, and change records that exist; never create or delete them.
    #[serde(rename = "update-only")]
    UpdateOnly,
    /// Read, create, change and delete.
    #[serde(rename = "rw")]
    ReadWrite,
    /// Write only (TAO's results on a test-taking device): create, change
    /// and delete its own records, and receive none from peers.
    #[serde(rename = "wo")]
    WriteOnly,
}

impl TypeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TypeMode::None => "none",
            TypeMode::ReadOnly => "ro",
            TypeMode::UpdateOnly => "update-only",
            TypeMode::ReadWrite => "rw",
            TypeMode::WriteOnly => "wo",
        }
    }

    /// Whether records of the type may reach the holder from peers.
    pub fn may_read(self) -> bool {
        matches!(self, TypeMode::ReadOnly | TypeMode::UpdateOnly | TypeMode::ReadWrite)
    }

    pub fn may_write(self, kind: WriteKind) -> bool {
        match self {
            TypeMode::None | TypeMode::ReadOnly => false,
            TypeMode::UpdateOnly => kind == WriteKind::Update,
            TypeMode::ReadWrite | TypeMode::WriteOnly => true,
        }
    }

    /// Whether this mode grants nothing `parent` does not.
    pub fn within(self, parent: TypeMode) -> bool {
        use TypeMode::*;
        match (self, parent) {
            (None, _) | (_, ReadWrite) => true,
            (ReadOnly, ReadOnly | UpdateOnly) => true,
            (child, parent) => child == parent,
        }
    }

    /// The widest mode within both (`none` when they share no grant a mode
    /// can express, as `wo` and `ro`).
    pub fn meet(self, other: TypeMode) -> TypeMode {
        if self.within(other) {
            self
        } else if other.within(self) {
            other
        } else if TypeMode::ReadOnly.within(self) && TypeMode::ReadOnly.within(other) {
            TypeMode::ReadOnly
        } else {
            TypeMode::None
        }
    }
}

impl fmt::Display for TypeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text is not a type mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown type mode {0:?}; use rw, ro, update-only, wo or none")]
pub struct TypeModeError(pub String);

impl FromStr for TypeMode {
    type Err = TypeModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(TypeMode::None),
            "ro" => Ok(TypeMode::ReadOnly),
            "update-only" => Ok(TypeMode::UpdateOnly),
            "rw" => Ok(TypeMode::ReadWrite),
            "wo" => Ok(TypeMode::WriteOnly),
            other => Err(TypeModeError(other.to_owned())),
        }
    }
}

/// What a write does to a record, as far as permissions care.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteKind {
    /// The first write of a record (the author had seen nothing of it).
    Create,
    /// A write to a record the author had seen.
    Update,
    /// A deletion.
    Delete,
}

/// What a certificate grants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    pub read: Filter,
    pub write: Filter,
    /// Modes of listed types; unlisted types are read-write.
    pub types: BTreeMap<RecordType, TypeMode>,
}

/// How a scope is wider than the scope it must lie within.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Widening {
    #[error("reads {prefix} outside the parent's read filter")]
    Read { prefix: Partition },
    #[error("writes {prefix} outside the parent's write filter")]
    Write { prefix: Partition },
    #[error("gives type {record_type} mode {child} where the parent gives {parent}")]
    TypeMode { record_type: RecordType, child: TypeMode, parent: TypeMode },
}

/// Why a list of type modes is not a valid part of a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope lists {count} record types, more than the {max} allowed")]
    TooManyTypes { count: usize, max: usize },
    #[error("scope type entry {entry:?} is not TYPE=MODE")]
    TypeEntry { entry: String },
    #[error("scope type entry {entry:?}: {error}")]
    RecordType { entry: String, error: RecordTypeError },
    #[error("scope type entry {entry:?}: {error}")]
    Mode { entry: String, error: TypeModeError },
}

impl Scope {
    /// Everything in one org: the scope of the org's root certificate.
    pub fn full(org: OrgId) -> Scope {
        Scope { read: Filter::org(org), write: Filter::org(org), types: BTreeMap::new() }
    }

    /// The mode for a record type.
    pub fn mode(&self, record_type: &RecordType) -> TypeMode {
        self.types.get(record_type).copied().unwrap_or(TypeMode::ReadWrite)
    }

    /// Whether the holder may hold and receive records of this type here.
    pub fn may_read(&self, partition: &Partition, record_type: &RecordType) -> bool {
        self.read.contains(partition) && self.mode(record_type).may_read()
    }

    /// Whether the holder may keep records of this type here: where it may
    /// read them, or for a write-only type, where it may write them (its
    /// own records, which it sends and never receives).
    pub fn may_hold(&self, partition: &Partition, record_type: &RecordType) -> bool {
        match self.mode(record_type) {
            TypeMode::None => false,
            TypeMode::WriteOnly => self.write.contains(partition),
            _ => self.read.contains(partition) || self.write.contains(partition),
        }
    }

    /// Whether the holder may author this kind of write here.
    pub fn may_write(&self, partition: &Partition, record_type: &RecordType, kind: WriteKind) -> bool {
        self.write.contains(partition) && self.mode(record_type).may_write(kind)
    }

    /// Whether this scope grants nothing its parent does not: the narrowing
    /// rule for every certificate hop. Returns the first widening found.
    pub fn check_within(&self, parent: &Scope) -> Result<(), Widening> {
        if let Some(prefix) = self.read.first_outside(&parent.read) {
            return Err(Widening::Read { prefix: prefix.clone() });
        }
        if let Some(prefix) = self.write.first_outside(&parent.write) {
            return Err(Widening::Write { prefix: prefix.clone() });
        }
        for record_type in parent.types.keys().chain(self.types.keys()) {
            let child = self.mode(record_type);
            let parent_mode = parent.mode(record_type);
            if !child.within(parent_mode) {
                return Err(Widening::TypeMode { record_type: record_type.clone(), child, parent: parent_mode });
            }
        }
        Ok(())
    }

    /// Whether this scope lies within `parent`.
    pub fn is_within(&self, parent: &Scope) -> bool {
        self.check_within(parent).is_ok()
    }

    /// What both scopes grant.
    pub fn intersection(&self, other: &Scope) -> Scope {
        let mut types = self.types.clone();
        for (record_type, &mode) in &other.types {
            let entry = types.entry(record_type.clone()).or_insert(TypeMode::ReadWrite);
            *entry = (*entry).meet(mode);
        }
        Scope { read: self.read.intersection(&other.read), write: self.write.intersection(&other.write), types }
    }

    /// Parses `TYPE=MODE,…` as on the command line.
    pub fn parse_types(text: &str) -> Result<BTreeMap<RecordType, TypeMode>, ScopeError> {
        let entries: Vec<&str> = text.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if entries.len() > SCOPE_TYPES_MAX {
            return Err(ScopeError::TooManyTypes { count: entries.len(), max: SCOPE_TYPES_MAX });
        }
        let mut types = BTreeMap::new();
        for entry in entries {
            let (name, mode) =
                entry.split_once('=').ok_or_else(|| ScopeError::TypeEntry { entry: entry.to_owned() })?;
            let record_type = RecordType::parse(name.trim())
                .map_err(|error| ScopeError::RecordType { entry: entry.to_owned(), error })?;
            let mode = mode.trim().parse().map_err(|error| ScopeError::Mode { entry: entry.to_owned(), error })?;
            types.insert(record_type, mode);
        }
        Ok(types)
    }

    /// Prints the type modes as `TYPE=MODE,…`.
    pub fn types_text(&self) -> String {
        self.types.iter().map(|(t, m)| format!("{t}={m}")).collect::<Vec<_>>().join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> OrgId {
        OrgId::from_public_key(&[1u8; 32])
    }
    fn scope(read: &str, write: &str, types: &str) -> Scope {
        Scope {
            read: Filter::parse(org(), read).unwrap(),
            write: Filter::parse(org(), write).unwrap(),
            types: Scope::parse_types(types).unwrap(),
        }
    }
    fn t(name: &str) -> RecordType {
        RecordType::parse(name).unwrap()
    }

    #[test]
    fn scope_narrowing_names_the_widened_part() {
        let parent = scope("results,tests", "results:tc-1", "test=ro");
        assert!(scope("results:tc-1", "results:tc-1:s", "test=none").is_within(&parent));
        assert_eq!(
            scope("results,archive", "", "").check_within(&parent),
            Err(Widening::Read { prefix: Partition::resolve(org(), "archive").unwrap() })
        );
        assert_eq!(
            scope("results", "results", "test=ro").check_within(&parent),
            Err(Widening::Write { prefix: Partition::resolve(org(), "results").unwrap() })
        );
        // Leaving a restricted type out would make it read-write: a widening.
        assert_eq!(
            scope("results", "", "").check_within(&parent),
            Err(Widening::TypeMode { record_type: t("test"), child: TypeMode::ReadWrite, parent: TypeMode::ReadOnly })
        );
    }

    #[test]
    fn write_only_writes_everything_reads_nothing_and_narrows_only_from_rw() {
        let s = scope("results,tests", "results:tc-1", "result=wo");
        let mine = Partition::resolve(org(), "results:tc-1").unwrap();
        let theirs = Partition::resolve(org(), "results:tc-2").unwrap();
        for kind in [WriteKind::Create, WriteKind::Update, WriteKind::Delete] {
            assert!(s.may_write(&mine, &t("result"), kind));
        }
        assert!(!s.may_read(&mine, &t("result")));
        // It holds its own results only, where it may write them.
        assert!(s.may_hold(&mine, &t("result")) && !s.may_hold(&theirs, &t("result")));
        assert!(s.may_hold(&theirs, &t("test")));
        assert!(s.is_within(&scope("results,tests", "results", "")));
        assert!(!scope("results", "results", "").is_within(&s));
        assert!(!s.is_within(&scope("results,tests", "results", "result=ro")));
        assert!(!scope("results", "", "result=ro").is_within(&s));
        assert_eq!(TypeMode::WriteOnly.meet(TypeMode::ReadOnly), TypeMode::None);
        assert_eq!(TypeMode::WriteOnly.meet(TypeMode::UpdateOnly), TypeMode::None);
        assert_eq!(TypeMode::WriteOnly.meet(TypeMode::ReadWrite), TypeMode::WriteOnly);
        assert_eq!(TypeMode::UpdateOnly.meet(TypeMode::ReadOnly), TypeMode::ReadOnly);
        assert_eq!("wo".parse::<TypeMode>(), Ok(TypeMode::WriteOnly));
    }

    #[test]
    fn update_only_allows_updates_but_not_creates_or_deletes() {
        let s = scope("results", "results", "result=update-only");
        let p = Partition::resolve(org(), "results:tc-1").unwrap();
        assert!(s.may_write(&p, &t("result"), WriteKind::Update));
        assert!(!s.may_write(&p, &t("result"), WriteKind::Create));
        assert!(!s.may_write(&p, &t("result"), WriteKind::Delete));
        assert!(s.may_read(&p, &t("result")));
        assert!(s.may_write(&p, &t("other"), WriteKind::Create));
    }

    #[test]
    fn type_mode_parse_rejects_unknown_modes() {
        assert!(matches!(Scope::parse_types("a=rw,b=sometimes"), Err(ScopeError::Mode { .. })));
        assert!(matches!(Scope::parse_types("a"), Err(ScopeError::TypeEntry { .. })));
    }
}
