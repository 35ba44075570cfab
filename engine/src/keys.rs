//! The store's key layouts (docs/storage.md has the table). One ordered key
//! space; the first byte names the table. Partition keys end every segment
//! with 0x00 and are followed by 0x01, so a partition's key is a prefix of
//! the keys of everything inside it and of nothing else.

use partitions::{Partition, RecordType};

use crate::change::type_prefix;
use crate::ids::{Counter, InstanceId, RecordId};

pub const META: u8 = b'm';
pub const RECORDS: u8 = b'r';
pub const BY_ID: u8 = b'i';
pub const CHANGES: u8 = b'c';
pub const HEADS: u8 = b'h';
pub const CHAINS: u8 = b'k';
pub const AUTHOR_CHAINS: u8 = b'a';
pub const CONFLICTS: u8 = b'x';
pub const LEDGER: u8 = b'l';
pub const PEERS: u8 = b'p';
pub const RUNS: u8 = b'g';
pub const BLOB_REFS: u8 = b'b';
pub const LOCAL_FIELDS: u8 = b'o';
pub const FEED: u8 = b'f';

/// `FEED ‖ cursor (u64 BE)`: one entry of the change feed (`store/feed.rs`).
pub fn feed(cursor: u64) -> Vec<u8> {
    let mut key = vec![FEED];
    key.extend_from_slice(&cursor.to_be_bytes());
    key
}

/// The cursor of a change feed key.
pub fn feed_cursor(key: &[u8]) -> Option<u64> {
    match key {
        [FEED, rest @ ..] => rest.try_into().ok().map(u64::from_be_bytes),
        _ => None,
    }
}

pub fn meta(name: &str) -> Vec<u8> {
    let mut key = vec![META];
    key.extend_from_slice(name.as_bytes());
    key
}

/// `RECORDS ‖ partition ‖ 0x01 ‖ type ‖ 0x00 ‖ id`
pub fn record(partition: &Partition, record_type: &RecordType, id: &RecordId) -> Vec<u8> {
    let mut key = vec![RECORDS];
    key.extend_from_slice(&type_prefix(partition, record_type));
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// `BY_ID ‖ type ‖ 0x00 ‖ id ‖ 0x00 ‖ partition`: the index by id that
/// stores before protocol 2 kept for every record. No longer written or
/// read (`Store::find` asks the frontier); repair still removes a damaged
/// record's entry.
pub fn by_id(partition: &Partition, record_type: &RecordType, id: &RecordId) -> Vec<u8> {
    let mut key = vec![BY_ID];
    key.extend_from_slice(record_type.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(id.as_str().as_bytes());
    key.push(0);
    partition.write_key(&mut key);
    key
}

/// `LOCAL_FIELDS ‖ partition ‖ 0x01 ‖ type ‖ 0x00 ‖ id`: the record's
/// local fields (`TypePolicy::local`), which no change carries.
pub fn local_fields(partition: &Partition, record_type: &RecordType, id: &RecordId) -> Vec<u8> {
    let mut key = record(partition, record_type, id);
    key[0] = LOCAL_FIELDS;
    key
}

/// `m` ‖ `reissue/` ‖ partition ‖ 0x01 ‖ type ‖ 0x00 ‖ id: a record whose
/// own held-back changes must be written again (`Store::reissue_marked`).
pub fn reissue(key: &crate::change::RecordKey) -> Vec<u8> {
    let mut out = meta(REISSUE_PREFIX);
    out.extend_from_slice(&record(&key.partition, &key.record_type, &key.id)[1..]);
    out
}

pub const REISSUE_PREFIX: &str = "reissue/";

/// `HEADS ‖ partition ‖ 0x01 ‖ type ‖ 0x00 ‖ instance`
pub fn head(partition: &Partition, record_type: &RecordType, instance: &InstanceId) -> Vec<u8> {
    let mut key = vec![HEADS];
    key.extend_from_slice(&type_prefix(partition, record_type));
    key.extend_from_slice(&instance.0);
    key
}

/// `CHANGES ‖ partition ‖ 0x01 ‖ type ‖ 0x00 ‖ instance ‖ counter (u64 BE)`
pub fn change(partition: &Partition, record_type: &RecordType, instance: &InstanceId, counter: Counter) -> Vec<u8> {
    let mut key = vec![CHANGES];
    key.extend_from_slice(&type_prefix(partition, record_type));
    key.extend_from_slice(&instance.0);
    key.extend_from_slice(&counter.to_be_bytes());
    key
}

/// `RUNS ‖ instance ‖ first counter (u64 BE)`: what is known of a signed
/// run (`seal::RunKnown`).
pub fn run(instance: &InstanceId, first: Counter) -> Vec<u8> {
    let mut key = vec![RUNS];
    key.extend_from_slice(&instance.0);
    key.extend_from_slice(&first.to_be_bytes());
    key
}

/// `BLOB_REFS ‖ hash ‖ partition ‖ 0x01 ‖ type ‖ 0x00 ‖ id`, holding the
/// blob's size (u64 BE): a record whose retained changes reference the
/// blob (`blob::refs_of`).
pub fn blob_ref(
    hash: &crate::blob::BlobHash,
    partition: &Partition,
    record_type: &RecordType,
    id: &RecordId,
) -> Vec<u8> {
    let mut key = vec![BLOB_REFS];
    key.extend_from_slice(&hash.0);
    key.extend_from_slice(&type_prefix(partition, record_type));
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

/// A table prefix followed by a partition's key: everything of the table
/// inside that partition.
pub fn under(table: u8, partition: &Partition) -> Vec<u8> {
    let mut key = vec![table];
    partition.write_key(&mut key);
    key
}

/// Splits `partition ‖ 0x01 ‖ type ‖ 0x00 ‖ rest` (without the table byte).
pub fn split_typed(key: &[u8]) -> Option<(Partition, RecordType, &[u8])> {
    let org_len = partitions::org::ORG_ID_BYTES;
    if key.len() < org_len {
        return None;
    }
    // Segments end with 0x00 and never contain 0x00 or 0x01, so the first
    // 0x01 after the org id ends the partition.
    let marker = org_len + key[org_len..].iter().position(|&b| b == 1)?;
    let partition = Partition::from_key(&key[..marker]).ok()?;
    let rest = &key[marker + 1..];
    let type_end = rest.iter().position(|&b| b == 0)?;
    let record_type = RecordType::parse(std::str::from_utf8(&rest[..type_end]).ok()?).ok()?;
    Some((partition, record_type, &rest[type_end + 1..]))
}

/// `META ‖ "floor/" ‖ partition ‖ 0x01 ‖ type ‖ 0x00 ‖ instance`: a head
/// lowered by a repair, with the head it had (docs/storage.md, "Repair").
pub fn floor(partition: &Partition, record_type: &RecordType, instance: &InstanceId) -> Vec<u8> {
    let mut key = meta(FLOOR_PREFIX);
    key.extend_from_slice(&type_prefix(partition, record_type));
    key.extend_from_slice(&instance.0);
    key
}

pub const FLOOR_PREFIX: &str = "floor/";

/// `META ‖ "evicted/" ‖ partition ‖ 0x01 ‖ type ‖ 0x00 ‖ instance`: the
/// highest counter of the triple an eviction removed (`Store::evicted`).
pub fn evicted(partition: &Partition, record_type: &RecordType, instance: &InstanceId) -> Vec<u8> {
    let mut key = meta(EVICTED_PREFIX);
    key.extend_from_slice(&type_prefix(partition, record_type));
    key.extend_from_slice(&instance.0);
    key
}

pub const EVICTED_PREFIX: &str = "evicted/";

/// What a stored key is, in words, for error messages and `ferry check`.
pub fn describe(key: &[u8]) -> String {
    let Some((&table, rest)) = key.split_first() else { return "an empty key".to_owned() };
    let typed = || split_typed(rest);
    match table {
        LOCAL_FIELDS => match typed() {
            Some((partition, record_type, id)) => {
                format!("the local fields of {record_type}/{} in {partition}", String::from_utf8_lossy(id))
            }
            None => "local fields whose key is damaged".to_owned(),
        },
        RECORDS | CONFLICTS => match typed() {
            Some((partition, record_type, id)) => {
                format!("record {record_type}/{} in {partition}", String::from_utf8_lossy(id))
            }
            None => "a record whose key is damaged".to_owned(),
        },
        CHANGES => match typed() {
            Some((partition, record_type, rest)) if rest.len() == 24 => {
                let counter = u64::from_be_bytes(rest[16..].try_into().expect("8 bytes"));
                format!("the change index of {record_type} in {partition} (counter {counter})")
            }
            _ => "a change index entry whose key is damaged".to_owned(),
        },
        HEADS => match typed() {
            Some((partition, record_type, _)) => format!("the frontier of {record_type} in {partition}"),
            None => "a frontier entry whose key is damaged".to_owned(),
        },
        META => format!("the store's {:?} setting", String::from_utf8_lossy(rest)),
        BY_ID => "the index of records by id (kept by older versions)".to_owned(),
        CHAINS | AUTHOR_CHAINS => "a stored certificate chain".to_owned(),
        LEDGER => "a sync ledger entry".to_owned(),
        FEED => match feed_cursor(key) {
            Some(cursor) => format!("entry {cursor} of the change feed"),
            None => "a change feed entry whose key is damaged".to_owned(),
        },
        PEERS => "a note kept about a peer".to_owned(),
        RUNS if rest.len() == 24 => {
            let first = u64::from_be_bytes(rest[16..].try_into().expect("8 bytes"));
            format!("the signature and hashes of the run from counter {first}")
        }
        RUNS => "a run entry whose key is damaged".to_owned(),
        BLOB_REFS if rest.len() > 32 => match split_typed(&rest[32..]) {
            Some((partition, record_type, id)) => format!(
                "the reference of record {record_type}/{} in {partition} to blob {}",
                String::from_utf8_lossy(id),
                partitions::hex::encode(&rest[..32])
            ),
            None => "a blob reference whose key is damaged".to_owned(),
        },
        BLOB_REFS => "a blob reference whose key is damaged".to_owned(),
        other => format!("an entry of unknown table {other:#04x}"),
    }
}

/// `META ‖ "profile/" ‖ org id`: the org's profile texts this node could
/// read (`policy::readable_texts`), CBOR of {type: text}.
pub fn readable_profile(org: partitions::OrgId) -> Vec<u8> {
    let mut key = meta("profile/");
    key.extend_from_slice(org.as_bytes());
    key
}

/// `META ‖ "count/" ‖ org id`: how many records the store holds in an org.
pub fn count(org: partitions::OrgId) -> Vec<u8> {
    let mut key = meta(COUNT_PREFIX);
    key.extend_from_slice(org.as_bytes());
    key
}

pub const COUNT_PREFIX: &str = "count/";
