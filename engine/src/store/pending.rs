//! `Pending`: the writes one commit gathers, with the bookkeeping that goes
//! with them (triples touched, records added per org, floors cleared), and
//! the change-index entry format.

use std::collections::{BTreeMap, BTreeSet};

use partitions::OrgId;

use crate::backend::WriteOp;
use crate::change::{Change, RecordKey};
use crate::ids::{AuthorKey, Counter, Dot, RecordId};
use crate::keys;
use crate::merge::RecordState;
use crate::stored;

use super::Triple;

/// Writes gathered for one commit; later writes to a key replace earlier ones.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Triples whose indexed changes this commit adds or drops.
    pub(super) touched: BTreeSet<Triple>,
    /// Records this commit adds (or removes) per org.
    pub(super) new_records: BTreeMap<OrgId, i64>,
    /// Repair floors this commit removes (forgotten once it is durable).
    pub(super) floors_cleared: Vec<Triple>,
    /// Records this commit changes, for the change feed (`store/feed.rs`).
    pub(super) feed: Vec<RecordKey>,
    /// Where the changes came from; `None`: written here.
    pub(super) origin: Option<String>,
}

impl Pending {
    pub(super) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub(super) fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Stores a record's state and its conflict marker. `existed`: the
    /// record was stored before, so a marker may need removing (a new
    /// record has none, and a removal still costs the backend a lookup).
    pub(super) fn record(&mut self, key: &RecordKey, state: &RecordState, existed: bool) {
        if !existed {
            *self.new_records.entry(key.partition.org()).or_default() += 1;
        }
        let record_key = keys::record(&key.partition, &key.record_type, &key.id);
        let conflict_key = {
            let mut k = vec![keys::CONFLICTS];
            k.extend_from_slice(&record_key[1..]);
            k
        };
        if state.has_conflicts() {
            self.put(conflict_key, Vec::new());
        } else if existed {
            self.delete(conflict_key);
        }
        self.put(record_key, stored::encode_record(state));
    }

    pub(super) fn index_change(&mut self, change: &Change, encoded_len: usize) {
        self.index(IndexEntry::of(change, encoded_len));
    }

    pub(super) fn index(&mut self, entry: IndexEntry) {
        self.touched.insert(entry.triple);
        self.put(entry.key, entry.value);
    }

    pub(super) fn drop_changes(&mut self, key: &RecordKey, dropped: &[Dot]) {
        for dot in dropped {
            self.touched.insert((key.partition.clone(), key.record_type.clone(), dot.instance));
            self.delete(keys::change(&key.partition, &key.record_type, &dot.instance, dot.counter));
        }
    }

    pub(super) fn chain(&mut self, author: &AuthorKey, chain: &[u8]) -> [u8; 32] {
        let hash = *blake3::hash(chain).as_bytes();
        let mut key = vec![keys::CHAINS];
        key.extend_from_slice(&hash);
        self.put(key, chain.to_vec());
        let mut key = vec![keys::AUTHOR_CHAINS];
        key.extend_from_slice(&author.0);
        key.extend_from_slice(&hash);
        self.put(key, Vec::new());
        hash
    }

    pub(super) fn into_writes(self) -> Vec<WriteOp> {
        self.writes.into_iter().collect()
    }
}

/// A change-index entry, prepared before the change is handed to merge.
pub(super) struct IndexEntry {
    pub(super) triple: Triple,
    pub(super) key: Vec<u8>,
    pub(super) value: Vec<u8>,
}

impl IndexEntry {
    pub(super) fn of(change: &Change, encoded_len: usize) -> IndexEntry {
        let key = keys::change(&change.record.partition, &change.record.record_type, &change.author, change.counter);
        let mut value = (encoded_len as u32).to_be_bytes().to_vec();
        value.extend_from_slice(change.record.id.as_str().as_bytes());
        IndexEntry {
            triple: (change.record.partition.clone(), change.record.record_type.clone(), change.author),
            key,
            value,
        }
    }
}

pub(super) fn counter_of(change_key: &[u8]) -> Counter {
    let tail: [u8; 8] = change_key[change_key.len() - 8..].try_into().expect("change keys end with a counter");
    u64::from_be_bytes(tail)
}

pub(super) fn parse_index_value(v: &[u8]) -> Option<(u64, RecordId)> {
    let size = u32::from_be_bytes(v.get(..4)?.try_into().ok()?);
    let id = RecordId::parse(std::str::from_utf8(&v[4..]).ok()?).ok()?;
    Some((u64::from(size), id))
}
