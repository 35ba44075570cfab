//! Changes: signed deltas to one record.
//!
//! A change names its record (partition, type, id), its author (instance,
//! key, optional authority tag), its counter and hybrid clock reading, what
//! the author had seen of the record (a version vector), and the operation.
//! The signature covers all of that in a canonical encoding (`wire.rs`), so a
//! relay can forward a change but never alter it.
//!
//! Operations: `Put` sets or unsets fields; with `replace` it also unsets
//! every field it does not list (a create, or a write to a deleted record).
//! `Delete` marks the record deleted. Every change also writes the record's
//! existence: true for `Put`, false for `Delete`.
//!
//! A change to a record type with policy `skip` also carries its *bases*:
//! per field it writes, the values it overwrote and what those had
//! overwritten (`Base`), so that every node can show the value two
//! concurrent writers had both seen last (`merge.rs`, "Skip").

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use partitions::{Partition, RecordType, WriteKind};

use crate::ids::{AuthorKey, Counter, Dot, Hlc, InstanceId, RecordId};
use crate::limits::{
    AUTHORITY_BYTES_MAX, FIELD_NAME_BYTES_MAX, FIELDS_MAX, RECORD_BYTES_MAX, SKIP_BASES_MAX, VALUE_DEPTH_MAX,
};
use crate::seal::Seal;
use crate::value::Value;
use crate::vector::VersionVector;

pub(crate) mod signing;

/// Where a record lives: the natural key two devices meet on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    pub partition: Partition,
    pub record_type: RecordType,
    pub id: RecordId,
}

/// `partition/type/id`, as rejections and logs name a record.
impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.partition, self.record_type, self.id)
    }
}

impl RecordKey {
    /// The store key: partition key, 0x01, type, 0x00, id. Records of one
    /// partition (and one type inside it) are contiguous.
    pub fn to_key(&self) -> Vec<u8> {
        let mut key = type_prefix(&self.partition, &self.record_type);
        key.extend_from_slice(self.id.as_str().as_bytes());
        key
    }
}

/// Partition key, 0x01, type, 0x00: the prefix of everything stored about
/// one record type in one partition.
pub fn type_prefix(partition: &Partition, record_type: &RecordType) -> Vec<u8> {
    let mut key = partition.to_key();
    key.push(1);
    key.extend_from_slice(record_type.as_str().as_bytes());
    key.push(0);
    key
}

/// What a change does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sets (`Some`) or unsets (`None`) fields. With `replace`, every field
    /// not listed is unset too.
    Put {
        replace: bool,
        fields: BTreeMap<String, Option<Value>>,
    },
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub record: RecordKey,
    pub author: InstanceId,
    pub author_key: AuthorKey,
    pub counter: Counter,
    pub hlc: Hlc,
    pub authority: Option<String>,
    pub seen: VersionVector,
    pub op: Op,
    /// Under policy `skip`, per field the change writes, what it had seen
    /// of the field; empty for every other policy.
    pub bases: Bases,
    /// How the author vouches for the change (`seal.rs`).
    pub seal: Seal,
}

/// A value a change overwrote, or one that value had overwritten: its
/// change's dot and clock, and the value (`None`: unset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    pub dot: Dot,
    pub hlc: Hlc,
    pub value: Option<Value>,
}

/// Per field, newest first, at most `SKIP_BASES_MAX` bases.
pub type Bases = BTreeMap<String, Vec<Base>>;

/// Why a change is malformed, independent of who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("counter 0 is not a change")]
    ZeroCounter,
    #[error("the change claims to have seen its own counter {seen} (it is {counter})")]
    SeenItself { seen: Counter, counter: Counter },
    #[error("the change writes {count} fields, more than the {max} allowed")]
    TooManyFields { count: usize, max: usize },
    #[error(
        "field name {name:?} is empty, longer than the {FIELD_NAME_BYTES_MAX} bytes allowed, or has control characters"
    )]
    FieldName { name: String },
    #[error("field {field:?} nests {depth} deep, more than the {max} levels a value may have")]
    TooDeep { field: String, depth: usize, max: usize },
    #[error(
        "the change is {len} bytes, more than the {max} a record may hold; store files and large values as blobs (ferry put … --attach FIELD=PATH)"
    )]
    TooLarge { len: usize, max: usize },
    #[error("the change carries {count} bases for field {field:?}, more than the {max} allowed")]
    TooManyBases { field: String, count: usize, max: usize },
    #[error("the change carries bases for field {field:?}, which it does not write")]
    BaseOfUnwritten { field: String },
    #[error("authority tag is {len} bytes, more than the {max} allowed")]
    Authority { len: usize, max: usize },
    #[error("bad signature")]
    Signature,
    /// The run's signature does not verify over the root its changes and
    /// proof rebuild.
    #[error(
        "the signature of its run does not verify over its changes and proof (a change altered or moved between runs, or a forged proof)"
    )]
    RunSignature,
    #[error("it names a run of another author")]
    RunAuthor,
    #[error("{0}")]
    Proof(#[from] crate::seal::ProofError),
}

impl Change {
    pub fn dot(&self) -> Dot {
        Dot { instance: self.author, counter: self.counter }
    }

    /// What the change does as far as permissions care. Decided by the change
    /// alone, so every node classifies it the same way: a put that replaces
    /// the record or whose author had seen nothing of it creates.
    pub fn write_kind(&self) -> WriteKind {
        match &self.op {
            Op::Delete => WriteKind::Delete,
            Op::Put { replace: true, .. } => WriteKind::Create,
            Op::Put { replace: false, .. } if self.seen.is_empty() => WriteKind::Create,
            Op::Put { .. } => WriteKind::Update,
        }
    }

    pub fn is_delete(&self) -> bool {
        matches!(self.op, Op::Delete)
    }

    /// Whether this change writes the field `name` (set or unset).
    pub fn writes_field(&self, name: &str) -> bool {
        match &self.op {
            Op::Put { replace: true, .. } => true,
            Op::Put { replace: false, fields } => fields.contains_key(name),
            Op::Delete => false,
        }
    }

    /// What this change writes to field `name`, if it writes it: `Some(None)`
    /// is an unset.
    pub fn field(&self, name: &str) -> Option<Option<&Value>> {
        match &self.op {
            Op::Put { replace, fields } => match fields.get(name) {
                Some(v) => Some(v.as_ref()),
                None if *replace => Some(None),
                None => None,
            },
            Op::Delete => None,
        }
    }

    /// The fields this change names explicitly.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        let fields = match &self.op {
            Op::Put { fields, .. } => Some(fields),
            Op::Delete => None,
        };
        fields.into_iter().flat_map(|f| f.keys().map(String::as_str))
    }

    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        signing::change_signing_bytes(self)
    }

    /// Seals the change alone with its own signature (`Seal::Single`);
    /// returns the length of its signing bytes. Local writes seal runs
    /// instead (`Store::write`).
    pub fn sign(&mut self, key: &SigningKey) -> usize {
        debug_assert_eq!(key.verifying_key().to_bytes(), self.author_key.0);
        let bytes = self.signing_bytes();
        self.seal = Seal::Single(key.sign(&bytes).to_bytes());
        bytes.len()
    }

    /// The length of its signing bytes and its leaf hash in a run.
    pub fn leaf(&self) -> (usize, crate::seal::Hash) {
        let bytes = self.signing_bytes();
        (bytes.len(), crate::seal::leaf_hash(&bytes))
    }

    /// An upper bound on the length of `signing_bytes`, computed without
    /// encoding: every CBOR header is at most 9 bytes, and the struct's own
    /// keys and headers fit in `FIXED`.
    pub fn signing_len_bound(&self) -> usize {
        const HEADER: usize = 9;
        const FIXED: usize = 256;
        let key = HEADER * 3
            + self.record.partition.as_str().len()
            + self.record.record_type.as_str().len()
            + self.record.id.as_str().len();
        let author = HEADER * 4 + 16 + 32 + self.authority.as_ref().map_or(1, |a| HEADER + a.len());
        let seen = HEADER + self.seen.len() * (HEADER * 2 + 16);
        let op = match &self.op {
            Op::Put { fields, .. } => {
                HEADER * 3
                    + fields
                        .iter()
                        .map(|(k, v)| HEADER + k.len() + v.as_ref().map_or(1, Value::encoded_len_bound))
                        .sum::<usize>()
            }
            Op::Delete => HEADER,
        };
        let bases = self
            .bases
            .iter()
            .map(|(k, list)| {
                HEADER * 2
                    + k.len()
                    + list
                        .iter()
                        .map(|b| HEADER * 4 + 16 + b.value.as_ref().map_or(1, Value::encoded_len_bound))
                        .sum::<usize>()
            })
            .sum::<usize>();
        FIXED + key + author + seen + op + bases
    }

    /// Verifies a change sealed alone (strictly: no small-order keys, no
    /// malleable signatures). A change sealed in a run verifies with its
    /// run (`Store::verify_change`).
    pub fn verify(&self) -> Result<(), ChangeError> {
        match &self.seal {
            Seal::Single(signature) => verify_strict(&self.author_key, &self.signing_bytes(), signature),
            Seal::Run { .. } => Err(ChangeError::Signature),
        }
    }

    /// Checks the form of the change: everything that can be wrong with it
    /// whoever wrote it. `encoded_len` is the length of its signing bytes.
    /// Runs where a change is created (local writes), where it is sent and
    /// where it is received, so a node never makes what its peers refuse.
    pub fn check_form(&self, encoded_len: usize) -> Result<(), ChangeError> {
        if self.counter == 0 {
            return Err(ChangeError::ZeroCounter);
        }
        let seen = self.seen.get(&self.author);
        if seen >= self.counter {
            return Err(ChangeError::SeenItself { seen, counter: self.counter });
        }
        if let Op::Put { fields, .. } = &self.op {
            if fields.len() > FIELDS_MAX {
                return Err(ChangeError::TooManyFields { count: fields.len(), max: FIELDS_MAX });
            }
            if let Some(name) = fields.keys().find(|n| !is_field_name(n)) {
                return Err(ChangeError::FieldName { name: name.clone() });
            }
            for (field, value) in fields {
                let depth = value.as_ref().map_or(0, Value::depth);
                if depth > VALUE_DEPTH_MAX {
                    return Err(ChangeError::TooDeep { field: field.clone(), depth, max: VALUE_DEPTH_MAX });
                }
            }
        }
        for (field, list) in &self.bases {
            if !is_field_name(field) {
                return Err(ChangeError::FieldName { name: field.clone() });
            }
            if !self.writes_field(field) {
                return Err(ChangeError::BaseOfUnwritten { field: field.clone() });
            }
            if list.len() > SKIP_BASES_MAX {
                return Err(ChangeError::TooManyBases { field: field.clone(), count: list.len(), max: SKIP_BASES_MAX });
            }
            for base in list {
                let depth = base.value.as_ref().map_or(0, Value::depth);
                if depth > VALUE_DEPTH_MAX {
                    return Err(ChangeError::TooDeep { field: field.clone(), depth, max: VALUE_DEPTH_MAX });
                }
            }
        }
        if encoded_len > RECORD_BYTES_MAX {
            return Err(ChangeError::TooLarge { len: encoded_len, max: RECORD_BYTES_MAX });
        }
        if let Some(authority) = &self.authority
            && authority.len() > AUTHORITY_BYTES_MAX
        {
            return Err(ChangeError::Authority { len: authority.len(), max: AUTHORITY_BYTES_MAX });
        }
        Ok(())
    }
}

pub fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= FIELD_NAME_BYTES_MAX && !name.chars().any(char::is_control)
}

/// Why `is_field_name` refuses a name, naming the limit it breaks (a long
/// name is shown by its first characters).
pub fn field_name_refusal(name: &str) -> String {
    if name.is_empty() {
        return "a field name is empty".to_owned();
    }
    if name.len() > FIELD_NAME_BYTES_MAX {
        let start: String = name.chars().take(16).collect();
        return format!("field name {start:?}… is {} bytes, more than the {FIELD_NAME_BYTES_MAX} allowed", name.len());
    }
    format!("field name {name:?} holds a control character")
}

pub(crate) fn verify_strict(key: &AuthorKey, message: &[u8], signature: &[u8; 64]) -> Result<(), ChangeError> {
    let key = VerifyingKey::from_bytes(&key.0).map_err(|_| ChangeError::Signature)?;
    if key.is_weak() {
        return Err(ChangeError::Signature);
    }
    key.verify_strict(message, &Signature::from_bytes(signature)).map_err(|_| ChangeError::Signature)
}
