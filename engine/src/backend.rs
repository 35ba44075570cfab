//! The narrow storage trait and its two backends.
//!
//! The store sees one ordered key space of byte keys and byte values, with
//! point reads, ordered range scans, and atomic, durable batches of writes.
//! That is all both sled and redb must provide; everything else (tables, key
//! layouts, the instance rule) lives in `store.rs`, so both backends pass the
//! same test suite.
//!
//! "Durable" means durable: `commit` returns only after the data has been
//! fsynced. redb's default commit does that (fdatasync). sled's `flush` only
//! calls `sync_file_range` on Linux, so the sled backend also fsyncs its files
//! after every flush (see docs/storage.md).

pub mod redb;
pub mod sled;

use std::path::Path;

/// Which backend a store uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Redb,
    Sled,
}

impl BackendKind {
    /// The default: redb, the faster of the two durable backends by
    /// measurement (docs/storage.md, docs/performance.md).
    pub const DEFAULT: BackendKind = BackendKind::Redb;

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Redb => "redb",
            BackendKind::Sled => "sled",
        }
    }

    pub fn parse(text: &str) -> Option<BackendKind> {
        match text {
            "redb" => Some(BackendKind::Redb),
            "sled" => Some(BackendKind::Sled),
            _ => None,
        }
    }

    /// Opens (creating if needed) a backend in directory `dir`.
    pub fn open(self, dir: &Path) -> Result<Box<dyn Backend>, BackendError> {
        std::fs::create_dir_all(dir).map_err(BackendError::io)?;
        Ok(match self {
            BackendKind::Redb => Box::new(redb::RedbBackend::open(dir)?),
            BackendKind::Sled => Box::new(sled::SledBackend::open(dir)?),
        })
    }

    /// The file whose identity (inode) the instance rule watches.
    pub fn main_file(self, dir: &Path) -> std::path::PathBuf {
        match self {
            BackendKind::Redb => dir.join(redb::FILE_NAME),
            BackendKind::Sled => dir.join("db"),
        }
    }
}

/// One write of a batch: a put, or a delete when the value is `None`.
pub type WriteOp = (Vec<u8>, Option<Vec<u8>>);

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// An ordered key space with atomic durable batches.
pub trait Backend: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;

    /// Several point reads at once (one read transaction where that helps).
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Visits the entries with `start <= key < end` in key order (to the end
    /// of the key space when `end` is `None`) until `visit` returns false.
    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError>;

    /// The last entry with `start <= key < end`, if any.
    fn last_before(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, BackendError>;

    /// Applies every write or none, and returns once they are durable.
    fn commit(&self, writes: &[WriteOp]) -> Result<(), BackendError>;

    /// Makes everything durable and releases the files.
    fn close(&self) -> Result<(), BackendError>;
}

/// A storage failure: the environment, not the input.
#[derive(Debug, thiserror::Error)]
#[error("{backend} store: {message}")]
pub struct BackendError {
    pub backend: &'static str,
    pub message: String,
}

impl BackendError {
    pub(crate) fn io(e: std::io::Error) -> BackendError {
        BackendError { backend: "file", message: e.to_string() }
    }
}

/// The first key after every key starting with `prefix`, or `None` when no
/// such key exists (the prefix is empty or all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
