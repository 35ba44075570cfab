//! ferry's cross-crate tests and, with the engine, the deterministic
//! multi-node simulator.
