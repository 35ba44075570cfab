//! Partition certificates (SPEC §3 "Authorisation"): creating an org root,
//! issuing child certificates within the issuer's scope, decoding and
//! verifying chains at a given time, revocation, and enrolment tokens.
//!
//! X.509 v3 with Ed25519 keys: built with rcgen, read with x509-parser,
//! signatures checked with ed25519-dalek. The scope travels in a critical
//! extension as canonical CBOR (`extension.rs`). Chains are stored and
//! exchanged in files as PEM text (`pem.rs`).
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
pub mod pem;
pub mod revocation;
pub mod token;

pub use crate::pem::PemError;
pub use cert::{CertId, Certificate, DecodeError};
pub use chain::{Chain, Revocations, Verified, VerifyError};
pub use extension::{CertInfo, ExtensionError, SCOPE_EXTENSION_OID, SCOPE_EXTENSION_OID_TEXT};
pub use issue::{CertTemplate, IssueError, IssueRequest, Issuer, RawExtension, build, create_org};
pub use revocation::{REVOCATION_BYTES, Revocation, RevocationError};
pub use token::{EnrolError, Token, TokenError, TokenRecord, TokenRequest, create_token, redeem, redeem_at};

/// Seconds since 1970 as RFC 3339 UTC (`2026-01-31T09:30:00Z`), for error
/// messages: people read dates, not epoch seconds. Times past year 9999
/// (never valid in a certificate) print as seconds with a note.
pub fn rfc3339(seconds: u64) -> String {
    match i64::try_from(seconds).ok().and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok()) {
        Some(t) if t.year() <= 9999 => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        _ => format!("{seconds} s after 1970 (past year 9999)"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_prints_dates_not_seconds() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert!(super::rfc3339(u64::MAX).contains("past year 9999"));
    }
}
