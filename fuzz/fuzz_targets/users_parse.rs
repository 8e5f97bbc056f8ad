//! Fuzz target `users_parse`: see `checks::users_parse` for what it checks.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::users_parse(data));
