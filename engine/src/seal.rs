//! Seals: how an author vouches for its changes (docs/protocol.md, "Seals").
//!
//! A change is sealed one of two ways:
//! - `Single`: an Ed25519 signature over the change's signing bytes alone
//!   (what protocol 1 made; stores written then still hold such changes);
//! - `Run`: one signature over a *run*, the changes an author wrote together
//!   with the counters `first..first+count`. The author signs the root of a
//!   BLAKE3 Merkle tree whose leaves are the changes' hashes in counter
//!   order, so one signature covers up to `RUN_LEAVES_MAX` changes.
//!
//! Any node can relay any subset of a run: it sends the changes and, once
//! per run in a batch, the signature and a proof: the hashes of the largest
//! subtrees that hold none of the changes sent, in depth-first order. The
//! receiver hashes the changes, rebuilds the root with the proof and checks
//! the signature over it. A run that travels whole needs no proof hashes.
//!
//! The tree over `count` leaves splits a span of `len > 1` leaves at the
//! largest power of two below `len`; a leaf hashes `0x00 ‖ signing bytes`,
//! an inner node `0x01 ‖ left ‖ right`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::{Bytes16, Bytes32};
use crate::ids::{AuthorKey, Counter, InstanceId};
use crate::limits::RUN_LEAVES_MAX;

/// How a change's author vouches for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seal {
    /// The change's own signature.
    Single([u8; 64]),
    /// One leaf of the run that starts at counter `first` (the author is the
    /// change's).
    Run { first: Counter },
}

/// A subtree of a run: the leaves `start..start+len`.
pub type Span = (u32, u32);

pub type Hash = [u8; 32];

/// A leaf: the hash of a change's signing bytes.
pub fn leaf_hash(signing_bytes: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0]);
    h.update(signing_bytes);
    *h.finalize().as_bytes()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// Where a span of `len > 1` leaves splits: the largest power of two below
/// `len`.
fn split(len: u32) -> u32 {
    debug_assert!(len > 1);
    1 << (31 - (len - 1).leading_zeros())
}

#[derive(Serialize)]
struct RunMessage {
    domain: &'static str,
    author_key: Bytes32,
    author: Bytes16,
    first: u64,
    count: u32,
    root: Bytes32,
}

/// The bytes an author signs for a run.
pub fn run_message(author_key: &AuthorKey, author: &InstanceId, first: Counter, count: u32, root: &Hash) -> Vec<u8> {
    let message = RunMessage {
        domain: "ferry run v1",
        author_key: Bytes32(author_key.0),
        author: Bytes16(author.0),
        first,
        count,
        root: Bytes32(*root),
    };
    serde_cbor::ser::to_vec_packed(&message).expect("writing CBOR to a Vec cannot fail")
}

/// Why the changes of a run and its proof do not rebuild a root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("its run's proof is missing hashes (truncated)")]
    Truncated,
    #[error("its run's proof has {0} hashes more than its changes need")]
    TooLong(usize),
    #[error("counter {counter} is outside its run (counters {first} to {last})")]
    OutsideRun { counter: Counter, first: Counter, last: Counter },
    #[error("two changes in one batch claim counter {0} of the same run")]
    Twice(Counter),
    #[error("its run claims {count} changes; a run holds 1 to {RUN_LEAVES_MAX}")]
    Count { count: u32 },
}

/// The leaf index of `counter` in the run `first..first+count`.
pub fn leaf_index(counter: Counter, first: Counter, count: u32) -> Result<u32, ProofError> {
    match counter.checked_sub(first) {
        Some(i) if i < u64::from(count) => Ok(i as u32),
        _ => Err(ProofError::OutsideRun {
            counter,
            first,
            last: first.saturating_add(u64::from(count)).saturating_sub(1),
        }),
    }
}

/// Rebuilds a run's root from the leaves present (sorted by index, unique)
/// and a proof. Returns the root and every span it learnt (the leaves and
/// the proof's subtrees), which is what a node keeps to relay the run.
pub fn rebuild(count: u32, leaves: &[(u32, Hash)], proof: &[Hash]) -> Result<(Hash, Vec<(Span, Hash)>), ProofError> {
    if count == 0 || count as usize > RUN_LEAVES_MAX {
        return Err(ProofError::Count { count });
    }
    let mut learnt = Vec::with_capacity(leaves.len() + proof.len());
    let mut next = 0usize;
    let root = rebuild_span((0, count), leaves, proof, &mut next, &mut learnt)?;
    if next != proof.len() {
        return Err(ProofError::TooLong(proof.len() - next));
    }
    Ok((root, learnt))
}

fn rebuild_span(
    span: Span,
    leaves: &[(u32, Hash)],
    proof: &[Hash],
    next: &mut usize,
    learnt: &mut Vec<(Span, Hash)>,
) -> Result<Hash, ProofError> {
    let (start, len) = span;
    if leaves.is_empty() {
        let hash = *proof.get(*next).ok_or(ProofError::Truncated)?;
        *next += 1;
        learnt.push((span, hash));
        return Ok(hash);
    }
    if len == 1 {
        // `leaves` is sorted and unique, so exactly one leaf lies here.
        learnt.push((span, leaves[0].1));
        return Ok(leaves[0].1);
    }
    let half = split(len);
    let at = leaves.partition_point(|(i, _)| *i < start + half);
    let left = rebuild_span((start, half), &leaves[..at], proof, next, learnt)?;
    let right = rebuild_span((start + half, len - half), &leaves[at..], proof, next, learnt)?;
    Ok(node_hash(&left, &right))
}

/// What a node keeps of a run to relay its changes: the signature and the
/// hashes of the spans it knows, which together rebuild the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunKnown {
    pub author_key: AuthorKey,
    pub count: u32,
    pub signature: [u8; 64],
    pub spans: BTreeMap<Span, Hash>,
}

impl RunKnown {
    /// A run its author just wrote: every leaf is known.
    pub fn whole(author_key: AuthorKey, signature: [u8; 64], leaves: &[Hash]) -> RunKnown {
        RunKnown {
            author_key,
            count: leaves.len() as u32,
            signature,
            spans: leaves.iter().enumerate().map(|(i, h)| ((i as u32, 1), *h)).collect(),
        }
    }

    /// The hash of a span, from what is known.
    fn hash_of(&self, span: Span) -> Option<Hash> {
        if let Some(h) = self.spans.get(&span) {
            return Some(*h);
        }
        let (start, len) = span;
        if len <= 1 {
            return None;
        }
        let half = split(len);
        Some(node_hash(&self.hash_of((start, half))?, &self.hash_of((start + half, len - half))?))
    }

    /// The root the known spans rebuild, if they cover the run.
    pub fn root(&self) -> Option<Hash> {
        self.hash_of((0, self.count))
    }

    /// The proof for the leaves `present` (sorted, unique indexes below
    /// `count`); `None` when a span it needs is not known.
    pub fn proof(&self, present: &[u32]) -> Option<Vec<Hash>> {
        let mut out = Vec::new();
        self.proof_span((0, self.count), present, &mut out)?;
        Some(out)
    }

    fn proof_span(&self, span: Span, present: &[u32], out: &mut Vec<Hash>) -> Option<()> {
        let (start, len) = span;
        if present.is_empty() {
            out.push(self.hash_of(span)?);
            return Some(());
        }
        if len == 1 {
            return Some(());
        }
        let half = split(len);
        let at = present.partition_point(|i| *i < start + half);
        self.proof_span((start, half), &present[..at], out)?;
        self.proof_span((start + half, len - half), &present[at..], out)
    }

    /// The hash of leaf `index`, if known.
    pub fn leaf(&self, index: u32) -> Option<Hash> {
        self.spans.get(&(index, 1)).copied()
    }

    /// Adds spans learnt from a proof of the same run.
    pub fn learn(&mut self, learnt: impl IntoIterator<Item = (Span, Hash)>) {
        self.spans.extend(learnt);
    }
}

#[derive(Serialize, Deserialize)]
struct RunStored {
    author_key: Bytes32,
    count: u32,
    signature: crate::codec::Bytes64,
    spans: Vec<(u32, u32, Bytes32)>,
}

/// Encodes what is known of a run for the store.
pub fn encode_run(run: &RunKnown) -> Vec<u8> {
    let stored = RunStored {
        author_key: Bytes32(run.author_key.0),
        count: run.count,
        signature: crate::codec::Bytes64(run.signature),
        spans: run.spans.iter().map(|((s, l), h)| (*s, *l, Bytes32(*h))).collect(),
    };
    serde_cbor::ser::to_vec_packed(&stored).expect("writing CBOR to a Vec cannot fail")
}

pub fn decode_run(bytes: &[u8]) -> Result<RunKnown, crate::codec::DecodeError> {
    let stored: RunStored = crate::codec::cbor_decode(bytes)?;
    Ok(RunKnown {
        author_key: AuthorKey(stored.author_key.0),
        count: stored.count,
        signature: stored.signature.0,
        spans: stored.spans.into_iter().map(|(s, l, h)| ((s, l), h.0)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u32) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn known(n: u32) -> RunKnown {
        RunKnown::whole(AuthorKey([1; 32]), [0; 64], &leaves(n))
    }

    #[test]
    fn every_subset_of_small_runs_rebuilds_the_root_with_its_proof() {
        for n in 1..=9u32 {
            let run = known(n);
            let root = run.root().expect("whole");
            for mask in 0u32..(1 << n) {
                let present: Vec<u32> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
                let proof = run.proof(&present).expect("whole runs prove anything");
                let given: Vec<(u32, Hash)> = present.iter().map(|&i| (i, run.leaf(i).expect("leaf"))).collect();
                let (rebuilt, learnt) = rebuild(n, &given, &proof).expect("a proof made here rebuilds");
                assert_eq!(rebuilt, root, "n={n} mask={mask:b}");
                // What a receiver learns is enough to relay any other subset.
                let mut relay = RunKnown { spans: BTreeMap::new(), ..run.clone() };
                relay.learn(learnt);
                assert_eq!(relay.root(), Some(root));
                if !present.is_empty() {
                    let again = relay.proof(&present[..1]).expect("relay proves what it holds");
                    let (r, _) = rebuild(n, &given[..1], &again).expect("rebuilds");
                    assert_eq!(r, root);
                }
            }
        }
    }

    #[test]
    fn a_whole_run_needs_no_proof_hashes() {
        let run = known(1000);
        let all: Vec<u32> = (0..1000).collect();
        assert_eq!(run.proof(&all).expect("whole").len(), 0);
        assert_eq!(run.proof(&[0]).expect("whole").len(), 10);
    }

    #[test]
    fn altered_truncated_and_padded_proofs_are_refused() {
        let run = known(13);
        let root = run.root().expect("whole");
        let present = [2u32, 3, 9];
        let given: Vec<(u32, Hash)> = present.iter().map(|&i| (i, run.leaf(i).expect("leaf"))).collect();
        let proof = run.proof(&present).expect("whole");
        let mut forged = proof.clone();
        forged[1][0] ^= 1;
        assert_ne!(rebuild(13, &given, &forged).expect("same shape").0, root);
        assert_eq!(rebuild(13, &given, &proof[..proof.len() - 1]), Err(ProofError::Truncated));
        let mut padded = proof.clone();
        padded.push([0; 32]);
        assert_eq!(rebuild(13, &given, &padded), Err(ProofError::TooLong(1)));
        let mut moved = given.clone();
        moved[0].1 = leaf_hash(b"another change");
        assert_ne!(rebuild(13, &moved, &proof).expect("same shape").0, root);
        assert_eq!(rebuild(0, &[], &[]), Err(ProofError::Count { count: 0 }));
    }

    #[test]
    fn counters_outside_a_run_have_no_leaf() {
        assert_eq!(leaf_index(12, 10, 5), Ok(2));
        assert!(matches!(leaf_index(9, 10, 5), Err(ProofError::OutsideRun { .. })));
        assert!(matches!(leaf_index(15, 10, 5), Err(ProofError::OutsideRun { last: 14, .. })));
    }

    #[test]
    fn stored_runs_round_trip() {
        let run = known(7);
        assert_eq!(decode_run(&encode_run(&run)).expect("decodes"), run);
    }
}
