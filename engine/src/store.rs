//! The store: records, the change index, frontiers (heads), credentials, the
//! ledger and the node's instance, over a `Backend`.
//!
//! Invariants:
//! - every batch of writes is atomic and durable before any method returns
//!   success (one `Backend::commit` per call);
//! - a frontier head (partition, type, instance) → counter is advanced only
//!   in the same commit as the changes it covers: the store never claims a
//!   change it cannot serve;
//! - the change index holds exactly the retained changes of every record;
//! - counters of the current instance are assigned under the write lock and
//!   persisted in the commit that uses them, and an instance is abandoned
//!   whenever the store may have lost or duplicated history (the instance
//!   rule, docs/storage.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ed25519_dalek::SigningKey;
use partitions::{OrgId, Partition, RecordType, WriteKind};

use crate::authorize::{Authorizer, Denied, Signed, Verifier};
use crate::backend::{Backend, BackendError, BackendKind, FailureKind, WriteOp, prefix_end};
use crate::change::{Change, ChangeError, Op, RecordKey, is_field_name};
use crate::hlc::Clock;
use crate::ids::{AuthorKey, Counter, Dot, Hlc, InstanceId, RecordId};
use crate::keys;
use crate::ledger::LedgerEntry;
use crate::limits::{FIELDS_MAX, LEDGER_ENTRIES_MAX, RECORD_BYTES_MAX, SUMMARY_REJECTIONS_MAX};
use crate::merge::{MergeError, Outcome, RecordState, View};
use crate::policy::{PROFILE_ID, PROFILE_TYPE, Profile, TypePolicy, system_partition};
use crate::region::Region;
use crate::value::Value;
use crate::wire::{self, Batch, HeadEntry};

mod check;
pub use check::{CheckReport, Damage};

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

/// Signs freshly made changes; drivers with threads sign in parallel.
/// Returns the length of each change's signing bytes (the stored size the
/// change index records).
pub trait Signer: Sync {
    fn sign_all(&self, key: &SigningKey, changes: &mut [Change]) -> Vec<usize>;
}

/// Signs on the calling thread.
pub struct SerialSigner;

impl Signer for SerialSigner {
    fn sign_all(&self, key: &SigningKey, changes: &mut [Change]) -> Vec<usize> {
        changes.iter_mut().map(|change| change.sign(key)).collect()
    }
}

/// What applying a received batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub received: u64,
    pub skipped: u64,
    pub updated: u64,
    pub merged: u64,
    pub conflicts: u64,
    pub rejected: u64,
    pub rejections: Vec<String>,
}

impl Applied {
    fn reject(&mut self, reason: String) {
        self.rejected += 1;
        if self.rejections.len() < SUMMARY_REJECTIONS_MAX {
            self.rejections.push(reason);
        }
    }
}

/// A record as applications see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView {
    pub key: RecordKey,
    pub view: View,
}

/// Where a group scan stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanEnd {
    /// The last counter looked at (changes up to it were emitted).
    pub last: Counter,
    /// Whether the range was exhausted.
    pub complete: bool,
    pub bytes: u64,
    /// Changes in the range that fail `Change::check_form` (made by an older
    /// version): skipped, so they block nothing after them.
    pub unsendable: u64,
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
    /// Holds the epoch to write then.
    pending_open: Mutex<Option<u64>>,
    /// Triples whose head `ferry check --repair` lowered, with the head they
    /// had (docs/storage.md, "Repair"); loaded at open.
    floors: Mutex<BTreeMap<Triple, Counter>>,
    /// Whether the store keeps record counts per org (`keys::count`): a
    /// damaged page can end a scan early without an error, and the counts
    /// tell a listing that came up short.
    counted: bool,
}

const EPOCH_FILE: &str = "epoch";

impl Store {
    /// Opens or creates the store in `dir`. `fresh` is a random instance id
    /// used if the store must start a new instance (engine has no random
    /// generator of its own).
    pub fn open(dir: &Path, kind: BackendKind, fresh: InstanceId, now_ms: u64) -> Result<(Store, Opened), StoreError> {
        if let Some(found) = BackendKind::found_in(dir)
            && found != kind
            && !kind.main_file(dir).exists()
        {
            return Err(StoreError::WrongBackend { found: found.name(), configured: kind.name() });
        }
        let backend = kind.open(dir)?;
        // A damaged setting (a flipped bit in the instance or its counter)
        // is read as missing, and the store continues under a fresh
        // instance: no counter can be trusted, so none is reused.
        let damaged_meta = std::cell::Cell::new(false);
        let get = |name: &str| match backend.get(&keys::meta(name)) {
            Ok(v) => Ok(v),
            Err(e) if e.kind.is_damage() => {
                damaged_meta.set(true);
                Ok(None)
            }
            Err(e) => Err(StoreError::from(e)),
        };
        let number = |name: &str| -> Result<Option<u64>, StoreError> {
            Ok(get(name)?.and_then(|b| match be_u64(&b) {
                Ok(n) => Some(n),
                Err(_) => {
                    damaged_meta.set(true);
                    None
                }
            }))
        };
        let stored_instance = get("instance")?.filter(|b| {
            let ok = b.len() == 16;
            if !ok {
                damaged_meta.set(true);
            }
            ok
        });
        let state = get("state")?;
        let stored_fingerprint = get("fingerprint")?;
        let store_epoch = number("epoch")?.unwrap_or(0);
        let stored_counter = number("counter")?.unwrap_or(0);
        let hlc = number("hlc")?.unwrap_or(0);
        let file_epoch = read_epoch_file(dir);
        let fingerprint = fingerprint(dir, kind);
        let reason = match (&stored_instance, state.as_deref()) {
            _ if damaged_meta.get() => Some("the store's settings were damaged".to_owned()),
            (None, _) => Some("a new store".to_owned()),
            (Some(_), Some(b"open")) => Some("the last run did not close the store cleanly".to_owned()),
            _ if stored_fingerprint.as_deref() != Some(fingerprint.as_slice()) => {
                Some("the store was moved, copied or restored".to_owned())
            }
            _ if file_epoch.is_some_and(|e| e != store_epoch) => {
                Some("the store is older than its directory (restored from a backup?)".to_owned())
            }
            _ => None,
        };
        let (instance, counter) = match (&reason, stored_instance) {
            (None, Some(bytes)) => {
                let instance = InstanceId(bytes.as_slice().try_into().map_err(|_| corrupt("instance id"))?);
                (instance, stored_counter)
            }
            _ => (fresh, 0),
        };
        let epoch = store_epoch.max(file_epoch.unwrap_or(0)) + 1;
        let mut writes: Vec<WriteOp> = vec![
            (keys::meta("instance"), Some(instance.0.to_vec())),
            (keys::meta("counter"), Some(counter.to_be_bytes().to_vec())),
            (keys::meta("state"), Some(b"open".to_vec())),
            (keys::meta("fingerprint"), Some(fingerprint)),
            (keys::meta("epoch"), Some(epoch.to_be_bytes().to_vec())),
        ];
        // Stores written before record counts existed count once here.
        let counted = get("counted")?.is_some();
        let mut counted_now = counted;
        if !counted && let Ok(counts) = count_records(backend.as_ref()) {
            for (org, n) in counts {
                writes.push((keys::count(org), Some(n.to_be_bytes().to_vec())));
            }
            writes.push((keys::meta("counted"), Some(Vec::new())));
            counted_now = true;
        }
        if let Some(reason) = &reason {
            let mut key = keys::meta("instances/");
            key.extend_from_slice(&instance.0);
            let mut value = now_ms.to_be_bytes().to_vec();
            value.extend_from_slice(reason.as_bytes());
            writes.push((key, Some(value)));
        }
        // On a full disk a store that was closed cleanly still opens for
        // reading (a user must be able to list and export to rescue data);
        // it is marked open by its first commit, once space returns.
        let mut pending_open = None;
        match backend.commit(&writes) {
            Ok(()) => {
                if let Err(e) = write_epoch_file(dir, epoch) {
                    // Undo the mark so the next open does not take the
                    // missing epoch for a restore.
                    let undo = [
                        (keys::meta("state"), Some(b"closed".to_vec())),
                        (keys::meta("epoch"), Some(store_epoch.to_be_bytes().to_vec())),
                    ];
                    if crate::backend::io_kind(&e) != FailureKind::NoSpace || backend.commit(&undo).is_err() {
                        return Err(StoreError::Epoch(e));
                    }
                    pending_open = Some(epoch);
                }
            }
            Err(e) if e.is_no_space() && reason.is_none() => pending_open = Some(epoch),
            Err(e) => return Err(e.into()),
        }
        // A damaged floor is reported by `ferry check`; until it is
        // repaired the others still apply.
        let floors = load_floors(backend.as_ref()).unwrap_or_default();
        let store = Store {
            backend,
            kind,
            dir: dir.to_path_buf(),
            local: Mutex::new(Local { instance, counter, clock: Clock::starting_at(Hlc(hlc)) }),
            profiles: Mutex::new(BTreeMap::new()),
            ledger_len: Mutex::new(None),
            counted: counted_now && pending_open.is_none(),
            pending_open: Mutex::new(pending_open),
            floors: Mutex::new(floors),
        };
        Ok((store, Opened { instance, fresh_instance: reason }))
    }

    /// Commits gathered writes, then forgets the floors they removed.
    fn commit_pending(&self, mut pending: Pending) -> Result<(), StoreError> {
        let cleared = std::mem::take(&mut pending.floors_cleared);
        for (org, delta) in std::mem::take(&mut pending.new_records) {
            let key = keys::count(org);
            let held = self.backend.get(&key)?.map(|b| be_u64(&b)).transpose()?.unwrap_or(0);
            pending.put(key, held.saturating_add_signed(delta).to_be_bytes().to_vec());
        }
        self.commit(&pending.into_writes())?;
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
        if let Some(epoch) = *pending_open {
            self.backend.commit(&[
                (keys::meta("state"), Some(b"open".to_vec())),
                (keys::meta("epoch"), Some(epoch.to_be_bytes().to_vec())),
            ])?;
            if let Err(e) = write_epoch_file(&self.dir, epoch) {
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
        // A store never marked open (full disk) is still marked closed.
        if self.pending_open.lock().expect("open-mark lock").is_none() {
            self.backend.commit(&[(keys::meta("state"), Some(b"closed".to_vec()))])?;
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

    // -----------------------------------------------------------------------
    // Records

    /// The stored state of a record.
    pub fn record(&self, key: &RecordKey) -> Result<Option<RecordState>, StoreError> {
        let Some(bytes) = self.backend.get(&keys::record(&key.partition, &key.record_type, &key.id))? else {
            return Ok(None);
        };
        wire::decode_record(key, &bytes).map(Some).map_err(|e| corrupt(&format!("record {key:?}: {e}")))
    }

    /// The stored states of several records, read together.
    pub fn records(&self, keys: &[&RecordKey]) -> Result<Vec<Option<RecordState>>, StoreError> {
        let raw: Vec<Vec<u8>> = keys.iter().map(|k| keys::record(&k.partition, &k.record_type, &k.id)).collect();
        let values = self.backend.get_many(&raw)?;
        keys.iter()
            .zip(values)
            .map(|(key, value)| match value {
                None => Ok(None),
                Some(bytes) => {
                    wire::decode_record(key, &bytes).map(Some).map_err(|e| corrupt(&format!("record {key:?}: {e}")))
                }
            })
            .collect()
    }

    /// The record as applications see it, under its org's policies.
    pub fn view(&self, key: &RecordKey) -> Result<Option<View>, StoreError> {
        let Some(state) = self.record(key)? else {
            return Ok(None);
        };
        Ok(Some(state.view(&self.policy(&key.partition, &key.record_type)?)))
    }

    /// The records of a type with this id, in any partition.
    pub fn find(&self, record_type: &RecordType, id: &RecordId) -> Result<Vec<RecordKey>, StoreError> {
        let prefix = keys::by_id_prefix(record_type, id);
        let mut out = Vec::new();
        let mut bad = false;
        self.scan_prefix(&prefix, &mut |k, _| {
            match Partition::from_key(&k[prefix.len()..]) {
                Ok(partition) => out.push(RecordKey { partition, record_type: record_type.clone(), id: id.clone() }),
                Err(_) => bad = true,
            }
            true
        })?;
        if bad {
            return Err(corrupt("id index entry"));
        }
        Ok(out)
    }

    /// Visits records under `partition` (everything when `None`), of
    /// `record_type` only when given, in key order, until `visit` returns false.
    pub fn list(
        &self,
        partition: Option<&Partition>,
        record_type: Option<&RecordType>,
        visit: &mut dyn FnMut(RecordView) -> bool,
    ) -> Result<(), StoreError> {
        let prefix = match partition {
            Some(p) => keys::under(keys::RECORDS, p),
            None => vec![keys::RECORDS],
        };
        let mut failure = None;
        let mut policies: BTreeMap<(OrgId, RecordType), TypePolicy> = BTreeMap::new();
        let (mut seen, mut stopped) = (0u64, false);
        self.scan_prefix(&prefix, &mut |k, v| {
            seen += 1;
            let Some((partition, t, id)) = keys::split_typed(&k[1..]) else {
                failure = Some(corrupt("record key"));
                return false;
            };
            if record_type.is_some_and(|want| *want != t) {
                return true;
            }
            let Ok(id) = std::str::from_utf8(id).map_err(|_| ()).and_then(|s| RecordId::parse(s).map_err(|_| ()))
            else {
                failure = Some(corrupt("record id"));
                return false;
            };
            let key = RecordKey { partition, record_type: t, id };
            let state = match wire::decode_record(&key, v) {
                Ok(state) => state,
                Err(e) => {
                    failure = Some(corrupt(&format!("record {key:?}: {e}")));
                    return false;
                }
            };
            let policy = match policies.get(&(key.partition.org(), key.record_type.clone())) {
                Some(p) => p.clone(),
                None => match self.policy(&key.partition, &key.record_type) {
                    Ok(p) => {
                        policies.insert((key.partition.org(), key.record_type.clone()), p.clone());
                        p
                    }
                    Err(e) => {
                        failure = Some(e);
                        return false;
                    }
                },
            };
            let view = state.view(&policy);
            let go = visit(RecordView { key, view });
            stopped = !go;
            go
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        // A whole org or the whole store was listed: it must show every
        // record it holds.
        if self.counted && !stopped && partition.is_none_or(|p| p.depth() == 0) {
            let expected = match partition {
                Some(p) => self.record_count(Some(p.org()))?,
                None => self.record_count(None)?,
            };
            if seen != expected {
                return Err(corrupt(&format!(
                    "only {seen} of the {expected} records it holds could be read (a page of the store file is damaged)"
                )));
            }
        }
        Ok(())
    }

    /// Records held in an org (or in all of them).
    pub fn record_count(&self, org: Option<OrgId>) -> Result<u64, StoreError> {
        if let Some(org) = org {
            return Ok(self.backend.get(&keys::count(org))?.map(|b| be_u64(&b)).transpose()?.unwrap_or(0));
        }
        let prefix = keys::meta(keys::COUNT_PREFIX);
        let mut total = 0u64;
        self.scan_prefix(&prefix, &mut |_, v| {
            total += v.try_into().map(u64::from_be_bytes).unwrap_or(0);
            true
        })?;
        Ok(total)
    }

    /// Visits every record that holds a conflict.
    pub fn conflicts(&self, visit: &mut dyn FnMut(RecordView) -> bool) -> Result<(), StoreError> {
        let mut keys_found = Vec::new();
        self.scan_prefix(&[keys::CONFLICTS], &mut |k, _| {
            keys_found.push(k[1..].to_vec());
            true
        })?;
        for raw in keys_found {
            let Some((partition, record_type, id)) = keys::split_typed(&raw) else {
                return Err(corrupt("conflict key"));
            };
            let id = std::str::from_utf8(id)
                .ok()
                .and_then(|s| RecordId::parse(s).ok())
                .ok_or_else(|| corrupt("conflict key id"))?;
            let key = RecordKey { partition, record_type, id };
            if let Some(view) = self.view(&key)?
                && !visit(RecordView { key, view })
            {
                break;
            }
        }
        Ok(())
    }

    /// The merge policy of a record type in an org, from its profile record.
    pub fn policy(&self, partition: &Partition, record_type: &RecordType) -> Result<TypePolicy, StoreError> {
        let org = partition.org();
        if let Some(profile) = self.profiles.lock().expect("profile cache lock").get(&org) {
            return Ok(profile.policy(record_type));
        }
        let key = profile_key(org);
        let profile = match self.record(&key)? {
            Some(state) => {
                let view = state.view(&TypePolicy::default());
                if view.exists { Profile::from_fields(&view.fields) } else { Profile::default() }
            }
            None => Profile::default(),
        };
        let policy = profile.policy(record_type);
        self.profiles.lock().expect("profile cache lock").insert(org, profile);
        Ok(policy)
    }

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
        let mut unique: Vec<&RecordKey> = writes.iter().map(|w| &w.record).collect();
        unique.sort();
        unique.dedup();
        let mut prefetched: BTreeMap<RecordKey, Option<RecordState>> =
            unique.iter().map(|k| (*k).clone()).zip(self.records(&unique)?).collect();
        for (i, write) in writes.iter().enumerate() {
            let key = &write.record;
            if !states.contains_key(key) {
                let state = prefetched.remove(key).flatten();
                let existed = state.is_some();
                let state = state.unwrap_or_default();
                loaded.insert(key.clone(), state.changes.iter().map(Change::dot).collect());
                states.insert(key.clone(), (state, existed));
            }
            let (state, _) = states.get_mut(key).expect("inserted above");
            let held = !state.changes.is_empty();
            let exists_now = held && state.exists(&TypePolicy::default());
            if exists_now
                && let LocalOp::Put { set, unset } = &write.op
                && let Some(latest) = state.changes.iter().max_by_key(|c| c.hlc)
            {
                let view = state.view(&self.policy(&key.partition, &key.record_type)?);
                let same = view.conflicts.is_empty()
                    && set.iter().all(|(k, v)| view.fields.get(k) == Some(v))
                    && unset.iter().all(|k| !view.fields.contains_key(k));
                if same {
                    results[i] = Some(Ok(Written { dot: latest.dot(), view, unchanged: true }));
                    continue;
                }
            }
            let op = match local_op(&write.op, held, exists_now) {
                Ok(op) => op,
                Err(rejection) => {
                    results[i] = Some(Err(rejection));
                    continue;
                }
            };
            let mut change = Change {
                record: key.clone(),
                author: local.instance,
                author_key,
                counter: counter + 1,
                hlc: Hlc(0),
                authority: author.authority.clone(),
                seen: state.vv.clone(),
                op,
                signature: [0; 64],
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
            change.hlc = trial.tick(now_ms);
            // Encoding only when the cheap bound comes near the limit.
            let bound = change.signing_len_bound();
            let len = if bound <= RECORD_BYTES_MAX { bound } else { change.signing_bytes().len() };
            if let Err(e) = change.check_form(len) {
                results[i] = Some(Err(WriteRejection::Form(e)));
                continue;
            }
            counter += 1;
            clock = trial;
            // Merge before signing (the signature plays no part in merging);
            // the signatures are filled in below.
            state.apply(change.clone()).map_err(|e| corrupt(&format!("own change does not merge: {e}")))?;
            results[i] = Some(Ok(Written { dot: change.dot(), view: View::default(), unchanged: false }));
            changes.push(change);
        }
        let lengths = signer.sign_all(&author.key, &mut changes);

        let mut pending = Pending::default();
        let mut retained: BTreeSet<Dot> = BTreeSet::new();
        let signatures: BTreeMap<Dot, [u8; 64]> = changes.iter().map(|c| (c.dot(), c.signature)).collect();
        let changed: BTreeSet<&RecordKey> = changes.iter().map(|c| &c.record).collect();
        for (key, (state, existed)) in states.iter_mut() {
            if !changed.contains(key) {
                continue;
            }
            for held in state.changes.iter_mut() {
                if let Some(signature) = signatures.get(&held.dot()) {
                    held.signature = *signature;
                    retained.insert(held.dot());
                }
            }
            if !*existed {
                pending.put(keys::by_id(&key.partition, &key.record_type, &key.id), Vec::new());
            }
            pending.record(key, state, *existed);
            if key.record_type.as_str() == PROFILE_TYPE {
                self.profiles.lock().expect("profile cache lock").remove(&key.partition.org());
            }
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
        pending.put(keys::meta("counter"), counter.to_be_bytes().to_vec());
        pending.put(keys::meta("hlc"), clock.last().0.to_be_bytes().to_vec());
        self.finish_heads(&mut pending, &BTreeMap::new())?;
        self.commit_pending(pending)?;
        local.counter = counter;
        local.clock = clock;
        drop(local);
        for (slot, write) in results.iter_mut().zip(writes) {
            if !views {
                break;
            }
            if let Some(Ok(written)) = slot
                && !written.unchanged
            {
                let (state, _) = &states[&write.record];
                written.view = state.view(&self.policy(&write.record.partition, &write.record.record_type)?);
            }
        }
        Ok(results.into_iter().map(|r| r.expect("every write has a result")).collect())
    }

    // -----------------------------------------------------------------------
    // Frontiers

    /// The frontier entry of (partition, type, instance): the highest counter
    /// of a change this store retains there (0 when none).
    pub fn head(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
    ) -> Result<Counter, StoreError> {
        self.backend
            .get(&keys::head(partition, record_type, instance))?
            .map(|b| be_u64(&b))
            .transpose()
            .map(|c| c.unwrap_or(0))
    }

    /// Every frontier entry inside `region`, in key order.
    pub fn heads(&self, region: &Region) -> Result<Vec<HeadEntry>, StoreError> {
        let mut out = Vec::new();
        self.visit_heads(region, &mut |entry| out.push(entry))?;
        Ok(out)
    }

    fn visit_heads(&self, region: &Region, visit: &mut dyn FnMut(HeadEntry)) -> Result<(), StoreError> {
        let mut failure = None;
        for prefix in region.filter.prefixes() {
            self.scan_prefix(&keys::under(keys::HEADS, prefix), &mut |k, v| {
                let parsed = keys::split_typed(&k[1..]).and_then(|(partition, record_type, rest)| {
                    let instance: [u8; 16] = rest.try_into().ok()?;
                    let counter = u64::from_be_bytes(v.try_into().ok()?);
                    Some(HeadEntry { partition, record_type, instance: InstanceId(instance), counter })
                });
                match parsed {
                    Some(entry) => {
                        if !region.excluded_types.contains(&entry.record_type) {
                            visit(entry);
                        }
                        true
                    }
                    None => {
                        failure = Some(corrupt("head entry"));
                        false
                    }
                }
            })?;
        }
        failure.map_or(Ok(()), Err)
    }

    /// A digest of the frontier inside `region`: equal digests mean equal
    /// holdings there. Costs one scan of the region's frontier entries,
    /// never of its records.
    pub fn digest(&self, region: &Region) -> Result<[u8; 32], StoreError> {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"ferry frontier v1\0");
        self.visit_heads(region, &mut |e| {
            hasher.update(&crate::change::type_prefix(&e.partition, &e.record_type));
            hasher.update(&e.instance.0);
            hasher.update(&e.counter.to_be_bytes());
        })?;
        Ok(*hasher.finalize().as_bytes())
    }

    /// If a peer holds changes of our current instance beyond our counter,
    /// the store went back in time (restored from a backup): continue under
    /// `fresh` so no counter is ever used twice. Returns the reason if so.
    pub fn check_peer_heads(
        &self,
        entries: &[HeadEntry],
        fresh: InstanceId,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let mut local = self.lock();
        let ahead = entries.iter().filter(|e| e.instance == local.instance).map(|e| e.counter).max();
        match ahead {
            Some(theirs) if theirs > local.counter => {
                let reason = format!(
                    "a peer holds counter {theirs} of this instance but the store only reached {} (restored from a backup?)",
                    local.counter
                );
                let mut key = keys::meta("instances/");
                key.extend_from_slice(&fresh.0);
                let mut value = now_ms.to_be_bytes().to_vec();
                value.extend_from_slice(reason.as_bytes());
                self.commit(&[
                    (keys::meta("instance"), Some(fresh.0.to_vec())),
                    (keys::meta("counter"), Some(0u64.to_be_bytes().to_vec())),
                    (key, Some(value)),
                ])?;
                local.instance = fresh;
                local.counter = 0;
                Ok(Some(reason))
            }
            _ => Ok(None),
        }
    }

    /// Appends to `out` the retained changes of (partition, type, instance)
    /// with counters in `(after, upto]`, in counter order, stopping before
    /// `max_changes` or `max_bytes` would be exceeded (always taking at least
    /// one change when there is one).
    #[allow(clippy::too_many_arguments)]
    pub fn scan_group(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
        after: Counter,
        upto: Counter,
        max_changes: usize,
        max_bytes: u64,
        out: &mut Vec<Change>,
    ) -> Result<ScanEnd, StoreError> {
        let start = keys::change(partition, record_type, instance, after.saturating_add(1));
        let end = keys::change(partition, record_type, instance, upto);
        let mut found: Vec<(Counter, RecordId, u64)> = Vec::new();
        let mut bytes = 0u64;
        let mut complete = true;
        let mut failure = None;
        let mut unsendable = 0u64;
        let mut visit = |k: &[u8], v: &[u8]| {
            let counter = u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap_or([0; 8]));
            let Some((size, id)) = parse_index_value(v) else {
                failure = Some(corrupt("change index entry"));
                return false;
            };
            if size > RECORD_BYTES_MAX as u64 {
                // Made by an older version that did not check local writes:
                // every peer refuses it, so it is never sent (and never
                // blocks what follows it). `ferry check` lists it.
                unsendable += 1;
                return true;
            }
            if !found.is_empty() && (found.len() >= max_changes || bytes + size > max_bytes) {
                complete = false;
                return false;
            }
            bytes += size;
            found.push((counter, id, size));
            true
        };
        // The end key is inclusive of `upto`: scan to just past it.
        let mut end_exclusive = end;
        end_exclusive.push(0);
        self.backend.scan(&start, Some(&end_exclusive), &mut visit)?;
        if let Some(e) = failure {
            return Err(e);
        }
        let last = if complete { upto } else { found.last().map_or(after, |f| f.0) };
        let keys: Vec<RecordKey> = found
            .iter()
            .map(|(_, id, _)| RecordKey {
                partition: partition.clone(),
                record_type: record_type.clone(),
                id: id.clone(),
            })
            .collect();
        let states = self.records(&keys.iter().collect::<Vec<_>>())?;
        for ((counter, _, size), state) in found.into_iter().zip(states) {
            // A change may have been superseded since the index was read;
            // then it is obsolete and is simply not sent.
            if let Some(mut state) = state
                && let Some(at) = state.changes.iter().position(|c| c.author == *instance && c.counter == counter)
            {
                let change = state.changes.swap_remove(at);
                if change.check_form(size as usize).is_err() {
                    unsendable += 1;
                    continue;
                }
                out.push(change);
            }
        }
        Ok(ScanEnd { last, complete, bytes, unsendable })
    }

    /// Counts the retained changes and their bytes in `(after, upto]`.
    pub fn count_group(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
        after: Counter,
        upto: Counter,
    ) -> Result<(u64, u64), StoreError> {
        let start = keys::change(partition, record_type, instance, after.saturating_add(1));
        let mut end = keys::change(partition, record_type, instance, upto);
        end.push(0);
        let (mut changes, mut bytes) = (0, 0);
        self.backend.scan(&start, Some(&end), &mut |_, v| {
            changes += 1;
            bytes += parse_index_value(v).map_or(0, |(size, _)| size);
            true
        })?;
        Ok((changes, bytes))
    }

    // -----------------------------------------------------------------------
    // Receiving

    /// Applies a received batch: learns its credentials, checks every change
    /// (form, region, author's write scope, signature), merges the accepted
    /// ones and advances the frontier, all in one durable commit. A refused
    /// change is counted with its reason and the rest proceeds; a batch that
    /// does not continue what this node holds (`ApplyError::Gap`) changes
    /// nothing.
    pub fn apply_batch(
        &self,
        batch: &Batch,
        region: &Region,
        positions: &mut BTreeMap<Triple, Counter>,
        auth: &dyn Authorizer,
        verifier: &dyn Verifier,
        now_ms: u64,
    ) -> Result<Applied, ApplyError> {
        let now_s = now_ms / 1000;
        let mut applied = Applied::default();
        let mut pending = Pending::default();
        for chain in &batch.chains {
            match auth.learn(chain, now_s) {
                Ok(author) => {
                    pending.chain(&author, chain);
                }
                Err(denied) => applied.reject(format!("certificate chain refused: {denied}")),
            }
        }
        // Everything below runs under the write lock so heads read here are
        // still the heads when we commit.
        let mut local = self.lock();
        struct Candidate {
            change: Change,
            message: Vec<u8>,
            /// At or below the head this node held: not applied again, only
            /// compared with what is held (equivocation).
            held: bool,
        }
        let mut candidates: Vec<Candidate> = Vec::new();
        // Where this session stands in each triple: the head when the
        // session first met it, then the last counter it was sent. A group
        // must continue from there, so batches apply in order or not at all.
        let mut moved: BTreeMap<Triple, Counter> = BTreeMap::new();
        for group in &batch.groups {
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
            applied.received += group.changes.len() as u64;
            if !region.contains(&group.partition, &group.record_type) {
                for c in &group.changes {
                    applied.reject(format!(
                        "{}/{}/{}: outside what this peer may send here",
                        group.partition, group.record_type, c.id
                    ));
                }
                continue;
            }
            let mut last = position;
            for gc in &group.changes {
                let held = gc.counter <= position;
                if gc.counter <= last && !held {
                    // Out of order within the group, or repeated.
                    applied.reject(format!("counter {} out of order in its group", gc.counter));
                    continue;
                }
                last = last.max(gc.counter);
                let change = group.change(gc);
                let message = change.signing_bytes();
                let what = format!("{}/{}/{}", change.record.partition, change.record.record_type, change.record.id);
                if let Err(e) = change.check_form(message.len()) {
                    applied.reject(format!("{what}: {e}"));
                    continue;
                }
                if let Err(denied) = auth.may_write(
                    &change.author_key,
                    change.authority.as_deref(),
                    &change.record.partition,
                    &change.record.record_type,
                    change.write_kind(),
                    change.hlc.seconds(),
                ) {
                    applied.reject(format!("{what}: author may not write this: {denied}"));
                    continue;
                }
                candidates.push(Candidate { change, message, held });
            }
            moved.insert(triple, last);
        }
        let items: Vec<Signed<'_>> = candidates
            .iter()
            .map(|c| Signed { message: &c.message, signature: &c.change.signature, key: &c.change.author_key })
            .collect();
        let valid = verifier.verify_all(&items);
        drop(items);

        let mut unique: Vec<&RecordKey> =
            candidates.iter().zip(&valid).filter(|(_, ok)| **ok).map(|(c, _)| &c.change.record).collect();
        unique.sort();
        unique.dedup();
        let mut prefetched: BTreeMap<RecordKey, Option<RecordState>> =
            unique.iter().map(|k| (*k).clone()).zip(self.records(&unique)?).collect();
        let mut states: BTreeMap<RecordKey, (RecordState, bool, bool)> = BTreeMap::new();
        for (candidate, ok) in candidates.into_iter().zip(valid) {
            let change = candidate.change;
            if !ok {
                applied.reject(format!(
                    "{}/{}/{}: {}",
                    change.record.partition,
                    change.record.record_type,
                    change.record.id,
                    ChangeError::Signature
                ));
                continue;
            }
            let key = change.record.clone();
            if !states.contains_key(&key) {
                let state = prefetched.remove(&key).flatten();
                let existed = state.is_some();
                states.insert(key.clone(), (state.unwrap_or_default(), existed, false));
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
                    applied.reject(format!(
                        "{}/{}/{}: {}",
                        key.partition,
                        key.record_type,
                        key.id,
                        MergeError::Equivocation(dot.instance, dot.counter)
                    ));
                }
                continue;
            }
            let mut clock = local.clock;
            clock.observe(change.hlc, now_ms);
            local.clock = clock;
            let encoded_len = candidate.message.len();
            let index = IndexEntry::of(&change, encoded_len);
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
                    }
                    pending.drop_changes(&key, &dropped);
                    *touched = true;
                }
                Err(MergeError::Equivocation(instance, counter)) => applied.reject(format!(
                    "{}/{}/{}: {}",
                    key.partition,
                    key.record_type,
                    key.id,
                    MergeError::Equivocation(instance, counter)
                )),
            }
        }
        for (key, (state, existed, touched)) in &states {
            if !touched {
                continue;
            }
            if !existed {
                pending.put(keys::by_id(&key.partition, &key.record_type, &key.id), Vec::new());
            }
            pending.record(key, state, *existed);
            if key.record_type.as_str() == PROFILE_TYPE {
                self.profiles.lock().expect("profile cache lock").remove(&key.partition.org());
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
        positions.extend(moved);
        Ok(applied)
    }

    /// Sets the frontier entry of every triple this commit touches to the
    /// highest counter it will retain there (removing the entry when none).
    ///
    /// A triple whose head a repair lowered (a floor) keeps its head until a
    /// session delivers changes past it: its head becomes what `reached`
    /// says this commit delivered in order, and the floor goes once that
    /// passes the head the triple had before the repair.
    fn finish_heads(&self, pending: &mut Pending, reached: &BTreeMap<Triple, Counter>) -> Result<(), StoreError> {
        let floors = self.floors.lock().expect("floors lock").clone();
        for (partition, record_type, instance) in std::mem::take(&mut pending.touched) {
            let start = keys::change(&partition, &record_type, &instance, 0);
            let end = keys::change(&partition, &record_type, &instance, u64::MAX);
            // Highest indexed counter after this commit: the pending writes
            // first, then the stored index below them.
            let mut head = 0;
            for (key, value) in pending.writes.range(start.clone()..=end.clone()).rev() {
                if value.is_some() {
                    head = counter_of(key);
                    break;
                }
            }
            let mut below = end.clone();
            while let Some((key, _)) = self.backend.last_before(&start, &below)? {
                let counter = counter_of(&key);
                if counter <= head {
                    break;
                }
                if pending.writes.get(&key) != Some(&None) {
                    head = counter;
                    break;
                }
                below = key;
            }
            let triple = (partition.clone(), record_type.clone(), instance);
            if let Some(&before) = floors.get(&triple) {
                let delivered = reached.get(&triple).copied().unwrap_or(0);
                if delivered >= before {
                    pending.delete(keys::floor(&partition, &record_type, &instance));
                    pending.floors_cleared.push(triple);
                } else {
                    let stored = self.head(&partition, &record_type, &instance)?;
                    head = head.min(stored.max(delivered));
                }
            }
            let key = keys::head(&partition, &record_type, &instance);
            if head == 0 {
                pending.delete(key);
            } else {
                pending.put(key, head.to_be_bytes().to_vec());
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Credentials

    /// Stores a certificate chain of `author` (opaque bytes); returns its hash.
    pub fn put_chain(&self, author: &AuthorKey, chain: &[u8]) -> Result<[u8; 32], StoreError> {
        let hash = *blake3::hash(chain).as_bytes();
        let mut author_key = vec![keys::AUTHOR_CHAINS];
        author_key.extend_from_slice(&author.0);
        author_key.extend_from_slice(&hash);
        // A damaged copy reads as an error: write over it.
        let held = |key: &[u8]| self.backend.get(key).is_ok_and(|v| v.is_some());
        let mut chain_key = vec![keys::CHAINS];
        chain_key.extend_from_slice(&hash);
        if held(&author_key) && held(&chain_key) {
            // Held already: no write (a node reopened on a full disk still
            // opens).
            return Ok(hash);
        }
        let mut pending = Pending::default();
        pending.chain(author, chain);
        self.commit(&pending.into_writes())?;
        Ok(hash)
    }

    pub fn chain(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut key = vec![keys::CHAINS];
        key.extend_from_slice(hash);
        Ok(self.backend.get(&key)?)
    }

    /// Every chain stored for `author`.
    pub fn chains_of(&self, author: &AuthorKey) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut prefix = vec![keys::AUTHOR_CHAINS];
        prefix.extend_from_slice(&author.0);
        let mut hashes = Vec::new();
        self.scan_prefix(&prefix, &mut |k, _| {
            if let Ok(hash) = <[u8; 32]>::try_from(&k[prefix.len()..]) {
                hashes.push(hash);
            }
            true
        })?;
        let mut out = Vec::new();
        for hash in hashes {
            if let Some(chain) = self.chain(&hash)? {
                out.push(chain);
            }
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------
    // Ledger and peer cache

    /// Adds a ledger entry, dropping the oldest beyond `LEDGER_ENTRIES_MAX`
    /// (peers that fail on purpose must not fill the disk).
    pub fn record_session(&self, entry: &LedgerEntry) -> Result<(), StoreError> {
        let mut len = self.ledger_len.lock().expect("ledger lock");
        let held = match *len {
            Some(n) => n,
            None => {
                let mut n = 0;
                self.scan_prefix(&[keys::LEDGER], &mut |_, _| {
                    n += 1;
                    true
                })?;
                n
            }
        };
        let mut key = vec![keys::LEDGER];
        key.extend_from_slice(&entry.started_at_ms.to_be_bytes());
        key.extend_from_slice(entry.session.as_bytes());
        let mut writes = vec![(key, Some(wire::encode_value(entry)))];
        let excess = (held + 1).saturating_sub(LEDGER_ENTRIES_MAX);
        if excess > 0 {
            self.scan_prefix(&[keys::LEDGER], &mut |k, _| {
                writes.push((k.to_vec(), None));
                writes.len() <= excess
            })?;
        }
        let dropped = writes.len() - 1;
        self.commit(&writes)?;
        *len = Some(held + 1 - dropped);
        Ok(())
    }

    /// The ledger, oldest first.
    pub fn history(&self) -> Result<Vec<LedgerEntry>, StoreError> {
        let mut out = Vec::new();
        let mut failure = None;
        self.scan_prefix(&[keys::LEDGER], &mut |_, v| match wire::decode_value(v) {
            Ok(entry) => {
                out.push(entry);
                true
            }
            Err(e) => {
                failure = Some(corrupt(&format!("ledger entry: {e}")));
                false
            }
        })?;
        failure.map_or(Ok(out), Err)
    }

    /// A small value kept per peer (for example the last digest exchanged).
    pub fn peer_note(&self, peer: &AuthorKey, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.backend.get(&peer_key(peer, name))?)
    }

    pub fn set_peer_note(&self, peer: &AuthorKey, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.commit(&[(peer_key(peer, name), Some(value.to_vec()))])?;
        Ok(())
    }

    /// Low-level access for tools and tests that check invariants.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }
}

fn peer_key(peer: &AuthorKey, name: &str) -> Vec<u8> {
    let mut key = vec![keys::PEERS];
    key.extend_from_slice(&peer.0);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The key of an org's profile record.
pub fn profile_key(org: OrgId) -> RecordKey {
    RecordKey {
        partition: system_partition(org),
        record_type: RecordType::parse(PROFILE_TYPE).expect("valid type"),
        id: RecordId::parse(PROFILE_ID).expect("valid id"),
    }
}

/// A frontier entry's key: partition, record type, instance.
pub type Triple = (Partition, RecordType, InstanceId);

/// Writes gathered for one commit; later writes to a key replace earlier ones.
#[derive(Default)]
struct Pending {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Triples whose indexed changes this commit adds or drops.
    touched: BTreeSet<Triple>,
    /// Records this commit adds (or removes) per org.
    new_records: BTreeMap<OrgId, i64>,
    /// Repair floors this commit removes (forgotten once it is durable).
    floors_cleared: Vec<Triple>,
}

impl Pending {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Stores a record's state and its conflict marker. `existed`: the
    /// record was stored before, so a marker may need removing (a new
    /// record has none, and a removal still costs the backend a lookup).
    fn record(&mut self, key: &RecordKey, state: &RecordState, existed: bool) {
        if !existed {
            *self.new_records.entry(key.partition.org()).or_default() += 1;
        }
        let record_key = keys::record(&key.partition, &key.record_type, &key.id);
        let conflict_key = {
            let mut k = vec![keys::CONFLICTS];
            k.extend_from_slice(&record_key[1..]);
            k
        };
        if state.has_conflicts() {
            self.put(conflict_key, Vec::new());
        } else if existed {
            self.delete(conflict_key);
        }
        self.put(record_key, wire::encode_record(state));
    }

    fn index_change(&mut self, change: &Change, encoded_len: usize) {
        self.index(IndexEntry::of(change, encoded_len));
    }

    fn index(&mut self, entry: IndexEntry) {
        self.touched.insert(entry.triple);
        self.put(entry.key, entry.value);
    }

    fn drop_changes(&mut self, key: &RecordKey, dropped: &[Dot]) {
        for dot in dropped {
            self.touched.insert((key.partition.clone(), key.record_type.clone(), dot.instance));
            self.delete(keys::change(&key.partition, &key.record_type, &dot.instance, dot.counter));
        }
    }

    fn chain(&mut self, author: &AuthorKey, chain: &[u8]) -> [u8; 32] {
        let hash = *blake3::hash(chain).as_bytes();
        let mut key = vec![keys::CHAINS];
        key.extend_from_slice(&hash);
        self.put(key, chain.to_vec());
        let mut key = vec![keys::AUTHOR_CHAINS];
        key.extend_from_slice(&author.0);
        key.extend_from_slice(&hash);
        self.put(key, Vec::new());
        hash
    }

    fn into_writes(self) -> Vec<WriteOp> {
        self.writes.into_iter().collect()
    }
}

/// A change-index entry, prepared before the change is handed to merge.
struct IndexEntry {
    triple: Triple,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl IndexEntry {
    fn of(change: &Change, encoded_len: usize) -> IndexEntry {
        let key = keys::change(&change.record.partition, &change.record.record_type, &change.author, change.counter);
        let mut value = (encoded_len as u32).to_be_bytes().to_vec();
        value.extend_from_slice(change.record.id.as_str().as_bytes());
        IndexEntry {
            triple: (change.record.partition.clone(), change.record.record_type.clone(), change.author),
            key,
            value,
        }
    }
}

fn counter_of(change_key: &[u8]) -> Counter {
    let tail: [u8; 8] = change_key[change_key.len() - 8..].try_into().expect("change keys end with a counter");
    u64::from_be_bytes(tail)
}

fn parse_index_value(v: &[u8]) -> Option<(u64, RecordId)> {
    let size = u32::from_be_bytes(v.get(..4)?.try_into().ok()?);
    let id = RecordId::parse(std::str::from_utf8(&v[4..]).ok()?).ok()?;
    Some((u64::from(size), id))
}

fn be_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(bytes.try_into().map_err(|_| corrupt("a stored number"))?))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// What identifies this copy of the store: its directory's canonical path
/// and the device and inode of its main file. A copy, a move or a restore
/// that writes a new file changes it.
fn fingerprint(dir: &Path, kind: BackendKind) -> Vec<u8> {
    let mut out = Vec::new();
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    out.extend_from_slice(canonical.to_string_lossy().as_bytes());
    out.push(0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(kind.main_file(dir)) {
            out.extend_from_slice(&meta.dev().to_be_bytes());
            out.extend_from_slice(&meta.ino().to_be_bytes());
        }
    }
    #[cfg(not(unix))]
    let _ = kind;
    out
}

fn read_epoch_file(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(EPOCH_FILE)).ok()?.trim().parse().ok()
}

fn write_epoch_file(dir: &Path, epoch: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    // In place when the number keeps its length: a rewrite of a few bytes
    // inside one block needs no new space, so a store on a full disk still
    // opens (and one sector is written whole).
    let text = format!("{epoch}\n");
    if let Ok(old) = std::fs::read(dir.join(EPOCH_FILE))
        && old.len() == text.len()
        && let Ok(mut file) = std::fs::OpenOptions::new().write(true).open(dir.join(EPOCH_FILE))
        && file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).is_ok()
    {
        return Ok(());
    }
    let tmp = dir.join(format!("{EPOCH_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(format!("{epoch}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(EPOCH_FILE))?;
    std::fs::File::open(dir)?.sync_all()
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
    }
}

/// The kind of write a local op would be, for scope checks before writing.
pub fn local_write_kind(op: &LocalOp, record_exists: bool) -> WriteKind {
    match op {
        LocalOp::Delete => WriteKind::Delete,
        LocalOp::Restore => WriteKind::Update,
        LocalOp::Put { .. } if record_exists => WriteKind::Update,
        LocalOp::Put { .. } => WriteKind::Create,
    }
}

/// The repair floors a store holds (`keys::floor`).
fn load_floors(backend: &dyn Backend) -> Result<BTreeMap<Triple, Counter>, StoreError> {
    let prefix = keys::meta(keys::FLOOR_PREFIX);
    let end = prefix_end(&prefix);
    let mut floors = BTreeMap::new();
    let mut bad = false;
    backend.scan(&prefix, end.as_deref(), &mut |k, v| {
        let parsed = keys::split_typed(&k[prefix.len()..]).and_then(|(partition, record_type, rest)| {
            let instance: [u8; 16] = rest.try_into().ok()?;
            let before = u64::from_be_bytes(v.try_into().ok()?);
            Some(((partition, record_type, InstanceId(instance)), before))
        });
        match parsed {
            Some((triple, before)) => {
                floors.insert(triple, before);
                true
            }
            None => {
                bad = true;
                false
            }
        }
    })?;
    if bad {
        return Err(corrupt("a repair floor"));
    }
    Ok(floors)
}

/// Records per org, counted from the record keys.
fn count_records(backend: &dyn Backend) -> Result<BTreeMap<OrgId, u64>, StoreError> {
    let mut counts: BTreeMap<OrgId, u64> = BTreeMap::new();
    // Damaged values count too: the count says what the keys are.
    backend.audit(&mut |k, _| {
        if k.first() == Some(&keys::RECORDS)
            && let Some((partition, _, _)) = keys::split_typed(&k[1..])
        {
            *counts.entry(partition.org()).or_default() += 1;
        }
        k.first().is_none_or(|&t| t <= keys::RECORDS)
    })?;
    Ok(counts)
}
