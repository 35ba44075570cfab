//! An in-memory backend with the same contract as redb and sled: atomic
//! commits, ordered scans, one owner at a time. It runs through the same
//! store suite, and the simulator and the stateful session fuzz target use it
//! so that a seed costs no disk IO.
//!
//! A memory store belongs to a directory, as a file store does: opening the
//! same directory again (a restart in the simulator) finds the same data,
//! and opening it while it is open is refused. The directory holds a marker
//! file (`FILE_NAME`), so the instance rule's fingerprint and epoch work
//! unchanged. Data of directories that no longer exist is dropped at the
//! next open, so a long campaign does not grow.
//!
//! "Durable" here means "survives the process's own restarts of the store",
//! which is all a simulated crash asks; the crash and power-loss tests that
//! kill processes or restore files run on the file backends only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Backend, BackendError, Entry, FailureKind, WriteOp};

pub const FILE_NAME: &str = "memory.store";

/// Entries a scan copies out per lock, so a visitor may read the store.
const SCAN_CHUNK: usize = 256;

type Data = Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>;

struct Held {
    data: Data,
    open: Arc<AtomicBool>,
}

/// Every memory store of this process, by directory.
static STORES: Mutex<BTreeMap<PathBuf, Held>> = Mutex::new(BTreeMap::new());

pub struct MemoryBackend {
    data: Data,
    open: Arc<AtomicBool>,
}

impl MemoryBackend {
    pub fn open(dir: &Path) -> Result<MemoryBackend, BackendError> {
        let marker = dir.join(FILE_NAME);
        let key = dir.canonicalize().map_err(BackendError::io)?;
        let mut stores = STORES.lock().expect("the memory store registry is never poisoned");
        stores.retain(|path, _| path.join(FILE_NAME).exists());
        if !marker.exists() {
            std::fs::write(&marker, b"ferry memory store\n").map_err(BackendError::io)?;
            stores.remove(&key);
        }
        let held =
            stores.entry(key).or_insert_with(|| Held { data: Arc::default(), open: Arc::new(AtomicBool::new(false)) });
        if held.open.swap(true, Ordering::SeqCst) {
            return Err(BackendError {
                backend: "memory",
                message: "the store is already open".into(),
                kind: FailureKind::InUse,
            });
        }
        Ok(MemoryBackend { data: held.data.clone(), open: held.open.clone() })
    }

    fn data(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.data.lock().expect("memory store lock: no panics while held")
    }
}

impl Drop for MemoryBackend {
    fn drop(&mut self) {
        self.open.store(false, Ordering::SeqCst);
    }
}

impl Backend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.data().get(key).cloned())
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        use std::ops::Bound;
        let mut from = Bound::Included(start.to_vec());
        loop {
            let chunk: Vec<Entry> = {
                let data = self.data();
                let upper = end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec()));
                data.range((from.clone(), upper)).take(SCAN_CHUNK).map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            let Some((last, _)) = chunk.last() else { return Ok(()) };
            from = Bound::Excluded(last.clone());
            let full = chunk.len() == SCAN_CHUNK;
            for (k, v) in &chunk {
                if !visit(k, v) {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    fn last_before(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, BackendError> {
        if start >= end {
            return Ok(None);
        }
        Ok(self.data().range(start.to_vec()..end.to_vec()).next_back().map(|(k, v)| (k.clone(), v.clone())))
    }

    fn commit(&self, writes: &[WriteOp]) -> Result<(), BackendError> {
        let mut data = self.data();
        for (key, value) in writes {
            match value {
                Some(value) => data.insert(key.clone(), value.clone()),
                None => data.remove(key),
            };
        }
        Ok(())
    }

    fn close(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
