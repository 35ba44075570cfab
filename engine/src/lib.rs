//! ferry's engine (SPEC §3): records, signed changes, version vectors, merge,
//! the store, the wire format and the sync session.
//!
//! The engine enforces scopes it is handed through the `Authorizer` trait and
//! never parses a certificate. It has no network, no clock and no threads:
//! time comes in as milliseconds, randomness as ids, and the session is a
//! state machine driven by the caller. It does file IO only in its store:
//! through the backends, and the epoch file `Store::open` keeps next to them.

pub mod authorize;
pub mod backend;
pub mod blob;
pub mod change;
pub mod codec;
pub mod hlc;
pub mod ids;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod merge;
pub mod policy;
pub mod region;
pub mod report;
pub mod seal;
pub mod sealed;
pub mod session;
pub mod store;
pub mod stored;
pub mod value;
pub mod vector;
pub mod wire;
pub mod workload;

pub use authorize::{Authorizer, Denied, SerialVerifier, Signed, StaticAuthorizer, Verifier};
pub use backend::BackendKind;
pub use change::{Change, Op, RecordKey};
pub use ids::{AuthorKey, Counter, Dot, Hlc, InstanceId, RecordId};
pub use ledger::LedgerEntry;
pub use merge::{Conflict, Outcome, RecordState, View};
pub use region::Region;
pub use report::SyncReport;
pub use seal::Seal;
pub use session::{Direction, Env, Event, FromPeer, Role, Session, SessionConfig, SessionError, SessionStore};
pub use store::{
    ApplyHook, LocalAuthor, LocalOp, LocalWrite, Opened, RecordView, Refusal, SerialSigner, Signer, Store, StoreError,
    WriteRejection, Written,
};
pub use value::Value;
pub use vector::VersionVector;
