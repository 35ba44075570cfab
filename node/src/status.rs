//! `Status`: a snapshot of a serving node: who it is, where it listens,
//! the peers it knows with their last sync, and the sessions in flight with
//! their progress. The drivers keep it current (serve's network events,
//! every session's events) in a `tokio::sync::watch` channel, so a reader
//! (`ferry status`, the local API's `status`; the HTTP API and the console
//! next) gets the latest at once, and can wait for the next change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use engine::{Direction, Event, Role, SyncReport};
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use tokio::sync::watch;

use crate::node::{CertificateInfo, iso8601_ms, now_ms};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Status {
    pub peer_id: String,
    pub instance_id: String,
    pub listening: Vec<String>,
    /// The orgs this node belongs to; filled in when the snapshot is read.
    pub orgs: Vec<String>,
    /// Filled in when the snapshot is read (`Node::certificate`).
    pub certificates: Vec<CertificateInfo>,
    /// By peer id.
    pub peers: BTreeMap<String, PeerStatus>,
    pub sessions: Vec<SessionStatus>,
    /// The change feed's newest cursor; filled in when the snapshot is read.
    pub feed_cursor: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PeerStatus {
    /// The name in its certificate, once this node holds its chain (from
    /// a session with it); filled in when the snapshot is read.
    pub name: Option<String>,
    pub connected: bool,
    /// Where it was found (mDNS) or dialed: addresses to dial it at.
    pub addresses: Vec<String>,
    pub last_sync: Option<LastSync>,
    /// What it lacks of ours (`Node::lag`); filled in when the snapshot is
    /// read, `None` for a peer that shares no org with this node.
    pub lag: Option<crate::node::Lag>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LastSync {
    /// When it ended (ISO 8601).
    pub at: String,
    /// `completed`, `no-op` or `failed: <reason>`.
    pub outcome: String,
    pub report: Option<SyncReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionStatus {
    /// Unique among this node's sessions while it runs.
    pub key: u64,
    pub peer: String,
    /// `initiator` or `responder`.
    pub role: &'static str,
    pub started_at: String,
    pub sent: Progress,
    pub received: Progress,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub changes_done: u64,
    pub changes_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// The writer side of the snapshot.
pub struct StatusBoard {
    tx: watch::Sender<Status>,
    next_key: AtomicU64,
}

impl StatusBoard {
    pub fn new(peer_id: String, instance_id: String) -> Arc<StatusBoard> {
        let (tx, _) = watch::channel(Status { peer_id, instance_id, ..Status::default() });
        Arc::new(StatusBoard { tx, next_key: AtomicU64::new(1) })
    }

    pub fn snapshot(&self) -> Status {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.tx.subscribe()
    }

    pub fn listening(&self, addresses: Vec<String>) {
        self.tx.send_modify(|s| s.listening = addresses);
    }

    fn peer(&self, peer: &PeerId, change: impl FnOnce(&mut PeerStatus)) {
        self.tx.send_modify(|s| change(s.peers.entry(peer.to_string()).or_default()));
    }

    fn seen_at(status: &mut PeerStatus, address: &Multiaddr) {
        let address = address.to_string();
        if !status.addresses.contains(&address) {
            status.addresses.push(address);
        }
    }

    pub fn discovered(&self, peer: &PeerId, address: &Multiaddr) {
        self.peer(peer, |p| Self::seen_at(p, address));
    }

    /// `address` only when this node dialed it: a peer that dialed in did
    /// so from a port nobody can dial back.
    pub fn connected(&self, peer: &PeerId, address: Option<&Multiaddr>) {
        self.peer(peer, |p| {
            p.connected = true;
            if let Some(address) = address {
                Self::seen_at(p, address);
            }
        });
    }

    pub fn disconnected(&self, peer: &PeerId) {
        self.peer(peer, |p| p.connected = false);
    }

    /// A session starts: it shows among the sessions until the returned
    /// watch is dropped, however the session ends.
    pub fn session(self: &Arc<Self>, peer: PeerId, role: Role) -> SessionWatch {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let role = match role {
            Role::Initiator => "initiator",
            Role::Responder => "responder",
        };
        self.tx.send_modify(|s| {
            s.sessions.push(SessionStatus {
                key,
                peer: peer.to_string(),
                role,
                started_at: iso8601_ms(now_ms()),
                sent: Progress::default(),
                received: Progress::default(),
            });
        });
        SessionWatch { board: self.clone(), key, peer }
    }
}

/// One session on the board.
pub struct SessionWatch {
    board: Arc<StatusBoard>,
    key: u64,
    peer: PeerId,
}

impl SessionWatch {
    /// Takes in a session event (progress).
    pub fn event(&self, event: &Event) {
        if let Event::Progress { direction, changes_done, changes_total, bytes_done, bytes_total } = *event {
            let progress = Progress { changes_done, changes_total, bytes_done, bytes_total };
            self.board.tx.send_modify(|s| {
                if let Some(session) = s.sessions.iter_mut().find(|x| x.key == self.key) {
                    match direction {
                        Direction::Outgoing => session.sent = progress,
                        Direction::Incoming => session.received = progress,
                    }
                }
            });
        }
    }

    /// The session ended: its peer's last sync, then off the board.
    pub fn finished<E: std::fmt::Display>(self, result: Result<&SyncReport, E>) {
        let last = match result {
            Ok(report) => LastSync {
                at: iso8601_ms(now_ms()),
                outcome: if report.noop { "no-op" } else { "completed" }.to_owned(),
                report: Some(report.clone()),
            },
            Err(e) => LastSync { at: iso8601_ms(now_ms()), outcome: format!("failed: {e:#}"), report: None },
        };
        self.board.peer(&self.peer, |p| p.last_sync = Some(last));
    }
}

impl Drop for SessionWatch {
    fn drop(&mut self) {
        self.board.tx.send_modify(|s| s.sessions.retain(|x| x.key != self.key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        crate::identity::peer_id_of(key.verifying_key().as_bytes())
    }

    #[test]
    fn a_session_shows_its_progress_and_leaves_its_outcome_when_it_ends() {
        let board = StatusBoard::new("me".into(), "instance".into());
        let watch = board.session(peer(), Role::Initiator);
        watch.event(&Event::Progress {
            direction: Direction::Incoming,
            changes_done: 3,
            changes_total: 10,
            bytes_done: 30,
            bytes_total: 100,
        });
        let now = board.snapshot();
        assert_eq!(now.sessions.len(), 1);
        assert_eq!(now.sessions[0].role, "initiator");
        assert_eq!(
            now.sessions[0].received,
            Progress { changes_done: 3, changes_total: 10, bytes_done: 30, bytes_total: 100 }
        );
        let report = SyncReport { received: 10, ..SyncReport::default() };
        watch.finished(Ok::<_, String>(&report));
        let after = board.snapshot();
        assert!(after.sessions.is_empty(), "the session left the board");
        let last = after.peers[&peer().to_string()].last_sync.clone().expect("a last sync");
        assert_eq!((last.outcome.as_str(), last.report), ("completed", Some(report)));
    }

    #[test]
    fn a_session_that_ends_without_a_word_still_leaves_the_board() {
        let board = StatusBoard::new("me".into(), "instance".into());
        drop(board.session(peer(), Role::Responder));
        assert!(board.snapshot().sessions.is_empty());
        let watch = board.session(peer(), Role::Responder);
        watch.finished(Err::<&SyncReport, _>("connection lost"));
        let last = board.snapshot().peers[&peer().to_string()].last_sync.clone().expect("a last sync");
        assert_eq!(last.outcome, "failed: connection lost");
    }
}
