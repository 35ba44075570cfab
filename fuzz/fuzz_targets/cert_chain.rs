//! cargo-fuzz target: see `fuzz::cert_chain`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::cert_chain(data));
