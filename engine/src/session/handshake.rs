//! The handshake: Hello and Welcome (credentials, regions, digests), the
//! no-op fast path (Done), and the exchange of frontiers (Heads) that
//! settles what each side sends.

use std::collections::BTreeMap;

use partitions::Scope;

use crate::region::Region;
use crate::wire::{self, Credentials, Heads, Hello, Message, Plan, Welcome};

use super::{Direction, Env, Event, Incoming, Outgoing, Role, Session, SessionError, Stage, plan_outgoing};

impl Session {
    // -- handshake ----------------------------------------------------------

    pub(super) fn credentials(&mut self, full: bool) -> Credentials {
        if full {
            self.credentials_sent_full = true;
            Credentials::Full(self.config.credentials.clone())
        } else {
            Credentials::Hash(*blake3::hash(&self.config.credentials).as_bytes())
        }
    }

    pub(super) fn send_hello(&mut self, full: bool) {
        let hello = Hello {
            session: self.config.session,
            credentials: self.credentials(full),
            filter: self.filter.clone(),
            pull: self.pull,
            push: self.push,
            types: self.types.clone(),
        };
        let frame = wire::encode_message(&Message::Hello(hello));
        self.handshake = Some(frame.clone());
        self.send(frame);
    }

    /// Resolves credentials to bytes: whole, or by hash from the store.
    pub(super) fn resolve(credentials: &Credentials, env: &Env<'_>) -> Result<Option<Vec<u8>>, SessionError> {
        match credentials {
            Credentials::Full(bytes) => Ok(Some(bytes.clone())),
            Credentials::Hash(hash) => env.store.chain(hash).map_err(|e| SessionError::Store(e.to_string())),
        }
    }

    pub(super) fn authenticate(&mut self, chain: &[u8], now_ms: u64, env: &Env<'_>) -> Result<Scope, SessionError> {
        let scope =
            env.auth.authenticate(&self.config.peer, chain, now_ms / 1000).map_err(|d| SessionError::Refused(d.0))?;
        env.store.put_chain(&self.config.peer, chain).map_err(|e| SessionError::Store(e.to_string()))?;
        self.peer_scope = Some(scope.clone());
        self.events.push_back(Event::Authenticated { scope: scope.clone() });
        Ok(scope)
    }

    pub(super) fn on_hello(
        &mut self,
        hello: Hello,
        duplicate: bool,
        now_ms: u64,
        env: &Env<'_>,
    ) -> Result<(), SessionError> {
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
        self.types = hello.types;
        self.pull = hello.pull;
        self.push = hello.push;
        // What the initiator asked for, for the ledger.
        self.config.pull = hello.pull;
        self.config.push = hello.push;
        let local = self.config.local_scope.clone();
        // The responder sends on "pull" and receives on "push".
        let out_region = Region::between(&self.filter, &local, &peer_scope).narrowed(&self.types);
        let in_region = Region::between(&self.filter, &peer_scope, &local).narrowed(&self.types);
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

    pub(super) fn on_need_credentials(&mut self) -> Result<(), SessionError> {
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

    pub(super) fn on_welcome(
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
        let in_region = Region::between(&self.filter, &peer_scope, &local).narrowed(&self.types);
        let out_region = Region::between(&self.filter, &local, &peer_scope).narrowed(&self.types);
        let store_err = |e: crate::store::StoreError| SessionError::Store(e.to_string());
        let same_pull = !self.pull || env.store.digest(&in_region).map_err(store_err)? == welcome.digest_pull;
        let same_push = !self.push || {
            let heads = env.store.heads(&out_region).map_err(store_err)?;
            let same = crate::store::digest_of(&heads) == welcome.digest_push;
            // Equal digests: the responder held this frontier when it
            // answered (durably: its frontier moves only with commits).
            // The responder learns no such thing from `Done`, which may
            // answer the `Welcome` of an earlier run of the same session.
            if same {
                self.peer_holds = Some(super::frontier_map(heads));
            }
            same
        };
        self.stage = Stage::Transfer;
        if same_pull && same_push {
            let frame = wire::encode_message(&Message::Done);
            self.handshake = Some(frame.clone());
            self.send(frame);
            self.report.noop = true;
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

    pub(super) fn on_done(&mut self) -> Result<(), SessionError> {
        if self.role == Role::Responder && self.stage == Stage::Transfer {
            self.report.noop = true;
            self.pull = false;
            self.push = false;
            self.out = None;
            self.inc = None;
        }
        Ok(())
    }

    pub(super) fn prepare_directions(&mut self, out_region: Region, in_region: Region) {
        let sends = match self.role {
            Role::Initiator => self.push,
            Role::Responder => self.pull,
        };
        let receives = match self.role {
            Role::Initiator => self.pull,
            Role::Responder => self.push,
        };
        self.out = sends.then(|| Outgoing::new(out_region));
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

    pub(super) fn own_heads(&mut self, env: &Env<'_>) -> Result<Heads, SessionError> {
        let Some(inc) = &mut self.inc else {
            return Ok(Heads::default());
        };
        let entries = env.store.heads(&inc.region).map_err(|e| SessionError::Store(e.to_string()))?;
        for e in &entries {
            inc.positions.insert((e.partition.clone(), e.record_type.clone(), e.instance), e.counter);
        }
        Ok(Heads { pull: false, push: false, entries })
    }

    pub(super) fn on_heads(
        &mut self,
        heads: Heads,
        duplicate: bool,
        now_ms: u64,
        env: &Env<'_>,
    ) -> Result<(), SessionError> {
        if self.stage != Stage::Transfer || self.report.noop {
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
}
