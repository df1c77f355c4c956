#![no_main]
// fuzz_target! exports libFuzzer's C entry point with #[no_mangle], which the lint counts as
// unsafe; the target itself is safe code.
#![allow(unsafe_code)]
//! Fuzz target: see `corridor_fuzz::write_request` for what it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| corridor_fuzz::write_request(data));
