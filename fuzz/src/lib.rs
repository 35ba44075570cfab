//! The bodies of ferry's fuzz targets, one function per decoder of untrusted
//! bytes. The cargo-fuzz binaries in `fuzz_targets/` call them, and
//! `tests/smoke.rs` runs each on fixed inputs so none of them rots.
//!
//! Every function must not panic on any input; when a decoder accepts bytes,
//! what it decoded must encode back to the same bytes (each value has one
//! encoding) or at least parse back to the same value.

use certs::{Chain, Revocations, Token};
use partitions::{Filter, OrgId, Partition, Scope, ScopeTemplate};

/// A fixed org for relative partitions.
pub fn fuzz_org() -> OrgId {
    OrgId::from_bytes([7; 16])
}

/// Partition, filter, type-mode and scope-template parsing.
pub fn partitions_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let org = fuzz_org();
    if let Ok(p) = Partition::parse(text) {
        assert_eq!(p.to_string(), text);
        assert_eq!(Partition::from_key(&p.to_key()), Ok(p));
    }
    if let Ok(p) = Partition::resolve(org, text) {
        assert_eq!(Partition::parse(&p.to_string()), Ok(p));
    }
    if let Ok(f) = Filter::parse(org, text) {
        assert_eq!(Filter::parse(org, &f.to_string()), Ok(f));
    }
    if let Ok(types) = Scope::parse_types(text) {
        let scope = Scope { types, ..Scope::default() };
        assert_eq!(Scope::parse_types(&scope.types_text()), Ok(scope.types));
    }
    let mut parts = text.splitn(3, '|');
    let (read, write, types) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if let Ok(template) = ScopeTemplate::parse(read, write, types) {
        let values = template.params().into_iter().map(|p| (p.to_owned(), "v".to_owned())).collect();
        let _ = template.expand(org, &values);
    }
}

/// Certificate chain decoding and verification.
pub fn cert_chain(data: &[u8]) {
    let Ok(chain) = Chain::decode(data) else {
        return;
    };
    assert_eq!(chain.encode(), data);
    let subject = *chain.leaf().subject_key();
    for at in [0, 1_700_000_000, u64::MAX] {
        let _ = chain.verify(Some(&subject), at, &Revocations::default());
    }
}

/// Enrolment token parsing.
pub fn enrol_token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = Token::decode(text) {
        assert_eq!(Token::decode(&token.encode()), Ok(token));
    }
}

/// Wire messages: decode, and what decodes re-encodes to the same message.
pub fn wire_message(data: &[u8]) {
    if let Ok(message) = engine::wire::decode_message(data) {
        let again = engine::wire::decode_message(&engine::wire::encode_message(&message));
        assert_eq!(again, Ok(message));
    }
}

/// The CBOR body of a batch, behind a valid compressed envelope.
pub fn batch_body(data: &[u8]) {
    let frame = engine::wire::batch_frame_from_body(0, data);
    if let Ok(engine::wire::Message::Batch(batch)) = engine::wire::decode_message(&frame) {
        let count: usize = batch.groups.iter().map(|g| g.changes.len()).sum();
        assert!(count <= engine::limits::BATCH_CHANGES_MAX);
    }
}

/// Arbitrary "compressed" bytes with an arbitrary announced size: the
/// decompression bound and the checks before it.
pub fn zstd_frame(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let raw_len = u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
    let frame = engine::wire::batch_frame_from_parts(0, raw_len, &data[4..]);
    let _ = engine::wire::decode_message(&frame);
}

/// A stored record blob (the store trusts its own bytes, but a damaged
/// disk must give an error, not a panic).
pub fn stored_record(data: &[u8]) {
    let key = engine::RecordKey {
        partition: Partition::resolve(fuzz_org(), "results").expect("valid"),
        record_type: partitions::RecordType::parse("result").expect("valid"),
        id: engine::RecordId::parse("r").expect("valid"),
    };
    if let Ok(state) = engine::stored::decode_record(&key, data) {
        let _ = state.view(&engine::policy::TypePolicy::default());
        let again = engine::stored::decode_record(&key, &engine::stored::encode_record(&state))
            .expect("re-encoded records decode");
        assert_eq!(again, state);
    }
}

/// The blob protocol's messages (`engine::blob::message::decode`): what
/// decodes encodes back to the same message; an outline that decodes is
/// checked against a hash and its first block without panicking, and the
/// bytes of a one-block blob verify exactly when they are the hash's.
pub fn blob_message(data: &[u8]) {
    use engine::blob::message::{self, BlobMessage};
    use engine::blob::{BlobHash, Outline};
    let Ok(decoded) = message::decode(data) else { return };
    assert_eq!(message::decode(&message::encode(&decoded)).as_ref(), Ok(&decoded));
    let outline: Option<(BlobHash, &Outline)> = match &decoded {
        BlobMessage::Have(outline) => Some((BlobHash::of(data), outline)),
        BlobMessage::Offer { hash, outline } => Some((*hash, outline)),
        _ => None,
    };
    if let Some((hash, outline)) = outline {
        let _ = outline.check(&hash, outline.size);
        let _ = outline.verify_block(&hash, 0, &data[..data.len().min(outline.size as usize)]);
        if outline.cvs.is_empty() && outline.size as usize <= data.len() {
            let bytes = &data[..outline.size as usize];
            assert_eq!(outline.verify_block(&BlobHash::of(bytes), 0, bytes), Ok(()));
        }
    }
}

/// Run proofs (`engine::seal`): a run's size, the leaves a batch holds and
/// the proof hashes, as a receiver rebuilds a root from them; and what the
/// store keeps of a run.
///
/// Input: count (u16 LE), leaf count k (u8), k leaf indexes (u16 LE each),
/// then 32-byte proof hashes. A proof that rebuilds a root must be the one
/// proof of those leaves: what the receiver learns from it proves the same
/// leaves with the same hashes and rebuilds the same root.
pub fn run_proof(data: &[u8]) {
    use engine::seal::{self, RunKnown};
    if let Ok(run) = seal::decode_run(data) {
        let _ = run.root();
        assert_eq!(seal::decode_run(&seal::encode_run(&run)).as_ref(), Ok(&run));
    }
    if data.len() < 3 {
        return;
    }
    let count = u32::from(u16::from_le_bytes([data[0], data[1]]));
    let k = usize::from(data[2]);
    let rest = &data[3..];
    if rest.len() < 2 * k {
        return;
    }
    let mut present: Vec<u32> =
        rest[..2 * k].chunks(2).map(|c| u32::from(u16::from_le_bytes([c[0], c[1]]))).filter(|i| *i < count).collect();
    present.sort_unstable();
    present.dedup();
    let leaves: Vec<(u32, [u8; 32])> = present.iter().map(|i| (*i, seal::leaf_hash(&i.to_le_bytes()))).collect();
    let proof: Vec<[u8; 32]> = rest[2 * k..].chunks_exact(32).map(|c| c.try_into().expect("32-byte chunks")).collect();
    let Ok((root, learnt)) = seal::rebuild(count, &leaves, &proof) else {
        return;
    };
    let known = RunKnown {
        author_key: engine::AuthorKey([0; 32]),
        count,
        signature: [0; 64],
        spans: learnt.into_iter().collect(),
    };
    assert_eq!(known.root(), Some(root), "what a proof teaches rebuilds its root");
    assert_eq!(known.proof(&present).as_deref(), Some(proof.as_slice()), "a subset has one proof");
}

/// Bundle and frontier files.
pub fn bundle_file(data: &[u8]) {
    let _ = node::bundle::decode_file(&mut std::io::Cursor::new(data));
}

/// Requests to the local API.
pub fn local_api(data: &[u8]) {
    if let Ok(op) = serde_json::from_slice::<node::ops::Op>(data) {
        let text = serde_json::to_string(&op).expect("requests serialise");
        serde_json::from_str::<node::ops::Op>(&text).expect("a serialised request parses");
    }
}

/// `ferry.toml`.
pub fn config_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = node::config::Config::parse(text)
    {
        node::config::Config::parse(&config.to_toml()).expect("a written config parses");
    }
}

/// Enrolment requests (issuer side) and answers (device side).
pub fn enrol_exchange(data: &[u8]) {
    if let Ok((_, name, _)) = node::protocols::decode_enrol_request(data) {
        assert!(name.chars().count() <= 100);
    }
    if let Ok(chain) = node::protocols::decode_enrol_answer(data) {
        assert!(chain.len() <= data.len());
    }
}

pub mod session;
pub use session::session;
