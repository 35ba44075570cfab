//! cargo-fuzz target: see `fuzz::bundle_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::bundle_file(data));
