//! The `ferry` command (SPEC §4): the only crate with tokio, libp2p, the
//! clock, the file system layout and the command line. It turns verified
//! certificates into the scopes the engine enforces (`authority.rs`), drives
//! engine sessions over libp2p streams (`net.rs`, `protocols.rs`), runs the
//! daemon (`serve.rs`) with its local API (`control.rs`, docs/api.md), and
//! moves batches through files (`bundle.rs`).

pub mod authority;
pub mod bench;
pub mod blob_sync;
pub mod blobs;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod event;
pub mod frame;
pub mod home;
pub mod hooks;
pub mod http;
pub mod identity;
pub mod json;
pub mod logins;
pub mod meet;
pub mod metrics;
pub mod net;
pub mod node;
pub mod ops;
pub mod own;
pub mod parallel;
pub mod pool;
pub mod protocols;
pub mod random;
pub mod serve;
pub mod status;
