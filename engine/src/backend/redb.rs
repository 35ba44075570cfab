//! The redb backend: one table of byte keys, one write transaction per
//! batch, committed with `Durability::Immediate` (the default), which ends
//! in an fdatasync of the file.

use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use redb::{Database, ReadableDatabase, TableDefinition};

use super::{Backend, BackendError, Entry, FailureKind, WriteOp};

pub const FILE_NAME: &str = "store.redb";

/// A key and value as a table iterator yields them.
type Pair<'a> = (redb::AccessGuard<'a, &'static [u8]>, redb::AccessGuard<'a, &'static [u8]>);

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ferry");

/// redb's page cache. The store's working set is the records of one sync
/// batch and the index pages above them; 64 MiB keeps them hot while staying
/// far under the 256 MiB memory target.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// After one IO error (a full disk, say) redb refuses every later call with
/// `PreviousIo` until the database is closed and opened again; so the
/// backend reopens it by itself on the next call, and a node recovers as
/// soon as space returns, without a restart.
pub struct RedbBackend {
    db: RwLock<Option<Database>>,
    path: PathBuf,
}

fn err(e: impl Into<redb::Error>) -> BackendError {
    let e: redb::Error = e.into();
    let (kind, message) = match &e {
        redb::Error::Io(io) => (super::io_kind(io), super::io_message(io)),
        redb::Error::PreviousIo => (FailureKind::Other, "an earlier write failed; the store is reopened".to_owned()),
        redb::Error::Corrupted(_) => (FailureKind::Damaged { key: None }, e.to_string()),
        redb::Error::DatabaseAlreadyOpen => (FailureKind::InUse, e.to_string()),
        _ => (FailureKind::Other, e.to_string()),
    };
    BackendError { backend: "redb", message, kind }
}

fn is_previous_io(e: &BackendError) -> bool {
    e.message.starts_with("an earlier write failed")
}

fn open_database(path: &Path) -> Result<Database, BackendError> {
    // An existing file redb cannot open for any reason but IO or a lock is
    // a damaged file.
    let db = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(|e| {
        let mut e = err(e);
        if e.kind == FailureKind::Other && !e.message.contains("earlier write") {
            e.kind = FailureKind::Damaged { key: None };
        }
        e
    })?;
    // Create the table so read transactions always find it; a store that
    // has it already opens without writing (a full disk still reads).
    let read = db.begin_read().map_err(err)?;
    let exists = read.open_table(TABLE).is_ok();
    drop(read);
    if exists {
        return Ok(db);
    }
    let tx = db.begin_write().map_err(err)?;
    tx.open_table(TABLE).map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(db)
}

impl RedbBackend {
    pub fn open(dir: &Path) -> Result<RedbBackend, BackendError> {
        let path = dir.join(FILE_NAME);
        let db = open_database(&path)?;
        Ok(RedbBackend { db: RwLock::new(Some(db)), path })
    }

    /// The open database, reopened first if an IO error closed it.
    fn db(&self) -> Result<RwLockReadGuard<'_, Option<Database>>, BackendError> {
        {
            let guard = self.db.read().expect("the redb lock is never poisoned");
            if guard.is_some() {
                return Ok(guard);
            }
        }
        let mut slot = self.db.write().expect("the redb lock is never poisoned");
        if slot.is_none() {
            *slot = Some(open_database(&self.path)?);
        }
        drop(slot);
        Ok(self.db.read().expect("the redb lock is never poisoned"))
    }

    /// Runs `call` on the database; after an IO error, closes it so that the
    /// next call reopens it.
    fn with<T>(&self, call: impl FnOnce(&Database) -> Result<T, BackendError>) -> Result<T, BackendError> {
        let guard = self.db()?;
        let db = guard.as_ref().expect("db() returns an open database");
        let result = call(db);
        drop(guard);
        if let Err(e) = &result
            && (e.kind == FailureKind::NoSpace || is_previous_io(e) || e.backend == "file")
        {
            *self.db.write().expect("the redb lock is never poisoned") = None;
        }
        result
    }
}

impl Backend for RedbBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.with(|db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(TABLE).map_err(err)?;
            Ok(table.get(key).map_err(err)?.map(|v| v.value().to_vec()))
        })
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        self.with(|db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(TABLE).map_err(err)?;
            keys.iter().map(|k| Ok(table.get(k.as_slice()).map_err(err)?.map(|v| v.value().to_vec()))).collect()
        })
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        self.with(|db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(TABLE).map_err(err)?;
            let range = match end {
                Some(end) => table.range(start..end),
                None => table.range(start..),
            }
            .map_err(err)?;
            for entry in range {
                let (k, v) = entry.map_err(err)?;
                if !visit(k.value(), v.value()) {
                    break;
                }
            }
            Ok(())
        })
    }

    fn last_before(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, BackendError> {
        self.with(|db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(TABLE).map_err(err)?;
            let mut range = table.range(start..end).map_err(err)?;
            match range.next_back() {
                Some(entry) => {
                    let (k, v) = entry.map_err(err)?;
                    Ok(Some((k.value().to_vec(), v.value().to_vec())))
                }
                None => Ok(None),
            }
        })
    }

    fn commit(&self, writes: &[WriteOp]) -> Result<(), BackendError> {
        self.with(|db| {
            let tx = db.begin_write().map_err(err)?;
            {
                let mut table = tx.open_table(TABLE).map_err(err)?;
                for (key, value) in writes {
                    match value {
                        Some(value) => {
                            table.insert(key.as_slice(), value.as_slice()).map_err(err)?;
                        }
                        None => {
                            table.remove(key.as_slice()).map_err(err)?;
                        }
                    }
                }
            }
            tx.commit().map_err(err)
        })
    }

    fn rebuild(&self) -> Result<u64, BackendError> {
        let mut slot = self.db.write().expect("the redb lock is never poisoned");
        let mut kept: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = std::collections::BTreeMap::new();
        if let Some(db) = slot.as_ref() {
            // Forwards until the damage, then backwards until it: whatever
            // either way can reach is kept. A panic only ends that walk.
            for backwards in [false, true] {
                let walk = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<(), BackendError> {
                    let tx = db.begin_read().map_err(err)?;
                    let table = tx.open_table(TABLE).map_err(err)?;
                    let range = table.range::<&[u8]>(..).map_err(err)?;
                    let mut visit = |entry: Result<Pair<'_>, redb::StorageError>| match entry {
                        Ok((k, v)) => {
                            kept.insert(k.value().to_vec(), v.value().to_vec());
                            true
                        }
                        Err(_) => false,
                    };
                    if backwards {
                        for entry in range.rev() {
                            if !visit(entry) {
                                break;
                            }
                        }
                    } else {
                        for entry in range {
                            if !visit(entry) {
                                break;
                            }
                        }
                    }
                    Ok(())
                }));
                let _ = walk;
            }
        }
        *slot = None;
        let fresh = self.path.with_extension("rebuild");
        let _ = std::fs::remove_file(&fresh);
        {
            let db = open_database(&fresh)?;
            let tx = db.begin_write().map_err(err)?;
            {
                let mut table = tx.open_table(TABLE).map_err(err)?;
                for (k, v) in &kept {
                    table.insert(k.as_slice(), v.as_slice()).map_err(err)?;
                }
            }
            tx.commit().map_err(err)?;
        }
        std::fs::rename(&fresh, &self.path).map_err(BackendError::io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(BackendError::io)?;
        }
        *slot = Some(open_database(&self.path)?);
        Ok(kept.len() as u64)
    }

    fn purge(&self, doomed: &std::collections::BTreeSet<Vec<u8>>) -> Result<(), BackendError> {
        self.with(|db| {
            let tx = db.begin_write().map_err(err)?;
            {
                let mut table = tx.open_table(TABLE).map_err(err)?;
                table.retain(|k, _| !doomed.contains(k)).map_err(err)?;
            }
            tx.commit().map_err(err)
        })
    }

    fn close(&self) -> Result<(), BackendError> {
        // Every commit is already durable; dropping the database closes it.
        Ok(())
    }
}
