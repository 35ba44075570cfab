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

pub mod checked;
pub mod memory;
pub mod redb;
pub mod sled;

use std::collections::BTreeSet;
use std::path::Path;

/// Which backend a store uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Redb,
    Sled,
    /// In memory, for the simulator and fuzzing (`memory.rs`); never chosen
    /// by `parse`, so no configuration can pick it.
    Memory,
}

impl BackendKind {
    /// The default: redb, the faster of the two durable backends by
    /// measurement (docs/storage.md, docs/performance.md).
    pub const DEFAULT: BackendKind = BackendKind::Redb;

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Redb => "redb",
            BackendKind::Sled => "sled",
            BackendKind::Memory => "memory",
        }
    }

    pub fn parse(text: &str) -> Option<BackendKind> {
        match text {
            "redb" => Some(BackendKind::Redb),
            "sled" => Some(BackendKind::Sled),
            _ => None,
        }
    }

    /// Opens (creating if needed) a backend in directory `dir`, with every
    /// value checksummed (`checked.rs`).
    pub fn open(self, dir: &Path) -> Result<Box<dyn Backend>, BackendError> {
        std::fs::create_dir_all(dir).map_err(BackendError::io)?;
        let raw: Box<dyn Backend> = checked::guard(self.name(), || {
            Ok(match self {
                BackendKind::Redb => Box::new(redb::RedbBackend::open(dir)?) as Box<dyn Backend>,
                BackendKind::Sled => Box::new(sled::SledBackend::open(dir)?),
                BackendKind::Memory => Box::new(memory::MemoryBackend::open(dir)?),
            })
        })?;
        Ok(Box::new(checked::Checked::new(raw, self.name())?))
    }

    /// The backend whose files are in `dir`, if any.
    pub fn found_in(dir: &Path) -> Option<BackendKind> {
        [BackendKind::Redb, BackendKind::Sled, BackendKind::Memory]
            .into_iter()
            .find(|kind| kind.main_file(dir).exists())
    }

    /// The file whose identity (inode) the instance rule watches.
    pub fn main_file(self, dir: &Path) -> std::path::PathBuf {
        match self {
            BackendKind::Redb => dir.join(redb::FILE_NAME),
            BackendKind::Sled => dir.join("db"),
            BackendKind::Memory => dir.join(memory::FILE_NAME),
        }
    }
}

/// What `Backend::audit` calls for each entry: its key, and its value or
/// the damage; returns whether to go on.
pub type AuditVisit<'a> = dyn FnMut(&[u8], Result<&[u8], BackendError>) -> bool + 'a;

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

    /// Copies every entry that can still be read into a fresh file that
    /// replaces the damaged one; returns how many entries were kept.
    fn rebuild(&self) -> Result<u64, BackendError> {
        Err(BackendError {
            backend: "store",
            message: "this backend cannot rebuild its file".into(),
            kind: FailureKind::Other,
        })
    }

    /// Removes every entry whose key `doomed` names, by walking the entries
    /// in place rather than looking keys up: a key damaged in the file may
    /// sit out of order, where no lookup finds it (`ferry check --repair`).
    fn purge(&self, doomed: &BTreeSet<Vec<u8>>) -> Result<(), BackendError> {
        let writes: Vec<WriteOp> = doomed.iter().map(|k| (k.clone(), None)).collect();
        self.commit(&writes)
    }

    /// Visits every entry with its value or, where the value is damaged,
    /// the damage, without stopping at it (`ferry check`). Backends without
    /// checksums report no damage of their own.
    fn audit(&self, visit: &mut AuditVisit<'_>) -> Result<(), BackendError> {
        self.scan(&[], None, &mut |k, v| visit(k, Ok(v)))
    }
}

/// A storage failure: the environment, not the input.
#[derive(Debug, thiserror::Error)]
#[error("{backend} store: {message}")]
pub struct BackendError {
    pub backend: &'static str,
    pub message: String,
    pub kind: FailureKind,
}

/// What a storage failure means for what to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Anything else: reported as it is.
    Other,
    /// What was read is not what was written (a checksum mismatch, a
    /// damaged page): the store must be checked and repaired. `key` is the
    /// entry, when known.
    Damaged { key: Option<Vec<u8>> },
    /// The disk is full. Nothing was written; the same call may succeed once
    /// space is freed.
    NoSpace,
    /// Another process holds the store.
    InUse,
}

impl BackendError {
    pub(crate) fn io(e: std::io::Error) -> BackendError {
        BackendError { backend: "file", kind: io_kind(&e), message: io_message(&e) }
    }

    pub fn damaged(backend: &'static str, key: Option<Vec<u8>>, message: String) -> BackendError {
        BackendError { backend, message, kind: FailureKind::Damaged { key } }
    }

    pub fn is_no_space(&self) -> bool {
        self.kind == FailureKind::NoSpace
    }
}

/// The failure kind of an IO error.
pub(crate) fn io_kind(e: &std::io::Error) -> FailureKind {
    // ENOSPC (28) and EDQUOT (122) on Linux: both mean "free some space".
    if e.kind() == std::io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(28 | 122)) {
        FailureKind::NoSpace
    } else {
        FailureKind::Other
    }
}

/// An IO error's text, with the hint a full disk needs.
pub(crate) fn io_message(e: &std::io::Error) -> String {
    if io_kind(e) == FailureKind::NoSpace {
        "no space left on device: free some space and try again".to_owned()
    } else {
        e.to_string()
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
