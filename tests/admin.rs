//! The admin names of sendmail mode (SPEC §8) through the real binary:
//! `mailq`/`-bp`, `newaliases`/`-bi`, `-q…` and `--help`, invoked through
//! symlinks as Debian's MTA links invoke them. None of them may start a
//! server (the old binary served SMTP in the foreground as `mailq`): each
//! run must end by itself within a few seconds, with its exit status.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Runs `program args` (the binary or a link to it) with nothing on
/// stdin; fails the test when it has not ended after 10 s (a server
/// started), killing it first.
fn run(program: &Path, args: &[&str], config: Option<&Path>) -> Outcome {
    let mut command = smtpbox_as(program);
    command
        .args(args)
        .env_remove("SMTPBOX_CONFIG")
        .env_remove("RUST_LOG");
    if let Some(path) = config {
        command.env("SMTPBOX_CONFIG", path);
    }
    run_sendmail(&mut command, b"", Duration::from_secs(10))
}

/// A temp dir with `sendmail`, `mailq` and `newaliases` links to the binary.
fn links() -> TempDir {
    let dir = TempDir::new("admin");
    for name in ["sendmail", "mailq", "newaliases"] {
        std::os::unix::fs::symlink(bin(), dir.path().join(name)).unwrap();
    }
    dir
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let d = dir.display();
    let conf = dir.join("smtpbox.conf");
    let text =
        format!("hostname = mx.test\ndomain = example.com\nmailbox = alice {d}/alice\n{extra}\n");
    fs::write(&conf, text).unwrap();
    conf
}

#[test]
fn mailq_and_bp_say_there_is_no_queue() {
    let dir = links();
    for (program, args) in [("mailq", &[][..]), ("sendmail", &["-bp"][..])] {
        // No config at all: listing an empty queue needs none.
        let out = run(&dir.path().join(program), args, None);
        assert_eq!(out.code, 0, "{program} {args:?}: {}", out.stderr);
        assert!(out.stdout.contains("Mail queue is empty"), "{}", out.stdout);
        assert!(out.stdout.contains("no queue"), "{}", out.stdout);
    }
}

#[test]
fn q_does_nothing_and_exits_0() {
    let dir = links();
    let conf = write_config(dir.path(), "");
    for args in [&["-q"][..], &["-q30m"], &["-qf"], &["-v", "-qRexample.com"]] {
        let out = run(&dir.path().join("sendmail"), args, Some(&conf));
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, ""),
            "{args:?}: {}",
            out.stderr
        );
    }
    assert!(!dir.path().join("alice").exists(), "nothing was delivered");
}

#[test]
fn newaliases_checks_the_aliases() {
    let dir = links();
    let good = write_config(dir.path(), "alias = root alice\nalias = postmaster root");
    for (program, args) in [("newaliases", &[][..]), ("sendmail", &["-bi"][..])] {
        let out = run(&dir.path().join(program), args, Some(&good));
        assert_eq!(out.code, 0, "{program}: {}", out.stderr);
        assert!(out.stdout.contains("2 alias(es)"), "{}", out.stdout);
    }
    // A loop is a config error (EX_CONFIG), named.
    let looped = write_config(dir.path(), "alias = a b\nalias = b a");
    let out = run(&dir.path().join("newaliases"), &[], Some(&looped));
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(out.stderr.contains("smtpbox.conf"), "{}", out.stderr);
    // An alias that leads nowhere (no mailbox, no default maildir) too.
    let dangling = write_config(dir.path(), "alias = root nobody");
    let out = run(&dir.path().join("sendmail"), &["-bi"], Some(&dangling));
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(
        out.stderr.contains("alias root -> nobody: no mailbox"),
        "{}",
        out.stderr
    );
    // No config file: nothing to check against, EX_CONFIG.
    let missing = dir.path().join("missing.conf");
    let out = run(&dir.path().join("newaliases"), &[], Some(&missing));
    assert_eq!(out.code, 78, "{}", out.stderr);
}

#[test]
fn sendmail_help_prints_usage() {
    let dir = links();
    let via_link = run(&dir.path().join("sendmail"), &["--help"], None);
    let via_word = run(&bin(), &["sendmail", "--help"], None);
    for out in [via_link, via_word] {
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.starts_with("Usage: sendmail "), "{}", out.stdout);
        assert!(out.stdout.contains("-bi, newaliases"), "{}", out.stdout);
        assert!(out.stderr.is_empty(), "{}", out.stderr);
    }
}
