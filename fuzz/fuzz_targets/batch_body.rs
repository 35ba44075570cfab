//! cargo-fuzz target: see `fuzz::batch_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::batch_body(data));
