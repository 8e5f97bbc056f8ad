//! Fuzz target `bdat_framing`: see `checks::bdat_framing` for what it checks.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::bdat_framing(data));
