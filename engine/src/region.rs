//! Regions: what may flow from one node to another in a session.
//!
//! For a session that syncs `filter`, changes may flow from a sender to a
//! receiver when they lie inside the filter, inside what the receiver may
//! read, and inside what the sender may hold (its read or write filter); and
//! when neither side's scope gives their record type the mode `none`. Both
//! sides compute the same region from the same two scopes, so their digests
//! of it are comparable.

use std::collections::BTreeSet;

use partitions::{Filter, Partition, RecordType, Scope, TypeMode};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub filter: Filter,
    /// Record types that may not flow at all.
    pub excluded_types: BTreeSet<RecordType>,
}

impl Region {
    pub fn between(filter: &Filter, sender: &Scope, receiver: &Scope) -> Region {
        let holdable = sender.read.union(&sender.write);
        let filter = filter.intersection(&receiver.read).intersection(&holdable);
        let excluded_types = sender
            .types
            .iter()
            .chain(&receiver.types)
            .filter(|(_, mode)| **mode == TypeMode::None)
            .map(|(t, _)| t.clone())
            .collect();
        Region { filter, excluded_types }
    }

    /// Everything of a filter, no types excluded.
    pub fn of(filter: Filter) -> Region {
        Region { filter, excluded_types: BTreeSet::new() }
    }

    pub fn contains(&self, partition: &Partition, record_type: &RecordType) -> bool {
        self.filter.contains(partition) && !self.excluded_types.contains(record_type)
    }

    pub fn is_empty(&self) -> bool {
        self.filter.is_empty()
    }
}
