//! How far behind a peer is, for the status and the console: the changes
//! this node holds, of the region that may flow to the peer, that the
//! peer is not proven to hold (`frontier:<org>`, the note a completed sync
//! leaves; `protocols::remember_frontier`).

use engine::wire::{self, Message};
use engine::{AuthorKey, Region};
use partitions::Filter;
use serde::Serialize;

use super::Node;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Lag {
    /// Changes of ours the peer lacks, summed over the orgs both belong
    /// to: an upper bound, as a change a later one replaced counts too.
    pub changes: u64,
    /// Orgs with no sync on record with the peer: their changes are not
    /// counted (the peer may hold all or none).
    pub unknown_orgs: Vec<String>,
}

impl Node {
    /// The lag of `peer`, or `None` when it shares no org with this node.
    pub fn lag(&self, peer: &AuthorKey) -> anyhow::Result<Option<Lag>> {
        let mut lag = Lag::default();
        let mut shared = false;
        let chains = self.store.chains_of(peer)?;
        for org in self.orgs()? {
            let Some(receiver) = chains
                .iter()
                .filter_map(|chain| self.auth.know(chain).ok())
                .find(|known| known.org == org)
                .map(|known| known.scope.clone())
            else {
                continue;
            };
            shared = true;
            let note = self.store.peer_note(peer, &format!("frontier:{org}"))?;
            let held = match note.as_deref().map(wire::decode_message) {
                Some(Ok(Message::Heads(heads))) => heads.entries,
                _ => {
                    lag.unknown_orgs.push(org.to_string());
                    continue;
                }
            };
            let (local, _, _) = self.local_scope(org)?;
            let region = Region::between(&Filter::org(org), &local, &receiver);
            for ours in self.store.heads(&region)? {
                let theirs = held
                    .iter()
                    .find(|e| {
                        e.partition == ours.partition
                            && e.record_type == ours.record_type
                            && e.instance == ours.instance
                    })
                    .map_or(0, |e| e.counter);
                lag.changes += ours.counter.saturating_sub(theirs);
            }
        }
        Ok(shared.then_some(lag))
    }
}
