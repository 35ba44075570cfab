//! `NodeEvent`: what a serving node reports, to its log (`ferry serve`
//! prints each) and to watchers (`ferry watch`, the local API's `watch`),
//! through one broadcast channel. Typed inside; `to_json` is the one
//! rendering, whose field names docs/api.md lists.

use libp2p::{Multiaddr, PeerId};
use serde_json::json;

use crate::protocols::SyncOutcome;

#[derive(Clone, Debug)]
pub enum NodeEvent {
    Listening {
        address: String,
    },
    /// The HTTP API answers at this URL.
    Http {
        url: String,
    },
    Discovered {
        peer: PeerId,
        address: Multiaddr,
    },
    Connected {
        peer: PeerId,
        address: Multiaddr,
    },
    Disconnected {
        peer: PeerId,
    },
    /// A session a peer started ended well.
    Synced(SyncOutcome),
    SyncFailed {
        peer: PeerId,
        reason: String,
    },
    /// A blob stream a peer opened ended: what moved, and the failure if
    /// it ended with one (what moved before it stays).
    Blobs {
        peer: PeerId,
        report: crate::blob_sync::BlobReport,
        failure: Option<String>,
    },
    /// A sync `ferry.toml` schedules (`[[peer]]` with `every`).
    AutoSynced {
        name: String,
        outcome: SyncOutcome,
    },
    AutoSyncFailed {
        name: String,
        reason: String,
    },
    /// A session or enrolment turned away before it began.
    Refused {
        peer: PeerId,
        reason: String,
    },
    Enrolled {
        peer: PeerId,
    },
    EnrolmentRefused {
        peer: PeerId,
        reason: String,
    },
    /// A record a commit changed, from the change feed: what an app
    /// watching the node learns, whoever made the change.
    Changed {
        cursor: u64,
        key: engine::RecordKey,
        origin: String,
    },
    /// A sync this node started through the local API: its summary, or
    /// why it failed (`peer` as asked).
    ApiSync {
        peer: String,
        result: Result<serde_json::Value, String>,
    },
    /// A write through the local API: the request and its answer.
    Written {
        request: serde_json::Value,
        result: serde_json::Value,
    },
    /// A registration with a relay and rendezvous point, or why it failed.
    Registered {
        relay: Multiaddr,
        result: Result<(), String>,
    },
    /// A relay holds a slot for this node: peers reach it through there.
    Reserved {
        relay: PeerId,
    },
    ReservationFailed {
        relay: PeerId,
        reason: String,
    },
    /// What AutoNAT found: `public`, `private` or `unknown`.
    Reachability {
        reach: &'static str,
    },
    /// A relayed connection to `peer` became direct, or not.
    HolePunch {
        peer: PeerId,
        result: Result<(), String>,
    },
    /// What this node did as a relay: a slot or circuit given or refused.
    Relayed {
        what: &'static str,
        peer: PeerId,
        to: Option<PeerId>,
        refused: Option<String>,
    },
    Stopping,
    /// Sessions that did not finish within the shutdown grace.
    Abandoned {
        reason: String,
    },
    Stopped {
        note: Option<String>,
    },
}

impl NodeEvent {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            NodeEvent::Listening { address } => json!({ "event": "listening", "address": address }),
            NodeEvent::Http { url } => json!({ "event": "http", "url": url }),
            NodeEvent::Discovered { peer, address } => {
                json!({ "event": "discovered", "peer": peer.to_string(), "address": address.to_string() })
            }
            NodeEvent::Connected { peer, address } => {
                json!({ "event": "connected", "peer": peer.to_string(), "address": address.to_string() })
            }
            NodeEvent::Disconnected { peer } => json!({ "event": "disconnected", "peer": peer.to_string() }),
            NodeEvent::Synced(outcome) => {
                let mut value = outcome.to_json();
                value["event"] = json!("synced");
                value
            }
            NodeEvent::SyncFailed { peer, reason } => {
                json!({ "event": "sync_failed", "peer": peer.to_string(), "reason": reason })
            }
            NodeEvent::Blobs { peer, report, failure } => {
                let mut value = json!({ "event": "blobs", "peer": peer.to_string() });
                crate::json::add_fields(&mut value, serde_json::to_value(report).unwrap_or_default());
                if let Some(reason) = failure {
                    value["failure"] = json!(reason);
                }
                value
            }
            NodeEvent::AutoSynced { name, outcome } => {
                let mut value = outcome.to_json();
                value["event"] = json!("auto_synced");
                value["name"] = json!(name);
                value
            }
            NodeEvent::AutoSyncFailed { name, reason } => {
                json!({ "event": "auto_sync_failed", "peer": name, "reason": reason })
            }
            NodeEvent::Refused { peer, reason } => {
                json!({ "event": "refused", "peer": peer.to_string(), "reason": reason })
            }
            NodeEvent::Enrolled { peer } => json!({ "event": "enrolled", "peer": peer.to_string() }),
            NodeEvent::EnrolmentRefused { peer, reason } => {
                json!({ "event": "enrolment_refused", "peer": peer.to_string(), "reason": reason })
            }
            NodeEvent::Changed { cursor, key, origin } => json!({
                "event": "changed",
                "cursor": cursor,
                "type": key.record_type.as_str(),
                "id": key.id.as_str(),
                "partition": key.partition.to_string(),
                "origin": origin,
            }),
            NodeEvent::ApiSync { result: Ok(summary), .. } => {
                let mut value = summary.clone();
                value["event"] = json!("synced");
                value["started_by"] = json!("api");
                value
            }
            NodeEvent::ApiSync { peer, result: Err(reason) } => {
                json!({ "event": "sync_failed", "peer": peer, "reason": reason, "started_by": "api" })
            }
            NodeEvent::Written { request, result } => {
                json!({ "event": "written", "request": request, "result": result })
            }
            NodeEvent::Registered { relay, result: Ok(()) } => {
                json!({ "event": "registered", "relay": relay.to_string() })
            }
            NodeEvent::Registered { relay, result: Err(reason) } => {
                json!({ "event": "registration_failed", "relay": relay.to_string(), "reason": reason })
            }
            NodeEvent::Reserved { relay } => json!({ "event": "reserved", "relay": relay.to_string() }),
            NodeEvent::ReservationFailed { relay, reason } => {
                json!({ "event": "reservation_failed", "relay": relay.to_string(), "reason": reason })
            }
            NodeEvent::Reachability { reach } => json!({ "event": "reachability", "reach": reach }),
            NodeEvent::HolePunch { peer, result: Ok(()) } => {
                json!({ "event": "hole_punched", "peer": peer.to_string() })
            }
            NodeEvent::HolePunch { peer, result: Err(reason) } => {
                json!({ "event": "hole_punch_failed", "peer": peer.to_string(), "reason": reason })
            }
            NodeEvent::Relayed { what, peer, to, refused } => {
                let mut value = json!({ "event": "relay", "what": what, "peer": peer.to_string() });
                if let Some(to) = to {
                    value["to"] = json!(to.to_string());
                }
                if let Some(reason) = refused {
                    value["refused"] = json!(reason);
                }
                value
            }
            NodeEvent::Stopping => json!({ "event": "stopping" }),
            NodeEvent::Abandoned { reason } => json!({ "event": "abandoned", "reason": reason }),
            NodeEvent::Stopped { note: None } => json!({ "event": "stopped" }),
            NodeEvent::Stopped { note: Some(note) } => json!({ "event": "stopped", "note": note }),
        }
    }
}
