//! cargo-fuzz target: see `fuzz::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz::session(data);
});
