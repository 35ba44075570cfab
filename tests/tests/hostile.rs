//! A hostile peer against a real `ferry serve` (SPEC: trust nothing a peer
//! sends). For every misbehaviour: the exact error, the daemon stays up and
//! serves an honest device syncing at the same moment, the central's records
//! are unchanged, and its ledger records the rejection.
//!
//! The hostile side is `tests::hostile`: real libp2p, frames written by
//! hand. The daemon runs with `session_timeout = "3s"` so the stalling
//! cases finish quickly.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use engine::InstanceId;
use engine::wire::{self, HeadEntry, Heads, Message, RunProof};
use partitions::{Filter, OrgId, Partition};
use tests::cli::{Home, Server};
use tests::hostile::{Conn, Hostile, Received, batch, batch_with_runs, change, corrupt_each_level, group};

const TIMEOUT_S: u64 = 3;

/// An enrolled device whose key and chain the hostile peer may use.
struct Device {
    home: Home,
    key: SigningKey,
    chain: Vec<u8>,
}

impl Device {
    fn enrol(root: &std::path::Path, name: &str, token: &str) -> Device {
        let home = Home::init(root, name);
        home.json(&["enroll", token]);
        let secret: [u8; 32] = std::fs::read(home.dir.join("node.key")).expect("key").try_into().expect("32 bytes");
        let pem = std::fs::read_dir(home.dir.join("certs")).expect("certs").next().expect("a chain").expect("entry");
        let chain = certs::pem::decode_chain(&std::fs::read_to_string(pem.path()).expect("pem")).expect("chain");
        Device { home, key: SigningKey::from_bytes(&secret), chain }
    }
}

struct Fixture {
    root: tempfile::TempDir,
    central: Home,
    server: Server,
    org: OrgId,
    /// Reads everything in `results`, writes nothing: its syncs never
    /// change the central, so "unchanged" can be checked while it syncs.
    honest: Device,
    /// Reads and writes `results:tc-1`.
    mallory: Device,
    filter: Filter,
}

impl Fixture {
    fn new(extra_records: usize) -> Fixture {
        let root = tempfile::tempdir().expect("dir");
        let central = Home::init(root.path(), "central");
        central.configure(&format!("session_timeout = \"{TIMEOUT_S}s\"\n"));
        let org = central.json(&["org", "create", "Riverside", "--authority", "central"])["org_id"]
            .as_str()
            .expect("org")
            .to_owned();
        let org = OrgId::parse(&org).expect("org id");
        for (id, score) in [("r1", "1"), ("r2", "2")] {
            central.ok(&["put", "result", id, "--partition", "results:tc-1", "--set", &format!("score={score}")]);
        }
        if extra_records > 0 {
            import_padded(&central, root.path(), extra_records);
        }
        let server = central.serve();
        let token = |args: &[&str]| {
            let mut all = vec!["enroll", "token"];
            all.extend_from_slice(args);
            central.json(&all)["token"].as_str().expect("token").to_owned()
        };
        let honest = Device::enrol(root.path(), "honest", &token(&["--read", "results"]));
        let mallory =
            Device::enrol(root.path(), "mallory", &token(&["--read", "results:tc-1", "--write", "results:tc-1"]));
        // The honest device holds everything already: its syncs during the
        // cases are no-ops for the central's records.
        honest.home.json(&["sync", &server.address]);
        let filter = Filter::new(vec![Partition::resolve(org, "results:tc-1").expect("partition")]);
        Fixture { root, central, server, org, honest, mallory, filter }
    }

    fn token(&self, read: &str, write: &str, extra: &[&str]) -> String {
        let mut args = vec!["enroll", "token", "--read", read, "--write", write];
        args.extend_from_slice(extra);
        self.central.json(&args)["token"].as_str().expect("token").to_owned()
    }

    /// The central's records, deleted ones included.
    fn records(&self) -> serde_json::Value {
        self.central.json(&["list", "--deleted"])
    }

    fn ledger(&self) -> Vec<serde_json::Value> {
        self.central.json(&["history"]).as_array().expect("ledger").clone()
    }

    /// Runs one case of `peer`'s while the honest device syncs, then checks
    /// the daemon served it, the records did not change and the ledger has
    /// an entry for `peer` that mentions `expected`.
    fn case(&self, name: &str, peer: &Hostile, expected: &str, hostile: impl FnOnce()) {
        let before = self.records();
        let ledger_before = self.ledger().len();
        let started = Instant::now();
        let (honest_home, address) = (&self.honest.home, &self.server.address);
        let (opened, seen) = (peer.opened(), peer.opened().count());
        let peer_id = peer.peer_id();
        let peer = peer_id.as_str();
        std::thread::scope(|s| {
            let honest = s.spawn(move || {
                // Sync in the middle of the hostile session: once it has
                // opened its stream (if it never does, the case fails anyway).
                opened.wait_beyond(seen, tests::hostile::ANSWER_WAIT);
                let out = honest_home.run(&["--json", "sync", address]);
                assert!(
                    out.status.success(),
                    "{name}: the honest device could not sync: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            });
            hostile();
            honest.join().unwrap_or_else(|_| panic!("{name}: the honest sync failed"));
        });
        assert_eq!(self.records(), before, "{name}: the central's records changed");
        // The ledger entry may be written just after the stream closes.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ledger = self.ledger();
            let entries: Vec<&serde_json::Value> =
                ledger[ledger_before.min(ledger.len())..].iter().filter(|e| e["peer"] == peer).collect();
            if let Some(entry) = entries.iter().find(|e| e.to_string().contains(expected)) {
                println!("{name}: {} ({} ms)", entry["outcome"], started.elapsed().as_millis());
                break;
            }
            assert!(Instant::now() < deadline, "{name}: no ledger entry for {peer} mentions {expected:?}: {entries:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Imports `n` results with incompressible padding into `results:tc-1`.
fn import_padded(central: &Home, dir: &std::path::Path, n: usize) {
    use rand::{RngExt, SeedableRng};
    use std::io::Write;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let path = dir.join("padded.ndjson");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("file"));
    for i in 0..n {
        let pad: String = (0..1000).map(|_| char::from(b'a' + rng.random_range(0..26u8))).collect();
        let line = serde_json::json!({
            "type": "result", "id": format!("p{i:05}"), "partition": "results:tc-1",
            "fields": { "score": i, "pad": pad },
        });
        writeln!(file, "{line}").expect("write");
    }
    drop(file);
    central.json(&["import", path.to_str().expect("path")]);
}

/// Breaks a change's own signature.
fn flip_signature(change: &mut engine::Change, byte: usize) {
    match &mut change.seal {
        engine::Seal::Single(signature) => signature[byte] ^= 1,
        engine::Seal::Run { .. } => panic!("tests::hostile::change seals a change alone"),
    }
}

fn fresh_instance() -> InstanceId {
    InstanceId(rand::random())
}

/// Pushes `message` after a correct handshake and returns what came back:
/// the Ack's rejected count, or the Abort's reason.
fn push_batch(conn: &mut Conn<'_>, chain: &[u8], filter: &Filter, message: &Message) -> Result<u64, String> {
    conn.handshake(chain, filter, false, true);
    conn.send(message);
    loop {
        match conn.expect_message() {
            Message::Ack { rejected, .. } => {
                conn.send(&Message::End { batches: 1 });
                conn.drain(tests::hostile::ANSWER_WAIT);
                return Ok(rejected);
            }
            Message::Abort { reason } => return Err(reason),
            _ => continue,
        }
    }
}

#[test]
fn forged_unauthorised_and_equivocating_changes_are_refused() {
    let f = Fixture::new(0);
    let m = Hostile::new(f.mallory.key.clone());
    let org = f.org;

    f.case("forged signature", &m, "bad signature", || {
        let mut forged = change(&m.key, fresh_instance(), 1, org, "results:tc-1", "forged", 5);
        flip_signature(&mut forged, 10);
        let answer = push_batch(
            &mut m.open(&f.server.address),
            &f.mallory.chain,
            &f.filter,
            &batch(0, vec![group(&[forged], 0)], vec![]),
        );
        assert_eq!(answer, Ok(1), "one change refused");
    });

    f.case("outside the pushing peer's scope", &m, "outside what this peer may send here", || {
        let outside = change(&m.key, fresh_instance(), 1, org, "results:tc-2", "sneaky", 5);
        let filter = Filter::new(vec![Partition::resolve(org, "results").expect("p")]);
        let answer = push_batch(
            &mut m.open(&f.server.address),
            &f.mallory.chain,
            &filter,
            &batch(0, vec![group(&[outside], 0)], vec![]),
        );
        assert_eq!(answer, Ok(1));
    });

    // Bob may write only his own partition; Mallory relays a change Bob
    // signed for another one, inside what Mallory may send.
    let bob = Device::enrol(f.root.path(), "bob", &f.token("results:tc-1:u1", "results:tc-1:u1", &[]));
    f.case("outside the author's write scope", &m, "author may not write this", || {
        let stray = change(&bob.key, fresh_instance(), 1, org, "results:tc-1:u2", "stray", 5);
        let answer = push_batch(
            &mut m.open(&f.server.address),
            &f.mallory.chain,
            &f.filter,
            &batch(0, vec![group(&[stray], 0)], vec![bob.chain.clone()]),
        );
        assert_eq!(answer, Ok(1));
    });

    // Rex is revoked; Mallory relays a change Rex signed afterwards.
    let rex = Device::enrol(f.root.path(), "rex", &f.token("results:tc-1", "results:tc-1", &[]));
    let rex_cert = rex.home.json(&["cert", "list"])[0]["certificate_id"].as_str().expect("id").to_owned();
    let revoked = f.central.json(&["cert", "revoke", &rex_cert]);
    let revoked_at = revoked["revoked_at"].as_u64().expect("revoked_at");
    f.case("a revoked author's change, relayed", &m, "revoked", || {
        // Signed afterwards: dated the second after the revocation took
        // effect, whatever the clock reads now.
        let mut late = change(&rex.key, fresh_instance(), 1, org, "results:tc-1", "late", 5);
        late.hlc = engine::Hlc::from_parts((revoked_at + 1) * 1000, 0);
        late.sign(&rex.key);
        let answer = push_batch(
            &mut m.open(&f.server.address),
            &f.mallory.chain,
            &f.filter,
            &batch(0, vec![group(&[late], 0)], vec![rex.chain.clone()]),
        );
        assert_eq!(answer, Ok(1));
    });

    f.case("counters going backwards in a group", &m, "counter 1 out of order in its group", || {
        let instance = fresh_instance();
        // Counter 2, then counter 1: the second is refused as out of order.
        // (The first carries a bad signature, so the store stays unchanged.)
        let mut second = change(&m.key, instance, 2, org, "results:tc-1", "x2", 5);
        flip_signature(&mut second, 0);
        let first = change(&m.key, instance, 1, org, "results:tc-1", "x1", 5);
        let answer = push_batch(
            &mut m.open(&f.server.address),
            &f.mallory.chain,
            &f.filter,
            &batch(0, vec![group(&[second, first], 0)], vec![]),
        );
        assert_eq!(answer, Ok(2));
    });

    // Runs: one signature over several changes, and a proof per batch.
    f.case("a forged run proof", &m, "the signature of its run does not verify", || {
        let instance = fresh_instance();
        let mut changes: Vec<_> =
            (1..=3).map(|i| change(&m.key, instance, i, org, "results:tc-1", &format!("r{i}"), 5)).collect();
        let run = tests::hostile::seal_run(&m.key, &mut changes);
        // Changes 1 and 3 travel; the proof holds the hash of leaf 2.
        let mut proof = RunProof::of(&run, instance, 1, &[1, 3]).expect("proof");
        assert_eq!(proof.proof.len(), 1);
        proof.proof[0][7] ^= 1;
        let sent = [changes[0].clone(), changes[2].clone()];
        let answer = push_batch(
            &mut m.open(&f.server.address),
            &f.mallory.chain,
            &f.filter,
            &batch_with_runs(0, vec![group(&sent, 0)], vec![], vec![proof]),
        );
        assert_eq!(answer, Ok(2), "both changes of the run refused");
    });

    f.case("a change moved into another run", &m, "counter 2 is outside its run (counters 3 to 4)", || {
        let instance = fresh_instance();
        let mut changes: Vec<_> =
            (1..=4).map(|i| change(&m.key, instance, i, org, "results:tc-1", &format!("m{i}"), 5)).collect();
        let (a, b) = changes.split_at_mut(2);
        tests::hostile::seal_run(&m.key, a);
        let run_b = tests::hostile::seal_run(&m.key, b);
        // Counter 2 of run A, claimed as part of run B, whose proof travels.
        let mut moved = changes[1].clone();
        moved.seal = engine::Seal::Run { first: 3 };
        let proofs = vec![RunProof::of(&run_b, instance, 3, &[]).expect("proof")];
        let answer = push_batch(
            &mut m.open(&f.server.address),
            &f.mallory.chain,
            &f.filter,
            &batch_with_runs(0, vec![group(&[moved], 0)], vec![], proofs),
        );
        assert_eq!(answer, Ok(1));
    });

    f.case("a truncated run proof", &m, "its run's proof is missing hashes (truncated)", || {
        let instance = fresh_instance();
        let mut changes: Vec<_> =
            (1..=4).map(|i| change(&m.key, instance, i, org, "results:tc-1", &format!("t{i}"), 5)).collect();
        let run = tests::hostile::seal_run(&m.key, &mut changes);
        let mut proof = RunProof::of(&run, instance, 1, &[1]).expect("proof");
        assert_eq!(proof.proof.len(), 2);
        proof.proof.pop();
        let answer = push_batch(
            &mut m.open(&f.server.address),
            &f.mallory.chain,
            &f.filter,
            &batch_with_runs(0, vec![group(&changes[..1], 0)], vec![], vec![proof]),
        );
        assert_eq!(answer, Ok(1));
    });

    f.case("a group that skips counters", &m, "starts after counter 5", || {
        let ahead = change(&m.key, fresh_instance(), 6, org, "results:tc-1", "ahead", 5);
        let answer = push_batch(
            &mut m.open(&f.server.address),
            &f.mallory.chain,
            &f.filter,
            &batch(0, vec![group(&[ahead], 5)], vec![]),
        );
        let reason = answer.expect_err("the session is aborted");
        assert!(reason.contains("protocol violation by the peer: group"), "{reason}");
    });

    // Equivocation: one honest change lands first (outside the check), then
    // another change with the same instance and counter.
    let instance = fresh_instance();
    let honest_change = change(&m.key, instance, 1, org, "results:tc-1", "eq", 1);
    let answer = push_batch(
        &mut m.open(&f.server.address),
        &f.mallory.chain,
        &f.filter,
        &batch(0, vec![group(std::slice::from_ref(&honest_change), 0)], vec![]),
    );
    assert_eq!(answer, Ok(0));
    f.case(
        "the same (instance, counter) with other content",
        &m,
        "signed two different changes with counter 1",
        || {
            let twin = change(&m.key, instance, 1, org, "results:tc-1", "eq", 2);
            let answer = push_batch(
                &mut m.open(&f.server.address),
                &f.mallory.chain,
                &f.filter,
                &batch(0, vec![group(&[twin], 0)], vec![]),
            );
            assert_eq!(answer, Ok(1));
        },
    );
    f.server.events.try_iter().for_each(drop);
}

#[test]
fn bad_credentials_are_refused_at_hello() {
    let f = Fixture::new(0);
    let org = f.org;
    let central_key: [u8; 32] =
        std::fs::read(f.central.dir.join("node.key")).expect("key").try_into().expect("32 bytes");
    let central_key = SigningKey::from_bytes(&central_key);
    let pem = std::fs::read_dir(f.central.dir.join("certs")).expect("certs").next().expect("chain").expect("entry");
    let central_chain = certs::Chain::decode(
        &certs::pem::decode_chain(&std::fs::read_to_string(pem.path()).expect("pem")).expect("chain"),
    )
    .expect("chain");
    let issuer = certs::Issuer::new(central_chain.clone(), central_key.clone()).expect("issuer");
    let now = node::node::now_ms() / 1000;
    let narrow = partitions::Scope {
        read: Filter::parse(org, "results:tc-1").expect("f"),
        write: Filter::parse(org, "results:tc-1").expect("f"),
        types: Default::default(),
    };

    // A sub-issuer limited to tc-1 signs a certificate for all of `results`.
    let sub_key = SigningKey::from_bytes(&rand::random());
    let sub = issuer
        .issue(
            &certs::IssueRequest {
                subject_key: sub_key.verifying_key().to_bytes(),
                name: "sub-issuer".into(),
                scope: narrow.clone(),
                not_before: now - 60,
                not_after: now + 3600,
                can_issue: Some(1),
                authority: None,
            },
            rand::random(),
        )
        .expect("sub-issuer");
    let wide_key = SigningKey::from_bytes(&rand::random());
    let template = certs::CertTemplate {
        subject_key: wide_key.verifying_key().to_bytes(),
        info: certs::CertInfo {
            org,
            name: "widened".into(),
            scope: partitions::Scope {
                read: Filter::parse(org, "results").expect("f"),
                write: Filter::parse(org, "results").expect("f"),
                types: Default::default(),
            },
            authority: None,
        },
        not_before: now - 60,
        not_after: now + 3600,
        ca: None,
        serial: rand::random(),
        extra_extensions: Vec::new(),
    };
    let der = certs::build(&template, Some(sub.leaf()), &sub_key).expect("build");
    let widened = sub.with(certs::Certificate::from_der(&der).expect("cert")).expect("chain").encode();
    let wide = Hostile::new(wide_key);
    f.case("a chain that widens scope", &wide, "is wider than its issuer", || {
        let mut conn = wide.open(&f.server.address);
        conn.send(&hello(&widened, &f.filter));
        let reason = conn.expect_abort();
        assert!(reason.starts_with("refused the peer's credentials:"), "{reason}");
        assert!(reason.contains("is wider than its issuer"), "{reason}");
    });

    let stranger = Hostile::new(SigningKey::from_bytes(&rand::random()));
    f.case("a chain for another key", &stranger, "the chain belongs to key", || {
        let mut conn = stranger.open(&f.server.address);
        conn.send(&hello(&f.mallory.chain, &f.filter));
        let reason = conn.expect_abort();
        assert!(reason.contains("not to the peer's key"), "{reason}");
    });

    // Issued properly, but its validity ended a minute ago.
    let old_key = SigningKey::from_bytes(&rand::random());
    let expired = issuer
        .issue(
            &certs::IssueRequest {
                subject_key: old_key.verifying_key().to_bytes(),
                name: "expired".into(),
                scope: narrow,
                not_before: central_chain.leaf().not_before(),
                not_after: central_chain.leaf().not_before() + 1,
                can_issue: None,
                authority: None,
            },
            rand::random(),
        )
        .expect("expired certificate")
        .encode();
    let old = Hostile::new(old_key);
    f.case("an expired chain", &old, "expired at", || {
        let mut conn = old.open(&f.server.address);
        conn.send(&hello(&expired, &f.filter));
        let reason = conn.expect_abort();
        assert!(reason.contains("expired at"), "{reason}");
    });
}

fn hello(chain: &[u8], filter: &Filter) -> Message {
    Message::Hello(wire::Hello {
        session: rand::random(),
        credentials: wire::Credentials::Full(chain.to_vec()),
        filter: filter.clone(),
        pull: true,
        push: true,
        types: Default::default(),
    })
}

#[test]
fn bad_bytes_and_bad_order_end_only_that_session() {
    let f = Fixture::new(0);
    let m = Hostile::new(f.mallory.key.clone());
    let org = f.org;
    let chain = &f.mallory.chain;
    let address = &f.server.address;

    f.case("an oversized frame", &m, "more than the", || {
        let mut conn = m.open(address);
        conn.handshake(chain, &f.filter, false, true);
        conn.send_raw(&0xffff_ff00u32.to_be_bytes());
        conn.send_raw(&[0; 1024]);
        conn.closes_within(tests::hostile::ANSWER_WAIT);
    });

    f.case("a zstd bomb announcing its size", &m, "more than the 25165824 allowed", || {
        let mut conn = m.open(address);
        conn.handshake(chain, &f.filter, false, true);
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).expect("compress");
        conn.send_frame(&wire::batch_frame_from_parts(0, 64 << 20, &bomb));
        let reason = conn.expect_abort();
        assert!(reason.starts_with("bad message from the peer: payload would decompress"), "{reason}");
    });

    f.case("a zstd bomb lying about its size", &m, "bad message from the peer: payload", || {
        let mut conn = m.open(address);
        conn.handshake(chain, &f.filter, false, true);
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).expect("compress");
        conn.send_frame(&wire::batch_frame_from_parts(0, 1000, &bomb));
        let reason = conn.expect_abort();
        assert!(reason.starts_with("bad message from the peer: payload"), "{reason}");
    });

    // Malformed CBOR at every nesting level of a batch: its envelope and the
    // body inside the compression.
    let good = change(&m.key, fresh_instance(), 1, org, "results:tc-1", "good", 1);
    let message = batch(0, vec![group(&[good], 0)], vec![]);
    let frame = wire::encode_message(&message);
    let Message::Batch(b) = &message else { unreachable!() };
    let body = wire::encode_batch_body(b);
    let mut malformed: Vec<(String, Vec<u8>)> = Vec::new();
    for (depth, bad) in corrupt_each_level(&frame[1..]) {
        let mut f = vec![frame[0]];
        f.extend_from_slice(&bad);
        malformed.push((format!("envelope depth {depth}"), f));
    }
    for (depth, bad) in corrupt_each_level(&body) {
        malformed.push((format!("batch body depth {depth}"), wire::batch_frame_from_body(0, &bad)));
    }
    assert!(malformed.len() >= 8, "levels: {}", malformed.len());
    for (level, bad) in &malformed {
        f.case(&format!("malformed CBOR, {level}"), &m, "bad message from the peer", || {
            let mut conn = m.open(address);
            conn.handshake(chain, &f.filter, false, true);
            conn.send_frame(bad);
            let reason = conn.expect_abort();
            assert!(reason.starts_with("bad message from the peer: malformed CBOR"), "{level}: {reason}");
        });
    }
    // A malformed Hello, before any session exists.
    let hello_frame = wire::encode_message(&hello(chain, &f.filter));
    let (_, bad_hello) = corrupt_each_level(&hello_frame[1..]).into_iter().nth(2).expect("a nested item");
    f.case("malformed CBOR in Hello", &m, "refused: bad message", || {
        let mut conn = m.open(address);
        let mut frame = vec![hello_frame[0]];
        frame.extend_from_slice(&bad_hello);
        conn.send_frame(&frame);
        let reason = conn.expect_abort();
        assert!(reason.starts_with("bad message: malformed CBOR"), "{reason}");
    });

    // Messages out of order.
    let one = |n| batch(n, vec![group(&[change(&m.key, fresh_instance(), 1, org, "results:tc-1", "o", 1)], 0)], vec![]);
    f.case("a Batch before Hello", &m, "the first message must be Hello", || {
        let mut conn = m.open(address);
        conn.send(&one(0));
        assert_eq!(conn.expect_abort(), "the first message must be Hello");
    });
    f.case("a Batch before the frontiers", &m, "Batch before the frontiers were exchanged", || {
        let mut conn = m.open(address);
        conn.send(&hello(chain, &f.filter));
        conn.expect_message();
        conn.send(&one(0));
        assert!(conn.expect_abort().contains("Batch before the frontiers were exchanged"));
    });
    // Batch 1 before batch 0 lies within the window (a resend would fix
    // it); batch 2 first cannot happen with an honest sender.
    f.case("batch 2 before batch 0", &m, "batch 2 arrived before batch 0", || {
        let mut conn = m.open(address);
        conn.handshake(chain, &f.filter, false, true);
        conn.send(&one(2));
        assert!(conn.expect_abort().contains("batch 2 arrived before batch 0"));
    });
    f.case("End claiming batches never sent", &m, "End after 5 batches, but only 0 arrived", || {
        let mut conn = m.open(address);
        conn.handshake(chain, &f.filter, false, true);
        conn.send(&Message::End { batches: 5 });
        assert!(conn.expect_abort().contains("End after 5 batches, but only 0 arrived"));
    });
    f.case("a Welcome sent to the responder", &m, "Welcome sent to the responder", || {
        let mut conn = m.open(address);
        conn.handshake(chain, &f.filter, false, true);
        conn.send(&Message::Welcome(wire::Welcome {
            credentials: wire::Credentials::Hash([0; 32]),
            digest_pull: [0; 32],
            digest_push: [0; 32],
        }));
        assert!(conn.expect_abort().contains("Welcome sent to the responder"));
    });
    f.case("an Ack for nothing sent", &m, "Ack for a direction that is not sending", || {
        let mut conn = m.open(address);
        conn.handshake(chain, &f.filter, false, true);
        conn.send(&Message::Ack { seq: 3, rejected: 0 });
        assert!(conn.expect_abort().contains("Ack for a direction that is not sending"));
    });
}

#[test]
fn floods_stalls_and_lies_cost_the_daemon_nothing() {
    // Enough incompressible data that a batch outgrows every buffer between
    // the daemon and a peer that stops reading.
    let f = Fixture::new(6000);
    let m = Hostile::new(f.mallory.key.clone());
    let peer = m.peer_id();
    let chain = &f.mallory.chain;
    let address = &f.server.address;

    f.case("a flood of sessions", &m, "refused: too many sessions from this peer", || {
        let mut conns: Vec<Conn<'_>> = (0..40).map(|_| m.open(address)).collect();
        // Four are admitted and wait for a Hello; the rest are refused.
        let (mut refused, mut admitted) = (0, 0);
        for conn in &mut conns {
            match conn.recv(Duration::from_millis(500)) {
                Received::Message(Message::Abort { reason }) => {
                    assert!(reason.contains("too many sessions"), "{reason}");
                    refused += 1;
                }
                Received::Closed => refused += 1,
                Received::TimedOut | Received::Message(_) => admitted += 1,
            }
        }
        assert!(refused >= 36, "refused {refused} of 40");
        // The admitted ones give up after the session timeout.
        for conn in &mut conns {
            conn.closes_within(Duration::from_secs(TIMEOUT_S + 10));
        }
        // Their places are free once the daemon says they failed: the next
        // case's session from this peer must not find them taken.
        for _ in 0..admitted {
            f.server.wait_for("sync_failed");
        }
    });

    f.case("a peer that stalls mid-frame", &m, "failed: no answer from the peer for", || {
        let mut conn = m.open(address);
        // The daemon's clock starts at the last whole message it heard, the
        // handshake's last: measured from before it, the wait is never
        // short. (Measured from after the reply, a busy machine once made it
        // look 3 ms short.)
        let started = Instant::now();
        conn.handshake(chain, &f.filter, false, true);
        conn.send_raw(&1000u32.to_be_bytes());
        conn.send_raw(&[1; 10]);
        conn.closes_within(Duration::from_secs(TIMEOUT_S + 10));
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(TIMEOUT_S), "closed before the timeout, after {elapsed:?}");
    });

    f.case("a peer that stops reading", &m, "failed:", || {
        // Earlier cases' events are in by now: each case waited for its
        // ledger entry, and the daemon prints a session's event right after.
        f.server.events.try_iter().for_each(drop);
        let mut conn = m.open(address);
        conn.handshake(chain, &f.filter, true, false);
        // Read the first bytes of the first batch, then nothing, holding the
        // stream open until the daemon gives up on it.
        assert!(conn.read_some(Duration::from_secs(10)) > 0);
        f.server.wait_until("sync_failed from the peer that stopped reading", |e| {
            e["event"] == "sync_failed" && e["peer"] == peer.as_str()
        });
        drop(conn);
    });

    // A frontier claiming counters of the central's own instance that it
    // never wrote: the session ends, and the central moves to a fresh
    // instance so that no counter can be used twice.
    let central_instance = f.central.json(&["id"])["instance_id"].as_str().expect("instance").to_owned();
    let instance = InstanceId::parse(&central_instance).expect("instance id");
    f.case("a frontier that claims what it lacks", &m, "holds counter 1000000 of this instance", || {
        let mut conn = m.open(address);
        conn.send(&hello(chain, &f.filter));
        conn.expect_message();
        conn.send(&Message::Heads(Heads {
            pull: true,
            push: false,
            entries: vec![HeadEntry {
                partition: Partition::resolve(f.org, "results:tc-1").expect("p"),
                record_type: partitions::RecordType::parse("result").expect("t"),
                instance,
                counter: 1_000_000,
            }],
        }));
        let reason = conn.expect_abort();
        assert!(reason.contains("holds counter 1000000 of this instance"), "{reason}");
    });
    let now = f.central.json(&["id"])["instance_id"].as_str().expect("instance").to_owned();
    assert_ne!(now, central_instance, "the central writes under a fresh instance after the claim");
}
