//! ferry's cross-crate tests and their harnesses: the deterministic
//! multi-node simulator (`sim`, used by `tests/simulator.rs` and by the
//! long-campaign command `cargo run -p tests --release --bin sim`), real
//! `ferry` processes (`cli`), and a peer that misbehaves on purpose over real
//! libp2p (`hostile`).

pub mod cli;
pub mod hostile;
pub mod http;
pub mod sim;
