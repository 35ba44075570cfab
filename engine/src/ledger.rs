//! The sync ledger: one entry per session or bundle import, kept in the store
//! (SENAITE's and TAO's sync history; `ferry history`): its outcome, its
//! counters, the blobs that moved after it, and the records its batches
//! carried (`MovedRecords`, up to `LEDGER_RECORDS_MAX`).
//!
//! Stored as CBOR with fields by index (`stored::encode_value`): `Stored`
//! keeps the order entries were first written in, so ledgers written by
//! earlier versions still read; fields added since default when absent.

use std::collections::BTreeSet;

use partitions::{Partition, RecordType};
use serde::{Deserialize, Serialize};

use crate::change::RecordKey;
use crate::ids::RecordId;
use crate::limits::LEDGER_RECORDS_MAX;
use crate::report::SyncReport;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Stored", into = "Stored")]
pub struct LedgerEntry {
    /// Hex of the session id.
    pub session: String,
    /// Hex of the peer's key, or the bundle file for an import.
    pub peer: String,
    /// `network` or `bundle`.
    pub via: String,
    pub started_at_ms: u64,
    /// `completed`, `no-op`, `failed: <reason>` or `refused: <reason>`.
    pub outcome: String,
    pub filter: String,
    pub pull: bool,
    pub push: bool,
    /// What moved. The ledger keeps every counter but the message counts.
    pub report: SyncReport,
    /// The blobs moved after the records (docs/protocol.md, "Blobs"); the
    /// node adds them to the session's entry once they have moved.
    pub blobs: BlobCounts,
    /// The records this session's batches carried, each once per direction,
    /// at most `LEDGER_RECORDS_MAX`, in the order they moved.
    pub records: Vec<Moved>,
    /// Changes carried once `records` was full (some may be of records it
    /// names).
    pub records_beyond: u64,
    /// An entry of `via` `scope`: records purged because this node's read
    /// scope shrank; of `via` `evict`: records evicted once acknowledged.
    pub purged: u64,
}

/// A record a session's batches carried, and which way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    pub sent: bool,
    pub key: RecordKey,
}

/// The records of a session as they move: each named once per direction
/// while there is room; once the list is full, changes are only counted.
#[derive(Clone, Debug, Default)]
pub struct MovedRecords {
    pub list: Vec<Moved>,
    sent: BTreeSet<RecordKey>,
    received: BTreeSet<RecordKey>,
    pub beyond: u64,
}

impl MovedRecords {
    pub fn is_full(&self) -> bool {
        self.list.len() >= LEDGER_RECORDS_MAX
    }

    /// One change of `key`, sent or received.
    pub fn add(&mut self, sent: bool, key: &RecordKey) {
        if self.is_full() {
            self.beyond += 1;
            return;
        }
        let seen = if sent { &mut self.sent } else { &mut self.received };
        if !seen.contains(key) {
            seen.insert(key.clone());
            self.list.push(Moved { sent, key: key.clone() });
        }
    }
}

/// Blobs moved with a session, and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobCounts {
    pub received: u64,
    pub bytes_received: u64,
    pub sent: u64,
    pub bytes_sent: u64,
}

impl BlobCounts {
    pub fn add(&mut self, other: &BlobCounts) {
        self.received += other.received;
        self.bytes_received += other.bytes_received;
        self.sent += other.sent;
        self.bytes_sent += other.bytes_sent;
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct Stored {
    session: String,
    peer: String,
    via: String,
    started_at_ms: u64,
    duration_ms: u64,
    outcome: String,
    filter: String,
    pull: bool,
    push: bool,
    sent: u64,
    received: u64,
    skipped: u64,
    updated: u64,
    conflicts: u64,
    rejected: u64,
    bytes_sent: u64,
    bytes_received: u64,
    rejections: Vec<String>,
    #[serde(default)]
    merged: u64,
    #[serde(default)]
    rejected_by_peer: u64,
    #[serde(default)]
    noop: bool,
    #[serde(default)]
    blobs_received: u64,
    #[serde(default)]
    blob_bytes_received: u64,
    #[serde(default)]
    blobs_sent: u64,
    #[serde(default)]
    blob_bytes_sent: u64,
    /// (sent, partition, type, id) per record.
    #[serde(default)]
    records: Vec<(bool, String, String, String)>,
    #[serde(default)]
    records_beyond: u64,
    #[serde(default)]
    purged: u64,
}

impl From<Stored> for LedgerEntry {
    fn from(s: Stored) -> LedgerEntry {
        LedgerEntry {
            session: s.session,
            peer: s.peer,
            via: s.via,
            started_at_ms: s.started_at_ms,
            outcome: s.outcome,
            filter: s.filter,
            pull: s.pull,
            push: s.push,
            report: SyncReport {
                sent: s.sent,
                received: s.received,
                skipped: s.skipped,
                updated: s.updated,
                merged: s.merged,
                conflicts: s.conflicts,
                rejected: s.rejected,
                rejected_by_peer: s.rejected_by_peer,
                bytes_sent: s.bytes_sent,
                bytes_received: s.bytes_received,
                duration_ms: s.duration_ms,
                noop: s.noop,
                rejections: s.rejections,
                ..SyncReport::default()
            },
            blobs: BlobCounts {
                received: s.blobs_received,
                bytes_received: s.blob_bytes_received,
                sent: s.blobs_sent,
                bytes_sent: s.blob_bytes_sent,
            },
            // A name that does not parse (a damaged entry) is left out.
            records: s
                .records
                .into_iter()
                .filter_map(|(sent, partition, record_type, id)| {
                    Some(Moved {
                        sent,
                        key: RecordKey {
                            partition: Partition::parse(&partition).ok()?,
                            record_type: RecordType::parse(&record_type).ok()?,
                            id: RecordId::parse(&id).ok()?,
                        },
                    })
                })
                .collect(),
            records_beyond: s.records_beyond,
            purged: s.purged,
        }
    }
}

impl From<LedgerEntry> for Stored {
    fn from(e: LedgerEntry) -> Stored {
        let r = e.report;
        Stored {
            session: e.session,
            peer: e.peer,
            via: e.via,
            started_at_ms: e.started_at_ms,
            duration_ms: r.duration_ms,
            outcome: e.outcome,
            filter: e.filter,
            pull: e.pull,
            push: e.push,
            sent: r.sent,
            received: r.received,
            skipped: r.skipped,
            updated: r.updated,
            conflicts: r.conflicts,
            rejected: r.rejected,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            rejections: r.rejections,
            merged: r.merged,
            rejected_by_peer: r.rejected_by_peer,
            noop: r.noop,
            blobs_received: e.blobs.received,
            blob_bytes_received: e.blobs.bytes_received,
            blobs_sent: e.blobs.sent,
            blob_bytes_sent: e.blobs.bytes_sent,
            records: e
                .records
                .into_iter()
                .map(|m| {
                    (
                        m.sent,
                        m.key.partition.to_string(),
                        m.key.record_type.as_str().to_owned(),
                        m.key.id.as_str().to_owned(),
                    )
                })
                .collect(),
            records_beyond: e.records_beyond,
            purged: e.purged,
        }
    }
}
