//! Bounds on everything the certs crate decodes. Certificates, chains,
//! revocations and tokens come from peers and from files people paste, so
//! each size is checked before anything is allocated for it.

use partitions::limits::{FILTER_PREFIXES_MAX, PARTITION_BYTES_MAX, SCOPE_TYPES_MAX};

/// Certificates in one chain, root included. Real deployments use two or
/// three (org root, optional site issuer, device); eight leaves room for
/// deeper delegation without letting a peer make verification expensive.
pub const CHAIN_DEPTH_MAX: usize = 8;

/// Bytes of one DER certificate. The largest legal scope (two full filters of
/// maximal partitions plus every type mode) is about 80 KiB of CBOR; the rest
/// of a certificate is under 1 KiB.
pub const CERT_BYTES_MAX: usize = 96 * 1024;

/// Bytes of one encoded chain.
pub const CHAIN_BYTES_MAX: usize = CHAIN_DEPTH_MAX * CERT_BYTES_MAX;

/// Bytes of PEM text read for one chain: the base64 of the largest chain
/// (four characters per three bytes), a newline per 64 characters, and a
/// header and footer line per certificate, rounded up.
pub const PEM_BYTES_MAX: usize = 1_100_000;

/// Bytes of a certificate's human-readable name.
pub const NAME_BYTES_MAX: usize = 128;

/// Bytes of an authority tag (`central`, `lab-geneva`).
pub const AUTHORITY_BYTES_MAX: usize = 64;

/// Listen addresses named in one enrolment token.
pub const TOKEN_ADDRESSES_MAX: usize = 16;

/// Bytes of one address in a token (a multiaddr with a peer id is about 100).
pub const TOKEN_ADDRESS_BYTES_MAX: usize = 256;

/// Characters of a whole enrolment token line.
pub const TOKEN_TEXT_MAX: usize = 16 * 1024;

/// Most bytes the CBOR of a scope can take: every prefix at the maximum
/// length with its header, every type name and mode, and the fixed fields.
pub const SCOPE_CBOR_BYTES_MAX: usize = 2 * FILTER_PREFIXES_MAX * (PARTITION_BYTES_MAX + 3)
    + SCOPE_TYPES_MAX * (partitions::limits::RECORD_TYPE_BYTES_MAX + 3)
    + NAME_BYTES_MAX
    + AUTHORITY_BYTES_MAX
    + 64;

const _: () = assert!(SCOPE_CBOR_BYTES_MAX + 1024 <= CERT_BYTES_MAX);
const _: () = assert!(TOKEN_TEXT_MAX * 5 / 8 >= SCOPE_CBOR_BYTES_MAX / 8);
const _: () = assert!(CHAIN_BYTES_MAX.div_ceil(3) * 4 * 65 / 64 + CHAIN_DEPTH_MAX * 60 <= PEM_BYTES_MAX);
