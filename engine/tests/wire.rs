//! The wire format: every message round-trips, and bad bytes (truncated,
//! flipped, oversized, a zstd bomb, another version) give a clear error and
//! never a panic.

mod common;

use std::collections::BTreeMap;

use common::*;
use engine::region::TypeRules;
use engine::wire::{
    self, Batch, Credentials, DecodeError, Group, GroupChange, HeadEntry, Heads, Hello, Message, Plan, Welcome,
};
use engine::{AuthorKey, Hlc, InstanceId, Op, RecordId, Value, VersionVector};
use partitions::{Filter, RecordType};

fn sample_batch() -> Batch {
    let mut seen = VersionVector::new();
    seen.add(engine::Dot { instance: InstanceId([3; 16]), counter: 9 });
    let change = GroupChange {
        id: RecordId::parse("learner-7/exercise-0042").expect("id"),
        counter: 12,
        hlc: Hlc::from_parts(1_700_000_000_000, 3),
        authority: Some("central".into()),
        seen,
        op: Op::Put {
            replace: false,
            fields: BTreeMap::from([
                ("score".to_owned(), Some(Value::Float(0.75))),
                ("answer".to_owned(), Some(Value::Text("{\"a\": 1}".into()))),
                ("gone".to_owned(), None),
                ("null".to_owned(), Some(Value::Null)),
                ("nested".to_owned(), Some(Value::Array(vec![Value::Int(-1), Value::Bytes(vec![0, 255])]))),
            ]),
        },
        // What a `skip` type's write carries: the values it overwrote.
        bases: BTreeMap::from([(
            "score".to_owned(),
            vec![
                engine::change::Base {
                    dot: engine::Dot { instance: InstanceId([3; 16]), counter: 9 },
                    hlc: Hlc::from_parts(1_699_999_999_000, 0),
                    value: Some(Value::Float(0.5)),
                },
                engine::change::Base {
                    dot: engine::Dot { instance: InstanceId([3; 16]), counter: 8 },
                    hlc: Hlc::from_parts(1_699_999_998_000, 0),
                    value: None,
                },
            ],
        )]),
        seal: engine::Seal::Single([7; 64]),
    };
    Batch {
        seq: 4,
        plan: Plan { changes: 100, bytes: 40_000 },
        groups: vec![Group {
            partition: partition("results:tc-1"),
            record_type: RecordType::parse("result").expect("t"),
            author: InstanceId([1; 16]),
            author_key: AuthorKey([2; 32]),
            after: 11,
            changes: vec![
                change.clone(),
                GroupChange {
                    counter: 13,
                    op: Op::Delete,
                    bases: BTreeMap::new(),
                    seal: engine::Seal::Run { first: 13 },
                    ..change
                },
            ],
        }],
        chains: vec![vec![1, 2, 3]],
        runs: vec![engine::wire::RunProof {
            author: InstanceId([1; 16]),
            author_key: AuthorKey([2; 32]),
            first: 13,
            count: 3,
            signature: [9; 64],
            proof: vec![[4; 32], [5; 32]],
        }],
    }
}

fn samples() -> Vec<Message> {
    vec![
        Message::Hello(Hello {
            session: [5; 16],
            credentials: Credentials::Hash([6; 32]),
            filter: filter("results,tests"),
            pull: true,
            push: false,
            types: Default::default(),
        }),
        Message::Hello(Hello {
            session: [7; 16],
            credentials: Credentials::Hash([6; 32]),
            filter: filter("lab-a"),
            pull: true,
            push: true,
            types: TypeRules {
                only: Some(["sample", "analysis"].map(|t| RecordType::parse(t).expect("type")).into()),
                skip: ["client"].map(|t| RecordType::parse(t).expect("type")).into(),
            },
        }),
        Message::Welcome(Welcome {
            credentials: Credentials::Full(vec![1; 300]),
            digest_pull: [1; 32],
            digest_push: [2; 32],
        }),
        Message::NeedCredentials,
        Message::Heads(Heads {
            pull: true,
            push: true,
            entries: vec![HeadEntry {
                partition: partition("results"),
                record_type: RecordType::parse("result").expect("t"),
                instance: InstanceId([4; 16]),
                counter: 77,
            }],
        }),
        Message::Batch(sample_batch()),
        Message::Ack { seq: 3, rejected: 1 },
        Message::End { batches: 9 },
        Message::Done,
        Message::Abort { reason: "bad things".into() },
    ]
}

#[test]
fn every_message_round_trips() {
    for message in samples() {
        let frame = wire::encode_message(&message);
        assert_eq!(wire::decode_message(&frame), Ok(message.clone()), "{message:?}");
    }
}

#[test]
fn truncated_and_flipped_frames_never_panic() {
    for message in samples() {
        let frame = wire::encode_message(&message);
        for cut in 0..frame.len() {
            let _ = wire::decode_message(&frame[..cut]);
        }
        for bit in (0..frame.len() * 8).step_by(3) {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let _ = wire::decode_message(&bad);
        }
    }
}

#[test]
fn bad_frames_get_their_own_errors() {
    assert_eq!(wire::decode_message(&[]), Err(DecodeError::Empty));
    let mut frame = wire::encode_message(&Message::Done);
    // A protocol 1 peer (a signature per change) is told what it speaks.
    frame[0] = 1;
    assert_eq!(wire::decode_message(&frame), Err(DecodeError::Version { found: 1, supported: 2 }));
    // Runs: a change naming a run the batch does not list, a run listed
    // twice, a run claiming no changes or more proof hashes than changes.
    let mut batch = sample_batch();
    let run = batch.runs.pop().expect("one run");
    let unlisted = wire::encode_message(&Message::Batch(batch.clone()));
    assert_eq!(wire::decode_message(&unlisted), Err(DecodeError::RunIndex { place: 0, runs: 0 }));
    batch.runs = vec![run.clone(), run.clone()];
    let twice = wire::encode_message(&Message::Batch(batch.clone()));
    assert_eq!(wire::decode_message(&twice), Err(DecodeError::RunTwice { first: 13 }));
    for (count, proof) in [(0u32, 0usize), (4097, 0), (1, 2)] {
        batch.runs = vec![engine::wire::RunProof { count, proof: vec![[0; 32]; proof], ..run.clone() }];
        let bad = wire::encode_message(&Message::Batch(batch.clone()));
        assert_eq!(
            wire::decode_message(&bad),
            Err(DecodeError::RunShape { count, proof, max: engine::limits::RUN_LEAVES_MAX }),
            "count {count}, {proof} hashes"
        );
    }
    let huge = vec![1u8; engine::limits::MESSAGE_BYTES_MAX + 1];
    assert!(matches!(wire::decode_message(&huge), Err(DecodeError::TooLarge { .. })));
    // A zstd bomb: 64 MiB of zeros compresses to a few KiB, but the frame
    // may not claim more than the limit, and may not lie about its size.
    let zeros = vec![0u8; 64 * 1024 * 1024];
    let bomb = zstd::bulk::compress(&zeros, 19).expect("compress");
    assert!(bomb.len() < 64 * 1024);
    let honest = wire::batch_frame_from_parts(0, zeros.len() as u64, &bomb);
    assert!(matches!(wire::decode_message(&honest), Err(DecodeError::DecompressedTooLarge { .. })));
    let liar = wire::batch_frame_from_parts(0, 1000, &bomb);
    assert!(matches!(
        wire::decode_message(&liar),
        Err(DecodeError::LengthMismatch { .. } | DecodeError::Decompress(_))
    ));
    // A checksum that does not match.
    let mut frame = wire::encode_message(&Message::Batch(sample_batch()));
    let last = frame.len() - 1;
    frame[last] ^= 1;
    assert_eq!(wire::decode_message(&frame), Err(DecodeError::Checksum));
    // Too many changes in one batch.
    let mut batch = sample_batch();
    let one = batch.groups[0].changes[0].clone();
    batch.groups[0].changes = vec![one; engine::limits::BATCH_CHANGES_MAX + 1];
    let frame = wire::encode_message(&Message::Batch(batch));
    assert!(matches!(wire::decode_message(&frame), Err(DecodeError::TooManyChanges { .. })));
}

#[test]
fn a_filter_with_too_many_prefixes_is_refused_while_decoding() {
    let many: Vec<_> = (0..=partitions::limits::FILTER_PREFIXES_MAX).map(|i| partition(&format!("p{i}"))).collect();
    let hello = Message::Hello(Hello {
        session: [0; 16],
        credentials: Credentials::Hash([0; 32]),
        filter: Filter::new(many),
        pull: true,
        push: true,
        types: Default::default(),
    });
    let frame = wire::encode_message(&hello);
    assert!(matches!(wire::decode_message(&frame), Err(DecodeError::Cbor(_))));
}

#[test]
fn type_rules_naming_too_many_types_are_refused_while_decoding() {
    let skip =
        (0..=engine::limits::TYPE_RULES_MAX).map(|i| RecordType::parse(&format!("t{i}")).expect("type")).collect();
    let hello = Message::Hello(Hello {
        session: [0; 16],
        credentials: Credentials::Hash([0; 32]),
        filter: filter("lab-a"),
        pull: true,
        push: true,
        types: TypeRules { only: None, skip },
    });
    let frame = wire::encode_message(&hello);
    assert!(matches!(wire::decode_message(&frame), Err(DecodeError::TooManyTypes { .. })));
}

#[test]
fn a_hello_without_type_rules_is_the_same_bytes_as_before_they_existed() {
    let plain = Message::Hello(Hello {
        session: [1; 16],
        credentials: Credentials::Hash([2; 32]),
        filter: filter("lab-a"),
        pull: true,
        push: true,
        types: Default::default(),
    });
    let frame = wire::encode_message(&plain);
    // Five keys in the Hello map: session, credentials, filter, pull, push.
    let text = String::from_utf8_lossy(&frame);
    assert!(!text.contains("types"), "no rules, no keys for them");
    assert_eq!(wire::decode_message(&frame).expect("decodes"), plain);
}

/// A local write skips encoding a change when `signing_len_bound` is under
/// the limit, so the bound must never be below the real length: checked on
/// every change of a batch, on the SPEC §5 workload, and on values with
/// every kind of field at its widest.
#[test]
fn the_signing_length_bound_is_never_below_the_signing_length() {
    let batch = sample_batch();
    let group = &batch.groups[0];
    let mut changes: Vec<engine::Change> = group.changes.iter().map(|c| group.change(c)).collect();
    let mut widest = changes[0].clone();
    let mut seen = VersionVector::new();
    for i in 0..300u16 {
        let mut instance = [0xff; 16];
        instance[..2].copy_from_slice(&i.to_be_bytes());
        seen.add(engine::Dot { instance: InstanceId(instance), counter: u64::MAX - u64::from(i) });
    }
    widest.seen = seen;
    widest.counter = u64::MAX;
    widest.hlc = Hlc(u64::MAX);
    widest.op = Op::Put {
        replace: true,
        fields: (0..200)
            .map(|i| {
                let value = match i % 6 {
                    0 => Value::Int(i64::MIN),
                    1 => Value::Float(f64::MAX),
                    2 => Value::Text("é".repeat(300)),
                    3 => Value::Bytes(vec![0xff; 500]),
                    4 => Value::Map((0..20).map(|k| (format!("k{k}"), Value::Array(vec![Value::Null; 30]))).collect()),
                    _ => Value::Array(vec![Value::Int(i64::MAX); 64]),
                };
                (format!("field-{i:03}-{}", "x".repeat(100)), Some(value))
            })
            .collect(),
    };
    changes.push(widest);
    for (i, record) in
        engine::workload::writes(&partition("results"), &RecordType::parse("result").expect("t"), 42, 0..200, 1)
            .into_iter()
            .enumerate()
    {
        let mut change = changes[0].clone();
        change.record = record.record.clone();
        if let engine::LocalOp::Put { set, .. } = record.op {
            change.op = Op::Put { replace: true, fields: set.into_iter().map(|(k, v)| (k, Some(v))).collect() };
        }
        change.counter = i as u64 + 1;
        changes.push(change);
    }
    for change in &changes {
        let real = change.signing_bytes().len();
        assert!(change.signing_len_bound() >= real, "bound {} < {real}", change.signing_len_bound());
    }
}
