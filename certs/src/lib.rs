//! Partition certificates (SPEC §3 "Authorisation"): creating an org root,
//! issuing child certificates within the issuer's scope, decoding and
//! verifying chains at a given time, revocation, and enrolment tokens.
//!
//! X.509 v3 with Ed25519 keys: built with rcgen, read with x509-parser,
//! signatures checked with ed25519-dalek. The scope travels in a critical
//! extension as canonical CBOR (`extension.rs`).
//!
//! This crate has no IO and no clock: time is always an argument, randomness
//! comes in as a generator or as bytes. It depends on `partitions` only.

pub mod cert;
#[doc(hidden)]
pub use cert::octet_string;
pub mod chain;
pub mod extension;
pub mod issue;
pub mod key;
pub mod limits;
pub mod revocation;
pub mod token;

pub use cert::{CertId, Certificate, DecodeError};
pub use chain::{Chain, Revocations, Verified, VerifyError};
pub use extension::{CertInfo, ExtensionError, SCOPE_EXTENSION_OID, SCOPE_EXTENSION_OID_TEXT};
pub use issue::{CertTemplate, IssueError, IssueRequest, Issuer, RawExtension, build, create_org};
pub use revocation::{REVOCATION_BYTES, Revocation, RevocationError};
pub use token::{EnrolError, Token, TokenError, TokenRecord, TokenRequest, create_token, redeem};
