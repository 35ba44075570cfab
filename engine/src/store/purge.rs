//! The purge after a node's own scope shrinks (SPEC §6.2, "Scope shrink"):
//! the records of an org this node may no longer hold are removed, with
//! their change-index entries, frontier entries, conflict markers, local
//! fields and blob references, so its store and its frontier say nothing of them.
//!
//! What the purge never removes: a record that retains a change written
//! here (by one of this store's instances) that no peer is known to hold,
//! or one held back until it is finished (send-when).
//! "Known to hold" is the frontier each peer had at the end of the last
//! completed sync with it (`Held`). Such a record exists nowhere else, so
//! its whole (partition, type) group is kept and counted, and the purge
//! runs again at the next scope check.
//!
//! A group goes in this order: first its frontier entries, then its
//! records, markers, references and index entries, in bounded commits. A
//! crash in between leaves records with no frontier entry: the frontier
//! then claims less than the store holds, which is always safe (a peer
//! resends, the changes are skipped), and the next check purges the rest.

use std::collections::{BTreeMap, BTreeSet};

use partitions::{OrgId, Partition, RecordType};

use crate::change::{RecordKey, type_prefix};
use crate::ids::{Counter, InstanceId, RecordId};
use crate::keys;
use crate::stored;

use super::feed::PURGE_ORIGIN;
use super::{Pending, Store, StoreError, corrupt};

/// Keys per purge commit.
const PURGE_COMMIT_KEYS: usize = 8192;

/// What peers are known to hold: the head each had for (partition, type,
/// instance) at the end of its last completed sync with this node.
pub type Held = BTreeMap<(Partition, RecordType, InstanceId), Counter>;

/// What a purge did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Records removed.
    pub records: u64,
    /// Records kept outside the scope: their groups hold a change written
    /// here that no peer is known to hold.
    pub kept: u64,
}

/// What removing a record deletes besides its change-index entries: the
/// record itself (first), its conflict marker, its local fields and its
/// blob references (a purge, an eviction).
pub(super) fn record_keys<'a>(
    partition: &Partition,
    record_type: &RecordType,
    id: &RecordId,
    refs: impl IntoIterator<Item = &'a crate::blob::BlobHash>,
) -> Vec<Vec<u8>> {
    let record = keys::record(partition, record_type, id);
    let mut marker = vec![keys::CONFLICTS];
    marker.extend_from_slice(&record[1..]);
    let mut out = vec![record, marker, keys::local_fields(partition, record_type, id)];
    out.extend(refs.into_iter().map(|h| keys::blob_ref(h, partition, record_type, id)));
    out
}

impl Store {
    /// Removes every record of `org` in a (partition, type) group that
    /// `holds` refuses, except the groups that hold a change by one of
    /// `own`'s instances that `held` does not cover.
    pub fn purge_outside(
        &self,
        org: OrgId,
        holds: &dyn Fn(&Partition, &RecordType) -> bool,
        own: &BTreeSet<InstanceId>,
        held: &Held,
    ) -> Result<Purged, StoreError> {
        let mut groups = BTreeSet::new();
        let mut failure = None;
        self.scan_prefix(
            &keys::under(keys::HEADS, &Partition::root(org)),
            &mut |k, _| match keys::split_typed(&k[1..]) {
                Some((partition, record_type, _)) => {
                    if !holds(&partition, &record_type) {
                        groups.insert((partition, record_type));
                    }
                    true
                }
                None => {
                    failure = Some(corrupt("head entry"));
                    false
                }
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        let mut purged = Purged::default();
        for (partition, record_type) in groups {
            let (records, keep) = self.group_records(&partition, &record_type, own, held)?;
            if keep {
                purged.kept += records.len() as u64;
                continue;
            }
            purged.records += records.len() as u64;
            self.purge_group(org, &partition, &record_type, &records)?;
        }
        Ok(purged)
    }

    /// The records of one group and their blob references; and whether the
    /// group must stay (a change written here that no peer holds).
    #[allow(clippy::type_complexity)]
    fn group_records(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        own: &BTreeSet<InstanceId>,
        held: &Held,
    ) -> Result<(Vec<(RecordId, Vec<crate::blob::BlobHash>)>, bool), StoreError> {
        let prefix = {
            let mut p = vec![keys::RECORDS];
            p.extend_from_slice(&type_prefix(partition, record_type));
            p
        };
        let policy = self.policy(partition, record_type)?;
        let mut records = Vec::new();
        let mut keep = false;
        let mut failure = None;
        self.scan_prefix(&prefix, &mut |k, v| {
            let id = std::str::from_utf8(&k[prefix.len()..]).ok().and_then(|id| RecordId::parse(id).ok());
            let Some(id) = id else {
                failure = Some(corrupt("a record key"));
                return false;
            };
            let key = RecordKey { partition: partition.clone(), record_type: record_type.clone(), id };
            let state = match stored::decode_record(&key, v) {
                Ok(state) => state,
                Err(e) => {
                    failure = Some(corrupt(&format!("record {key:?}: {e}")));
                    return false;
                }
            };
            // A record held back until it is finished is on no peer.
            let held_back = state.held_back(&policy);
            let unheld = held_back
                || state.changes.iter().any(|c| {
                    own.contains(&c.author)
                        && held.get(&(partition.clone(), record_type.clone(), c.author)).is_none_or(|h| *h < c.counter)
                });
            // A group that stays is only counted from here on.
            keep |= unheld;
            let refs =
                if keep { Vec::new() } else { crate::blob::refs_of(&state).into_iter().map(|r| r.hash).collect() };
            records.push((key.id, refs));
            true
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok((records, keep))
    }

    fn purge_group(
        &self,
        org: OrgId,
        partition: &Partition,
        record_type: &RecordType,
        records: &[(RecordId, Vec<crate::blob::BlobHash>)],
    ) -> Result<(), StoreError> {
        let typed = type_prefix(partition, record_type);
        let under = |table: u8| {
            let mut p = vec![table];
            p.extend_from_slice(&typed);
            p
        };
        // The frontier first, in one commit, with the repair floors and the
        // eviction marks.
        let mut pending = Pending::default();
        self.scan_prefix(&under(keys::HEADS), &mut |k, _| {
            if let Some(instance) = k[1 + typed.len()..].try_into().ok().map(InstanceId) {
                pending.floors_cleared.push((partition.clone(), record_type.clone(), instance));
            }
            pending.delete(k.to_vec());
            true
        })?;
        let mut marks = keys::meta(keys::EVICTED_PREFIX);
        marks.extend_from_slice(&typed);
        self.scan_prefix(&marks, &mut |k, _| {
            pending.delete(k.to_vec());
            true
        })?;
        self.commit_pending(pending)?;
        // Then the records, their markers and references, then the index.
        // The record's own key comes first, with its id: the change feed
        // names each purged record (origin `purge`).
        let mut doomed: Vec<(Vec<u8>, Option<&RecordId>)> = Vec::new();
        for (id, refs) in records {
            let keys = record_keys(partition, record_type, id, refs);
            doomed.extend(keys.into_iter().enumerate().map(|(i, key)| (key, (i == 0).then_some(id))));
        }
        self.scan_prefix(&under(keys::CHANGES), &mut |k, _| {
            doomed.push((k.to_vec(), None));
            true
        })?;
        for chunk in doomed.chunks(PURGE_COMMIT_KEYS) {
            let mut pending = Pending { origin: Some(PURGE_ORIGIN.to_owned()), ..Pending::default() };
            let mut removed = 0i64;
            for (key, record) in chunk {
                pending.delete(key.clone());
                if let Some(id) = record {
                    removed += 1;
                    pending.feed.push(RecordKey {
                        partition: partition.clone(),
                        record_type: record_type.clone(),
                        id: (*id).clone(),
                    });
                }
            }
            if removed > 0 {
                pending.new_records.insert(org, -removed);
            }
            self.commit_pending(pending)?;
        }
        Ok(())
    }

    /// Every peer's remembered frontier of `org`, merged: the highest head
    /// any peer was known to hold per (partition, type, instance).
    pub fn held_by_peers(&self, note: &str) -> Result<Held, StoreError> {
        self.held_by(note, &|_| true)
    }

    /// The remembered frontiers of the peers `accept` accepts, merged.
    pub fn held_by(&self, note: &str, accept: &dyn Fn(&crate::ids::AuthorKey) -> bool) -> Result<Held, StoreError> {
        let mut held = Held::new();
        let mut frames = Vec::new();
        self.scan_prefix(&[keys::PEERS], &mut |k, v| {
            if k.len() > 33
                && &k[33..] == note.as_bytes()
                && let Ok(peer) = <[u8; 32]>::try_from(&k[1..33])
                && accept(&crate::ids::AuthorKey(peer))
            {
                frames.push(v.to_vec());
            }
            true
        })?;
        for frame in frames {
            if let Ok(crate::wire::Message::Heads(heads)) = crate::wire::decode_message(&frame) {
                for e in heads.entries {
                    let at = held.entry((e.partition, e.record_type, e.instance)).or_default();
                    *at = (*at).max(e.counter);
                }
            }
        }
        Ok(held)
    }
}
