//! The send side's plan and batches: what the peer lacks in the outgoing
//! region (from its frontier), and each next batch, read through the
//! `SessionStore` seam. `delta_frames` runs the same for bundles.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{Counter, InstanceId};
use crate::region::Region;
use crate::seal::Seal;
use crate::store::Triple;
use crate::wire::{self, Batch, Group, GroupChange, HeadEntry, Message, Plan, RunProof};

use super::{Env, Outgoing, SessionConfig, SessionStore, Work};

/// Encodes, as `Batch` frames, every change in `region` that a node whose
/// frontier is `their_heads` lacks: what a session would send it, for
/// writing to a file (bundles). `emit` gets each frame and its change count.
pub fn delta_frames(
    store: &dyn SessionStore,
    region: Region,
    their_heads: &[HeadEntry],
    batch_changes: usize,
    batch_bytes: usize,
    emit: &mut dyn FnMut(Vec<u8>, u64) -> Result<(), String>,
) -> Result<Plan, String> {
    let mut out = Outgoing::new(region);
    plan(&mut out, their_heads, store)?;
    while !out.exhausted {
        prepare(&mut out, batch_changes, batch_bytes, store)?;
        if let Some((frame, changes, _)) = out.prepared.take() {
            out.next_seq += 1;
            emit(frame, changes)?;
        }
    }
    emit(wire::encode_message(&Message::End { batches: out.next_seq }), 0)?;
    Ok(out.plan)
}

/// Lists what the peer lacks in the outgoing region and counts it.
pub(super) fn plan_outgoing(out: &mut Outgoing, peer_heads: &[HeadEntry], env: &Env<'_>) -> Result<(), String> {
    plan(out, peer_heads, env.store)
}

pub(super) fn plan(out: &mut Outgoing, peer_heads: &[HeadEntry], store: &dyn SessionStore) -> Result<(), String> {
    let theirs: BTreeMap<Triple, Counter> = peer_heads
        .iter()
        .filter(|e| out.region.contains(&e.partition, &e.record_type))
        .map(|e| ((e.partition.clone(), e.record_type.clone(), e.instance), e.counter))
        .collect();
    let ours = store.heads(&out.region).map_err(|e| e.to_string())?;
    let mut plan = Plan::default();
    for e in ours {
        let after = theirs.get(&(e.partition.clone(), e.record_type.clone(), e.instance)).copied().unwrap_or(0);
        // Below what an eviction removed here, the peer would jump past
        // changes only the acknowledging node still has: nothing of the
        // triple goes until it got them there (`store/evict.rs`).
        if e.counter > after
            && store.evicted(&e.partition, &e.record_type, &e.instance).map_err(|e| e.to_string())? <= after
        {
            let (changes, bytes) = store
                .count_group(&e.partition, &e.record_type, &e.instance, after, e.counter)
                .map_err(|e| e.to_string())?;
            plan.changes += changes;
            plan.bytes += bytes;
            out.work.push(Work {
                partition: e.partition,
                record_type: e.record_type,
                instance: e.instance,
                after,
                upto: e.counter,
            });
        }
    }
    out.plan = plan;
    out.theirs = theirs;
    out.planned = true;
    out.cursor = 0;
    out.position = out.work.first().map_or(0, |w| w.after);
    out.exhausted = out.work.is_empty();
    Ok(())
}

/// Builds the next batch into `out.prepared`.
pub(super) fn prepare_batch(out: &mut Outgoing, config: &SessionConfig, env: &Env<'_>) -> Result<(), String> {
    prepare(out, config.batch_changes, config.batch_bytes, env.store)
}

pub(super) fn prepare(
    out: &mut Outgoing,
    batch_changes: usize,
    batch_bytes: usize,
    store: &dyn SessionStore,
) -> Result<(), String> {
    let max_changes = batch_changes.max(1);
    let max_bytes = batch_bytes.max(1) as u64;
    let mut groups = Vec::new();
    let mut count = 0usize;
    let mut bytes = 0u64;
    // A scan can yield nothing (its changes were superseded or cannot be
    // sent); the batch is empty only when no work is left, never because the
    // bytes it skipped used up the budget.
    while out.cursor < out.work.len() && (groups.is_empty() || (count < max_changes && bytes < max_bytes)) {
        let work = out.work[out.cursor].clone();
        let mut changes = Vec::new();
        let end = store
            .scan_group(
                &work.partition,
                &work.record_type,
                &work.instance,
                out.position,
                work.upto,
                max_changes.saturating_sub(count),
                max_bytes.saturating_sub(bytes),
                &mut changes,
            )
            .map_err(|e| e.to_string())?;
        if !changes.is_empty() {
            count += changes.len();
            groups.push(Group {
                partition: work.partition.clone(),
                record_type: work.record_type.clone(),
                author: work.instance,
                author_key: changes[0].author_key,
                after: out.position,
                changes: changes.iter().map(GroupChange::from_change).collect(),
            });
        }
        bytes += end.bytes;
        if end.complete {
            out.cursor += 1;
            out.position = out.work.get(out.cursor).map_or(0, |w| w.after);
        } else {
            out.position = end.last;
        }
    }
    if out.cursor >= out.work.len() {
        out.exhausted = groups.is_empty();
    }
    if groups.is_empty() {
        out.exhausted = true;
        return Ok(());
    }
    let mut chains = Vec::new();
    for group in &groups {
        if out.chains_sent.insert(group.author_key) {
            chains.extend(store.chains_of(&group.author_key).map_err(|e| e.to_string())?);
        }
    }
    let runs = prove_runs(&mut groups, store)?;
    for group in &groups {
        if let Some(last) = group.changes.iter().map(|c| c.counter).max() {
            let at = out.sent.entry((group.partition.clone(), group.record_type.clone(), group.author)).or_default();
            *at = (*at).max(last);
        }
    }
    // Named for the ledger only while it has room (`MovedRecords`).
    out.prepared_records = groups
        .iter()
        .filter(|_| out.name_records)
        .flat_map(|g| {
            g.changes.iter().map(|c| crate::change::RecordKey {
                partition: g.partition.clone(),
                record_type: g.record_type.clone(),
                id: c.id.clone(),
            })
        })
        .collect();
    let batch = Batch { seq: out.next_seq, plan: out.plan, groups, chains, runs };
    let frame = wire::encode_message(&Message::Batch(batch));
    out.prepared = Some((frame, count as u64, bytes));
    Ok(())
}

/// The proofs for the run-sealed changes of `groups`, one per run: its
/// signature and the hashes that rebuild its root from the changes the
/// batch holds (`seal.rs`). A change whose run this node does not hold
/// whole (only a damaged store lacks one; `ferry check` names it) cannot be
/// proved and is left out.
pub fn prove_runs(groups: &mut Vec<Group>, store: &dyn SessionStore) -> Result<Vec<RunProof>, String> {
    let mut present: BTreeMap<(InstanceId, Counter), Vec<u32>> = BTreeMap::new();
    let mut unprovable: BTreeSet<(InstanceId, Counter)> = BTreeSet::new();
    for group in groups.iter() {
        for change in &group.changes {
            if let Seal::Run { first } = change.seal {
                match change.counter.checked_sub(first).and_then(|i| u32::try_from(i).ok()) {
                    Some(index) => present.entry((group.author, first)).or_default().push(index),
                    None => {
                        unprovable.insert((group.author, first));
                    }
                }
            }
        }
    }
    let mut runs = Vec::with_capacity(present.len());
    for ((author, first), mut leaves) in present {
        leaves.sort_unstable();
        leaves.dedup();
        let known = store.run(&author, first).map_err(|e| e.to_string())?;
        let proof = known.as_ref().filter(|k| leaves.last().is_some_and(|l| *l < k.count)).and_then(|k| {
            Some(RunProof {
                author,
                author_key: k.author_key,
                first,
                count: k.count,
                signature: k.signature,
                proof: k.proof(&leaves)?,
            })
        });
        match proof {
            Some(proof) if !unprovable.contains(&(author, first)) => runs.push(proof),
            _ => {
                unprovable.insert((author, first));
            }
        }
    }
    if !unprovable.is_empty() {
        for group in groups.iter_mut() {
            let author = group.author;
            group.changes.retain(|c| !matches!(c.seal, Seal::Run { first } if unprovable.contains(&(author, first))));
        }
        groups.retain(|g| !g.changes.is_empty());
    }
    Ok(runs)
}
