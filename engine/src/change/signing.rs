//! The bytes a change's signature covers (docs/protocol.md, "Signing
//! bytes"), and the encoding of an `Op` that the signing bytes, the wire
//! and the store share.

use std::collections::BTreeMap;

use partitions::{Partition, RecordType};
use serde::{Deserialize, Serialize};

use crate::change::{Base, Bases, Change, Op};
use crate::codec::{Bytes16, Bytes32};
use crate::ids::{Dot, Hlc, InstanceId, RecordId};
use crate::value::Value;
use crate::vector::VersionVector;

#[derive(Serialize, Deserialize, Clone)]
pub(crate) enum OpWire {
    Put { replace: bool, fields: BTreeMap<String, FieldWire> },
    Delete,
}

#[derive(Serialize, Deserialize, Clone)]
pub(crate) enum FieldWire {
    Unset,
    Set(Value),
}

/// Serialises an `Op` exactly as `OpWire` does, without copying its values
/// (encoding is on the hot path of every write and every sync).
pub(crate) struct OpSer<'a>(pub(crate) &'a Op);

struct FieldsSer<'a>(&'a BTreeMap<String, Option<Value>>);

struct FieldSer<'a>(&'a Option<Value>);

impl Serialize for OpSer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStructVariant;
        match self.0 {
            Op::Put { replace, fields } => {
                let mut v = s.serialize_struct_variant("OpWire", 0, "Put", 2)?;
                v.serialize_field("replace", replace)?;
                v.serialize_field("fields", &FieldsSer(fields))?;
                v.end()
            }
            Op::Delete => s.serialize_unit_variant("OpWire", 1, "Delete"),
        }
    }
}

impl Serialize for FieldsSer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, &FieldSer(v))?;
        }
        map.end()
    }
}

impl Serialize for FieldSer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_unit_variant("FieldWire", 0, "Unset"),
            Some(v) => s.serialize_newtype_variant("FieldWire", 1, "Set", v),
        }
    }
}

/// A change's bases as the signing bytes, the wire and the store encode
/// them: per field, `[instance, counter, hlc, value]` newest first. Absent
/// when empty, so a change of any other policy encodes as before bases
/// existed (and old signatures still verify).
pub(crate) struct BasesSer<'a>(pub(crate) &'a Bases);

pub(crate) type BasesWire = BTreeMap<String, Vec<(Bytes16, u64, u64, FieldWire)>>;

/// For `skip_serializing_if`.
pub(crate) fn no_bases(bases: &BasesSer<'_>) -> bool {
    bases.0.is_empty()
}

impl Serialize for BasesSer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct List<'a>(&'a [Base]);
        impl Serialize for List<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for b in self.0 {
                    seq.serialize_element(&(Bytes16(b.dot.instance.0), b.dot.counter, b.hlc.0, FieldSer(&b.value)))?;
                }
                seq.end()
            }
        }
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, list) in self.0 {
            map.serialize_entry(k, &List(list))?;
        }
        map.end()
    }
}

pub(crate) fn bases_from_wire(wire: BasesWire) -> Bases {
    wire.into_iter()
        .map(|(field, list)| {
            let list = list
                .into_iter()
                .map(|(instance, counter, hlc, value)| Base {
                    dot: Dot { instance: InstanceId(instance.0), counter },
                    hlc: Hlc(hlc),
                    value: match value {
                        FieldWire::Unset => None,
                        FieldWire::Set(v) => Some(v),
                    },
                })
                .collect();
            (field, list)
        })
        .collect()
}

impl OpWire {
    #[cfg(test)]
    pub(crate) fn from_op(op: &Op) -> OpWire {
        match op {
            Op::Put { replace, fields } => OpWire::Put {
                replace: *replace,
                fields: fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_ref().map_or(FieldWire::Unset, |v| FieldWire::Set(v.clone()))))
                    .collect(),
            },
            Op::Delete => OpWire::Delete,
        }
    }

    pub(crate) fn into_op(self) -> Op {
        match self {
            OpWire::Put { replace, fields } => Op::Put {
                replace,
                fields: fields
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            match v {
                                FieldWire::Unset => None,
                                FieldWire::Set(v) => Some(v),
                            },
                        )
                    })
                    .collect(),
            },
            OpWire::Delete => Op::Delete,
        }
    }
}

#[derive(Serialize)]
struct SignedChange<'a> {
    domain: &'static str,
    partition: &'a Partition,
    record_type: &'a RecordType,
    id: &'a RecordId,
    author: Bytes16,
    author_key: Bytes32,
    counter: u64,
    hlc: u64,
    authority: &'a Option<String>,
    seen: &'a VersionVector,
    op: OpSer<'a>,
    #[serde(skip_serializing_if = "no_bases")]
    bases: BasesSer<'a>,
}

/// The canonical bytes of a change without its signature.
pub(crate) fn change_signing_bytes(c: &Change) -> Vec<u8> {
    let signed = SignedChange {
        domain: "ferry change v1",
        partition: &c.record.partition,
        record_type: &c.record.record_type,
        id: &c.record.id,
        author: Bytes16(c.author.0),
        author_key: Bytes32(c.author_key.0),
        counter: c.counter,
        hlc: c.hlc.0,
        authority: &c.authority,
        seen: &c.seen,
        op: OpSer(&c.op),
        bases: BasesSer(&c.bases),
    };
    serde_cbor::ser::to_vec_packed(&signed).expect("writing CBOR to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::cbor_decode;

    fn change(bases: Bases) -> Change {
        Change {
            record: crate::change::RecordKey {
                partition: Partition::resolve(partitions::OrgId::from_public_key(&[1; 32]), "shared").unwrap(),
                record_type: RecordType::parse("client").unwrap(),
                id: RecordId::parse("c1").unwrap(),
            },
            author: InstanceId([2; 16]),
            author_key: crate::ids::AuthorKey([3; 32]),
            counter: 4,
            hlc: Hlc(5),
            authority: None,
            seen: VersionVector::new(),
            op: Op::Put { replace: false, fields: BTreeMap::from([("phone".to_owned(), Some(Value::Int(1)))]) },
            bases,
            seal: crate::seal::Seal::Single([0; 64]),
        }
    }

    /// A change of any policy but `skip` signs the bytes it signed before
    /// bases existed, so every stored and relayed signature still verifies;
    /// bases, when there are some, are signed (a relay cannot strip them).
    #[test]
    fn bases_are_signed_and_absent_bases_leave_the_signing_bytes_as_they_were() {
        #[derive(Serialize)]
        struct BeforeBases<'a> {
            domain: &'static str,
            partition: &'a Partition,
            record_type: &'a RecordType,
            id: &'a RecordId,
            author: Bytes16,
            author_key: Bytes32,
            counter: u64,
            hlc: u64,
            authority: &'a Option<String>,
            seen: &'a VersionVector,
            op: OpSer<'a>,
        }
        let plain = change(Bases::new());
        let before = BeforeBases {
            domain: "ferry change v1",
            partition: &plain.record.partition,
            record_type: &plain.record.record_type,
            id: &plain.record.id,
            author: Bytes16(plain.author.0),
            author_key: Bytes32(plain.author_key.0),
            counter: plain.counter,
            hlc: plain.hlc.0,
            authority: &plain.authority,
            seen: &plain.seen,
            op: OpSer(&plain.op),
        };
        assert_eq!(plain.signing_bytes(), serde_cbor::ser::to_vec_packed(&before).unwrap());
        let base = Base { dot: Dot { instance: InstanceId([9; 16]), counter: 1 }, hlc: Hlc(2), value: None };
        let based = change(Bases::from([("phone".to_owned(), vec![base.clone()])]));
        assert_ne!(based.signing_bytes(), plain.signing_bytes());
        assert!(based.signing_len_bound() >= based.signing_bytes().len());
        let other = change(Bases::from([("phone".to_owned(), vec![Base { value: Some(Value::Int(7)), ..base }])]));
        assert_ne!(other.signing_bytes(), based.signing_bytes());
        let wire: BasesWire = cbor_decode(&serde_cbor::ser::to_vec_packed(&BasesSer(&other.bases)).unwrap()).unwrap();
        assert_eq!(bases_from_wire(wire), other.bases);
    }

    #[test]
    fn a_base_of_a_field_the_change_does_not_write_or_too_many_are_refused() {
        let base = Base { dot: Dot { instance: InstanceId([9; 16]), counter: 1 }, hlc: Hlc(2), value: None };
        let stray = change(Bases::from([("email".to_owned(), vec![base.clone()])]));
        assert!(matches!(stray.check_form(100), Err(crate::change::ChangeError::BaseOfUnwritten { .. })));
        let many = change(Bases::from([("phone".to_owned(), vec![base; crate::limits::SKIP_BASES_MAX + 1])]));
        assert!(matches!(many.check_form(100), Err(crate::change::ChangeError::TooManyBases { .. })));
    }

    #[test]
    fn borrowed_op_encoding_is_the_derived_encoding() {
        let ops = [
            Op::Delete,
            Op::Put { replace: true, fields: BTreeMap::new() },
            Op::Put {
                replace: false,
                fields: BTreeMap::from([
                    ("a".to_owned(), None),
                    ("b".to_owned(), Some(Value::Int(-3))),
                    ("c".to_owned(), Some(Value::Map(BTreeMap::from([("x".to_owned(), Value::Float(0.5))])))),
                ]),
            },
        ];
        for op in ops {
            let borrowed = serde_cbor::ser::to_vec_packed(&OpSer(&op)).unwrap();
            let derived = serde_cbor::ser::to_vec_packed(&OpWire::from_op(&op)).unwrap();
            assert_eq!(borrowed, derived);
            assert_eq!(cbor_decode::<OpWire>(&borrowed).unwrap().into_op(), op);
        }
    }
}
