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

/// A store and what the change feed names as the origin of the changes a
/// session receives into it (`Store::apply_batch`'s `origin`): a bare
/// `Store` names them `peer`; node wraps its store in `FromPeer` with the
/// peer's id.
pub trait Attributed: Sync {
    fn store(&self) -> &Store;
    fn origin(&self) -> &str;
}

impl Attributed for Store {
    fn store(&self) -> &Store {
        self
    }

    fn origin(&self) -> &str {
        "peer"
    }
}

/// A store whose sessions name the peer they sync with, so the change feed
/// says where each received change came from (`Store::apply_batch`'s
/// `origin`). A bare `Store` names it `peer`.
pub struct FromPeer<'a> {
    pub store: &'a Store,
    pub origin: &'a str,
}

impl Attributed for FromPeer<'_> {
    fn store(&self) -> &Store {
        self.store
    }

    fn origin(&self) -> &str {
        self.origin
    }
}

impl<T: Attributed> SessionStore for T {
    fn chain(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        self.store().chain(hash)
    }

    fn put_chain(&self, author: &AuthorKey, chain: &[u8]) -> Result<[u8; 32], StoreError> {
        self.store().put_chain(author, chain)
    }

    fn chains_of(&self, author: &AuthorKey) -> Result<Vec<Vec<u8>>, StoreError> {
        self.store().chains_of(author)
    }

    fn digest(&self, region: &Region) -> Result<[u8; 32], StoreError> {
        self.store().digest(region)
    }

    fn heads(&self, region: &Region) -> Result<Vec<HeadEntry>, StoreError> {
        self.store().heads(region)
    }

    fn check_peer_heads(
        &self,
        entries: &[HeadEntry],
        fresh: InstanceId,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        self.store().check_peer_heads(entries, fresh, now_ms)
    }

    fn count_group(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
        after: Counter,
        upto: Counter,
    ) -> Result<(u64, u64), StoreError> {
        self.store().count_group(partition, record_type, instance, after, upto)
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
        self.store().scan_group(partition, record_type, instance, after, upto, max_changes, max_bytes, out)
    }

    fn evicted(
        &self,
        partition: &Partition,
        record_type: &RecordType,
        instance: &InstanceId,
    ) -> Result<Counter, StoreError> {
        self.store().evicted(partition, record_type, instance)
    }

    fn run(&self, author: &InstanceId, first: Counter) -> Result<Option<RunKnown>, StoreError> {
        self.store().run(author, first)
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
        self.store().apply_batch(batch, region, positions, auth, verifier, now_ms, self.origin())
    }

    fn record_session(&self, entry: &LedgerEntry) -> Result<(), StoreError> {
        self.store().record_session(entry)
    }
}
