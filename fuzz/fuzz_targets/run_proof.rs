//! cargo-fuzz target: see `fuzz::run_proof`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::run_proof(data));
