//! Receiving: a batch from a peer is checked (region, form, the author's
//! scope, signatures), merged and committed with the frontier it reaches.

use std::collections::BTreeMap;

use crate::authorize::{Authorizer, Signed, Verifier};
use crate::change::{Change, ChangeError, RecordKey};
use crate::ids::Counter;
use crate::keys;
use crate::limits::SUMMARY_REJECTIONS_MAX;
use crate::merge::{MergeError, Outcome, RecordState};
use crate::policy::PROFILE_TYPE;
use crate::region::Region;
use crate::wire::Batch;

use super::{ApplyError, IndexEntry, Pending, Store, StoreError, Triple, parse_index_value};

/// What applying a received batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub received: u64,
    pub skipped: u64,
    pub updated: u64,
    pub merged: u64,
    pub conflicts: u64,
    pub rejected: u64,
    pub rejections: Vec<String>,
}

impl Applied {
    pub(super) fn reject(&mut self, reason: String) {
        self.rejected += 1;
        if self.rejections.len() < SUMMARY_REJECTIONS_MAX {
            self.rejections.push(reason);
        }
    }
}

impl Store {
    // -----------------------------------------------------------------------
    // Receiving

    /// Applies a received batch: learns its credentials, checks every change
    /// (form, region, author's write scope, signature), merges the accepted
    /// ones and advances the frontier, all in one durable commit. A refused
    /// change is counted with its reason and the rest proceeds; a batch that
    /// does not continue what this node holds (`ApplyError::Gap`) changes
    /// nothing.
    pub fn apply_batch(
        &self,
        batch: &Batch,
        region: &Region,
        positions: &mut BTreeMap<Triple, Counter>,
        auth: &dyn Authorizer,
        verifier: &dyn Verifier,
        now_ms: u64,
    ) -> Result<Applied, ApplyError> {
        let now_s = now_ms / 1000;
        let mut applied = Applied::default();
        let mut pending = Pending::default();
        for chain in &batch.chains {
            match auth.learn(chain, now_s) {
                Ok(author) => {
                    pending.chain(&author, chain);
                }
                Err(denied) => applied.reject(format!("certificate chain refused: {denied}")),
            }
        }
        // Everything below runs under the write lock so heads read here are
        // still the heads when we commit.
        let mut local = self.lock();
        struct Candidate {
            change: Change,
            message: Vec<u8>,
            /// At or below the head this node held: not applied again, only
            /// compared with what is held (equivocation).
            held: bool,
        }
        let mut candidates: Vec<Candidate> = Vec::new();
        // Where this session stands in each triple: the head when the
        // session first met it, then the last counter it was sent. A group
        // must continue from there, so batches apply in order or not at all.
        let mut moved: BTreeMap<Triple, Counter> = BTreeMap::new();
        for group in &batch.groups {
            let triple = (group.partition.clone(), group.record_type.clone(), group.author);
            let position = match moved.get(&triple).or_else(|| positions.get(&triple)) {
                Some(p) => *p,
                None => self.head(&group.partition, &group.record_type, &group.author)?,
            };
            if position < group.after {
                return Err(ApplyError::Gap {
                    partition: group.partition.clone(),
                    record_type: group.record_type.clone(),
                    instance: group.author,
                    head: position,
                    after: group.after,
                });
            }
            applied.received += group.changes.len() as u64;
            if !region.contains(&group.partition, &group.record_type) {
                for c in &group.changes {
                    applied.reject(format!(
                        "{}/{}/{}: outside what this peer may send here",
                        group.partition, group.record_type, c.id
                    ));
                }
                continue;
            }
            let mut last = position;
            for gc in &group.changes {
                let held = gc.counter <= position;
                if gc.counter <= last && !held {
                    // Out of order within the group, or repeated.
                    applied.reject(format!("counter {} out of order in its group", gc.counter));
                    continue;
                }
                last = last.max(gc.counter);
                let change = group.change(gc);
                let message = change.signing_bytes();
                let what = format!("{}/{}/{}", change.record.partition, change.record.record_type, change.record.id);
                if let Err(e) = change.check_form(message.len()) {
                    applied.reject(format!("{what}: {e}"));
                    continue;
                }
                if let Err(denied) = auth.may_write(
                    &change.author_key,
                    change.authority.as_deref(),
                    &change.record.partition,
                    &change.record.record_type,
                    change.write_kind(),
                    change.hlc.seconds(),
                ) {
                    applied.reject(format!("{what}: author may not write this: {denied}"));
                    continue;
                }
                candidates.push(Candidate { change, message, held });
            }
            moved.insert(triple, last);
        }
        let items: Vec<Signed<'_>> = candidates
            .iter()
            .map(|c| Signed { message: &c.message, signature: &c.change.signature, key: &c.change.author_key })
            .collect();
        let valid = verifier.verify_all(&items);
        drop(items);

        let mut unique: Vec<&RecordKey> =
            candidates.iter().zip(&valid).filter(|(_, ok)| **ok).map(|(c, _)| &c.change.record).collect();
        unique.sort();
        unique.dedup();
        let mut prefetched: BTreeMap<RecordKey, Option<RecordState>> =
            unique.iter().map(|k| (*k).clone()).zip(self.records(&unique)?).collect();
        let mut states: BTreeMap<RecordKey, (RecordState, bool, bool)> = BTreeMap::new();
        for (candidate, ok) in candidates.into_iter().zip(valid) {
            let change = candidate.change;
            if !ok {
                applied.reject(format!(
                    "{}/{}/{}: {}",
                    change.record.partition,
                    change.record.record_type,
                    change.record.id,
                    ChangeError::Signature
                ));
                continue;
            }
            let key = change.record.clone();
            if !states.contains_key(&key) {
                let state = prefetched.remove(&key).flatten();
                let existed = state.is_some();
                states.insert(key.clone(), (state.unwrap_or_default(), existed, false));
            }
            let (state, _, touched) = states.get_mut(&key).expect("inserted above");
            if candidate.held {
                // Held already: the same change is a repeat; another change
                // with the same dot is an equivocation by its author.
                let dot = change.dot();
                let same = match state.changes.binary_search_by_key(&dot, Change::dot) {
                    Ok(i) => state.changes[i] == change,
                    Err(_) => {
                        let index = keys::change(&key.partition, &key.record_type, &dot.instance, dot.counter);
                        match self.backend.get(&index).map_err(StoreError::from)?.as_deref().and_then(parse_index_value)
                        {
                            Some((_, id)) => id == key.id,
                            // Superseded and dropped: nothing to compare.
                            None => true,
                        }
                    }
                };
                if same {
                    applied.skipped += 1;
                } else {
                    applied.reject(format!(
                        "{}/{}/{}: {}",
                        key.partition,
                        key.record_type,
                        key.id,
                        MergeError::Equivocation(dot.instance, dot.counter)
                    ));
                }
                continue;
            }
            let mut clock = local.clock;
            clock.observe(change.hlc, now_ms);
            local.clock = clock;
            let encoded_len = candidate.message.len();
            let index = IndexEntry::of(&change, encoded_len);
            match state.apply(change) {
                Ok((outcome, dropped)) => {
                    match outcome {
                        Outcome::Skipped => applied.skipped += 1,
                        Outcome::Updated => applied.updated += 1,
                        Outcome::Merged { conflicts } => {
                            applied.merged += 1;
                            applied.conflicts += conflicts as u64;
                        }
                    }
                    if outcome != Outcome::Skipped {
                        pending.index(index);
                    }
                    pending.drop_changes(&key, &dropped);
                    *touched = true;
                }
                Err(MergeError::Equivocation(instance, counter)) => applied.reject(format!(
                    "{}/{}/{}: {}",
                    key.partition,
                    key.record_type,
                    key.id,
                    MergeError::Equivocation(instance, counter)
                )),
            }
        }
        for (key, (state, existed, touched)) in &states {
            if !touched {
                continue;
            }
            if !existed {
                pending.put(keys::by_id(&key.partition, &key.record_type, &key.id), Vec::new());
            }
            pending.record(key, state, *existed);
            if key.record_type.as_str() == PROFILE_TYPE {
                self.profiles.lock().expect("profile cache lock").remove(&key.partition.org());
            }
        }
        pending.put(keys::meta("hlc"), local.clock.last().0.to_be_bytes().to_vec());
        {
            // Lowered heads move only with what this session delivered.
            let floors = self.floors.lock().expect("floors lock");
            pending.touched.extend(moved.keys().filter(|t| floors.contains_key(*t)).cloned());
        }
        self.finish_heads(&mut pending, &moved)?;
        self.commit_pending(pending)?;
        positions.extend(moved);
        Ok(applied)
    }
}
