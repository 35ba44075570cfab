//! Newtypes for the ids and numbers that cross module boundaries.

use std::fmt;

use crate::limits::RECORD_ID_BYTES_MAX;

/// A writer identity used in counters: bound to one node key and one store,
/// replaced by a fresh random one whenever the store may have lost or
/// duplicated its history (see docs/storage.md, "the instance rule").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct InstanceId(pub [u8; 16]);

impl InstanceId {
    pub fn parse(text: &str) -> Option<InstanceId> {
        partitions::hex::decode::<16>(text).map(InstanceId)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&partitions::hex::encode(&self.0))
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instance({})", &partitions::hex::encode(&self.0)[..8])
    }
}

/// An author's Ed25519 public key (a node's identity key).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuthorKey(pub [u8; 32]);

impl fmt::Display for AuthorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&partitions::hex::encode(&self.0))
    }
}

impl fmt::Debug for AuthorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorKey({})", &partitions::hex::encode(&self.0)[..8])
    }
}

/// The id of a record within its partition and type. Printable text
/// without control characters, at most `RECORD_ID_BYTES_MAX` bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(String);

/// Why a text is not a record id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIdError {
    #[error("record id is empty")]
    Empty,
    #[error("record id is {len} bytes, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("record id contains a control character")]
    Control,
}

impl RecordId {
    pub fn parse(text: &str) -> Result<RecordId, RecordIdError> {
        if text.is_empty() {
            return Err(RecordIdError::Empty);
        }
        if text.len() > RECORD_ID_BYTES_MAX {
            return Err(RecordIdError::TooLong { len: text.len(), max: RECORD_ID_BYTES_MAX });
        }
        if text.chars().any(char::is_control) {
            return Err(RecordIdError::Control);
        }
        Ok(RecordId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({:?})", self.0)
    }
}

impl serde::Serialize for RecordId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RecordId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RecordId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a record id")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RecordId, E> {
                RecordId::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// A per-instance change number; the first change of an instance is 1.
pub type Counter = u64;

/// A hybrid logical clock reading: milliseconds since 1970 in the high 48
/// bits, a logical counter in the low 16.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(pub u64);

impl Hlc {
    pub fn from_parts(millis: u64, logical: u16) -> Hlc {
        Hlc((millis << 16) | u64::from(logical))
    }

    pub fn millis(self) -> u64 {
        self.0 >> 16
    }

    /// The wall-clock second this reading stands for.
    pub fn seconds(self) -> u64 {
        self.millis() / 1000
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({}+{})", self.millis(), self.0 & 0xffff)
    }
}

/// The identity of one change: who wrote it and its number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Dot {
    pub instance: InstanceId,
    pub counter: Counter,
}
