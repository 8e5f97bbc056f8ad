//! Fuzz target `auth_decode`: see `checks::auth_decode` for what it checks.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::auth_decode(data));
