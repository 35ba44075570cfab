//! cargo-fuzz target: see `fuzz::enrol_exchange`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::enrol_exchange(data));
