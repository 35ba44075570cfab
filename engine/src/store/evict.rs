//! Push once, then evict (SPEC §6.2; TAO's `deleteAfterSend`): a node that
//! may only write a type (`wo`) removes its copy of a record once a node
//! holding the type's `evict-after-ack` authority durably acknowledged all
//! of it. An eviction is not a delete: no change is written, nothing
//! syncs, and the acknowledging side keeps the record.
//!
//! What "acknowledged" means is the frontier a completed session proved the
//! peer holds (`Session::peer_holds`), kept per peer as `frontier:<org>`: a
//! record goes when every change it retains lies at or below that
//! frontier, and it is not held back until it is finished.
//!
//! The evicted changes leave the record, the change index, the conflict
//! markers, the local fields and the blob references; the frontier keeps
//! its heads. A head that claims an evicted change is safe: nobody receives
//! a `wo` type from this node's peers' view of it (the region into a `wo`
//! holder excludes the type), and a peer that receives the type from here
//! gets nothing of a triple below its eviction mark (`Store::evicted`;
//! `session/outgoing.rs`), so its frontier never jumps past changes only
//! the acknowledging node still has. It gets them from that node.

use std::collections::BTreeMap;

use partitions::{OrgId, Partition, RecordType};

use crate::change::RecordKey;
use crate::ids::{Counter, InstanceId, RecordId};
use crate::keys;
use crate::stored;

use super::feed::EVICT_ORIGIN;
use super::{Held, Pending, Store, StoreError, Triple, corrupt};

/// Records per eviction commit.
const EVICT_COMMIT_RECORDS: usize = 1024;

impl Store {
    /// The highest counter of (partition, type, instance) an eviction
    /// removed here (0 when none): a peer below it gets nothing of the
    /// triple from this node.
    pub fn evicted(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
    ) -> Result<Counter, StoreError> {
        self.counter_at(&keys::evicted(partition, record_type, instance))
    }

    /// Evicts every record of `org` of a (partition, type) that `evicts`
    /// accepts, whose retained changes `acked` covers, and that is not held
    /// back until it is finished. Returns how many records went.
    pub fn evict_acknowledged(
        &self,
        org: OrgId,
        evicts: &dyn Fn(&Partition, &RecordType) -> bool,
        acked: &Held,
    ) -> Result<u64, StoreError> {
        let mut candidates: Vec<RecordKey> = Vec::new();
        let mut failure = None;
        let prefix = keys::under(keys::RECORDS, &Partition::root(org));
        self.scan_prefix(&prefix, &mut |k, v| {
            let Some((partition, record_type, rest)) = keys::split_typed(&k[1..]) else {
                failure = Some(corrupt("a record key"));
                return false;
            };
            if !evicts(&partition, &record_type) {
                return true;
            }
            let Some(id) = std::str::from_utf8(rest).ok().and_then(|id| RecordId::parse(id).ok()) else {
                failure = Some(corrupt("a record key"));
                return false;
            };
            let key = RecordKey { partition, record_type, id };
            match stored::decode_record(&key, v) {
                Ok(state) if covered(&key, &state, acked) => candidates.push(key),
                Ok(_) => {}
                Err(e) => {
                    failure = Some(corrupt(&format!("record {key:?}: {e}")));
                    return false;
                }
            }
            true
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let mut evicted = 0;
        for chunk in candidates.chunks(EVICT_COMMIT_RECORDS) {
            // Under the write lock, each record is read again: a write since
            // the scan may have added a change no peer holds yet.
            let local = self.lock();
            let mut pending = Pending { origin: Some(EVICT_ORIGIN.to_owned()), ..Pending::default() };
            let mut marks: BTreeMap<Triple, Counter> = BTreeMap::new();
            let mut removed = 0i64;
            for key in chunk {
                let Some(state) = self.record(key)? else { continue };
                if !covered(key, &state, acked) || state.held_back(&self.policy(&key.partition, &key.record_type)?) {
                    continue;
                }
                let refs: Vec<_> = crate::blob::refs_of(&state).into_iter().map(|r| r.hash).collect();
                for doomed in super::purge::record_keys(&key.partition, &key.record_type, &key.id, &refs) {
                    pending.delete(doomed);
                }
                for change in &state.changes {
                    pending.delete(keys::change(&key.partition, &key.record_type, &change.author, change.counter));
                    let at = marks.entry((key.partition.clone(), key.record_type.clone(), change.author)).or_default();
                    *at = (*at).max(change.counter);
                }
                removed += 1;
                pending.feed.push(key.clone());
            }
            for ((partition, record_type, instance), counter) in marks {
                let stored = self.evicted(&partition, &record_type, &instance)?;
                if counter > stored {
                    pending.put(keys::evicted(&partition, &record_type, &instance), counter.to_be_bytes().to_vec());
                }
            }
            if removed > 0 {
                pending.new_records.insert(org, -removed);
                self.commit_pending(pending)?;
            }
            drop(local);
            evicted += removed as u64;
        }
        Ok(evicted)
    }
}

/// Whether every change `state` retains lies within what `acked` says the
/// acknowledging peers hold.
fn covered(key: &RecordKey, state: &crate::merge::RecordState, acked: &Held) -> bool {
    !state.changes.is_empty()
        && state.changes.iter().all(|c| {
            acked
                .get(&(key.partition.clone(), key.record_type.clone(), c.author))
                .is_some_and(|held| *held >= c.counter)
        })
}
