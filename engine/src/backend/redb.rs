//! The redb backend: one table of byte keys, one write transaction per
//! batch, committed with `Durability::Immediate` (the default), which ends
//! in an fdatasync of the file.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

use super::{Backend, BackendError, Entry, WriteOp};

pub const FILE_NAME: &str = "store.redb";

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ferry");

/// redb's page cache. The store's working set is the records of one sync
/// batch and the index pages above them; 64 MiB keeps them hot while staying
/// far under the 256 MiB memory target.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

pub struct RedbBackend {
    db: Database,
}

fn err(e: impl std::fmt::Display) -> BackendError {
    BackendError { backend: "redb", message: e.to_string() }
}

impl RedbBackend {
    pub fn open(dir: &Path) -> Result<RedbBackend, BackendError> {
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(dir.join(FILE_NAME)).map_err(err)?;
        // Create the table so read transactions always find it.
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(TABLE).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(RedbBackend { db })
    }
}

impl Backend for RedbBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(TABLE).map_err(err)?;
        Ok(table.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(TABLE).map_err(err)?;
        keys.iter().map(|k| Ok(table.get(k.as_slice()).map_err(err)?.map(|v| v.value().to_vec()))).collect()
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        let tx = self.db.begin_read().map_err(err)?;
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
    }

    fn last_before(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, BackendError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(TABLE).map_err(err)?;
        let mut range = table.range(start..end).map_err(err)?;
        match range.next_back() {
            Some(entry) => {
                let (k, v) = entry.map_err(err)?;
                Ok(Some((k.value().to_vec(), v.value().to_vec())))
            }
            None => Ok(None),
        }
    }

    fn commit(&self, writes: &[WriteOp]) -> Result<(), BackendError> {
        let tx = self.db.begin_write().map_err(err)?;
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
    }

    fn close(&self) -> Result<(), BackendError> {
        // Every commit is already durable; dropping the database closes it.
        Ok(())
    }
}
