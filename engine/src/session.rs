//! The sync session: a sans-IO state machine per session and peer, after
//! quinn-proto's `Connection`. Feed it what arrives (`handle_message`), tell
//! it the time (`handle_timeout`), give it spare time (`handle_idle`), then
//! drain `poll_transmit`, `poll_event` and `poll_timeout`. It has no IO, no
//! clock and no threads; it reads and writes the store it is handed.
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
use crate::ledger::LedgerEntry;
use crate::limits::{SESSION_IDLE_TIMEOUT_MS, SUMMARY_REJECTIONS_MAX};
use crate::region::Region;
use crate::store::{ApplyError, Store, Triple};
use crate::wire::{
    self, Batch, Credentials, DecodeError, Group, GroupChange, HeadEntry, Heads, Hello, Message, Plan, Welcome,
};

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

/// What the driver hands the session on every call.
pub struct Env<'a> {
    pub store: &'a Store,
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

/// Totals of a session (SPEC §4's sync summary).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub sent: u64,
    pub received: u64,
    pub skipped: u64,
    pub updated: u64,
    pub merged: u64,
    pub conflicts: u64,
    pub rejected: u64,
    /// Changes this node sent that the peer refused.
    pub rejected_by_peer: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub duration_ms: u64,
    pub noop: bool,
    pub rejections: Vec<String>,
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
    Completed(Summary),
    Failed {
        error: SessionError,
        summary: Summary,
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
    exhausted: bool,
    chains_sent: BTreeSet<AuthorKey>,
    plan: Plan,
    planned: bool,
    changes_done: u64,
    bytes_done: u64,
    end_frame: Option<Vec<u8>>,
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
    summary: Summary,
    last_heard_ms: u64,
    last_sent_ms: u64,
    last_incoming: Option<[u8; 32]>,
    credentials_sent_full: bool,
    ledger_written: bool,
}

impl Session {
    /// Starts a session that asks `config.peer` to sync `config.filter`.
    pub fn initiate(config: SessionConfig, now_ms: u64) -> Session {
        let mut session = Session::new(Role::Initiator, config, now_ms);
        session.filter = session.config.filter.clone();
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
            pull: false,
            push: false,
            out: None,
            inc: None,
            handshake: None,
            heads_exchanged: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            summary: Summary::default(),
            last_heard_ms: now_ms,
            last_sent_ms: now_ms,
            last_incoming: None,
            credentials_sent_full: false,
            ledger_written: false,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Completed | Stage::Failed)
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    pub fn peer_scope(&self) -> Option<&Scope> {
        self.peer_scope.as_ref()
    }

    /// The filter being synced (the initiator's, once the responder heard it).
    pub fn filter(&self) -> &Filter {
        &self.filter
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
        self.summary.bytes_received += frame.len() as u64 + self.config.frame_overhead_bytes;
        self.summary.messages_received += 1;
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

    // -- handshake ----------------------------------------------------------

    fn credentials(&mut self, full: bool) -> Credentials {
        if full {
            self.credentials_sent_full = true;
            Credentials::Full(self.config.credentials.clone())
        } else {
            Credentials::Hash(*blake3::hash(&self.config.credentials).as_bytes())
        }
    }

    fn send_hello(&mut self, full: bool) {
        let hello = Hello {
            session: self.config.session,
            credentials: self.credentials(full),
            filter: self.filter.clone(),
            pull: self.pull,
            push: self.push,
        };
        let frame = wire::encode_message(&Message::Hello(hello));
        self.handshake = Some(frame.clone());
        self.send(frame);
    }

    /// Resolves credentials to bytes: whole, or by hash from the store.
    fn resolve(credentials: &Credentials, env: &Env<'_>) -> Result<Option<Vec<u8>>, SessionError> {
        match credentials {
            Credentials::Full(bytes) => Ok(Some(bytes.clone())),
            Credentials::Hash(hash) => env.store.chain(hash).map_err(|e| SessionError::Store(e.to_string())),
        }
    }

    fn authenticate(&mut self, chain: &[u8], now_ms: u64, env: &Env<'_>) -> Result<Scope, SessionError> {
        let scope =
            env.auth.authenticate(&self.config.peer, chain, now_ms / 1000).map_err(|d| SessionError::Refused(d.0))?;
        env.store.put_chain(&self.config.peer, chain).map_err(|e| SessionError::Store(e.to_string()))?;
        self.peer_scope = Some(scope.clone());
        self.events.push_back(Event::Authenticated { scope: scope.clone() });
        Ok(scope)
    }

    fn on_hello(&mut self, hello: Hello, duplicate: bool, now_ms: u64, env: &Env<'_>) -> Result<(), SessionError> {
        if self.role != Role::Responder {
            return Err(SessionError::Protocol("Hello sent to the initiator".into()));
        }
        if self.stage != Stage::AwaitHello {
            if duplicate {
                self.resend_handshake();
            }
            return Ok(());
        }
        self.config.session = hello.session;
        let Some(chain) = Self::resolve(&hello.credentials, env)? else {
            self.send(wire::encode_message(&Message::NeedCredentials));
            return Ok(());
        };
        let peer_scope = self.authenticate(&chain, now_ms, env)?;
        self.filter = hello.filter;
        self.pull = hello.pull;
        self.push = hello.push;
        // What the initiator asked for, for the ledger.
        self.config.pull = hello.pull;
        self.config.push = hello.push;
        let local = self.config.local_scope.clone();
        // The responder sends on "pull" and receives on "push".
        let out_region = Region::between(&self.filter, &local, &peer_scope);
        let in_region = Region::between(&self.filter, &peer_scope, &local);
        let store_err = |e: crate::store::StoreError| SessionError::Store(e.to_string());
        let digest_pull = env.store.digest(&out_region).map_err(store_err)?;
        let digest_push = env.store.digest(&in_region).map_err(store_err)?;
        self.prepare_directions(out_region, in_region);
        let full = !self.credentials_sent_full && !matches!(hello.credentials, Credentials::Hash(_));
        let welcome = Welcome { credentials: self.credentials(full), digest_pull, digest_push };
        let frame = wire::encode_message(&Message::Welcome(welcome));
        self.handshake = Some(frame.clone());
        self.send(frame);
        self.stage = Stage::Transfer;
        Ok(())
    }

    fn on_need_credentials(&mut self) -> Result<(), SessionError> {
        match (self.role, self.stage) {
            (Role::Initiator, Stage::AwaitWelcome) => {
                self.send_hello(true);
                Ok(())
            }
            (Role::Responder, Stage::Transfer) => {
                // Re-send the Welcome with our chain in full.
                if let Some(frame) = self.handshake.clone()
                    && let Ok(Message::Welcome(mut welcome)) = wire::decode_message(&frame)
                {
                    welcome.credentials = self.credentials(true);
                    let frame = wire::encode_message(&Message::Welcome(welcome));
                    self.handshake = Some(frame.clone());
                    self.send(frame);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_welcome(
        &mut self,
        welcome: Welcome,
        duplicate: bool,
        now_ms: u64,
        env: &Env<'_>,
    ) -> Result<(), SessionError> {
        if self.role != Role::Initiator {
            return Err(SessionError::Protocol("Welcome sent to the responder".into()));
        }
        if self.stage != Stage::AwaitWelcome {
            if duplicate {
                self.resend_handshake();
            }
            return Ok(());
        }
        let Some(chain) = Self::resolve(&welcome.credentials, env)? else {
            self.send(wire::encode_message(&Message::NeedCredentials));
            return Ok(());
        };
        let peer_scope = self.authenticate(&chain, now_ms, env)?;
        let local = self.config.local_scope.clone();
        let in_region = Region::between(&self.filter, &peer_scope, &local);
        let out_region = Region::between(&self.filter, &local, &peer_scope);
        let store_err = |e: crate::store::StoreError| SessionError::Store(e.to_string());
        let same_pull = !self.pull || env.store.digest(&in_region).map_err(store_err)? == welcome.digest_pull;
        let same_push = !self.push || env.store.digest(&out_region).map_err(store_err)? == welcome.digest_push;
        self.stage = Stage::Transfer;
        if same_pull && same_push {
            let frame = wire::encode_message(&Message::Done);
            self.handshake = Some(frame.clone());
            self.send(frame);
            self.summary.noop = true;
            self.pull = false;
            self.push = false;
            return Ok(());
        }
        self.pull &= !same_pull;
        self.push &= !same_push;
        self.prepare_directions(out_region, in_region);
        // Our frontier where we receive, so the responder can send; sent even
        // when we only push, as the signal to answer with its frontier.
        let mut heads = if self.pull { self.own_heads(env)? } else { Heads::default() };
        heads.pull = self.pull;
        heads.push = self.push;
        let frame = wire::encode_message(&Message::Heads(heads));
        self.handshake = Some(frame.clone());
        self.send(frame);
        self.heads_exchanged = true;
        Ok(())
    }

    fn on_done(&mut self) -> Result<(), SessionError> {
        if self.role == Role::Responder && self.stage == Stage::Transfer {
            self.summary.noop = true;
            self.pull = false;
            self.push = false;
            self.out = None;
            self.inc = None;
        }
        Ok(())
    }

    fn prepare_directions(&mut self, out_region: Region, in_region: Region) {
        let sends = match self.role {
            Role::Initiator => self.push,
            Role::Responder => self.pull,
        };
        let receives = match self.role {
            Role::Initiator => self.pull,
            Role::Responder => self.push,
        };
        self.out = sends.then(|| Outgoing {
            region: out_region,
            work: Vec::new(),
            cursor: 0,
            position: 0,
            next_seq: 0,
            inflight: VecDeque::new(),
            prepared: None,
            exhausted: false,
            chains_sent: BTreeSet::new(),
            plan: Plan::default(),
            planned: false,
            changes_done: 0,
            bytes_done: 0,
            end_frame: None,
        });
        self.inc = receives.then(|| Incoming {
            region: in_region,
            positions: BTreeMap::new(),
            expected_seq: 0,
            plan: Plan::default(),
            changes_done: 0,
            bytes_done: 0,
            ended: false,
            last_ack: None,
        });
    }

    fn own_heads(&mut self, env: &Env<'_>) -> Result<Heads, SessionError> {
        let Some(inc) = &mut self.inc else {
            return Ok(Heads::default());
        };
        let entries = env.store.heads(&inc.region).map_err(|e| SessionError::Store(e.to_string()))?;
        for e in &entries {
            inc.positions.insert((e.partition.clone(), e.record_type.clone(), e.instance), e.counter);
        }
        Ok(Heads { pull: false, push: false, entries })
    }

    fn on_heads(&mut self, heads: Heads, duplicate: bool, now_ms: u64, env: &Env<'_>) -> Result<(), SessionError> {
        if self.stage != Stage::Transfer || self.summary.noop {
            return Err(SessionError::Protocol("Heads before the handshake".into()));
        }
        let already = match self.role {
            Role::Responder => self.heads_exchanged,
            // The initiator hears the responder's frontier once, to push.
            Role::Initiator => self.out.as_ref().is_none_or(|o| o.planned),
        };
        if already {
            if duplicate {
                self.resend_handshake();
            }
            return Ok(());
        }
        match env.store.check_peer_heads(&heads.entries, self.config.fresh_instance, now_ms) {
            Ok(Some(reason)) => {
                // Either this store went back in time or the peer lies;
                // both ways this session's frontiers cannot be trusted.
                self.events.push_back(Event::InstanceChanged { reason: reason.clone() });
                return Err(SessionError::Rewound(reason));
            }
            Ok(None) => {}
            Err(e) => return Err(SessionError::Store(e.to_string())),
        }
        if self.role == Role::Responder {
            self.heads_exchanged = true;
            // The initiator drops directions whose digests matched.
            self.pull &= heads.pull;
            self.push &= heads.push;
            if !self.pull {
                self.out = None;
            }
            if !self.push {
                self.inc = None;
            }
            if self.push {
                // The initiator pushes: tell it where we stand.
                let mut own = self.own_heads(env)?;
                own.pull = self.pull;
                own.push = self.push;
                let frame = wire::encode_message(&Message::Heads(own));
                self.handshake = Some(frame.clone());
                self.send(frame);
            }
        }
        if let Some(out) = &mut self.out {
            plan_outgoing(out, &heads.entries, env).map_err(SessionError::Store)?;
            self.events.push_back(Event::Progress {
                direction: Direction::Outgoing,
                changes_done: 0,
                changes_total: out.plan.changes,
                bytes_done: 0,
                bytes_total: out.plan.bytes,
            });
            self.fill_window(env)?;
        }
        Ok(())
    }

    // -- transfer -----------------------------------------------------------

    /// Sends batches until the window is full, preparing each that is
    /// not prepared yet; sends `End` once everything is acknowledged.
    fn fill_window(&mut self, env: &Env<'_>) -> Result<(), SessionError> {
        let mut frames = Vec::new();
        {
            let Some(out) = &mut self.out else { return Ok(()) };
            if !out.planned {
                // The peer's frontier has not arrived: nothing to send yet.
                return Ok(());
            }
            let window = self.config.window.clamp(1, crate::limits::WINDOW_MAX);
            while out.inflight.len() < window {
                if out.prepared.is_none() && !out.exhausted {
                    prepare_batch(out, &self.config, env).map_err(SessionError::Store)?;
                }
                let Some((frame, changes, bytes)) = out.prepared.take() else { break };
                let seq = out.next_seq;
                out.next_seq += 1;
                out.inflight.push_back((seq, frame.clone(), changes, bytes));
                self.summary.sent += changes;
                frames.push(frame);
            }
            if out.inflight.is_empty() && out.prepared.is_none() && out.exhausted && out.end_frame.is_none() {
                let frame = wire::encode_message(&Message::End { batches: out.next_seq });
                out.end_frame = Some(frame.clone());
                frames.push(frame);
            }
        }
        for frame in frames {
            self.send(frame);
        }
        Ok(())
    }

    fn on_ack(&mut self, seq: u64, rejected: u64, _now_ms: u64, env: &Env<'_>) -> Result<(), SessionError> {
        let Some(out) = &mut self.out else {
            return Err(SessionError::Protocol("Ack for a direction that is not sending".into()));
        };
        // The receiver applies batches in order, so an ack covers every
        // batch up to its own (an earlier ack may have been lost).
        match out.inflight.iter().position(|(s, ..)| *s == seq) {
            Some(last) => {
                self.summary.rejected_by_peer += rejected;
                for (_, _, changes, bytes) in out.inflight.drain(..=last) {
                    out.changes_done += changes;
                    out.bytes_done += bytes;
                }
                self.events.push_back(Event::Progress {
                    direction: Direction::Outgoing,
                    changes_done: out.changes_done,
                    changes_total: out.plan.changes.max(out.changes_done),
                    bytes_done: out.bytes_done,
                    bytes_total: out.plan.bytes.max(out.bytes_done),
                });
                self.fill_window(env)?;
            }
            None => {
                // An old ack: our End (or the batch after it) may have been
                // lost; say it again.
                if let Some(end) = out.end_frame.clone() {
                    self.send(end);
                }
            }
        }
        Ok(())
    }

    fn on_batch(&mut self, batch: Batch, frame_len: u64, now_ms: u64, env: &Env<'_>) -> Result<(), SessionError> {
        if !self.heads_exchanged {
            return Err(SessionError::Protocol("Batch before the frontiers were exchanged".into()));
        }
        let Some(inc) = &mut self.inc else {
            return Err(SessionError::Protocol("Batch for a direction that is not receiving".into()));
        };
        if batch.seq < inc.expected_seq {
            // A resend of what we applied: acknowledge again.
            let ack = wire::encode_message(&Message::Ack { seq: batch.seq, rejected: 0 });
            self.send(ack);
            return Ok(());
        }
        if batch.seq > inc.expected_seq && batch.seq < inc.expected_seq + crate::limits::WINDOW_MAX as u64 {
            // Within the window, but an earlier batch is missing (lost or
            // overtaken): drop this one; the sender resends both.
            return Ok(());
        }
        if batch.seq > inc.expected_seq {
            return Err(SessionError::Protocol(format!(
                "batch {} arrived before batch {}",
                batch.seq, inc.expected_seq
            )));
        }
        inc.plan = batch.plan;
        let applied = env
            .store
            .apply_batch(&batch, &inc.region, &mut inc.positions, env.auth, env.verifier, now_ms)
            .map_err(|e| match e {
                ApplyError::Gap { .. } => SessionError::Protocol(e.to_string()),
                ApplyError::Store(e) => SessionError::Store(e.to_string()),
            })?;
        inc.expected_seq += 1;
        let count: u64 = batch.groups.iter().map(|g| g.changes.len() as u64).sum();
        inc.changes_done += count;
        // Sizes are announced uncompressed; count this side the same way.
        let _ = frame_len;
        inc.bytes_done =
            (inc.plan.bytes * inc.changes_done.min(inc.plan.changes)).checked_div(inc.plan.changes).unwrap_or(0);
        let s = &mut self.summary;
        s.received += applied.received;
        s.skipped += applied.skipped;
        s.updated += applied.updated;
        s.merged += applied.merged;
        s.conflicts += applied.conflicts;
        s.rejected += applied.rejected;
        for reason in applied.rejections {
            if s.rejections.len() < SUMMARY_REJECTIONS_MAX {
                s.rejections.push(reason);
            }
        }
        self.events.push_back(Event::Progress {
            direction: Direction::Incoming,
            changes_done: inc.changes_done,
            changes_total: inc.plan.changes.max(inc.changes_done),
            bytes_done: inc.bytes_done,
            bytes_total: inc.plan.bytes.max(inc.bytes_done),
        });
        let ack = wire::encode_message(&Message::Ack { seq: batch.seq, rejected: applied.rejected });
        inc.last_ack = Some(ack.clone());
        self.send(ack);
        Ok(())
    }

    fn on_end(&mut self, batches: u64) -> Result<(), SessionError> {
        let Some(inc) = &mut self.inc else {
            return Err(SessionError::Protocol("End for a direction that is not receiving".into()));
        };
        if batches > inc.expected_seq {
            return Err(SessionError::Protocol(format!(
                "End after {batches} batches, but only {} arrived",
                inc.expected_seq
            )));
        }
        inc.ended = true;
        Ok(())
    }

    // -- completion ---------------------------------------------------------

    fn check_complete(&mut self, now_ms: u64, env: &Env<'_>) {
        if self.stage != Stage::Transfer {
            return;
        }
        // Until the frontiers are exchanged (or the no-op is agreed), the
        // directions are not settled.
        if !self.summary.noop && !self.heads_exchanged {
            return;
        }
        let out_done = self.out.as_ref().is_none_or(|o| o.end_frame.is_some());
        let in_done = self.inc.as_ref().is_none_or(|i| i.ended);
        if out_done && in_done {
            self.stage = Stage::Completed;
            self.summary.duration_ms = now_ms.saturating_sub(self.config.started_at_ms);
            self.write_ledger(None, env);
            self.events.push_back(Event::Completed(self.summary.clone()));
        }
    }

    fn fail(&mut self, error: SessionError, now_ms: u64, env: &Env<'_>, tell_peer: bool) {
        if self.is_finished() {
            return;
        }
        if tell_peer {
            self.send(wire::encode_message(&Message::Abort { reason: error.to_string() }));
        }
        self.stage = Stage::Failed;
        self.summary.duration_ms = now_ms.saturating_sub(self.config.started_at_ms);
        self.write_ledger(Some(&error), env);
        self.events.push_back(Event::Failed { error, summary: self.summary.clone() });
    }

    fn write_ledger(&mut self, error: Option<&SessionError>, env: &Env<'_>) {
        if self.ledger_written {
            return;
        }
        self.ledger_written = true;
        let s = &self.summary;
        let entry = LedgerEntry {
            session: partitions::hex::encode(&self.config.session),
            peer: partitions::hex::encode(&self.config.peer.0),
            via: "network".into(),
            started_at_ms: self.config.started_at_ms,
            duration_ms: s.duration_ms,
            outcome: match error {
                None if s.noop => "no-op".into(),
                None => "completed".into(),
                Some(e) => format!("failed: {e}"),
            },
            filter: self.filter.to_string(),
            pull: self.config.pull,
            push: self.config.push,
            sent: s.sent,
            received: s.received,
            skipped: s.skipped,
            updated: s.updated,
            conflicts: s.conflicts,
            rejected: s.rejected,
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            rejections: s.rejections.clone(),
        };
        // A ledger that cannot be written must not hide the session's own
        // outcome; the failure shows in the next store operation anyway.
        let _ = env.store.record_session(&entry);
    }

    // -- sending ------------------------------------------------------------

    fn send(&mut self, frame: Vec<u8>) {
        self.summary.bytes_sent += frame.len() as u64 + self.config.frame_overhead_bytes;
        self.summary.messages_sent += 1;
        self.transmits.push_back(frame);
    }

    fn resend_handshake(&mut self) {
        if let Some(frame) = self.handshake.clone() {
            self.send(frame);
        }
    }

    /// Resends everything the peer may still be waiting for.
    fn retransmit(&mut self) {
        self.resend_handshake();
        if let Some(out) = &self.out {
            let frames: Vec<Vec<u8>> = out.inflight.iter().map(|(_, frame, ..)| frame.clone()).collect();
            let end = if frames.is_empty() { out.end_frame.clone() } else { None };
            for frame in frames.into_iter().chain(end) {
                self.send(frame);
            }
        }
        if let Some(ack) = self.inc.as_ref().and_then(|i| i.last_ack.clone()) {
            self.send(ack);
        }
    }
}

/// Encodes, as `Batch` frames, every change in `region` that a node whose
/// frontier is `their_heads` lacks: what a session would send it, for
/// writing to a file (bundles). `emit` gets each frame and its change count.
pub fn delta_frames(
    store: &Store,
    region: Region,
    their_heads: &[HeadEntry],
    batch_changes: usize,
    batch_bytes: usize,
    emit: &mut dyn FnMut(Vec<u8>, u64) -> Result<(), String>,
) -> Result<Plan, String> {
    let mut out = Outgoing {
        region,
        work: Vec::new(),
        cursor: 0,
        position: 0,
        next_seq: 0,
        inflight: VecDeque::new(),
        prepared: None,
        exhausted: false,
        chains_sent: BTreeSet::new(),
        plan: Plan::default(),
        planned: false,
        changes_done: 0,
        bytes_done: 0,
        end_frame: None,
    };
    plan(&mut out, their_heads, store)?;
    while !out.exhausted {
        prepare(&mut out, batch_changes, batch_bytes, store)?;
        if let Some((frame, changes, _)) = out.prepared.take() {
            out.next_seq += 1;
            emit(frame, changes)?;
        }
    }
    emit(wire::encode_message(&Message::End { batches: out.next_seq }), 0)?;
    Ok(out.plan)
}

/// Lists what the peer lacks in the outgoing region and counts it.
fn plan_outgoing(out: &mut Outgoing, peer_heads: &[HeadEntry], env: &Env<'_>) -> Result<(), String> {
    plan(out, peer_heads, env.store)
}

fn plan(out: &mut Outgoing, peer_heads: &[HeadEntry], store: &Store) -> Result<(), String> {
    let theirs: BTreeMap<Triple, Counter> = peer_heads
        .iter()
        .filter(|e| out.region.contains(&e.partition, &e.record_type))
        .map(|e| ((e.partition.clone(), e.record_type.clone(), e.instance), e.counter))
        .collect();
    let ours = store.heads(&out.region).map_err(|e| e.to_string())?;
    let mut plan = Plan::default();
    for e in ours {
        let after = theirs.get(&(e.partition.clone(), e.record_type.clone(), e.instance)).copied().unwrap_or(0);
        if e.counter > after {
            let (changes, bytes) = store
                .count_group(&e.partition, &e.record_type, &e.instance, after, e.counter)
                .map_err(|e| e.to_string())?;
            plan.changes += changes;
            plan.bytes += bytes;
            out.work.push(Work {
                partition: e.partition,
                record_type: e.record_type,
                instance: e.instance,
                after,
                upto: e.counter,
            });
        }
    }
    out.plan = plan;
    out.planned = true;
    out.cursor = 0;
    out.position = out.work.first().map_or(0, |w| w.after);
    out.exhausted = out.work.is_empty();
    Ok(())
}

/// Builds the next batch into `out.prepared`.
fn prepare_batch(out: &mut Outgoing, config: &SessionConfig, env: &Env<'_>) -> Result<(), String> {
    prepare(out, config.batch_changes, config.batch_bytes, env.store)
}

fn prepare(out: &mut Outgoing, batch_changes: usize, batch_bytes: usize, store: &Store) -> Result<(), String> {
    let max_changes = batch_changes.max(1);
    let max_bytes = batch_bytes.max(1) as u64;
    let mut groups = Vec::new();
    let mut count = 0usize;
    let mut bytes = 0u64;
    // A scan can yield nothing (its changes were superseded or cannot be
    // sent); the batch is empty only when no work is left, never because the
    // bytes it skipped used up the budget.
    while out.cursor < out.work.len() && (groups.is_empty() || (count < max_changes && bytes < max_bytes)) {
        let work = out.work[out.cursor].clone();
        let mut changes = Vec::new();
        let end = store
            .scan_group(
                &work.partition,
                &work.record_type,
                &work.instance,
                out.position,
                work.upto,
                max_changes.saturating_sub(count),
                max_bytes.saturating_sub(bytes),
                &mut changes,
            )
            .map_err(|e| e.to_string())?;
        if !changes.is_empty() {
            count += changes.len();
            groups.push(Group {
                partition: work.partition.clone(),
                record_type: work.record_type.clone(),
                author: work.instance,
                author_key: changes[0].author_key,
                after: out.position,
                changes: changes.iter().map(GroupChange::from_change).collect(),
            });
        }
        bytes += end.bytes;
        if end.complete {
            out.cursor += 1;
            out.position = out.work.get(out.cursor).map_or(0, |w| w.after);
        } else {
            out.position = end.last;
        }
    }
    if out.cursor >= out.work.len() {
        out.exhausted = groups.is_empty();
    }
    if groups.is_empty() {
        out.exhausted = true;
        return Ok(());
    }
    let mut chains = Vec::new();
    for group in &groups {
        if out.chains_sent.insert(group.author_key) {
            chains.extend(store.chains_of(&group.author_key).map_err(|e| e.to_string())?);
        }
    }
    let batch = Batch { seq: out.next_seq, plan: out.plan, groups, chains };
    let frame = wire::encode_message(&Message::Batch(batch));
    out.prepared = Some((frame, count as u64, bytes));
    Ok(())
}

/// A finished session's one-line account, for logs.
pub fn describe(summary: &Summary) -> String {
    if summary.noop {
        return "nothing to do".into();
    }
    format!(
        "sent {}, received {} (skipped {}, updated {}, merged {}, conflicts {}, rejected {})",
        summary.sent,
        summary.received,
        summary.skipped,
        summary.updated,
        summary.merged,
        summary.conflicts,
        summary.rejected
    )
}
