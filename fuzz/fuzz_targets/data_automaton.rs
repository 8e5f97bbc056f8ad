//! Fuzz target `data_automaton`: see `checks::data_automaton` for what it checks.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::data_automaton(data));
