//! Fuzz target `command_parse`: see `checks::command_parse` for what it checks.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::command_parse(data));
