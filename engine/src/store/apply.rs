//! Receiving: a batch from a peer is checked (region, form, the author's
//! scope, signatures), merged and committed with the frontier it reaches.
//!
//! Checking runs in two steps. `check_batch` does everything that needs
//! neither the store nor its lock: it builds each change, runs the form
//! check and the author's scope, and verifies every signature. Only then
//! does `apply_batch` take the write lock, read the heads and records, and
//! merge and commit. So signature verification, the slow part, never holds
//! up another session's apply or a local write.

use std::collections::BTreeMap;

use crate::authorize::{Authorizer, Signed, Verifier};
use crate::change::{Change, ChangeError, RecordKey};
use crate::ids::{AuthorKey, Counter};
use crate::keys;
use crate::merge::{MergeError, Outcome, RecordState};
use crate::region::Region;
use crate::report::SyncReport;
use crate::wire::{Batch, Group};

use super::{ApplyError, IndexEntry, Pending, Store, StoreError, Triple, parse_index_value};

/// A batch checked change by change, before the store is touched.
struct Checked<'b> {
    /// The chains the authorizer accepted, to be stored with the changes.
    chains: Vec<(AuthorKey, &'b [u8])>,
    /// Chains refused.
    report: SyncReport,
    /// One entry per group, in order.
    groups: Vec<CheckedGroup<'b>>,
}

struct CheckedGroup<'b> {
    group: &'b Group,
    /// Inside the region this peer may send: only then are its changes
    /// checked (`changes` is empty otherwise).
    in_region: bool,
    changes: Vec<CheckedChange>,
}

struct CheckedChange {
    change: Change,
    /// The length of its signing bytes (the size the change index keeps).
    signing_len: usize,
    /// Whether its signature verifies, or why it was refused before that.
    verdict: Result<bool, String>,
}

/// Builds and checks every change of `batch` that lies in `region`: form,
/// the author's scope at the change's time, then every signature in one
/// call to `verifier`. Reads no store and takes no lock.
fn check_batch<'b>(
    batch: &'b Batch,
    region: &Region,
    auth: &dyn Authorizer,
    verifier: &dyn Verifier,
    now_s: u64,
) -> Checked<'b> {
    let mut report = SyncReport::default();
    let mut chains = Vec::new();
    for chain in &batch.chains {
        match auth.learn(chain, now_s) {
            Ok(author) => chains.push((author, chain.as_slice())),
            Err(denied) => report.reject(format!("certificate chain refused: {denied}")),
        }
    }
    let mut groups = Vec::with_capacity(batch.groups.len());
    let mut messages: Vec<Vec<u8>> = Vec::new();
    let mut to_verify: Vec<(usize, usize)> = Vec::new();
    for group in &batch.groups {
        let in_region = region.contains(&group.partition, &group.record_type);
        let mut changes = Vec::new();
        if in_region {
            for gc in &group.changes {
                let change = group.change(gc);
                let message = change.signing_bytes();
                let signing_len = message.len();
                let verdict = match change.check_form(signing_len) {
                    Err(e) => Err(format!("{}: {e}", change.record)),
                    Ok(()) => match auth.may_write(
                        &change.author_key,
                        change.authority.as_deref(),
                        &change.record.partition,
                        &change.record.record_type,
                        change.write_kind(),
                        change.hlc.seconds(),
                    ) {
                        Err(denied) => Err(format!("{}: author may not write this: {denied}", change.record)),
                        Ok(()) => {
                            to_verify.push((groups.len(), changes.len()));
                            messages.push(message);
                            Ok(false)
                        }
                    },
                };
                changes.push(CheckedChange { change, signing_len, verdict });
            }
        }
        groups.push(CheckedGroup { group, in_region, changes });
    }
    let items: Vec<Signed<'_>> = to_verify
        .iter()
        .zip(&messages)
        .map(|(&(g, c), message)| {
            let change = &groups[g].changes[c].change;
            Signed { message, signature: &change.signature, key: &change.author_key }
        })
        .collect();
    let valid = verifier.verify_all(&items);
    drop(items);
    for ((g, c), ok) in to_verify.into_iter().zip(valid) {
        groups[g].changes[c].verdict = Ok(ok);
    }
    Checked { chains, report, groups }
}

impl Store {
    /// Applies a received batch: learns its credentials, checks every change
    /// (form, region, author's write scope, signature), merges the accepted
    /// ones and advances the frontier, all in one durable commit. A refused
    /// change is counted with its reason and the rest proceeds; a batch that
    /// does not continue what this node holds (`ApplyError::Gap`) changes
    /// nothing. The checks run before the write lock is taken.
    pub fn apply_batch(
        &self,
        batch: &Batch,
        region: &Region,
        positions: &mut BTreeMap<Triple, Counter>,
        auth: &dyn Authorizer,
        verifier: &dyn Verifier,
        now_ms: u64,
    ) -> Result<SyncReport, ApplyError> {
        let checked = check_batch(batch, region, auth, verifier, now_ms / 1000);
        let mut applied = checked.report;
        let mut pending = Pending::default();
        for (author, chain) in &checked.chains {
            pending.chain(author, chain);
        }
        // Everything below runs under the write lock so heads read here are
        // still the heads when we commit.
        let mut local = self.lock();
        struct Candidate {
            change: Change,
            signing_len: usize,
            /// At or below the head this node held: not applied again, only
            /// compared with what is held (equivocation).
            held: bool,
            valid: bool,
        }
        let mut candidates: Vec<Candidate> = Vec::new();
        // Where this session stands in each triple: the head when the
        // session first met it, then the last counter it was sent. A group
        // must continue from there, so batches apply in order or not at all.
        let mut moved: BTreeMap<Triple, Counter> = BTreeMap::new();
        for CheckedGroup { group, in_region, changes } in checked.groups {
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
            if !in_region {
                for c in &group.changes {
                    applied.reject(format!(
                        "{}/{}/{}: outside what this peer may send here",
                        group.partition, group.record_type, c.id
                    ));
                }
                continue;
            }
            let mut last = position;
            for CheckedChange { change, signing_len, verdict } in changes {
                let held = change.counter <= position;
                if change.counter <= last && !held {
                    // Out of order within the group, or repeated.
                    applied.reject(format!("counter {} out of order in its group", change.counter));
                    continue;
                }
                last = last.max(change.counter);
                match verdict {
                    Err(reason) => applied.reject(reason),
                    Ok(valid) => candidates.push(Candidate { change, signing_len, held, valid }),
                }
            }
            moved.insert(triple, last);
        }
        let mut prefetched = self.load_states(candidates.iter().filter(|c| c.valid).map(|c| &c.change.record))?;
        let mut states: BTreeMap<RecordKey, (RecordState, bool, bool)> = BTreeMap::new();
        let mut observed = self.observe();
        for candidate in candidates {
            let change = candidate.change;
            if !candidate.valid {
                applied.reject(format!("{}: {}", change.record, ChangeError::Signature));
                continue;
            }
            let key = change.record.clone();
            if !states.contains_key(&key) {
                let state = prefetched.remove(&key).flatten();
                observed.loaded(&key, state.as_ref());
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
                    applied.reject(format!("{key}: {}", MergeError::Equivocation(dot.instance, dot.counter)));
                }
                continue;
            }
            let mut clock = local.clock;
            clock.observe(change.hlc, now_ms);
            local.clock = clock;
            let index = IndexEntry::of(&change, candidate.signing_len);
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
                Err(e @ MergeError::Equivocation(..)) => applied.reject(format!("{key}: {e}")),
            }
        }
        for (key, (state, existed, touched)) in &states {
            if !touched {
                continue;
            }
            self.persist(&mut pending, &mut observed, key, state, *existed);
        }
        pending.put(keys::meta("hlc"), local.clock.last().0.to_be_bytes().to_vec());
        {
            // Lowered heads move only with what this session delivered.
            let floors = self.floors.lock().expect("floors lock");
            pending.touched.extend(moved.keys().filter(|t| floors.contains_key(*t)).cloned());
        }
        self.finish_heads(&mut pending, &moved)?;
        self.commit_pending(pending)?;
        drop(local);
        observed.committed();
        positions.extend(moved);
        Ok(applied)
    }
}
