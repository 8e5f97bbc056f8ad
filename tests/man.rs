//! The man pages (issue #23 item 2) stay true to the program and the
//! README: `smtpbox(8)` documents exactly the options `smtpbox --help`
//! prints, `smtpbox.conf(5)` exactly the keys the config parser knows and
//! the README's table lists, and both render without a groff warning.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn read(path: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The lines of `text` from the line `start` up to the next line that
/// starts with `end`.
fn section<'a>(text: &'a str, start: &str, end: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| *l != start)
        .skip(1)
        .take_while(|l| !l.starts_with(end))
        .collect()
}

/// Every `--long-option` in `text`, roff's `\-` read as `-`.
fn long_options(text: &str) -> BTreeSet<String> {
    let text = text.replace("\\-", "-");
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter_map(|word| word.strip_prefix("--"))
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn smtpbox_8_documents_every_option_of_help_and_no_other() {
    let done = run_bounded(smtpbox().arg("--help"), b"", Duration::from_secs(10));
    assert!(done.status.success());
    let help = long_options(&done.stdout_text());
    assert!(
        help.contains("check") && help.contains("tls-key"),
        "{help:?}"
    );
    let page = read("man/smtpbox.8");
    let options = section(&page, ".SH OPTIONS", ".SH").join("\n");
    assert_eq!(long_options(&options), help);
}

#[test]
fn smtpbox_conf_5_documents_every_key_the_parser_and_the_readme_know() {
    // The parser's keys: the arms of config/file.rs's set_key.
    let parser = read("src/config/file.rs");
    let code: BTreeSet<String> = parser
        .lines()
        .skip_while(|l| !l.contains("fn set_key"))
        .take_while(|l| *l != "}")
        .filter_map(|l| l.trim().strip_prefix('"'))
        .filter_map(|l| l.split_once("\" =>").map(|(key, _)| key.to_string()))
        .collect();
    assert!(code.len() >= 20, "{code:?}");
    // The README's table: the backquoted names of each row's first cell.
    let readme = read("README.md");
    let table: BTreeSet<String> = section(&readme, "## Config file", "## ")
        .into_iter()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| {
            let cell = l.split('|').nth(1).unwrap_or_default();
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(table, code, "README table against the parser");
    // The man page: the first word after each `.BI`/`.BR` under a `.TP`.
    let page = read("man/smtpbox.conf.5");
    let lines = section(&page, ".SH KEYS", ".SH");
    let man: BTreeSet<String> = lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .filter_map(|w| w[1].split_whitespace().nth(1))
        .map(|key| key.trim_matches('"').to_string())
        .collect();
    assert_eq!(man, code, "smtpbox.conf(5) against the parser");
}

#[test]
fn both_pages_render_without_a_groff_warning() {
    let Some(groff) = ["/usr/bin/groff", "/bin/groff"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "groff is missing (Debian package groff-base); required under CI"
        );
        eprintln!("skipping: groff is not installed");
        return;
    };
    let pages = [
        ("man/smtpbox.8", "smtpbox - minimal SMTP server"),
        (
            "man/smtpbox.conf.5",
            "smtpbox.conf - smtpbox configuration file",
        ),
    ];
    for (page, name) in pages {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(page);
        let done = run_bounded(
            Command::new(groff).args(["-ww", "-z", "-man"]).arg(&path),
            b"",
            Duration::from_secs(20),
        );
        assert!(done.status.success(), "{page}: {}", done.stderr_text());
        assert_eq!(done.stderr_text(), "", "{page}: groff warned");
        let text = run_bounded(
            Command::new(groff).args(["-man", "-Tutf8"]).arg(&path),
            b"",
            Duration::from_secs(20),
        );
        let text = text.stdout_text();
        assert!(text.contains(name), "{page} rendered: {text}");
    }
}
