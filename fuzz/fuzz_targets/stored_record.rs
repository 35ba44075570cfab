//! cargo-fuzz target: see `fuzz::stored_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::stored_record(data));
