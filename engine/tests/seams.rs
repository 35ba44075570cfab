//! The seams issue 11 put into the engine: the `ApplyHook` every commit
//! calls, batch verification outside the store's write lock, and the
//! ledger's stored form, which must still read entries written before
//! `SyncReport` existed.

mod common;

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::*;
use engine::backend::BackendKind;
use engine::{
    ApplyHook, RecordKey, RecordState, Refusal, Signed, StaticAuthorizer, StoreError, SyncReport, Value, Verifier,
};
use partitions::{Partition, RecordType};

/// Records every call, for the hooks test.
#[derive(Default)]
struct Recorder {
    wanted: String,
    calls: Mutex<Vec<String>>,
}

impl ApplyHook for Recorder {
    fn wants(&self, _partition: &Partition, record_type: &RecordType) -> bool {
        record_type.as_str() == self.wanted
    }

    fn changed(&self, key: &RecordKey, before: Option<&RecordState>, after: &RecordState) -> Result<(), Refusal> {
        let field = |state: &RecordState| {
            state.view(&Default::default()).fields.get("n").map_or("-".to_owned(), |v| format!("{v:?}"))
        };
        let before = before.map_or("new".to_owned(), field);
        self.calls.lock().expect("lock").push(format!("changed {} {before} -> {}", key.id, field(after)));
        Ok(())
    }

    fn committed(&self) {
        self.calls.lock().expect("lock").push("committed".to_owned());
    }
}

#[test]
fn apply_hooks_see_local_writes_and_received_changes_with_their_states_before_and_after() {
    let auth = StaticAuthorizer::default();
    let everything = scope("results", "results", "");
    let a = Node::new(BackendKind::Memory, 1, everything.clone(), &auth);
    let b = Node::new(BackendKind::Memory, 2, everything, &auth);
    let hook = Arc::new(Recorder { wanted: "watched".into(), ..Recorder::default() });
    b.store.add_hook(hook.clone());

    let watched = record("results", "watched", "w1");
    let other = record("results", "other", "o1");
    b.put(&auth, &watched, &[("n", Value::Int(1))], T0);
    b.put(&auth, &other, &[("n", Value::Int(1))], T0);
    a.put(&auth, &watched, &[("n", Value::Int(2))], T0 + 10);
    a.put(&auth, &other, &[("n", Value::Int(2))], T0 + 10);
    sync(&a, &b, &auth, a.config(&b, 1), T0 + 20);

    let calls = hook.calls.lock().expect("lock").clone();
    assert_eq!(
        calls,
        [
            "changed w1 new -> Int(1)",
            "committed",
            // The write to `other` calls nothing: the hook does not want it.
            // The sync brings a's newer value of w1 in one commit.
            "changed w1 Int(1) -> Int(2)",
            "committed",
        ]
    );
}

/// An application's own table kept atomic with the data: it refuses any
/// record whose `n` is 13 (while `strict`), stages the rest in `changed`,
/// and keeps them only at `committed`.
#[derive(Default)]
struct Table {
    strict: std::sync::atomic::AtomicBool,
    staged: Mutex<Vec<String>>,
    rows: Mutex<Vec<String>>,
    aborted: std::sync::atomic::AtomicUsize,
}

impl ApplyHook for Table {
    fn wants(&self, _partition: &Partition, record_type: &RecordType) -> bool {
        record_type.as_str() == "results"
    }

    fn changed(&self, key: &RecordKey, _before: Option<&RecordState>, after: &RecordState) -> Result<(), Refusal> {
        let n = after.view(&Default::default()).fields.get("n").cloned();
        if self.strict.load(std::sync::atomic::Ordering::SeqCst) && n == Some(Value::Int(13)) {
            return Err(Refusal(format!("{} has n = 13, which the app's table refuses", key.id)));
        }
        self.staged.lock().expect("lock").push(key.id.to_string());
        Ok(())
    }

    fn committed(&self) {
        let staged = std::mem::take(&mut *self.staged.lock().expect("lock"));
        self.rows.lock().expect("lock").extend(staged);
    }

    fn aborted(&self) {
        self.staged.lock().expect("lock").clear();
        self.aborted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn an_apply_hook_that_refuses_rolls_back_the_whole_batch_and_the_session_fails_with_its_reason() {
    let auth = StaticAuthorizer::default();
    let everything = scope("results", "results", "");
    let a = Node::new(BackendKind::Memory, 1, everything.clone(), &auth);
    let b = Node::new(BackendKind::Memory, 2, everything, &auth);
    let table = Arc::new(Table::default());
    table.strict.store(true, std::sync::atomic::Ordering::SeqCst);
    b.store.add_hook(table.clone());

    // One batch of three records, the middle one refused.
    let keys: Vec<RecordKey> = ["r1", "r2", "r3"].iter().map(|id| record("results", "results", id)).collect();
    for (key, n) in keys.iter().zip([1, 13, 3]) {
        a.put(&auth, key, &[("n", Value::Int(n))], T0);
    }
    let feed_before = b.store.feed_last().expect("feed");
    let failed = try_sync(&a, &b, &auth, a.config(&b, 1), T0 + 10).expect_err("the hook refuses the batch");
    assert!(failed.contains("r2 has n = 13"), "the session says the hook's reason: {failed}");
    for key in &keys {
        assert_eq!(b.fields(key), None, "nothing of the refused batch is stored ({})", key.id);
    }
    assert_eq!(b.store.feed_last().expect("feed"), feed_before, "the feed shows no change of the batch");
    assert!(table.rows.lock().expect("lock").is_empty(), "the app's table kept nothing");
    assert_eq!(table.aborted.load(std::sync::atomic::Ordering::SeqCst), 1, "the hook heard the commit abort");

    // A local write the hook refuses fails whole, with the reason.
    let local = engine::LocalWrite {
        record: record("results", "results", "mine"),
        op: engine::LocalOp::Put { set: [("n".to_owned(), Value::Int(13))].into(), unset: Default::default() },
    };
    match b.store.write(&b.author(), &[local], T0 + 20, &auth, &engine::SerialSigner) {
        Err(StoreError::Refused(reason)) => assert!(reason.contains("mine has n = 13"), "{reason}"),
        other => panic!("a refused local write fails whole: {:?}", other.map(|r| r.len())),
    }
    assert_eq!(b.fields(&record("results", "results", "mine")), None);

    // Once the app accepts, the next sync brings the whole batch.
    table.strict.store(false, std::sync::atomic::Ordering::SeqCst);
    try_sync(&a, &b, &auth, a.config(&b, 2), T0 + 30).expect("the batch is sent again and accepted");
    for (key, n) in keys.iter().zip([1, 13, 3]) {
        assert_eq!(b.fields(key).and_then(|f| f.get("n").cloned()), Some(Value::Int(n)));
    }
    let mut rows = table.rows.lock().expect("lock").clone();
    rows.sort();
    assert_eq!(rows, ["r1", "r2", "r3"]);
}

/// A verifier that, in the middle of verifying a batch, asks another
/// thread to make a local write to the same store and waits for it.
struct WritesWhileVerifying {
    go: mpsc::Sender<()>,
    done: Mutex<mpsc::Receiver<()>>,
    wrote: Mutex<Option<bool>>,
}

impl Verifier for WritesWhileVerifying {
    fn verify_all(&self, items: &[Signed<'_>]) -> Vec<bool> {
        if self.wrote.lock().expect("lock").is_none() {
            let _ = self.go.send(());
            // Bounded: with the lock held during verification the write
            // waits for this call to return, and this wait times out.
            let wrote = self.done.lock().expect("lock").recv_timeout(Duration::from_secs(20)).is_ok();
            *self.wrote.lock().expect("lock") = Some(wrote);
        }
        engine::SerialVerifier.verify_all(items)
    }
}

#[test]
fn a_local_write_goes_ahead_while_a_received_batch_is_being_verified() {
    let auth = StaticAuthorizer::default();
    let everything = scope("results", "results", "");
    let a = Node::new(BackendKind::Memory, 1, everything.clone(), &auth);
    let b = Node::new(BackendKind::Memory, 2, everything, &auth);
    a.put(&auth, &record("results", "result", "r1"), &[("n", Value::Int(1))], T0);

    let (go_tx, go_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let verifier = WritesWhileVerifying { go: go_tx, done: Mutex::new(done_rx), wrote: Mutex::new(None) };
    std::thread::scope(|threads| {
        let (b, auth) = (&b, &auth);
        threads.spawn(move || {
            if go_rx.recv().is_ok() {
                b.put(auth, &record("results", "local", "during"), &[("n", Value::Int(7))], T0 + 30);
                let _ = done_tx.send(());
            }
        });
        let mut initiator = engine::Session::initiate(a.config(b, 1), T0 + 20);
        let mut responder = engine::Session::accept(b.config(&a, 0), T0 + 20);
        let env_a = engine::Env { store: &a.store, auth, verifier: &engine::SerialVerifier };
        let env_b = engine::Env { store: &b.store, auth, verifier: &verifier };
        for _ in 0..1000 {
            while let Some(frame) = initiator.poll_transmit() {
                responder.handle_message(T0 + 20, &frame, &env_b);
            }
            responder.handle_idle(T0 + 20, &env_b);
            while let Some(frame) = responder.poll_transmit() {
                initiator.handle_message(T0 + 20, &frame, &env_a);
            }
            initiator.handle_idle(T0 + 20, &env_a);
            if initiator.is_finished() && responder.is_finished() {
                break;
            }
        }
        assert!(initiator.is_finished() && responder.is_finished(), "the sync finishes");
    });
    assert_eq!(*verifier.wrote.lock().expect("lock"), Some(true), "the local write did not wait for the verification");
    assert!(b.fields(&record("results", "result", "r1")).is_some(), "the batch applied");
    assert!(b.fields(&record("results", "local", "during")).is_some(), "the local write applied");
}

/// The ledger's stored form before `SyncReport`: the same fields, in the
/// same order, without the ones added since.
#[derive(serde::Serialize)]
struct OldLedgerEntry {
    session: String,
    peer: String,
    via: String,
    started_at_ms: u64,
    duration_ms: u64,
    outcome: String,
    filter: String,
    pull: bool,
    push: bool,
    sent: u64,
    received: u64,
    skipped: u64,
    updated: u64,
    conflicts: u64,
    rejected: u64,
    bytes_sent: u64,
    bytes_received: u64,
    rejections: Vec<String>,
}

#[test]
fn ledger_entries_written_before_sync_reports_still_read() {
    let old = OldLedgerEntry {
        session: "ab".into(),
        peer: "cd".into(),
        via: "network".into(),
        started_at_ms: 5,
        duration_ms: 6,
        outcome: "completed".into(),
        filter: "f".into(),
        pull: true,
        push: false,
        sent: 1,
        received: 2,
        skipped: 3,
        updated: 4,
        conflicts: 5,
        rejected: 6,
        bytes_sent: 7,
        bytes_received: 8,
        rejections: vec!["why".into()],
    };
    let entry: engine::LedgerEntry =
        engine::stored::decode_value(&engine::stored::encode_value(&old)).expect("an old entry decodes");
    assert_eq!(entry.outcome, "completed");
    assert_eq!(
        entry.report,
        SyncReport {
            sent: 1,
            received: 2,
            skipped: 3,
            updated: 4,
            conflicts: 5,
            rejected: 6,
            bytes_sent: 7,
            bytes_received: 8,
            duration_ms: 6,
            rejections: vec!["why".into()],
            ..SyncReport::default()
        }
    );
    let again: engine::LedgerEntry =
        engine::stored::decode_value(&engine::stored::encode_value(&entry)).expect("round trip");
    assert_eq!(again, entry);
}
