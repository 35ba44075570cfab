//! A flipped bit anywhere in a store file never comes back as data: every
//! read returns what was written, or a damaged error; nothing panics; and
//! `Store::repair` leaves a store that checks clean. On both backends.

mod common;

use std::path::Path;

use common::*;
use engine::backend::BackendKind;
use engine::{InstanceId, SerialVerifier, StaticAuthorizer, Store, Value};
use partitions::Scope;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Everything the store shows: each record's key and view, or the failure.
fn read_all(store: &Store) -> Result<Vec<(engine::RecordKey, engine::View)>, String> {
    let mut out = Vec::new();
    store
        .list(None, None, &mut |r| {
            out.push((r.key, r.view));
            true
        })
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn a_flipped_bit_is_read_as_damage_never_as_data_and_repair_leaves_a_clean_store() {
    for kind in [BackendKind::Redb, BackendKind::Sled] {
        let auth = StaticAuthorizer::new();
        let node = Node::new(kind, 1, Scope::full(org()), &auth);
        for i in 0..40i64 {
            node.put(
                &auth,
                &record("results", "result", &format!("learner-{i:03}")),
                &[("score", Value::Int(i * 7)), ("answer", text(&format!("answer number {i}")))],
                T0 + i as u64,
            );
        }
        let original = read_all(&node.store).expect("clean read");
        let dir = node.dir.path().to_path_buf();
        let Node { store, dir: _keep, .. } = node;
        store.close().expect("close");
        let file = kind.main_file(&dir);
        let bytes = std::fs::read(&file).expect("read store file");
        // Offsets spread over the whole file, plus a seeded scatter.
        let mut offsets: Vec<usize> = (0..64).map(|i| i * bytes.len() / 64).collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            offsets.push((x % bytes.len() as u64) as usize);
        }
        let (mut wrong, mut detected) = (Vec::new(), 0);
        for (n, offset) in offsets.into_iter().enumerate() {
            let case = tempfile::tempdir().expect("dir");
            copy_dir(&dir, case.path());
            let mut flipped = bytes.clone();
            flipped[offset] ^= 1 << (n % 8);
            std::fs::write(kind.main_file(case.path()), &flipped).expect("write");
            let outcome = std::panic::catch_unwind(|| {
                let Ok((store, opened)) = Store::open(case.path(), kind, InstanceId([7; 16]), T0) else {
                    return (true, true);
                };
                let read = read_all(&store);
                let same = read.as_ref().is_ok_and(|r| *r == original);
                let report = store.check(&SerialVerifier).expect("check");
                // Whatever reads back differently is reported as damage, or
                // (sled drops a damaged log tail, rolling the store back)
                // the store knows it lost history and continues under a
                // fresh instance, with frontiers that ask peers for it again.
                assert!(
                    same || !report.damaged.is_empty() || opened.fresh_instance.is_some(),
                    "offset {offset}: a difference nobody reported: {:?}",
                    read.as_ref().map(Vec::len)
                );
                if let Ok(r) = &read {
                    // Fewer records (a key made unreadable) may be missing,
                    // but none may differ from what was written.
                    for (key, view) in r {
                        let was = original.iter().find(|(k, _)| k == key);
                        assert_eq!(was.map(|(_, v)| v), Some(view), "offset {offset}: wrong data for {key:?}");
                    }
                }
                if !report.damaged.is_empty() && !report.damaged.iter().any(|d| d.key.is_empty()) {
                    store.repair(&SerialVerifier).expect("repair");
                    let after = store.check(&SerialVerifier).expect("check after repair");
                    assert!(after.damaged.is_empty(), "offset {offset}: still damaged after repair: {after:?}");
                    read_all(&store).expect("reads after repair");
                }
                (!same, false)
            });
            match outcome {
                Ok((differed, _)) => detected += usize::from(differed),
                Err(_) => wrong.push(offset),
            }
        }
        assert!(wrong.is_empty(), "{kind:?}: flips at {wrong:?} gave wrong data or a panic");
        assert!(detected > 0, "{kind:?}: no flip touched anything read, so the test tested nothing");
    }
}
