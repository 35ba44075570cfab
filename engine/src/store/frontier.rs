//! Frontiers: the head of every (partition, type, instance), their digest,
//! the instance check against a peer's heads, and the send side's scans of
//! the change index.

use std::collections::BTreeMap;

use partitions::{Partition, RecordType};

use crate::change::{Change, RecordKey};
use crate::ids::{Counter, InstanceId, RecordId};
use crate::keys;
use crate::limits::RECORD_BYTES_MAX;
use crate::region::Region;
use crate::wire::HeadEntry;

use super::{Pending, Store, StoreError, Triple, be_u64, corrupt, counter_of, parse_index_value};

/// Where a group scan stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanEnd {
    /// The last counter looked at (changes up to it were emitted).
    pub last: Counter,
    /// Whether the range was exhausted.
    pub complete: bool,
    pub bytes: u64,
    /// Changes in the range that fail `Change::check_form` (made by an older
    /// version): skipped, so they block nothing after them.
    pub unsendable: u64,
    /// Changes of unfinished records of a send-when type: not sent yet.
    pub held_back: u64,
}

impl Store {
    // -----------------------------------------------------------------------
    // Frontiers

    /// The frontier entry of (partition, type, instance): the highest counter
    /// of a change this store retains there (0 when none).
    pub fn head(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
    ) -> Result<Counter, StoreError> {
        self.counter_at(&keys::head(partition, record_type, instance))
    }

    /// The counter stored under `key` (0 when none).
    pub(super) fn counter_at(&self, key: &[u8]) -> Result<Counter, StoreError> {
        self.backend.get(key)?.map(|b| be_u64(&b)).transpose().map(|c| c.unwrap_or(0))
    }

    /// Every frontier entry inside `region`, in key order.
    pub fn heads(&self, region: &Region) -> Result<Vec<HeadEntry>, StoreError> {
        let mut out = Vec::new();
        self.visit_heads(region, &mut |entry| out.push(entry))?;
        Ok(out)
    }

    pub(super) fn visit_heads(&self, region: &Region, visit: &mut dyn FnMut(HeadEntry)) -> Result<(), StoreError> {
        let mut failure = None;
        for prefix in region.filter.prefixes() {
            self.scan_prefix(&keys::under(keys::HEADS, prefix), &mut |k, v| {
                let parsed = keys::split_typed(&k[1..]).and_then(|(partition, record_type, rest)| {
                    let instance: [u8; 16] = rest.try_into().ok()?;
                    let counter = u64::from_be_bytes(v.try_into().ok()?);
                    Some(HeadEntry { partition, record_type, instance: InstanceId(instance), counter })
                });
                match parsed {
                    Some(entry) => {
                        if region.admits(&entry.record_type) {
                            visit(entry);
                        }
                        true
                    }
                    None => {
                        failure = Some(corrupt("head entry"));
                        false
                    }
                }
            })?;
        }
        failure.map_or(Ok(()), Err)
    }

    /// A digest of the frontier inside `region`: equal digests mean equal
    /// holdings there. Costs one scan of the region's frontier entries,
    /// never of its records.
    pub fn digest(&self, region: &Region) -> Result<[u8; 32], StoreError> {
        let mut hasher = digest_start();
        self.visit_heads(region, &mut |e| digest_entry(&mut hasher, &e))?;
        Ok(*hasher.finalize().as_bytes())
    }

    /// If a peer holds changes of our current instance beyond our counter,
    /// the store went back in time (restored from a backup): continue under
    /// `fresh` so no counter is ever used twice. Returns the reason if so.
    pub fn check_peer_heads(
        &self,
        entries: &[HeadEntry],
        fresh: InstanceId,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let mut local = self.lock();
        let ahead = entries.iter().filter(|e| e.instance == local.instance).map(|e| e.counter).max();
        match ahead {
            Some(theirs) if theirs > local.counter => {
                let reason = format!(
                    "a peer holds counter {theirs} of this instance but the store only reached {} (restored from a backup?)",
                    local.counter
                );
                let mut key = keys::meta("instances/");
                key.extend_from_slice(&fresh.0);
                let mut value = now_ms.to_be_bytes().to_vec();
                value.extend_from_slice(reason.as_bytes());
                self.commit(&[
                    (keys::meta("instance"), Some(fresh.0.to_vec())),
                    (keys::meta("counter"), Some(0u64.to_be_bytes().to_vec())),
                    (key, Some(value)),
                ])?;
                local.instance = fresh;
                local.counter = 0;
                Ok(Some(reason))
            }
            _ => Ok(None),
        }
    }

    /// Appends to `out` the retained changes of (partition, type, instance)
    /// with counters in `(after, upto]`, in counter order, stopping before
    /// `max_changes` or `max_bytes` would be exceeded (always taking at least
    /// one change when there is one).
    #[allow(clippy::too_many_arguments)]
    pub fn scan_group(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
        after: Counter,
        upto: Counter,
        max_changes: usize,
        max_bytes: u64,
        out: &mut Vec<Change>,
    ) -> Result<ScanEnd, StoreError> {
        let start = keys::change(partition, record_type, instance, after.saturating_add(1));
        let end = keys::change(partition, record_type, instance, upto);
        let mut found: Vec<(Counter, RecordId, u64)> = Vec::new();
        let mut bytes = 0u64;
        let mut complete = true;
        let mut failure = None;
        let mut unsendable = 0u64;
        let mut held_back = 0u64;
        let mut visit = |k: &[u8], v: &[u8]| {
            let counter = u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap_or([0; 8]));
            let Some((size, id)) = parse_index_value(v) else {
                failure = Some(corrupt("change index entry"));
                return false;
            };
            if size > RECORD_BYTES_MAX as u64 {
                // Made by an older version that did not check local writes:
                // every peer refuses it, so it is never sent (and never
                // blocks what follows it). `ferry check` lists it.
                unsendable += 1;
                return true;
            }
            if !found.is_empty() && (found.len() >= max_changes || bytes + size > max_bytes) {
                complete = false;
                return false;
            }
            bytes += size;
            found.push((counter, id, size));
            true
        };
        // The end key is inclusive of `upto`: scan to just past it.
        let mut end_exclusive = end;
        end_exclusive.push(0);
        self.backend.scan(&start, Some(&end_exclusive), &mut visit)?;
        if let Some(e) = failure {
            return Err(e);
        }
        let last = if complete { upto } else { found.last().map_or(after, |f| f.0) };
        let keys: Vec<RecordKey> = found
            .iter()
            .map(|(_, id, _)| RecordKey {
                partition: partition.clone(),
                record_type: record_type.clone(),
                id: id.clone(),
            })
            .collect();
        let states = self.records(&keys.iter().collect::<Vec<_>>())?;
        let policy = self.policy(partition, record_type)?;
        for ((counter, _, size), state) in found.into_iter().zip(states) {
            // A change may have been superseded since the index was read;
            // then it is obsolete and is simply not sent.
            if let Some(mut state) = state
                && let Some(at) = state.changes.iter().position(|c| c.author == *instance && c.counter == counter)
            {
                // An unfinished record of a send-when type is held back;
                // the write that finishes it supersedes every change it
                // holds (docs/protocol.md, "Send when finished").
                if state.held_back(&policy) {
                    held_back += 1;
                    continue;
                }
                let change = state.changes.swap_remove(at);
                if change.check_form(size as usize).is_err() {
                    unsendable += 1;
                    continue;
                }
                out.push(change);
            }
        }
        Ok(ScanEnd { last, complete, bytes, unsendable, held_back })
    }

    /// Counts the retained changes and their bytes in `(after, upto]`.
    pub fn count_group(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
        after: Counter,
        upto: Counter,
    ) -> Result<(u64, u64), StoreError> {
        let start = keys::change(partition, record_type, instance, after.saturating_add(1));
        let mut end = keys::change(partition, record_type, instance, upto);
        end.push(0);
        let (mut changes, mut bytes) = (0, 0);
        self.backend.scan(&start, Some(&end), &mut |_, v| {
            changes += 1;
            bytes += parse_index_value(v).map_or(0, |(size, _)| size);
            true
        })?;
        Ok((changes, bytes))
    }

    /// Sets the frontier entry of every triple this commit touches to the
    /// highest counter it will retain there (removing the entry when none).
    ///
    /// A triple whose head a repair lowered (a floor) keeps its head until a
    /// session delivers changes past it: its head becomes what `reached`
    /// says this commit delivered in order, and the floor goes once that
    /// passes the head the triple had before the repair.
    pub(super) fn finish_heads(
        &self,
        pending: &mut Pending,
        reached: &BTreeMap<Triple, Counter>,
    ) -> Result<(), StoreError> {
        let floors = self.floors.lock().expect("floors lock").clone();
        for (partition, record_type, instance) in std::mem::take(&mut pending.touched) {
            let start = keys::change(&partition, &record_type, &instance, 0);
            let end = keys::change(&partition, &record_type, &instance, u64::MAX);
            // Highest indexed counter after this commit: the pending writes
            // first, then the stored index below them.
            let mut head = 0;
            for (key, value) in pending.writes.range(start.clone()..=end.clone()).rev() {
                if value.is_some() {
                    head = counter_of(key);
                    break;
                }
            }
            let mut below = end.clone();
            while let Some((key, _)) = self.backend.last_before(&start, &below)? {
                let counter = counter_of(&key);
                if counter <= head {
                    break;
                }
                if pending.writes.get(&key) != Some(&None) {
                    head = counter;
                    break;
                }
                below = key;
            }
            let triple = (partition.clone(), record_type.clone(), instance);
            if let Some(&before) = floors.get(&triple) {
                let delivered = reached.get(&triple).copied().unwrap_or(0);
                if delivered >= before {
                    pending.delete(keys::floor(&partition, &record_type, &instance));
                    pending.floors_cleared.push(triple);
                } else {
                    let stored = self.head(&partition, &record_type, &instance)?;
                    head = head.min(stored.max(delivered));
                }
            }
            let key = keys::head(&partition, &record_type, &instance);
            if head == 0 {
                pending.delete(key);
            } else {
                pending.put(key, head.to_be_bytes().to_vec());
            }
        }
        Ok(())
    }
}

fn digest_start() -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"ferry frontier v1\0");
    hasher
}

fn digest_entry(hasher: &mut blake3::Hasher, e: &HeadEntry) {
    hasher.update(&crate::change::type_prefix(&e.partition, &e.record_type));
    hasher.update(&e.instance.0);
    hasher.update(&e.counter.to_be_bytes());
}

/// The digest `Store::digest` gives for a frontier of these entries (in the
/// order `Store::heads` lists them).
pub fn digest_of(entries: &[HeadEntry]) -> [u8; 32] {
    let mut hasher = digest_start();
    for e in entries {
        digest_entry(&mut hasher, e);
    }
    *hasher.finalize().as_bytes()
}
