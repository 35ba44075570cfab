//! ferry's cross-crate tests and their harnesses: the deterministic
//! multi-node simulator (`sim`, used by `tests/simulator.rs` and by the
//! long-campaign command `cargo run -p tests --release --bin sim`), real
//! `ferry` processes (`cli`), and a peer that misbehaves on purpose over real
//! libp2p (`hostile`), a standard-library HTTP client (`http`), and a real
//! headless Chromium driven through WebDriver (`browser`).

pub mod browser;
pub mod cli;
pub mod hostile;
pub mod http;
pub mod sim;
pub mod system;
