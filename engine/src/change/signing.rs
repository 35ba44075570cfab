//! The bytes a change's signature covers (docs/protocol.md, "Signing
//! bytes"), and the encoding of an `Op` that the signing bytes, the wire
//! and the store share.

use std::collections::BTreeMap;

use partitions::{Partition, RecordType};
use serde::{Deserialize, Serialize};

use crate::change::{Change, Op};
use crate::codec::{Bytes16, Bytes32};
use crate::ids::RecordId;
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
    };
    serde_cbor::ser::to_vec_packed(&signed).expect("writing CBOR to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::cbor_decode;

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
