//! The messages of the blob protocol (docs/protocol.md, "Blobs"), and their
//! one decoder. Each frame is a version byte and a CBOR message.
//!
//! The side that opens the stream says `Hello` with its certificate chain.
//! Then, one blob at a time, it pulls (`Get` → `Have` or `Missing`, `From`
//! → `Data`…) or pushes (`Lacks` → `Wants`, `Offer` → `From` or `Declined`,
//! `Data`…). Whichever side receives names the block to start from, so an
//! interrupted transfer resumes after its last verified block.

use serde::{Deserialize, Serialize};

use crate::codec::{ByteBuf, Bytes32, DecodeError, cbor_decode, truncate_utf8};
use crate::limits::{BLOB_BYTES_MAX, BLOB_HASHES_MAX, BLOB_MESSAGE_BYTES_MAX, CREDENTIALS_BYTES_MAX, REASON_BYTES_MAX};

use super::{BlobHash, Outline};

/// The first byte of every frame.
pub const BLOB_PROTOCOL_VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobMessage {
    /// The opener's certificate chain (its peer id is its key).
    Hello {
        credentials: Vec<u8>,
    },
    Ready,
    Refused {
        reason: String,
    },
    /// Pull: send me this blob (of this size, as my record says).
    Get {
        hash: BlobHash,
        size: u64,
    },
    /// The blob's outline: its bytes follow from the block the receiver names.
    Have(Outline),
    /// Not held, or not for you: the same answer either way.
    Missing,
    /// The receiver holds the blocks before this one, verified.
    From {
        block: u64,
    },
    /// The next block.
    Data(Vec<u8>),
    /// Push: which of these blobs do you lack and want?
    Lacks {
        hashes: Vec<BlobHash>,
    },
    Wants {
        hashes: Vec<BlobHash>,
    },
    /// Push: this blob's outline; answered with `From` or `Declined`.
    Offer {
        hash: BlobHash,
        outline: Outline,
    },
    Declined,
}

#[derive(Serialize, Deserialize)]
enum Wire {
    Hello { credentials: ByteBuf },
    Ready,
    Refused { reason: String },
    Get { hash: Bytes32, size: u64 },
    Have { size: u64, cvs: Vec<Bytes32> },
    Missing,
    From { block: u64 },
    Data(ByteBuf),
    Lacks(Vec<Bytes32>),
    Wants(Vec<Bytes32>),
    Offer { hash: Bytes32, size: u64, cvs: Vec<Bytes32> },
    Declined,
}

fn hashes(list: &[BlobHash]) -> Vec<Bytes32> {
    list.iter().map(|h| Bytes32(h.0)).collect()
}

fn cvs(outline: &Outline) -> Vec<Bytes32> {
    outline.cvs.iter().copied().map(Bytes32).collect()
}

pub fn encode(message: &BlobMessage) -> Vec<u8> {
    let wire = match message {
        BlobMessage::Hello { credentials } => Wire::Hello { credentials: ByteBuf(credentials.clone()) },
        BlobMessage::Ready => Wire::Ready,
        BlobMessage::Refused { reason } => {
            let mut reason = reason.clone();
            truncate_utf8(&mut reason, REASON_BYTES_MAX);
            Wire::Refused { reason }
        }
        BlobMessage::Get { hash, size } => Wire::Get { hash: Bytes32(hash.0), size: *size },
        BlobMessage::Have(outline) => Wire::Have { size: outline.size, cvs: cvs(outline) },
        BlobMessage::Missing => Wire::Missing,
        BlobMessage::From { block } => Wire::From { block: *block },
        BlobMessage::Data(bytes) => return encode_data(bytes),
        BlobMessage::Lacks { hashes: h } => Wire::Lacks(hashes(h)),
        BlobMessage::Wants { hashes: h } => Wire::Wants(hashes(h)),
        BlobMessage::Offer { hash, outline } => {
            Wire::Offer { hash: Bytes32(hash.0), size: outline.size, cvs: cvs(outline) }
        }
        BlobMessage::Declined => Wire::Declined,
    };
    let mut out = vec![BLOB_PROTOCOL_VERSION];
    serde_cbor::to_writer(&mut out, &wire).expect("writing CBOR to a Vec cannot fail");
    out
}

/// `encode(&BlobMessage::Data(bytes))` without copying the block first.
pub fn encode_data(bytes: &[u8]) -> Vec<u8> {
    #[derive(Serialize)]
    enum DataRef<'a> {
        Data(crate::codec::ByteBufRef<'a>),
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    out.push(BLOB_PROTOCOL_VERSION);
    serde_cbor::to_writer(&mut out, &DataRef::Data(crate::codec::ByteBufRef(bytes)))
        .expect("writing CBOR to a Vec cannot fail");
    out
}

/// The one decoder of the blob protocol's frames.
pub fn decode(frame: &[u8]) -> Result<BlobMessage, DecodeError> {
    let Some((&version, body)) = frame.split_first() else { return Err(DecodeError::Empty) };
    if frame.len() > BLOB_MESSAGE_BYTES_MAX {
        return Err(DecodeError::TooLarge { len: frame.len(), max: BLOB_MESSAGE_BYTES_MAX });
    }
    if version != BLOB_PROTOCOL_VERSION {
        return Err(DecodeError::Version { found: version, supported: BLOB_PROTOCOL_VERSION });
    }
    let wire: Wire = cbor_decode(body)?;
    let outline = |size: u64, cvs: Vec<Bytes32>| -> Result<Outline, DecodeError> {
        if size > BLOB_BYTES_MAX {
            return Err(DecodeError::Cbor(format!(
                "a blob of {size} bytes is larger than the {BLOB_BYTES_MAX} allowed"
            )));
        }
        let expected = if size <= crate::limits::BLOB_BLOCK_BYTES { 0 } else { super::blocks(size) };
        if cvs.len() as u64 != expected {
            return Err(DecodeError::Cbor(format!(
                "a blob of {size} bytes has {expected} block hashes, not {}",
                cvs.len()
            )));
        }
        Ok(Outline { size, cvs: cvs.into_iter().map(|c| c.0).collect() })
    };
    let list = |hashes: Vec<Bytes32>| -> Result<Vec<BlobHash>, DecodeError> {
        if hashes.len() > BLOB_HASHES_MAX {
            return Err(DecodeError::Cbor(format!(
                "{} blob hashes in one message, more than the {BLOB_HASHES_MAX} allowed",
                hashes.len()
            )));
        }
        Ok(hashes.into_iter().map(|h| BlobHash(h.0)).collect())
    };
    Ok(match wire {
        Wire::Hello { credentials } => {
            if credentials.0.len() > CREDENTIALS_BYTES_MAX {
                return Err(DecodeError::ChainTooLarge { len: credentials.0.len(), max: CREDENTIALS_BYTES_MAX });
            }
            BlobMessage::Hello { credentials: credentials.0 }
        }
        Wire::Ready => BlobMessage::Ready,
        Wire::Refused { reason } => {
            if reason.len() > REASON_BYTES_MAX {
                return Err(DecodeError::ReasonTooLong { len: reason.len(), max: REASON_BYTES_MAX });
            }
            BlobMessage::Refused { reason }
        }
        Wire::Get { hash, size } => BlobMessage::Get { hash: BlobHash(hash.0), size },
        Wire::Have { size, cvs } => BlobMessage::Have(outline(size, cvs)?),
        Wire::Missing => BlobMessage::Missing,
        Wire::From { block } => BlobMessage::From { block },
        Wire::Data(bytes) => {
            if bytes.0.len() as u64 > crate::limits::BLOB_BLOCK_BYTES {
                return Err(DecodeError::TooLarge {
                    len: bytes.0.len(),
                    max: crate::limits::BLOB_BLOCK_BYTES as usize,
                });
            }
            BlobMessage::Data(bytes.0)
        }
        Wire::Lacks(h) => BlobMessage::Lacks { hashes: list(h)? },
        Wire::Wants(h) => BlobMessage::Wants { hashes: list(h)? },
        Wire::Offer { hash, size, cvs } => BlobMessage::Offer { hash: BlobHash(hash.0), outline: outline(size, cvs)? },
        Wire::Declined => BlobMessage::Declined,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let hash = BlobHash([3; 32]);
        let big = Outline { size: 3 * crate::limits::BLOB_BLOCK_BYTES, cvs: vec![[1; 32], [2; 32], [3; 32]] };
        for message in [
            BlobMessage::Hello { credentials: vec![1, 2, 3] },
            BlobMessage::Ready,
            BlobMessage::Refused { reason: "no".into() },
            BlobMessage::Get { hash, size: 9 },
            BlobMessage::Have(big.clone()),
            BlobMessage::Have(Outline { size: 10, cvs: Vec::new() }),
            BlobMessage::Missing,
            BlobMessage::From { block: 7 },
            BlobMessage::Data(vec![9; 1000]),
            BlobMessage::Lacks { hashes: vec![hash, BlobHash([4; 32])] },
            BlobMessage::Wants { hashes: vec![hash] },
            BlobMessage::Offer { hash, outline: big },
            BlobMessage::Declined,
        ] {
            assert_eq!(decode(&encode(&message)), Ok(message.clone()), "{message:?}");
        }
    }

    #[test]
    fn outlines_of_the_wrong_length_and_oversized_blocks_are_refused() {
        let short =
            encode(&BlobMessage::Have(Outline { size: 3 * crate::limits::BLOB_BLOCK_BYTES, cvs: vec![[1; 32]] }));
        assert!(decode(&short).is_err());
        let block = encode(&BlobMessage::Data(vec![0; crate::limits::BLOB_BLOCK_BYTES as usize + 1]));
        assert!(matches!(decode(&block), Err(DecodeError::TooLarge { .. })));
        assert!(matches!(decode(&[2, 0]), Err(DecodeError::Version { .. })));
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
    }
}
