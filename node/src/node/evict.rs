//! Push once, then evict (SPEC §6.2): on a node whose certificate gives a
//! type `wo`, a record of a type the org's profile marks
//! `evict-after-ack:TAG` is removed once a peer whose certificate carries
//! authority TAG durably acknowledged all of it (`engine::store::evict`).
//!
//! The acknowledgement is what a completed session proved the peer holds,
//! kept as the peer's `frontier:<org>` note in the same step that ends the
//! sync; the eviction follows it. A crash in between loses nothing: the
//! record is still here, and the eviction runs again when the node opens.

use std::collections::{BTreeMap, BTreeSet};

use partitions::{RecordType, TypeMode};

use super::*;

impl Node {
    /// Evicts, in every org, what its acknowledging peers hold.
    pub fn evict_all(&self) {
        let Ok(orgs) = self.orgs() else { return };
        for org in orgs {
            if let Err(e) = self.evict_acknowledged(org) {
                tracing::warn!("cannot evict the records acknowledged in org {org}: {e}");
            }
        }
    }

    /// Evicts the records of `org` that may go: returns how many went.
    pub fn evict_acknowledged(&self, org: OrgId) -> anyhow::Result<u64> {
        let Ok((scope, _, _)) = self.local_scope(org) else { return Ok(0) };
        let profile = self.store.profile(org)?;
        // The write-only types to evict, by the authority that acknowledges.
        let mut by_tag: BTreeMap<&str, BTreeSet<RecordType>> = BTreeMap::new();
        for (name, policy) in profile.types() {
            let (Some(tag), Ok(record_type)) = (&policy.evict_after_ack, RecordType::parse(name)) else { continue };
            if scope.mode(&record_type) == TypeMode::WriteOnly {
                by_tag.entry(tag.as_str()).or_default().insert(record_type);
            }
        }
        let mut evicted = 0;
        let started_at_ms = now_ms();
        let mut tags = Vec::new();
        for (tag, types) in by_tag {
            let acknowledges = |peer: &AuthorKey| {
                self.store.chains_of(peer).unwrap_or_default().iter().any(|bytes| {
                    self.auth.know(bytes).is_ok_and(|k| k.org == org && k.authority.as_deref() == Some(tag))
                })
            };
            let acked = self.store.held_by(&format!("frontier:{org}"), &acknowledges)?;
            if acked.is_empty() {
                continue;
            }
            let evicts = |partition: &partitions::Partition, record_type: &RecordType| {
                types.contains(record_type) && scope.write.contains(partition)
            };
            let went = self.store.evict_acknowledged(org, &evicts, &acked)?;
            if went > 0 {
                tags.push(tag);
            }
            evicted += went;
        }
        if evicted > 0 {
            let records = if evicted == 1 { "1 record".to_owned() } else { format!("{evicted} records") };
            let entry = engine::LedgerEntry {
                session: partitions::hex::encode(&crate::random::bytes::<16>()),
                peer: partitions::hex::encode(&self.identity.author_key().0),
                via: "evict".into(),
                started_at_ms,
                outcome: format!(
                    "completed: evicted {records}, acknowledged by a peer with authority {}",
                    tags.join(" or ")
                ),
                filter: org.to_string(),
                purged: evicted,
                ..Default::default()
            };
            self.store.record_session(&entry)?;
        }
        Ok(evicted)
    }
}
