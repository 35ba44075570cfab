//! ferry's cross-crate tests: the deterministic multi-node simulator
//! (`sim`), used by `tests/simulator.rs` and by the long-campaign command
//! `cargo run -p tests --release --bin sim`.

pub mod cli;
pub mod hostile;
pub mod sim;
