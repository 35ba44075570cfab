//! cargo-fuzz target: see `fuzz::config_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::config_file(data));
