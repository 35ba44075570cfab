//! ferry's vocabulary: organisation ids, partitions, filters, scopes and scope
//! templates (SPEC §1). Parsing, containment, intersection and the narrowing
//! rule of certificate scopes.
//!
//! This crate has no IO, no clock, no threads and depends on no other crate
//! of the workspace; everything else builds on it.

pub mod base32;
pub mod filter;
pub mod hex;
pub mod limits;
pub mod org;
pub mod partition;
pub mod scope;
pub mod template;

pub use filter::{Filter, FilterError};
pub use org::{OrgId, OrgIdError};
pub use partition::{Partition, PartitionError};
pub use scope::{RecordType, RecordTypeError, Scope, ScopeError, TypeMode, TypeModeError, Widening, WriteKind};
pub use template::{ScopeTemplate, Template, TemplateError};
