//! cargo-fuzz target: see `fuzz::local_api`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::local_api(data));
