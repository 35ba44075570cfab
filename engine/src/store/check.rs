//! `ferry check` and `ferry check --repair`: find what in a store is not
//! what was written, and drop it so that peers send it again.
//!
//! Check reads every entry through the checksum layer, decodes every
//! record, verifies every retained change's signature and runs the form
//! check peers run. Repair removes each damaged entry. Where that loses
//! changes (a damaged record, a damaged change-index entry), it lowers the
//! frontier of each affected (partition, type, instance) to just below the
//! lowest change lost and leaves a floor holding the head it had: the next
//! sync then asks every peer for those changes again, and the head rises
//! only with what sessions deliver, until it passes the floor
//! (`Store::finish_heads`). Every change is signed, so what comes back is
//! exactly what was lost. Damaged settings (the instance, its counter) make
//! the next open continue under a fresh instance.

use std::collections::{BTreeMap, BTreeSet};

use super::{Pending, Store, StoreError, Triple, parse_index_value};
use crate::authorize::{Signed, Verifier};
use crate::change::{Change, RecordKey};
use crate::ids::{Counter, InstanceId, RecordId};
use crate::keys;
use crate::seal::{RunKnown, Seal};
use crate::stored;

/// Changes verified in one call to the verifier.
const VERIFY_CHUNK: usize = 4096;

/// What `Store::check` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub entries: u64,
    pub records: u64,
    pub changes: u64,
    /// Entries that are not what was written.
    pub damaged: Vec<Damage>,
    /// Retained changes every peer would refuse (made by an older version
    /// without the form check): never sent, listed so a user can rewrite
    /// or delete the record.
    pub unsendable: Vec<String>,
    /// What `repair` did: entries removed, and changes peers are asked for
    /// again.
    pub removed: u64,
    pub refetched: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub key: Vec<u8>,
    /// The entry in words (`record result/r1 in …`).
    pub what: String,
    pub reason: String,
}

impl Store {
    /// Reads and checks everything; changes nothing.
    pub fn check(&self, verifier: &dyn Verifier) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        let mut pending: Vec<(Vec<u8>, Change, Vec<u8>)> = Vec::new();
        // Runs verified so far: the signature over each held run's root is
        // checked once, then every change sealed in it against its leaf.
        let mut runs: BTreeMap<(InstanceId, Counter), Result<RunKnown, String>> = BTreeMap::new();
        let mut flush = |pending: &mut Vec<(Vec<u8>, Change, Vec<u8>)>, report: &mut CheckReport| {
            let items: Vec<Signed<'_>> = pending
                .iter()
                .filter_map(|(_, c, m)| match &c.seal {
                    Seal::Single(signature) => Some(Signed { message: m, signature, key: &c.author_key }),
                    Seal::Run { .. } => None,
                })
                .collect();
            let mut valid = verifier.verify_all(&items).into_iter();
            drop(items);
            let mut seen = BTreeSet::new();
            for (key, change, message) in pending.drain(..) {
                let verdict = match change.seal {
                    Seal::Single(_) => match valid.next() {
                        Some(true) => Ok(()),
                        _ => Err("does not verify".to_owned()),
                    },
                    Seal::Run { first } => {
                        let run =
                            runs.entry((change.author, first)).or_insert_with(|| self.verified_run(&change, first));
                        match run {
                            Err(e) => Err(e.clone()),
                            Ok(run) => super::meta::run_holds(run, &change, first, &message),
                        }
                    }
                };
                if let Err(why) = verdict
                    && seen.insert(key.clone())
                {
                    report.damaged.push(Damage {
                        what: keys::describe(&key),
                        reason: format!("change {} of instance {} {why}", change.counter, change.author),
                        key,
                    });
                }
            }
        };
        let audit = self.backend.audit(&mut |key, value| {
            report.entries += 1;
            if key.first() == Some(&keys::RECORDS) {
                report.records += 1;
            }
            let value = match value {
                Ok(value) => value,
                Err(e) => {
                    report.damaged.push(Damage { key: key.to_vec(), what: keys::describe(key), reason: e.message });
                    return true;
                }
            };
            if key.first() != Some(&keys::RECORDS) {
                return true;
            }
            let Some(record) = record_key(key) else {
                report.damaged.push(Damage {
                    key: key.to_vec(),
                    what: keys::describe(key),
                    reason: "the key is not a record key".into(),
                });
                return true;
            };
            let state = match stored::decode_record(&record, value) {
                Ok(state) => state,
                Err(e) => {
                    report.damaged.push(Damage { key: key.to_vec(), what: keys::describe(key), reason: e.to_string() });
                    return true;
                }
            };
            for change in state.changes {
                report.changes += 1;
                let message = change.signing_bytes();
                if let Err(e) = change.check_form(message.len()) {
                    report.unsendable.push(format!("{}: change {}: {e}", keys::describe(key), change.counter));
                }
                pending.push((key.to_vec(), change, message));
            }
            if pending.len() >= VERIFY_CHUNK {
                flush(&mut pending, &mut report);
            }
            true
        });
        flush(&mut pending, &mut report);
        if self.counted && audit.is_ok() {
            let expected = self.record_count(None)?;
            if expected != report.records {
                report.damaged.push(Damage {
                    key: Vec::new(),
                    what: "the store file".into(),
                    reason: format!("{} of the {expected} records it holds can be read", report.records),
                });
            }
        }
        if let Err(e) = audit {
            // The file itself (not one entry) is damaged: nothing past this
            // point could be read.
            report.damaged.push(Damage { key: Vec::new(), what: "the store file".into(), reason: e.to_string() });
        }
        Ok(report)
    }

    /// Writes the blob index again from the records (but `dropped`), when
    /// an entry of it is damaged: even its key may be what changed, so only
    /// the records say which references exist.
    fn rebuild_blob_refs(&self, pending: &mut Pending, dropped: &BTreeSet<RecordKey>) -> Result<(), StoreError> {
        let mut wanted: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut held = Vec::new();
        // One pass over everything, damaged entries included.
        self.backend.audit(&mut |k, v| {
            match k.first() {
                Some(&keys::BLOB_REFS) => held.push(k.to_vec()),
                Some(&keys::RECORDS) => {
                    if let (Ok(v), Some(record)) = (v, record_key(k))
                        && !dropped.contains(&record)
                        && let Ok(state) = stored::decode_record(&record, v)
                    {
                        for r in crate::blob::refs_of(&state) {
                            let key = keys::blob_ref(&r.hash, &record.partition, &record.record_type, &record.id);
                            wanted.insert(key, r.size);
                        }
                    }
                }
                _ => {}
            }
            true
        })?;
        for key in held {
            if !wanted.contains_key(&key) {
                pending.delete(key);
            }
        }
        for (key, size) in wanted {
            pending.put(key, size.to_be_bytes().to_vec());
        }
        Ok(())
    }

    /// Checks, then removes every damaged entry and lowers the frontiers
    /// that covered what was lost, in one durable commit. Returns what the
    /// check found and what was done.
    pub fn repair(&self, verifier: &dyn Verifier) -> Result<CheckReport, StoreError> {
        let mut report = self.check(verifier)?;
        if report.damaged.iter().any(|d| d.key.is_empty()) {
            let found = report.clone();
            let (kept, refetch) = self.rebuild()?;
            // The rebuilt file may still hold damaged entries: repair those.
            let mut after = self.repair(verifier)?;
            after.damaged = found.damaged;
            after.unsendable = found.unsendable;
            after.removed += found.entries.saturating_sub(kept);
            after.refetched += refetch;
            return Ok(after);
        }
        let mut pending = Pending::default();
        // Lost changes per triple: the lowest counter lost.
        let mut lost: BTreeMap<Triple, Counter> = BTreeMap::new();
        let mut lose = |triple: Triple, counter: Counter| {
            let low = lost.entry(triple).or_insert(counter);
            *low = (*low).min(counter);
        };
        // One pass over the change index finds the entries of every damaged
        // record, however many there are.
        let damaged_records: BTreeSet<RecordKey> = report
            .damaged
            .iter()
            .filter(|d| d.key.first() == Some(&keys::RECORDS))
            .filter_map(|d| record_key(&d.key))
            .collect();
        let mut index_of = self.index_entries_of(&damaged_records)?;
        // A dropped record's blob references go with it; a damaged blob
        // reference is written again from its record, which is intact (a
        // lost reference would let the gc remove a blob a record names).
        if !damaged_records.is_empty() {
            let suffixes: BTreeSet<Vec<u8>> = damaged_records
                .iter()
                .map(|r| keys::record(&r.partition, &r.record_type, &r.id)[1..].to_vec())
                .collect();
            let mut stale = Vec::new();
            self.backend.audit(&mut |k, _| match k.first() {
                Some(&keys::BLOB_REFS) => {
                    if k.len() > 33 && suffixes.contains(&k[33..]) {
                        stale.push(k.to_vec());
                    }
                    true
                }
                Some(&table) => table < keys::BLOB_REFS,
                None => true,
            })?;
            for key in stale {
                pending.delete(key);
            }
        }
        let mut fresh_instance = false;
        for damage in &report.damaged {
            let key = &damage.key;
            pending.delete(key.clone());
            report.removed += 1;
            match key.first().copied() {
                Some(keys::RECORDS) => {
                    let Some(record) = record_key(key) else { continue };
                    let mut conflict = vec![keys::CONFLICTS];
                    conflict.extend_from_slice(&key[1..]);
                    pending.delete(conflict);
                    pending.delete(keys::by_id(&record.partition, &record.record_type, &record.id));
                    for (triple, counter, index_key) in index_of.remove(&record).unwrap_or_default() {
                        pending.delete(index_key);
                        lose(triple, counter);
                    }
                }
                Some(keys::CHANGES) => {
                    if let Some((partition, record_type, rest)) = keys::split_typed(&key[1..])
                        && rest.len() == 24
                    {
                        let instance = InstanceId(rest[..16].try_into().expect("16 bytes"));
                        let counter = u64::from_be_bytes(rest[16..].try_into().expect("8 bytes"));
                        lose((partition, record_type, instance), counter);
                    }
                }
                Some(keys::HEADS) => {
                    // The index still says what is held: recompute it.
                    if let Some((partition, record_type, rest)) = keys::split_typed(&key[1..])
                        && let Ok(instance) = <[u8; 16]>::try_from(rest)
                    {
                        pending.touched.insert((partition, record_type, InstanceId(instance)));
                    }
                }
                Some(keys::META) => fresh_instance = true,
                _ => {}
            }
        }
        if report.damaged.iter().any(|d| d.key.first() == Some(&keys::BLOB_REFS)) {
            self.rebuild_blob_refs(&mut pending, &damaged_records)?;
        }
        if fresh_instance {
            // The instance or its counter cannot be trusted: the next open
            // continues under a fresh one (the instance rule).
            pending.put(keys::meta("state"), b"open".to_vec());
        }
        let mut floors = BTreeMap::new();
        for (triple, low) in &lost {
            let (partition, record_type, instance) = triple;
            let before = self.head(partition, record_type, instance).unwrap_or(u64::MAX);
            let lowered = low.saturating_sub(1);
            if before == u64::MAX || lowered < before {
                let floor = self.floors.lock().expect("floors lock").get(triple).copied().unwrap_or(0);
                let before = if before == u64::MAX { *low } else { before }.max(floor);
                pending.put(keys::floor(partition, record_type, instance), before.to_be_bytes().to_vec());
                let head_key = keys::head(partition, record_type, instance);
                if lowered == 0 {
                    pending.delete(head_key);
                } else {
                    pending.put(head_key, lowered.to_be_bytes().to_vec());
                }
                floors.insert(triple.clone(), before);
                report.refetched += before.saturating_sub(lowered);
            }
        }
        // Heads of damaged frontier entries are recomputed from the index.
        let recompute: BTreeSet<Triple> = std::mem::take(&mut pending.touched);
        let mut recomputed = Pending { touched: recompute, ..Pending::default() };
        self.finish_heads(&mut recomputed, &BTreeMap::new())?;
        for (key, value) in recomputed.writes {
            pending.writes.entry(key).or_insert(value);
        }
        // Lowered heads first, then the damaged entries: a crash between
        // the two leaves damage the next repair finds again, never a lost
        // change that no frontier asks for.
        // A damaged entry written again whole (a blob reference rebuilt from
        // its record) is not purged after the commit.
        let doomed: BTreeSet<Vec<u8>> = report
            .damaged
            .iter()
            .map(|d| d.key.clone())
            .filter(|k| !matches!(pending.writes.get(k), Some(Some(_))))
            .collect();
        self.commit_pending(pending)?;
        self.floors.lock().expect("floors lock").extend(floors);
        self.backend.purge(&doomed)?;
        self.recount()?;
        self.profiles.lock().expect("profile cache lock").clear();
        Ok(report)
    }

    /// Replaces a file whose structure is damaged by what can still be read
    /// of it, then makes it consistent and asks peers for everything again:
    /// what was lost with the damaged pages is unknown, so every frontier
    /// head drops to 0 with a floor at the head it had. Returns the entries
    /// kept and the changes asked for again.
    fn rebuild(&self) -> Result<(u64, u64), StoreError> {
        let _local = self.lock();
        let kept = self.backend.rebuild()?;
        // What the index and the records say, to make them agree.
        let mut indexed: BTreeMap<(Triple, Counter), (Vec<u8>, RecordId)> = BTreeMap::new();
        let mut retained: BTreeMap<(Triple, Counter), (RecordKey, usize)> = BTreeMap::new();
        let mut heads: BTreeMap<Triple, Counter> = BTreeMap::new();
        self.backend.audit(&mut |k, v| {
            let Ok(v) = v else { return true };
            match k.first().copied() {
                Some(keys::CHANGES) => {
                    if let Some((partition, record_type, rest)) = keys::split_typed(&k[1..])
                        && rest.len() == 24
                        && let Some((_, id)) = parse_index_value(v)
                    {
                        let instance = InstanceId(rest[..16].try_into().expect("16 bytes"));
                        let counter = u64::from_be_bytes(rest[16..].try_into().expect("8 bytes"));
                        indexed.insert(((partition, record_type, instance), counter), (k.to_vec(), id));
                    }
                }
                Some(keys::HEADS) => {
                    if let Some((partition, record_type, rest)) = keys::split_typed(&k[1..])
                        && let Ok(instance) = <[u8; 16]>::try_from(rest)
                        && let Ok(counter) = <[u8; 8]>::try_from(v)
                    {
                        heads.insert((partition, record_type, InstanceId(instance)), u64::from_be_bytes(counter));
                    }
                }
                Some(keys::RECORDS) => {
                    if let Some(record) = record_key(k)
                        && let Ok(state) = stored::decode_record(&record, v)
                    {
                        for change in &state.changes {
                            let triple = (record.partition.clone(), record.record_type.clone(), change.author);
                            retained.insert((triple, change.counter), (record.clone(), change.signing_bytes().len()));
                        }
                    }
                }
                _ => {}
            }
            true
        })?;
        let mut pending = Pending::default();
        for (dot, (key, id)) in &indexed {
            if retained.get(dot).is_none_or(|(record, _)| record.id != *id) {
                pending.delete(key.clone());
            }
        }
        let mut floors: BTreeMap<Triple, Counter> = BTreeMap::new();
        for ((triple, counter), (record, size)) in &retained {
            if !indexed.contains_key(&(triple.clone(), *counter)) {
                let (partition, record_type, instance) = triple;
                let mut value = (*size as u32).to_be_bytes().to_vec();
                value.extend_from_slice(record.id.as_str().as_bytes());
                pending.put(keys::change(partition, record_type, instance, *counter), value);
            }
            let floor = floors.entry(triple.clone()).or_default();
            *floor = (*floor).max(*counter);
        }
        for (triple, head) in heads {
            let floor = floors.entry(triple).or_default();
            *floor = (*floor).max(head);
        }
        let mut refetch = 0;
        for (triple, before) in &floors {
            let (partition, record_type, instance) = triple;
            pending.delete(keys::head(partition, record_type, instance));
            pending.put(keys::floor(partition, record_type, instance), before.to_be_bytes().to_vec());
            refetch += before;
        }
        // Nothing says how far the instance had counted: continue under a
        // fresh one at the next open.
        pending.put(keys::meta("state"), b"open".to_vec());
        self.commit(&pending.into_writes())?;
        self.floors.lock().expect("floors lock").extend(floors);
        *self.ledger_len.lock().expect("ledger lock") = None;
        self.recount()?;
        Ok((kept, refetch))
    }

    /// Sets every org's record count to what the record keys say.
    fn recount(&self) -> Result<(), StoreError> {
        let counts = super::count_records(self.backend.as_ref())?;
        let prefix = keys::meta(keys::COUNT_PREFIX);
        let mut writes = Vec::new();
        self.scan_prefix(&prefix, &mut |k, _| {
            writes.push((k.to_vec(), Some(0u64.to_be_bytes().to_vec())));
            true
        })?;
        for (org, n) in counts {
            writes.push((keys::count(org), Some(n.to_be_bytes().to_vec())));
        }
        writes.push((keys::meta("counted"), Some(Vec::new())));
        self.commit(&writes)
    }

    /// The change-index entries pointing at each of `records`: (triple,
    /// counter, index key), read in one pass over the index.
    fn index_entries_of(&self, records: &BTreeSet<RecordKey>) -> Result<BTreeMap<RecordKey, IndexEntries>, StoreError> {
        let mut out: BTreeMap<RecordKey, IndexEntries> = BTreeMap::new();
        if records.is_empty() {
            return Ok(out);
        }
        self.backend.audit(&mut |k, v| {
            match k.first() {
                Some(&keys::CHANGES) => {}
                Some(&table) => return table < keys::CHANGES,
                None => return true,
            }
            let Ok(v) = v else { return true };
            if let Some((partition, record_type, rest)) = keys::split_typed(&k[1..])
                && rest.len() == 24
                && let Some((_, id)) = parse_index_value(v)
            {
                let record = RecordKey { partition, record_type, id };
                if records.contains(&record) {
                    let instance = InstanceId(rest[..16].try_into().expect("16 bytes"));
                    let counter = u64::from_be_bytes(rest[16..].try_into().expect("8 bytes"));
                    let triple = (record.partition.clone(), record.record_type.clone(), instance);
                    out.entry(record).or_default().push((triple, counter, k.to_vec()));
                }
            }
            true
        })?;
        Ok(out)
    }
}

/// Change-index entries of one record: (triple, counter, index key).
type IndexEntries = Vec<(Triple, Counter, Vec<u8>)>;

/// The record a `RECORDS` key names.
fn record_key(key: &[u8]) -> Option<RecordKey> {
    let (partition, record_type, id) = keys::split_typed(key.get(1..)?)?;
    let id = RecordId::parse(std::str::from_utf8(id).ok()?).ok()?;
    Some(RecordKey { partition, record_type, id })
}
