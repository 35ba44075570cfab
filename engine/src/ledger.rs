//! The sync ledger: one entry per session or bundle import, kept in the store
//! (SENAITE's and TAO's sync history; `ferry history`).
//!
//! Stored as CBOR with fields by index (`stored::encode_value`): `Stored`
//! keeps the order entries were first written in, so ledgers written by
//! earlier versions still read; fields added since default when absent.

use serde::{Deserialize, Serialize};

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
        }
    }
}
