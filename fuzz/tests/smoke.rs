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
