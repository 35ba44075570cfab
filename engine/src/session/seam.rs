//! `SessionStore`: everything a session asks of the node's store, and
//! nothing more. The session holds no `Store`; it calls this trait through
//! `Env`, so the state machine itself does no IO. `Store` implements it on
//! any backend; the simulator drives sessions over stores on the in-memory
//! backend, and node calls the session from tokio's blocking pool, never
//! from a worker thread (`drive` in node/src/protocols.rs).

use std::collections::BTreeMap;

use partitions::{Partition, RecordType};

use crate::authorize::{Authorizer, Verifier};
use crate::change::Change;
use crate::ids::{AuthorKey, Counter, InstanceId};
use crate::ledger::LedgerEntry;
use crate::region::Region;
use crate::report::SyncReport;
use crate::seal::RunKnown;
use crate::store::{ApplyError, ScanEnd, Store, StoreError, Triple};
use crate::wire::{Batch, HeadEntry};

/// What a session reads and writes (twelve operations). Every method is one store operation,
/// atomic and durable when it writes.
pub trait SessionStore: Sync {
    /// A certificate chain by its hash, if held.
    fn chain(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Keeps a chain an authenticated peer presented.
    fn put_chain(&self, author: &AuthorKey, chain: &[u8]) -> Result<[u8; 32], StoreError>;
    /// The chains held for an author, sent along with its changes.
    fn chains_of(&self, author: &AuthorKey) -> Result<Vec<Vec<u8>>, StoreError>;
    /// The digest of the frontier in `region` (the no-op fast path).
    fn digest(&self, region: &Region) -> Result<[u8; 32], StoreError>;
    /// The frontier in `region`.
    fn heads(&self, region: &Region) -> Result<Vec<HeadEntry>, StoreError>;
    /// The instance rule against a peer's frontier (`Store::check_peer_heads`).
    fn check_peer_heads(
        &self,
        entries: &[HeadEntry],
        fresh: InstanceId,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError>;
    /// Changes and bytes of a triple in `(after, upto]`.
    fn count_group(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
        after: Counter,
        upto: Counter,
    ) -> Result<(u64, u64), StoreError>;
    /// The next changes of a triple, within the batch's budget.
    #[allow(clippy::too_many_arguments)]
    fn scan_group(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
        after: Counter,
        upto: Counter,
        max_changes: usize,
        max_bytes: u64,
        out: &mut Vec<Change>,
    ) -> Result<ScanEnd, StoreError>;
    /// The highest counter of a triple an eviction removed here
    /// (`Store::evicted`): a peer below it gets nothing of the triple.
    fn evicted(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
    ) -> Result<Counter, StoreError>;
    /// What is known of a signed run (`Store::run`), to prove the changes a
    /// batch carries of it.
    fn run(&self, author: &InstanceId, first: Counter) -> Result<Option<RunKnown>, StoreError>;
    /// Checks and applies a received batch (`Store::apply_batch`).
    fn apply_batch(
        &self,
        batch: Batch,
        region: &Region,
        positions: &mut BTreeMap<Triple, Counter>,
        auth: &dyn Authorizer,
        verifier: &dyn Verifier,
        now_ms: u64,
    ) -> Result<SyncReport, ApplyError>;
    /// Adds the session's ledger entry.
    fn record_session(&self, entry: &LedgerEntry) -> Result<(), StoreError>;
}

impl SessionStore for Store {
    fn chain(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Store::chain(self, hash)
    }

    fn put_chain(&self, author: &AuthorKey, chain: &[u8]) -> Result<[u8; 32], StoreError> {
        Store::put_chain(self, author, chain)
    }

    fn chains_of(&self, author: &AuthorKey) -> Result<Vec<Vec<u8>>, StoreError> {
        Store::chains_of(self, author)
    }

    fn digest(&self, region: &Region) -> Result<[u8; 32], StoreError> {
        Store::digest(self, region)
    }

    fn heads(&self, region: &Region) -> Result<Vec<HeadEntry>, StoreError> {
        Store::heads(self, region)
    }

    fn check_peer_heads(
        &self,
        entries: &[HeadEntry],
        fresh: InstanceId,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        Store::check_peer_heads(self, entries, fresh, now_ms)
    }

    fn count_group(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
        after: Counter,
        upto: Counter,
    ) -> Result<(u64, u64), StoreError> {
        Store::count_group(self, partition, record_type, instance, after, upto)
    }

    fn scan_group(
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
        Store::scan_group(self, partition, record_type, instance, after, upto, max_changes, max_bytes, out)
    }

    fn evicted(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
    ) -> Result<Counter, StoreError> {
        Store::evicted(self, partition, record_type, instance)
    }

    fn run(&self, author: &InstanceId, first: Counter) -> Result<Option<RunKnown>, StoreError> {
        Store::run(self, author, first)
    }

    fn apply_batch(
        &self,
        batch: Batch,
        region: &Region,
        positions: &mut BTreeMap<Triple, Counter>,
        auth: &dyn Authorizer,
        verifier: &dyn Verifier,
        now_ms: u64,
    ) -> Result<SyncReport, ApplyError> {
        Store::apply_batch(self, batch, region, positions, auth, verifier, now_ms)
    }

    fn record_session(&self, entry: &LedgerEntry) -> Result<(), StoreError> {
        Store::record_session(self, entry)
    }
}
