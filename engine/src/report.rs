//! `SyncReport`: the counters of one sync (SPEC §4's sync summary). One
//! type for every place they appear: a batch applied (`Store::apply_batch`),
//! a session (`Session::report`, `Event::Completed`), a bundle import, the
//! ledger (`LedgerEntry::report`) and every front end, which prints it
//! through `Display` here or node's one JSON rendering.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::SUMMARY_REJECTIONS_MAX;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Changes this node sent.
    pub sent: u64,
    /// Changes this node received (applied, skipped or rejected).
    pub received: u64,
    /// Received changes this node held already or that lost to what it held.
    pub skipped: u64,
    pub updated: u64,
    pub merged: u64,
    /// Field conflicts the merges kept.
    pub conflicts: u64,
    pub rejected: u64,
    /// Changes this node sent that the peer refused.
    pub rejected_by_peer: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub duration_ms: u64,
    /// Both sides held the same: nothing moved.
    pub noop: bool,
    /// The first rejection reasons (`rejected` is exact), at most
    /// `SUMMARY_REJECTIONS_MAX`.
    pub rejections: Vec<String>,
}

impl SyncReport {
    /// Counts one refused change and keeps its reason while there is room.
    pub fn reject(&mut self, reason: String) {
        self.rejected += 1;
        self.keep_reason(reason);
    }

    /// Adds what a part of the same sync did (a batch, into its session).
    pub fn absorb(&mut self, part: SyncReport) {
        self.sent += part.sent;
        self.received += part.received;
        self.skipped += part.skipped;
        self.updated += part.updated;
        self.merged += part.merged;
        self.conflicts += part.conflicts;
        self.rejected += part.rejected;
        self.rejected_by_peer += part.rejected_by_peer;
        self.bytes_sent += part.bytes_sent;
        self.bytes_received += part.bytes_received;
        self.messages_sent += part.messages_sent;
        self.messages_received += part.messages_received;
        self.duration_ms += part.duration_ms;
        for reason in part.rejections {
            self.keep_reason(reason);
        }
    }

    /// Keeps a reason that refuses nothing (a profile this node cannot
    /// read) while there is room.
    pub fn note(&mut self, reason: String) {
        self.keep_reason(reason);
    }

    fn keep_reason(&mut self, reason: String) {
        if self.rejections.len() < SUMMARY_REJECTIONS_MAX {
            self.rejections.push(reason);
        }
    }
}

/// The one-line account logs and the demo print.
impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.noop {
            return f.write_str("nothing to do");
        }
        write!(
            f,
            "sent {}, received {} (skipped {}, updated {}, merged {}, conflicts {}, rejected {})",
            self.sent, self.received, self.skipped, self.updated, self.merged, self.conflicts, self.rejected
        )
    }
}
