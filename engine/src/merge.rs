//! Merge: the state of a record as a function of the set of changes it has
//! received, and the visible record derived from it.
//!
//! Every change writes *registers*: the record's existence, each field it
//! lists, and, for a replacing put, every other field too. A change `d`
//! *supersedes* `c` on a register both write when `d` had seen `c`
//! (`d.seen` covers `c`'s dot). For each register we keep `known`, the
//! pointwise maximum of the `seen` vectors of every change ever applied that
//! writes it; `c` is *current* on a register exactly when that vector does
//! not cover it. A record keeps the changes current on at least one register
//! (usually one) and drops the rest.
//!
//! Laws (tested in `tests/merge_laws.rs`):
//! - the state after applying a set of changes does not depend on their
//!   order, on duplicates, or on how they were grouped (commutative,
//!   associative, idempotent), because `known` is a maximum over the set and
//!   currency depends only on `known` and the change;
//! - a written value disappears only when a change that saw it writes the
//!   same register (no silent loss: concurrent values stay current and show
//!   up as conflicts);
//! - the visible record picks, per register, the greatest current change by
//!   the type's policy, a total order, so every node shows the same record.
//!
//! **Skip** (policy `skip`, SENAITE's "changes made on both sides are
//! skipped"): where a field has several current values that differ, no
//! change wins. The field shows its *base*: the newest value, by (hybrid
//! clock, instance), that every current writer had seen (its dot is
//! covered by each writer's `seen`), and every current value differing from
//! it is a conflict. A change superseded by a later write is dropped, so the
//! values a base may be are carried in the changes themselves: a write of a
//! skip type lists, per field it writes, the values current there and the
//! bases they carry (`RecordState::bases_for`), the `SKIP_BASES_MAX` newest.
//! The base is then a function of the current writers alone, so of the set
//! of changes, the same on every node. When no value was seen by all (both
//! created the field, a writer made before its node knew the type was
//! `skip`, or a history longer than the bound) the field shows unset; its
//! values stay conflicts either way, until a write that saw them settles it.
//!
//! The three outcomes reported for an incoming change follow SPEC §3:
//! **skip** (it adds nothing: already held, or superseded everywhere it
//! writes), **update** (its author had seen everything the record reflects:
//! a fast-forward), or **merge** (concurrent: field by field).

use std::collections::BTreeMap;

use crate::change::{Base, Bases, Change, Op};
use crate::ids::Dot;
use crate::limits::SKIP_BASES_MAX;
use crate::policy::{DeletePolicy, FieldPolicy, TypePolicy};
use crate::value::Value;
use crate::vector::VersionVector;

/// What a record holds: its retained changes and what it knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordState {
    /// Every dot and every `seen` of every change applied: what the record
    /// reflects. A local write's `seen` is this vector.
    pub vv: VersionVector,
    pub known: Knowledge,
    /// Retained changes, ordered by dot.
    pub changes: Vec<Change>,
}

/// Per register, the maximum `seen` of the changes that write it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Knowledge {
    pub exists: VersionVector,
    /// Writers of every field: replacing puts.
    pub all_fields: VersionVector,
    /// Writers that list the field.
    pub fields: BTreeMap<String, VersionVector>,
}

/// What applying a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing new: already held or superseded wherever it writes.
    Skipped,
    /// Fast-forward: its author had seen everything the record reflects.
    Updated,
    /// Concurrent with what the record holds; merged field by field.
    /// `conflicts` counts registers where it now competes with another value.
    Merged { conflicts: usize },
}

/// Why a change cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("instance {0:?} signed two different changes with counter {1}")]
    Equivocation(crate::ids::InstanceId, u64),
}

/// A retained value that lost to another one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The field, or `None` for the record's existence (delete against update).
    pub field: Option<String>,
    /// The losing value; `None` is an unset field, or a deletion.
    pub value: Option<Value>,
    pub dot: Dot,
    pub hlc: crate::ids::Hlc,
}

/// The record as applications see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub exists: bool,
    pub fields: BTreeMap<String, Value>,
    pub conflicts: Vec<Conflict>,
}

impl Knowledge {
    fn field(&self, name: &str) -> VersionVector {
        let mut v = self.all_fields.clone();
        if let Some(listed) = self.fields.get(name) {
            v.merge(listed);
        }
        v
    }

    fn add(&mut self, change: &Change) {
        self.exists.merge(&change.seen);
        if let Op::Put { replace, fields } = &change.op {
            if *replace {
                self.all_fields.merge(&change.seen);
            }
            for name in fields.keys() {
                self.fields.entry(name.clone()).or_default().merge(&change.seen);
            }
        }
    }

    /// Whether `change` is current on at least one register it writes.
    fn retains(&self, change: &Change) -> bool {
        let dot = change.dot();
        if !self.exists.covers(dot) {
            return true;
        }
        match &change.op {
            Op::Delete => false,
            Op::Put { replace, fields } => {
                (*replace && !self.all_fields.covers(dot)) || fields.keys().any(|name| !self.field(name).covers(dot))
            }
        }
    }
}

impl RecordState {
    /// Applies one change (already verified and authorised). Returns the
    /// outcome and the dots of the changes dropped as superseded.
    pub fn apply(&mut self, change: Change) -> Result<(Outcome, Vec<Dot>), MergeError> {
        let dot = change.dot();
        if let Ok(i) = self.changes.binary_search_by_key(&dot, Change::dot) {
            if self.changes[i] == change {
                return Ok((Outcome::Skipped, Vec::new()));
            }
            return Err(MergeError::Equivocation(dot.instance, dot.counter));
        }
        let fast_forward = change.seen.dominates(&self.vv);
        self.vv.merge(&change.seen);
        self.vv.add(dot);
        self.known.add(&change);
        let known = &self.known;
        let mut dropped = Vec::new();
        self.changes.retain(|c| {
            let keep = known.retains(c);
            if !keep {
                dropped.push(c.dot());
            }
            keep
        });
        if !self.known.retains(&change) {
            return Ok((Outcome::Skipped, dropped));
        }
        let conflicts = if fast_forward { 0 } else { self.competitors(&change) };
        let at = self.changes.binary_search_by_key(&dot, Change::dot).unwrap_or_else(|i| i);
        self.changes.insert(at, change);
        let outcome = if fast_forward { Outcome::Updated } else { Outcome::Merged { conflicts } };
        Ok((outcome, dropped))
    }

    /// Registers on which `change` competes with a different current value.
    fn competitors(&self, change: &Change) -> usize {
        let dot = change.dot();
        let mut count = 0;
        let exists = !change.is_delete();
        let known = &self.known.exists;
        if !known.covers(dot) && self.changes.iter().any(|c| !known.covers(c.dot()) && c.is_delete() == exists) {
            count += 1;
        }
        for name in change.field_names() {
            let known = self.known.field(name);
            if known.covers(dot) {
                continue;
            }
            let mine = change.field(name).flatten();
            let differs = self
                .changes
                .iter()
                .any(|c| c.writes_field(name) && !known.covers(c.dot()) && c.field(name).flatten() != mine);
            if differs {
                count += 1;
            }
        }
        count
    }

    /// The changes current on the existence register.
    fn existence_writers(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| !self.known.exists.covers(c.dot()))
    }

    /// Every field value some view can show, whatever the policy: for each
    /// field, the values of the retained changes no later write of it has
    /// seen (the winner and the conflicts), and the bases those carry (what
    /// `skip` may show). A value a retained change holds for a field written
    /// again since is not among them.
    pub fn live_values(&self, visit: &mut dyn FnMut(&Value)) {
        let mut names: Vec<&str> = self.changes.iter().flat_map(Change::field_names).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let known = self.known.field(name);
            for change in &self.changes {
                if let Op::Put { fields, .. } = &change.op
                    && let Some(Some(value)) = fields.get(name)
                    && !known.covers(change.dot())
                {
                    visit(value);
                }
                if !known.covers(change.dot()) {
                    for base in change.bases.get(name).into_iter().flatten() {
                        if let Some(value) = &base.value {
                            visit(value);
                        }
                    }
                }
            }
        }
    }

    /// The bases a new change writing `op` on this record carries under
    /// policy `skip`: for each field it writes (for a replacing put, every
    /// field the record names), the values current there now and the bases
    /// they carry, newest first by (hybrid clock, instance), at most
    /// `SKIP_BASES_MAX`. The new change has seen all of them.
    pub fn bases_for(&self, op: &Op) -> Bases {
        let Op::Put { replace, fields } = op else {
            return Bases::new();
        };
        let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
        if *replace {
            names.extend(self.changes.iter().flat_map(Change::field_names));
            names.sort_unstable();
            names.dedup();
        }
        let mut bases = Bases::new();
        for name in names {
            let known = self.known.field(name);
            let mut list: Vec<Base> = Vec::new();
            for c in self.changes.iter().filter(|c| c.writes_field(name) && !known.covers(c.dot())) {
                list.push(Base { dot: c.dot(), hlc: c.hlc, value: c.field(name).flatten().cloned() });
                list.extend(c.bases.get(name).into_iter().flatten().cloned());
            }
            list.sort_by_key(|b| std::cmp::Reverse((b.hlc, b.dot)));
            let mut listed = std::collections::BTreeSet::new();
            list.retain(|b| listed.insert(b.dot));
            list.truncate(SKIP_BASES_MAX);
            if !list.is_empty() {
                bases.insert(name.to_owned(), list);
            }
        }
        bases
    }

    /// Whether this record is held back from peers under `policy`: its type
    /// sends only finished records and it is shown unfinished
    /// (`View::may_send`). Cheap when the type has no send-when.
    pub fn held_back(&self, policy: &TypePolicy) -> bool {
        policy.send_when.is_some() && !self.view(policy).may_send(policy)
    }

    /// What `change` (retained here) still writes that no later write has
    /// seen: a delete current on the existence register; for a put, the
    /// fields it is current on (an unset one as `None`, a replacing put's
    /// unlisted fields included). `None` when nothing of it is current.
    /// `LocalOp::Reissue` writes this again under a new counter, so the
    /// record shows the same values and conflicts.
    pub fn current_part(&self, change: &Change) -> Option<Op> {
        let dot = change.dot();
        let on_existence = !self.known.exists.covers(dot);
        match &change.op {
            Op::Delete => on_existence.then_some(Op::Delete),
            Op::Put { replace, fields } => {
                let mut names: Vec<&str> = self.changes.iter().flat_map(Change::field_names).collect();
                names.sort_unstable();
                names.dedup();
                let current: BTreeMap<String, Option<Value>> = names
                    .into_iter()
                    .filter(|name| (*replace || fields.contains_key(*name)) && !self.known.field(name).covers(dot))
                    .map(|name| (name.to_owned(), fields.get(name).cloned().flatten()))
                    .collect();
                (on_existence || !current.is_empty()).then_some(Op::Put { replace: false, fields: current })
            }
        }
    }

    /// Whether some latest write of the record's existence is a put: the
    /// record is shown, or shown as a conflict of a delete. A record that
    /// is only deleted references no blob (`blob::refs_of`).
    pub fn put_survives(&self) -> bool {
        let any_put = self.existence_writers().any(|c| !c.is_delete());
        any_put || (self.existence_writers().next().is_none() && self.changes.iter().any(|c| !c.is_delete()))
    }

    /// Whether the record is shown (not deleted), under `policy`.
    pub fn exists(&self, policy: &TypePolicy) -> bool {
        let any_put = self.existence_writers().any(|c| !c.is_delete());
        let any_delete = self.existence_writers().any(Change::is_delete);
        match (any_put, any_delete) {
            (true, true) => policy.delete == DeletePolicy::UpdateWins,
            (true, false) => true,
            (false, true) => false,
            // Only possible with contradictory `seen` vectors: fall back on
            // whether any retained change is a put, the same on every node.
            (false, false) => self.changes.iter().any(|c| !c.is_delete()),
        }
    }

    /// Whether any register holds two current values that differ (a
    /// conflict, whatever the policy makes of it).
    pub fn has_conflicts(&self) -> bool {
        if self.existence_writers().any(|c| !c.is_delete()) && self.existence_writers().any(Change::is_delete) {
            return true;
        }
        if self.changes.len() < 2 {
            return false;
        }
        let mut names: Vec<&str> = self.changes.iter().flat_map(Change::field_names).collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().any(|name| {
            let known = self.known.field(name);
            let mut values = self
                .changes
                .iter()
                .filter(|c| c.writes_field(name) && !known.covers(c.dot()))
                .map(|c| c.field(name).flatten());
            let first = values.next();
            values.any(|v| Some(v) != first)
        })
    }

    /// The record as it should be shown, under `policy`.
    pub fn view(&self, policy: &TypePolicy) -> View {
        let mut conflicts = Vec::new();
        let exists = self.exists(policy);
        let any_put = self.existence_writers().any(|c| !c.is_delete());
        let any_delete = self.existence_writers().any(Change::is_delete);
        if any_put && any_delete {
            for c in self.existence_writers().filter(|c| c.is_delete() == exists) {
                conflicts.push(Conflict { field: None, value: None, dot: c.dot(), hlc: c.hlc }.with_put(c));
            }
        }
        // Fields: every name some retained change lists.
        let mut names: Vec<&str> = self.changes.iter().flat_map(Change::field_names).collect();
        names.sort_unstable();
        names.dedup();
        let mut fields = BTreeMap::new();
        for name in names {
            let known = self.known.field(name);
            let writers: Vec<&Change> =
                self.changes.iter().filter(|c| c.writes_field(name) && !known.covers(c.dot())).collect();
            let Some(winner) = writers.iter().copied().max_by(|a, b| policy.compare(a, b)) else {
                continue;
            };
            if policy.fields == FieldPolicy::Skip && writers.iter().any(|c| c.field(name) != winner.field(name)) {
                let base = skip_base(&writers, name).and_then(|b| b.value.as_ref());
                if let Some(value) = base {
                    fields.insert(name.to_owned(), value.clone());
                }
                let mut listed: Vec<&Change> = writers.clone();
                listed.sort_by(|a, b| policy.compare(b, a));
                for c in listed {
                    let theirs = c.field(name).flatten();
                    if theirs != base {
                        conflicts.push(Conflict {
                            field: Some(name.to_owned()),
                            value: theirs.cloned(),
                            dot: c.dot(),
                            hlc: c.hlc,
                        });
                    }
                }
                continue;
            }
            let value = winner.field(name).flatten();
            if let Some(value) = value {
                fields.insert(name.to_owned(), value.clone());
            }
            for c in writers {
                let theirs = c.field(name).flatten();
                if c.dot() != winner.dot() && theirs != value {
                    conflicts.push(Conflict {
                        field: Some(name.to_owned()),
                        value: theirs.cloned(),
                        dot: c.dot(),
                        hlc: c.hlc,
                    });
                }
            }
        }
        if !exists {
            fields.clear();
        }
        View { exists, fields, conflicts }
    }
}

/// Under `skip`, the value a field in conflict shows: the newest base, by
/// (hybrid clock, instance), that every current writer of it had seen.
fn skip_base<'a>(writers: &[&'a Change], name: &str) -> Option<&'a Base> {
    writers
        .iter()
        .flat_map(|w| w.bases.get(name).into_iter().flatten())
        .filter(|b| writers.iter().all(|w| w.seen.covers(b.dot)))
        .max_by_key(|b| (b.hlc, b.dot))
}

impl View {
    /// Whether a record shown as this view may be offered to peers under
    /// `policy`: always, unless its type sends only finished records
    /// (`TypePolicy::send_when`) and this one is shown unfinished.
    pub fn may_send(&self, policy: &TypePolicy) -> bool {
        match &policy.send_when {
            Some((field, value)) => !self.exists || self.fields.get(field) == Some(value),
            None => true,
        }
    }
}

impl Conflict {
    /// For an existence conflict, a losing put is shown by its fields.
    fn with_put(mut self, change: &Change) -> Conflict {
        if let Op::Put { fields, .. } = &change.op {
            let map: BTreeMap<String, Value> =
                fields.iter().filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v))).collect();
            self.value = Some(Value::Map(map));
        }
        self
    }
}
