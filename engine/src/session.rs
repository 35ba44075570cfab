//! The sync session: a sans-IO state machine per session and peer, after
//! quinn-proto's `Connection`. Feed it what arrives (`handle_message`), tell
//! it the time (`handle_timeout`), give it spare time (`handle_idle`), then
//! drain `poll_transmit`, `poll_event` and `poll_timeout`. It has no IO, no
//! clock and no threads; what it needs of the store it asks through the
//! `SessionStore` seam (`session/seam.rs`) in the `Env` it is handed.
//!
//! `session/handshake.rs` holds the stages up to the frontiers,
//! `session/transfer.rs` the batches and completion, `session/outgoing.rs`
//! the send side's plan and batch building.
//!
//! Stages (docs/protocol.md has the diagram):
//! 1. **Handshake.** The initiator sends `Hello` (its credentials, by hash
//!    when the peer may know them, the filter, pull/push). The responder
//!    checks the credentials through the `Authorizer`, computes the regions
//!    that may flow each way and answers `Welcome` with its own credentials
//!    and a digest of its frontier in each region.
//! 2. **No-op fast path.** The initiator computes the same digests; if they
//!    are equal it sends `Done` and both are finished: one round trip.
//! 3. **Frontiers.** Otherwise the initiator sends its frontier in the
//!    region it receives (`Heads`); the responder answers with its own
//!    frontier in the region it receives, when the initiator pushes.
//! 4. **Transfer.** Each sender sends `Batch`es of what the other lacks,
//!    each acknowledged (`Ack`) after it is durably applied, then `End`.
//!    Up to `window` batches (1 by default, at most 2) are unacknowledged at
//!    once and the sender prepares the next meanwhile, so encoding overlaps
//!    the receiver's work (with 2, so does the transfer); an interrupted
//!    transfer resends at most the batches in flight.
//!
//! Every message may be lost, duplicated or reordered (the simulator does
//! all three): duplicates are answered idempotently, a retransmission timer
//! resends what is unacknowledged, and applying a batch twice is harmless.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use partitions::{Filter, RecordType, Scope};

use crate::authorize::{Authorizer, Verifier};
use crate::ids::{AuthorKey, Counter, InstanceId};
use crate::limits::SESSION_IDLE_TIMEOUT_MS;
use crate::region::Region;
use crate::report::SyncReport;
use crate::store::Triple;
use crate::wire::{self, DecodeError, Message, Plan};

mod handshake;
mod outgoing;
mod seam;
mod transfer;

pub use outgoing::{delta_frames, prove_runs};
use outgoing::{plan_outgoing, prepare_batch};
pub use seam::{FromPeer, SessionStore};

/// What a session needs to start.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub session: [u8; 16],
    /// The peer's key, as authenticated by the transport (Noise).
    pub peer: AuthorKey,
    /// This node's credentials (its certificate chain) for the org.
    pub credentials: Vec<u8>,
    /// What this node may read and write (from those credentials).
    pub local_scope: Scope,
    /// Initiator: what to sync. Responder: ignored (the initiator says).
    pub filter: Filter,
    /// Initiator: receive the responder's changes.
    pub pull: bool,
    /// Initiator: send this node's changes.
    pub push: bool,
    /// Initiator: the type rules that narrow this session. Responder:
    /// ignored (the initiator says).
    pub types: crate::region::TypeRules,
    pub batch_changes: usize,
    pub batch_bytes: usize,
    /// Batches this side keeps unacknowledged when sending, 1 to
    /// `limits::WINDOW_MAX` (clamped).
    pub window: usize,
    /// Resend unacknowledged messages after this long without hearing from
    /// the peer. `None` on reliable transports (libp2p streams).
    pub retransmit_ms: Option<u64>,
    /// Fail after this long without hearing from the peer.
    pub idle_timeout_ms: u64,
    /// A fresh instance id, used if the peer shows that this store went
    /// back in time.
    pub fresh_instance: InstanceId,
    /// Whether the peer is known to hold our credentials already (send the
    /// hash only).
    pub peer_has_credentials: bool,
    /// Wall-clock milliseconds at the start, for the ledger.
    pub started_at_ms: u64,
    /// Bytes the transport adds to every frame (a length prefix), counted
    /// in the summary and the ledger alike, so both say what crossed the
    /// wire.
    pub frame_overhead_bytes: u64,
}

impl SessionConfig {
    pub fn new(session: [u8; 16], peer: AuthorKey, credentials: Vec<u8>, local_scope: Scope) -> SessionConfig {
        SessionConfig {
            session,
            peer,
            credentials,
            local_scope,
            filter: Filter::empty(),
            pull: true,
            push: true,
            types: crate::region::TypeRules::default(),
            batch_changes: crate::limits::BATCH_CHANGES_DEFAULT,
            batch_bytes: crate::limits::BATCH_BYTES_DEFAULT,
            window: crate::limits::WINDOW_DEFAULT,
            retransmit_ms: None,
            idle_timeout_ms: SESSION_IDLE_TIMEOUT_MS,
            fresh_instance: InstanceId::default(),
            peer_has_credentials: false,
            started_at_ms: 0,
            frame_overhead_bytes: 0,
        }
    }
}

/// A frontier as a map from (partition, type, instance) to counter.
fn frontier_map(entries: Vec<wire::HeadEntry>) -> BTreeMap<Triple, Counter> {
    entries.into_iter().map(|e| ((e.partition, e.record_type, e.instance), e.counter)).collect()
}

/// What the driver hands the session on every call.
pub struct Env<'a> {
    pub store: &'a dyn SessionStore,
    pub auth: &'a dyn Authorizer,
    pub verifier: &'a dyn Verifier,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// Which way changes move, from this node's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Outgoing,
    Incoming,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer's credentials were accepted: this is what it may do.
    Authenticated {
        scope: Scope,
    },
    /// Transfer progress, with totals known from the start.
    Progress {
        direction: Direction,
        changes_done: u64,
        changes_total: u64,
        bytes_done: u64,
        bytes_total: u64,
    },
    /// The peer showed this store went back in time; it now writes under a
    /// fresh instance.
    InstanceChanged {
        reason: String,
    },
    Completed(SyncReport),
    Failed {
        error: SessionError,
        report: SyncReport,
    },
}

/// Why a session ended early.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("bad message from the peer: {0}")]
    Decode(DecodeError),
    #[error("refused the peer's credentials: {0}")]
    Refused(String),
    #[error("the peer aborted: {0}")]
    PeerAborted(String),
    #[error("protocol violation by the peer: {0}")]
    Protocol(String),
    #[error("no answer from the peer for {0} ms")]
    Timeout(u64),
    #[error("store failure: {0}")]
    Store(String),
    #[error("{0}")]
    Transport(String),
    #[error("{0}; this node now writes under a fresh instance, sync again")]
    Rewound(String),
}

struct Outgoing {
    region: Region,
    work: Vec<Work>,
    cursor: usize,
    position: Counter,
    next_seq: u64,
    /// The batches awaiting their acks, oldest first: (seq, frame,
    /// changes, bytes). At most the configured window.
    inflight: VecDeque<(u64, Vec<u8>, u64, u64)>,
    prepared: Option<(Vec<u8>, u64, u64)>,
    /// The records of the prepared batch's changes, in order, when
    /// `name_records` (the ledger has room to name them).
    prepared_records: Vec<crate::change::RecordKey>,
    name_records: bool,
    exhausted: bool,
    chains_sent: BTreeSet<AuthorKey>,
    plan: Plan,
    planned: bool,
    changes_done: u64,
    bytes_done: u64,
    end_frame: Option<Vec<u8>>,
    /// The peer's frontier in `region`, as it sent it for the plan.
    theirs: BTreeMap<Triple, Counter>,
    /// The last counter sent per triple: where the peer's frontier stands
    /// once every batch is acknowledged.
    sent: BTreeMap<Triple, Counter>,
}

impl Outgoing {
    /// Nothing planned yet: the plan comes with the peer's frontier.
    fn new(region: Region) -> Outgoing {
        Outgoing {
            region,
            work: Vec::new(),
            cursor: 0,
            position: 0,
            next_seq: 0,
            inflight: VecDeque::new(),
            prepared: None,
            prepared_records: Vec::new(),
            name_records: true,
            exhausted: false,
            chains_sent: BTreeSet::new(),
            plan: Plan::default(),
            planned: false,
            changes_done: 0,
            bytes_done: 0,
            end_frame: None,
            theirs: BTreeMap::new(),
            sent: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug)]
struct Work {
    partition: partitions::Partition,
    record_type: RecordType,
    instance: InstanceId,
    after: Counter,
    upto: Counter,
}

struct Incoming {
    region: Region,
    positions: BTreeMap<Triple, Counter>,
    expected_seq: u64,
    plan: Plan,
    changes_done: u64,
    bytes_done: u64,
    ended: bool,
    last_ack: Option<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Initiator: Hello sent, awaiting Welcome.
    AwaitWelcome,
    /// Responder: awaiting Hello.
    AwaitHello,
    /// Handshake done: frontiers and batches.
    Transfer,
    Completed,
    Failed,
}

pub struct Session {
    role: Role,
    config: SessionConfig,
    stage: Stage,
    peer_scope: Option<Scope>,
    filter: Filter,
    types: crate::region::TypeRules,
    pull: bool,
    push: bool,
    out: Option<Outgoing>,
    inc: Option<Incoming>,
    /// The last handshake message sent (Hello, Welcome, Heads or Done).
    handshake: Option<Vec<u8>>,
    /// Initiator: its Heads went out. Responder: the initiator's arrived.
    heads_exchanged: bool,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    report: SyncReport,
    last_heard_ms: u64,
    last_sent_ms: u64,
    last_incoming: Option<[u8; 32]>,
    credentials_sent_full: bool,
    ledger_written: bool,
    /// The records the batches carried, for the ledger.
    moved: crate::ledger::MovedRecords,
    /// What the peer is known to hold, durably, of the region this node
    /// sends, once the session settled it (`Session::peer_holds`).
    peer_holds: Option<BTreeMap<Triple, Counter>>,
}

impl Session {
    /// Starts a session that asks `config.peer` to sync `config.filter`.
    pub fn initiate(config: SessionConfig, now_ms: u64) -> Session {
        let mut session = Session::new(Role::Initiator, config, now_ms);
        session.filter = session.config.filter.clone();
        session.types = session.config.types.clone();
        session.pull = session.config.pull;
        session.push = session.config.push;
        session.send_hello(!session.config.peer_has_credentials);
        session
    }

    /// Answers a session the peer starts.
    pub fn accept(config: SessionConfig, now_ms: u64) -> Session {
        Session::new(Role::Responder, config, now_ms)
    }

    fn new(role: Role, config: SessionConfig, now_ms: u64) -> Session {
        Session {
            role,
            stage: if role == Role::Initiator { Stage::AwaitWelcome } else { Stage::AwaitHello },
            config,
            peer_scope: None,
            filter: Filter::empty(),
            types: crate::region::TypeRules::default(),
            pull: false,
            push: false,
            out: None,
            inc: None,
            handshake: None,
            heads_exchanged: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            report: SyncReport::default(),
            last_heard_ms: now_ms,
            last_sent_ms: now_ms,
            last_incoming: None,
            credentials_sent_full: false,
            ledger_written: false,
            moved: crate::ledger::MovedRecords::default(),
            peer_holds: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Completed | Stage::Failed)
    }

    /// What the session did so far (final once it is finished).
    pub fn report(&self) -> &SyncReport {
        &self.report
    }

    pub fn peer_scope(&self) -> Option<&Scope> {
        self.peer_scope.as_ref()
    }

    /// The filter being synced (the initiator's, once the responder heard it).
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The type rules narrowing this session (the initiator's).
    pub fn types(&self) -> &crate::region::TypeRules {
        &self.types
    }

    /// After a completed session, the peer's frontier in the region this
    /// node sends it, as far as the session proved it: the frontier the
    /// peer showed (or the digest it matched), raised to the last change
    /// this node sent of each (partition, type, instance), which the peer
    /// acknowledged after applying it.
    /// `None` when the session did not send (a pull-only sync) or did not
    /// complete: then it proved nothing of what the peer holds. A change
    /// written here during the session is never claimed, and when the peer
    /// refused any change it is raised by nothing it was sent.
    pub fn peer_holds(&self) -> Option<Vec<wire::HeadEntry>> {
        if self.stage != Stage::Completed {
            return None;
        }
        let held = self.peer_holds.as_ref()?;
        Some(
            held.iter()
                .map(|((partition, record_type, instance), counter)| wire::HeadEntry {
                    partition: partition.clone(),
                    record_type: record_type.clone(),
                    instance: *instance,
                    counter: *counter,
                })
                .collect(),
        )
    }

    /// What this node may do in the session.
    pub fn local_scope(&self) -> &Scope {
        &self.config.local_scope
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.is_finished() {
            return None;
        }
        let idle = self.last_heard_ms.saturating_add(self.config.idle_timeout_ms);
        Some(match self.config.retransmit_ms {
            Some(r) => idle.min(self.last_sent_ms.max(self.last_heard_ms).saturating_add(r)),
            None => idle,
        })
    }

    pub fn handle_timeout(&mut self, now_ms: u64, env: &Env<'_>) {
        if self.is_finished() {
            return;
        }
        if now_ms.saturating_sub(self.last_heard_ms) >= self.config.idle_timeout_ms {
            self.fail(SessionError::Timeout(now_ms - self.last_heard_ms), now_ms, env, false);
            return;
        }
        if let Some(r) = self.config.retransmit_ms
            && now_ms.saturating_sub(self.last_sent_ms.max(self.last_heard_ms)) >= r
        {
            self.retransmit();
            self.last_sent_ms = now_ms;
        }
    }

    /// The driver lost the connection (or gave up on it): the session fails
    /// with `reason`, recorded in the ledger; nothing is sent.
    pub fn abandon(&mut self, now_ms: u64, reason: String, env: &Env<'_>) {
        self.fail(SessionError::Transport(reason), now_ms, env, false);
    }

    /// Does work that can wait: prepares the next batch while one is in
    /// flight. Drivers call it after sending what `poll_transmit` gave.
    pub fn handle_idle(&mut self, _now_ms: u64, env: &Env<'_>) {
        if self.stage != Stage::Transfer {
            return;
        }
        if let Some(out) = &mut self.out
            && out.planned
            && out.prepared.is_none()
            && !out.exhausted
            && let Err(e) = prepare_batch(out, &self.config, env)
        {
            let now = self.last_heard_ms;
            self.fail(SessionError::Store(e), now, env, true);
            return;
        }
        // What was just prepared goes out if the window has room.
        if let Err(e) = self.fill_window(env) {
            let now = self.last_heard_ms;
            self.fail(e, now, env, true);
        }
    }

    /// Handles one frame from the peer.
    pub fn handle_message(&mut self, now_ms: u64, frame: &[u8], env: &Env<'_>) {
        self.last_heard_ms = now_ms;
        self.report.bytes_received += frame.len() as u64 + self.config.frame_overhead_bytes;
        self.report.messages_received += 1;
        if self.stage == Stage::Failed {
            return;
        }
        let digest = *blake3::hash(frame).as_bytes();
        let duplicate = self.last_incoming == Some(digest);
        self.last_incoming = Some(digest);
        let message = match wire::decode_message(frame) {
            Ok(m) => m,
            Err(e) => {
                self.fail(SessionError::Decode(e), now_ms, env, true);
                return;
            }
        };
        let result = match message {
            Message::Hello(hello) => self.on_hello(hello, duplicate, now_ms, env),
            Message::Welcome(welcome) => self.on_welcome(welcome, duplicate, now_ms, env),
            Message::NeedCredentials => self.on_need_credentials(),
            Message::Heads(heads) => self.on_heads(heads, duplicate, now_ms, env),
            Message::Batch(batch) => self.on_batch(batch, frame.len() as u64, now_ms, env),
            Message::Ack { seq, rejected } => self.on_ack(seq, rejected, now_ms, env),
            Message::End { batches } => self.on_end(batches),
            Message::Done => self.on_done(),
            Message::Abort { reason } => Err(SessionError::PeerAborted(reason)),
        };
        match result {
            Ok(()) => self.check_complete(now_ms, env),
            Err(error) => {
                let tell = !matches!(error, SessionError::PeerAborted(_));
                self.fail(error, now_ms, env, tell);
            }
        }
    }
}
