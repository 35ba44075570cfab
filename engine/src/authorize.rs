//! The seam between the engine and certificates: the engine asks an
//! `Authorizer` what peers may read and what authors may write, and never
//! parses a certificate itself. `node` implements it with verified X.509
//! chains; `StaticAuthorizer` here is a fixed table for tests and tools.
//!
//! Also here: the `Verifier` the engine checks signatures through, so a
//! driver with threads can spread the work over cores while the engine has
//! none.

use std::collections::BTreeMap;
use std::sync::Mutex;

use ed25519_dalek::{Signature, VerifyingKey};
use partitions::{Partition, RecordType, Scope, WriteKind};

use crate::ids::AuthorKey;

/// A refusal, with the reason to log, count and show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

pub trait Authorizer: Sync {
    /// Checks the credentials a peer presented for a session (opaque bytes:
    /// for `node`, a certificate chain whose holder must be `peer`) and
    /// returns what the peer may read and write. `now_s` is seconds since 1970.
    fn authenticate(&self, peer: &AuthorKey, credentials: &[u8], now_s: u64) -> Result<Scope, Denied>;

    /// Learns credentials that travelled with data; returns whose they are.
    fn learn(&self, credentials: &[u8], now_s: u64) -> Result<AuthorKey, Denied>;

    /// Whether `author` (claiming the authority tag `authority`) may make
    /// this kind of write to this partition and type at time `at_s`.
    fn may_write(
        &self,
        author: &AuthorKey,
        authority: Option<&str>,
        partition: &Partition,
        record_type: &RecordType,
        kind: WriteKind,
        at_s: u64,
    ) -> Result<(), Denied>;
}

/// An authorizer from a fixed table: a credential is the 32-byte key itself,
/// and each known key has a scope and an optional authority tag.
#[derive(Default)]
pub struct StaticAuthorizer {
    entries: Mutex<BTreeMap<AuthorKey, (Scope, Option<String>)>>,
}

impl StaticAuthorizer {
    pub fn new() -> StaticAuthorizer {
        StaticAuthorizer::default()
    }

    pub fn grant(&self, key: AuthorKey, scope: Scope, authority: Option<String>) {
        self.entries.lock().expect("authorizer lock").insert(key, (scope, authority));
    }

    fn entry(&self, key: &AuthorKey) -> Option<(Scope, Option<String>)> {
        self.entries.lock().expect("authorizer lock").get(key).cloned()
    }
}

impl Authorizer for StaticAuthorizer {
    fn authenticate(&self, peer: &AuthorKey, credentials: &[u8], _now_s: u64) -> Result<Scope, Denied> {
        if credentials != peer.0 {
            return Err(Denied("credentials belong to another key".into()));
        }
        self.entry(peer).map(|(scope, _)| scope).ok_or_else(|| Denied("unknown peer".into()))
    }

    fn learn(&self, credentials: &[u8], _now_s: u64) -> Result<AuthorKey, Denied> {
        let key: [u8; 32] = credentials.try_into().map_err(|_| Denied("not a key".into()))?;
        let key = AuthorKey(key);
        self.entry(&key).map(|_| key).ok_or_else(|| Denied("unknown author".into()))
    }

    fn may_write(
        &self,
        author: &AuthorKey,
        authority: Option<&str>,
        partition: &Partition,
        record_type: &RecordType,
        kind: WriteKind,
        _at_s: u64,
    ) -> Result<(), Denied> {
        let (scope, tag) = self.entry(author).ok_or_else(|| Denied("unknown author".into()))?;
        if authority.is_some() && authority != tag.as_deref() {
            return Err(Denied("author does not hold the authority it claims".into()));
        }
        if scope.may_write(partition, record_type, kind) {
            Ok(())
        } else {
            Err(Denied(format!("author may not {kind:?} {record_type} in {partition}")))
        }
    }
}

/// One signature to check.
pub struct Signed<'a> {
    pub message: &'a [u8],
    pub signature: &'a [u8; 64],
    pub key: &'a AuthorKey,
}

/// Checks many signatures at once; the result has one entry per item.
pub trait Verifier: Sync {
    fn verify_all(&self, items: &[Signed<'_>]) -> Vec<bool>;
}

/// Verifies on the calling thread: one batch verification, and only when it
/// fails, each signature alone to name the culprits.
pub struct SerialVerifier;

impl Verifier for SerialVerifier {
    fn verify_all(&self, items: &[Signed<'_>]) -> Vec<bool> {
        verify_chunk(items)
    }
}

/// The batch-then-fallback verification of a slice (for drivers that split
/// the work across threads).
pub fn verify_chunk(items: &[Signed<'_>]) -> Vec<bool> {
    let mut ok = vec![false; items.len()];
    let mut messages = Vec::with_capacity(items.len());
    let mut signatures = Vec::with_capacity(items.len());
    let mut keys = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    // A batch usually carries few authors: decompress each key once.
    let mut known: BTreeMap<[u8; 32], Option<VerifyingKey>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let key = *known
            .entry(item.key.0)
            .or_insert_with(|| VerifyingKey::from_bytes(&item.key.0).ok().filter(|k| !k.is_weak()));
        let Some(key) = key else { continue };
        // Batch verification does not refuse what strict verification
        // refuses: small-order keys (filtered above) and R values that are
        // of small order or not canonical. Refuse those here, so the batch
        // path and the single path agree on every signature.
        let r: &[u8; 32] = item.signature[..32].try_into().expect("64 bytes hold 32");
        if !is_strict_r(r) {
            continue;
        }
        messages.push(item.message);
        signatures.push(Signature::from_bytes(item.signature));
        keys.push(key);
        positions.push(i);
    }
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        for i in positions {
            ok[i] = true;
        }
        return ok;
    }
    for (n, i) in positions.into_iter().enumerate() {
        ok[i] = keys[n].verify_strict(messages[n], &signatures[n]).is_ok();
    }
    ok
}

/// Whether `r` is a canonical point encoding that is not of small order:
/// what strict verification demands of a signature's R. Decided on the
/// bytes: y below 2^255 - 19, and not one of the encodings of the eight
/// points of small order (with either sign bit, which also covers the
/// non-canonical "negative zero" x of the two points with x = 0).
pub fn is_strict_r(r: &[u8; 32]) -> bool {
    static SMALL_ORDER: std::sync::OnceLock<Vec<[u8; 32]>> = std::sync::OnceLock::new();
    let small = SMALL_ORDER.get_or_init(|| {
        let mut list = Vec::new();
        for point in curve25519_dalek::constants::EIGHT_TORSION {
            let bytes = point.compress().to_bytes();
            let mut flipped = bytes;
            flipped[31] ^= 0x80;
            list.push(bytes);
            list.push(flipped);
        }
        list
    });
    let mut y = *r;
    y[31] &= 0x7f;
    let y_at_least_p = y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff) && y[0] >= 0xed;
    !y_at_least_p && !small.contains(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte test agrees with decompressing and recompressing.
    fn slow(r: &[u8; 32]) -> bool {
        match curve25519_dalek::edwards::CompressedEdwardsY(*r).decompress() {
            Some(point) => !point.is_small_order() && point.compress().to_bytes() == *r,
            None => false,
        }
    }

    #[test]
    fn strict_r_check_matches_decompression() {
        let mut cases: Vec<[u8; 32]> = Vec::new();
        for point in curve25519_dalek::constants::EIGHT_TORSION {
            let b = point.compress().to_bytes();
            let mut f = b;
            f[31] ^= 0x80;
            cases.push(b);
            cases.push(f);
        }
        // Non-canonical y: p + k for small k, with both sign bits.
        for k in 0..19u8 {
            let mut y = [0xffu8; 32];
            y[31] = 0x7f;
            y[0] = 0xed + k;
            cases.push(y);
            y[31] = 0xff;
            cases.push(y);
        }
        // Ordinary points and random bytes.
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            let mut b = [0u8; 32];
            for byte in b.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            cases.push(b);
            let point = curve25519_dalek::constants::ED25519_BASEPOINT_POINT * curve25519_dalek::Scalar::from(state);
            cases.push(point.compress().to_bytes());
        }
        for case in cases {
            // Where decompression fails, batch verification fails too; only
            // the accepted cases must agree.
            if curve25519_dalek::edwards::CompressedEdwardsY(case).decompress().is_some() {
                assert_eq!(is_strict_r(&case), slow(&case), "{case:?}");
            }
        }
    }
}
