//! Blobs as the `ferry blob` commands see them: the home's blob store
//! (`crate::blobs`) next to the store's index of which records reference
//! which blob.

use std::time::Duration;

use serde::Serialize;

use crate::blobs::BlobState;

use super::*;

/// One line of `ferry blob list`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BlobEntry {
    pub hash: String,
    /// The size its records name (or, unreferenced, the bytes held).
    pub size: u64,
    /// complete, partial or missing.
    pub state: &'static str,
    /// Bytes held: the size when complete, the verified part when partial.
    pub held: u64,
    /// Records referencing it.
    pub referenced_by: u64,
}

/// What `ferry blob gc` removed.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct GcReport {
    pub removed: u64,
    pub bytes_freed: u64,
    /// Blobs kept because a record references them.
    pub kept: u64,
}

impl Node {
    pub fn blob_list(&self) -> anyhow::Result<Vec<BlobEntry>> {
        let mut index = self.store.blob_index()?;
        let mut out = Vec::new();
        for (hash, state) in self.blobs.held()? {
            let referenced = index.remove(&hash);
            let held = match state {
                BlobState::Complete { size } => size,
                BlobState::Partial { bytes } => bytes,
                BlobState::Missing => 0,
            };
            out.push(BlobEntry {
                hash: hash.to_hex(),
                size: referenced.map_or(held, |r| r.size),
                state: state.name(),
                held,
                referenced_by: referenced.map_or(0, |r| r.records),
            });
        }
        for (hash, referenced) in index {
            out.push(BlobEntry {
                hash: hash.to_hex(),
                size: referenced.size,
                state: BlobState::Missing.name(),
                held: 0,
                referenced_by: referenced.records,
            });
        }
        out.sort_by(|a, b| a.hash.cmp(&b.hash));
        Ok(out)
    }

    /// Removes the blobs (complete or partial) no record references, last
    /// written more than `grace` ago and not being received. A sync runs
    /// it with a grace period, so a file attached a moment ago, whose put
    /// has not committed yet, stays.
    pub fn blob_gc(&self, grace: Duration) -> anyhow::Result<GcReport> {
        let index = self.store.blob_index()?;
        let mut report = GcReport::default();
        for (hash, state) in self.blobs.held()? {
            if index.contains_key(&hash) {
                report.kept += 1;
                continue;
            }
            if self.blobs.is_receiving(&hash) || self.blobs.age(&hash).is_none_or(|age| age < grace) {
                continue;
            }
            self.blobs.remove(&hash)?;
            report.removed += 1;
            report.bytes_freed += match state {
                BlobState::Complete { size } => size,
                BlobState::Partial { bytes } => bytes,
                BlobState::Missing => 0,
            };
        }
        Ok(report)
    }
}
