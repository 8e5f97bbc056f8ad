//! Replays the fuzz corpus (`fuzz/corpus/TARGET/`) and every saved finding
//! (`fuzz/regressions/TARGET/`) through the fuzz targets' own checks, so a
//! plain `cargo test` on stable re-checks each past finding without the
//! fuzzer. The checks live once, in `fuzz/checks.rs`; see `fuzz/README.md`.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::panic;
use std::path::{Path, PathBuf};

#[test]
fn fuzz_corpus_command_parse() {
    replay("command_parse", checks::command_parse);
}

#[test]
fn fuzz_corpus_data_automaton() {
    replay("data_automaton", checks::data_automaton);
}

#[test]
fn fuzz_corpus_bdat_framing() {
    replay("bdat_framing", checks::bdat_framing);
}

#[test]
fn fuzz_corpus_config_parse() {
    replay("config_parse", checks::config_parse);
}

#[test]
fn fuzz_corpus_users_parse() {
    replay("users_parse", checks::users_parse);
}

#[test]
fn fuzz_corpus_auth_decode() {
    replay("auth_decode", checks::auth_decode);
}

#[test]
fn fuzz_corpus_framer() {
    replay("framer", checks::framer);
}

#[test]
fn fuzz_corpus_session() {
    replay("session", checks::session);
}

/// Runs `check` on every saved input of `target`; fails naming each input
/// that fails (the panic message of each is printed above the list).
fn replay(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no saved inputs for {target}");
    let failed: Vec<String> = files
        .iter()
        .filter(|file| {
            let input = std::fs::read(file).expect("read a corpus file");
            panic::catch_unwind(|| check(&input)).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} saved inputs fail:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

/// The files of `fuzz/corpus/TARGET/` and `fuzz/regressions/TARGET/`.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}
