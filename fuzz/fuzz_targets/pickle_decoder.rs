//! Fuzz target: see `checks.rs` for what it checks, and FUZZING.md for how to run it.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_pickle(data));
