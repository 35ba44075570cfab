//! The encodings the store keeps: a record's state (the key holds its
//! partition, type and id) and serde values (ledger entries, peer notes).
//! Trusted (this node wrote them), but decoded with the same care as what
//! a peer sends: a damaged value is an error, never a panic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::change::signing::{BasesSer, BasesWire, OpSer, OpWire, bases_from_wire, no_bases};
use crate::change::{Change, RecordKey};
use crate::codec::{Bytes16, Bytes32, DecodeError, SealField, cbor_decode};
use crate::ids::{AuthorKey, Hlc, InstanceId};
use crate::merge::{Knowledge, RecordState};
use crate::seal::Seal;
use crate::vector::VersionVector;

#[derive(Serialize, Deserialize)]
struct StoredRecord {
    vv: VersionVector,
    known_exists: VersionVector,
    known_all: VersionVector,
    known_fields: BTreeMap<String, VersionVector>,
    changes: Vec<StoredChange>,
}

#[derive(Serialize)]
struct StoredRecordSer<'a> {
    vv: &'a VersionVector,
    known_exists: &'a VersionVector,
    known_all: &'a VersionVector,
    known_fields: &'a BTreeMap<String, VersionVector>,
    changes: Vec<StoredChangeSer<'a>>,
}

#[derive(Serialize)]
struct StoredChangeSer<'a> {
    author: Bytes16,
    author_key: Bytes32,
    counter: u64,
    hlc: u64,
    authority: &'a Option<String>,
    seen: &'a VersionVector,
    op: OpSer<'a>,
    seal: SealField,
    #[serde(skip_serializing_if = "no_bases")]
    bases: BasesSer<'a>,
}

#[derive(Serialize, Deserialize)]
struct StoredChange {
    author: Bytes16,
    author_key: Bytes32,
    counter: u64,
    hlc: u64,
    authority: Option<String>,
    seen: VersionVector,
    op: OpWire,
    seal: SealField,
    #[serde(default)]
    bases: BasesWire,
}

/// Encodes a record's state for the store (the key holds partition, type, id).
pub fn encode_record(state: &RecordState) -> Vec<u8> {
    let stored = StoredRecordSer {
        vv: &state.vv,
        known_exists: &state.known.exists,
        known_all: &state.known.all_fields,
        known_fields: &state.known.fields,
        changes: state
            .changes
            .iter()
            .map(|c| StoredChangeSer {
                author: Bytes16(c.author.0),
                author_key: Bytes32(c.author_key.0),
                counter: c.counter,
                hlc: c.hlc.0,
                authority: &c.authority,
                seen: &c.seen,
                op: OpSer(&c.op),
                seal: match c.seal {
                    Seal::Single(signature) => SealField::Single(signature),
                    Seal::Run { first } => SealField::Run(first),
                },
                bases: BasesSer(&c.bases),
            })
            .collect(),
    };
    serde_cbor::ser::to_vec_packed(&stored).expect("writing CBOR to a Vec cannot fail")
}

/// Decodes a stored record of `key`.
pub fn decode_record(key: &RecordKey, bytes: &[u8]) -> Result<RecordState, DecodeError> {
    let stored: StoredRecord = cbor_decode(bytes)?;
    Ok(RecordState {
        vv: stored.vv,
        known: Knowledge { exists: stored.known_exists, all_fields: stored.known_all, fields: stored.known_fields },
        changes: stored
            .changes
            .into_iter()
            .map(|c| Change {
                record: key.clone(),
                author: InstanceId(c.author.0),
                author_key: AuthorKey(c.author_key.0),
                counter: c.counter,
                hlc: Hlc(c.hlc),
                authority: c.authority,
                seen: c.seen,
                op: c.op.into_op(),
                bases: bases_from_wire(c.bases),
                seal: match c.seal {
                    SealField::Single(signature) => Seal::Single(signature),
                    SealField::Run(first) => Seal::Run { first },
                },
            })
            .collect(),
    })
}

/// Encodes any serde value the store keeps (ledger entries, peer caches).
pub fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    serde_cbor::ser::to_vec_packed(value).expect("writing CBOR to a Vec cannot fail")
}

pub fn decode_value<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DecodeError> {
    cbor_decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Base, Op};
    use crate::ids::Dot;
    use crate::value::Value;

    /// A record written before bases existed decodes with none, and a
    /// record's bases survive the store.
    #[test]
    fn bases_round_trip_through_the_store_and_old_records_decode_without() {
        let org = partitions::OrgId::from_public_key(&[1; 32]);
        let key = RecordKey {
            partition: partitions::Partition::resolve(org, "shared").unwrap(),
            record_type: partitions::RecordType::parse("client").unwrap(),
            id: crate::ids::RecordId::parse("c1").unwrap(),
        };
        let fields = BTreeMap::from([("phone".to_owned(), Some(Value::Int(1)))]);
        let mut change = Change {
            record: key.clone(),
            author: InstanceId([2; 16]),
            author_key: AuthorKey([3; 32]),
            counter: 1,
            hlc: Hlc(5),
            authority: None,
            seen: VersionVector::new(),
            op: Op::Put { replace: false, fields },
            bases: BTreeMap::new(),
            seal: Seal::Run { first: 1 },
        };
        let mut state = RecordState::default();
        state.apply(change.clone()).unwrap();
        let old = encode_record(&state);
        assert_eq!(decode_record(&key, &old).unwrap(), state);
        change.bases = BTreeMap::from([(
            "phone".to_owned(),
            vec![Base {
                dot: Dot { instance: InstanceId([9; 16]), counter: 3 },
                hlc: Hlc(4),
                value: Some(Value::Int(0)),
            }],
        )]);
        let mut based = RecordState::default();
        based.apply(change).unwrap();
        let bytes = encode_record(&based);
        assert!(bytes.len() > old.len());
        assert_eq!(decode_record(&key, &bytes).unwrap(), based);
    }
}
