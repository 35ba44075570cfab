//! The CBOR building blocks every encoding shares: byte strings (serde
//! writes `[u8; N]` and `Vec<u8>` as arrays of integers; these write CBOR
//! byte strings), the bounded decode, and `DecodeError`. The only modules
//! that touch serde_cbor (unmaintained, RUSTSEC-2021-0127, but stable) are
//! this one, `wire`, `stored` and `change::signing`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("message is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("protocol version {found} is not supported (this node speaks {supported})")]
    Version { found: u8, supported: u8 },
    #[error("malformed CBOR: {0}")]
    Cbor(String),
    #[error("compressed payload fails its checksum")]
    Checksum,
    #[error("payload would decompress to {len} bytes, more than the {max} allowed")]
    DecompressedTooLarge { len: u64, max: usize },
    #[error("payload does not decompress: {0}")]
    Decompress(String),
    #[error("payload decompressed to {found} bytes, not the {expected} announced")]
    LengthMismatch { expected: u64, found: u64 },
    #[error("batch has {count} changes, more than the {max} allowed")]
    TooManyChanges { count: usize, max: usize },
    #[error("batch carries {count} certificate chains, more than the {max} allowed")]
    TooManyChains { count: usize, max: usize },
    #[error("a certificate chain is {len} bytes, more than the {max} allowed")]
    ChainTooLarge { len: usize, max: usize },
    #[error("a Hello names {count} record types in its type rules, more than the {max} allowed")]
    TooManyTypes { count: usize, max: usize },
    #[error("heads list {count} entries, more than the {max} allowed")]
    TooManyHeads { count: usize, max: usize },
    #[error("batch carries proofs for {count} runs, more than the {max} allowed")]
    TooManyRuns { count: usize, max: usize },
    #[error(
        "a run claims {count} changes with {proof} proof hashes; a run holds 1 to {max} changes and a proof no more hashes than changes"
    )]
    RunShape { count: u32, proof: usize, max: usize },
    #[error("run from counter {first} is listed twice in one batch")]
    RunTwice { first: u64 },
    #[error("a change names run {place} of a batch that lists {runs}")]
    RunIndex { place: u64, runs: usize },
    #[error("abort reason is {len} bytes, more than the {max} allowed")]
    ReasonTooLong { len: usize, max: usize },
}

pub(crate) fn cbor_decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DecodeError> {
    serde_cbor::from_slice(bytes).map_err(|e| DecodeError::Cbor(e.to_string()))
}

pub(crate) fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

macro_rules! fixed_bytes {
    ($name:ident, $n:expr) => {
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub struct $name(pub [u8; $n]);

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "{} bytes", $n)
                    }
                    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<$name, E> {
                        v.try_into().map($name).map_err(|_| E::invalid_length(v.len(), &self))
                    }
                }
                d.deserialize_bytes(Visitor)
            }
        }
    };
}

fixed_bytes!(Bytes16, 16);
fixed_bytes!(Bytes32, 32);
fixed_bytes!(Bytes64, 64);

/// Serialises borrowed bytes as a CBOR byte string.
pub(crate) struct ByteBufRef<'a>(pub(crate) &'a [u8]);

impl Serialize for ByteBufRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct ByteBuf(pub Vec<u8>);

impl Serialize for ByteBuf {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// A seal as the store and the wire write it: a change's own signature (a
/// 64-byte string) or a number, which names its run (the run's first
/// counter in the store, the run's place in the batch on the wire). A store
/// from protocol 1 holds only signatures, so it reads unchanged.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealField {
    Single([u8; 64]),
    Run(u64),
}

impl Serialize for SealField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SealField::Single(signature) => s.serialize_bytes(signature),
            SealField::Run(n) => s.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for SealField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SealField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 64-byte signature or a run number")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<SealField, E> {
                v.try_into().map(SealField::Single).map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_u64<E>(self, v: u64) -> Result<SealField, E> {
                Ok(SealField::Run(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}
