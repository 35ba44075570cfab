//! cargo-fuzz target: see `fuzz::zstd_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::zstd_frame(data));
