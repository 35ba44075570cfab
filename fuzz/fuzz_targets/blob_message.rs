//! cargo-fuzz target: see `fuzz::blob_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::blob_message(data));
