//! Shared helpers for the engine's tests: stores in temporary directories,
//! keys and scopes, and an in-memory driver for two sessions.
#![allow(dead_code)]

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use engine::backend::BackendKind;
use engine::{
    AuthorKey, Env, Event, InstanceId, LocalAuthor, LocalOp, LocalWrite, RecordId, RecordKey, SerialSigner,
    SerialVerifier, Session, SessionConfig, StaticAuthorizer, Store, SyncReport, Value,
};
use partitions::{Filter, OrgId, Partition, RecordType, Scope};

pub const T0: u64 = 1_700_000_000_000;

pub fn org() -> OrgId {
    OrgId::from_public_key(&[9; 32])
}

pub fn partition(text: &str) -> Partition {
    Partition::resolve(org(), text).expect("valid partition")
}

pub fn filter(text: &str) -> Filter {
    Filter::parse(org(), text).expect("valid filter")
}

pub fn scope(read: &str, write: &str, types: &str) -> Scope {
    Scope { read: filter(read), write: filter(write), types: Scope::parse_types(types).expect("types") }
}

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn author_key(seed: u8) -> AuthorKey {
    AuthorKey(key(seed).verifying_key().to_bytes())
}

pub fn record(part: &str, record_type: &str, id: &str) -> RecordKey {
    RecordKey {
        partition: partition(part),
        record_type: RecordType::parse(record_type).expect("type"),
        id: RecordId::parse(id).expect("id"),
    }
}

/// One node: a store, its key, its scope, and an authorizer shared by all.
pub struct Node {
    pub store: Store,
    pub seed: u8,
    pub scope: Scope,
    pub dir: tempfile::TempDir,
}

impl Node {
    pub fn new(kind: BackendKind, seed: u8, scope: Scope, auth: &StaticAuthorizer) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = Store::open(dir.path(), kind, InstanceId([seed; 16]), T0).expect("open store");
        auth.grant(author_key(seed), scope.clone(), None);
        store.put_chain(&author_key(seed), &author_key(seed).0).expect("own credentials");
        Node { store, seed, scope, dir }
    }

    pub fn author(&self) -> LocalAuthor {
        LocalAuthor { key: key(self.seed), authority: None }
    }

    pub fn put(&self, auth: &StaticAuthorizer, key: &RecordKey, fields: &[(&str, Value)], now_ms: u64) {
        let write = LocalWrite {
            record: key.clone(),
            op: LocalOp::Put {
                set: fields.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
                unset: Default::default(),
            },
        };
        let results = self.store.write(&self.author(), &[write], now_ms, auth, &SerialSigner).expect("write");
        results.into_iter().next().expect("one result").expect("write accepted");
    }

    pub fn delete(&self, auth: &StaticAuthorizer, key: &RecordKey, now_ms: u64) {
        let write = LocalWrite { record: key.clone(), op: LocalOp::Delete };
        let results = self.store.write(&self.author(), &[write], now_ms, auth, &SerialSigner).expect("write");
        results.into_iter().next().expect("one result").expect("delete accepted");
    }

    pub fn fields(&self, key: &RecordKey) -> Option<BTreeMap<String, Value>> {
        self.store.view(key).expect("view").filter(|v| v.exists).map(|v| v.fields)
    }

    /// Everything this node shows, for comparisons.
    pub fn snapshot(&self) -> Vec<(RecordKey, engine::View)> {
        let mut out = Vec::new();
        self.store
            .list(None, None, &mut |r| {
                out.push((r.key, r.view));
                true
            })
            .expect("list");
        out
    }

    pub fn config(&self, peer: &Node, session: u8) -> SessionConfig {
        let mut config = SessionConfig::new(
            [session; 16],
            author_key(peer.seed),
            author_key(self.seed).0.to_vec(),
            self.scope.clone(),
        );
        config.filter = Filter::org(org());
        config.started_at_ms = T0;
        config.fresh_instance = InstanceId([self.seed.wrapping_add(100); 16]);
        config
    }
}

/// Drives an initiator and a responder until both finish, delivering every
/// message in order. Returns both summaries.
pub fn sync(
    a: &Node,
    b: &Node,
    auth: &StaticAuthorizer,
    config: SessionConfig,
    now_ms: u64,
) -> (SyncReport, SyncReport) {
    try_sync(a, b, auth, config, now_ms).unwrap_or_else(|e| panic!("{e}"))
}

/// Like `sync`; a failed session is an `Err` with the side and the reason.
pub fn try_sync(
    a: &Node,
    b: &Node,
    auth: &StaticAuthorizer,
    config: SessionConfig,
    now_ms: u64,
) -> Result<(SyncReport, SyncReport), String> {
    let mut initiator = Session::initiate(config, now_ms);
    let mut responder = Session::accept(b.config(a, 0), now_ms);
    let env_a = Env { store: &a.store, auth, verifier: &SerialVerifier };
    let env_b = Env { store: &b.store, auth, verifier: &SerialVerifier };
    let mut done_a = None;
    let mut done_b = None;
    for _ in 0..100_000 {
        let mut moved = false;
        while let Some(frame) = initiator.poll_transmit() {
            responder.handle_message(now_ms, &frame, &env_b);
            moved = true;
        }
        responder.handle_idle(now_ms, &env_b);
        while let Some(frame) = responder.poll_transmit() {
            initiator.handle_message(now_ms, &frame, &env_a);
            moved = true;
        }
        initiator.handle_idle(now_ms, &env_a);
        while let Some(event) = initiator.poll_event() {
            match event {
                Event::Completed(s) => done_a = Some(s),
                Event::Failed { error, .. } => return Err(format!("initiator failed: {error}")),
                _ => {}
            }
        }
        while let Some(event) = responder.poll_event() {
            match event {
                Event::Completed(s) => done_b = Some(s),
                Event::Failed { error, .. } => return Err(format!("responder failed: {error}")),
                _ => {}
            }
        }
        if let (Some(a), Some(b)) = (&done_a, &done_b) {
            return Ok((a.clone(), b.clone()));
        }
        if !moved {
            panic!(
                "sessions stalled: initiator finished {}, responder finished {}",
                initiator.is_finished(),
                responder.is_finished()
            );
        }
    }
    panic!("sessions did not finish");
}

pub fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}
