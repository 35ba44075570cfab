//! Two stores syncing through the session state machine, in memory: pull,
//! push, scopes, rejections, interrupted transfers and the no-op.

mod common;

use std::collections::BTreeMap;

use common::*;
use engine::backend::BackendKind;
use engine::wire::{Batch, Group, GroupChange, Message, Plan};
use engine::{Env, Event, Region, SerialVerifier, Session, StaticAuthorizer, Value};
use partitions::{Filter, Scope};

const KINDS: [BackendKind; 2] = [BackendKind::Redb, BackendKind::Sled];

fn full(kind: BackendKind, seed: u8, auth: &StaticAuthorizer) -> Node {
    Node::new(kind, seed, Scope::full(org()), auth)
}

#[test]
fn pull_brings_every_record_and_a_second_sync_is_a_no_op() {
    for kind in KINDS {
        let auth = StaticAuthorizer::new();
        let central = full(kind, 1, &auth);
        let device = full(kind, 2, &auth);
        for i in 0..50 {
            central.put(
                &auth,
                &record("results", "result", &format!("r{i}")),
                &[("score", Value::Int(i))],
                T0 + i as u64,
            );
        }
        let (a, b) = sync(&device, &central, &auth, device.config(&central, 1), T0 + 1000);
        assert_eq!(a.received, 50, "{kind:?}");
        assert_eq!(a.updated, 50);
        assert_eq!(b.sent, 50);
        assert_eq!(device.snapshot(), central.snapshot());
        let (a, b) = sync(&device, &central, &auth, device.config(&central, 2), T0 + 2000);
        assert!(a.noop && b.noop, "{kind:?}: {a:?}");
        assert!(a.bytes_sent + a.bytes_received < 1024, "no-op costs {} bytes", a.bytes_sent + a.bytes_received);
        assert_eq!(a.messages_sent + a.messages_received, 3, "Hello, Welcome, Done");
    }
}

#[test]
fn a_device_gets_only_its_region_and_pushes_only_what_it_may() {
    for kind in KINDS {
        let auth = StaticAuthorizer::new();
        let central = full(kind, 1, &auth);
        let device = Node::new(kind, 2, scope("tests,results:tc-1", "results:tc-1", "test=ro,answer=none"), &auth);
        central.put(&auth, &record("tests", "test", "t1"), &[("q", text("2+2"))], T0);
        central.put(&auth, &record("results:tc-1", "result", "a"), &[("score", Value::Int(1))], T0);
        central.put(&auth, &record("results:tc-1", "answer", "secret"), &[("x", Value::Int(1))], T0);
        central.put(&auth, &record("results:tc-2", "result", "other"), &[("score", Value::Int(2))], T0);
        let (a, _) = sync(&device, &central, &auth, device.config(&central, 1), T0 + 10);
        assert_eq!(a.received, 2, "{kind:?}: the test and tc-1's result, not the answer nor tc-2");
        let ids: Vec<String> = device.snapshot().iter().map(|(k, _)| k.id.to_string()).collect();
        assert_eq!(ids, ["a", "t1"]);
        device.put(&auth, &record("results:tc-1", "result", "b"), &[("score", Value::Int(5))], T0 + 20);
        let (a, b) = sync(&device, &central, &auth, device.config(&central, 2), T0 + 30);
        assert_eq!((a.sent, b.received, b.updated), (1, 1, 1), "{kind:?}");
        assert_eq!(central.fields(&record("results:tc-1", "result", "b")).expect("pushed")["score"], Value::Int(5));
    }
}

#[test]
fn concurrent_edits_converge_with_the_conflict_kept_on_both_sides() {
    for kind in KINDS {
        let auth = StaticAuthorizer::new();
        let a = full(kind, 1, &auth);
        let b = full(kind, 2, &auth);
        let r = record("results", "result", "shared");
        a.put(&auth, &r, &[("score", Value::Int(1)), ("note", text("base"))], T0);
        sync(&b, &a, &auth, b.config(&a, 1), T0 + 1);
        a.put(&auth, &r, &[("score", Value::Int(10))], T0 + 10);
        b.put(&auth, &r, &[("score", Value::Int(20)), ("done", Value::Bool(true))], T0 + 20);
        let (s, _) = sync(&b, &a, &auth, b.config(&a, 2), T0 + 30);
        assert!(s.conflicts >= 1, "{kind:?}: {s:?}");
        assert_eq!(a.snapshot(), b.snapshot());
        let view = a.store.view(&r).expect("view").expect("held");
        assert_eq!(view.fields["score"], Value::Int(20), "newest wins");
        assert_eq!(view.fields["done"], Value::Bool(true), "one-sided fields merge");
        assert_eq!(view.conflicts.len(), 1);
        assert_eq!(view.conflicts[0].value, Some(Value::Int(10)), "the loser is kept");
    }
}

/// Drives a pull, delivering messages until `stop_after_acks` batches are
/// acknowledged, then drops the rest: the transfer is interrupted.
fn interrupted_pull(device: &Node, central: &Node, auth: &StaticAuthorizer, stop_after_acks: usize) {
    let mut config = device.config(central, 9);
    config.batch_changes = 10;
    let mut initiator = Session::initiate(config, T0);
    let mut responder_config = central.config(device, 9);
    responder_config.batch_changes = 10;
    let mut responder = Session::accept(responder_config, T0);
    let env_d = Env { store: &device.store, auth, verifier: &SerialVerifier };
    let env_c = Env { store: &central.store, auth, verifier: &SerialVerifier };
    let mut acks = 0;
    for _ in 0..1000 {
        while let Some(frame) = initiator.poll_transmit() {
            if matches!(engine::wire::decode_message(&frame), Ok(Message::Ack { .. })) {
                acks += 1;
                if acks > stop_after_acks {
                    return;
                }
            }
            responder.handle_message(T0, &frame, &env_c);
        }
        responder.handle_idle(T0, &env_c);
        while let Some(frame) = responder.poll_transmit() {
            initiator.handle_message(T0, &frame, &env_d);
        }
    }
    panic!("the transfer never reached {stop_after_acks} acks");
}

#[test]
fn an_interrupted_transfer_resumes_from_what_was_applied() {
    for kind in KINDS {
        let auth = StaticAuthorizer::new();
        let central = full(kind, 1, &auth);
        let device = full(kind, 2, &auth);
        for i in 0..100 {
            central.put(&auth, &record("results", "result", &format!("r{i:03}")), &[("score", Value::Int(i))], T0);
        }
        // Three batches are applied and acknowledged; the fourth's ack is lost
        // with the connection (the fourth batch itself was applied).
        interrupted_pull(&device, &central, &auth, 3);
        let held = device.snapshot().len();
        assert_eq!(held, 40, "{kind:?}: four batches of ten were durably applied");
        let mut config = device.config(&central, 10);
        config.batch_changes = 10;
        let (a, _) = sync(&device, &central, &auth, config, T0 + 5);
        assert_eq!(a.received, 60, "{kind:?}: only what was missing is sent again");
        assert_eq!(device.snapshot(), central.snapshot());
    }
}

#[test]
fn forged_and_out_of_scope_changes_are_rejected_and_the_rest_applies() {
    for kind in KINDS {
        let auth = StaticAuthorizer::new();
        let writer = Node::new(kind, 1, scope("results", "results:tc-1", ""), &auth);
        let receiver = full(kind, 2, &auth);
        writer.put(&auth, &record("results:tc-1", "result", "good"), &[("score", Value::Int(1))], T0);
        writer.put(&auth, &record("results:tc-1", "result", "forged"), &[("score", Value::Int(2))], T0);
        let mut changes: Vec<GroupChange> = Vec::new();
        for id in ["good", "forged"] {
            let state = writer.store.record(&record("results:tc-1", "result", id)).expect("read").expect("held");
            changes.push(GroupChange::from_change(&state.changes[0]));
        }
        // Tamper with the second change after signing.
        if let engine::Op::Put { fields, .. } = &mut changes[1].op {
            fields.insert("score".into(), Some(Value::Int(99)));
        }
        let good = writer.store.record(&record("results:tc-1", "result", "good")).expect("read").expect("held").changes
            [0]
        .clone();
        // A change the writer signed for a partition outside its write scope.
        let mut outside = good.clone();
        outside.record = record("results:tc-2", "result", "sneaky");
        outside.counter = 3;
        outside.sign(&key(1));
        let mut groups = vec![
            Group {
                partition: partition("results:tc-1"),
                record_type: good.record.record_type.clone(),
                author: good.author,
                author_key: good.author_key,
                after: 0,
                changes,
            },
            Group {
                partition: partition("results:tc-2"),
                record_type: good.record.record_type.clone(),
                author: good.author,
                author_key: good.author_key,
                after: 0,
                changes: vec![GroupChange::from_change(&outside)],
            },
        ];
        let runs = engine::session::prove_runs(&mut groups, &writer.store).expect("runs");
        let batch = Batch { seq: 0, plan: Plan::default(), groups, chains: vec![], runs };
        let mut positions = BTreeMap::new();
        let applied = receiver
            .store
            .apply_batch(
                batch.clone(),
                &Region::of(Filter::org(org())),
                &mut positions,
                &auth,
                &SerialVerifier,
                T0,
                "peer",
            )
            .expect("applies");
        assert_eq!((applied.received, applied.updated, applied.rejected), (3, 1, 2), "{kind:?}: {applied:?}");
        // The tampered change no longer hashes to its leaf: the root its run
        // signed is not rebuilt.
        assert!(applied.rejections.iter().any(|r| r.contains("forged: the signature of its run does not verify")));
        assert!(applied.rejections.iter().any(|r| r.contains("may not")));
        assert!(receiver.fields(&record("results:tc-1", "result", "good")).is_some());
        assert!(receiver.fields(&record("results:tc-1", "result", "forged")).is_none());
        assert!(receiver.fields(&record("results:tc-2", "result", "sneaky")).is_none());
        // A batch that skips ahead of what the receiver holds changes nothing.
        let mut gap = batch.clone();
        gap.groups.truncate(1);
        gap.groups[0].after = 5;
        let mut positions = BTreeMap::new();
        let err = receiver.store.apply_batch(
            gap,
            &Region::of(Filter::org(org())),
            &mut positions,
            &auth,
            &SerialVerifier,
            T0,
            "peer",
        );
        assert!(matches!(err, Err(engine::store::ApplyError::Gap { .. })), "{kind:?}");
    }
}

/// A change signed twice with the same (instance, counter) but different
/// content: the second is refused as an equivocation whether it arrives in
/// a later batch (below the receiver's head) or for another record, and a
/// plain repeat of the first is a skip.
#[test]
fn an_equivocating_author_is_refused_below_the_head() {
    for kind in KINDS {
        let auth = StaticAuthorizer::new();
        let writer = Node::new(kind, 1, scope("results", "results:tc-1", ""), &auth);
        let receiver = full(kind, 2, &auth);
        let key_a = record("results:tc-1", "result", "a");
        writer.put(&auth, &key_a, &[("score", Value::Int(1))], T0);
        let first = writer.store.record(&key_a).expect("read").expect("held").changes[0].clone();
        let group = |changes: Vec<GroupChange>| {
            let mut groups = vec![Group {
                partition: first.record.partition.clone(),
                record_type: first.record.record_type.clone(),
                author: first.author,
                author_key: first.author_key,
                after: 0,
                changes,
            }];
            let runs = engine::session::prove_runs(&mut groups, &writer.store).expect("runs");
            Batch { seq: 0, plan: Plan::default(), groups, chains: vec![], runs }
        };
        let region = Region::of(Filter::org(org()));
        let apply = |batch: &Batch| {
            receiver
                .store
                .apply_batch(batch.clone(), &region, &mut BTreeMap::new(), &auth, &SerialVerifier, T0, "peer")
                .expect("applies")
        };
        let applied = apply(&group(vec![GroupChange::from_change(&first)]));
        assert_eq!((applied.updated, applied.rejected), (1, 0), "{kind:?}");
        let before = receiver.snapshot();
        // Same dot, other content, validly signed.
        let mut other = first.clone();
        other.op = engine::Op::Put { replace: true, fields: [("score".to_owned(), Some(Value::Int(7)))].into() };
        other.sign(&key(1));
        let applied = apply(&group(vec![GroupChange::from_change(&other)]));
        assert_eq!((applied.skipped, applied.rejected), (0, 1), "{kind:?}: {applied:?}");
        assert!(applied.rejections[0].contains("signed two different changes with counter 1"), "{applied:?}");
        // Same dot, another record.
        let mut elsewhere = first.clone();
        elsewhere.record = record("results:tc-1", "result", "b");
        elsewhere.sign(&key(1));
        let applied = apply(&group(vec![GroupChange::from_change(&elsewhere)]));
        assert_eq!(applied.rejected, 1, "{kind:?}: {applied:?}");
        assert!(applied.rejections[0].contains("signed two different changes"), "{applied:?}");
        // The same change again is a repeat, not an offence.
        let applied = apply(&group(vec![GroupChange::from_change(&first)]));
        assert_eq!((applied.skipped, applied.rejected), (1, 0), "{kind:?}: {applied:?}");
        assert_eq!(receiver.snapshot(), before, "{kind:?}: nothing changed");
    }
}

#[test]
fn a_session_with_a_peer_whose_credentials_are_refused_fails_on_both_sides() {
    let auth = StaticAuthorizer::new();
    let a = full(BackendKind::Redb, 1, &auth);
    let b = full(BackendKind::Redb, 2, &auth);
    let mut config = a.config(&b, 1);
    config.credentials = vec![0; 32]; // not a's key
    let mut initiator = Session::initiate(config, T0);
    let mut responder = Session::accept(b.config(&a, 1), T0);
    let env_a = Env { store: &a.store, auth: &auth, verifier: &SerialVerifier };
    let env_b = Env { store: &b.store, auth: &auth, verifier: &SerialVerifier };
    for _ in 0..10 {
        while let Some(f) = initiator.poll_transmit() {
            responder.handle_message(T0, &f, &env_b);
        }
        while let Some(f) = responder.poll_transmit() {
            initiator.handle_message(T0, &f, &env_a);
        }
    }
    let failed = |s: &mut Session| {
        let mut out = None;
        while let Some(e) = s.poll_event() {
            if let Event::Failed { error, .. } = e {
                out = Some(error.to_string());
            }
        }
        out
    };
    assert!(failed(&mut responder).expect("responder refuses").contains("refused"));
    assert!(failed(&mut initiator).expect("initiator is told").contains("aborted"));
    let history = b.store.history().expect("ledger");
    assert!(history.last().expect("an entry").outcome.starts_with("failed"));
}

/// Stores written by older versions hold changes every peer refuses (a
/// field of several megabytes, a value nested 40 deep): they made them
/// without the receivers' form check. Such a change must never be sent,
/// never make a frame over the limit, and never hold back what follows it.
#[test]
fn changes_peers_would_refuse_are_never_sent_and_block_nothing() {
    for kind in KINDS {
        let auth = StaticAuthorizer::new();
        let central = full(kind, 1, &auth);
        let device = full(kind, 2, &auth);
        central.put(&auth, &record("results", "result", "before"), &[("n", Value::Int(1))], T0);
        let huge = Value::Text("x".repeat(30 * 1024 * 1024));
        let mut deep = Value::Int(1);
        for _ in 0..40 {
            deep = Value::Array(vec![deep]);
        }
        // Counters well above the ones `put` uses next (the store's counter
        // in memory is not moved by the raw writes).
        legacy_put(&central, &record("results", "result", "huge"), huge, 1000);
        legacy_put(&central, &record("results", "result", "deep"), deep, 1001);
        for i in 0..10u64 {
            central.put(
                &auth,
                &record("results", "result", &format!("after{i}")),
                &[("n", Value::Int(1))],
                T0 + 10 + i,
            );
        }
        let (pulled, sent) = sync(&device, &central, &auth, device.config(&central, 1), T0 + 1000);
        assert_eq!((pulled.received, pulled.rejected), (11, 0), "{kind:?}: {pulled:?}");
        assert_eq!(sent.sent, 11, "{kind:?}");
        assert!(pulled.bytes_received < 64 * 1024, "{kind:?}: the 30 MiB change stayed home: {pulled:?}");
        assert!(device.fields(&record("results", "result", "after9")).is_some());
        assert!(device.fields(&record("results", "result", "huge")).is_none());
        // The central still shows what it holds: the record is readable.
        assert!(central.fields(&record("results", "result", "deep")).is_some(), "{kind:?}");
    }
}

/// Writes a signed change to `key` straight into the store's tables, as an
/// older version's unchecked local write did (counter `counter` of the
/// node's instance).
fn legacy_put(node: &Node, key: &engine::RecordKey, value: Value, counter: u64) {
    use engine::{Change, Hlc, Op, RecordState, VersionVector};
    let store = &node.store;
    let mut change = Change {
        record: key.clone(),
        author: store.instance(),
        author_key: author_key(node.seed),
        counter,
        hlc: Hlc(T0 << 16),
        authority: None,
        seen: VersionVector::default(),
        op: Op::Put { replace: true, fields: [("payload".to_owned(), Some(value))].into_iter().collect() },
        bases: Default::default(),
        seal: engine::Seal::Single([0; 64]),
    };
    let len = change.sign(&common::key(node.seed));
    let mut state = RecordState::default();
    state.apply(change.clone()).expect("merges");
    let mut index = (len as u32).to_be_bytes().to_vec();
    index.extend_from_slice(key.id.as_str().as_bytes());
    let writes = vec![
        (engine::keys::record(&key.partition, &key.record_type, &key.id), Some(engine::stored::encode_record(&state))),
        (engine::keys::by_id(&key.partition, &key.record_type, &key.id), Some(Vec::new())),
        (engine::keys::change(&key.partition, &key.record_type, &change.author, counter), Some(index)),
        (
            engine::keys::head(&key.partition, &key.record_type, &change.author),
            Some(counter.max(store.counter()).to_be_bytes().to_vec()),
        ),
    ];
    store.backend().commit(&writes).expect("commit");
}

/// Each side's ledger entry names the records the session's batches
/// carried, once each, up to `LEDGER_RECORDS_MAX`, and counts the changes
/// beyond (TAO's sync history: which results moved).
#[test]
fn the_ledger_names_the_records_a_session_moved_up_to_its_limit() {
    let auth = StaticAuthorizer::new();
    let central = full(BackendKind::Redb, 1, &auth);
    let device = full(BackendKind::Redb, 2, &auth);
    let max = engine::limits::LEDGER_RECORDS_MAX as i64;
    for i in 0..max + 50 {
        central.put(&auth, &record("results", "result", &format!("r{i:05}")), &[("n", Value::Int(i))], T0 + i as u64);
    }
    device.put(&auth, &record("results", "result", "from-device"), &[("n", Value::Int(1))], T0);
    sync(&device, &central, &auth, device.config(&central, 1), T0 + 10_000);
    let last = |node: &Node| node.store.history().expect("ledger").pop().expect("an entry");
    let (on_device, on_central) = (last(&device), last(&central));
    for entry in [&on_device, &on_central] {
        assert_eq!(entry.records.len() as i64, max, "named up to the limit");
        assert_eq!(entry.records_beyond, 51, "the rest counted: max + 51 changes moved, max named");
    }
    let sent_by_device: Vec<&engine::ledger::Moved> = on_device.records.iter().filter(|m| m.sent).collect();
    assert_eq!(sent_by_device.len(), 1, "the device's push comes first: {:?}", &on_device.records[..2]);
    assert_eq!(sent_by_device[0].key, record("results", "result", "from-device"));
    // The central's batches went out before the device's arrived: its list
    // filled with what it sent, and the change it received is counted.
    assert!(on_central.records.iter().all(|m| m.sent), "in the order they moved");
    let received: std::collections::BTreeSet<_> =
        on_device.records.iter().filter(|m| !m.sent).map(|m| m.key.clone()).collect();
    assert_eq!(received.len() as i64, max - 1, "each record once");
    // A no-op names nothing.
    sync(&device, &central, &auth, device.config(&central, 2), T0 + 20_000);
    assert!(last(&device).records.is_empty());
}

/// A profile's policies are read strictly: a local write with an unknown
/// word is refused (it once fell back to the default unseen, so a typo in
/// `update-wins` let deletes win), and a profile received with one (written
/// by an older version, or meant for a newer one) leaves this node applying
/// the last policy it could read, with the reason in its ledger.
#[test]
fn a_profile_this_node_cannot_read_is_refused_locally_and_leaves_the_last_readable_policy() {
    use engine::policy::{FieldPolicy, PROFILE_ID, PROFILE_TYPE};
    let auth = StaticAuthorizer::new();
    let central = full(BackendKind::Redb, 1, &auth);
    let device = full(BackendKind::Redb, 2, &auth);
    let profile = record("ferry", PROFILE_TYPE, PROFILE_ID);
    let typo = engine::LocalWrite {
        record: profile.clone(),
        op: engine::LocalOp::Put {
            set: [("result".to_owned(), text("authority:central,upate-wins"))].into_iter().collect(),
            unset: Default::default(),
        },
    };
    let refused = central.store.write(&central.author(), &[typo], T0, &auth, &engine::SerialSigner).expect("write");
    let reason = refused[0].as_ref().expect_err("refused").to_string();
    assert!(reason.contains("unknown word \"upate-wins\""), "{reason}");
    central.put(&auth, &profile, &[("result", text("authority:central"))], T0 + 1);
    sync(&device, &central, &auth, device.config(&central, 1), T0 + 10);
    let results = (partition("results"), partitions::RecordType::parse("result").expect("type"));
    let policy = device.store.policy(&results.0, &results.1).expect("policy");
    assert_eq!(policy.fields, FieldPolicy::Authority("central".into()));
    // Written past the check, as an older version did: a word this version
    // does not know, in a change that supersedes the readable one.
    let state = central.store.record(&profile).expect("read").expect("held");
    let mut change = engine::Change {
        record: profile.clone(),
        author: central.store.instance(),
        author_key: author_key(central.seed),
        counter: 500,
        hlc: engine::Hlc::from_parts(T0 + 100, 0),
        authority: None,
        seen: state.vv.clone(),
        op: engine::Op::Put {
            replace: true,
            fields: [("result".to_owned(), Some(text("authority:central,quorum:3")))].into_iter().collect(),
        },
        bases: Default::default(),
        seal: engine::Seal::Single([0; 64]),
    };
    let len = change.sign(&common::key(central.seed));
    let mut after = state.clone();
    after.apply(change.clone()).expect("merges");
    let mut index = (len as u32).to_be_bytes().to_vec();
    index.extend_from_slice(profile.id.as_str().as_bytes());
    central
        .store
        .backend()
        .commit(&[
            (
                engine::keys::record(&profile.partition, &profile.record_type, &profile.id),
                Some(engine::stored::encode_record(&after)),
            ),
            (engine::keys::change(&profile.partition, &profile.record_type, &change.author, 500), Some(index)),
            (
                engine::keys::head(&profile.partition, &profile.record_type, &change.author),
                Some(500u64.to_be_bytes().to_vec()),
            ),
        ])
        .expect("commit");
    let (pulled, _) = sync(&device, &central, &auth, device.config(&central, 2), T0 + 200);
    assert_eq!((pulled.received, pulled.rejected), (1, 0), "the change is data like any other: {pulled:?}");
    let policy = device.store.policy(&results.0, &results.1).expect("policy");
    assert_eq!(policy.fields, FieldPolicy::Authority("central".into()), "the last readable policy stays in force");
    let entry = device.store.history().expect("ledger").pop().expect("an entry");
    let said = entry.report.rejections.join(" | ");
    assert!(said.contains("cannot read") && said.contains("quorum:3") && said.contains("authority:central"), "{said}");
    // Kept across a restart: what is in force is stored, not recomputed.
    let dir = device.dir.path().to_path_buf();
    let Node { store, dir: _keep, .. } = device;
    store.close().expect("close");
    let (store, _) = engine::Store::open(&dir, BackendKind::Redb, engine::InstanceId([9; 16]), T0 + 300).expect("open");
    assert_eq!(store.policy(&results.0, &results.1).expect("policy").fields, FieldPolicy::Authority("central".into()));
}
