//! ferry's engine: records, signed changes, version vectors, merge, the store
//! and the sans-IO sync session. Being built (issue 3).
