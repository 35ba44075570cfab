//! Checksums on every stored value, and a seam no backend panic crosses.
//!
//! A flipped bit in a store file must never come back as data: redb keeps no
//! checksums of its own, and 10 of 43 single-bit flips in its file once
//! changed values or ids silently. So every value is stored followed by
//! `TAG_BYTES` of BLAKE3 over its key and itself, and every read checks them:
//! a mismatch is a `FailureKind::Damaged` error naming the key, never wrong
//! data. `ferry check` finds every damaged entry and `--repair` drops them so
//! that peers send them again (docs/storage.md).
//!
//! A backend that panics on a damaged page (redb's "unreachable" paths) is
//! caught here and becomes the same damaged error.
//!
//! Stores written before checksums existed carry no tags: the first open
//! rewrites every value with its tag in one atomic commit, then sets the
//! format marker, which lives under a key no store table uses (`0x00…`) and
//! which scans never show.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{AuditVisit, Backend, BackendError, Entry, FailureKind, WriteOp};

/// Bytes of the checksum after every value: a random flip goes unnoticed
/// with probability 2^-64.
pub const TAG_BYTES: usize = 8;

/// The format marker's key and value.
const FORMAT_KEY: &[u8] = b"\x00ferry-format";
const FORMAT_CHECKSUMMED: &[u8] = b"checksummed-1";

pub struct Checked {
    inner: Box<dyn Backend>,
    name: &'static str,
}

/// Runs a backend call; a panic inside it becomes a damaged error.
pub fn guard<T>(name: &'static str, call: impl FnOnce() -> Result<T, BackendError>) -> Result<T, BackendError> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            Err(BackendError::damaged(name, None, format!("the store file is damaged ({name} failed on it: {what})")))
        }
    }
}

pub fn tag(key: &[u8], value: &[u8]) -> [u8; TAG_BYTES] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(key.len() as u32).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    let mut out = [0; TAG_BYTES];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_BYTES]);
    out
}

/// A value with its tag appended.
pub fn seal(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + TAG_BYTES);
    out.extend_from_slice(value);
    out.extend_from_slice(&tag(key, value));
    out
}

impl Checked {
    pub fn new(inner: Box<dyn Backend>, name: &'static str) -> Result<Checked, BackendError> {
        let checked = Checked { inner, name };
        let marker = guard(name, || checked.inner.get(FORMAT_KEY))?;
        if marker.is_none() {
            checked.migrate()?;
        }
        Ok(checked)
    }

    /// Adds tags to a store written without them (or marks a new one).
    fn migrate(&self) -> Result<(), BackendError> {
        let mut writes: Vec<WriteOp> = Vec::new();
        guard(self.name, || {
            self.inner.scan(&[], None, &mut |k, v| {
                writes.push((k.to_vec(), Some(seal(k, v))));
                true
            })
        })?;
        writes.push((FORMAT_KEY.to_vec(), Some(FORMAT_CHECKSUMMED.to_vec())));
        guard(self.name, || self.inner.commit(&writes))
    }

    fn open_value<'v>(&self, key: &[u8], stored: &'v [u8]) -> Result<&'v [u8], BackendError> {
        let damaged = || {
            BackendError::damaged(
                self.name,
                Some(key.to_vec()),
                "a stored value does not match its checksum".to_owned(),
            )
        };
        let split = stored.len().checked_sub(TAG_BYTES).ok_or_else(damaged)?;
        let (value, stored_tag) = stored.split_at(split);
        if stored_tag != tag(key, value) {
            return Err(damaged());
        }
        Ok(value)
    }

    /// Visits every entry, damaged or not, for `ferry check`: `visit` gets
    /// the key and the value, or the damage.
    pub fn audit(&self, visit: &mut AuditVisit<'_>) -> Result<(), BackendError> {
        guard(self.name, || {
            self.inner.scan(&[0x01], None, &mut |k, v| {
                let opened = self.open_value(k, v);
                visit(k, opened)
            })
        })
    }
}

impl Backend for Checked {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        match guard(self.name, || self.inner.get(key))? {
            None => Ok(None),
            Some(stored) => Ok(Some(self.open_value(key, &stored)?.to_vec())),
        }
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let values = guard(self.name, || self.inner.get_many(keys))?;
        keys.iter()
            .zip(values)
            .map(|(key, stored)| match stored {
                None => Ok(None),
                Some(stored) => Ok(Some(self.open_value(key, &stored)?.to_vec())),
            })
            .collect()
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        let mut failure = None;
        // The format marker sorts before every table and is never shown.
        let start = if start < [0x01].as_slice() { &[0x01][..] } else { start };
        guard(self.name, || {
            self.inner.scan(start, end, &mut |k, v| match self.open_value(k, v) {
                Ok(value) => visit(k, value),
                Err(e) => {
                    failure = Some(e);
                    false
                }
            })
        })?;
        failure.map_or(Ok(()), Err)
    }

    fn last_before(&self, start: &[u8], end: &[u8]) -> Result<Option<Entry>, BackendError> {
        match guard(self.name, || self.inner.last_before(start, end))? {
            None => Ok(None),
            Some((key, stored)) => {
                let value = self.open_value(&key, &stored)?.to_vec();
                Ok(Some((key, value)))
            }
        }
    }

    fn commit(&self, writes: &[WriteOp]) -> Result<(), BackendError> {
        let sealed: Vec<WriteOp> = writes.iter().map(|(k, v)| (k.clone(), v.as_ref().map(|v| seal(k, v)))).collect();
        guard(self.name, || self.inner.commit(&sealed))
    }

    fn close(&self) -> Result<(), BackendError> {
        guard(self.name, || self.inner.close())
    }

    fn rebuild(&self) -> Result<u64, BackendError> {
        guard(self.name, || self.inner.rebuild())
    }

    fn purge(&self, doomed: &std::collections::BTreeSet<Vec<u8>>) -> Result<(), BackendError> {
        guard(self.name, || self.inner.purge(doomed))
    }

    fn audit(&self, visit: &mut AuditVisit<'_>) -> Result<(), BackendError> {
        Checked::audit(self, visit)
    }
}

impl FailureKind {
    pub fn is_damage(&self) -> bool {
        matches!(self, FailureKind::Damaged { .. })
    }
}
