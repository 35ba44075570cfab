//! cargo-fuzz target: see `fuzz::wire_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::wire_message(data));
