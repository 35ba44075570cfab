//! cargo-fuzz target: see `fuzz::partitions_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::partitions_parse(data));
