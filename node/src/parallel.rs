//! Signature and hashing work spread over the machine's cores. The engine
//! has no threads; it asks these to verify signatures and to encode and
//! hash the changes a local write seals in runs.

use engine::authorize::{Signed, Verifier, verify_chunk};
use engine::{Change, Signer};

/// Below this many items one thread is faster than starting others.
const PARALLEL_MIN: usize = 64;

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 16)
}

pub struct ParallelVerifier;

impl Verifier for ParallelVerifier {
    fn verify_all(&self, items: &[Signed<'_>]) -> Vec<bool> {
        let threads = threads();
        if items.len() < PARALLEL_MIN || threads == 1 {
            return verify_chunk(items);
        }
        let chunk = items.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = items.chunks(chunk).map(|part| scope.spawn(move || verify_chunk(part))).collect();
            handles.into_iter().flat_map(|h| h.join().expect("verification does not panic")).collect()
        })
    }
}

pub struct ParallelSigner;

impl Signer for ParallelSigner {
    fn leaves(&self, changes: &[Change]) -> Vec<(usize, [u8; 32])> {
        let threads = threads();
        if changes.len() < PARALLEL_MIN || threads == 1 {
            return changes.iter().map(Change::leaf).collect();
        }
        let chunk = changes.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = changes
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().map(Change::leaf).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("hashing does not panic")).collect()
        })
    }
}
