//! The store's crash test: a child process writes batches and reports each
//! acknowledged one; the parent kills it with SIGKILL at a random point and
//! checks the store it left behind (every acknowledged batch whole, none
//! half applied, the frontier equal to what is held).
//!
//! One binary, two roles, so it is a `harness = false` target (see
//! engine/Cargo.toml): run by `cargo test` it is the parent, which starts
//! itself again as the child with `FERRY_CRASH_CHILD_DIR` set. The child's
//! body is a `fn`, not a test that passes when nobody asked for it.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use engine::backend::BackendKind;
use engine::{InstanceId, LocalOp, LocalWrite, SerialSigner, StaticAuthorizer, Store, Value};
use partitions::Scope;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const FILE_KINDS: [BackendKind; 2] = [BackendKind::Redb, BackendKind::Sled];
const CHILD_DIR: &str = "FERRY_CRASH_CHILD_DIR";
const CHILD_KIND: &str = "FERRY_CRASH_CHILD_KIND";
const RECORDS_PER_BATCH: usize = 10;
const TEST: &str = "crash_at_random_points_loses_no_acknowledged_write";

fn main() {
    if let (Ok(dir), Ok(kind)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_KIND)) {
        return child(std::path::Path::new(&dir), BackendKind::parse(&kind).expect("kind"));
    }
    // The arguments `cargo test` passes on: a name filter, `--exact`,
    // `--list`, `--ignored` (there are no ignored tests); others are ignored.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if flag("--list") {
        println!("{TEST}: test");
        return;
    }
    let selected = filters.iter().all(|f| if flag("--exact") { f.as_str() == TEST } else { TEST.contains(f.as_str()) });
    if !selected || flag("--ignored") {
        println!("\nrunning 0 tests (1 filtered out)");
        return;
    }
    println!("\nrunning 1 test");
    crash_at_random_points_loses_no_acknowledged_write();
    println!("test {TEST} ... ok\n\ntest result: ok. 1 passed");
}

/// The child: writes batches of `RECORDS_PER_BATCH` records into the store
/// in `dir`, printing `acked N` after each durable commit, until killed.
fn child(dir: &std::path::Path, kind: BackendKind) {
    let auth = StaticAuthorizer::new();
    auth.grant(author_key(1), Scope::full(org()), None);
    let author = engine::LocalAuthor { key: key(1), authority: None };
    let (store, _) = Store::open(dir, kind, InstanceId([0xcc; 16]), T0).expect("open");
    let start = store.counter();
    let mut out = std::io::stdout().lock();
    for batch in 0..100_000u64 {
        let writes: Vec<LocalWrite> = (0..RECORDS_PER_BATCH)
            .map(|i| LocalWrite {
                record: record("results", "result", &format!("b{batch}-{i}")),
                op: LocalOp::Put {
                    set: [
                        ("batch".to_owned(), Value::Int(batch as i64)),
                        ("pad".to_owned(), Value::Text("x".repeat(200))),
                    ]
                    .into(),
                    unset: Default::default(),
                },
            })
            .collect();
        store.write(&author, &writes, T0 + batch, &auth, &SerialSigner).expect("write");
        writeln!(out, "acked {batch} {start}").expect("stdout");
        out.flush().expect("flush");
    }
}

fn crash_at_random_points_loses_no_acknowledged_write() {
    let rounds: u64 = std::env::var("FERRY_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(4);
    let exe = std::env::current_exe().expect("test binary");
    for kind in FILE_KINDS {
        let mut rng = StdRng::seed_from_u64(42);
        for round in 0..rounds {
            let dir = tempfile::tempdir().expect("dir");
            let kill_after = rng.random_range(1..40u64);
            let mut child = Command::new(&exe)
                .env(CHILD_DIR, dir.path())
                .env(CHILD_KIND, kind.name())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn child");
            let mut acked = Vec::new();
            let reader = BufReader::new(child.stdout.take().expect("stdout"));
            for line in reader.lines() {
                let line = line.expect("line");
                if let Some(rest) = line.strip_prefix("acked ") {
                    let batch: u64 = rest.split(' ').next().and_then(|b| b.parse().ok()).expect("batch number");
                    acked.push(batch);
                    if acked.len() as u64 >= kill_after {
                        break;
                    }
                }
            }
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            let (store, opened) =
                Store::open(dir.path(), kind, InstanceId([0xdd; 16]), T0).expect("reopen after crash");
            assert!(opened.fresh_instance.is_some(), "{kind:?} round {round}: a crash must start a new instance");
            let mut batches: BTreeMap<i64, usize> = BTreeMap::new();
            store
                .list(None, None, &mut |r| {
                    if let Some(Value::Int(b)) = r.view.fields.get("batch") {
                        *batches.entry(*b).or_default() += 1;
                    }
                    true
                })
                .expect("list");
            for batch in &acked {
                assert_eq!(
                    batches.get(&(*batch as i64)),
                    Some(&RECORDS_PER_BATCH),
                    "{kind:?} round {round}: acknowledged batch {batch} lost"
                );
            }
            for (batch, count) in &batches {
                assert_eq!(*count, RECORDS_PER_BATCH, "{kind:?} round {round}: batch {batch} half applied");
            }
            // The frontier holds exactly what the store holds.
            let heads = store.heads(&engine::Region::of(partitions::Filter::org(org()))).expect("heads");
            let held: u64 = batches.values().map(|c| *c as u64).sum();
            let max_head = heads.iter().map(|h| h.counter).max().unwrap_or(0);
            assert_eq!(max_head, held, "{kind:?} round {round}: frontier and store disagree");
            store.close().expect("close");
        }
    }
}
