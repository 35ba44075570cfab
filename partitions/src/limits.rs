//! Every bound on the vocabulary types, in one place. Partitions, filters and
//! scopes arrive from peers inside certificates and wire messages, so each
//! size is checked against these numbers before anything is allocated for it.

/// Bytes in one partition segment. Morango's partition segments are 32-hex
/// UUIDs; 64 leaves room for readable names such as `exercise-0042`.
pub const SEGMENT_BYTES_MAX: usize = 64;

/// Segments below the org id. Real hierarchies are org / dataset / kind /
/// owner (Morango's `${facility}:user-rw:${user}` is three); eight is twice
/// that and keeps key prefixes short.
pub const PARTITION_SEGMENTS_MAX: usize = 8;

/// Printed length of a whole partition: the org id plus every segment with its
/// separator at the maximum size. A looser bound would let a peer make us
/// allocate for text that cannot be a partition.
pub const PARTITION_BYTES_MAX: usize = crate::org::ORG_ID_TEXT_LEN + PARTITION_SEGMENTS_MAX * (1 + SEGMENT_BYTES_MAX);

/// Prefixes in one filter. A certificate's read or write filter names a few
/// partitions (a test centre, a lab, one learner); 64 is generous for that
/// and keeps containment checks cheap.
pub const FILTER_PREFIXES_MAX: usize = 64;

/// Bytes in a record type name (`result`, `sample.analysis`).
pub const RECORD_TYPE_BYTES_MAX: usize = 64;

/// Per-type modes in one scope. SENAITE's largest configurations list a few
/// dozen content types.
pub const SCOPE_TYPES_MAX: usize = 64;

/// Named parameters in one scope template (Morango's templates use two).
pub const TEMPLATE_PARAMS_MAX: usize = 16;

/// Bytes in one template string before expansion.
pub const TEMPLATE_BYTES_MAX: usize = 1024;

const _: () = assert!(PARTITION_BYTES_MAX < 1024);
const _: () = assert!(TEMPLATE_BYTES_MAX >= PARTITION_BYTES_MAX);
const _: () = assert!(RECORD_TYPE_BYTES_MAX <= SEGMENT_BYTES_MAX);
