//! The store: records, the change index, frontiers (heads), credentials, the
//! ledger and the node's instance, over a `Backend`.
//!
//! Invariants:
//! - every batch of writes is atomic and durable before any method returns
//!   success (one `Backend::commit` per call);
//! - a frontier head (partition, type, instance) → counter is advanced only
//!   in the same commit as the changes it covers: the store never claims a
//!   change it cannot serve, except those an eviction removed
//!   (`store/evict.rs`, at or below the triple's eviction mark);
//! - the change index holds exactly the retained changes of every record;
//! - counters of the current instance are assigned under the write lock and
//!   persisted in the commit that uses them, and an instance is abandoned
//!   whenever the store may have lost or duplicated history (the instance
//!   rule, docs/storage.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use partitions::{OrgId, Partition, RecordType};

use crate::backend::{Backend, BackendError, BackendKind, FailureKind, WriteOp, prefix_end};
use crate::change::RecordKey;
use crate::hlc::Clock;
use crate::ids::{Counter, InstanceId};
use crate::keys;
use crate::merge::{RecordState, View};
use crate::policy::Profile;

mod apply;
mod blobs;
mod check;
mod evict;
mod feed;
mod frontier;
mod hook;
mod meta;
mod open;
mod pending;
mod purge;
mod read;
mod write;

pub use blobs::Referenced;
pub use check::{CheckReport, Damage};
pub use feed::{EVICT_ORIGIN, FeedEntry, FeedError, FeedPage, LOCAL_ORIGIN, PURGE_ORIGIN};
pub use frontier::{ScanEnd, digest_of};
use hook::Observed;
pub use hook::{ApplyHook, Refusal};
use open::{count_records, write_epoch_file};
use pending::{IndexEntry, Pending, counter_of, parse_index_value};
pub use purge::{Held, Purged};
pub use read::profile_key;
pub use write::{
    LocalAuthor, LocalOp, LocalWrite, SerialSigner, Signer, WriteRejection, Written, local_write_kind, seal_run,
};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not a `#[source]`: the text already says all of it, once.
    #[error("{}", describe_backend_error(.0))]
    Backend(BackendError),
    #[error("the store is damaged: {0}; run `ferry check --repair` (peers send what it drops again)")]
    Corrupt(String),
    #[error("could not write the epoch file: {}", crate::backend::io_message(.0))]
    Epoch(std::io::Error),
    #[error(
        "this home's store was created with {found}, but the configuration says {configured}: set store = \"{found}\" in ferry.toml (a store's backend is fixed when it is created)"
    )]
    WrongBackend { found: &'static str, configured: &'static str },
    /// An `ApplyHook` refused the commit: nothing of it was stored.
    #[error("an application hook refused the change, and nothing of it was stored: {0}")]
    Refused(String),
}

impl From<BackendError> for StoreError {
    fn from(e: BackendError) -> StoreError {
        StoreError::Backend(e)
    }
}

impl StoreError {
    /// Whether the failure is a full disk (the same call may succeed once
    /// space is freed).
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::Backend(e) => e.is_no_space(),
            StoreError::Epoch(e) => crate::backend::io_kind(e) == FailureKind::NoSpace,
            _ => false,
        }
    }

    pub fn is_damage(&self) -> bool {
        matches!(self, StoreError::Backend(e) if e.kind.is_damage()) || matches!(self, StoreError::Corrupt(_))
    }

    pub fn is_in_use(&self) -> bool {
        matches!(self, StoreError::Backend(e) if e.kind == FailureKind::InUse)
    }
}

fn describe_backend_error(e: &BackendError) -> String {
    match &e.kind {
        FailureKind::Damaged { key } => {
            let what = key.as_deref().map_or_else(|| "a page of the store file".to_owned(), keys::describe);
            format!("the store is damaged at {what} ({e}); run `ferry check --repair` (peers send what it drops again)")
        }
        _ => e.to_string(),
    }
}

/// Why a received batch cannot be applied at all.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "group {partition}/{record_type}/{instance} starts after counter {after}, but this node holds only up to {head}"
    )]
    Gap { partition: Partition, record_type: RecordType, instance: InstanceId, head: Counter, after: Counter },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What opening a store found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub instance: InstanceId,
    /// Why the store continues under a fresh instance, if it does.
    pub fresh_instance: Option<String>,
}

/// A record as applications see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView {
    pub key: RecordKey,
    pub view: View,
}

struct Local {
    instance: InstanceId,
    counter: Counter,
    clock: Clock,
}

pub struct Store {
    backend: Box<dyn Backend>,
    kind: BackendKind,
    dir: PathBuf,
    local: Mutex<Local>,
    profiles: Mutex<BTreeMap<OrgId, Profile>>,
    /// Ledger entries held, counted on first use.
    ledger_len: Mutex<Option<usize>>,
    /// Set while the store could not be marked open (the disk was full when
    /// it opened): reads work, and the next commit first marks it open.
    /// Holds what to write then.
    pending_open: Mutex<Option<PendingOpen>>,
    /// Triples whose head `ferry check --repair` lowered, with the head they
    /// had (docs/storage.md, "Repair"); loaded at open.
    floors: Mutex<BTreeMap<Triple, Counter>>,
    /// Whether the store keeps record counts per org (`keys::count`): a
    /// damaged page can end a scan early without an error, and the counts
    /// tell a listing that came up short.
    counted: bool,
    /// Told of every record a commit changes (`ApplyHook`).
    hooks: std::sync::RwLock<Vec<std::sync::Arc<dyn ApplyHook>>>,
    /// What the change feed holds, read on first use (`store/feed.rs`).
    feed: Mutex<Option<feed::FeedState>>,
    /// How many entries the feed keeps (`FEED_ENTRIES_MAX` unless set).
    feed_max: std::sync::atomic::AtomicU64,
    /// Told the newest cursor after each commit that adds to the feed
    /// (`Store::on_feed`).
    feed_listeners: std::sync::RwLock<Vec<feed::FeedListener>>,
}

const EPOCH_FILE: &str = "epoch";

/// What `open` could not commit on a full disk: the marks of an open store
/// (and, after an unclean close, the fresh instance it continues under).
/// The next commit writes them first; until then the store only reads.
struct PendingOpen {
    epoch: u64,
    writes: Vec<WriteOp>,
}

impl Store {
    /// Adds a changed record to `pending`: its state and conflict marker;
    /// tells the hooks and forgets a cached profile it replaces. Returns
    /// why a profile it stores does not take effect whole (for the ledger).
    fn persist(
        &self,
        pending: &mut Pending,
        observed: &mut Observed,
        key: &RecordKey,
        state: &RecordState,
        existed: bool,
    ) -> Result<Vec<String>, StoreError> {
        let refs = observed.persisted(key, state).map_err(|r| StoreError::Refused(r.0))?;
        for r in refs.removed {
            pending.delete(keys::blob_ref(&r.hash, &key.partition, &key.record_type, &key.id));
        }
        for r in refs.added {
            pending
                .put(keys::blob_ref(&r.hash, &key.partition, &key.record_type, &key.id), r.size.to_be_bytes().to_vec());
        }
        pending.record(key, state, existed);
        pending.feed.push(key.clone());
        if key.record_type.as_str() == crate::policy::PROFILE_TYPE {
            self.profiles.lock().expect("profile cache lock").remove(&key.partition.org());
            return Ok(self.readable_profile(pending, key, state));
        }
        Ok(Vec::new())
    }

    /// A profile record as the commit will store it: the texts this node
    /// can read go to `keys::readable_profile`, the org's policies from the
    /// commit on; a text it cannot read keeps the last readable one. The
    /// reasons are for the ledger.
    fn readable_profile(&self, pending: &mut Pending, key: &RecordKey, state: &RecordState) -> Vec<String> {
        let org = key.partition.org();
        let last = self.readable_texts(org).ok().flatten().unwrap_or_default();
        let view = state.view(&crate::policy::TypePolicy::default());
        let fields = if view.exists { view.fields } else { BTreeMap::new() };
        let (texts, unread) = crate::policy::readable_texts(&fields, &last);
        pending.put(keys::readable_profile(org), crate::stored::encode_value(&texts));
        unread
    }

    /// The profile texts this node last could read for `org`, if it ever
    /// read one (stores from before strict profiles have none).
    fn readable_texts(&self, org: OrgId) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        match self.backend.get(&keys::readable_profile(org))? {
            None => Ok(None),
            Some(bytes) => crate::stored::decode_value(&bytes).map(Some).map_err(|_| corrupt("a readable profile")),
        }
    }

    /// Commits gathered writes, then forgets the floors they removed.
    fn commit_pending(&self, mut pending: Pending) -> Result<(), StoreError> {
        let cleared = std::mem::take(&mut pending.floors_cleared);
        for (org, delta) in std::mem::take(&mut pending.new_records) {
            let key = keys::count(org);
            let held = self.backend.get(&key)?.map(|b| be_u64(&b)).transpose()?.unwrap_or(0);
            pending.put(key, held.saturating_add_signed(delta).to_be_bytes().to_vec());
        }
        let feed = self.feed_entries(&mut pending)?;
        self.commit(&pending.into_writes())?;
        if let Some((mut guard, state)) = feed {
            *guard = Some(state);
            // Under the feed's lock: listeners hear of commits in order.
            self.feed_committed(state);
            drop(guard);
        }
        let mut floors = self.floors.lock().expect("floors lock");
        for triple in cleared {
            floors.remove(&triple);
        }
        Ok(())
    }

    /// Every commit but the opening one: first marks the store open if a
    /// full disk kept `open` from doing so.
    fn commit(&self, writes: &[WriteOp]) -> Result<(), StoreError> {
        let mut pending_open = self.pending_open.lock().expect("open-mark lock");
        if let Some(PendingOpen { epoch, writes }) = pending_open.as_ref() {
            self.backend.commit(writes)?;
            if let Err(e) = write_epoch_file(&self.dir, *epoch) {
                let _ = self.backend.commit(&[(keys::meta("state"), Some(b"closed".to_vec()))]);
                return Err(StoreError::Epoch(e));
            }
            *pending_open = None;
        }
        drop(pending_open);
        self.backend.commit(writes)?;
        Ok(())
    }

    /// Marks the store cleanly closed and makes everything durable.
    pub fn close(self) -> Result<(), StoreError> {
        // A store never marked open (full disk) is still marked closed. On
        // a full disk the mark may not fit: the store then stays marked
        // open, and the next open continues under a fresh instance, which
        // is always safe; what was read is not failed for it.
        if self.pending_open.lock().expect("open-mark lock").is_none() {
            match self.backend.commit(&[(keys::meta("state"), Some(b"closed".to_vec()))]) {
                Err(e) if e.is_no_space() => {}
                other => other?,
            }
        }
        self.backend.close()?;
        Ok(())
    }

    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn instance(&self) -> InstanceId {
        self.lock().instance
    }

    /// The current instance's last counter.
    pub fn counter(&self) -> Counter {
        self.lock().counter
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().expect("the store lock is never poisoned: writers do not panic while holding it")
    }

    /// Every instance this store has written as, oldest first, with the
    /// reason each began.
    pub fn instances(&self) -> Result<Vec<(InstanceId, u64, String)>, StoreError> {
        let prefix = keys::meta("instances/");
        let mut out = Vec::new();
        self.scan_prefix(&prefix, &mut |k, v| {
            if let (Ok(id), true) = (k[prefix.len()..].try_into(), v.len() >= 8) {
                let at = u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]));
                out.push((InstanceId(id), at, String::from_utf8_lossy(&v[8..]).into_owned()));
            }
            true
        })?;
        out.sort_by_key(|(_, at, _)| *at);
        Ok(out)
    }

    fn scan_prefix(&self, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StoreError> {
        let end = prefix_end(prefix);
        self.backend.scan(prefix, end.as_deref(), visit)?;
        Ok(())
    }
    /// Low-level access for tools and tests that check invariants.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }
}

/// A frontier entry's key: partition, record type, instance.
pub type Triple = (Partition, RecordType, InstanceId);
fn be_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(bytes.try_into().map_err(|_| corrupt("a stored number"))?))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}
