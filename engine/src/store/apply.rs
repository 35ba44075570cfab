//! Receiving: a batch from a peer is checked (region, form, the author's
//! scope, signatures), merged and committed with the frontier it reaches.
//!
//! Checking runs in two steps. `check_batch` does everything that needs
//! neither the store nor its lock: it builds each change, runs the form
//! check and the author's scope, and verifies every signature. Only then
//! does `apply_batch` take the write lock, read the heads and records, and
//! merge and commit. So signature verification, the slow part, never holds
//! up another session's apply or a local write.

use std::collections::{BTreeMap, BTreeSet};

use crate::authorize::{Authorizer, Signed, Verifier};
use crate::change::{Change, ChangeError, RecordKey};
use crate::ids::{AuthorKey, Counter, InstanceId, RecordId};
use crate::keys;
use crate::merge::{MergeError, Outcome, RecordState};
use crate::region::Region;
use crate::report::SyncReport;
use crate::seal::{self, Hash, RunKnown, Seal, Span};
use crate::wire::{Batch, Group, GroupChange};

use super::{ApplyError, IndexEntry, Pending, Store, StoreError, Triple, parse_index_value};

/// A batch checked change by change, before the store is touched.
struct Checked<'b> {
    /// The chains the authorizer accepted, to be stored with the changes.
    chains: Vec<(AuthorKey, &'b [u8])>,
    /// Chains refused.
    report: SyncReport,
    /// One entry per group, in order.
    groups: Vec<CheckedGroup<'b>>,
    /// For each run of the batch whose signature verified, the spans of its
    /// tree the batch taught (`RunKnown::learn`).
    runs: Vec<Option<Vec<(Span, Hash)>>>,
}

struct CheckedGroup<'b> {
    /// The group's partition, type, author and start (its changes were
    /// taken out of it, to be moved into the store rather than copied).
    group: &'b Group,
    /// How many changes it carried.
    count: usize,
    /// Inside the region this peer may send: only then are its changes
    /// checked (`changes` is empty otherwise, and `outside` names them).
    in_region: bool,
    changes: Vec<CheckedChange>,
    outside: Vec<RecordId>,
}

struct CheckedChange {
    change: Change,
    /// The length of its signing bytes (the size the change index keeps).
    signing_len: usize,
    /// Whether its seal verifies, or why it was refused before that.
    verdict: Result<bool, String>,
    /// The batch's run that seals it.
    run: Option<usize>,
}

/// A leaf of a run in a batch: its index, its hash and, when the change it
/// hashes is being checked, where that change sits (group, change).
type Leaf = (u32, Hash, Option<(usize, usize)>);

/// Builds and checks every change of `batch` that lies in `region`: form,
/// the author's scope at the change's time, then every seal: each run's
/// root is rebuilt from its changes' hashes and its proof, and every
/// signature (one per run, one per change sealed alone) is verified in one
/// call to `verifier`. Reads no store and takes no lock.
fn check_batch<'b>(
    batch: &'b Batch,
    taken: Vec<Vec<GroupChange>>,
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
    let places: BTreeMap<(InstanceId, Counter), usize> =
        batch.runs.iter().enumerate().map(|(i, r)| ((r.author, r.first), i)).collect();
    // Each run's leaves: (leaf index, hash, the change it is, if checked).
    let mut leaves: Vec<Vec<Leaf>> = vec![Vec::new(); batch.runs.len()];
    let mut groups = Vec::with_capacity(batch.groups.len());
    let mut messages: Vec<Vec<u8>> = Vec::new();
    let mut singles: Vec<(usize, usize)> = Vec::new();
    for (group, group_changes) in batch.groups.iter().zip(taken) {
        let in_region = region.contains(&group.partition, &group.record_type);
        let count = group_changes.len();
        let mut changes = Vec::new();
        let mut outside = Vec::new();
        for gc in group_changes {
            let change = group.into_change(gc);
            let message = change.signing_bytes();
            let signing_len = message.len();
            // Where a run-sealed change sits in its run. Every such change
            // is a leaf, even one refused for its form or scope, so that the
            // rest of its run still verifies.
            let mut run = None;
            let placed = match change.seal {
                Seal::Single(_) => Ok(None),
                Seal::Run { first } => match places.get(&(group.author, first)) {
                    None => Err(format!("{}: its run (from counter {first}) is not in the batch", change.record)),
                    Some(&place) if batch.runs[place].author_key != change.author_key => {
                        Err(format!("{}: {}", change.record, ChangeError::RunAuthor))
                    }
                    Some(&place) => match seal::leaf_index(change.counter, first, batch.runs[place].count) {
                        Err(e) => Err(format!("{}: {}", change.record, ChangeError::Proof(e))),
                        Ok(index) => {
                            run = Some(place);
                            Ok(Some((place, index, seal::leaf_hash(&message))))
                        }
                    },
                },
            };
            if !in_region {
                if let Ok(Some((place, index, hash))) = placed {
                    leaves[place].push((index, hash, None));
                }
                outside.push(change.record.id);
                continue;
            }
            let at = (groups.len(), changes.len());
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
                    Ok(()) => Ok(false),
                },
            };
            let verdict = match (verdict, &placed) {
                (_, Err(reason)) => Err(reason.clone()),
                (Err(reason), Ok(Some((place, index, hash)))) => {
                    leaves[*place].push((*index, *hash, None));
                    Err(reason)
                }
                (Err(reason), Ok(None)) => Err(reason),
                (Ok(_), Ok(Some((place, index, hash)))) => {
                    leaves[*place].push((*index, *hash, Some(at)));
                    Ok(false)
                }
                (Ok(_), Ok(None)) => {
                    singles.push(at);
                    messages.push(message);
                    Ok(false)
                }
            };
            changes.push(CheckedChange { change, signing_len, verdict, run });
        }
        groups.push(CheckedGroup { group, count, in_region, changes, outside });
    }
    // Rebuild each run's root; a run whose changes and proof do not fit
    // together refuses all its changes with the reason.
    let mut rebuilt: Vec<Option<Vec<(Span, Hash)>>> = vec![None; batch.runs.len()];
    let mut run_messages: Vec<(usize, Vec<u8>)> = Vec::new();
    for (place, run_leaves) in leaves.iter_mut().enumerate() {
        if run_leaves.is_empty() {
            continue;
        }
        let run = &batch.runs[place];
        run_leaves.sort_by_key(|(index, _, _)| *index);
        let twice = run_leaves.windows(2).find(|w| w[0].0 == w[1].0).map(|w| run.first + u64::from(w[0].0));
        let outcome = match twice {
            Some(counter) => Err(seal::ProofError::Twice(counter)),
            None => {
                let given: Vec<(u32, Hash)> = run_leaves.iter().map(|(i, h, _)| (*i, *h)).collect();
                seal::rebuild(run.count, &given, &run.proof)
            }
        };
        match outcome {
            Ok((root, learnt)) => {
                run_messages
                    .push((place, seal::run_message(&run.author_key, &run.author, run.first, run.count, &root)));
                rebuilt[place] = Some(learnt);
            }
            Err(e) => {
                for (_, _, at) in run_leaves.iter() {
                    if let Some((g, c)) = at {
                        let checked = &mut groups[*g].changes[*c];
                        checked.verdict = Err(format!("{}: {}", checked.change.record, ChangeError::Proof(e.clone())));
                    }
                }
            }
        }
    }
    let mut items: Vec<Signed<'_>> = Vec::with_capacity(singles.len() + run_messages.len());
    for (&(g, c), message) in singles.iter().zip(&messages) {
        let change = &groups[g].changes[c].change;
        let Seal::Single(signature) = &change.seal else { unreachable!("only changes sealed alone are listed") };
        items.push(Signed { message, signature, key: &change.author_key });
    }
    for (place, message) in &run_messages {
        let run = &batch.runs[*place];
        items.push(Signed { message, signature: &run.signature, key: &run.author_key });
    }
    let valid = verifier.verify_all(&items);
    drop(items);
    let (single_valid, run_valid) = valid.split_at(singles.len());
    for (&(g, c), ok) in singles.iter().zip(single_valid) {
        groups[g].changes[c].verdict = Ok(*ok);
    }
    let mut runs: Vec<Option<Vec<(Span, Hash)>>> = vec![None; batch.runs.len()];
    for ((place, _), ok) in run_messages.iter().zip(run_valid) {
        for (_, _, at) in &leaves[*place] {
            if let Some((g, c)) = at {
                let checked = &mut groups[*g].changes[*c];
                checked.verdict = if *ok {
                    Ok(true)
                } else {
                    Err(format!("{}: {}", checked.change.record, ChangeError::RunSignature))
                };
            }
        }
        if *ok {
            runs[*place] = rebuilt[*place].take();
        }
    }
    Checked { chains, report, groups, runs }
}

impl Store {
    /// Applies a received batch: learns its credentials, checks every change
    /// (form, region, author's write scope, signature), merges the accepted
    /// ones and advances the frontier, all in one durable commit. A refused
    /// change is counted with its reason and the rest proceeds; a batch that
    /// does not continue what this node holds (`ApplyError::Gap`) changes
    /// nothing. The checks run before the write lock is taken.
    ///
    /// `origin` says where the batch came from in the change feed: the
    /// sending peer's id, or `bundle`.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_batch(
        &self,
        batch: Batch,
        region: &Region,
        positions: &mut BTreeMap<Triple, Counter>,
        auth: &dyn Authorizer,
        verifier: &dyn Verifier,
        now_ms: u64,
        origin: &str,
    ) -> Result<SyncReport, ApplyError> {
        // The changes are moved out of the batch into the store's records,
        // never copied.
        let mut batch = batch;
        let taken: Vec<Vec<GroupChange>> = batch.groups.iter_mut().map(|g| std::mem::take(&mut g.changes)).collect();
        let batch = &batch;
        let checked = check_batch(batch, taken, region, auth, verifier, now_ms / 1000);
        let mut learnt_runs = checked.runs;
        let mut applied = checked.report;
        let mut pending = Pending { origin: Some(origin.to_owned()), ..Pending::default() };
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
            run: Option<usize>,
        }
        let mut candidates: Vec<Candidate> = Vec::new();
        // Where this session stands in each triple: the head when the
        // session first met it, then the last counter it was sent. A group
        // must continue from there, so batches apply in order or not at all.
        let mut moved: BTreeMap<Triple, Counter> = BTreeMap::new();
        for CheckedGroup { group, count, in_region, changes, outside } in checked.groups {
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
            applied.received += count as u64;
            if !in_region {
                for id in &outside {
                    applied.reject(format!(
                        "{}/{}/{id}: outside what this peer may send here",
                        group.partition, group.record_type
                    ));
                }
                continue;
            }
            let mut last = position;
            for CheckedChange { change, signing_len, verdict, run } in changes {
                let held = change.counter <= position;
                if change.counter <= last && !held {
                    // Out of order within the group, or repeated.
                    applied.reject(format!("counter {} out of order in its group", change.counter));
                    continue;
                }
                last = last.max(change.counter);
                match verdict {
                    Err(reason) => applied.reject(reason),
                    Ok(valid) => candidates.push(Candidate { change, signing_len, held, valid, run }),
                }
            }
            moved.insert(triple, last);
        }
        // What this node already knows of each verified run. An author that
        // signed two different runs from one counter equivocates: the
        // second run's changes are refused.
        let mut runs: BTreeMap<usize, RunKnown> = BTreeMap::new();
        let mut equivocal: BTreeMap<usize, String> = BTreeMap::new();
        for (place, learnt) in learnt_runs.iter().enumerate() {
            if learnt.is_none() {
                continue;
            }
            let run = &batch.runs[place];
            match self.run(&run.author, run.first)? {
                Some(held) if held.count != run.count || held.signature != run.signature => {
                    equivocal.insert(
                        place,
                        format!(
                            "instance {} signed two different runs from counter {} (equivocation)",
                            run.author, run.first
                        ),
                    );
                }
                Some(held) => {
                    runs.insert(place, held);
                }
                None => {
                    let fresh = RunKnown {
                        author_key: run.author_key,
                        count: run.count,
                        signature: run.signature,
                        spans: BTreeMap::new(),
                    };
                    runs.insert(place, fresh);
                }
            }
        }
        let mut used_runs: Vec<usize> = Vec::new();
        let mut prefetched = self.load_states(candidates.iter().filter(|c| c.valid).map(|c| &c.change.record))?;
        let mut states: BTreeMap<RecordKey, (RecordState, bool, bool)> = BTreeMap::new();
        // Records of send-when types shown unfinished before this batch.
        let mut held_back: BTreeSet<RecordKey> = BTreeSet::new();
        let mut policies: BTreeMap<(partitions::OrgId, partitions::RecordType), crate::policy::TypePolicy> =
            BTreeMap::new();
        let mut observed = self.observe();
        for candidate in candidates {
            let change = candidate.change;
            if !candidate.valid {
                applied.reject(format!("{}: {}", change.record, ChangeError::Signature));
                continue;
            }
            if let Some(reason) = candidate.run.and_then(|place| equivocal.get(&place)) {
                applied.reject(format!("{}: {reason}", change.record));
                continue;
            }
            let key = change.record.clone();
            if !states.contains_key(&key) {
                let state = prefetched.remove(&key).flatten();
                observed.loaded(&key, state.as_ref());
                let existed = state.is_some();
                let state = state.unwrap_or_default();
                let group = (key.partition.org(), key.record_type.clone());
                if !policies.contains_key(&group) {
                    let policy = self.policy(&key.partition, &key.record_type)?;
                    policies.insert(group.clone(), policy);
                }
                if state.held_back(&policies[&group]) {
                    held_back.insert(key.clone());
                }
                states.insert(key.clone(), (state, existed, false));
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
                        used_runs.extend(candidate.run);
                    }
                    pending.drop_changes(&key, &dropped);
                    *touched = true;
                }
                Err(e @ MergeError::Equivocation(..)) => applied.reject(format!("{key}: {e}")),
            }
        }
        let own: BTreeSet<InstanceId> = if held_back.is_empty() {
            BTreeSet::new()
        } else {
            self.instances()?.into_iter().map(|(id, _, _)| id).collect()
        };
        for (key, (state, existed, touched)) in &states {
            if !touched {
                continue;
            }
            for note in self.persist(&mut pending, &mut observed, key, state, *existed)? {
                applied.note(note);
            }
            // Finished by a change from elsewhere while this node held back
            // changes of its own: those are written again past every
            // frontier (`Store::reissue_marked`).
            if held_back.contains(key)
                && state.changes.iter().any(|c| own.contains(&c.author))
                && !state.held_back(&policies[&(key.partition.org(), key.record_type.clone())])
            {
                pending.put(keys::reissue(key), Vec::new());
            }
        }
        used_runs.sort_unstable();
        used_runs.dedup();
        for place in used_runs {
            if let (Some(known), Some(learnt)) = (runs.get_mut(&place), learnt_runs[place].take()) {
                known.learn(learnt);
                let run = &batch.runs[place];
                pending.put(keys::run(&run.author, run.first), seal::encode_run(known));
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
        drop(local);
        observed.committed();
        positions.extend(moved);
        Ok(applied)
    }
}
