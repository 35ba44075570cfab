//! Every fuzz target on fixed inputs: valid samples, and deterministic
//! truncations and bit flips of them. Runs in the normal test suite so the
//! targets keep compiling and keep holding on known inputs.
//!
//! With `FERRY_FUZZ_SEEDS=DIR` set, the valid samples are also written to
//! `DIR/<target>/` as a starting corpus for cargo-fuzz.

use certs::{IssueRequest, Issuer, Token, TokenRequest, create_org, create_token};
use ed25519_dalek::SigningKey;
use partitions::{Filter, OrgId, Scope};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn chain_sample() -> Vec<u8> {
    let t0 = 1_700_000_000;
    let root = create_org("org", &key(1), t0 - 10, t0 + 100_000, [1; 16]).expect("org");
    let org = root.org();
    let issuer = Issuer::new(root, key(1)).expect("issuer");
    let scope = Scope {
        read: Filter::parse(org, "results,tests").expect("f"),
        write: Filter::parse(org, "results:tc-1").expect("f"),
        types: Scope::parse_types("test=ro").expect("t"),
    };
    let request = IssueRequest {
        subject_key: key(2).verifying_key().to_bytes(),
        name: "device".into(),
        scope,
        not_before: t0,
        not_after: t0 + 1000,
        can_issue: None,
        authority: Some("central".into()),
    };
    issuer.issue(&request, [2; 16]).expect("issue").encode()
}

fn token_sample() -> Vec<u8> {
    let t0 = 1_700_000_000;
    let root = create_org("org", &key(1), t0 - 10, t0 + 100_000, [1; 16]).expect("org");
    let org = OrgId::from_public_key(&key(1).verifying_key().to_bytes());
    let issuer = Issuer::new(root, key(1)).expect("issuer");
    let request = TokenRequest {
        scope: Scope::full(org),
        can_issue: Some(0),
        authority: None,
        certificate_validity: 100,
        expires_at: t0 + 50,
        uses: 3,
    };
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    let (token, _) =
        create_token(&issuer, &key(1), vec!["/ip4/127.0.0.1/tcp/1".into()], &request, &mut rng).expect("token");
    let line = token.encode();
    assert_eq!(Token::decode(&line), Ok(token));
    line.into_bytes()
}

/// The sample, every prefix of it at a stride, and single-bit flips.
fn variations(sample: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![sample.to_vec(), Vec::new()];
    let stride = (sample.len() / 64).max(1);
    for cut in (0..sample.len()).step_by(stride) {
        out.push(sample[..cut].to_vec());
    }
    for bit in (0..sample.len() * 8).step_by(7) {
        let mut flipped = sample.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        out.push(flipped);
    }
    out
}

fn write_seeds(target: &str, samples: &[Vec<u8>]) {
    let Ok(dir) = std::env::var("FERRY_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::Path::new(&dir).join(target);
    std::fs::create_dir_all(&dir).expect("seed dir");
    for (i, sample) in samples.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), sample).expect("seed file");
    }
}

#[test]
fn partitions_parse_holds_on_fixed_inputs() {
    let org = fuzz::fuzz_org();
    let samples: Vec<Vec<u8>> = [
        format!("{org}:results:tc-1"),
        "results:tc-1,tests".into(),
        "a=rw,b=ro,c=update-only,d=none".into(),
        "${facility}:user-ro|${facility}:user-rw:${user}|test=ro".into(),
        ":::".into(),
        "${".into(),
        "a".repeat(70),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    write_seeds("partitions_parse", &samples);
    for sample in &samples {
        for input in variations(sample) {
            fuzz::partitions_parse(&input);
        }
    }
}

#[test]
fn cert_chain_holds_on_fixed_inputs() {
    let sample = chain_sample();
    write_seeds("cert_chain", std::slice::from_ref(&sample));
    for input in variations(&sample) {
        fuzz::cert_chain(&input);
    }
}

#[test]
fn enrol_token_holds_on_fixed_inputs() {
    let sample = token_sample();
    write_seeds("enrol_token", std::slice::from_ref(&sample));
    for input in variations(&sample) {
        fuzz::enrol_token(&input);
    }
}

/// The frames of a real session, each decoded and re-encoded.
fn transcript_messages() -> Vec<Vec<u8>> {
    fuzz::session::transcript()
}

fn batches_of(frames: &[Vec<u8>]) -> Vec<engine::wire::Batch> {
    frames
        .iter()
        .filter_map(|f| match engine::wire::decode_message(f) {
            Ok(engine::wire::Message::Batch(b)) => Some(b),
            _ => None,
        })
        .collect()
}

#[test]
fn wire_message_holds_on_a_real_session() {
    let frames = transcript_messages();
    assert!(frames.len() >= 4, "hello, heads, at least one batch, end: got {}", frames.len());
    write_seeds("wire_message", &frames);
    for frame in &frames {
        assert!(engine::wire::decode_message(frame).is_ok());
        for input in variations(frame) {
            fuzz::wire_message(&input);
        }
    }
}

#[test]
fn batch_body_and_zstd_frame_hold_on_real_batches() {
    let batches = batches_of(&transcript_messages());
    assert!(!batches.is_empty());
    let bodies: Vec<Vec<u8>> = batches.iter().map(engine::wire::encode_batch_body).collect();
    write_seeds("batch_body", &bodies);
    let mut compressed = Vec::new();
    for (body, batch) in bodies.iter().zip(&batches) {
        // The body decodes back to the batch it came from.
        let frame = engine::wire::batch_frame_from_body(batch.seq, body);
        match engine::wire::decode_message(&frame) {
            Ok(engine::wire::Message::Batch(again)) => assert_eq!(again.groups, batch.groups),
            other => panic!("a real batch body did not decode: {other:?}"),
        }
        for input in variations(body) {
            fuzz::batch_body(&input);
        }
        let data = zstd::bulk::compress(body, 1).expect("compress");
        let mut sample = (body.len() as u32).to_le_bytes().to_vec();
        sample.extend_from_slice(&data);
        compressed.push(sample);
    }
    write_seeds("zstd_frame", &compressed);
    for sample in &compressed {
        for input in variations(sample) {
            fuzz::zstd_frame(&input);
        }
    }
    // A bomb: a small input announcing and holding far more than a frame.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).expect("compress");
    let mut sample = (64u32 << 20).to_le_bytes().to_vec();
    sample.extend_from_slice(&bomb);
    fuzz::zstd_frame(&sample);
}

#[test]
fn stored_record_holds_on_real_records() {
    let (_dir, store) = fuzz::session::peer_store();
    let mut samples = Vec::new();
    store
        .list(None, None, &mut |r| {
            let state = store.record(&r.key).expect("read").expect("listed");
            samples.push(engine::stored::encode_record(&state));
            true
        })
        .expect("list");
    assert!(samples.len() >= 5);
    write_seeds("stored_record", &samples);
    for sample in &samples {
        for input in variations(sample) {
            fuzz::stored_record(&input);
        }
    }
}

#[test]
fn run_proof_holds_on_real_proofs_and_runs() {
    // Proofs for subsets of runs of several sizes, in the target's input
    // form, and the runs a real store keeps.
    let mut samples = Vec::new();
    for (count, present) in
        [(1u16, vec![0u16]), (7, vec![2, 3]), (13, vec![0, 12]), (100, vec![5]), (4096, vec![0, 4095])]
    {
        let leaves: Vec<[u8; 32]> = (0..u32::from(count)).map(|i| engine::seal::leaf_hash(&i.to_le_bytes())).collect();
        let run = engine::seal::RunKnown::whole(engine::AuthorKey([0; 32]), [0; 64], &leaves);
        let indexes: Vec<u32> = present.iter().map(|i| u32::from(*i)).collect();
        let proof = run.proof(&indexes).expect("whole");
        let mut sample = count.to_le_bytes().to_vec();
        sample.push(present.len() as u8);
        for i in &present {
            sample.extend_from_slice(&i.to_le_bytes());
        }
        for hash in &proof {
            sample.extend_from_slice(hash);
        }
        samples.push(sample);
    }
    let (_dir, store) = fuzz::session::peer_store();
    let mut runs = 0;
    store
        .backend()
        .scan(&[engine::keys::RUNS], Some(&[engine::keys::RUNS + 1]), &mut |_, v| {
            samples.push(v.to_vec());
            runs += 1;
            true
        })
        .expect("scan");
    assert!(runs >= 1, "a real store keeps its runs");
    write_seeds("run_proof", &samples);
    for sample in &samples {
        for input in variations(sample) {
            fuzz::run_proof(&input);
        }
    }
}

#[test]
fn blob_message_holds_on_every_message() {
    use engine::blob::message::{self, BlobMessage};
    use engine::blob::{BlobHash, OutlineBuilder};
    let mut builder = OutlineBuilder::new();
    builder.update(&vec![5u8; 3 * engine::limits::BLOB_BLOCK_BYTES as usize + 9]);
    let (hash, outline) = builder.finish();
    let samples: Vec<Vec<u8>> = [
        BlobMessage::Hello { credentials: vec![1; 300] },
        BlobMessage::Ready,
        BlobMessage::Refused { reason: "no".into() },
        BlobMessage::Get { hash, size: outline.size },
        BlobMessage::Have(outline.clone()),
        BlobMessage::Missing,
        BlobMessage::From { block: 2 },
        BlobMessage::Data(vec![7; 5000]),
        BlobMessage::Lacks { hashes: vec![hash, BlobHash([1; 32])] },
        BlobMessage::Wants { hashes: vec![hash] },
        BlobMessage::Offer { hash, outline },
        BlobMessage::Declined,
    ]
    .iter()
    .map(message::encode)
    .collect();
    write_seeds("blob_message", &samples);
    for sample in &samples {
        for input in variations(sample) {
            fuzz::blob_message(&input);
        }
    }
}

#[test]
fn bundle_file_holds_on_a_real_bundle() {
    let sample = fuzz::session::bundle_sample();
    let contents = node::bundle::decode_file(&mut std::io::Cursor::new(&sample)).expect("a real bundle decodes");
    assert!(contents.bundle);
    assert!(contents.messages.len() >= 3, "batches and End");
    assert_eq!(contents.blobs.len(), 2, "a blob's outline and its block");
    write_seeds("bundle_file", std::slice::from_ref(&sample));
    for input in variations(&sample) {
        fuzz::bundle_file(&input);
    }
}

#[test]
fn local_api_holds_on_requests() {
    let samples: Vec<Vec<u8>> = [
        r#"{"op":"id"}"#,
        r#"{"op":"put","org":null,"partition":"results:tc-1","type":"result","id":"r1","set":{"score":3}}"#,
        r#"{"op":"cert_issue","subject":"ab","read":"results","write":"results:tc-1","days":30,"out":"/tmp/x"}"#,
        r#"{"op":"sync","peer":"/ip4/127.0.0.1/tcp/1"}"#,
        r#"{"op":"enroll_token","read":"results","write":"results:tc-1","ttl_s":600,"days":30,"uses":2}"#,
        r#"{"op":"list"}"#,
    ]
    .into_iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    write_seeds("local_api", &samples);
    for sample in &samples {
        serde_json::from_slice::<node::ops::Op>(sample).expect("the sample is a valid request");
        for input in variations(sample) {
            fuzz::local_api(&input);
        }
    }
}

#[test]
fn config_file_holds_on_configs() {
    let written = node::config::Config::default().to_toml();
    let samples: Vec<Vec<u8>> = vec![
        written.into_bytes(),
        b"listen = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\n[[peers]]\nname = \"central\"\naddress = \"/ip4/127.0.0.1/tcp/1\"\nsync_every = \"5m\"\n"
            .to_vec(),
    ];
    write_seeds("config_file", &samples);
    for sample in &samples {
        node::config::Config::parse(std::str::from_utf8(sample).expect("utf-8")).expect("the sample is a valid config");
        for input in variations(sample) {
            fuzz::config_file(&input);
        }
    }
}

#[test]
fn session_replay_of_a_real_session_stores_what_is_in_scope() {
    let frames = transcript_messages();
    let sample = fuzz::session::join(&frames);
    assert_eq!(fuzz::session(&sample), fuzz::session::IN_SCOPE_RECORDS);
    // A peer that repeats, drops and reorders frames changes nothing the
    // invariants forbid.
    let mut shuffled = frames.clone();
    shuffled.reverse();
    let mut doubled = Vec::new();
    for f in &frames {
        doubled.push(f.clone());
        doubled.push(f.clone());
    }
    // A peer that sends what the responder may not hold: the session goes
    // on, and the invariants in `fuzz::session` show none of it is stored.
    let overreaching = fuzz::session::join(&fuzz::session::overreaching_transcript());
    let stored = fuzz::session(&overreaching);
    assert!((1..=fuzz::session::IN_SCOPE_RECORDS).contains(&stored), "stored {stored}");
    let samples = vec![sample.clone(), fuzz::session::join(&shuffled), fuzz::session::join(&doubled), overreaching];
    write_seeds("session", &samples);
    for s in &samples[1..] {
        fuzz::session(s);
    }
    for input in variations(&sample).into_iter().step_by(9) {
        fuzz::session(&input);
    }
}

#[test]
fn enrol_exchange_holds_on_requests_and_answers() {
    let samples: Vec<Vec<u8>> = vec![
        format!(r#"{{"secret":"{}","name":"tablet 7"}}"#, "ab".repeat(32)).into_bytes(),
        br#"{"chain":"MIIBkzCCAUWgAwIBAgIQ","error":null}"#.to_vec(),
        br#"{"chain":null,"error":"this token is used up"}"#.to_vec(),
    ];
    assert!(node::protocols::decode_enrol_request(&samples[0]).is_ok());
    assert!(node::protocols::decode_enrol_answer(&samples[1]).is_ok());
    let refused = node::protocols::decode_enrol_answer(&samples[2]).expect_err("a refusal");
    assert!(refused.to_string().contains("used up"), "{refused}");
    write_seeds("enrol_exchange", &samples);
    for sample in &samples {
        for input in variations(sample) {
            fuzz::enrol_exchange(&input);
        }
    }
}

/// A fuzz target's entry point.
type Target = fn(&[u8]);

/// Every input a fuzz target ever crashed on, kept (minimised) in
/// `fuzz/regressions/<target>/` and replayed here: each must now pass.
#[test]
fn every_kept_crash_input_now_passes() {
    let targets: [(&str, Target); 14] = [
        ("blob_message", fuzz::blob_message),
        ("partitions_parse", fuzz::partitions_parse),
        ("cert_chain", fuzz::cert_chain),
        ("enrol_token", fuzz::enrol_token),
        ("wire_message", fuzz::wire_message),
        ("batch_body", fuzz::batch_body),
        ("zstd_frame", fuzz::zstd_frame),
        ("stored_record", fuzz::stored_record),
        ("run_proof", fuzz::run_proof),
        ("bundle_file", fuzz::bundle_file),
        ("local_api", fuzz::local_api),
        ("config_file", fuzz::config_file),
        ("enrol_exchange", fuzz::enrol_exchange),
        ("session", |data| {
            fuzz::session(data);
        }),
    ];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for (target, run) in targets {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else { continue };
        for entry in entries {
            let path = entry.expect("entry").path();
            run(&std::fs::read(&path).expect("read"));
            replayed += 1;
        }
    }
    assert!(replayed >= 1, "the kept inputs were not found under {}", root.display());
}
