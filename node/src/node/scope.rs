//! Scope shrink (SPEC §6.2): when this node's own scope in an org narrows
//! (a narrower certificate took over, or its certificate was revoked or
//! expired), the records it may no longer hold are purged from its store,
//! and the ledger says how many (`engine::store::purge`).
//!
//! The check is cheap when nothing changed: the scope last purged for is
//! kept as a digest (`marker scope:<org>`), and a purge runs only when the
//! scope in force differs. It runs when the node opens, after a certificate
//! is stored, and after each completed sync or bundle import (which may
//! bring a revocation).

use partitions::{Partition, RecordType, Scope};

use super::*;

/// What this node holds in an org, as far as a purge is concerned.
enum Standing {
    /// A valid certificate with this scope.
    Scoped(Scope),
    /// Revoked or expired: nothing but the org's own partition.
    Nothing(String),
    /// Nothing is known for sure (no certificate, or a clock before its
    /// start): purge nothing.
    Unknown,
}

impl Node {
    /// Checks every org this node holds a certificate of.
    pub fn check_scopes(&self) {
        let Ok(orgs) = self.orgs() else { return };
        for org in orgs {
            if let Err(e) = self.check_scope(org) {
                tracing::warn!("cannot purge what this node may no longer read in org {org}: {e}");
            }
        }
    }

    /// Purges what this node may no longer hold in `org`, if its scope
    /// changed since the last check. Returns the records purged.
    pub fn check_scope(&self, org: OrgId) -> anyhow::Result<u64> {
        let standing = match self.local_scope(org) {
            Ok((scope, _, _)) => Standing::Scoped(scope),
            Err(e) => match e.downcast_ref::<NoChain>() {
                Some(NoChain::Expired { .. }) | Some(NoChain::Invalid { .. }) => Standing::Nothing(e.to_string()),
                _ => Standing::Unknown,
            },
        };
        let digest = match &standing {
            Standing::Scoped(scope) => *blake3::hash(format!("{scope:?}").as_bytes()).as_bytes(),
            Standing::Nothing(_) => [0; 32],
            Standing::Unknown => return Ok(0),
        };
        // The marker: the digest of the scope last purged for, and how many
        // records that purge had to keep (they are looked at again).
        let marker = format!("scope:{org}");
        let last = self.store.marker(&marker)?;
        let last_kept = last
            .as_deref()
            .filter(|m| m.len() == 40 && m[..32] == digest)
            .map(|m| u64::from_be_bytes(m[32..].try_into().expect("8 bytes")));
        if last_kept == Some(0) {
            return Ok(0);
        }
        let system = engine::policy::system_partition(org);
        let holds = |partition: &Partition, record_type: &RecordType| {
            system.contains(partition)
                || match &standing {
                    Standing::Scoped(scope) => scope.may_hold(partition, record_type),
                    _ => false,
                }
        };
        let own = self.store.instances()?.into_iter().map(|(id, _, _)| id).collect();
        let held = self.store.held_by_peers(&format!("frontier:{org}"))?;
        let started_at_ms = now_ms();
        let purged = self.store.purge_outside(org, &holds, &own, &held)?;
        if purged.records > 0 || (purged.kept > 0 && last_kept != Some(purged.kept)) {
            let why = match &standing {
                Standing::Nothing(reason) => format!("this node may no longer read the org ({reason})"),
                _ => "this node's read scope shrank".to_owned(),
            };
            let records = |n: u64| if n == 1 { "1 record".to_owned() } else { format!("{n} records") };
            let mut outcome = format!("completed: purged {}, as {why}", records(purged.records));
            if purged.kept > 0 {
                outcome.push_str(&format!(
                    "; kept {} outside it that hold changes written here no peer is known to hold",
                    records(purged.kept)
                ));
            }
            let entry = engine::LedgerEntry {
                session: partitions::hex::encode(&crate::random::bytes::<16>()),
                peer: partitions::hex::encode(&self.identity.author_key().0),
                via: "scope".into(),
                started_at_ms,
                outcome,
                filter: org.to_string(),
                purged: purged.records,
                ..Default::default()
            };
            self.store.record_session(&entry)?;
        }
        let mut value = digest.to_vec();
        value.extend_from_slice(&purged.kept.to_be_bytes());
        self.store.set_marker(&marker, &value)?;
        Ok(purged.records)
    }
}
