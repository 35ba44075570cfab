//! `ApplyHook`: what an application (or node itself) learns of every
//! change to a record, from local writes and from what peers send alike.
//! The store calls `changed` inside the commit being prepared, with the
//! record's state before and after, and `committed` once that commit is
//! durable and the store's write lock is released. node's revocation cache
//! is the first user (node/src/authority.rs). The change feed does not
//! need one: the store writes its entries itself (`store/feed.rs`).
//!
//! A hook can refuse a change (Morango's operations: an application's own
//! tables kept atomic with the data): `changed` returns `Err`, and the
//! whole commit is dropped, the other records of its batch included. A
//! local write then fails with `StoreError::Refused`; a batch from a peer
//! fails its session on both sides with the hook's reason, and nothing of
//! it is stored, so the peer sends it again at the next sync. Hooks that
//! saw a change of a commit that does not happen hear `aborted`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use partitions::{Partition, RecordType};

use crate::blob::{self, BlobRef};
use crate::change::RecordKey;
use crate::merge::RecordState;

use super::Store;

pub trait ApplyHook: Send + Sync {
    /// Whether `changed` wants records of this type in this partition. The
    /// store keeps a copy of a record's state before the change only for
    /// records some hook wants.
    fn wants(&self, partition: &Partition, record_type: &RecordType) -> bool;
    /// A record this hook wants changes in the commit being prepared
    /// (`before` is `None` for a new record). Runs under the store's write
    /// lock: it must be quick and must not call back into the store. An
    /// `Err` refuses the commit whole: nothing of it is stored.
    fn changed(&self, key: &RecordKey, before: Option<&RecordState>, after: &RecordState) -> Result<(), Refusal>;
    /// The commit holding the changes `changed` saw is durable. Runs
    /// without the store's lock: it may read the store.
    fn committed(&self);
    /// The commit holding the changes `changed` saw will not happen (a
    /// hook refused it, or the store could not write it): forget them.
    fn aborted(&self) {}
}

/// Why an `ApplyHook` refuses a commit: one line, said in the store's
/// error and, for a batch from a peer, to both sides of the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

/// The hooks of one commit and the states they need.
pub(super) struct Observed {
    hooks: Vec<Arc<dyn ApplyHook>>,
    before: BTreeMap<RecordKey, Option<RecordState>>,
    /// Which hooks saw a change (and so hear of the commit).
    saw: Vec<bool>,
    /// The blobs each record loaded references (only those that reference
    /// any), kept as the commit changes them, so `persisted` knows which
    /// entries of the blob index to add and remove.
    blob_refs: BTreeMap<RecordKey, BTreeSet<BlobRef>>,
    /// Set once the commit is durable; otherwise dropping tells `aborted`.
    done: bool,
}

/// What a persisted record changes in the blob index.
#[derive(Default)]
pub(super) struct RefChanges {
    pub(super) added: Vec<BlobRef>,
    pub(super) removed: Vec<BlobRef>,
}

impl Observed {
    fn wanted(&self, key: &RecordKey) -> bool {
        self.hooks.iter().any(|h| h.wants(&key.partition, &key.record_type))
    }

    /// A record as it was read before the commit changes it.
    pub(super) fn loaded(&mut self, key: &RecordKey, state: Option<&RecordState>) {
        if let Some(state) = state {
            let refs = blob::refs_of(state);
            if !refs.is_empty() {
                self.blob_refs.insert(key.clone(), refs);
            }
        }
        if !self.hooks.is_empty() && self.wanted(key) {
            self.before.insert(key.clone(), state.cloned());
        }
    }

    /// A record as the commit will store it; returns what that changes in
    /// the blob index, or the first hook's refusal.
    pub(super) fn persisted(&mut self, key: &RecordKey, after: &RecordState) -> Result<RefChanges, Refusal> {
        let refs = blob::refs_of(after);
        let before =
            if refs.is_empty() { self.blob_refs.remove(key) } else { self.blob_refs.insert(key.clone(), refs.clone()) };
        let before = before.unwrap_or_default();
        let changes = RefChanges {
            added: refs.difference(&before).copied().collect(),
            removed: before.difference(&refs).copied().collect(),
        };
        for (hook, saw) in self.hooks.iter().zip(self.saw.iter_mut()) {
            if hook.wants(&key.partition, &key.record_type) {
                let before = self.before.get(key).and_then(Option::as_ref);
                // Told before it answers: a hook that refuses hears
                // `aborted` as the others do.
                *saw = true;
                hook.changed(key, before, after)?;
            }
        }
        Ok(changes)
    }

    /// The commit is durable: tells the hooks that saw a change.
    pub(super) fn committed(mut self) {
        self.done = true;
        for (hook, saw) in self.hooks.iter().zip(&self.saw) {
            if *saw {
                hook.committed();
            }
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if !self.done {
            for (hook, saw) in self.hooks.iter().zip(&self.saw) {
                if *saw {
                    hook.aborted();
                }
            }
        }
    }
}

impl Store {
    /// Adds a hook; it sees every commit from now on.
    pub fn add_hook(&self, hook: Arc<dyn ApplyHook>) {
        self.hooks.write().expect("hook list lock").push(hook);
    }

    pub(super) fn observe(&self) -> Observed {
        let hooks = self.hooks.read().expect("hook list lock").clone();
        let saw = vec![false; hooks.len()];
        Observed { hooks, before: BTreeMap::new(), saw, blob_refs: BTreeMap::new(), done: false }
    }
}
