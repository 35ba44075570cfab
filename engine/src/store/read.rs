//! Reading records: by key, by id, by listing, the conflicted ones, and
//! the merge policy of a type (from the org's profile record, cached).

use std::collections::BTreeMap;

use partitions::{OrgId, Partition, RecordType};

use crate::change::RecordKey;
use crate::ids::RecordId;
use crate::keys;
use crate::merge::{RecordState, View};
use crate::policy::{PROFILE_ID, PROFILE_TYPE, Profile, TypePolicy, system_partition};
use crate::stored;

use super::{RecordView, Store, StoreError, be_u64, corrupt};

impl Store {
    /// Reads the records of `keys` (repeats allowed) in one sorted pass,
    /// for a call that is about to change them.
    pub(super) fn load_states<'k>(
        &self,
        keys: impl Iterator<Item = &'k RecordKey>,
    ) -> Result<BTreeMap<RecordKey, Option<RecordState>>, StoreError> {
        let mut unique: Vec<&RecordKey> = keys.collect();
        unique.sort();
        unique.dedup();
        Ok(unique.iter().map(|k| (*k).clone()).zip(self.records(&unique)?).collect())
    }

    // -----------------------------------------------------------------------
    // Records

    /// The stored state of a record.
    pub fn record(&self, key: &RecordKey) -> Result<Option<RecordState>, StoreError> {
        let Some(bytes) = self.backend.get(&keys::record(&key.partition, &key.record_type, &key.id))? else {
            return Ok(None);
        };
        stored::decode_record(key, &bytes).map(Some).map_err(|e| corrupt(&format!("record {key:?}: {e}")))
    }

    /// The stored states of several records, read together.
    pub fn records(&self, keys: &[&RecordKey]) -> Result<Vec<Option<RecordState>>, StoreError> {
        let raw: Vec<Vec<u8>> = keys.iter().map(|k| keys::record(&k.partition, &k.record_type, &k.id)).collect();
        let values = self.backend.get_many(&raw)?;
        keys.iter()
            .zip(values)
            .map(|(key, value)| match value {
                None => Ok(None),
                Some(bytes) => {
                    stored::decode_record(key, &bytes).map(Some).map_err(|e| corrupt(&format!("record {key:?}: {e}")))
                }
            })
            .collect()
    }

    /// The record as applications see it, under its org's policies.
    pub fn view(&self, key: &RecordKey) -> Result<Option<View>, StoreError> {
        let Some(state) = self.record(key)? else {
            return Ok(None);
        };
        let policy = self.policy(&key.partition, &key.record_type)?;
        let mut view = state.view(&policy);
        self.add_local_fields(key, &policy, &mut view)?;
        Ok(Some(view))
    }

    /// The record's local fields (`TypePolicy::local`), as this node stored
    /// them: none when it wrote none.
    pub fn local_fields(&self, key: &RecordKey) -> Result<BTreeMap<String, crate::value::Value>, StoreError> {
        match self.backend.get(&keys::local_fields(&key.partition, &key.record_type, &key.id))? {
            None => Ok(BTreeMap::new()),
            Some(bytes) => stored::decode_value(&bytes).map_err(|_| corrupt(&format!("the local fields of {key:?}"))),
        }
    }

    /// Shows a visible record's local fields in its view.
    pub(super) fn add_local_fields(
        &self,
        key: &RecordKey,
        policy: &TypePolicy,
        view: &mut View,
    ) -> Result<(), StoreError> {
        if view.exists && !policy.local.is_empty() {
            view.fields.extend(self.local_fields(key)?);
        }
        Ok(())
    }

    /// The records of a type with this id, in any partition. There is no
    /// index by id (it cost a B-tree insert per new record, at a random
    /// place): the frontier names every partition holding records of the
    /// type, and each is asked for the id. Its cost is the number of
    /// frontier entries, never the number of records.
    pub fn find(&self, record_type: &RecordType, id: &RecordId) -> Result<Vec<RecordKey>, StoreError> {
        let mut partitions: Vec<Partition> = Vec::new();
        let mut bad = false;
        self.scan_prefix(&[keys::HEADS], &mut |k, _| {
            match keys::split_typed(&k[1..]) {
                Some((partition, t, _)) if &t == record_type => {
                    if partitions.last() != Some(&partition) {
                        partitions.push(partition);
                    }
                }
                Some(_) => {}
                None => bad = true,
            }
            true
        })?;
        if bad {
            return Err(corrupt("head entry"));
        }
        partitions.dedup();
        let keys: Vec<RecordKey> = partitions
            .into_iter()
            .map(|partition| RecordKey { partition, record_type: record_type.clone(), id: id.clone() })
            .collect();
        let held = self
            .backend
            .get_many(&keys.iter().map(|k| keys::record(&k.partition, &k.record_type, &k.id)).collect::<Vec<_>>())?;
        Ok(keys.into_iter().zip(held).filter_map(|(key, value)| value.map(|_| key)).collect())
    }

    /// Visits records under `partition` (everything when `None`), of
    /// `record_type` only when given, in key order, until `visit` returns false.
    pub fn list(
        &self,
        partition: Option<&Partition>,
        record_type: Option<&RecordType>,
        visit: &mut dyn FnMut(RecordView) -> bool,
    ) -> Result<(), StoreError> {
        let prefix = match partition {
            Some(p) => keys::under(keys::RECORDS, p),
            None => vec![keys::RECORDS],
        };
        let mut failure = None;
        let mut policies: BTreeMap<(OrgId, RecordType), TypePolicy> = BTreeMap::new();
        let (mut seen, mut stopped) = (0u64, false);
        self.scan_prefix(&prefix, &mut |k, v| {
            seen += 1;
            let Some((partition, t, id)) = keys::split_typed(&k[1..]) else {
                failure = Some(corrupt("record key"));
                return false;
            };
            if record_type.is_some_and(|want| *want != t) {
                return true;
            }
            let Ok(id) = std::str::from_utf8(id).map_err(|_| ()).and_then(|s| RecordId::parse(s).map_err(|_| ()))
            else {
                failure = Some(corrupt("record id"));
                return false;
            };
            let key = RecordKey { partition, record_type: t, id };
            let state = match stored::decode_record(&key, v) {
                Ok(state) => state,
                Err(e) => {
                    failure = Some(corrupt(&format!("record {key:?}: {e}")));
                    return false;
                }
            };
            let policy = match policies.get(&(key.partition.org(), key.record_type.clone())) {
                Some(p) => p.clone(),
                None => match self.policy(&key.partition, &key.record_type) {
                    Ok(p) => {
                        policies.insert((key.partition.org(), key.record_type.clone()), p.clone());
                        p
                    }
                    Err(e) => {
                        failure = Some(e);
                        return false;
                    }
                },
            };
            let mut view = state.view(&policy);
            if let Err(e) = self.add_local_fields(&key, &policy, &mut view) {
                failure = Some(e);
                return false;
            }
            let go = visit(RecordView { key, view });
            stopped = !go;
            go
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        // A whole org or the whole store was listed: it must show every
        // record it holds.
        if self.counted && !stopped && partition.is_none_or(|p| p.depth() == 0) {
            let expected = match partition {
                Some(p) => self.record_count(Some(p.org()))?,
                None => self.record_count(None)?,
            };
            if seen != expected {
                return Err(corrupt(&format!(
                    "only {seen} of the {expected} records it holds could be read (a page of the store file is damaged)"
                )));
            }
        }
        Ok(())
    }

    /// Records held in an org (or in all of them).
    pub fn record_count(&self, org: Option<OrgId>) -> Result<u64, StoreError> {
        if let Some(org) = org {
            return Ok(self.backend.get(&keys::count(org))?.map(|b| be_u64(&b)).transpose()?.unwrap_or(0));
        }
        let prefix = keys::meta(keys::COUNT_PREFIX);
        let mut total = 0u64;
        self.scan_prefix(&prefix, &mut |_, v| {
            total += v.try_into().map(u64::from_be_bytes).unwrap_or(0);
            true
        })?;
        Ok(total)
    }

    /// Visits every record that holds a conflict.
    pub fn conflicts(&self, visit: &mut dyn FnMut(RecordView) -> bool) -> Result<(), StoreError> {
        let mut keys_found = Vec::new();
        self.scan_prefix(&[keys::CONFLICTS], &mut |k, _| {
            keys_found.push(k[1..].to_vec());
            true
        })?;
        for raw in keys_found {
            let Some((partition, record_type, id)) = keys::split_typed(&raw) else {
                return Err(corrupt("conflict key"));
            };
            let id = std::str::from_utf8(id)
                .ok()
                .and_then(|s| RecordId::parse(s).ok())
                .ok_or_else(|| corrupt("conflict key id"))?;
            let key = RecordKey { partition, record_type, id };
            if let Some(view) = self.view(&key)?
                && !visit(RecordView { key, view })
            {
                break;
            }
        }
        Ok(())
    }

    /// The merge policy of a record type in an org, from its profile record.
    pub fn policy(&self, partition: &Partition, record_type: &RecordType) -> Result<TypePolicy, StoreError> {
        let org = partition.org();
        if let Some(profile) = self.profiles.lock().expect("profile cache lock").get(&org) {
            return Ok(profile.policy(record_type));
        }
        let profile = self.profile(org)?;
        let policy = profile.policy(record_type);
        self.profiles.lock().expect("profile cache lock").insert(org, profile);
        Ok(policy)
    }
}

impl Store {
    /// The org's profile in force here: the texts this node last could
    /// read; for a store from before strict profiles, the record read as it
    /// was then (unknown words ignored).
    pub fn profile(&self, org: partitions::OrgId) -> Result<Profile, StoreError> {
        if let Some(texts) = self.readable_texts(org)? {
            return Ok(Profile::from_texts(&texts));
        }
        Ok(match self.record(&profile_key(org))? {
            Some(state) => {
                let view = state.view(&TypePolicy::default());
                if view.exists { Profile::from_fields(&view.fields) } else { Profile::default() }
            }
            None => Profile::default(),
        })
    }
}

/// The key of an org's profile record.
pub fn profile_key(org: OrgId) -> RecordKey {
    RecordKey {
        partition: system_partition(org),
        record_type: RecordType::parse(PROFILE_TYPE).expect("valid type"),
        id: RecordId::parse(PROFILE_ID).expect("valid id"),
    }
}

impl Store {
    /// The keys the holders of authority `tag` published in `org`, one per
    /// publishing node (its latest), in publisher order. A key record any
    /// of whose changes was not written under the authority is ignored.
    pub fn reader_keys(&self, org: OrgId, tag: &str) -> Result<Vec<crate::sealed::ReaderKey>, StoreError> {
        let partition = system_partition(org);
        let record_type = RecordType::parse(crate::sealed::KEY_TYPE).expect("a valid type");
        let mut found = Vec::new();
        self.list(Some(&partition), Some(&record_type), &mut |r| {
            if r.key.partition == partition && r.view.exists && r.view.conflicts.is_empty() {
                found.push(r);
            }
            true
        })?;
        let mut keys = Vec::new();
        for r in found {
            let Some(state) = self.record(&r.key)? else { continue };
            let own = |c: &crate::change::Change| {
                c.authority.as_deref() == Some(tag) && partitions::hex::encode(&c.author_key.0) == r.key.id.as_str()
            };
            if !state.changes.iter().all(own) {
                continue;
            }
            if r.view.fields.get(crate::sealed::KEY_READERS_FIELD).and_then(crate::value::Value::as_str) != Some(tag) {
                continue;
            }
            if let Some(crate::value::Value::Bytes(bytes)) = r.view.fields.get(crate::sealed::KEY_PUBLIC_FIELD)
                && let Ok(public) = <[u8; crate::sealed::PUBLIC_BYTES]>::try_from(bytes.as_slice())
            {
                keys.push(crate::sealed::ReaderKey { publisher: r.key.id.as_str().to_owned(), public });
            }
        }
        Ok(keys)
    }
}
