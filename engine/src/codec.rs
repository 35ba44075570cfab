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
    #[error("heads list {count} entries, more than the {max} allowed")]
    TooManyHeads { count: usize, max: usize },
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
