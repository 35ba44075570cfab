//! The change feed (SPEC §6.3, `GET /v1/changes`): every record a commit
//! changes gets the next cursor, written in that same commit, so the feed
//! never names a change the store does not hold and never misses one that
//! it does. Local writes, resolves, received batches and bundle imports all
//! persist records through `Store::persist`, which lists the record in the
//! commit's `Pending`; `Store::commit_pending` numbers them and writes the
//! entries (`keys::feed`) and the last cursor (`meta feed-last`) with the
//! data. Cursors start at 1, rise by one per entry, and are handed out
//! under the feed's lock held through the commit, so commits land in cursor
//! order and a reader never sees a cursor that a later commit fills in
//! below one it has read. A failed commit hands out nothing.
//!
//! The feed keeps the newest `FEED_ENTRIES_MAX` entries (or what
//! `Store::set_feed_entries_max` says); the commit that
//! adds more removes the oldest. A reader whose cursor is older than what is
//! kept gets `FeedError::Expired`, which tells it to read the records again;
//! a cursor ahead of the feed (from another home, or a home made anew) gets
//! `FeedError::Ahead`. An entry names the record and where the change came
//! from; the reader reads the record as it is now (what `GET /v1/records`
//! would show), as CouchDB's `_changes` does.

use partitions::{Partition, RecordType};
use serde::{Deserialize, Serialize};

use crate::change::RecordKey;
use crate::ids::RecordId;
use crate::keys;
use crate::stored;

use super::{Pending, Store, StoreError, be_u64, corrupt};

/// Where a change in the feed came from when this node wrote it.
pub const LOCAL_ORIGIN: &str = "local";
/// The origin of a record removed because this node may no longer read it
/// (`Store::purge_outside`).
pub const PURGE_ORIGIN: &str = "purge";
/// The origin of a record evicted after its acknowledgement
/// (`Store::evict_acknowledged`): gone here, kept by the acknowledging side.
pub const EVICT_ORIGIN: &str = "evict";

/// One entry of the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEntry {
    pub cursor: u64,
    pub key: RecordKey,
    /// `local`, or who sent the change (the node passes a peer id, or
    /// `bundle` for an imported bundle).
    pub origin: String,
}

/// A page of the feed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedPage {
    pub entries: Vec<FeedEntry>,
    /// The cursor to read on from: the last entry looked at, taken or
    /// filtered out (at least the cursor asked for).
    pub next: u64,
    /// The newest cursor the feed holds.
    pub last: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(
        "cursor {since} is older than the change feed keeps (its oldest entry is {oldest}): read the records again (GET /v1/records), then follow the feed from cursor {last}"
    )]
    Expired { since: u64, oldest: u64, last: u64 },
    #[error(
        "cursor {since} is ahead of this node's change feed, which ends at {last}: the cursor is from another home or from before this home was made anew; read the records again, then follow the feed from cursor {last}"
    )]
    Ahead { since: u64, last: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Told the feed's newest cursor after a commit that added to it.
pub(super) type FeedListener = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// The feed's lock, held through a commit that adds to it, and what the
/// feed holds once that commit is durable.
pub(super) type FeedCommit<'a> = (std::sync::MutexGuard<'a, Option<FeedState>>, FeedState);

/// What the feed holds: cursors `first ..= last` (`first == last + 1`
/// when it holds none).
#[derive(Clone, Copy, Debug)]
pub(super) struct FeedState {
    first: u64,
    last: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredEntry {
    partition: Partition,
    record_type: RecordType,
    id: RecordId,
    origin: String,
}

impl Store {
    fn feed_state(&self, cached: &mut Option<FeedState>) -> Result<FeedState, StoreError> {
        if let Some(state) = *cached {
            return Ok(state);
        }
        let last = self.backend.get(&keys::meta(FEED_LAST))?.map(|b| be_u64(&b)).transpose()?.unwrap_or(0);
        let mut first = last + 1;
        self.scan_prefix(&[keys::FEED], &mut |k, _| {
            if let Some(cursor) = keys::feed_cursor(k) {
                first = cursor;
            }
            false
        })?;
        let state = FeedState { first, last };
        *cached = Some(state);
        Ok(state)
    }

    /// Numbers the records `pending` changes and adds their entries (and
    /// the removal of what falls out of the feed). Returns the feed's lock,
    /// to be held through the commit, and the state to keep after it.
    pub(super) fn feed_entries(&self, pending: &mut Pending) -> Result<Option<FeedCommit<'_>>, StoreError> {
        if pending.feed.is_empty() {
            return Ok(None);
        }
        let mut guard = self.feed.lock().expect("feed lock");
        let state = self.feed_state(&mut guard)?;
        let origin = pending.origin.take().unwrap_or_else(|| LOCAL_ORIGIN.to_owned());
        let mut cursor = state.last;
        for key in std::mem::take(&mut pending.feed) {
            cursor += 1;
            let entry = StoredEntry {
                partition: key.partition,
                record_type: key.record_type,
                id: key.id,
                origin: origin.clone(),
            };
            pending.put(keys::feed(cursor), stored::encode_value(&entry));
        }
        pending.put(keys::meta(FEED_LAST), cursor.to_be_bytes().to_vec());
        let kept = self.feed_max.load(std::sync::atomic::Ordering::Relaxed);
        let first = state.first.max((cursor + 1).saturating_sub(kept));
        for old in state.first..first {
            pending.delete(keys::feed(old));
        }
        Ok(Some((guard, FeedState { first, last: cursor })))
    }

    /// Keeps at most `entries` (at least 1) from the next commit on
    /// (`feed_entries` in ferry.toml; `FEED_ENTRIES_MAX` by default).
    pub fn set_feed_entries_max(&self, entries: u64) {
        self.feed_max.store(entries.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Calls `listener` with the feed's newest cursor after every commit
    /// that adds to it, once that commit is durable (a long-polling reader
    /// waits on it), in commit order. It runs on the committing thread
    /// under the feed's lock: it must be quick and must not read the feed.
    pub fn on_feed(&self, listener: FeedListener) {
        self.feed_listeners.write().expect("feed listeners lock").push(listener);
    }

    pub(super) fn feed_committed(&self, state: FeedState) {
        for listener in self.feed_listeners.read().expect("feed listeners lock").iter() {
            listener(state.last);
        }
    }

    /// The newest cursor of the feed (0 before the first entry).
    pub fn feed_last(&self) -> Result<u64, StoreError> {
        let mut guard = self.feed.lock().expect("feed lock");
        Ok(self.feed_state(&mut guard)?.last)
    }

    /// Up to `limit` entries after cursor `since` that `wanted` keeps, in
    /// cursor order. Looks at no more than `limit * 16` entries per call so
    /// a narrow filter over a long feed still answers promptly; `next` says
    /// where to go on.
    pub fn feed(
        &self,
        since: u64,
        limit: usize,
        wanted: &mut dyn FnMut(&RecordKey) -> bool,
    ) -> Result<FeedPage, FeedError> {
        let state = {
            let mut guard = self.feed.lock().expect("feed lock");
            self.feed_state(&mut guard)?
        };
        if since > state.last {
            return Err(FeedError::Ahead { since, last: state.last });
        }
        if since + 1 < state.first {
            return Err(FeedError::Expired { since, oldest: state.first, last: state.last });
        }
        let mut page = FeedPage { entries: Vec::new(), next: since, last: state.last };
        let budget = limit.saturating_mul(16).max(1);
        let mut looked = 0;
        let mut failed = None;
        let start = keys::feed(since + 1);
        let end = keys::feed(state.last + 1);
        self.backend
            .scan(&start, Some(&end), &mut |k, v| {
                let Some(cursor) = keys::feed_cursor(k) else {
                    failed = Some(corrupt("a change feed key"));
                    return false;
                };
                let entry: StoredEntry = match stored::decode_value(v) {
                    Ok(entry) => entry,
                    Err(e) => {
                        failed = Some(corrupt(&format!("change feed entry {cursor}: {e}")));
                        return false;
                    }
                };
                let key = RecordKey { partition: entry.partition, record_type: entry.record_type, id: entry.id };
                page.next = cursor;
                looked += 1;
                if wanted(&key) {
                    page.entries.push(FeedEntry { cursor, key, origin: entry.origin });
                }
                page.entries.len() < limit && looked < budget
            })
            .map_err(StoreError::from)?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        Ok(page)
    }
}

const FEED_LAST: &str = "feed-last";
