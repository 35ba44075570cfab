//! Opening a store: the instance rule (docs/storage.md). A store continues
//! its instance only when it was closed cleanly, is the same copy (path,
//! device, inode) and is not older than its directory's epoch file;
//! otherwise it writes under a fresh instance, so no counter is used twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use partitions::OrgId;

use crate::backend::{Backend, BackendKind, FailureKind, WriteOp, prefix_end};
use crate::hlc::Clock;
use crate::ids::{Counter, Hlc, InstanceId};
use crate::keys;

use super::{EPOCH_FILE, Local, Opened, PendingOpen, Store, StoreError, Triple, be_u64, corrupt};

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
        // On a full disk a store still opens for reading (a user must be
        // able to list and export to rescue data), even one that was not
        // closed cleanly; it is marked open, under the fresh instance if it
        // needs one, by its first commit, once space returns. Nothing is
        // written under the new instance before that.
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
                    let marks = vec![
                        (keys::meta("state"), Some(b"open".to_vec())),
                        (keys::meta("epoch"), Some(epoch.to_be_bytes().to_vec())),
                    ];
                    pending_open = Some(PendingOpen { epoch, writes: marks });
                }
            }
            Err(e) if e.is_no_space() => pending_open = Some(PendingOpen { epoch, writes }),
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
            hooks: std::sync::RwLock::new(Vec::new()),
            feed: Mutex::new(None),
            feed_max: std::sync::atomic::AtomicU64::new(crate::limits::FEED_ENTRIES_MAX as u64),
            feed_listeners: std::sync::RwLock::new(Vec::new()),
        };
        Ok((store, Opened { instance, fresh_instance: reason }))
    }
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

pub(super) fn write_epoch_file(dir: &Path, epoch: u64) -> std::io::Result<()> {
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
pub(super) fn count_records(backend: &dyn Backend) -> Result<BTreeMap<OrgId, u64>, StoreError> {
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
