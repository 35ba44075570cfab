//! Blobs (SPEC §6.1): files that records reference by their BLAKE3 hash.
//!
//! A record names a blob with a field value `{"$blob": {"hash": "<64 hex>",
//! "size": N}}`; the change that sets it is sealed like any other, so the
//! blob is authenticated by the record that names it. The bytes move apart
//! from the records (`blob/message.rs`, node/src/blobs.rs).
//!
//! Verified streaming: a blob is cut into blocks of `BLOB_BLOCK_BYTES`. A
//! block of 2^8 BLAKE3 chunks starting at a multiple of its own size is a
//! subtree of BLAKE3's tree, so each block has a chaining value, and the
//! chaining values merge up to the blob's hash (`root`). A sender first
//! announces every block's chaining value (an `Outline`, 32 bytes per
//! 256 KiB); the receiver checks that they merge to the hash it asked for,
//! then checks each block against its chaining value before writing it. A
//! blob of one block is checked against the hash itself. Nothing here does
//! IO.

use std::collections::BTreeSet;
use std::fmt;

use blake3::hazmat::{ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root};

use crate::Op;
use crate::limits::{BLOB_BLOCK_BYTES, BLOB_BYTES_MAX};
use crate::merge::RecordState;
use crate::value::Value;

pub mod message;

/// The key of a blob reference's map.
pub const REF_KEY: &str = "$blob";

/// A blob's BLAKE3 hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    pub fn of(bytes: &[u8]) -> BlobHash {
        BlobHash(*blake3::hash(bytes).as_bytes())
    }

    /// 64 hex digits, lower or upper case.
    pub fn parse(text: &str) -> Option<BlobHash> {
        if text.len() != 64 {
            return None;
        }
        partitions::hex::decode::<32>(&text.to_ascii_lowercase()).map(BlobHash)
    }

    pub fn to_hex(&self) -> String {
        partitions::hex::encode(&self.0)
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", self.to_hex())
    }
}

/// What a record field says of a blob: its hash and its size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobRef {
    pub hash: BlobHash,
    pub size: u64,
}

/// Why a `{"$blob": …}` value is not a blob reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error(
        "a blob reference is {{\"$blob\": {{\"hash\": \"<64 hex digits>\", \"size\": BYTES}}}} and nothing else in its map"
    )]
    Shape,
    #[error("blob hash {0:?} is not 64 hex digits")]
    Hash(String),
    #[error("a blob of {size} bytes is larger than the {max} allowed")]
    TooLarge { size: u64, max: u64 },
}

impl BlobRef {
    pub fn to_value(&self) -> Value {
        let mut inner = std::collections::BTreeMap::new();
        inner.insert("hash".to_owned(), Value::Text(self.hash.to_hex()));
        inner.insert("size".to_owned(), Value::Int(self.size as i64));
        let mut outer = std::collections::BTreeMap::new();
        outer.insert(REF_KEY.to_owned(), Value::Map(inner));
        Value::Map(outer)
    }

    /// `None` when `value` is not meant as a reference (it is not a map
    /// with the key `$blob`); otherwise the reference, or why it is not one.
    pub fn from_value(value: &Value) -> Option<Result<BlobRef, RefError>> {
        let Value::Map(outer) = value else { return None };
        let inner = outer.get(REF_KEY)?;
        Some(parse_ref(outer.len(), inner))
    }
}

fn parse_ref(outer_len: usize, inner: &Value) -> Result<BlobRef, RefError> {
    let Value::Map(inner) = inner else { return Err(RefError::Shape) };
    if outer_len != 1 || inner.len() != 2 {
        return Err(RefError::Shape);
    }
    let (Some(Value::Text(hash)), Some(&Value::Int(size))) = (inner.get("hash"), inner.get("size")) else {
        return Err(RefError::Shape);
    };
    let hash = BlobHash::parse(hash).ok_or_else(|| RefError::Hash(hash.clone()))?;
    let size = u64::try_from(size).map_err(|_| RefError::Shape)?;
    if size > BLOB_BYTES_MAX {
        return Err(RefError::TooLarge { size, max: BLOB_BYTES_MAX });
    }
    Ok(BlobRef { hash, size })
}

/// Adds the valid references anywhere in `value` to `out`, and returns the
/// first malformed one's error (a local write refuses it; a received change
/// holding one is data, not a reference).
pub fn refs_in(value: &Value, out: &mut BTreeSet<BlobRef>) -> Result<(), RefError> {
    let mut first_error = Ok(());
    visit(value, &mut |found| match found {
        Ok(r) => {
            out.insert(r);
        }
        Err(e) => {
            if first_error.is_ok() {
                first_error = Err(e);
            }
        }
    });
    first_error
}

fn visit(value: &Value, found: &mut dyn FnMut(Result<BlobRef, RefError>)) {
    match value {
        Value::Map(items) => {
            if let Some(r) = BlobRef::from_value(value) {
                found(r);
                return;
            }
            for item in items.values() {
                visit(item, found);
            }
        }
        Value::Array(items) => {
            for item in items {
                visit(item, found);
            }
        }
        _ => {}
    }
}

/// The references of the fields an operation sets.
pub fn refs_of_op(op: &Op, out: &mut BTreeSet<BlobRef>) {
    if let Op::Put { fields, .. } = op {
        for value in fields.values().flatten() {
            let _ = refs_in(value, out);
        }
    }
}

/// The blobs a record references: those its fields' live values name
/// (`RecordState::live_values`: the winner and the conflicts, so a value
/// kept as a conflict keeps its blob too); none once it is deleted (and no
/// put concurrent with the delete survives).
pub fn refs_of(state: &RecordState) -> BTreeSet<BlobRef> {
    let mut out = BTreeSet::new();
    // Only maps and arrays can hold a reference: most records hold none,
    // and this is on the path of every record a commit writes.
    let may_hold = state.changes.iter().any(|c| match &c.op {
        Op::Put { fields, .. } => fields.values().flatten().any(|v| matches!(v, Value::Map(_) | Value::Array(_))),
        Op::Delete => false,
    });
    if !may_hold || !state.put_survives() {
        return out;
    }
    state.live_values(&mut |value| {
        let _ = refs_in(value, &mut out);
    });
    out
}

// -- the tree ------------------------------------------------------------------

/// Blocks of a blob of `size` bytes (an empty blob has one, empty).
pub fn blocks(size: u64) -> u64 {
    size.div_ceil(BLOB_BLOCK_BYTES).max(1)
}

/// Bytes of block `index` of a blob of `size` bytes.
pub fn block_len(size: u64, index: u64) -> u64 {
    size.saturating_sub(index * BLOB_BLOCK_BYTES).min(BLOB_BLOCK_BYTES)
}

/// The chaining value of block `index` (of a blob of more than one block).
pub fn block_cv(index: u64, data: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * BLOB_BLOCK_BYTES);
    hasher.update(data);
    hasher.finalize_non_root()
}

fn merge(cvs: &[ChainingValue], len: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let left_len = left_subtree_len(len);
    let left = (left_len / BLOB_BLOCK_BYTES) as usize;
    merge_subtrees_non_root(&merge(&cvs[..left], left_len), &merge(&cvs[left..], len - left_len), Mode::Hash)
}

/// The hash the chaining values of a blob of `size` bytes (at least two
/// blocks) merge to, or `None` if there are not as many as it has blocks.
pub fn root(cvs: &[ChainingValue], size: u64) -> Option<BlobHash> {
    if size <= BLOB_BLOCK_BYTES || cvs.len() as u64 != blocks(size) {
        return None;
    }
    let left_len = left_subtree_len(size);
    let left = (left_len / BLOB_BLOCK_BYTES) as usize;
    let hash = merge_subtrees_root(&merge(&cvs[..left], left_len), &merge(&cvs[left..], size - left_len), Mode::Hash);
    Some(BlobHash(*hash.as_bytes()))
}

/// What a sender announces before a blob's bytes: its size and, for a blob
/// of more than one block, every block's chaining value. Empty for one
/// block: that block is checked against the hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outline {
    pub size: u64,
    pub cvs: Vec<ChainingValue>,
}

/// Why bytes are not the blob asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("the blob is announced as {found} bytes, not the {expected} its record names")]
    Size { expected: u64, found: u64 },
    #[error("a blob of {size} bytes is larger than the {max} allowed")]
    TooLarge { size: u64, max: u64 },
    #[error("the block hashes announced do not make blob {0}")]
    Outline(BlobHash),
    #[error("block {index} of blob {hash} does not match its hash: refused, nothing of it written")]
    Block { hash: BlobHash, index: u64 },
    #[error("block {index} of blob {hash} is {found} bytes, not {expected}")]
    BlockLen { hash: BlobHash, index: u64, expected: u64, found: u64 },
}

impl Outline {
    /// Checks the outline makes `hash` (and has the size the record says).
    pub fn check(&self, hash: &BlobHash, size: u64) -> Result<(), BlobError> {
        if self.size != size {
            return Err(BlobError::Size { expected: size, found: self.size });
        }
        if self.size > BLOB_BYTES_MAX {
            return Err(BlobError::TooLarge { size: self.size, max: BLOB_BYTES_MAX });
        }
        let fits = if self.size <= BLOB_BLOCK_BYTES {
            self.cvs.is_empty()
        } else {
            root(&self.cvs, self.size).is_some_and(|h| h == *hash)
        };
        if fits { Ok(()) } else { Err(BlobError::Outline(*hash)) }
    }

    pub fn blocks(&self) -> u64 {
        blocks(self.size)
    }

    /// Checks block `index` of a blob whose outline `check` accepted.
    pub fn verify_block(&self, hash: &BlobHash, index: u64, data: &[u8]) -> Result<(), BlobError> {
        let expected = block_len(self.size, index);
        if index >= self.blocks() || data.len() as u64 != expected {
            return Err(BlobError::BlockLen { hash: *hash, index, expected, found: data.len() as u64 });
        }
        let fits = if self.cvs.is_empty() {
            BlobHash::of(data) == *hash
        } else {
            block_cv(index, data) == self.cvs[index as usize]
        };
        if fits { Ok(()) } else { Err(BlobError::Block { hash: *hash, index }) }
    }
}

/// Builds a blob's hash and outline from its bytes, fed in any pieces.
#[derive(Default)]
pub struct OutlineBuilder {
    size: u64,
    block: Vec<u8>,
    cvs: Vec<ChainingValue>,
}

impl OutlineBuilder {
    pub fn new() -> OutlineBuilder {
        OutlineBuilder::default()
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.block.len() as u64 == BLOB_BLOCK_BYTES {
                self.finish_block();
            }
            let room = BLOB_BLOCK_BYTES as usize - self.block.len();
            let take = room.min(bytes.len());
            self.block.extend_from_slice(&bytes[..take]);
            self.size += take as u64;
            bytes = &bytes[take..];
        }
    }

    fn finish_block(&mut self) {
        let index = self.cvs.len() as u64;
        self.cvs.push(block_cv(index, &self.block));
        self.block.clear();
    }

    /// The hash and outline of everything fed.
    pub fn finish(mut self) -> (BlobHash, Outline) {
        if self.cvs.is_empty() {
            let hash = BlobHash::of(&self.block);
            return (hash, Outline { size: self.size, cvs: Vec::new() });
        }
        self.finish_block();
        let hash = root(&self.cvs, self.size).expect("as many chaining values as blocks");
        (hash, Outline { size: self.size, cvs: self.cvs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn outlines_make_blake3_of_every_size_around_block_edges() {
        let b = BLOB_BLOCK_BYTES as usize;
        for len in [0, 1, 1024, b - 1, b, b + 1, 2 * b, 3 * b - 7, 4 * b, 5 * b + 1, 8 * b + 100] {
            let data = bytes(len);
            let mut builder = OutlineBuilder::new();
            for piece in data.chunks(70_000) {
                builder.update(piece);
            }
            let (hash, outline) = builder.finish();
            assert_eq!(hash, BlobHash::of(&data), "length {len}");
            outline.check(&hash, len as u64).expect("an outline checks against its own hash");
            for (i, block) in data.chunks(b).enumerate() {
                outline.verify_block(&hash, i as u64, block).expect("every block verifies");
            }
            assert_eq!(outline.blocks(), blocks(len as u64));
        }
    }

    #[test]
    fn a_changed_byte_fails_its_block_and_a_changed_outline_fails_the_check() {
        let b = BLOB_BLOCK_BYTES as usize;
        let data = bytes(3 * b + 5);
        let mut builder = OutlineBuilder::new();
        builder.update(&data);
        let (hash, outline) = builder.finish();
        let mut block = data[b..2 * b].to_vec();
        block[17] ^= 1;
        assert_eq!(outline.verify_block(&hash, 1, &block), Err(BlobError::Block { hash, index: 1 }));
        assert!(outline.verify_block(&hash, 1, &data[..b]).is_err(), "block 0 is not block 1");
        let mut forged = outline.clone();
        forged.cvs[2][0] ^= 1;
        assert_eq!(forged.check(&hash, outline.size), Err(BlobError::Outline(hash)));
        assert!(outline.check(&hash, outline.size + 1).is_err());
        let small = bytes(100);
        let mut wrong = small.clone();
        wrong[0] ^= 1;
        let one = Outline { size: 100, cvs: Vec::new() };
        assert!(one.verify_block(&BlobHash::of(&small), 0, &wrong).is_err());
    }

    #[test]
    fn references_parse_only_in_their_exact_form() {
        let r = BlobRef { hash: BlobHash([7; 32]), size: 12 };
        assert_eq!(BlobRef::from_value(&r.to_value()), Some(Ok(r)));
        assert_eq!(BlobRef::from_value(&Value::Text("x".into())), None);
        let mut extra = r.to_value();
        if let Value::Map(m) = &mut extra {
            m.insert("other".into(), Value::Null);
        }
        assert_eq!(BlobRef::from_value(&extra), Some(Err(RefError::Shape)));
        let nested = Value::Array(vec![Value::Int(1), r.to_value()]);
        let mut found = BTreeSet::new();
        refs_in(&nested, &mut found).expect("well formed");
        assert_eq!(found.into_iter().collect::<Vec<_>>(), [r]);
    }
}
