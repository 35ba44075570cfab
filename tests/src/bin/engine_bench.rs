//! In-process benchmark of the engine alone: two stores on disk, one session,
//! no network, durable writes and signature checks on, the Morango-shaped
//! workload of SPEC §5. Signing and verification use both cores, as `ferry`
//! does.
//!
//! `cargo run -p tests --release --bin engine_bench -- [--records N] [--backend redb|sled]`

use std::time::Instant;

use ed25519_dalek::SigningKey;
use engine::backend::BackendKind;
use engine::workload::{self, RECORD_TYPE};
use engine::{
    AuthorKey, Env, Event, InstanceId, LocalAuthor, LocalOp, LocalWrite, RecordKey, Session, SessionConfig,
    StaticAuthorizer, Store, SyncReport,
};
use node::parallel::{ParallelSigner, ParallelVerifier};
use partitions::{Filter, OrgId, Partition, RecordType, Scope};

const SEED: u64 = 7;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut records = 100_000u64;
    let mut backends = vec![BackendKind::Redb, BackendKind::Sled];
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--records", Some(n)) => records = n.parse().expect("--records N"),
            ("--backend", Some(b)) => backends = vec![BackendKind::parse(&b).expect("redb or sled")],
            _ => {
                eprintln!("usage: engine_bench [--records N] [--backend redb|sled]");
                std::process::exit(2);
            }
        }
    }
    println!(
        "| backend | records | bulk write rec/s | sync rec/s | sync s | wire bytes/record | messages | no-op bytes | no-op ms | 100 changed: ms | 100 changed: bytes/rec |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for kind in backends {
        run(kind, records);
    }
}

fn run(kind: BackendKind, records: u64) {
    let org = OrgId::from_public_key(&[1; 32]);
    let auth = StaticAuthorizer::new();
    let keys = [SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32])];
    let dirs = [tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir")];
    let stores: Vec<Store> = (0..2)
        .map(|i| {
            let key = AuthorKey(keys[i].verifying_key().to_bytes());
            auth.grant(key, Scope::full(org), None);
            let (store, _) = Store::open(dirs[i].path(), kind, InstanceId([i as u8 + 1; 16]), now()).expect("open");
            store.put_chain(&key, &key.0).expect("chain");
            store
        })
        .collect();
    let partition = Partition::resolve(org, workload::PARTITION).expect("partition");
    let record_type = RecordType::parse(RECORD_TYPE).expect("type");
    let author = LocalAuthor { key: keys[0].clone(), authority: None };

    let started = Instant::now();
    let mut seq = 0;
    while seq < records {
        let end = (seq + 1000).min(records);
        let writes = workload::writes(&partition, &record_type, SEED, seq..end, 0);
        stores[0].write_with(&author, &writes, now(), &auth, &ParallelSigner, false).expect("write");
        seq = end;
    }
    let write_rate = records as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let full = sync(&stores, &keys, &auth, org);
    let sync_secs = started.elapsed().as_secs_f64();
    assert_eq!(full.received, records);
    let started = Instant::now();
    let noop = sync(&stores, &keys, &auth, org);
    let noop_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert!(noop.noop);

    let writes: Vec<LocalWrite> = (0..100)
        .map(|i| {
            let s = i * (records / 100).max(1);
            LocalWrite {
                record: RecordKey {
                    partition: partition.clone(),
                    record_type: record_type.clone(),
                    id: workload::record_id(SEED, s),
                },
                op: LocalOp::Put { set: workload::result_fields(SEED, s, 1), unset: Default::default() },
            }
        })
        .collect();
    stores[0].write_with(&author, &writes, now(), &auth, &ParallelSigner, false).expect("edit");
    let started = Instant::now();
    let incremental = sync(&stores, &keys, &auth, org);
    let inc_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(incremental.received, 100);

    let bytes = full.bytes_sent + full.bytes_received;
    println!(
        "| {} | {records} | {write_rate:.0} | {:.0} | {sync_secs:.2} | {:.0} | {} | {} | {noop_ms:.2} | {inc_ms:.1} | {:.0} |",
        kind.name(),
        records as f64 / sync_secs,
        bytes as f64 / records as f64,
        full.messages_sent + full.messages_received,
        noop.bytes_sent + noop.bytes_received,
        (incremental.bytes_sent + incremental.bytes_received) as f64 / 100.0,
    );
}

/// Store 1 pulls from store 0; returns store 1's summary.
fn sync(stores: &[Store], keys: &[SigningKey], auth: &StaticAuthorizer, org: OrgId) -> SyncReport {
    let key = |i: usize| AuthorKey(keys[i].verifying_key().to_bytes());
    let mut config = SessionConfig::new([9; 16], key(0), key(1).0.to_vec(), Scope::full(org));
    config.filter = Filter::org(org);
    config.push = false;
    config.peer_has_credentials = true;
    let mut puller = Session::initiate(config, now());
    let config = SessionConfig::new([9; 16], key(1), key(0).0.to_vec(), Scope::full(org));
    let mut server = Session::accept(config, now());
    let env_p = Env { store: &stores[1], auth, verifier: &ParallelVerifier };
    let env_s = Env { store: &stores[0], auth, verifier: &ParallelVerifier };
    loop {
        while let Some(frame) = puller.poll_transmit() {
            server.handle_message(now(), &frame, &env_s);
        }
        server.handle_idle(now(), &env_s);
        while let Some(frame) = server.poll_transmit() {
            puller.handle_message(now(), &frame, &env_p);
        }
        while let Some(event) = puller.poll_event() {
            match event {
                Event::Completed(summary) => return summary,
                Event::Failed { error, .. } => panic!("sync failed: {error}"),
                _ => {}
            }
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
