//! The encodings the store keeps: a record's state (the key holds its
//! partition, type and id) and serde values (ledger entries, peer notes).
//! Trusted (this node wrote them), but decoded with the same care as what
//! a peer sends: a damaged value is an error, never a panic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::change::signing::{OpSer, OpWire};
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
