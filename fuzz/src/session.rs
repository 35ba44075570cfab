//! The stateful target: arbitrary message sequences fed to the responder of
//! a session, over a real store. Whatever arrives, the session must not
//! panic, must stay within its limits, and the store must hold nothing
//! outside the responder's scope and nothing whose signature fails.
//!
//! Input: frames, each a u32 little-endian length and its bytes.

use ed25519_dalek::SigningKey;
use engine::backend::BackendKind;
use engine::{
    AuthorKey, Env, InstanceId, LocalAuthor, LocalOp, LocalWrite, RecordId, RecordKey, Region, SerialSigner,
    SerialVerifier, Session, SessionConfig, StaticAuthorizer, Store, Value,
};
use partitions::{Filter, Partition, RecordType, Scope, TypeMode};

/// Fixed identities: the responder, the peer (initiator), and an author.
pub const RESPONDER: u8 = 1;
pub const PEER: u8 = 2;
pub const AUTHOR: u8 = 3;
pub const T0: u64 = 1_700_000_000_000;

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn author_key(seed: u8) -> AuthorKey {
    AuthorKey(key(seed).verifying_key().to_bytes())
}

pub fn responder_scope() -> Scope {
    let org = crate::fuzz_org();
    Scope {
        read: Filter::parse(org, "results:tc-1,tests").expect("valid"),
        write: Filter::parse(org, "results:tc-1").expect("valid"),
        types: [(partitions::RecordType::parse("secret").expect("valid"), TypeMode::None)].into(),
    }
}

pub fn authorizer() -> StaticAuthorizer {
    let org = crate::fuzz_org();
    let auth = StaticAuthorizer::new();
    auth.grant(author_key(RESPONDER), responder_scope(), None);
    auth.grant(author_key(PEER), Scope::full(org), Some("central".into()));
    auth.grant(
        author_key(AUTHOR),
        Scope {
            read: Filter::parse(org, "results:tc-1").expect("valid"),
            write: Filter::parse(org, "results:tc-1:u1").expect("valid"),
            types: Default::default(),
        },
        None,
    );
    auth
}

pub fn responder_config() -> SessionConfig {
    let mut config = SessionConfig::new([9; 16], author_key(PEER), author_key(RESPONDER).0.to_vec(), responder_scope());
    config.started_at_ms = T0;
    config.retransmit_ms = Some(1000);
    config.fresh_instance = InstanceId([7; 16]);
    config
}

pub fn open_store(dir: &std::path::Path) -> Store {
    // In memory: an input costs no disk IO (the store suite runs the memory
    // backend against the same contract as redb and sled).
    let (store, _) = Store::open(dir, BackendKind::Memory, InstanceId([1; 16]), T0).expect("open a store");
    store
}

/// Splits the input into frames.
pub fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        data = &data[4..];
        let len = len.min(data.len());
        out.push(&data[..len]);
        data = &data[len..];
    }
    out
}

/// Encodes frames the way `frames` reads them (for seeds).
pub fn join(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// Runs the responder on `data`; returns how many records its store holds
/// afterwards (the smoke test uses it to show a recorded session reaches
/// the store).
pub fn session(data: &[u8]) -> usize {
    let dir =
        if std::path::Path::new("/dev/shm").is_dir() { tempfile::tempdir_in("/dev/shm") } else { tempfile::tempdir() }
            .expect("temporary directory");
    let store = open_store(dir.path());
    let auth = authorizer();
    let env = Env { store: &store, auth: &auth, verifier: &SerialVerifier };
    let mut session = Session::accept(responder_config(), T0);
    for (i, frame) in frames(data).into_iter().enumerate().take(64) {
        let now = T0 + 10 * i as u64;
        session.handle_message(now, frame, &env);
        session.handle_idle(now, &env);
        while let Some(out) = session.poll_transmit() {
            assert!(out.len() <= engine::limits::MESSAGE_BYTES_MAX);
        }
        while session.poll_event().is_some() {}
    }
    session.handle_timeout(T0 + 3_600_000, &env);
    // Nothing outside the responder's scope, nothing unsigned.
    let scope = responder_scope();
    store
        .list(None, None, &mut |r| {
            let holdable = scope.read.contains(&r.key.partition) || scope.write.contains(&r.key.partition);
            assert!(
                holdable && scope.mode(&r.key.record_type) != TypeMode::None,
                "stored {:?} outside the scope",
                r.key
            );
            let state = store.record(&r.key).expect("read").expect("listed");
            for change in &state.changes {
                assert!(store.verify_change(change).is_ok(), "stored an unverified change");
            }
            true
        })
        .expect("list");
    let heads = store.heads(&Region::of(Filter::org(crate::fuzz_org()))).expect("heads");
    for head in heads {
        assert!(scope.read.contains(&head.partition) || scope.write.contains(&head.partition));
    }
    let mut count = 0;
    store
        .list(None, None, &mut |_| {
            count += 1;
            true
        })
        .expect("list");
    count
}

/// A peer's store with records in and out of the responder's scope: the
/// peer's own, a relayed author's, a type the responder may not hold, and a
/// partition it may not hold.
pub fn peer_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (store, _) = Store::open(dir.path(), BackendKind::Redb, InstanceId([2; 16]), T0).expect("open a store");
    let auth = authorizer();
    store.put_chain(&author_key(PEER), &author_key(PEER).0).expect("own credentials");
    store.put_chain(&author_key(AUTHOR), &author_key(AUTHOR).0).expect("relayed credentials");
    let put = |part: &str, record_type: &str, id: &str, n: i64| LocalWrite {
        record: RecordKey {
            partition: Partition::resolve(crate::fuzz_org(), part).expect("valid"),
            record_type: RecordType::parse(record_type).expect("valid"),
            id: RecordId::parse(id).expect("valid"),
        },
        op: LocalOp::Put {
            set: [("score".to_owned(), Value::Int(n)), ("note".to_owned(), Value::Text(format!("n{n}")))].into(),
            unset: Default::default(),
        },
    };
    let peer = LocalAuthor { key: key(PEER), authority: Some("central".into()) };
    let author = LocalAuthor { key: key(AUTHOR), authority: None };
    let writes = [
        put("results:tc-1", "result", "r1", 1),
        put("results:tc-1", "result", "r2", 2),
        put("tests", "test", "t1", 3),
        put("results:tc-1", "secret", "s1", 4),
        put("results:tc-2", "result", "r3", 5),
    ];
    for result in store.write(&peer, &writes, T0, &auth, &SerialSigner).expect("write") {
        result.expect("the peer may write everywhere");
    }
    let relayed = [put("results:tc-1:u1", "result", "r4", 6)];
    for result in store.write(&author, &relayed, T0 + 1, &auth, &SerialSigner).expect("write") {
        result.expect("the author may write its partition");
    }
    // A second edit, so some record has two changes.
    for result in store.write(&peer, &writes[..1], T0 + 2, &auth, &SerialSigner).expect("write") {
        result.expect("the peer may write everywhere");
    }
    (dir, store)
}

/// The records of `peer_store` the responder may hold.
pub const IN_SCOPE_RECORDS: usize = 4;

/// A whole session from the peer's side, recorded: the frames the peer
/// sends while pushing `peer_store` to the responder. Replayed by `session`
/// at the same times, the responder ends up with `IN_SCOPE_RECORDS`.
pub fn transcript() -> Vec<Vec<u8>> {
    let (_peer_dir, peer_store) = peer_store();
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open_store(dir.path());
    let auth = authorizer();
    let env = Env { store: &store, auth: &auth, verifier: &SerialVerifier };
    let peer_env = Env { store: &peer_store, auth: &auth, verifier: &SerialVerifier };
    let mut config =
        SessionConfig::new([9; 16], author_key(RESPONDER), author_key(PEER).0.to_vec(), Scope::full(crate::fuzz_org()));
    config.started_at_ms = T0;
    config.filter = Filter::org(crate::fuzz_org());
    config.fresh_instance = InstanceId([8; 16]);
    let mut peer = Session::initiate(config, T0);
    let mut responder = Session::accept(responder_config(), T0);
    let mut pending: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
    let mut sent = Vec::new();
    peer.handle_idle(T0, &peer_env);
    while let Some(frame) = peer.poll_transmit() {
        pending.push_back(frame);
    }
    while let Some(frame) = pending.pop_front() {
        // Mirrors `session`: frame i arrives at T0 + 10 i.
        let now = T0 + 10 * sent.len() as u64;
        responder.handle_message(now, &frame, &env);
        responder.handle_idle(now, &env);
        sent.push(frame);
        while let Some(reply) = responder.poll_transmit() {
            peer.handle_message(now, &reply, &peer_env);
        }
        peer.handle_idle(now, &peer_env);
        while let Some(frame) = peer.poll_transmit() {
            pending.push_back(frame);
        }
        assert!(sent.len() < 64, "the recorded session is longer than the harness replays");
    }
    assert!(peer.is_finished() && responder.is_finished(), "the recorded session did not finish");
    sent
}

/// `transcript` with its batches replaced by batches of everything the peer
/// holds, including what the responder may not hold: a peer that ignores
/// the responder's scope.
pub fn overreaching_transcript() -> Vec<Vec<u8>> {
    let mut frames = transcript();
    let (_dir, store) = peer_store();
    frames.truncate(2);
    engine::session::delta_frames(&store, Region::of(Filter::org(crate::fuzz_org())), &[], 3, 1 << 20, &mut |f, _| {
        frames.push(f);
        Ok(())
    })
    .expect("delta");
    frames
}

/// A bundle file of everything in `peer_store`, as `ferry bundle export`
/// writes it (magic, JSON header, batch frames, End; frames u32 big-endian).
pub fn bundle_sample() -> Vec<u8> {
    let (_dir, store) = peer_store();
    let mut out = b"FERRY-BUNDLE 1\n".to_vec();
    let frame = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    let org = crate::fuzz_org();
    let header = serde_json::json!({
        "org": org.to_string(),
        "exporter": partitions::hex::encode(&author_key(PEER).0),
        "credentials": data_encoding::BASE64.encode(&author_key(PEER).0),
        "filter": [org.to_string()],
        "created_at_ms": T0,
    });
    frame(&mut out, &serde_json::to_vec(&header).expect("json"));
    engine::session::delta_frames(&store, Region::of(Filter::org(org)), &[], 3, 1 << 20, &mut |f, _| {
        frame(&mut out, &f);
        Ok(())
    })
    .expect("delta");
    // A blob after End, as `ferry bundle export` appends one.
    let bytes = b"a small report".to_vec();
    let mut builder = engine::blob::OutlineBuilder::new();
    builder.update(&bytes);
    let (hash, outline) = builder.finish();
    frame(&mut out, &engine::blob::message::encode(&engine::blob::message::BlobMessage::Offer { hash, outline }));
    frame(&mut out, &engine::blob::message::encode_data(&bytes));
    out
}
