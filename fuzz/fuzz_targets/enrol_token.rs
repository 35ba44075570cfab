//! cargo-fuzz target: see `fuzz::enrol_token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::enrol_token(data));
