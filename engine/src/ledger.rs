//! The sync ledger: one entry per session or bundle import, kept in the store
//! (SENAITE's and TAO's sync history; `ferry history`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Hex of the session id.
    pub session: String,
    /// Hex of the peer's key, or the bundle file for an import.
    pub peer: String,
    /// `network` or `bundle`.
    pub via: String,
    pub started_at_ms: u64,
    pub duration_ms: u64,
    /// `completed`, `no-op`, or `failed: <reason>`.
    pub outcome: String,
    pub filter: String,
    pub pull: bool,
    pub push: bool,
    pub sent: u64,
    pub received: u64,
    pub skipped: u64,
    pub updated: u64,
    pub conflicts: u64,
    pub rejected: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The first rejection reasons (the count above is exact).
    pub rejections: Vec<String>,
}
