//! One store test suite, run against every backend: local write semantics,
//! the instance rule and a model test against a `BTreeMap`. The crash test
//! that kills a writing child process with SIGKILL is `store_crash.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use engine::backend::BackendKind;
use engine::{InstanceId, LocalOp, LocalWrite, SerialSigner, StaticAuthorizer, Store, Value, WriteRejection};
use partitions::{RecordType, Scope};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Every backend; the memory one as well, except where a test kills a
/// process or restores files, which only a file can live through.
const KINDS: [BackendKind; 3] = [BackendKind::Redb, BackendKind::Sled, BackendKind::Memory];
const FILE_KINDS: [BackendKind; 2] = [BackendKind::Redb, BackendKind::Sled];

fn full_node(kind: BackendKind, seed: u8, auth: &StaticAuthorizer) -> Node {
    Node::new(kind, seed, Scope::full(org()), auth)
}

fn put_op(fields: &[(&str, Value)], unset: &[&str]) -> LocalOp {
    LocalOp::Put {
        set: fields.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        unset: unset.iter().map(|s| (*s).to_owned()).collect(),
    }
}

#[test]
fn writes_create_update_unset_delete_and_recreate() {
    for kind in KINDS {
        let auth = StaticAuthorizer::new();
        let node = full_node(kind, 1, &auth);
        let r = record("results:tc-1", "result", "r1");
        node.put(&auth, &r, &[("score", Value::Int(3)), ("done", Value::Bool(false))], T0);
        node.put(&auth, &r, &[("done", Value::Bool(true))], T0 + 1);
        assert_eq!(node.fields(&r).expect("exists").len(), 2, "{kind:?}");
        let unset = LocalWrite { record: r.clone(), op: put_op(&[], &["score"]) };
        node.store.write(&node.author(), &[unset], T0 + 2, &auth, &SerialSigner).expect("write");
        assert_eq!(node.fields(&r).expect("exists").keys().collect::<Vec<_>>(), ["done"]);
        node.delete(&auth, &r, T0 + 3);
        assert_eq!(node.fields(&r), None);
        let again = LocalWrite { record: r.clone(), op: LocalOp::Delete };
        let result = node.store.write(&node.author(), &[again], T0 + 4, &auth, &SerialSigner).expect("write");
        assert_eq!(result[0], Err(WriteRejection::AlreadyDeleted));
        // Writing a deleted record starts it afresh: old fields do not return.
        node.put(&auth, &r, &[("score", Value::Int(9))], T0 + 5);
        assert_eq!(node.fields(&r).expect("exists").keys().collect::<Vec<_>>(), ["score"]);
        // The record keeps one retained change: the last one saw everything.
        assert_eq!(node.store.record(&r).expect("read").expect("held").changes.len(), 1);
        assert_eq!(node.store.find(&r.record_type, &r.id).expect("find"), vec![r.clone()]);
        let missing = LocalWrite { record: record("results", "result", "nope"), op: LocalOp::Delete };
        let result = node.store.write(&node.author(), &[missing], T0 + 6, &auth, &SerialSigner).expect("write");
        assert_eq!(result[0], Err(WriteRejection::NotFound));
        // Writing what the record already shows makes no change.
        let counter = node.store.counter();
        let same = LocalWrite { record: r.clone(), op: put_op(&[("score", Value::Int(9))], &["absent"]) };
        let result = node.store.write(&node.author(), &[same], T0 + 7, &auth, &SerialSigner).expect("write");
        let written = result[0].clone().expect("accepted");
        assert!(written.unchanged, "{kind:?}");
        assert_eq!(written.view.fields.get("score"), Some(&Value::Int(9)));
        assert_eq!(node.store.counter(), counter, "{kind:?}: no counter used");
        let other = LocalWrite { record: r.clone(), op: put_op(&[("score", Value::Int(10))], &[]) };
        let result = node.store.write(&node.author(), &[other], T0 + 8, &auth, &SerialSigner).expect("write");
        assert!(!result[0].clone().expect("accepted").unchanged);
        assert_eq!(node.store.counter(), counter + 1);
    }
}

#[test]
fn writes_outside_the_scope_are_refused_and_use_no_counter() {
    for kind in KINDS {
        let auth = StaticAuthorizer::new();
        let node = Node::new(kind, 1, scope("results", "results:tc-1", "test=ro"), &auth);
        let before = node.store.counter();
        let writes = [
            LocalWrite { record: record("results:tc-2", "result", "x"), op: put_op(&[("a", Value::Int(1))], &[]) },
            LocalWrite { record: record("results:tc-1", "test", "t"), op: put_op(&[("a", Value::Int(1))], &[]) },
            LocalWrite { record: record("results:tc-1", "result", "ok"), op: put_op(&[("a", Value::Int(1))], &[]) },
        ];
        let results = node.store.write(&node.author(), &writes, T0, &auth, &SerialSigner).expect("write");
        assert!(matches!(results[0], Err(WriteRejection::Denied(_))), "{kind:?}");
        assert!(matches!(results[1], Err(WriteRejection::Denied(_))));
        assert!(results[2].is_ok());
        assert_eq!(node.store.counter(), before + 1);
    }
}

#[test]
fn list_filters_by_partition_and_type() {
    for kind in KINDS {
        let auth = StaticAuthorizer::new();
        let node = full_node(kind, 1, &auth);
        node.put(&auth, &record("results:tc-4", "result", "a"), &[("x", Value::Int(1))], T0);
        node.put(&auth, &record("results:tc-42", "result", "b"), &[("x", Value::Int(1))], T0);
        node.put(&auth, &record("results:tc-4:s1", "answer", "c"), &[("x", Value::Int(1))], T0);
        let mut seen = Vec::new();
        node.store
            .list(Some(&partition("results:tc-4")), None, &mut |r| {
                seen.push(r.key.id.to_string());
                true
            })
            .expect("list");
        assert_eq!(seen, ["a", "c"], "{kind:?}: containment is by whole segments");
        let mut seen = Vec::new();
        let answer = RecordType::parse("answer").expect("t");
        node.store
            .list(None, Some(&answer), &mut |r| {
                seen.push(r.key.id.to_string());
                true
            })
            .expect("list");
        assert_eq!(seen, ["c"]);
    }
}

#[test]
fn instance_survives_a_clean_close_and_is_replaced_otherwise() {
    for kind in FILE_KINDS {
        let auth = StaticAuthorizer::new();
        let dir = tempfile::tempdir().expect("dir");
        auth.grant(author_key(1), Scope::full(org()), None);
        let author = engine::LocalAuthor { key: key(1), authority: None };
        let write = |store: &Store, id: &str| {
            let w = LocalWrite { record: record("results", "result", id), op: put_op(&[("a", Value::Int(1))], &[]) };
            store.write(&author, &[w], T0, &auth, &SerialSigner).expect("write")[0].clone().expect("accepted").dot
        };
        let (store, opened) = Store::open(dir.path(), kind, InstanceId([1; 16]), T0).expect("open");
        assert!(opened.fresh_instance.is_some());
        let first = write(&store, "a");
        store.close().expect("close");
        let (store, opened) = Store::open(dir.path(), kind, InstanceId([2; 16]), T0).expect("reopen");
        assert_eq!(opened.fresh_instance, None, "{kind:?}: a clean close keeps the instance");
        assert_eq!(write(&store, "b").counter, first.counter + 1);
        // Dropped without close: as after a crash.
        drop(store);
        let (store, opened) = Store::open(dir.path(), kind, InstanceId([3; 16]), T0).expect("reopen");
        assert!(opened.fresh_instance.expect("fresh").contains("did not close"), "{kind:?}");
        let dot = write(&store, "c");
        assert_eq!((dot.instance, dot.counter), (InstanceId([3; 16]), 1));
        store.close().expect("close");
        // A copy of the store elsewhere is another store.
        let copy = tempfile::tempdir().expect("dir");
        copy_dir(dir.path(), copy.path());
        let (store, opened) = Store::open(copy.path(), kind, InstanceId([4; 16]), T0).expect("open copy");
        assert!(opened.fresh_instance.expect("fresh").contains("moved, copied or restored"), "{kind:?}");
        store.close().expect("close");
        // An older store put back under a newer epoch file: restored from a backup.
        let (store, _) = Store::open(dir.path(), kind, InstanceId([5; 16]), T0).expect("open");
        store.close().expect("close");
        std::fs::write(dir.path().join("epoch"), "999\n").expect("epoch");
        let (store, opened) = Store::open(dir.path(), kind, InstanceId([6; 16]), T0).expect("open");
        assert!(opened.fresh_instance.expect("fresh").contains("older than its directory"), "{kind:?}");
        assert_eq!(store.instances().expect("history").len(), 3, "new store, crash, restore");
        store.close().expect("close");
    }
}

/// A store closed and at once reopened in the same process opens, every
/// time (sled can hold its file lock a moment after its handle is dropped;
/// `ferry bench` met that at random); a store really open elsewhere is
/// refused.
#[test]
fn a_closed_store_reopens_at_once_and_an_open_one_is_refused() {
    for kind in KINDS {
        let dir = tempfile::tempdir().expect("dir");
        for i in 0..20u8 {
            let (store, _) = Store::open(dir.path(), kind, InstanceId([i; 16]), T0).expect("reopen at once");
            store.close().expect("close");
        }
        let (store, _) = Store::open(dir.path(), kind, InstanceId([99; 16]), T0).expect("open");
        assert!(Store::open(dir.path(), kind, InstanceId([100; 16]), T0).is_err(), "{kind:?}: opened twice");
        store.close().expect("close");
    }
}

#[test]
fn a_peer_ahead_of_our_counter_moves_us_to_a_fresh_instance() {
    for kind in KINDS {
        let auth = StaticAuthorizer::new();
        let node = full_node(kind, 1, &auth);
        let r = record("results", "result", "a");
        node.put(&auth, &r, &[("a", Value::Int(1))], T0);
        let mine = node.store.instance();
        let entries = vec![engine::wire::HeadEntry {
            partition: r.partition.clone(),
            record_type: r.record_type.clone(),
            instance: mine,
            counter: 50,
        }];
        let reason = node.store.check_peer_heads(&entries, InstanceId([77; 16]), T0).expect("check");
        assert!(reason.is_some(), "{kind:?}");
        assert_eq!(node.store.instance(), InstanceId([77; 16]));
        node.put(&auth, &r, &[("a", Value::Int(2))], T0 + 1);
        assert_eq!(node.store.counter(), 1);
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Random puts, unsets and deletes on a few records, checked after every
/// step against a model, with clean reopens along the way.
#[test]
fn store_matches_a_model_under_random_operations() {
    for kind in KINDS {
        for seed in 0..4u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let auth = StaticAuthorizer::new();
            auth.grant(author_key(1), Scope::full(org()), None);
            let author = engine::LocalAuthor { key: key(1), authority: None };
            let dir = tempfile::tempdir().expect("dir");
            let mut store = Store::open(dir.path(), kind, InstanceId([1; 16]), T0).expect("open").0;
            let mut model: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
            for step in 0..150u64 {
                let id = format!("r{}", rng.random_range(0..6u32));
                let r = record("results", "result", &id);
                let choice = rng.random_range(0..10u32);
                let op = if choice < 6 {
                    let field = format!("f{}", rng.random_range(0..4u32));
                    let value = Value::Int(rng.random_range(0..100i64));
                    let unset =
                        if rng.random_bool(0.3) { vec![format!("f{}", rng.random_range(0..4u32))] } else { vec![] };
                    LocalOp::Put {
                        set: BTreeMap::from([(field, value)]),
                        unset: unset.into_iter().collect::<BTreeSet<_>>(),
                    }
                } else if choice < 8 {
                    LocalOp::Delete
                } else {
                    LocalOp::Restore
                };
                let result = store
                    .write(
                        &author,
                        &[LocalWrite { record: r.clone(), op: op.clone() }],
                        T0 + step,
                        &auth,
                        &SerialSigner,
                    )
                    .expect("write")
                    .remove(0);
                match (&op, model.get_mut(&id)) {
                    (LocalOp::Put { set, unset }, Some(fields)) => {
                        for name in unset {
                            fields.remove(name);
                        }
                        fields.extend(set.clone());
                        assert!(result.is_ok());
                    }
                    (LocalOp::Put { set, .. }, None) => {
                        model.insert(id.clone(), set.clone());
                        assert!(result.is_ok());
                    }
                    (LocalOp::Delete, Some(_)) => {
                        model.remove(&id);
                        assert!(result.is_ok());
                    }
                    (LocalOp::Delete, None) | (LocalOp::Restore, Some(_)) => {
                        assert!(result.is_err())
                    }
                    (LocalOp::Restore, None) => {
                        // Restoring brings back the fields the record had when deleted.
                        if result.is_ok() {
                            let view = store.view(&r).expect("view").expect("held");
                            model.insert(id.clone(), view.fields);
                        }
                    }
                    (LocalOp::Reissue(_), _) => unreachable!("the model writes no reissues"),
                }
                let shown: BTreeMap<String, BTreeMap<String, Value>> = {
                    let mut out = BTreeMap::new();
                    store
                        .list(None, None, &mut |rv| {
                            if rv.view.exists {
                                out.insert(rv.key.id.to_string(), rv.view.fields);
                            }
                            true
                        })
                        .expect("list");
                    out
                };
                assert_eq!(shown, model, "{kind:?} seed {seed} step {step}");
                if step % 50 == 49 {
                    store.close().expect("close");
                    store = Store::open(dir.path(), kind, InstanceId([2; 16]), T0).expect("reopen").0;
                }
            }
            store.close().expect("close");
        }
    }
}

/// The ledger keeps the newest `LEDGER_ENTRIES_MAX` entries: peers that
/// fail sessions on purpose cannot fill the disk.
#[test]
fn the_ledger_keeps_only_the_newest_entries() {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("dir");
    let (store, _) = Store::open(dir.path(), BackendKind::Redb, InstanceId([1; 16]), T0).expect("open");
    let max = engine::limits::LEDGER_ENTRIES_MAX;
    let entry = |i: usize| engine::LedgerEntry {
        session: format!("{i:08}"),
        started_at_ms: T0 + i as u64,
        outcome: "refused: test".into(),
        ..Default::default()
    };
    for i in 0..max + 25 {
        store.record_session(&entry(i)).expect("record");
    }
    let history = store.history().expect("history");
    assert_eq!(history.len(), max);
    assert_eq!(history[0].session, format!("{:08}", 25), "the oldest went first");
    assert_eq!(history.last().expect("newest").session, format!("{:08}", max + 24));
    // Counting starts again from the disk after a reopen.
    store.close().expect("close");
    let (store, _) = Store::open(dir.path(), BackendKind::Redb, InstanceId([2; 16]), T0).expect("reopen");
    store.record_session(&entry(max + 25)).expect("record");
    assert_eq!(store.history().expect("history").len(), max);
}

/// Power loss, simulated: the store's files go back to how they were at a
/// durable point, losing changes made after it that a peer already holds.
/// The instance rule must keep every later write off the lost counters.
#[test]
fn after_a_power_loss_no_counter_is_used_twice() {
    for kind in FILE_KINDS {
        for clean_image in [false, true] {
            let at = format!("{kind:?}, image of a {} store", if clean_image { "closed" } else { "running" });
            let auth = StaticAuthorizer::new();
            let scope = Scope::full(org());
            let device = Node::new(kind, 1, scope.clone(), &auth);
            let peer = full_node(kind, 2, &auth);
            let lost_instance = device.store.instance();
            for i in 0..3 {
                device.put(&auth, &record("results", "result", &format!("early{i}")), &[("v", Value::Int(i))], T0);
            }
            let Node { store, dir, .. } = device;
            let store = if clean_image {
                // The last durable point is a clean close; what follows (the
                // reopening included) is lost, as on a disk whose cache lied.
                store.close().expect("close");
                let image = tempfile::tempdir().expect("image");
                copy_dir(dir.path(), image.path());
                let (store, _) = Store::open(dir.path(), kind, InstanceId([3; 16]), T0).expect("reopen");
                (store, image)
            } else {
                // The durable point is between two commits of a running store.
                let image = tempfile::tempdir().expect("image");
                copy_dir(dir.path(), image.path());
                (store, image)
            };
            let (store, image) = store;
            let device = Node { store, seed: 1, scope: scope.clone(), dir };
            for i in 0..3 {
                device.put(&auth, &record("results", "result", &format!("late{i}")), &[("v", Value::Int(i))], T0 + 1);
            }
            sync(&device, &peer, &auth, device.config(&peer, 1), T0 + 2);
            assert_eq!(peer.snapshot().len(), 6, "{at}");
            // Power loss: the process dies and the files are as at the image.
            let Node { store, dir, .. } = device;
            drop(store);
            restore_in_place(image.path(), dir.path());
            let (store, opened) = Store::open(dir.path(), kind, InstanceId([9; 16]), T0 + 3).expect("open");
            let device = Node { store, seed: 1, scope: scope.clone(), dir };
            assert_eq!(device.snapshot().len(), 3, "{at}: the late writes are gone locally");
            if clean_image {
                // Nothing on disk tells: the first peer that holds the lost
                // counters does, before any new write, and the session stops.
                assert_eq!(opened.fresh_instance, None, "{at}");
                assert_eq!(device.store.instance(), lost_instance);
                let failed = try_sync(&device, &peer, &auth, device.config(&peer, 2), T0 + 4)
                    .expect_err("the peer's frontier shows the store went back");
                assert!(failed.contains("holds counter"), "{at}: {failed}");
            } else {
                let reason = opened.fresh_instance.expect("fresh");
                assert!(reason.contains("did not close the store cleanly"), "{at}: {reason}");
            }
            assert_ne!(device.store.instance(), lost_instance, "{at}");
            assert_eq!(device.store.counter(), 0, "{at}");
            // New writes use the fresh instance; the peer accepts all of them
            // and hands back what was lost; nothing is refused anywhere.
            device.put(&auth, &record("results", "result", "after"), &[("v", Value::Int(7))], T0 + 5);
            let (mine, theirs) = sync(&device, &peer, &auth, device.config(&peer, 3), T0 + 6);
            assert_eq!((mine.rejected, theirs.rejected, mine.rejected_by_peer), (0, 0, 0), "{at}");
            assert_eq!(mine.received, 3, "{at}: the lost writes come back from the peer");
            assert_eq!(device.snapshot(), peer.snapshot(), "{at}");
            assert_eq!(device.snapshot().len(), 7, "{at}");
        }
    }
}

/// Makes `to` hold exactly the files of `from`, rewriting files that exist
/// in both in place (same inodes, as after a power loss) and removing the rest.
fn restore_in_place(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(to).expect("read dir") {
        let entry = entry.expect("entry");
        if !from.join(entry.file_name()).exists() {
            let path = entry.path();
            if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }.expect("remove");
        }
    }
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            restore_in_place(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// `find` names every partition that holds a record of the type with the
/// id, whoever wrote it, and nothing else: with the index by id gone it
/// asks the frontier, which must know every such partition.
#[test]
fn find_names_every_partition_holding_the_id_and_no_other() {
    for kind in KINDS {
        let auth = StaticAuthorizer::new();
        let a = full_node(kind, 1, &auth);
        let b = full_node(kind, 2, &auth);
        a.put(&auth, &record("results:tc-1", "result", "r1"), &[("s", Value::Int(1))], T0);
        a.put(&auth, &record("results:tc-2", "result", "other"), &[("s", Value::Int(1))], T0);
        a.put(&auth, &record("results:tc-3", "note", "r1"), &[("s", Value::Int(1))], T0);
        // Written by another node in another partition, then synced in.
        b.put(&auth, &record("results:tc-2:u9", "result", "r1"), &[("s", Value::Int(2))], T0);
        sync(&a, &b, &auth, a.config(&b, 1), T0 + 1);
        let id = engine::RecordId::parse("r1").expect("id");
        let mut found = a.store.find(&RecordType::parse("result").expect("type"), &id).expect("find");
        found.sort();
        let mut expected = vec![record("results:tc-1", "result", "r1"), record("results:tc-2:u9", "result", "r1")];
        expected.sort();
        assert_eq!(found, expected, "{kind:?}");
        // A deleted record is still held, and still found (to restore it).
        a.delete(&auth, &record("results:tc-1", "result", "r1"), T0 + 2);
        assert_eq!(a.store.find(&RecordType::parse("result").expect("type"), &id).expect("find").len(), 2, "{kind:?}");
        let none =
            a.store.find(&RecordType::parse("result").expect("type"), &engine::RecordId::parse("nope").expect("id"));
        assert_eq!(none.expect("find"), Vec::new(), "{kind:?}");
    }
}

/// sled writes large values (a run's hashes can be 160 KB) to files in
/// `blobs/` and deletes a replaced value's file in the background; a commit
/// that made the blobs durable listed the directory and then opened each
/// file, and failed ("No such file or directory") when one was deleted in
/// between. Replacing a large value many times must never fail a commit.
#[test]
fn replacing_large_values_never_fails_a_sled_commit() {
    let dir = tempfile::tempdir().expect("dir");
    let backend = BackendKind::Sled.open(dir.path()).expect("open");
    for i in 0..300u32 {
        let value = vec![(i % 251) as u8; 160 * 1024];
        let other = vec![(i % 13) as u8; 120 * 1024];
        backend
            .commit(&[(b"run".to_vec(), Some(value)), (format!("k{}", i % 7).into_bytes(), Some(other))])
            .unwrap_or_else(|e| panic!("commit {i}: {e}"));
    }
    assert_eq!(backend.get(b"run").expect("get").map(|v| v.len()), Some(160 * 1024));
}

/// The blob index follows the records: a reference added, kept while a
/// conflict or another record names the blob, gone once the record is
/// deleted; and a damaged index entry is written again by repair from the
/// record (a lost reference would let the gc remove a blob a record names).
#[test]
fn the_blob_index_follows_the_records_and_repair_rebuilds_a_damaged_entry() {
    use engine::blob::{BlobHash, BlobRef};
    for kind in [BackendKind::Redb, BackendKind::Sled] {
        let auth = StaticAuthorizer::new();
        let node = Node::new(kind, 1, Scope::full(org()), &auth);
        let package = BlobRef { hash: BlobHash([5; 32]), size: 10 };
        let report = BlobRef { hash: BlobHash([6; 32]), size: 20 };
        let (p1, p2) = (record("tests", "delivery", "p1"), record("tests", "delivery", "p2"));
        node.put(&auth, &p1, &[("package", package.to_value())], T0);
        node.put(&auth, &p2, &[("package", package.to_value()), ("report", report.to_value())], T0 + 1);
        let index = node.store.blob_index().expect("index");
        assert_eq!(index[&package.hash].records, 2, "{kind:?}");
        assert_eq!((index[&report.hash].records, index[&report.hash].size), (1, 20));
        node.put(&auth, &p2, &[("report", engine::Value::Null)], T0 + 2);
        assert!(!node.store.blob_index().expect("index").contains_key(&report.hash), "{kind:?}: no longer named");
        node.delete(&auth, &p1, T0 + 3);
        assert_eq!(node.store.blob_index().expect("index")[&package.hash].records, 1, "{kind:?}: p1 deleted");
        // Damage p2's reference entry: bytes without their checksum, as a
        // flipped bit leaves them.
        let dir = node.dir.path().to_path_buf();
        let Node { store, dir: _keep, .. } = node;
        store.close().expect("close");
        {
            let raw: Box<dyn engine::backend::Backend> = match kind {
                BackendKind::Redb => Box::new(engine::backend::redb::RedbBackend::open(&dir).expect("raw")),
                _ => Box::new(engine::backend::sled::SledBackend::open(&dir).expect("raw")),
            };
            let key = engine::keys::blob_ref(&package.hash, &p2.partition, &p2.record_type, &p2.id);
            raw.commit(&[(key, Some(b"junk".to_vec()))]).expect("damage");
            raw.close().expect("close raw");
        }
        let (store, _) = Store::open(&dir, kind, InstanceId([7; 16]), T0 + 10).expect("reopen");
        let checked = store.check(&engine::SerialVerifier).expect("check");
        assert_eq!(checked.damaged.len(), 1, "{kind:?}: {checked:?}");
        store.repair(&engine::SerialVerifier).expect("repair");
        let index = store.blob_index().expect("index after repair");
        assert_eq!(index.get(&package.hash).map(|r| (r.records, r.size)), Some((1, 10)), "{kind:?}: written again");
        assert!(store.check(&engine::SerialVerifier).expect("check").damaged.is_empty(), "{kind:?}");
        store.close().expect("close");
    }
}
