//! The blob index: which records reference which blob (`keys::blob_ref`),
//! kept by `Store::persist` in the same commit as the records.

use std::collections::BTreeMap;

use crate::blob::BlobHash;
use crate::change::RecordKey;
use crate::ids::RecordId;
use crate::keys;

use super::{Store, StoreError, be_u64, corrupt};

/// A referenced blob as the index knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Referenced {
    /// The size the (first) referencing record names.
    pub size: u64,
    /// Records that reference it.
    pub records: u64,
}

impl Store {
    /// The records that reference `hash`, each with the size it names.
    pub fn blob_referrers(&self, hash: &BlobHash) -> Result<Vec<(RecordKey, u64)>, StoreError> {
        let mut prefix = vec![keys::BLOB_REFS];
        prefix.extend_from_slice(&hash.0);
        let mut out = Vec::new();
        let mut bad = false;
        self.scan_prefix(&prefix, &mut |k, v| {
            let parsed = keys::split_typed(&k[prefix.len()..]).and_then(|(partition, record_type, id)| {
                let id = RecordId::parse(std::str::from_utf8(id).ok()?).ok()?;
                Some((RecordKey { partition, record_type, id }, v))
            });
            match parsed {
                Some((key, v)) => match be_u64(v) {
                    Ok(size) => out.push((key, size)),
                    Err(_) => bad = true,
                },
                None => bad = true,
            }
            !bad
        })?;
        if bad {
            return Err(corrupt("a blob reference"));
        }
        Ok(out)
    }

    /// Every blob some record references.
    pub fn blob_index(&self) -> Result<BTreeMap<BlobHash, Referenced>, StoreError> {
        let mut out: BTreeMap<BlobHash, Referenced> = BTreeMap::new();
        let mut bad = false;
        self.scan_prefix(&[keys::BLOB_REFS], &mut |k, v| {
            let (Some(hash), Ok(size)) = (k.get(1..33).and_then(|h| h.try_into().ok()), be_u64(v)) else {
                bad = true;
                return false;
            };
            out.entry(BlobHash(hash)).and_modify(|r| r.records += 1).or_insert(Referenced { size, records: 1 });
            true
        })?;
        if bad {
            return Err(corrupt("a blob reference"));
        }
        Ok(out)
    }
}
