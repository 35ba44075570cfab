//! The primitives that bound the benchmark's scenarios, measured in the same
//! run: Ed25519 signing and batch verification on one core, and inserts
//! into the backend (checksummed, as the store writes them, in durable
//! commits of one batch each). Machines here change speed by a third from
//! day to day; a scenario's figure as a fraction of these compares across
//! days where the raw figure does not.

use std::path::Path;
use std::time::Instant;

use ed25519_dalek::{Signer as _, SigningKey};
use engine::{AuthorKey, BackendKind, Signed};

use super::Figure;

/// Messages per measurement round: about a batch's worth of changes.
const MESSAGES: usize = 4096;
/// Bytes of each signed message: the signing bytes of a Morango-shaped
/// record are about this long.
const MESSAGE_BYTES: usize = 400;
/// Rounds; the median is reported.
const ROUNDS: usize = 3;
/// Writes per commit, as a batch of the initial sync commits them.
const COMMIT_WRITES: usize = 1000;

/// Operations per second of each primitive.
#[derive(Clone, Copy, Debug, Default)]
pub struct Primitives {
    pub sign_per_s: f64,
    pub verify_per_s: f64,
    pub inserts_per_s: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn per_second(count: usize, started: Instant) -> f64 {
    count as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

/// Signing and batch verification on the calling thread (one core).
pub fn signatures() -> (f64, f64) {
    let keys: Vec<SigningKey> = (0..16u8).map(|i| SigningKey::from_bytes(&[i.wrapping_add(1); 32])).collect();
    let messages: Vec<Vec<u8>> =
        (0..MESSAGES).map(|i| (0..MESSAGE_BYTES).map(|j| (i * 31 + j * 7) as u8).collect()).collect();
    let (mut signs, mut verifies) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let signatures: Vec<[u8; 64]> =
            messages.iter().enumerate().map(|(i, m)| keys[i % keys.len()].sign(m).to_bytes()).collect();
        signs.push(per_second(MESSAGES, started));
        let authors: Vec<AuthorKey> = keys.iter().map(|k| AuthorKey(k.verifying_key().to_bytes())).collect();
        let items: Vec<Signed<'_>> = messages
            .iter()
            .zip(&signatures)
            .enumerate()
            .map(|(i, (message, signature))| Signed { message, signature, key: &authors[i % authors.len()] })
            .collect();
        let started = Instant::now();
        let valid = engine::authorize::verify_chunk(&items);
        verifies.push(per_second(MESSAGES, started));
        assert!(valid.iter().all(|ok| *ok), "signatures made here verify");
    }
    (median(signs), median(verifies))
}

/// Inserts of record-sized values into a fresh backend in `dir`.
pub fn inserts(dir: &Path, backend: BackendKind, count: usize) -> anyhow::Result<f64> {
    let store = backend.open(dir)?;
    let value = vec![7u8; MESSAGE_BYTES];
    let started = Instant::now();
    let mut written = 0;
    while written < count {
        let writes: Vec<engine::backend::WriteOp> = (written..(written + COMMIT_WRITES).min(count))
            .map(|i| (format!("r/bench/{i:016}").into_bytes(), Some(value.clone())))
            .collect();
        written += writes.len();
        store.commit(&writes)?;
    }
    let rate = per_second(count, started);
    store.close()?;
    Ok(rate)
}

/// MiB/s of one core for (BLAKE3 of a whole blob, building its outline,
/// checking every block against it): what verified streaming costs on top
/// of plain hashing. Medians of five runs over 64 MiB.
pub fn blob_hashing() -> (f64, f64, f64) {
    use engine::blob::{BlobHash, OutlineBuilder};
    const BYTES: usize = 64 * 1024 * 1024;
    let data: Vec<u8> = (0..BYTES).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1]).collect();
    let mib_s = |started: Instant| BYTES as f64 / (1024.0 * 1024.0) / started.elapsed().as_secs_f64().max(1e-9);
    let (mut plain, mut outline, mut check) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let started = Instant::now();
        let hash = BlobHash::of(&data);
        plain.push(mib_s(started));
        let started = Instant::now();
        let mut builder = OutlineBuilder::new();
        builder.update(&data);
        let (built, o) = builder.finish();
        outline.push(mib_s(started));
        assert_eq!(built, hash, "an outline makes BLAKE3's hash");
        let started = Instant::now();
        o.check(&hash, BYTES as u64).expect("checks");
        for (i, block) in data.chunks(engine::limits::BLOB_BLOCK_BYTES as usize).enumerate() {
            o.verify_block(&hash, i as u64, block).expect("verifies");
        }
        check.push(mib_s(started));
    }
    (median(plain), median(outline), median(check))
}

/// The primitives, and the figures that report them.
pub fn measure(dir: &Path, backend: BackendKind, inserts_count: usize) -> anyhow::Result<(Primitives, Vec<Figure>)> {
    let (sign_per_s, verify_per_s) = signatures();
    let inserts_per_s = inserts(&dir.join(format!("primitives-{}", backend.name())), backend, inserts_count)?;
    let figure = |scenario: &str, count: usize, rate: f64, note: &str| Figure {
        scenario: scenario.to_owned(),
        backend: backend.name().to_owned(),
        changes: count as u64,
        duration_ms: count as f64 / rate * 1000.0,
        note: note.to_owned(),
        ..Figure::default()
    };
    let (plain, outline, check) = blob_hashing();
    let mib = |scenario: &str, rate: f64, note: &str| Figure {
        scenario: scenario.to_owned(),
        backend: backend.name().to_owned(),
        changes: 64,
        duration_ms: 64.0 / rate * 1000.0,
        note: format!("{rate:.0} MiB/s; {note}"),
        ..Figure::default()
    };
    let mut figures = vec![
        mib("primitive: BLAKE3 of a blob, one core", plain, "64 MiB hashed whole (records/s column: MiB/s)"),
        mib(
            "primitive: blob outline, one core",
            outline,
            "the same 64 MiB cut into 256 KiB blocks, chaining values merged to the hash",
        ),
        mib(
            "primitive: blob verification, one core",
            check,
            "the same 64 MiB checked block by block, as a receiver does",
        ),
    ];
    figures.extend(vec![
        figure("primitive: Ed25519 signing, one core", MESSAGES, sign_per_s, "signatures/s, 400-byte messages"),
        figure(
            "primitive: Ed25519 batch verification, one core",
            MESSAGES,
            verify_per_s,
            "signatures/s, batches of 4096, 16 keys",
        ),
        figure(
            "primitive: backend inserts",
            inserts_count,
            inserts_per_s,
            "400-byte values, checksummed, 1000 per durable commit",
        ),
    ]);
    Ok((Primitives { sign_per_s, verify_per_s, inserts_per_s }, figures))
}
