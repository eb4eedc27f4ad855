#![no_main]
//! Fuzz target: see `check_frame` in `src/checks.rs` for the property.

libfuzzer_sys::fuzz_target!(|data: &[u8]| borealis_protocol_fuzz::check_frame(data));
