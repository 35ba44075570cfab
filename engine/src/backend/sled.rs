//! The sled backend: one tree, one atomic `apply_batch` per commit, then
//! `flush()` and an fsync of sled's files.
//!
//! sled 0.34's `flush()` ends in `sync_file_range` on Linux, which persists
//! neither file metadata nor the drive's cache: an acknowledged write could
//! be lost on power failure. So after each flush we `sync_all` the log file
//! `db`, and when a large value may have gone to `blobs/`, those files and
//! the directories too. sled's own background flusher is turned off: every
//! durable point is ours.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{Backend, BackendError, Entry, FailureKind, WriteOp};

/// sled writes values above about a quarter of its 512 KiB segments to
/// separate blob files.
const BLOB_THRESHOLD: usize = 100 * 1024;

/// sled's page cache (same reasoning as redb's).
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// How long `open` waits for a lock that a closing store is releasing:
/// `LOCK_ATTEMPTS` × `LOCK_WAIT` (2 s).
const LOCK_ATTEMPTS: u32 = 100;
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

pub struct SledBackend {
    db: sled::Db,
    dir: PathBuf,
}

fn err(e: impl Into<SledFailure>) -> BackendError {
    let (kind, message) = match e.into() {
        SledFailure::Io(io) => (super::io_kind(&io), super::io_message(&io)),
        SledFailure::Sled(sled::Error::Io(io)) => (super::io_kind(&io), super::io_message(&io)),
        SledFailure::Sled(e @ sled::Error::Corruption { .. }) => (FailureKind::Damaged { key: None }, e.to_string()),
        SledFailure::Sled(e) => (FailureKind::Other, e.to_string()),
    };
    BackendError { backend: "sled", message, kind }
}

/// The two error types the sled backend meets.
enum SledFailure {
    Io(std::io::Error),
    Sled(sled::Error),
}

impl From<std::io::Error> for SledFailure {
    fn from(e: std::io::Error) -> SledFailure {
        SledFailure::Io(e)
    }
}

impl From<sled::Error> for SledFailure {
    fn from(e: sled::Error) -> SledFailure {
        SledFailure::Sled(e)
    }
}

impl SledBackend {
    pub fn open(dir: &Path) -> Result<SledBackend, BackendError> {
        let config = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES).flush_every_ms(None);
        // sled releases its file lock when its last internal reference goes,
        // which can be a moment after the `Db` a closing store dropped; a
        // store closed and reopened in one process (or a process that just
        // exited) can still hold it. Waiting a bounded moment tells that
        // apart from a store another process really holds.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock") && attempts < LOCK_ATTEMPTS =>
                {
                    attempts += 1;
                    std::thread::sleep(LOCK_WAIT);
                }
                result => break result.map_err(err)?,
            }
        };
        let backend = SledBackend { db, dir: dir.to_path_buf() };
        backend.sync_files(true)?;
        Ok(backend)
    }

    fn sync_files(&self, everything: bool) -> Result<(), BackendError> {
        File::open(self.dir.join("db")).and_then(|f| f.sync_all()).map_err(err)?;
        if everything {
            let conf = self.dir.join("conf");
            if conf.exists() {
                File::open(conf).and_then(|f| f.sync_all()).map_err(err)?;
            }
            let blobs = self.dir.join("blobs");
            if blobs.is_dir() {
                for entry in std::fs::read_dir(&blobs).map_err(err)? {
                    match File::open(entry.map_err(err)?.path()).and_then(|f| f.sync_all()) {
                        // sled deletes a replaced value's blob in the
                        // background: one gone since the listing is no
                        // longer part of the store.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        other => other.map_err(err)?,
                    }
                }
                File::open(&blobs).and_then(|f| f.sync_all()).map_err(err)?;
            }
            File::open(&self.dir).and_then(|f| f.sync_all()).map_err(err)?;
        }
        Ok(())
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.db.get(key).map_err(err)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        let iter = match end {
            Some(end) => self.db.range(start..end),
            None => self.db.range(start..),
        };
        for entry in iter {
            let (k, v) = entry.map_err(err)?;
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn last_before(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, BackendError> {
        match self.db.range(start..end).next_back() {
            Some(entry) => {
                let (k, v) = entry.map_err(err)?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn commit(&self, writes: &[WriteOp]) -> Result<(), BackendError> {
        let mut batch = sled::Batch::default();
        let mut large = false;
        for (key, value) in writes {
            match value {
                Some(value) => {
                    large |= value.len() > BLOB_THRESHOLD;
                    batch.insert(key.as_slice(), value.as_slice());
                }
                None => batch.remove(key.as_slice()),
            }
        }
        self.db.apply_batch(batch).map_err(err)?;
        self.db.flush().map_err(err)?;
        self.sync_files(large)
    }

    fn close(&self) -> Result<(), BackendError> {
        self.db.flush().map_err(err)?;
        self.sync_files(true)
    }
}
