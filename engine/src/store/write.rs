//! Local writes: what an application asks for becomes changes signed by
//! this node, checked against its scope and against the form check every
//! peer runs, merged, indexed and committed in one durable commit. A
//! refused write uses no counter.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;
use partitions::WriteKind;

use crate::authorize::{Authorizer, Denied};
use crate::change::{Bases, Change, ChangeError, Op, RecordKey, is_field_name};
use crate::ids::InstanceId;
use crate::ids::{AuthorKey, Counter, Dot, Hlc};
use crate::keys;
use crate::limits::{FIELDS_MAX, RECORD_BYTES_MAX, RUN_LEAVES_MAX};
use crate::merge::{RecordState, View};
use crate::policy::{FieldPolicy, TypePolicy};
use crate::seal::{Hash, RunKnown, Seal, encode_run, run_message};
use crate::value::Value;

use super::{Pending, Store, StoreError, corrupt};

/// A write an application asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalWrite {
    pub record: RecordKey,
    pub op: LocalOp,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LocalOp {
    /// Sets and unsets fields; creates the record if it does not exist (or
    /// recreates it, empty but for `set`, if it was deleted).
    Put {
        set: BTreeMap<String, Value>,
        unset: BTreeSet<String>,
    },
    Delete,
    /// Undoes a deletion, keeping the fields the record had.
    Restore,
    /// Writes again, under a new counter, what one of this store's own
    /// retained changes of the record still writes (`RecordState::
    /// current_part`), knowing only what that change knew and the change
    /// itself: the same values and conflicts, under a dot past every peer's
    /// frontier (docs/protocol.md, "Send when finished").
    Reissue(Dot),
}

/// Why one local write was refused (the others in the call still apply).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteRejection {
    #[error("no such record")]
    NotFound,
    #[error("the record is already deleted")]
    AlreadyDeleted,
    #[error("the record is not deleted")]
    NotDeleted,
    #[error("outside this node's write scope: {0}")]
    Denied(Denied),
    #[error("bad field: {0}")]
    Field(String),
    /// The change this write would make is one peers must refuse (too
    /// large, too deep): refused before it is made.
    #[error("{0}")]
    Form(ChangeError),
}

/// The outcome of one local write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The new change; for an unchanged record, its latest change.
    pub dot: Dot,
    pub view: View,
    /// The write set what the record already showed: no change was made
    /// (re-running an import writes, signs and syncs nothing new).
    pub unchanged: bool,
}

/// Who writes locally.
pub struct LocalAuthor {
    pub key: SigningKey,
    pub authority: Option<String>,
}

/// Hashes freshly made changes for the runs that seal them; drivers with
/// threads hash in parallel. Returns, for each change in order, the length
/// of its signing bytes (the stored size the change index records) and its
/// leaf hash (`Change::leaf`).
pub trait Signer: Sync {
    fn leaves(&self, changes: &[Change]) -> Vec<(usize, Hash)>;
}

/// Hashes on the calling thread.
pub struct SerialSigner;

impl Signer for SerialSigner {
    fn leaves(&self, changes: &[Change]) -> Vec<(usize, Hash)> {
        changes.iter().map(Change::leaf).collect()
    }
}

/// Seals `changes`, the consecutive counters of one run of `author`, with
/// one signature; `leaves` are their hashes (`Change::leaf`). Sets each
/// change's seal and returns what is known of the run (all of it).
pub fn seal_run(key: &SigningKey, author: &InstanceId, changes: &mut [Change], leaves: &[Hash]) -> RunKnown {
    assert!(!changes.is_empty() && changes.len() <= RUN_LEAVES_MAX && changes.len() == leaves.len());
    let author_key = AuthorKey(key.verifying_key().to_bytes());
    let first = changes[0].counter;
    let mut known = RunKnown::whole(author_key, [0; 64], leaves);
    let root = known.root().expect("a whole run has every leaf");
    let message = run_message(&author_key, author, first, leaves.len() as u32, &root);
    known.signature = ed25519_dalek::Signer::sign(key, &message).to_bytes();
    for change in changes.iter_mut() {
        change.seal = Seal::Run { first };
    }
    known
}

/// Seals `changes` (consecutive counters of one author) in runs of at most
/// `RUN_LEAVES_MAX`: one signature each. Returns each run's first counter
/// and what the store keeps of it.
fn seal_runs(
    key: &SigningKey,
    author: &InstanceId,
    changes: &mut [Change],
    leaves: &[Hash],
) -> Vec<(Counter, RunKnown)> {
    changes
        .chunks_mut(RUN_LEAVES_MAX)
        .zip(leaves.chunks(RUN_LEAVES_MAX))
        .map(|(part, hashes)| (part[0].counter, seal_run(key, author, part, hashes)))
        .collect()
}

impl Store {
    // -----------------------------------------------------------------------
    // Local writes

    /// Writes for an application. Each write becomes a change signed by
    /// `author`, checked against its scope through `auth`; refused writes
    /// change nothing and use no counter. Everything accepted is committed
    /// atomically and durably before this returns.
    pub fn write(
        &self,
        author: &LocalAuthor,
        writes: &[LocalWrite],
        now_ms: u64,
        auth: &dyn Authorizer,
        signer: &dyn Signer,
    ) -> Result<Vec<Result<Written, WriteRejection>>, StoreError> {
        self.write_with(author, writes, now_ms, auth, signer, true)
    }

    /// Like `write`; without `views` the results carry empty views (bulk
    /// imports do not need them).
    pub fn write_with(
        &self,
        author: &LocalAuthor,
        writes: &[LocalWrite],
        now_ms: u64,
        auth: &dyn Authorizer,
        signer: &dyn Signer,
        views: bool,
    ) -> Result<Vec<Result<Written, WriteRejection>>, StoreError> {
        let author_key = AuthorKey(author.key.verifying_key().to_bytes());
        let mut local = self.lock();
        let mut results: Vec<Option<Result<Written, WriteRejection>>> = vec![None; writes.len()];
        // Record states as this call changes them: (state, existed before),
        // and the dots each retained when loaded.
        let mut states: BTreeMap<RecordKey, (RecordState, bool)> = BTreeMap::new();
        let mut loaded: BTreeMap<RecordKey, Vec<Dot>> = BTreeMap::new();
        let mut changes: Vec<Change> = Vec::new();
        let mut counter = local.counter;
        let mut clock = local.clock;
        let mut prefetched = self.load_states(writes.iter().map(|w| &w.record))?;
        let own: BTreeSet<InstanceId> = if writes.iter().any(|w| matches!(w.op, LocalOp::Reissue(_))) {
            self.instances()?.into_iter().map(|(id, _, _)| id).collect()
        } else {
            BTreeSet::new()
        };
        let mut observed = self.observe();
        // Per record, the local-field edits of this call (`None`: clear).
        let mut locals: BTreeMap<RecordKey, Option<LocalEdit>> = BTreeMap::new();
        for (i, write) in writes.iter().enumerate() {
            let key = &write.record;
            if !states.contains_key(key) {
                let state = prefetched.remove(key).flatten();
                observed.loaded(key, state.as_ref());
                let existed = state.is_some();
                let state = state.unwrap_or_default();
                loaded.insert(key.clone(), state.changes.iter().map(Change::dot).collect());
                states.insert(key.clone(), (state, existed));
            }
            let (state, _) = states.get_mut(key).expect("inserted above");
            let held = !state.changes.is_empty();
            let exists_now = held && state.exists(&TypePolicy::default());
            // Local fields leave the write here: they go to the record's
            // local entry, never into a change.
            let policy = self.policy(&key.partition, &key.record_type)?;
            let reissue = if let LocalOp::Reissue(dot) = &write.op { Some(*dot) } else { None };
            let (shared, local_edit) = if reissue.is_some() { (None, None) } else { split_local(&write.op, &policy) };
            let op_asked = shared.as_ref().unwrap_or(&write.op);
            // A sealed field takes only what was sealed to its readers: a
            // write path that forgot to seal fails here, never sends plaintext.
            if let LocalOp::Put { set, .. } = op_asked
                && let Err(reason) = crate::sealed::check_sealed_write(&policy, set)
            {
                results[i] = Some(Err(WriteRejection::Field(reason)));
                continue;
            }
            if let Some(edit) = &local_edit {
                let bytes = crate::stored::encode_value(edit).len();
                if bytes > RECORD_BYTES_MAX {
                    results[i] = Some(Err(WriteRejection::Field(format!(
                        "the local fields are {bytes} bytes, more than the {RECORD_BYTES_MAX} a record may hold"
                    ))));
                    continue;
                }
            }
            if exists_now
                && let LocalOp::Put { set, unset } = op_asked
                && let Some(latest) = state.changes.iter().max_by_key(|c| c.hlc)
            {
                let view = state.view(&policy);
                let same = view.conflicts.is_empty()
                    && set.iter().all(|(k, v)| view.fields.get(k) == Some(v))
                    && unset.iter().all(|k| !view.fields.contains_key(k));
                // A write of local fields alone makes no change, even to a
                // record in conflict (an empty change would settle it).
                let only_local = local_edit.is_some() && set.is_empty() && unset.is_empty();
                match (same || only_local, &local_edit) {
                    (true, None) => {
                        let mut view = view;
                        self.add_local_fields(key, &policy, &mut view)?;
                        results[i] = Some(Ok(Written { dot: latest.dot(), view, unchanged: true }));
                        continue;
                    }
                    (true, Some(edit)) => {
                        // Only local fields change: no change is made, but
                        // the write passes the same scope check.
                        if let Err(denied) = auth.may_write(
                            &author_key,
                            author.authority.as_deref(),
                            &key.partition,
                            &key.record_type,
                            WriteKind::Update,
                            now_ms / 1000,
                        ) {
                            results[i] = Some(Err(WriteRejection::Denied(denied)));
                            continue;
                        }
                        add_local_edit(&mut locals, key, edit);
                        results[i] = Some(Ok(Written { dot: latest.dot(), view: View::default(), unchanged: false }));
                        continue;
                    }
                    (false, _) => {}
                }
            }
            // A profile holds policies only this version can read in full:
            // an unknown word would otherwise fall back to a default unseen.
            if key.record_type.as_str() == crate::policy::PROFILE_TYPE
                && let LocalOp::Put { set, .. } = &write.op
                && let Some(reason) = set.iter().find_map(|(name, value)| match value.as_str() {
                    Some(text) => TypePolicy::parse_strict(text).err().map(|e| format!("the policy for {name}: {e}")),
                    None => Some(format!("the policy for {name} must be a text, such as newest or authority:central")),
                })
            {
                results[i] = Some(Err(WriteRejection::Field(reason)));
                continue;
            }
            // A write again keeps the hybrid clock of the change it copies:
            // it must rank against concurrent changes as that one did.
            let mut kept_hlc = None;
            let mut kept_bases = None;
            let (op, seen) = match reissue {
                Some(dot) => match state
                    .changes
                    .iter()
                    .find(|c| c.dot() == dot && own.contains(&c.author))
                    .and_then(|old| Some((old, state.current_part(old)?)))
                {
                    Some((old, part)) => {
                        let mut seen = old.seen.clone();
                        seen.add(dot);
                        kept_hlc = Some(old.hlc);
                        // The same bases: the record shows the same base.
                        let mut bases = old.bases.clone();
                        bases.retain(|name, _| part_writes(&part, name));
                        kept_bases = Some(bases);
                        (part, seen)
                    }
                    None => {
                        results[i] = Some(Err(WriteRejection::NotFound));
                        continue;
                    }
                },
                None => match local_op(op_asked, held, exists_now) {
                    Ok(op) => (finishing(op, state, exists_now, &policy), state.vv.clone()),
                    Err(rejection) => {
                        results[i] = Some(Err(rejection));
                        continue;
                    }
                },
            };
            let mut change = Change {
                record: key.clone(),
                author: local.instance,
                author_key,
                counter: counter + 1,
                hlc: Hlc(0),
                authority: author.authority.clone(),
                seen,
                bases: match kept_bases {
                    Some(bases) => bases,
                    None if policy.fields == FieldPolicy::Skip => state.bases_for(&op),
                    None => Bases::new(),
                },
                op,
                seal: Seal::Single([0; 64]),
            };
            if let Err(denied) = auth.may_write(
                &author_key,
                author.authority.as_deref(),
                &key.partition,
                &key.record_type,
                change.write_kind(),
                now_ms / 1000,
            ) {
                results[i] = Some(Err(WriteRejection::Denied(denied)));
                continue;
            }
            // The same form check every receiver runs, on the change as it
            // will be signed: a node never makes a change its peers refuse.
            let mut trial = clock;
            change.hlc = kept_hlc.unwrap_or_else(|| trial.tick(now_ms));
            // Encoding only when the cheap bound comes near the limit.
            let bound = change.signing_len_bound();
            let len = if bound <= RECORD_BYTES_MAX { bound } else { change.signing_bytes().len() };
            if let Err(e) = change.check_form(len) {
                results[i] = Some(Err(WriteRejection::Form(e)));
                continue;
            }
            counter += 1;
            clock = trial;
            // Merge before sealing (the seal plays no part in merging); the
            // seals are filled in below.
            state.apply(change.clone()).map_err(|e| corrupt(&format!("own change does not merge: {e}")))?;
            match (&local_edit, &change.op) {
                (Some(edit), Op::Put { replace: true, .. }) => {
                    locals.insert(key.clone(), None);
                    add_local_edit(&mut locals, key, edit);
                }
                (Some(edit), _) => add_local_edit(&mut locals, key, edit),
                // A deleted or recreated record starts without local fields.
                (None, Op::Delete) | (None, Op::Put { replace: true, .. }) => {
                    locals.insert(key.clone(), None);
                }
                (None, _) => {}
            }
            results[i] = Some(Ok(Written { dot: change.dot(), view: View::default(), unchanged: false }));
            changes.push(change);
        }
        let (lengths, leaves): (Vec<usize>, Vec<Hash>) = signer.leaves(&changes).into_iter().unzip();
        let runs = seal_runs(&author.key, &local.instance, &mut changes, &leaves);

        let mut pending = Pending::default();
        for (first, known) in &runs {
            pending.put(keys::run(&local.instance, *first), encode_run(known));
        }
        let mut retained: BTreeSet<Dot> = BTreeSet::new();
        let seals: BTreeMap<Dot, Seal> = changes.iter().map(|c| (c.dot(), c.seal)).collect();
        let changed: BTreeSet<&RecordKey> = changes.iter().map(|c| &c.record).collect();
        for (key, (state, existed)) in states.iter_mut() {
            if !changed.contains(key) {
                continue;
            }
            for held in state.changes.iter_mut() {
                if let Some(seal) = seals.get(&held.dot()) {
                    held.seal = *seal;
                    retained.insert(held.dot());
                }
            }
            // Local profile writes were checked strictly above: nothing to say.
            self.persist(&mut pending, &mut observed, key, state, *existed)?;
        }
        for (change, length) in changes.iter().zip(lengths) {
            // A change superseded by a later one of this same call is not
            // indexed; the ones it superseded before are dropped.
            if retained.contains(&change.dot()) {
                pending.index_change(change, length);
            }
        }
        for (key, dots) in &loaded {
            let (state, _) = &states[key];
            let dropped: Vec<Dot> =
                dots.iter().copied().filter(|d| state.changes.binary_search_by_key(d, Change::dot).is_err()).collect();
            pending.drop_changes(key, &dropped);
        }
        let mut local_views: BTreeMap<RecordKey, BTreeMap<String, Value>> = BTreeMap::new();
        for (key, edit) in &locals {
            let at = keys::local_fields(&key.partition, &key.record_type, &key.id);
            let mut fields = match edit {
                None => BTreeMap::new(),
                Some(edit) if edit.clear => BTreeMap::new(),
                Some(_) => self.local_fields(key)?,
            };
            for (name, value) in edit.iter().flat_map(|e| &e.fields) {
                match value {
                    Some(v) => fields.insert(name.clone(), v.clone()),
                    None => fields.remove(name),
                };
            }
            if fields.is_empty() {
                pending.delete(at);
            } else {
                pending.put(at, crate::stored::encode_value(&fields));
            }
            local_views.insert(key.clone(), fields);
        }
        pending.put(keys::meta("counter"), counter.to_be_bytes().to_vec());
        pending.put(keys::meta("hlc"), clock.last().0.to_be_bytes().to_vec());
        self.finish_heads(&mut pending, &BTreeMap::new())?;
        self.commit_pending(pending)?;
        local.counter = counter;
        local.clock = clock;
        drop(local);
        observed.committed();
        for (slot, write) in results.iter_mut().zip(writes) {
            if !views {
                break;
            }
            if let Some(Ok(written)) = slot
                && !written.unchanged
            {
                let (state, _) = &states[&write.record];
                let policy = self.policy(&write.record.partition, &write.record.record_type)?;
                written.view = state.view(&policy);
                match local_views.get(&write.record) {
                    Some(fields) if written.view.exists && !policy.local.is_empty() => {
                        written.view.fields.extend(fields.clone());
                    }
                    Some(_) => {}
                    None => self.add_local_fields(&write.record, &policy, &mut written.view)?,
                }
            }
        }
        Ok(results.into_iter().map(|r| r.expect("every write has a result")).collect())
    }
}

/// A put that finishes a record of a send-when type (`TypePolicy::
/// send_when`) becomes a replacing put of every field it shows: it then
/// supersedes every change the record held while unfinished, none of which
/// was sent, so no peer ever needs them (docs/protocol.md, "Send when
/// finished").
/// Whether the part of a change a reissue writes again names `name`.
fn part_writes(part: &Op, name: &str) -> bool {
    matches!(part, Op::Put { fields, .. } if fields.contains_key(name))
}

fn finishing(op: Op, state: &RecordState, exists_now: bool, policy: &TypePolicy) -> Op {
    let (Some((field, value)), Op::Put { replace, fields }) = (&policy.send_when, &op) else { return op };
    let before = if exists_now { state.view(policy).fields } else { BTreeMap::new() };
    let was_finished = exists_now && before.get(field) == Some(value);
    let mut after = if *replace { BTreeMap::new() } else { before };
    for (name, v) in fields {
        match v {
            Some(v) => after.insert(name.clone(), v.clone()),
            None => after.remove(name),
        };
    }
    if was_finished || after.get(field) != Some(value) {
        return op;
    }
    Op::Put { replace: true, fields: after.into_iter().map(|(k, v)| (k, Some(v))).collect() }
}

/// Local-field edits to one record: fields set (`Some`) or unset (`None`),
/// after clearing them all when `clear`.
#[derive(Clone, Debug, Default, serde::Serialize)]
struct LocalEdit {
    clear: bool,
    fields: BTreeMap<String, Option<Value>>,
}

/// Splits a put into what a change carries and what stays local
/// (`TypePolicy::local`); `None`s when nothing of it is local.
fn split_local(op: &LocalOp, policy: &TypePolicy) -> (Option<LocalOp>, Option<LocalEdit>) {
    let LocalOp::Put { set, unset } = op else { return (None, None) };
    if policy.local.is_empty() || !set.keys().chain(unset).any(|n| policy.local.contains(n)) {
        return (None, None);
    }
    let mut edit = LocalEdit::default();
    let mut shared_set = BTreeMap::new();
    let mut shared_unset = BTreeSet::new();
    for (name, value) in set {
        if policy.local.contains(name) {
            edit.fields.insert(name.clone(), Some(value.clone()));
        } else {
            shared_set.insert(name.clone(), value.clone());
        }
    }
    for name in unset {
        if policy.local.contains(name) {
            edit.fields.insert(name.clone(), None);
        } else {
            shared_unset.insert(name.clone());
        }
    }
    (Some(LocalOp::Put { set: shared_set, unset: shared_unset }), Some(edit))
}

/// Adds one write's local edit to the call's edits of that record.
fn add_local_edit(locals: &mut BTreeMap<RecordKey, Option<LocalEdit>>, key: &RecordKey, edit: &LocalEdit) {
    match locals.entry(key.clone()).or_insert_with(|| Some(LocalEdit::default())) {
        Some(held) => held.fields.extend(edit.fields.clone()),
        slot @ None => *slot = Some(LocalEdit { clear: true, fields: edit.fields.clone() }),
    }
}

impl Store {
    /// Whether any record is marked for `reissue_marked`.
    pub fn reissue_pending(&self) -> Result<bool, StoreError> {
        let mut any = false;
        self.scan_prefix(&keys::meta(keys::REISSUE_PREFIX), &mut |_, _| {
            any = true;
            false
        })?;
        Ok(any)
    }

    /// Writes again the own changes of every record a received change
    /// finished while this node held back changes of its own to it (marked
    /// by `apply_batch`): those were never sent, and a peer's frontier may
    /// already be past their counters. Each comes back under a new counter
    /// with what it still writes (`LocalOp::Reissue`). Returns how many
    /// were written. Call it after a session or a bundle import; a crash
    /// before the marks are cleared only writes them again, which changes
    /// nothing a peer shows.
    pub fn reissue_marked(
        &self,
        author: &LocalAuthor,
        now_ms: u64,
        auth: &dyn Authorizer,
        signer: &dyn Signer,
    ) -> Result<u64, StoreError> {
        let prefix = keys::meta(keys::REISSUE_PREFIX);
        let mut marks = Vec::new();
        self.scan_prefix(&prefix, &mut |k, _| {
            marks.push(k.to_vec());
            true
        })?;
        if marks.is_empty() {
            return Ok(0);
        }
        let own: BTreeSet<InstanceId> = self.instances()?.into_iter().map(|(id, _, _)| id).collect();
        let mut writes = Vec::new();
        for mark in &marks {
            let Some((partition, record_type, id)) = keys::split_typed(&mark[prefix.len()..]) else { continue };
            let Some(id) = std::str::from_utf8(id).ok().and_then(|id| crate::ids::RecordId::parse(id).ok()) else {
                continue;
            };
            let record = RecordKey { partition, record_type, id };
            if let Some(state) = self.record(&record)? {
                for change in state.changes.iter().filter(|c| own.contains(&c.author)) {
                    writes.push(LocalWrite { record: record.clone(), op: LocalOp::Reissue(change.dot()) });
                }
            }
        }
        let written =
            self.write_with(author, &writes, now_ms, auth, signer, false)?.iter().filter(|r| r.is_ok()).count();
        let clear: Vec<crate::backend::WriteOp> = marks.into_iter().map(|k| (k, None)).collect();
        self.commit(&clear)?;
        Ok(written as u64)
    }
}

/// The operation a local write becomes, given whether the record is held
/// and whether it is visible (not deleted).
fn local_op(op: &LocalOp, held: bool, exists_now: bool) -> Result<Op, WriteRejection> {
    match op {
        LocalOp::Put { set, unset } => {
            if set.len() + unset.len() > FIELDS_MAX {
                return Err(WriteRejection::Field(format!("more than {FIELDS_MAX} fields")));
            }
            if let Some(bad) = set.keys().chain(unset.iter()).find(|n| !is_field_name(n)) {
                return Err(WriteRejection::Field(crate::change::field_name_refusal(bad)));
            }
            let mut fields: BTreeMap<String, Option<Value>> =
                set.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
            if exists_now {
                for name in unset {
                    fields.entry(name.clone()).or_insert(None);
                }
            }
            // A write to a record that is absent or deleted starts it afresh.
            Ok(Op::Put { replace: !exists_now, fields })
        }
        LocalOp::Delete if !held => Err(WriteRejection::NotFound),
        LocalOp::Delete if !exists_now => Err(WriteRejection::AlreadyDeleted),
        LocalOp::Delete => Ok(Op::Delete),
        LocalOp::Restore if !held => Err(WriteRejection::NotFound),
        LocalOp::Restore if exists_now => Err(WriteRejection::NotDeleted),
        LocalOp::Restore => Ok(Op::Put { replace: false, fields: BTreeMap::new() }),
        // Handled before: it copies a change, it is not built from fields.
        LocalOp::Reissue(_) => Err(WriteRejection::NotFound),
    }
}

/// The kind of write a local op would be, for scope checks before writing.
pub fn local_write_kind(op: &LocalOp, record_exists: bool) -> WriteKind {
    match op {
        LocalOp::Delete => WriteKind::Delete,
        LocalOp::Restore | LocalOp::Reissue(_) => WriteKind::Update,
        LocalOp::Put { .. } if record_exists => WriteKind::Update,
        LocalOp::Put { .. } => WriteKind::Create,
    }
}
