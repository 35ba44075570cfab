//! Regions: what may flow from one node to another in a session.
//!
//! For a session that syncs `filter`, changes may flow from a sender to a
//! receiver when they lie inside the filter, inside what the receiver may
//! read, and inside what the sender may hold (its read or write filter); and
//! when neither side's scope gives their record type the mode `none`, nor
//! the receiver's the mode `wo` (write-only: it sends, never receives). Both
//! sides compute the same region from the same two scopes, so their digests
//! of it are comparable.

use std::collections::BTreeSet;

use partitions::{Filter, Partition, RecordType, Scope, TypeMode};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub filter: Filter,
    /// Record types that may not flow at all.
    pub excluded_types: BTreeSet<RecordType>,
    /// When set, only these record types flow (and the org's own `ferry.*`
    /// types, which carry its rules).
    pub only_types: Option<BTreeSet<RecordType>>,
}

/// A session's per-peer type rules (`ferry sync --types/--skip-types`,
/// `types`/`skip_types` on a `[[peers]]` entry): they narrow what a session
/// moves and never widen a scope. The org's own types (`ferry.profile`,
/// `ferry.revocation`, …) are never narrowed away: a node that skipped them
/// would apply stale policies and trust revoked certificates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeRules {
    /// Only these types (none: every type).
    pub only: Option<BTreeSet<RecordType>>,
    /// Never these types.
    pub skip: BTreeSet<RecordType>,
}

impl TypeRules {
    pub fn is_empty(&self) -> bool {
        self.only.is_none() && self.skip.is_empty()
    }
}

/// Whether a type is one of the org's own (`ferry.` prefix).
pub fn is_system_type(record_type: &RecordType) -> bool {
    record_type.as_str().starts_with("ferry.")
}

impl Region {
    pub fn between(filter: &Filter, sender: &Scope, receiver: &Scope) -> Region {
        let holdable = sender.read.union(&sender.write);
        let filter = filter.intersection(&receiver.read).intersection(&holdable);
        // A type the sender may not hold, or the receiver may not read (`none`
        // on either side; `wo` on the receiver's), does not flow this way.
        let excluded_types = sender
            .types
            .iter()
            .filter(|(_, mode)| **mode == TypeMode::None)
            .chain(receiver.types.iter().filter(|(_, mode)| !mode.may_read()))
            .map(|(t, _)| t.clone())
            .collect();
        Region { filter, excluded_types, only_types: None }
    }

    /// Everything of a filter, no types excluded.
    pub fn of(filter: Filter) -> Region {
        Region { filter, excluded_types: BTreeSet::new(), only_types: None }
    }

    /// This region narrowed by a session's type rules.
    pub fn narrowed(mut self, rules: &TypeRules) -> Region {
        self.excluded_types.extend(rules.skip.iter().filter(|t| !is_system_type(t)).cloned());
        self.only_types = rules.only.clone();
        self
    }

    /// Whether changes of `record_type` may flow (anywhere in the filter).
    pub fn admits(&self, record_type: &RecordType) -> bool {
        !self.excluded_types.contains(record_type)
            && self.only_types.as_ref().is_none_or(|only| only.contains(record_type) || is_system_type(record_type))
    }

    pub fn contains(&self, partition: &Partition, record_type: &RecordType) -> bool {
        self.filter.contains(partition) && self.admits(record_type)
    }

    pub fn is_empty(&self) -> bool {
        self.filter.is_empty()
    }
}
